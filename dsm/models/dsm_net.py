"""The authors' network ("ProposedNet"), registered as ``dsm_net``.

A small RepVGG-style CNN: RepConv stem, three stages of inverted-residual blocks
(depthwise 7x7 -> 1x1 expand -> 1x1 project, all re-parameterisable), one
modulator after stage 2, a 1x1 expansion to 512, global pooling and a linear
head. The modulator slot takes any registered modulator (or none), which is how
the paper compares modules at equal backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from dsm.layers import RepConv
from dsm.registry import create_modulator, register_model


class RepBlock(nn.Module):
    """Depthwise 7x7 -> 1x1 expand (ReLU) -> 1x1 project, plus the residual."""

    def __init__(self, channels: int, expansion: int = 5, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = channels * expansion
        self.dw = RepConv(channels, channels, kernel_size, groups=channels, act=False)
        self.expand = RepConv(channels, hidden, 1, act=True)
        self.project = RepConv(hidden, channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.expand(self.dw(x)))


class DSMNet(nn.Module):
    """Stem -> stage 1 -> [down] stage 2 -> modulator -> [down] stage 3 -> head.

    ``modulator_after`` lists the stages (1-based) followed by a modulator; the
    paper uses ``(2,)``. ``modulator_opts`` go to the modulator's constructor.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 3,
        depths: Sequence[int] = (1, 4, 2),
        channels: Sequence[int] = (48, 96, 160),
        expansion: int = 5,
        head_chs: int = 512,
        drop_rate: float = 0.2,
        modulator: str | None = "dsm",
        modulator_after: Sequence[int] = (2,),
        modulator_opts: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if bad := [s for s in modulator_after if not 1 <= s <= len(depths)]:  # else no modulator, silently
            raise ValueError(f"modulator_after: stage {bad[0]} out of range 1..{len(depths)} (stages count from 1)")
        c0 = channels[0]
        self.num_classes, self.in_chans = num_classes, in_chans
        self.stem = nn.Sequential(RepConv(in_chans, c0 // 2, 3, stride=2), RepConv(c0 // 2, c0, 3))
        stages: list[nn.Module] = []
        prev = c0
        for i, (depth, chs) in enumerate(zip(depths, channels, strict=True)):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(RepConv(prev, chs, 3, stride=2))
            layers += [RepBlock(chs, expansion) for _ in range(depth)]
            if i + 1 in modulator_after:
                layers.append(create_modulator(modulator, chs, **(modulator_opts or {})))
            stages.append(nn.Sequential(*layers))
            prev = chs
        self.stages = nn.Sequential(*stages)
        self.head = RepConv(prev, head_chs, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(head_chs, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.forward_features(x)).flatten(1)))


@register_model
def dsm_net(**kwargs: Any) -> DSMNet:
    """The paper's network with one modulator (default: DSM) after stage 2."""
    return DSMNet(**kwargs)
