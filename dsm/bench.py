"""Parameters, MACs and batch-1 latency of fused (deployed) models.

Convention: MACs are the multiply-accumulates of convolutions, linear layers and
matmuls as counted by fvcore's ``FlopCountAnalysis`` (one fused multiply-add = 1);
element-wise ops (gates, activations, BN in eval) are not counted. FLOPs = 2 x MACs.
Latency is measured on the re-parameterised eval model, batch 1, after warm-up,
as median and inter-quartile range over ``runs`` timed forward passes (CUDA events
on a GPU). ``compare`` interleaves the configs run by run so that a noisy machine
slows all of them alike and their ratios stay trustworthy.
"""

from __future__ import annotations

import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis

from dsm.registry import create_model
from dsm.reparam import reparameterize


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


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """fvcore MACs of one forward pass at ``input_shape`` (N, C, H, W)."""
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore's use of torch.jit
        analysis = FlopCountAnalysis(model, torch.zeros(*input_shape))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"cpu: {cpu}, {torch.get_num_threads()} threads"


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
    device = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
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
        deployed = reparameterize(model)
        shape = (1, cfg.in_chans, cfg.input_size, cfg.input_size)
        macs = count_macs(deployed, shape)
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
            )
        )
    if measure_latency:
        shapes = [(1, c.in_chans, c.input_size, c.input_size) for c in configs]
        for res, (med, iqr) in zip(results, latency(fused, shapes, device, runs, warmup, threads), strict=True):
            res.latency_ms_median, res.latency_ms_iqr, res.latency_runs = med, iqr, runs
            res.device, res.threads = device_name(device), torch.get_num_threads()
    return results
