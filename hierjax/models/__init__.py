"""Model zoo: backbones, bilinear pooling, cascaded heads and the config factory.

`build_model(config.model, classes_per_level)` reads these keys of `config.model`
(an ml_collections ConfigDict or any object with these attributes):

  name           "resnet18" | "resnet34" | "resnet50" | "resnet101" | "wrn" | "vgg16"
                 | "vgg19"
  small_input    bool; ResNets only: CIFAR stem (3x3/1 conv, no max pool)
  wrn_depth      int; "wrn" only: depth d = 6n + 4 (e.g. 28)
  wrn_width      int >= 1; "wrn" only: widening factor k (e.g. 10)
  dropout        float in [0, 1); dropout inside WRN blocks, must be 0 for other names
  vgg_batchnorm  bool; VGGs only: BatchNorm after every conv
  bilinear       bool; B-CNN bilinear pooling of the last feature map instead of
                 global average pooling
  bilinear_dim   int >= 0; 1x1-conv reduction to this many channels before bilinear
                 pooling, 0 for none (features are then C^2-dimensional)
  heads          "flat" (one softmax head over the fine level) | "cascade" (one
                 cascaded head per hierarchy level)
  skip           bool; cascade only: feed the features to the coarser heads too
  dtype          "float32" | "bfloat16": compute dtype (parameters stay float32)

`dropout` is read for every name (it must be 0 except for "wrn"); other keys only for
the names that use them. The parameters of the model have two top-level names:
`BACKBONE_PARAMS` ("backbone", the pretrainable feature extractor) and `HEADS_PARAMS`
("heads": every newly initialised layer, i.e. the classifier heads and the bilinear
reduction), so the optimizer can give the heads their own learning rate.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from hierjax.models.bilinear import BilinearPool
from hierjax.models.classifier import Classifier
from hierjax.models.heads import CascadedHeads
from hierjax.models.resnet import ResNet
from hierjax.models.vgg import VGG
from hierjax.models.wrn import WideResNet, blocks_per_group

__all__ = [
    "BACKBONE_PARAMS",
    "HEADS_PARAMS",
    "MODEL_NAMES",
    "BilinearPool",
    "CascadedHeads",
    "Classifier",
    "ResNet",
    "VGG",
    "WideResNet",
    "build_model",
]

MODEL_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "wrn", "vgg16", "vgg19")
HEAD_TYPES = ("flat", "cascade")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

BACKBONE_PARAMS = "backbone"
HEADS_PARAMS = "heads"

_MISSING = object()


def _get(config: Any, key: str, kind: type | tuple[type, ...], choices: Sequence = ()) -> Any:
    """config.<key>, checked to be of `kind` (bool is not an int here) and in `choices`."""
    value = getattr(config, key, _MISSING)
    where = f"config.model.{key}"
    if value is _MISSING:
        raise ValueError(f"{where} is missing")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"{where} must be {names}; got {value!r}")
    if choices and value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}; got {value!r}")
    return value


def _backbone(
    config: Any, name: str, *, pool: bool, dtype: Any, bn_axis_name: str | None
) -> nn.Module:
    """The backbone module that config.model.name selects."""
    dropout = _get(config, "dropout", (int, float))
    if name != "wrn" and dropout != 0:
        raise ValueError(
            f"config.model.dropout applies to name='wrn' only; set it to 0.0 for {name!r}"
        )
    if name.startswith("resnet"):
        return ResNet(
            depth=int(name.removeprefix("resnet")),
            small_input=_get(config, "small_input", bool),
            pool=pool,
            dtype=dtype,
            bn_axis_name=bn_axis_name,
        )
    if name.startswith("vgg"):
        return VGG(
            depth=int(name.removeprefix("vgg")),
            batchnorm=_get(config, "vgg_batchnorm", bool),
            pool=pool,
            dtype=dtype,
            bn_axis_name=bn_axis_name,
        )
    depth = _get(config, "wrn_depth", int)
    try:
        blocks_per_group(depth)
    except ValueError as e:
        raise ValueError(f"config.model.wrn_depth: {e}") from None
    width = _get(config, "wrn_width", int)
    if width < 1:
        raise ValueError(f"config.model.wrn_width must be an int >= 1; got {width}")
    if not 0 <= dropout < 1:
        raise ValueError(f"config.model.dropout must be in [0, 1); got {dropout}")
    return WideResNet(
        depth=depth,
        width=width,
        dropout=float(dropout),
        pool=pool,
        dtype=dtype,
        bn_axis_name=bn_axis_name,
    )


def build_model(
    model_config: Any, classes_per_level: Sequence[int], *, bn_axis_name: str | None = None
) -> Classifier:
    """The `Classifier` that `model_config` (config.model, keys above) describes.

    Args:
      model_config: the model section of the experiment config.
      classes_per_level: number of classes at each hierarchy level, fine first. With
        heads="flat" only the first entry is used.
      bn_axis_name: pmap axis name for synchronised BatchNorm (e.g. "batch"), or None.

    Raises:
      ValueError naming the offending `config.model.<key>` and its valid values.
    """
    classes = tuple(classes_per_level)
    if not classes or not all(isinstance(c, numbers.Integral) and c >= 1 for c in classes):
        raise ValueError(
            f"classes_per_level must be a non-empty sequence of ints >= 1; "
            f"got {classes_per_level!r}"
        )
    name = _get(model_config, "name", str, MODEL_NAMES)
    dtype = DTYPES[_get(model_config, "dtype", str, tuple(DTYPES))]
    heads = _get(model_config, "heads", str, HEAD_TYPES)
    skip = _get(model_config, "skip", bool)
    bilinear_dim = None
    if _get(model_config, "bilinear", bool):
        bilinear_dim = _get(model_config, "bilinear_dim", int)
        if bilinear_dim < 0:
            raise ValueError(
                f"config.model.bilinear_dim must be an int >= 0 (0: no reduction); "
                f"got {bilinear_dim}"
            )
    backbone = _backbone(
        model_config, name, pool=bilinear_dim is None, dtype=dtype, bn_axis_name=bn_axis_name
    )
    return Classifier(
        backbone=backbone,
        classes_per_level=tuple(int(c) for c in classes),
        cascade=heads == "cascade",
        skip=skip,
        bilinear_dim=bilinear_dim,
        dtype=dtype,
    )
