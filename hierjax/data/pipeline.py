"""The input pipeline: one grain chain for every source, for training and evaluation.

    global record g -> (epoch, position) -> sampler order -> source record
      -> TrainTransform (decode / augment, seeded by g) -> batch -> [devices, per device]

Training (`TrainInput`): epoch e visits the records in the order `sampler(source,
seed=, epoch=e)` (`hierjax.data.sampler`) and drops its last partial batch; global batch
n holds global records n B .. n B + B - 1. With P processes, each reads the whole source
and process p takes the slice p B/P .. (p + 1) B/P - 1 of every global batch, so the
global batch, the steps per epoch and the position are the same on every process and for
any P (no process runs out of data before another). Batches are built whole by one
worker (grain worker processes, or threads of the training process when `num_workers`
is 0) and handed out in order, so batch n is a function of (seed, n) alone, whatever the
number of workers, and `get_state()` / `set_state()` ({"epoch", "batch_in_epoch"},
stored in checkpoints) resume exactly.

Evaluation (`EvalInput`): every record once, in order, unaugmented, the last batch padded
by repeating the last record with `valid` False. Its workers start once and serve every
evaluation of the run.

Batches: image uint8 [D, B/D, H, W, C], labels int32 [D, B/D, h] (+ valid bool [D, B/D]).
"""

from __future__ import annotations

import grain
import numpy as np

from hierjax.data.sampler import shuffled_order
from hierjax.data.transforms import EvalTransform, TrainTransform

_ENDLESS = 2**52  # records of the endless training dataset (grain wants a length)
_THREADS = 2  # batches built at once in the training process when num_workers == 0
_BUFFER = 2  # batches each worker (or the thread pool) prepares ahead


def per_device_batch_size(global_batch_size: int, num_devices: int) -> int:
    """global_batch_size // num_devices, which must divide evenly."""
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}")
    if global_batch_size < 1 or global_batch_size % num_devices:
        raise ValueError(
            f"config.batch_size={global_batch_size} must be a positive multiple of the "
            f"number of devices ({num_devices}), e.g. "
            f"{max(1, round(global_batch_size / num_devices)) * num_devices}")
    return global_batch_size // num_devices


def num_eval_batches(num_examples: int, batch_size: int) -> int:
    """ceil(num_examples / batch_size)."""
    return -(-num_examples // batch_size)


def _allow_grain_flags() -> None:
    """grain's worker processes read absl flags; outside an absl app (tests, notebooks,
    benchmarks) nothing has parsed them, which grain treats as an error."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _iterate(dataset: grain.MapDataset, num_workers: int):
    """An iterator over `dataset` (whose elements are whole batches), built ahead by
    `num_workers` processes, or by threads of this process when it is 0."""
    _allow_grain_flags()
    threads = 1 if num_workers else _THREADS
    iterable = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=_BUFFER * threads))
    if num_workers:
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=num_workers, per_worker_buffer_size=_BUFFER))
    return iter(iterable)


def _split_devices(batch: dict, num_devices: int) -> dict:
    """[B, ...] -> [D, B/D, ...] for every array."""
    return {k: v.reshape(num_devices, -1, *v.shape[1:]) for k, v in batch.items()}


class _EpochRecord:
    """Global record g -> the source record at position g % E of epoch g // E's order
    (E records per epoch), with "g" added for the augmentation seed."""

    def __init__(self, source, sampler, seed: int, records_per_epoch: int):
        self._source, self._sampler, self._seed = source, sampler, seed
        self._per_epoch = records_per_epoch
        self._order = (-1, None)  # (epoch, its order), cached per process

    def __call__(self, g: int) -> dict:
        epoch, position = divmod(int(g), self._per_epoch)
        if self._order[0] != epoch:
            order = self._sampler(self._source, seed=self._seed, epoch=epoch)
            if len(order) < self._per_epoch:
                raise ValueError(
                    f"the sampler returned {len(order)} indices for epoch {epoch} of "
                    f"{self._source.name}; it must return at least {self._per_epoch}")
            self._order = (epoch, order)
        record = dict(self._source[int(self._order[1][position])])
        record["g"] = int(g)
        return record


class _ProcessSlice:
    """Record i of one process's stream -> its global record: the process's slice of
    each global batch of `num_processes` x `batch_size` records."""

    def __init__(self, batch_size: int, process_index: int, num_processes: int):
        self._b, self._p, self._n = batch_size, process_index, num_processes

    def __call__(self, i: int) -> int:
        batch, row = divmod(int(i), self._b)
        return (batch * self._n + self._p) * self._b + row


class TrainInput:
    """Endless augmented training batches of a source (module docstring).

    `batch_size` is this process's share; with `num_processes` > 1 the global batch is
    num_processes x batch_size and this process reads slice `process_index` of it."""

    def __init__(self, source, transform: TrainTransform, *, batch_size: int,
                 num_devices: int, seed: int, num_workers: int, sampler=shuffled_order,
                 process_index: int = 0, num_processes: int = 1):
        per_device_batch_size(batch_size, num_devices)
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process index {process_index} outside 0..{num_processes - 1}")
        if batch_size * num_processes > len(source):
            raise ValueError(
                f"config.batch_size = {batch_size * num_processes} is larger than the "
                f"training set {source.name} ({len(source)} examples); lower it, or keep "
                "more examples (config.data.max_train_examples, 0 = all)")
        if seed < 0:
            raise ValueError(f"config.seed = {seed} must be >= 0")
        self.source = source
        self._transform, self._sampler = transform, sampler
        self._batch, self._num_devices = batch_size, num_devices
        self._seed, self._num_workers = seed, num_workers
        self._slice = _ProcessSlice(batch_size, process_index, num_processes)
        self._global_batch = batch_size * num_processes
        self._next = 0  # batches handed out so far, over all epochs
        self._iterator = None

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch (the same on every process)."""
        return len(self.source) // self._global_batch

    def get_state(self) -> dict[str, int]:
        """Where the next batch comes from: {"epoch": e, "batch_in_epoch": i}."""
        epoch, batch = divmod(self._next, self.steps_per_epoch)
        return {"epoch": epoch, "batch_in_epoch": batch}

    def set_state(self, state: dict[str, int]) -> None:
        """Continue from a `get_state()` of an input with the same settings."""
        if set(state) != {"epoch", "batch_in_epoch"}:
            raise ValueError(
                f"a train input state has the keys 'epoch' and 'batch_in_epoch', got "
                f"{sorted(state)}; pass what get_state() returned")
        epoch, batch = int(state["epoch"]), int(state["batch_in_epoch"])
        if epoch < 0 or not 0 <= batch < self.steps_per_epoch:
            raise ValueError(
                f"train input state {state} is out of range: the epoch must be >= 0 and "
                f"batch_in_epoch in 0..{self.steps_per_epoch - 1} ({self.steps_per_epoch} "
                f"steps per epoch with batch {self._global_batch} on {len(self.source)} "
                "examples); was it saved with another batch size or data set?")
        self.close()
        self._next = epoch * self.steps_per_epoch + batch

    def close(self) -> None:
        """Stops the workers; iterating again starts new ones where this one stopped."""
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
            self._iterator = None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = _iterate(self._batches(self._next), self._num_workers)
        batch = next(self._iterator)
        self._next += 1
        return _split_devices(batch, self._num_devices)

    def _batches(self, start: int) -> grain.MapDataset:
        """Batches start, start + 1, ... as a dataset."""
        b = self._batch
        records = _EpochRecord(self.source, self._sampler, self._seed,
                               self.steps_per_epoch * self._global_batch)
        return (grain.MapDataset.range(start * b, _ENDLESS).map(self._slice)
                .map(records).map(self._transform).batch(b, drop_remainder=True))


class _Padded:
    """Record i of the source for i < N, else the last record; with "valid"."""

    def __init__(self, source):
        self._source = source

    def __call__(self, index: int) -> dict:
        n = len(self._source)
        record = dict(self._source[min(int(index), n - 1)])
        record["valid"] = int(index) < n
        return record


class EvalInput:
    """Every example of a source once per pass, in order (module docstring).

    `num_batches` (default: just enough) pads a pass with whole batches of invalid rows,
    so that every process of a multi-process run runs as many evaluation steps."""

    def __init__(self, source, transform: EvalTransform, *, batch_size: int,
                 num_devices: int, num_workers: int, num_batches: int | None = None):
        per_device_batch_size(batch_size, num_devices)
        if len(source) == 0:
            raise ValueError(f"the evaluation set {source.name} is empty")
        self.source = source
        needed = num_eval_batches(len(source), batch_size)
        if num_batches is not None and num_batches < needed:
            raise ValueError(f"{source.name} needs {needed} batches of {batch_size}, "
                             f"got num_batches = {num_batches}")
        self.num_batches = needed if num_batches is None else num_batches
        self._dataset = (grain.MapDataset.range(self.num_batches * batch_size)
                         .map(_Padded(source)).map(transform)
                         .batch(batch_size).repeat())
        self._num_devices, self._num_workers = num_devices, num_workers
        self._iterator = None
        self._position = 0  # batches taken from the endless iterator

    def __len__(self) -> int:
        return len(self.source)

    def batches(self):
        """One pass: `num_batches` batches, the last one padded (valid False)."""
        if self._iterator is None:
            self._iterator = _iterate(self._dataset, self._num_workers)
        # A pass abandoned half-way (an error in the caller) leaves the iterator inside
        # a pass: skip to the start of the next one.
        while self._position % self.num_batches:
            next(self._iterator)
            self._position += 1
        for _ in range(self.num_batches):
            batch = next(self._iterator)
            self._position += 1
            yield _split_devices(batch, self._num_devices)

    def close(self) -> None:
        """Stops the workers."""
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
            self._iterator = None
            self._position = 0
