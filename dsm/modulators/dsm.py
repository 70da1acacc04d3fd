"""Decomposed Spatial Modulator: Y = X * sigmoid(h(D(g(X)))), no pooling anywhere.

g aggregates context with one large-kernel convolution that also reduces C -> C/r
(re-parameterisable: k x k and 1 x 1 conv+BN branches fused for deployment), D is
spatial dropout, h compresses to a single-channel score map with a 3 x 3 conv.
The map keeps the full H x W grid, which is where expression cues live.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dsm.layers import RepConv
from dsm.registry import register_modulator

_GATES = {"sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid}


@register_modulator("dsm")
class DecomposedSpatialModulator(nn.Module):
    """The paper's modulator; every ablation of the design is a constructor option.

    Args:
        channels: input channels C.
        kernel_size: context kernel k of g (paper: 7).
        reduction: r in C -> C/r (paper: 8).
        depthwise: g as depthwise k x k then 1 x 1 C -> C/r instead of one dense k x k conv.
        dropout: Dropout2d probability inside the branch (D) and, if ``output_dropout``, on Y.
        output_dropout: apply the same spatial dropout to the modulated output (authors' code).
        gate: "sigmoid" or "hard_sigmoid".
        rep: train g with a parallel 1 x 1 branch that is fused away for deployment.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        reduction: int = 8,
        depthwise: bool = False,
        dropout: float = 0.2,
        output_dropout: bool = True,
        gate: str = "sigmoid",
        rep: bool = True,
    ) -> None:
        super().__init__()
        if gate not in _GATES:
            raise ValueError(f"gate must be one of {sorted(_GATES)}, got {gate!r}")
        hidden = max(channels // reduction, 1)
        if depthwise:
            self.context = nn.Sequential(
                RepConv(channels, channels, kernel_size, groups=channels, act=False, use_scale=rep, use_identity=rep),
                RepConv(channels, hidden, 1, act=True, use_identity=False),
            )
        else:
            self.context = RepConv(channels, hidden, kernel_size, act=True, use_scale=rep, use_identity=False)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.score = nn.Conv2d(hidden, 1, 3, padding=1, bias=False)
        self.gate = _GATES[gate]()
        self.out_drop = nn.Dropout2d(dropout) if dropout > 0 and output_dropout else nn.Identity()

    def gate_map(self, x: torch.Tensor) -> torch.Tensor:
        """The N x 1 x H x W gate in [0, 1] that multiplies ``x``. In train mode the spatial dropout
        is active, so call ``.eval()`` first for the deterministic map the deployed model uses."""
        return self.gate(self.score(self.drop(self.context(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_drop(x * self.gate_map(x))
