"""RAF-DB basic: the official release or the ``{train,test}/{1..7}/`` re-packaging.

The official release is a label list plus aligned 100x100 RGB faces.

RAF-DB has no validation split: ``val`` stays empty and the protocols carve one out of
train (see ``dsm.data.protocols``).
"""

from __future__ import annotations

import argparse
import contextlib
import re
from pathlib import Path

import numpy as np

from dsm.data.build import Record, check_out, image_side, write_records
from dsm.data.format import DataError
from dsm.data.images import decode_image, resize
from dsm.data.sources import Source, ZipSource, find_prefix, open_source, stem, walk_class_folders

NAME = "rafdb"
VERSION = "1"
CLASSES = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]
LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
# per-class counts of the release (RAF-DB paper, Table of the basic set): a re-packaging with swapped
# class folders keeps the split totals, so only these catch it
OFFICIAL_CLASS_COUNTS = {
    "train": {"surprise": 1290, "fear": 281, "disgust": 717, "happiness": 4772, "sadness": 1982, "anger": 705,
              "neutral": 2524},
    "test": {"surprise": 329, "fear": 74, "disgust": 160, "happiness": 1185, "sadness": 478, "anger": 162,
             "neutral": 680},
}  # fmt: skip
OFFICIAL_COUNTS = {"val": 0} | {s: sum(c.values()) for s, c in OFFICIAL_CLASS_COUNTS.items()}  # 12271 / 0 / 3068
LABEL_FILE = "EmoLabel/list_patition_label.txt"  # sic: the release's spelling
ALIGNED_ZIP = "Image/aligned.zip"  # the faces as the release ships them
LAYOUT_HELP = (
    f"expected {LABEL_FILE} + Image/aligned/*_aligned.jpg (or {ALIGNED_ZIP}), or {{train,test}}/{{1..7}}/*.jpg"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=image_side, default=100, help="output side in pixels (RGB; the release is 100x100)")


def prepare(
    source: str | Path,
    out: str | Path,
    *,
    size: int = 100,
    overwrite: bool = False,
    allow_mismatch: bool = False,
    progress: bool = True,
) -> Path:
    out = check_out(out, overwrite)
    with open_source(source) as src, contextlib.ExitStack() as stack:
        basic, layout = _basic_records(src), "basic"
        records, faces = basic if basic is not None else (None, src)
        if faces is not src:
            stack.callback(faces.close)
        if records is None:
            items = walk_class_folders(src, [str(k) for k in LABELS], ("train", "test"), what="rafdb layout")
            if items is None:
                if find_prefix(src.names, r"Image/aligned(?:/[^/]+|\.zip)") is not None:  # "" when at the root
                    raise DataError(f"{src.path}: missing label file {LABEL_FILE}")
                raise DataError(f"{src.path}: unexpected layout for rafdb: {LAYOUT_HELP}")
            records = [Record(it.name, LABELS[int(it.class_dir)], it.split_dir, key=it.name) for it in items]
            layout = "split-class-folders"

        def load(r: Record) -> np.ndarray:
            return resize(decode_image(faces.read(r.key), faces.describe(r.key), color=True), size)

        return write_records(
            records, load, out, dataset=NAME, classes=CLASSES, image_shape=(size, size, 3), source=src.path,
            source_sha256=src.checksum(), official_counts=OFFICIAL_COUNTS, official_class_counts=OFFICIAL_CLASS_COUNTS,
            allow_mismatch=allow_mismatch, overwrite=overwrite, version=VERSION, progress=progress,
            extra={"layout": layout, "options": {"size": size},
                   "notes": ["RAF-DB has no official validation split: val is empty (carved from train by the "
                             "protocols)"]},
        )  # fmt: skip


def _aligned_faces(src: Source, prefix: str) -> tuple[Source, str]:
    """Where the aligned faces are, and the folder they are in: extracted under ``Image/aligned/``, or still
    in ``Image/aligned.zip`` as the release ships them (then a source of its own, read in memory)."""
    inner = f"{prefix}{ALIGNED_ZIP}"
    if any(n.startswith(f"{prefix}Image/aligned/") for n in src.names) or not src.exists(inner):
        return src, f"{prefix}Image/aligned/"
    faces = ZipSource(Path(inner), src.read(inner), where=src.describe(inner))
    return faces, find_prefix(faces.names, r"[^/]+_aligned\.jpg") or ""


def _basic_records(src: Source) -> tuple[list[Record], Source] | None:
    """Records from the official label list and the source that holds their faces, or None when the source
    has no label list."""
    prefix = find_prefix(src.names, re.escape(LABEL_FILE))
    if prefix is None:
        return None
    faces, folder = _aligned_faces(src, prefix)
    label_file = prefix + LABEL_FILE
    where = src.describe(label_file)
    records = []
    for lineno, line in enumerate(src.read(label_file).decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{where} line {lineno}: expected '<name>.jpg <label>', got {line.strip()!r}")
        name, code = parts[0], int(parts[1])
        if code not in LABELS:
            raise DataError(f"{where} line {lineno}: label {code} outside 1..7")
        split = name.split("_", 1)[0]
        if split not in ("train", "test"):
            raise DataError(f"{where} line {lineno}: {name!r} does not start with train_ or test_")
        image = f"{folder}{stem(name)}_aligned.jpg"
        if not faces.exists(image):
            if faces is not src:
                faces.close()
            raise DataError(f"{faces.describe(image)}: missing (listed in {LABEL_FILE} line {lineno})")
        source_name = image if faces is src else f"{prefix}{ALIGNED_ZIP}:{image}"
        records.append(Record(source_name, LABELS[code], split, key=image))
    return records, faces
