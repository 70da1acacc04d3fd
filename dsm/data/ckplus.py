"""CK+ (extended Cohn-Kanade): the original release or the CK+48 re-packaging.

Original release: each labelled sequence (an ``Emotion/.../*_emotion.txt`` exists)
contributes its last 3 frames (the expression's apex) and, with
``--neutral-first-frame``, its first frame as neutral; faces are cropped and resized
to 48x48 gray. CK+48 is already cropped. CK+ has no official split: all images are
``train`` and 10 subject-independent folds go into meta.csv's ``fold`` column.
"""

from __future__ import annotations

import argparse
import math
import re
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from dsm.data.build import FOLD_NOTE, Record, check_out, image_side, positive_int, with_folds, write_records
from dsm.data.format import DataError
from dsm.data.images import crop_face, decode_image, haar_available, resize
from dsm.data.sources import Source, find_prefix, open_source, walk_class_folders

NAME = "ckplus"
VERSION = "1"
CODES = ["neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]  # CK+ codes 0..7
EMOTIONS = CODES[1:]
FOLDERS = {"anger": "anger", "contempt": "contempt", "disgust": "disgust", "fear": "fear", "happy": "happiness",
           "sadness": "sadness", "surprise": "surprise"}  # fmt: skip
# the 327 sequences with an emotion label, per class (Lucey et al. 2010, Table 2); 309 without contempt
SEQUENCES = {"anger": 45, "contempt": 18, "disgust": 59, "fear": 25, "happiness": 69, "sadness": 28, "surprise": 83}
FRAMES_PER_SEQUENCE = 3
CENTRE_FRACTION = 0.6  # fallback crop: CK+ frames are 640x490 with the face in the middle
LAYOUT_HELP = (
    "expected cohn-kanade-images/Sxxx/yyy/*.png + Emotion/Sxxx/yyy/*_emotion.txt, "
    "or CK+48 folders <emotion>/Sxxx_yyy_*.png"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=image_side, default=48, help="output side in pixels (gray)")
    p.add_argument("--neutral-first-frame", action="store_true", help="add each labelled sequence's first frame")
    p.add_argument(
        "--no-contempt", dest="contempt", action="store_false", help="drop contempt: the 6-emotion protocol (309 seq.)"
    )
    p.add_argument("--folds", type=positive_int, default=10, help="number of subject-independent folds")


def prepare(
    source: str | Path,
    out: str | Path,
    *,
    size: int = 48,
    neutral_first_frame: bool = False,
    contempt: bool = True,
    folds: int = 10,
    overwrite: bool = False,
    allow_mismatch: bool = False,
    progress: bool = True,
) -> Path:
    out = check_out(out, overwrite)
    crops: Counter = Counter()
    with open_source(source) as src:
        records = _original_records(src, neutral_first_frame, contempt)
        if records is not None:
            layout = "original"

            def load(r: Record) -> np.ndarray:
                img, method = crop_face(decode_image(src.read(r.key), src.describe(r.key)), size, CENTRE_FRACTION)
                crops[method] += 1
                return img

        else:
            records = _ckplus48_records(src)
            if records is None:
                raise DataError(f"{src.path}: unexpected layout for ckplus: {LAYOUT_HELP}")
            if neutral_first_frame:
                warnings.warn("--neutral-first-frame ignored: CK+48 has no sequences", stacklevel=2)
            layout, neutral_first_frame = "ck+48", False
            if not contempt:  # its contempt folder (the original layout skips contempt sequences whole)
                records = [r for r in records if r.label != "contempt"]

            def load(r: Record) -> np.ndarray:
                return resize(decode_image(src.read(r.key), src.describe(r.key)), size)

        official = official_class_counts(neutral_first_frame, contempt)
        records, k = with_folds(records, folds)
        classes = {c for c in EMOTIONS if contempt or c != "contempt"} | {r.label for r in records}
        extra = {
            "layout": layout,
            "options": {"size": size, "neutral_first_frame": neutral_first_frame, "contempt": contempt},
            "folds": k,
            "notes": [FOLD_NOTE.format(k=k, km1=k - 1)],
        }
        if layout == "original":
            extra["face_crop"] = {"haar_available": haar_available(), "counts": crops}
        return write_records(
            records, load, out, dataset=NAME, classes=sorted(classes), image_shape=(size, size),
            source=src.path, source_sha256=src.checksum(),
            official_counts={s: sum(c.values()) for s, c in official.items()}, official_class_counts=official,
            allow_mismatch=allow_mismatch, overwrite=overwrite, version=VERSION, progress=progress, extra=extra,
        )  # fmt: skip


def official_class_counts(neutral_first_frame: bool = False, contempt: bool = True) -> dict[str, dict[str, int]]:
    """Images per class of the release: 3 apex frames per labelled sequence (981 with contempt, as in
    CK+48; 927 without), plus one neutral first frame per sequence when asked."""
    seqs = {c: n for c, n in SEQUENCES.items() if contempt or c != "contempt"}
    counts = {c: FRAMES_PER_SEQUENCE * n for c, n in seqs.items()}
    return {"train": counts | ({"neutral": sum(seqs.values())} if neutral_first_frame else {})}


def _original_records(src: Source, neutral_first_frame: bool, contempt: bool = True) -> list[Record] | None:
    img_prefix = find_prefix(src.names, r"cohn-kanade-images/[^/]+/[^/]+/[^/]+\.png")
    if img_prefix is None:
        return None
    emo_prefix = find_prefix(src.names, r"Emotion/[^/]+/[^/]+/[^/]+_emotion\.txt")
    if emo_prefix is None:
        raise DataError(f"{src.path}: missing label files Emotion/Sxxx/yyy/*_emotion.txt")
    frames: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in src.names:
        parts = name[len(img_prefix) :].split("/")
        if name.startswith(img_prefix + "cohn-kanade-images/") and len(parts) == 4 and name.endswith(".png"):
            frames[(parts[1], parts[2])].append(name)
    records = []
    seen: set[tuple[str, str]] = set()
    for name in src.names:
        parts = name[len(emo_prefix) :].split("/")
        if not (name.startswith(emo_prefix + "Emotion/") and len(parts) == 4 and name.endswith("_emotion.txt")):
            continue
        subject, seq = parts[1], parts[2]
        if (subject, seq) in seen:
            raise DataError(f"{src.describe(name)}: a second label file for sequence {subject}/{seq}")
        seen.add((subject, seq))
        label = CODES[_read_code(src, name)]
        if label == "contempt" and not contempt:  # the whole sequence, its neutral first frame too
            continue
        seq_frames = sorted(frames.get((subject, seq), []))
        if not seq_frames:
            raise DataError(f"{src.describe(name)}: no frames in cohn-kanade-images/{subject}/{seq}/")
        apex = seq_frames[-FRAMES_PER_SEQUENCE:]
        records += [Record(f, label, subject=subject, key=f) for f in apex]
        if neutral_first_frame and seq_frames[0] not in apex:
            records.append(Record(seq_frames[0], "neutral", subject=subject, key=seq_frames[0]))
    return records


def _read_code(src: Source, name: str) -> int:
    text = src.read(name).decode("ascii", "replace").strip()
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{src.describe(name)}: expected one number (the emotion code), got {text[:40]!r}") from None
    if not math.isfinite(value) or value != int(value) or not 0 <= value < len(CODES):
        raise DataError(f"{src.describe(name)}: label {text} outside 0..7")
    return int(value)


def _ckplus48_records(src: Source) -> list[Record] | None:
    items = walk_class_folders(src, FOLDERS, what="CK+48 layout")
    if items is None:
        return None
    records = []
    for it in items:
        m = re.match(r"(S\d+)_", it.file)
        if not m:
            raise DataError(f"{src.describe(it.name)}: cannot tell the subject (expected Sxxx_yyy_zzzzzzzz.png)")
        records.append(Record(it.name, FOLDERS[it.class_dir], subject=m[1], key=it.name))
    return records
