"""ECA (Wang et al., 2020): global pool -> 1-D conv across channels -> gate. timm's layer."""

from __future__ import annotations

from timm.layers.eca import EcaModule

from dsm.registry import register_modulator


@register_modulator("eca")
class ECA(EcaModule):
    def __init__(self, channels: int, **opts: object) -> None:
        super().__init__(channels, **opts)
