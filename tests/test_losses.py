"""The losses against slow numpy versions written from the papers' definitions."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hierjax import cascaded_softmax_loss, coarse_constraint_loss, glm_loss
from hierjax.losses import glm_statistics


# ---------------------------------------------------------------- numpy references

def _members(labels, valid):
    """fine class -> indices of its valid examples, classes in sorted order."""
    rows = np.flatnonzero(valid)
    return {c: rows[labels[rows, 0] == c] for c in sorted(set(labels[rows, 0].tolist()))}


def ref_within(x, idx):
    mean = x[idx].mean(axis=0)
    return np.mean([np.sum((x[i] - mean) ** 2) for i in idx])


def ref_between(x, idx_p, idx_q, k):
    dists = sorted(np.sum((x[i] - x[j]) ** 2) for i in idx_p for j in idx_q)
    kk = min(k, len(dists))
    return sum(dists[:kk]) / kk


def ref_glm(x, labels, valid, k, margins):
    """GLM loss, one class and one level at a time, exactly as written in the paper."""
    x = np.asarray(x, np.float64)
    h = labels.shape[1]
    members = _members(labels, valid)
    classes = list(members)
    if not classes:
        return 0.0
    ancestor = {c: labels[members[c][0]] for c in classes}
    total = 0.0
    for c in classes:
        others = [q for q in classes if q != c]
        d_b = {q: ref_between(x, members[c], members[q], k) for q in others}
        # Level l (1-based) ancestors sit in column l - 1.
        same = lambda l: [q for q in others if ancestor[q][l - 1] == ancestor[c][l - 1]]
        diff = lambda l: [q for q in others if ancestor[q][l - 1] != ancestor[c][l - 1]]
        siblings = same(2) if h > 1 else others
        if siblings:
            total += max(0.0, ref_within(x, members[c]) - min(d_b[q] for q in siblings)
                         + margins[0])
        for l in range(2, h + 1):
            if same(l) and diff(l):
                total += max(0.0, max(d_b[q] for q in same(l))
                             - min(d_b[q] for q in diff(l)) + margins[l - 1])
    return total / len(classes)


def ref_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def ref_cascaded(logits, labels, weights, valid):
    per = []
    for i in range(labels.shape[0]):
        per.append(sum(-w * ref_log_softmax(z[i])[labels[i, l]]
                       for l, (w, z) in enumerate(zip(weights, logits))))
    per = np.array(per)
    return per[valid].mean() if valid.any() else 0.0


def ref_coarse(fine_logits, labels, ancestors, a, b, valid, reduction):
    z = np.asarray(fine_logits, np.float64)
    per = []
    for i in range(labels.shape[0]):
        loss = -a * ref_log_softmax(z[i])[labels[i, 0]]
        for l in range(1, labels.shape[1]):
            t = np.array([float(ancestors[j, l] == labels[i, l]) for j in range(z.shape[1])])
            p = 1 / (1 + np.exp(-z[i]))
            bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
            loss += b * (bce.mean() if reduction == "mean" else bce.sum())
        per.append(loss)
    per = np.array(per)
    return per[valid].mean()


# ------------------------------------------------------------------ random cases

def random_case(seed, *, b, h, d, num_fine, masked):
    rng = np.random.default_rng(seed)
    # A random tree: each level maps the ids of the level below through a random table
    # onto about half as many ids, so every class has exactly one parent.
    ancestors = np.zeros((num_fine, h), np.int32)
    ancestors[:, 0] = np.arange(num_fine)
    for l in range(1, h):
        below = ancestors[:, l - 1].max() + 1
        parent_of = rng.integers(0, below // 2 + 1, size=below)
        ancestors[:, l] = parent_of[ancestors[:, l - 1]]
    fine = rng.integers(0, num_fine, size=b)
    labels = ancestors[fine]
    x = rng.normal(size=(b, d)).astype(np.float32)
    valid = rng.random(b) > 0.3 if masked else np.ones(b, bool)
    return x, labels.astype(np.int32), valid


CASES = [
    dict(b=b, h=h, d=d, num_fine=nf, masked=m, k=k, seed=s)
    for s, (b, h, d, nf, m, k) in enumerate(itertools.product(
        (1, 2, 7, 16), (1, 2, 3), (3,), (2, 6), (False, True), (1, 3, 100)))
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_glm_matches_reference(case):
    x, labels, valid = random_case(case["seed"], b=case["b"], h=case["h"], d=case["d"],
                                   num_fine=case["num_fine"], masked=case["masked"])
    rng = np.random.default_rng(case["seed"] + 1)
    margins = tuple(rng.choice([0.0, 1.0, 4.0], size=case["h"]).tolist())
    got = glm_loss(x, labels, k=case["k"], margins=margins, valid=valid)
    want = ref_glm(x, labels, valid, case["k"], margins)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_glm_statistics_match_reference_and_laplacian_form(seed):
    x, labels, valid = random_case(seed, b=12, h=2, d=4, num_fine=4, masked=seed % 2 == 1)
    k = 1 + seed
    stats = glm_statistics(x, labels, k=k, valid_B=valid)
    members = _members(labels, valid)
    x64 = x.astype(np.float64)
    for p, q in itertools.permutations(members, 2):
        sp, sq = members[p][0], members[q][0]  # a slot is the class's first valid row
        assert stats.present_B[sp] and stats.present_B[sq]
        want = ref_between(x64, members[p], members[q], k)
        np.testing.assert_allclose(stats.between_BxB[sp, sq], want, rtol=1e-4, atol=1e-4)
        # Laplacian form: H holds the two classes' features as columns, G the affinity
        # of the k nearest (i in p, j in q) pairs, L = diag(G 1) - G.
        idx = np.concatenate([members[p], members[q]])
        h_mat = x64[idx].T
        n_p = len(members[p])
        pairs = sorted((np.sum((x64[i] - x64[j]) ** 2), a, n_p + b)
                       for a, i in enumerate(members[p]) for b, j in enumerate(members[q]))
        kk = min(k, len(pairs))
        g = np.zeros((len(idx), len(idx)))
        for _, a, b in pairs[:kk]:
            g[a, b] = g[b, a] = 1.0
        lap = np.diag(g.sum(axis=1)) - g
        np.testing.assert_allclose(np.trace(h_mat @ lap @ h_mat.T) / kk, want, rtol=1e-10)
    for c, idx in members.items():
        np.testing.assert_allclose(stats.within_B[idx[0]], ref_within(x64, idx),
                                   rtol=1e-4, atol=1e-5)
        assert stats.counts_B[idx[0]] == len(idx)
    assert int(stats.present_B.sum()) == len(members)


def test_glm_gradient_matches_finite_differences_of_reference():
    x, labels, valid = random_case(3, b=10, h=3, d=3, num_fine=5, masked=True)
    margins, k = (2.0, 1.0, 3.0), 2
    grad = jax.grad(lambda f: glm_loss(f, labels, k=k, margins=margins, valid=valid))(x)
    # The loss is piecewise quadratic in x, so central differences are exact up to
    # rounding while the selection of nearest pairs does not change.
    eps = 1e-4
    fd = np.zeros(x.shape)
    x64 = x.astype(np.float64)
    for i, j in np.ndindex(*x.shape):
        plus, minus = x64.copy(), x64.copy()
        plus[i, j] += eps
        minus[i, j] -= eps
        fd[i, j] = (ref_glm(plus, labels, valid, k, margins)
                    - ref_glm(minus, labels, valid, k, margins)) / (2 * eps)
    assert np.abs(fd).max() > 0.1, "case chosen so that some hinges are active"
    np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-3)
    assert np.all(np.asarray(grad)[~valid] == 0), "masked rows get no gradient"


def test_glm_inactive_hinges_give_zero_loss_and_gradient():
    x, labels, valid = random_case(0, b=16, h=3, d=4, num_fine=6, masked=False)
    f = lambda feats: glm_loss(feats, labels, k=3, margins=(-1e4, -1e4, -1e4))
    assert float(f(x)) == 0.0
    assert np.all(np.asarray(jax.grad(f)(x)) == 0.0)


def test_glm_degenerate_batches():
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    one_class = np.zeros((6, 2), np.int32)
    assert float(glm_loss(x, one_class, k=2, margins=(1.0, 1.0))) == 0.0
    assert float(glm_loss(x[:1], one_class[:1], k=2, margins=(1.0, 1.0))) == 0.0
    nothing_valid = np.zeros(6, bool)
    loss, grad = jax.value_and_grad(
        lambda f: glm_loss(f, one_class, k=2, margins=(1.0, 1.0), valid=nothing_valid))(x)
    assert float(loss) == 0.0 and np.all(np.isfinite(grad)) and np.all(grad == 0)
    # Singleton classes: D_W = 0, D_B is the plain squared distance; h = 1.
    flat = np.arange(3, dtype=np.int32)[:, None]
    pts = np.array([[0.0], [1.0], [3.0]], np.float32)
    # Nearest other class: 1 (dist 1), 0 (1), 1 (4); terms [0 - d + 2]_+ = 1, 1, 0.
    np.testing.assert_allclose(glm_loss(pts, flat, k=5, margins=(2.0,)), 2.0 / 3.0, rtol=1e-6)


def test_glm_under_jit_and_bfloat16():
    x, labels, valid = random_case(5, b=32, h=3, d=16, num_fine=8, masked=True)
    loss_fn = jax.jit(functools.partial(glm_loss, k=5, margins=(1.0, 1.0, 1.0)))
    eager = glm_loss(x, labels, k=5, margins=(1.0, 1.0, 1.0), valid=valid)
    np.testing.assert_allclose(loss_fn(x, labels, valid=valid), eager, rtol=1e-6)
    x_bf16 = jnp.asarray(x, jnp.bfloat16)
    loss_bf16, grad_bf16 = jax.value_and_grad(
        lambda f: loss_fn(f, labels, valid=valid))(x_bf16)
    assert loss_bf16.dtype == jnp.float32 and grad_bf16.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        loss_bf16, loss_fn(x_bf16.astype(jnp.float32), labels, valid=valid), rtol=1e-6)


def test_glm_rejects_bad_arguments():
    x = np.zeros((4, 2), np.float32)
    labels = np.zeros((4, 2), np.int32)
    with pytest.raises(ValueError, match="one alpha per hierarchy level"):
        glm_loss(x, labels, k=1, margins=(1.0,))
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        glm_loss(x, labels, k=0, margins=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"labels must be \[B, h\]"):
        glm_loss(x, labels[:3], k=1, margins=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"features must be \[B, D\]"):
        glm_loss(x[None], labels, k=1, margins=(1.0, 1.0))


def test_glm_all_gather_equals_single_device_global_batch():
    num_devices = 4
    devices = jax.devices()[:num_devices]
    assert len(devices) == num_devices, "conftest sets 8 fake CPU devices"
    x, labels, valid = random_case(11, b=24, h=3, d=5, num_fine=7, masked=True)
    kw = dict(k=3, margins=(1.0, 2.0, 1.0))
    shard = lambda a: a.reshape(num_devices, -1, *a.shape[1:])
    per_device = jax.pmap(
        lambda f, l, v: glm_loss(f, l, valid=v, axis_name="batch", **kw),
        axis_name="batch", devices=devices)
    single = glm_loss(x, labels, valid=valid, **kw)
    np.testing.assert_allclose(
        per_device(shard(x), shard(labels), shard(valid)), np.full(num_devices, single),
        rtol=1e-5)

    def device_mean(feats):
        return jnp.mean(per_device(shard(feats), shard(labels), shard(valid)))

    grad_single = jax.grad(lambda f: glm_loss(f, labels, valid=valid, **kw))(x)
    np.testing.assert_allclose(jax.grad(device_mean)(x), grad_single, rtol=1e-5, atol=1e-6)

    # A pmean'd train step: each device differentiates its copy of the global loss with
    # respect to shared parameters; the mean of those gradients is the global gradient.
    w = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)

    def step(w, x_local, labels_local, valid_local):
        loss_fn = lambda w: glm_loss(x_local @ w, labels_local, valid=valid_local,
                                     axis_name="batch", **kw)
        return jax.lax.pmean(jax.grad(loss_fn)(w), "batch")

    grads = jax.pmap(step, axis_name="batch", in_axes=(None, 0, 0, 0), devices=devices)(
        w, shard(x), shard(labels), shard(valid))
    want = jax.grad(lambda w: glm_loss(x @ w, labels, valid=valid, **kw))(w)
    np.testing.assert_allclose(grads[0], want, rtol=1e-4, atol=1e-5)


def _temp_bytes(fn, *args) -> int:
    """Scratch memory XLA allocates for the compiled fn(*args) (arguments and outputs
    excluded)."""
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_glm_memory_does_not_depend_on_number_of_classes():
    """Labels are mapped to at most B present-class slots, so the scratch memory of the
    loss and its gradient is the same for a 200-class and a 10,000-class tree. A per-class
    computation (class means over all C classes) is the control: its memory grows with
    C, which shows the measurement would catch a loss that allocated per class."""
    rng = np.random.default_rng(0)
    b, d = 64, 32
    x = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)

    def tree(num_fine):  # fine id -> (fine, coarse): a [C, 2] table, as a train step has
        return jnp.asarray(np.stack([np.arange(num_fine), np.arange(num_fine) // 10], 1),
                           jnp.int32)

    fine = jnp.asarray(rng.integers(0, 200, b), jnp.int32)
    glm = jax.value_and_grad(lambda x, fine, ancestors: glm_loss(
        x, ancestors[fine], k=3, margins=(1.0, 1.0)))

    def per_class_means(x, fine, ancestors):
        sums = jax.ops.segment_sum(x, fine, num_segments=ancestors.shape[0])
        counts = jax.ops.segment_sum(jnp.ones(b), fine, num_segments=ancestors.shape[0])
        return jnp.sum((sums / jnp.maximum(counts, 1)[:, None]) ** 2)

    small, large = tree(200), tree(10_000)
    control_growth = (_temp_bytes(per_class_means, x, fine, large)
                      - _temp_bytes(per_class_means, x, fine, small))
    assert control_growth >= (10_000 - 200) * d * 4  # the [C, D] class sums
    assert _temp_bytes(glm, x, fine, large) == _temp_bytes(glm, x, fine, small)
    np.testing.assert_allclose(glm(x, fine, large)[0], glm(x, fine, small)[0], rtol=1e-6)


# --------------------------------------------------------------- cascaded softmax

@pytest.mark.parametrize("num_heads,use_weights,masked", [(1, False, False), (2, True, True),
                                                         (3, True, False), (2, False, True)])
def test_cascaded_softmax_matches_reference(num_heads, use_weights, masked):
    rng = np.random.default_rng(num_heads)
    b, sizes = 9, (7, 4, 2)
    labels = np.stack([rng.integers(0, c, b) for c in sizes], axis=1).astype(np.int32)
    logits = [rng.normal(size=(b, c)).astype(np.float32) * 3 for c in sizes[:num_heads]]
    weights = tuple(rng.uniform(0.2, 2.0, num_heads)) if use_weights else None
    valid = rng.random(b) > 0.4 if masked else np.ones(b, bool)
    got = cascaded_softmax_loss(logits, labels, weights=weights,
                                valid=valid if masked else None)
    want = ref_cascaded(logits, labels, weights or (1.0,) * num_heads, valid)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_cascaded_softmax_rejects_too_many_heads():
    labels = np.zeros((2, 1), np.int32)
    with pytest.raises(ValueError, match="2 heads but labels have 1 levels"):
        cascaded_softmax_loss([np.zeros((2, 3))] * 2, labels)


# --------------------------------------------------------------- coarse constraint

@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("h", [2, 3])
def test_coarse_constraint_matches_reference(reduction, h):
    rng = np.random.default_rng(h)
    num_fine, b = 8, 11
    ancestors = np.stack([np.arange(num_fine), np.arange(num_fine) // 3,
                          np.arange(num_fine) // 5][:h], axis=1).astype(np.int32)
    labels = ancestors[rng.integers(0, num_fine, b)]
    logits = rng.normal(size=(b, num_fine)).astype(np.float32) * 2
    valid = rng.random(b) > 0.3
    got = coarse_constraint_loss(logits, labels, ancestors, a=0.7, b=2.0, valid=valid,
                                 reduction=reduction)
    want = ref_coarse(logits, labels, ancestors, 0.7, 2.0, valid, reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_coarse_constraint_hand_worked():
    # Fine classes 0,1 under coarse 0; class 2 under coarse 1. Example of class 0 with
    # zero logits: CE = log 3; targets t = (1, 1, 0); every BCE term is log 2.
    ancestors = np.array([[0, 0], [1, 0], [2, 1]], np.int32)
    loss = coarse_constraint_loss(np.zeros((1, 3), np.float32), ancestors[:1], ancestors,
                                  a=1.0, b=1.0)
    np.testing.assert_allclose(loss, np.log(3) + np.log(2), rtol=1e-6)
    constraint_only = coarse_constraint_loss(np.zeros((1, 3), np.float32), ancestors[:1],
                                             ancestors, a=0.0, b=1.0)
    np.testing.assert_allclose(constraint_only, np.log(2), rtol=1e-6)
    # Logit +20 for every class under the example's coarse label, -20 elsewhere: the
    # constraint term vanishes; CE is log 2 (two tied fine classes).
    z = np.array([[20.0, 20.0, -20.0]], np.float32)
    loss = coarse_constraint_loss(z, ancestors[:1], ancestors, a=1.0, b=1.0)
    np.testing.assert_allclose(loss, np.log(2), rtol=1e-5)


def test_coarse_constraint_rejects_bad_arguments():
    ancestors = np.array([[0, 0], [1, 0], [2, 1]], np.int32)
    z = np.zeros((1, 3), np.float32)
    with pytest.raises(ValueError, match="ancestors must be"):
        coarse_constraint_loss(z[:, :2], ancestors[:1], ancestors)
    with pytest.raises(ValueError, match="reduction"):
        coarse_constraint_loss(z, ancestors[:1], ancestors, reduction="max")
    with pytest.raises(ValueError, match="h >= 2"):
        coarse_constraint_loss(z, ancestors[:1, :1], ancestors[:, :1])
