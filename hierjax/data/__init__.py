"""The input pipeline.

- `sources`: the record-source interface, `ArraySource` (in memory), `Subset`, `take`,
  `shard`; the sources themselves: `synthetic`, `cifar100_npz` (in memory),
  `tfds_source` (datasets prepared by `python -m hierjax.prepare`), `folder_source`
  (your own images);
- `sampler`: epoch orders (shuffled, or P x Q x K hierarchical batches);
- `transforms` (+ `images`, decoding and resizing): record -> training/eval example;
- `pipeline`: the one grain chain, `TrainInput` and `EvalInput`;
- `build`: `build_input(settings, ...)`, `build_splits(settings.data)` (train,
  validation, test; the validation split from `val_split`), `build_sources`.
File-backed sources import tensorflow_datasets only when used.
"""

from hierjax.data.build import (Input, Splits, build_eval_input, build_input, build_sources,
                                build_splits, normalization)
from hierjax.data.pipeline import EvalInput, TrainInput, num_eval_batches
from hierjax.data.sampler import HierarchicalSampler, batch_sibling_stats, shuffled_order
from hierjax.data.sources import ArraySource, Subset, shard, take

__all__ = [
    "ArraySource", "EvalInput", "HierarchicalSampler", "Input", "Splits", "Subset",
    "TrainInput", "batch_sibling_stats", "build_eval_input", "build_input", "build_sources",
    "build_splits", "normalization", "num_eval_batches", "shard", "shuffled_order", "take",
]
