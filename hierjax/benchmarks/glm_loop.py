"""The GLM loss written the way the original layer was: loops over classes and pairs.

A numpy forward and hand-derived backward pass, one class pair at a time, as a
per-class-pair implementation (e.g. the paper's Caffe layer) computes it. It is the
baseline of `hierjax.benchmarks.losses`; `tests/test_benchmarks.py` checks it agrees with
`hierjax.glm_loss` so the benchmark compares equal work.
"""

from __future__ import annotations

import numpy as np


def glm_loss_and_grad_loop(x, labels, *, k, margins):
    """GLM loss and its gradient with respect to x, one class pair at a time.

    Args:
      x: float [B, D] features (every row valid).
      labels: int [B, h] hierarchy labels.
      k: nearest cross-class pairs averaged in D_B.
      margins: h floats.

    Returns:
      (loss, grad [B, D]).
    """
    x = np.asarray(x, np.float32)
    labels = np.asarray(labels)
    h = labels.shape[1]
    classes = np.unique(labels[:, 0])
    members = [np.flatnonzero(labels[:, 0] == c) for c in classes]
    path = np.stack([labels[m[0]] for m in members])
    grad = np.zeros_like(x)
    num = len(classes)

    means = [x[m].mean(axis=0) for m in members]
    within = [np.mean(np.sum((x[m] - mu) ** 2, axis=1)) for m, mu in zip(members, means)]

    between = np.zeros((num, num), np.float32)
    chosen = {}
    for p in range(num):
        for q in range(p + 1, num):
            xp, xq = x[members[p]], x[members[q]]
            d = np.sum((xp[:, None, :] - xq[None, :, :]) ** 2, axis=-1).ravel()
            kk = min(k, d.size)
            nearest = np.argpartition(d, kk - 1)[:kk] if kk < d.size else np.arange(d.size)
            between[p, q] = between[q, p] = d[nearest].mean()
            chosen[p, q] = (members[p][nearest // len(members[q])],
                            members[q][nearest % len(members[q])], kk)

    def add_within_grad(c, scale):
        m = members[c]
        grad[m] += scale * 2.0 * (x[m] - means[c]) / len(m)

    def add_between_grad(p, q, scale):
        key = (p, q) if p < q else (q, p)
        rows_i, rows_j, kk = chosen[key]
        diff = 2.0 * (x[rows_i] - x[rows_j]) * (scale / kk)
        np.add.at(grad, rows_i, diff)
        np.add.at(grad, rows_j, -diff)

    loss = 0.0
    for c in range(num):
        others = [q for q in range(num) if q != c]
        same = lambda col: [q for q in others if path[q, col] == path[c, col]]
        siblings = same(1) if h > 1 else others
        if siblings:
            q = min(siblings, key=lambda q: between[c, q])
            term = within[c] - between[c, q] + margins[0]
            if term > 0:
                loss += term
                add_within_grad(c, 1.0 / num)
                add_between_grad(c, q, -1.0 / num)
        for col in range(1, h):
            near = same(col)
            far = [q for q in others if path[q, col] != path[c, col]]
            if near and far:
                qa = max(near, key=lambda q: between[c, q])
                qn = min(far, key=lambda q: between[c, q])
                term = between[c, qa] - between[c, qn] + margins[col]
                if term > 0:
                    loss += term
                    add_between_grad(c, qa, 1.0 / num)
                    add_between_grad(c, qn, -1.0 / num)
    return loss / num, grad
