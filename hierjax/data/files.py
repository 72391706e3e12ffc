"""File-backed datasets and their grain input pipeline.

Record sources (random access, picklable, so grain's worker processes can read them):
- `TfdsSource`: a split of a dataset prepared by `python -m hierjax.prepare`, read with
  `tfds` array_record data sources, images left encoded;
- `ImageFolderSource`: a user's own images, `root/<split>/<fine class>/*.jpg`, plus a
  hierarchy CSV whose fine names are the folder names;
- `Subset`: some of a source's records (a process's shard, a class-balanced head).
A record is dict(image=encoded bytes, labels=int32 [h], bbox=float32 [4]).

`GrainTrainIterator` and `grain_eval_batches` decode and augment in grain worker
processes (`hierjax.data.images`) and yield the same batches as the in-memory pipeline:
image uint8 [D, B/D, S, S, 3], labels int32 [D, B/D, h] (+ valid bool for eval).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import grain
import numpy as np
from absl import logging

from hierjax.data import images
from hierjax.data.pipeline import per_device_batch_size
from hierjax.data.sampler import AUGMENT_STREAM, shuffled_order
from hierjax.data.source import stratified_head
from hierjax.hierarchy import Hierarchy

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_LABEL_CHUNK = 512  # records per read when collecting every label of a source


class TfdsSource:
    """Split `split` of the prepared dataset `name` in `data_dir`, with hierarchy
    `hierarchy_name` ("" = the dataset's default, the first it stores)."""

    def __init__(self, name: str, data_dir: str, split: str, hierarchy_name: str = ""):
        import tensorflow_datasets as tfds

        from hierjax import datasets
        from hierjax.datasets.common import hierarchies_from_metadata

        builder = datasets.builder(name, data_dir)
        hierarchies = hierarchies_from_metadata(builder.info.metadata, str(builder.data_path))
        hierarchy_name = hierarchy_name or next(iter(hierarchies))
        if hierarchy_name not in hierarchies:
            raise ValueError(
                f"config.data.hierarchy = {hierarchy_name!r} is not stored with {name}; "
                f"choose one of {', '.join(hierarchies)}")
        if split not in builder.info.splits:
            raise ValueError(
                f"{name} has no split {split!r} (config.data.train_split / eval_split); "
                f"its splits are {', '.join(builder.info.splits)}")
        self.name = f"{name}/{split}"
        self.hierarchy: Hierarchy = hierarchies[hierarchy_name]
        self._hierarchy_name = hierarchy_name
        self._records = builder.as_data_source(
            split, decoders={"image": tfds.decode.SkipDecoding()})

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict:
        return self._record(self._records[index])

    def __getitems__(self, indices) -> list[dict]:
        return [self._record(r) for r in self._records.__getitems__(list(indices))]

    def _record(self, raw: dict) -> dict:
        return {"image": raw["image"], "labels": raw["labels"][self._hierarchy_name],
                "bbox": np.asarray(raw["bbox"], np.float32)}

    @functools.cached_property
    def labels_Nxh(self) -> np.ndarray:
        """Every record's labels, int32 [N, h] (reads the whole split once)."""
        logging.info("Reading the labels of %s (%d records).", self.name, len(self))
        chunks = [np.stack([r["labels"] for r in self.__getitems__(range(s, min(s + _LABEL_CHUNK, len(self))))])
                  for s in range(0, len(self), _LABEL_CHUNK)]
        return np.concatenate(chunks).astype(np.int32)


class ImageFolderSource:
    """`root/<split>/<fine class name>/<image>` with the fine names of `hierarchy_csv`.

    Every class folder must name a fine class of the hierarchy; classes without a
    folder are allowed (a split may lack some). Files are taken in sorted order.
    """

    def __init__(self, root: str, split: str, hierarchy_csv: str):
        directory = Path(root).expanduser() / split
        if not directory.is_dir():
            raise FileNotFoundError(
                f"no folder {directory}: config.data.data_dir must hold one folder per "
                f"split ({split!r} from config.data.train_split / eval_split)")
        if not hierarchy_csv:
            raise ValueError(
                "config.data.hierarchy must be the path of a hierarchy CSV for "
                "config.data.name = 'image_folder' (format: hierjax/hierarchy.py)")
        self.hierarchy = Hierarchy.from_csv(hierarchy_csv)
        fine_id = {name: i for i, name in enumerate(self.hierarchy.class_names[0])}
        folders = sorted(p for p in directory.iterdir() if p.is_dir())
        unknown = [p.name for p in folders if p.name not in fine_id]
        if unknown:
            raise ValueError(
                f"{directory}: folders {unknown[:5]} ({len(unknown)} in all) are not fine "
                f"classes of {hierarchy_csv}; rename them or add rows to the CSV")
        self.paths = [str(f) for p in folders for f in sorted(p.iterdir())
                      if f.suffix.lower() in IMAGE_SUFFIXES]
        if not self.paths:
            raise ValueError(f"{directory} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        fine = np.array([fine_id[Path(f).parent.name] for f in self.paths])
        self.labels_Nxh = self.hierarchy.labels_for(fine).astype(np.int32)
        self.name = f"{directory}"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return {"image": Path(self.paths[index]).read_bytes(), "labels": self.labels_Nxh[index],
                "bbox": np.array([0, 0, 1, 1], np.float32)}


class Subset:
    """The records `indices` of a source, renumbered 0..len(indices) - 1."""

    def __init__(self, source, indices, name: str):
        self.source, self.indices = source, np.asarray(indices, np.int64)
        self.hierarchy, self.name = source.hierarchy, name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.source[int(self.indices[index])]

    @functools.cached_property
    def labels_Nxh(self) -> np.ndarray:
        return self.source.labels_Nxh[self.indices]


def subset(source, *, max_examples: int, process_index: int, num_processes: int):
    """The first max_examples class by class (0 = all), then this process's slice."""
    if max_examples and max_examples < len(source):
        keep = stratified_head(source.labels_Nxh[:, 0], max_examples)
        source = Subset(source, keep, f"{source.name}[:{max_examples} by class]")
    if num_processes > 1:
        n = len(source)
        lo, hi = process_index * n // num_processes, (process_index + 1) * n // num_processes
        source = Subset(source, np.arange(lo, hi), f"{source.name}[{lo}:{hi}]")
    return source


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """How records become images; from config.data (see hierjax.data.images)."""

    size: int
    resize: int
    train_crop: str = "resize_random"
    min_scale: float = 0.08
    use_bbox: bool = False


class _TrainTransform(grain.transforms.RandomMap):
    """grain RandomMap: record -> dict(image=uint8 [S, S, 3], labels)."""

    def __init__(self, settings: ImageSettings):
        self.settings = settings

    def random_map(self, record: dict, rng: np.random.Generator) -> dict:
        s = self.settings
        image = images.train_image(record["image"], rng, size=s.size, resize=s.resize,
                                   crop=s.train_crop, min_scale=s.min_scale,
                                   box=record["bbox"] if s.use_bbox else None)
        return {"image": image, "labels": np.asarray(record["labels"], np.int32)}


class _EvalTransform(grain.transforms.Map):
    """grain Map: padded record -> dict(image, labels, valid)."""

    def __init__(self, settings: ImageSettings):
        self.settings = settings

    def map(self, record: dict) -> dict:
        s = self.settings
        image = images.eval_image(record["image"], size=s.size, resize=s.resize,
                                  box=record["bbox"] if s.use_bbox else None)
        return {"image": image, "labels": np.asarray(record["labels"], np.int32),
                "valid": record["valid"]}


class _EpochSampler:
    """grain sampler: global record g -> epoch g // E, position g % E of that epoch's
    order (E = steps_per_epoch * batch), starting at record `start`; endless.

    grain's workers batch their own records and are read round-robin, so the sampler
    hands worker w of W the records of global batches w, w + W, w + 2W, ...; batch n
    then holds records start + n * B .. start + n * B + B - 1 whatever W is. The
    augmentation generator of record g is seeded by (seed, g), so batches do not depend
    on the number of workers and a resumed run repeats them exactly.
    """

    def __init__(self, source, sampler, *, seed: int, records_per_epoch: int, start: int,
                 batch_size: int, num_workers: int):
        self._source, self._sampler, self._seed = source, sampler, seed
        self._per_epoch, self._start = records_per_epoch, start
        self._batch, self._workers = batch_size, max(1, num_workers)
        self._order = (-1, None)

    def __len__(self) -> int:
        return 2**62  # endless; grain asks for a length

    def __getitem__(self, index: int):
        worker, within = index % self._workers, index // self._workers
        batch_of_worker, row = divmod(within, self._batch)
        g = self._start + (batch_of_worker * self._workers + worker) * self._batch + row
        epoch, position = divmod(g, self._per_epoch)
        if self._order[0] != epoch:
            self._order = (epoch, self._sampler(self._source, seed=self._seed, epoch=epoch))
        rng = np.random.default_rng([self._seed, AUGMENT_STREAM, g])
        return grain.RecordMetadata(index=index, record_key=int(self._order[1][position]),
                                    rng=rng)


class _Padded:
    """A source padded to `length` by repeating its last record, with `valid` flags."""

    def __init__(self, source, length: int):
        self.source, self.length = source, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        record = dict(self.source[min(index, len(self.source) - 1)])
        record["valid"] = index < len(self.source)
        return record


def _allow_grain_flags() -> None:
    """grain's worker processes read absl flags; outside an absl app (tests, notebooks,
    benchmarks) nothing has parsed them, which grain treats as an error."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _split_devices(batch: dict, num_devices: int) -> dict:
    return {k: v.reshape(num_devices, -1, *v.shape[1:]) for k, v in batch.items()}


class GrainTrainIterator:
    """Endless augmented training batches of a record source, decoded by grain workers.

    Same contract as `hierjax.data.TrainIterator`: epochs follow `sampler`, the last
    partial batch is dropped, `get_state()` / `set_state()` ({"epoch",
    "batch_in_epoch"}) resume exactly. Yields image uint8 [D, B/D, S, S, 3] and labels
    int32 [D, B/D, h].
    """

    def __init__(self, source, settings: ImageSettings, *, global_batch_size: int,
                 num_devices: int, seed: int, num_workers: int, sampler=shuffled_order):
        per_device_batch_size(global_batch_size, num_devices)
        if global_batch_size > len(source):
            raise ValueError(
                f"config.batch_size={global_batch_size} is larger than {source.name} "
                f"({len(source)} examples); lower it")
        self._source, self._settings, self._sampler = source, settings, sampler
        self._batch, self._num_devices = global_batch_size, num_devices
        self._seed, self._num_workers = seed, num_workers
        self._next = 0  # batches handed out so far, over all epochs
        self._iterator = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self._source) // self._batch

    def get_state(self) -> dict[str, int]:
        epoch, batch = divmod(self._next, self.steps_per_epoch)
        return {"epoch": epoch, "batch_in_epoch": batch}

    def set_state(self, state: dict[str, int]) -> None:
        epoch, batch = int(state["epoch"]), int(state["batch_in_epoch"])
        if epoch < 0 or not 0 <= batch < self.steps_per_epoch:
            raise ValueError(
                f"train iterator state {state} is out of range for {self.steps_per_epoch} "
                f"steps per epoch; was it saved with another batch size or dataset?")
        self.close()
        self._next = epoch * self.steps_per_epoch + batch

    def close(self) -> None:
        """Stops the worker processes; iterating again starts new ones."""
        self._iterator = None  # grain's iterator stops its workers when collected

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._iterator is None:
            self._iterator = iter(self._loader())
        batch = next(self._iterator)
        self._next += 1
        return _split_devices(batch, self._num_devices)

    def _loader(self):
        _allow_grain_flags()
        sampler = _EpochSampler(self._source, self._sampler, seed=self._seed,
                                records_per_epoch=self.steps_per_epoch * self._batch,
                                start=self._next * self._batch, batch_size=self._batch,
                                num_workers=self._num_workers)
        return grain.DataLoader(
            data_source=self._source, sampler=sampler, worker_count=self._num_workers,
            shard_options=grain.sharding.NoSharding(),
            operations=[_TrainTransform(self._settings),
                        grain.transforms.Batch(self._batch, drop_remainder=True)])


def grain_eval_batches(source, settings: ImageSettings, *, global_batch_size: int,
                       num_devices: int, num_workers: int):
    """Every record once, in order, unaugmented; the last batch padded (valid False)."""
    per_device_batch_size(global_batch_size, num_devices)
    if len(source) == 0:
        raise ValueError(f"the evaluation set {source.name} is empty")
    _allow_grain_flags()
    padded = _Padded(source, -(-len(source) // global_batch_size) * global_batch_size)
    # Workers transform single records and the batches are formed here, so every batch
    # is full and in order whatever the number of workers.
    dataset = grain.MapDataset.source(padded).map(_EvalTransform(settings)).to_iter_dataset()
    if num_workers:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    loader = dataset.batch(global_batch_size)
    return (_split_devices(batch, num_devices) for batch in loader)

