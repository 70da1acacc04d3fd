"""Name -> constructor registries for models and modulators (the timm idiom).

Models and modulators register themselves with a decorator when their module is
imported; ``dsm.create_model`` and ``dsm.create_modulator`` look them up by name,
so configs, CLIs and notebooks only ever deal in strings.
"""

from __future__ import annotations

import inspect
import json
import typing
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


def resolved_options(
    model: str, modulator: str | None, model_opts: dict[str, Any], modulator_opts: dict[str, Any]
) -> dict[str, Any]:
    """The constructor arguments of a registered model and its modulator, code defaults included, as JSON
    values. A run record keeps them, so a later change of a default (say DSM's ``reduction``) is not taken
    for the same network; timm models answer only what was given (timm's defaults are its version's)."""
    _populate()

    def full(fn: Callable[..., Any], given: dict[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
        params = inspect.signature(fn).parameters
        out = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty and k not in skip}
        return out | {k: v for k, v in given.items() if k not in skip}

    name = "none" if modulator in (None, "", "identity") else modulator
    mod = full(_MODULATORS[name].__init__, modulator_opts, ("self", "channels")) if name in _MODULATORS else {}
    net = dict(model_opts)
    if model in _MODELS:  # the class a factory returns carries the defaults (``def dsm_net(**kw) -> DSMNet``)
        cls = typing.get_type_hints(_MODELS[model]).get("return")
        if isinstance(cls, type):
            net = full(cls.__init__, model_opts, ("self", "num_classes", "in_chans", "modulator", "modulator_opts"))
    return json.loads(json.dumps({"model": net, "modulator": mod}, default=str))


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by name: a registered one (``dsm_net``) or ``timm:<arch>``."""
    if name.startswith("timm:"):
        from dsm.models.timm_backbone import create_timm_model

        return create_timm_model(name.removeprefix("timm:"), **kwargs)
    _populate()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())} or timm:<arch>")
    return _MODELS[name](**kwargs)
