"""Raw data sets arrive as a zip, a directory or a single file; preparers see one interface.

A ``Source`` lists its files as relative POSIX names and reads their bytes, so a preparer
never extracts anything to disk (faster, and nothing to clean up). Zip entries that would
escape the archive (``../``, absolute paths) are rejected on open: a zip with such entries
is suspicious even though nothing is extracted.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dsm.data.format import DataError, sha256_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_junk(name: str) -> bool:
    """Metadata that archivers and file browsers add (macOS forks, thumbnails)."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] in (".DS_Store", "Thumbs.db")


def _escapes(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in re.split(r"[/\\]", name)


class Source:
    """Files of a raw data set, by relative POSIX name."""

    path: Path
    names: list[str]

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def checksum(self) -> str:
        raise NotImplementedError

    def describe(self, name: str) -> str:
        """How error messages name a file of this source."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        return name in self._name_set

    @property
    def _name_set(self) -> set[str]:
        if not hasattr(self, "_names_cache"):
            self._names_cache = set(self.names)
        return self._names_cache

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DirSource(Source):
    def __init__(self, path: Path) -> None:
        self.path = path
        names, seen = [], set()
        for root, dirs, files in os.walk(path, followlinks=True):  # a linked-in image folder is common
            real = os.path.realpath(root)
            if real in seen:  # a link back up the tree: list each real folder once
                dirs.clear()
                continue
            seen.add(real)
            dirs.sort()
            rel = Path(root).relative_to(path).as_posix()
            for f in sorted(files):
                name = f if rel == "." else f"{rel}/{f}"
                if not _is_junk(name):
                    names.append(name)
        self.names = names

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as e:
            raise DataError(f"{self.describe(name)}: cannot read ({e.strerror or e})") from None

    def checksum(self) -> str:
        """A hash of the sorted relative paths and sizes (hashing every byte of a big tree is slow)."""
        h = hashlib.sha256()
        for name in self.names:
            h.update(f"{name}\t{(self.path / name).stat().st_size}\n".encode())
        return h.hexdigest()

    def describe(self, name: str) -> str:
        return str(self.path / name)


class ZipSource(Source):
    """A zip file, or with ``data`` a zip held in memory: one inside another source (RAF-DB ships its faces as
    ``Image/aligned.zip``), named ``where`` in messages."""

    def __init__(self, path: Path, data: bytes | None = None, where: str | None = None) -> None:
        self.path, self.where, self._data = path, where or str(path), data
        try:
            self.zip = zipfile.ZipFile(path if data is None else io.BytesIO(data))
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{self.where}: not a readable zip file ({e})") from None
        names = []
        for info in self.zip.infolist():
            if _escapes(info.filename):
                self.zip.close()
                raise DataError(f"{self.where}: entry {info.filename!r} escapes the archive (absolute path or '..')")
            if not info.is_dir() and not _is_junk(info.filename):
                names.append(info.filename)
        self.names = sorted(names)

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(name)
        except RuntimeError as e:  # zipfile's "encrypted, password required"
            if "encrypted" not in str(e):
                raise
            raise DataError(
                f"{self.describe(name)}: the zip is encrypted; extract it with its password and pass the folder"
            ) from None
        except (zipfile.BadZipFile, OSError, KeyError, EOFError, zlib.error, NotImplementedError) as e:
            raise DataError(f"{self.describe(name)}: cannot read from the zip ({e})") from None

    def checksum(self) -> str:
        return sha256_file(self.path) if self._data is None else hashlib.sha256(self._data).hexdigest()

    def describe(self, name: str) -> str:
        return f"{self.where}:{name}"

    def close(self) -> None:
        self.zip.close()


class FileSource(Source):
    """A single file (e.g. the FER2013 CSV) seen as a one-file source."""

    def __init__(self, path: Path) -> None:
        self.path, self.names = path, [path.name]

    def read(self, name: str) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as e:
            raise DataError(f"{self.path}: cannot read ({e.strerror or e})") from None

    def checksum(self) -> str:
        return sha256_file(self.path)

    def describe(self, name: str) -> str:
        return str(self.path)


def open_source(path: str | Path) -> Source:
    """A zip file, a directory, or any other single file."""
    path = Path(path)
    if path.is_dir():
        return DirSource(path)
    if not path.is_file():
        raise DataError(f"{path}: source not found")
    if zipfile.is_zipfile(path) or path.suffix.lower() == ".zip":
        return ZipSource(path)
    if path.name.lower().endswith((".tar", ".tar.gz", ".tgz")) or tarfile.is_tarfile(path):  # fer2013.tar.gz
        raise DataError(f"{path}: a tar archive; extract it and pass the folder (or the file in it)")
    return FileSource(path)


def find_prefix(names: Iterable[str], pattern: str) -> str | None:
    """The shortest folder prefix P such that some name is ``P + <match of pattern>``.

    Raw data sets are often wrapped in one or two extra folders (``archive/``,
    ``fer2013/``); this finds where the expected layout starts.
    """
    regex = re.compile(rf"^(?P<_prefix>(?:[^/]+/)*?)(?:{pattern})$")
    best: str | None = None
    for name in names:
        m = regex.match(name)
        if m and (best is None or len(m["_prefix"]) < len(best)):
            best = m["_prefix"]
            if not best:
                break
    return best


@dataclass(frozen=True)
class FolderItem:
    name: str  # full name inside the source
    split_dir: str  # "" when the layout has no split level
    class_dir: str
    file: str


def walk_class_folders(
    source: Source, class_dirs: Iterable[str], split_dirs: Iterable[str] = (), what: str = "layout"
) -> list[FolderItem] | None:
    """Images in ``[<split>/]<class>/<file>`` folders, or None when the layout is absent.

    Found by locating the folder prefix where known class folders start; once found,
    every image under it must fit the layout (an unknown class folder or a stray image
    is an error, not silently dropped). Folder names match whatever their case (re-packagings
    write ``Train/`` or ``Happy/``); items carry the names as ``class_dirs``/``split_dirs`` spell them.
    """
    classes = {c.lower(): c for c in sorted(class_dirs)}
    splits = {s.lower(): s for s in sorted(split_dirs)}
    alt = "|".join(re.escape(c) for c in classes)
    split_part = f"(?:{'|'.join(re.escape(s) for s in splits)})/" if splits else ""
    prefix = find_prefix((n for n in source.names if is_image_name(n)), rf"(?i:{split_part}(?:{alt}))/[^/]+")
    if prefix is None:
        return None
    items, outside = [], []
    for name in source.names:
        if not name.startswith(prefix) or not is_image_name(name):
            continue
        parts = name[len(prefix) :].split("/")
        if splits and parts[0].lower() not in splits:
            outside.append(name)  # an image outside the split folders (e.g. a sample in the root)
            continue
        want = 3 if splits else 2
        if len(parts) != want or parts[-2].lower() not in classes:
            raise DataError(
                f"{source.describe(name)}: unexpected {what}: expected {'<split>/' if splits else ''}<class>/<file> "
                f"with class folders {', '.join(classes.values())}"
            )
        split = splits[parts[0].lower()] if splits else ""
        items.append(FolderItem(name, split, classes[parts[-2].lower()], parts[-1]))
    if outside:  # a repackaging with a "valid/" folder must not lose those images without a word
        warnings.warn(
            f"{source.describe(outside[0])}: {len(outside)} image(s) outside the split folders "
            f"({', '.join(splits.values())}) skipped",
            stacklevel=2,
        )
    return items


def stem(name: str) -> str:
    return PurePosixPath(name).stem
