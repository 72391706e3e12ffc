import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hierjax.metrics import hierarchical_metrics, lca_height, merge, summarize

# Hand-made 3-level tree: 6 fine classes, 3 middle groups, 2 top groups.
#   top 0 -> mid 0 -> fine {0, 1};  top 0 -> mid 1 -> fine {2, 3}
#   top 1 -> mid 2 -> fine {4, 5}
ANCESTORS = np.array(
    [[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 1, 0], [4, 2, 1], [5, 2, 1]], dtype=np.int32
)

# A 4-example batch with three heads. Per example: label path, argmax per head.
#   ex0: label (0,0,0); fine 0 (right), mid 0 (right), top 0 (right)
#   ex1: label (1,0,0); fine 0 (wrong, siblings -> height 1), mid 1 (wrong, and
#        inconsistent: fine 0 lies in mid 0), top 0 (right)
#   ex2: label (2,1,0); fine 5 (wrong, other top group -> implicit root, height 3),
#        mid 1 (right, but inconsistent: fine 5 lies in mid 2), top 1 (wrong,
#        consistent with fine 5); the label is the fine head's LOWEST logit,
#        so it also misses the fine top-5 out of 6 classes.
#   ex3: label (3,1,0); fine 0 (wrong, meet at top 0 -> height 2), mid 0 (wrong,
#        consistent), top 0 (right)
LABELS = np.array([[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 1, 0]], dtype=np.int32)
FINE = np.array(
    [
        [5, 4, 3, 2, 1, 0],
        [5, 4, 3, 2, 1, 0],
        [1, 2, 0, 3, 4, 5],
        [5, 4, 3, 2, 1, 0],
    ],
    dtype=np.float32,
)
MID = np.array([[2, 1, 0], [1, 2, 0], [1, 2, 0], [2, 1, 0]], dtype=np.float32)
TOP = np.array([[1, 0], [1, 0], [0, 1], [1, 0]], dtype=np.float32)
LOGITS = [FINE, MID, TOP]


def as_floats(metrics):
    return {k: float(v) for k, v in metrics.items()}


def test_lca_height_hand_examples():
    a = jnp.array([0, 0, 0, 0, 5, 3])
    b = jnp.array([0, 1, 2, 4, 4, 0])
    # same class 0; siblings 1; same top group 2; different top groups -> root h=3;
    # siblings 1; same top group 2 (symmetric to 0 vs 3).
    np.testing.assert_array_equal(lca_height(a, b, ANCESTORS), [0, 1, 2, 3, 1, 2])


def test_lca_height_broadcasts_to_a_pairwise_table():
    table_CxC = lca_height(jnp.arange(6)[:, None], jnp.arange(6)[None, :], ANCESTORS)
    assert table_CxC.shape == (6, 6)
    np.testing.assert_array_equal(table_CxC, table_CxC.T)
    np.testing.assert_array_equal(np.diag(table_CxC), 0)
    # Fine 4 vs fine 0..5: other top group (3) for 0-3, itself 0, sibling 1.
    np.testing.assert_array_equal(table_CxC[4], [3, 3, 3, 3, 0, 1])


def test_three_heads_hand_worked():
    m = as_floats(hierarchical_metrics(LOGITS, LABELS, ANCESTORS))
    assert m == {
        "count": 4.0,
        "top1/0_sum": 1.0,  # only ex0's fine argmax is right
        "top1/1_sum": 2.0,  # mid preds (0,1,1,0) vs labels (0,0,1,1): ex0, ex2
        "top1/2_sum": 3.0,  # top preds (0,0,1,0) vs labels all 0: all but ex2
        "top5/0_sum": 3.0,  # ex2's label is its lowest of 6 fine logits
        "top5/1_sum": 4.0,  # k = min(5, 3) = 3 covers every mid class
        "top5/2_sum": 4.0,  # k = min(5, 2) = 2 covers every top class
        # Fine preds (0,0,5,0) map to paths (0,0,0),(0,0,0),(5,2,1),(0,0,0).
        "top1_from_fine/0_sum": 1.0,  # ex0
        "top1_from_fine/1_sum": 2.0,  # ex0, ex1 (mid 0)
        "top1_from_fine/2_sum": 3.0,  # ex0, ex1, ex3 (top 0)
        "consistency/1_sum": 2.0,  # mid preds (0,1,1,0) vs mapped (0,0,2,0)
        "consistency/2_sum": 4.0,  # top preds (0,0,1,0) vs mapped (0,0,1,0)
        "mistakes_count": 3.0,  # ex1, ex2, ex3
        "mistake_severity_sum": 6.0,  # heights 1 + 3 (implicit root) + 2
    }
    rates = summarize(m)
    assert rates["top1/0"] == 0.25
    assert rates["top1_from_fine/2"] == 0.75
    assert rates["consistency/1"] == 0.5
    assert rates["mistake_severity"] == 2.0  # 6 / 3 mistakes
    assert rates["hier_distance"] == 1.5  # 6 / 4 examples
    assert rates["count"] == 4.0


def test_valid_mask_excludes_rows():
    valid = np.array([True, True, False, True])
    m = as_floats(hierarchical_metrics(LOGITS, LABELS, ANCESTORS, valid=valid))
    # Same as above with ex2 removed; it contributed top1/1, top5/1, top5/2,
    # consistency/2, one mistake of height 3, and nothing else.
    assert m == {
        "count": 3.0,
        "top1/0_sum": 1.0,
        "top1/1_sum": 1.0,
        "top1/2_sum": 3.0,
        "top5/0_sum": 3.0,
        "top5/1_sum": 3.0,
        "top5/2_sum": 3.0,
        "top1_from_fine/0_sum": 1.0,
        "top1_from_fine/1_sum": 2.0,
        "top1_from_fine/2_sum": 3.0,
        "consistency/1_sum": 2.0,
        "consistency/2_sum": 3.0,
        "mistakes_count": 2.0,
        "mistake_severity_sum": 3.0,  # heights 1 + 2
    }


def test_masked_rows_may_hold_garbage_labels():
    valid = np.array([True, True, False, True])
    labels = LABELS.copy()
    labels[2] = -1  # typical padding value
    padded = hierarchical_metrics(LOGITS, labels, ANCESTORS, valid=valid)
    clean = hierarchical_metrics(LOGITS, LABELS, ANCESTORS, valid=valid)
    assert as_floats(padded) == as_floats(clean)


def test_flat_model_has_no_coarse_heads():
    m = as_floats(hierarchical_metrics([FINE], LABELS, ANCESTORS))
    # Fine-head numbers as in the three-head test; no top1/top5 for levels 1, 2
    # and no consistency keys, but the fine prediction is still scored at
    # every level of the hierarchy.
    assert m == {
        "count": 4.0,
        "top1/0_sum": 1.0,
        "top5/0_sum": 3.0,
        "top1_from_fine/0_sum": 1.0,
        "top1_from_fine/1_sum": 2.0,
        "top1_from_fine/2_sum": 3.0,
        "mistakes_count": 3.0,
        "mistake_severity_sum": 6.0,
    }


def test_all_correct_batch_has_zero_severity_without_nan():
    fine_BxC = 10.0 * np.eye(6, dtype=np.float32)[LABELS[:, 0]]
    m = hierarchical_metrics([fine_BxC], LABELS, ANCESTORS)
    assert float(m["mistakes_count"]) == 0.0
    assert float(m["mistake_severity_sum"]) == 0.0
    rates = summarize(m)
    assert rates["mistake_severity"] == 0.0  # 0 / 0 mistakes reported as 0
    assert rates["hier_distance"] == 0.0
    assert rates["top1/0"] == 1.0
    assert all(np.isfinite(v) for v in rates.values())


def test_empty_evaluation_summarizes_to_zeros():
    m = hierarchical_metrics(LOGITS, LABELS, ANCESTORS, valid=np.zeros(4, bool))
    rates = summarize(m)
    assert rates["count"] == 0.0
    assert all(v == 0.0 for v in rates.values())


def test_halves_merge_to_the_whole_batch():
    whole = hierarchical_metrics(LOGITS, LABELS, ANCESTORS)
    first = hierarchical_metrics([x[:2] for x in LOGITS], LABELS[:2], ANCESTORS)
    second = hierarchical_metrics([x[2:] for x in LOGITS], LABELS[2:], ANCESTORS)
    assert as_floats(merge(first, second)) == as_floats(whole)
    # Starting a running total from {} is the same as starting from `first`.
    assert as_floats(merge(merge({}, first), second)) == as_floats(whole)


def test_psum_over_devices_equals_the_whole_batch():
    def per_device(logits_per_level, labels):
        metrics = hierarchical_metrics(logits_per_level, labels, ANCESTORS)
        return jax.lax.psum(metrics, "devices")

    sharded = jax.vmap(per_device, axis_name="devices")(
        [x.reshape(2, 2, -1) for x in LOGITS], LABELS.reshape(2, 2, -1)
    )
    whole = hierarchical_metrics(LOGITS, LABELS, ANCESTORS)
    assert as_floats({k: v[0] for k, v in sharded.items()}) == as_floats(whole)


@pytest.mark.parametrize("ancestors", [ANCESTORS, jnp.asarray(ANCESTORS)])
def test_jit_matches_eager(ancestors):
    valid = np.array([True, False, True, True])
    metrics_fn = jax.jit(functools.partial(hierarchical_metrics, ancestors=ancestors))
    jitted = metrics_fn(LOGITS, LABELS, valid=valid)
    eager = hierarchical_metrics(LOGITS, LABELS, ANCESTORS, valid=valid)
    assert all(v.dtype == jnp.float32 and v.shape == () for v in jitted.values())
    assert as_floats(jitted) == as_floats(eager)


def test_ancestors_may_be_a_traced_argument():
    jitted = jax.jit(hierarchical_metrics)(LOGITS, LABELS, jnp.asarray(ANCESTORS))
    eager = hierarchical_metrics(LOGITS, LABELS, ANCESTORS)
    assert as_floats(jitted) == as_floats(eager)


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match=r"\[logits_BxC\]"):
        hierarchical_metrics(FINE, LABELS, ANCESTORS)
    with pytest.raises(ValueError, match="4 logit heads"):
        hierarchical_metrics(LOGITS + [TOP], LABELS, ANCESTORS)
    with pytest.raises(ValueError, match="one column per level"):
        hierarchical_metrics(LOGITS[:1], LABELS[:, :1], ANCESTORS)
    with pytest.raises(ValueError, match="6 rows"):
        hierarchical_metrics([FINE[:, :5]], LABELS, ANCESTORS)
    with pytest.raises(ValueError, match=r"arange\(C_0\)"):
        hierarchical_metrics(LOGITS, LABELS, ANCESTORS[::-1].copy())
    with pytest.raises(ValueError, match="different keys"):
        merge(
            hierarchical_metrics(LOGITS, LABELS, ANCESTORS),
            hierarchical_metrics([FINE], LABELS, ANCESTORS),
        )


# --- Comparison against a slow, obviously-correct loop on random inputs. ---


def random_tree(rng, sizes):
    """Ancestor table of a random tree with `sizes[l]` classes at level l."""
    columns = [np.arange(sizes[0])]
    for num_children, num_parents in zip(sizes, sizes[1:]):
        parent_of = rng.integers(0, num_parents, size=num_children)
        columns.append(parent_of[columns[-1]])
    return np.stack(columns, axis=1).astype(np.int32)


def reference_metrics(logits_per_level, labels, ancestors, valid):
    B, h = labels.shape
    L = len(logits_per_level)
    keys = ["count", "mistakes_count", "mistake_severity_sum"]
    keys += [f"top1/{l}_sum" for l in range(L)] + [f"top5/{l}_sum" for l in range(L)]
    keys += [f"consistency/{l}_sum" for l in range(1, L)]
    keys += [f"top1_from_fine/{l}_sum" for l in range(h)]
    out = dict.fromkeys(keys, 0.0)
    for i in range(B):
        if not valid[i]:
            continue
        out["count"] += 1
        preds = [int(np.argmax(logits[i])) for logits in logits_per_level]
        fine = preds[0]
        for l, logits in enumerate(logits_per_level):
            out[f"top1/{l}_sum"] += preds[l] == labels[i, l]
            out[f"top5/{l}_sum"] += labels[i, l] in np.argsort(-logits[i])[:5]
            if l > 0:
                out[f"consistency/{l}_sum"] += preds[l] == ancestors[fine, l]
        for l in range(h):
            out[f"top1_from_fine/{l}_sum"] += ancestors[fine, l] == labels[i, l]
        label = labels[i, 0]
        height = next(
            (l for l in range(h) if ancestors[fine, l] == ancestors[label, l]), h
        )
        if fine != label:
            out["mistakes_count"] += 1
            out["mistake_severity_sum"] += height
    return {k: float(v) for k, v in out.items()}


@pytest.mark.parametrize("num_heads", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_loop_on_random_inputs(num_heads, seed):
    rng = np.random.default_rng(seed)
    sizes = (12, 5, 3)
    ancestors = random_tree(rng, sizes)
    B = 64
    labels = ancestors[rng.integers(0, sizes[0], size=B)]
    # Boost the true class at each level so hits and misses both occur.
    logits_per_level = [
        rng.normal(size=(B, C)).astype(np.float32)
        + 1.5 * np.eye(C, dtype=np.float32)[labels[:, l]]
        for l, C in enumerate(sizes[:num_heads])
    ]
    valid = rng.random(B) < 0.8
    got = jax.jit(functools.partial(hierarchical_metrics, ancestors=ancestors))(
        logits_per_level, labels, valid=valid
    )
    expected = reference_metrics(logits_per_level, labels, ancestors, valid)
    assert as_floats(got) == expected
