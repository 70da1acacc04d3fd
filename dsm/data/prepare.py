"""``dsm prepare`` / ``data_scripts/prepare.py``: raw data set -> the prepared format.

    prepare.py DATASET --source PATH --out DIR [--overwrite] [--allow-mismatch] [options]

Bad input ends with one line, ``dsm prepare: error: <file>: <problem>``, exit status 2, and no
output directory.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from types import ModuleType

from dsm.data.format import SPLITS, DataError, load_prepared
from dsm.errors import fail, run_command, warnings_as_lines

PROG = "dsm prepare"

DATASETS = {
    "synthetic": "dsm.data.synthetic",
    "fer2013": "dsm.data.fer2013",
    "rafdb": "dsm.data.rafdb",
    "ckplus": "dsm.data.ckplus",
    "affectnet": "dsm.data.affectnet",
    "jaffe": "dsm.data.jaffe",
}
_COMMON = {"dataset", "source", "out", "overwrite", "allow_mismatch", "quiet"}


def dataset_module(name: str) -> ModuleType:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)}")
    return importlib.import_module(DATASETS[name])


def prepare_dataset(name: str, source: str | Path | None, out: str | Path, **opts) -> Path:
    """Prepare data set ``name`` from ``source`` into ``out``; options as the module's ``prepare`` takes them
    (overwrite, allow_mismatch, progress, and per data set e.g. size, classes, neutral_first_frame, n, seed)."""
    module = dataset_module(name)
    if source is None and getattr(module, "NEEDS_SOURCE", True):
        source = os.environ.get(getattr(module, "SOURCE_ENV", ""), "") or None
        if source is None:
            env = getattr(module, "SOURCE_ENV", None)
            raise DataError(f"{name}: no source given (pass --source PATH{f' or set {env}' if env else ''})")
    return module.prepare(source, out, **opts)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name in DATASETS:
        module = dataset_module(name)
        sp = sub.add_parser(name, help=(module.__doc__ or "").split("\n")[0], description=module.__doc__)
        if getattr(module, "NEEDS_SOURCE", True):
            env = getattr(module, "SOURCE_ENV", None)
            sp.add_argument(
                "--source", default=None, help=f"raw data: zip, directory or file{f' (default: ${env})' if env else ''}"
            )
        sp.add_argument("--out", required=True, help="output directory (created atomically)")
        sp.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
        sp.add_argument(
            "--allow-mismatch", action="store_true", help="warn instead of failing when counts differ from the official"
        )
        sp.add_argument("--quiet", action="store_true", help="no progress bar")
        module.add_arguments(sp)


def run(args: argparse.Namespace) -> int:
    opts = {k: v for k, v in vars(args).items() if k not in _COMMON}
    t0 = time.perf_counter()
    with warnings_as_lines(PROG, always=True):  # one per file that has a problem
        try:
            out = prepare_dataset(
                args.dataset, getattr(args, "source", None), args.out, overwrite=args.overwrite,
                allow_mismatch=args.allow_mismatch, progress=not args.quiet, **opts,
            )  # fmt: skip
        except DataError as e:
            return fail(e, PROG)
        except OSError as e:  # writing the output: permissions, a full disk
            return fail(f"{e.filename or args.out}: {e.strerror or e}", PROG)
    data = load_prepared(out)
    m = data.manifest
    counts = ", ".join(f"{s} {m['splits'][s]}" for s in SPLITS)
    shape = "x".join(map(str, data.images.shape[1:]))
    print(f"{out}: {m['num_images']} images ({counts}), {shape}, classes {', '.join(m['classes'])}")
    print(f"prepared in {time.perf_counter() - t0:.1f} s; manifest hash {data.hash}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prepare.py", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run_command(run, parser.parse_args(sys.argv[1:] if argv is None else argv), PROG)
