"""Data: the prepared format, preparers, protocols and the fast tensor input path.

``prepare_dataset(name, source, out, **opts)`` turns a raw data set into the prepared
format (see ``dsm.data.format``); ``dsm.data.protocols.make_splits`` chooses the
train/val/test indices. Preparers import lazily so ``import dsm.data`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path


def prepare_dataset(name: str, source: str | Path | None, out: str | Path, **opts) -> Path:
    """Prepare data set ``name`` (fer2013, rafdb, ckplus, affectnet, jaffe, synthetic) into ``out``."""
    from dsm.data.prepare import prepare_dataset as _prepare

    return _prepare(name, source, out, **opts)


__all__ = ["prepare_dataset"]
