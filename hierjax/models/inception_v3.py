"""Inception-V3 (Szegedy et al. 2016) as torchvision builds it, as a feature extractor,
with its auxiliary head optional.

Layout (torchvision's; every conv is a `BasicConv2d`: conv without bias, BatchNorm
with epsilon 0.001, ReLU; convs and max pools are unpadded unless said):

  Conv2d_1a_3x3 3x3/2 (32) -> Conv2d_2a_3x3 3x3 (32) -> Conv2d_2b_3x3 3x3 pad 1 (64)
  -> max pool 3x3/2 -> Conv2d_3b_1x1 (80) -> Conv2d_4a_3x3 3x3 (192) -> max pool 3x3/2
  -> Mixed_5b, 5c, 5d (InceptionA: 256, 288, 288 channels) -> Mixed_6a (InceptionB,
  stride 2: 768) -> Mixed_6b..6e (InceptionC: 768) [AuxLogits] -> Mixed_7a
  (InceptionD, stride 2: 1280) -> Mixed_7b, 7c (InceptionE: 2048) -> global average
  -> dropout 0.5 -> (fc)

At 299 px the maps are 35x35 (Mixed_5*), 17x17 (Mixed_6*) and 8x8 (Mixed_7*). The
branches' 3x3/1 average pools count the zero padding (torch's count_include_pad). The
auxiliary head (`InceptionAux`): 5x5/3 average pool, Conv 1x1 (128), Conv 5x5 (768),
global average, (fc). The final fc and AuxLogits.fc are left out: new classifier heads
replace them.

Parameter tree: torchvision's state-dict names with "." -> "/", e.g. Conv2d_1a_3x3/conv,
Conv2d_1a_3x3/bn, Mixed_6e/branch7x7dbl_3/conv, AuxLogits/conv1/bn (aux_logits only).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from hierjax.models.googlenet import BasicConv2d
from hierjax.models.layers import (Backbone, Dtype, ModuleDef, global_avg_pool,
                                   renormalise_for_inception)

MIN_SIZE = 75  # smallest input with a non-empty Mixed_7c map (1x1)
MIN_AUX_SIZE = 299  # smallest input whose 17x17 Mixed_6e map fits the aux head's convs


def _avg_pool_3x3(x_BxHxWxC: jax.Array) -> jax.Array:
    # Zero padding counted in the mean, as torch's F.avg_pool2d does by default.
    return nn.avg_pool(x_BxHxWxC, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=True)


def _max_pool_3x3_2(x_BxHxWxC: jax.Array) -> jax.Array:
    return nn.max_pool(x_BxHxWxC, (3, 3), strides=(2, 2))


class _Block(nn.Module):
    """Base of the Mixed blocks: `conv(features, kernel, ..., name=)` is a BasicConv2d."""

    norm: ModuleDef
    dtype: Dtype

    def conv(self, *args, **kwargs) -> BasicConv2d:
        return BasicConv2d(*args, norm=self.norm, dtype=self.dtype, **kwargs)


class InceptionA(_Block):
    """Mixed_5b/c/d, 35x35: 1x1 (64) | 1x1, 5x5 (64) | 1x1, 3x3, 3x3 (96) | pool, 1x1."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv(64, 1, name="branch1x1")(x)
        b5 = self.conv(48, 1, name="branch5x5_1")(x)
        b5 = self.conv(64, 5, padding=2, name="branch5x5_2")(b5)
        b3 = self.conv(64, 1, name="branch3x3dbl_1")(x)
        b3 = self.conv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = self.conv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = self.conv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """Mixed_6a, 35x35 -> 17x17: 3x3/2 (384) | 1x1, 3x3, 3x3/2 (96) | max pool 3x3/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv(384, 3, 2, name="branch3x3")(x)
        bd = self.conv(64, 1, name="branch3x3dbl_1")(x)
        bd = self.conv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = self.conv(96, 3, 2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_2(x)], axis=-1)


class InceptionC(_Block):
    """Mixed_6b..e, 17x17, factorised 7x7s (1x7 and 7x1) of `channels_7x7` channels:
    1x1 (192) | 1x1, 1x7, 7x1 (192) | 1x1, 7x1, 1x7, 7x1, 1x7 (192) | pool, 1x1 (192)."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        b1 = self.conv(192, 1, name="branch1x1")(x)
        b7 = self.conv(c7, 1, name="branch7x7_1")(x)
        b7 = self.conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = self.conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = self.conv(c7, 1, name="branch7x7dbl_1")(x)
        bd = self.conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = self.conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = self.conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = self.conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = self.conv(192, 1, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """Mixed_7a, 17x17 -> 8x8: 1x1, 3x3/2 (320) | 1x1, 1x7, 7x1, 3x3/2 (192) | max pool."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv(192, 1, name="branch3x3_1")(x)
        b3 = self.conv(320, 3, 2, name="branch3x3_2")(b3)
        b7 = self.conv(192, 1, name="branch7x7x3_1")(x)
        b7 = self.conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = self.conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = self.conv(192, 3, 2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_2(x)], axis=-1)


class InceptionE(_Block):
    """Mixed_7b/c, 8x8, 2048 channels: 1x1 (320) | 1x1, then 1x3 and 3x1 side by side
    (2 x 384) | 1x1, 3x3, then 1x3 and 3x1 (2 x 384) | pool, 1x1 (192)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv(320, 1, name="branch1x1")(x)
        b3 = self.conv(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            self.conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
            self.conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
        ], axis=-1)
        bd = self.conv(448, 1, name="branch3x3dbl_1")(x)
        bd = self.conv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            self.conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
            self.conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
        ], axis=-1)
        bp = self.conv(192, 1, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(_Block):
    """The auxiliary head without its fc: Mixed_6e map [B, 17, 17, 768] -> f32 [B, 768].

    5x5/3 average pool (-> 5x5), `conv0` 1x1 (128), `conv1` 5x5 (768, -> 1x1), global
    average; a new head on the result replaces torchvision's AuxLogits.fc.
    """

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        if min(x_BxHxWxC.shape[1:3]) < 17:
            raise ValueError(
                f"the Inception-V3 auxiliary head needs a Mixed_6e map of at least 17x17 "
                f"(inputs of at least {MIN_AUX_SIZE} px); got {x_BxHxWxC.shape[1:3]}: use "
                f"larger images or aux_logits=False"
            )
        x = nn.avg_pool(x_BxHxWxC, (5, 5), strides=(3, 3))
        x = self.conv(128, 1, name="conv0")(x)
        x = self.conv(768, 5, name="conv1")(x)
        return global_avg_pool(x)


class InceptionV3(Backbone):
    """Inception-V3 backbone: images [B, H, W, 3] -> features f32 [B, 2048] (or a map).

    With aux_logits, in training (and in `init`, so that the head's variables exist
    whatever mode initialises them) the call returns `(features, (aux,))`, aux f32
    [B, 768] being the auxiliary head's pooled conv1 output (`InceptionAux`), on which a
    new head replaces torchvision's AuxLogits.fc. Otherwise (evaluation) it returns the
    features alone.

    Attributes:
      aux_logits: build the auxiliary head (needs inputs of at least 299 px).
      transform_input: re-normalise ImageNet-normalised inputs as the pretrained
        weights expect (`layers.renormalise_for_inception`); True for
        torchvision's pretrained weights and timm's inception_v3.tv_in1k.
      pool: True returns the global average after dropout [B, 2048]; False the Mixed_7c
        map [B, H', W', 2048] in `dtype` (for bilinear pooling).
      dropout: rate of the dropout on the pooled features in training (torchvision:
        0.5).
      dtype, bn_axis_name, bn_momentum: see `Backbone`; bn_epsilon defaults to
        torchvision's 0.001 here.

    Inputs of 75 px and up work; 299 px is the size the network was designed for.
    """

    aux_logits: bool = False
    transform_input: bool = False
    pool: bool = True
    dropout: float = 0.5
    _: dataclasses.KW_ONLY
    bn_epsilon: float = 1e-3

    @nn.compact
    def __call__(
        self, x_BxHxWx3: jax.Array, *, train: bool
    ) -> jax.Array | tuple[jax.Array, tuple[jax.Array]]:
        if min(x_BxHxWx3.shape[1:3]) < MIN_SIZE:
            raise ValueError(
                f"Inception-V3 needs inputs of at least {MIN_SIZE}x{MIN_SIZE} px; got "
                f"{x_BxHxWx3.shape[1:3]}"
            )
        norm = self.norm(train)
        conv = functools.partial(BasicConv2d, norm=norm, dtype=self.dtype)
        block = dict(norm=norm, dtype=self.dtype)
        x = renormalise_for_inception(x_BxHxWx3) if self.transform_input else x_BxHxWx3
        x = conv(32, 3, 2, name="Conv2d_1a_3x3")(x)
        x = conv(32, 3, name="Conv2d_2a_3x3")(x)
        x = _max_pool_3x3_2(conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x))
        x = conv(80, 1, name="Conv2d_3b_1x1")(x)
        x = _max_pool_3x3_2(conv(192, 3, name="Conv2d_4a_3x3")(x))
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(**block, pool_features=pool_features, name=name)(x)
        x = InceptionB(**block, name="Mixed_6a")(x)
        for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                               ("Mixed_6e", 192)):
            x = InceptionC(**block, channels_7x7=channels, name=name)(x)
        aux = ()
        # Built at init even in eval mode, so that a model initialised with train=False
        # can train with the head.
        with_aux = self.aux_logits and (train or self.is_initializing())
        if with_aux:
            aux = (InceptionAux(**block, name="AuxLogits")(x),)
        x = InceptionD(**block, name="Mixed_7a")(x)
        x = InceptionE(**block, name="Mixed_7b")(x)
        x = InceptionE(**block, name="Mixed_7c")(x)
        if self.pool:
            x = nn.Dropout(self.dropout, deterministic=not train)(global_avg_pool(x))
        return (x, aux) if with_aux else x
