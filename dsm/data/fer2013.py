"""FER2013: the original ICML CSV or the image-folder re-packaging (zip or directory).

Splits follow the challenge: Training -> train, PublicTest -> val (model selection),
PrivateTest -> test. In the image-folder layout PublicTest and PrivateTest share the
``test/`` folder, so the split comes from the file-name prefix.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from dsm.data.build import Record, check_out, write_records
from dsm.data.format import DataError
from dsm.data.images import decode_image, resize
from dsm.data.sources import FileSource, Source, open_source, walk_class_folders
from dsm.errors import one_line

NAME = "fer2013"
VERSION = "1"
SOURCE_ENV = "DSM_FER2013_ZIP"
CLASSES = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]
# per-class counts of the official release (angry, disgust, ... in canonical names)
OFFICIAL_CLASS_COUNTS = {
    "train": {"anger": 3995, "disgust": 436, "fear": 4097, "happiness": 7215, "neutral": 4965, "sadness": 4830,
              "surprise": 3171},
    "val": {"anger": 467, "disgust": 56, "fear": 496, "happiness": 895, "neutral": 607, "sadness": 653,
            "surprise": 415},
    "test": {"anger": 491, "disgust": 55, "fear": 528, "happiness": 879, "neutral": 626, "sadness": 594,
             "surprise": 416},
}  # fmt: skip
OFFICIAL_COUNTS = {split: sum(c.values()) for split, c in OFFICIAL_CLASS_COUNTS.items()}  # 28709/3589/3589
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]  # CSV codes 0..6
FOLDERS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "neutral": "neutral",
           "sad": "sadness", "surprise": "surprise"}  # fmt: skip
USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIZE = 48
LAYOUT_HELP = (
    "expected the ICML CSV (emotion,pixels,Usage) or image folders train/<class>/Training_*.jpg and "
    "test/<class>/{PublicTest,PrivateTest}_*.jpg"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No FER2013-specific options."""


def prepare(
    source: str | Path, out: str | Path, *, overwrite: bool = False, allow_mismatch: bool = False, progress: bool = True
) -> Path:
    out = check_out(out, overwrite)
    with open_source(source) as src:
        records = None if isinstance(src, FileSource) else _folder_records(src)
        if records is not None:
            layout = "image-folders"

            def load(r: Record) -> np.ndarray:
                return resize(decode_image(src.read(r.key), src.describe(r.key)), SIZE)

        else:
            csv_name = _find_csv(src)
            if csv_name is None:
                raise DataError(f"{src.path}: unexpected layout for fer2013: {LAYOUT_HELP}")
            records, load = _csv_records(src, csv_name)
            layout = "icml-csv"
        return write_records(
            records, load, out, dataset=NAME, classes=CLASSES, image_shape=(SIZE, SIZE), source=src.path,
            source_sha256=src.checksum(), official_counts=OFFICIAL_COUNTS, official_class_counts=OFFICIAL_CLASS_COUNTS,
            allow_mismatch=allow_mismatch,
            overwrite=overwrite, version=VERSION, progress=progress,
            extra={"layout": layout, "notes": ["train = Training, val = PublicTest, test = PrivateTest"]},
        )  # fmt: skip


def _find_csv(src: Source) -> str | None:
    if isinstance(src, FileSource):
        return src.names[0]
    csvs = [n for n in src.names if n.lower().endswith(".csv")]
    preferred = [n for n in csvs if n.rsplit("/", 1)[-1].lower() in ("fer2013.csv", "icml_face_data.csv")]
    return (preferred or csvs or [None])[0]


def _folder_records(src: Source) -> list[Record] | None:
    items = walk_class_folders(src, FOLDERS, ("train", "test"), what="fer2013 layout")
    if items is None:
        return None
    records = []
    for it in items:
        usage = it.file.split("_", 1)[0]
        split = USAGE.get(usage)
        if split is None or (split == "train") != (it.split_dir == "train"):
            raise DataError(
                f"{src.describe(it.name)}: cannot tell the split: expected a Training_ file in train/ or a "
                "PublicTest_/PrivateTest_ file in test/"
            )
        records.append(Record(it.name, FOLDERS[it.class_dir], split, key=it.name))
    return records


def _csv_records(src: Source, name: str) -> tuple[list[Record], Callable[[Record], np.ndarray]]:
    """Records of the ICML CSV (labels and usage checked up front) and a loader parsing one row's pixels."""
    where = src.describe(name)
    try:
        df = pd.read_csv(io.BytesIO(src.read(name)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: not a readable CSV ({one_line(e)})") from None
    df.columns = [c.strip() for c in df.columns]
    if not {"emotion", "pixels", "Usage"} <= set(df.columns):
        raise DataError(f"{where}: unexpected layout: columns {list(df.columns)}, expected emotion,pixels,Usage")
    emotion = pd.to_numeric(df["emotion"].str.strip(), errors="coerce")
    bad = np.flatnonzero(~emotion.isin(range(len(EMOTIONS))).to_numpy())
    if len(bad):
        i = bad[0]
        raise DataError(f"{where} line {i + 2}: emotion {df['emotion'].iloc[i]!r} outside 0..6")
    usage = df["Usage"].str.strip()
    bad = np.flatnonzero(~usage.isin(list(USAGE)).to_numpy())
    if len(bad):
        i = bad[0]
        raise DataError(f"{where} line {i + 2}: Usage {usage.iloc[i]!r} is not Training, PublicTest or PrivateTest")
    pixels = df["pixels"].tolist()
    records = [
        Record(f"{name}:{i + 2}", EMOTIONS[int(e)], USAGE[u], key=i)
        for i, (e, u) in enumerate(zip(emotion.tolist(), usage.tolist(), strict=True))
    ]

    def load(r: Record) -> np.ndarray:
        try:  # a number too large for int64 overflows
            values = np.array(pixels[r.key].split(), dtype=np.int64)
        except (ValueError, OverflowError):
            values = np.empty(0, np.int64)
        if values.size != SIZE * SIZE or values.min() < 0 or values.max() > 255:
            raise DataError(f"{where} line {r.key + 2}: pixels must be {SIZE * SIZE} integers in 0..255")
        return values.astype(np.uint8).reshape(SIZE, SIZE)

    return records, load
