"""VGG-16/19 (Simonyan & Zisserman), optionally with BatchNorm, as a feature extractor.

Five blocks of 3x3 convs (64, 128, 256, 512, 512 channels), each but the last followed
by a 2x2/2 max pool. Two kinds of features:

  "pool"  the global average of the conv5 map [B, 512]: no fifth pool, no fully
          connected layers, 16 px and up; bilinear pooling uses that map too
          (pool=False), as Lin et al. do with conv5_3.
  "fc7"   torchvision's classifier up to fc7 [B, 4096]: fifth max pool, adaptive
          average pool to 7x7, flatten in torch's (C, H, W) order, fc6 (25088 -> 4096),
          ReLU, dropout, fc7 (4096 -> 4096), ReLU, dropout. fc8 is left out: the
          classifier heads replace it.

Parameter tree: `block{i}_conv{j}` and, with BatchNorm, `block{i}_bn{j}` (i = 1..5,
j = 1..3 or 4); with features="fc7" also `fc6`, `fc7`. In torchvision's `features`
Sequential the convs/BNs are the conv/BN layers in the same order, fc6/fc7 are
classifier.0/classifier.3. Convs keep their bias even with BatchNorm, as torchvision's
do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from hierjax.models.layers import (Backbone, adaptive_avg_pool, check_features, conv2d, dense,
                                   flatten_chw, global_avg_pool)

# depth -> convs per block
LAYOUTS: dict[int, tuple[int, ...]] = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
BLOCK_WIDTHS = (64, 128, 256, 512, 512)
FEATURES = ("pool", "fc7")  # what `features` may be; the first is the default
MIN_SIZE = {"pool": 16, "fc7": 32}  # smallest inputs whose last pooled map is non-empty


class VGG(Backbone):
    """VGG backbone: images [B, H, W, C] -> features f32 [B, 512 or 4096] (or conv5 map).

    Attributes:
      depth: 16 or 19.
      batchnorm: BN after every conv (torchvision's vgg*_bn).
      pool: with features="pool": True returns pooled float32 features [B, 512]; False
        the conv5 map in `dtype`.
      features: "pool" (global average of conv5, [B, 512]) or "fc7" (torchvision's fc7
        after ReLU and dropout, [B, 4096]); see the module docstring. At 224 px the
        fifth pool gives 7x7, fc6's input size, and the adaptive pool is the identity;
        other sizes (32 px and up; "pool": 16 px and up, `MIN_SIZE`) are averaged down
        or repeated up to 7x7 as torch does.
      dropout: rate of the dropouts after fc6 and fc7 in training (0.5 as in
        torchvision); features="fc7" only.
      dtype, bn_axis_name, bn_momentum, bn_epsilon: see `Backbone` (the BN settings
        only matter with `batchnorm`).
    """

    depth: int = 16
    batchnorm: bool = False
    pool: bool = True
    features: str = "pool"
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
        if self.depth not in LAYOUTS:
            raise ValueError(f"VGG depth must be one of {sorted(LAYOUTS)}; got {self.depth}")
        check_features(self.features, self.pool, "VGG")
        if min(x_BxHxWxC.shape[1:3]) < MIN_SIZE[self.features]:
            raise ValueError(
                f"VGG with features={self.features!r} needs inputs of at least "
                f"{MIN_SIZE[self.features]}x{MIN_SIZE[self.features]} px; got "
                f"{x_BxHxWxC.shape[1:3]}")
        norm = self.norm(train)
        x = x_BxHxWxC
        for i, (width, num_convs) in enumerate(zip(BLOCK_WIDTHS, LAYOUTS[self.depth]), start=1):
            if i > 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for j in range(1, num_convs + 1):
                x = conv2d(width, 3, dtype=self.dtype, use_bias=True, name=f"block{i}_conv{j}")(x)
                if self.batchnorm:
                    x = norm(name=f"block{i}_bn{j}")(x)
                x = nn.relu(x)
        if self.features == "pool":
            return global_avg_pool(x) if self.pool else x
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = flatten_chw(adaptive_avg_pool(x, (7, 7)))
        for name in ("fc6", "fc7"):
            x = nn.relu(dense(4096, dtype=self.dtype, name=name)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x.astype(jnp.float32)
