"""Preparers crop faces with the detector dsm ships (CK+ and JAFFE originals are full frames)."""

from pathlib import Path

import cv2
import numpy as np

from dsm.data.images import crop_face, resize

PHOTO = Path(__file__).parent / "assets" / "astronaut.jpg"


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def test_crop_face_finds_the_face_in_a_real_photo():
    gray = cv2.imread(str(PHOTO), cv2.IMREAD_GRAYSCALE)
    crop, method = crop_face(gray, 48)
    assert method == "haar" and crop.shape == (48, 48) and crop.dtype == np.uint8
    # the astronaut's face fills about x 98-182, y 32-116 of the 320 x 320 photo (the box grown by 20 %)
    assert _corr(crop, resize(gray[32:116, 98:182], 48)) > 0.75
    assert _corr(crop, resize(gray[200:284, 200:284], 48)) < 0.3  # not some other square of the photo


def test_crop_face_falls_back_to_the_centre_without_a_face():
    img = (np.arange(120 * 160) % 251).reshape(120, 160).astype(np.uint8)  # stripes: every square differs
    crop, method = crop_face(img, 48)
    # the centre square of 0.7 of the shorter side: 84 px at x 38, y 18
    assert method == "centre" and np.array_equal(crop, resize(img[18:102, 38:122], 48))
