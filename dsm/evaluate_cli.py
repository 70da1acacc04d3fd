"""``dsm evaluate``: metrics of a checkpoint on a prepared data set, as one JSON object."""

from __future__ import annotations

import argparse
import json

from dsm.checkpoint import RELEASED, CheckpointError
from dsm.data.build import positive_int
from dsm.data.format import DataError
from dsm.errors import fail, warnings_as_lines

PROG = "dsm evaluate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=str(RELEASED), help="NAME(.safetensors|.json); default: released FER2013")
    p.add_argument("--data", required=True, help="prepared data set directory")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument(
        "--protocol",
        default=None,
        help="take the split from this protocol (official, paper-random, kfold); default: the checkpoint's own on the "
        "data set it was trained on, meta.csv's split on another; run index, fold, seed and validation fraction are "
        "the checkpoint's own when it was trained under that protocol",
    )
    p.add_argument("--fold", type=int, default=None, help="kfold: this fold instead of the checkpoint's")
    p.add_argument(
        "--run-index", type=positive_int, default=None, help="paper-random: this run instead of the checkpoint's"
    )
    p.add_argument("--tta", default=None, choices=["flip", "tencrop"], help="test-time augmentation (off by default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (cuda if there is one)")
    p.add_argument("--batch-size", type=positive_int, default=256)


def run(args: argparse.Namespace) -> int:
    from dsm.evaluate import evaluate
    from dsm.train import pick_device

    try:
        device = str(pick_device(args.device))  # "auto" -> cuda or cpu
    except RuntimeError as e:
        return fail(f"--device {args.device}: {e}", PROG)
    with warnings_as_lines(PROG, always=True):  # on stderr: stdout stays the JSON
        try:
            metrics = evaluate(
                args.checkpoint,
                args.data,
                args.split,
                args.tta,
                device,
                args.batch_size,
                args.protocol,
                args.fold,
                args.run_index,
            )
        except (CheckpointError, DataError, ValueError) as e:
            return fail(e, PROG)
    print(json.dumps(metrics))
    return 0
