"""Face detection and cropping, offline, for prediction on real photos and videos.

OpenCV's DNN detector (``FaceDetectorYN``) needs YuNet weights that no installed package
carries, and OpenCV 5 no longer has ``cv2.CascadeClassifier`` in its main modules nor ships
cascade files. So dsm ships OpenCV's frontal-face Haar cascade (``dsm/assets/face/``, Intel
licence inside the file). Where ``cv2.CascadeClassifier`` exists (the pinned OpenCV 4,
contrib builds) it runs that cascade; elsewhere dsm evaluates it with numpy, following
OpenCV's ``detectMultiScale`` (image pyramid, 24x24 windows, variance normalisation,
``groupRectangles``), with the same boxes but slower.
"""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from dsm.data.images import crop_box

Box = tuple[int, int, int, int]
"""x, y, width, height in pixels of the original image."""

_EPS = 1e-5  # OpenCV lowers every stage threshold by this (THRESHOLD_EPS)

CASCADE = Path(__file__).resolve().parent / "assets" / "face" / "haarcascade_frontalface_default.xml.gz"


@dataclass(frozen=True)
class _Stage:
    threshold: float
    features: np.ndarray  # (K,) feature index of each stump
    thresholds: np.ndarray  # (K,) stump threshold on the normalised feature
    left: np.ndarray  # (K,) vote when feature < threshold
    right: np.ndarray  # (K,) vote otherwise


class HaarCascade:
    """A stump-based Haar cascade in OpenCV's XML format, evaluated with numpy."""

    def __init__(self, path: str | Path = CASCADE) -> None:
        text = Path(path).read_bytes()
        if str(path).endswith(".gz"):
            text = gzip.decompress(text)
        root = ET.fromstring(text).find("cascade")
        if root is None or root.findtext("featureType", "").strip() != "HAAR":
            raise ValueError(f"{path}: not an OpenCV Haar cascade")
        self.xml = text
        self.window = (int(root.findtext("width")), int(root.findtext("height")))
        self.stages = [self._read_stage(s, path) for s in root.find("stages")]
        rects, weights = [], []
        for feat in root.find("features"):
            if (feat.findtext("tilted") or "0").strip() != "0":
                raise ValueError(f"{path}: tilted Haar features are not supported")
            rs = [[float(v) for v in r.text.split()] for r in feat.find("rects")]
            rs += [[0, 0, 0, 0, 0.0]] * (3 - len(rs))
            rects.append([r[:4] for r in rs])
            weights.append([r[4] for r in rs])
        self.rects = np.asarray(rects, dtype=np.int64)  # (F, 3, 4): x, y, w, h
        self.weights = np.asarray(weights, dtype=np.float64)  # (F, 3)
        # Feature values as OpenCV computes them (float32). With whole-number weights, as in
        # OpenCV's cascades, int32 arithmetic gives the same values (all below 2**24), faster.
        self._wtype = np.int32 if np.array_equal(self.weights, np.round(self.weights)) else np.float32

    @staticmethod
    def _read_stage(stage: ET.Element, path: str | Path) -> _Stage:
        feats, thrs, left, right = [], [], [], []
        for weak in stage.find("weakClassifiers"):
            nodes = weak.findtext("internalNodes").split()
            leaves = [float(v) for v in weak.findtext("leafValues").split()]
            if len(nodes) != 4:
                raise ValueError(f"{path}: only stump cascades (one node per weak classifier) are supported")
            feats.append(int(nodes[2]))
            thrs.append(float(nodes[3]))
            left.append(leaves[0])
            right.append(leaves[1])
        return _Stage(
            float(stage.findtext("stageThreshold")),
            np.asarray(feats),
            np.asarray(thrs),
            np.asarray(left),
            np.asarray(right),
        )

    def _windows_at_scale(self, gray: np.ndarray, step: int) -> np.ndarray:
        """Top-left corners (N, 2) of the windows of ``gray`` that pass every stage.

        The first stage runs on every window with array slicing; the later ones gather
        from the integral image for the few windows still alive.
        """
        ww, wh = self.window
        h, w = gray.shape
        img = gray.astype(np.int64)
        ii = np.zeros((h + 1, w + 1), np.int64)
        ii[1:, 1:] = img.cumsum(0).cumsum(1)
        sq = np.zeros((h + 1, w + 1), np.int64)
        sq[1:, 1:] = (img * img).cumsum(0).cumsum(1)
        ii = ii.astype(np.int32)  # may wrap on huge images, but rect sums (< 2**31) stay exact mod 2**32
        ny, nx = (h - wh) // step + 1, (w - ww) // step + 1

        def dense(table: np.ndarray, x: int, y: int, rw: int, rh: int) -> np.ndarray:
            """Sum of rect (x, y, rw, rh) in every window of the grid, shape (ny, nx)."""

            def at(dx: int, dy: int) -> np.ndarray:
                return table[y + dy : y + dy + (ny - 1) * step + 1 : step, x + dx : x + dx + (nx - 1) * step + 1 : step]

            return at(rw, rh) - at(rw, 0) - at(0, rh) + at(0, 0)

        # Variance normalisation over the inner (w-2)x(h-2) window, as OpenCV does.
        area = (ww - 2) * (wh - 2)
        s, s2 = dense(ii, 1, 1, ww - 2, wh - 2).astype(np.float64), dense(sq, 1, 1, ww - 2, wh - 2)
        norm = np.sqrt(np.maximum(area * s2 - s * s, 0.0))  # = area x std
        flat = norm <= 10 * area  # OpenCV skips windows with std <= 10 grey levels
        inv = (1.0 / np.maximum(norm, 1e-12)).astype(np.float32)

        first = self.stages[0]
        votes = np.zeros((ny, nx))
        for fi, thr, left, right in zip(first.features, first.thresholds, first.left, first.right, strict=True):
            val = np.zeros((ny, nx), self._wtype)
            for (x, y, rw, rh), wt in zip(self.rects[fi], self.weights[fi], strict=True):
                if wt:
                    val += dense(ii, x, y, rw, rh) * self._wtype(wt)
            votes += np.where(val.astype(np.float32) * inv < np.float32(thr), left, right)
        rejected = (votes < first.threshold - _EPS) & ~flat
        alive = ~rejected & ~flat & _not_skipped(rejected)

        stride = w + 1
        yi, xi = np.nonzero(alive)
        base = (yi * step * stride + xi * step).astype(np.int64)
        inv = inv[alive]
        flat_ii = ii.ravel()
        rx, ry, rw, rh = (self.rects[..., i] for i in range(4))  # (F, 3) each
        a = ry * stride + rx
        corners = (a, a + rw, a + rh * stride, a + rh * stride + rw)
        for st in self.stages[1:]:
            if base.size == 0:
                break
            f = st.features
            val = np.zeros((base.size, f.size), self._wtype)
            b = base[:, None]
            for r in range(3):
                wr = self.weights[f, r].astype(self._wtype)
                if not wr.any():
                    continue
                ca, cb, cc, cd = (c[f, r] for c in corners)
                val += (flat_ii[b + cd] - flat_ii[b + cb] - flat_ii[b + cc] + flat_ii[b + ca]) * wr
            val = val.astype(np.float32) * inv[:, None]
            votes = np.where(val < st.thresholds.astype(np.float32), st.left, st.right).sum(1)
            keep = votes >= st.threshold - _EPS
            base, inv = base[keep], inv[keep]
        return np.stack([base % stride, base // stride], axis=1)

    def detect_multiscale(
        self,
        gray: np.ndarray,
        scale_factor: float = 1.1,
        min_neighbors: int = 3,
        min_size: int = 0,
        max_size: int | None = None,
    ) -> list[Box]:
        """Face boxes in a uint8 gray image, like ``cv2.CascadeClassifier.detectMultiScale``."""
        return group_rectangles(self.candidates(gray, scale_factor, min_size, max_size), min_neighbors)

    def candidates(
        self, gray: np.ndarray, scale_factor: float = 1.1, min_size: int = 0, max_size: int | None = None
    ) -> list[Box]:
        """Every window that passes the cascade, before grouping."""
        h, w = gray.shape
        ww, wh = self.window
        candidates: list[Box] = []
        factor = 1.0
        while True:
            win = (round(ww * factor), round(wh * factor))
            sc = float(np.float32(factor))  # OpenCV keeps the scales as float32
            size = (round(w / sc), round(h / sc))
            if size[0] <= ww or size[1] <= wh or (max_size and max(win) > max_size):
                break
            if min(win) >= min_size:
                scaled = gray if size == (w, h) else cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR_EXACT)
                win = (round(ww * sc), round(wh * sc))
                for x, y in self._windows_at_scale(scaled, step=1 if sc >= 2 else 2):
                    candidates.append((round(x * sc), round(y * sc), win[0], win[1]))
            factor *= scale_factor
        return candidates


def _not_skipped(rejected: np.ndarray) -> np.ndarray:
    """Which windows OpenCV evaluates: it skips the window right after one that the first
    stage rejects, along each row. A window is evaluated iff the run of first-stage
    rejections just before it has even length."""
    c = rejected.cumsum(1)
    run = c - np.maximum.accumulate(np.where(rejected, 0, c), axis=1)  # rejections ending here
    before = np.zeros_like(run)
    before[:, 1:] = run[:, :-1]
    return before % 2 == 0


def group_rectangles(rects: list[Box], min_neighbors: int, eps: float = 0.2) -> list[Box]:
    """OpenCV's ``groupRectangles``: average clusters of similar boxes, keep those with
    more than ``min_neighbors`` members, drop boxes nested in a better-supported one."""
    return [box for box, _ in group_with_support(rects, min_neighbors, eps)]


def group_with_support(rects: list[Box], min_neighbors: int, eps: float = 0.2) -> list[tuple[Box, int]]:
    """``group_rectangles`` with each box's support: how many raw detections it merges."""
    if not rects or min_neighbors <= 0:
        return [(box, 1) for box in rects]
    r = np.asarray(rects, dtype=np.float64)
    x0, y0, x1, y1 = r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]
    rows, cols = [], []
    for i in range(0, len(r), 256):  # similarity in row blocks: memory stays O(n)
        j = slice(i, i + 256)
        delta = eps * (np.minimum.outer(r[j, 2], r[:, 2]) + np.minimum.outer(r[j, 3], r[:, 3])) * 0.5
        similar = (
            (np.abs(np.subtract.outer(x0[j], x0)) <= delta)
            & (np.abs(np.subtract.outer(y0[j], y0)) <= delta)
            & (np.abs(np.subtract.outer(x1[j], x1)) <= delta)
            & (np.abs(np.subtract.outer(y1[j], y1)) <= delta)
        )
        a, b = np.nonzero(similar)
        rows.append(a + i)
        cols.append(b)
    ones = np.ones(sum(len(a) for a in rows), dtype=np.int8)
    graph = csr_matrix((ones, (np.concatenate(rows), np.concatenate(cols))), shape=(len(r), len(r)))
    n, labels = connected_components(graph, directed=False)
    counts = np.bincount(labels, minlength=n)
    means = np.stack([np.bincount(labels, r[:, i], minlength=n) for i in range(4)], 1) / counts[:, None]
    strong = [(tuple(int(round(v)) for v in means[i]), int(counts[i])) for i in range(n) if counts[i] > min_neighbors]
    kept: list[tuple[Box, int]] = []
    for i, ((gx, gy, gw, gh), ni) in enumerate(strong):
        nested = False
        for j, ((hx, hy, hw, hh), nj) in enumerate(strong):
            dx, dy = round(hw * eps), round(hh * eps)
            inside = gx >= hx - dx and gy >= hy - dy and gx + gw <= hx + hw + dx and gy + gh <= hy + hh + dy
            if i != j and inside and (nj > max(3, ni) or ni < 3):
                nested = True
                break
        if not nested:
            kept.append(((gx, gy, gw, gh), ni))
    return kept


class FaceDetector:
    """Frontal faces in BGR or gray images, the most certain (most raw detections merged) first.

    Images are shrunk so their longer side is at most ``max_side`` before detection, which
    bounds the cost (a face too small to find there is too small to classify anyway); boxes
    are in original pixels. ``min_face`` is the smallest face side, as a fraction of the
    shorter image side. ``backend``: "auto" (OpenCV where it has CascadeClassifier, else
    numpy), "numpy" or "opencv".
    """

    def __init__(
        self,
        cascade: str | Path = CASCADE,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face: float = 0.05,
        max_side: int = 640,
        backend: str = "auto",
    ) -> None:
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face = min_face
        self.max_side = max_side
        self.cascade = HaarCascade(cascade)
        self._cv = None
        if backend not in ("auto", "numpy", "opencv"):
            raise ValueError(f"unknown detector backend {backend!r}")
        if backend != "numpy" and hasattr(cv2, "CascadeClassifier"):
            fs = cv2.FileStorage(self.cascade.xml.decode(), cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
            self._cv = cv2.CascadeClassifier()
            if not self._cv.read(fs.getFirstTopLevelNode()):
                self._cv = None
        if backend == "opencv" and self._cv is None:
            raise RuntimeError("this OpenCV build has no CascadeClassifier; use backend='numpy'")
        self.backend = "opencv" if self._cv is not None else "numpy"

    def detect(self, image: np.ndarray) -> list[Box]:
        if image.ndim == 2:
            gray = image
        else:
            gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))  # a 2 x 3000 strip keeps 1 px
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_size = int(self.min_face * min(gray.shape))
        if self._cv is not None:
            found, support = self._cv.detectMultiScale2(
                gray, self.scale_factor, self.min_neighbors, minSize=(min_size, min_size)
            )
            scored = [(tuple(int(v) for v in b), int(n)) for b, n in zip(found, support, strict=True)]
        else:
            raw = self.cascade.candidates(gray, self.scale_factor, min_size)
            scored = group_with_support(raw, self.min_neighbors)
        # Most supported first: Haar false positives are usually backed by fewer windows.
        scored.sort(key=lambda bn: (-bn[1], -bn[0][2] * bn[0][3]))
        return [tuple(round(v / scale) for v in box) for box, _ in scored]


class WholeImage:
    """A "detector" for images that already are face crops (as in the data sets): the whole image is the face.
    Haar detection on a 48 px crop mostly finds nothing, or a part of the face."""

    def detect(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        return [(0, 0, w, h)]


def face_crop(image: np.ndarray, box: Box, pad: float) -> np.ndarray:
    """The square crop around a face box that the model expects: side ``max(w, h)`` grown by ``pad`` x that
    on every side, edge pixels repeated where it leaves the image.

    Haar boxes run from brows to chin; expression data sets crop a little wider. The crop stays square and
    is padded like the data preparers' crops (``dsm.data.images.crop_box``), so a face at the frame's edge
    or a non-square box from another detector is not stretched when it is resized to the model's input.
    Boxes may be floats; one that is empty or has nothing inside the image is a ValueError.
    """
    x, y, w, h = (round(float(v)) for v in box)
    height, width = image.shape[:2]
    if w <= 0 or h <= 0 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"face box {tuple(box)} is empty or outside the {width}x{height} image")
    side = max(w, h) + 2 * round(max(w, h) * pad)
    x0, y0 = x + (w - side) // 2, y + (h - side) // 2
    return crop_box(image, (x0, y0, x0 + side, y0 + side))
