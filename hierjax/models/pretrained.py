"""ImageNet-pretrained backbone weights from a local torchvision or timm checkpoint.

`load_pretrained(variables, config.model)` replaces the `backbone` parameters and
BatchNorm statistics of a freshly initialised `Classifier` with those in the file that
`config.model.pretrained` names; the `heads` keep their fresh initialisation.

Files: `.safetensors` (read without torch) or a torch pickle `.pth` / `.pt` / `.bin`
(needs torch). A pickle may wrap its state dict as {"state_dict": ...} or
{"model": ...}; DataParallel's "module." key prefix is dropped.

Key mapping, torch -> Flax under `backbone` (torchvision and timm share these keys):

  ResNet-18/34/50/101 (resnet.py)
    conv1, bn1                      -> stem_conv, stem_bn
    layer{i}.{j}.conv{k}, .bn{k}    -> stage{i}_block{j}/conv{k}, /bn{k}
    layer{i}.{j}.downsample.0, .1   -> stage{i}_block{j}/downsample_conv, /downsample_bn
    fc.*                            ignored: the classifier heads are new layers
  VGG-16/19, with BatchNorm (torchvision vgg*_bn) or without (vgg.py)
    features.{n}                    -> block{i}_conv{j}, block{i}_bn{j}
        n counts the layers of the `features` Sequential: conv (n), BN (n + 1, *_bn
        only), ReLU for every conv, a max pool after every block; so the conv layers
        map in order.
    classifier.*                    ignored (timm's pre_logits.* and head.* too):
        hierjax's VGG averages the conv5 map and has no fully connected layers.

Per layer: conv weight [O, I, H, W] -> kernel [H, W, I, O]; conv bias -> bias; BN
weight -> scale, bias -> bias (params), running_mean -> mean, running_var -> var
(batch_stats); num_batches_tracked is ignored. WRN has no pretrained counterpart.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from absl import logging
from flax import traverse_util

from hierjax.models import BACKBONE_PARAMS, resnet, vgg

CONFIG_KEY = "config.model.pretrained"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")

# Flax leaf name -> torch attribute of the same layer.
_TORCH_ATTR = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_RESNET_STEM = {"stem_conv": "conv1", "stem_bn": "bn1"}
_RESNET_DOWNSAMPLE = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
# Checkpoint layers that hierjax's backbones do not have: the ImageNet classifiers.
_RESNET_IGNORED = ("fc.",)
_VGG_IGNORED = ("classifier.", "pre_logits.", "head.")
_EXAMPLES = 5  # keys quoted per kind of problem in an error

# --------------------------------------------------------------------------- reading


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` or torch `.pth`/`.pt`/`.bin` file, by torch key.

    Raises:
      FileNotFoundError: no such file.
      ImportError: a torch pickle while torch is not installed.
      ValueError: another suffix, or a pickle that is no state dict.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file {str(path)!r} does not exist: fix {CONFIG_KEY}, "
            f"or set it to '' to train from scratch"
        )
    if path.suffix == ".safetensors":
        tensors = safetensors.numpy.load_file(path)
    elif path.suffix in TORCH_SUFFIXES:
        tensors = _read_torch(path)
    else:
        raise ValueError(
            f"{CONFIG_KEY}={str(path)!r}: unknown file type {path.suffix!r}; "
            f"use .safetensors or one of {list(TORCH_SUFFIXES)}"
        )
    # Checkpoints saved from nn.DataParallel / DistributedDataParallel prefix every key.
    return {key.removeprefix("module."): value for key, value in tensors.items()}


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    """A torch pickle's state dict as numpy arrays; floating tensors become float32."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading the torch checkpoint {str(path)!r} ({CONFIG_KEY}) needs torch: "
            f"pip install torch, or convert the file to .safetensors where torch is "
            f"installed (safetensors.torch.save_file(state_dict, 'weights.safetensors'))"
        ) from None
    # weights_only: a pickle can run arbitrary code; tensors and containers cannot.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = _unwrap(checkpoint)
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{str(path)!r} ({CONFIG_KEY}) is no state dict: {key!r} holds a "
                f"{type(value).__name__}, not a tensor"
            )
        # numpy has no bfloat16; the Flax parameters are float32 anyway.
        arrays[key] = (value.float() if value.is_floating_point() else value).numpy()
    return arrays


def _unwrap(checkpoint: Any) -> Mapping:
    """The state dict inside a training checkpoint {"state_dict"|"model": ...}."""
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(wrapper), Mapping):
            return checkpoint[wrapper]
    return checkpoint


# --------------------------------------------------------------------------- mapping


def _resnet_module(path: tuple[str, ...]) -> str:
    """torch module of a ResNet Flax module path, e.g. stage2_block0/downsample_bn."""
    if len(path) == 1:
        return _RESNET_STEM[path[0]]
    block, layer = path
    stage, index = re.fullmatch(r"stage(\d+)_block(\d+)", block).groups()
    return f"layer{stage}.{index}.{_RESNET_DOWNSAMPLE.get(layer, layer)}"


def _vgg_modules(depth: int, batchnorm: bool) -> dict[str, str]:
    """VGG Flax module name -> `features.{n}`, n counting torchvision's layers."""
    names, n = {}, 0
    for i, num_convs in enumerate(vgg.LAYOUTS[depth], start=1):
        if i > 1:
            n += 1  # the max pool closing the previous block
        for j in range(1, num_convs + 1):
            names[f"block{i}_conv{j}"] = f"features.{n}"
            if batchnorm:
                names[f"block{i}_bn{j}"] = f"features.{n + 1}"
            n += 3 if batchnorm else 2  # conv, (BN,) ReLU
    return names


def _architecture(model_config: Any) -> tuple[Callable[[tuple[str, ...]], str], tuple[str, ...]]:
    """(Flax module path -> torch module, ignored torch key prefixes) for the config."""
    name = model_config.name
    if name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        return _resnet_module, _RESNET_IGNORED
    if name in ("vgg16", "vgg19"):
        modules = _vgg_modules(int(name.removeprefix("vgg")), model_config.vgg_batchnorm)
        return (lambda path: modules[path[0]]), _VGG_IGNORED
    raise ValueError(
        f"config.model.name={name!r} has no torchvision/timm pretrained weights to load; "
        f"set {CONFIG_KEY}='' or use a resnet or vgg name"
    )


def _to_flax(value: np.ndarray, leaf: str) -> np.ndarray:
    """A torch-layout array in the Flax layout of `leaf`: OIHW conv weights become HWIO."""
    return value.transpose(2, 3, 1, 0) if leaf == "kernel" and value.ndim == 4 else value


def _torch_shape(flax_shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    """The torch shape that maps onto `flax_shape` (for error messages)."""
    if leaf == "kernel":
        h, w, i, o = flax_shape
        return (o, i, h, w)
    return tuple(flax_shape)


# --------------------------------------------------------------------------- checking


def _guess_config(state_dict: Mapping[str, np.ndarray]) -> str | None:
    """The config.model settings a torchvision/timm ResNet or VGG file fits, if any."""
    keys = set(state_dict)
    if "layer1.0.conv1.weight" in keys:
        blocks = tuple(
            len({k.split(".")[1] for k in keys if k.startswith(f"layer{i}.")}) for i in range(1, 5)
        )
        bottleneck = "layer1.0.conv3.weight" in keys
        for depth, (block_cls, layout) in resnet.LAYOUTS.items():
            if layout == blocks and (block_cls is resnet.BottleneckBlock) == bottleneck:
                return f"config.model.name='resnet{depth}'"
        return None
    convs = [k for k in keys if re.fullmatch(r"features\.\d+\.weight", k)
             and state_dict[k].ndim == 4]
    batchnorm = any(re.fullmatch(r"features\.\d+\.running_mean", k) for k in keys)
    for depth, layout in vgg.LAYOUTS.items():
        if len(convs) == sum(layout):
            return f"config.model.name='vgg{depth}', config.model.vgg_batchnorm={batchnorm}"
    return None


def _settings(model_config: Any) -> str:
    """The config.model settings that decide the expected keys, as in _guess_config."""
    setting = f"config.model.name='{model_config.name}'"
    if model_config.name.startswith("vgg"):
        setting += f", config.model.vgg_batchnorm={model_config.vgg_batchnorm}"
    return setting


def _natural(key: str) -> list:
    """Sort key that puts layer2 before layer10 and features.9 before features.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _listing(what: str, items: list[str]) -> str:
    """`what` with its count and the first few `items`, one a line."""
    lines = [f"\n  {len(items)} {what}:"] + [f"\n    {item}" for item in items[:_EXAMPLES]]
    if len(items) > _EXAMPLES:
        lines.append(f"\n    ... and {len(items) - _EXAMPLES} more")
    return "".join(lines)


def _check(
    state_dict: Mapping[str, np.ndarray],
    plan: Mapping[str, tuple[tuple[str, ...], Any]],
    ignored: tuple[str, ...],
    model_config: Any,
    source: str,
) -> None:
    """ValueError listing missing, unexpected and mis-shaped keys, with what to change."""
    missing = sorted((k for k in plan if k not in state_dict), key=_natural)
    unexpected = sorted(
        (k for k in state_dict if k not in plan and not k.startswith(ignored)
         and not k.endswith(".num_batches_tracked")),
        key=_natural,
    )
    mismatched = []
    for key in sorted(plan, key=_natural):
        path, leaf = plan[key]
        if key in state_dict and _to_flax(state_dict[key], path[-1]).shape != leaf.shape:
            mismatched.append(
                f"{key}: file {tuple(state_dict[key].shape)}, model needs "
                f"{_torch_shape(leaf.shape, path[-1])} (flax {'/'.join(path[1:])} "
                f"{tuple(leaf.shape)})"
            )
    if not (missing or unexpected or mismatched):
        return
    message = f"{source} ({CONFIG_KEY}) does not fit {_settings(model_config)}:"
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("shape mismatches", mismatched)):
        if items:
            message += _listing(what, items)
    if getattr(model_config, "small_input", False) and any(
            m.startswith("conv1.weight:") for m in mismatched):
        message += ("\nThe file's ImageNet stem (7x7/2 conv1) cannot load into the CIFAR "
                    "stem (3x3/1): set config.model.small_input=False.")
    guess = _guess_config(state_dict)
    if guess is not None and guess != _settings(model_config):
        message += (f"\nThe file looks like {guess}: set that, or point {CONFIG_KEY} "
                    f"at a file for this model.")
    raise ValueError(message)


# --------------------------------------------------------------------------- loading


def backbone_from_torch(
    state_dict: Mapping[str, np.ndarray],
    model_config: Any,
    backbone_variables: Mapping[str, Any],
    *,
    source: str = "the state dict",
) -> dict[str, Any]:
    """Backbone variables with every leaf taken from a torchvision/timm state dict.

    Args:
      state_dict: torch key -> array (`read_state_dict`), mapped as the module
        docstring says.
      model_config: config.model; `name` (resnet18/34/50/101, vgg16/19) and
        `vgg_batchnorm` decide the expected keys, `small_input` the stem's shape.
      backbone_variables: {"params": ..., "batch_stats": ...} of the backbone alone
        (no batch_stats for VGG without BN); only shapes and dtypes are read, so
        abstract `jax.ShapeDtypeStruct` leaves work too.
      source: how errors name the state dict, e.g. its file.

    Returns:
      A new {"params", "batch_stats"} tree of the same structure, shapes and dtypes.

    Raises:
      ValueError: an architecture without pretrained weights (WRN), or a state dict
        that does not fit: it lists the missing, unexpected and mis-shaped keys and
        says which config key to change where it can tell.
    """
    torch_module, ignored = _architecture(model_config)
    plan = {}  # torch key -> ((collection, *flax module path, leaf name), Flax leaf)
    for path, leaf in traverse_util.flatten_dict(backbone_variables).items():
        plan[f"{torch_module(path[1:-1])}.{_TORCH_ATTR[path[-1]]}"] = (path, leaf)
    _check(state_dict, plan, ignored, model_config, source)
    return traverse_util.unflatten_dict({
        path: jnp.asarray(_to_flax(state_dict[key], path[-1]), dtype=leaf.dtype)
        for key, (path, leaf) in plan.items()
    })


def load_pretrained(variables: Mapping[str, Any], model_config: Any) -> dict[str, Any]:
    """`variables` of a Classifier with the backbone from `model_config.pretrained`.

    "" leaves `variables` unchanged. Otherwise the `backbone` subtrees of "params" and
    "batch_stats" are replaced by the file's weights (see `backbone_from_torch`); the
    `heads` and anything else keep their values.
    """
    path = model_config.pretrained
    if not path:
        return variables
    state_dict = read_state_dict(path)
    backbone = {collection: tree[BACKBONE_PARAMS] for collection, tree in variables.items()
                if BACKBONE_PARAMS in tree}
    loaded = backbone_from_torch(state_dict, model_config, backbone, source=repr(str(path)))
    num_loaded = len(traverse_util.flatten_dict(loaded))
    logging.info("Loaded %d pretrained backbone tensors from %s (%d tensors in the file).",
                 num_loaded, path, len(state_dict))
    return {
        collection: {**tree, BACKBONE_PARAMS: loaded[collection]} if collection in loaded
        else tree
        for collection, tree in variables.items()
    }
