"""The "Using the model" page: its notebook runs (smoke settings, a random-weight checkpoint), the driver
executes it once per checkpoint, skips it without the released model, and the book builds with it."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
import torch

import dsm
import dsm.checkpoint
from dsm import reproduce, study, viz
from dsm.checkpoint import CheckpointError, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]
METRICS = {"accuracy": 0.625, "balanced_accuracy": 0.5, "macro_f1": 0.25, "n": 16}


def make_checkpoint(path, metrics=True):
    """A random-weight 48x48 gray dsm_net checkpoint with the JSON a ``dsm train`` run writes."""
    torch.manual_seed(0)
    kwargs = {"num_classes": 7, "in_chans": 1, "modulator": "dsm"}
    model = dsm.create_model("dsm_net", **kwargs)
    info = {"model": {"name": "dsm_net", "kwargs": kwargs}, "classes": CLASSES, "input": {"size": 48, "channels": 1}}
    if metrics:
        info |= {
            "dataset": "fer2013",
            "config": {"recipe": "cpu", "epochs": 8, "batch_size": 128, "lr": 0.002, "modulator_opts": {}},
            "epoch": 7,
            "val_metrics": {**METRICS, "accuracy": 0.5},
            "test_metrics": METRICS,
        }
    save_checkpoint(path, {"model." + k: v for k, v in model.state_dict().items()}, info)
    return path


def test_notebook_parameters_and_no_outputs():
    nb = nbformat.read(ROOT / "notebooks" / f"{reproduce.USING}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assigned = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line}
    assert assigned == {"checkpoint", "photo", "runs", "warmup", "threads", "backends", "batches"}
    assert set(reproduce.using_parameters(study.PROFILES["quick"])) == assigned
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Using the model")
    assert "dsm predict photo.jpg --out out/" in nb.cells[0].source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"


def test_smoke_and_quick_settings():
    smoke, quick = study.PROFILES["smoke"], study.PROFILES["quick"]
    assert reproduce.using_parameters(smoke)["backends"] == ["eager", "onnxruntime"]
    assert reproduce.using_parameters(smoke)["runs"] == 3
    assert reproduce.using_parameters(quick)["backends"] == ["eager", "onnxruntime", "compile"]
    params = reproduce.using_parameters(quick)
    assert params["checkpoint"] is None and (Path(params["photo"]).resolve() == reproduce.PHOTO)


def test_checkpoint_card_and_tables(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    _, info = dsm.checkpoint.load_checkpoint(ckpt)
    card = viz.checkpoint_card(ckpt, info)
    assert str(ckpt) in card and info["id"] in card
    assert "test accuracy: 62.50 %" in card and "validation accuracy 50.00 %" in card
    assert "1×48×48 (gray)" in card and "`fer2013`" in card and "after epoch 7" in card
    metrics = viz.checkpoint_metrics(info)
    assert list(metrics.index) == ["validation", "test"]
    assert metrics.loc["test", "Accuracy"] == 62.5 and metrics.loc["test", "images"] == 16
    assert viz.checkpoint_config(info).loc["epochs", "value"] == "8"
    bare = {k: v for k, v in info.items() if k not in ("val_metrics", "test_metrics", "config", "dataset", "epoch")}
    assert "test accuracy: not recorded" in viz.checkpoint_card(ckpt, bare)
    assert viz.checkpoint_metrics(bare).empty and viz.checkpoint_config(bare).empty
    assert "started from" not in card  # a random init
    init = {"path": "a/best", "sha256": "0123456789abcdef", "id": "x", "run": "runs/a", "epoch": 60}
    began = {**info, "config": {**info["config"], "init_from": "a/best"}}
    assert viz.started_from(ckpt, began) is None  # neither its JSON nor a record beside it says more
    record = {"status": "finished", "config": {}, "data": {}, "init": init}
    (tmp_path / "ckpt.run.json").write_text(json.dumps(record))  # a released model's record
    assert viz.started_from(ckpt, began) == init
    line = "- started from: the weights of `runs/a` after epoch 60 (sha256 0123456789ab…), not from a random init"
    assert line in viz.checkpoint_card(ckpt, began).splitlines()
    assert viz.started_from(ckpt, {**began, "init": {**init, "epoch": 8}})["epoch"] == 8  # its JSON comes first


def test_runtime_table_and_caption():
    ok = {"backend": "eager", "batch": 32, "input": "1x48x48", "threads": 1, "available": True, "reason": ""}
    ok |= {"runs": 5, "latency_ms_median": 64.0, "latency_ms_iqr": 1.23456, "ms_per_image": 2.0, "images_per_s": 500.0}
    failed = {"backend": "compile", "batch": 32, "input": "1x48x48", "threads": 1, "available": False}
    failed |= {"reason": "RuntimeError: no compiler", "runs": 0}
    table = viz.runtime_table([ok, failed])
    assert table["latency median (ms)"].tolist()[0] == 64.0 and table["latency IQR (ms)"][0] == 1.235
    assert table["note"][1] == "not available: RuntimeError: no compiler" and table["images / s"].isna()[1]
    caption = viz.runtime_caption([ok, failed], warmup=2)
    assert "1 threads" in caption and "5 timed" in caption and "2 warm-up" in caption
    assert "eager, compile" in caption and "Timed at" not in caption  # rows without conditions
    ok["conditions"] = {"commit": "0123456789abcdef+dirty", "measured": "2026-11-30 12:00 UTC", "cpu_busy": 0.02}
    assert viz.runtime_caption([ok, failed]).endswith(
        "Timed at 2026-11-30 12:00 UTC with code 0123456+dirty; other processes used 2% of the CPU just before."
    )


def test_show_image_in_true_colours():
    bgr = np.zeros((20, 40, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    fig = viz.show_image(bgr, title="blue")
    shown = np.asarray(fig.axes[0].images[0].get_array())
    assert isinstance(fig, matplotlib.figure.Figure) and shown.shape == (20, 40, 3)
    assert shown[0, 0].tolist() == [0, 0, 255]
    gray = viz.show_image(np.full((10, 10), 7, np.uint8))
    assert gray.axes[0].images[0].get_cmap().name == "gray"


def test_without_the_released_checkpoint(tmp_path, monkeypatch, capsys):
    """The page is skipped (the chapter keeps its prose) unless asked for by name, which fails clearly."""
    monkeypatch.setattr(dsm.checkpoint, "RELEASED", tmp_path / "missing" / "fer2013_dsm_net")
    book = reproduce.copy_book(tmp_path)
    assert reproduce.reproduce_using(book, study.PROFILES["smoke"]) is None
    assert "skipped: no checkpoint" in capsys.readouterr().out
    toc = reproduce.write_toc(book).read_text()
    assert "- file: using\n" in toc and reproduce.USING not in toc
    with pytest.raises(CheckpointError, match="no checkpoint at .*fer2013_dsm_net"):
        reproduce.reproduce_using(book, study.PROFILES["smoke"], force=True)
    parser = argparse.ArgumentParser()
    reproduce.add_arguments(parser)
    args = parser.parse_args(["--book", str(book), "--profile", "smoke", "--notebooks", reproduce.USING])
    capsys.readouterr()
    assert reproduce.run(args) == 2
    assert capsys.readouterr().err.startswith("dsm reproduce: error: using_the_model: no checkpoint")
    assert not (book / "results" / f"{reproduce.USING}.ipynb").exists()


@pytest.mark.slow
def test_the_page_runs_once_per_checkpoint_and_builds(tmp_path, capsys):
    """Smoke settings (eager + onnxruntime, 3 runs) on a random-weight checkpoint; then the book builds."""
    ckpt = make_checkpoint(tmp_path / "ckpt" / "model")
    book = reproduce.copy_book(tmp_path)
    smoke = study.PROFILES["smoke"]
    out = reproduce.reproduce_using(book, smoke, ckpt)
    assert out == book / "results" / f"{reproduce.USING}.ipynb"

    nb = nbformat.read(out, as_version=4)
    assert nb.cells[0].source.startswith(f"# {reproduce.USING_TITLE}\n")
    assert nb.metadata["papermill"]["parameters"]["backends"] == ["eager", "onnxruntime"]
    assert nb.metadata["papermill"]["parameters"]["runs"] == 3
    assert nb.metadata["dsm"]["checkpoint_id"] == dsm.checkpoint.load_checkpoint(ckpt)[1]["id"]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the annotated photo
    text = out.read_text()
    assert "test accuracy: 62.50 %" in text  # from the checkpoint's JSON
    assert '\\"label\\"' in text and '\\"probabilities\\"' in text  # the JSON of the results
    assert "onnxruntime" in text and "ms / image" in text and "1 threads" in text  # the latency table

    before = out.stat().st_mtime_ns
    capsys.readouterr()
    assert reproduce.reproduce_using(book, smoke, ckpt) == out
    assert "up to date" in capsys.readouterr().out and out.stat().st_mtime_ns == before
    make_checkpoint(ckpt)  # a new checkpoint (new id): executed again
    reproduce.reproduce_using(book, smoke, ckpt)
    assert out.stat().st_mtime_ns != before

    toc = reproduce.write_toc(book).read_text()
    assert f"      - file: using\n        sections:\n          - file: results/{reproduce.USING}\n" in toc
    exe = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(exe), "build", str(book), "-W", "-n", "--keep-going"], capture_output=True, text=True, cwd=tmp_path
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "WARNING" not in log, log[-3000:]
    assert (tmp_path / "_build" / "html" / "results" / f"{reproduce.USING}.html").is_file()
