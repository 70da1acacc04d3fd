"""benchmarks/device_session.py: the data packed for a lent GPU comes back bit-exact, its runs come back whole."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dsm.data.format import PreparedWriter, load_prepared

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


def test_collect_and_restore_return_a_run_directory_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "PART_BYTES", 1000)  # force several parts
    run = tmp_path / "runs" / "toy" / "cpu" / "dsm-epochs=2" / "seed0"
    run.mkdir(parents=True)
    (run / "last.safetensors").write_bytes(np.random.default_rng(2).bytes(2500))
    (run / "run.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    ds.collect([run], out)
    assert len(list(out.glob("cpu-dsm-epochs_2-seed0.tar.*"))) >= 3
    ds.restore(out, tmp_path / "back")
    back = tmp_path / "back" / "cpu" / "dsm-epochs=2" / "seed0"
    assert (back / "last.safetensors").read_bytes() == (run / "last.safetensors").read_bytes()
    assert (back / "run.json").read_text() == "{}"
