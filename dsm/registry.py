"""Name -> constructor registries for models and modulators (the timm idiom).

Models and modulators register themselves with a decorator when their module is
imported; ``dsm.create_model`` and ``dsm.create_modulator`` look them up by name,
so configs, CLIs and notebooks only ever deal in strings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_MODULATORS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def register_modulator(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a modulator class whose constructor is ``(channels, **opts)``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        _MODULATORS[name] = cls
        return cls

    return wrap


def _populate() -> None:
    """Import the built-in models and modulators, which register themselves."""
    import dsm.models  # noqa: F401
    import dsm.modulators  # noqa: F401


def list_models() -> list[str]:
    _populate()
    return sorted(_MODELS)


def list_modulators() -> list[str]:
    _populate()
    return sorted(_MODULATORS)


def create_modulator(name: str | None, channels: int, **opts: Any) -> nn.Module:
    """Build a registered modulator; ``None``/"none" gives the identity."""
    _populate()
    name = "none" if name in (None, "", "identity") else name
    if name not in _MODULATORS:
        raise ValueError(f"unknown modulator {name!r}; choose from {', '.join(list_modulators())}")
    return _MODULATORS[name](channels, **opts)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by name: a registered one (``dsm_net``) or ``timm:<arch>``."""
    if name.startswith("timm:"):
        from dsm.models.timm_backbone import create_timm_model

        return create_timm_model(name.removeprefix("timm:"), **kwargs)
    _populate()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())} or timm:<arch>")
    return _MODELS[name](**kwargs)
