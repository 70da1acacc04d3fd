"""Bad input: one-line DataError naming the file and the problem, exit 2 from the CLI, no partial output."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures_data import (
    affectnet_npy,
    affectnet_official,
    as_dir,
    as_zip,
    ckplus_original,
    encode,
    fer2013_csv,
    fer2013_folders,
    image,
    jaffe,
    rafdb_basic,
)

from dsm.data import prepare_dataset
from dsm.data.format import DataError, load_prepared
from dsm.data.prepare import main

ROOT = Path(__file__).resolve().parents[1]


def fails(name: str, source: Path, tmp_path: Path, match: str, **opts) -> str:
    """Preparation fails with a one-line DataError matching ``match`` and leaves nothing behind."""
    before = set(tmp_path.iterdir())
    with pytest.raises(DataError, match=match) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixtures are smaller than the official sets
        prepare_dataset(name, source, tmp_path / "out", progress=False, allow_mismatch=True, **opts)
    msg = str(info.value)
    assert "\n" not in msg
    assert set(tmp_path.iterdir()) == before  # no output, no temp directory
    return msg


def test_corrupt_image_in_zip(tmp_path):
    files = fer2013_folders()
    files["train/happy/Training_31.jpg"] = b"\xff\xd8 definitely not a jpeg"
    msg = fails("fer2013", as_zip(tmp_path / "a.zip", files), tmp_path, "cannot decode image")
    assert "a.zip:train/happy/Training_31.jpg" in msg


def test_empty_image_file_in_dir(tmp_path):
    files = rafdb_basic()
    files["basic/Image/aligned/test_00003_aligned.jpg"] = b""
    msg = fails("rafdb", as_dir(tmp_path / "raw", files), tmp_path, "cannot decode image")
    assert "test_00003_aligned.jpg" in msg


def test_corrupt_csv_pixels(tmp_path):
    csv = fer2013_csv(tmp_path / "fer2013.csv")
    lines = csv.read_text().splitlines()
    lines[3] = "2,1 2 3,Training"
    csv.write_text("\n".join(lines) + "\n")
    fails("fer2013", csv, tmp_path, r"fer2013\.csv line 4: pixels must be 2304 integers")


@pytest.mark.parametrize("row", ["0,Training", "0,Training," + "9" * 30], ids=["short", "overflowing"])
def test_icml_csv_rows_with_no_or_huge_pixels_are_named(tmp_path, row):
    """icml_face_data.csv puts pixels last: a short row leaves them empty, a huge value overflows int64."""
    csv = tmp_path / "icml_face_data.csv"
    lines = fer2013_csv(tmp_path / "fer2013.csv").read_text().splitlines()
    (tmp_path / "fer2013.csv").unlink()
    body = [",".join([(p := line.split(","))[0], p[2], p[1]]) for line in lines[1:]]
    body[2] = row
    csv.write_text("\n".join(["emotion,Usage,pixels", *body]) + "\n")
    fails("fer2013", csv, tmp_path, r"icml_face_data\.csv line 4: pixels must be 2304 integers")


def _npy(value) -> bytes:
    buf = io.BytesIO()
    np.save(buf, value)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"train_set/images/3.jpg": None}, r"images/3\.jpg: missing \(labelled in train_set/annotations/3_exp"),
        ({"val_set/annotations/18_exp.npy": _npy(np.array("12"))}, r"18_exp\.npy: expression '12' outside 0\.\.10"),
        ({"val_set/annotations/18_exp.npy": _npy(np.arange(2))}, r"18_exp\.npy: expression \[0, 1\] outside 0\.\.10"),
        ({"val_set/annotations/18_exp.npy": _npy(np.array("happy"))}, r"18_exp\.npy: not a NumPy expression code"),
    ],
)
def test_affectnet_npy_distribution_problems_are_named(tmp_path, change, match):
    files = {**affectnet_npy(), **change}
    fails("affectnet", as_dir(tmp_path / "raw", {k: v for k, v in files.items() if v is not None}), tmp_path, match)


def test_affectnet_npy_distribution_needs_both_sets(tmp_path):
    files = {k: v for k, v in affectnet_npy().items() if not k.startswith("val_set/annotations")}
    fails("affectnet", as_dir(tmp_path / "raw", files), tmp_path, r"val_set/annotations: no \*_exp\.npy labels")


def test_a_tar_archive_or_a_lone_affectnet_csv_says_what_to_pass(tmp_path):
    import tarfile

    csv = fer2013_csv(tmp_path / "fer2013.csv")
    with tarfile.open(tmp_path / "fer2013.tar.gz", "w:gz") as tar:
        tar.add(csv, arcname="fer2013/fer2013.csv")
    csv.unlink()
    fails("fer2013", tmp_path / "fer2013.tar.gz", tmp_path, r"fer2013\.tar\.gz: a tar archive; extract it")
    (tmp_path / "fer2013.tar.gz").unlink()
    lone = tmp_path / "training.csv"
    lone.write_text("subDirectory_filePath,face_x,face_y,face_width,face_height,expression\n")
    fails("affectnet", lone, tmp_path, r"training\.csv: pass the folder holding training\.csv, validation\.csv")


@pytest.mark.parametrize(
    ("name", "files", "match"),
    [
        ("rafdb", {k: v for k, v in rafdb_basic().items() if "EmoLabel" not in k}, "missing label file"),
        ("ckplus", {k: v for k, v in ckplus_original().items() if "Emotion" not in k}, "missing label files"),
        ("affectnet", {k: v for k, v in affectnet_official().items() if k != "validation.csv"}, "validation.csv"),
    ],
)
def test_missing_label_file(tmp_path, name, files, match):
    fails(name, as_dir(tmp_path / "raw", files), tmp_path, match)


def test_missing_listed_image(tmp_path):
    files = {k: v for k, v in rafdb_basic().items() if "train_00002" not in k}
    fails("rafdb", as_dir(tmp_path / "raw", files), tmp_path, r"train_00002_aligned\.jpg: missing \(listed in")


def test_labels_out_of_range(tmp_path):
    files = rafdb_basic()
    label_file = "basic/EmoLabel/list_patition_label.txt"
    files[label_file] = files[label_file].replace(b"train_00003.jpg 3", b"train_00003.jpg 9")
    match = r"list_patition_label\.txt line 3: label 9 outside 1\.\.7"
    fails("rafdb", as_dir(tmp_path / "raf", files), tmp_path, match)

    files = ckplus_original()
    files["Emotion/S100/001/S100_001_00000005_emotion.txt"] = b"   9.0000000e+00\n"
    match = r"S100_001_00000005_emotion\.txt: label .* outside 0\.\.7"
    fails("ckplus", as_dir(tmp_path / "ck", files), tmp_path, match)

    csv = fer2013_csv(tmp_path / "fer2013.csv")
    csv.write_text(csv.read_text().replace("\n0,", "\n7,", 1))
    fails("fer2013", csv, tmp_path, r"fer2013\.csv line 2: emotion '7' outside 0\.\.6")

    files = affectnet_official()
    files["training.csv"] = files["training.csv"].replace(b",10,0.1", b",11,0.1")
    fails("affectnet", as_dir(tmp_path / "aff", files), tmp_path, r"training\.csv line \d+: expression '11' outside")


@pytest.mark.parametrize("headerless", [False, True])
def test_affectnet_csv_line_numbers(tmp_path, headerless):
    """Errors name the line of the file, with or without a header row, blank lines counted."""
    files = affectnet_official(headerless_validation=headerless)
    text = files["validation.csv"].replace(b",3,0.1", b",11,0.1")  # the row of code 3: line 4 (5 with a header)
    files["validation.csv"] = text.replace(b"\n", b"\n\n", 1)  # a blank line after the first
    line = 5 if headerless else 6
    fails("affectnet", as_dir(tmp_path / "aff", files), tmp_path, rf"validation\.csv line {line}: expression '11'")


@pytest.mark.parametrize(
    ("name", "files", "match"),
    [
        ("fer2013", {"notes/readme.txt": b"hello"}, "unexpected layout for fer2013"),
        ("rafdb", {"x/y.jpg": b"?"}, "unexpected layout for rafdb"),
        ("ckplus", {"x/y.png": b"?"}, "unexpected layout for ckplus"),
        ("affectnet", {"x/y.jpg": b"?"}, "unexpected layout for affectnet"),
        (
            "affectnet",
            {"train_set/images/0.jpg": b"?", "train_set/annotations/0_exp.npy": b"?"},
            r"train_set/annotations/0_exp\.npy: not a \.npy file",
        ),
        (
            "affectnet",
            {**affectnet_official(), "validation.csv": b"1/v000.jpg,20,30,100,110,0\n"},
            r"validation\.csv: unexpected layout: no header row with subDirectory_filePath, and 6 columns instead of",
        ),
        (
            "affectnet",
            {**affectnet_official(), "training.csv": b"subDirectory_filePath,expression\n1/t000.jpg,0\n"},
            r"training\.csv: unexpected layout: missing columns \['face_x'",
        ),
        ("jaffe", {"x/y.jpg": b"?"}, "unexpected layout for jaffe"),
        ("fer2013", {**fer2013_folders(), "train/happyish/Training_1.jpg": b"?"}, "happyish.*unexpected"),
        ("fer2013", {**fer2013_folders(), "test/happy/im1.jpg": b"?"}, "im1.jpg: cannot tell the split"),
        ("jaffe", {**jaffe(1), "jaffe/KA.XX1.99.tiff": b"?"}, r"KA\.XX1\.99\.tiff: unexpected name"),
    ],
)
def test_unexpected_layout(tmp_path, name, files, match):
    fails(name, as_dir(tmp_path / "raw", files), tmp_path, match)


def test_counts_differ_from_official(tmp_path):
    src = as_zip(tmp_path / "a.zip", fer2013_folders())
    with pytest.raises(DataError, match=r"train=14 val=7 test=7 differ from the official train=28709 .*allow-mismatch"):
        prepare_dataset("fer2013", src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="differ from the official"):
        prepare_dataset("fer2013", src, tmp_path / "out", progress=False, allow_mismatch=True)
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_images_outside_the_split_folders_are_counted_in_a_warning(tmp_path):
    """A repackaging with a valid/ folder: those images are not FER2013's splits, and not dropped silently."""
    files = fer2013_folders() | {f"valid/happy/PublicTest_9{i}.jpg": encode(image((48, 48), i)) for i in range(3)}
    src = as_zip(tmp_path / "a.zip", files)
    with pytest.warns(UserWarning) as caught:  # and the one for counts that differ from the official
        prepare_dataset("fer2013", src, tmp_path / "out", progress=False, allow_mismatch=True)
    skipped = r"a\.zip:valid/happy/PublicTest_90\.jpg: 3 image\(s\) outside the split folders \(test, train\) skipped"
    assert [w for w in caught if re.search(skipped, str(w.message))]
    assert len(load_prepared(tmp_path / "out").labels) == 28


@pytest.mark.parametrize("entry", ["../evil.jpg", "/etc/evil.jpg", "train/../../evil.jpg"])
def test_zip_entry_escaping(tmp_path, entry):
    src = as_zip(tmp_path / "a.zip", {**fer2013_folders(), entry: b"x"})
    fails("fer2013", src, tmp_path, f"entry '{entry}' escapes the archive")


def test_not_a_zip_and_missing_source(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
    fails("fer2013", tmp_path / "broken.zip", tmp_path, "not a readable zip file")
    fails("rafdb", tmp_path / "nowhere", tmp_path, "source not found")


def test_corrupt_zip_member(tmp_path):
    src = as_zip(tmp_path / "a.zip", fer2013_folders())
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo("train/angry/Training_00.jpg")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start : start + 20] = b"\0" * 20  # stored data no longer matches its CRC
    src.write_bytes(bytes(data))
    fails("fer2013", src, tmp_path, r"Training_00\.jpg: cannot (read from the zip|decode)")


def test_output_exists(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        prepare_dataset("synthetic", None, tmp_path / "out", n=14, progress=False)


# --- the command line ----------------------------------------------------------------------------


def test_cli_error_is_one_line_exit_2(tmp_path, capsys):
    src = as_zip(tmp_path / "a.zip", fer2013_folders())
    assert main(["fer2013", "--source", str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsm prepare: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()

    assert main(["fer2013", "--source", str(src), "--out", str(tmp_path / "out"), "--allow-mismatch", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("dsm prepare: warning: ") and "differ from the official" in captured.err
    assert "28 images (train 14, val 7, test 7)" in captured.out


def test_cli_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "a-file"  # a file where a folder must go: unwritable even for root (CI)
    blocker.write_text("x")
    assert main(["synthetic", "--n", "14", "--out", str(blocker / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsm prepare: error: ") and err.count("\n") == 1 and "a-file" in err
    assert blocker.read_text() == "x"


def test_cli_source_from_env(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DSM_FER2013_ZIP", raising=False)
    assert main(["fer2013", "--out", str(tmp_path / "out")]) == 2
    assert "DSM_FER2013_ZIP" in capsys.readouterr().err
    monkeypatch.setenv("DSM_FER2013_ZIP", str(as_zip(tmp_path / "a.zip", fer2013_folders())))
    assert main(["fer2013", "--out", str(tmp_path / "out"), "--allow-mismatch", "--quiet"]) == 0


def test_script_subprocess_no_traceback(tmp_path):
    """The real entry point: exit status 2, one stderr line, for a bad zip entry."""
    src = as_zip(tmp_path / "a.zip", {"../x.jpg": b"x"})
    cmd = [sys.executable, str(ROOT / "data_scripts" / "prepare.py"), "fer2013", "--source", str(src), "--out",
           str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"dsm prepare: error: {src}: entry '../x.jpg' escapes the archive (absolute path or '..')\n"


def test_script_reports_what_it_did_not_foresee_in_one_line(tmp_path, capsys, monkeypatch):
    """data_scripts/prepare.py shares the dsm command's last resort: a bug is one line, exit 2, no traceback."""
    import dsm.data.prepare

    def broken(*args, **kwargs):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.delenv("DSM_DEBUG", raising=False)
    monkeypatch.setattr(dsm.data.prepare, "prepare_dataset", broken)
    assert main(["synthetic", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == "dsm prepare: error: RuntimeError: a bug over two lines (DSM_DEBUG=1 shows the traceback)\n"
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_:  # argparse: not a seed numpy takes
        main(["synthetic", "--seed", "-1", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "--seed: must be a non-negative integer, got -1" in capsys.readouterr().err


def _flag_encrypted(path: Path) -> Path:
    """Set the 'encrypted' bit of every entry (local and central headers), as a password-protected
    release (RAF-DB is shipped so) looks to zipfile."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        infos, pos = z.infolist(), z.start_dir
    for info in infos:
        data[info.header_offset + 6] |= 1  # local header: general-purpose flag
        data[pos + 8] |= 1  # central header: the same flag
        pos += (
            46
            + int.from_bytes(data[pos + 28 : pos + 30], "little")
            + int.from_bytes(data[pos + 30 : pos + 32], "little")
            + int.from_bytes(data[pos + 32 : pos + 34], "little")
        )
    path.write_bytes(data)
    return path


def test_encrypted_zip_says_to_extract_it(tmp_path):
    src = _flag_encrypted(as_zip(tmp_path / "raf.zip", rafdb_basic()))
    fails("rafdb", src, tmp_path, r"raf\.zip:.*: the zip is encrypted; extract it with its password")


def test_a_broken_or_encrypted_aligned_zip_inside_the_release_is_named(tmp_path):
    files = rafdb_basic(inner_zip=True)
    inner = "basic/Image/aligned.zip"
    broken = as_dir(tmp_path / "broken", {**files, inner: files[inner][:100]})
    fails("rafdb", broken, tmp_path, r"broken/basic/Image/aligned\.zip: not a readable zip file")
    encrypted = _flag_encrypted(as_zip(tmp_path / "aligned.zip", _members(files[inner])))
    raw = as_dir(tmp_path / "enc", {**files, inner: encrypted.read_bytes()})
    encrypted.unlink()
    fails("rafdb", raw, tmp_path, r"enc/basic/Image/aligned\.zip:aligned/train_00001_aligned\.jpg: the zip is encry")


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_corrupt_deflated_entry_is_named(tmp_path):
    src = tmp_path / "raf.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in rafdb_basic().items():
            z.writestr(name, data)
    with zipfile.ZipFile(src) as z:
        info = z.getinfo("basic/EmoLabel/list_patition_label.txt")
    data = bytearray(src.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start : start + 8] = bytes(b ^ 0xFF for b in data[start : start + 8])  # break the deflate stream
    src.write_bytes(data)
    fails("rafdb", src, tmp_path, r"raf\.zip:basic/EmoLabel/list_patition_label\.txt: cannot read from the zip")


def test_linked_image_folder_is_read(tmp_path):
    """A folder linked into the layout (common for big image sets) is listed, and a link back up the
    tree does not loop."""
    raw = as_dir(tmp_path / "raw", rafdb_basic())
    (raw / "basic" / "Image" / "aligned").rename(tmp_path / "elsewhere")
    (raw / "basic" / "Image" / "aligned").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "loop").symlink_to(raw, target_is_directory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = prepare_dataset("rafdb", raw, tmp_path / "out", progress=False, allow_mismatch=True)
    assert len(load_prepared(out).labels) == sum("EmoLabel" not in k and "aligned/" in k for k in rafdb_basic())


def test_rafdb_label_file_missing_at_the_root(tmp_path):
    raw = as_dir(tmp_path / "raw", {k: v for k, v in rafdb_basic().items() if "EmoLabel" not in k})
    fails("rafdb", raw / "basic", tmp_path, r"basic: missing label file EmoLabel/list_patition_label\.txt")


def test_affectnet_infinite_face_box(tmp_path):
    files = affectnet_official()
    files["training.csv"] = files["training.csv"].replace(b"1/t000.jpg,20,", b"1/t000.jpg,inf,")
    fails("affectnet", as_dir(tmp_path / "aff", files), tmp_path, r"training\.csv line 2: face box .* not numeric")


def test_truncated_image_prints_only_our_line(capfd):
    from dsm.data.images import decode_image

    png = cv2.imencode(".png", np.full((64, 64), 128, np.uint8))[1].tobytes()
    with pytest.raises(DataError, match="x.png: cannot decode image"):
        decode_image(png[: len(png) // 2], "x.png")
    assert capfd.readouterr().err == ""  # OpenCV's own warning line is silenced


def test_failed_preparation_removes_the_folders_it_made(tmp_path):
    raw = as_dir(tmp_path / "raw", {**rafdb_basic(), "basic/Image/aligned/test_00003_aligned.jpg": b""})
    with pytest.raises(DataError, match="cannot decode image"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture is smaller than the release
        prepare_dataset("rafdb", raw, tmp_path / "new" / "deeper" / "out", progress=False, allow_mismatch=True)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("dataset", ["rafdb", "ckplus"])
def test_swapped_class_folders_are_refused(dataset):
    """Right split totals, two classes swapped: only the per-class check sees it."""
    from dsm.data import ckplus, rafdb
    from dsm.data.build import Record, check_counts

    official = rafdb.OFFICIAL_CLASS_COUNTS if dataset == "rafdb" else ckplus.official_class_counts()
    a, b = "fear", "surprise"
    swap = {a: b, b: a}
    records = [
        Record(f"{split}/{label}/{i}.jpg", swap.get(label, label), split)
        for split, counts in official.items()
        for label, n in counts.items()
        for i in range(n)
    ]
    totals = {s: sum(c.values()) for s, c in official.items()}
    with pytest.raises(DataError, match=r"class counts .* differ from the official .*classes swapped"):
        check_counts(records, totals, False, dataset, official)
    unswapped = [Record(r.source, swap.get(r.label, r.label), r.split) for r in records]
    assert check_counts(unswapped, totals, False, dataset, official) is None


def test_ckplus_official_counts():
    from dsm.data.ckplus import official_class_counts

    total = lambda **kw: sum(official_class_counts(**kw)["train"].values())  # noqa: E731
    assert (total(), total(contempt=False)) == (981, 927)  # 327 and 309 labelled sequences, 3 frames each
    assert (total(neutral_first_frame=True), total(neutral_first_frame=True, contempt=False)) == (1308, 1236)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("manifest.json", b"{oops", r"manifest\.json: not readable as JSON"),
        ("manifest.json", b"[]", r"manifest\.json: no 'classes' list"),
        ("images.npy", b"\x93NUMPY trunc", r"images\.npy: not a readable \.npy array"),
        ("labels.npy", b"", r"labels\.npy: not a readable \.npy array"),
        ("meta.csv", b"index,source\n0,a\n", r"meta\.csv: missing columns \['label', 'split', 'fold', 'subject'\]"),
    ],
)
def test_a_damaged_prepared_data_set_names_its_file(tmp_path, name, content, problem):
    out = prepare_dataset("synthetic", None, tmp_path / "syn", n=140, progress=False)
    (out / name).write_bytes(content)
    with pytest.raises(DataError, match=problem):
        load_prepared(out)


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        ("labels.npy", lambda a: a.astype(np.float64) + 0.2, r"labels\.npy: expected one integer class index per"),
        ("labels.npy", lambda a: a[:, None], r"labels\.npy: expected one integer .* of shape \(140, 1\)"),
        ("meta.csv", lambda df: df.assign(fold="a"), r"meta\.csv: column 'fold' must hold whole numbers"),
        ("images.npy", lambda a: np.repeat(a[..., None], 4, axis=3), r"images\.npy: expected uint8 N x H x W\[x3\]"),
        ("images.npy", lambda a: a[:, :0, :0], r"images\.npy: expected uint8 N x H x W\[x3\]"),
    ],
)
def test_prepared_labels_and_folds_of_the_wrong_kind_are_named(tmp_path, name, damage, problem):
    """Float labels would be cast to classes silently and a text fold fails deep in a protocol: both named."""
    out = prepare_dataset("synthetic", None, tmp_path / "syn", n=140, progress=False)
    if name.endswith(".npy"):
        np.save(out / name, damage(np.load(out / name)))
    else:
        damage(pd.read_csv(out / name, keep_default_na=False)).to_csv(out / name, index=False)
    with pytest.raises(DataError, match=problem):
        load_prepared(out)


@pytest.mark.parametrize("size, problem", [("0", "must be a positive integer"), ("8", "must be at least 16 pixels")])
def test_cli_rejects_a_useless_size_before_any_work(tmp_path, capsys, size, problem):
    with pytest.raises(SystemExit) as exit_:
        main(["synthetic", "--n", "14", "--size", size, "--out", str(tmp_path / "out"), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--size: {problem}, got {size}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
