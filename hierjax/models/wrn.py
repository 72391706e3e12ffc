"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis, 2016), the CIFAR pre-activation network.

Layout: 3x3 conv to 16 channels, then three groups of n = (d - 4) / 6 pre-activation
blocks with widths 16k, 32k, 64k (strides 1, 2, 2), then BN-ReLU and global average
pooling (D = 64k). Parameter tree: `stem_conv`, `group{i}_block{j}/{bn1, conv1, bn2,
conv2, shortcut_conv}` (i = 1..3, j 0-based), `final_bn`.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from hierjax.models.layers import Backbone, Dtype, ModuleDef, conv2d, global_avg_pool


def blocks_per_group(depth: int) -> int:
    """n for WRN depth d = 6n + 4; ValueError for any other depth."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...); got {depth}"
        )
    return (depth - 4) // 6


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3 plus shortcut; stride on the first conv."""

    features: int
    strides: int
    dropout: float
    norm: ModuleDef
    dtype: Dtype

    @nn.compact
    def __call__(self, x, *, train: bool):
        preact = nn.relu(self.norm(name="bn1")(x))
        if self.strides == 1 and x.shape[-1] == self.features:
            shortcut = x
        else:
            # As in the reference implementation, a changing block projects the
            # pre-activated input rather than the raw one.
            shortcut = conv2d(
                self.features, 1, self.strides, dtype=self.dtype, name="shortcut_conv"
            )(preact)
        y = conv2d(self.features, 3, self.strides, dtype=self.dtype, name="conv1")(preact)
        y = nn.relu(self.norm(name="bn2")(y))
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        y = conv2d(self.features, 3, dtype=self.dtype, name="conv2")(y)
        return y + shortcut


class WideResNet(Backbone):
    """WRN-d-k backbone: images [B, H, W, C] -> features f32 [B, 64k] (or the last map).

    Attributes:
      depth: d = 6n + 4 (e.g. 28); anything else raises ValueError when called.
      width: widening factor k.
      dropout: dropout rate between the two convs of every block (the paper uses 0.3);
        training with a rate > 0 needs a "dropout" rng.
      pool: True returns pooled float32 features [B, 64k]; False returns the map after
        the final BN-ReLU, in `dtype`.
      dtype, bn_axis_name, bn_momentum, bn_epsilon: see `Backbone`.
    """

    depth: int = 28
    width: int = 10
    dropout: float = 0.0
    pool: bool = True

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
        n = blocks_per_group(self.depth)
        norm = self.norm(train)
        x = conv2d(16, 3, dtype=self.dtype, name="stem_conv")(x_BxHxWxC)
        for i, base in enumerate((16, 32, 64), start=1):
            for j in range(n):
                x = WideBlock(
                    features=base * self.width,
                    strides=2 if i > 1 and j == 0 else 1,
                    dropout=self.dropout,
                    norm=norm,
                    dtype=self.dtype,
                    name=f"group{i}_block{j}",
                )(x, train=train)
        x = nn.relu(norm(name="final_bn")(x))
        return global_avg_pool(x) if self.pool else x
