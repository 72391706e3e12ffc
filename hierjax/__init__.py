"""hierjax: fine-grained image classification with label hierarchies, in JAX/Flax.

The public names load on first use, so that processes that only read data (grain's
decoding workers) never import JAX.
"""

import importlib

_PUBLIC = {
    # The inference wrapper (load an exported model, predict); the flax module of the
    # network is hierjax.models.Classifier.
    "Classifier": "hierjax.inference",
    "Hierarchy": "hierjax.hierarchy",
    "GLMStatistics": "hierjax.losses",
    "cascaded_softmax_loss": "hierjax.losses",
    "coarse_constraint_loss": "hierjax.losses",
    "glm_loss": "hierjax.losses",
    "glm_statistics": "hierjax.losses",
}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'hierjax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
