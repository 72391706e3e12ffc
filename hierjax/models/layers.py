"""What the backbones share: the `Backbone` base (dtype, BatchNorm settings), convs,
global pooling."""

from __future__ import annotations

import dataclasses
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
