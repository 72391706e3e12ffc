"""A split of a dataset prepared by `python -m hierjax.prepare`, as a record source.

Read with tensorflow-datasets' array_record data source, images left encoded (the
transforms decode them in the grain workers); see `hierjax.data.sources` for the record
layout and `hierjax.prepare.common` for what a prepared example stores.
"""

from __future__ import annotations

import functools

import numpy as np
from absl import logging

from hierjax.hierarchy import Hierarchy
from hierjax.errors import DataError

_LABEL_CHUNK = 512  # records per read when collecting every label of a source


class TfdsSource:
    """Split `split` of the prepared dataset `name` in `data_dir`, with hierarchy
    `hierarchy_name` ("" = the dataset's default, the first it stores)."""

    def __init__(self, name: str, data_dir: str, split: str, hierarchy_name: str = ""):
        import tensorflow_datasets as tfds

        from hierjax import prepare
        from hierjax.prepare.common import hierarchies_from_metadata

        builder = prepare.builder(name, data_dir)
        hierarchies = hierarchies_from_metadata(builder.info.metadata, str(builder.data_path))
        hierarchy_name = hierarchy_name or next(iter(hierarchies))
        if hierarchy_name not in hierarchies:
            raise DataError(
                f"config.data.hierarchy = {hierarchy_name!r} is not stored with {name}; "
                f"choose one of {', '.join(hierarchies)}")
        if split not in builder.info.splits:
            raise DataError(
                f"{name} has no split {split!r} (config.data.train_split / eval_split); "
                f"its splits are {', '.join(builder.info.splits)}")
        self.name = f"{name}/{split}"
        self.image_shape = None  # encoded: decoded by the transforms
        self.hierarchy: Hierarchy = hierarchies[hierarchy_name]
        self._hierarchy_name = hierarchy_name
        self._records = builder.as_data_source(
            split, decoders={"image": tfds.decode.SkipDecoding()})

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, {len(self)} records)"

    def __getitem__(self, index: int) -> dict:
        return self._record(self._records[index])

    def read_many(self, indices) -> list[dict]:
        """The records at `indices`, read in one call."""
        return [self._record(r) for r in self._records.__getitems__(list(indices))]

    def _record(self, raw: dict) -> dict:
        name = raw["filename"]
        return {"image": raw["image"], "labels": raw["labels"][self._hierarchy_name],
                "bbox": np.asarray(raw["bbox"], np.float32),
                "name": f"{self.name}:{name.decode() if isinstance(name, bytes) else name}"}

    @functools.cached_property
    def labels_Nxh(self) -> np.ndarray:
        """Every record's labels, int32 [N, h] (reads the whole split once)."""
        logging.info("Reading the labels of %s (%d records).", self.name, len(self))
        chunks = [np.stack([r["labels"] for r in
                            self.read_many(range(s, min(s + _LABEL_CHUNK, len(self))))])
                  for s in range(0, len(self), _LABEL_CHUNK)]
        return np.concatenate(chunks).astype(np.int32)
