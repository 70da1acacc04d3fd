"""``dsm predict``: the expressions of the faces in images, folders and videos.

Prints one line per face (JSON lines with ``--json``); with ``--out`` also writes an
annotated copy of each input, ``predictions.jsonl`` and ``annotated.txt`` (the copies written,
which is what ``--overwrite`` removes in a later run). JSON lines come in three shapes:
a face ``{file, frame, face, box, label, score, probabilities}``, a frame without faces
``{file, frame, faces: 0}``, and an input that could not be read ``{file, error}``.
An unreadable input is reported on stderr and skipped; the exit code is then 1. With no input left to
classify the command fails (exit 2) before it writes or deletes anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2
from tqdm import tqdm

from dsm.checkpoint import CheckpointError
from dsm.data.build import positive_int
from dsm.errors import fail, one_line, warn
from dsm.face import FaceDetector, WholeImage
from dsm.predict import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    ImageReadError,
    Predictor,
    face_records,
    read_image,
    video_frames,
    video_info,
)
from dsm.train import pick_device

PROG = "dsm predict"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched for images) or videos")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (default: the released FER2013 model)")
    p.add_argument(
        "--out", type=Path, default=None, help="folder for annotated copies, predictions.jsonl and annotated.txt"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the predictions and annotated copies already in --out"
    )
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.add_argument(
        "--no-detect",
        action="store_true",
        help="the inputs are face crops (like the data sets' images): classify each whole image or frame",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (cuda if there is one)")
    p.add_argument("--every-n-frames", type=int, default=1, metavar="N", help="videos: classify every N-th frame")
    # the face-detection flags default to None (= the library's default, named in the help) so that
    # --no-detect can refuse them instead of ignoring them
    p.add_argument("--pad", type=float, help="grow face boxes by this fraction per side before cropping (0.1)")
    p.add_argument("--min-face", type=_fraction, help="smallest face, as a fraction (0, 1] of the shorter side (0.05)")
    p.add_argument("--min-neighbors", type=positive_int, help="detector strictness: raise it against false faces (5)")
    p.add_argument(
        "--max-side",
        type=int,
        help="detect on a copy shrunk to this longer side (640): smaller is faster, but misses small faces",
    )


@dataclass
class Input:
    path: Path
    kind: str  # "image" or "video"
    name: Path  # where its annotated copy goes, relative to --out


def expand_inputs(inputs: list[str]) -> tuple[list[Input], list[tuple[str, str]]]:
    """Files and folders -> inputs (folders recursively, image files only), plus (input, error)."""
    items, errors = [], []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file())
            files = [f for f in found if f.suffix.lower() in IMAGE_EXTS]
            videos = [f for f in found if f.suffix.lower() in VIDEO_EXTS]  # minutes each: only when named
            skipped = f"{len(videos)} video(s) skipped (e.g. {videos[0]}): name videos one by one" if videos else ""
            if not files:
                what = f"no images ({', '.join(sorted(IMAGE_EXTS))}) in this folder"
                errors.append((raw, f"{raw}: {what}" + (f"; {skipped}" if skipped else "")))
            elif skipped:
                warn(f"{raw}: {skipped}", PROG)
            items += [Input(f, "image", Path(path.resolve().name) / f.relative_to(path)) for f in files]
        elif path.is_file():
            kind = "video" if path.suffix.lower() in VIDEO_EXTS else "image"
            items.append(Input(path, kind, Path(path.name)))
        else:
            errors.append((raw, f"{raw}: no such file or folder"))
    return items, errors


PREDICTIONS = "predictions.jsonl"  # in OUT: every JSON line
LISTING = "annotated.txt"  # in OUT: the annotated copies a run wrote, one path relative to OUT per line


class Output:
    """JSON lines to stdout and/or OUT/predictions.jsonl, annotated files under OUT, listed in OUT/annotated.txt
    (so that --overwrite removes exactly what an earlier run wrote)."""

    def __init__(self, out: Path | None, json_stdout: bool) -> None:
        self.out, self.json_stdout = out, json_stdout
        self.file: IO[str] | None = None
        self.listing: IO[str] | None = None
        self.used: set[Path] = set()
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            self.file = (out / PREDICTIONS).open("w")
            self.listing = (out / LISTING).open("w")

    def wrote(self, path: Path) -> None:
        """Note an annotated copy as written (flushed: an interrupted run still lists its files)."""
        if self.listing and self.out is not None:
            self.listing.write(f"{path.relative_to(self.out)}\n")
            self.listing.flush()

    def record(self, rec: dict) -> None:
        line = json.dumps(rec)
        if self.json_stdout:
            print(line, flush=True)
        if self.file:
            self.file.write(line + "\n")
            self.file.flush()

    def path_for(self, name: Path, suffix: str) -> Path:
        """OUT/<name stem>.annotated<suffix>, numbered if two inputs share a name."""
        assert self.out is not None
        stem, n = name.with_suffix(""), 0
        path = self.out / f"{stem}.annotated{suffix}"
        while path in self.used:
            n += 1
            path = self.out / f"{stem}_{n}.annotated{suffix}"
        self.used.add(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        for f in (self.file, self.listing):
            if f:
                f.close()


def earlier_outputs(out: Path) -> list[Path]:
    """What an earlier ``dsm predict --out`` wrote in ``out``: predictions.jsonl, annotated.txt and the
    annotated copies annotated.txt lists (nothing else: other files under ``out`` are never touched)."""
    if not out.is_dir():
        return []
    found = [out / name for name in (PREDICTIONS, LISTING) if (out / name).is_file()]
    if (out / LISTING).is_file():
        root = out.resolve()
        names = (line.strip() for line in (out / LISTING).read_text(errors="replace").splitlines())
        found += [out / n for n in names if n and (out / n).resolve().is_relative_to(root) and (out / n).is_file()]
    return found


def predict_image(pred: Predictor, item: Input, out: Output) -> None:
    image = read_image(item.path)
    results = pred.predict(image)
    for rec in face_records(str(item.path), results):
        out.record(rec)
    if not results:
        warn(f"{item.path}: no face found", PROG)
    elif not out.json_stdout:
        for r in results:
            print(f"{item.path}: {r.label} {r.score:.2f} at {list(r.box)}")
    if out.out is not None:
        suffix = item.path.suffix.lower() if item.path.suffix.lower() in IMAGE_EXTS else ".jpg"
        suffix = ".png" if suffix == ".pgm" else suffix  # the annotated copy is in colour; PGM holds only gray
        target = out.path_for(item.name, suffix)
        if not cv2.imwrite(str(target), pred.annotate(image, results)):
            raise OSError(f"could not write the annotated copy {target}")
        out.wrote(target)


def _video_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, Path]:
    """mp4 (mp4v) where this OpenCV can write it, else MJPG in an avi, which any build can."""
    for fourcc, suffix in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        target = path.with_suffix(suffix)
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, target
        writer.release()
    raise OSError(f"{path}: OpenCV cannot write a video here")


def predict_video(pred: Predictor, item: Input, out: Output, every_n: int) -> None:
    total, fps = video_info(item.path)
    writer = None
    frames = with_faces = 0
    labels: Counter[str] = Counter()
    bar = tqdm(total=total or None, desc=item.path.name, unit="frame", disable=None, leave=False)
    try:
        last = 0
        for index, frame in video_frames(item.path, every_n):
            results = pred.predict(frame)
            frames += 1
            with_faces += bool(results)
            labels.update(r.label for r in results)
            for rec in face_records(str(item.path), results, index):
                out.record(rec)
            if out.out is not None:
                annotated = pred.annotate(frame, results)
                if writer is None:
                    size = (annotated.shape[1], annotated.shape[0])
                    writer, target = _video_writer(out.path_for(item.name, ".mp4"), (fps or 25.0) / every_n, size)
                    out.wrote(target)
                writer.write(annotated)
            bar.update(index + 1 - last)
            last = index + 1
    finally:
        bar.close()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise ImageReadError(f"{item.path}: no frame could be read")
    if with_faces == 0:
        warn(f"{item.path}: no face found in {frames} frames", PROG)
    if not out.json_stdout:
        common = ", ".join(f"{c} {n}" for c, n in labels.most_common())
        print(f"{item.path}: {frames} frames, {with_faces} with faces" + (f"; labels: {common}" if common else ""))


def run(args: argparse.Namespace) -> int:
    if args.every_n_frames < 1:
        return fail("--every-n-frames must be >= 1", PROG)
    # the face-detection flags given; the others stay None, so the library's defaults apply
    names = ("pad", "min_face", "min_neighbors", "max_side")
    detection = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.no_detect and detection:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in detection)
        return fail(f"{flags}: face detection options, but --no-detect turns it off", PROG)
    if args.overwrite and args.out is None:
        return fail("--overwrite replaces an earlier run's outputs in --out; name that folder", PROG)
    if args.max_side is not None and args.max_side < 48:
        return fail("--max-side must be >= 48", PROG)
    if args.pad is not None and not -0.5 < args.pad <= 2:
        return fail(f"--pad must be in (-0.5, 2] (a fraction of the face box per side), got {args.pad}", PROG)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        return fail(f"--out {args.out}: exists and is not a folder", PROG)
    earlier = earlier_outputs(args.out) if args.out is not None else []
    if earlier and not args.overwrite:  # new predictions.jsonl beside old annotated copies would disagree
        more = f" and {len(earlier) - 1} more" if len(earlier) > 1 else ""
        return fail(
            f"--out {args.out}: holds an earlier run's outputs ({earlier[0]}{more}); "
            "pass --overwrite to replace them, or choose another folder",
            PROG,
        )
    items, errors = expand_inputs(args.inputs)
    named = {Path(raw).resolve() for raw in args.inputs if Path(raw).is_file()}
    gone = {path.resolve() for path in earlier} - named  # a file named as an input is never deleted
    items = [item for item in items if item.path.resolve() not in gone]  # --out inside an input folder
    if not items:  # nothing to classify: say why, and leave --out (and an earlier run's outputs) as they are
        return fail("; ".join(err for _, err in errors) or "only an earlier run's outputs to classify", PROG)
    try:
        device = str(pick_device(args.device))  # "auto" -> cuda or cpu
    except RuntimeError as e:
        return fail(f"--device {args.device}: {one_line(e)}", PROG)
    try:
        pad = {"pad": detection.pop("pad")} if "pad" in detection else {}
        detector = WholeImage() if args.no_detect else FaceDetector(**detection)
        pred = Predictor(args.checkpoint, device, detector, **pad)
    except CheckpointError as e:
        return fail(e, PROG)
    for path in earlier:  # only what an earlier dsm predict wrote, and only now that the model loaded
        if path.resolve() in gone:
            path.unlink()
    out = Output(args.out, args.json)
    for raw, err in errors:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        out.record({"file": raw, "error": err})
    failed = bool(errors)
    try:
        for item in items:
            try:
                if item.kind == "video":
                    predict_video(pred, item, out, args.every_n_frames)
                else:
                    predict_image(pred, item, out)
            except (ImageReadError, OSError, cv2.error) as e:  # one bad input does not stop the others
                failed = True
                msg = str(e) if isinstance(e, ImageReadError) else f"{item.path}: {one_line(e)}"
                print(f"{PROG}: error: {msg}", file=sys.stderr)
                out.record({"file": str(item.path), "error": msg})
    finally:
        out.close()
    return 1 if failed else 0
