"""Random-access sources of labelled images: the one interface the input pipeline reads.

A source has `name`, `hierarchy`, `image_shape` ((H, W, C) of in-memory images, None
for encoded ones), `len(source)`, `labels_Nxh` (int32 [N, h]: fine label first, then its
ancestors, as `Hierarchy.labels_for` gives them) and `source[i]`, a
record dict(image=..., labels=int32 [h], bbox=float32 [4] (ymin, xmin, ymax, xmax in
0..1), name=str (the file, or where the example is, for error messages)). `image` is a decoded uint8 [H, W, C] array for the in-memory sources
(`ArraySource`: synthetic, the CIFAR-100 npz copy) and the encoded file bytes for the
file-backed ones (`hierjax.data.tfds_source`, `hierjax.data.folder_source`);
`hierjax.data.transforms` turns either into training or evaluation images.

Sources are picklable, so grain's worker processes can read them.
"""

from __future__ import annotations

import functools

import numpy as np

from hierjax.errors import DataError
from hierjax.hierarchy import Hierarchy

WHOLE_IMAGE = np.array([0.0, 0.0, 1.0, 1.0], np.float32)


class ArraySource:
    """A source over in-memory arrays: images uint8 [N, H, W, C], fine labels [N]."""

    def __init__(self, images_NxHxWxC, fine_labels_N, hierarchy: Hierarchy, name: str):
        images = np.asarray(images_NxHxWxC)
        fine = np.asarray(fine_labels_N)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"{name}: images must be uint8 [N, H, W, C], got {images.dtype} "
                             f"of shape {images.shape}")
        if fine.shape != images.shape[:1]:
            raise ValueError(f"{name}: {len(images)} images but fine labels of shape "
                             f"{fine.shape}; give one fine label per image")
        try:
            labels = hierarchy.labels_for(fine)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        self.name = name
        self.hierarchy = hierarchy
        self.images_NxHxWxC = images
        self.labels_Nxh = labels.astype(np.int32)
        self.image_shape = tuple(int(d) for d in images.shape[1:])

    def __len__(self) -> int:
        return len(self.images_NxHxWxC)

    def __repr__(self) -> str:
        return f"ArraySource({self.name!r}, {len(self)} x {self.image_shape})"

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images_NxHxWxC[index], "labels": self.labels_Nxh[index],
                "bbox": WHOLE_IMAGE, "name": f"{self.name}[{index}]"}


class Subset:
    """The records `indices` of a source, renumbered 0..len(indices) - 1."""

    def __init__(self, source, indices, name: str):
        self.source, self.indices = source, np.asarray(indices, np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(source)):
            raise IndexError(f"{name}: indices outside 0..{len(source) - 1}")
        self.hierarchy, self.name = source.hierarchy, name
        self.image_shape = source.image_shape

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"Subset({self.name!r}, {len(self)} records)"

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} outside 0..{len(self) - 1}")
        return self.source[int(self.indices[index])]

    @functools.cached_property
    def labels_Nxh(self) -> np.ndarray:
        return self.source.labels_Nxh[self.indices]


def stratified_head(fine_labels_N, n: int) -> np.ndarray:
    """Sorted indices of n examples: the first of each class, then the second, ...

    Ties within a round go to the example that comes first.
    """
    fine = np.asarray(fine_labels_N)
    order = np.argsort(fine, kind="stable")
    first_of_class = np.searchsorted(fine[order], fine[order])
    rank_N = np.empty(len(fine), np.int64)
    rank_N[order] = np.arange(len(fine)) - first_of_class  # k for the k-th of its class
    by_round = np.lexsort((np.arange(len(fine)), rank_N))
    return np.sort(by_round[:n])


def take(source, max_examples: int):
    """The first `max_examples` examples taken class by class (0 = all of them).

    Takes the first example of every fine class, then the second of every class, and so
    on, so every class is present when max_examples >= the number of classes.
    Deterministic; the kept examples stay in their original order.
    """
    if max_examples < 0:
        raise ValueError(f"{source.name}: max_examples must be >= 0 (0 = all), got "
                         f"{max_examples}")
    if max_examples == 0 or max_examples >= len(source):
        return source
    keep = stratified_head(source.labels_Nxh[:, 0], max_examples)
    return Subset(source, keep, f"{source.name}[:{max_examples} by class]")


def shard(source, process_index: int, num_processes: int):
    """Process p of P reads examples [p N / P, (p + 1) N / P) (the source itself when
    P = 1): the shards partition the examples, so per-process evaluation totals add up
    to the whole set."""
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process index {process_index} outside 0..{num_processes - 1}")
    if num_processes == 1:
        return source
    n = len(source)
    lo, hi = process_index * n // num_processes, (process_index + 1) * n // num_processes
    return Subset(source, np.arange(lo, hi), f"{source.name}[{lo}:{hi}]")


def check_labels(source) -> None:
    """DataError naming the first example whose labels are not a path of the source's
    hierarchy: a fine label out of range, or a coarse label that contradicts the tree."""
    labels = np.asarray(source.labels_Nxh)
    hierarchy = source.hierarchy
    if labels.ndim != 2 or labels.shape[1] != hierarchy.num_levels:
        raise DataError(f"{source.name}: labels have shape {labels.shape}, expected "
                        f"[N, {hierarchy.num_levels}] for the levels {hierarchy.level_names}")
    fine = labels[:, 0]
    out_of_range = np.flatnonzero((fine < 0) | (fine >= hierarchy.num_classes[0]))
    if out_of_range.size:
        i = int(out_of_range[0])
        raise DataError(
            f"{source.name}: example {i} ({source[i]['name']}) has fine label {fine[i]}, "
            f"outside 0..{hierarchy.num_classes[0] - 1} ({len(out_of_range)} such examples)")
    wrong = np.flatnonzero((labels != hierarchy.ancestors[fine]).any(1))
    if wrong.size:
        i = int(wrong[0])
        raise DataError(
            f"{source.name}: example {i} ({source[i]['name']}) has labels "
            f"{labels[i].tolist()}, but fine class "
            f"{hierarchy.class_names[0][fine[i]]!r} lies under "
            f"{hierarchy.ancestors[fine[i]].tolist()} in {hierarchy.source} "
            f"({len(wrong)} such examples); the data and the hierarchy disagree")
