"""Tiny raw data sets in each layout the preparers read, built in tmp_path by the tests.

Each builder returns ``{relative name: bytes}``; ``as_dir``/``as_zip`` materialise it, so
the same content is tested as a directory and as a zip. Images are random noise with a
brighter centre square (a "face" for the centre-crop fallback).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np

FER_FOLDERS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
FER_CANONICAL = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


def image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 120, shape, dtype=np.uint8)
    h, w = shape[:2]
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] += 100
    return img


def encode(img: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def as_dir(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def as_zip(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def fer2013_csv(path: Path, per_usage: int = 7) -> Path:
    """ICML CSV: per_usage rows per Usage, emotions cycling 0..6 (so each class per split)."""
    lines = ["emotion,pixels,Usage"]
    for u, usage in enumerate(("Training", "PublicTest", "PrivateTest")):
        for i in range(per_usage):
            px = " ".join(map(str, image((48, 48), 100 * u + i).ravel()))
            lines.append(f"{i % 7},{px},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


def fer2013_folders(prefix: str = "", per_class: tuple[int, int, int] = (2, 1, 1)) -> dict[str, bytes]:
    """train/<class>/Training_*.jpg and test/<class>/{PublicTest,PrivateTest}_*.jpg."""
    files = {}
    parts = zip(("Training", "PublicTest", "PrivateTest"), ("train", "test", "test"), per_class, strict=True)
    parts = list(parts)
    for c, folder in enumerate(FER_FOLDERS):
        for usage, top, k in parts:
            for i in range(k):
                files[f"{prefix}{top}/{folder}/{usage}_{c}{i}.jpg"] = encode(image((48, 48), c * 10 + i))
    return files


RAF_LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}


def rafdb_basic(
    n_train: int = 14, n_test: int = 7, prefix: str = "basic/", inner_zip: bool = False
) -> dict[str, bytes]:
    """The release's layout; ``inner_zip``: the faces still in ``Image/aligned.zip`` (with a macOS resource
    folder beside them), as the release ships them."""
    files, lines, faces = {}, [], {}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(1, n + 1):
            name = f"{split}_{i:05d}"
            lines.append(f"{name}.jpg {(i - 1) % 7 + 1}")
            faces[f"aligned/{name}_aligned.jpg"] = encode(image((100, 100, 3), i))
    if inner_zip:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in faces.items():
                z.writestr(name, data)
                z.writestr(f"__MACOSX/{name.replace('/', '/._')}", b"resource fork")
        files[f"{prefix}Image/aligned.zip"] = buf.getvalue()
    else:
        files |= {f"{prefix}Image/{name}": data for name, data in faces.items()}
    files[f"{prefix}EmoLabel/list_patition_label.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def rafdb_repackaged(per_class: tuple[int, int] = (2, 1)) -> dict[str, bytes]:
    files = {}
    for label in range(1, 8):
        for split, k in zip(("train", "test"), per_class, strict=True):
            for i in range(k):
                files[f"DATASET/{split}/{label}/{split}_{label}{i}_aligned.jpg"] = encode(image((100, 100, 3), i))
    return files


CK_CODES = ["neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]


def ckplus_original(subjects: int = 12, frames: int = 5) -> dict[str, bytes]:
    """Two sequences per subject: 001 labelled (codes cycling 1..7), 002 unlabelled."""
    files = {}
    for s in range(subjects):
        subj = f"S{100 + s:03d}"
        for seq in ("001", "002"):
            for f in range(1, frames + 1):
                name = f"cohn-kanade-images/{subj}/{seq}/{subj}_{seq}_{f:08d}.png"
                files[name] = encode(image((120, 160), s * 100 + f), ".png")
        code = s % 7 + 1
        files[f"Emotion/{subj}/001/{subj}_001_{frames:08d}_emotion.txt"] = f"   {code:.7e}\n".encode()
    return files


CK48_FOLDERS = {"anger": "anger", "contempt": "contempt", "disgust": "disgust", "fear": "fear",
                "happy": "happiness", "sadness": "sadness", "surprise": "surprise"}  # fmt: skip


def ckplus48(subjects: int = 14) -> dict[str, bytes]:
    """Each subject: 3 frames of one emotion (emotions cycling), like CK+48."""
    files = {}
    folders = list(CK48_FOLDERS)
    for s in range(subjects):
        for f in range(3):
            name = f"CK+48/{folders[s % 7]}/S{s:03d}_001_{f + 10:08d}.png"
            files[name] = encode(image((48, 48), s * 10 + f), ".png")
    return files


AFFECT_CODES = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]


AFFECT_NESTED_CSVS = "AffectNet/Manually_Annotated_file_lists/"
AFFECT_NESTED_IMAGES = "AffectNet/Manually_Annotated_Images/Manually_Annotated_Images/"


def affectnet_official(
    per_code: tuple[int, int] = (2, 1), *, headerless_validation: bool = False, nested: bool = False
) -> dict[str, bytes]:
    """training.csv/validation.csv with codes 0..10 (8..10 to be dropped) and the images.

    ``headerless_validation``: validation.csv without its header row, as often in the release.
    ``nested``: the release's file lists folder, and the image tar extracted one level too deep.
    """
    files = {}
    csvs, images = (AFFECT_NESTED_CSVS, AFFECT_NESTED_IMAGES) if nested else ("", "Manually_Annotated_Images/")
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    for csv, k in (("training.csv", per_code[0]), ("validation.csv", per_code[1])):
        lines = [] if headerless_validation and csv == "validation.csv" else [header]
        for code in range(11):
            for i in range(k):
                rel = f"{code + 1}/{csv[0]}{code:02d}{i}.jpg"
                files[f"{images}{rel}"] = encode(image((160, 140, 3), code * 10 + i))
                lines.append(f'{rel},20,30,100,110,"1;2;3",{code},0.1,-0.2')
        files[csvs + csv] = ("\n".join(lines) + "\n").encode()
    return files


def affectnet_folders(
    per_class: tuple[int, ...] = (2, 1), digits: bool = False, splits: tuple[str, ...] = ("train", "val")
) -> dict[str, bytes]:
    """Class folders ``<split>/<class or code>/*.jpg``, ``per_class[j]`` images per class in ``splits[j]``."""
    names = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
    files = {}
    for c, name in enumerate(names):
        folder = str(c) if digits else name
        for split, k in zip(splits, per_class, strict=True):
            for i in range(k):
                files[f"{split}/{folder}/{c}{i}.jpg"] = encode(image((96, 96, 3), c * 10 + i))
    return files


def affectnet_npy(per_class: tuple[int, int] = (2, 1), text_codes: bool = True) -> dict[str, bytes]:
    """The later distribution: ``{train,val}_set/images/<id>.jpg`` + ``annotations/<id>_exp.npy`` (the code as
    NumPy text, as that release stores it, or as an integer) and the other annotations beside it; one image
    per split has code 9 (uncertain), which is dropped."""
    files, n = {}, 0
    for split, k in zip(("train_set", "val_set"), per_class, strict=True):
        for code in [c for c in range(8) for _ in range(k)] + [9]:
            n += 1
            files[f"{split}/images/{n}.jpg"] = encode(image((96, 96, 3), n))
            buf = io.BytesIO()
            np.save(buf, np.array(str(code)) if text_codes else np.array(code))
            files[f"{split}/annotations/{n}_exp.npy"] = buf.getvalue()
            buf = io.BytesIO()
            np.save(buf, np.array("0.25"))
            files[f"{split}/annotations/{n}_val.npy"] = buf.getvalue()
    return files


JAFFE_CODES = {"NE": "neutral", "HA": "happiness", "SA": "sadness", "SU": "surprise", "AN": "anger",
               "DI": "disgust", "FE": "fear"}  # fmt: skip
JAFFE_SUBJECTS = ["KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"]


def jaffe(per_subject: int = 7) -> dict[str, bytes]:
    files = {}
    codes = list(JAFFE_CODES)
    n = 0
    for subj in JAFFE_SUBJECTS:
        for i in range(per_subject):
            n += 1
            files[f"jaffe/{subj}.{codes[i % 7]}{i // 7 + 1}.{n}.tiff"] = encode(image((256, 256), n), ".tiff")
    files["jaffe/README"] = b"not an image"
    return files
