"""The no-modulator baseline, so "none" goes through the same registry as the rest."""

from __future__ import annotations

import torch.nn as nn

from dsm.registry import register_modulator


@register_modulator("none")
class NoModulator(nn.Identity):
    def __init__(self, channels: int, **_: object) -> None:
        super().__init__()
