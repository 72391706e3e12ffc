"""What the backbones share: the `Backbone` base (dtype, BatchNorm settings), convs,
fully connected layers, global and torch-exact adaptive pooling, torch's flatten order,
and the input re-normalisation of the Inception networks' pretrained weights."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Dtype = Any  # a numpy/JAX dtype such as jnp.float32 or jnp.bfloat16
ModuleDef = Callable[..., nn.Module]

# He et al. normal init over fan-out, which is how torchvision initialises the convs
# of its ResNets and VGGs.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torchvision initialises the VGG classifier's Linear layers with N(0, 0.01); it works
# as well for AlexNet's and GoogLeNet's, which are trained with the same recipe.
fc_kernel_init = nn.initializers.normal(stddev=0.01)

# The layers a backbone with fully connected layers (AlexNet, VGG) can hand the heads.
FC_FEATURES = ("pool", "fc7")

# ImageNet's statistics, with which hierjax.data normalises the fine-grained data sets.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv2d(
    features: int,
    kernel_size: int,
    strides: int = 1,
    *,
    dtype: Dtype,
    name: str,
    use_bias: bool = False,
) -> nn.Conv:
    """A square conv padded by kernel_size // 2 on every side, float32 parameters.

    Flax's "SAME" pads stride-2 convs more at the end than at the start; PyTorch pads
    symmetrically. Matching PyTorch keeps torchvision weights exact when mapped in.
    """
    pad = kernel_size // 2
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=conv_kernel_init,
        name=name,
    )


class Backbone(nn.Module):
    """Base of every backbone: compute dtype and BatchNorm settings, keyword-only.

    Attributes:
      dtype: compute dtype; parameters and BatchNorm statistics stay float32.
      bn_axis_name: pmap/shard_map axis over which training-mode BatchNorm averages
        its statistics, so every device normalises with (and stores) those of the
        global batch; None on one device.
      bn_momentum, bn_epsilon: running-average decay and epsilon (torchvision's
        momentum 0.1 is this 0.9).
    """

    _: dataclasses.KW_ONLY
    dtype: Dtype = jnp.float32
    bn_axis_name: str | None = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    def norm(self, train: bool) -> ModuleDef:
        """An `nn.BatchNorm` constructor with this backbone's settings bound."""
        return functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            axis_name=self.bn_axis_name,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )


def global_avg_pool(x_BxHxWxC: jax.Array) -> jax.Array:
    """Mean over the spatial positions, accumulated and returned in float32 [B, C]."""
    return jnp.mean(x_BxHxWxC, axis=(1, 2), dtype=jnp.float32)


def dense(features: int, *, dtype: Dtype, name: str) -> nn.Dense:
    """A fully connected layer with float32 parameters, computing in `dtype`."""
    return nn.Dense(
        features, dtype=dtype, param_dtype=jnp.float32, kernel_init=fc_kernel_init, name=name
    )


def _bin_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] averaging weights of torch's adaptive pooling along one axis.

    Output bin i averages inputs floor(i * n / m) .. ceil((i + 1) * n / m) - 1 (n in,
    m out): equal bins when m divides n, overlapping ones otherwise, and repeated inputs
    when m > n.
    """
    weights = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -(-((i + 1) * size_in) // size_out)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def adaptive_avg_pool(x_BxHxWxC: jax.Array, size: tuple[int, int]) -> jax.Array:
    """torch's `AdaptiveAvgPool2d(size)` on an NHWC map: [B, H, W, C] -> [B, h, w, C].

    Any H, W work (larger, equal or smaller than the target); equal is the identity.
    The averages are taken in float32 and returned in the input's dtype.
    """
    _, height, width, _ = x_BxHxWxC.shape
    if not (height and width):
        raise ValueError(f"adaptive pooling of an empty {height}x{width} map: the input "
                         f"is too small for this network")
    if (height, width) == tuple(size):
        return x_BxHxWxC
    rows_hxH = _bin_matrix(height, size[0])
    cols_wxW = _bin_matrix(width, size[1])
    # HIGHEST: GPUs would otherwise average float32 maps in TF32.
    y = jnp.einsum("hH,bHWc,wW->bhwc", rows_hxH, x_BxHxWxC.astype(jnp.float32), cols_wxW,
                   precision=jax.lax.Precision.HIGHEST)
    return y.astype(x_BxHxWxC.dtype)


def flatten_chw(x_BxHxWxC: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, C * H * W] in torch's NCHW flatten order (C, then H, then W).

    The fully connected layers after a flatten keep torchvision's input order, so its
    weights load with a plain transpose, and so do timm's, which store VGG's fc6 as a
    7x7 conv whose [out, C, 7, 7] weight flattens in the same order.
    """
    batch = x_BxHxWxC.shape[0]
    return jnp.transpose(x_BxHxWxC, (0, 3, 1, 2)).reshape(batch, -1)


def check_features(features: str, pool: bool, model: str) -> None:
    """ValueError unless `features` is "pool" or "fc7", and pool=False goes with "pool"."""
    if features not in FC_FEATURES:
        raise ValueError(f"{model} features must be one of {list(FC_FEATURES)}; got "
                         f"{features!r}")
    if features == "fc7" and not pool:
        raise ValueError(
            f"{model}: pool=False returns the conv5 map (for bilinear pooling), which "
            f"needs features='pool'; got features='fc7'"
        )


def renormalise_for_inception(x_BxHxWx3: jax.Array) -> jax.Array:
    """Re-normalises ImageNet-normalised images to (x - 0.5) / 0.5 per channel.

    x' = x * std / 0.5 + (mean - 0.5) / 0.5 undoes (x - mean) / std and applies the
    normalisation that torchvision's GoogLeNet and Inception-V3 weights (ported from
    TensorFlow) expect; torchvision sets transform_input=True for them.
    """
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    return x_BxHxWx3 * (std / 0.5) + (mean - 0.5) / 0.5
