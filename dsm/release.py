"""``dsm release``: publish the best checkpoint of a finished run as the model ``dsm evaluate`` and
``dsm predict`` use by default (``dsm.checkpoint.RELEASED``).

Given several runs, the release is the one with the highest *validation* accuracy (PublicTest on
FER2013): choosing by test accuracy would be test-split selection. The run's ``best`` checkpoint pair
and its ``run.json`` are copied unchanged, each written to a temporary name and renamed. A candidate may
also be a released model (``NAME`` of ``NAME.safetensors``, ``NAME.json``, ``NAME.run.json``): run
directories are not committed, so the next release is chosen against the current one, not its lost run.

    dsm release runs/fer2013/cpu/dsm/seed0 runs/fer2013/cpu/dsm-epochs=30/seed0
    dsm release runs/fer2013/continued/leg1 dsm/assets/checkpoints/fer2013_dsm_net
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsm.checkpoint import RELEASED, CheckpointError, checkpoint_paths, load_checkpoint
from dsm.data.format import DataError
from dsm.errors import fail, parents_made_for
from dsm.runs import read_record, trained_on

PROG = "dsm release"


def sources(candidate: str | os.PathLike) -> tuple[Path, Path]:
    """A candidate's run record and checkpoint: a run directory's ``run.json`` and ``best``, or a released
    model's ``NAME.run.json`` and ``NAME``."""
    if Path(candidate).is_dir():
        return Path(candidate) / "run.json", Path(candidate) / "best"
    st_path, _, record = release_paths(candidate)
    return record, st_path.with_suffix("")


def finished_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run record of a finished run with a ``best`` checkpoint (or of a released model); a one-line
    error names what is wrong."""
    path = sources(run_dir)[0]
    try:
        record = read_record(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no run record (not a run directory or a released model)") from None
    except ValueError as e:  # names the file
        raise CheckpointError(str(e)) from None
    if record.get("status") != "finished":
        raise CheckpointError(f"{path}: run not finished (status {record.get('status')!r})")
    if (record.get("val_metrics") or {}).get("accuracy") is None:
        raise CheckpointError(f"{path}: no validation accuracy to choose by")
    return record


def _validation_split(record: dict[str, Any]) -> tuple[Any, ...]:
    """What the validation accuracy is measured on: data set, classes, split sizes, protocol, fold, and the
    protocol's notes, which name the seed wherever the split depends on it (a validation part held out of
    train at random, paper-random's pooled splits), so seeds are compared only on official splits."""
    data, cfg = record.get("data") or {}, record.get("config") or {}
    sizes = json.dumps(data.get("split_sizes"), sort_keys=True)
    split = cfg.get("protocol"), cfg.get("fold"), cfg.get("run_index"), json.dumps(data.get("protocol_notes"))
    return data.get("dataset"), data.get("classes"), sizes, *split


def choose(run_dirs: Sequence[str | os.PathLike], data: str | os.PathLike | None = None) -> Path:
    """The run with the highest validation accuracy (the first one on a tie). Every run must have been
    validated on the same split of the same data set, or the accuracies do not compare; with ``data``
    (a prepared directory) every run must also have been trained on exactly that data (manifest hash)."""
    if not run_dirs:
        raise ValueError("no run directories given")
    records = [finished_record(d) for d in run_dirs]
    first = sources(run_dirs[0])[0]
    for d, r in zip(run_dirs, records, strict=True):
        if _validation_split(r) != _validation_split(records[0]):
            raise CheckpointError(f"{sources(d)[0]}: validated on another data set or split than {first}")
    if data is not None:
        from dsm.data.format import load_prepared

        hashes = load_prepared(data).hashes
        for d, r in zip(run_dirs, records, strict=True):
            if not trained_on(r, hashes):
                raise CheckpointError(f"{sources(d)[0]}: trained on other data than {data}")
    scored = [
        (r["val_metrics"]["accuracy"], -i, Path(d)) for i, (d, r) in enumerate(zip(run_dirs, records, strict=True))
    ]
    return max(scored)[2]


def release_paths(dest: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``NAME.safetensors``, ``NAME.json`` and ``NAME.run.json`` of a checkpoint name (with or without suffix)."""
    st, js = checkpoint_paths(dest)
    return st, js, js.with_name(js.name.removesuffix(".json") + ".run.json")


def release(run_dir: str | os.PathLike, dest: str | os.PathLike = RELEASED) -> Path:
    """Copy ``run_dir``'s best checkpoint and run record (or a released model's) to ``dest``
    (``NAME.safetensors``, ``NAME.json``, ``NAME.run.json``); returns the ``.safetensors`` path. Everything
    is checked before anything is written: the pair loads, and its metrics are the record's. Releasing a
    model onto itself writes nothing."""
    record = finished_record(run_dir)
    record_path, best = sources(run_dir)
    _, info = load_checkpoint(best)  # raises on a missing or torn pair
    for key in ("val_metrics", "test_metrics"):
        if info.get(key) != record.get(key):
            raise CheckpointError(f"{checkpoint_paths(best)[1]}: {key} differ from {record_path}")
    if str(dest).endswith(("/", os.sep)) or Path(dest).is_dir():
        example = Path(dest) / "model"
        raise ValueError(f"--dest {dest}: a folder; give the checkpoint's base path inside it, e.g. {example}")
    targets = release_paths(dest)
    if targets[0].resolve() == checkpoint_paths(best)[0].resolve():
        return targets[0]
    files = (*checkpoint_paths(best), record_path)
    tmp = [t.with_name(t.name + ".tmp") for t in targets]
    try:
        with parents_made_for(targets[0]):
            try:
                for src, t in zip(files, tmp, strict=True):
                    shutil.copyfile(src, t)
                # the record first, the pair last: between the two renames a reader finds a torn pair by its id
                for t, dst in zip(tmp[::-1], targets[::-1], strict=True):
                    os.replace(t, dst)
            finally:
                for t in tmp:
                    t.unlink(missing_ok=True)
    except OSError as e:  # name the destination the user gave, not a temporary file beside it
        raise ValueError(f"--dest {dest}: cannot write ({e.strerror or e})") from None
    return targets[0]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs", nargs="+", help="finished run directories (with run.json and best.*) or released models (NAME)"
    )
    p.add_argument("--dest", default=str(RELEASED), help="checkpoint NAME to write (default: the released model)")
    p.add_argument("--data", default=None, help="prepared data set: every run must have been trained on it")
    p.add_argument("--dry-run", action="store_true", help="print the chosen run and its metrics; write nothing")


def run(args: argparse.Namespace) -> int:
    try:
        chosen = choose(args.runs, args.data)
        record = finished_record(chosen)
        summary = {
            "run": str(chosen),
            "val_accuracy": record["val_metrics"]["accuracy"],
            "test_accuracy": (record.get("test_metrics") or {}).get("accuracy"),
            "dest": None if args.dry_run else str(release(chosen, args.dest)),
        }
    except (CheckpointError, DataError, ValueError, OSError) as e:
        return fail(e, PROG)
    print(json.dumps(summary))
    return 0
