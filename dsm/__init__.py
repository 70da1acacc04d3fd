"""dsm: the Decomposed Spatial Modulator for efficient facial-expression recognition.

Attributes load lazily (PEP 562) so that ``dsm prepare`` and ``dsm --help`` do not pay for
importing torch and timm; ``dsm.create_model`` and friends import them on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "dsm.registry",
    "create_modulator": "dsm.registry",
    "list_models": "dsm.registry",
    "list_modulators": "dsm.registry",
    "register_model": "dsm.registry",
    "register_modulator": "dsm.registry",
    "reparameterize": "dsm.reparam",
    "TrainConfig": "dsm.config",
    "recipe": "dsm.config",
}

_SUBMODULES = ("bench", "checkpoint", "config", "data", "evaluate", "export", "face", "layers", "metrics", "models",
               "modulators", "predict", "preprocess", "reproduce", "runs", "train", "viz")  # fmt: skip

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:  # ``import dsm; dsm.predict.Predictor(...)`` works as with an eager package
        return importlib.import_module(f"dsm.{name}")
    raise AttributeError(f"module 'dsm' has no attribute {name!r}")
