"""The examples of a subset of a dataset's fine classes, relabelled to a hierarchy over
that subset (`config.data.class_subset`, e.g. the CIFAR-100 transfer split: pretrain on
`cifar100/transfer_source`, fine-tune on `cifar100/transfer_target`).

A fine class is matched by name; each kept example's labels become its path in the
subset hierarchy, whose coarse levels may differ from the dataset's own.
"""

from __future__ import annotations

import functools

import numpy as np
from absl import logging

from hierjax.errors import DataError
from hierjax.hierarchy import Hierarchy


class ClassSubset:
    """The records of `source` whose fine class is a fine class of `hierarchy`, with
    labels in `hierarchy` (the source interface of hierjax.data.sources)."""

    def __init__(self, source, hierarchy: Hierarchy):
        names = source.hierarchy.class_names[0]
        unknown = sorted(set(hierarchy.class_names[0]) - set(names))
        if unknown:
            raise DataError(
                f"{hierarchy.source}: fine classes {unknown[:5]} ({len(unknown)} in all) are "
                f"not classes of {source.name}; a class subset names classes of the dataset")
        new_id = np.full(len(names), -1, np.int64)
        for i, name in enumerate(hierarchy.class_names[0]):
            new_id[names.index(name)] = i
        fine = new_id[np.asarray(source.labels_Nxh)[:, 0]]
        self.indices = np.flatnonzero(fine >= 0)
        self.source, self.hierarchy = source, hierarchy
        self.name = f"{source.name}[classes of {hierarchy.source}]"
        self.image_shape = source.image_shape
        self.labels_Nxh = hierarchy.labels_for(fine[self.indices]).astype(np.int32)
        logging.info("%s: %d of %d fine classes, %d of %d examples.", self.name,
                     hierarchy.num_classes[0], len(names), len(self), len(source))

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"ClassSubset({self.name!r}, {len(self)} records)"

    def __getitem__(self, index: int) -> dict:
        record = self.source[int(self.indices[index])]
        return {**record, "labels": self.labels_Nxh[index]}


@functools.cache
def subset_hierarchy(name_or_csv: str) -> Hierarchy:
    """A shipped hierarchy by short name (hierjax.hierarchy.shipped) or a CSV path."""
    from hierjax.hierarchy import shipped

    if name_or_csv in shipped.NAMES:
        return shipped.load(name_or_csv)
    return Hierarchy.from_csv(name_or_csv)
