"""The embedded synthetic data set: shapes, determinism, identity-disjoint splits, learnable but not trivial."""

from __future__ import annotations

import numpy as np

from dsm.data.synthetic import CLASSES, generate, split_by_subject


def test_generate_shapes_and_determinism():
    images, labels, subjects = generate(210, seed=5, size=48)
    assert images.shape == (210, 48, 48) and images.dtype == np.uint8
    assert len(labels) == len(subjects) == 210 and set(labels) == set(CLASSES)
    assert max(labels.count(c) for c in CLASSES) - min(labels.count(c) for c in CLASSES) <= 1  # balanced
    again, labels2, subjects2 = generate(210, seed=5, size=48)
    assert np.array_equal(images, again) and labels == labels2 and subjects == subjects2
    other, _, _ = generate(210, seed=6, size=48)
    assert not np.array_equal(images, other)
    assert images.std() > 20  # not blank


def test_other_sizes():
    images, _, _ = generate(14, seed=0, size=96)
    assert images.shape == (14, 96, 96)


def test_split_by_subject_is_70_15_15_and_disjoint():
    _, _, subjects = generate(3000, seed=0, size=16)
    split = split_by_subject(subjects, seed=0)
    assert len(split) == 100
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 70, "val": 15, "test": 15}
    assert split == split_by_subject(list(reversed(subjects)), seed=0)


def test_learnable_but_not_linearly_trivial():
    """A linear model on raw pixels beats chance (1/7) on unseen identities but stays far from perfect."""
    images, labels, subjects = generate(1400, seed=0, size=48)
    y = np.array([CLASSES.index(c) for c in labels])
    split = split_by_subject(subjects, seed=0)
    train = np.array([split[s] == "train" for s in subjects])
    x = images.reshape(len(images), -1).astype(np.float64) / 255
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    w = np.linalg.solve(x[train].T @ x[train] + 100 * np.eye(x.shape[1]), x[train].T @ np.eye(7)[y[train]])
    acc = ((x[~train] @ w).argmax(1) == y[~train]).mean()
    assert 0.2 < acc < 0.8
