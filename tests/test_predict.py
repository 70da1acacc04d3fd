"""Prediction on real faces: detection, the Predictor API and ``dsm predict`` (images, folders, videos)."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_models import CLASSES, random_checkpoint

import dsm
import dsm.predict
from dsm.checkpoint import CheckpointError
from dsm.cli import main
from dsm.data.images import crop_box
from dsm.face import FaceDetector, HaarCascade, face_crop, group_rectangles
from dsm.predict import FaceResult, Predictor, read_image

PHOTO = Path(__file__).parent / "assets" / "astronaut.jpg"  # NASA portrait, public domain (see assets/README.md)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "gray48")


@pytest.fixture(scope="module")
def photo():
    return read_image(PHOTO)


def in_face_region(box):
    """The astronaut's face in the 320 x 320 test photo spans about x 110-170, y 40-105."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    return 120 <= cx <= 160 and 55 <= cy <= 90 and 40 <= w <= 110


def write_video(path, photo, frames=5):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, photo.shape[1::-1])
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.roll(photo, 2 * i, axis=1))  # a slowly panning camera
    writer.release()
    return path


def run_cli(capsys, *argv):
    rc = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


# --- detection -------------------------------------------------------------------------


def test_detector_finds_the_face(photo):
    boxes = FaceDetector().detect(photo)
    assert boxes and in_face_region(boxes[0])


def test_detector_finds_nothing_in_a_blank_image():
    assert FaceDetector().detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_numpy_cascade_matches_opencv_where_opencv_has_it(photo):
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("this OpenCV build has no CascadeClassifier (OpenCV 5): nothing to compare with")
    gray = cv2.equalizeHist(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    cascade = HaarCascade()
    fs = cv2.FileStorage(cascade.xml.decode(), cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
    cv = cv2.CascadeClassifier()
    assert cv.read(fs.getFirstTopLevelNode())
    for neighbours in (0, 3):
        ours = sorted(cascade.detect_multiscale(gray, 1.1, neighbours))
        theirs = sorted(tuple(int(v) for v in r) for r in cv.detectMultiScale(gray, 1.1, neighbours))
        assert ours == theirs


def test_group_rectangles_merges_neighbours_and_drops_lonely_boxes():
    cluster = [(100, 100, 50, 50), (102, 101, 50, 50), (98, 99, 52, 52), (101, 100, 49, 49)]
    assert group_rectangles([*cluster, (300, 10, 30, 30)], min_neighbors=2) == [(100, 100, 50, 50)]


def test_face_crop_is_square_and_edge_padded_like_the_training_crops():
    image = np.arange(200 * 115, dtype=np.uint8).reshape(200, 115)  # every pixel tells where it came from
    inside = face_crop(image, (30, 40, 50, 50), 0.2)  # 10 px more per side, all inside
    assert np.array_equal(inside, image[30:100, 20:90])
    assert np.array_equal(face_crop(image, (29.6, 40.2, 49.7, 50.4), 0.2), inside)  # another detector's floats
    edge = face_crop(image, (80, 10, 30, 30), 0.5)  # 15 px more per side: past the right edge and the top
    assert edge.shape == (60, 60)  # not clipped to 50x40 and then stretched
    assert np.array_equal(edge, crop_box(image, (65, -5, 125, 55)))  # the preparers' edge padding
    assert np.array_equal(edge[5:, :50], image[0:55, 65:115]) and (edge[:, 50:] == edge[:, 49:50]).all()
    tall = face_crop(image, (20, 20, 40, 80), 0.0)  # a non-square box: its centred square, not a stretch
    assert tall.shape == (80, 80) and np.array_equal(tall[:, 20:60], image[20:100, 20:60])
    for box in [(200, 10, 20, 20), (-50, -50, 40, 40), (10, 10, 0, 20)]:
        with pytest.raises(ValueError, match="empty or outside the 115x200 image"):
            face_crop(image, box, 0.1)


@pytest.mark.parametrize("box", [(-50, -50, 20, 20), (400, 400, 10, 10), (0, 0, 0, 0), (10, 10, -5, 20)])
def test_predict_boxes_refuses_a_box_with_nothing_inside(ckpt, photo, box):
    with pytest.raises(ValueError, match=r"face box .* is empty or outside the \d+x\d+ image"):
        Predictor(ckpt).predict_boxes(photo, [box])


def test_predict_boxes_takes_float_boxes(ckpt, photo):
    p = Predictor(ckpt)
    box = p.detect(photo)[0]
    (exact,), (floats,) = p.predict_boxes(photo, [box]), p.predict_boxes(photo, [tuple(v + 0.3 for v in box)])
    assert floats.box == exact.box and floats.probabilities == pytest.approx(exact.probabilities)


# --- Python API ------------------------------------------------------------------------


@pytest.mark.parametrize("in_chans,size", [(1, 48), (3, 112)])
def test_predictor_on_a_real_face(tmp_path, photo, in_chans, size):
    p = Predictor(random_checkpoint(tmp_path / "c", in_chans, size))
    results = p.predict(PHOTO)
    assert len(results) >= 1 and isinstance(results[0], FaceResult)
    r = results[0]
    assert in_face_region(r.box) and r.label in CLASSES and list(r.probabilities) == CLASSES
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert r.score == max(r.probabilities.values())
    annotated = p.annotate(photo, results)
    assert annotated.ndim == 3 and min(annotated.shape[:2]) >= min(photo.shape[:2])
    blank = p.annotate(photo, [])  # the same (enlarged) image with nothing drawn
    assert blank.shape == annotated.shape
    changed = (annotated != blank).any(axis=2)
    scale = annotated.shape[0] / photo.shape[0]
    x, y, w, h = (round(v * scale) for v in r.box)
    assert changed[y, x + w // 2] and changed[y + h, x + w // 2]  # the box's top and bottom edges
    assert changed[y + h // 2, x] and changed[y + h // 2, x + w]  # its left and right edges
    assert not changed[y + h // 2, x + w // 2]  # the face itself stays visible
    assert not changed[:, : x - 4].any() and not changed[annotated.shape[0] // 2 :].any()  # far from the face


def test_predictor_takes_arrays_and_gray_images(photo, tmp_path):
    p = Predictor(random_checkpoint(tmp_path / "sharp", head_scale=100.0))  # O(1) logits: probabilities differ
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    from_gray, from_colour = p.predict(gray), p.predict(photo)
    assert from_colour and [r.box for r in from_gray] == [r.box for r in from_colour]
    for g, c in zip(from_gray, from_colour, strict=True):  # a 1-channel model sees the same face either way
        assert g.probabilities == pytest.approx(c.probabilities, abs=1e-3)  # colour: resized, then gray
        assert max(c.probabilities.values()) > 1.5 / len(c.probabilities)  # not a flat, uninformative answer
    assert p.predict(np.zeros((100, 100, 3), np.uint8)) == []


def test_predictor_without_released_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(dsm.predict, "RELEASED", tmp_path / "missing")
    with pytest.raises(CheckpointError, match=r"no released checkpoint at .*missing .*pass --checkpoint"):
        Predictor()


# --- dsm predict -----------------------------------------------------------------------


def test_cli_images_json_out_no_face_and_bad_file(ckpt, tmp_path, capsys):
    blank, bad, out = tmp_path / "blank.png", tmp_path / "broken.jpg", tmp_path / "out"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    bad.write_bytes(b"not an image")
    rc, stdout, stderr = run_cli(capsys, PHOTO, bad, blank, "--checkpoint", ckpt, "--out", out, "--json")
    assert rc == 1  # one input failed, the others still ran
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert lines == [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    face, error, none = lines
    assert face["file"] == str(PHOTO) and face["frame"] is None and in_face_region(face["box"])
    assert face["label"] in CLASSES and sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert error["file"] == str(bad) and "broken.jpg" in error["error"]
    assert none == {"file": str(blank), "frame": None, "faces": 0}
    assert "broken.jpg: not a readable image" in stderr and "blank.png: no face found" in stderr
    assert len([ln for ln in stderr.splitlines() if "broken.jpg" in ln]) == 1
    annotated = read_image(out / "astronaut.annotated.jpg")
    assert annotated.shape == (480, 480, 3)  # the 320 px photo, enlarged to 480 px for legible labels
    assert (out / "blank.annotated.png").is_file()


def test_cli_max_side_detects_on_a_smaller_copy_and_answers_in_original_pixels(ckpt, tmp_path, capsys):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(read_image(PHOTO), (960, 960), interpolation=cv2.INTER_CUBIC))
    rc, stdout, _ = run_cli(capsys, big, "--checkpoint", ckpt, "--json", "--max-side", "240")
    x, y, w, h = json.loads(stdout.splitlines()[0])["box"]
    assert rc == 0 and in_face_region((x / 3, y / 3, w / 3, h / 3))  # the 320 px face region, scaled by 3
    rc, stdout, _ = run_cli(capsys, big, "--checkpoint", ckpt, "--json", "--max-side", "48")
    assert rc == 0 and json.loads(stdout)["faces"] == 0  # the face is ~9 px there: the flag reaches the detector
    rc, _, stderr = run_cli(capsys, PHOTO, "--checkpoint", ckpt, "--max-side", "20")
    assert rc == 2 and "--max-side must be >= 48" in stderr


def test_cli_no_face_exits_0_with_text_output(ckpt, tmp_path, capsys):
    blank = tmp_path / "gray.jpg"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 90, np.uint8))
    rc, stdout, stderr = run_cli(capsys, blank, "--checkpoint", ckpt)
    assert rc == 0 and stdout == "" and "no face" in stderr


def test_cli_folder_is_searched_recursively(ckpt, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(PHOTO, photos / "sub" / "a.JPG")
    (photos / "notes.txt").write_text("not an image")
    rc, stdout, _ = run_cli(capsys, photos, "--checkpoint", ckpt, "--out", tmp_path / "out")
    assert rc == 0 and stdout.count("a.JPG: ") == 1 and "notes" not in stdout
    assert (tmp_path / "out" / "photos" / "sub" / "a.annotated.jpg").is_file()


def test_cli_missing_inputs_and_checkpoint(ckpt, tmp_path, capsys, monkeypatch):
    rc, _, stderr = run_cli(capsys, tmp_path / "nope.jpg", "--checkpoint", ckpt)
    assert rc == 2 and stderr == f"dsm predict: error: {tmp_path / 'nope.jpg'}: no such file or folder\n"
    out = tmp_path / "out"  # an earlier run's outputs survive a later run with nothing to classify
    assert run_cli(capsys, PHOTO, "--checkpoint", ckpt, "--out", out, "--device", "auto")[0] == 0
    before = sorted(out.rglob("*"))
    rc, _, stderr = run_cli(capsys, tmp_path / "typo.jpg", "--checkpoint", ckpt, "--out", out, "--overwrite")
    assert rc == 2 and "typo.jpg: no such file" in stderr and sorted(out.rglob("*")) == before
    monkeypatch.setattr(dsm.predict, "RELEASED", tmp_path / "missing")
    rc, stdout, stderr = run_cli(capsys, PHOTO)
    assert rc == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "--checkpoint" in stderr


def test_cli_video(ckpt, tmp_path, capsys, photo):
    video = write_video(tmp_path / "clip.avi", photo)
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(capsys, video, "--checkpoint", ckpt, "--out", out, "--json", "--every-n-frames", "2")
    assert rc == 0
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert sorted({ln["frame"] for ln in lines}) == [0, 2, 4]  # Haar may add a false positive: best face first
    assert all(ln["file"] == str(video) and in_face_region(ln["box"]) for ln in lines if ln["face"] == 0)
    written = next(out.glob("clip.annotated.*"))
    cap = cv2.VideoCapture(str(written))
    assert cap.isOpened() and cap.read()[0]
    cap.release()


def test_bench_video_measures_the_pipeline(ckpt, tmp_path, capsys, photo):
    video = write_video(tmp_path / "clip.avi", photo, frames=4)
    assert main(["bench", "--video", str(video), "--checkpoint", str(ckpt), "--every-n-frames", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["frames"] == 2 and res["faces"] >= 2 and res["fps"] > 0 and res["fps_with_decode"] <= res["fps"]
    assert res["frame_size"] == "320x320" and res["model_input"] == "1x48"
    assert res["detect_max_side"] == 640 and res["detect_longer_side"] == 320  # small frames are not grown
    args = ["bench", "--video", str(video), "--checkpoint", str(ckpt), "--max-side", "48", "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["detect_max_side"] == 48 and res["frames"] == 4 and res["faces"] == 0  # too small to find at 48 px
    assert res["detect_longer_side"] == 48
    for bad in (["--max-side", "0"], ["--every-n-frames", "0"]):
        with pytest.raises(SystemExit) as exit_:
            main(["bench", "--video", str(video), "--checkpoint", str(ckpt), *bad])
        assert exit_.value.code == 2 and "must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["bench", "--video", str(video), "--checkpoint", str(ckpt), "--max-side", "20"]) == 2
    assert "(--max-side) must be >= 48, got 20" in capsys.readouterr().err


def test_cli_annotates_a_gray_pgm_as_a_colour_png(ckpt, tmp_path, capsys):
    gray = tmp_path / "face.pgm"
    assert cv2.imwrite(str(gray), cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2GRAY))
    rc, _, stderr = run_cli(capsys, gray, "--checkpoint", ckpt, "--no-detect", "--out", tmp_path / "out")
    assert rc == 0 and stderr == ""
    annotated = cv2.imread(str(tmp_path / "out" / "face.annotated.png"), cv2.IMREAD_UNCHANGED)
    assert annotated.ndim == 3 and annotated.shape[2] == 3
    assert (annotated[..., 0] != annotated[..., 2]).any()  # coloured box and label, not gray copied to 3 planes


def test_cli_reports_an_annotated_copy_it_could_not_write(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cv2, "imwrite", lambda *args: False)  # what OpenCV returns on a full disk or bad path
    rc, _, stderr = run_cli(capsys, PHOTO, "--checkpoint", ckpt, "--out", tmp_path / "out")
    assert rc == 1 and f"{PHOTO}: could not write the annotated copy" in stderr


def test_cli_strip_image_and_empty_folder_do_not_stop_the_others(ckpt, tmp_path, capsys):
    """A 2 x 3000 px strip shrinks to 1 px wide for detection; an empty folder is an error line."""
    strip, empty = tmp_path / "strip.png", tmp_path / "empty"
    cv2.imwrite(str(strip), np.full((3000, 2, 3), 100, np.uint8))
    empty.mkdir()
    rc, stdout, stderr = run_cli(capsys, strip, empty, PHOTO, "--checkpoint", ckpt, "--json")
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert rc == 1 and lines[0] == {
        "file": str(empty),
        "error": f"{empty}: no images ({', '.join(sorted(dsm.predict.IMAGE_EXTS))}) in this folder",
    }
    assert lines[1] == {"file": str(strip), "frame": None, "faces": 0}
    assert lines[2]["file"] == str(PHOTO) and in_face_region(lines[2]["box"])
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--pad", "-0.6"], "--pad must be in (-0.5, 2]"),
        (["--device", "bogus"], "--device bogus: "),
        (["--out", "{file}"], "exists and is not a folder"),
        (["--overwrite"], "--overwrite replaces an earlier run's outputs in --out"),
        (["--no-detect", "--min-neighbors", "9", "--pad", "0"], "--pad, --min-neighbors: face detection options"),
        (["--no-detect", "--max-side", "320"], "--max-side: face detection options, but --no-detect turns it off"),
    ],
)
def test_cli_bad_options_are_one_line_errors(ckpt, tmp_path, capsys, flags, message):
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, stdout, stderr = run_cli(capsys, PHOTO, "--checkpoint", ckpt, *[f.format(file=afile) for f in flags])
    assert rc == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1 and message in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_cli_no_detect_classifies_face_crops_whole(ckpt, tmp_path, capsys):
    """Data-set crops (48 px, gray) hold no Haar-sized face: --no-detect classifies the whole image."""
    face = cv2.cvtColor(read_image(PHOTO)[40:105, 110:170], cv2.COLOR_BGR2GRAY)
    crop48 = tmp_path / "crop.png"
    cv2.imwrite(str(crop48), cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA))
    rc, stdout, _ = run_cli(capsys, crop48, "--checkpoint", ckpt, "--json", "--no-detect")
    [rec] = [json.loads(line) for line in stdout.splitlines()]
    expected = Predictor(ckpt).classify([read_image(crop48)])[0]
    assert rc == 0 and rec["box"] == [0, 0, 48, 48]
    assert [rec["probabilities"][c] for c in CLASSES] == pytest.approx(expected.tolist(), abs=1e-5)


def test_cli_out_with_an_earlier_runs_outputs_needs_overwrite(ckpt, tmp_path, capsys):
    out, other = tmp_path / "out", tmp_path / "other.jpg"
    shutil.copy(PHOTO, other)
    assert run_cli(capsys, PHOTO, other, "--checkpoint", ckpt, "--out", out)[0] == 0
    assert (out / "annotated.txt").read_text().split() == ["astronaut.annotated.jpg", "other.annotated.jpg"]
    (out / "mine.txt").write_text("kept")
    (out / "docs").mkdir()
    (out / "docs" / "paper.annotated.pdf").write_text("not ours")  # named like ours, not written by us
    rc, _, stderr = run_cli(capsys, PHOTO, "--checkpoint", ckpt, "--out", out)
    assert rc == 2 and "--overwrite" in stderr and len(stderr.splitlines()) == 1
    assert f"({out / 'predictions.jsonl'} and 3 more)" in stderr
    assert (out / "other.annotated.jpg").is_file()  # refused: nothing touched
    rc, _, _ = run_cli(capsys, PHOTO, "--checkpoint", ckpt, "--out", out, "--overwrite")
    assert rc == 0 and not (out / "other.annotated.jpg").exists()  # no copy left that the new jsonl lacks
    assert (out / "astronaut.annotated.jpg").is_file() and (out / "mine.txt").read_text() == "kept"
    assert (out / "docs" / "paper.annotated.pdf").read_text() == "not ours"
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1
    assert (out / "annotated.txt").read_text().split() == ["astronaut.annotated.jpg"]


def test_cli_overwrite_spares_named_inputs_and_skips_old_copies_in_an_input_folder(ckpt, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PHOTO, photos / "a.jpg")
    assert run_cli(capsys, photos, "--checkpoint", ckpt, "--out", photos)[0] == 0  # copies land in photos/
    copy = photos / "photos" / "a.annotated.jpg"
    assert copy.is_file()
    rc, stdout, _ = run_cli(capsys, photos, "--checkpoint", ckpt, "--out", photos, "--overwrite")
    assert rc == 0 and stdout.count(": ") == 1 and "a.annotated" not in stdout  # the old copy is no input
    rc, stdout, _ = run_cli(capsys, copy, "--checkpoint", ckpt, "--out", photos, "--overwrite")
    assert rc == 0 and copy.is_file() and "a.annotated.jpg: " in stdout  # named: classified, not deleted


def test_cli_folder_names_the_videos_it_skips(ckpt, tmp_path, capsys, photo):
    folder = tmp_path / "holiday"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "a.jpg")
    write_video(folder / "clip.avi", photo, frames=2)
    rc, stdout, stderr = run_cli(capsys, folder, "--checkpoint", ckpt)
    assert rc == 0 and "a.jpg: " in stdout and "1 video(s) skipped" in stderr and "clip.avi" in stderr
    assert stderr.startswith("dsm predict: warning: ")
    (folder / "a.jpg").unlink()  # videos only: one error that says why nothing ran
    rc, _, stderr = run_cli(capsys, folder, "--checkpoint", ckpt)
    assert rc == 2 and len(stderr.splitlines()) == 1 and "no images" in stderr and "1 video(s) skipped" in stderr
