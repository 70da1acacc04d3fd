"""Put modulators into any timm CNN, after the stages its ``feature_info`` names.

``dsm.create_model("timm:resnet18", modulator="dsm", modulator_stages=[2])`` builds
the timm classifier (``pretrained=True`` works where the hub is reachable, or pass
``pretrained_file``) and wraps the module that ends stage 2 as
``Sequential(stage, modulator)``. Stage indices follow ``model.feature_info``
(for ResNets: 0 = stem, 1..4 = layer1..layer4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch.nn as nn

from dsm.registry import create_modulator


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def create_timm_model(
    arch: str,
    num_classes: int = 7,
    in_chans: int = 3,
    modulator: str | None = None,
    modulator_stages: Sequence[int] = (2,),
    modulator_opts: dict[str, Any] | None = None,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """A timm classifier with a modulator after each chosen stage."""
    if pretrained_file:
        timm_kwargs["pretrained_cfg_overlay"] = {"file": pretrained_file}
        pretrained = True
    model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **timm_kwargs)
    if modulator in (None, "", "none"):
        return model
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"timm model {arch!r} has no feature_info; cannot place modulators by stage")
    for stage in modulator_stages:
        if not 0 <= stage < len(info):
            raise ValueError(f"{arch}: stage {stage} out of range 0..{len(info) - 1}")
        path, chs = info[stage]["module"], info[stage]["num_chs"]
        _set_submodule(
            model,
            path,
            nn.Sequential(model.get_submodule(path), create_modulator(modulator, chs, **(modulator_opts or {}))),
        )
    return model
