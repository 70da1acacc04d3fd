"""Classification metrics (scikit-learn's), in the JSON shape every run record and ``dsm evaluate`` use."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, balanced (mean-class) accuracy, macro-F1, per-class recall and the confusion matrix.

    Balanced accuracy averages recall over the classes present in ``y_true`` (sklearn's
    ``balanced_accuracy_score``); classes with no true sample get recall ``None`` rather than a
    silent 0. Macro-F1 is sklearn's: over the classes in ``y_true`` or ``y_pred``, so a class that
    is predicted but never true counts with F1 0 (a cross-data-set or k-fold split missing a class).
    """
    labels = list(range(len(classes)))
    present = sorted(set(np.asarray(y_true).tolist()))
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(np.mean([recall[i] for i in present])) if present else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class_recall": {c: (float(recall[i]) if i in present else None) for i, c in enumerate(classes)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
        "n": int(len(y_true)),
    }
