"""``dsm bench``: one config as JSON, or ``--compare`` several side by side (interleaved).

``--runtimes`` times the fused model(s) under PyTorch eager, torch.compile and onnxruntime
at batch 1 and 32; ``--video FILE --checkpoint CKPT`` measures the frames per second of the
whole ``dsm predict`` pipeline (face detection + classification).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
import torch

from dsm.bench import RUNTIMES, BenchConfig, compare, device_name, pipeline_fps, runtime_latency
from dsm.data.build import positive_int
from dsm.errors import fail, one_line
from dsm.registry import list_models, list_modulators
from dsm.reparam import fold_batchnorm, reparameterize

PROG = "dsm bench"


def _positive_ints(text: str, sep: str) -> list[int] | None:
    parts = [t.strip() for t in text.split(sep)]
    return [int(t) for t in parts] if all(t.isdecimal() and int(t) > 0 for t in parts) else None


def _sizes(text: str) -> list[tuple[int, int]]:
    """--sizes: ``3x112,1x48`` -> [(3, 112), (1, 48)], (channels, side) pairs."""
    pairs = [_positive_ints(item, "x") for item in text.split(",")]
    if not all(p and len(p) == 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected a comma list of CxS such as 3x112,1x48, got {text!r}")
    return [(p[0], p[1]) for p in pairs if p]


def _batches(text: str) -> list[int]:
    """--batches: ``1,32`` -> [1, 32]."""
    batches = _positive_ints(text, ",")
    if not batches:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive batch sizes such as 1,32, got {text!r}")
    return batches


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="dsm_net", help="registered name or timm:<arch>")
    p.add_argument("--modulator", default="dsm")
    p.add_argument("--input-size", type=positive_int, default=112)
    p.add_argument("--in-chans", type=positive_int, default=3)
    p.add_argument("--num-classes", type=positive_int, default=7)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per config (>= 100 for reported numbers)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--no-latency", action="store_true", help="params and MACs only")
    p.add_argument("--compare", action="store_true", help="benchmark several configs interleaved")
    p.add_argument(
        "--modulators",
        default=None,
        help="comma list for --compare (default: every registered modulator)",
    )
    p.add_argument("--sizes", type=_sizes, default=None, help="comma list of CxS for --compare, e.g. 3x112,1x48")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g = p.add_argument_group("runtimes (--runtimes)")
    g.add_argument("--runtimes", action="store_true", help="latency under several runtimes and batch sizes")
    g.add_argument("--backends", default=",".join(RUNTIMES), help="comma list of %(default)s")
    g.add_argument("--batches", type=_batches, default="1,32", help="comma list of batch sizes (default: %(default)s)")
    g = p.add_argument_group("prediction pipeline (--video)")
    g.add_argument("--video", default=None, help="video file: frames/s of face detection + classification")
    g.add_argument("--checkpoint", default=None, help="checkpoint for --video (default: the released one)")
    g.add_argument("--every-n-frames", type=positive_int, default=1, metavar="N")
    g.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="stop after N processed frames")
    g.add_argument(
        "--max-side", type=positive_int, default=640, help="detect on frames shrunk to this longer side (as predict)"
    )


def configs_from_args(args: argparse.Namespace) -> list[BenchConfig]:
    if not args.compare:
        return [BenchConfig(args.model, args.modulator, args.input_size, args.in_chans, args.num_classes)]
    mods = _modulators(args)
    sizes = args.sizes or [(args.in_chans, args.input_size)]
    return [BenchConfig(args.model, m, s, c, args.num_classes) for c, s in sizes for m in mods]


def run_runtimes(args: argparse.Namespace) -> int:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(RUNTIMES))
    if unknown:
        return fail(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}", PROG)
    if args.threads:
        torch.set_num_threads(args.threads)  # for the whole command, so the footer reports it
    rows = []
    for cfg in configs_from_args(args):
        fused = fold_batchnorm(reparameterize(cfg.build()))  # as --compare times it: Conv+BN pairs folded too
        shape = (cfg.in_chans, cfg.input_size, cfg.input_size)
        for row in runtime_latency(fused, shape, backends, args.batches, args.runs, args.warmup, args.threads):
            rows.append({"name": cfg.name, **row})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    df = pd.DataFrame(rows)
    for col in ("latency_ms_median", "latency_ms_iqr", "ms_per_image", "images_per_s"):
        if col not in df:
            df[col] = float("nan")
    table = df[["name", "backend", "batch", "latency_ms_median", "latency_ms_iqr", "ms_per_image", "images_per_s"]]
    print(table.round(3).to_string(index=False, na_rep="-"))
    for row in rows:
        if not row["available"]:
            print(f"{row['name']} {row['backend']} batch {row['batch']}: unavailable ({row['reason']})")
    print(
        f"device: {device_name('cpu')}; fused eval model (RepConv blocks and Conv+BN pairs), latency per batch "
        f"(ms), median/IQR over {args.runs} runs, backends interleaved run by run"
    )
    return 0


def run_video(args: argparse.Namespace) -> int:
    from dsm.checkpoint import CheckpointError
    from dsm.predict import ImageReadError

    try:
        res = pipeline_fps(
            args.video,
            args.checkpoint,
            args.every_n_frames,
            args.max_frames,
            args.device,
            threads=args.threads,
            max_side=args.max_side,
        )
    except (CheckpointError, ImageReadError, ValueError) as e:
        return fail(e, PROG)
    if args.json:
        print(json.dumps(res))
        return 0
    print(
        f"{res['video']} ({res['frame_size']}): {res['frames']} frames, {res['faces']} faces; "
        f"{res['fps']:.1f} frames/s detect+classify ({res['fps_with_decode']:.1f} with decoding); "
        f"per frame median: detect {res['detect_ms_median']:.1f} ms ({res['detector']} Haar cascade, "
        f"longer side {res['detect_longer_side']}), "
        f"classify {res['classify_ms_median']:.1f} ms (input {res['model_input']}); {res['device']}"
    )
    return 0


def _modulators(args: argparse.Namespace) -> list[str]:
    if not args.compare:
        return [args.modulator]
    return [m.strip() for m in args.modulators.split(",")] if args.modulators else list_modulators()


def _bad_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the model, modulators or timing flags of a benchmark, or None."""
    if args.model.startswith("timm:"):
        import timm

        if not timm.is_model(args.model.removeprefix("timm:")):
            return f"--model {args.model}: no such timm architecture"
    elif args.model not in list_models():
        return f"--model {args.model}: unknown; choose from {', '.join(list_models())} or timm:<arch>"
    flag = "--modulators" if args.compare else "--modulator"
    if unknown := [m for m in _modulators(args) if m not in list_modulators()]:
        return f"{flag}: unknown modulator(s) {', '.join(unknown)}; choose from {', '.join(list_modulators())}"
    if (args.runtimes or not args.no_latency) and args.runs < 2:
        return f"--runs must be >= 2 for a median and IQR (got {args.runs})"
    if args.warmup < 0:
        return f"--warmup must be >= 0 (got {args.warmup})"
    return None


def run(args: argparse.Namespace) -> int:
    from dsm.train import pick_device

    try:
        args.device = str(pick_device(args.device))  # "auto" -> cuda or cpu; a typo or a missing GPU: one line
    except RuntimeError as e:
        return fail(f"--device {args.device}: {one_line(e)}", PROG)
    if args.video:
        return run_video(args)
    if problem := _bad_args(args):
        return fail(problem, PROG)
    if args.runtimes:
        return run_runtimes(args)
    results = compare(configs_from_args(args), args.device, args.runs, args.warmup, args.threads, not args.no_latency)
    rows = [r.to_dict() for r in results]
    if args.json:
        print(json.dumps(rows[0] if not args.compare else rows, indent=None if not args.compare else 1))
        return 0
    df = pd.DataFrame(rows)[["name", "params", "params_deploy", "macs", "latency_ms_median", "latency_ms_iqr"]]
    df["params"] = (df["params"] / 1e6).round(3).astype(str) + " M"
    df["params_deploy"] = (df["params_deploy"] / 1e6).round(3).astype(str) + " M"
    df["macs"] = (df["macs"] / 1e9).round(3).astype(str) + " G"
    print(df.to_string(index=False))
    if results and results[0].device:
        print(f"device: {results[0].device}; batch 1, fused eval model, median/IQR over {args.runs} runs")
    return 0
