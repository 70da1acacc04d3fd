"""dsm.viz (plots, gate maps, Grad-CAM) and the experiment description of dsm.study."""

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

import dsm
from dsm import viz
from dsm.data.format import PreparedWriter, load_prepared
from dsm.reproduce import write_toc
from dsm.runs import git_commit
from dsm.study import PROFILES, Experiment, Variant, design_variants

CLASSES = ["neutral", "happiness", "sadness"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    rng = np.random.default_rng(0)
    n = 36
    with PreparedWriter(out, n, (48, 48), "tiny", CLASSES) as w:
        for i in range(n):
            split = ("train", "val", "test")[i % 3]
            w.add(rng.integers(0, 256, (48, 48), dtype=np.uint8), CLASSES[(i // 3) % 3], split, source=f"img{i}")
    return load_prepared(out)


@pytest.fixture(scope="module")
def dsm_model():
    torch.manual_seed(0)
    return dsm.create_model("dsm_net", num_classes=3, in_chans=1, modulator="dsm").eval()


def test_counts_and_sample_grid(prepared):
    table = viz.counts_table(prepared)
    assert table.loc["total", "total"] == 36
    assert list(table.index[:-1]) == CLASSES
    assert isinstance(viz.plot_class_counts(prepared), Figure)
    assert isinstance(viz.sample_grid(prepared, per_class=3), Figure)
    images, labels = viz.pick_images(prepared, "test", per_class=2)
    assert images.shape == (6, 48, 48) and images.dtype == np.uint8
    assert sorted(np.bincount(labels).tolist()) == [2, 2, 2]


def test_pick_images_refuses_empty_indices(prepared):
    """An empty meta.csv split means every image (k-fold sets); empty indices of a run are a mistake."""
    assert len(viz.pick_images(prepared, "nosuchsplit", per_class=1)[0]) == 3
    with pytest.raises(ValueError, match="no image in the given indices"):
        viz.pick_images(prepared, indices=[])


def test_gate_maps_read_the_module(prepared, dsm_model):
    images, _ = viz.pick_images(prepared, "test", per_class=2)
    maps = viz.gate_maps(dsm_model, images, in_chans=1, size=48)
    assert maps.shape == (6, 48, 48)
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    # the same gate, computed by hand from the stage-2 features
    x = viz._input(images, 1, 48, "cpu")
    with torch.no_grad():
        feats = dsm_model.stages[1][:-1](dsm_model.stages[0](dsm_model.stem(x)))
        gate = dsm_model.stages[1][-1].gate_map(feats)
    np.testing.assert_allclose(maps, viz._resize(gate[:, 0], (48, 48)), atol=1e-6)
    assert not dsm_model.training


def test_gate_maps_of_a_training_model_are_its_eval_gates(prepared, dsm_model):
    """Spatial dropout and batch statistics would make a training model's gate vary per call: gate_maps reads
    the eval-mode gate and gives the model back in the mode it came in."""
    images, _ = viz.pick_images(prepared, "test", per_class=2)
    model = copy.deepcopy(dsm_model).train()
    a, b = viz.gate_maps(model, images, 1, 48), viz.gate_maps(model, images, 1, 48)
    assert model.training and model.stages[1][-1].training
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, viz.gate_maps(dsm_model, images, 1, 48), atol=1e-6)
    with torch.no_grad():  # the premise: in train mode the gate does vary
        x = viz._input(images, 1, 48, "cpu")
        feats = model.stages[1][:-1](model.stages[0](model.stem(x)))
        assert not torch.equal(model.stages[1][-1].gate_map(feats), model.stages[1][-1].gate_map(feats))


def test_gate_maps_need_a_dsm():
    model = dsm.create_model("dsm_net", num_classes=3, in_chans=1, modulator="cbam")
    with pytest.raises(ValueError, match="DecomposedSpatialModulator"):
        viz.gate_maps(model, np.zeros((1, 48, 48), np.uint8), 1, 48)


@pytest.mark.parametrize("modulator", ["dsm", "cbam"])
def test_gradcam(prepared, modulator):
    torch.manual_seed(0)
    model = dsm.create_model("dsm_net", num_classes=3, in_chans=1, modulator=modulator).eval()
    images, labels = viz.pick_images(prepared, "test", per_class=1)
    cams = viz.gradcam(model, images, 1, 48, labels=labels)
    assert cams.shape == (3, 48, 48)
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
    assert (cams.reshape(len(cams), -1).max(1) > 0.5).all()  # each map says something (not all zero)
    assert viz.default_cam_layer(model) is model.head
    fig = viz.plot_attention(images, labels, CLASSES, {"Grad-CAM": cams})
    assert isinstance(fig, Figure)
    assert isinstance(viz.plot_mean_maps(labels, CLASSES, {"Grad-CAM": cams}), Figure)
    stats = viz.map_stats(labels, CLASSES, {"Grad-CAM": cams})
    assert list(stats.index) == CLASSES
    first = cams[np.asarray(labels) == 0]
    assert stats.loc[CLASSES[0], ("max", "Grad-CAM")] == pytest.approx(round(float(first.max(axis=(1, 2)).mean()), 3))
    assert stats.loc[CLASSES[0], ("mean", "Grad-CAM")] == pytest.approx(round(float(first.mean()), 3))


def _summary():
    return pd.DataFrame(
        {
            "model": ["dsm_net", "dsm_net"],
            "modulator": ["dsm", "cbam"],
            "options": [json.dumps({"kernel_size": 3}), "{}"],
            "split": ["test", "test"],
            "n_runs": [2, 1],
            "accuracy_mean": [0.5, 0.25],
            "accuracy_std": [0.1, np.nan],
            "balanced_accuracy_mean": [0.4, 0.2],
            "balanced_accuracy_std": [0.0, np.nan],
            "macro_f1_mean": [0.3, 0.1],
            "macro_f1_std": [0.05, np.nan],
            "runs": [["runs/a/seed0", "runs/a/seed1"], ["runs/b/seed0"]],
        }
    )


def test_results_table_formats_mean_std_and_names_run_records():
    table = viz.results_table(_summary())
    assert table.loc[0, "Accuracy"] == "50.00 ± 10.00"
    assert table.loc[1, "Accuracy"] == "25.00"
    assert table.loc[0, "variant"] == "dsm (kernel_size=3)"
    assert table.loc[0, "run records"] == "runs/a/seed0/run.json; runs/a/seed1/run.json"
    assert viz.results_table(_summary(), {"runs/b/seed0": "CBAM"}).loc[1, "variant"] == "CBAM"
    fig = viz.plot_metric_bars(table, "Accuracy")  # a mean of two runs and a single run: labels say so
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["dsm (kernel_size=3) (n=2)", "cbam (n=1)"]
    fig = viz.plot_ablation_groups(table.assign(group=["kernel", "kernel"]))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["dsm (kernel_size=3) (n=2)", "cbam (n=1)"]
    assert isinstance(viz.plot_ablation_groups(table.assign(group=["kernel", "modulators"])), Figure)
    assert viz.results_table(pd.DataFrame()).empty


CM = [[5, 1, 0], [2, 3, 1], [0, 0, 4]]


def _heatmap(fig):
    """(cell values, annotation texts) of a seaborn heat map figure."""
    ax = fig.axes[0]
    [mesh] = [c for c in ax.collections if isinstance(c, QuadMesh)]
    return np.asarray(mesh.get_array()).reshape(len(CLASSES), len(CLASSES)), [t.get_text() for t in ax.texts]


def test_plot_confusion_normalizes_rows_by_default():
    norm, norm_text = _heatmap(viz.plot_confusion(CM, CLASSES))
    raw, raw_text = _heatmap(viz.plot_confusion(CM, CLASSES, normalize=False))
    np.testing.assert_array_equal(raw, CM)
    assert raw_text == [str(v) for row in CM for v in row]
    expected = np.asarray(CM) / np.asarray(CM).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(norm, expected)
    np.testing.assert_allclose(norm.sum(axis=1), 1.0)
    assert norm_text == [f"{v:.2f}" for v in expected.flat]  # "0.83", "0.17", "0.00", ...
    ax = viz.plot_confusion(CM, CLASSES).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    # an empty row (a class absent from the split) stays zero instead of dividing by zero
    empty, _ = _heatmap(viz.plot_confusion([[2, 2, 0], [0, 0, 0], [0, 1, 3]], CLASSES))
    np.testing.assert_allclose(empty, [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.25, 0.75]])


def test_plot_curves_draws_each_run_in_each_panel():
    a = pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.5], "val_loss": [2.1, 1.9], "val_acc": [0.3, 0.4]})
    b = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.8, 1.2, 1.0], "val_loss": [1.7, 1.6, 1.65]})
    fig = viz.plot_curves({"dsm": a, "cbam": b})
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["training loss", "validation loss", "validation accuracy"]
    for ax, col in zip(axes, ["train_loss", "val_loss", "val_acc"], strict=True):
        lines = {line.get_label(): line.get_xydata() for line in ax.lines}
        frames = {label: df for label, df in {"dsm": a, "cbam": b}.items() if col in df}
        assert set(lines) == set(frames)  # b has no val_acc: no line for it there
        for label, df in frames.items():
            np.testing.assert_array_equal(lines[label], df[["epoch", col]].to_numpy(float))
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == ["dsm"]
    # a single frame is one run called "run"
    legend = axes[-1].get_legend()  # beside the last panel, covering no curve
    assert legend is not None and legend.get_window_extent().x0 >= axes[-1].bbox.x1
    [line] = viz.plot_curves(a).axes[0].lines
    assert line.get_label() == "run"
    np.testing.assert_array_equal(line.get_ydata(), a["train_loss"])


def test_plot_accuracy_latency_places_each_point():
    points = pd.DataFrame(
        {"label": ["dsm", "none", "cbam"], "modulator": ["dsm", "none", "cbam"], "latency_ms": [1.0, 0.8, 1.3],
         "accuracy": [0.6, 0.5, 0.55], "accuracy_std": [0.01, np.nan, 0.02], "macs": [1e6, 9e5, 1.2e6]}
    )  # fmt: skip
    ax = viz.plot_accuracy_latency(points).axes[0]
    others, dsm_points = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(np.asarray(others.get_offsets()), [[0.8, 50.0], [1.3, 55.0]])
    np.testing.assert_allclose(np.asarray(dsm_points.get_offsets()), [[1.0, 60.0]])
    assert tuple(dsm_points.get_facecolor()[0][:3]) == pytest.approx(to_rgb("tab:red"))
    # marker area grows with MACs: smallest 40, largest 300
    np.testing.assert_allclose(others.get_sizes(), [40.0, 300.0])
    labels = {t.get_text(): t.get_position() for t in ax.texts}
    assert set(labels) == {"dsm", "none", "cbam"}
    for name, (x, y) in {"dsm": (1.0, 60.0), "none": (0.8, 50.0), "cbam": (1.3, 55.0)}.items():
        assert abs(labels[name][0] - x) < 0.1 and abs(labels[name][1] - y) < 2  # beside its own point
    # an empty frame (no finished runs yet): labelled axes, no points, no labels
    ax = viz.plot_accuracy_latency(points.iloc[:0]).axes[0]
    assert len(ax.collections) == 0 and len(ax.texts) == 0
    assert ax.get_xlabel() == "CPU latency, batch 1, median (ms)"


def test_plot_accuracy_latency_keeps_crowded_labels_apart():
    """Most FER2013 rows lie within 0.5 ms and 2 points of each other: their labels must not overprint."""
    n = 14  # twelve in a cluster, two far away (like ResNet-18 and the longer schedules) that set the axes
    points = pd.DataFrame(
        {"label": [f"dsm-variant-{i}" for i in range(n)], "modulator": ["dsm", "se"] * (n // 2),
         "latency_ms": [*(4.0 + 0.04 * np.arange(n - 2)), 6.1, 4.2],
         "accuracy": [*(0.59 + 0.002 * (np.arange(n - 2) % 4)), 0.56, 0.677], "accuracy_std": np.nan, "macs": 1e8}
    )  # fmt: skip
    fig = viz.plot_accuracy_latency(points)
    overview, middle = fig.axes  # every row, the two far ones labelled; the dense middle zoomed and labelled
    fig.canvas.draw()
    assert sorted(t.get_text() for t in overview.texts) == ["dsm-variant-12", "dsm-variant-13"]
    assert sorted(t.get_text() for t in middle.texts) == sorted(f"dsm-variant-{i}" for i in range(12))
    assert len(overview.collections[-1].get_offsets()) + len(overview.collections[-2].get_offsets()) == n
    for ax in fig.axes:
        boxes = [t.get_window_extent() for t in ax.texts]
        assert not [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]


def test_accuracy_latency_zoom_ignores_a_row_without_latency():
    x = np.array([4.0, 4.1, 4.2, 4.15, 6.0, np.nan])
    y = np.array([59.0, 59.5, 60.0, 59.8, 56.0, 59.7])
    assert viz._cluster(x, y).tolist() == [True, True, True, True, False, False]
    assert not viz._cluster(np.full(3, np.nan), np.ones(3)).any()


def test_dsm_diagram_draws_the_module():
    ax = viz.dsm_diagram().axes[0]
    texts = {t.get_text(): t.get_position() for t in ax.texts}
    stages = ["X\nC×H×W", "g: ", "D: spatial", "h: 3×3 conv", "σ", "⊗", "Y\nC×H×W"]
    found = [next(pos for text, pos in texts.items() if text.startswith(s)) for s in stages]
    xs = [x for x, _ in found]
    assert xs == sorted(xs)  # left to right: X -> g -> D -> h -> sigmoid -> product -> Y
    assert any(text.startswith("Y = X ⊙ σ(h(D(g(X))))") for text in texts)
    assert sum(isinstance(p, FancyBboxPatch) for p in ax.patches) == 4  # g, D, h, sigma
    assert sum(isinstance(p, FancyArrowPatch) for p in ax.patches) == 7


def test_per_class_tables():
    metrics = {"classes": CLASSES, "per_class_recall": dict.fromkeys(CLASSES, 0.5), "confusion_matrix": CM}
    run = {"test_metrics": metrics}
    assert viz.per_class_compare({"dsm": run}).shape == (3, 1)
    assert list(viz.per_class_table(run["test_metrics"])["test images"]) == [6, 6, 4]


def test_bench_table():
    from dsm.bench import BenchConfig, compare

    res = compare([BenchConfig("dsm_net", "dsm", 48, 1, 7)], runs=3, warmup=1)
    table = viz.bench_table(res)
    assert table.loc[0, "modulator"] == "dsm" and table.loc[0, "MACs (M)"] > 0
    assert table.loc[0, "latency median (ms)"] > 0
    caption = viz.bench_caption(res)  # where, when, with which code and how busy: the latency's record
    commit = (git_commit() or "unknown")[:7]
    assert "3 timed runs" in caption and f"with code {commit}" in caption
    timed = r"Timed at \d{4}-\d\d-\d\d \d\d:\d\d UTC with code \S+; other processes used \d+% of the CPU"
    assert re.search(timed, caption)


def test_variants_drop_paper_defaults():
    assert Variant.make(modulator_opts={"kernel_size": 7, "reduction": 8}) == Variant.make()
    assert Variant.make(model_opts={"modulator_after": [2]}) == Variant.make()
    assert Variant.make(modulator_opts={"kernel_size": 3}).name == "dsm-kernel_size=3"
    assert Variant.make(model_opts={"modulator_after": [1]}).name == "dsm-modulator_after=1"
    assert Variant.make(modulator_opts={"rep": False}).train_fields()["modulator_opts"] == {"rep": False}
    assert Variant.make(model_opts={"modulator_after": [3]}).train_fields()["model_opts"] == {"modulator_after": [3]}
    assert Variant.make(model="timm:resnet18", modulator=None).name == "timm-resnet18-none"
    longer = Variant.make(train_opts={"epochs": 30})
    assert longer.name == "dsm-epochs=30" and longer != Variant.make()
    assert longer.train_fields()["epochs"] == 30 and longer.train_fields()["modulator_opts"] == {}
    groups = design_variants({"kernel": (3, 7), "position": ([1], [2])})
    assert groups["kernel"][1] == groups["position"][1] == Variant.make()


def test_experiment_configs(tmp_path, prepared):
    exp = Experiment.create("quick", "synthetic", prepared.root, tmp_path / "runs")
    [cfg] = exp.configs(Variant.make(modulator_opts={"kernel_size": 3}))
    assert cfg.modulator_opts == {"kernel_size": 3} and cfg.epochs == PROFILES["quick"].overrides["epochs"]
    assert cfg.out == str(tmp_path / "runs" / "dsm-kernel_size=3" / "seed0")
    assert cfg.data == str(prepared.root.resolve())
    # results, ablations and gate maps share the DSM and CBAM runs
    names = [v.name for v in exp.all_variants()]
    assert len(names) == len(set(names)) and {"dsm", "cbam", "none"} <= set(names)
    kfold = Experiment.create("quick", "ckplus", prepared.root, tmp_path / "runs")
    assert [c.fold for c in kfold.configs(Variant.make())] == list(PROFILES["quick"].folds)
    assert "synthetic" in exp.describe() and "Profile `quick`" in exp.describe()
    bench = exp.bench_configs()
    assert len({c.name for c in bench}) == len(bench)
    k3 = next(c for c in bench if c.name.startswith("dsm-kernel_size=3@"))
    assert k3.build().stages[1][-1].context.kernel_size == 3


def test_toc_lists_what_exists(tmp_path):
    (tmp_path / "results" / "synthetic").mkdir(parents=True)
    (tmp_path / "results" / "fer2013").mkdir(parents=True)
    for name in ("dataset_overview", "results", "ablations"):
        (tmp_path / "results" / "synthetic" / f"{name}.ipynb").write_text("{}")
    (tmp_path / "results" / "fer2013" / "not_prepared.md").write_text("# x\n")
    toc = write_toc(tmp_path).read_text()
    assert "file: results/synthetic/results" in toc and "file: results/synthetic/ablations" in toc
    assert "results/synthetic/gate_maps" not in toc
    assert "file: results/fer2013/not_prepared" in toc
    assert toc.count("not_prepared") == 1


def test_gradcam_leaves_the_callers_model_as_it_was(prepared):
    model = dsm.create_model("dsm_net", num_classes=3, in_chans=1).train()
    model.fc.weight.requires_grad_(False)  # partly frozen, no gradients yet
    images, labels = viz.pick_images(prepared, "test", per_class=1)
    with torch.no_grad():  # a caller's no_grad does not stop Grad-CAM
        cams = viz.gradcam(model, images, 1, 48, labels=labels)
    assert np.isfinite(cams).all() and model.training and not model.fc.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_cam_layer_of_a_timm_model_is_its_last_stage():
    model = dsm.create_model("timm:resnet18", num_classes=3, in_chans=1)
    assert viz.default_cam_layer(model) is model.layer4  # after the residual and ReLU, before pooling


def test_pick_images_from_given_indices(prepared):
    idx = prepared.split_indices("val")[:5]
    images, labels = viz.pick_images(prepared, per_class=50, indices=idx)
    assert len(images) == 5 and sorted(labels.tolist()) == sorted(np.asarray(prepared.labels)[idx].tolist())


def test_an_empty_results_table_plots_nothing():
    table = viz.results_table(pd.DataFrame())
    assert table.empty and {"variant", "Accuracy", "split"} <= set(table.columns)
    assert viz.plot_metric_bars(table) is None


def test_paired_difference_pairs_by_repeat(tmp_path):
    exp = Experiment.create("cpu", "fer2013", tmp_path / "data", tmp_path / "runs")

    def run(variant: str, seed: int, acc: float, bal: float, test: bool = True) -> dict:
        metrics = {"accuracy": acc, "balanced_accuracy": bal} if test else None
        return {
            "variant": variant,
            "run_dir": str(tmp_path / "runs" / variant / f"seed{seed}"),
            "test_metrics": metrics,
        }

    runs = [
        run("dsm", 0, 0.60, 0.50),
        run("dsm", 1, 0.62, 0.52),
        run("dsm", 2, 0.70, 0.60),  # no baseline for seed 2: left out
        run("none", 0, 0.59, 0.51),
        run("none", 1, 0.58, 0.50),
        run("none", 3, 0.10, 0.10),  # nor DSM for seed 3
        run("se", 0, 0.99, 0.99),
        run("none", 2, 0.0, 0.0, test=False),  # unfinished: no test metrics
    ]
    df = exp.paired_difference(runs, "dsm", "none").set_index("repeat")
    assert list(df.index) == ["seed0", "seed1", "mean ± std over 2"]
    assert df.loc["seed0", "accuracy: dsm"] == "60.00" and df.loc["seed0", "accuracy: difference"] == "+1.00"
    assert df.loc["seed0", "balanced acc.: difference"] == "-1.00"
    assert df.loc["mean ± std over 2", "accuracy: difference"] == "+2.50 ± 2.12"  # (1, 4): sample std
    assert df.loc["mean ± std over 2", "accuracy: none"] == "58.50 ± 0.71"
    assert df.loc["seed1", "run records"] == "dsm/seed1/run.json, none/seed1/run.json"
    assert df.loc["mean ± std over 2", "run records"] == ""
    one = exp.paired_difference(runs[:1] + runs[3:4], "dsm", "none")
    assert list(one["repeat"]) == ["seed0"]  # one pair: no spread to show
    assert exp.paired_difference(runs, "dsm", "cbam").empty
