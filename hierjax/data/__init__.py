"""Input pipelines: `build_input(config, ...)` picks one by config.data.name.

In memory (numpy, a prefetch thread):
- `source`: the `Source` interface and `ArraySource` over numpy arrays;
- `cifar100`, `synthetic`: the data sets;
- `augment`, `pipeline`, `prefetch`: training / evaluation batches;
- `sharding`: each process's share of a source in multi-host runs.
From files (grain worker processes; imported only when used):
- `files`: prepared tfds datasets and image folders, the grain train / eval pipelines;
- `images`: decoding and fine-grained augmentation.
Both: `sampler` (shuffled or P x Q x K hierarchical batches); `build`.
"""

from hierjax.data.augment import augment_train, crop_and_flip
from hierjax.data.build import Input, build_datasets, build_input, normalization
from hierjax.data.cifar100 import load_cifar100
from hierjax.data.pipeline import (
    TrainIterator,
    eval_batches,
    num_eval_batches,
    per_device_batch_size,
)
from hierjax.data.sampler import HierarchicalSampler, batch_sibling_stats, shuffled_order
from hierjax.data.prefetch import Prefetch
from hierjax.data.sharding import SliceSource, shard_for_process
from hierjax.data.source import ArraySource, Source
from hierjax.data.synthetic import make_synthetic

__all__ = [
    "ArraySource",
    "HierarchicalSampler",
    "Input",
    "Prefetch",
    "SliceSource",
    "Source",
    "TrainIterator",
    "augment_train",
    "batch_sibling_stats",
    "build_datasets",
    "build_input",
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
