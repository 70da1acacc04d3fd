"""Where a CPU training step of dsm_net spends its time, per operator, and how steady the rate is.

    python benchmarks/train_op_profile.py [--batch 128] [--size 48] [--threads 2] [--repeats 3]
        [--out benchmarks/results/train_op_profile_48]

Complements ``train_throughput.py`` (which compares input paths and settings): this one takes
the cpu recipe's step (training-form dsm_net, channels_last, AdamW) on random 1-channel input,
times ``--repeats`` blocks of steps (the spread says how noisy the machine is), profiles a few
steps with ``torch.profiler`` and reports each operator's share of self CPU time. It also
measures a square float32 matmul as the CPU's best-case FLOP rate and sets it against the
step's FLOPs (about 6 x the training-form MACs per image), i.e. how far the step is from the
arithmetic bound. Writes a Markdown table and a JSON record.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from dsm.bench import count_macs, cpu_busy, device_name
from dsm.registry import create_model
from dsm.runs import git_commit


def matmul_gflops(n: int = 2048, tries: int = 8) -> float:
    """Best-of-``tries`` float32 GFLOP/s of an n x n matmul: the CPU's practical arithmetic peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", default="benchmarks/results/train_op_profile_48")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    busy = cpu_busy(2.0)
    torch.manual_seed(0)
    model = create_model("dsm_net", num_classes=7, in_chans=1).train().to(memory_format=torch.channels_last)
    macs = count_macs(create_model("dsm_net", num_classes=7, in_chans=1).train(), (1, 1, args.size, args.size))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.randn(args.batch, 1, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (args.batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        rates.append(args.steps * args.batch / (time.perf_counter() - t0))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    ops = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count // 5} for e in events[: args.top]]
    peak = matmul_gflops()
    step_gflops = 6 * macs * statistics.median(rates) / 1e9
    record = {
        "command": "python benchmarks/train_op_profile.py "
        + f"--batch {args.batch} --size {args.size} --steps {args.steps} --repeats {args.repeats}"
        + (f" --threads {args.threads}" if args.threads else "")
        + f" --out {args.out}",
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device_name("cpu"),
        "threads": torch.get_num_threads(),
        "cpu_busy_before": busy,
        "torch": torch.__version__,
        "training_form_macs_per_image": macs,
        "images_per_s": rates,
        "matmul_peak_gflops": peak,
        "step_gflops": step_gflops,
        "ops": ops,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        f"# Training step of dsm_net, {args.size}x{args.size} gray, batch {args.batch}, channels_last, eager",
        "",
        f"`{record['command']}` at commit `{record['git_commit']}`, {record['time']}; {record['device']}, "
        f"torch {torch.__version__}; other processes used {busy:.0%} of the CPU before.",
        "",
        f"- images/s over {args.repeats} blocks of {args.steps} steps: "
        + ", ".join(f"{r:.0f}" for r in rates)
        + f" (median {statistics.median(rates):.0f})",
        f"- training-form MACs per image: {macs / 1e6:.1f} M, so about {step_gflops:.0f} GFLOP/s of arithmetic "
        f"(6 x MACs x images/s) against {peak:.0f} GFLOP/s for a 2048x2048 float32 matmul "
        f"({step_gflops / peak:.0%}); the arithmetic bound is {peak * 1e9 / (6 * macs):.0f} images/s",
        "",
        "| operator | share of self CPU time | calls per step |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{o['op']}` | {o['share']:.1%} | {o['calls']} |" for o in ops]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
