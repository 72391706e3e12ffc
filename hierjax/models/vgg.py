"""VGG-16/19 (Simonyan & Zisserman), optionally with BatchNorm, as a feature extractor.

Five blocks of 3x3 convs (64, 128, 256, 512, 512 channels), each but the last followed
by a 2x2/2 max pool. The fifth pool and the fully connected layers are left out: the
features are the global average of the conv5 map (any input size works), and bilinear
pooling uses that map too, as Lin et al. do with conv5_3.

Parameter tree: `block{i}_conv{j}` and, with BatchNorm, `block{i}_bn{j}` (i = 1..5,
j = 1..3 or 4). In torchvision's `features` Sequential they are the conv/BN layers in
the same order. Convs keep their bias even with BatchNorm, as torchvision's do.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from hierjax.models.layers import Backbone, conv2d, global_avg_pool

# depth -> convs per block
LAYOUTS: dict[int, tuple[int, ...]] = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
BLOCK_WIDTHS = (64, 128, 256, 512, 512)


class VGG(Backbone):
    """VGG backbone: images [B, H, W, C] -> features f32 [B, 512] (or the conv5 map).

    Attributes:
      depth: 16 or 19.
      batchnorm: BN after every conv (torchvision's vgg*_bn).
      pool: True returns pooled float32 features [B, 512]; False the conv5 map in `dtype`.
      dtype, bn_axis_name, bn_momentum, bn_epsilon: see `Backbone` (the BN settings
        only matter with `batchnorm`).
    """

    depth: int = 16
    batchnorm: bool = False
    pool: bool = True

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
        if self.depth not in LAYOUTS:
            raise ValueError(f"VGG depth must be one of {sorted(LAYOUTS)}; got {self.depth}")
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
        return global_avg_pool(x) if self.pool else x
