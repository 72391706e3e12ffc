"""Hierarchical classification losses: GLM, cascaded softmax, coarse-label constraint.

Label convention shared by every function here: `labels_BxH` holds, per example, the
fine class in column 0 and its ancestor at level l in column l (coarser as l grows).
`valid_B` (optional bool) marks the rows that take part; padded rows are ignored.

Label contract: every valid row is a path of the hierarchy (labels in range; a fine
class always with the same ancestors). Called eagerly with concrete labels, each loss
checks this and raises a ValueError naming the row. Under jit the labels are values the
loss cannot inspect, and a label out of range silently gives a wrong value (NaN, or a
finite wrong loss): check the data once on the host (hierjax's input pipeline does, per
dataset), or pass `check_labels=True` and run the function under
`jax.experimental.checkify.checkify`, which then reports the first bad label:

    err, loss = checkify.checkify(jax.jit(functools.partial(
        cascaded_softmax_loss, check_labels=True)))(logits, labels)
    err.throw()

* `glm_loss` — generalized large-margin loss of Shi, Gong et al. (IEEE TNNLS),
  computed for all class pairs at once with static shapes.
* `cascaded_softmax_loss` — sum over levels of weighted softmax cross-entropy.
* `coarse_constraint_loss` — Lu & Zou (MMM 2019): fine cross-entropy plus a sigmoid
  cross-entropy of the fine logits against the multi-hot set of fine classes that share
  the example's coarse label.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

__all__ = [
    "GLMStatistics",
    "glm_statistics",
    "glm_loss",
    "cascaded_softmax_loss",
    "coarse_constraint_loss",
]


class GLMStatistics(NamedTuple):
    """Distances of the classes present in a batch, indexed by *slot*.

    A slot is the batch position of the first valid example of a class, so a batch of
    B examples has at most B slots whatever the number of classes in the dataset.

    Attributes:
      present_B: bool [B]; slot s holds a class present in the batch.
      counts_B: float32 [B]; n_s, valid examples of the class in slot s (0 if absent).
      labels_BxH: int [B, h]; hierarchy labels of the class in each slot.
      within_B: float32 [B]; D_W(s) = mean_{i in s} ||x_i - m_s||^2 (0 if absent).
      between_BxB: float32 [B, B]; D_B(p, q), the mean of the k_pq = min(k, n_p n_q)
        smallest ||x_i - x_j||^2 over i in p, j in q. Symmetric; 0 on the diagonal and
        wherever a slot is absent.
    """

    present_B: jax.Array
    counts_B: jax.Array
    labels_BxH: jax.Array
    within_B: jax.Array
    between_BxB: jax.Array


def _gather_global(features_BxD, labels_BxH, valid_B, axis_name):
    """All-gathers the per-device batch so every device sees the global batch."""
    gather = functools.partial(jax.lax.all_gather, axis_name=axis_name, tiled=True)
    return gather(features_BxD), gather(labels_BxH), gather(valid_B)


def _check_inputs(features_BxD, labels_BxH, valid_B):
    if features_BxD.ndim != 2:
        raise ValueError(f"features must be [B, D], got shape {features_BxD.shape}.")
    if labels_BxH.ndim != 2 or labels_BxH.shape[0] != features_BxD.shape[0]:
        raise ValueError(
            f"labels must be [B, h] with B = {features_BxD.shape[0]} (features' batch), "
            f"got shape {labels_BxH.shape}. Use Hierarchy.labels_for(fine) to build them.")
    if not jnp.issubdtype(labels_BxH.dtype, jnp.integer):
        raise ValueError(f"labels must be integers, got dtype {labels_BxH.dtype}.")
    if valid_B is not None and valid_B.shape != features_BxD.shape[:1]:
        raise ValueError(
            f"valid must be [B] = [{features_BxD.shape[0]}], got shape {valid_B.shape}.")


def _check_labels(labels_BxH, valid_B, *, where: str, num_classes=None, ancestors=None,
                  paths: bool = True, checked: bool = False) -> None:
    """The label contract (module docstring): a ValueError naming the row when the labels
    are concrete, `checkify.check`s when `checked` and they are traced, else nothing.

    num_classes: classes per level to check the range of (None: no range check);
    ancestors: [C_1, h] table every row must follow (None: rows must agree with each
    other: the same fine class with the same ancestors); paths=False checks ranges only
    (the cascaded loss treats each level on its own).
    """
    if labels_BxH.ndim != 2:
        raise ValueError(f"{where}: labels must be [B, h] (fine label, then its ancestor "
                         f"at each coarser level), got shape {labels_BxH.shape}; build them "
                         "with Hierarchy.labels_for(fine_labels)")
    try:
        labels = np.asarray(labels_BxH)
        valid = np.ones(len(labels), bool) if valid_B is None else np.asarray(valid_B, bool)
        anc = None if ancestors is None else np.asarray(ancestors)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        if checked:
            _checkify_labels(labels_BxH, valid_B, where, num_classes, ancestors, paths)
        return
    rows = np.flatnonzero(valid)
    if num_classes is not None:
        for level, c in enumerate(num_classes):
            bad = rows[(labels[rows, level] < 0) | (labels[rows, level] >= c)]
            if bad.size:
                raise ValueError(f"{where}: row {bad[0]} has level-{level} label "
                                 f"{labels[bad[0], level]}, outside 0..{c - 1}")
    if anc is not None:
        fine = labels[rows, 0]
        if fine.size and (fine.min() < 0 or fine.max() >= len(anc)):
            row = rows[np.flatnonzero((fine < 0) | (fine >= len(anc)))[0]]
            raise ValueError(f"{where}: row {row} has fine label {labels[row, 0]}, outside "
                             f"0..{len(anc) - 1} (the ancestors table)")
        wrong = rows[(labels[rows] != anc[fine]).any(1)]
        if wrong.size:
            row = wrong[0]
            raise ValueError(f"{where}: row {row} has labels {labels[row].tolist()} but fine "
                             f"class {labels[row, 0]} lies under {anc[labels[row, 0]].tolist()}")
    elif paths:
        _, first = np.unique(labels[rows, 0], return_index=True)
        reference = dict(zip(labels[rows[first], 0].tolist(), labels[rows[first]].tolist()))
        for row in rows:
            if labels[row].tolist() != reference[int(labels[row, 0])]:
                raise ValueError(f"{where}: row {row} has labels {labels[row].tolist()}, "
                                 f"another row of fine class {labels[row, 0]} has "
                                 f"{reference[int(labels[row, 0])]}: the rows contradict "
                                 "each other")


def _checkify_labels(labels_BxH, valid_B, where, num_classes, ancestors, paths):
    valid = jnp.ones(labels_BxH.shape[:1], bool) if valid_B is None else valid_B
    if num_classes is not None:
        for level, c in enumerate(num_classes):
            label = labels_BxH[:, level]
            checkify.check(jnp.all(~valid | ((label >= 0) & (label < c))),
                           f"{where}: a level-{level} label is outside 0..{c - 1}")
    if ancestors is not None:
        anc = jnp.asarray(ancestors)
        fine = labels_BxH[:, 0]
        in_range = (fine >= 0) & (fine < anc.shape[0])
        checkify.check(jnp.all(~valid | in_range),
                       f"{where}: a fine label is outside 0..{anc.shape[0] - 1}")
        follows = jnp.all(anc[jnp.clip(fine, 0, anc.shape[0] - 1)] == labels_BxH, axis=1)
        checkify.check(jnp.all(~valid | follows),
                       f"{where}: a row's coarse labels contradict the ancestors table")
    elif paths:
        same_fine = labels_BxH[:, None, 0] == labels_BxH[None, :, 0]
        same_path = jnp.all(labels_BxH[:, None] == labels_BxH[None, :], axis=-1)
        both = valid[:, None] & valid[None, :]
        checkify.check(jnp.all(~(both & same_fine) | same_path),
                       f"{where}: rows of the same fine class have different ancestors")


def _k_smallest_pair_sums(dist_N, pair_id_N, num_pairs, k):
    """Per pair id, the sum of its k smallest distances.

    One lexicographic sort of the (pair id, distance) entries groups each pair's
    distances in increasing order; an entry's rank is its position minus the start of
    its segment. The distance key is the int32 bit pattern of the (non-negative) float,
    which orders the same and sorts faster. Selection runs on stop-gradient copies and is
    applied as a 0/1 weight in the original order, so gradients reach the selected
    distances only and never pass through the sort.
    """
    n = dist_N.shape[0]
    if n == 0:  # a batch of one example has no pairs
        return jnp.zeros((num_pairs,), dist_N.dtype)
    position_N = jnp.arange(n, dtype=jnp.int32)
    # + 0.0 turns a possible -0.0 into +0.0, whose bits sort first.
    dist_bits_N = jax.lax.bitcast_convert_type(
        jax.lax.stop_gradient(dist_N) + 0.0, jnp.int32)
    sorted_id_N, _, order_N = jax.lax.sort(
        (pair_id_N, dist_bits_N, position_N), num_keys=2)
    is_start_N = jnp.concatenate(
        [jnp.ones((1,), bool), sorted_id_N[1:] != sorted_id_N[:-1]])
    segment_start_N = jax.lax.cummax(jnp.where(is_start_N, position_N, 0))
    chosen_sorted_N = (position_N - segment_start_N) < k
    chosen_N = jnp.zeros((n,), dist_N.dtype).at[order_N].set(
        chosen_sorted_N.astype(dist_N.dtype))
    return jax.ops.segment_sum(dist_N * chosen_N, pair_id_N, num_segments=num_pairs)


def glm_statistics(features_BxD, labels_BxH, *, k, valid_B=None, precision="highest"):
    """Within-class and between-class distances of the classes present in the batch.

    For present classes p != q with n_p, n_q valid examples:
      m_p = mean_{i in p} x_i,   D_W(p) = mean_{i in p} ||x_i - m_p||^2,
      D_B(p, q) = (1 / k_pq) * sum of the k_pq = min(k, n_p n_q) smallest ||x_i - x_j||^2
                  over i in p, j in q.
    The paper writes D_B in Laplacian form: with H = [x_i]_{i in p u q} (D x (n_p+n_q)),
    G_pq the symmetric 0/1 affinity of the k_pq nearest (i in p, j in q) pairs and
    L_pq = diag(G_pq 1) - G_pq,
      tr(H L_pq H^T) = 1/2 sum_ij G_ij ||x_i - x_j||^2 = sum over the chosen pairs,
    so D_B(p, q) = tr(H L_pq H^T) / k_pq.

    All squared distances come from one Gram matrix; classes are mapped to at most B
    slots, so time is O(B^2 D + B^2 log B) and memory O(B^2 + B D), independent of the
    number of classes. Computation is in float32 whatever the features' dtype.

    Args:
      features_BxD: float [B, D] penultimate features.
      labels_BxH: int [B, h] hierarchy labels (column 0 fine).
      k: number of nearest cross-class pairs averaged in D_B (>= 1).
      valid_B: optional bool [B]; False rows take no part.
      precision: matmul precision of the Gram matrix.

    Returns:
      A `GLMStatistics` indexed by slot.
    """
    _check_inputs(features_BxD, labels_BxH, valid_B)
    if int(k) < 1:
        raise ValueError(f"k (number of nearest pairs in D_B) must be >= 1, got {k}.")
    b = features_BxD.shape[0]
    x_BxD = features_BxD.astype(jnp.float32)
    valid_B = jnp.ones((b,), bool) if valid_B is None else valid_B.astype(bool)
    fine_B = labels_BxH[:, 0]

    same_BxB = (fine_B[:, None] == fine_B[None, :]) & valid_B[:, None] & valid_B[None, :]
    # Slot of a valid example: position of the first valid example of its class.
    slot_B = jnp.where(valid_B, jnp.argmax(same_BxB, axis=1), 0).astype(jnp.int32)
    present_B = valid_B & (slot_B == jnp.arange(b))
    weight_B = valid_B.astype(jnp.float32)
    counts_B = jax.ops.segment_sum(weight_B, slot_B, num_segments=b)
    safe_counts_B = jnp.maximum(counts_B, 1.0)

    mean_BxD = jax.ops.segment_sum(x_BxD * weight_B[:, None], slot_B, num_segments=b)
    mean_BxD = mean_BxD / safe_counts_B[:, None]
    spread_B = jnp.sum(jnp.square(x_BxD - mean_BxD[slot_B]), axis=-1) * weight_B
    within_B = jax.ops.segment_sum(spread_B, slot_B, num_segments=b) / safe_counts_B

    sqnorm_B = jnp.sum(jnp.square(x_BxD), axis=-1)
    gram_BxB = jnp.matmul(x_BxD, x_BxD.T, precision=precision)
    dist_BxB = jnp.maximum(sqnorm_B[:, None] + sqnorm_B[None, :] - 2.0 * gram_BxB, 0.0)

    # D_B is symmetric, so only the pairs i < j are sorted (half the entries); the
    # unordered slot pair (min, max) names the segment.
    rows_N, cols_N = np.triu_indices(b, 1)
    slot_i_N, slot_j_N = slot_B[rows_N], slot_B[cols_N]
    cross_N = valid_B[rows_N] & valid_B[cols_N] & (slot_i_N != slot_j_N)
    num_pairs = b * b
    pair_id_N = jnp.minimum(slot_i_N, slot_j_N) * b + jnp.maximum(slot_i_N, slot_j_N)
    # Same-class and masked pairs share a dump segment that is never read.
    pair_id_N = jnp.where(cross_N, pair_id_N, num_pairs)
    sums = _k_smallest_pair_sums(dist_BxB[rows_N, cols_N], pair_id_N, num_pairs + 1, int(k))
    upper_BxB = sums[:num_pairs].reshape(b, b)
    pair_count_BxB = counts_B[:, None] * counts_B[None, :]
    k_BxB = jnp.maximum(jnp.minimum(float(k), pair_count_BxB), 1.0)
    between_BxB = (upper_BxB + upper_BxB.T) / k_BxB

    slot_labels_BxH = labels_BxH  # slot s is example s, so its labels are row s
    return GLMStatistics(present_B, counts_B, slot_labels_BxH, within_B, between_BxB)


def _masked_min(values, mask, axis=-1):
    """min over mask along axis, and whether the mask is non-empty (0 where empty)."""
    nonempty = jnp.any(mask, axis=axis)
    big = jnp.finfo(values.dtype).max
    result = jnp.min(jnp.where(mask, values, big), axis=axis)
    return jnp.where(nonempty, result, 0.0), nonempty


def _masked_max(values, mask, axis=-1):
    result, nonempty = _masked_min(-values, mask, axis)
    return -result, nonempty


def glm_loss(features, labels, *, k, margins, valid=None, axis_name=None,
             precision="highest", check_labels=False):
    """Generalized large-margin (GLM) loss of Shi, Gong et al. (IEEE TNNLS).

    Over the present classes P of the batch (see `glm_statistics` for D_W and D_B):
      A_l(c) = {q in P, q != c, same level-l ancestor as c},
      N_l(c) = {q in P, different level-l ancestor},            (levels l = 2..h, 1-based)
      term_1(c) = [D_W(c) - min_{q in A_2(c)} D_B(c, q) + alpha_1]_+
      term_l(c) = [max_{q in A_l(c)} D_B(c, q) - min_{q in N_l(c)} D_B(c, q) + alpha_l]_+
      GLM = mean_{c in P} (term_1(c) + sum_{l=2..h} term_l(c)).
    A term whose sets are empty is 0. With h = 1, A_2(c) is every other present class.
    Gradients flow through the selected distances (the selection is piecewise constant).

    Args:
      features: float [B, D] (float32 or bfloat16; computed in float32).
      labels: int [B, h]; column 0 fine, column l the level-(l+1) ancestor.
      k: nearest cross-class pairs averaged in each D_B (static int).
      margins: h floats alpha_1..alpha_h (static).
      valid: optional bool [B].
      axis_name: inside `pmap`/`shard_map`, all-gather features, labels and valid over
        this axis so the loss is that of the global batch. Every device returns the same
        value; the gradient of the device-mean of that value (what a pmean'd train step
        differentiates) equals the single-device gradient of the global batch.
      precision: matmul precision of the Gram matrix.
      check_labels: checkify checks of the label contract under jit (module docstring).

    Returns:
      float32 scalar.
    """
    _check_labels(labels, valid, where="glm_loss", checked=check_labels)
    h = labels.shape[-1]
    margins = tuple(float(m) for m in margins)
    if len(margins) != h:
        raise ValueError(
            f"margins needs one alpha per hierarchy level: labels have h = {h} levels "
            f"but margins = {margins}.")
    if valid is None:
        valid = jnp.ones(features.shape[:1], bool)
    if axis_name is not None:
        features, labels, valid = _gather_global(features, labels, valid, axis_name)
    stats = glm_statistics(features, labels, k=k, valid_B=valid, precision=precision)

    b = features.shape[0]
    present_B = stats.present_B
    others_BxB = present_B[:, None] & present_B[None, :] & ~jnp.eye(b, dtype=bool)
    dist_BxB = stats.between_BxB

    def same_ancestor(level):
        anc_B = stats.labels_BxH[:, level]
        return anc_B[:, None] == anc_B[None, :]

    siblings_BxB = others_BxB & same_ancestor(1) if h > 1 else others_BxB
    nearest_sibling_B, has_sibling_B = _masked_min(dist_BxB, siblings_BxB)
    terms_B = jnp.where(
        has_sibling_B,
        jax.nn.relu(stats.within_B - nearest_sibling_B + margins[0]), 0.0)
    for level in range(1, h):
        same_BxB = same_ancestor(level)
        farthest_same_B, has_same_B = _masked_max(dist_BxB, others_BxB & same_BxB)
        nearest_other_B, has_other_B = _masked_min(dist_BxB, others_BxB & ~same_BxB)
        hinge_B = jax.nn.relu(farthest_same_B - nearest_other_B + margins[level])
        terms_B = terms_B + jnp.where(has_same_B & has_other_B, hinge_B, 0.0)

    num_present = jnp.sum(present_B)
    return jnp.sum(jnp.where(present_B, terms_B, 0.0)) / jnp.maximum(num_present, 1)


def _valid_mean(per_example_B, valid_B):
    if valid_B is None:
        return jnp.mean(per_example_B)
    weight_B = valid_B.astype(per_example_B.dtype)
    return jnp.sum(per_example_B * weight_B) / jnp.maximum(jnp.sum(weight_B), 1.0)


def _softmax_ce(logits_BxC, labels_B):
    logits_BxC = logits_BxC.astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits_BxC, axis=-1)
    return -jnp.take_along_axis(log_probs, labels_B[:, None], axis=-1)[:, 0]


def cascaded_softmax_loss(logits_per_level, labels, *, weights=None, valid=None,
                          check_labels=False):
    """Cascaded softmax (CSM) loss: mean over valid examples of sum_l w_l CE(z_l, y_l).

    Args:
      logits_per_level: sequence of L arrays [B, C_l], level 0 (fine) first; L <= h.
        A single fine head (L = 1) is the flat softmax loss.
      labels: int [B, h]; column l is the level-l label.
      weights: optional L floats w_l (default all 1).
      valid: optional bool [B].
      check_labels: checkify checks of the label contract under jit (module docstring).

    Returns:
      float32 scalar.
    """
    logits_per_level = list(logits_per_level)
    num_heads = len(logits_per_level)
    if not 1 <= num_heads <= labels.shape[-1]:
        raise ValueError(
            f"cascaded_softmax_loss got {num_heads} heads but labels have "
            f"{labels.shape[-1]} levels; pass 1..{labels.shape[-1]} heads, fine first.")
    _check_labels(labels, valid, where="cascaded_softmax_loss", checked=check_labels,
                  num_classes=[z.shape[-1] for z in logits_per_level], paths=False)
    weights = (1.0,) * num_heads if weights is None else tuple(float(w) for w in weights)
    if len(weights) != num_heads:
        raise ValueError(f"weights has {len(weights)} entries for {num_heads} heads.")
    per_example_B = sum(
        w * _softmax_ce(z, labels[:, level])
        for level, (w, z) in enumerate(zip(weights, logits_per_level)))
    return _valid_mean(per_example_B, valid)


def coarse_constraint_loss(fine_logits, labels, ancestors, *, a=1.0, b=1.0, valid=None,
                           reduction="mean", check_labels=False):
    """Coarse-label constraint loss of Lu & Zou (MMM 2019).

    For coarse level l >= 1 the target over fine classes is multi-hot:
      t^l_ij = 1 iff ancestors[j, l] == labels[i, l]  (every fine class under the
      example's level-l ancestor, its own class included), and
      loss_i = a * CE(z_i, y_i) + sum_l b_l * R_j BCE(sigmoid(z_ij), t^l_ij),
    where R is the mean (default) or sum over the C_1 fine classes. The loss is the mean
    of loss_i over valid examples.

    Args:
      fine_logits: float [B, C_1].
      labels: int [B, h].
      ancestors: int [C_1, h] (`Hierarchy.ancestors`).
      a: weight of the fine cross-entropy.
      b: weight of the constraint: one float for every coarse level, or h - 1 floats.
      valid: optional bool [B].
      reduction: "mean" or "sum" over fine classes of the sigmoid cross-entropy.
      check_labels: checkify checks of the label contract under jit (module docstring).

    Returns:
      float32 scalar.
    """
    _check_labels(labels, valid, where="coarse_constraint_loss", checked=check_labels,
                  ancestors=ancestors)
    ancestors = jnp.asarray(ancestors)
    h = labels.shape[-1]
    if ancestors.shape != (fine_logits.shape[-1], h):
        raise ValueError(
            f"ancestors must be [C_1, h] = [{fine_logits.shape[-1]}, {h}] to match the "
            f"fine logits and labels, got {ancestors.shape}.")
    if h < 2:
        raise ValueError("coarse_constraint_loss needs labels with a coarse level (h >= 2).")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    b_levels = (float(b),) * (h - 1) if np.ndim(b) == 0 else tuple(float(v) for v in b)
    if len(b_levels) != h - 1:
        raise ValueError(f"b has {len(b_levels)} entries for {h - 1} coarse levels.")

    logits_BxC = fine_logits.astype(jnp.float32)
    # a = 0 is the constraint term alone (the train step adds it to its own CE).
    per_example_B = (a * _softmax_ce(logits_BxC, labels[:, 0]) if a
                     else jnp.zeros(logits_BxC.shape[:1], jnp.float32))
    reduce = jnp.mean if reduction == "mean" else jnp.sum
    for level, weight in enumerate(b_levels, start=1):
        target_BxC = (ancestors[None, :, level] == labels[:, level, None]).astype(jnp.float32)
        bce_BxC = (jax.nn.softplus(logits_BxC) - logits_BxC * target_BxC)
        per_example_B = per_example_B + weight * reduce(bce_BxC, axis=-1)
    return _valid_mean(per_example_B, valid)
