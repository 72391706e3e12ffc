"""Layers shared by the backbones: conv and BatchNorm constructors, global pooling."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

Dtype = Any  # a numpy/JAX dtype such as jnp.float32 or jnp.bfloat16
ModuleDef = Callable[..., nn.Module]

# He et al. normal init over fan-out, which is how torchvision initialises the convs
# of its ResNets and VGGs.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


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


def batch_norm_def(
    *, train: bool, momentum: float, epsilon: float, axis_name: str | None, dtype: Dtype
) -> ModuleDef:
    """An `nn.BatchNorm` constructor with the backbone-wide settings bound.

    `axis_name` makes training-mode statistics a mean over that pmap/shard_map axis, so
    every device normalises with (and stores) the statistics of the global batch.
    """
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        axis_name=axis_name,
        dtype=dtype,
        param_dtype=jnp.float32,
    )


def global_avg_pool(x_BxHxWxC: jax.Array) -> jax.Array:
    """Mean over the spatial positions, accumulated and returned in float32 [B, C]."""
    return jnp.mean(x_BxHxWxC, axis=(1, 2), dtype=jnp.float32)
