"""Evaluation metrics for classification over a label hierarchy.

Conventions (h = number of hierarchy levels, level 0 = fine classes):
  labels_BxH     int [B, h]; column l is the label at level l (coarser as l grows).
  ancestors_CxH  int [C_0, h]; row c is the ancestor path of fine class c, so
                 ancestors_CxH[:, 0] == arange(C_0).
  valid_B        optional bool [B]; False rows (padding) count nowhere.

`hierarchical_metrics` returns SUMS and COUNTS, never rates, so that results of
several batches or devices combine by addition (`merge`, or `jax.lax.psum` on
the whole dict); `summarize` turns the totals into rates on the host. Keys, with
l a level index written in decimal:

  count                  number of valid examples
  top1/<l>_sum           head l's argmax == labels[:, l]                (l < L)
  top5/<l>_sum           labels[:, l] among head l's top min(5, C_l)    (l < L)
  top1_from_fine/<l>_sum ancestors[fine argmax, l] == labels[:, l]      (l < h)
  consistency/<l>_sum    head l's argmax == ancestors[fine argmax, l]   (1 <= l < L)
  mistakes_count         examples whose fine argmax is wrong
  mistake_severity_sum   sum of lca_height(fine argmax, fine label) over mistakes
                         (a correct prediction has height 0, so this is also the
                         sum over all examples: `summarize` derives both the mean
                         severity of mistakes and the mean hierarchical distance)

Values are float32 scalars, exact while every total stays below 2**24.
"""

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hierjax.hierarchy.tree import lca_height, paths_meet_at  # noqa: F401 (public here too)

TOPK = 5


def _check_inputs(logits_per_level, labels_BxH, ancestors_CxH, valid_B) -> None:
    if hasattr(logits_per_level, "ndim"):
        raise TypeError(
            "logits_per_level must be a sequence of [B, C_l] arrays, one per head; "
            "for a single flat head pass [logits_BxC]."
        )
    if ancestors_CxH.ndim != 2 or labels_BxH.ndim != 2:
        raise ValueError(
            f"ancestors and labels must both be 2-D ([C_0, h] and [B, h]); got "
            f"shapes {ancestors_CxH.shape} and {labels_BxH.shape}."
        )
    if not 1 <= len(logits_per_level) <= ancestors_CxH.shape[1]:
        raise ValueError(
            f"Got {len(logits_per_level)} logit heads for a hierarchy of "
            f"{ancestors_CxH.shape[1]} levels; expected between 1 and "
            f"{ancestors_CxH.shape[1]}."
        )
    B = labels_BxH.shape[0]
    for l, logits_BxC in enumerate(logits_per_level):
        if logits_BxC.ndim != 2 or logits_BxC.shape[0] != B:
            raise ValueError(
                f"logits_per_level[{l}] has shape {logits_BxC.shape}; expected "
                f"[{B}, C_{l}] to match labels of shape {labels_BxH.shape}."
            )
    if logits_per_level[0].shape[1] != ancestors_CxH.shape[0]:
        raise ValueError(
            f"The fine head has {logits_per_level[0].shape[1]} classes but the "
            f"ancestors table has {ancestors_CxH.shape[0]} rows; they must agree."
        )
    if labels_BxH.shape[1] != ancestors_CxH.shape[1]:
        raise ValueError(
            f"labels has shape {labels_BxH.shape} but the hierarchy has "
            f"{ancestors_CxH.shape[1]} levels; labels must be [B, h] with one "
            "column per level."
        )
    if valid_B is not None and valid_B.shape != (B,):
        raise ValueError(f"valid has shape {valid_B.shape}; expected ({B},).")


def hierarchical_metrics(
    logits_per_level: Sequence[jax.Array],
    labels: jax.Array,
    ancestors,
    *,
    valid: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Additive hierarchical classification metrics for one batch.

    Args:
      logits_per_level: L >= 1 arrays [B, C_l] for levels 0..L-1 (L = 1 for a
        flat model); level 0 is the fine head that `top1_from_fine`,
        `consistency` and the distances are derived from.
      labels: int [B, h].
      ancestors: int [C_0, h] hierarchy table, numpy or jax.
      valid: optional bool [B]; padded rows (False) are ignored.

    Returns:
      Flat dict of float32 scalar sums and counts; keys in the module docstring.
      With c_i = [example i is valid], e.g.
      top1/<l>_sum = sum_i c_i [argmax logits_l[i] == labels[i, l]] and
      mistake_severity_sum = sum_i c_i lca_height(argmax logits_0[i], labels[i, 0]).
    """
    ancestors_CxH = jnp.asarray(ancestors)
    labels_BxH = jnp.asarray(labels)
    valid_B = None if valid is None else jnp.asarray(valid)
    _check_inputs(logits_per_level, labels_BxH, ancestors_CxH, valid_B)
    # Only a numpy table can be checked without a device-to-host sync.
    if isinstance(ancestors, np.ndarray) and not np.array_equal(
        ancestors[:, 0], np.arange(ancestors.shape[0])
    ):
        raise ValueError(
            "ancestors[:, 0] must be arange(C_0): row c of the table is the "
            "ancestor path of fine class c, starting with c itself."
        )
    if valid_B is None:
        valid_B = jnp.ones(labels_BxH.shape[0], dtype=bool)

    def total(x_B):
        return jnp.sum(jnp.where(valid_B, x_B, 0), dtype=jnp.float32)

    preds = [jnp.argmax(logits_BxC, axis=-1) for logits_BxC in logits_per_level]
    fine_path_BxH = ancestors_CxH[preds[0]]
    fine_hits_BxH = fine_path_BxH == labels_BxH
    # Comparing the predicted path with the label columns (rather than with
    # ancestors[label]) never indexes the table with padded rows' labels.
    distance_B = paths_meet_at(fine_hits_BxH)
    mistake_B = ~fine_hits_BxH[:, 0]

    out = {"count": jnp.sum(valid_B, dtype=jnp.float32)}
    for l, (logits_BxC, pred_B) in enumerate(zip(logits_per_level, preds)):
        label_B = labels_BxH[:, l]
        _, topk_BxK = jax.lax.top_k(logits_BxC, min(TOPK, logits_BxC.shape[1]))
        out[f"top1/{l}_sum"] = total(pred_B == label_B)
        out[f"top5/{l}_sum"] = total((topk_BxK == label_B[:, None]).any(-1))
        if l >= 1:
            out[f"consistency/{l}_sum"] = total(pred_B == fine_path_BxH[:, l])
    for l in range(labels_BxH.shape[1]):
        out[f"top1_from_fine/{l}_sum"] = total(fine_hits_BxH[:, l])
    out["mistakes_count"] = total(mistake_B)
    out["mistake_severity_sum"] = total(distance_B)  # 0 wherever the fine pred is right
    return out


def merge(a: Mapping, b: Mapping) -> dict:
    """Key-wise sum a + b of two metric dicts; an empty `a` acts as zero.

    The empty case lets a loop start from `totals = {}`. Works on host or
    device values and under jit.
    """
    if not a:
        return dict(b)
    if a.keys() != b.keys():
        raise ValueError(
            "Cannot merge metric dicts with different keys; they differ in "
            f"{sorted(a.keys() ^ b.keys())} (were they computed with different "
            "numbers of heads?)."
        )
    return {k: a[k] + b[k] for k in a}


def summarize(sums: Mapping) -> dict[str, float]:
    """Rates from accumulated sums, on the host.

    Each `<name>_sum` becomes `<name>` = <name>_sum / count, except
    mistake_severity = mistake_severity_sum / mistakes_count (the mean LCA
    height of wrong fine predictions) and hier_distance = mistake_severity_sum /
    count (the mean LCA height of every top-1 fine prediction). A rate whose denominator is 0 is
    reported as 0.0, so an all-correct or empty evaluation stays NaN-free.
    Counts (`count`, `mistakes_count`) are passed through as floats.
    """
    values = {k: float(np.asarray(v)) for k, v in sums.items()}
    out = {}
    for key, value in values.items():
        if not key.endswith("_sum"):
            out[key] = value
            continue
        name = key.removesuffix("_sum")
        per = "mistakes_count" if name == "mistake_severity" else "count"
        out[name] = value / values[per] if values[per] else 0.0
    distance = values.get("mistake_severity_sum", 0.0)
    out["hier_distance"] = distance / values["count"] if values.get("count") else 0.0
    return out
