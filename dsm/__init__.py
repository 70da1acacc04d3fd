"""dsm: the Decomposed Spatial Modulator for efficient facial-expression recognition."""

from dsm import models, modulators  # noqa: F401  (populate the registries)
from dsm.registry import (
    create_model,
    create_modulator,
    list_models,
    list_modulators,
    register_model,
    register_modulator,
)
from dsm.reparam import reparameterize

__version__ = "0.1.0"

__all__ = [
    "create_model",
    "create_modulator",
    "list_models",
    "list_modulators",
    "register_model",
    "register_modulator",
    "reparameterize",
]
