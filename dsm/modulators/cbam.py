"""CBAM (Woo et al., 2018): pooled channel MLP gate, then a 7x7 conv on pooled maps. timm's layer."""

from __future__ import annotations

from timm.layers.cbam import CbamModule

from dsm.registry import register_modulator


@register_modulator("cbam")
class CBAM(CbamModule):
    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, **opts: object) -> None:
        super().__init__(channels, rd_ratio=1.0 / reduction, spatial_kernel_size=kernel_size, **opts)
