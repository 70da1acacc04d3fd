"""SimAM (Yang et al., 2021): parameter-free energy-based 3-D attention (uses per-channel spatial means)."""

from __future__ import annotations

import torch
import torch.nn as nn

from dsm.registry import register_modulator


@register_modulator("simam")
class SimAM(nn.Module):
    def __init__(self, channels: int, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        energy = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(energy)
