"""Data sets by config: `build_datasets(config.data)` and `normalization(config.data)`.

Keys of `config.data`:
- `name`: "synthetic" or "cifar100";
- `data_dir` (str): the CIFAR-100 folder, relative to the current directory or absolute
  ("" = ../shared/data/cifar100 next to the repository, wherever you run from);
- `max_train_examples`, `max_eval_examples` (int): keep that many, class by class
  (0 = all), e.g. for smoke runs;
- synthetic only: `synthetic_num_fine`, `synthetic_num_coarse`, `synthetic_train_size`,
  `synthetic_test_size`, `image_size` (the data seed is fixed at 0);
- cifar100 images are 32 x 32 whatever `image_size` says (they are not resized).
"""

from __future__ import annotations

import numpy as np

from hierjax.data import cifar100, synthetic
from hierjax.data.source import ArraySource

NAMES = ("synthetic", "cifar100")


def build_datasets(data_config) -> tuple[ArraySource, ArraySource]:
    """(train, eval) sources of the data set `data_config.name`."""
    name = _get(data_config, "name")
    _check_name(name)
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
    return (
        cifar100.load_cifar100(data_dir, "train", max_examples=max_train),
        cifar100.load_cifar100(data_dir, "test", max_examples=max_eval),
    )


def normalization(data_config) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean [3], std [3]) of the data set's images, float32 in 0..1 units."""
    name = _get(data_config, "name")
    _check_name(name)
    module = synthetic if name == "synthetic" else cifar100
    return np.array(module.MEAN, np.float32), np.array(module.STD, np.float32)


def _check_name(name) -> None:
    if name not in NAMES:
        raise ValueError(
            f"config.data.name={name!r} is not a known data set; choose one of "
            f"{', '.join(map(repr, NAMES))} (cub, cars, aircraft and dogs come with the "
            "TFDS builders, which are not available yet)"
        )


def _get(data_config, key: str):
    try:
        return getattr(data_config, key)
    except (AttributeError, KeyError):
        raise KeyError(
            f"config.data.{key} is not set; add it to the config "
            "(the keys are listed in hierjax/data/build.py)"
        ) from None


def _max_examples(data_config, key: str) -> int:
    value = _get(data_config, key)
    if value < 0:
        raise ValueError(f"config.data.{key}={value} must be >= 0 (0 = all examples)")
    return value
