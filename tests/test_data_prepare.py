"""Every preparer on a tiny fixture in each layout: counts, label mapping, splits, folds, manifest."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import (
    AFFECT_CODES,
    AFFECT_NESTED_IMAGES,
    CK48_FOLDERS,
    CK_CODES,
    FER_CANONICAL,
    FER_FOLDERS,
    JAFFE_CODES,
    RAF_LABELS,
    affectnet_folders,
    affectnet_npy,
    affectnet_official,
    as_dir,
    as_zip,
    ckplus48,
    ckplus_original,
    fer2013_csv,
    fer2013_folders,
    jaffe,
    rafdb_basic,
    rafdb_repackaged,
)

from dsm.data import prepare_dataset
from dsm.data.format import CANONICAL_CLASSES, DataError, load_prepared, manifest_hash
from dsm.data.sources import DirSource

SEVEN = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]


def prep(name: str, source: Path | None, out: Path, **opts):
    """Prepare with --allow-mismatch (fixtures are smaller than the official sets) and load the result."""
    with pytest.warns(UserWarning, match="differ from the official"):
        prepare_dataset(name, source, out, allow_mismatch=True, progress=False, **opts)
    return load_prepared(out)


def meta_labels(data) -> dict[str, str]:
    """source file -> label, checking labels.npy agrees with meta.csv."""
    meta = data.meta
    assert [data.classes[i] for i in data.labels] == meta["label"].tolist()
    return dict(zip(meta["source"], meta["label"], strict=True))


def check_manifest(data, dataset: str, n: int, splits: dict[str, int], classes: list[str]) -> None:
    m = data.manifest
    assert m["dataset"] == dataset and m["num_images"] == n == len(data.images) == len(data.labels)
    assert m["splits"] == splits
    assert m["classes"] == classes and all(c in CANONICAL_CLASSES for c in classes)
    assert set(m["class_counts"]) == {"train", "val", "test"}
    assert sum(sum(v.values()) for v in m["class_counts"].values()) == n
    assert m["format_version"] == 1 and m["preparer_version"] and m["notes"]
    assert m["count_mismatch"] is None or m["count_mismatch"]["found"] == splits


# --- FER2013 ---------------------------------------------------------------------------------


def test_fer2013_csv(tmp_path, monkeypatch):
    import dsm.data.fer2013 as fer

    csv = fer2013_csv(tmp_path / "fer2013.csv")
    monkeypatch.setattr(fer, "OFFICIAL_COUNTS", {"train": 7, "val": 7, "test": 7})
    one_each = {s: dict.fromkeys(fer.CLASSES, 1) for s in ("train", "val", "test")}
    monkeypatch.setattr(fer, "OFFICIAL_CLASS_COUNTS", one_each)
    prepare_dataset("fer2013", csv, tmp_path / "out", progress=False)  # no warning: counts match
    data = load_prepared(tmp_path / "out")
    check_manifest(data, "fer2013", 21, {"train": 7, "val": 7, "test": 7}, SEVEN)
    assert data.images.shape == (21, 48, 48) and data.channels == 1
    labels = meta_labels(data)
    fer_codes = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert [labels[f"fer2013.csv:{i + 2}"] for i in range(7)] == fer_codes
    assert data.manifest["layout"] == "icml-csv" and len(data.manifest["source_sha256"]) == 64
    from fixtures_data import image

    np.testing.assert_array_equal(data.images[0], image((48, 48), 0))  # pixels round-trip exactly


def test_fer2013_swapped_classes_with_the_right_split_totals_are_refused(tmp_path, monkeypatch):
    import dsm.data.fer2013 as fer

    csv = fer2013_csv(tmp_path / "fer2013.csv")
    monkeypatch.setattr(fer, "OFFICIAL_COUNTS", {"train": 7, "val": 7, "test": 7})
    swapped = {s: dict.fromkeys(fer.CLASSES, 1) for s in ("train", "val", "test")}
    swapped["val"] |= {"anger": 2, "disgust": 0}  # the val totals still match
    monkeypatch.setattr(fer, "OFFICIAL_CLASS_COUNTS", swapped)
    with pytest.raises(DataError, match=r"fer2013.csv: val class counts .*'anger': 1.* differ from the official"):
        prepare_dataset("fer2013", csv, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="val class counts"):
        prepare_dataset("fer2013", csv, tmp_path / "out", allow_mismatch=True, progress=False)
    assert load_prepared(tmp_path / "out").manifest["count_mismatch"]["official"]["val"]["anger"] == 2


@pytest.mark.parametrize("packaging", ["zip", "dir"])
def test_fer2013_folders(tmp_path, packaging):
    files = fer2013_folders(prefix="archive/" if packaging == "zip" else "")
    src = as_zip(tmp_path / "a.zip", files) if packaging == "zip" else as_dir(tmp_path / "raw", files)
    data = prep("fer2013", src, tmp_path / "out")
    check_manifest(data, "fer2013", 28, {"train": 14, "val": 7, "test": 7}, SEVEN)
    labels = meta_labels(data)
    for name, label in labels.items():
        assert label == FER_CANONICAL[FER_FOLDERS.index(name.split("/")[-2])]
    split = dict(zip(data.meta["source"], data.meta["split"], strict=True))
    prefix = {"train": "Training_", "val": "PublicTest_", "test": "PrivateTest_"}
    assert all(n.split("/")[-1].startswith(prefix[s]) for n, s in split.items())
    assert data.manifest["layout"] == "image-folders"
    if packaging == "dir":
        assert data.manifest["source_sha256"] == DirSource(src).checksum()


# --- RAF-DB ----------------------------------------------------------------------------------


@pytest.mark.parametrize("packaging", ["zip", "dir"])
def test_rafdb_basic(tmp_path, packaging):
    files = rafdb_basic()
    src = as_zip(tmp_path / "raf.zip", files) if packaging == "zip" else as_dir(tmp_path / "raw", files)
    data = prep("rafdb", src, tmp_path / "out")
    check_manifest(data, "rafdb", 21, {"train": 14, "val": 0, "test": 7}, SEVEN)
    assert data.images.shape == (21, 100, 100, 3) and data.channels == 3
    labels = meta_labels(data)
    assert labels["basic/Image/aligned/train_00001_aligned.jpg"] == RAF_LABELS[1] == "surprise"
    assert labels["basic/Image/aligned/test_00007_aligned.jpg"] == RAF_LABELS[7] == "neutral"
    assert data.meta.set_index("source").loc["basic/Image/aligned/test_00001_aligned.jpg", "split"] == "test"


@pytest.mark.parametrize("packaging", ["zip", "dir"])
def test_rafdb_basic_with_the_faces_still_in_aligned_zip(tmp_path, packaging):
    """The release ships the faces as Image/aligned.zip: read in place, no extraction needed."""
    files = rafdb_basic(inner_zip=True)
    src = as_zip(tmp_path / "raf.zip", files) if packaging == "zip" else as_dir(tmp_path / "raw", files)
    data = prep("rafdb", src, tmp_path / "out")
    check_manifest(data, "rafdb", 21, {"train": 14, "val": 0, "test": 7}, SEVEN)
    loose = prep("rafdb", as_dir(tmp_path / "loose", rafdb_basic()), tmp_path / "out2")
    np.testing.assert_array_equal(data.images, loose.images)  # the same faces, in the same order
    assert meta_labels(data)["basic/Image/aligned.zip:aligned/test_00007_aligned.jpg"] == "neutral"


def test_rafdb_repackaged_and_size(tmp_path):
    data = prep("rafdb", as_dir(tmp_path / "raw", rafdb_repackaged()), tmp_path / "out", size=64)
    check_manifest(data, "rafdb", 21, {"train": 14, "val": 0, "test": 7}, SEVEN)
    assert data.images.shape == (21, 64, 64, 3)
    for name, label in meta_labels(data).items():
        assert label == RAF_LABELS[int(name.split("/")[-2])]


# --- CK+ -------------------------------------------------------------------------------------


def _check_folds(data, n_folds: int) -> None:
    meta = data.meta
    assert (meta["split"] == "train").all() and (meta["fold"] >= 0).all()
    assert meta["fold"].nunique() == n_folds == data.manifest["folds"]
    assert (meta.groupby("subject")["fold"].nunique() == 1).all()  # no subject in two folds


def test_ckplus_original(tmp_path):
    data = prep("ckplus", as_dir(tmp_path / "raw", ckplus_original(subjects=12)), tmp_path / "out")
    classes = [c for c in CANONICAL_CLASSES if c != "neutral"]
    check_manifest(data, "ckplus", 36, {"train": 36, "val": 0, "test": 0}, classes)
    assert data.images.shape == (36, 48, 48)
    labels = meta_labels(data)
    # labelled sequence 001 -> its last 3 frames; unlabelled 002 -> nothing
    assert sorted(n for n in labels if n.split("/")[1] == "S100") == [
        f"cohn-kanade-images/S100/001/S100_001_{f:08d}.png" for f in (3, 4, 5)
    ]
    assert labels["cohn-kanade-images/S101/001/S101_001_00000005.png"] == CK_CODES[2] == "contempt"
    _check_folds(data, 10)
    counts = data.meta.groupby("fold").size()
    assert counts.max() - counts.min() <= 3  # balanced: whole subjects of 3 images
    crop = data.manifest["face_crop"]
    assert sum(crop["counts"].values()) == 36


def test_ckplus_neutral_first_frame_zip(tmp_path):
    src = as_zip(tmp_path / "ck.zip", {f"CK+/{k}": v for k, v in ckplus_original(subjects=7).items()})
    data = prep("ckplus", src, tmp_path / "out", neutral_first_frame=True, size=32)
    check_manifest(data, "ckplus", 28, {"train": 28, "val": 0, "test": 0}, list(CANONICAL_CLASSES))
    labels = meta_labels(data)
    assert labels["CK+/cohn-kanade-images/S100/001/S100_001_00000001.png"] == "neutral"
    assert sum(v == "neutral" for v in labels.values()) == 7
    assert data.images.shape == (28, 32, 32)
    _check_folds(data, 7)  # fewer subjects than 10: one fold per subject


def test_ckplus48(tmp_path):
    data = prep("ckplus", as_zip(tmp_path / "ck48.zip", ckplus48(subjects=14)), tmp_path / "out")
    check_manifest(data, "ckplus", 42, {"train": 42, "val": 0, "test": 0}, [c for c in CANONICAL_CLASSES][1:])
    for name, label in meta_labels(data).items():
        assert label == CK48_FOLDERS[name.split("/")[-2]]
    assert set(data.meta["subject"]) == {f"S{s:03d}" for s in range(14)}
    _check_folds(data, 10)
    assert data.manifest["layout"] == "ck+48"


def test_subject_folds_are_deterministic_and_balanced():
    from dsm.data.build import subject_folds

    subjects = [f"S{i % 23}" for i in range(200)] + ["big"] * 30
    folds = subject_folds(subjects, 10)
    assert folds == subject_folds(list(reversed(subjects)), 10)
    assert set(folds.values()) == set(range(10))
    loads = np.bincount([folds[s] for s in subjects])
    # greedy by size: the 30-image subject fills a fold alone, and the other folds end within one
    # small subject (at most 9 images) of each other; a round-robin would put 47 images in one fold
    assert loads[folds["big"]] == 30
    others = np.delete(loads, folds["big"])
    assert others.max() - others.min() <= max(Counter(subjects[:200]).values())


# --- AffectNet -------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [8, 7])
def test_affectnet_official(tmp_path, classes):
    src = as_zip(tmp_path / "affectnet.zip", affectnet_official())
    data = prep("affectnet", src, tmp_path / "out", classes=classes, size=56)
    n = classes
    check_manifest(data, "affectnet", 3 * n, {"train": 2 * n, "val": 0, "test": n}, AFFECT_CODES[:n])
    assert data.images.shape == (3 * n, 56, 56, 3)
    labels = meta_labels(data)
    assert labels["Manually_Annotated_Images/2/t010.jpg"] == "happiness"
    assert not any(f"/{c + 1}/" in name for name in labels for c in (8, 9, 10))  # none/uncertain/non-face dropped
    assert ("contempt" in labels.values()) == (classes == 8)
    assert data.manifest["test_is_validation"] is True
    assert any("validation set" in note for note in data.manifest["notes"])
    assert data.manifest["options"] == {"size": 56, "classes": classes}


@pytest.mark.parametrize("variant", ["headerless_validation", "nested"])
def test_affectnet_official_release_variants(tmp_path, variant):
    """validation.csv without its header row; the image tar extracted to Manually_Annotated_Images/ twice."""
    plain = prep("affectnet", as_zip(tmp_path / "plain.zip", affectnet_official()), tmp_path / "plain", size=56)
    src = as_zip(tmp_path / "variant.zip", affectnet_official(**{variant: True}))
    data = prep("affectnet", src, tmp_path / "out", size=56)
    check_manifest(data, "affectnet", 24, {"train": 16, "val": 0, "test": 8}, AFFECT_CODES)
    np.testing.assert_array_equal(data.images, plain.images)  # the same rows and face boxes, in the same order
    np.testing.assert_array_equal(data.labels, plain.labels)
    images = AFFECT_NESTED_IMAGES if variant == "nested" else "Manually_Annotated_Images/"
    labels = meta_labels(data)
    assert labels[f"{images}1/v000.jpg"] == "neutral"  # validation.csv's first row is data, not a header
    assert labels[f"{images}2/v010.jpg"] == "happiness"


@pytest.mark.parametrize("digits", [False, True])
def test_affectnet_class_folders(tmp_path, digits):
    data = prep("affectnet", as_dir(tmp_path / "raw", affectnet_folders(digits=digits)), tmp_path / "out")
    check_manifest(data, "affectnet", 24, {"train": 16, "val": 0, "test": 8}, AFFECT_CODES)
    assert data.images.shape == (24, 112, 112, 3)
    labels = meta_labels(data)
    first = "val/1/10.jpg" if digits else "val/happy/10.jpg"
    assert labels[first] == "happiness"
    assert data.manifest["test_is_validation"] is True


@pytest.mark.parametrize("digits", [False, True])
def test_affectnet_class_folders_with_a_test_folder(tmp_path, digits):
    """train/, val/ and test/ keep their own splits (without test/, val/ is the test split)."""
    files = affectnet_folders((2, 1, 3), digits=digits, splits=("train", "val", "test"))
    data = prep("affectnet", as_dir(tmp_path / "raw", files), tmp_path / "out", size=32)
    check_manifest(data, "affectnet", 48, {"train": 16, "val": 8, "test": 24}, AFFECT_CODES)
    split = dict(zip(data.meta["source"], data.meta["split"], strict=True))
    happy = "1" if digits else "happy"
    assert [split[f"{s}/{happy}/10.jpg"] for s in ("train", "val", "test")] == ["train", "val", "test"]
    assert meta_labels(data)[f"test/{happy}/12.jpg"] == "happiness"
    assert data.manifest["test_is_validation"] is False
    assert not any("validation set" in note for note in data.manifest["notes"])


@pytest.mark.parametrize("text_codes", [True, False])
def test_affectnet_train_set_val_set_distribution(tmp_path, text_codes):
    """train_set/ and val_set/ with images/ and annotations/*_exp.npy: val_set is the test split, code 9 dropped."""
    data = prep("affectnet", as_dir(tmp_path / "raw", affectnet_npy(text_codes=text_codes)), tmp_path / "out")
    check_manifest(data, "affectnet", 24, {"train": 16, "val": 0, "test": 8}, AFFECT_CODES)
    labels = meta_labels(data)
    assert labels["train_set/images/3.jpg"] == "happiness" and labels["val_set/images/25.jpg"] == "contempt"
    assert "train_set/images/17.jpg" not in labels  # code 9, uncertain
    assert data.manifest["layout"] == "official-npy" and data.manifest["test_is_validation"] is True


def test_affectnet_class_folders_match_whatever_their_case(tmp_path):
    """Kaggle's popular copy has Train/ and Test/ (and re-packagings write Happy/): folder case does not matter."""
    files = affectnet_folders((2, 1), splits=("Train", "Test"))
    files = {name.replace("Test/happy/", "Test/Happy/"): data for name, data in files.items()}
    data = prep("affectnet", as_dir(tmp_path / "raw", files), tmp_path / "out", size=32)
    check_manifest(data, "affectnet", 24, {"train": 16, "val": 0, "test": 8}, AFFECT_CODES)
    assert meta_labels(data)["Test/Happy/10.jpg"] == "happiness"  # the source keeps its own spelling
    assert data.manifest["test_is_validation"] is False


# --- JAFFE -----------------------------------------------------------------------------------


def test_jaffe(tmp_path, monkeypatch):
    import dsm.data.jaffe as jaffe_module

    monkeypatch.setattr(jaffe_module, "OFFICIAL_COUNTS", {"train": 70})
    prepare_dataset("jaffe", as_dir(tmp_path / "raw", jaffe()), tmp_path / "out", progress=False)
    data = load_prepared(tmp_path / "out")
    check_manifest(data, "jaffe", 70, {"train": 70, "val": 0, "test": 0}, SEVEN)
    assert data.images.shape == (70, 48, 48)
    labels = meta_labels(data)
    assert labels["jaffe/KA.NE1.1.tiff"] == "neutral" and labels["jaffe/KA.AN1.5.tiff"] == JAFFE_CODES["AN"]
    _check_folds(data, 10)
    assert data.meta.groupby("fold")["subject"].nunique().eq(1).all()  # one subject per fold


# --- synthetic and the manifest ----------------------------------------------------------------


def test_synthetic_preparer(tmp_path):
    prepare_dataset("synthetic", None, tmp_path / "out", n=280, seed=3, progress=False)
    data = load_prepared(tmp_path / "out")
    m = data.manifest
    assert m["classes"] == SEVEN and m["num_images"] == 280 and data.images.shape == (280, 48, 48)
    assert m["source_sha256"] is None and m["options"] == {"n": 280, "seed": 3, "size": 48}
    split_of_subject = data.meta.groupby("subject")["split"].nunique()
    assert (split_of_subject == 1).all()  # no identity crosses splits
    assert set(data.meta["split"]) == {"train", "val", "test"}
    assert 0.6 < m["splits"]["train"] / 280 < 0.8


def test_manifest_is_json_and_hash_stable(tmp_path):
    for out in ("a", "b"):
        prepare_dataset("synthetic", None, tmp_path / out, n=70, seed=1, progress=False)
    a, b = (load_prepared(tmp_path / o) for o in "ab")
    assert a.hash == b.hash
    np.testing.assert_array_equal(a.images, b.images)
    json.loads((tmp_path / "a" / "manifest.json").read_text())


def test_overwrite(tmp_path):
    prepare_dataset("synthetic", None, tmp_path / "out", n=70, progress=False)
    prepare_dataset("synthetic", None, tmp_path / "out", n=84, progress=False, overwrite=True)
    assert load_prepared(tmp_path / "out").manifest["num_images"] == 84
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dirs left behind


def test_hash_ignores_where_the_source_lies(tmp_path):
    for d in "ab":
        (tmp_path / d).mkdir()
    a = fer2013_csv(tmp_path / "a" / "fer2013.csv")
    b = tmp_path / "b" / "fer2013.csv"
    shutil.copy(a, b)
    da, db = (prep("fer2013", src, tmp_path / f"out-{src.parent.name}") for src in (a, b))
    assert da.manifest["source"] != db.manifest["source"]
    assert da.hash == db.hash  # same download, prepared from another path: runs are reused
    legacy = manifest_hash(da.manifest, legacy=True)  # what dsm 0.1 records carry: still recognised
    assert legacy != manifest_hash(db.manifest, legacy=True) and legacy in da.hashes


def test_ckplus_without_contempt(tmp_path):
    """--no-contempt drops contempt sequences whole (their neutral first frame too): the 6-emotion protocol."""
    raw = as_dir(tmp_path / "raw", ckplus_original(subjects=12))  # codes cycle 1..7: S101 and S108 are contempt
    data = prep("ckplus", raw, tmp_path / "out", neutral_first_frame=True, contempt=False)
    six = [c for c in CANONICAL_CLASSES if c != "contempt"]
    check_manifest(data, "ckplus", 40, {"train": 40, "val": 0, "test": 0}, six)
    assert not data.meta["subject"].isin(["S101", "S108"]).any()
    assert data.manifest["options"]["contempt"] is False
    data48 = prep("ckplus", as_zip(tmp_path / "ck48.zip", ckplus48(subjects=14)), tmp_path / "out48", contempt=False)
    assert "contempt" not in data48.classes and len(data48.labels) == 36  # two contempt subjects of 3 frames gone
