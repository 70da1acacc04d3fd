"""GAM-style pooling-free modulator (Liu et al., 2021): a per-pixel channel MLP, then a
7x7 conv C -> C/r -> C spatial gate. Keeps the grid, at the cost of wide convolutions."""

from __future__ import annotations

import torch
import torch.nn as nn

from dsm.registry import register_modulator


@register_modulator("gam")
class GAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 4, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channel = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        pad = kernel_size // 2
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size, padding=pad),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size, padding=pad),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.channel(x))
        return x * torch.sigmoid(self.spatial(x))
