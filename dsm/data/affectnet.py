"""AffectNet (manually annotated part): the official CSVs + images, the later ``train_set``/``val_set``
distribution (cropped faces with ``annotations/<id>_exp.npy``), or a class-folder re-packaging.

AffectNet's test set is not public, so (as in the literature) its validation set is
used as the test split; train has no validation split (the protocols carve one out).
Expressions 8..10 (none, uncertain, non-face) are dropped; ``--classes 7`` also drops
contempt. Faces are cropped with the CSV's face box and resized to ``--size`` RGB.

The release's validation.csv often has no header row (training.csv has one): a CSV whose
first row lacks ``subDirectory_filePath`` is read as the 9 release columns. The image tar
often extracts to ``Manually_Annotated_Images/Manually_Annotated_Images/``: the image root
is the ``Manually_Annotated_Images/`` folder under which the CSV's paths exist (the first
listed image found under one decides).
A re-packaging with ``train/``, ``val/`` and ``test/`` class folders keeps its three splits;
with only ``train/`` and ``val/``, ``val/`` is the validation set and becomes the test split.
"""

from __future__ import annotations

import argparse
import io
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dsm.data.build import Record, check_out, image_side, write_records
from dsm.data.format import DataError
from dsm.data.images import crop_box, decode_image, resize
from dsm.data.sources import FileSource, Source, find_prefix, is_image_name, open_source, stem, walk_class_folders
from dsm.errors import one_line

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
SPLIT_DIRS = {"train": "train", "val": "test"}  # split folder -> split, without a test/ folder
SPLIT_DIRS_WITH_TEST = {"train": "train", "val": "val", "test": "test"}
CSV_COLUMNS = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression"]
# the columns of the release CSVs, for one without a header row (usually validation.csv)
RELEASE_COLUMNS = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
                   "expression", "valence", "arousal"]  # fmt: skip
IMAGE_DIR = "Manually_Annotated_Images/"
TEST_NOTE = "AffectNet's test set is not public: its validation set (validation.csv or val/) is the test split"
SPLITS_NOTE = "class folders train/, val/ and test/: the re-packaging's own splits are kept as they are"
NPY_SPLITS = {"train_set": "train", "val_set": "test"}  # the later distribution: its validation set is the test split
LAYOUT_HELP = (
    "expected training.csv + validation.csv + Manually_Annotated_Images/, train_set/ and val_set/ with images/ and "
    "annotations/*_exp.npy, or class folders train/<class>/*.jpg and val/<class>/*.jpg (and optionally test/)"
)

Row = tuple[int, str, tuple[int, int, int, int], str]  # line, image path in the CSV, face box, class


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=image_side, default=112, help="output side in pixels (RGB)")
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
        records, layout, test_is_validation = _official_records(src), "official-csv", True
        if records is None:
            records, layout = _npy_records(src), "official-npy"
        if records is None:
            items = walk_class_folders(src, FOLDERS, SPLIT_DIRS_WITH_TEST, what="affectnet layout")
            if items is None:
                raise DataError(f"{src.path}: unexpected layout for affectnet: {LAYOUT_HELP}")
            test_is_validation = not any(it.split_dir == "test" for it in items)
            splits = SPLIT_DIRS if test_is_validation else SPLIT_DIRS_WITH_TEST
            records = [Record(it.name, FOLDERS[it.class_dir], splits[it.split_dir], key=(it.name, None))
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
            extra={"layout": layout, "options": {"size": size, "classes": classes},
                   "test_is_validation": test_is_validation,
                   "notes": [TEST_NOTE if test_is_validation else SPLITS_NOTE,
                             "expressions 8..10 (none, uncertain, non-face) dropped"
                             + ("; contempt dropped (7 classes)" if classes == 7 else "")]},
        )  # fmt: skip


def _official_records(src: Source) -> list[Record] | None:
    prefix = find_prefix(src.names, r"training\.csv")
    if prefix is None:
        return None
    if not src.exists(prefix + "validation.csv"):
        if isinstance(src, FileSource):  # --source named training.csv itself
            raise DataError(f"{src.path}: pass the folder holding training.csv, validation.csv and {IMAGE_DIR}")
        raise DataError(f"{src.describe(prefix + 'validation.csv')}: missing label file (next to training.csv)")
    roots = _image_roots(src.names)
    if not roots:
        raise DataError(f"{src.path}: missing image folder {IMAGE_DIR}")
    train = _csv_rows(src, prefix + "training.csv")
    test = _csv_rows(src, prefix + "validation.csv")
    # nested copies (Manually_Annotated_Images/Manually_Annotated_Images/): the root under which the first
    # listed image that exists at all is found (so a missing image is then named under the right root)
    root = next((r for _, path, _, _ in itertools.chain(train, test) for r in roots if src.exists(r + path)), roots[0])
    records = []
    for name, rows, split in ((prefix + "training.csv", train, "train"), (prefix + "validation.csv", test, "test")):
        for line, path, (x, y, w, h), label in rows:
            image = root + path
            if not src.exists(image):
                raise DataError(f"{src.describe(image)}: missing (listed in {name.rsplit('/', 1)[-1]} line {line})")
            records.append(Record(image, label, split, key=(image, (x, y, x + w, y + h))))
    return records


def _npy_records(src: Source) -> list[Record] | None:
    """The later distribution: ``train_set/`` and ``val_set/``, each with ``images/<id>.jpg`` (faces already
    cropped) and ``annotations/<id>_exp.npy`` (the expression code, a NumPy scalar, often a string); None
    when the source has no such annotations."""
    prefix = find_prefix(src.names, r"(?:train_set|val_set)/annotations/[^/]+_exp\.npy")
    if prefix is None:
        return None
    records = []
    for folder, split in NPY_SPLITS.items():
        annotations, images = f"{prefix}{folder}/annotations/", f"{prefix}{folder}/images/"
        labels = [n for n in src.names if n.startswith(annotations) and n.endswith("_exp.npy")]
        if not labels:
            raise DataError(f"{src.describe(annotations)}: no *_exp.npy labels (train_set/ and val_set/ need them)")
        by_id = {stem(n): n for n in src.names if n.startswith(images) and is_image_name(n)}
        for name in labels:
            ident = name[len(annotations) : -len("_exp.npy")]
            code = _npy_code(src, name)
            if code in DROPPED_CODES:
                continue
            if (image := by_id.get(ident)) is None:
                raise DataError(f"{src.describe(images + ident + '.jpg')}: missing (labelled in {name})")
            records.append(Record(image, CODES[code], split, key=(image, None)))
    return records


def _npy_code(src: Source, name: str) -> int:
    """The expression code in an ``_exp.npy`` file: 0..10, stored as a number or as its text."""
    data = src.read(name)
    if not data.startswith(b"\x93NUMPY"):
        raise DataError(f"{src.describe(name)}: not a .npy file")
    try:
        value = np.load(io.BytesIO(data), allow_pickle=False)
        code = int(value.item()) if value.size == 1 else None
    except (ValueError, TypeError, OSError, EOFError) as e:
        raise DataError(f"{src.describe(name)}: not a NumPy expression code ({one_line(e)})") from None
    if code is None or not 0 <= code <= 10:
        raise DataError(f"{src.describe(name)}: expression {value.tolist()!r} outside 0..10")
    return code


def _image_roots(names: list[str]) -> list[str]:
    """Every ``.../Manually_Annotated_Images/`` folder holding files, shortest first."""
    roots = {n[: m.end()] for n in names if IMAGE_DIR in n for m in re.finditer(rf"(?:^|(?<=/)){IMAGE_DIR}", n)}
    return sorted(roots, key=lambda r: (len(r), r))


def _csv_rows(src: Source, name: str) -> list[Row]:
    """The rows of a kept expression (0..7), with header or without (the 9 release columns)."""
    where = src.describe(name)
    try:
        df = pd.read_csv(
            io.BytesIO(src.read(name)), header=None, dtype=str, keep_default_na=False, skip_blank_lines=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: not a readable CSV ({one_line(e)})") from None
    first = [str(v).strip() for v in df.iloc[0]] if len(df) else []
    if CSV_COLUMNS[0] in first:  # a header row: data from line 2
        df, start = df.iloc[1:].set_axis(first, axis=1), 2
    elif len(df.columns) == len(RELEASE_COLUMNS):  # no header row: data from line 1
        df, start = df.set_axis(RELEASE_COLUMNS, axis=1), 1
    else:
        raise DataError(
            f"{where}: unexpected layout: no header row with {CSV_COLUMNS[0]}, and {len(df.columns)} columns "
            f"instead of the {len(RELEASE_COLUMNS)} of a headerless AffectNet CSV ({', '.join(RELEASE_COLUMNS)})"
        )
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: unexpected layout: missing columns {missing}")
    rows = []
    for i, row in enumerate(df[CSV_COLUMNS].itertuples(index=False), start=start):  # blank lines kept: i is the line
        path, *box_text, expr = (str(v).strip() for v in row)
        if not path and not expr and not any(box_text):
            continue  # a blank line
        if not re.fullmatch(r"-?\d+", expr) or not 0 <= int(expr) <= 10:
            raise DataError(f"{where} line {i}: expression {expr!r} outside 0..10")
        if int(expr) in DROPPED_CODES:
            continue
        try:
            x, y, w, h = (round(float(v)) for v in box_text)
        except (ValueError, OverflowError):  # not a number, or inf
            raise DataError(f"{where} line {i}: face box {box_text} is not numeric") from None
        if w <= 0 or h <= 0:
            raise DataError(f"{where} line {i}: empty face box {box_text}")
        rows.append((i, path, (x, y, w, h), CODES[int(expr)]))
    return rows
