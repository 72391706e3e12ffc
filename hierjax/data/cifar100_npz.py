"""CIFAR-100 from its offline copy (npz shards and a meta.json) as an in-memory source.

Format (the copy's README.md): `data_dir` holds `meta.json` (`fine_names` [100],
`coarse_names` [20], `fine_to_coarse` [100], `splits`: split -> shard file names,
`num_examples`: split -> count) and per shard an `.npz` with `image` uint8 [N, 32, 32, 3],
`fine` uint8 [N] and `coarse` uint8 [N].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hierjax.data.sources import ArraySource, take
from hierjax.hierarchy import Hierarchy
from hierjax.errors import DataError, MissingDataError

# `../shared/data/cifar100` relative to the repository root.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar100"
LEVEL_NAMES = ("class", "superclass")
IMAGE_SHAPE = (32, 32, 3)
# Per-channel statistics of the training images, in 0..1 units.
MEAN = (0.507075, 0.486549, 0.440918)
STD = (0.267334, 0.256438, 0.276150)

_META_KEYS = ("fine_names", "coarse_names", "fine_to_coarse", "splits", "num_examples")


def load_cifar100(data_dir: str | Path, split: str, *, max_examples: int = 0) -> ArraySource:
    """The CIFAR-100 `split` ("train": 50,000, "test": 10,000) as an in-memory source.

    `data_dir` is relative to the current directory or absolute; "" means
    DEFAULT_DATA_DIR. Labels are (class, superclass).
    `max_examples` > 0 keeps that many, class by class (`sources.take`).
    """
    data_dir = Path(data_dir) if str(data_dir) else DEFAULT_DATA_DIR
    meta_path = _existing(data_dir / "meta.json", data_dir)
    meta = _read_meta(meta_path)
    if split not in meta["splits"]:
        raise DataError(
            f"{meta_path}: no split {split!r}; the splits are {sorted(meta['splits'])}"
        )
    hierarchy = Hierarchy.from_parents(
        meta["fine_names"],
        meta["fine_to_coarse"],
        meta["coarse_names"],
        level_names=LEVEL_NAMES,
        source=str(meta_path),
    )
    fine_to_coarse = hierarchy.coarse_of(1)
    shards = [
        _read_shard(_existing(data_dir / name, data_dir), fine_to_coarse)
        for name in meta["splits"][split]
    ]
    counts = {name: len(fine) for name, (_, fine) in zip(meta["splits"][split], shards)}
    expected = meta["num_examples"][split]
    if sum(counts.values()) != expected:
        raise DataError(
            f"{data_dir}: split {split!r} has {sum(counts.values())} examples "
            f"({', '.join(f'{k}: {v}' for k, v in counts.items())}) but {meta_path} says "
            f"{expected}; the copy is incomplete or mixed up, copy the data set again"
        )
    images = np.concatenate([images for images, _ in shards])
    fine = np.concatenate([fine for _, fine in shards])
    return take(ArraySource(images, fine, hierarchy, f"cifar100/{split}"), max_examples)


def _existing(path: Path, data_dir: Path) -> Path:
    if not path.exists():
        raise MissingDataError(
            f"CIFAR-100 not found: {path.resolve()} does not exist (data_dir "
            f"{str(data_dir)!r}). Set --config.data.data_dir=... to the folder holding "
            "meta.json, train_0.npz, train_1.npz, train_2.npz and test.npz; the default "
            f"is ../shared/data/cifar100 relative to the repository root ({DEFAULT_DATA_DIR})"
        )
    return path


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}); copy the data set again") from None
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise DataError(f"{path} lacks the key(s) {', '.join(missing)}; copy the data set again")
    return meta


def _read_shard(path: Path, fine_to_coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 [N, 32, 32, 3] and fine labels [N] of one shard, checked."""
    with np.load(path, allow_pickle=False) as npz:
        missing = [key for key in ("image", "fine", "coarse") if key not in npz.files]
        if missing:
            raise DataError(
                f"{path} lacks the array(s) {', '.join(missing)} (it has {npz.files})"
            )
        images, fine, coarse = npz["image"], npz["fine"], npz["coarse"]
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{path}: 'image' must be uint8 [N, 32, 32, 3], got {images.dtype} {images.shape}"
        )
    for key, labels in (("fine", fine), ("coarse", coarse)):
        if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
            raise DataError(
                f"{path}: {key!r} must be integer labels [{len(images)}] (one per image), "
                f"got {labels.dtype} {labels.shape}"
            )
    num_fine = len(fine_to_coarse)
    if fine.size and fine.max() >= num_fine:
        raise DataError(
            f"{path}: fine label {fine.max()} is out of range 0..{num_fine - 1} "
            "of meta.json's fine_names"
        )
    wrong = np.flatnonzero(coarse != fine_to_coarse[fine])
    if wrong.size:
        row = wrong[0]
        raise DataError(
            f"{path}: {wrong.size} row(s) have a coarse label other than "
            f"fine_to_coarse[fine] (first: row {row}, fine {fine[row]}, coarse "
            f"{coarse[row]}, but meta.json maps it to {fine_to_coarse[fine[row]]}); the "
            "shard and meta.json do not belong together, copy the data set again"
        )
    return images, fine
