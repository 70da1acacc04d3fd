"""Fuse every re-parameterisable block of a model for deployment."""

from __future__ import annotations

import copy

import torch.nn as nn


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return an eval-mode copy (or the model itself) with every ``fuse()``-able block fused.

    Any module that defines ``fuse()`` takes part, so user layers can join in.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for m in list(model.modules()):
        fuse = getattr(m, "fuse", None)
        if callable(fuse) and m is not model:
            fuse()
    return model
