"""Batches of a `Source` for data-parallel training and evaluation.

Batches are dicts of numpy arrays with a leading device axis, ready for `pmap` or for
reshaping into a sharded global array:
- train: image uint8 [D, B/D, H, W, C], labels int32 [D, B/D, h];
- eval: the same plus valid bool [D, B/D] (False on the padding of the last batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from hierjax.data.augment import augment_train
from hierjax.data.sampler import AUGMENT_STREAM, shuffled_order  # default sampler
from hierjax.data.source import Source

__all__ = [
    "TrainIterator",
    "augment_train",
    "eval_batches",
    "num_eval_batches",
    "per_device_batch_size",
]

# Sampler: (source, seed=, epoch=) -> the example indices of that epoch (hierjax.data.sampler).
Sampler = Callable[..., np.ndarray]


def per_device_batch_size(global_batch_size: int, num_devices: int) -> int:
    """global_batch_size // num_devices, which must divide evenly."""
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}")
    if global_batch_size < 1 or global_batch_size % num_devices:
        raise ValueError(
            f"config.batch_size={global_batch_size} must be a positive multiple of the "
            f"number of devices ({num_devices}), e.g. "
            f"{max(1, round(global_batch_size / num_devices)) * num_devices}"
        )
    return global_batch_size // num_devices


class TrainIterator:
    """Endless training batches, epoch after epoch, resumable exactly.

    Epoch e reads the examples in the order `sampler(source, seed=seed, epoch=e)`
    (`hierjax.data.sampler`), in
    batches of global_batch_size, and drops its last partial batch. Batch i of epoch e
    is augmented (`augment_train`) with a generator seeded by (seed, e, i), so every batch
    is a function of (seed, e, i) alone: `get_state` / `set_state` resume exactly.
    Yields dict(image=uint8 [D, B/D, H, W, C], labels=int32 [D, B/D, h]).
    """

    def __init__(
        self,
        source: Source,
        *,
        global_batch_size: int,
        num_devices: int,
        seed: int,
        augment: bool = True,
        sampler: Sampler = shuffled_order,
    ):
        self._per_device = per_device_batch_size(global_batch_size, num_devices)
        if global_batch_size > len(source):
            raise ValueError(
                f"config.batch_size={global_batch_size} is larger than the training set "
                f"{source.name} ({len(source)} examples); lower it, or keep more examples "
                "(config.data.max_train_examples, 0 = all)"
            )
        if seed < 0:
            raise ValueError(f"config.seed={seed} must be >= 0 for the data pipeline")
        self._source = source
        self._global = global_batch_size
        self._num_devices = num_devices
        self._seed = seed
        self._augment = augment
        self._sampler = sampler
        self._epoch = 0
        self._batch = 0  # the next batch to yield, within self._epoch
        self._order = (-1, np.empty(0, np.int64))  # (epoch, its indices), cached

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch."""
        return len(self._source) // self._global

    def get_state(self) -> dict[str, int]:
        """Where the next batch comes from: {"epoch": e, "batch_in_epoch": i}."""
        return {"epoch": self._epoch, "batch_in_epoch": self._batch}

    def set_state(self, state: dict[str, int]) -> None:
        """Continue from a `get_state()` of an iterator with the same settings."""
        if set(state) != {"epoch", "batch_in_epoch"}:
            raise ValueError(
                f"a train iterator state has the keys 'epoch' and 'batch_in_epoch', got "
                f"{sorted(state)}; pass what get_state() returned"
            )
        epoch, batch = int(state["epoch"]), int(state["batch_in_epoch"])
        if epoch < 0 or not 0 <= batch < self.steps_per_epoch:
            raise ValueError(
                f"train iterator state {state} is out of range: the epoch must be >= 0 "
                f"and batch_in_epoch in 0..{self.steps_per_epoch - 1} ({self.steps_per_epoch} "
                f"steps per epoch with config.batch_size={self._global} on {len(self._source)} "
                "examples); was it saved with another batch size or data set?"
            )
        self._epoch, self._batch = epoch, batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        start = self._batch * self._global
        batch = self._source.read(self._epoch_order()[start : start + self._global])
        if self._augment:
            rng = np.random.default_rng([self._seed, self._epoch, AUGMENT_STREAM, self._batch])
            batch["image"] = augment_train(batch["image"], rng)
        self._batch += 1
        if self._batch == self.steps_per_epoch:
            self._epoch, self._batch = self._epoch + 1, 0
        return _split_devices(batch, self._num_devices, self._per_device)

    def _epoch_order(self) -> np.ndarray:
        if self._order[0] != self._epoch:
            order = self._sampler(self._source, seed=self._seed, epoch=self._epoch)
            if len(order) < self.steps_per_epoch * self._global:
                raise ValueError(
                    f"the sampler returned {len(order)} indices for epoch {self._epoch}; "
                    f"it must return at least {self.steps_per_epoch} batches of "
                    f"{self._global}"
                )
            self._order = (self._epoch, order)
        return self._order[1]


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    """Batches `eval_batches` yields: ceil(num_examples / global_batch_size)."""
    return -(-num_examples // global_batch_size)


def eval_batches(
    source: Source, *, global_batch_size: int, num_devices: int
) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order, unaugmented; the last batch padded to full size.

    Yields dict(image=uint8 [D, B/D, H, W, C], labels=int32 [D, B/D, h],
    valid=bool [D, B/D]); padding rows repeat the last example and have valid False.
    There are `num_eval_batches(len(source), global_batch_size)` batches.
    """
    per_device = per_device_batch_size(global_batch_size, num_devices)
    if len(source) == 0:
        raise ValueError(f"the evaluation set {source.name} is empty")

    def batches():
        for start in range(0, len(source), global_batch_size):
            indices = np.arange(start, start + global_batch_size)
            batch = source.read(np.minimum(indices, len(source) - 1))
            batch["valid"] = indices < len(source)
            yield _split_devices(batch, num_devices, per_device)

    return batches()


def _split_devices(batch: dict, num_devices: int, per_device: int) -> dict[str, np.ndarray]:
    """[B, ...] -> [D, B/D, ...] for every array."""
    return {k: v.reshape(num_devices, per_device, *v.shape[1:]) for k, v in batch.items()}
