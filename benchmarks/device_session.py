"""Train and time on a lent GPU machine (the ``device`` tool) within one short lease.

The machine receives the working tree (64 MiB at most) and nothing else, so the prepared FER2013 set travels
packed: the training and validation pixels, losslessly compressed (a LOCO-I/MED predictor, then xz), with the
set's own manifest, labels and meta. The test pixels stay here: the GPU runs train with ``defer_test`` and the
final evaluation of the best checkpoint happens on this machine when the run is resumed. The sha256 of the
training and validation pixels is checked after unpacking, so the GPU trains on exactly the prepared images.

    here:   python benchmarks/device_session.py pack --data data/fer2013 --out .devdata/fer2013
    there:  export PYTHONPATH=$PWD DSM_GIT_COMMIT=<dsm.runs.git_commit() here, "+dirty" and all>
            python benchmarks/device_session.py unpack --src .devdata/fer2013 --out /tmp/fer2013
            python benchmarks/device_session.py train --data /tmp/fer2013 --deadline 420 \\
                --job full:dsm:seed0 --job cpu:dsm-epochs=150:seed0
            python benchmarks/device_session.py bench --profile cpu --data /tmp/fer2013 \\
                --out $OUT/bench_gpu_fer2013_cpu.json
            python benchmarks/device_session.py collect --out $OUT runs/fer2013/full/dsm/seed0 ...
    here:   python benchmarks/device_session.py restore --src <fetched files> --runs runs/fer2013
            dsm reproduce --datasets fer2013 --profile cpu --train-only   # finishes the deferred runs

``benchmarks/device_lease.sh`` chains the machine's steps into the one short command a lease call takes:

    DSM_GIT_COMMIT=<commit> DEADLINE=480 JOBS="cpu:dsm-epochs=150:seed0 full:dsm:seed0" BENCH="cpu full" \
        bash benchmarks/device_lease.sh        # with carry [".devdata", ".whl"]

What a 15-minute lease taught (2026-11-30): the packed set (54 MiB) and the tree must stay under 64 MiB
together, so move the released checkpoint and ``book/results`` aside for the call and name ``.devdata`` and
``.whl`` (fvcore, iopath and termcolor wheels for the benchmark's MAC count) in ``carry``; collect the runs
before timing anything, so that a call cut short still returns them; at most 8 files come back (two runs in
two parts each, two benchmark files and a log fit); a second call right after the first finds the machine
warm, its /tmp and the runs still there, and resumes them.

Runs begun on an earlier lease resume from checkpoints that only this machine holds (``last.safetensors``
and ``best.safetensors`` are ignored files, ~26 MiB per run at 48x48), and they do not fit beside the packed
set. So a fresh machine takes two calls, the second straight after the first (the machine is given back
after ~30 s idle): ``JOBS=""`` with carry [".devdata", ".whl"] unpacks to /tmp and installs, then the real
``JOBS`` with carry [".whl", "runs/fer2013/<profile>/<variant>/<seed>", ...] trains on the unpacked copy.
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
import tempfile
import time
from pathlib import Path

import numpy as np

from dsm.data.format import WITHHELD

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
    if images.ndim != 3:
        raise SystemExit(f"{data / 'images.npy'}: {images.shape} images; pack sends gray N x H x W sets only")
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
    unsent = sorted({str(s) for s in split} - set(info["splits_sent"]))
    (out / WITHHELD).write_text(json.dumps({"splits": unsent}) + "\n")  # dsm trains on none, evaluates none
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
) -> int:
    """Every job in its own process, at once (one small network leaves most of an H200 idle); a job whose
    compiled run fails is resumed uncompiled. Each job's training stops cleanly before ``deadline`` seconds
    from now (its process start, ~10 s, comes on top). Non-zero when a job failed in the end."""
    t0 = time.monotonic()

    def launch(spec: str, compile: bool) -> tuple[subprocess.Popen, Path]:
        log = Path(job_config(spec, data, runs, dataset).out) / "device.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        left = max(1.0, deadline - (time.monotonic() - t0))
        cmd = [sys.executable, __file__, "train-one", spec, "--data", data, "--runs", runs, "--time-limit", f"{left}"]
        cmd += ["--dataset", dataset, "--device", device] + (["--compile-mode", mode] if mode else [])
        print(f"[{time.monotonic() - t0:6.1f} s] {spec}: start (compile {compile}, time limit {left:.0f} s)")
        with log.open("a") as f:  # the child keeps its own handle
            proc = subprocess.Popen(cmd + ([] if compile else ["--no-compile"]), stdout=f, stderr=subprocess.STDOUT)
        return proc, log

    procs = {spec: (*launch(spec, True), True) for spec in jobs}
    failed = []
    while procs:
        time.sleep(2)
        for spec, (p, log, compiled) in list(procs.items()):
            if p.poll() is None:
                continue
            del procs[spec]
            print(f"[{time.monotonic() - t0:6.1f} s] {spec}: exit {p.returncode}", flush=True)
            if p.returncode and compiled and deadline - (time.monotonic() - t0) > 60:
                procs[spec] = (*launch(spec, False), False)
            elif p.returncode:
                failed.append(f"{spec}: exit {p.returncode} (see {log})")
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


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


def collect(runs: list[Path], out: Path) -> int:
    """Each run directory as a tar cut in parts the lease can return, named ``<run>.tar.<i>of<n>``."""
    missing = 0
    for run in runs:
        if not run.is_dir():
            print(f"{run}: missing", file=sys.stderr)
            missing += 1
            continue
        name = "-".join(run.parts[-3:]).replace("=", "_")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            t.add(run, arcname="/".join(run.parts[-3:]))
        data = buf.getvalue()
        n = (len(data) - 1) // PART_BYTES + 1
        for i in range(n):
            (out / f"{name}.tar.{i}of{n}").write_bytes(data[i * PART_BYTES : (i + 1) * PART_BYTES])
        print(f"{run}: {len(data) / 2**20:.1f} MiB in {n} part(s)")
    return 1 if missing else 0


def restore(src: Path, runs: Path) -> None:
    """Join the parts fetched from the lease and put each run under ``runs`` (``<profile>/<variant>/<seed>``),
    whole or not at all: every part must be there, and a run here that is further along is kept."""
    runs.mkdir(parents=True, exist_ok=True)
    for first in sorted(src.glob("*.tar.0of*")):
        stem, n = first.name.rsplit(".", 1)[0], int(first.name.rsplit("of", 1)[1])
        parts = [src / f"{stem}.{i}of{n}" for i in range(n)]
        if missing := [p.name for p in parts if not p.is_file()]:
            raise SystemExit(f"{src / missing[0]}: missing ({len(missing)} of {n} parts of {stem}); nothing restored")
        with tempfile.TemporaryDirectory(dir=runs) as tmp:
            try:
                with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts))) as t:
                    names = t.getnames()
                    t.extractall(tmp, filter="data")
            except tarfile.TarError as e:
                raise SystemExit(f"{first}: not a whole tar of a run ({e}); nothing restored") from None
            rel = Path(min(names, key=len))  # <profile>/<variant>/<seed>
            new, old = Path(tmp) / rel, runs / rel
            if _progress(old) > _progress(new):  # further along here, or finished here (its test evaluated)
                print(f"{old}: kept (epoch {_epochs(old)} here, {_epochs(new)} in {stem})")
                continue
            if old.exists():
                shutil.rmtree(old)
            old.parent.mkdir(parents=True, exist_ok=True)
            os.replace(new, old)
        print(f"{stem}: {n} part(s) -> {old} (epoch {_epochs(old)})")


def _progress(run: Path) -> tuple[int, bool]:
    """How far ``run`` got: its epochs, then whether it is finished (a deferred test evaluated since)."""
    from dsm.runs import load_run

    try:
        record = load_run(run)
    except (FileNotFoundError, ValueError):
        return -1, False
    return len(record.get("epochs") or []), record.get("status") == "finished"


def _epochs(run: Path) -> int:
    """Epochs in ``run``'s record; -1 where there is no readable record."""
    return _progress(run)[0]


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
    a.add_argument("--deadline", type=float, required=True, help="seconds from now by which each job stops training")
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
        return train_jobs(args.job, args.data, args.runs, args.deadline, args.dataset, args.device, args.compile_mode)
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
        return collect(args.runs, args.out)
    elif args.cmd == "restore":
        restore(args.src, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
