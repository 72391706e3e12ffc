"""The input of a training run from its settings: `build_input`, `build_splits` (train,
validation, test sources), `build_sources`, `build_eval_input`, `normalization`.

`config.data.name` picks the source (`hierjax.settings.DataSettings` documents every
key): "synthetic" and "cifar100" (the npz copy) are held in memory; a prepared "cifar100"
folder, "cub", "aircraft", "cars", "dogs", "nabirds" and "image_folder" are read from
files. Every source goes through the same pipeline (`hierjax.data.pipeline`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from hierjax.data import cifar100_npz, synthetic
from hierjax.data.class_subset import ClassSubset, subset_hierarchy
from hierjax.data.pipeline import EvalInput, TrainInput, num_eval_batches
from hierjax.data.sampler import build_sampler
from hierjax.data.sources import check_labels, shard, take
from hierjax.data.transforms import EvalTransform, ImageSettings, TrainTransform
from hierjax.data.val_split import split_validation
from hierjax.hierarchy import Hierarchy
from hierjax.settings import ConfigError

# ImageNet statistics, for the (pretrained) fine-grained models, in 0..1 units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class Input:
    """What the training loop reads: this process's share of the data."""

    hierarchy: Hierarchy
    image_shape: tuple[int, int, int]
    train: TrainInput
    eval: EvalInput  # evaluated during training: the validation split if any, else the test split
    test: EvalInput | None = None  # the test split when `eval` is the validation split
    eval_name: str = "test"  # what `eval` is, for tables and logs: "test" or "validation"

    def close(self) -> None:
        """Stops every worker."""
        self.train.close()
        self.eval.close()
        if self.test is not None:
            self.test.close()


def build_input(settings, *, num_devices: int, process_index: int = 0,
                num_processes: int = 1) -> Input:
    """This process's training and evaluation input (each process reads
    batch_size / num_processes examples a step, split over its `num_devices`).

    Training: every process reads its slice of the same global batch (`TrainInput`), so
    all run the same steps per epoch. Evaluation: process p reads shard p of the set
    (`shard`; shards differ by at most one example), padded to as many batches as the
    largest shard, so every example counts once and every process runs as many steps."""
    data = settings.data
    batch = settings.batch_size // num_processes
    splits = build_splits(data)
    train = splits.train
    images = ImageSettings.from_data_settings(data)
    image_shape = _image_shape(train, images)
    workers = data.num_workers
    class_names = train.hierarchy.class_names[0]  # for error messages
    train_input = TrainInput(
        train, TrainTransform(images, settings.seed, class_names),
        batch_size=batch, num_devices=num_devices, seed=settings.seed,
        num_workers=workers, sampler=build_sampler(data, batch),
        process_index=process_index, num_processes=num_processes)
    evaluation = functools.partial(build_eval_input, settings, num_devices=num_devices,
                                   process_index=process_index, num_processes=num_processes)
    test_input = evaluation(splits.test)
    if splits.val is None:
        return Input(train.hierarchy, image_shape, train_input, test_input)
    return Input(train.hierarchy, image_shape, train_input, evaluation(splits.val),
                 test=test_input, eval_name="validation")


def build_eval_input(settings, source, *, num_devices: int, process_index: int = 0,
                     num_processes: int = 1) -> EvalInput:
    """This process's evaluation input over `source`: its shard `process_index`,
    unaugmented (`EvalTransform`), in batches of batch_size / num_processes."""
    batch = settings.batch_size // num_processes
    return EvalInput(shard(source, process_index, num_processes),
                     EvalTransform(ImageSettings.from_data_settings(settings.data),
                                   source.hierarchy.class_names[0]),
                     batch_size=batch, num_devices=num_devices,
                     num_workers=settings.data.num_workers,
                     num_batches=num_eval_batches(-(-len(source) // num_processes), batch))


@dataclasses.dataclass(frozen=True)
class Splits:
    """The sources of a run: train (what it trains on), val (None without a validation
    split: `DataSettings.val_fraction` / `val_split`) and test (`eval_split`)."""

    train: Any
    val: Any
    test: Any

    def get(self, name: str):
        """The source of a split name: train | val | test (ConfigError if absent)."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        source = getattr(self, name)
        if source is None:
            raise ConfigError(
                "this run has no validation split (config.data.val_fraction = 0 and "
                "config.data.val_split = ''); evaluate 'test' or 'train'")
        return source


SPLITS = ("train", "val", "test")


def build_splits(data) -> Splits:
    """The train, validation and test sources of `data` (DataSettings).

    The validation split is the data set's own (`val_split`) or is carved out of the
    training split, class by class, before anything else (`hierjax.data.val_split`;
    so it is the same for every number of processes and workers). max_train_examples
    then applies to the training part, max_eval_examples to the validation and test
    splits."""
    names = {"train": data.train_split, "test": data.eval_split}
    if data.val_split:
        names["val"] = data.val_split
    if data.name == "synthetic":
        raw = dict(zip(("train", "test"), synthetic.make_synthetic(
            data.synthetic_num_fine, data.synthetic_num_coarse,
            train_size=data.synthetic_train_size, test_size=data.synthetic_test_size,
            image_size=data.image_size)))
    elif data.name == "cifar100" and not _prepared_cifar100(data.data_dir):
        raw = {k: cifar100_npz.load_cifar100(data.data_dir, split) for k, split in names.items()}
    else:
        raw = {k: _file_source(data, split) for k, split in names.items()}
    if data.class_subset:
        hierarchy = subset_hierarchy(data.class_subset)
        raw = {k: ClassSubset(source, hierarchy) for k, source in raw.items()}
    for source in raw.values():
        check_labels(source)
    train, val = raw["train"], raw.get("val")
    if data.val_fraction:
        train, val = split_validation(train, data.val_fraction)
    return Splits(train=take(train, data.max_train_examples),
                  val=None if val is None else take(val, data.max_eval_examples),
                  test=take(raw["test"], data.max_eval_examples))


def build_sources(data):
    """(train, test) sources of `data` (DataSettings): `build_splits` without the
    validation split."""
    splits = build_splits(data)
    return splits.train, splits.test


def _prepared_cifar100(data_dir: str) -> bool:
    return bool(data_dir) and (Path(data_dir).expanduser() / "hierjax_cifar100").is_dir()


def _file_source(data, split: str):
    if not data.data_dir:
        raise ConfigError(
            f"config.data.data_dir is empty; set it to the folder holding the "
            f"{'images' if data.name == 'image_folder' else 'prepared ' + data.name + ' dataset'}")
    data_dir = str(Path(data.data_dir).expanduser())
    if data.name == "image_folder":
        from hierjax.data.folder_source import ImageFolderSource

        return ImageFolderSource(data_dir, split, data.hierarchy,
                                 allow_missing_classes=data.allow_missing_classes)
    from hierjax.data.tfds_source import TfdsSource

    return TfdsSource(data.name, data_dir, split, data.hierarchy)


def _image_shape(source, images: ImageSettings) -> tuple[int, int, int]:
    """The (H, W, C) of the examples, checked against config.data.train_crop."""
    shape = source.image_shape
    if images.train_crop == "pad_crop":
        if shape is None:  # encoded images: they keep their stored size
            return images.size, images.size, 3
        if shape[:2] != (images.size, images.size):
            raise ConfigError(
                f"config.data.image_size = {images.size} but {source.name} holds "
                f"{shape[0]} x {shape[1]} images, which config.data.train_crop = 'pad_crop' "
                f"keeps as they are; set config.data.image_size = {shape[0]}")
        return shape
    if shape is not None:
        raise ConfigError(
            f"config.data.train_crop = {images.train_crop!r} decodes and resizes encoded "
            f"images, but {source.name} is held in memory as arrays; use 'pad_crop'")
    return images.size, images.size, 3


def normalization(data) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean [3], std [3]) of the model input, float32 in 0..1 units: the
    data set's own for synthetic and CIFAR-100, ImageNet's for the others (the
    statistics pretrained backbones were trained with)."""
    if data.name == "synthetic":
        mean, std = synthetic.MEAN, synthetic.STD
    elif data.name == "cifar100":
        mean, std = cifar100_npz.MEAN, cifar100_npz.STD
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return np.array(mean, np.float32), np.array(std, np.float32)
