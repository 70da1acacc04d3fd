"""Coordinate Attention (Hou et al., 2021): pools along H and W separately. timm's layer."""

from __future__ import annotations

from timm.layers.coord_attn import CoordAttn

from dsm.registry import register_modulator


@register_modulator("ca")
class CoordinateAttention(CoordAttn):
    def __init__(self, channels: int, reduction: int = 32, **opts: object) -> None:
        super().__init__(channels, rd_ratio=1.0 / reduction, **opts)
