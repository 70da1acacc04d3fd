"""Checkpoint pairs: a foreign or malformed description is a CheckpointError naming the JSON file."""

import json
from pathlib import Path

import pytest
from fixtures_models import random_checkpoint

from dsm.checkpoint import CheckpointError, load_checkpoint, load_model
from dsm.cli import main

PHOTO = Path(__file__).parent / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "m")


def _edited(good, tmp_path, edit):
    """A copy of ``good`` whose JSON is ``edit(info)`` (the id kept, so the pair still matches)."""
    _, info = load_checkpoint(good)
    out = tmp_path / "edited"
    out.with_suffix(".safetensors").write_bytes(good.with_suffix(".safetensors").read_bytes())
    out.with_suffix(".json").write_text(json.dumps(edit(info)))
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda i: [i], "not a checkpoint description (a JSON list"),
        (lambda i: {**i, "model": {"name": "nosuchnet", "kwargs": {}}}, "cannot build model 'nosuchnet'"),
        (lambda i: {**i, "model": {**i["model"], "kwargs": {**i["model"]["kwargs"], "bogus": 1}}}, "cannot build"),
        (lambda i: {**i, "model": {"name": "dsm_net", "kwargs": [1]}}, "'model.kwargs' is not an object"),
        (lambda i: {k: v for k, v in i.items() if k != "model"}, "no 'model' entry"),
        (lambda i: {k: v for k, v in i.items() if k != "classes"}, "'classes' must be a non-empty list"),
        (lambda i: {**i, "input": {"size": "48", "channels": 1}}, "'input' must be"),
        (lambda i: {**i, "classes": i["classes"][:3]}, "'classes' names 3 classes, the network gives 7 outputs"),
        (lambda i: {**i, "input": {"size": 48, "channels": 3}}, "does not take the input it names (3 channels"),
    ],
)
def test_foreign_checkpoint_descriptions_are_named(good, tmp_path, edit, message):
    bad = _edited(good, tmp_path, edit)
    with pytest.raises(CheckpointError, match="edited.json: ") as e:
        load_model(bad)
    assert message in str(e.value)


def test_a_checkpoint_description_that_is_not_text_is_named(good, tmp_path):
    bad = _edited(good, tmp_path, lambda i: i)
    bad.with_suffix(".json").write_bytes(b"\xff\xfe{}")  # UTF-16 bytes, say: not JSON text
    with pytest.raises(CheckpointError, match=r"edited\.json: not valid JSON"):
        load_checkpoint(bad)


def test_the_good_checkpoint_loads(good):
    model, info = load_model(good)
    assert info["classes"][0] == "neutral" and not model.training


@pytest.mark.parametrize("command", ["evaluate", "export", "predict"])
def test_clis_report_a_foreign_checkpoint_in_one_line(good, tmp_path, capsys, command):
    bad = _edited(good, tmp_path, lambda i: {**i, "model": {"name": "nosuchnet", "kwargs": {}}})
    argv = {
        "evaluate": ["evaluate", "--checkpoint", str(bad), "--data", str(tmp_path)],
        "export": ["export", "--checkpoint", str(bad), "--onnx", str(tmp_path / "x.onnx")],
        "predict": ["predict", str(PHOTO), "--checkpoint", str(bad)],
    }[command]
    rc, err = main(argv), capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "edited.json: cannot build model 'nosuchnet'" in err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("command", ["evaluate", "export", "predict"])
def test_clis_report_a_description_that_does_not_fit_its_weights(good, tmp_path, capsys, command):
    """Three class names for a 7-way network: one line naming the JSON, and no output folder left behind."""
    bad = _edited(good, tmp_path, lambda i: {**i, "classes": i["classes"][:3]})
    out = tmp_path / "out" / "sub"
    argv = {
        "evaluate": ["evaluate", "--checkpoint", str(bad), "--data", str(tmp_path)],
        "export": ["export", "--checkpoint", str(bad), "--onnx", str(out / "x.onnx")],
        "predict": ["predict", str(PHOTO), "--no-detect", "--checkpoint", str(bad), "--out", str(out)],
    }[command]
    rc, err = main(argv), capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "edited.json: 'classes' names 3 classes" in err
    assert not (tmp_path / "out").exists()


def test_weights_of_another_shape_are_named(good, tmp_path):
    def eight_classes(info):
        return {**info, "model": {**info["model"], "kwargs": {**info["model"]["kwargs"], "num_classes": 8}}}

    bad = _edited(good, tmp_path, eight_classes)
    with pytest.raises(CheckpointError, match=r"edited\.safetensors: weights do not fit the model edited\.json"):
        load_model(bad)


def test_a_saved_pair_shares_one_file_mode(good):
    st, js = good.with_suffix(".safetensors"), good.with_suffix(".json")
    assert st.stat().st_mode & 0o777 == js.stat().st_mode & 0o777  # safetensors alone would write 0600


def test_a_folder_is_not_a_checkpoint(tmp_path):
    (tmp_path / "ck.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"ck\.safetensors: a folder, not a checkpoint file"):
        load_checkpoint(tmp_path / "ck")
