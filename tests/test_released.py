"""The released FER2013 checkpoint: loads, carries its record, and re-evaluates to its published accuracy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dsm.checkpoint import RELEASED, checkpoint_paths, load_model
from dsm.evaluate import evaluate

ZIP = os.environ.get("DSM_FER2013_ZIP", "")
pytestmark = pytest.mark.skipif(not checkpoint_paths(RELEASED)[0].is_file(), reason="no released checkpoint yet")


def test_released_checkpoint_loads_with_its_record():
    model, info = load_model(RELEASED)
    assert info["model"]["name"] == "dsm_net" and info["input"] == {"size": 48, "channels": 1}
    assert info["dataset"] == "fer2013" and len(info["classes"]) == 7
    record = json.loads(RELEASED.with_name(RELEASED.name + ".run.json").read_text())
    assert record["status"] == "finished" and record["test_metrics"] == info["test_metrics"]
    assert record["git_commit"] and record["data"]["manifest_hash"]


@pytest.mark.slow
@pytest.mark.skipif(not ZIP or not Path(ZIP).is_file(), reason="set DSM_FER2013_ZIP to the FER2013 archive.zip")
def test_released_checkpoint_reproduces_its_privatetest_accuracy(tmp_path):
    from dsm.data import prepare_dataset

    data = prepare_dataset("fer2013", ZIP, tmp_path / "fer2013", progress=False)
    _, info = load_model(RELEASED)
    m = evaluate(RELEASED, data, split="test")
    assert m["n"] == 3589 and m["classes_only_in_data"] == [] and m["tta"] == "none"
    assert m["accuracy"] == pytest.approx(info["test_metrics"]["accuracy"], abs=1e-9)
    assert m["balanced_accuracy"] == pytest.approx(info["test_metrics"]["balanced_accuracy"], abs=1e-9)
