"""Complexity and latency measurement."""

import json

import torch
from torch.utils.flop_counter import FlopCounterMode

import dsm
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


def test_latency_orders_models_by_cost():
    small = torch.nn.Conv2d(3, 4, 1)
    big = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)])
    (s_med, s_iqr), (b_med, _) = latency([small, big], [(1, 3, 8, 8), (1, 64, 64, 64)], runs=10, warmup=2)
    assert 0 < s_med < b_med and s_iqr >= 0


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
