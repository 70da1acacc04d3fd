"""JAFFE: 213 posed images of 10 Japanese female subjects, used for cross-data-set evaluation.

File names ``XX.EEn.NNN.tiff`` carry the subject (XX) and the expression (EE); faces are
cropped and resized to gray ``--size``. There is no official split: everything is
``train`` with one fold per subject (leave-one-subject-out).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

import numpy as np

from dsm.data.build import Record, check_out, image_side, write_records
from dsm.data.format import DataError
from dsm.data.images import crop_face, decode_image, haar_available
from dsm.data.sources import open_source

NAME = "jaffe"
VERSION = "1"
CODES = {"NE": "neutral", "HA": "happiness", "SA": "sadness", "SU": "surprise", "AN": "anger", "DI": "disgust",
         "FE": "fear"}  # fmt: skip
CLASSES = list(CODES.values())
OFFICIAL_COUNTS = {"train": 213}
CENTRE_FRACTION = 0.7  # fallback crop: 256x256 portraits, face in the middle
PATTERN = re.compile(r"^(?P<subject>[A-Z]{2})\.(?P<code>[A-Z]{2})\d*\.\d+\.tiff?$", re.IGNORECASE)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=image_side, default=48, help="output side in pixels (gray)")


def prepare(
    source: str | Path,
    out: str | Path,
    *,
    size: int = 48,
    overwrite: bool = False,
    allow_mismatch: bool = False,
    progress: bool = True,
) -> Path:
    out = check_out(out, overwrite)
    crops: Counter = Counter()
    with open_source(source) as src:
        tiffs = [n for n in src.names if n.lower().endswith((".tiff", ".tif"))]
        if not tiffs:
            raise DataError(f"{src.path}: unexpected layout for jaffe: expected XX.EEn.NNN.tiff images")
        records = []
        for name in tiffs:
            m = PATTERN.match(name.rsplit("/", 1)[-1])
            if not m or m["code"].upper() not in CODES:
                raise DataError(f"{src.describe(name)}: unexpected name (expected XX.EEn.NNN.tiff, EE one of "
                                f"{', '.join(CODES)})")  # fmt: skip
            records.append(Record(name, CODES[m["code"].upper()], subject=m["subject"].upper(), key=name))
        fold_of = {s: i for i, s in enumerate(sorted({r.subject for r in records}))}
        records = [Record(r.source, r.label, subject=r.subject, fold=fold_of[r.subject], key=r.key) for r in records]

        def load(r: Record) -> np.ndarray:
            img, method = crop_face(decode_image(src.read(r.key), src.describe(r.key)), size, CENTRE_FRACTION)
            crops[method] += 1
            return img

        return write_records(
            records, load, out, dataset=NAME, classes=CLASSES, image_shape=(size, size), source=src.path,
            source_sha256=src.checksum(), official_counts=OFFICIAL_COUNTS, allow_mismatch=allow_mismatch,
            overwrite=overwrite, version=VERSION, progress=progress,
            extra={"layout": "tiff-files", "options": {"size": size}, "folds": len(fold_of),
                   "fold_subjects": sorted(fold_of, key=fold_of.get),
                   "face_crop": {"haar_available": haar_available(), "counts": crops},
                   "notes": [f"{len(fold_of)} folds, one per subject (sorted by name; meta.csv 'fold'); split is "
                             "'train' for all images"]},
        )  # fmt: skip
