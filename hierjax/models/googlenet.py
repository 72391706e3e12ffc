"""GoogLeNet (Inception v1, Szegedy et al. 2015) as torchvision builds it, as a
feature extractor, with its two auxiliary heads optional.

Layout (torchvision's; every conv is a `BasicConv2d`: conv without bias, BatchNorm
with epsilon 0.001, ReLU; every max pool rounds its output size up, torch's ceil_mode):

  conv1 7x7/2 (64) -> max pool 3x3/2 -> conv2 1x1 (64) -> conv3 3x3 (192) -> max pool
  -> inception3a, 3b -> max pool -> inception4a [aux1] 4b 4c 4d [aux2] 4e -> max pool
  2x2/2 -> inception5a, 5b (1024 channels) -> global average -> dropout 0.2 -> (fc)

An inception block concatenates four branches: 1x1; 1x1 then 3x3; 1x1 then 3x3 again
(the paper's 5x5: torchvision's known slip, kept because its weights were trained
so); 3x3/1 max pool then 1x1. The auxiliary heads (`GoogLeNetAux`) average to 4x4,
1x1 conv (128), flatten in torch's (C, H, W) order, fc1 (2048 -> 1024), ReLU, dropout
0.7, (fc2). The final fc and the aux fc2 are left out: new classifier heads replace
them.

Parameter tree, torchvision's state-dict names with "." -> "/" and `branch{k}.{j}`
-> `branch{k}_{j}` (branch4.0 is the pool, so branch4 has only `branch4_1`):

  conv1, conv2, conv3                              each /conv (kernel), /bn
  inception{3a,3b,4a,...,4e,5a,5b}/branch1         /conv, /bn
      /branch2_0, /branch2_1, /branch3_0, /branch3_1, /branch4_1
  aux1, aux2 (aux_logits only)                     /conv/conv, /conv/bn, /fc1
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from hierjax.models.layers import (Backbone, Dtype, ModuleDef, adaptive_avg_pool,
                                   conv_kernel_init, dense, flatten_chw, global_avg_pool,
                                   renormalise_for_inception)

MIN_SIZE = 15  # smallest input the ceil-mode pools take down to a 1x1 inception5b map

# name -> (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection) channels, the
# paper's Table 1 as torchvision has it.
INCEPTION_BLOCKS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def max_pool_ceil(x_BxHxWxC: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """torch's `MaxPool2d(window, stride, padding, ceil_mode=True)` on an NHWC map.

    Output size ceil((n + 2 p - k) / s) + 1, less one if the last window would start
    beyond the input and the left padding (torch's rule); the extra right padding is
    -inf, so it never wins the max.
    """

    def right_pad(size: int) -> int:
        out = -(-(size + 2 * padding - window) // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
        return (out - 1) * stride + window - size - padding

    _, height, width, _ = x_BxHxWxC.shape
    pads = ((padding, right_pad(height)), (padding, right_pad(width)))
    return nn.max_pool(x_BxHxWxC, (window, window), strides=(stride, stride), padding=pads)


class BasicConv2d(nn.Module):
    """torchvision's BasicConv2d: conv (no bias) -> BatchNorm -> ReLU; children conv, bn.

    Attributes:
      features: output channels.
      kernel_size, strides, padding: as torch's Conv2d (an int or an (h, w) pair;
        padding is symmetric, as in torch).
      norm: BatchNorm constructor (`Backbone.norm`).
      dtype: compute dtype.
    """

    features: int
    kernel_size: int | tuple[int, int]
    strides: int = 1
    padding: int | tuple[int, int] = 0
    _: dataclasses.KW_ONLY
    norm: ModuleDef
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad_h, pad_w = _pair(self.padding)
        x = nn.Conv(
            self.features,
            _pair(self.kernel_size),
            strides=_pair(self.strides),
            padding=((pad_h, pad_h), (pad_w, pad_w)),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=conv_kernel_init,
            name="conv",
        )(x)
        return nn.relu(self.norm(name="bn")(x))


class Inception(nn.Module):
    """One GoogLeNet inception block: four branches concatenated on channels.

    Attributes:
      widths: (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection) channels.
      norm, dtype: see `BasicConv2d`.
    """

    widths: tuple[int, int, int, int, int, int]
    norm: ModuleDef
    dtype: Dtype

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        c1, c3_reduce, c3, c5_reduce, c5, pool_proj = self.widths
        conv = functools.partial(BasicConv2d, norm=self.norm, dtype=self.dtype)
        branch1 = conv(c1, 1, name="branch1")(x_BxHxWxC)
        branch2 = conv(c3_reduce, 1, name="branch2_0")(x_BxHxWxC)
        branch2 = conv(c3, 3, padding=1, name="branch2_1")(branch2)
        branch3 = conv(c5_reduce, 1, name="branch3_0")(x_BxHxWxC)
        branch3 = conv(c5, 3, padding=1, name="branch3_1")(branch3)
        branch4 = max_pool_ceil(x_BxHxWxC, 3, 1, padding=1)
        branch4 = conv(pool_proj, 1, name="branch4_1")(branch4)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class GoogLeNetAux(nn.Module):
    """A GoogLeNet auxiliary head without its classifier: map [B, H, W, C] -> f32 [B, 1024].

    Adaptive average pool to 4x4, `conv` 1x1 (128), flatten (C, H, W), `fc1` (2048 ->
    1024), ReLU, dropout in training.

    Attributes:
      norm, dtype: see `BasicConv2d`.
      dropout: rate of the dropout after fc1 (0.7 as in torchvision).
    """

    norm: ModuleDef
    dtype: Dtype
    dropout: float = 0.7

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
        x = adaptive_avg_pool(x_BxHxWxC, (4, 4))
        x = BasicConv2d(128, 1, norm=self.norm, dtype=self.dtype, name="conv")(x)
        x = nn.relu(dense(1024, dtype=self.dtype, name="fc1")(flatten_chw(x)))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x.astype(jnp.float32)


class GoogLeNet(Backbone):
    """GoogLeNet backbone: images [B, H, W, 3] -> features f32 [B, 1024] (or a map).

    With aux_logits, in training (and in `init`, so that the heads' variables exist
    whatever mode initialises them) the call returns `(features, (aux1, aux2))`, where
    aux1/aux2 f32 [B, 1024] are the auxiliary heads' fc1 outputs after ReLU and dropout
    (after inception4a and 4d); a new head on each replaces torchvision's fc2.
    Otherwise (evaluation) it returns the features alone.

    Attributes:
      aux_logits: build the two auxiliary heads (trained only: torchvision's pretrained
        GoogLeNet file carries them, but untrained, and its model drops them).
      transform_input: re-normalise ImageNet-normalised inputs as the pretrained
        weights expect (`renormalise_for_inception`); True for torchvision's
        pretrained weights.
      pool: True returns the global average after dropout [B, 1024]; False the
        inception5b map [B, H', W', 1024] in `dtype` (for bilinear pooling).
      dropout: rate of the dropout on the pooled features in training (torchvision:
        0.2); aux_dropout: that after the aux fc1 (0.7).
      dtype, bn_axis_name, bn_momentum: see `Backbone`; bn_epsilon defaults to
        torchvision's 0.001 here.

    At 224 px the inception5b map is 7x7 (stride 32); the ceil-mode pools keep every
    map non-empty down to 15 px inputs (`MIN_SIZE`).
    """

    aux_logits: bool = False
    transform_input: bool = False
    pool: bool = True
    dropout: float = 0.2
    aux_dropout: float = 0.7
    _: dataclasses.KW_ONLY
    bn_epsilon: float = 1e-3

    @nn.compact
    def __call__(
        self, x_BxHxWx3: jax.Array, *, train: bool
    ) -> jax.Array | tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        if min(x_BxHxWx3.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"GoogLeNet needs inputs of at least {MIN_SIZE}x{MIN_SIZE} px; "
                             f"got {x_BxHxWx3.shape[1:3]}")
        norm = self.norm(train)
        conv = functools.partial(BasicConv2d, norm=norm, dtype=self.dtype)
        # The heads are built at init even when it runs in eval mode, so that a model
        # initialised with train=False can train with them.
        with_aux = self.aux_logits and (train or self.is_initializing())
        aux = []
        x = renormalise_for_inception(x_BxHxWx3) if self.transform_input else x_BxHxWx3
        x = max_pool_ceil(conv(64, 7, 2, padding=3, name="conv1")(x), 3, 2)
        x = conv(64, 1, name="conv2")(x)
        x = max_pool_ceil(conv(192, 3, padding=1, name="conv3")(x), 3, 2)
        for name, widths in INCEPTION_BLOCKS.items():
            if name in ("inception4a", "inception5a"):
                x = max_pool_ceil(x, 3 if name == "inception4a" else 2, 2)
            x = Inception(widths, norm=norm, dtype=self.dtype, name=name)(x)
            if with_aux and name in ("inception4a", "inception4d"):
                head = GoogLeNetAux(norm, self.dtype, self.aux_dropout,
                                    name="aux1" if name == "inception4a" else "aux2")
                aux.append(head(x, train=train))
        if self.pool:
            x = nn.Dropout(self.dropout, deterministic=not train)(global_avg_pool(x))
        return (x, tuple(aux)) if with_aux else x
