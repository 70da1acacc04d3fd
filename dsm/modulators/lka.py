"""Large Kernel Attention from VAN (Guo et al., 2022): 5x5 depthwise, 7x7 depthwise dilated 3,
1x1 pointwise; the result multiplies the input (no sigmoid, no pooling)."""

from __future__ import annotations

import torch
import torch.nn as nn

from dsm.registry import register_modulator


@register_modulator("lka")
class LKA(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.dw_dilated = nn.Conv2d(channels, channels, 7, padding=9, dilation=3, groups=channels)
        self.pw = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.pw(self.dw_dilated(self.dw(x)))
