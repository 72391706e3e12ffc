"""Config plumbing shared by `configs/*.py`: string arguments, variants, runlocal, checks.

A config file's `get_config(arg)` takes big_vision-style string arguments, e.g.
`configs/cifar100_resnet18.py:runlocal,variant=OURS`, parsed by `parse_arg`.

Variants (Shi, Gong et al. Table names; CC = coarse-label constraint of Lu & Zou) are
presets of four keys, applied by `apply_variant`:

  variant   model.heads  model.skip  loss.glm_weight  loss.coarse_weight
  SM        flat         False       0                0
  SM-GLM    flat         False       lambda           0
  CSM       cascade      False       0                0
  CSM-GLM   cascade      False       lambda           0
  SC-CSM    cascade      True        0                0
  OURS      cascade      True        lambda           0
  CC        flat         False       0                b
  OURS+CC   cascade      True        lambda           b

lambda is `loss.glm_lambda` (paper: 0.8) and b is `loss.coarse_b` (default 1).
"""

from __future__ import annotations

import ml_collections

VARIANTS = {
    # name: (heads, skip, uses GLM, uses coarse constraint)
    "SM": ("flat", False, False, False),
    "SM-GLM": ("flat", False, True, False),
    "CSM": ("cascade", False, False, False),
    "CSM-GLM": ("cascade", False, True, False),
    "SC-CSM": ("cascade", True, False, False),
    "OURS": ("cascade", True, True, False),
    "CC": ("flat", False, False, True),
    "OURS+CC": ("cascade", True, True, True),
}


def parse_arg(arg: str | None, **defaults):
    """Parses 'runlocal,variant=OURS,res=128' into a ConfigDict over `defaults`.

    A bare word sets a boolean to True; `key=value` takes the type of the default.
    """
    parsed = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"Unknown config argument {key!r} in {arg!r}; "
                             f"known: {sorted(defaults)}.")
        default = defaults[key]
        if not sep:
            value = True
        elif isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"Config argument {key}={value!r} must be true or false.")
            value = value.lower() in ("true", "1")
        else:
            value = type(default)(value)
        parsed[key] = value
    return parsed


def apply_variant(config, variant: str):
    """Sets model.heads/skip and loss.glm_weight/coarse_weight for a named variant."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose one of {list(VARIANTS)}.")
    heads, skip, glm, coarse = VARIANTS[variant]
    config.model.heads = heads
    config.model.skip = skip
    config.loss.glm_weight = config.loss.glm_lambda if glm else 0.0
    config.loss.coarse_weight = config.loss.coarse_b if coarse else 0.0
    return config


def apply_runlocal(config):
    """Shrinks a config to a CPU smoke run of a couple of minutes."""
    config.batch_size = min(config.batch_size, 32)
    config.num_epochs = 1
    config.num_steps = 120
    config.log_every_steps = 10
    config.eval_every_steps = 60
    config.checkpoint_every_steps = 60
    config.optimizer.lr = min(config.optimizer.lr, 0.05)
    config.optimizer.warmup_epochs = min(config.optimizer.warmup_epochs, 0.1)
    config.data.max_train_examples = 4000
    config.data.max_eval_examples = 1000
    config.data.image_size = min(config.data.image_size, 64)
    config.data.num_workers = min(config.data.num_workers, 2)
    config.model.dtype = "float32"
    return config


def base_config():
    """Every config key with its default (the offline synthetic run)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 128            # global, split over all devices of all hosts
    config.num_epochs = 30
    config.num_steps = 0               # > 0 overrides num_epochs
    config.log_every_steps = 50
    config.eval_every_steps = 0        # 0: evaluate once per epoch
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2        # latest N
    config.keep_best_checkpoints = 1   # best N by validation fine top-1
    config.async_checkpoints = True

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic"     # hierjax/data/build.py lists the datasets
    config.data.data_dir = ""          # prepared tfds folder / image folder / cifar100 copy
    config.data.hierarchy = ""         # stored hierarchy to use ("" = the dataset's default);
                                       # image_folder: the path of a hierarchy CSV
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.image_size = 32        # training and evaluation crop (file-backed, synthetic)
    config.data.eval_resize = 0        # shorter side before the eval centre crop; also the
                                       # train resize of "resize_random" (0 = size * 8 / 7)
    config.data.train_crop = "resize_random"  # | "random_resized" (Inception crop)
    config.data.min_scale = 0.08       # smallest area fraction of "random_resized"
    config.data.use_bbox = False       # crop every image to its object box first
    config.data.num_workers = 8        # grain decoding processes (0 = in the main process)
    config.data.sampler = "shuffle"    # | "hierarchical": P groups x Q classes x K images
    config.data.sampler_pqk = (4, 4, 2)  # (P, Q, K); P * Q * K = batch size per process
    config.data.sampler_level = 1      # hierarchy level of the P groups
    config.data.max_train_examples = 0  # 0: all
    config.data.max_eval_examples = 0
    config.data.synthetic_num_fine = 20
    config.data.synthetic_num_coarse = 5
    config.data.synthetic_train_size = 5000
    config.data.synthetic_test_size = 1000

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"
    config.model.small_input = True    # CIFAR stem (3x3/1 conv, no max pool)
    config.model.wrn_depth = 28
    config.model.wrn_width = 10
    config.model.dropout = 0.0
    config.model.vgg_batchnorm = True
    config.model.bilinear = False
    config.model.bilinear_dim = 0
    config.model.heads = "cascade"     # "flat" | "cascade"
    config.model.skip = True           # cascade skip connection (SC-CSM)
    config.model.dtype = "float32"     # compute dtype; "bfloat16" on GPUs
    # ImageNet-pretrained backbone: a torchvision/timm ResNet or VGG state dict file
    # (.safetensors, or .pth/.pt/.bin with torch installed); "" trains from scratch.
    # See hierjax.models.pretrained for the key mapping.
    config.model.pretrained = ""

    config.loss = ml_collections.ConfigDict()
    config.loss.level_weights = (1.0, 1.0, 1.0, 1.0)  # cascaded softmax w_l, fine first
    config.loss.glm_lambda = 0.8       # lambda used by the GLM variants
    config.loss.glm_weight = 0.8       # weight of the GLM term actually applied
    config.loss.glm_k = 5
    config.loss.glm_margins = (1.0, 1.0, 1.0, 1.0)    # alpha_l per level, fine first
    config.loss.glm_global = True      # GLM on the all-gathered global batch
    config.loss.coarse_b = 1.0         # b used by the coarse-constraint variants
    config.loss.coarse_weight = 0.0    # weight of the coarse constraint actually applied
    config.loss.coarse_reduction = "mean"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 1.0
    config.optimizer.decay_epochs = (60.0, 120.0, 160.0)
    config.optimizer.decay_factor = 0.2
    config.optimizer.head_lr_multiplier = 1.0
    config.optimizer.grad_clip_norm = 0.0

    config.profile = ml_collections.ConfigDict()
    config.profile.start_step = 10
    config.profile.num_steps = 0       # > 0 writes a trace of that many steps

    config.distributed = ml_collections.ConfigDict()
    config.distributed.initialize = False  # jax.distributed.initialize(); auto under SLURM
    return config


def cifar100_config():
    """CIFAR-100 from scratch: the shared ../shared copy, batch 128, 200 epochs, SGD lr 0.1,
    weight decay 5e-4, and a GLM weight of 0.05.

    From scratch, the paper's lambda = 0.8 lets GLM shrink the still class-agnostic
    features: runlocal OURS reached 1.6% top-1 at 0.8 against 4.3% at 0.05 and 6.8% for
    SC-CSM (BENCHMARKS.md). The fine-tuning configs keep 0.8.
    """
    config = base_config()
    config.data.name = "cifar100"
    config.data.data_dir = "../shared/data/cifar100"
    config.data.image_size = 32
    config.batch_size = 128
    config.num_epochs = 200
    config.optimizer.lr = 0.1
    config.optimizer.weight_decay = 5e-4
    config.loss.glm_lambda = 0.05
    return config


def finetune_config(dataset: str, hierarchy: str):
    """The 448-px fine-tuning recipe shared by the CUB, Cars and Aircraft configs.

    An ImageNet-pretrained ResNet-50 (`model.pretrained`), batch 32, SGD + Nesterov,
    lr 0.01 for the backbone and 10x for the new heads, gradients clipped to global
    norm 5, 1 warmup epoch then cosine over 100 epochs, weight decay 1e-4, bfloat16
    compute; train crop: resize 512 + random 448 crop + flip, eval: resize 512 + centre
    crop 448.
    """
    config = base_config()
    config.data.name = dataset
    config.data.data_dir = "~/tensorflow_datasets"  # where `hierjax.prepare` wrote it
    config.data.hierarchy = hierarchy
    config.data.image_size = 448
    config.model.name = "resnet50"
    config.model.small_input = False
    config.model.dtype = "bfloat16"
    config.batch_size = 32
    config.num_epochs = 100
    config.optimizer.lr = 0.01
    config.optimizer.head_lr_multiplier = 10.0
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 1.0
    # The cascade feeds fine logits into the coarser heads; at 10x the head learning
    # rate that loop diverged within 5 steps (CSM loss 2e5 on the CUB runlocal run),
    # and clipping the global gradient norm keeps it stable.
    config.optimizer.grad_clip_norm = 5.0
    return config


def set_keys(config, overrides):
    """Sets dotted keys, e.g. {"loss.glm_lambda": 0.4, "num_steps": 2}; returns config."""
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def finalize(config, args):
    """Applies the variant and runlocal arguments shared by every config file."""
    apply_variant(config, args.variant)
    if args.runlocal:
        apply_runlocal(config)
    return config


def _check_choice(value, choices, key):
    if value not in choices:
        raise ValueError(f"config.{key} = {value!r} is not valid; choose one of {choices}.")


def _check_positive(value, key, *, allow_zero=False):
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"config.{key} must be {bound}, got {value!r}.")


def validate(config):
    """Checks values that would otherwise fail deep inside training; returns config."""
    _check_positive(config.batch_size, "batch_size")
    _check_positive(config.num_epochs, "num_epochs", allow_zero=config.num_steps > 0)
    _check_positive(config.num_steps, "num_steps", allow_zero=True)
    _check_positive(config.log_every_steps, "log_every_steps")
    _check_positive(config.eval_every_steps, "eval_every_steps", allow_zero=True)
    _check_positive(config.checkpoint_every_steps, "checkpoint_every_steps")
    _check_choice(config.model.heads, ("flat", "cascade"), "model.heads")
    _check_choice(config.model.dtype, ("float32", "bfloat16"), "model.dtype")
    _check_choice(config.optimizer.name, ("sgd", "adamw"), "optimizer.name")
    _check_choice(config.optimizer.schedule, ("cosine", "step"), "optimizer.schedule")
    _check_positive(config.optimizer.lr, "optimizer.lr")
    _check_positive(config.loss.glm_weight, "loss.glm_weight", allow_zero=True)
    _check_positive(config.loss.coarse_weight, "loss.coarse_weight", allow_zero=True)
    _check_choice(config.loss.coarse_reduction, ("mean", "sum"), "loss.coarse_reduction")
    if config.loss.glm_weight > 0:
        _check_positive(config.loss.glm_k, "loss.glm_k")
    if config.profile.num_steps < 0 or config.profile.start_step < 0:
        raise ValueError("config.profile.start_step and num_steps must be >= 0.")
    return config
