"""The input of a training run from its settings: `build_input`, `build_sources`,
`normalization`.

`config.data.name` picks the source (`hierjax.settings.DataSettings` documents every
key): "synthetic" and "cifar100" (the npz copy) are held in memory; a prepared "cifar100"
folder, "cub", "aircraft", "cars", "dogs", "nabirds" and "image_folder" are read from
files. Every source goes through the same pipeline (`hierjax.data.pipeline`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from hierjax.data import cifar100_npz, synthetic
from hierjax.data.pipeline import EvalInput, TrainInput
from hierjax.data.sampler import build_sampler
from hierjax.data.sources import check_labels, shard, take
from hierjax.data.transforms import EvalTransform, ImageSettings, TrainTransform
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
    eval: EvalInput

    def close(self) -> None:
        """Stops every worker."""
        self.train.close()
        self.eval.close()


def build_input(settings, *, num_devices: int, process_index: int = 0,
                num_processes: int = 1) -> Input:
    """This process's training and evaluation input (each process reads
    batch_size / num_processes examples a step, split over its `num_devices`)."""
    data = settings.data
    batch = settings.batch_size // num_processes
    train, test = build_sources(data)
    images = ImageSettings.from_data_settings(data)
    image_shape = _image_shape(train, images)
    workers = data.num_workers
    class_names = train.hierarchy.class_names[0]  # for error messages
    train_input = TrainInput(
        shard(train, process_index, num_processes),
        TrainTransform(images, settings.seed, class_names),
        batch_size=batch, num_devices=num_devices, seed=settings.seed,
        num_workers=workers, sampler=build_sampler(data, batch))
    eval_input = EvalInput(shard(test, process_index, num_processes),
                           EvalTransform(images, class_names),
                           batch_size=batch, num_devices=num_devices, num_workers=workers)
    return Input(train.hierarchy, image_shape, train_input, eval_input)


def build_sources(data):
    """(train, eval) sources of `data` (DataSettings), max_*_examples applied."""
    if data.name == "synthetic":
        train, test = synthetic.make_synthetic(
            data.synthetic_num_fine, data.synthetic_num_coarse,
            train_size=data.synthetic_train_size, test_size=data.synthetic_test_size,
            image_size=data.image_size)
    elif data.name == "cifar100" and not _prepared_cifar100(data.data_dir):
        train, test = (cifar100_npz.load_cifar100(data.data_dir, split)
                       for split in (data.train_split, data.eval_split))
    else:
        train, test = (_file_source(data, split) for split in (data.train_split,
                                                               data.eval_split))
    for source in (train, test):
        check_labels(source)
    return take(train, data.max_train_examples), take(test, data.max_eval_examples)


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
