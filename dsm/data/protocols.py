"""Evaluation protocols: which prepared images train, select and test a model.

* ``official``: the data set's own splits; where it has no validation split (RAF-DB,
  AffectNet), a stratified ``val_fraction`` of train is held out, subject-disjoint when
  subjects are known.
* ``paper-random``: the authors' protocol: all images pooled, stratified 80/20
  (train+val)/test, then 25% of the rest as validation, one random split per
  ``run_index`` (1..5). On data sets with subjects (CK+, JAFFE) this leaks identities
  between train and test, so it warns.
* ``kfold``: fold ``fold`` (meta.csv ``fold``) is the test set, the next fold the
  validation set, the other folds train; folds are subject-disjoint by construction.

Every choice is written into ``Splits.notes`` so a run record states its protocol.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsm.data.format import Prepared, load_prepared

PROTOCOLS = ("official", "paper-random", "kfold")


@dataclass
class Splits:
    """Indices into the prepared arrays (sorted, int64, pairwise disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    notes: list[str] = field(default_factory=list)
    protocol: str = "official"

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def to_dict(self) -> dict:
        """Sizes and notes (not the indices) for run records."""
        return {"protocol": self.protocol, "sizes": self.sizes(), "notes": list(self.notes)}


def make_splits(
    prepared: Prepared | str | Path,
    protocol: str = "official",
    run_index: int = 1,
    fold: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Splits:
    """Train/val/test indices of ``prepared`` under ``protocol`` (see the module docstring)."""
    data = prepared if isinstance(prepared, Prepared) else load_prepared(prepared)
    labels = np.asarray(data.labels)
    subjects = data.meta["subject"].astype(str).to_numpy()
    has_subjects = bool(len(subjects)) and bool((subjects != "").all())
    name = data.manifest.get("dataset", str(data.root))
    if protocol == "official":
        splits = _official(data, labels, subjects if has_subjects else None, val_fraction, seed, name)
    elif protocol == "paper-random":
        splits = _paper_random(labels, run_index, seed, has_subjects, name)
    elif protocol == "kfold":
        splits = _kfold(data, labels, subjects if has_subjects else None, fold, val_fraction, seed, name)
    else:
        raise ValueError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    splits.protocol = protocol
    _check_disjoint(splits)
    return splits


def class_balanced_sampler_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights giving every class the same total weight (mean weight 1).

    For ``torch.utils.data.WeightedRandomSampler``: AffectNet-style balanced sampling of
    a heavily imbalanced training set.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(0, np.float64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    return w * (len(w) / w.sum())


def _official(
    data: Prepared, labels: np.ndarray, subjects: np.ndarray | None, val_fraction: float, seed: int, name: str
) -> Splits:
    train, val, test = (data.split_indices(s) for s in ("train", "val", "test"))
    if len(test) == 0 and int(data.meta["fold"].max()) >= 0:
        raise ValueError(f"{name} has no official test split: use protocol 'kfold' (its folds) or 'paper-random'")
    notes = [f"official splits of {name}: train {len(train)}, val {len(val)}, test {len(test)}"]
    if len(val) == 0:
        train, val, note = _hold_out(train, labels, subjects, val_fraction, np.random.default_rng(seed))
        notes.append(f"{note}, seed {seed} ({name} has no validation split)")
    return Splits(train, val, test, notes)


def _paper_random(labels: np.ndarray, run_index: int, seed: int, has_subjects: bool, name: str) -> Splits:
    rng = np.random.default_rng([run_index, seed])
    everything = np.arange(len(labels))
    test, rest = _stratified_take(everything, labels, 0.2, rng)
    val, train = _stratified_take(rest, labels, 0.25, rng)
    notes = [
        f"paper-random run {run_index} (seed {seed}): all {len(labels)} images of {name} pooled, stratified 80/20 "
        "(train+val)/test, then 25% of the rest as validation (60/20/20)"
    ]
    if has_subjects:
        msg = (
            f"paper-random splits {name} at random although it has subjects: the same people appear in train and "
            "test (identity leak), so accuracy is optimistic; use protocol 'kfold' for subject-independent results"
        )
        warnings.warn(msg, stacklevel=3)
        notes.append("WARNING: " + msg)
    return Splits(train, val, test, notes)


def _kfold(
    data: Prepared,
    labels: np.ndarray,
    subjects: np.ndarray | None,
    fold: int | None,
    val_fraction: float,
    seed: int,
    name: str,
) -> Splits:
    folds = data.meta["fold"].to_numpy().astype(int)
    k = int(folds.max()) + 1
    if k <= 0:
        raise ValueError(f"{name} has no folds in meta.csv: use protocol 'official' or 'paper-random'")
    if fold is None or not 0 <= fold < k:
        raise ValueError(f"protocol 'kfold' needs fold in 0..{k - 1} for {name}, got {fold}")
    test = np.flatnonzero(folds == fold)
    notes = [f"kfold: fold {fold} of {k} of {name} is the test set ({len(test)} images; folds are subject-disjoint)"]
    if k >= 3:
        nxt = (fold + 1) % k
        val = np.flatnonzero(folds == nxt)
        train = np.flatnonzero((folds != fold) & (folds != nxt) & (folds >= 0))
        notes.append(f"validation: fold {nxt} ({len(val)} images); train: the other {k - 2} folds")
    else:
        rest = np.flatnonzero((folds != fold) & (folds >= 0))
        train, val, note = _hold_out(rest, labels, subjects, val_fraction, np.random.default_rng(seed))
        notes.append(f"{note}, seed {seed} (only {k} folds)")
    return Splits(train, val, test, notes)


def _hold_out(
    train: np.ndarray, labels: np.ndarray, subjects: np.ndarray | None, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, str]:
    """Split ``fraction`` of train off as validation: by whole subjects when known, else stratified."""
    pct = f"{fraction:.0%}"
    if subjects is None:
        val, rest = _stratified_take(train, labels, fraction, rng)
        return rest, val, f"validation: {pct} of train held out, stratified by class"
    val, rest, n_subjects = _subject_take(train, subjects, fraction, rng)
    return rest, val, f"validation: {n_subjects} whole subjects ({len(val)} images, ~{pct} of train) held out"


def _stratified_take(
    indices: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(taken, rest): round(fraction * n) random indices, each class's share within one image of its quota.

    Quotas are floored and the remaining images go to the classes with the largest
    fractional parts (largest-remainder rounding), so the total is exact.
    """
    classes, counts = np.unique(labels[indices], return_counts=True)
    quota = fraction * counts
    take = np.floor(quota).astype(int)
    extra = round(fraction * len(indices)) - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:extra]] += 1
    taken = [rng.permutation(indices[labels[indices] == c])[:k] for c, k in zip(classes, take, strict=True)]
    t = np.sort(np.concatenate(taken)).astype(np.int64) if taken else np.zeros(0, np.int64)
    return t, np.setdiff1d(indices, t).astype(np.int64)


def _subject_take(
    indices: np.ndarray, subjects: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """(taken, rest, n_subjects): random whole subjects until ``fraction`` of the images is reached."""
    names = np.unique(subjects[indices])
    target = fraction * len(indices)
    chosen: list[str] = []
    count = 0
    for s in rng.permutation(names):
        if count >= target or len(chosen) == len(names) - 1:
            break
        chosen.append(s)
        count += int((subjects[indices] == s).sum())
    mask = np.isin(subjects[indices], chosen)
    return indices[mask].astype(np.int64), indices[~mask].astype(np.int64), len(chosen)


def _check_disjoint(s: Splits) -> None:
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if np.intersect1d(getattr(s, a), getattr(s, b)).size:
            raise AssertionError(f"protocol {s.protocol}: {a} and {b} overlap")  # a bug here, never bad input
