"""``dsm export``: a checkpoint's fused model to ONNX, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsm.checkpoint import RELEASED, CheckpointError, load_model
from dsm.errors import fail, warnings_as_lines
from dsm.export import ExportError, export_checkpoint, max_abs_error, opset_of, opset_range, read_metadata
from dsm.reparam import reparameterize

PROG = "dsm export"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", default=str(RELEASED), help="NAME, NAME.safetensors or NAME.json; default: released FER2013"
    )
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch comparison")


def run(args: argparse.Namespace) -> int:
    dynamic = args.batch == "dynamic"
    if not dynamic and not (args.batch.isdigit() and int(args.batch) > 0):
        return fail(f"--batch must be 'dynamic' or a positive integer, not {args.batch!r}", PROG)
    batch = 1 if dynamic else int(args.batch)
    lo, hi = opset_range(args.exporter)
    if not lo <= args.opset <= hi:  # asked before exporting: the exporters' own failure is pages of log
        return fail(f"--opset {args.opset}: the {args.exporter} exporter writes {lo}..{hi}", PROG)
    if Path(args.onnx).is_dir():
        return fail(f"--onnx {args.onnx}: a folder; give the .onnx file's path", PROG)
    try:
        with warnings_as_lines(PROG):  # a fallback to the other exporter: one warning line, not Python's two
            path = export_checkpoint(args.checkpoint, args.onnx, args.opset, dynamic, batch, args.exporter)
    except (CheckpointError, ExportError) as e:
        return fail(e, PROG)
    except OSError as e:  # the folder is not writable, the disk is full: name --onnx, not a scratch file in it
        return fail(f"--onnx {args.onnx}: cannot write ({e.strerror or e})", PROG)
    meta = read_metadata(path)
    inp = meta["input"]
    print(f"wrote {path} (opset {opset_of(path)}, batch {args.batch}, input {inp['channels']}x{inp['size']})")
    if not args.no_check:
        try:
            model, _ = load_model(args.checkpoint)
            fused = reparameterize(model)
            for b in (1, 4) if dynamic else (batch,):
                err = max_abs_error(path, fused, (b, inp["channels"], inp["size"], inp["size"]))
                print(f"onnxruntime vs PyTorch, batch {b}: max |logit difference| = {err:.2e}")
                if err > 1e-4:
                    path.unlink()  # a model that does not compute what the checkpoint does is not left behind
                    fail(f"{path}: outputs differ from PyTorch by {err:.2e} (> 1e-4); removed", PROG)
                    return 1
        except Exception as e:  # noqa: BLE001  (onnxruntime cannot load or run it: no file that was not checked)
            path.unlink(missing_ok=True)
            return fail(f"{path}: the onnxruntime check failed ({type(e).__name__}: {e}); removed", PROG)
    return 0
