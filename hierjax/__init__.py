"""hierjax: fine-grained image classification with label hierarchies, in JAX/Flax."""

from hierjax.hierarchy import Hierarchy  # noqa: F401
from hierjax.losses import (
    GLMStatistics,
    cascaded_softmax_loss,
    coarse_constraint_loss,
    glm_loss,
    glm_statistics,
)

__all__ = [
    "GLMStatistics",
    "Hierarchy",
    "cascaded_softmax_loss",
    "coarse_constraint_loss",
    "glm_loss",
    "glm_statistics",
]
__version__ = "0.1.0"
