"""Squeeze-and-Excitation (Hu et al., 2018): global average pool -> MLP -> channel gate. timm's layer."""

from __future__ import annotations

from timm.layers.squeeze_excite import SEModule

from dsm.registry import register_modulator


@register_modulator("se")
class SE(SEModule):
    def __init__(self, channels: int, reduction: int = 16, **opts: object) -> None:
        super().__init__(channels, rd_ratio=1.0 / reduction, **opts)
