"""ResNet-18/34/50/101 (He et al.), torchvision v1.5 layout, as a feature extractor.

Parameter tree (`params` and `batch_stats` share it), mapped one to one onto the
torchvision names so pretrained weights can be copied in:

    stem_conv, stem_bn                        conv1, bn1
    stage{i}_block{j}/conv{k}, .../bn{k}      layer{i}.{j}.conv{k}, layer{i}.{j}.bn{k}
    stage{i}_block{j}/downsample_conv         layer{i}.{j}.downsample.0
    stage{i}_block{j}/downsample_bn           layer{i}.{j}.downsample.1

with i = 1..4, j = 0-based block index, k = 1..2 (basic) or 1..3 (bottleneck). Conv
kernels are HWIO (torchvision: OIHW); BatchNorm scale/bias/mean/var are
weight/bias/running_mean/running_var. There is no `fc`: heads live elsewhere.
"""

from __future__ import annotations

from typing import ClassVar

import jax
from flax import linen as nn

from hierjax.models.layers import Backbone, Dtype, ModuleDef, conv2d, global_avg_pool


def _last_bn(norm: ModuleDef, zero_init: bool, name: str) -> nn.Module:
    # A zero scale on the last BN makes each residual block start as the identity,
    # which helps large-batch training (Goyal et al., 2017).
    return norm(scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones, name=name)


def _shortcut(x, out_features: int, strides: int, norm: ModuleDef, dtype: Dtype):
    """Identity, or a strided 1x1 conv + BN when the shape changes."""
    if strides == 1 and x.shape[-1] == out_features:
        return x
    x = conv2d(out_features, 1, strides, dtype=dtype, name="downsample_conv")(x)
    return norm(name="downsample_bn")(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; the first conv carries the stride."""

    features: int
    strides: int
    norm: ModuleDef
    zero_init_residual: bool
    dtype: Dtype
    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x):
        y = conv2d(self.features, 3, self.strides, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = conv2d(self.features, 3, dtype=self.dtype, name="conv2")(y)
        y = _last_bn(self.norm, self.zero_init_residual, "bn2")(y)
        return nn.relu(y + _shortcut(x, self.features, self.strides, self.norm, self.dtype))


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3 (strided, as in torchvision v1.5), 1x1 expand by 4."""

    features: int
    strides: int
    norm: ModuleDef
    zero_init_residual: bool
    dtype: Dtype
    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x):
        out_features = self.features * self.expansion
        y = conv2d(self.features, 1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = conv2d(self.features, 3, self.strides, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = conv2d(out_features, 1, dtype=self.dtype, name="conv3")(y)
        y = _last_bn(self.norm, self.zero_init_residual, "bn3")(y)
        return nn.relu(y + _shortcut(x, out_features, self.strides, self.norm, self.dtype))


# depth -> (block type, blocks per stage)
LAYOUTS: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (BottleneckBlock, (3, 4, 6, 3)),
    101: (BottleneckBlock, (3, 4, 23, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)


class ResNet(Backbone):
    """ResNet backbone: images [B, H, W, C] -> features f32 [B, D] (or the last map).

    Attributes:
      depth: 18, 34 (basic blocks, D = 512), 50 or 101 (bottleneck blocks, D = 2048).
      small_input: CIFAR stem (3x3/1 conv, no max pool) instead of ImageNet's 7x7/2
        conv + 3x3/2 max pool.
      zero_init_residual: start the last BN scale of every block at zero.
      pool: True returns global-average-pooled float32 features [B, D]; False returns
        the last feature map [B, H', W', D] in `dtype` (for bilinear pooling).
      dtype, bn_axis_name, bn_momentum, bn_epsilon: see `Backbone`.
    """

    depth: int
    small_input: bool = False
    zero_init_residual: bool = True
    pool: bool = True

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
        if self.depth not in LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(LAYOUTS)}; got {self.depth}")
        block_cls, blocks_per_stage = LAYOUTS[self.depth]
        norm = self.norm(train)
        if self.small_input:
            x = conv2d(64, 3, dtype=self.dtype, name="stem_conv")(x_BxHxWxC)
        else:
            x = conv2d(64, 7, 2, dtype=self.dtype, name="stem_conv")(x_BxHxWxC)
        x = nn.relu(norm(name="stem_bn")(x))
        if not self.small_input:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, (width, num_blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage), start=1):
            for j in range(num_blocks):
                x = block_cls(
                    features=width,
                    strides=2 if i > 1 and j == 0 else 1,
                    norm=norm,
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    name=f"stage{i}_block{j}",
                )(x)
        return global_avg_pool(x) if self.pool else x
