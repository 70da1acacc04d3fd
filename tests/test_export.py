"""ONNX export of fused models (numerics, dynamic batch, metadata, every modulator) and runtime latency."""

import json

import numpy as np
import onnx
import pytest
import torch
from fixtures_models import CLASSES, random_checkpoint

import dsm
from dsm.bench import runtime_latency
from dsm.checkpoint import load_model
from dsm.cli import main
from dsm.export import (
    INPUT,
    ExportError,
    export_checkpoint,
    export_model,
    max_abs_error,
    opset_of,
    opset_range,
    read_metadata,
    session,
)


def make_checkpoint(path, in_chans=1, size=48, modulator="dsm"):
    """Head scaled up so logits are O(1), which makes atol=1e-4 a real test."""
    return random_checkpoint(path, in_chans, size, modulator, head_scale=100.0)


def ort_logits(path, x):
    return session(path).run(None, {INPUT: x.numpy()})[0]


@pytest.fixture(scope="module")
def gray_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "gray48")


def test_onnx_matches_fused_pytorch_at_batch_1_and_4(gray_ckpt, tmp_path):
    path = export_checkpoint(gray_ckpt, tmp_path / "m.onnx")
    model, _ = load_model(gray_ckpt)
    fused = dsm.reparameterize(model)
    for batch in (1, 4):
        x = torch.randn(batch, 1, 48, 48)
        with torch.inference_mode():
            ref = fused(x).numpy()
        assert np.abs(ref).max() > 0.5  # a real signal to compare
        np.testing.assert_allclose(ort_logits(path, x), ref, atol=1e-4, rtol=0)


def test_onnx_is_the_fused_graph_with_metadata(gray_ckpt, tmp_path):
    path = export_checkpoint(gray_ckpt, tmp_path / "m.onnx", opset=16)  # not the default (17): the option counts
    proto = onnx.load(str(path))
    assert opset_of(proto) == 16
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # fused away
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # dynamic batch
    meta = read_metadata(path)
    assert meta["classes"] == CLASSES
    assert meta["input"]["size"] == 48 and meta["input"]["channels"] == 1 and meta["input"]["layout"] == "NCHW"
    assert meta["model"]["name"] == "dsm_net" and meta["checkpoint_id"]


def test_fixed_batch_export(tmp_path):
    ckpt = make_checkpoint(tmp_path / "rgb", in_chans=3, size=112)
    path = export_checkpoint(ckpt, tmp_path / "m.onnx", dynamic_batch=False, batch=2)
    dim0 = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_value == 2
    assert ort_logits(path, torch.randn(2, 3, 112, 112)).shape == (2, 7)


@pytest.mark.parametrize("modulator", dsm.list_modulators())
def test_every_modulator_exports(modulator, tmp_path):
    torch.manual_seed(0)
    fused = dsm.reparameterize(dsm.create_model("dsm_net", in_chans=1, modulator=modulator))
    path = export_model(fused, tmp_path / "m.onnx", (1, 1, 48, 48))
    x = torch.randn(3, 1, 48, 48)
    with torch.inference_mode():
        ref = fused(x).numpy()
    np.testing.assert_allclose(ort_logits(path, x), ref, atol=1e-4, rtol=1e-4)


def test_dynamo_exporter(tmp_path, monkeypatch):
    import dsm.export

    calls, original = [], dsm.export._export_dynamo
    monkeypatch.setattr(dsm.export, "_export_dynamo", lambda *a: calls.append(a) or original(*a))  # a spy
    fused = dsm.reparameterize(dsm.create_model("dsm_net", in_chans=1))
    path = export_model(fused, tmp_path / "m.onnx", (1, 1, 48, 48), opset=18, exporter="dynamo")
    assert len(calls) == 1  # the option reached the dynamo exporter
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # self-contained: no m.onnx.data, no scratch
    x = torch.randn(2, 1, 48, 48)
    with torch.inference_mode():
        np.testing.assert_allclose(ort_logits(path, x), fused(x).numpy(), atol=1e-4)


def test_export_cli(gray_ckpt, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", "--checkpoint", str(gray_ckpt), "--onnx", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "batch 4" in text and "opset 17" in text


def test_export_cli_defaults_to_the_released_checkpoint(tmp_path, capsys, monkeypatch):
    import dsm.export_cli

    released = random_checkpoint(tmp_path / "released", size=40)  # unlike the real one (48 px)
    monkeypatch.setattr(dsm.export_cli, "RELEASED", released)  # like evaluate and predict
    out = tmp_path / "released.onnx"
    assert main(["export", "--onnx", str(out), "--no-check"]) == 0
    assert read_metadata(out)["input"]["size"] == 40


def test_export_cli_refuses_an_opset_it_cannot_write(gray_ckpt, tmp_path, capsys):
    """The CLI asks before exporting; the library checks what was written (opset 99 fails in TorchScript,
    the dynamo fallback writes 18): an error either way, and no file is left."""
    out = tmp_path / "o.onnx"
    assert main(["export", "--checkpoint", str(gray_ckpt), "--onnx", str(out), "--opset", "99"]) == 2
    lo, hi = opset_range()
    assert capsys.readouterr().err == f"dsm export: error: --opset 99: the torchscript exporter writes {lo}..{hi}\n"
    assert main(["export", "--checkpoint", str(gray_ckpt), "--onnx", str(tmp_path)]) == 2
    assert "a folder; give the .onnx file's path" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="TorchScript exporter failed"), pytest.raises(ExportError, match="not 99"):
        export_checkpoint(gray_ckpt, out, 99)
    assert list(tmp_path.iterdir()) == []


def test_export_cli_removes_a_model_that_fails_the_check(gray_ckpt, tmp_path, capsys, monkeypatch):
    import dsm.export_cli

    monkeypatch.setattr(dsm.export_cli, "max_abs_error", lambda *a: 0.5)
    out = tmp_path / "bad.onnx"
    assert main(["export", "--checkpoint", str(gray_ckpt), "--onnx", str(out)]) == 1
    assert "differ from PyTorch by 5.00e-01" in capsys.readouterr().err and not out.exists()


def test_export_cli_removes_a_model_the_check_cannot_run(gray_ckpt, tmp_path, capsys, monkeypatch):
    import dsm.export_cli

    def broken(*args):
        raise RuntimeError("onnxruntime: cannot load the model")

    monkeypatch.setattr(dsm.export_cli, "max_abs_error", broken)
    out = tmp_path / "bad.onnx"
    assert main(["export", "--checkpoint", str(gray_ckpt), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"dsm export: error: {out}: the onnxruntime check failed (RuntimeError: onnxruntime: cannot load "
        "the model); removed\n"
    )
    assert not out.exists()


def test_export_cli_missing_checkpoint(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "nope"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint file missing" in capsys.readouterr().err


# --- dsm bench --runtimes --------------------------------------------------------------


def test_runtime_latency_times_eager_and_onnxruntime_per_batch():
    fused = dsm.reparameterize(dsm.create_model("dsm_net", in_chans=1))
    backends = ("eager", "onnxruntime")
    rows = runtime_latency(fused, (1, 48, 48), backends, batches=(1, 2), runs=3, warmup=1, threads=1)
    assert [(r["backend"], r["batch"]) for r in rows] == [
        ("eager", 1),
        ("onnxruntime", 1),
        ("eager", 2),
        ("onnxruntime", 2),
    ]
    assert all(r["available"] and r["latency_ms_median"] > 0 and r["runs"] == 3 for r in rows)
    assert rows[2]["ms_per_image"] == pytest.approx(rows[2]["latency_ms_median"] / 2)


def test_runtime_latency_reports_a_backend_that_cannot_run(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n(details)")

    monkeypatch.setattr(torch, "compile", no_compiler)
    rows = runtime_latency(torch.nn.Conv2d(3, 4, 3), (3, 16, 16), backends=("eager", "compile"), batches=(1,), runs=2)
    assert rows[0]["available"] and not rows[1]["available"]
    assert "No working C++ compiler" in rows[1]["reason"] and "latency_ms_median" not in rows[1]


@pytest.mark.slow
def test_runtime_latency_with_torch_compile():
    rows = runtime_latency(torch.nn.Conv2d(3, 4, 3), (3, 16, 16), backends=("compile",), batches=(1,), runs=2)
    if not rows[0]["available"] and "compiler" in rows[0]["reason"].lower():
        pytest.skip(f"no C++ compiler for torch.compile here: {rows[0]['reason']}")
    assert rows[0]["available"], rows[0]["reason"]


def test_bench_cli_runtimes(capsys):
    argv = ["bench", "--runtimes", "--in-chans", "1", "--input-size", "48", "--backends", "eager,onnxruntime"]
    argv += ["--threads", "1"]  # 2 threads on a busy 2-core machine make eager PyTorch crawl
    assert main([*argv, "--batches", "1", "--runs", "3", "--warmup", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in rows] == ["eager", "onnxruntime"] and rows[0]["name"] == "dsm_net[dsm]@1x48"
    assert main([*argv, "--batches", "1", "--runs", "3", "--warmup", "1"]) == 0
    assert "onnxruntime" in capsys.readouterr().out
    cbam = ["--modulators", "cbam", "--batches", "1", "--runs", "2", "--warmup", "0", "--json"]  # Conv+BN inside
    assert main([*argv, *cbam]) == 0  # folded like --compare's models, and still exported and run
    assert all(r["available"] for r in json.loads(capsys.readouterr().out))


def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    model = dsm.reparameterize(dsm.create_model("dsm_net", in_chans=1)).train()
    export_model(model, tmp_path / "m.onnx", (1, 1, 48, 48))
    assert model.training  # not switched to eval behind the caller's back
    assert max_abs_error(tmp_path / "m.onnx", model, (2, 1, 48, 48)) < 1e-4 and model.training


def test_a_failed_export_leaves_no_folder_behind(gray_ckpt, tmp_path):
    with pytest.warns(UserWarning, match="TorchScript exporter failed"), pytest.raises(ExportError):
        export_checkpoint(gray_ckpt, tmp_path / "new" / "deeper" / "o.onnx", 99)
    assert list(tmp_path.iterdir()) == []


def test_export_cli_names_onnx_when_it_cannot_write(gray_ckpt, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "x.onnx"  # its folder is a file: nothing can be written there
    assert main(["export", "--checkpoint", str(gray_ckpt), "--onnx", str(target), "--no-check"]) == 2
    assert capsys.readouterr().err.startswith(f"dsm export: error: --onnx {target}: cannot write (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
