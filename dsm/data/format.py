"""The one prepared format every preparer writes and the engine reads.

A prepared data set is a directory::

    images.npy     uint8, N x H x W (gray) or N x H x W x 3 (RGB), memory-mappable
    labels.npy     int64, N, indices into manifest["classes"]
    meta.csv       index, source, label, split, fold, subject (one row per image)
    manifest.json  dataset, classes, per-split and per-class counts, image size,
                   source checksum, preparer version

Class names are canonical across data sets (``CANONICAL_CLASSES``); each data set
lists the ones it has, in canonical order, so models move between data sets by name.
``PreparedWriter`` builds everything in a temporary sibling directory and renames it
into place only on success: a failed preparation leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd

from dsm.errors import missing_parents, remove_empty

CANONICAL_CLASSES = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
SPLITS = ("train", "val", "test")
META_COLUMNS = ("index", "source", "label", "split", "fold", "subject")
FORMAT_VERSION = 1


class DataError(Exception):
    """Bad input: the message names the file and the problem, on one line."""


def canonical_order(names: set[str] | list[str]) -> list[str]:
    """Sort canonical class names into canonical order (rejects unknown names)."""
    unknown = set(names) - set(CANONICAL_CLASSES)
    if unknown:
        raise ValueError(f"not canonical class names: {sorted(unknown)}")
    return [c for c in CANONICAL_CLASSES if c in set(names)]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_hash(manifest: dict, legacy: bool = False) -> str:
    """A stable hash of what was prepared: the same download prepared anywhere, at any time, hashes the same
    (the creation time and the source path are left out; the source's sha256 stays in).

    ``legacy=True`` is the hash dsm 0.1 wrote into run records, which also covered the source path; run
    records carrying it are still recognised (``Prepared.hashes``)."""
    drop = {"created"} if legacy else {"created", "source"}
    body = {k: v for k, v in manifest.items() if k not in drop}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Prepared:
    """A prepared data set, images memory-mapped."""

    root: Path
    images: np.ndarray
    labels: np.ndarray
    manifest: dict

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else self.images.shape[3]

    @cached_property
    def meta(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "meta.csv", keep_default_na=False)

    @property
    def hash(self) -> str:
        return manifest_hash(self.manifest)

    @property
    def hashes(self) -> set[str]:
        """Every hash a run record of this data may carry (the current one and the legacy one)."""
        return {self.hash, manifest_hash(self.manifest, legacy=True)}

    def split_indices(self, split: str) -> np.ndarray:
        """Indices of the official ``split`` (train, val or test)."""
        return np.flatnonzero(self.meta["split"].to_numpy() == split)

    @cached_property
    def withheld(self) -> np.ndarray:
        """Rows whose pixels this copy does not hold (zeros in ``images.npy``), listed by split in
        ``withheld.json``: a copy sent to a machine without the test images. Empty for a whole set."""
        path = self.root / WITHHELD
        if not path.is_file():
            return np.empty(0, dtype=np.int64)
        try:
            splits = json.loads(path.read_text())["splits"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not readable as {{'splits': [...]}} ({_reason(e)})") from None
        return np.flatnonzero(np.isin(self.meta["split"].to_numpy(), splits))


WITHHELD = "withheld.json"  # {"splits": ["test"]}: this copy's images of those splits are zeros


def load_prepared(root: str | Path) -> Prepared:
    """Open a prepared directory, checking that its parts agree."""
    root = Path(root)
    for name in ("images.npy", "labels.npy", "meta.csv", "manifest.json"):
        if not (root / name).is_file():
            raise DataError(f"{root / name}: missing (is {root} a prepared data set? see data_scripts/prepare.py)")
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{root / 'manifest.json'}: not readable as JSON ({_reason(e)})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("classes"), list):
        raise DataError(f"{root / 'manifest.json'}: no 'classes' list (not a prepared data set's manifest)")
    images = _load_array(root / "images.npy", mmap_mode="r")
    labels = _load_array(root / "labels.npy")
    shape_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)
    if images.dtype != np.uint8 or not shape_ok or 0 in images.shape[1:] or len(images) != len(labels):
        raise DataError(f"{root / 'images.npy'}: expected uint8 N x H x W[x3] matching {len(labels)} labels")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):  # 1.2 must not become class 1 silently
        raise DataError(
            f"{root / 'labels.npy'}: expected one integer class index per image, got {labels.dtype} "
            f"of shape {labels.shape}"
        )
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(manifest["classes"]):
        raise DataError(f"{root / 'labels.npy'}: label outside 0..{len(manifest['classes']) - 1}")
    prepared = Prepared(root, images, labels, manifest)
    try:
        meta = prepared.meta
    except (OSError, ValueError) as e:
        raise DataError(f"{root / 'meta.csv'}: not readable as CSV ({_reason(e)})") from None
    if missing := [c for c in META_COLUMNS if c not in meta.columns]:
        raise DataError(f"{root / 'meta.csv'}: missing columns {missing}")
    if len(meta) != len(labels):
        raise DataError(f"{root / 'meta.csv'}: {len(meta)} rows for {len(labels)} images")
    if not pd.api.types.is_integer_dtype(meta["fold"]):  # -1 where a data set has no folds
        raise DataError(f"{root / 'meta.csv'}: column 'fold' must hold whole numbers (-1 for none)")
    return prepared


def _reason(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())


def _load_array(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode)
    except (OSError, ValueError, EOFError) as e:  # truncated, not an .npy, unreadable
        raise DataError(f"{path}: not a readable .npy array ({_reason(e)})") from None


class PreparedWriter:
    """Write a prepared data set atomically.

    >>> with PreparedWriter(out, n, (48, 48), "fer2013", classes, source) as w:
    ...     w.add(image, "happiness", "train", source="train/happy/1.jpg")
    """

    def __init__(
        self,
        out: str | Path,
        n: int,
        image_shape: tuple[int, ...],
        dataset: str,
        classes: list[str],
        source: str | Path | None = None,
        source_sha256: str | None = None,
        preparer_version: str = "1",
        overwrite: bool = False,
        extra: dict | None = None,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise DataError(f"{self.out}: already exists (pass --overwrite to replace it)")
        self.classes = canonical_order(classes)
        if list(classes) != self.classes:
            raise ValueError(f"classes must be in canonical order: {self.classes}")
        self.n, self.image_shape, self.dataset = n, tuple(image_shape), dataset
        self.source, self.source_sha256 = source, source_sha256
        self.preparer_version, self.overwrite, self.extra = preparer_version, overwrite, extra or {}
        self._rows: list[tuple] = []

    def __enter__(self) -> PreparedWriter:
        # the parent folders this writer creates, deepest first: removed again if preparing fails
        self._made = missing_parents(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        # not tempfile.mkdtemp: its 0700 mode would make the prepared directory private
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:12]}"
        self.tmp.mkdir()
        self.images = np.lib.format.open_memmap(
            self.tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(self.n, *self.image_shape)
        )
        self.labels = np.zeros(self.n, dtype=np.int64)
        return self

    def add(self, image: np.ndarray, label: str, split: str, source: str, fold: int = -1, subject: str = "") -> None:
        i = len(self._rows)
        if i >= self.n:
            raise DataError(f"{source}: more images than the {self.n} announced")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if image.shape != self.image_shape or image.dtype != np.uint8:
            raise DataError(f"{source}: image is {image.dtype} {image.shape}, expected uint8 {self.image_shape}")
        self.images[i] = image
        self.labels[i] = self.classes.index(label)
        self._rows.append((i, source, label, split, fold, subject))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self.tmp.exists():
                shutil.rmtree(self.tmp, ignore_errors=True)
            if exc_type is not None or not self.out.exists():
                remove_empty(self._made)

    def _finish(self) -> None:
        if len(self._rows) != self.n:
            raise DataError(f"{self.source}: wrote {len(self._rows)} images, expected {self.n}")
        self.images.flush()
        del self.images
        np.save(self.tmp / "labels.npy", self.labels)
        meta = pd.DataFrame(self._rows, columns=list(META_COLUMNS))
        meta.to_csv(self.tmp / "meta.csv", index=False)
        counts = {s: int((meta["split"] == s).sum()) for s in SPLITS}
        per_class = {
            s: {c: int(((meta["split"] == s) & (meta["label"] == c)).sum()) for c in self.classes} for s in SPLITS
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "classes": self.classes,
            "num_images": self.n,
            "splits": counts,
            "class_counts": per_class,
            "image_size": list(self.image_shape[:2]),
            "channels": 1 if len(self.image_shape) == 2 else self.image_shape[2],
            "source": str(self.source) if self.source is not None else None,
            "source_sha256": self.source_sha256,
            "preparer_version": self.preparer_version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.extra,
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if self.out.exists():
            shutil.rmtree(self.out)
        self.tmp.rename(self.out)
