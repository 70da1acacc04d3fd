"""Preparers crop faces with the detector dsm ships (CK+ and JAFFE originals are full frames)."""

from pathlib import Path

import cv2
import numpy as np

from dsm.data.images import crop_face

PHOTO = Path(__file__).parent / "assets" / "astronaut.jpg"


def test_crop_face_finds_the_face_in_a_real_photo():
    gray = cv2.imread(str(PHOTO), cv2.IMREAD_GRAYSCALE)
    crop, method = crop_face(gray, 48)
    assert method == "haar" and crop.shape == (48, 48) and crop.dtype == np.uint8


def test_crop_face_falls_back_to_the_centre_without_a_face():
    crop, method = crop_face(np.full((120, 160), 128, np.uint8), 48)
    assert method == "centre" and crop.shape == (48, 48)
