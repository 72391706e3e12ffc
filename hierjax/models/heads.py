"""Cascaded classifier heads (Shi, Gong et al., cascaded softmax)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from hierjax.models.layers import Dtype


class CascadedHeads(nn.Module):
    """One Dense head per hierarchy level, each fed the logits of all finer levels.

    Level 0 (fine) sees the features f: z_0 = Dense(f). Level l >= 1 sees the
    concatenation [z_0, ..., z_{l-1}], followed by f when `skip` (the paper's skip
    connection). The heads are named `level{l}`. With one level this is the plain
    (flat softmax) classifier.

    Attributes:
      classes_per_level: C_l for each level, fine first.
      skip: also feed f to the coarser heads.
      dtype: compute dtype of the Dense layers; parameters and the returned logits
        are float32.

    Call: feats_BxD -> list of float32 logits [B, C_l], fine first.
    """

    classes_per_level: tuple[int, ...]
    skip: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, feats_BxD: jax.Array) -> list[jax.Array]:
        if not self.classes_per_level:
            raise ValueError("CascadedHeads needs at least one level in classes_per_level")
        logits = []
        for level, num_classes in enumerate(self.classes_per_level):
            inputs = (logits + [feats_BxD]) if level == 0 or self.skip else logits
            z = nn.Dense(
                num_classes, dtype=self.dtype, param_dtype=jnp.float32, name=f"level{level}"
            )(jnp.concatenate(inputs, axis=-1))
            logits.append(z.astype(jnp.float32))
        return logits
