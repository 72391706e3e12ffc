"""Every config key: its default, meaning and check, in one schema.

`base_config()` builds the ml_collections ConfigDict that the files in `configs/` start
from; command-line flags (`--config.KEY=VALUE`) override it; `resolve(config)` then
validates every key once, after all overrides, into frozen `Settings` that the model,
optimizer, loss and data builders read. Nothing else reads the ConfigDict.

Variants (Shi, Gong et al.'s table names; CC = Lu & Zou's coarse-label constraint) are
values of the key `variant`, resolved after the overrides:

  variant    heads            GLM term (loss.glm_weight)   coarse term (loss.coarse_weight)
  SM         flat softmax     -                            -
  SM-GLM     flat softmax     yes                          -
  CSM        cascade          -                            -
  CSM-GLM    cascade          yes                          -
  SC-CSM     cascade + skip   -                            -
  OURS       cascade + skip   yes (= SC-CSM-GLM)           -
  CC         flat softmax     -                            yes (= SM+CC)
  OURS+CC    cascade + skip   yes                          yes

Any of SM, SM-GLM, CSM, CSM-GLM, SC-CSM, SC-CSM-GLM, OURS may take `+CC`. A weight left
unset (None) takes its default when the variant uses the term: loss.glm_weight 0.8
(the paper's lambda) when the backbone starts from trained weights (model.pretrained or
model.init_from), 0.05 when it trains from scratch (at 0.8 the GLM term collapses
from-scratch features, BENCHMARKS.md);
loss.coarse_weight 1.0 (the paper's b). A weight given for a variant without the term,
or a zero weight for a variant with it, is an error naming both keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from hierjax.errors import ConfigError


# ------------------------------------------------------------------------------ schema


def key(default, doc: str, *, choices=None, low=None, high=None, low_open=False,
        high_open=False, length=None, resumable=False):
    """A config key: its default, one-line meaning and checks.

    `low`/`high` bound numbers (and every element of a tuple), open with `low_open` /
    `high_open`; `length` fixes a tuple's length; `resumable` marks keys that may differ
    when a run resumes (logging, evaluation and checkpoint cadence, profiling, worker
    counts, the number of steps).
    """
    return dataclasses.field(default=default, metadata=dict(
        doc=doc, choices=choices, low=low, high=high, low_open=low_open,
        high_open=high_open, length=length, resumable=resumable))


# The data sets `data.name` can name (hierjax.data.sources builds them).
IN_MEMORY_DATASETS = ("synthetic", "cifar100")
PREPARED_DATASETS = ("cub", "aircraft", "cars", "dogs", "nabirds")
DATASETS = IN_MEMORY_DATASETS + PREPARED_DATASETS + ("image_folder",)
MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "wrn", "vgg16", "vgg19", "alexnet",
          "googlenet", "inception_v3")
TRAIN_CROPS = ("pad_crop", "resize_random", "random_resized")


@dataclasses.dataclass(frozen=True)
class DataSettings:
    name: str = key("synthetic", "data set: synthetic | cifar100 (in memory), a dataset "
                    "prepared by `python -m hierjax.prepare`, or image_folder",
                    choices=DATASETS)
    data_dir: str = key("", "cifar100: the npz copy ('' = ../shared/data/cifar100) or a tfds "
                        "folder holding hierjax_cifar100; prepared sets: the tfds folder; "
                        "image_folder: ROOT of ROOT/<split>/<fine class>/*")
    hierarchy: str = key("", "stored hierarchy of a prepared set ('' = its first); "
                         "image_folder: the path of a hierarchy CSV")
    class_subset: str = key("", "keep only the fine classes of this hierarchy (a shipped "
                            "name, e.g. cifar100/transfer_target, or a CSV path), "
                            "relabelled to it ('' = every class)")
    train_split: str = key("train", "split to train on")
    eval_split: str = key("test", "the test split: reported after training (and evaluated "
                          "during it when there is no validation split)")
    val_fraction: float = key(0.0, "hold out this fraction of every fine class of the "
                              "training split (deterministic, the same for every seed) as "
                              "the validation split: evaluated during training and used to "
                              "choose the best checkpoints (0 = no validation split)",
                              low=0, high=1, high_open=True)
    val_split: str = key("", "the data set's own validation split (e.g. aircraft's 'val'), "
                         "used instead of val_fraction ('' = none)")
    image_size: int = key(32, "training and evaluation crop (px)", low=1)
    eval_resize: int = key(0, "shorter side before the centre crop (and the resize of "
                           "resize_random); 0 = image_size * 8 / 7", low=0)
    train_crop: str = key("pad_crop", "pad_crop (pad 4, random crop, flip: CIFAR) | "
                          "resize_random (resize, random crop, flip) | random_resized "
                          "(Inception crop, flip)", choices=TRAIN_CROPS)
    min_scale: float = key(0.08, "smallest area fraction of random_resized", low=0,
                           low_open=True, high=1)
    use_bbox: bool = key(False, "crop every image to its object box first")
    allow_missing_classes: bool = key(False, "image_folder: warn about classes without "
                                      "images instead of stopping")
    num_workers: int = key(0, "decoding/augmentation processes (0 = threads of the "
                           "training process)", low=0, resumable=True)
    sampler: str = key("shuffle", "shuffle | hierarchical (P groups x Q classes x K images)",
                       choices=("shuffle", "hierarchical"))
    sampler_pqk: tuple[int, ...] = key((4, 4, 2), "(P, Q, K); P * Q * K = batch per process",
                                       low=1, length=3)
    sampler_level: int = key(1, "hierarchy level of the P groups", low=1)
    max_train_examples: int = key(0, "keep that many, class by class (0 = all)", low=0)
    max_eval_examples: int = key(0, "keep that many, class by class (0 = all)", low=0)
    synthetic_num_fine: int = key(20, "synthetic: fine classes", low=2)
    synthetic_num_coarse: int = key(5, "synthetic: coarse classes", low=1)
    synthetic_train_size: int = key(5000, "synthetic: training images", low=1)
    synthetic_test_size: int = key(1000, "synthetic: test images", low=1)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    name: str = key("resnet18", "backbone", choices=MODELS)
    small_input: bool = key(True, "ResNets: CIFAR stem (3x3/1 conv, no max pool)")
    wrn_depth: int = key(28, "WRN depth d = 6n + 4", low=10)
    wrn_width: int = key(10, "WRN widening factor k", low=1)
    dropout: float = key(0.0, "dropout inside WRN blocks (0 for other backbones)", low=0,
                         high=1, high_open=True)
    vgg_batchnorm: bool = key(True, "VGGs: BatchNorm after every conv")
    bilinear: bool = key(False, "B-CNN bilinear pooling of the last feature map")
    bilinear_dim: int = key(0, "1x1-conv reduction before bilinear pooling (0 = none)", low=0)
    dtype: str = key("float32", "compute dtype (parameters stay float32); bfloat16 on GPUs",
                     choices=("float32", "bfloat16"))
    pretrained: str = key("", "torchvision/timm state dict (.safetensors, or .pth with "
                          "torch) of the backbone; '' or 'none' trains from scratch; the "
                          "fine-tuning recipes start at 'REQUIRED'")
    features: str = key("", "layer the heads and the GLM loss read: pool (pooled last "
                        "conv map) | fc7 (AlexNet, VGG: the second fully connected layer, "
                        "4096-d); '' = the network's default (fc7 for AlexNet, pool "
                        "otherwise; hierjax/models/specs.py)", choices=("", "pool", "fc7"))
    aux_logits: bool = key(False, "GoogLeNet, Inception-V3: train with the auxiliary heads "
                           "(fine-class softmax, weight loss.aux_weight); never evaluated")
    init_from: str = key("", "another hierjax run's workdir (or its checkpoints/ folder): "
                         "start from its newest good checkpoint's parameters and batch "
                         "statistics (heads it lacks, or has with another shape, start "
                         "fresh; optimizer fresh) instead of model.pretrained; stage-2 "
                         "recipes start at 'REQUIRED'")


@dataclasses.dataclass(frozen=True)
class LossSettings:
    level_weights: tuple[float, ...] = key((1.0, 1.0, 1.0, 1.0),
                                           "cascaded softmax weight w_l per level, fine "
                                           "first", low=0)
    glm_weight: float | None = key(None, "lambda, the GLM weight (None: the variant's "
                                   "default, see hierjax/settings.py)", low=0)
    glm_k: int = key(5, "GLM: nearest pairs per class pair", low=1)
    glm_margins: tuple[float, ...] = key((1.0, 1.0, 1.0, 1.0),
                                         "GLM margin alpha_l per level, fine first", low=0)
    glm_global: bool = key(True, "GLM on the all-gathered global batch")
    glm_normalize: bool = key(False, "GLM on L2-normalised features (an extension beyond "
                              "the paper: squared distances then lie in 0..4, so margins "
                              "are in that range)")
    coarse_weight: float | None = key(None, "b, the coarse-constraint weight (None: 1.0 "
                                      "for the +CC variants)", low=0)
    aux_weight: float | None = key(None, "weight of each auxiliary head's cross-entropy "
                                   "(None: 0.3, GoogLeNet's, with model.aux_logits)", low=0)
    coarse_reduction: str = key("mean", "reduction of the sigmoid CE over classes",
                                choices=("mean", "sum"))


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    name: str = key("sgd", "sgd (momentum, L2 decay) | adamw (decoupled decay)",
                    choices=("sgd", "adamw"))
    lr: float = key(0.1, "peak learning rate for the global batch", low=0, low_open=True)
    momentum: float = key(0.9, "SGD momentum / AdamW b1", low=0, high=1, high_open=True)
    nesterov: bool = key(True, "Nesterov momentum")
    weight_decay: float = key(5e-4, "on kernels only (not BN scales, not biases)", low=0)
    schedule: str = key("cosine", "cosine (warm-up, cosine to 0) | step (warm-up, x "
                        "decay_factor at decay_epochs)", choices=("cosine", "step"))
    warmup_epochs: float = key(1.0, "linear warm-up (epochs)", low=0)
    decay_epochs: tuple[float, ...] = key((60.0, 120.0, 160.0), "step schedule drops",
                                          low=0)
    decay_factor: float = key(0.2, "step schedule multiplier", low=0, low_open=True)
    head_lr_multiplier: float = key(1.0, "learning rate of the new heads over the "
                                    "backbone's", low=0, low_open=True)
    grad_clip_norm: float = key(0.0, "clip gradients to this global norm (0 = off)", low=0)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    decode: str = key("fine", "how evaluation turns the heads into one prediction per level, "
                      "always a path of the tree (hierjax/decode.py): fine (the fine argmax "
                      "and its ancestors) | marginal (top-down argmax of the summed fine "
                      "probabilities) | joint (best path by the product of every level's "
                      "head; cascaded variants only); it also ranks the best checkpoints",
                      choices=("fine", "marginal", "joint"))


@dataclasses.dataclass(frozen=True)
class ProfileSettings:
    start_step: int = key(10, "first traced step", low=0, resumable=True)
    num_steps: int = key(0, "> 0 writes a jax.profiler trace of that many steps", low=0,
                         resumable=True)


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """Several processes (hierjax/distributed.py): under SLURM with more than one task
    they find each other by themselves; elsewhere give all three of coordinator,
    num_processes and process_id (launch/processes.sh does, for N processes on one
    machine)."""

    initialize: bool = key(False, "jax.distributed.initialize() with the cluster's own "
                           "settings (automatic under SLURM with several tasks)",
                           resumable=True)
    coordinator: str = key("", "HOST:PORT where process 0 serves the coordinator, reachable "
                           "from every process ('' = from the cluster)", resumable=True)
    num_processes: int = key(0, "processes of the job (0 = from the cluster)", low=0,
                             resumable=True)
    process_id: int = key(-1, "this process's index, 0..num_processes - 1 (-1 = from the "
                          "cluster)", low=-1, resumable=True)
    heartbeat_timeout_s: int = key(100, "a process silent this long counts as dead: every "
                                   "other process then stops with an error", low=1,
                                   resumable=True)


@dataclasses.dataclass(frozen=True)
class Variant:
    """Which heads and which loss terms a named variant trains."""

    name: str
    cascade: bool  # one head per level, each fed the finer levels' logits
    skip: bool  # the cascade's coarser heads also see the features
    glm: bool
    coarse: bool


VARIANT_NAMES = ("SM", "SM-GLM", "CSM", "CSM-GLM", "SC-CSM", "OURS", "CC", "OURS+CC")


def parse_variant(name: str) -> Variant:
    """The `Variant` of a name of the module docstring's table (or a `+CC` combination)."""
    base, plus, extra = name.partition("+")
    coarse = bool(plus)
    if base == "CC" and not plus:
        base, coarse = "SM", True
    base = "SC-CSM-GLM" if base == "OURS" else base
    heads = base.removesuffix("-GLM")
    if heads not in ("SM", "CSM", "SC-CSM") or plus and extra != "CC":
        raise ConfigError(
            f"config.variant = {name!r} is not a variant; choose one of "
            f"{', '.join(VARIANT_NAMES)} (any of SM, SM-GLM, CSM, CSM-GLM, SC-CSM, OURS may "
            "take '+CC')")
    return Variant(name=name, cascade=heads != "SM", skip=heads == "SC-CSM",
                   glm=base.endswith("-GLM"), coarse=coarse)


@dataclasses.dataclass(frozen=True)
class Settings:
    """A validated config: every key of `base_config()`, the variant resolved."""

    variant: str = key("OURS", "SM | SM-GLM | CSM | CSM-GLM | SC-CSM | OURS | CC | OURS+CC "
                       "(table in hierjax/settings.py)")
    seed: int = key(0, "seed of initialisation, data order and augmentation", low=0)
    batch_size: int = key(128, "global batch, split over every device of every process",
                          low=1)
    num_epochs: int = key(30, "training length in epochs (unless num_steps > 0)", low=0,
                          resumable=True)
    num_steps: int = key(0, "> 0: training length in steps, overriding num_epochs", low=0,
                         resumable=True)
    log_every_steps: int = key(50, "steps between training-metric rows", low=1,
                               resumable=True)
    eval_every_steps: int = key(0, "steps between evaluations (0 = once per epoch)", low=0,
                                resumable=True)
    checkpoint_every_steps: int = key(1000, "steps between checkpoints", low=1,
                                      resumable=True)
    keep_checkpoints: int = key(2, "latest checkpoints kept", low=1, resumable=True)
    keep_best_checkpoints: int = key(1, "best checkpoints kept (by validation fine top-1)",
                                     low=0, resumable=True)
    async_checkpoints: bool = key(True, "write checkpoints in the background",
                                  resumable=True)
    data: DataSettings = dataclasses.field(default_factory=DataSettings)
    model: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    loss: LossSettings = dataclasses.field(default_factory=LossSettings)
    optimizer: OptimizerSettings = dataclasses.field(default_factory=OptimizerSettings)
    eval: EvalSettings = dataclasses.field(default_factory=EvalSettings)
    profile: ProfileSettings = dataclasses.field(default_factory=ProfileSettings)
    distributed: DistributedSettings = dataclasses.field(default_factory=DistributedSettings)

    @property
    def parsed_variant(self) -> Variant:
        """Which heads and loss terms `variant` trains."""
        return parse_variant(self.variant)

    @property
    def pretrained_backbone(self) -> bool:
        """Whether the backbone starts from trained weights (a pretrained file, or
        another run's with model.init_from)."""
        return bool(self.model.pretrained or self.model.init_from)


# GLM weight defaults (see the module docstring).
GLM_WEIGHT_PRETRAINED = 0.8
GLM_WEIGHT_FROM_SCRATCH = 0.05
COARSE_WEIGHT = 1.0
PRETRAINED_REQUIRED = "REQUIRED"
INIT_FROM_REQUIRED = "REQUIRED"
AUX_WEIGHT = 0.3  # each auxiliary head's loss weight in GoogLeNet's training (Szegedy et al.)


def _section_classes() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Settings)
            if f.default_factory is not dataclasses.MISSING}


def _scalar_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.default_factory is dataclasses.MISSING]


def schema() -> dict[str, dataclasses.Field]:
    """Dotted key -> its field (default, type and checks in the field's metadata)."""
    out = {f.name: f for f in _scalar_fields(Settings)}
    for section, cls in _section_classes().items():
        out.update({f"{section}.{f.name}": f for f in dataclasses.fields(cls)})
    return out


def _types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def base_config() -> ml_collections.ConfigDict:
    """Every key with its default (the offline synthetic run); see `schema()`."""
    config = ml_collections.ConfigDict()
    hints = _types(Settings)
    for f in _scalar_fields(Settings):
        config[f.name] = _config_value(f.default, hints[f.name])
    for section, cls in _section_classes().items():
        sub = ml_collections.ConfigDict()
        hints = _types(cls)
        for f in dataclasses.fields(cls):
            sub[f.name] = _config_value(f.default, hints[f.name])
        config[section] = sub
    return config


def _config_value(default, hint):
    if default is None:  # an optional number: a typed placeholder overridable by flags
        return config_dict.placeholder(_optional_type(hint))
    return default


def _optional_type(hint):
    """`float` for `float | None`; other hints unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


# -------------------------------------------------------------------------- validation


def describe(dotted: str) -> str:
    """'config.KEY: meaning (default ...)' for messages and docs."""
    f = schema()[dotted]
    return f"config.{dotted}: {f.metadata['doc']} (default {f.default!r})"


def nearest_key(dotted: str) -> str | None:
    """The schema key closest to a mistyped one, or None."""
    matches = difflib.get_close_matches(dotted, list(schema()), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_key_error(dotted: str) -> ConfigError:
    guess = nearest_key(dotted)
    hint = f"; did you mean config.{guess}?" if guess else ""
    return ConfigError(f"config.{dotted} is not a config key{hint} Every key and its meaning: "
                       "hierjax/settings.py.")


def _flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for name, value in config.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _check_value(dotted: str, value, hint, meta) -> Any:
    """The value converted to its type and checked; ConfigError naming the key."""
    where = f"config.{dotted}"
    if value is None:
        if _optional_type(hint) is not hint:
            return None
        raise ConfigError(f"{where} is not set; give it a value ({meta['doc']})")
    base = _optional_type(hint)
    origin = typing.get_origin(base)
    if origin is tuple:
        element = typing.get_args(base)[0]
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{where} = {value!r} must be a tuple, e.g. "
                              f"--{where}='(1, 2)'")
        value = tuple(_scalar(where, v, element) for v in value)
        if meta["length"] is not None and len(value) != meta["length"]:
            raise ConfigError(f"{where} = {value} must have {meta['length']} entries "
                              f"({meta['doc']})")
        for v in value:
            _check_range(where, v, meta)
        return value
    value = _scalar(where, value, base)
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{where} = {value!r} is not valid; choose one of "
                          f"{', '.join(map(repr, meta['choices']))}")
    _check_range(where, value, meta)
    return value


def _scalar(where: str, value, kind):
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} must be True or False")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} = {value!r} must be a whole number")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r} must be a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r} must be a string")
        return value
    raise TypeError(f"unsupported schema type {kind} for {where}")


def _check_range(where: str, value, meta) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, high = meta["low"], meta["high"]
    if low is not None and (value < low or meta["low_open"] and value == low):
        raise ConfigError(f"{where} = {value!r} must be {'>' if meta['low_open'] else '>='} "
                          f"{low} ({meta['doc']})")
    if high is not None and (value > high or meta["high_open"] and value == high):
        raise ConfigError(f"{where} = {value!r} must be {'<' if meta['high_open'] else '<='} "
                          f"{high} ({meta['doc']})")


def _build(cls, values: Mapping[str, Any], prefix: str):
    hints = _types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            continue
        dotted = f"{prefix}{f.name}"
        kwargs[f.name] = _check_value(dotted, values[dotted], hints[f.name], f.metadata)
    return kwargs


def resolve(config: Mapping) -> Settings:
    """Validates every key of `config` (after all overrides) into frozen `Settings`.

    Resolves the variant and its loss weights (module docstring) and checks the keys
    that constrain each other. Raises ConfigError naming the key(s) and the fix.
    """
    values = _flatten(config.to_dict() if hasattr(config, "to_dict") else config)
    known = schema()
    for dotted in values:
        if dotted not in known:
            raise unknown_key_error(dotted)
    missing = [k for k in known if k not in values
               and not dataclasses.is_dataclass(known[k].type)]
    defaults = _flatten(base_config().to_dict())
    values = {**{k: defaults[k] for k in missing if k in defaults}, **values}
    sections = {name: cls(**_build(cls, values, f"{name}."))
                for name, cls in _section_classes().items()}
    settings = Settings(**_build(Settings, values, ""), **sections)
    return _resolve_variant(_resolve_model(_resolve_pretrained(_check_together(settings))))


def _resolve_pretrained(settings: Settings) -> Settings:
    """'REQUIRED' (the fine-tuning recipes) is an error; 'none' means ''."""
    pretrained = settings.model.pretrained
    if pretrained == PRETRAINED_REQUIRED:
        raise ConfigError(
            "config.model.pretrained is not set: this config fine-tunes an ImageNet-"
            f"pretrained {settings.model.name}. Give its weights (e.g. "
            f"--config.model.pretrained={settings.model.name}.safetensors, a torchvision/"
            "timm state dict), or --config.model.pretrained=none to train from scratch"
            + ("; with config.model.init_from, give the value the stage-1 run had (the file "
               "is not read: the weights come from that run)" if settings.model.init_from
               else ""))
    if pretrained.lower() == "none":
        return dataclasses.replace(settings,
                                   model=dataclasses.replace(settings.model, pretrained=""))
    return settings


def _resolve_model(settings: Settings) -> Settings:
    """The network's defaults and limits (hierjax/models/specs.py): model.features ''
    becomes the network's layer, loss.aux_weight None becomes 0.3 with model.aux_logits;
    a layer, auxiliary head or image size the network does not have is an error."""
    from hierjax.models import specs  # the networks' facts (imports flax)

    m, loss = settings.model, settings.loss
    if m.init_from == INIT_FROM_REQUIRED:
        raise ConfigError(
            "config.model.init_from is not set: this config is stage 2 of a two-stage "
            "protocol and continues from a stage-1 run. Give that run's workdir "
            "(--config.model.init_from=WORKDIR), trained with the same config at stage=1")
    choices = specs.feature_choices(m.name)
    features = specs.resolve_features(m.name, m.features)
    if features not in choices:
        raise ConfigError(
            f"config.model.features = {m.features!r} is not a layer of config.model.name = "
            f"{m.name!r}; choose one of {', '.join(map(repr, choices))} ('' = "
            f"{choices[0]!r})")
    if m.bilinear and features != "pool":
        raise ConfigError(
            f"config.model.bilinear = True pools the last conv map, which needs "
            f"config.model.features = 'pool'; got {features!r}")
    if m.aux_logits and m.name not in specs.AUX_NETWORKS:
        raise ConfigError(
            f"config.model.aux_logits = True applies to {' and '.join(specs.AUX_NETWORKS)} "
            f"only; set it to False for config.model.name = {m.name!r}")
    smallest = specs.min_image_size(m.name, features, m.aux_logits)
    if settings.data.image_size < smallest:
        aux = m.aux_logits and m.name == "inception_v3"
        raise ConfigError(
            f"config.data.image_size = {settings.data.image_size} is below the {smallest} px "
            f"that config.model.name = {m.name!r} needs (features={features!r}"
            f"{', aux_logits=True' if aux else ''}); use --config.data.image_size="
            f"{smallest} or more" + (" or config.model.aux_logits=False" if aux else ""))
    if m.aux_logits:
        if loss.aux_weight == 0:
            raise ConfigError(
                "config.loss.aux_weight = 0 contradicts config.model.aux_logits = True, which "
                f"trains the auxiliary heads; set a weight > 0 (unset: {AUX_WEIGHT}) or "
                "config.model.aux_logits = False")
        aux_weight = AUX_WEIGHT if loss.aux_weight is None else loss.aux_weight
    elif loss.aux_weight:
        raise ConfigError(
            f"config.loss.aux_weight = {loss.aux_weight} weighs auxiliary heads that "
            "config.model.aux_logits = False leaves out; set config.model.aux_logits = True "
            "(googlenet, inception_v3) or leave config.loss.aux_weight unset")
    else:
        aux_weight = 0.0
    return dataclasses.replace(settings, model=dataclasses.replace(m, features=features),
                               loss=dataclasses.replace(loss, aux_weight=aux_weight))


def _resolve_variant(settings: Settings) -> Settings:
    variant = parse_variant(settings.variant)
    loss = settings.loss
    glm = _weight(variant.name, variant.glm, "loss.glm_weight", loss.glm_weight,
                  GLM_WEIGHT_PRETRAINED if settings.pretrained_backbone
                  else GLM_WEIGHT_FROM_SCRATCH)
    coarse = _weight(variant.name, variant.coarse, "loss.coarse_weight", loss.coarse_weight,
                     COARSE_WEIGHT)
    return dataclasses.replace(
        settings, loss=dataclasses.replace(loss, glm_weight=glm, coarse_weight=coarse))


def _weight(variant: str, used: bool, dotted: str, given: float | None,
            default: float) -> float:
    if used:
        if given == 0:
            raise ConfigError(
                f"config.{dotted} = 0 contradicts config.variant = {variant!r}, which "
                f"trains that term; pick a variant without it, or a weight > 0 (unset: "
                f"{default})")
        return default if given is None else given
    if given:
        raise ConfigError(
            f"config.{dotted} = {given} contradicts config.variant = {variant!r}, which "
            f"does not train that term; pick a variant with it (e.g. "
            f"{'OURS' if 'glm' in dotted else 'CC'}) or leave config.{dotted} unset")
    return 0.0


def check_decode(method: str, variant: str, where: str = "--decode") -> None:
    """ConfigError for the 'joint' decode of a variant with a flat head."""
    if method == "joint" and not parse_variant(variant).cascade:
        raise ConfigError(
            f"{where} = 'joint' scores paths with one head per level, but config.variant = "
            f"{variant!r} has a flat softmax head; use 'fine' or 'marginal', or a cascaded "
            "variant (CSM, SC-CSM, OURS, ...)")


def _check_together(s: Settings) -> Settings:
    """Checks of keys that constrain each other."""
    if s.num_epochs == 0 and s.num_steps == 0:
        raise ConfigError("config.num_epochs and config.num_steps are both 0; set one of them")
    if s.model.dropout and s.model.name != "wrn":
        raise ConfigError(f"config.model.dropout = {s.model.dropout} applies to "
                          f"config.model.name = 'wrn' only; set it to 0.0 for "
                          f"{s.model.name!r}")
    if s.model.name == "wrn" and (s.model.wrn_depth - 4) % 6:
        raise ConfigError(f"config.model.wrn_depth = {s.model.wrn_depth} must be 6n + 4 "
                          "(10, 16, 22, 28, 34, 40, ...)")
    if s.data.eval_resize and s.data.eval_resize < s.data.image_size:
        raise ConfigError(f"config.data.eval_resize = {s.data.eval_resize} is smaller than "
                          f"config.data.image_size = {s.data.image_size}; use >= "
                          f"{s.data.image_size} (0 = image_size * 8 / 7)")
    if s.data.val_fraction and s.data.val_split:
        raise ConfigError(
            f"config.data.val_fraction = {s.data.val_fraction} and config.data.val_split = "
            f"{s.data.val_split!r} both give a validation split; set one of them (the other "
            "to 0 / '')")
    if s.data.val_split and s.data.name in IN_MEMORY_DATASETS:
        raise ConfigError(
            f"config.data.val_split = {s.data.val_split!r}: {s.data.name!r} has no "
            "validation split of its own; hold one out with config.data.val_fraction "
            "(e.g. 0.1) instead")
    if s.data.val_split and s.data.val_split in (s.data.train_split, s.data.eval_split):
        raise ConfigError(
            f"config.data.val_split = {s.data.val_split!r} is also the training or test "
            "split; the validation split must be neither")
    check_decode(s.eval.decode, s.variant, "config.eval.decode")
    parse_variant(s.variant)
    return s


# ---------------------------------------------------------------------- serialisation


def to_dict(settings: Settings) -> dict[str, Any]:
    """Dotted key -> value (tuples as lists), e.g. for config.json."""
    out = {}
    for name, value in dataclasses.asdict(settings).items():
        if isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            out[name] = value
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def to_config(values: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A ConfigDict of base_config() with the dotted `values` (e.g. a saved config.json)."""
    config = base_config()
    known = schema()
    for dotted, value in values.items():
        if dotted not in known:
            raise unknown_key_error(dotted)
        *path, leaf = dotted.split(".")
        node = config
        for part in path:
            node = node[part]
        if isinstance(value, list):
            value = tuple(value)
        with node.ignore_type():
            node[leaf] = value
    return config


def write_json(settings: Settings, path) -> None:
    """The resolved settings as indented JSON, one key per line."""
    import pathlib

    pathlib.Path(path).write_text(json.dumps(to_dict(settings), indent=1) + "\n")


def read_json(path) -> Settings:
    """Settings from a `write_json` file."""
    import pathlib

    return resolve(to_config(json.loads(pathlib.Path(path).read_text())))


def set_keys(config, overrides: Mapping[str, Any]):
    """Sets dotted keys, e.g. {"loss.glm_weight": 0.4, "num_steps": 2}; returns config."""
    for dotted, value in overrides.items():
        *path, leaf = dotted.split(".")
        node = config
        try:
            for part in path:
                node = node[part]
            node[leaf]  # noqa: B018 -- unknown keys are errors, not new keys
        except (KeyError, AttributeError):
            raise unknown_key_error(dotted) from None
        node[leaf] = value
    return config


def defaults() -> dict[str, Any]:
    """Dotted key -> its schema default, in `to_dict` form (tuples as lists)."""
    return {k: list(f.default) if isinstance(f.default, tuple) else f.default
            for k, f in schema().items() if not dataclasses.is_dataclass(f.type)}


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (old, new) of the keys whose values differ (`to_dict` forms)."""
    keys = sorted(set(old) | set(new))
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def resumable(dotted: str) -> bool:
    """Whether a run may resume with another value of this key."""
    f = schema().get(dotted)
    return bool(f is not None and f.metadata.get("resumable"))


__all__ = [
    "ConfigError", "DataSettings", "EvalSettings", "LossSettings", "ModelSettings",
    "OptimizerSettings", "Settings", "Variant", "base_config", "check_decode", "defaults",
    "describe", "diff", "parse_variant", "read_json", "resolve", "resumable", "schema",
    "set_keys", "to_config", "to_dict", "write_json",
]
