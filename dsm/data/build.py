"""What every preparer shares: records, the official-count check, subject folds, the write loop.

A preparer only lists its images as ``Record``s (cheap: names and labels, no pixels)
and supplies a ``load(record) -> uint8 array``; ``write_records`` checks the counts
before any decoding (a wrong source fails in a second, not after a minute) and then
streams the images into a ``PreparedWriter`` behind a tqdm bar.
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dsm.data.format import CANONICAL_CLASSES, SPLITS, DataError, PreparedWriter


@dataclass(frozen=True)
class Record:
    """One image to prepare; ``key`` is whatever ``load`` needs to find its pixels."""

    source: str  # the file (or CSV row) inside the raw data set, as stored in meta.csv
    label: str  # canonical class name
    split: str = "train"
    subject: str = ""
    fold: int = -1
    key: Any = None


def positive_int(text: str) -> int:
    """argparse type for sizes and counts (a zero or negative size would fail deep inside OpenCV)."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed_int(text: str) -> int:
    """argparse type for a random seed: numpy takes only non-negative ones."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


MIN_SIDE = 16


def image_side(text: str) -> int:
    """argparse type for --size: below 16 px no face survives (FER2013, the smallest public set, is 48 px)."""
    value = positive_int(text)
    if value < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_SIDE} pixels, got {text}")
    return value


def check_out(out: str | Path, overwrite: bool) -> Path:
    """Fail before any work when the output exists and may not be replaced."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists (pass --overwrite to replace it)")
    return out


def split_counts(records: Sequence[Record]) -> dict[str, int]:
    c = Counter(r.split for r in records)
    return {s: c.get(s, 0) for s in SPLITS}


def check_counts(
    records: Sequence[Record],
    official: dict[str, int] | None,
    allow_mismatch: bool,
    where: str,
    official_classes: dict[str, dict[str, int]] | None = None,
) -> dict | None:
    """Compare per-split (and, given ``official_classes``, per-split per-class) counts with the official
    ones: DataError, or a warning with --allow-mismatch.

    Returns None when they agree (or there is nothing to compare), else {"found", "official"}
    for the manifest. The class check catches a re-packaging with swapped class folders, whose
    split totals are still right.
    """
    if official is None:
        return None
    found = split_counts(records)
    official = {s: official.get(s, 0) for s in SPLITS}

    def fmt(c: dict[str, int]) -> str:
        return " ".join(f"{s}={c[s]}" for s in SPLITS)

    if found != official:
        msg = f"{where}: per-split counts {fmt(found)} differ from the official {fmt(official)}"
        mismatch = {"found": found, "official": official}
    elif official_classes is not None and (bad := _class_mismatch(records, official_classes)):
        split, got, want = bad
        msg = f"{where}: {split} class counts {got} differ from the official {want} (classes swapped?)"
        mismatch = {"found": {split: got}, "official": {split: want}}
    else:
        return None
    if not allow_mismatch:
        raise DataError(f"{msg} (pass --allow-mismatch to prepare anyway)")
    warnings.warn(msg, stacklevel=3)
    return mismatch


def _class_mismatch(
    records: Sequence[Record], official: dict[str, dict[str, int]]
) -> tuple[str, dict[str, int], dict[str, int]] | None:
    """The first split whose per-class counts differ from ``official``: (split, found, official)."""
    counts = Counter((r.split, r.label) for r in records)
    for split, by_class in official.items():
        want = dict(sorted(by_class.items()))
        got = {c: counts.get((split, c), 0) for c in want}
        if got != want:
            return split, got, want
    return None


def subject_folds(subjects: Sequence[str], k: int = 10) -> dict[str, int]:
    """Assign whole subjects to k folds, balancing image counts; deterministic.

    Subjects are taken by image count (descending, then name) and each goes to the fold
    with the fewest images so far (lowest index on ties). With fewer than k subjects,
    there is one fold per subject.
    """
    counts = Counter(subjects)
    k = min(k, len(counts))
    load = [0] * k
    folds: dict[str, int] = {}
    for s in sorted(counts, key=lambda s: (-counts[s], s)):
        f = min(range(k), key=lambda i: (load[i], i))
        folds[s] = f
        load[f] += counts[s]
    return folds


FOLD_NOTE = (
    "{k} subject-independent folds (meta.csv 'fold', 0..{km1}): subjects sorted by image count "
    "(descending, then name), each assigned to the fold with the fewest images; split is 'train' for all "
    "images, the test set of fold k is the images with fold == k"
)


def with_folds(records: list[Record], k: int = 10) -> tuple[list[Record], int]:
    """Records with their subject's fold filled in, and the number of folds."""
    folds = subject_folds([r.subject for r in records], k)
    out = [Record(r.source, r.label, r.split, r.subject, folds[r.subject], r.key) for r in records]
    return out, len(set(folds.values()))


def write_records(
    records: Sequence[Record],
    load: Callable[[Record], np.ndarray],
    out: str | Path,
    *,
    dataset: str,
    classes: Sequence[str],
    image_shape: tuple[int, ...],
    source: str | Path | None,
    source_sha256: str | None,
    official_counts: dict[str, int] | None = None,
    official_class_counts: dict[str, dict[str, int]] | None = None,
    allow_mismatch: bool = False,
    overwrite: bool = False,
    version: str = "1",
    extra: dict | None = None,
    progress: bool = True,
) -> Path:
    """Check counts, then decode every record into a prepared directory at ``out``; returns ``out``."""
    out = check_out(out, overwrite)
    if not records:
        raise DataError(f"{source}: no images found for {dataset}")
    classes = [c for c in CANONICAL_CLASSES if c in set(classes)]
    unknown = {r.label for r in records} - set(classes)
    if unknown:  # a preparer bug, not bad input: labels are mapped before this point
        raise ValueError(f"labels {sorted(unknown)} not in the classes {classes} of {dataset}")
    mismatch = check_counts(records, official_counts, allow_mismatch, str(source), official_class_counts)
    extra = {"official_counts": official_counts, "count_mismatch": mismatch, **(extra or {})}
    with PreparedWriter(
        out, len(records), image_shape, dataset, classes, source, source_sha256, version, overwrite, extra
    ) as writer:
        for r in tqdm(records, desc=f"prepare {dataset}", unit="img", disable=not progress, mininterval=0.5):
            writer.add(load(r), r.label, r.split, source=r.source, fold=r.fold, subject=r.subject)
    return out
