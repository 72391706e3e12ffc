"""In-memory data: sources (the data sets), augmentation and batching (numpy only).

- `source`: the `Source` interface and `ArraySource` over numpy arrays;
- `cifar100`, `synthetic`: the data sets; `build`: pick one by config;
- `augment`, `pipeline`, `prefetch`: training / evaluation batches;
- `sharding`: each process's share of a source in multi-host runs.
"""

from hierjax.data.augment import augment_train, crop_and_flip
from hierjax.data.build import build_datasets, normalization
from hierjax.data.cifar100 import load_cifar100
from hierjax.data.pipeline import (
    TrainIterator,
    eval_batches,
    num_eval_batches,
    per_device_batch_size,
    shuffled_order,
)
from hierjax.data.prefetch import Prefetch
from hierjax.data.sharding import SliceSource, shard_for_process
from hierjax.data.source import ArraySource, Source
from hierjax.data.synthetic import make_synthetic

__all__ = [
    "ArraySource",
    "Prefetch",
    "SliceSource",
    "Source",
    "TrainIterator",
    "augment_train",
    "build_datasets",
    "crop_and_flip",
    "eval_batches",
    "load_cifar100",
    "make_synthetic",
    "normalization",
    "num_eval_batches",
    "per_device_batch_size",
    "shard_for_process",
    "shuffled_order",
]
