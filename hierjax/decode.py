"""Hierarchy-consistent decoding: one prediction per level that always forms a tree path.

A model gives `logits_per_level`, a list of L arrays [B, C_l]: L = 1 for a flat softmax
head over the fine classes, L = h for cascaded heads (one per level). The raw argmax of
each head need not agree with the tree (the fine argmax may lie under another coarse
class than the coarse argmax); every decode here returns a path `preds_BxH` with
preds_BxH[:, l] == ancestors_CxH[preds_BxH[:, 0], l] by construction.

Conventions as in `hierjax.metrics`: h levels, level 0 = fine, `ancestors_CxH[c, l]` is
the level-l class of fine class c (so ancestors_CxH[:, 0] == arange(C_0)).

Methods (`DECODES`), with z_l the logits of head l:

  fine      c* = argmax_c z_0(c); the path is ancestors[c*].
  marginal  q = softmax(z_0); the level-l marginal m_l(g) = sum_{c : ancestors[c, l] = g}
            q(c). Top-down: g_{h-1} = argmax m_{h-1}, then for l = h-2..0,
            g_l = argmax of m_l over the level-l children of g_{l+1}.
  joint     (needs L = h) path score s(c) = sum_l log_softmax(z_l)[ancestors[c, l]],
            the log of the product of the per-level probabilities along c's path;
            c* = argmax_c s(c). Its distribution over fine classes is softmax(s).

Tie rule: an exact tie goes to the lowest index, like `jnp.argmax` / `np.argmax`: the
lowest fine id for `fine` and `joint`, and at each top-down step of `marginal` the
lowest level-l id among the tied children. Ties are exact float comparisons; values
that are equal mathematically but rounded differently (e.g. sums in another order)
are not ties.

`decode_metrics` scores a decoded path with additive sums like
`metrics.hierarchical_metrics`; its keys carry a prefix (e.g. "marginal/") so that
several decodes and the raw-head metrics share one dict, and `summarize` turns such a
dict into rates.
"""

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hierjax import metrics

DECODES = ("fine", "marginal", "joint")

_CHOOSE = "choose it with --decode (config key eval.decode)"


def _check_method(method: str, num_heads: int, num_levels: int) -> None:
    if method not in DECODES:
        raise ValueError(
            f"Unknown decode method {method!r}; expected one of {', '.join(DECODES)} "
            f"({_CHOOSE})."
        )
    if method == "joint" and num_heads != num_levels:
        raise ValueError(
            f"The 'joint' decode scores every root-to-leaf path with one head per level, "
            f"but the model has {num_heads} head(s) for a {num_levels}-level hierarchy. "
            f"Use a cascaded model with {num_levels} heads, or decode with 'fine' or "
            f"'marginal' instead ({_CHOOSE})."
        )


def _check_heads(logits_per_level, ancestors_CxH) -> None:
    if hasattr(logits_per_level, "ndim"):
        raise TypeError(
            "logits_per_level must be a sequence of [B, C_l] arrays, one per head; "
            "for a single flat head pass [logits_BxC]."
        )
    if ancestors_CxH.ndim != 2:
        raise ValueError(
            f"ancestors must be a 2-D [C_0, h] table; got shape {ancestors_CxH.shape}."
        )
    C, h = ancestors_CxH.shape
    if not 1 <= len(logits_per_level) <= h:
        raise ValueError(
            f"Got {len(logits_per_level)} logit heads for a hierarchy of {h} levels; "
            f"expected between 1 and {h}."
        )
    B = logits_per_level[0].shape[0]
    for l, logits_BxC in enumerate(logits_per_level):
        if logits_BxC.ndim != 2 or logits_BxC.shape[0] != B:
            raise ValueError(
                f"logits_per_level[{l}] has shape {logits_BxC.shape}; expected "
                f"[{B}, C_{l}], the batch size of the fine head."
            )
    if logits_per_level[0].shape[1] != C:
        raise ValueError(
            f"The fine head has {logits_per_level[0].shape[1]} classes but the "
            f"ancestors table has {C} rows; they must agree."
        )


def _table(ancestors) -> jax.Array:
    """The ancestors table as int32 jax, checked when it is concrete numpy."""
    # Only a numpy table can be checked without a device-to-host sync.
    if isinstance(ancestors, np.ndarray) and ancestors.ndim == 2 and not np.array_equal(
        ancestors[:, 0], np.arange(ancestors.shape[0])
    ):
        raise ValueError(
            "ancestors[:, 0] must be arange(C_0): row c of the table is the "
            "ancestor path of fine class c, starting with c itself."
        )
    return jnp.asarray(ancestors, dtype=jnp.int32)


def _segment_sum_BxG(q_BxC: jax.Array, ids_C: jax.Array, num_groups: int) -> jax.Array:
    """out[b, g] = sum_{c : ids_C[c] = g} q_BxC[b, c]."""
    return jax.ops.segment_sum(q_BxC.T, ids_C, num_segments=num_groups).T


def _path_scores_BxC(logits_per_level, ancestors_CxH) -> jax.Array:
    """s(c) = sum_l log_softmax(z_l)[ancestors[c, l]], the joint log-probability of c's path."""
    s_BxC = 0.0
    for l, logits_BxC in enumerate(logits_per_level):
        # float32 first: bf16 heads would round the sum over levels to a few digits.
        log_p_BxG = jax.nn.log_softmax(logits_BxC.astype(jnp.float32), axis=-1)
        s_BxC = s_BxC + log_p_BxG[:, ancestors_CxH[:, l]]
    return s_BxC


def _fine_distribution_BxC(logits_per_level, ancestors_CxH, method: str) -> jax.Array:
    """The method's distribution q over fine classes: softmax(z_0), or softmax(s) for joint."""
    if method == "joint":
        return jax.nn.softmax(_path_scores_BxC(logits_per_level, ancestors_CxH), axis=-1)
    return jax.nn.softmax(logits_per_level[0].astype(jnp.float32), axis=-1)


def _marginal_top_down(q_BxC: jax.Array, ancestors_CxH: jax.Array) -> jax.Array:
    """Fine id of the top-down marginal decode, int32 [B].

    Works in fine-class space so that no level size has to be known statically:
    M_l[b, c] = m_l(ancestors[c, l]) is the marginal of c's level-l class, and a fine
    class stays `alive` while its path agrees with the decisions made so far. At level
    l the alive classes are exactly those under the chosen g_{l+1}, so keeping the
    alive ones of maximal M_l (lowest level-l id on a tie) is the restricted argmax.
    """
    C, h = ancestors_CxH.shape
    alive_BxC = jnp.ones(q_BxC.shape, dtype=bool)
    for l in reversed(range(h)):
        ids_C = ancestors_CxH[:, l]
        if l == 0:
            m_BxC = q_BxC
        else:
            # C_0 groups is a static upper bound on C_l (every class has a fine class
            # under it); the unused groups stay 0 and are never gathered.
            m_BxC = _segment_sum_BxG(q_BxC, ids_C, C)[:, ids_C]
        best_Bx1 = jnp.max(jnp.where(alive_BxC, m_BxC, -jnp.inf), axis=-1, keepdims=True)
        # Classes of one group share one gathered value, so they all stay or all go.
        alive_BxC &= m_BxC == best_Bx1
        lowest_Bx1 = jnp.min(jnp.where(alive_BxC, ids_C, C), axis=-1, keepdims=True)
        alive_BxC &= ids_C == lowest_Bx1
    # Level 0 ids are unique, so exactly one class is left.
    return jnp.argmax(alive_BxC, axis=-1)


def decode(logits_per_level: Sequence[jax.Array], ancestors, method: str = "fine") -> jax.Array:
    """Tree-consistent predictions at every level, int32 [B, h].

    Args:
      logits_per_level: L >= 1 arrays [B, C_l], level 0 first. `fine` and `marginal`
        read only the fine head; `joint` needs L = h.
      ancestors: int [C_0, h] table (numpy or jax; may be traced under jit).
      method: one of `DECODES` (static under jit).

    Returns:
      preds_BxH = ancestors[c*], where c* is the decoded fine class (module docstring:
      fine = argmax z_0; marginal = top-down argmax of the level marginals of
      softmax(z_0); joint = argmax_c sum_l log_softmax(z_l)[ancestors[c, l]]). Ties go
      to the lowest index.
    """
    ancestors_CxH = _table(ancestors)
    _check_heads(logits_per_level, ancestors_CxH)
    _check_method(method, len(logits_per_level), ancestors_CxH.shape[1])
    if method == "fine":
        fine_B = jnp.argmax(logits_per_level[0], axis=-1)
    elif method == "marginal":
        q_BxC = _fine_distribution_BxC(logits_per_level, ancestors_CxH, method)
        fine_B = _marginal_top_down(q_BxC, ancestors_CxH)
    else:
        fine_B = jnp.argmax(_path_scores_BxC(logits_per_level, ancestors_CxH), axis=-1)
    return ancestors_CxH[fine_B]


def _level_sizes(logits_per_level, ancestors, num_classes) -> tuple[int, ...]:
    """C_l of every level: given, read off the heads, or counted in a concrete table."""
    h = np.shape(ancestors)[1]
    if num_classes is not None:
        num_classes = tuple(int(n) for n in num_classes)
        if len(num_classes) != h or num_classes[0] != np.shape(ancestors)[0]:
            raise ValueError(
                f"num_classes={num_classes} does not fit an ancestors table of shape "
                f"{np.shape(ancestors)}; pass hierarchy.num_classes."
            )
        return num_classes
    if len(logits_per_level) == h:
        return tuple(logits_BxC.shape[1] for logits_BxC in logits_per_level)
    try:
        table = np.asarray(ancestors)
    except jax.errors.TracerArrayConversionError:
        raise ValueError(
            "The number of classes of the levels without a head cannot be read off a "
            "traced ancestors table; pass num_classes=hierarchy.num_classes (or make "
            "the table a static numpy array)."
        ) from None
    return tuple(int(n) for n in table.max(axis=0) + 1)


def level_probabilities(
    logits_per_level: Sequence[jax.Array],
    ancestors,
    method: str = "fine",
    *,
    num_classes: Sequence[int] | None = None,
) -> list[jax.Array]:
    """Per-level marginals of the method's distribution over fine classes.

    With q the method's fine distribution (softmax(z_0) for `fine` and `marginal`,
    softmax(s) with s the joint path score for `joint`), level l gets
    p_l(g) = sum_{c : ancestors[c, l] = g} q(c), so each [B, C_l] row sums to 1 and
    p_0 = q. These are the probabilities `marginal` decodes from; for `fine` the
    argmax of a coarse p_l may differ from the decoded level-l class (fine decoding
    follows the single best fine class, not the heaviest coarse class).

    Args:
      logits_per_level, ancestors, method: as for `decode`.
      num_classes: C_l per level (hierarchy.num_classes). Needed only when some level
        has no head and the table is traced; otherwise read off the heads or the table.

    Returns:
      A list of h float32 arrays [B, C_l], fine level first.
    """
    ancestors_CxH = _table(ancestors)
    _check_heads(logits_per_level, ancestors_CxH)
    _check_method(method, len(logits_per_level), ancestors_CxH.shape[1])
    sizes = _level_sizes(logits_per_level, ancestors, num_classes)
    q_BxC = _fine_distribution_BxC(logits_per_level, ancestors_CxH, method)
    return [q_BxC] + [
        _segment_sum_BxG(q_BxC, ancestors_CxH[:, l], sizes[l]) for l in range(1, len(sizes))
    ]


def decode_metrics(
    preds_BxH: jax.Array,
    logits_per_level: Sequence[jax.Array],
    labels_BxH: jax.Array,
    ancestors,
    *,
    prefix: str,
    valid: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Additive metrics of one batch of decoded paths (sums and counts, never rates).

    Keys, each preceded by `prefix` (use f"{method}/" so that several decodes and
    `metrics.hierarchical_metrics` can share one dict; with prefix "" the keys
    would collide with the latter's), with c_i = [example i is valid] and
    p = preds_BxH, y = labels_BxH:

      count                 sum_i c_i
      top1/<l>_sum          sum_i c_i [p[i, l] == y[i, l]]                 (l < h)
      consistency/<l>_sum   sum_i c_i [argmax z_l[i] == p[i, l]]           (l < L)
                            how often raw head l agrees with the decoded path;
                            for l = 0, how often decoding kept the fine argmax
      mistakes_count        sum_i c_i [p[i, 0] != y[i, 0]]
      mistake_severity_sum  sum_i c_i lca_height(p[i, 0], y[i, 0]), the LCA height
                            of each wrong fine prediction (0 when right): the first
                            level where the paths agree, h if they never do

    `summarize` (this module) turns the totals into rates: <name>_sum / count, and
    mistake_severity = mistake_severity_sum / mistakes_count, per prefix, as
    `metrics.summarize` does for unprefixed keys. Values are float32 scalars, exact
    while every total stays below 2**24.

    Args:
      preds_BxH: int [B, h], a tree path per example (the output of `decode`).
      logits_per_level: the L >= 1 heads [B, C_l] the path was decoded from.
      labels_BxH: int [B, h].
      ancestors: int [C_0, h] table, numpy or jax.
      prefix: key prefix, e.g. "marginal/".
      valid: optional bool [B]; padded rows (False) count nowhere and may hold
        garbage labels.
    """
    ancestors_CxH = _table(ancestors)
    _check_heads(logits_per_level, ancestors_CxH)
    preds_BxH, labels_BxH = jnp.asarray(preds_BxH), jnp.asarray(labels_BxH)
    B, h = logits_per_level[0].shape[0], ancestors_CxH.shape[1]
    for name, x in (("preds", preds_BxH), ("labels", labels_BxH)):
        if x.shape != (B, h):
            raise ValueError(
                f"{name} has shape {x.shape}; expected [{B}, {h}]: one row per example "
                "of the heads, one column per level of the hierarchy."
            )
    valid_B = jnp.ones(B, dtype=bool) if valid is None else jnp.asarray(valid)
    if valid_B.shape != (B,):
        raise ValueError(f"valid has shape {valid_B.shape}; expected ({B},).")

    def total(x_B):
        return jnp.sum(jnp.where(valid_B, x_B, 0), dtype=jnp.float32)

    hits_BxH = preds_BxH == labels_BxH
    # Padded rows may hold labels like -1; a valid id keeps the gather in range.
    safe_label_B = jnp.where(valid_B, labels_BxH[:, 0], 0)
    severity_B = metrics.lca_height(preds_BxH[:, 0], safe_label_B, ancestors_CxH)

    out = {f"{prefix}count": jnp.sum(valid_B, dtype=jnp.float32)}
    for l in range(h):
        out[f"{prefix}top1/{l}_sum"] = total(hits_BxH[:, l])
    for l, logits_BxC in enumerate(logits_per_level):
        agree_B = jnp.argmax(logits_BxC, axis=-1) == preds_BxH[:, l]
        out[f"{prefix}consistency/{l}_sum"] = total(agree_B)
    out[f"{prefix}mistakes_count"] = total(~hits_BxH[:, 0])
    out[f"{prefix}mistake_severity_sum"] = total(severity_B)  # 0 where the fine pred is right
    return out


def summarize(sums: Mapping) -> dict[str, float]:
    """Rates from accumulated sums that may mix several prefixed groups, on the host.

    A group is every key starting with a prefix P for which P + "count" is a key and P
    ends in "/" (e.g. "marginal/"); the longest such prefix wins. Each group, with the
    prefix stripped, goes through `metrics.summarize` (<name>_sum / count,
    mistake_severity = mistake_severity_sum / mistakes_count, hier_distance =
    mistake_severity_sum / count, 0.0 for a zero denominator) and comes back prefixed.
    The remaining keys (e.g. those of `metrics.hierarchical_metrics`) are summarized
    as they are.
    """
    prefixes = sorted(
        (k.removesuffix("count") for k in sums if k.endswith("/count")), key=len, reverse=True
    )
    groups: dict[str, dict] = {}
    for key, value in sums.items():
        prefix = next((p for p in prefixes if key.startswith(p)), "")
        groups.setdefault(prefix, {})[key.removeprefix(prefix)] = value
    out = {}
    for prefix, group in groups.items():
        if prefix == "" and "count" not in group:
            raise ValueError(
                f"Keys {sorted(group)} belong to no group with a count; pass the whole "
                "dict of `hierarchical_metrics` / `decode_metrics` sums."
            )
        out.update({prefix + k: v for k, v in metrics.summarize(group).items()})
    return out
