"""The real FER2013 zip (path from DSM_FER2013_ZIP): official per-split and per-class counts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsm.data import prepare_dataset
from dsm.data.fer2013 import OFFICIAL_CLASS_COUNTS, OFFICIAL_COUNTS
from dsm.data.format import load_prepared

ZIP = os.environ.get("DSM_FER2013_ZIP", "")


@pytest.mark.slow
@pytest.mark.skipif(not ZIP or not Path(ZIP).is_file(), reason="set DSM_FER2013_ZIP to the FER2013 archive.zip")
def test_real_fer2013(tmp_path):
    out = prepare_dataset("fer2013", ZIP, tmp_path / "fer2013", progress=False)
    data = load_prepared(out)
    m = data.manifest
    assert m["splits"] == OFFICIAL_COUNTS == {"train": 28709, "val": 3589, "test": 3589}
    assert m["class_counts"] == OFFICIAL_CLASS_COUNTS
    assert data.images.shape == (35887, 48, 48) and m["count_mismatch"] is None
    # the table of /work/shared/datasets/README.md, in its own class names
    readme = {
        "train": [3995, 436, 4097, 7215, 4965, 4830, 3171],
        "val": [467, 56, 496, 895, 607, 653, 415],
        "test": [491, 55, 528, 879, 626, 594, 416],
    }
    order = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    assert {s: [m["class_counts"][s][c] for c in order] for s in readme} == readme
    assert len(m["source_sha256"]) == 64
