"""benchmarks/device_session.py: the data packed for a lent GPU comes back bit-exact, its runs come back whole."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_models import random_checkpoint

from dsm.data.format import PreparedWriter, load_prepared
from dsm.evaluate import evaluate
from dsm.runs import load_run

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "device_session.py"
_spec = importlib.util.spec_from_file_location("device_session", _PATH)
ds = importlib.util.module_from_spec(_spec)
sys.modules["device_session"] = ds
_spec.loader.exec_module(ds)


def test_med_residuals_invert_exactly():
    x = np.random.default_rng(0).integers(0, 256, (5, 9, 7)).astype(np.uint8)
    x[0] = 255  # flat and saturated images too
    x[1] = 0
    r = ds.med_residuals(x)
    assert not np.array_equal(r, x)
    np.testing.assert_array_equal(ds.med_reconstruct(r), x)


@pytest.fixture()
def prepared(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    classes, splits = ["neutral", "anger"], ("train", "val", "test")
    with PreparedWriter(tmp_path / "set", 12, (8, 8), "toy", classes) as w:
        for i in range(12):
            w.add(rng.integers(0, 256, (8, 8)).astype(np.uint8), classes[i % 2], splits[i % 3], f"{i}")
    return tmp_path / "set"


def test_pack_sends_train_and_val_only_and_unpacks_to_the_same_hash(prepared, tmp_path):
    ds.pack(prepared, tmp_path / "packed")
    assert "images.npy" not in {p.name for p in (tmp_path / "packed").iterdir()}
    ds.unpack(tmp_path / "packed", tmp_path / "there")
    here, there = load_prepared(prepared), load_prepared(tmp_path / "there")
    assert there.hash == here.hash
    test = here.meta["split"].to_numpy() == "test"
    np.testing.assert_array_equal(np.asarray(there.images)[~test], np.asarray(here.images)[~test])
    assert not np.asarray(there.images)[test].any() and np.asarray(here.images)[test].any()


def test_unpack_refuses_pixels_that_do_not_match_their_hash(prepared, tmp_path):
    ds.pack(prepared, tmp_path / "packed")
    info = json.loads((tmp_path / "packed" / "pixels.json").read_text())
    (tmp_path / "packed" / "pixels.json").write_text(json.dumps({**info, "sha256_sent": "0" * 64}))
    with pytest.raises(SystemExit, match=r"pixels.xz: unpacked pixels do not match their sha256"):
        ds.unpack(tmp_path / "packed", tmp_path / "there")
    assert not (tmp_path / "there").exists()


def _run(root: Path, epochs: int) -> Path:
    run = root / "toy" / "cpu" / "dsm-epochs=2" / "seed0"
    run.mkdir(parents=True, exist_ok=True)
    (run / "last.safetensors").write_bytes(np.random.default_rng(epochs).bytes(2500))
    (run / "run.json").write_text(json.dumps({"status": "running", "config": {}, "data": {}, "epochs": [{}] * epochs}))
    return run


def test_collect_and_restore_return_a_run_directory_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "PART_BYTES", 1000)  # force several parts
    run, out = _run(tmp_path / "runs", 2), tmp_path / "out"
    out.mkdir()
    assert ds.collect([run], out) == 0
    parts = sorted(p.name for p in out.iterdir())
    assert len(parts) >= 3 and all(p.startswith("cpu-dsm-epochs_2-seed0.tar.") for p in parts)
    ds.restore(out, tmp_path / "back")
    back = tmp_path / "back" / "cpu" / "dsm-epochs=2" / "seed0"
    assert (back / "last.safetensors").read_bytes() == (run / "last.safetensors").read_bytes()
    assert [p.name for p in (tmp_path / "back").iterdir()] == ["cpu"]  # no temporary left behind
    assert ds.collect([tmp_path / "nowhere"], out) == 1


def test_restore_refuses_missing_parts_and_keeps_a_run_further_along(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ds, "PART_BYTES", 1000)
    out = tmp_path / "out"
    out.mkdir()
    ds.collect([_run(tmp_path / "there", 2)], out)
    here = _run(tmp_path / "here", 3).parents[2]  # the same run, one epoch further here
    before = (here / "cpu" / "dsm-epochs=2" / "seed0" / "last.safetensors").read_bytes()
    ds.restore(out, here)
    assert "kept (epoch 3 here, 2 in" in capsys.readouterr().out
    assert (here / "cpu" / "dsm-epochs=2" / "seed0" / "last.safetensors").read_bytes() == before
    done = here / "cpu" / "dsm-epochs=2" / "seed0"  # finished here after the lease: its test was evaluated here
    (done / "run.json").write_text(json.dumps({"status": "finished", "config": {}, "data": {}, "epochs": [{}] * 2}))
    ds.restore(out, here)
    assert "kept (epoch 2 here, 2 in" in capsys.readouterr().out and load_run(done)["status"] == "finished"
    middle = sorted(out.iterdir())[1]
    middle.unlink()
    with pytest.raises(SystemExit, match=rf"{middle.name}: missing \(1 of \d+ parts of .*\); nothing restored"):
        ds.restore(out, tmp_path / "back")
    assert not any((tmp_path / "back").iterdir())


def test_an_unpacked_copy_trains_only_with_the_test_deferred(prepared, tmp_path):
    """The copy's zeros stand for images it does not hold: nothing may train on or score them."""
    from dsm.config import recipe
    from dsm.train import Trainer

    ds.pack(prepared, tmp_path / "packed")
    ds.unpack(tmp_path / "packed", tmp_path / "there")
    assert json.loads((tmp_path / "there" / "withheld.json").read_text()) == {"splits": ["test"]}
    cfg = recipe("smoke", data=str(tmp_path / "there"), out=str(tmp_path / "run"), input_size=16, batch_size=2)
    with pytest.raises(ValueError, match=r"withheld.json: this copy lacks the test images; train with defer_test"):
        Trainer(cfg, show_progress=False)
    Trainer(cfg.replace(defer_test=True), show_progress=False)  # builds: it will not evaluate the test split
    with pytest.raises(ValueError, match=r"withheld.json: this copy lacks images that protocol 'paper-random' trains"):
        Trainer(cfg.replace(defer_test=True, protocol="paper-random"), show_progress=False)


def test_evaluate_refuses_the_split_a_copy_lacks(prepared, tmp_path):
    """`dsm evaluate` on the GPU machine's copy must not score the zeros that stand in for the test images."""
    ds.pack(prepared, tmp_path / "packed")
    ds.unpack(tmp_path / "packed", tmp_path / "there")
    ckpt = random_checkpoint(tmp_path / "m.safetensors", size=8, classes=["neutral", "anger"])
    assert evaluate(ckpt, tmp_path / "there", split="val")["n"] == 4  # the rows it holds score
    with pytest.raises(ValueError, match=r"there/withheld.json: this copy lacks the images of split 'test'"):
        evaluate(ckpt, tmp_path / "there", split="test")
    assert evaluate(ckpt, prepared, split="test")["n"] == 4  # the whole set scores its test split
