"""Fuse every re-parameterisable block of a model for deployment."""

from __future__ import annotations

import copy

import torch.nn as nn
import torch.nn.functional as F


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
    says what remains.
    """
    from torch.fx.experimental.optimization import fuse

    model.eval()  # the untraceable one is measured as it is, in eval mode too
    try:
        return fuse(_plain_batchnorm(copy.deepcopy(model)).eval(), inplace=True)
    except Exception:  # noqa: BLE001  (an untraceable model is measured as it is; batchnorm_left tells)
        return model


def _plain_batchnorm(model: nn.Module) -> nn.Module:
    """timm's ``BatchNormAct2d`` (CBAM's spatial branch, say) as a plain ``nn.BatchNorm2d`` followed by its
    dropout and activation: fx traces through a BatchNorm subclass from outside ``torch.nn``, leaving a
    ``batch_norm`` call that ``fuse`` does not fold, so the swap lets its BN fold like any other."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d) and type(child) is not nn.BatchNorm2d and hasattr(child, "act"):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.load_state_dict({k: v for k, v in child.state_dict().items() if k in bn.state_dict()})
            after = [
                m for m in (getattr(child, "drop", None), child.act) if m is not None and not isinstance(m, nn.Identity)
            ]
            setattr(model, name, nn.Sequential(bn, *after) if after else bn)
        else:
            _plain_batchnorm(child)
    return model


def batchnorm_left(model: nn.Module) -> int:
    """How many BatchNorm layers a deployed model still runs: modules, and in a ``torch.fx`` graph the
    ``batch_norm`` calls that tracing inlined (a BatchNorm subclass fx traced through)."""
    modules = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    graph = getattr(model, "graph", None)
    calls = sum(n.op == "call_function" and n.target is F.batch_norm for n in graph.nodes) if graph is not None else 0
    return modules + calls


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
