"""Train and time on a lent GPU machine (the ``device`` tool) within one short lease.

The machine receives the working tree (64 MiB at most) and nothing else, so the prepared FER2013 set travels
packed: the training and validation pixels, losslessly compressed (a LOCO-I/MED predictor, then xz), with the
set's own manifest, labels and meta. The test pixels stay here: the GPU runs train with ``defer_test`` and the
final evaluation of the best checkpoint happens on this machine when the run is resumed. The sha256 of the
training and validation pixels is checked after unpacking, so the GPU trains on exactly the prepared images.

    here:   python benchmarks/device_session.py pack --data data/fer2013 --out .devdata/fer2013
    there:  export PYTHONPATH=$PWD DSM_GIT_COMMIT=<the commit sent>   # its copy's .git may be stale
            python benchmarks/device_session.py unpack --src .devdata/fer2013 --out /tmp/fer2013
            python benchmarks/device_session.py train --data /tmp/fer2013 --deadline 420 \\
                --job full:dsm:seed0 --job cpu:dsm-epochs=150:seed0
            python benchmarks/device_session.py bench --profile cpu --data /tmp/fer2013 \\
                --out $OUT/bench_gpu_fer2013_cpu.json
            python benchmarks/device_session.py collect --out $OUT runs/fer2013/full/dsm/seed0 ...
    here:   python benchmarks/device_session.py restore --src <fetched files> --runs runs/fer2013
            dsm reproduce --datasets fer2013 --profile cpu --train-only   # finishes the deferred runs
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

SPLITS_SENT = ("train", "val")
PART_BYTES = 15 * 2**20  # files coming back from the machine: 16 MiB each at most


def med_residuals(x: np.ndarray) -> np.ndarray:
    """uint8 N x H x W -> residuals of the LOCO-I median edge predictor (mod 256), which xz packs ~5 % tighter."""
    x = x.astype(np.int16)
    a, b, c = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    a[:, :, 1:], b[:, 1:, :], c[:, 1:, 1:] = x[:, :, :-1], x[:, :-1, :], x[:, :-1, :-1]
    return ((x - _med(a, b, c)) % 256).astype(np.uint8)


def _med(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def med_reconstruct(r: np.ndarray) -> np.ndarray:
    """Inverse of ``med_residuals``: pixel by pixel in raster order, all images at once."""
    n, h, w = r.shape
    x = np.zeros((n, h, w), dtype=np.int16)
    zero = np.zeros(n, dtype=np.int16)
    for i in range(h):
        for j in range(w):
            a = x[:, i, j - 1] if j else zero
            b = x[:, i - 1, j] if i else zero
            c = x[:, i - 1, j - 1] if i and j else zero
            x[:, i, j] = (_med(a, b, c) + r[:, i, j]) % 256
    return x.astype(np.uint8)


def pack(data: Path, out: Path) -> None:
    import pandas as pd

    images = np.load(data / "images.npy", mmap_mode="r")
    split = pd.read_csv(data / "meta.csv", usecols=["split"])["split"].to_numpy()
    keep = np.flatnonzero(np.isin(split, SPLITS_SENT))
    pixels = np.ascontiguousarray(images[keep])
    out.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "labels.npy"):
        shutil.copy2(data / name, out / name)
    (out / "meta.csv.xz").write_bytes(lzma.compress((data / "meta.csv").read_bytes()))
    (out / "pixels.xz").write_bytes(lzma.compress(med_residuals(pixels).tobytes(), preset=9 | lzma.PRESET_EXTREME))
    info = {
        "shape": list(images.shape),
        "splits_sent": list(SPLITS_SENT),
        "rows_sent": int(len(keep)),
        "sha256_sent": hashlib.sha256(pixels.tobytes()).hexdigest(),
    }
    (out / "pixels.json").write_text(json.dumps(info, indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out}: {len(keep)} of {len(images)} images ({', '.join(SPLITS_SENT)}), {size / 2**20:.1f} MiB")


def unpack(src: Path, out: Path) -> None:
    """A prepared directory whose unsent (test) images are zeros; its manifest hash is the original's."""
    import pandas as pd

    info = json.loads((src / "pixels.json").read_text())
    n, h, w = info["shape"]
    meta = lzma.decompress((src / "meta.csv.xz").read_bytes())
    split = pd.read_csv(io.BytesIO(meta), usecols=["split"])["split"].to_numpy()
    keep = np.flatnonzero(np.isin(split, info["splits_sent"]))
    r = np.frombuffer(lzma.decompress((src / "pixels.xz").read_bytes()), dtype=np.uint8).reshape(len(keep), h, w)
    pixels = med_reconstruct(r)
    if hashlib.sha256(pixels.tobytes()).hexdigest() != info["sha256_sent"]:
        raise SystemExit(f"{src / 'pixels.xz'}: unpacked pixels do not match their sha256")
    images = np.zeros((n, h, w), dtype=np.uint8)
    images[keep] = pixels
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "images.npy", images)
    (out / "meta.csv").write_bytes(meta)
    for name in ("manifest.json", "labels.npy"):
        shutil.copy2(src / name, out / name)
    print(f"{out}: {len(keep)} images checked (sha256), {n - len(keep)} test images left out (zeros)")


def job_config(spec: str, data: str, runs: str, dataset: str = "fer2013"):
    """``profile:variant:repeat`` -> the TrainConfig that ``dsm reproduce`` would train for it."""
    from dsm.study import Experiment

    profile, variant, repeat = spec.split(":")
    exp = Experiment.create(profile, dataset, data, Path(runs) / profile)
    for v in exp.training_order():
        if v.name == variant:
            for cfg in exp.configs(v):
                if Path(cfg.out).name == repeat:
                    return cfg
    raise SystemExit(f"--job {spec}: no such run in profile {profile}")


def train_one(
    spec: str, data: str, runs: str, time_limit: float, compile: bool, dataset: str, device: str, mode: str | None
) -> int:
    from dsm.train import train

    cfg = job_config(spec, data, runs, dataset).replace(
        device=device,
        compile=compile,
        compile_mode=mode if compile else None,
        time_limit=time_limit,
        defer_test=True,
        eval_batch_size=1024,
    )
    record = train(cfg, resume=True, show_progress=False)
    print(json.dumps({"job": spec, "status": record["status"], "epochs_done": len(record["epochs"])}), flush=True)
    return 0


def train_jobs(
    jobs: list[str], data: str, runs: str, deadline: float, dataset: str, device: str, mode: str | None = None
) -> None:
    """Every job in its own process, at once (one small network leaves most of an H200 idle); a job whose
    compiled run fails is resumed uncompiled. Each stops cleanly before ``deadline`` seconds from now."""
    t0 = time.monotonic()

    def launch(spec: str, compile: bool) -> subprocess.Popen:
        out = Path(job_config(spec, data, runs, dataset).out)
        out.mkdir(parents=True, exist_ok=True)
        left = max(1.0, deadline - (time.monotonic() - t0))
        cmd = [sys.executable, __file__, "train-one", spec, "--data", data, "--runs", runs, "--time-limit", f"{left}"]
        cmd += ["--dataset", dataset, "--device", device] + (["--compile-mode", mode] if mode else [])
        log = open(out / "device.log", "a")  # noqa: SIM115 (closed with the process)
        print(f"[{time.monotonic() - t0:6.1f} s] {spec}: start (compile {compile}, time limit {left:.0f} s)")
        return subprocess.Popen(cmd + ([] if compile else ["--no-compile"]), stdout=log, stderr=subprocess.STDOUT)

    procs = {spec: (launch(spec, True), True) for spec in jobs}
    while procs:
        time.sleep(2)
        for spec, (p, compiled) in list(procs.items()):
            if p.poll() is None:
                continue
            del procs[spec]
            print(f"[{time.monotonic() - t0:6.1f} s] {spec}: exit {p.returncode}", flush=True)
            if p.returncode and compiled and deadline - (time.monotonic() - t0) > 60:
                procs[spec] = (launch(spec, False), False)


def bench(profile: str, data: str, out: Path, dataset: str, device: str) -> None:
    import torch

    from dsm.bench import compare
    from dsm.study import Experiment

    exp = Experiment.create(profile, dataset, data, "unused", train=False)
    p = exp.profile
    results = compare(exp.bench_configs(), device=device, runs=p.bench_runs, warmup=p.bench_warmup)
    rows = [r.to_dict() for r in results]
    meta = {"profile": profile, "dataset": dataset, "torch": torch.__version__, "cuda": torch.version.cuda}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"{out}: {len(rows)} configs on {rows[0]['device'] if rows else '-'}")


def collect(runs: list[Path], out: Path) -> None:
    """Each run directory as a tar, cut in parts the lease can return."""
    for run in runs:
        if not run.is_dir():
            print(f"{run}: missing")
            continue
        name = "-".join(run.parts[-3:]).replace("=", "_")
        tar = out / f"{name}.tar"
        with tarfile.open(tar, "w") as t:
            t.add(run, arcname="/".join(run.parts[-3:]))
        data = tar.read_bytes()
        tar.unlink()
        for i in range(0, len(data), PART_BYTES):
            (out / f"{name}.tar.{i // PART_BYTES}").write_bytes(data[i : i + PART_BYTES])
        print(f"{run}: {len(data) / 2**20:.1f} MiB in {(len(data) - 1) // PART_BYTES + 1} part(s)")


def restore(src: Path, runs: Path) -> None:
    """Join the parts fetched from the lease and unpack each run under ``runs`` (``<profile>/<variant>/<seed>``)."""
    runs.mkdir(parents=True, exist_ok=True)
    for first in sorted(src.glob("*.tar.0")):
        stem = first.name[: -len(".0")]
        parts = sorted(src.glob(f"{stem}.*"), key=lambda p: int(p.suffix[1:]))
        data = b"".join(p.read_bytes() for p in parts)
        tmp = runs / f".{stem}"
        tmp.write_bytes(data)
        with tarfile.open(tmp) as t:
            t.extractall(runs, filter="data")
        tmp.unlink()
        print(f"{stem}: {len(parts)} part(s) -> {runs}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="device_session", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("unpack")
    a.add_argument("--src", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("train")
    a.add_argument("--data", required=True)
    a.add_argument("--runs", default="runs/fer2013")
    a.add_argument("--deadline", type=float, required=True, help="seconds from now by which every job has stopped")
    a.add_argument("--job", action="append", required=True, help="profile:variant:repeat, e.g. full:dsm:seed0")
    a.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    a = sub.add_parser("train-one")
    a.add_argument("spec")
    a.add_argument("--data", required=True)
    a.add_argument("--runs", required=True)
    a.add_argument("--time-limit", type=float, required=True)
    a.add_argument("--no-compile", action="store_true")
    a.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    a = sub.add_parser("bench")
    a.add_argument("--profile", required=True)
    a.add_argument("--data", required=True)
    a.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("collect")
    a.add_argument("runs", type=Path, nargs="+")
    a.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    a = sub.add_parser("restore")
    a.add_argument("--src", type=Path, required=True)
    a.add_argument("--runs", type=Path, default=Path("runs/fer2013"))
    for name in ("train", "train-one", "bench"):
        sub.choices[name].add_argument("--dataset", default="fer2013")
        sub.choices[name].add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(args.data, args.out)
    elif args.cmd == "unpack":
        unpack(args.src, args.out)
    elif args.cmd == "train":
        train_jobs(args.job, args.data, args.runs, args.deadline, args.dataset, args.device, args.compile_mode)
    elif args.cmd == "train-one":
        return train_one(
            args.spec,
            args.data,
            args.runs,
            args.time_limit,
            not args.no_compile,
            args.dataset,
            args.device,
            args.compile_mode,
        )
    elif args.cmd == "bench":
        bench(args.profile, args.data, args.out, args.dataset, args.device)
    elif args.cmd == "collect":
        collect(args.runs, args.out)
    elif args.cmd == "restore":
        restore(args.src, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
