"""Expression recognition on real photos and videos: detect faces, crop, classify, draw.

In a notebook::

    p = dsm.predict.Predictor()          # the released checkpoint, or Predictor("runs/x/best")
    results = p.predict("photo.jpg")     # [FaceResult(box, label, probabilities), ...]
    annotated = p.annotate(cv2.imread("photo.jpg"), results)

Images are BGR ``uint8`` arrays as OpenCV reads them (gray is accepted too). Crops go
through ``dsm.preprocess.to_model_input``, the same conversion training and evaluation
use, so a checkpoint sees faces the way it saw its training data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from dsm.checkpoint import RELEASED, CheckpointError, checkpoint_paths, load_model
from dsm.face import Box, FaceDetector, WholeImage, face_crop
from dsm.preprocess import to_model_input
from dsm.reparam import reparameterize

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})

# One colour (BGR) per canonical class, so a label looks the same in every picture.
_COLOURS = {
    "neutral": (200, 200, 200),
    "happiness": (60, 200, 60),
    "sadness": (200, 120, 40),
    "surprise": (40, 200, 230),
    "fear": (180, 60, 180),
    "disgust": (40, 140, 90),
    "anger": (50, 50, 220),
    "contempt": (130, 80, 160),
}


class ImageReadError(ValueError):
    """A file that is not a readable image; the message names it."""


@dataclass
class FaceResult:
    """One detected face: its box (x, y, w, h) in image pixels and the class probabilities."""

    box: Box
    label: str
    probabilities: dict[str, float]

    @property
    def score(self) -> float:
        return self.probabilities[self.label]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = list(self.box)
        return d


def read_image(path: str | Path) -> np.ndarray:
    """BGR uint8 image of a file; unlike ``cv2.imread`` it raises instead of returning None."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # also works for non-ASCII paths
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from e
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: not a readable image")
    return image


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """The checkpoint to load; a clear error when the released one is not there yet."""
    if checkpoint is not None:
        return Path(checkpoint)
    if not all(p.is_file() for p in checkpoint_paths(RELEASED)):
        raise CheckpointError(
            f"no released checkpoint at {RELEASED} (not published yet): pass --checkpoint PATH "
            "(Python: Predictor(checkpoint=PATH)) with a checkpoint from `dsm train`"
        )
    return RELEASED


class Predictor:
    """Face detector + a checkpoint's fused classifier.

    ``pad`` grows each detected box by that fraction per side before cropping, since
    Haar boxes are tighter than the face crops of expression data sets. With ``WholeImage`` as the
    detector the image already is the crop and is classified as it is (no padding).
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        device: str | torch.device = "cpu",
        detector: FaceDetector | WholeImage | None = None,
        pad: float = 0.1,
        fuse: bool = True,
    ) -> None:
        self.checkpoint = resolve_checkpoint(checkpoint)
        model, self.info = load_model(self.checkpoint, device)
        self.model = reparameterize(model, inplace=True) if fuse else model
        self.device = torch.device(device)
        self.classes: list[str] = list(self.info["classes"])
        self.size = int(self.info["input"]["size"])
        self.channels = int(self.info["input"]["channels"])
        self.detector = detector or FaceDetector()
        self.pad = pad

    def detect(self, image: np.ndarray) -> list[Box]:
        return self.detector.detect(image)

    @torch.inference_mode()
    def classify(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, num_classes) of face crops (BGR, BGRA or gray uint8, any size)."""
        if not faces:
            return np.zeros((0, len(self.classes)), np.float32)
        batch = []
        for face in faces:
            if face.ndim == 2:
                rgb = face
            else:
                rgb = cv2.cvtColor(face, cv2.COLOR_BGRA2RGB if face.shape[2] == 4 else cv2.COLOR_BGR2RGB)
            t = torch.from_numpy(np.ascontiguousarray(rgb)).unsqueeze(0).to(self.device)
            batch.append(to_model_input(t, self.channels, self.size))  # per crop: sizes differ
        logits = self.model(torch.cat(batch))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict_boxes(self, image: np.ndarray, boxes: Sequence[Box]) -> list[FaceResult]:
        """Classify given face boxes (x, y, w, h in pixels, floats allowed) of an image, for a detector of
        your own: each is cropped square and padded as ``face_crop`` does; ValueError for a box with nothing
        inside the image."""
        return self._results(boxes, self.classify([face_crop(image, b, self.pad) for b in boxes]))

    def predict(self, image: np.ndarray | str | Path) -> list[FaceResult]:
        """Every face of an image (array or file path), the most certain detection first."""
        if not isinstance(image, np.ndarray):
            image = read_image(image)
        if isinstance(self.detector, WholeImage):  # already a face crop, as the data sets' are: used as it is
            return self._results(self.detect(image), self.classify([image]))
        return self.predict_boxes(image, self.detect(image))

    def _results(self, boxes: Sequence[Box], probs: np.ndarray) -> list[FaceResult]:
        results = []
        for box, p in zip(boxes, probs, strict=True):
            dist = {c: float(v) for c, v in zip(self.classes, p, strict=True)}
            results.append(FaceResult(tuple(round(float(v)) for v in box), self.classes[int(p.argmax())], dist))
        return results

    def annotate(self, image: np.ndarray, results: Sequence[FaceResult]) -> np.ndarray:
        return annotate(image, results, self.classes)


def face_records(file: str, results: Sequence[FaceResult], frame: int | None = None) -> list[dict[str, Any]]:
    """The JSON records of one image or video frame, as ``dsm predict --json`` writes them: one per face,
    or one saying ``"faces": 0``."""
    if not results:
        return [{"file": file, "frame": frame, "faces": 0}]
    return [
        {"file": file, "frame": frame, "face": i, "box": list(r.box), "label": r.label, "score": round(r.score, 6)}
        | {"probabilities": {c: round(p, 6) for c, p in r.probabilities.items()}}
        for i, r in enumerate(results)
    ]


def annotate(image: np.ndarray, results: Sequence[FaceResult], classes: Sequence[str] | None = None) -> np.ndarray:
    """A BGR copy with each face's box, label and a bar per class.

    Small images are enlarged first (to 480 px on the short side) so the text stays legible.
    """
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    h, w = out.shape[:2]
    scale = max(1.0, 480 / min(h, w))
    if scale > 1.0:
        out = cv2.resize(out, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
    h, w = out.shape[:2]
    font, fs = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, min(h, w) / 1000)
    thick = max(1, round(fs * 2))
    for r in results:
        x, y, bw, bh = (round(v * scale) for v in r.box)
        colour = _COLOURS.get(r.label, (0, 200, 255))
        cv2.rectangle(out, (x, y), (x + bw, y + bh), colour, thick + 1)
        _label(out, f"{r.label} {r.score:.0%}", (x, y), colour, font, fs, thick)
        _bars(out, r, list(classes or r.probabilities), (x, y, bw, bh), font, fs)
    return out


def _label(img: np.ndarray, text: str, at: tuple[int, int], colour: tuple, font: int, fs: float, thick: int) -> None:
    (tw, th), base = cv2.getTextSize(text, font, fs, thick)
    x, y = at[0], max(at[1], th + base + 4)
    cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), colour, -1)
    cv2.putText(img, text, (x + 2, y - base - 2), font, fs, (0, 0, 0), thick, cv2.LINE_AA)


def _bars(img: np.ndarray, r: FaceResult, classes: list[str], box: Box, font: int, fs: float) -> None:
    """A translucent panel beside the box: one probability bar per class."""
    small = fs * 0.8
    name_w = max(cv2.getTextSize(c, font, small, 1)[0][0] for c in classes)
    row = cv2.getTextSize("Ag", font, small, 1)[0][1] + 8
    bar_w = round(80 * fs / 0.4)
    pct_w = cv2.getTextSize("100%", font, small, 1)[0][0]
    pw, ph = name_w + bar_w + pct_w + 22, row * len(classes) + 6
    h, w = img.shape[:2]
    x, y, bw, _ = box
    if x + bw + 6 + pw <= w:  # right of the box
        px = x + bw + 6
    elif x - 6 - pw >= 0:  # left of it
        px = x - 6 - pw
    else:  # over it, against the right edge
        px = max(0, w - pw)
    py = min(max(0, y), max(0, h - ph))
    roi = img[py : py + ph, px : px + pw]
    roi[:] = (roi * 0.35).astype(np.uint8)  # darken so white text reads on any photo
    for i, c in enumerate(classes):
        ty = py + 4 + (i + 1) * row - 6
        p = r.probabilities.get(c, 0.0)
        cv2.putText(img, c, (px + 4, ty), font, small, (255, 255, 255), 1, cv2.LINE_AA)
        bx = px + name_w + 10
        cv2.rectangle(img, (bx, ty - row + 8), (bx + bar_w, ty), (90, 90, 90), 1)
        cv2.rectangle(img, (bx, ty - row + 8), (bx + round(bar_w * p), ty), _COLOURS.get(c, (0, 200, 255)), -1)
        cv2.putText(img, f"{p:.0%}", (bx + bar_w + 6, ty), font, small, (255, 255, 255), 1, cv2.LINE_AA)


def _open_video(path: str | Path) -> cv2.VideoCapture:
    """A capture of ``path`` without FFmpeg's or OpenCV's own log lines on stderr: a broken file is
    reported once, by the caller, in one line."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when FFmpeg opens its first file
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return cv2.VideoCapture(str(path))
    finally:
        cv2.utils.logging.setLogLevel(level)


def video_frames(path: str | Path, every_n: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, BGR frame) of every ``every_n``-th frame of a video file."""
    if not Path(path).is_file():
        raise ImageReadError(f"{path}: no such file")
    cap = _open_video(path)
    if not cap.isOpened():
        raise ImageReadError(f"{path}: not a readable video")
    try:
        index = 0
        while True:
            if not cap.grab():
                break
            if index % every_n == 0:
                ok, frame = cap.retrieve()
                if not ok:
                    break
                yield index, frame
            index += 1
    finally:
        cap.release()


def video_info(path: str | Path) -> tuple[int, float]:
    """(frame count as the container states it, frames per second); 0 when unknown."""
    cap = _open_video(path)
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))), float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
