"""The order in which an epoch visits the examples: shuffled, or P x Q x K batches.

A sampler is `sampler(source, seed=, epoch=) -> int64 indices`, at least
`(len(source) // B) * B` of them for batch size B; consecutive runs of B indices are
the batches. Every sampler is a function of (seed, epoch) alone, so a resumed run
repeats the same batches. The input pipeline (`hierjax.data.pipeline`) takes any
sampler; a source only needs `len(source)` and `labels_Nxh` (int [N, h], fine level
first).

The hierarchical sampler builds every batch from P coarse groups x Q fine classes of
each group x K images of each class, so that the GLM loss (which compares a class with
its siblings in the batch) has siblings to compare with even at batch 16-32.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hierjax.settings import ConfigError

# Stream tags, so the samplers and the augmentation never share random numbers.
SHUFFLE_STREAM, AUGMENT_STREAM, HIERARCHICAL_STREAM = 0, 1, 2


def shuffled_order(source, *, seed: int, epoch: int) -> np.ndarray:
    """A permutation of the examples, int64 [len(source)], fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch, SHUFFLE_STREAM]).permutation(len(source))


@dataclasses.dataclass(frozen=True)
class HierarchicalSampler:
    """Batches of P coarse groups x Q fine classes x K images (batch size P * Q * K).

    Per batch: P distinct groups of hierarchy level `level`, drawn with probability
    proportional to their number of images; in each, Q distinct fine classes uniformly
    (all of them, some twice, when a group has fewer than Q); K images of each class,
    taken from the class's shuffled list in turn, which is reshuffled when used up, so
    an epoch sees each image about once. An epoch has len(source) // (P * Q * K)
    batches.
    """

    p: int
    q: int
    k: int
    level: int = 1

    def __post_init__(self):
        if min(self.p, self.q, self.k) < 1:
            raise ValueError(
                f"config.data.sampler_pqk = {(self.p, self.q, self.k)}: P, Q and K must "
                "all be >= 1")

    @property
    def batch_size(self) -> int:
        return self.p * self.q * self.k

    def __call__(self, source, *, seed: int, epoch: int) -> np.ndarray:
        labels = np.asarray(source.labels_Nxh)
        if not 1 <= self.level < labels.shape[1]:
            raise ValueError(
                f"config.data.sampler_level = {self.level}: the hierarchy of "
                f"{source.name} has levels 1..{labels.shape[1] - 1} above the fine one")
        rng = np.random.default_rng([seed, epoch, HIERARCHICAL_STREAM])
        fine, group = labels[:, 0], labels[:, self.level]
        groups, group_sizes = np.unique(group, return_counts=True)
        if len(groups) < self.p:
            raise ValueError(
                f"config.data.sampler_pqk asks for P = {self.p} groups per batch but "
                f"{source.name} has only {len(groups)} classes at level {self.level}; "
                "lower P")
        classes_of = {g: np.unique(fine[group == g]) for g in groups}
        pools = _ClassPools(fine, rng)
        batches = []
        for _ in range(len(fine) // self.batch_size):
            picked = rng.choice(groups, self.p, replace=False, p=group_sizes / len(fine))
            for g in picked:
                classes = classes_of[g]
                chosen = (rng.choice(classes, self.q, replace=False)
                          if len(classes) >= self.q else
                          np.concatenate([classes, rng.choice(classes, self.q - len(classes))]))
                batches.extend(pools.take(c, self.k) for c in chosen)
        if not batches:
            return np.empty(0, np.int64)
        return np.concatenate(batches).astype(np.int64)


class _ClassPools:
    """Per fine class, its example indices in a shuffled cycle."""

    def __init__(self, fine_N: np.ndarray, rng: np.random.Generator):
        order = np.argsort(fine_N, kind="stable")
        bounds = np.searchsorted(fine_N[order], np.unique(fine_N))
        self._members = dict(zip(np.unique(fine_N), np.split(order, bounds[1:])))
        self._rng = rng
        self._queues: dict[int, np.ndarray] = {}

    def take(self, c: int, k: int) -> np.ndarray:
        queue = self._queues.get(c, np.empty(0, np.int64))
        while len(queue) < k:
            queue = np.concatenate([queue, self._rng.permutation(self._members[c])])
        self._queues[c] = queue[k:]
        return queue[:k]


def batch_sibling_stats(labels_Bxh: np.ndarray, level: int = 1) -> dict[str, float]:
    """How much of a batch the GLM loss can use, for the analysis of batch composition.

    `with_sibling`: fraction of the distinct fine classes in the batch that share their
    level-`level` group with another distinct fine class in the batch.
    `classes`: number of distinct fine classes.
    """
    pairs = np.unique(np.asarray(labels_Bxh)[:, [0, level]], axis=0)
    _, group_index, counts = np.unique(pairs[:, 1], return_inverse=True, return_counts=True)
    return {"with_sibling": float(np.mean(counts[group_index] > 1)),
            "classes": float(len(pairs))}


def build_sampler(data, per_process_batch_size: int):
    """The sampler named by config.data.sampler (`data`: DataSettings)."""
    if data.sampler == "shuffle":
        return shuffled_order
    sampler = HierarchicalSampler(*data.sampler_pqk, level=data.sampler_level)
    if sampler.batch_size != per_process_batch_size:
        raise ConfigError(
            f"config.data.sampler_pqk = {tuple(data.sampler_pqk)} makes batches of "
            f"{sampler.batch_size} but each process reads {per_process_batch_size} "
            "(config.batch_size / processes); make P * Q * K equal to it")
    return sampler
