"""Training throughput on this machine: a naive per-image PIL/DataLoader loop vs the engine's variants.

    python benchmarks/train_throughput.py --data DIR [--steps 20] [--repeats 3] [--threads N] [--out NAME]

Each row is images/s of whole training steps of dsm_net (same model maths: training-form
RepConv branches, AdamW) at the data set's native size. The baseline is what a
straightforward PyTorch script does: a Dataset that converts each image with PIL and
torchvision transforms, a DataLoader, NCHW tensors, glibc's default allocator. The engine rows do the
same work (horizontal flip and random erasing, no weight EMA) and change one thing at a time
(batched tensor input path, freed memory kept by ``dsm.allocator``, channels_last, batch size,
torch.compile and its mode); the last rows are the ``cpu`` recipe as it trains, with its affine
augmentation and weight EMA on top, with and without the allocator setting. The rows named "bf16 autocast"
are not the same arithmetic: convolutions and matrix products round to bfloat16 (``amp_cpu``), which pays
only on a CPU that multiplies bf16 in hardware (AMX, AVX512-BF16; the record names the CPU's flags).
Every row is measured ``--repeats`` times, each block in a fresh process (an allocator setting lasts for the
process, and no row inherits another's heap), the rows in a rotated order each round so that a machine that
gets busier slows all of them alike; the record gives the median and the range.
Writes a Markdown table and a JSON record (command, git commit, torch version, device and its bf16 flags,
data manifest hash, how busy the CPU was before), each through a temporary file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from dsm.allocator import OFF_ENV, keep_freed_memory
from dsm.bench import cpu_bf16_flags, cpu_busy, device_name
from dsm.config import recipe
from dsm.data.format import load_prepared
from dsm.registry import create_model
from dsm.runs import git_commit
from dsm.study import OTHER_ROUNDING
from dsm.throughput import profile


class PILDataset(Dataset):
    """The naive input path: one PIL image and one transform pipeline per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.tf = v2.Compose(
            [
                v2.RandomHorizontalFlip(),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([0.5], [0.5]),
                v2.RandomErasing(p=0.5),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tf(Image.fromarray(np.asarray(self.images[i]))), int(self.labels[i])


def naive_baseline(data_dir: str, steps: int, batch_size: int = 64, workers: int = 0) -> float:
    """images/s of a plain DataLoader + PIL loop training dsm_net (training form, NCHW)."""
    prepared = load_prepared(data_dir)
    idx = prepared.split_indices("train")
    loader = DataLoader(
        PILDataset(prepared.images[idx], prepared.labels[idx]), batch_size, shuffle=True, num_workers=workers
    )
    model = create_model("dsm_net", num_classes=len(prepared.classes), in_chans=prepared.channels).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    it = iter(loader)
    seen, t0 = 0, None
    for step in range(steps + 3):
        if step == 3:
            seen, t0 = 0, time.perf_counter()
        x, y = next(it)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - t0)


NAIVE = "naive: PIL + DataLoader, NCHW, batch 64"
SAME_WORK = {"crop_scale": 0.0, "rotation": 0.0, "ema_decay": None}  # the naive loop's augmentation, no EMA
DEFAULT_MALLOC = {OFF_ENV: "0"}  # the row's process keeps glibc's allocator defaults
VARIANTS = [
    ("engine: batched tensor input, NCHW, batch 64", {"channels_last": False, "batch_size": 64, **SAME_WORK}),
    ("+ freed memory kept in the process (dsm.allocator)", {"channels_last": False, "batch_size": 64, **SAME_WORK}),
    ("+ channels_last", {"channels_last": True, "batch_size": 64, **SAME_WORK}),
    ("channels_last, batch 128", {"channels_last": True, "batch_size": 128, **SAME_WORK}),
    ("channels_last, batch 256", {"channels_last": True, "batch_size": 256, **SAME_WORK}),
    ("channels_last, batch 64, torch.compile", {"batch_size": 64, "compile": True, **SAME_WORK}),
    ("channels_last, batch 128, torch.compile", {"batch_size": 128, "compile": True, **SAME_WORK}),
    (
        "channels_last, batch 64, torch.compile max-autotune-no-cudagraphs",
        {"batch_size": 64, "compile": True, "compile_mode": "max-autotune-no-cudagraphs", **SAME_WORK},
    ),
    ("the cpu recipe as trained, glibc's default allocator", {"compile": True}),
    ("the cpu recipe as trained: + affine augmentation + weight EMA", {"compile": True}),
    # not the same rounding: bf16 autocast (amp_cpu), for CPUs that multiply bf16 in hardware; the target line
    # of the book (dsm.study.speedup_report) tells these rows apart by their name
    (f"{OTHER_ROUNDING}: channels_last, batch 128", {"batch_size": 128, "amp_cpu": True, **SAME_WORK}),
    (f"{OTHER_ROUNDING}: channels_last, batch 128, torch.compile", {"compile": True, "amp_cpu": True, **SAME_WORK}),
    (f"{OTHER_ROUNDING}: the cpu recipe as trained", {"amp_cpu": True}),
    (f"{OTHER_ROUNDING}: the cpu recipe as trained, torch.compile", {"compile": True, "amp_cpu": True}),
]
ROW_ENV = {
    "engine: batched tensor input, NCHW, batch 64": DEFAULT_MALLOC,
    "the cpu recipe as trained, glibc's default allocator": DEFAULT_MALLOC,
}


def block(name: str, data: str, steps: int) -> dict:
    """One block of one row, in this process."""
    if name == NAIVE:
        return {"images_per_s": naive_baseline(data, steps)}
    prepared = load_prepared(data)
    size = int(prepared.manifest["image_size"][0])
    opts = dict(VARIANTS)[name]
    cfg = recipe("cpu", data=data, out="/tmp/dsm-throughput", input_size=size, device="cpu", **opts)
    r = profile(cfg, steps=steps)
    full, model_only = r["full_step_images_per_s"], r["model_only_images_per_s"]
    return {"images_per_s": full, "model_only_images_per_s": model_only, "allocator": keep_freed_memory()}


def block_in_new_process(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--block", name, "--data", args.data, "--steps", str(args.steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {k: v for k, v in os.environ.items() if k != OFF_ENV} | ROW_ENV.get(name, {})
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"train_throughput.py: error: the block of {name!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="blocks of --steps per row, rows rotated each round")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for every row (default: torch's)")
    p.add_argument("--out", default="benchmarks/results/train_throughput")
    p.add_argument("--block", help=argparse.SUPPRESS)  # internal: measure one block of this row and print it
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.block:
        print(json.dumps(block(args.block, args.data, args.steps)))
        return
    busy = cpu_busy(2.0)  # the fraction of the CPU other processes used just before: should be ~0
    prepared = load_prepared(args.data)
    size = int(prepared.manifest["image_size"][0])
    names = [NAIVE] + [n for n, o in VARIANTS if not (o.get("compile") and args.no_compile)]
    blocks: dict[str, list[dict]] = {n: [] for n in names}
    for round_ in range(args.repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            blocks[name].append(block_in_new_process(name, args))
            print(name, round_, blocks[name][-1], flush=True)
    rows = []
    for name in names:
        full = [b["images_per_s"] for b in blocks[name]]
        row = {"variant": name, "images_per_s": statistics.median(full), "min": min(full), "max": max(full)}
        row["allocator"] = blocks[name][0].get("allocator", "glibc defaults (the naive loop does not touch them)")
        if "model_only_images_per_s" in blocks[name][0]:
            row["model_only_images_per_s"] = statistics.median(b["model_only_images_per_s"] for b in blocks[name])
            row["ratio"] = row["images_per_s"] / row["model_only_images_per_s"]
        rows.append(row | {"blocks": full})
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup_vs_naive"] = r["images_per_s"] / base
    record = {
        "command": "python " + " ".join(["benchmarks/train_throughput.py", *sys.argv[1:]]),
        "repeats": args.repeats,
        "steps": args.steps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_busy_before": busy,
        "git_commit": git_commit(),
        "device": device_name("cpu"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_flags": cpu_bf16_flags(),
        "dataset": prepared.manifest.get("dataset"),
        "manifest_hash": prepared.hash,
        "image_size": size,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    lines = [
        f"# Training throughput, dsm_net, {prepared.manifest.get('dataset')} {size}x{size}, {record['device']}",
        "",
        f"`{record['command']}` at commit `{record['git_commit']}`, {record['time']}; torch {record['torch']}, "
        f"{record['threads']} torch threads; other processes used {busy:.0%} of the CPU just before. "
        f"CPU kernels: {record['cpu_capability']}; bf16 in hardware: "
        f"{', '.join(record['cpu_bf16_flags']) or 'none'}.",
        "",
        f"Images/s: median of {args.repeats} blocks of {args.steps} steps per row (range in brackets), each block "
        "in a fresh process, the rows taking turns in a rotated order. Rows that do not name the cpu recipe do "
        "the naive loop's work (flip, random erasing, no EMA); rows named bf16 autocast round convolutions and "
        "matrix products to bfloat16, which is not the naive loop's arithmetic. The naive loop and the rows "
        "that name glibc's default "
        "allocator run with glibc's defaults; the other engine rows keep freed memory in the process "
        "(dsm.allocator).",
        "",
        "| variant | images/s (full step) | model fwd+bwd+update only | ratio | speed-up vs naive |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        mo = f"{r['model_only_images_per_s']:.0f}" if "model_only_images_per_s" in r else ""
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        ips = f"{r['images_per_s']:.0f} [{r['min']:.0f}–{r['max']:.0f}]"
        lines.append(f"| {r['variant']} | {ips} | {mo} | {ratio} | {r['speedup_vs_naive']:.2f}x |")
    _write(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
