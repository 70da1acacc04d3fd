"""The ``dsm`` command: prepare data, train, evaluate, benchmark, predict, export, reproduce.

Each subcommand lives in the module that owns the concept and exposes
``add_arguments(parser)`` and ``run(args) -> int``; modules load lazily so ``dsm --help``
stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

from dsm import __version__
from dsm.errors import fail, run_command

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("dsm.data.prepare", "raw data set -> the prepared format (same as data_scripts/prepare.py)"),
    "train": ("dsm.train_cli", "train a model on a prepared data set"),
    "evaluate": ("dsm.evaluate_cli", "evaluate a checkpoint on a prepared data set (JSON)"),
    "runs": ("dsm.runs_cli", "summarize run directories (mean +- std over seeds/folds)"),
    "bench": ("dsm.bench_cli", "params, MACs and latency of models and modulators"),
    "predict": ("dsm.predict_cli", "detect faces in images/videos and classify their expressions"),
    "export": ("dsm.export_cli", "export a checkpoint's fused model to ONNX"),
    "release": ("dsm.release", "publish the best finished run (by validation accuracy) as the default model"),
    "reproduce": ("dsm.reproduce", "run every notebook with papermill and build the book"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="dsm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    parser.add_argument("--version", action="version", version=f"dsm {__version__}")
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help, the version (exit 0) or the "invalid choice" error
        return 2
    try:
        module = importlib.import_module(COMMANDS[argv[0]][0])
    except ModuleNotFoundError as e:  # an optional extra: onnx for export, papermill for reproduce
        extra = {"onnx": "onnx", "onnxruntime": "onnx", "papermill": "book", "nbformat": "book"}.get(e.name or "")
        if extra is None:
            raise
        return fail(f"needs {e.name}: pip install -e '.[{extra}]' in the dsm checkout", f"dsm {argv[0]}")
    cmd_parser = argparse.ArgumentParser(prog=f"dsm {argv[0]}", description=COMMANDS[argv[0]][1])
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    return run_command(module.run, args, f"dsm {argv[0]}")


if __name__ == "__main__":
    raise SystemExit(main())
