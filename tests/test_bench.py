"""Complexity and latency measurement."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dsm
import dsm.bench
from dsm.bench import BenchConfig, compare, count_macs, latency
from dsm.cli import main


def test_macs_agree_with_torch_flop_counter():
    model = dsm.reparameterize(dsm.create_model("dsm_net", in_chans=1))
    x = torch.randn(1, 1, 48, 48)
    with FlopCounterMode(display=False) as fc:
        model(x)
    macs = count_macs(model, x.shape)
    # torch counts 2 FLOPs per MAC; fvcore also counts the global average pool.
    assert abs(macs - fc.get_total_flops() / 2) / macs < 0.01


def test_macs_scale_with_resolution():
    model = dsm.reparameterize(dsm.create_model("dsm_net"))
    assert count_macs(model, (1, 3, 96, 96)) > 3 * count_macs(model, (1, 3, 48, 48))


def test_latency_orders_models_by_cost(monkeypatch):
    small = torch.nn.Conv2d(3, 4, 1)
    big = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)])
    (s_med, _), (b_med, _) = latency([small, big], [(1, 3, 8, 8), (1, 64, 64, 64)], runs=10, warmup=2)
    assert 0 < s_med < b_med
    # With known per-run times: warm-up runs are discarded, and the result is the median and the
    # inter-quartile range (q3 - q1, numpy's default linear percentiles) of the timed runs.
    timed = [[9.0, 1.0, 4.0, 2.0, 7.0, 3.0, 6.0, 8.0], [20.0, 10.0, 30.0, 60.0, 40.0, 50.0, 70.0, 15.0]]
    warm = [[1000.0, 1000.0], [0.001, 0.001]]  # would shift both statistics if they were counted
    clocks = [iter(w + t) for w, t in zip(warm, timed, strict=True)]
    monkeypatch.setattr(dsm.bench, "_timer", lambda fn, device: clocks.pop(0).__next__)
    result = latency([small, big], [(1, 3, 8, 8), (1, 64, 64, 64)], runs=8, warmup=2)
    for (med, iqr), t in zip(result, timed, strict=True):
        q1, q2, q3 = np.percentile(t, [25, 50, 75])
        assert med == pytest.approx(q2) and iqr == pytest.approx(q3 - q1)
    assert result == [(pytest.approx(5.0), pytest.approx(4.5)), (pytest.approx(35.0), pytest.approx(33.75))]


def test_compare_reports_each_config():
    cfgs = [BenchConfig(modulator=m, input_size=48, in_chans=1) for m in ("none", "dsm")]
    res = compare(cfgs, runs=5, warmup=1)
    assert [r.modulator for r in res] == ["none", "dsm"]
    assert res[1].params > res[0].params and res[1].macs > res[0].macs
    assert res[0].flops == 2 * res[0].macs and res[0].latency_runs == 5 and res[0].device.startswith("cpu")


def test_bench_cli_json(capsys):
    argv = ["bench", "--model", "dsm_net", "--modulator", "cbam", "--input-size", "48", "--in-chans", "1"]
    assert main([*argv, "--runs", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("params", "macs", "latency_ms_median", "device"):
        assert key in out
    assert out["modulator"] == "cbam" and out["params"] > 1e6 and out["latency_ms_median"] > 0


def test_bench_cli_compare_table(capsys):
    argv = ["bench", "--compare", "--modulators", "none,dsm", "--sizes", "1x48", "--runs", "3", "--warmup", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dsm_net[none]@1x48" in out and "dsm_net[dsm]@1x48" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--modulator", "bogus"], "--modulator: unknown modulator(s) bogus; choose from bam, "),
        (["--compare", "--modulators", "none,bogus"], "--modulators: unknown modulator(s) bogus; choose from bam, "),
        (["--model", "timm:nosuch"], "--model timm:nosuch: no such timm architecture"),
        (["--model", "nosuch"], "--model nosuch: unknown; choose from dsm_net or timm:<arch>"),
        (["--runs", "0", "--warmup", "0"], "--runs must be >= 2 for a median and IQR (got 0)"),
        (["--runtimes", "--runs", "1"], "--runs must be >= 2 for a median and IQR (got 1)"),
        (["--device", "bogus", "--no-latency"], "--device bogus: "),
    ],
)
def test_bench_cli_rejects_bad_names_and_runs(capsys, argv, message):
    assert main(["bench", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"dsm bench: error: {message}") and captured.err.count("\n") == 1
    assert captured.out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--compare", "--sizes", "3by112"], "argument --sizes: expected a comma list of CxS such as 3x112,1x48, got"),
        (["--compare", "--sizes", "3x112,1x0"], "argument --sizes: expected a comma list of CxS"),
        (["--runtimes", "--batches", "a"], "argument --batches: expected a comma list of positive batch sizes"),
    ],
)
def test_bench_cli_rejects_bad_sizes_and_batches(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"dsm bench: error: {message}") and "Traceback" not in err


def test_importing_bench_prints_no_warning():
    """fvcore's import-time torch.jit FutureWarning would make every `dsm bench` error two lines longer."""
    done = subprocess.run([sys.executable, "-W", "default", "-c", "import dsm.bench"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == ""


def test_deployed_models_fold_every_conv_bn_pair():
    """Competitors are deployed as fairly as DSM: timm's ResNet and the BN inside CBAM/BAM/CA/GAM are folded
    (CBAM's is timm's BatchNormAct2d, which fx would trace through and leave as a batch_norm call)."""
    from dsm.reparam import batchnorm_left, fold_batchnorm, reparameterize

    cases = [("timm:resnet18", {}), *(("dsm_net", {"modulator": m}) for m in ("bam", "ca", "cbam", "gam"))]
    for name, kwargs in cases:
        model = dsm.create_model(name, in_chans=1, **kwargs).eval()
        folded = fold_batchnorm(reparameterize(model))
        assert batchnorm_left(model) > 0 and batchnorm_left(folded) == 0, name
        x = torch.randn(2, 1, 48, 48)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)

    class Untraceable(torch.nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) if x.sum() > 0 else x  # data-dependent control flow: fx cannot trace it

    untraceable = Untraceable(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert fold_batchnorm(untraceable) is untraceable and batchnorm_left(untraceable) == 1


def test_mac_convention_counts_conv_linear_matmul_only():
    from dsm.bench import mac_analysis

    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    net = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(8), torch.nn.AdaptiveAvgPool2d(1))
    macs, _ = mac_analysis(net, (1, 3, 16, 16))
    assert macs == 3 * 8 * 9 * 16 * 16  # the conv only: BN and pooling are outside the convention
    res = compare([BenchConfig("dsm_net", "simam", 48, 1, 7)], measure_latency=False)[0]
    assert res.extra["batchnorm_left"] == 0 and res.extra["ops_not_counted"]  # SimAM is element-wise: named


def test_latency_puts_the_thread_count_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        latency([torch.nn.Conv2d(1, 1, 3)], [(1, 1, 8, 8)], runs=2, warmup=1, threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_recorded_benchmark_loads_into_the_table_and_caption(tmp_path):
    """A GPU timing recorded elsewhere (benchmarks/device_session.py) renders like a live one."""
    from dsm import viz
    from dsm.study import Experiment

    res = compare([BenchConfig("dsm_net", "dsm", 32, 1)], runs=2, warmup=0)
    meta = {"torch": "9.9", "note": "A note."}
    path = tmp_path / "bench_gpu_toy_quick.json"
    path.write_text(json.dumps({"meta": meta, "results": [r.to_dict() for r in res]}))
    results, loaded = Experiment.create("quick", "toy", tmp_path, tmp_path).recorded_gpu_bench(tmp_path)
    assert viz.bench_table(results)["config"].tolist() == [res[0].name] and loaded == meta
    caption = viz.bench_caption(results, loaded)
    assert "(torch 9.9)" in caption and caption.endswith("Conv-BN folding. A note.")
    assert Experiment.create("smoke", "toy", tmp_path, tmp_path).recorded_gpu_bench(tmp_path) is None


def test_a_broken_recorded_benchmark_names_its_file(tmp_path):
    from dsm.bench import load_results

    for text in ("{", '{"meta": {}}'):
        (tmp_path / "bench.json").write_text(text)
        with pytest.raises(ValueError, match=r"bench.json: not a recorded benchmark \((JSONDecodeError|KeyError)"):
            load_results(tmp_path / "bench.json")


def test_cpu_bf16_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16 fma\nbugs\t: amx_bf16\n")
    assert dsm.bench.cpu_bf16_flags(str(info)) == ["avx512_bf16"]  # only the flags line counts
    info.write_text("model name\t: Some CPU\nflags\t\t: fpu avx2 fma\n")
    assert dsm.bench.cpu_bf16_flags(str(info)) == []
    assert dsm.bench.cpu_bf16_flags(str(tmp_path / "absent")) == []
    assert dsm.bench.cpu_emulates_bf16(str(info))  # an x86 CPU without them
    info.write_text("model name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n")
    assert not dsm.bench.cpu_emulates_bf16(str(info))
    info.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # an ARM CPU: no flags line, cannot tell
    assert not dsm.bench.cpu_emulates_bf16(str(info))
    assert not dsm.bench.cpu_emulates_bf16(str(tmp_path / "absent"))
