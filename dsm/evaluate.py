"""Evaluate a checkpoint on a prepared data set, across data sets by canonical class name.

A FER2013 model has no ``contempt``; CK+ does. Labels are matched by name: metrics are
computed over the union of both class lists, samples of a class the model cannot
predict are counted (``unscorable``) and kept out of ``accuracy`` (they are in
``accuracy_all`` as errors), and the classes missing on either side are listed.
Test-time augmentation (``flip``, ``tencrop``) is off unless asked for, and labelled.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from dsm.checkpoint import load_model
from dsm.data.format import WITHHELD, load_prepared
from dsm.metrics import classification_metrics
from dsm.preprocess import to_model_input
from dsm.train import predict_logits

TTA = (None, "flip", "tencrop")


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module,
    images: torch.Tensor,
    in_chans: int,
    size: int,
    tta: str | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """Class probabilities of uint8 images (N,H,W[,3]); with ``tta`` averaged over views."""
    if tta not in TTA:
        raise ValueError(f"tta must be one of {TTA}, got {tta!r}")
    if tta is None:  # single view: the training loop's batched inference
        return F.softmax(predict_logits(model, images, in_chans, size, torch.device(device), batch_size), 1)
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        if tta == "tencrop":
            big = to_model_input(x, in_chans, size + size // 8)
            views = list(TF.ten_crop(big, [size, size]))
        else:
            x = to_model_input(x, in_chans, size)
            views = [x, x.flip(-1)] if tta == "flip" else [x]
        out.append(torch.stack([F.softmax(model(v).float(), 1) for v in views]).mean(0).cpu())
    return torch.cat(out) if out else torch.empty(0)


def select_split(
    prepared, split: str, protocol: str | None = None, fold: int | None = None, **split_opts: Any
) -> np.ndarray:
    """Indices of ``split`` (train/val/test/all): the meta.csv split column, or a protocol's split.

    ``split_opts`` (run_index, val_fraction, seed) go to ``make_splits``: a protocol's split
    depends on them, so they must be the ones the model was trained with.
    """
    if split == "all":
        return np.arange(len(prepared.labels))
    if protocol:
        from dsm.data.protocols import make_splits

        return getattr(make_splits(prepared, protocol, fold=fold, **split_opts), split)
    return prepared.split_indices(split)


def split_options(info: dict, protocol: str | None, fold: int | None, run_index: int | None) -> dict[str, Any]:
    """The split settings for ``protocol``: the checkpoint's own when it was trained under it.

    Without this a paper-random run 3 or a seed-2 validation carve-out would be scored on a
    split rebuilt with run 1 and seed 0, which overlaps the images the model trained on.
    """
    if not protocol:
        return {}
    cfg = info.get("config") or {}
    own = cfg.get("protocol") == protocol
    opts = {"run_index": 1, "fold": None, "val_fraction": 0.1, "seed": 0}
    if own:
        opts |= {k: cfg[k] for k in opts if k in cfg}
    if fold is not None:
        opts["fold"] = fold
    if run_index is not None:
        opts["run_index"] = run_index
    return opts


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    split: str = "test",
    tta: str | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    protocol: str | None = None,
    fold: int | None = None,
    run_index: int | None = None,
) -> dict:
    """JSON-ready metrics of a checkpoint on a prepared data set's split.

    On the data set the checkpoint was trained on, the split comes from its own protocol unless
    ``protocol`` names another (meta.csv's split is not what a paper-random or k-fold model held
    out); elsewhere (cross-data-set) from meta.csv. With a protocol, the split is rebuilt with the
    checkpoint's own run index, fold, seed and validation fraction (``fold``/``run_index`` override).
    Images the checkpoint trained on that fall in the split are counted (``overlap_with_training``)
    and warned about.
    """
    model, info = load_model(checkpoint, device)
    prepared = load_prepared(data)
    cfg = info.get("config") or {}
    own_data = info.get("dataset") == prepared.manifest.get("dataset") and bool(cfg.get("protocol"))
    protocol = protocol or (cfg["protocol"] if own_data else None)
    # a fold or run index that no split here depends on would be reported as applied, and change nothing
    for flag, value, needs in (("--fold", fold, "kfold"), ("--run-index", run_index, "paper-random")):
        if value is not None and protocol != needs:
            uses = f"protocol {protocol!r}" if protocol else "meta.csv's split column"
            raise ValueError(f"{flag} {value}: only protocol {needs!r} has one; this evaluation uses {uses}")
    opts = split_options(info, protocol, fold, run_index)
    idx = select_split(prepared, split, protocol, **opts)
    if len(idx) == 0:
        raise ValueError(f"{data}: split {split!r} is empty")
    if np.isin(idx, prepared.withheld).any():
        raise ValueError(f"{Path(data) / WITHHELD}: this copy lacks the images of split {split!r}")
    overlap = 0
    if own_data and split not in ("train", "all"):
        trained = select_split(prepared, "train", cfg["protocol"], **split_options(info, cfg["protocol"], None, None))
        overlap = int(np.isin(idx, trained).sum())
        if overlap:
            warnings.warn(
                f"{checkpoint}: {overlap} of the {len(idx)} {split} images were in its training split", stacklevel=2
            )
    images = torch.from_numpy(np.ascontiguousarray(prepared.images[idx]))
    probs = predict_proba(model, images, info["input"]["channels"], info["input"]["size"], tta, device, batch_size)
    model_classes, data_classes = list(info["classes"]), prepared.classes
    union = [c for c in dict.fromkeys(data_classes + model_classes)]
    true_names = [data_classes[i] for i in prepared.labels[idx]]
    y_true = np.array([union.index(c) for c in true_names])
    y_pred = np.array([union.index(model_classes[i]) for i in probs.argmax(1).tolist()])
    scorable = np.isin(y_true, [union.index(c) for c in model_classes])
    metrics = classification_metrics(y_true[scorable], y_pred[scorable], union)
    metrics |= {
        "overlap_with_training": overlap,
        "accuracy_all": float((y_true == y_pred).mean()),
        "unscorable": {c: int(sum(t == c for t in true_names)) for c in data_classes if c not in model_classes},
        "classes_only_in_data": [c for c in data_classes if c not in model_classes],
        "classes_only_in_model": [c for c in model_classes if c not in data_classes],
        "split": split,
        "protocol": protocol or "meta.csv",
        **({"split_options": opts} if opts else {}),
        "tta": tta or "none",
        "checkpoint": str(checkpoint),
        "data": str(data),
        "dataset": prepared.manifest.get("dataset"),
        "manifest_hash": prepared.hash,
    }
    return metrics
