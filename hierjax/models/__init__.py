"""Model zoo: backbones, bilinear pooling, cascaded heads and the factory.

`build_model(settings.model, classes_per_level, cascade=, skip=)` builds the `Classifier`
that `hierjax.settings.ModelSettings` (validated keys of `config.model`) and the variant
(`cascade`: one head per hierarchy level; `skip`: the coarser heads also see the
features) describe. The parameters have two top-level names: `BACKBONE_PARAMS`
("backbone", the pretrainable feature extractor) and `HEADS_PARAMS` ("heads": every newly
initialised layer, i.e. the classifier heads, the auxiliary heads' classifiers and the
bilinear reduction), so the optimizer can give the heads their own learning rate.

Backbones (`config.model.name`): resnet18/34/50/101, wrn, vgg16/19, alexnet, googlenet,
inception_v3; which layer feeds the heads (`config.model.features`), the auxiliary
heads and the smallest inputs are in `hierjax.models.specs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from hierjax.models import specs
from hierjax.models.alexnet import AlexNet
from hierjax.models.bilinear import BilinearPool
from hierjax.models.classifier import Classifier
from hierjax.models.googlenet import GoogLeNet
from hierjax.models.heads import CascadedHeads
from hierjax.models.inception_v3 import InceptionV3
from hierjax.models.resnet import ResNet
from hierjax.models.vgg import VGG
from hierjax.models.wrn import WideResNet

__all__ = [
    "BACKBONE_PARAMS",
    "HEADS_PARAMS",
    "AlexNet",
    "BilinearPool",
    "CascadedHeads",
    "Classifier",
    "GoogLeNet",
    "InceptionV3",
    "ResNet",
    "VGG",
    "WideResNet",
    "build_model",
]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BACKBONE_PARAMS = "backbone"
HEADS_PARAMS = "heads"


def _backbone(model, *, pool: bool, dtype, bn_axis_name: str | None) -> nn.Module:
    """The backbone module that `model.name` selects ('' features: the network's
    default, `specs.resolve_features`)."""
    common = dict(dtype=dtype, bn_axis_name=bn_axis_name)
    features = specs.resolve_features(model.name, model.features)
    inception = dict(aux_logits=model.aux_logits, pool=pool,
                     transform_input=specs.uses_transform_input(model.name, model.pretrained))
    if model.name.startswith("resnet"):
        return ResNet(int(model.name.removeprefix("resnet")), small_input=model.small_input,
                      pool=pool, **common)
    if model.name.startswith("vgg"):
        return VGG(int(model.name.removeprefix("vgg")), batchnorm=model.vgg_batchnorm,
                   pool=pool, features=features, **common)
    if model.name == "alexnet":
        return AlexNet(features=features, pool=pool, **common)
    if model.name == "googlenet":
        return GoogLeNet(**inception, **common)
    if model.name == "inception_v3":
        return InceptionV3(**inception, **common)
    if model.name == "wrn":
        return WideResNet(depth=model.wrn_depth, width=model.wrn_width,
                          dropout=model.dropout, pool=pool, **common)
    raise ValueError(f"config.model.name = {model.name!r} has no backbone")


def build_model(model, classes_per_level: Sequence[int], *, cascade: bool = True,
                skip: bool = False, bn_axis_name: str | None = None) -> Classifier:
    """The `Classifier` of `model` (ModelSettings) over `classes_per_level` (fine first;
    a flat model, cascade=False, uses the first entry only). `bn_axis_name` is the pmap
    axis of synchronised BatchNorm (e.g. "batch"), or None."""
    classes = tuple(int(c) for c in classes_per_level)
    if not classes or min(classes) < 1:
        raise ValueError(f"classes_per_level must be a non-empty sequence of ints >= 1; "
                         f"got {classes_per_level!r}")
    dtype = DTYPES[model.dtype]
    bilinear_dim = model.bilinear_dim if model.bilinear else None
    backbone = _backbone(model, pool=bilinear_dim is None, dtype=dtype,
                         bn_axis_name=bn_axis_name)
    return Classifier(backbone=backbone, classes_per_level=classes, cascade=cascade,
                      skip=skip, bilinear_dim=bilinear_dim, dtype=dtype)
