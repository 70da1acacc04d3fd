"""Fuse every re-parameterisable block of a model for deployment."""

from __future__ import annotations

import copy

import torch.nn as nn


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return an eval-mode copy (or the model itself) with every re-parameterisable block fused.

    Both conventions take part, so a dsm modulator inside a timm backbone is deployed with the
    backbone fused too: dsm's layers (and user layers) whose ``fuse()`` fuses in place, and timm's,
    whose ``fuse()`` returns the fused module (LeViT, EfficientViT) or whose ``reparameterize()`` /
    ``switch_to_deploy()`` fuse in place (RepVGG, MobileOne, FastViT), walked as
    ``timm.utils.reparameterize_model`` walks them.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    _fuse_children(model)
    return model.eval()


def _fuse_children(parent: nn.Module) -> None:
    for name, child in list(parent.named_children()):
        if callable(fuse := getattr(child, "fuse", None)):
            fused = fuse()
            if isinstance(fused, nn.Module) and fused is not child:
                setattr(parent, name, fused)
                child = fused
        elif callable(rep := getattr(child, "reparameterize", None) or getattr(child, "switch_to_deploy", None)):
            rep()
        _fuse_children(child)
