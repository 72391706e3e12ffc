"""The input of a training run, by config: `build_input(config, ...)` and `normalization`.

Keys of `config.data` (defaults and comments in hierjax/config_lib.py:base_config):
- `name`: in memory, "synthetic" or "cifar100"; from files, a dataset prepared by
  `python -m hierjax.prepare` ("cub", "aircraft", "cars", "dogs", "nabirds") or
  "image_folder" (your own images: `data_dir/<split>/<fine class>/*.jpg`, with
  `hierarchy` the path of a hierarchy CSV);
- `data_dir`: cifar100: the folder of the offline npz copy ("" = ../shared/data/cifar100
  next to the repository) or a tfds folder holding a prepared `hierjax_cifar100`;
  prepared datasets: the tfds data folder (`--data_dir` of prepare);
- `hierarchy`: which stored hierarchy of a prepared dataset ("" = its default);
- `train_split`, `eval_split`: split names of file-backed datasets;
- `max_train_examples`, `max_eval_examples`: keep that many, class by class (0 = all);
- `sampler`, `sampler_pqk`, `sampler_level`: batch composition (hierjax.data.sampler);
- file-backed only: `image_size` (the crop), `eval_resize`, `train_crop`, `min_scale`,
  `use_bbox`, `num_workers` (hierjax.data.images, hierjax.data.files);
- synthetic only: `synthetic_*` and `image_size`; cifar100 images stay 32 x 32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from hierjax import datasets
from hierjax.data import cifar100, synthetic
from hierjax.data.pipeline import TrainIterator, eval_batches
from hierjax.data.prefetch import Prefetch
from hierjax.data.sampler import build_sampler
from hierjax.data.sharding import shard_for_process
from hierjax.data.source import ArraySource
from hierjax.hierarchy import Hierarchy

IN_MEMORY = ("synthetic", "cifar100")
# Prepared by `python -m hierjax.prepare`; a prepared cifar100 loads into memory.
PREPARED = tuple(name for name in datasets.BUILDERS if name not in IN_MEMORY)
NAMES = IN_MEMORY + PREPARED + ("image_folder",)
# ImageNet statistics, for the (pretrained) fine-grained models, in 0..1 units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class Input:
    """What the training loop reads.

    train: endless batches with get_state / set_state / steps_per_epoch / close;
    eval_batches(): a fresh pass over the evaluation set (batches with `valid`).
    """

    name: str
    hierarchy: Hierarchy
    image_shape: tuple[int, int, int]
    num_train: int
    num_eval: int
    train: Iterator[dict[str, np.ndarray]]
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]


def build_input(config, *, num_devices: int, process_index: int = 0,
                num_processes: int = 1) -> Input:
    """This process's training and evaluation input for `config` (batches split over
    its `num_devices` devices; each process reads config.batch_size / num_processes)."""
    data_config = config.data
    name = _get(data_config, "name")
    _check_name(name)
    batch = config.batch_size // num_processes
    sampler = build_sampler(data_config, batch)
    if name in IN_MEMORY:
        train, test = build_datasets(data_config)
        train = shard_for_process(train, process_index, num_processes)
        test = shard_for_process(test, process_index, num_processes)
        iterator = Prefetch(TrainIterator(train, global_batch_size=batch,
                                          num_devices=num_devices, seed=config.seed,
                                          sampler=sampler))
        return Input(name, train.hierarchy, train.image_shape, len(train), len(test),
                     iterator, lambda: eval_batches(test, global_batch_size=batch,
                                                    num_devices=num_devices))
    from hierjax.data import files  # grain and tfds, only for file-backed data

    train, test = (files.subset(_file_source(data_config, split),
                                max_examples=_max_examples(data_config, key),
                                process_index=process_index, num_processes=num_processes)
                   for split, key in ((data_config.train_split, "max_train_examples"),
                                      (data_config.eval_split, "max_eval_examples")))
    settings = image_settings(data_config)
    workers = _get(data_config, "num_workers")
    iterator = files.GrainTrainIterator(train, settings, global_batch_size=batch,
                                        num_devices=num_devices, seed=config.seed,
                                        num_workers=workers, sampler=sampler)
    return Input(name, train.hierarchy, (settings.size, settings.size, 3), len(train),
                 len(test), iterator,
                 lambda: files.grain_eval_batches(test, settings, global_batch_size=batch,
                                                  num_devices=num_devices,
                                                  num_workers=workers))


def image_settings(data_config):
    """`hierjax.data.files.ImageSettings` from config.data."""
    from hierjax.data.files import ImageSettings
    from hierjax.data.images import TRAIN_CROPS

    size = _get(data_config, "image_size")
    resize = _get(data_config, "eval_resize") or round(size * 8 / 7)
    if resize < size:
        raise ValueError(
            f"config.data.eval_resize = {resize} is smaller than the crop "
            f"config.data.image_size = {size}; use >= {size} (0 = image_size * 8 / 7)")
    crop = _get(data_config, "train_crop")
    if crop not in TRAIN_CROPS:
        raise ValueError(f"config.data.train_crop = {crop!r}; choose one of {TRAIN_CROPS}")
    min_scale = _get(data_config, "min_scale")
    if not 0 < min_scale <= 1:
        raise ValueError(f"config.data.min_scale = {min_scale} must lie in (0, 1]")
    return ImageSettings(size=size, resize=resize, train_crop=crop, min_scale=min_scale,
                         use_bbox=_get(data_config, "use_bbox"))


def _file_source(data_config, split: str):
    from hierjax.data import files

    name, data_dir = data_config.name, _get(data_config, "data_dir")
    if not data_dir:
        raise ValueError(
            f"config.data.data_dir is empty; set it to the folder holding the "
            f"{'images' if name == 'image_folder' else 'prepared ' + name + ' dataset'}")
    data_dir = str(Path(data_dir).expanduser())
    if name == "image_folder":
        return files.ImageFolderSource(data_dir, split, _get(data_config, "hierarchy"))
    return files.TfdsSource(name, data_dir, split, _get(data_config, "hierarchy"))


def build_datasets(data_config) -> tuple[ArraySource, ArraySource]:
    """(train, eval) in-memory sources of "synthetic" or "cifar100"."""
    name = _get(data_config, "name")
    if name not in IN_MEMORY:
        raise ValueError(f"config.data.name = {name!r} is not an in-memory dataset "
                         f"({', '.join(IN_MEMORY)})")
    max_train = _max_examples(data_config, "max_train_examples")
    max_eval = _max_examples(data_config, "max_eval_examples")
    if name == "synthetic":
        train, test = synthetic.make_synthetic(
            _get(data_config, "synthetic_num_fine"),
            _get(data_config, "synthetic_num_coarse"),
            train_size=_get(data_config, "synthetic_train_size"),
            test_size=_get(data_config, "synthetic_test_size"),
            image_size=_get(data_config, "image_size"),
        )
        return train.subset(max_train), test.subset(max_eval)
    data_dir = _get(data_config, "data_dir")
    if data_dir and (Path(data_dir) / "hierjax_cifar100").is_dir():
        return (cifar100.load_prepared(data_dir, "train").subset(max_train),
                cifar100.load_prepared(data_dir, "test").subset(max_eval))
    return (
        cifar100.load_cifar100(data_dir, "train", max_examples=max_train),
        cifar100.load_cifar100(data_dir, "test", max_examples=max_eval),
    )


def normalization(data_config) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean [3], std [3]) for the model input, float32 in 0..1 units:
    the dataset's own for synthetic and CIFAR-100, ImageNet's for the others (the
    statistics pretrained backbones were trained with)."""
    name = _get(data_config, "name")
    _check_name(name)
    if name in IN_MEMORY:
        module = synthetic if name == "synthetic" else cifar100
        mean, std = module.MEAN, module.STD
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return np.array(mean, np.float32), np.array(std, np.float32)


def _check_name(name) -> None:
    if name not in NAMES:
        raise ValueError(
            f"config.data.name={name!r} is not a known data set; choose one of "
            f"{', '.join(map(repr, NAMES))}"
        )


def _get(data_config, key: str):
    try:
        return getattr(data_config, key)
    except (AttributeError, KeyError):
        raise KeyError(
            f"config.data.{key} is not set; add it to the config "
            "(the keys are listed in hierjax/config_lib.py:base_config)"
        ) from None


def _max_examples(data_config, key: str) -> int:
    value = _get(data_config, key)
    if value < 0:
        raise ValueError(f"config.data.{key}={value} must be >= 0 (0 = all examples)")
    return value
