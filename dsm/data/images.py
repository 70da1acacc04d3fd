"""Image bytes -> uint8 arrays, resizing and face cropping, shared by every preparer.

Decoding goes through OpenCV (fast, releases the GIL) and falls back to Pillow for
formats the OpenCV build lacks. Face cropping uses OpenCV's Haar cascade when the
installed OpenCV ships it; otherwise (OpenCV 5 moved cascades out of the main
package) or when no face is found, a centre crop: the data sets that need cropping
(CK+, JAFFE) are frontal, centred portraits, so a fixed centre square is a fair
fallback, and the manifest records which method was used.
"""

from __future__ import annotations

import io
from functools import lru_cache

import cv2
import numpy as np

from dsm.data.format import DataError


def decode_image(data: bytes, where: str, color: bool = False) -> np.ndarray:
    """Encoded bytes -> uint8 H x W (gray) or H x W x 3 (RGB); DataError naming ``where`` if unreadable."""
    img = None
    if data:
        buf = np.frombuffer(data, np.uint8)
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a truncated file is our one-line error
        try:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if img is not None and color:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img is None:
            img = _decode_pil(data, color)
    if img is None or img.size == 0:
        raise DataError(f"{where}: cannot decode image (corrupt, truncated or not an image)")
    return np.ascontiguousarray(img, dtype=np.uint8)


def _decode_pil(data: bytes, color: bool) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB" if color else "L"))
    except Exception:  # any decoder failure means "not an image we can read"
        return None


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize to size x size (or (h, w)); area interpolation when shrinking avoids aliasing."""
    h, w = (size, size) if isinstance(size, int) else size
    if img.shape[:2] == (h, w):
        return img
    shrink = img.shape[0] > h or img.shape[1] > w
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def square_box(x: float, y: float, w: float, h: float, scale: float = 1.0) -> tuple[int, int, int, int]:
    """The square around a box's centre, side = scale * max(w, h): (x0, y0, x1, y1)."""
    side = max(w, h) * scale
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    return x0, y0, x0 + round(side), y0 + round(side)


def crop_box(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop (x0, y0, x1, y1), padding with edge pixels where the box leaves the image."""
    x0, y0, x1, y1 = box
    h, w = img.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (img.ndim - 2)
        img = np.pad(img, widths, mode="edge")
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return img[y0:y1, x0:x1]


def centre_box(shape: tuple[int, ...], fraction: float) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    side = min(h, w) * fraction
    return square_box((w - side) / 2, (h - side) / 2, side, side)


@lru_cache(maxsize=1)
def _detector():  # -> dsm.face.FaceDetector
    from dsm.face import FaceDetector  # the cascade dsm ships; OpenCV's C++ evaluator where available

    return FaceDetector(min_neighbors=5, min_face=1 / 6)


def haar_available() -> bool:
    """Always true: dsm ships OpenCV's frontal-face cascade (kept for manifests that record it)."""
    return True


def crop_face(
    img: np.ndarray, size: int, fallback_fraction: float = 0.7, margin: float = 1.2
) -> tuple[np.ndarray, str]:
    """Crop the best-supported detected face (box enlarged by ``margin``) and resize; returns (crop, method).

    Of several detections this takes the first from ``FaceDetector.detect``: the one backed by the
    most raw cascade windows (ties go to the larger box), not necessarily the largest face.
    method is "haar" or "centre" (no face found: a centre square of ``fallback_fraction`` of the
    shorter side).
    """
    faces = _detector().detect(img)  # ranked by detection support: the first is the most certain face
    if faces:
        x, y, w, h = faces[0]
        return resize(crop_box(img, square_box(x, y, w, h, margin)), size), "haar"
    return resize(crop_box(img, centre_box(img.shape, fallback_fraction)), size), "centre"
