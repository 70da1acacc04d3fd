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


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every convolution -> BatchNorm pair folded into one convolution (eval mode).

    ``reparameterize`` fuses the blocks that know how; the plain Conv+BN of other networks (timm's
    ResNet, the BN inside BAM, CBAM, CA or GAM) is folded here, as any deployment runtime would,
    so a latency comparison does not charge them a BatchNorm pass that DSM does not pay. Returns a
    ``torch.fx`` graph module, or ``model`` itself when it cannot be traced; ``batchnorm_left``
    says what remains (subclasses such as timm's ``BatchNormAct2d`` are not matched).
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval())
    except Exception:  # noqa: BLE001  (an untraceable model is measured as it is; batchnorm_left tells)
        return model


def batchnorm_left(model: nn.Module) -> int:
    """How many BatchNorm layers a deployed model still runs."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


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
