"""dsm.metrics against scikit-learn, on the cases where averaging choices differ."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from dsm.metrics import classification_metrics


def test_a_class_predicted_but_never_true_counts_in_macro_f1():
    y_true, y_pred = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 3, 1, 1, 2, 3])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro")) == pytest.approx(0.5833, abs=1e-4)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["per_class_recall"]["d"] is None and m["per_class_recall"]["a"] == 0.5
    assert m["confusion_matrix"][0] == [1, 0, 0, 1] and m["n"] == 6
