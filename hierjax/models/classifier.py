"""The full model: backbone -> (bilinear pooling) -> cascaded or flat heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from hierjax.models.bilinear import BilinearPool
from hierjax.models.heads import CascadedHeads
from hierjax.models.layers import Dtype


class NewLayers(nn.Module):
    """Everything the classifier adds on top of the backbone, under one name.

    Keeping the bilinear reduction and the heads in one subtree lets the optimizer give
    all newly initialised layers the heads' learning rate with a single name test.
    Parameters: `bilinear/reduce_conv` (bilinear_dim > 0 only), `level{l}`, and
    `aux_heads_{i}` (one fine-class Dense per auxiliary backbone output).
    Call: (backbone output, auxiliary outputs) -> (features f32 [B, D], logits per
    level, fine logits per auxiliary output).
    """

    classes_per_level: tuple[int, ...]
    skip: bool
    bilinear_dim: int | None
    dtype: Dtype
    num_aux: int = 0

    def setup(self):
        if self.bilinear_dim is not None:
            self.bilinear = BilinearPool(dim=self.bilinear_dim, dtype=self.dtype)
        self.cascade = CascadedHeads(self.classes_per_level, skip=self.skip, dtype=self.dtype)
        # The heads' `level{l}` then sit directly under this module, not under `cascade`.
        nn.share_scope(self, self.cascade)
        self.aux_heads = [nn.Dense(self.classes_per_level[0], dtype=self.dtype,
                                   param_dtype=jnp.float32) for _ in range(self.num_aux)]

    def __call__(self, x: jax.Array, aux: tuple[jax.Array, ...] = ()
                 ) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
        if self.bilinear_dim is not None:
            x = self.bilinear(x)
        # The losses work in float32 whatever the backbone's compute dtype.
        feats_BxD = x.astype(jnp.float32)
        aux_logits = [head(a).astype(jnp.float32) for head, a in zip(self.aux_heads, aux)]
        return feats_BxD, self.cascade(feats_BxD), aux_logits


class Classifier(nn.Module):
    """images [B, H, W, C] -> {"features": f32 [B, D], "logits": [f32 [B, C_l], ...]}.

    Parameter tree: `backbone/...` (pretrainable) and `heads/...` (new layers: see
    `NewLayers`). "features" are what the heads see: the pooled (or bilinear) backbone
    features, or a fully connected layer's output (`config.model.features="fc7"`).
    A backbone with auxiliary heads (GoogLeNet, Inception-V3 with aux_logits) also
    gives, in training, "aux_logits": [f32 [B, C_1], ...], fine-class logits of a new
    Dense on each auxiliary output (the training loss weighs them by
    `config.loss.aux_weight`; evaluation never computes them).

    Attributes:
      backbone: called as `backbone(images, train=...)`; returns features [B, D],
        or, when `bilinear_dim` is set, its last map [B, H, W, C] (build it with
        `pool=False`); or `(that, (aux_1, ...))` with auxiliary outputs [B, D_i].
      classes_per_level: C_l per hierarchy level, fine first.
      cascade: True gives one cascaded head per level; False the flat softmax
        classifier, one head over the fine level only.
      skip: feed the features to the coarser cascaded heads too.
      bilinear_dim: None for no bilinear pooling; otherwise `BilinearPool(dim=...)`
        (0 keeps the backbone's channels).
      dtype: compute dtype of the new layers.
    """

    backbone: nn.Module
    classes_per_level: tuple[int, ...]
    cascade: bool = True
    skip: bool = False
    bilinear_dim: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images_BxHxWxC: jax.Array, *, train: bool) -> dict:
        x = self.backbone(images_BxHxWxC, train=train)
        x, aux = x if isinstance(x, tuple) else (x, ())
        expected_ndim = 2 if self.bilinear_dim is None else 4
        if x.ndim != expected_ndim:
            raise ValueError(
                f"the backbone returned shape {x.shape} but bilinear_dim={self.bilinear_dim} "
                f"needs {expected_ndim}-d outputs: build it with pool={self.bilinear_dim is None}"
            )
        classes = self.classes_per_level if self.cascade else self.classes_per_level[:1]
        feats_BxD, logits, aux_logits = NewLayers(
            classes, skip=self.skip, bilinear_dim=self.bilinear_dim, dtype=self.dtype,
            num_aux=len(aux), name="heads"
        )(x, tuple(aux))
        outputs = {"features": feats_BxD, "logits": logits}
        if aux_logits:
            outputs["aux_logits"] = aux_logits
        return outputs
