"""``dsm bench``: one config as JSON, or ``--compare`` several side by side (interleaved)."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from dsm.bench import BenchConfig, compare
from dsm.registry import list_modulators


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="dsm_net", help="registered name or timm:<arch>")
    p.add_argument("--modulator", default="dsm")
    p.add_argument("--input-size", type=int, default=112)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=7)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per config (>= 100 for reported numbers)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--no-latency", action="store_true", help="params and MACs only")
    p.add_argument("--compare", action="store_true", help="benchmark several configs interleaved")
    p.add_argument(
        "--modulators",
        default=None,
        help="comma list for --compare (default: every registered modulator)",
    )
    p.add_argument("--sizes", default=None, help="comma list of CxS for --compare, e.g. 3x112,1x48")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def configs_from_args(args: argparse.Namespace) -> list[BenchConfig]:
    if not args.compare:
        return [BenchConfig(args.model, args.modulator, args.input_size, args.in_chans, args.num_classes)]
    mods = args.modulators.split(",") if args.modulators else list_modulators()
    sizes = (
        [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
        if args.sizes
        else [(args.in_chans, args.input_size)]
    )
    return [BenchConfig(args.model, m, s, c, args.num_classes) for c, s in sizes for m in mods]


def run(args: argparse.Namespace) -> int:
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
