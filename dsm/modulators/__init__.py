"""Feature modulators, one per file, all built through ``dsm.create_modulator(name, channels, **opts)``."""

from dsm.modulators import bam, cbam, coord, eca, gam, identity, lka, se, simam  # noqa: F401
from dsm.modulators.dsm import DecomposedSpatialModulator

__all__ = ["DecomposedSpatialModulator"]
