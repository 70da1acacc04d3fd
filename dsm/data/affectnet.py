"""AffectNet (manually annotated part): the official CSVs + images, or a class-folder re-packaging.

AffectNet's test set is not public, so (as in the literature) its validation set is
used as the test split; train has no validation split (the protocols carve one out).
Expressions 8..10 (none, uncertain, non-face) are dropped; ``--classes 7`` also drops
contempt. Faces are cropped with the CSV's face box and resized to ``--size`` RGB.
"""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dsm.data.build import Record, check_out, positive_int, write_records
from dsm.data.format import DataError
from dsm.data.images import crop_box, decode_image, resize
from dsm.data.sources import Source, find_prefix, open_source, walk_class_folders

NAME = "affectnet"
VERSION = "1"
CODES = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]  # 0..7 kept
DROPPED_CODES = {8: "none", 9: "uncertain", 10: "non-face"}
# official sizes of the manually annotated training and validation sets
OFFICIAL_COUNTS = {8: {"train": 287651, "val": 0, "test": 4000}, 7: {"train": 283901, "val": 0, "test": 3500}}
# class folders of the re-packagings: English names or the codes 0..7
FOLDERS = {"neutral": "neutral", "happy": "happiness", "sad": "sadness", "surprise": "surprise", "fear": "fear",
           "disgust": "disgust", "anger": "anger", "contempt": "contempt"}  # fmt: skip
FOLDERS |= {str(i): c for i, c in enumerate(CODES)}
SPLIT_DIRS = {"train": "train", "val": "test"}
CSV_COLUMNS = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression"]
TEST_NOTE = "AffectNet's test set is not public: its validation set (validation.csv or val/) is the test split"
LAYOUT_HELP = (
    "expected training.csv + validation.csv + Manually_Annotated_Images/, or class folders train/<class>/*.jpg "
    "and val/<class>/*.jpg"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=positive_int, default=112, help="output side in pixels (RGB)")
    p.add_argument("--classes", type=int, choices=(7, 8), default=8, help="7 drops contempt")


def prepare(
    source: str | Path,
    out: str | Path,
    *,
    size: int = 112,
    classes: int = 8,
    overwrite: bool = False,
    allow_mismatch: bool = False,
    progress: bool = True,
) -> Path:
    if classes not in (7, 8):
        raise DataError(f"--classes must be 7 or 8, got {classes}")
    out = check_out(out, overwrite)
    keep = CODES[:classes]
    with open_source(source) as src:
        records, layout = _official_records(src), "official-csv"
        if records is None:
            items = walk_class_folders(src, FOLDERS, SPLIT_DIRS, what="affectnet layout")
            if items is None:
                raise DataError(f"{src.path}: unexpected layout for affectnet: {LAYOUT_HELP}")
            records = [Record(it.name, FOLDERS[it.class_dir], SPLIT_DIRS[it.split_dir], key=(it.name, None))
                       for it in items]  # fmt: skip
            layout = "class-folders"
        records = [r for r in records if r.label in keep]

        def load(r: Record) -> np.ndarray:
            name, box = r.key
            img = decode_image(src.read(name), src.describe(name), color=True)
            return resize(crop_box(img, box) if box else img, size)

        return write_records(
            records, load, out, dataset=NAME, classes=keep, image_shape=(size, size, 3), source=src.path,
            source_sha256=src.checksum(), official_counts=OFFICIAL_COUNTS[classes], allow_mismatch=allow_mismatch,
            overwrite=overwrite, version=VERSION, progress=progress,
            extra={"layout": layout, "options": {"size": size, "classes": classes}, "test_is_validation": True,
                   "notes": [TEST_NOTE, "expressions 8..10 (none, uncertain, non-face) dropped"
                             + ("; contempt dropped (7 classes)" if classes == 7 else "")]},
        )  # fmt: skip


def _official_records(src: Source) -> list[Record] | None:
    prefix = find_prefix(src.names, r"training\.csv")
    if prefix is None:
        return None
    if not src.exists(prefix + "validation.csv"):
        raise DataError(f"{src.describe(prefix + 'validation.csv')}: missing label file (next to training.csv)")
    images = find_prefix(src.names, r"Manually_Annotated_Images/.+")
    if images is None:
        raise DataError(f"{src.path}: missing image folder Manually_Annotated_Images/")
    return _csv_records(src, prefix + "training.csv", "train", images) + _csv_records(
        src, prefix + "validation.csv", "test", images
    )


def _csv_records(src: Source, name: str, split: str, images: str) -> list[Record]:
    where = src.describe(name)
    try:
        df = pd.read_csv(io.BytesIO(src.read(name)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: not a readable CSV ({' '.join(str(e).split())})") from None
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: unexpected layout: missing columns {missing}")
    records = []
    for i, row in enumerate(df[CSV_COLUMNS].itertuples(index=False), start=2):
        path, *box_text, expr = (str(v).strip() for v in row)
        if not re.fullmatch(r"-?\d+", expr) or not 0 <= int(expr) <= 10:
            raise DataError(f"{where} line {i}: expression {expr!r} outside 0..10")
        if int(expr) in DROPPED_CODES:
            continue
        try:
            x, y, w, h = (round(float(v)) for v in box_text)
        except ValueError:
            raise DataError(f"{where} line {i}: face box {box_text} is not numeric") from None
        if w <= 0 or h <= 0:
            raise DataError(f"{where} line {i}: empty face box {box_text}")
        image = f"{images}Manually_Annotated_Images/{path}"
        if not src.exists(image):
            raise DataError(f"{src.describe(image)}: missing (listed in {name.rsplit('/', 1)[-1]} line {i})")
        records.append(Record(image, CODES[int(expr)], split, key=(image, (x, y, x + w, y + h))))
    return records
