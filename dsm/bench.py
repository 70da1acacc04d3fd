"""Parameters, MACs and batch-1 latency of fused (deployed) models.

Convention: MACs are the multiply-accumulates of convolutions, linear layers and
matmuls as counted by fvcore's ``FlopCountAnalysis`` (one fused multiply-add = 1);
element-wise ops, pooling and BN are not counted (fvcore would count BN and adaptive
pooling but not ``mean`` or ``mul``: those handles are switched off so every modulator is
counted alike), and the ops fvcore skips are recorded per result. FLOPs = 2 x MACs.
The deployed model is the re-parameterised eval model with every remaining Conv->BN pair
folded (``dsm.reparam.fold_batchnorm``); the BN layers it still runs are recorded.
Latency is measured on the deployed model, batch 1, after warm-up,
as median and inter-quartile range over ``runs`` timed forward passes (CUDA events
on a GPU). ``compare`` interleaves the configs run by run so that a noisy machine
slows all of them alike and their ratios stay trustworthy.

``runtime_latency`` times one fused model under PyTorch eager, ``torch.compile`` and
onnxruntime (CPU) at several batch sizes, interleaved the same way; ``pipeline_fps``
measures the whole ``dsm predict`` pipeline (face detection + classification) on a video.
"""

from __future__ import annotations

import contextlib
import json
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

with warnings.catch_warnings():  # fvcore scripts a helper with torch.jit at import: a FutureWarning on every command
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

from dsm.registry import create_model
from dsm.reparam import batchnorm_left, fold_batchnorm, reparameterize


@dataclass
class BenchConfig:
    model: str = "dsm_net"
    modulator: str | None = "dsm"
    input_size: int = 112
    in_chans: int = 3
    num_classes: int = 7

    @property
    def name(self) -> str:
        return f"{self.model}[{self.modulator or 'none'}]@{self.in_chans}x{self.input_size}"

    def build(self) -> nn.Module:
        kwargs = {"num_classes": self.num_classes, "in_chans": self.in_chans, "modulator": self.modulator}
        return create_model(self.model, **kwargs)


@dataclass
class BenchResult:
    name: str
    model: str
    modulator: str
    input_size: int
    in_chans: int
    params: int
    params_deploy: int
    macs: int
    flops: int
    latency_ms_median: float | None = None
    latency_ms_iqr: float | None = None
    latency_runs: int = 0
    device: str = ""
    threads: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# counted by fvcore by default but outside the convention (see the module docstring)
_NOT_COUNTED = (
    "aten::batch_norm",
    "aten::adaptive_avg_pool2d",
    "aten::adaptive_avg_pool1d",
    "aten::upsample_nearest2d",
)


def _no_macs(inputs: object, outputs: object) -> int:
    return 0


def mac_analysis(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, dict[str, int]]:
    """fvcore MACs of one forward pass at ``input_shape`` (N, C, H, W), and the ops it did not count
    (op -> calls), which the convention leaves out but a reader should be able to see."""
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore's use of torch.jit
        analysis = FlopCountAnalysis(model, torch.zeros(*input_shape))
        analysis.set_op_handle(**dict.fromkeys(_NOT_COUNTED, _no_macs))  # a None handle would not replace fvcore's
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = int(analysis.total())
        return total, dict(sorted(analysis.unsupported_ops().items()))


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """fvcore MACs of one forward pass at ``input_shape`` (N, C, H, W), under the module's convention."""
    return mac_analysis(model, input_shape)[0]


def device_name(device: torch.device | str, threads: int | None = None) -> str:
    """The GPU's name, or the CPU model and ``threads`` (default: PyTorch's current thread count)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = _cpuinfo("model name") or platform.processor() or platform.machine()
    return f"cpu: {cpu}, {threads or torch.get_num_threads()} threads"


BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpuinfo(field: str, path: str = "/proc/cpuinfo") -> str | None:
    """The first ``field`` of /proc/cpuinfo (None where the file or the field is absent)."""
    try:
        with open(path) as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.split(":", 1)[0].strip() == field), None)
    except OSError:
        return None


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """Which of the CPU's flags multiply bf16 in hardware: where bf16 autocast pays, and where it does not,
    since two hosts with the same model name may differ (empty where /proc/cpuinfo is absent)."""
    flags = (_cpuinfo("flags", cpuinfo) or "").split()
    return [f for f in BF16_FLAGS if f in flags]


def cpu_emulates_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether /proc/cpuinfo shows an x86 CPU with no bf16 multiply in hardware, where bf16 autocast is emulated
    and many times slower than fp32 (False where it cannot tell: no such file, or no flags line)."""
    return _cpuinfo("flags", cpuinfo) is not None and not cpu_bf16_flags(cpuinfo)


def _timer(fn: Callable[[], object], device: torch.device) -> Callable[[], float]:
    """Return a callable that runs ``fn`` once and gives its wall time in ms."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run_cuda() -> float:
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end)

        return run_cuda

    def run_cpu() -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return run_cpu


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """PyTorch's CPU threads set to ``n`` (when given) for the block, and put back afterwards."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _summary(times: list[float]) -> tuple[float, float]:
    q1, med, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return med, q3 - q1


def latency(
    models: Sequence[nn.Module],
    input_shapes: Sequence[Sequence[int]],
    device: str | torch.device = "cpu",
    runs: int = 100,
    warmup: int = 20,
    threads: int | None = None,
) -> list[tuple[float, float]]:
    """(median ms, IQR ms) per model, timing the models interleaved run by run."""
    with torch_threads(threads):
        return _latency(models, input_shapes, torch.device(device), runs, warmup)


def _latency(
    models: Sequence[nn.Module], input_shapes: Sequence[Sequence[int]], device: torch.device, runs: int, warmup: int
) -> list[tuple[float, float]]:
    timers = []
    for model, shape in zip(models, input_shapes, strict=True):
        model = model.eval().to(device)
        x = torch.randn(*shape, device=device)
        timers.append(_timer(lambda m=model, x=x: m(x), device))
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for _ in range(warmup):
            for t in timers:
                t()
        for _ in range(runs):
            for i, t in enumerate(timers):
                times[i].append(t())
    return [_summary(t) for t in times]


def compare(
    configs: Sequence[BenchConfig],
    device: str = "cpu",
    runs: int = 100,
    warmup: int = 20,
    threads: int | None = None,
    measure_latency: bool = True,
) -> list[BenchResult]:
    """Params, MACs and (interleaved) batch-1 latency for each config's fused model."""
    results, fused = [], []
    for cfg in configs:
        model = cfg.build()
        deployed = fold_batchnorm(reparameterize(model))
        shape = (1, cfg.in_chans, cfg.input_size, cfg.input_size)
        macs, skipped = mac_analysis(deployed, shape)
        fused.append(deployed)
        results.append(
            BenchResult(
                name=cfg.name,
                model=cfg.model,
                modulator=cfg.modulator or "none",
                input_size=cfg.input_size,
                in_chans=cfg.in_chans,
                params=count_params(model),
                params_deploy=count_params(deployed),
                macs=macs,
                flops=2 * macs,
                extra={"ops_not_counted": skipped, "batchnorm_left": batchnorm_left(deployed)},
            )
        )
    if measure_latency:
        shapes = [(1, c.in_chans, c.input_size, c.input_size) for c in configs]
        cond = conditions()
        for res, (med, iqr) in zip(results, latency(fused, shapes, device, runs, warmup, threads), strict=True):
            res.latency_ms_median, res.latency_ms_iqr, res.latency_runs = med, iqr, runs
            res.device, res.threads = device_name(device, threads), threads or torch.get_num_threads()
            res.extra["conditions"] = cond
    return results


def load_results(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(results, meta) of a benchmark recorded as JSON elsewhere, e.g. timed on a lent GPU by
    ``benchmarks/device_session.py bench``: ``viz.bench_table`` and ``viz.bench_caption`` take the results."""
    try:
        d = json.loads(Path(path).read_text())
        return list(d["results"]), dict(d.get("meta", {}))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a recorded benchmark ({type(e).__name__}: {e})") from None


def conditions() -> dict[str, Any]:
    """When, with which code and on how quiet a machine a timing starts: a latency is only comparable
    within one run, and a page citing it must say which run (``describe_conditions``)."""
    from dsm.runs import git_commit

    busy = cpu_busy()
    return {"commit": git_commit(), "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_busy": busy}


def describe_conditions(cond: Mapping[str, Any] | None) -> str:
    """One sentence for a caption, from ``conditions()``; empty when there are none."""
    if not cond:
        return ""
    commit = (cond.get("commit") or "unknown")[:7] + ("+dirty" if "+dirty" in (cond.get("commit") or "") else "")
    return (
        f"Timed at {cond['measured']} with code {commit}; other processes used {cond['cpu_busy']:.0%} of the "
        "CPU just before."
    )


# --- runtimes and the whole prediction pipeline ---------------------------------------

RUNTIMES = ("eager", "compile", "onnxruntime")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:200]


def _runtime_runner(
    backend: str, model: nn.Module, x: torch.Tensor, onnx_path: Path | None, threads: int
) -> Callable[[], object]:
    """A no-argument callable running one forward pass of ``model`` on ``x`` with ``backend``.

    Raises when the backend cannot run here (no compiler for torch.compile, no onnxruntime).
    """
    if backend == "eager":
        return lambda: model(x)
    if backend == "compile":
        compiled = torch.compile(model, dynamic=False)  # one static graph per batch size, compiled on this call
        compiled(x)
        return lambda: compiled(x)
    if backend == "onnxruntime":
        from dsm.export import INPUT, session

        assert onnx_path is not None
        sess, feed = session(onnx_path, threads), {INPUT: x.numpy()}
        sess.run(None, feed)
        return lambda: sess.run(None, feed)
    raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(RUNTIMES)}")


def runtime_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    backends: Sequence[str] = RUNTIMES,
    batches: Sequence[int] = (1, 32),
    runs: int = 50,
    warmup: int = 10,
    threads: int | None = None,
) -> list[dict]:
    """CPU latency of one model under several runtimes, one dict per (batch, backend).

    Pass the deployed (fused) model. ``input_shape`` is (C, H, W) or (N, C, H, W); N is
    replaced by each of ``batches``. Per batch the backends are timed interleaved, run by
    run, like ``latency``; PyTorch and onnxruntime get the same number of threads. A backend
    that cannot run here (torch.compile without a working C compiler, say) is reported with
    ``available: False`` and the reason instead of failing the benchmark.
    """
    with torch_threads(threads):
        return _runtime_latency(model.eval().cpu(), tuple(input_shape[-3:]), backends, batches, runs, warmup)


def _runtime_latency(
    model: nn.Module, chw: tuple[int, ...], backends: Sequence[str], batches: Sequence[int], runs: int, warmup: int
) -> list[dict]:
    threads = torch.get_num_threads()
    results: list[dict] = []
    cond = conditions()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, onnx_error = None, None
        if "onnxruntime" in backends:
            try:
                from dsm.export import export_model

                onnx_path = export_model(model, Path(tmp) / "model.onnx", (1, *chw))
            except Exception as e:  # noqa: BLE001  (reported per row below)
                onnx_error = _first_line(e)
        for batch in batches:
            x = torch.randn(batch, *chw)
            rows, timers = [], []
            for backend in backends:
                row = {"backend": backend, "batch": batch, "input": "x".join(map(str, chw)), "threads": threads}
                row |= {"available": True, "reason": "", "runs": runs, "conditions": cond}
                try:
                    if backend == "onnxruntime" and onnx_error:
                        raise RuntimeError(f"ONNX export failed: {onnx_error}")
                    with torch.inference_mode():
                        timers.append((row, _timer(_runtime_runner(backend, model, x, onnx_path, threads), x.device)))
                except Exception as e:  # noqa: BLE001
                    row |= {"available": False, "reason": _first_line(e), "runs": 0}
                rows.append(row)
            times: list[list[float]] = [[] for _ in timers]
            with torch.inference_mode():
                for _ in range(warmup):
                    for _, t in timers:
                        t()
                for _ in range(runs):
                    for i, (_, t) in enumerate(timers):
                        times[i].append(t())
            for (row, _), ts in zip(timers, times, strict=True):
                med, iqr = _summary(ts)
                row |= {"latency_ms_median": med, "latency_ms_iqr": iqr, "ms_per_image": med / batch}
                row["images_per_s"] = 1e3 * batch / med
            results += rows
    return results


def pipeline_fps(
    video: str | Path,
    checkpoint: str | Path | None = None,
    every_n: int = 1,
    max_frames: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    threads: int | None = None,
    max_side: int = 640,
) -> dict:
    """Frames per second of ``dsm predict`` on a video: face detection + classification.

    ``fps`` counts detect + classify time only; ``fps_with_decode`` adds reading the
    frames. Drawing and writing the annotated video are not included. ``max_side`` is the
    detector's (``dsm predict --max-side``).
    """
    from tqdm import tqdm

    from dsm.face import FaceDetector
    from dsm.predict import Predictor, video_frames, video_info

    if every_n < 1:
        raise ValueError(f"every_n (--every-n-frames) must be >= 1, got {every_n}")
    if max_side < 48:
        raise ValueError(f"max_side (--max-side) must be >= 48, got {max_side}")
    with torch_threads(threads):
        pred = Predictor(checkpoint, device, FaceDetector(max_side=max_side))
        total, _ = video_info(video)
        n_expected = -(-total // every_n) if total else None
        if max_frames and n_expected:
            n_expected = min(n_expected, max_frames)
        detect_ms, classify_ms, faces, size = [], [], 0, None
        start = time.perf_counter()
        total_frames, disable = n_expected or max_frames, None if progress else True
        bar = tqdm(total=total_frames, desc=Path(video).name, unit="frame", disable=disable)
        for _, frame in video_frames(video, every_n):
            t0 = time.perf_counter()
            boxes = pred.detect(frame)
            t1 = time.perf_counter()
            faces += len(pred.predict_boxes(frame, boxes))
            t2 = time.perf_counter()
            detect_ms.append((t1 - t0) * 1e3)
            classify_ms.append((t2 - t1) * 1e3)
            size = f"{frame.shape[1]}x{frame.shape[0]}"
            bar.update()
            if max_frames and len(detect_ms) >= max_frames:
                break
        bar.close()
        wall = time.perf_counter() - start
        n = len(detect_ms)
        if n == 0:
            raise ValueError(f"{video}: no frame could be read")
        busy = (sum(detect_ms) + sum(classify_ms)) / 1e3
        return {
            "video": str(video),
            "frame_size": size,
            "frames": n,
            "faces": faces,
            "fps": n / busy,
            "fps_with_decode": n / wall,
            "detect_ms_median": statistics.median(detect_ms),
            "classify_ms_median": statistics.median(classify_ms),
            "detector": pred.detector.backend,
            "model_input": f"{pred.channels}x{pred.size}",
            "device": device_name(device),
            "every_n_frames": every_n,
            "detect_max_side": max_side,
            # what the detector saw: small frames are not grown
            "detect_longer_side": min(max_side, max(frame.shape[:2])),
        }


def cpu_busy(seconds: float = 0.5) -> float:
    """Fraction of all CPU time used by anything over the next ``seconds`` (Linux ``/proc/stat``; 0 elsewhere)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)
