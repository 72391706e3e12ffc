"""Bilinear pooling (B-CNN, Lin et al., ICCV 2015) over any backbone's last feature map."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from hierjax.models.layers import Dtype


class BilinearPool(nn.Module):
    """Feature map [B, H, W, C] -> bilinear features f32 [B, C'^2].

    With x_p the (optionally reduced) C'-vector at position p:
        z = vec(sum_p x_p x_p^T) / (H W)
        z <- sign(z) sqrt(|z| + eps)          (signed square root)
        z <- z / ||z||_2                      (L2 normalisation)

    Attributes:
      dim: 0 keeps the C channels (C' = C); > 0 first applies a 1x1 conv without bias
        to `dim` channels (`reduce_conv`). Being linear, the reduction turns the
        bilinear matrix G into P^T G P, a projection of the full one.
      eps: keeps the square root's gradient finite at zero.
      dtype: compute dtype of the reduction; the outer products accumulate in float32.
    """

    dim: int = 0
    eps: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        x = x_BxHxWxC
        if self.dim:
            x = nn.Conv(
                self.dim, (1, 1), use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                name="reduce_conv",
            )(x)
        b, h, w, c = x.shape
        x_BxNxC = x.reshape(b, h * w, c)
        gram_BxCxC = jnp.einsum(
            "bnc,bnd->bcd", x_BxNxC, x_BxNxC, preferred_element_type=jnp.float32
        ) / (h * w)
        z = gram_BxCxC.reshape(b, c * c)
        z = jnp.sign(z) * jnp.sqrt(jnp.abs(z) + self.eps)
        # rsqrt of a clamped sum of squares, not z / norm(z): the norm's gradient is
        # NaN at an all-zero vector (e.g. a map zeroed by ReLU), this stays finite.
        return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-24))
