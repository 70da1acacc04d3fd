"""``dsm release``: publish the best checkpoint of a finished run as the model ``dsm evaluate`` and
``dsm predict`` use by default (``dsm.checkpoint.RELEASED``).

Given several runs, the release is the one with the highest *validation* accuracy (PublicTest on
FER2013): choosing by test accuracy would be test-split selection. The run's ``best`` checkpoint pair
and its ``run.json`` are copied unchanged, each written to a temporary name and renamed.

    dsm release runs/fer2013/cpu/dsm/seed0 runs/fer2013/cpu/dsm-epochs=30/seed0
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
from dsm.runs import load_run


def finished_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run record of a finished run with a ``best`` checkpoint; a one-line error names what is wrong."""
    path = Path(run_dir) / "run.json"
    try:
        record = load_run(run_dir)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no run record (not a run directory)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if record.get("status") != "finished":
        raise CheckpointError(f"{path}: run not finished (status {record.get('status')!r})")
    if (record.get("val_metrics") or {}).get("accuracy") is None:
        raise CheckpointError(f"{path}: no validation accuracy to choose by")
    return record


def choose(run_dirs: Sequence[str | os.PathLike]) -> Path:
    """The run with the highest validation accuracy (the first one on a tie)."""
    if not run_dirs:
        raise ValueError("no run directories given")
    scored = [(finished_record(d)["val_metrics"]["accuracy"], -i, Path(d)) for i, d in enumerate(run_dirs)]
    return max(scored)[2]


def release(run_dir: str | os.PathLike, dest: str | os.PathLike = RELEASED) -> Path:
    """Copy ``run_dir``'s best checkpoint and run record to ``dest`` (``.safetensors``, ``.json``,
    ``.run.json``); returns ``dest``. The pair is checked to load before anything is written."""
    record = finished_record(run_dir)
    best = Path(run_dir) / "best"
    _, info = load_checkpoint(best)  # raises on a missing or torn pair
    if info.get("test_metrics") != record.get("test_metrics"):
        raise CheckpointError(f"{checkpoint_paths(best)[1]}: test metrics differ from {Path(run_dir) / 'run.json'}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    st, js = checkpoint_paths(best)
    d_st, d_js = checkpoint_paths(dest)
    pairs = [(st, d_st), (js, d_js), (Path(run_dir) / "run.json", dest.with_name(dest.name + ".run.json"))]
    tmp = [dst.with_name(dst.name + ".tmp") for _, dst in pairs]
    try:
        for (src, _), t in zip(pairs, tmp, strict=True):
            shutil.copyfile(src, t)
    except OSError:
        for t in tmp:
            t.unlink(missing_ok=True)
        raise
    for (_, dst), t in zip(pairs, tmp, strict=True):
        os.replace(t, dst)
    return dest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="finished run directories (with run.json and best.*)")
    p.add_argument("--dest", default=str(RELEASED), help="checkpoint NAME to write (default: the released model)")
    p.add_argument("--dry-run", action="store_true", help="print the chosen run and its metrics; write nothing")


def run(args: argparse.Namespace) -> int:
    try:
        chosen = choose(args.runs)
        record = finished_record(chosen)
        summary = {
            "run": str(chosen),
            "val_accuracy": record["val_metrics"]["accuracy"],
            "test_accuracy": (record.get("test_metrics") or {}).get("accuracy"),
            "dest": None if args.dry_run else str(release(chosen, args.dest)),
        }
    except (CheckpointError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(summary))
    return 0
