"""Protocols: disjoint splits, determinism, held-out validation, folds and the subject-leak warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dsm.data.format import PreparedWriter, load_prepared
from dsm.data.protocols import class_balanced_sampler_weights, make_splits

CLASSES = ["neutral", "happiness", "sadness", "surprise"]


def prepared(tmp_path, n=400, splits=None, subjects=None, folds=None, name="toy"):
    """A prepared data set without pixels worth decoding: labels cycle, images are zeros."""
    out = tmp_path / name
    img = np.zeros((4, 4), np.uint8)
    with PreparedWriter(out, n, (4, 4), name, CLASSES) as w:
        for i in range(n):
            split = splits[i] if splits is not None else "train"
            subject = subjects[i] if subjects is not None else ""
            fold = folds[i] if folds is not None else -1
            w.add(img, CLASSES[(i * 7 // 3) % 4], split, source=f"{i}.png", fold=fold, subject=subject)
    return load_prepared(out)


def assert_disjoint_cover(s, n=None):
    parts = [s.train, s.val, s.test]
    for a in parts:
        assert a.dtype == np.int64 and np.all(np.diff(a) > 0)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.intersect1d(parts[i], parts[j]).size
    if n is not None:
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))


def test_official_uses_the_splits(tmp_path):
    splits = ["train"] * 300 + ["val"] * 50 + ["test"] * 50
    s = make_splits(prepared(tmp_path, splits=splits))
    assert (s.train.tolist(), s.val.tolist(), s.test.tolist()) == (
        list(range(300)),
        list(range(300, 350)),
        list(range(350, 400)),
    )
    assert s.protocol == "official" and "train 300, val 50, test 50" in s.notes[0]


def test_official_holds_out_stratified_val(tmp_path):
    data = prepared(tmp_path, splits=["train"] * 300 + ["test"] * 100)
    s = make_splits(data, val_fraction=0.1, seed=0)
    assert_disjoint_cover(s, 400)
    assert s.test.tolist() == list(range(300, 400)) and len(s.val) == 30
    assert np.isin(s.val, np.arange(300)).all()
    labels = data.labels
    quota = 0.1 * np.bincount(labels[:300], minlength=4)
    assert np.all(np.abs(np.bincount(labels[s.val], minlength=4) - quota) < 1)
    assert "10% of train held out, stratified" in s.notes[1] and "no validation split" in s.notes[1]
    again = make_splits(data, val_fraction=0.1, seed=0)
    assert np.array_equal(again.val, s.val)
    assert not np.array_equal(make_splits(data, val_fraction=0.1, seed=1).val, s.val)


def test_official_val_is_subject_disjoint(tmp_path):
    subjects = [f"p{i % 20}" for i in range(400)]
    data = prepared(tmp_path, splits=["train"] * 300 + ["test"] * 100, subjects=subjects)
    s = make_splits(data, val_fraction=0.2, seed=3)
    assert_disjoint_cover(s, 400)
    subj = np.array(subjects)
    assert not set(subj[s.val]) & set(subj[s.train])
    assert 0.15 * 300 <= len(s.val) <= 0.3 * 300
    assert "whole subjects" in s.notes[1]


def test_official_refuses_fold_only_sets(tmp_path):
    data = prepared(tmp_path, subjects=[f"p{i % 10}" for i in range(400)], folds=[i % 10 for i in range(400)])
    with pytest.raises(ValueError, match="no official test split.*kfold"):
        make_splits(data, "official")


def test_paper_random(tmp_path):
    data = prepared(tmp_path, splits=["train"] * 300 + ["val"] * 50 + ["test"] * 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no subjects: no leak warning
        runs = [make_splits(data, "paper-random", run_index=r) for r in range(1, 6)]
    for s in runs:
        assert_disjoint_cover(s, 400)
        assert len(s.test) == 80 and len(s.val) == 80 and len(s.train) == 240
        for part in (s.train, s.val, s.test):  # stratified: class shares match the whole set
            np.testing.assert_allclose(np.bincount(data.labels[part], minlength=4) / len(part), 0.25, atol=0.02)
    assert np.array_equal(make_splits(data, "paper-random", run_index=2).test, runs[1].test)
    assert len({tuple(s.test) for s in runs}) == 5
    assert "run 3" in runs[2].notes[0]


def test_paper_random_warns_about_subject_leak(tmp_path):
    data = prepared(tmp_path, subjects=[f"p{i % 10}" for i in range(400)], folds=[i % 10 for i in range(400)])
    with pytest.warns(UserWarning, match="identity leak"):
        s = make_splits(data, "paper-random", run_index=1)
    assert any("identity leak" in note for note in s.notes)
    assert_disjoint_cover(s, 400)


def test_kfold(tmp_path):
    subjects = [f"p{i % 30}" for i in range(400)]
    folds = [(i % 30) % 10 for i in range(400)]
    data = prepared(tmp_path, subjects=subjects, folds=folds)
    tests = []
    subj = np.array(subjects)
    for k in range(10):
        s = make_splits(data, "kfold", fold=k)
        assert_disjoint_cover(s, 400)
        assert (np.array(folds)[s.test] == k).all() and (np.array(folds)[s.val] == (k + 1) % 10).all()
        for a, b in ((s.train, s.val), (s.train, s.test), (s.val, s.test)):
            assert not set(subj[a]) & set(subj[b])
        tests.append(s.test)
    assert sorted(np.concatenate(tests).tolist()) == list(range(400))  # every image tested exactly once
    with pytest.raises(ValueError, match=r"fold in 0\.\.9"):
        make_splits(data, "kfold", fold=None)
    with pytest.raises(ValueError, match=r"fold in 0\.\.9"):
        make_splits(data, "kfold", fold=10)


def test_kfold_with_two_folds_holds_out_subjects(tmp_path):
    subjects = [f"p{i % 8}" for i in range(400)]
    data = prepared(tmp_path, subjects=subjects, folds=[(i % 8) % 2 for i in range(400)])
    s = make_splits(data, "kfold", fold=0)
    assert_disjoint_cover(s, 400)
    subj = np.array(subjects)
    assert len(s.val) and not set(subj[s.val]) & set(subj[s.train])


def test_kfold_needs_folds_and_unknown_protocol(tmp_path):
    data = prepared(tmp_path)
    with pytest.raises(ValueError, match="no folds"):
        make_splits(data, "kfold", fold=0)
    with pytest.raises(ValueError, match="unknown protocol"):
        make_splits(data, "random")


def test_make_splits_accepts_a_path(tmp_path):
    data = prepared(tmp_path, splits=["train"] * 350 + ["test"] * 50)
    assert np.array_equal(make_splits(data.root).test, make_splits(data).test)


def test_class_balanced_sampler_weights():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    w = class_balanced_sampler_weights(labels)
    assert w.shape == (100,) and np.isclose(w.mean(), 1.0)
    per_class = [w[labels == c].sum() for c in range(3)]
    np.testing.assert_allclose(per_class, per_class[0])
    assert class_balanced_sampler_weights(np.array([], np.int64)).size == 0
