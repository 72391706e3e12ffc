import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hierjax import decode as dec
from hierjax.metrics import hierarchical_metrics, merge

# One compiled program per (shapes, method) is much faster than op-by-op eager calls.
decode_jit = jax.jit(dec.decode, static_argnames="method")
probs_jit = jax.jit(dec.level_probabilities, static_argnames=("method", "num_classes"))
metrics_jit = jax.jit(dec.decode_metrics, static_argnames="prefix")

# --- Trees. ---


def random_tree(rng, sizes):
    """Ancestor table of a random tree with `sizes[l]` classes at level l, none empty."""
    columns = [np.arange(sizes[0])]
    for num_children, num_parents in zip(sizes, sizes[1:]):
        # Every parent once, the rest at random: group sizes come out unbalanced.
        extra = rng.integers(0, num_parents, size=num_children - num_parents)
        parent_of = rng.permutation(np.concatenate([np.arange(num_parents), extra]))
        columns.append(parent_of[columns[-1]])
    return np.stack(columns, axis=1).astype(np.int32)


# A lopsided 3-level tree: fine 0 alone on its own mid and top class (a chain), fine
# 1..7 under two mid classes of a second top class, listed out of tree order.
LOPSIDED = np.array(
    [[0, 0, 0], [1, 1, 1], [2, 2, 1], [3, 1, 1], [4, 2, 1], [5, 2, 1], [6, 1, 1], [7, 2, 1]],
    dtype=np.int32,
)

TREES = {
    "h1": (7,),
    "h2": (9, 3),
    "h2-one-coarse": (5, 1),
    "h3": (12, 5, 3),
    "h3-one-top": (10, 4, 1),
    "h3-singletons": (8, 8, 2),  # every mid class has a single fine class
    "h3-lopsided": LOPSIDED,
}


def tree(name, rng):
    spec = TREES[name]
    return spec if isinstance(spec, np.ndarray) else random_tree(rng, spec)


def random_heads(rng, ancestors, batch, *, ties):
    """One head per level: continuous logits, or small integers full of exact ties."""
    sizes = ancestors.max(axis=0) + 1
    if ties:
        return [rng.integers(0, 3, size=(batch, C)).astype(np.float32) for C in sizes]
    return [3 * rng.normal(size=(batch, C)).astype(np.float32) for C in sizes]


# --- Brute force: score every root-to-leaf path, keep the best. ---


def level_marginals(q_BxC, ancestors):
    """m_l[b, g] = sum of q[b, c] over fine c under g, accumulated in float32 in fine-id
    order (the order of XLA's CPU scatter-add, so exact ties are the same ties)."""
    out = []
    for l in range(ancestors.shape[1]):
        m = np.zeros((q_BxC.shape[0], ancestors[:, l].max() + 1), q_BxC.dtype)
        for c in range(ancestors.shape[0]):
            m[:, ancestors[c, l]] += q_BxC[:, c]
        out.append(m)
    return out


def brute_force(logits_per_level, ancestors, method, *, exact):
    """The decoded fine class per example, by comparing all paths with a sort key.

    Ties go to the lowest index: the key ends in -fine id for `fine` and `joint`, and
    for `marginal` it is (m_{h-1}, -g_{h-1}, ..., m_0, -g_0), the lexicographic form of
    the top-down rule. With exact=False everything is float64 from the logits; with
    exact=True the probabilities are JAX's float32 ones, combined in float32 in the
    same order as the decoder, so that ties that are exact there are exact here.
    """
    h = ancestors.shape[1]
    paths = [tuple(row) for row in ancestors]  # one root-to-leaf path per fine class
    if exact:
        log_p = [np.asarray(jax.nn.log_softmax(z, axis=-1)) for z in logits_per_level]
        q = np.asarray(jax.nn.softmax(logits_per_level[0], axis=-1))
    else:
        z64 = [z.astype(np.float64) for z in logits_per_level]
        log_p = [z - np.log(np.exp(z).sum(-1, keepdims=True)) for z in z64]
        q = np.exp(log_p[0])
    m = level_marginals(q, ancestors)
    preds = []
    for b in range(logits_per_level[0].shape[0]):
        if method == "fine":
            key = lambda p: (logits_per_level[0][b, p[0]], -p[0])  # noqa: E731
        elif method == "marginal":
            key = lambda p: tuple(  # noqa: E731
                x for l in reversed(range(h)) for x in (m[l][b, p[l]], -p[l])
            )
        else:

            def key(p):
                s = log_p[0].dtype.type(0)
                for l in range(h):
                    s = s + log_p[l][b, p[l]]
                return (s, -p[0])

        preds.append(max(paths, key=key)[0])
    return np.array(preds)


@pytest.mark.parametrize("method", dec.DECODES)
@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
def test_decode_matches_brute_force_over_all_paths(name, method, ties):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{method}/{ties}".encode()))
    ancestors = tree(name, rng)
    logits = random_heads(rng, ancestors, 48, ties=ties)
    heads = logits if method == "joint" else logits[:1]
    got = np.asarray(decode_jit(heads, ancestors, method))
    fine = brute_force(logits, ancestors, method, exact=ties)
    np.testing.assert_array_equal(got, ancestors[fine])


@pytest.mark.parametrize("method", dec.DECODES)
@pytest.mark.parametrize("name", ["h3", "h3-lopsided"])
def test_decoded_paths_follow_the_tree(name, method):
    rng = np.random.default_rng(7)
    ancestors = tree(name, rng)
    logits = random_heads(rng, ancestors, 64, ties=True)
    preds = np.asarray(decode_jit(logits, ancestors, method))
    assert preds.dtype == np.int32 and preds.shape == (64, ancestors.shape[1])
    np.testing.assert_array_equal(preds, ancestors[preds[:, 0]])
    # The raw heads, by contrast, disagree with each other somewhere in the batch.
    raw = np.stack([z.argmax(-1) for z in logits], axis=1)
    assert (raw != ancestors[raw[:, 0]]).any()


# --- Hand-worked cases. ---

# 2 levels: coarse 0 = {fine 0, 1, 2}, coarse 1 = {fine 3}.
TWO_LEVELS = np.array([[0, 0], [1, 0], [2, 0], [3, 1]], dtype=np.int32)


def test_marginal_prefers_the_heavier_coarse_class():
    # q = (0.3, 0.2, 0.1, 0.4): the best fine class 3 (0.4) is alone under coarse 1
    # (mass 0.4), while coarse 0 holds 0.3 + 0.2 + 0.1 = 0.6.
    fine_logits = np.log(np.array([[0.3, 0.2, 0.1, 0.4]], dtype=np.float32))
    np.testing.assert_array_equal(decode_jit([fine_logits], TWO_LEVELS, "fine"), [[3, 1]])
    # Marginal: coarse 0 (0.6 > 0.4), then its best child, fine 0 (0.3).
    np.testing.assert_array_equal(decode_jit([fine_logits], TWO_LEVELS, "marginal"), [[0, 0]])
    fine_p, coarse_p = probs_jit([fine_logits], TWO_LEVELS, "marginal", num_classes=(4, 2))
    np.testing.assert_allclose(fine_p, [[0.3, 0.2, 0.1, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(coarse_p, [[0.6, 0.4]], rtol=1e-6)


def test_marginal_decides_each_level_among_the_children_of_the_last():
    # 3 levels: top 0 = {mid 0 = {0, 1}, mid 1 = {2}}, top 1 = {mid 2 = {3}}.
    ancestors = np.array([[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 2, 1]], dtype=np.int32)
    # q = (0.2, 0.15, 0.25, 0.4): top masses (0.6, 0.4) pick top 0; mid masses
    # (0.35, 0.25, 0.4): mid 2 is the heaviest overall but not under top 0, so mid 0;
    # then fine 0 (0.2) over fine 1 (0.15), although fine 2 (0.25) beats both.
    fine_logits = np.log(np.array([[0.2, 0.15, 0.25, 0.4]], dtype=np.float32))
    np.testing.assert_array_equal(decode_jit([fine_logits], ancestors, "marginal"), [[0, 0, 0]])
    np.testing.assert_array_equal(decode_jit([fine_logits], ancestors, "fine"), [[3, 2, 1]])


def test_joint_hand_worked_two_levels():
    # 2 levels: coarse 0 = {fine 0, 1}, coarse 1 = {fine 2}. Both examples have the
    # fine head p_0 = (0.35, 0.25, 0.4), so `fine` picks fine 2 and `marginal` picks
    # coarse 0 (0.6 > 0.4), then fine 0.
    ancestors = np.array([[0, 0], [1, 0], [2, 1]], dtype=np.int32)
    p0 = np.array([[0.35, 0.25, 0.4]] * 2)
    # Coarse heads p_1 = (0.7, 0.3) and (0.45, 0.55). Path products p_0(c) p_1(parent c):
    #   ex0: 0.35*0.7 = 0.245, 0.25*0.7 = 0.175, 0.4*0.3 = 0.12   -> fine 0
    #   ex1: 0.35*0.45 = 0.1575, 0.25*0.45 = 0.1125, 0.4*0.55 = 0.22 -> fine 2
    p1 = np.array([[0.7, 0.3], [0.45, 0.55]])
    logits = [np.log(p0).astype(np.float32), np.log(p1).astype(np.float32)]
    np.testing.assert_array_equal(decode_jit(logits, ancestors, "joint"), [[0, 0], [2, 1]])
    np.testing.assert_array_equal(decode_jit(logits, ancestors, "fine"), [[2, 1], [2, 1]])
    np.testing.assert_array_equal(decode_jit(logits, ancestors, "marginal"), [[0, 0], [0, 0]])
    # The joint distribution is the normalised products: ex0 (0.245, 0.175, 0.12) / 0.54,
    # whose coarse marginal is (0.42, 0.12) / 0.54.
    fine_p, coarse_p = probs_jit(logits, ancestors, "joint")
    np.testing.assert_allclose(fine_p[0], np.array([0.245, 0.175, 0.12]) / 0.54, rtol=1e-5)
    np.testing.assert_allclose(coarse_p[0], np.array([0.42, 0.12]) / 0.54, rtol=1e-5)
    np.testing.assert_allclose(
        fine_p[1], np.array([0.1575, 0.1125, 0.22]) / 0.49, rtol=1e-5
    )


def test_ties_go_to_the_lowest_index():
    # coarse 0 = {fine 1, 3}, coarse 1 = {fine 0, 2}: the lowest fine id is not under
    # the lowest coarse id. All logits equal, so every comparison is a tie.
    ancestors = np.array([[0, 1], [1, 0], [2, 1], [3, 0]], dtype=np.int32)
    logits = [np.zeros((1, 4), np.float32), np.zeros((1, 2), np.float32)]
    # fine and joint: the lowest fine id, 0 (its coarse class is 1).
    np.testing.assert_array_equal(decode_jit(logits, ancestors, "fine"), [[0, 1]])
    np.testing.assert_array_equal(decode_jit(logits, ancestors, "joint"), [[0, 1]])
    # marginal: the tie rule applies level by level from the top: coarse 0 (0.5 vs
    # 0.5), then the lower of its children, fine 1.
    np.testing.assert_array_equal(decode_jit(logits, ancestors, "marginal"), [[1, 0]])


# --- Probabilities. ---


@pytest.mark.parametrize("method", dec.DECODES)
@pytest.mark.parametrize("name", ["h1", "h2-one-coarse", "h3-lopsided"])
def test_level_probabilities_are_marginals_that_sum_to_one(name, method):
    rng = np.random.default_rng(3)
    ancestors = tree(name, rng)
    logits = random_heads(rng, ancestors, 16, ties=False)
    heads = logits if method == "joint" else logits[:1]
    sizes = tuple(int(C) for C in ancestors.max(axis=0) + 1)
    probs = probs_jit(heads, ancestors, method, num_classes=sizes)
    assert [p.shape for p in probs] == [(16, C) for C in sizes]
    for l, p in enumerate(probs):
        np.testing.assert_allclose(np.asarray(p).sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(p, level_marginals(np.asarray(probs[0]), ancestors)[l],
                                   rtol=1e-5, atol=1e-7)
    if method != "joint":
        np.testing.assert_allclose(probs[0], jax.nn.softmax(logits[0]), rtol=1e-6)


def test_flat_head_with_traced_table_needs_num_classes():
    ancestors = random_tree(np.random.default_rng(0), (9, 3))
    logits = [np.zeros((2, 9), np.float32)]
    with pytest.raises(ValueError, match="num_classes=hierarchy.num_classes"):
        probs_jit(logits, jnp.asarray(ancestors), "marginal")
    probs = probs_jit(logits, jnp.asarray(ancestors), "marginal", num_classes=(9, 3))
    assert [p.shape for p in probs] == [(2, 9), (2, 3)]


# --- jit and errors. ---


@pytest.mark.parametrize("method", dec.DECODES)
def test_jit_matches_eager(method):
    rng = np.random.default_rng(1)
    ancestors = random_tree(rng, (12, 5, 3))
    logits = random_heads(rng, ancestors, 32, ties=True)
    eager = dec.decode(logits, ancestors, method)
    closed = jax.jit(functools.partial(dec.decode, ancestors=ancestors, method=method))
    traced = jax.jit(dec.decode, static_argnames="method")
    np.testing.assert_array_equal(closed(logits), eager)
    np.testing.assert_array_equal(traced(logits, jnp.asarray(ancestors), method), eager)
    probs = jax.jit(functools.partial(dec.level_probabilities, ancestors=ancestors,
                                      method=method))(logits)
    for p, q in zip(probs, dec.level_probabilities(logits, ancestors, method)):
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)


def test_errors_name_the_problem():
    ancestors = random_tree(np.random.default_rng(0), (6, 3, 2))
    fine = np.zeros((2, 6), np.float32)
    with pytest.raises(ValueError, match=r"'joint'.*1 head.*--decode.*eval\.decode"):
        dec.decode([fine], ancestors, "joint")
    with pytest.raises(ValueError, match=r"'joint'.*--decode"):
        dec.level_probabilities([fine, np.zeros((2, 3), np.float32)], ancestors, "joint")
    with pytest.raises(ValueError, match=r"Unknown decode method 'max'.*eval\.decode"):
        dec.decode([fine], ancestors, "max")
    with pytest.raises(TypeError, match=r"\[logits_BxC\]"):
        dec.decode(fine, ancestors, "fine")
    with pytest.raises(ValueError, match="6 rows"):
        dec.decode([fine[:, :5]], ancestors, "fine")
    with pytest.raises(ValueError, match=r"arange\(C_0\)"):
        dec.decode([fine], ancestors[::-1].copy(), "fine")
    with pytest.raises(ValueError, match=r"expected \[2, 3\]"):
        dec.decode_metrics(np.zeros((2, 2), np.int32), [fine], np.zeros((2, 3), np.int32),
                           ancestors, prefix="fine/")


# --- decode_metrics. ---


def reference_decode_metrics(preds, logits_per_level, labels, ancestors, valid, prefix):
    B, h = labels.shape
    keys = ["count", "mistakes_count", "mistake_severity_sum"]
    keys += [f"top1/{l}_sum" for l in range(h)]
    keys += [f"consistency/{l}_sum" for l in range(len(logits_per_level))]
    out = dict.fromkeys(keys, 0.0)
    for i in range(B):
        if not valid[i]:
            continue
        out["count"] += 1
        for l in range(h):
            out[f"top1/{l}_sum"] += preds[i, l] == labels[i, l]
        for l, logits in enumerate(logits_per_level):
            out[f"consistency/{l}_sum"] += np.argmax(logits[i]) == preds[i, l]
        fine, label = preds[i, 0], labels[i, 0]
        if fine != label:
            out["mistakes_count"] += 1
            out["mistake_severity_sum"] += next(
                (l for l in range(h) if ancestors[fine, l] == ancestors[label, l]), h
            )
    return {prefix + k: float(v) for k, v in out.items()}


def as_floats(metrics):
    return {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize(
    "method, num_heads",
    [("fine", 1), ("fine", 3), ("marginal", 1), ("marginal", 3), ("joint", 3)],
)
def test_decode_metrics_match_numpy_loop(method, num_heads):
    rng = np.random.default_rng(num_heads)
    ancestors = random_tree(rng, (12, 5, 3))
    B = 64
    labels = ancestors[rng.integers(0, 12, size=B)]
    logits = [
        z + 1.5 * np.eye(z.shape[1], dtype=np.float32)[labels[:, l]]
        for l, z in enumerate(random_heads(rng, ancestors, B, ties=False))
    ][:num_heads]
    valid = rng.random(B) < 0.8
    labels[~valid] = -1  # padded rows hold garbage labels
    preds = dec.decode(logits, ancestors, method)
    metrics_fn = jax.jit(functools.partial(dec.decode_metrics, ancestors=ancestors,
                                           prefix=f"{method}/"))
    got = metrics_fn(preds, logits, labels, valid=valid)
    assert all(v.dtype == jnp.float32 and v.shape == () for v in got.values())
    expected = reference_decode_metrics(np.asarray(preds), logits, labels, ancestors, valid,
                                        f"{method}/")
    assert as_floats(got) == expected
    assert 0 < expected[f"{method}/mistakes_count"] < expected[f"{method}/count"]


def test_decode_metrics_hand_worked_and_summarized():
    # The marginal case above, twice: labelled with the path (0, 0) (marginal right,
    # fine head wrong) and (3, 1) (marginal wrong, under the other coarse class).
    fine_logits = np.log(np.array([[0.3, 0.2, 0.1, 0.4]] * 3, dtype=np.float32))
    labels = np.array([[0, 0], [3, 1], [2, 0]], dtype=np.int32)
    valid = np.array([True, True, False])
    preds = decode_jit([fine_logits], TWO_LEVELS, "marginal")  # (0, 0) for all
    sums = metrics_jit(preds, [fine_logits], labels, TWO_LEVELS, prefix="marginal/",
                              valid=valid)
    assert as_floats(sums) == {
        "marginal/count": 2.0,
        "marginal/top1/0_sum": 1.0,
        "marginal/top1/1_sum": 1.0,
        "marginal/consistency/0_sum": 0.0,  # the fine head says 3 every time
        "marginal/mistakes_count": 1.0,
        "marginal/mistake_severity_sum": 2.0,  # 0 vs 3 meet only at the implicit root
    }
    # Next to the raw-head metrics in one dict, halves merged, then rates per group.
    raw = hierarchical_metrics([fine_logits], labels, TWO_LEVELS, valid=valid)
    first = metrics_jit(preds[:1], [fine_logits[:1]], labels[:1], TWO_LEVELS,
                               prefix="marginal/", valid=valid[:1])
    rest = metrics_jit(preds[1:], [fine_logits[1:]], labels[1:], TWO_LEVELS,
                              prefix="marginal/", valid=valid[1:])
    assert as_floats(merge(first, rest)) == as_floats(sums)
    rates = dec.summarize({**raw, **merge(first, rest)})
    assert rates["marginal/top1/0"] == 0.5
    assert rates["marginal/consistency/0"] == 0.0
    assert rates["marginal/mistake_severity"] == 2.0  # 2 / 1 mistake
    assert rates["marginal/hier_distance"] == 1.0  # 2 / 2 examples
    assert rates["top1/0"] == 0.5  # raw fine head: right on (3, 1) only
    assert rates["mistake_severity"] == 2.0
    assert rates["count"] == rates["marginal/count"] == 2.0
