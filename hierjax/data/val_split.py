"""The validation split: a deterministic, class-stratified part of the training set.

Model selection (the best checkpoints, hyperparameters) must not look at the test set,
so `config.data.val_fraction = f` holds out, from every fine class c with n_c training
examples,

    k_c = min(max(round(f * n_c), 1), n_c - 1)      (0 when n_c = 1)

examples: at least one, so every class with two or more examples is validated, and
never all, so every class is still trained on. Which ones: each example i of the
training split gets a key u_i, uniform in [0, 1), from a generator seeded with
`SPLIT_SEED` alone, and class c gives its k_c examples of smallest key. The split is
therefore a function of the training labels alone: the same for every config.seed
(runs of different seeds select on the same examples), every number of workers and
every number of processes (it is computed on the whole training set, before any
sharding).
"""

from __future__ import annotations

import numpy as np

from hierjax.data.sources import Subset

SPLIT_SEED = 20_240_613  # fixed: the split must not change with config.seed


def val_indices(fine_labels_N, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) sorted int64 indices that partition range(N) (module docstring)."""
    fine = np.asarray(fine_labels_N)
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must lie in (0, 1), got {fraction}")
    n = len(fine)
    keys = np.random.default_rng(SPLIT_SEED).random(n)
    order = np.lexsort((keys, fine))  # by class, then by key
    first_of_class = np.searchsorted(fine[order], fine[order])
    rank_N = np.empty(n, np.int64)
    rank_N[order] = np.arange(n) - first_of_class  # 0 for the smallest key of its class
    classes, counts = np.unique(fine, return_counts=True)
    held_out = np.clip(np.round(fraction * counts), 1, counts - 1).astype(np.int64)
    held_out_N = held_out[np.searchsorted(classes, fine)]
    is_val = rank_N < held_out_N
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def split_validation(train, fraction: float):
    """(the training part, the validation part) of a training source, as `Subset`s."""
    train_idx, val_idx = val_indices(train.labels_Nxh[:, 0], fraction)
    name = train.name
    return (Subset(train, train_idx, f"{name}[train part, {1 - fraction:g}]"),
            Subset(train, val_idx, f"{name}[validation part, {fraction:g}]"))
