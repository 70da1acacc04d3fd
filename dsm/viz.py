"""Plots, tables and attention maps for the notebooks and the book.

Every figure-making function returns a matplotlib ``Figure`` (nothing is shown or saved
here), every table function a pandas ``DataFrame``, so the notebooks stay one call per
cell. Attention helpers take uint8 images as stored in a prepared data set and return
float maps in [0, 1] at the images' own resolution, ready to overlay:

* ``gate_maps`` — the DSM gate ``sigmoid(h(D(g(X))))`` read straight from the module;
* ``gradcam`` — Grad-CAM (:mod:`pytorch_grad_cam`) of any model, by default on the last
  feature map before global pooling.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from dsm.preprocess import to_model_input

METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced acc.", "macro_f1": "Macro-F1"}


def setup(dpi: int = 80) -> None:
    """One plotting style for every notebook (small PNGs keep executed notebooks light)."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid")
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "figure.max_open_warning": 0})


def short_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _done(fig: Figure) -> Figure:
    """Lay out and detach from pyplot: the notebook shows the returned figure once, not twice."""
    fig.tight_layout()
    plt.close(fig)
    return fig


def _gray(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    return (img, "gray") if img.ndim == 2 else (img, None)


# --- data sets ---------------------------------------------------------------------------------


def counts_table(prepared: Any) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals, from the manifest."""
    counts = prepared.manifest["class_counts"]
    df = pd.DataFrame({split: counts[split] for split in counts}).reindex(prepared.classes).fillna(0).astype(int)
    df = df.loc[:, [c for c in df.columns if df[c].sum() > 0]]
    df["total"] = df.sum(axis=1)
    df.loc["total"] = df.sum(axis=0)
    df.index.name = "class"
    return df


def plot_class_counts(prepared: Any) -> Figure:
    """Bar chart of images per class, one bar colour per split."""
    df = counts_table(prepared).drop(index="total", columns="total")
    fig, ax = plt.subplots(figsize=(7, 3))
    df.plot.bar(ax=ax, width=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("images")
    ax.set_title(f"{prepared.manifest['dataset']}: images per class and split")
    ax.tick_params(axis="x", rotation=30)
    return _done(fig)


def pick_images(
    prepared: Any, split: str = "test", per_class: int = 2, seed: int = 0, indices: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each class from ``split`` (random, reproducible): (uint8 images, labels).

    ``indices`` (e.g. ``Experiment.split_indices`` of a run: a k-fold model's test fold) replaces
    meta.csv's split, which holds every image of a k-fold data set as ``train``; an empty ``split`` of
    meta.csv (``test`` of a k-fold set) means every image, but empty ``indices`` are an error: a page
    that asks for a run's test faces must not show its training faces instead."""
    rng = np.random.default_rng(seed)
    idx = np.asarray(indices, dtype=np.int64) if indices is not None else prepared.split_indices(split)
    if indices is not None and len(idx) == 0:
        raise ValueError("pick_images: no image in the given indices (a run without a test split?)")
    if len(idx) == 0:
        idx = np.arange(len(prepared.labels))
    labels = np.asarray(prepared.labels)[idx]
    chosen = []
    for c in range(len(prepared.classes)):
        pool = idx[labels == c]
        if len(pool):
            chosen.extend(sorted(rng.choice(pool, size=min(per_class, len(pool)), replace=False)))
    chosen = np.asarray(chosen, dtype=np.int64)
    return np.asarray(prepared.images[chosen]), np.asarray(prepared.labels)[chosen]


def sample_grid(prepared: Any, per_class: int = 8, split: str = "train", seed: int = 0) -> Figure:
    """A grid of ``per_class`` random images per class (rows = classes)."""
    images, labels = pick_images(prepared, split, per_class, seed)
    classes = prepared.classes
    rows = [c for c in range(len(classes)) if (labels == c).any()]
    fig, axes = plt.subplots(len(rows), per_class, figsize=(per_class * 0.9, len(rows) * 0.95), squeeze=False)
    for r, c in enumerate(rows):
        imgs = images[labels == c]
        for j in range(per_class):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(imgs):
                img, cmap = _gray(imgs[j])
                ax.imshow(img, cmap=cmap, vmin=0, vmax=255)
        axes[r, 0].set_ylabel(classes[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{prepared.manifest['dataset']}: {per_class} {split} images per class", fontsize=10)
    return _done(fig)


# --- results tables and plots --------------------------------------------------------------------


def _pm(mean: float, std: float) -> str:
    if std is None or (isinstance(std, float) and np.isnan(std)):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _label(row: Mapping[str, Any]) -> str:
    opts = json.loads(row["options"]) if isinstance(row.get("options"), str) else row.get("options") or {}
    extra = ", ".join(f"{k}={v}" for k, v in sorted(opts.items()))
    return f"{row['modulator']}" + (f" ({extra})" if extra else "")


def results_table(summary: pd.DataFrame, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Accuracy / balanced accuracy / macro-F1 in % as "mean ± std" over ``n_runs``, one row per group,
    with the run records behind each row. ``summary`` is ``dsm.runs.summarize(...)``; ``labels`` maps a
    run directory to the row's name (default: the modulator and its options)."""
    if summary.empty:
        return pd.DataFrame(columns=["model", "variant", *METRIC_LABELS.values(), "split", "runs", "run records"])
    rows = []
    for _, r in summary.iterrows():
        name = next((labels[str(d)] for d in r["runs"] if labels and str(d) in labels), None) or _label(r)
        rows.append(
            {
                "model": r["model"],
                "variant": name,
                **{lab: _pm(r[f"{m}_mean"], r[f"{m}_std"]) for m, lab in METRIC_LABELS.items()},
                "split": r["split"],
                "runs": int(r["n_runs"]),
                "run records": "; ".join(short_path(Path(d) / "run.json") for d in r["runs"]),
            }
        )
    return pd.DataFrame(rows)


def _pct(x: float | None) -> float:
    """A fraction in %, NaN where undefined (e.g. recall of a class absent from the split)."""
    return float("nan") if x is None else round(100 * float(x), 2)


def run_metrics(run: Mapping[str, Any]) -> dict[str, Any]:
    """The test metrics of a run record (its validation metrics when the data set has no test split)."""
    return dict(run.get("test_metrics") or run["val_metrics"])


def metrics_split(run: Mapping[str, Any]) -> str:
    """Which split ``run_metrics`` reads: "test", or "validation" for a run without test metrics."""
    return "test" if run.get("test_metrics") else "validation"


def per_class_compare(runs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Test recall per class (%) of several runs side by side; ``runs``: label -> run record."""
    cols = {}
    for label, run in runs.items():
        m = run_metrics(run)
        cols[label] = {c: _pct(m["per_class_recall"].get(c)) for c in m["classes"]}
    df = pd.DataFrame(cols)
    df.index.name = "recall (%)"
    return df


def per_class_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Recall per class of one evaluation (``test_metrics`` of a run record), in %."""
    recall = metrics["per_class_recall"]
    cm = np.asarray(metrics["confusion_matrix"])
    return pd.DataFrame(
        {"recall (%)": [_pct(recall.get(c)) for c in metrics["classes"]], "test images": cm.sum(axis=1)},
        index=pd.Index(metrics["classes"], name="class"),
    )


def plot_confusion(
    cm: Sequence[Sequence[int]], classes: Sequence[str], normalize: bool = True, title: str = ""
) -> Figure:
    """Seaborn heat map of a confusion matrix (rows: true class, columns: predicted); row-normalised by default."""
    import seaborn as sns

    cm = np.asarray(cm, dtype=float)
    data = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(0.75 * len(classes) + 2, 0.65 * len(classes) + 1.4))
    sns.heatmap(
        data, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", vmin=0, vmax=1 if normalize else None,
        xticklabels=classes, yticklabels=classes, cbar=False, ax=ax, annot_kws={"size": 8},
    )  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"), fontsize=10)
    return _done(fig)


def plot_curves(frames: pd.DataFrame | Mapping[str, pd.DataFrame]) -> Figure:
    """Per-epoch training loss, validation loss and validation accuracy; one line per run.

    ``frames`` is ``dsm.runs.epochs_frame(run)`` or a mapping label -> such a frame.
    """
    if isinstance(frames, pd.DataFrame):
        frames = {"run": frames}
    panels = [("train_loss", "training loss"), ("val_loss", "validation loss"), ("val_acc", "validation accuracy")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3))
    for label, df in frames.items():
        for ax, (col, _) in zip(axes, panels, strict=True):
            if col in df:
                ax.plot(df["epoch"], df[col], marker="o", ms=3, label=label)
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    # beside the panels, not on them: long runs fill the corners, and labels of unfinished runs are long
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return _done(fig)


def _with_n(table: pd.DataFrame, names: pd.Series) -> list[str]:
    """Bar labels that say over how many runs each bar is a mean, when the rows differ in that: a mean of
    three seeds and a single run must not read alike."""
    if "runs" not in table or table["runs"].nunique() < 2:
        return list(names)
    return [f"{name} (n={n})" for name, n in zip(names, table["runs"], strict=True)]


def plot_metric_bars(table: pd.DataFrame, metric: str = "Accuracy", title: str = "") -> Figure | None:
    """Horizontal bars of one "mean ± std" column of ``results_table`` (error bar = std), labelled with
    the number of runs where rows differ in it; None when the table is empty (no run finished yet)."""
    if table.empty:
        return None
    parts = table[metric].str.split(" ± ", expand=True, regex=False)
    mean = parts[0].astype(float)
    std = parts[1].astype(float) if parts.shape[1] > 1 else pd.Series(0.0, index=table.index)
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(table) + 1.0))
    ax.barh(_with_n(table, table["variant"]), mean, xerr=std.fillna(0.0), color="tab:blue", alpha=0.8)
    ax.invert_yaxis()
    lo = max(0.0, float(mean.min()) - 10)
    ax.set_xlim(lo, min(100.0, float((mean + std.fillna(0)).max()) + 3))
    ax.set_xlabel(f"{metric} (%)")
    ax.set_title(title, fontsize=10)
    return _done(fig)


def plot_ablation_groups(table: pd.DataFrame, metric: str = "Accuracy") -> Figure | None:
    """One small bar chart per ablation group of ``Experiment.ablation_table`` (error bars = std; the
    number of runs in the labels where a group's rows differ in it); None when no group has a finished run."""
    if table.empty:
        return None
    groups = list(dict.fromkeys(table["group"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 0.5, 3), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        part = table[table["group"] == group]
        vals = part[metric].str.split(" ± ", expand=True, regex=False)
        mean = vals[0].astype(float).to_numpy()
        std = vals[1].astype(float).fillna(0.0).to_numpy() if vals.shape[1] > 1 else np.zeros(len(part))
        ax.bar(range(len(part)), mean, yerr=std, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(part)))
        labels = _with_n(part, part["variant"].str.replace("dsm-", "", regex=False))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(max(0.0, float(mean.min()) - 10), min(100.0, float((mean + std).max()) + 3))
        ax.set_title(group, fontsize=10)
    axes[0, 0].set_ylabel(f"{metric} (%)")
    return _done(fig)


# --- efficiency ------------------------------------------------------------------------------------


def bench_table(results: Sequence[Any]) -> pd.DataFrame:
    """``dsm.bench.compare`` results as a table: params (M), MACs (M), latency median / IQR (ms)."""
    rows = []
    for r in results:
        d = r.to_dict() if hasattr(r, "to_dict") else dict(r)
        rows.append(
            {
                "config": d["name"],
                "model": d["model"],
                "modulator": d["modulator"],
                "params (M)": round(d["params"] / 1e6, 4),
                "params deployed (M)": round(d["params_deploy"] / 1e6, 4),
                "MACs (M)": round(d["macs"] / 1e6, 2),
                "latency median (ms)": None if d["latency_ms_median"] is None else round(d["latency_ms_median"], 3),
                "latency IQR (ms)": None if d["latency_ms_iqr"] is None else round(d["latency_ms_iqr"], 3),
                "BN left": d["extra"].get("batchnorm_left"),
            }
        )
    return pd.DataFrame(rows)


def bench_caption(results: Sequence[Any], meta: Mapping[str, Any] | None = None) -> str:
    """Markdown: where, when and how ``dsm.bench.compare`` timed ``results`` (one interleaved run); ``meta``
    of a recorded benchmark (``dsm.bench.load_results``) adds its versions and note."""
    from dsm.bench import describe_conditions

    ds = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in results]
    d, skipped = ds[0], sorted({op for r in ds for op in r["extra"].get("ops_not_counted", {})})
    ops = ", ".join(op.removeprefix("aten::") for op in skipped)
    meta = meta or {}
    versions = ", ".join(f"{k} {meta[k]}" for k in ("torch", "cuda") if meta.get(k))
    device = d["device"] + (f" ({versions})" if versions else "")
    return (
        f"Measured on {device}; median and inter-quartile range of {d['latency_runs']} timed runs per "
        f"configuration, batch 1. {describe_conditions(d['extra'].get('conditions'))} "
        + (f"Ops not counted as MACs (element-wise ops and pooling, by the convention): {ops}. " if ops else "")
        + "BN left: BatchNorm layers the deployed model still runs after re-parameterisation and Conv-BN folding."
        + (f" {meta['note']}" if meta.get("note") else "")
    )


def accuracy_latency_table(points: pd.DataFrame) -> pd.DataFrame:
    """``Experiment.accuracy_latency`` for reading: accuracies in % as "mean ± std" (a bare mean for a single
    run), latency in ms, MACs and deployed parameters in millions."""
    cols = ["row", "modulator", "latency (ms)", "MACs (M)", "params deployed (M)", "Accuracy", "Balanced acc."]
    if points.empty:
        return pd.DataFrame(columns=[*cols, "runs", "run records"])
    return pd.DataFrame(
        {
            "row": points["label"],
            "modulator": points["modulator"],
            "latency (ms)": points["latency_ms"].round(3),
            "MACs (M)": (points["macs"] / 1e6).round(2),
            "params deployed (M)": (points["params"] / 1e6).round(4),
            "Accuracy": [_pm(m, s) for m, s in zip(points["accuracy"], points["accuracy_std"], strict=True)],
            "Balanced acc.": [
                _pm(m, s) for m, s in zip(points["balanced_accuracy"], points["balanced_accuracy_std"], strict=True)
            ],
            "runs": points["n_runs"],
            "run records": points["run records"],
        }
    )


def _cluster(x: np.ndarray, y: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Points within ``k`` median absolute deviations of the median on both axes (the dense middle)."""

    def near(v: np.ndarray) -> np.ndarray:  # a NaN (a row without a latency) is never in the middle
        if np.isnan(v).all():
            return np.zeros(len(v), bool)
        med = np.nanmedian(v)
        mad = max(float(np.nanmedian(np.abs(v - med))), 0.01 * abs(float(med)), 1e-9)
        return np.abs(v - med) <= k * mad

    return near(x) & near(y)


def _scatter_points(ax: Axes, points: pd.DataFrame, sizes: pd.Series, labels: pd.Series) -> None:
    """Error bars, markers (DSM in red) and labels moved apart with leader lines."""
    from adjustText import adjust_text

    acc, err = 100 * points["accuracy"], 100 * points["accuracy_std"].fillna(0.0)
    is_dsm = points["modulator"] == "dsm"
    ax.errorbar(points["latency_ms"], acc, yerr=err, fmt="none", ecolor="0.6", elinewidth=1, capsize=3, zorder=1)
    ax.scatter(points["latency_ms"][~is_dsm], acc[~is_dsm], s=sizes[~is_dsm], alpha=0.7, zorder=2)
    ax.scatter(points["latency_ms"][is_dsm], acc[is_dsm], s=sizes[is_dsm], color="tab:red", zorder=3)
    keep = labels.notna().to_numpy()
    xs, ys = points["latency_ms"].to_numpy()[keep], acc.to_numpy()[keep]
    texts = [ax.text(x, y, lab, fontsize=8) for x, y, lab in zip(xs, ys, labels[keep], strict=True)]
    if texts:
        adjust_text(
            texts, x=points["latency_ms"].to_numpy(), y=acc.to_numpy(), ax=ax, expand=(1.3, 1.8),
            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6},
        )  # fmt: skip


def plot_accuracy_latency(points: pd.DataFrame, title: str = "") -> Figure:
    """Accuracy (mean ± std over runs) against batch-1 latency; ``points`` from
    ``dsm.study.Experiment.accuracy_latency`` (columns label, modulator, latency_ms, accuracy, accuracy_std,
    macs). Most rows of a study sit within a few tenths of a ms and a point of each other: when some lie
    far outside that dense middle, the left panel shows every row and labels the far ones, and the right
    panel zooms on the middle (the dashed box) and labels its rows there."""
    if points.empty:  # no finished runs yet: labelled, empty axes
        fig, ax = plt.subplots(figsize=(8, 5.5))
    else:
        span = float(points["macs"].max() - points["macs"].min())
        sizes = 40 + 260 * (points["macs"] - points["macs"].min()) / (span if span > 0 else 1.0)
        middle = _cluster(points["latency_ms"].to_numpy(), 100 * points["accuracy"].to_numpy())
        if middle.all() or middle.sum() < 2:
            fig, ax = plt.subplots(figsize=(8, 5.5))
            _scatter_points(ax, points, sizes, points["label"])
        else:
            fig, (ax, ax_mid) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.35]})
            _scatter_points(ax, points, sizes, points["label"].where(~middle))
            _scatter_points(ax_mid, points[middle], sizes[middle], points["label"][middle])
            (x0, x1), (y0, y1) = ax_mid.get_xlim(), ax_mid.get_ylim()
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=0.8, ec="0.4"))
            ax_mid.set_title(f"the dashed box: {int(middle.sum())} rows", fontsize=10)
    for a in fig.axes:
        a.set_xlabel("CPU latency, batch 1, median (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "accuracy vs latency (marker area grows with MACs)", fontsize=10)
    return _done(fig)


# --- using the model -------------------------------------------------------------------------------


def show_image(image: np.ndarray, title: str = "", width: float = 6.0) -> Figure:
    """An OpenCV image (BGR, BGRA or gray ``uint8``) as a figure in its true colours, without axes."""
    rgb, cmap = (image, "gray") if image.ndim == 2 else (image[..., 2::-1], None)  # BGR(A) -> RGB
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(width, width * h / w))
    ax.imshow(rgb, cmap=cmap, vmin=0, vmax=255)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _done(fig)


def _metric(info: Mapping[str, Any], split: str, name: str) -> float | None:
    value = (info.get(f"{split}_metrics") or {}).get(name)
    return None if value is None else float(value)


def _pct_text(x: float | None) -> str:
    return "not recorded" if x is None else f"{100 * x:.2f} %"


def started_from(path: str | os.PathLike, info: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """What a run that began from another checkpoint's weights (``TrainConfig.init_from``) started from: the
    ``init`` of the checkpoint's JSON or, where that lacks it, of the run record beside it (a released
    ``NAME.run.json``, or a run directory's ``run.json``). None for a run from a random init."""
    if info.get("init"):
        return info["init"]
    if not (info.get("config") or {}).get("init_from"):
        return None
    from dsm.release import release_paths
    from dsm.runs import read_record

    st_path, _, released = release_paths(path)
    for record in (released, st_path.parent / "run.json"):
        if record.is_file():
            try:
                return read_record(record).get("init")
            except ValueError:  # not a run record: the card goes without the line
                return None
    return None


def checkpoint_card(path: str | os.PathLike, info: Mapping[str, Any]) -> str:
    """Markdown: which checkpoint a prediction uses, what it is, how it was trained and its recorded accuracy.

    ``info`` is the checkpoint's JSON (``Predictor.info``, or ``load_checkpoint(path)[1]``); metrics the
    checkpoint does not record (one not written by ``dsm train``) read "not recorded".
    """
    spec = info.get("model") or {}
    kwargs = spec.get("kwargs") or {}
    inp = info.get("input") or {}
    chans = int(inp.get("channels", 0))
    cfg = info.get("config") or {}
    trained = ", ".join(
        f"{label} {cfg[key]}"
        for key, label in (("recipe", "recipe"), ("epochs", "epochs"), ("batch_size", "batch"), ("lr", "lr"))
        if cfg.get(key) is not None
    )
    if info.get("epoch") is not None:
        best = f"the weights after epoch {int(info['epoch'])}, the best on validation accuracy"
        trained = f"{trained}; {best}" if trained else best
    test, val = (_pct_text(_metric(info, s, "accuracy")) for s in ("test", "val"))
    balanced, f1 = (_pct_text(_metric(info, "test", m)) for m in ("balanced_accuracy", "macro_f1"))
    lines = [
        f"**Checkpoint** `{short_path(path)}` (`.safetensors` weights + `.json` record, id `{info.get('id', '?')}`)",
        "",
        f"- model: `{spec.get('name', '?')}` with modulator `{kwargs.get('modulator') or 'none'}`, "
        "fused (re-parameterised) for inference",
        f"- input: {chans}×{inp.get('size', '?')}×{inp.get('size', '?')} "
        f"({'gray' if chans == 1 else 'RGB' if chans == 3 else f'{chans} channels'}); "
        f"classes: {', '.join(info.get('classes') or [])}",
        f"- trained on: `{info.get('dataset') or 'not recorded'}`" + (f" ({trained})" if trained else ""),
        f"- **test accuracy: {test}** (balanced accuracy {balanced}, macro-F1 {f1}); validation accuracy {val}",
    ]
    if init := started_from(path, info):
        source = short_path(init["run"]) if init.get("run") else init.get("path", "?")
        after = f" after epoch {init['epoch']}" if init.get("epoch") is not None else ""
        sha = f" (sha256 {str(init['sha256'])[:12]}…)" if init.get("sha256") else ""
        lines.insert(-1, f"- started from: the weights of `{source}`{after}{sha}, not from a random init")
    return "\n".join(lines)


def checkpoint_metrics(info: Mapping[str, Any]) -> pd.DataFrame:
    """Validation and test metrics (%) recorded in a checkpoint's JSON, one row per split it has."""
    rows = {
        name: {label: _pct(m.get(key)) for key, label in METRIC_LABELS.items()} | {"images": m.get("n")}
        for split, name in (("val", "validation"), ("test", "test"))
        if (m := info.get(f"{split}_metrics"))
    }
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[*METRIC_LABELS.values(), "images"])
    df.index.name = "split"
    return df


def checkpoint_config(info: Mapping[str, Any]) -> pd.DataFrame:
    """The training configuration recorded in a checkpoint's JSON, one row per field (lists and dicts as JSON)."""
    cfg = info.get("config") or {}
    values = [json.dumps(v) if isinstance(v, list | dict) else str(v) for v in cfg.values()]
    return pd.DataFrame({"value": values}, index=pd.Index(list(cfg), name="config"))


def _rounded(row: Mapping[str, Any], key: str, digits: int, ok: bool) -> float | None:
    return round(float(row[key]), digits) if ok else None


def runtime_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``dsm.bench.runtime_latency`` rows as a table: latency median / IQR (ms), ms per image, images/s.

    A backend that could not run here keeps its row, with empty timings and the reason.
    """
    out = []
    for r in rows:
        ok = r.get("available", True) and r.get("latency_ms_median") is not None
        out.append(
            {
                "backend": r["backend"],
                "batch": r["batch"],
                "input": r["input"],
                "threads": r["threads"],
                "latency median (ms)": _rounded(r, "latency_ms_median", 3, ok),
                "latency IQR (ms)": _rounded(r, "latency_ms_iqr", 3, ok),
                "ms / image": _rounded(r, "ms_per_image", 3, ok),
                "images / s": _rounded(r, "images_per_s", 1, ok),
                "note": "" if ok else f"not available: {r.get('reason', '')}",
            }
        )
    return pd.DataFrame(out)


def runtime_caption(rows: Sequence[Mapping[str, Any]], warmup: int | None = None) -> str:
    """Markdown: where and how ``dsm.bench.runtime_latency`` measured ``rows``."""
    from dsm.bench import describe_conditions, device_name

    threads = sorted({int(r["threads"]) for r in rows})
    runs = max((int(r.get("runs") or 0) for r in rows), default=0)
    backends = ", ".join(dict.fromkeys(r["backend"] for r in rows))
    batches = ", ".join(str(b) for b in dict.fromkeys(r["batch"] for r in rows))
    device = device_name("cpu", threads[0] if len(threads) == 1 else None)
    after = f" after {warmup} warm-up passes" if warmup is not None else ""
    return (
        f"Measured on **{device}** (PyTorch and onnxruntime alike); backends {backends}; batch {batches}. "
        f"Median and inter-quartile range of {runs} timed forward passes per row{after}, the backends of one "
        f"batch size taking turns run by run. {describe_conditions(rows[0].get('conditions') if rows else None)}"
    ).rstrip()


# --- attention maps --------------------------------------------------------------------------------


def _input(images: np.ndarray, in_chans: int, size: int, device: torch.device | str) -> torch.Tensor:
    return to_model_input(torch.from_numpy(np.ascontiguousarray(images)).to(device), in_chans, size)


def _resize(maps: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """N x h x w -> N x H x W (bilinear), as numpy."""
    out = F.interpolate(maps[:, None].float(), size=hw, mode="bilinear", align_corners=False)
    return out[:, 0].clamp(0, 1).cpu().numpy()


def gate_maps(model: nn.Module, images: np.ndarray, in_chans: int, size: int, index: int = 0) -> np.ndarray:
    """The gate of the ``index``-th DSM in ``model`` for uint8 ``images``: N x H x W in [0, 1] at image size."""
    from dsm.modulators.dsm import DecomposedSpatialModulator

    modules = [m for m in model.modules() if isinstance(m, DecomposedSpatialModulator)]
    if not modules:
        raise ValueError("the model has no DecomposedSpatialModulator (was it trained with modulator='dsm'?)")
    module = modules[index]
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, inp, out: captured.append(m.gate_map(inp[0]).detach()))
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(_input(images, in_chans, size, device))
    finally:
        handle.remove()
        model.train(was_training)
    return _resize(captured[0][:, 0], images.shape[1:3])


def default_cam_layer(model: nn.Module) -> nn.Module:
    """The last feature map before pooling: ``head`` of ``dsm_net``, the last stage timm's ``feature_info``
    names (after its residual and activation, before the pooled head), else the last conv layer."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module) and any(isinstance(m, nn.Conv2d) for m in head.modules()):
        return head
    info = getattr(model, "feature_info", None)
    if info:
        return model.get_submodule(info[-1]["module"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("no convolution layer found for Grad-CAM; pass target_layer")
    return convs[-1]


def gradcam(
    model: nn.Module,
    images: np.ndarray,
    in_chans: int,
    size: int,
    target_layer: nn.Module | None = None,
    labels: Sequence[int] | None = None,
) -> np.ndarray:
    """Grad-CAM of uint8 ``images``: N x H x W in [0, 1] at image size.

    The class explained is ``labels`` when given (the true class), else the predicted one.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = next(model.parameters()).device
    was_training = model.training
    params = list(model.parameters())
    saved = [(p.grad, p.requires_grad) for p in params]  # the caller's model comes back as it was given
    targets = [ClassifierOutputTarget(int(c)) for c in labels] if labels is not None else None
    try:
        model.eval()
        layer = target_layer or default_cam_layer(model)
        for p in params:  # frozen weights would leave nothing to take gradients through
            p.requires_grad_(True)
        with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=_input(images, in_chans, size, device), targets=targets)
    finally:
        for p, (grad, req) in zip(params, saved, strict=True):
            p.grad = grad
            p.requires_grad_(req)
        model.train(was_training)
    return _resize(torch.from_numpy(np.asarray(maps)), images.shape[1:3])


def _stretch(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def plot_attention(
    images: np.ndarray,
    labels: Sequence[int],
    classes: Sequence[str],
    maps: Mapping[str, np.ndarray],
    alpha: float = 0.5,
    cmap: str = "jet",
    normalize: bool = True,
) -> Figure:
    """Rows = images; columns = the face, then each map overlaid on it (``maps``: title -> N x H x W).

    With ``normalize`` every map is stretched to [0, 1] per image (Grad-CAM already is), so the
    colours show where a map is high relative to the rest of that image, not its absolute level.
    """
    n = len(images)
    cols = 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.15 * cols + 0.7, 1.15 * n), squeeze=False)
    for i in range(n):
        img, gray = _gray(images[i])
        axes[i, 0].imshow(img, cmap=gray, vmin=0, vmax=255)
        axes[i, 0].set_ylabel(classes[int(labels[i])], rotation=0, ha="right", va="center", fontsize=9)
        for j, (_, m) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(img, cmap=gray, vmin=0, vmax=255)
            axes[i, j].imshow(_stretch(m[i]) if normalize else m[i], cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    for j, title in enumerate(["face", *maps], start=0):
        axes[0, j].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return _done(fig)


def map_stats(labels: Sequence[int], classes: Sequence[str], maps: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Level of each map per class: mean, and the mean of each image's min and max. The gate's values are
    raw (its sigmoid output); Grad-CAM is min-max scaled per image by pytorch-grad-cam, so its min and max
    are 0 and 1 by construction."""
    labels = np.asarray(labels)
    rows = []
    for title, m in maps.items():
        for c in np.unique(labels):
            sel = m[labels == c]
            rows.append(
                {
                    "map": title,
                    "class": classes[int(c)],
                    "mean": round(float(sel.mean()), 3),
                    "min": round(float(sel.min(axis=(1, 2)).mean()), 3),
                    "max": round(float(sel.max(axis=(1, 2)).mean()), 3),
                }
            )
    return (
        pd.DataFrame(rows)
        .pivot(index="class", columns="map", values=["mean", "min", "max"])
        .reindex([classes[int(c)] for c in np.unique(labels)])
    )


def plot_mean_maps(
    labels: Sequence[int], classes: Sequence[str], maps: Mapping[str, np.ndarray], normalize: bool = True
) -> Figure:
    """Class-averaged maps: rows = map kinds, columns = classes (where the model looks, on average);
    each average stretched to [0, 1] with ``normalize``."""
    labels = np.asarray(labels)
    present = [c for c in range(len(classes)) if (labels == c).any()]
    fig, axes = plt.subplots(len(maps), len(present), figsize=(1.3 * len(present) + 1, 1.4 * len(maps)), squeeze=False)
    for r, (title, m) in enumerate(maps.items()):
        for j, c in enumerate(present):
            ax = axes[r, j]
            mean = m[labels == c].mean(axis=0)
            ax.imshow(_stretch(mean) if normalize else mean, cmap="magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if r == 0:
                ax.set_title(classes[c], fontsize=8)
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    return _done(fig)


# --- the module figure -----------------------------------------------------------------------------


def dsm_diagram() -> Figure:
    """Block diagram of the Decomposed Spatial Modulator, Y = X * sigmoid(h(D(g(X))))."""
    fig, ax = plt.subplots(figsize=(10, 3.1))
    ax.set_xlim(0, 10.4)
    ax.set_ylim(0, 3.1)
    ax.axis("off")

    def box(x: float, y: float, w: float, h: float, text: str, color: str) -> None:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc=color, ec="0.25", lw=1.2))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)

    def arrow(x0: float, y0: float, x1: float, y1: float, style: str = "-|>") -> None:
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle=style, mutation_scale=12, lw=1.2, color="0.2"))

    y, h = 1.0, 0.95
    ax.text(0.35, y + h / 2, "X\nC×H×W", ha="center", va="center", fontsize=10, weight="bold")
    box(0.95, y, 2.0, h, "g: k×k conv, C→C/r\n+BN+ReLU (k=7)\n‖ 1×1 branch, fused", "#cfe2f3")
    box(3.35, y, 1.35, h, "D: spatial\ndropout", "#fde9c9")
    box(5.1, y, 1.7, h, "h: 3×3 conv\nC/r→1", "#d9ead3")
    box(7.2, y, 0.95, h, "σ", "#ead1dc")
    ax.text(9.15, y + h / 2 + 0.02, "⊗", ha="center", va="center", fontsize=22)
    ax.text(10.05, y + h / 2, "Y\nC×H×W", ha="center", va="center", fontsize=10, weight="bold")
    mid = y + h / 2
    arrow(0.7, mid, 0.95, mid)
    arrow(2.95, mid, 3.35, mid)
    arrow(4.7, mid, 5.1, mid)
    arrow(6.8, mid, 7.2, mid)
    arrow(8.15, mid, 8.95, mid)
    arrow(9.35, mid, 9.72, mid)
    ax.text(8.55, mid + 0.18, "gate\n1×H×W", ha="center", va="bottom", fontsize=8)
    # the identity path: X goes around the branch into the product
    ax.plot([0.35, 0.35, 9.15], [mid + 0.45, 2.7, 2.7], color="0.2", lw=1.2)
    arrow(9.15, 2.7, 9.15, mid + 0.3)
    ax.text(4.8, 2.78, "X (full H×W grid, no pooling)", ha="center", va="bottom", fontsize=9)
    ax.text(
        5.2, 0.35, "Y = X ⊙ σ(h(D(g(X))))  —  one light branch; the gate keeps every spatial position",
        ha="center", va="center", fontsize=9, style="italic",
    )  # fmt: skip
    return _done(fig)
