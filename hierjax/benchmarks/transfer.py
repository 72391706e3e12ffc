"""The transfer protocol of BENCHMARKS.md: the closest analogue of ImageNet -> CUB that
the data here allows, on the CIFAR-100 transfer split.

1. Pretrain the backbone with flat softmax on the *source* set (`cifar100/transfer_source`:
   per superclass the 2 lowest official fine ids, 40 classes, 20,000 images).
2. Fine-tune from it on the *target* set (`cifar100/transfer_target`: the other 3 classes
   of every superclass, 60 classes under 20 superclasses, 30,000 / 6,000 images), every
   variant at one budget, choosing lambda, b and the learning rate on a validation split
   carved from the target's training images (`data.val_fraction`); the test set is
   evaluated once per run, at its end.

The pretrained network has seen the target's superclasses through other members but not
the target classes, as an ImageNet network has seen other birds but not CUB's species.
"""

from __future__ import annotations

import copy
import pathlib

from hierjax import settings as settings_lib

SOURCE = "cifar100/transfer_source"
TARGET = "cifar100/transfer_target"
VAL_FRACTION = 0.1


def pretrain_config(base, *, epochs: int, lr: float) -> settings_lib.Settings:
    """Flat softmax on the source set, the base config's network and batch, a cosine
    schedule with one warm-up epoch, no validation split (nothing is selected)."""
    config = copy.deepcopy(base)
    settings_lib.set_keys(config, {
        "variant": "SM", "seed": 0, "data.class_subset": SOURCE, "num_epochs": epochs,
        "optimizer.lr": lr, "optimizer.schedule": "cosine", "optimizer.warmup_epochs": 1.0,
        "loss.glm_weight": None, "loss.coarse_weight": None})
    return settings_lib.resolve(config)


def finetune_config(base, pretrained: pathlib.Path, variant: str, overrides: dict,
                    seed: int) -> settings_lib.Settings:
    """The base config on the target set, started from the pretrained run's backbone
    (`model.init_from`; its 40-class heads are replaced by fresh 60-class ones)."""
    config = copy.deepcopy(base)
    settings_lib.set_keys(config, {
        "data.class_subset": TARGET, "data.val_fraction": VAL_FRACTION,
        "model.init_from": str(pretrained), "variant": variant, "seed": seed, **overrides})
    return settings_lib.resolve(config)


def two_step_configs(base, pretrained: pathlib.Path, stage1_dir: pathlib.Path,
                     overrides: dict, seed: int):
    """Lu & Zou's two steps inside the same budget: SM for the first half of the epochs,
    then CC from that run for the second half, every other setting unchanged."""
    epochs = base.num_epochs
    first = epochs // 2
    stage1 = finetune_config(base, pretrained, "SM", {"num_epochs": first}, seed)
    stage2 = finetune_config(base, stage1_dir, "CC",
                             {"num_epochs": epochs - first, **overrides}, seed)
    return stage1, stage2
