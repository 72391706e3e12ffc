"""The dataset interface: a random-access split of labelled images.

A `Source` is what the input pipeline reads: `len(source)` examples, each an image
uint8 [H, W, C] and its label path int32 [h] (fine label first, then its ancestors, as
`Hierarchy.labels_for` gives them). `ArraySource` implements it over numpy arrays in
memory; file-backed sources (grain / TFDS) implement the same members.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hierjax.hierarchy import Hierarchy


class Source(Protocol):
    """A random-access split of `len(source)` labelled images."""

    name: str
    hierarchy: Hierarchy
    image_shape: tuple[int, int, int]  # (H, W, C)

    def __len__(self) -> int: ...

    def read(self, indices) -> dict[str, np.ndarray]:
        """dict(image=uint8 [n, H, W, C], labels=int32 [n, h]) of the examples at indices [n]."""
        ...


class ArraySource:
    """A `Source` over in-memory arrays: images uint8 [N, H, W, C], fine labels [N]."""

    def __init__(self, images_NxHxWxC, fine_labels_N, hierarchy: Hierarchy, name: str):
        images = np.asarray(images_NxHxWxC)
        fine = np.asarray(fine_labels_N)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"{name}: images must be uint8 [N, H, W, C], got {images.dtype} "
                f"of shape {images.shape}"
            )
        if fine.shape != images.shape[:1]:
            raise ValueError(
                f"{name}: {len(images)} images but fine labels of shape {fine.shape}; "
                "give one fine label per image"
            )
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

    def read(self, indices) -> dict[str, np.ndarray]:
        """dict(image=uint8 [n, H, W, C], labels=int32 [n, h]) of the examples at indices [n]."""
        indices = np.asarray(indices)
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise ValueError(
                f"{self.name}: read() takes a 1-D integer index array, got {indices.dtype} "
                f"of shape {indices.shape}"
            )
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(
                f"{self.name}: indices must lie in 0..{len(self) - 1}, got "
                f"{indices.min()}..{indices.max()}"
            )
        return {"image": self.images_NxHxWxC[indices], "labels": self.labels_Nxh[indices]}

    def subset(self, max_examples: int) -> ArraySource:
        """The first `max_examples` examples taken class by class (0 = all of them).

        Takes the first example of every fine class, then the second of every class, and
        so on, so every class is present when max_examples >= the number of classes.
        Deterministic; the kept examples stay in their original order.
        """
        if max_examples < 0:
            raise ValueError(
                f"{self.name}: max_examples must be >= 0 (0 = all), got {max_examples}"
            )
        if max_examples == 0 or max_examples >= len(self):
            return self
        keep = stratified_head(self.labels_Nxh[:, 0], max_examples)
        return ArraySource(
            self.images_NxHxWxC[keep], self.labels_Nxh[keep, 0], self.hierarchy, self.name
        )


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
