"""BAM (Park et al., 2018): parallel pooled channel MLP and dilated spatial branch, Y = X(1 + sigmoid(Mc + Ms))."""

from __future__ import annotations

import torch
import torch.nn as nn

from dsm.registry import register_modulator


@register_modulator("bam")
class BAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            *[
                m
                for _ in range(2)
                for m in (
                    nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                    nn.BatchNorm2d(hidden),
                    nn.ReLU(inplace=True),
                )
            ],
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + torch.sigmoid(self.channel(x) + self.spatial(x)))
