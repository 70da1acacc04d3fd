"""dsm release: the run with the best validation accuracy becomes the default checkpoint, copied intact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from fixtures_models import random_checkpoint

from dsm.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from dsm.cli import main
from dsm.release import choose, release


def fake_run(
    run_dir: Path, val: float, test: float, status: str = "finished", dataset: str = "fer2013", data: str = "abc"
) -> Path:
    """A run directory as training leaves it: run.json and a best checkpoint carrying the same metrics."""
    random_checkpoint(run_dir / "best")
    tensors, info = load_checkpoint(run_dir / "best")
    metrics = {"val_metrics": {"accuracy": val}, "test_metrics": {"accuracy": test}}
    save_checkpoint(run_dir / "best", tensors, {**info, **metrics})
    record = {"status": status, **metrics, "data": {"dataset": dataset, "manifest_hash": data}}
    record["config"] = {"protocol": "official"}
    (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir


def test_choose_by_validation_never_by_test(tmp_path):
    a = fake_run(tmp_path / "a", val=0.60, test=0.70)
    b = fake_run(tmp_path / "b", val=0.62, test=0.58)
    c = fake_run(tmp_path / "c", val=0.62, test=0.59)
    assert choose([a, b, c]) == b  # best validation; the first of a tie; test accuracy plays no part
    other = fake_run(tmp_path / "other", val=0.9, test=0.9, dataset="rafdb")
    with pytest.raises(CheckpointError, match=r"other/run.json: validated on another data set or split than"):
        choose([a, other])


def test_choose_compares_seeds_only_where_they_share_the_validation_split(tmp_path):
    """FER2013 has an official validation split; RAF-DB's is held out of train with the run's seed."""

    def with_notes(run: Path, notes: list[str]) -> Path:
        record = json.loads((run / "run.json").read_text())
        record["data"]["protocol_notes"] = notes
        (run / "run.json").write_text(json.dumps(record))
        return run

    official = ["official splits of fer2013: train 10, val 5, test 5"]
    a = with_notes(fake_run(tmp_path / "a", val=0.6, test=0.6), official)
    b = with_notes(fake_run(tmp_path / "b", val=0.7, test=0.6), official)
    assert choose([a, b]) == b
    held_out = ["official splits of rafdb: train 10, val 0, test 5", "validation: 10% of train held out, seed {}"]
    c = with_notes(fake_run(tmp_path / "c", val=0.6, test=0.6), [held_out[0], held_out[1].format(0)])
    d = with_notes(fake_run(tmp_path / "d", val=0.7, test=0.6), [held_out[0], held_out[1].format(1)])
    with pytest.raises(CheckpointError, match=r"d/run.json: validated on another data set or split than"):
        choose([c, d])


def test_choose_with_data_requires_runs_trained_on_it(tmp_path):
    from dsm.data import prepare_dataset
    from dsm.data.format import load_prepared

    data = prepare_dataset("synthetic", None, tmp_path / "data", n=14, progress=False)
    ours = fake_run(tmp_path / "ours", val=0.5, test=0.5, data=load_prepared(data).hash)
    theirs = fake_run(tmp_path / "theirs", val=0.9, test=0.9, data="0123456789abcdef")
    assert choose([ours], data) == ours
    assert choose([ours, theirs]) == theirs  # without --data only the data set's name and splits are compared
    with pytest.raises(CheckpointError, match=r"theirs/run.json: trained on other data than"):
        choose([ours, theirs], data)


def test_release_copies_the_pair_and_the_record(tmp_path):
    run = fake_run(tmp_path / "run", val=0.6, test=0.55)
    dest = release(run, tmp_path / "out" / "released.safetensors")  # with or without the suffix
    assert dest == tmp_path / "out" / "released.safetensors"
    model, info = load_model(dest)
    ref, _ = load_model(run / "best")
    x = torch.randn(2, 1, 48, 48)
    assert torch.equal(model(x), ref(x)) and info["test_metrics"] == {"accuracy": 0.55}
    assert json.loads((tmp_path / "out" / "released.run.json").read_text())["val_metrics"] == {"accuracy": 0.6}
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_unfinished_or_mismatched_runs_are_refused_and_nothing_is_written(tmp_path):
    running = fake_run(tmp_path / "running", val=0.6, test=0.5, status="running")
    with pytest.raises(CheckpointError, match=r"running/run.json: run not finished"):
        release(running, tmp_path / "out" / "r")
    other = fake_run(tmp_path / "other", val=0.6, test=0.5)
    record = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**record, "test_metrics": {"accuracy": 0.9}}))
    with pytest.raises(CheckpointError, match="test_metrics differ"):
        release(other, tmp_path / "out" / "r")
    with pytest.raises(CheckpointError, match="no run record"):
        choose([tmp_path])
    assert not (tmp_path / "out").exists()


def test_cli_dry_run_names_the_choice_and_writes_nothing(tmp_path, capsys):
    a, b = fake_run(tmp_path / "a", val=0.5, test=0.5), fake_run(tmp_path / "b", val=0.7, test=0.4)
    assert main(["release", str(a), str(b), "--dest", str(tmp_path / "rel"), "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"run": str(b), "val_accuracy": 0.7, "test_accuracy": 0.4, "dest": None}
    assert not list(tmp_path.glob("rel*"))
    running = fake_run(tmp_path / "c", 0.9, 0.9, status="running")
    assert main(["release", str(running), "--dest", str(tmp_path / "rel")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsm release: error: ") and "run not finished" in err and err.count("\n") == 1
    assert not list(tmp_path.glob("rel*"))


BROKEN = [("[]", "a JSON list, not an object"), ("{oops", "not a valid run record")]


@pytest.mark.parametrize(("text", "problem"), BROKEN)
def test_broken_run_records_are_named(tmp_path, capsys, text, problem):
    run = fake_run(tmp_path / "run", val=0.6, test=0.5)
    (run / "run.json").write_text(text)
    assert main(["release", str(run), "--dest", str(tmp_path / "rel")]) == 2
    assert re.match(f"dsm release: error: .*run/run.json: .*{problem}", capsys.readouterr().err)
    assert main(["runs", "summarize", str(run)]) == 2
    assert re.fullmatch(f"dsm runs: error: .*run/run.json: .*{problem}.*\n", capsys.readouterr().err)
    assert not list(tmp_path.glob("rel*"))


def test_release_to_a_folder_is_refused(tmp_path, capsys):
    run = fake_run(tmp_path / "a", val=0.5, test=0.5)
    (tmp_path / "dest").mkdir()
    for dest in (str(tmp_path / "dest"), str(tmp_path / "new") + "/"):
        assert main(["release", str(run), "--dest", dest]) == 2
        assert "a folder; give the checkpoint's base path inside it" in capsys.readouterr().err
    assert list((tmp_path / "dest").iterdir()) == [] and not (tmp_path / "new").exists()


def test_a_released_model_is_a_candidate_of_the_next_release(tmp_path):
    """Run directories are not committed: the next release is chosen against the current one."""
    rel = tmp_path / "rel" / "model"
    release(fake_run(tmp_path / "a", val=0.60, test=0.50), rel)
    better = fake_run(tmp_path / "b", val=0.65, test=0.52)
    assert choose([better, rel]) == better
    release(better, rel)
    assert json.loads(rel.with_suffix(".run.json").read_text())["val_metrics"] == {"accuracy": 0.65}
    worse = fake_run(tmp_path / "c", val=0.62, test=0.70)  # by validation, never by test
    assert choose([worse, rel]) == rel
    before = {f.name: f.stat().st_mtime_ns for f in rel.parent.iterdir()}
    assert release(rel, str(rel) + ".safetensors") == rel.with_suffix(".safetensors")  # onto itself: nothing written
    assert {f.name: f.stat().st_mtime_ns for f in rel.parent.iterdir()} == before
    other = fake_run(tmp_path / "other", val=0.9, test=0.9, dataset="rafdb")
    with pytest.raises(CheckpointError, match=r"other/run.json: validated on another data set or split than .*model"):
        choose([rel, other])
    with pytest.raises(CheckpointError, match=r"nothing\.run\.json: no run record \(not a run directory or a released"):
        choose([tmp_path / "nothing"])


def test_a_release_that_cannot_be_written_names_dest_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    run = fake_run(tmp_path / "a", val=0.5, test=0.5)
    (tmp_path / "afile").write_text("")
    assert main(["release", str(run), "--dest", str(tmp_path / "afile" / "sub" / "model")]) == 2
    assert capsys.readouterr().err.startswith(f"dsm release: error: --dest {tmp_path / 'afile' / 'sub' / 'model'}: ")
    import dsm.release

    copies = []

    def disk_full(src, dst):  # the third copy (the run record) finds the disk full
        if len(copies) == 2:
            raise OSError(28, "No space left on device", str(dst))
        copies.append(dst)
        return Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(dsm.release.shutil, "copyfile", disk_full)
    dest = tmp_path / "new" / "deeper" / "model"
    assert main(["release", str(run), "--dest", str(dest)]) == 2
    assert capsys.readouterr().err == f"dsm release: error: --dest {dest}: cannot write (No space left on device)\n"
    assert len(copies) == 2 and not (tmp_path / "new").exists()  # temporary copies and new folders removed
