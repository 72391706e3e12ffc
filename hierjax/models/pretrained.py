"""ImageNet-pretrained backbone weights from a local torchvision or timm checkpoint.

`load_pretrained(variables, config.model)` replaces the `backbone` parameters and
BatchNorm statistics of a freshly initialised `Classifier` with those in the file that
`config.model.pretrained` names; the `heads` keep their fresh initialisation.

Files: `.safetensors` (read without torch) or a torch pickle `.pth` / `.pt` / `.bin`
(needs torch). A pickle may wrap its state dict as {"state_dict": ...} or
{"model": ...}; DataParallel's "module." key prefix is dropped.

Key mapping, torch -> Flax under `backbone` (torchvision's keys; timm's where it has
the model under other names):

  ResNet-18/34/50/101 (resnet.py), torchvision and timm
    conv1, bn1                      -> stem_conv, stem_bn
    layer{i}.{j}.conv{k}, .bn{k}    -> stage{i}_block{j}/conv{k}, /bn{k}
    layer{i}.{j}.downsample.0, .1   -> stage{i}_block{j}/downsample_conv, /downsample_bn
    fc.*                            ignored: the classifier heads are new layers
  VGG-16/19, with BatchNorm (torchvision vgg*_bn) or without (vgg.py)
    features.{n}                    -> block{i}_conv{j}, block{i}_bn{j}
        n counts the layers of the `features` Sequential: conv (n), BN (n + 1, *_bn
        only), ReLU for every conv, a max pool after every block; so the conv layers
        map in order.
    classifier.0, classifier.3      -> fc6, fc7 (features="fc7" only); timm stores
        them as the convs pre_logits.fc1 (7x7) and pre_logits.fc2 (1x1), accepted too
    classifier.6, timm's head.*     ignored (fc8); with features="pool" (the conv5
        average, no fully connected layers) all of classifier.* and pre_logits.* too
  AlexNet (alexnet.py), torchvision
    features.0, .3, .6, .8, .10     -> conv1 .. conv5
    classifier.1, classifier.4      -> fc6, fc7 (features="fc7" only)
    classifier.6                    ignored (fc8); all of classifier.* with "pool"
  GoogLeNet (googlenet.py), torchvision: module paths with "." -> "/" and branch{k}.{j}
  -> branch{k}_{j}
    conv1.conv, conv1.bn, ...       -> conv1/conv, conv1/bn, ... (conv2, conv3 alike)
    inception4a.branch2.1.bn        -> inception4a/branch2_1/bn (every block alike)
    aux1.conv.conv, aux1.fc1, ...   -> aux1/conv/conv, aux1/fc1, ... (aux2 alike): with
        aux_logits, which then needs them in the file; ignored without
    fc.*, aux1.fc2.*, aux2.fc2.*    ignored: replaced by new heads
  Inception-V3 (inception_v3.py), torchvision and timm's inception_v3.tv_in1k: module
  paths with "." -> "/"
    Conv2d_1a_3x3.conv, Mixed_6e.branch7x7dbl_3.bn, ... -> Conv2d_1a_3x3/conv, ...
    AuxLogits.conv0, AuxLogits.conv1 -> AuxLogits/conv0, /conv1 (aux_logits only, as
        for GoogLeNet)
    fc.*, AuxLogits.fc.*            ignored: replaced by new heads

Per layer: conv weight [O, I, H, W] -> kernel [H, W, I, O]; Linear weight [O, I] ->
Dense kernel [I, O]; timm's conv-shaped fc6/fc7 weight [O, C, h, w] is flattened to
[O, C * h * w] first, which is torch's (C, H, W) flatten order: the Flax models flatten
their maps in that order too, so no permutation is needed. Conv/Linear bias -> bias;
BN weight -> scale, bias -> bias (params), running_mean -> mean, running_var -> var
(batch_stats); num_batches_tracked is ignored. WRN has no pretrained counterpart.

config.model.features ("pool" | "fc7") and config.model.aux_logits (bool) are read
where they apply; '' or a config without them reads as the network's default
(`hierjax.models.specs`: fc7 for AlexNet, pool otherwise) and False.

Torchvision's GoogLeNet and Inception-V3 weights expect inputs normalised to
(x - 0.5) / 0.5: build those backbones with transform_input=True when the pipeline
normalises with ImageNet's mean and std (`build_model` does whenever
config.model.pretrained is set: `specs.uses_transform_input`). Torchvision's GoogLeNet
file carries aux heads that were never trained (its own model drops them).
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

from hierjax.models import BACKBONE_PARAMS, resnet, specs, vgg
from hierjax.errors import PretrainedError, PretrainedNotFound

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
_ALEXNET = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
            "conv4": "features.8", "conv5": "features.10",
            "fc6": "classifier.1", "fc7": "classifier.4"}
_VGG_FC = {"fc6": "classifier.0", "fc7": "classifier.3"}
# timm's names for torchvision modules it renamed (VGG's fc6/fc7 became a ConvMlp).
_TIMM_ALIASES = {"classifier.0": "pre_logits.fc1", "classifier.3": "pre_logits.fc2"}
# The auxiliary heads' torch key prefixes, per model name.
_AUX = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
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
        raise PretrainedNotFound(
            f"pretrained weights file {str(path)!r} does not exist: fix {CONFIG_KEY}, "
            f"or set it to '' to train from scratch"
        )
    if path.suffix == ".safetensors":
        tensors = safetensors.numpy.load_file(path)
    elif path.suffix in TORCH_SUFFIXES:
        tensors = _read_torch(path)
    else:
        raise PretrainedError(
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
            raise PretrainedError(
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


def _googlenet_module(path: tuple[str, ...]) -> str:
    """torch module of a GoogLeNet Flax module path, e.g. inception3a/branch2_1/bn."""
    return ".".join(re.sub(r"^(branch\d)_(\d)$", r"\1.\2", part) for part in path)


def _features(model_config: Any) -> str:
    """config.model.features; the network's default when '' or absent."""
    return specs.resolve_features(model_config.name, getattr(model_config, "features", ""))


def _aux_logits(model_config: Any) -> bool:
    """config.model.aux_logits; False when absent."""
    return getattr(model_config, "aux_logits", False)


def _architecture(model_config: Any) -> tuple[Callable[[tuple[str, ...]], str], tuple[str, ...]]:
    """(Flax module path -> torch module, ignored torch key prefixes) for the config.

    Ignored are the checkpoint layers that the backbone does not have: the ImageNet
    classifiers, which new heads replace, and the fully connected layers and auxiliary
    heads that the config leaves out.
    """
    name = model_config.name
    fc7 = _features(model_config) == "fc7"
    if name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        return _resnet_module, ("fc.",)
    if name in ("vgg16", "vgg19"):
        modules = _vgg_modules(int(name.removeprefix("vgg")), model_config.vgg_batchnorm)
        modules |= _VGG_FC
        ignored = ("classifier.6.", "head.") if fc7 else ("classifier.", "pre_logits.", "head.")
        return (lambda path: modules[path[0]]), ignored
    if name == "alexnet":
        return (lambda path: _ALEXNET[path[0]]), ("classifier.6.",) if fc7 else ("classifier.",)
    if name in _AUX:
        aux = () if _aux_logits(model_config) else _AUX[name]
        if name == "googlenet":
            return _googlenet_module, ("fc.", "aux1.fc2.", "aux2.fc2.", *aux)
        return ".".join, ("fc.", "AuxLogits.fc.", *aux)
    raise PretrainedError(
        f"config.model.name={name!r} has no torchvision/timm pretrained weights to load; "
        f"set {CONFIG_KEY}='' or use a resnet, vgg, alexnet, googlenet or inception_v3 name"
    )


def _to_flax(value: np.ndarray, leaf: str, ndim: int) -> np.ndarray:
    """A torch-layout array in the Flax layout of an `ndim`-d `leaf`.

    Conv weights [O, I, H, W] become HWIO kernels; Linear weights [O, I] and timm's
    conv-shaped fc weights [O, C, h, w] become Dense kernels [I, O] (C * h * w inputs in
    torch's flatten order, which the Flax models use too).
    """
    if leaf != "kernel" or value.ndim < 2:
        return value
    if ndim == 4 and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if ndim == 2:
        return value.reshape(value.shape[0], -1).T
    return value


def _torch_shape(flax_shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    """The torch shape that maps onto `flax_shape` (for error messages)."""
    if leaf == "kernel" and len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if leaf == "kernel" and len(flax_shape) == 2:
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)


# --------------------------------------------------------------------------- checking


def _guess_config(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """The config.model settings a torchvision/timm file fits, if it is one we know.

    `features` and `aux_logits` appear only where the file rules a value out: "pool"
    when it has no fc6/fc7, False when it has no aux heads; otherwise either fits.
    """
    keys = set(state_dict)
    if "layer1.0.conv1.weight" in keys:
        blocks = tuple(
            len({k.split(".")[1] for k in keys if k.startswith(f"layer{i}.")}) for i in range(1, 5)
        )
        bottleneck = "layer1.0.conv3.weight" in keys
        for depth, (block_cls, layout) in resnet.LAYOUTS.items():
            if layout == blocks and (block_cls is resnet.BottleneckBlock) == bottleneck:
                return {"name": f"resnet{depth}"}
        return None
    if "inception3a.branch1.conv.weight" in keys:
        has_aux = {"aux1.fc1.weight", "aux2.fc1.weight"} <= keys
        return {"name": "googlenet"} | ({} if has_aux else {"aux_logits": False})
    if "Mixed_5b.branch1x1.conv.weight" in keys:
        has_aux = "AuxLogits.conv1.conv.weight" in keys
        return {"name": "inception_v3"} | ({} if has_aux else {"aux_logits": False})
    convs = [k for k in keys if re.fullmatch(r"features\.\d+\.weight", k)
             and state_dict[k].ndim == 4]
    if len(convs) == 5 and state_dict.get("features.0.weight", np.empty(0)).shape[-2:] == (11, 11):
        has_fc = "classifier.4.weight" in keys
        return {"name": "alexnet"} | ({} if has_fc else {"features": "pool"})
    batchnorm = any(re.fullmatch(r"features\.\d+\.running_mean", k) for k in keys)
    has_fc = bool({"classifier.3.weight", "pre_logits.fc2.weight"} & keys)
    for depth, layout in vgg.LAYOUTS.items():
        if len(convs) == sum(layout):
            return ({"name": f"vgg{depth}", "vgg_batchnorm": batchnorm}
                    | ({} if has_fc else {"features": "pool"}))
    return None


def _settings(model_config: Any) -> dict[str, Any]:
    """The config.model settings that decide the expected keys, as in _guess_config."""
    name = model_config.name
    settings = {"name": name}
    if name.startswith("vgg"):
        settings["vgg_batchnorm"] = model_config.vgg_batchnorm
    if name.startswith("vgg") or name == "alexnet":
        settings["features"] = _features(model_config)
    if name in _AUX:
        settings["aux_logits"] = _aux_logits(model_config)
    return settings


def _format(settings: Mapping[str, Any]) -> str:
    """{"name": "vgg16", ...} -> "config.model.name='vgg16', ..."."""
    return ", ".join(f"config.model.{key}={value!r}" for key, value in settings.items())


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
        if key not in state_dict:
            continue
        if _to_flax(state_dict[key], path[-1], leaf.ndim).shape != leaf.shape:
            mismatched.append(
                f"{key}: file {tuple(state_dict[key].shape)}, model needs "
                f"{_torch_shape(leaf.shape, path[-1])} (flax {'/'.join(path[1:])} "
                f"{tuple(leaf.shape)})"
            )
    if not (missing or unexpected or mismatched):
        return
    settings = _settings(model_config)
    message = f"{source} ({CONFIG_KEY}) does not fit {_format(settings)}:"
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("shape mismatches", mismatched)):
        if items:
            message += _listing(what, items)
    if getattr(model_config, "small_input", False) and any(
            m.startswith("conv1.weight:") for m in mismatched):
        message += ("\nThe file's ImageNet stem (7x7/2 conv1) cannot load into the CIFAR "
                    "stem (3x3/1): set config.model.small_input=False.")
    aux = _AUX.get(settings["name"], ())
    missing_aux = bool(aux) and any(k.startswith(aux) for k in missing)
    if missing_aux:
        message += (f"\nThe file has no weights for the auxiliary heads "
                    f"({', '.join(p + '*' for p in aux)}): set config.model.aux_logits=False.")
    guess = _guess_config(state_dict)
    if guess is not None:
        differing = {k for k, v in guess.items() if settings.get(k) != v}
        if missing_aux:
            differing.discard("aux_logits")  # said above
        if differing:
            message += (f"\nThe file looks like {_format(guess)}: set that, or point "
                        f"{CONFIG_KEY} at a file for this model.")
    raise PretrainedError(message)


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
      model_config: config.model; `name` (resnet18/34/50/101, vgg16/19, alexnet,
        googlenet, inception_v3), `vgg_batchnorm`, `features` (VGG, AlexNet) and
        `aux_logits` (GoogLeNet, Inception-V3) decide the expected and the ignored
        keys, `small_input` the ResNet stem's shape.
      backbone_variables: {"params": ..., "batch_stats": ...} of the backbone alone
        (no batch_stats for AlexNet or VGG without BN); only shapes and dtypes are read,
        so abstract `jax.ShapeDtypeStruct` leaves work too. A backbone with aux heads
        must have them here: build the variables with `init`, which creates them even
        in eval mode.
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
        module, attr = torch_module(path[1:-1]), _TORCH_ATTR[path[-1]]
        key = f"{module}.{attr}"
        if key not in state_dict and module in _TIMM_ALIASES:
            timm_key = f"{_TIMM_ALIASES[module]}.{attr}"
            key = timm_key if timm_key in state_dict else key
        plan[key] = (path, leaf)
    _check(state_dict, plan, ignored, model_config, source)
    return traverse_util.unflatten_dict({
        path: jnp.asarray(_to_flax(state_dict[key], path[-1], leaf.ndim), dtype=leaf.dtype)
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
