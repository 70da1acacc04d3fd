"""A procedural face-expression data set: the embedded default, needing no download.

Faces are drawn as implicit shapes on a pixel grid (vectorised over images): a face
ellipse with hair, eyes, brows, nose and mouth. Identity ("subject") fixes the face's
proportions, skin tone, hair, glasses and a resting expression bias; each image adds a
random pose (shift, rotation, scale), lighting gradient, background, blur and noise.
The 7 expressions live only in local geometry (mouth curvature/opening/width, brow
height/tilt, eye opening, a nose wrinkle for disgust), scaled by a random intensity,
so weak expressions overlap with neutral and with each other: learnable, not trivial.
Everything is deterministic from the seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from dsm.data.build import Record, check_out, image_side, positive_int, seed_int, write_records

NAME = "synthetic"
VERSION = "1"
NEEDS_SOURCE = False
CLASSES = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
IMAGES_PER_SUBJECT = 30

# Expression -> geometry offsets at full intensity, in face units (face half-height ~ 0.8):
#   mouth_curve: corner lift (+ smile), mouth_open, mouth_width (factor - 1), brow_raise (+ up),
#   brow_tilt (+ inner ends up), eye_open (factor - 1), wrinkle (nose wrinkle, upper lip raise)
PARAMS = ("mouth_curve", "mouth_open", "mouth_width", "brow_raise", "brow_tilt", "eye_open", "wrinkle")
EXPRESSIONS = {
    "neutral": (0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.0),
    "happiness": (0.12, 0.05, 0.25, 0.01, 0.00, -0.30, 0.0),
    "sadness": (-0.10, 0.00, -0.10, -0.01, 0.09, -0.20, 0.0),
    "surprise": (0.00, 0.18, -0.30, 0.12, 0.00, 0.70, 0.0),
    "fear": (-0.04, 0.09, 0.20, 0.07, 0.07, 0.55, 0.0),
    "disgust": (-0.05, 0.02, -0.05, -0.05, -0.03, -0.40, 1.0),
    "anger": (-0.03, 0.00, -0.20, -0.07, -0.10, -0.30, 0.0),
}
_TABLE = np.array([EXPRESSIONS[c] for c in CLASSES], np.float32)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=positive_int, default=3000, help="number of images")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--size", type=image_side, default=48, help="output side in pixels (gray)")


def prepare(
    source: str | Path | None = None,
    out: str | Path = "",
    *,
    n: int = 3000,
    seed: int = 0,
    size: int = 48,
    overwrite: bool = False,
    allow_mismatch: bool = False,
    progress: bool = True,
) -> Path:
    """Generate and write the data set (``source`` is ignored: the generator is the source)."""
    out = check_out(out, overwrite)
    images, labels, subjects = generate(n, seed, size)
    split_of = split_by_subject(subjects, seed)
    records = [
        Record(f"synthetic:{seed}:{i}", lab, split_of[s], subject=s, key=i)
        for i, (lab, s) in enumerate(zip(labels, subjects, strict=True))
    ]
    return write_records(
        records, lambda r: images[r.key], out, dataset=NAME, classes=CLASSES, image_shape=(size, size),
        source=f"dsm.data.synthetic.generate(n={n}, seed={seed}, size={size})", source_sha256=None,
        overwrite=overwrite, version=VERSION, progress=progress,
        extra={"layout": "generated", "options": {"n": n, "seed": seed, "size": size},
               "notes": ["procedural faces; expressions carried by mouth, brow and eye geometry",
                         "train/val/test = 70/15/15 of the identities (meta.csv 'subject'): no identity crosses "
                         "splits"]},
    )  # fmt: skip


def split_by_subject(subjects: list[str], seed: int, fractions: tuple[float, ...] = SPLIT_FRACTIONS) -> dict[str, str]:
    """Shuffle the identities (seeded) and cut them 70/15/15 into train/val/test."""
    ids = sorted(set(subjects))
    order = np.random.default_rng([seed, 1]).permutation(len(ids))
    n_train = round(fractions[0] * len(ids))
    n_val = max(1, round(fractions[1] * len(ids))) if len(ids) >= 3 else 0
    split = ["train"] * n_train + ["val"] * n_val
    split += ["test"] * (len(ids) - len(split))
    return {ids[j]: split[k] for k, j in enumerate(order)}


def generate(n: int = 3000, seed: int = 0, size: int = 48) -> tuple[np.ndarray, list[str], list[str]]:
    """``n`` gray ``size`` x ``size`` faces: (uint8 images, class names, subject ids)."""
    rng = np.random.default_rng(seed)
    n_subjects = max(1, min(n, max(10, n // IMAGES_PER_SUBJECT)))
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    subject_idx = rng.permutation(np.arange(n) % n_subjects)
    ident = _identities(rng, n_subjects)
    images = np.empty((n, size, size), np.uint8)
    chunk = 256
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        images[sl] = _render(rng, {k: v[subject_idx[sl]] for k, v in ident.items()}, labels[sl], size)
    return images, [CLASSES[i] for i in labels], [f"id{j:04d}" for j in subject_idx]


def _identities(rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
    u = rng.uniform
    return {
        "face_a": u(0.58, 0.72, k), "face_b": u(0.72, 0.88, k), "face_y": u(-0.02, 0.10, k),
        "skin": u(0.42, 0.82, k), "hair": u(0.03, 0.40, k), "hairline": u(-0.78, -0.45, k),
        "eye_x": u(0.21, 0.31, k), "eye_y": u(-0.22, -0.08, k), "eye_w": u(0.10, 0.14, k),
        "eye_h": u(0.04, 0.065, k), "brow_gap": u(0.09, 0.15, k), "brow_w": u(0.020, 0.040, k),
        "nose": u(0.14, 0.24, k), "mouth_y": u(0.30, 0.46, k), "mouth_w": u(0.17, 0.26, k),
        "lip": u(0.012, 0.024, k), "glasses": (u(0, 1, k) < 0.2).astype(np.float32),
        # resting face: a per-identity bias on every expression parameter
        "bias": rng.normal(0, 1, (k, len(PARAMS))) * np.abs(_TABLE).max(0) * 0.2,
    }  # fmt: skip


def _soft(d: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) -> coverage in 0..1 with a one-pixel anti-aliased edge."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


Arr = np.ndarray | float


def _segment_distance(x: Arr, y: Arr, x0: Arr, y0: Arr, x1: Arr, y1: Arr) -> np.ndarray:
    """Distance from each point to the segment (x0, y0)-(x1, y1); all arguments broadcast."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
    return np.hypot(x - x0 - t * dx, y - y0 - t * dy)


def _render(rng: np.random.Generator, p: dict[str, np.ndarray], labels: np.ndarray, size: int) -> np.ndarray:
    m = len(labels)
    col = lambda a: np.asarray(a, np.float32).reshape(m, 1, 1)  # noqa: E731 - per-image scalars broadcast
    u = lambda lo, hi: col(rng.uniform(lo, hi, m))  # noqa: E731
    # expression geometry: intensity * class offsets + identity bias + per-image jitter
    intensity = rng.uniform(0.6, 1.0, (m, 1))
    jitter = rng.normal(0, 1, (m, len(PARAMS))) * np.abs(_TABLE).max(0) * 0.12
    e = {k: col(v) for k, v in zip(PARAMS, (intensity * _TABLE[labels] + p["bias"] + jitter).T, strict=True)}
    # pose: image coords (u, v) in [-1, 1] -> face coords (x, y)
    g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    gv, gu = np.meshgrid(g, g, indexing="ij")
    theta, scale = u(-0.2, 0.2), u(0.9, 1.12)
    du, dv = gu[None] - u(-0.10, 0.10), gv[None] - u(-0.10, 0.10)
    x = (np.cos(theta) * du + np.sin(theta) * dv) / scale
    y = (-np.sin(theta) * du + np.cos(theta) * dv) / scale
    px = 2.0 / size / scale  # one pixel in face units
    x = x * np.where(rng.uniform(0, 1, (m, 1, 1)) < 0.5, 1, -1).astype(np.float32)  # mirror (breaks left/right cues)

    # background, face, hair
    img = u(0.05, 0.95) + u(-0.2, 0.2) * gu[None]
    fa, fb, fy = col(p["face_a"]), col(p["face_b"]), col(p["face_y"])
    r = np.sqrt((x / fa) ** 2 + ((y - fy) / fb) ** 2)
    face = _soft((r - 1) * np.minimum(fa, fb), px)
    skin = col(p["skin"]) * (1 - 0.15 * np.clip(r, 0, 1) ** 2)  # darker towards the jaw line
    img = img * (1 - face) + skin * face
    hair_line = fy + col(p["hairline"]) * fb + 0.25 * x**2
    hair = _soft((r - 1.08) * np.minimum(fa, fb), px) * _soft(y - hair_line, px)
    img = img * (1 - hair) + col(p["hair"]) * hair

    def paint(mask: np.ndarray, value: np.ndarray | float) -> None:
        nonlocal img
        img = img * (1 - mask) + value * mask

    # eyes (white, iris) and brows, both sides
    ex, ey, ew = col(p["eye_x"]), fy + col(p["eye_y"]), col(p["eye_w"])
    eh = col(p["eye_h"]) * np.clip(1 + e["eye_open"], 0.25, 2.5)
    for side in (-1.0, 1.0):
        cx = side * ex
        q = np.sqrt(((x - cx) / ew) ** 2 + ((y - ey) / eh) ** 2)
        paint(_soft((q - 1) * eh, px) * 0.9, 0.92)
        paint(_soft(np.hypot(x - cx, y - ey) - np.minimum(eh, 0.45 * ew), px) * _soft((q - 1) * eh, px), 0.08)
        by = ey - col(p["brow_gap"]) - e["brow_raise"]
        inner, outer = cx - side * 0.9 * ew, cx + side * 1.25 * ew
        d = _segment_distance(x, y, inner, by - e["brow_tilt"], outer, by + 0.3 * e["brow_tilt"])
        paint(_soft(d - col(p["brow_w"]), px) * 0.85, col(p["hair"]))
        if p["glasses"].any():
            ring = np.abs(np.hypot((x - cx) / 1.5, (y - ey) / 1.1) - 1.6 * ew)
            paint(_soft(ring - 0.6 * px, px) * col(p["glasses"]) * 0.8, 0.05)
    # nose and the disgust wrinkle
    nose_top, nose_len = ey + 0.08, col(p["nose"])
    paint(_soft(_segment_distance(x, y, 0.0, nose_top, 0.03, ey + nose_len) - 0.6 * px, px) * 0.35, 0.1)
    paint(_soft(np.hypot((x / 2.2), y - ey - nose_len - 0.01) - 0.035, px) * 0.5, 0.15)
    wrinkle = np.clip(e["wrinkle"], 0, 1)
    for side in (-1.0, 1.0):
        d = _segment_distance(x, y, side * 0.05, ey + 0.05, side * 0.11, ey + 0.11)
        paint(_soft(d - 0.7 * px, px) * 0.7 * wrinkle, 0.15)
    # mouth: upper lip curve, opening below it
    my = fy + col(p["mouth_y"]) - 0.02 * wrinkle  # disgust raises the upper lip, on one side
    mw = col(p["mouth_w"]) * np.clip(1 + e["mouth_width"], 0.4, 1.8)
    t = np.clip(x / mw, -1.5, 1.5)
    upper = my - e["mouth_curve"] * t**2 + 0.03 * wrinkle * t
    opening = np.clip(e["mouth_open"], 0, None) * np.clip(1 - t**2, 0, None)
    inside_x = _soft(np.abs(x) - mw, px)
    cavity = inside_x * _soft(upper - y, px) * _soft(y - upper - opening, px)
    paint(cavity * 0.9, 0.06)
    lip = col(p["lip"])
    paint(inside_x * _soft(np.abs(y - upper) - lip, px) * 0.8, 0.2)
    paint(inside_x * _soft(np.abs(y - upper - opening) - lip, px) * 0.6, 0.2)

    # lighting, blur, noise
    phi = u(0, 2 * np.pi)
    img = img * (1 + u(0, 0.35) * (np.cos(phi) * gu[None] + np.sin(phi) * gv[None]))
    img = img * u(0.8, 1.2) + u(-0.1, 0.1)
    out = np.empty((m, size, size), np.uint8)
    sigmas = rng.uniform(0.0, 0.8, m) * size / 48
    noise = rng.normal(0, 1, (m, size, size)).astype(np.float32) * u(0.01, 0.05)
    for i in range(m):
        im = cv2.GaussianBlur(img[i].astype(np.float32), (0, 0), float(sigmas[i])) if sigmas[i] > 0.3 else img[i]
        out[i] = np.clip((im + noise[i]) * 255, 0, 255).astype(np.uint8)
    return out
