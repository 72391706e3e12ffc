"""AlexNet as torchvision builds it (Krizhevsky's "one weird trick" variant), as a
feature extractor.

torchvision's AlexNet: five convs with bias and no BatchNorm (64, 192, 384, 256, 256
channels; 11x11/4, 5x5, 3x3, 3x3, 3x3), 3x3/2 max pools after conv1, conv2 and conv5,
an adaptive average pool to 6x6, then Dropout-fc6 (9216 -> 4096)-ReLU-Dropout-fc7
(4096 -> 4096)-ReLU-fc8. fc8 is left out: the classifier heads replace it.

Parameter tree: conv1 .. conv5, fc6, fc7 (torchvision's features.0/3/6/8/10 and
classifier.1/4). Dense kernels are [in, out] (torchvision: weight [out, in]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from hierjax.models.layers import (Backbone, adaptive_avg_pool, check_features, conv2d,
                                   conv_kernel_init, dense, flatten_chw, global_avg_pool)

FEATURES = ("fc7", "pool")  # what `features` may be; the first is the default
MIN_SIZE = {"fc7": 63, "pool": 31}  # smallest inputs with a non-empty conv5 (pool 5) map

class AlexNet(Backbone):
    """AlexNet backbone: images [B, H, W, 3] -> features f32 [B, 4096 or 256] (or a map).

    Attributes:
      features: "fc7" is the ReLU of fc7 [B, 4096] (conv5 -> 3x3/2 max pool -> adaptive
        average pool to 6x6 -> flatten -> dropout -> fc6 -> ReLU -> dropout -> fc7 ->
        ReLU); "pool" the global average of the ReLU'd conv5 map [B, 256].
      pool: with features="pool": True pools, False returns the conv5 map [B, H', W',
        256] in `dtype` (for bilinear pooling).
      dropout: rate of the two dropouts before fc6 and fc7 in training (0.5 as in
        torchvision).
      dtype, bn_axis_name, bn_momentum, bn_epsilon: see `Backbone` (AlexNet has no
        BatchNorm, so only dtype matters).

    features="fc7" needs inputs of at least 63 px ("pool": 31 px). At 224 px the
    pooled conv5 map is 6x6, the size fc6 was trained on, and the adaptive pool is the
    identity; larger inputs are averaged down to 6x6, smaller ones repeated up to it.
    """

    features: str = "fc7"
    pool: bool = True
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
        check_features(self.features, self.pool, "AlexNet")
        if min(x_BxHxWxC.shape[1:3]) < MIN_SIZE[self.features]:
            raise ValueError(
                f"AlexNet with features={self.features!r} needs inputs of at least "
                f"{MIN_SIZE[self.features]}x{MIN_SIZE[self.features]} px; got "
                f"{x_BxHxWxC.shape[1:3]}"
            )
        # 11x11/4 with padding 2, not the kernel_size // 2 that `conv2d` pads.
        x = nn.Conv(64, (11, 11), strides=(4, 4), padding=((2, 2), (2, 2)), dtype=self.dtype,
                    param_dtype=jnp.float32, kernel_init=conv_kernel_init, name="conv1")(x_BxHxWxC)
        x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2))
        x = nn.relu(conv2d(192, 5, dtype=self.dtype, use_bias=True, name="conv2")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        for name, width in (("conv3", 384), ("conv4", 256), ("conv5", 256)):
            x = nn.relu(conv2d(width, 3, dtype=self.dtype, use_bias=True, name=name)(x))
        if self.features == "pool":
            return global_avg_pool(x) if self.pool else x
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = flatten_chw(adaptive_avg_pool(x, (6, 6)))
        for name in ("fc6", "fc7"):
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = nn.relu(dense(4096, dtype=self.dtype, name=name)(x))
        return x.astype(jnp.float32)
