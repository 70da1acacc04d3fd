"""``dsm runs summarize RUN_DIRS...``: mean +- std over seeds, folds or run indices."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from dsm.errors import fail

PROG = "dsm runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["summarize", "list"], help="summarize: grouped mean+-std; list: one row a run")
    p.add_argument("run_dirs", nargs="+", help="run directories, or folders searched for run.json")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")


def find_runs(paths: list[str]) -> list[Path]:
    """Run directories among ``paths``: each path itself if it holds run.json, else every run.json below it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "run.json").is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(r.parent for r in p.rglob("run.json"))
        else:
            raise ValueError(f"{p}: not a run directory")
    return found


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` whole or not at all (through a temporary file beside it)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    from dsm.runs import runs_frame, summarize

    try:
        dirs = find_runs(args.run_dirs)
        df = summarize(dirs) if args.action == "summarize" else runs_frame(dirs)
    except ValueError as e:  # a missing path or a broken run.json: the message names it
        return fail(e, PROG)
    if df.empty:
        print("no finished runs")
        return 1
    if args.csv:
        try:
            write_csv(df, Path(args.csv))
        except OSError as e:
            return fail(f"--csv {args.csv}: {e.strerror or e}", PROG)
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(df.drop(columns=["runs"], errors="ignore").to_string(index=False, float_format="%.4f"))
    return 0
