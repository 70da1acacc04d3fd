"""The notebooks and the book: every notebook runs with papermill (smoke profile, synthetic data), the book
builds from the results with no warnings, and a failing notebook fails the reproduction."""

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from dsm import reproduce, study, viz
from dsm.reproduce import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
PARAMETERS = {"dataset", "data_dir", "profile", "runs_dir", "train"}


def _args(tmp: Path, **changes) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    reproduce.add_arguments(parser)
    args = parser.parse_args([])
    args.profile = "smoke"
    args.data_root = str(tmp / "data")
    args.runs_root = str(tmp / "runs")
    args.book = str(tmp / "book")
    for k, v in changes.items():
        setattr(args, k, v)
    return args


def _build(book: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("jupyter-book")
    return subprocess.run(
        [str(exe), "build", str(book), "-W", "-n", "--keep-going"], capture_output=True, text=True, cwd=book.parent
    )


# executing all notebooks (smoke profile) takes one to three minutes on 2 CPU cores: the tests using it are slow
@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """``dsm reproduce --profile smoke --datasets synthetic,fer2013`` into a copy of the book (FER2013 absent)."""
    tmp = tmp_path_factory.mktemp("reproduce")
    reproduce.copy_book(tmp)
    rc = reproduce.run(_args(tmp, datasets="synthetic,fer2013", no_build=True))
    assert rc == 0
    return tmp


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_has_a_parameters_cell(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assigned = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line}
    assert assigned >= PARAMETERS
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    raw = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    assert all("id" in c for c in raw["cells"]), "every cell needs an id (nbformat 4.5)"


@pytest.mark.slow
def test_every_notebook_ran(reproduced):
    out = reproduced / "book" / "results" / "synthetic"
    for name in NOTEBOOKS:
        nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
        assert nb.cells[0].source.startswith(f"# {reproduce.NOTEBOOK_TITLES[name]}: Synthetic")
        assert nb.metadata["papermill"]["parameters"]["profile"] == "smoke"
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors
        assert any(c.outputs for c in nb.cells if c.cell_type == "code")
    results = (out / "results.ipynb").read_text()
    assert "run.json" in results  # every table row names its run records
    assert "Synthetic data" in results  # labelled as synthetic


@pytest.mark.slow
def test_missing_real_dataset_gets_a_how_to_page(reproduced):
    page = reproduced / "book" / "results" / "fer2013" / "not_prepared.md"
    assert "data_scripts/prepare.py fer2013" in page.read_text()
    toc = (reproduced / "book" / "_toc.yml").read_text()
    assert "results/fer2013/not_prepared" in toc and "results/synthetic/gate_maps" in toc


@pytest.mark.slow
def test_runs_are_reused(reproduced):
    runs = sorted((reproduced / "runs" / "synthetic" / "smoke").glob("*/*/run.json"))
    assert {p.parent.parent.name for p in runs} >= {"dsm", "cbam", "se", "dsm-kernel_size=3"}
    records = [json.loads(p.read_text()) for p in runs]
    assert all(r["status"] == "finished" for r in records)
    before = {p: p.stat().st_mtime_ns for p in runs}
    exp = study.Experiment.create(
        "smoke", "synthetic", reproduced / "data" / "synthetic-140", reproduced / "runs" / "synthetic" / "smoke"
    )
    exp.run(exp.all_variants())
    assert {p: p.stat().st_mtime_ns for p in runs} == before


@pytest.mark.slow
def test_no_train_uses_finished_runs_and_names_the_missing(reproduced, capsys):
    runs_dir = reproduced / "runs" / "synthetic" / "smoke"
    profile = dataclasses.replace(study.PROFILES["smoke"], ablation_modulators=("dsm", "se", "eca"))
    exp = study.Experiment.create(profile, "synthetic", reproduced / "data" / "synthetic-140", runs_dir, train=False)
    runs = exp.run(exp.ablation_variants()["modulators"])
    assert [r["variant"] for r in runs] == ["dsm", "se"]
    assert "not finished yet (1 of 3 runs): eca/seed0" in capsys.readouterr().out
    exp.run(exp.ablation_variants()["modulators"], label="modulators")  # a page calling once per group names it
    assert "not finished yet (modulators: 1 of 3 runs): eca/seed0" in capsys.readouterr().out
    assert not (runs_dir / "eca").exists()


@pytest.mark.slow
def test_plan_says_where_each_run_stands(reproduced, capsys):
    from dsm.data.format import load_prepared

    data, runs_dir = reproduced / "data" / "synthetic-140", reproduced / "runs" / "synthetic" / "smoke"
    mods = ("dsm", "se", "eca", "gam", "simam", "ca")
    profile = dataclasses.replace(study.PROFILES["smoke"], ablation_modulators=mods)
    exp = study.Experiment.create(profile, "synthetic", data, runs_dir, train=False)
    ours = load_prepared(data).hash
    # eca stopped after one epoch; gam's directory holds another config; simam's, other data and a checkpoint;
    # ca's, a network whose code defaults have changed since
    cases = [("eca", {}, ours, None), ("gam", {"lr": 0.5}, ours, None), ("simam", {}, "0123456789abcdef", None)]
    for name, changes, digest, arch in [*cases, ("ca", {}, ours, {"old": 1})]:
        cfg = exp.configs(study.Variant.make(modulator=name))[0]
        Path(cfg.out).mkdir(parents=True)
        record = {"status": "running", "config": {**cfg.to_dict(), **changes}, "epochs": [{"epoch": 1}]}
        record |= {"data": {"manifest_hash": digest}, "architecture": arch}
        (Path(cfg.out) / "run.json").write_text(json.dumps(record))
    (runs_dir / "simam" / "seed0" / "last.json").write_text("{}")
    epochs = exp.configs(study.Variant.make())[0].epochs
    # a record of epochs without its last checkpoint (a fresh clone: checkpoints are not committed) starts over
    stopped = exp.plan().set_index("run").loc["eca/seed0", "state"]
    assert stopped == f"epoch 1 of {epochs} done, no checkpoint: starts over"
    (runs_dir / "eca" / "seed0" / "last.json").write_text("{}")
    plan = exp.plan().set_index("run")
    assert plan.loc["eca/seed0", "state"] == f"epoch 1 of {epochs} done"
    assert plan.loc["gam/seed0", "state"] == "other config: starts over"
    assert plan.loc["simam/seed0", "state"] == "other data: training refuses (move it away)"
    assert plan.loc["ca/seed0", "state"] == "other architecture: starts over"
    assert plan.loc["dsm/seed0", "state"] == "finished" and 0 <= plan.loc["dsm/seed0", "test accuracy %"] <= 100
    assert (plan["state"] == "finished").sum() == len(plan) - 4
    best = runs_dir / "dsm" / "seed0" / "best.json"
    best.rename(best.with_suffix(".away"))  # a fresh clone: the record, not the weights a page may draw
    assert exp.plan().set_index("run").loc["dsm/seed0", "state"] == "finished (record only)"
    capsys.readouterr()
    assert reproduce.run(_args(reproduced, datasets="synthetic", plan=True)) == 0
    assert "runs finished (1 with the record only, no checkpoint), in training order" in capsys.readouterr().out
    best.with_suffix(".away").rename(best)
    modulators = exp.ablation_variants()["modulators"]  # of the three, only eca's record is of this run
    assert list(exp.unfinished_runs(modulators)) == [f"eca/seed0 (unfinished: epoch 1 of {epochs})"]
    assert not (runs_dir / "eca" / "seed0" / "best.json").exists()  # nothing was trained
    for name in ("eca", "gam", "simam", "ca"):
        shutil.rmtree(runs_dir / name)
    no_book = reproduced / "no-book"  # --plan reads run records only: it needs no book and writes nothing
    assert reproduce.run(_args(reproduced, datasets="synthetic", plan=True, book=str(no_book))) == 0
    assert not no_book.exists()
    n = len(study.Experiment.create("smoke", "synthetic", data, runs_dir).plan())
    assert f"{n} of {n} runs finished, in training order" in capsys.readouterr().out


@pytest.mark.slow
def test_train_only_trains_what_the_notebooks_need(reproduced, capsys):
    rc = reproduce.run(_args(reproduced, datasets="synthetic", train_only=True, threads=1))
    out = capsys.readouterr().out
    assert rc == 0 and "dsm reproduce --train-only" in out
    exp = study.Experiment.create(
        "smoke", "synthetic", reproduced / "data" / "synthetic-140", reproduced / "runs" / "synthetic" / "smoke"
    )
    assert {v.name for v in exp.training_order()} == {v.name for v in exp.all_variants() + exp.gate_map_variants()}
    assert out.count(" loaded ") == len(exp.training_order())  # everything was trained by the fixture already


def test_more_seeds_and_training_order(tmp_path):
    exp = study.Experiment.create("cpu", "fer2013", tmp_path / "data", tmp_path / "runs")
    headline, other = study.Variant.make(), study.Variant.make(modulator="none")
    assert [Path(c.out).name for c in exp.configs(headline)] == ["seed0", "seed1", "seed2"]
    assert [Path(c.out).name for c in exp.configs(other)] == ["seed0", "seed1", "seed2"]  # the baseline's spread
    assert [Path(c.out).name for c in exp.configs(study.Variant.make(modulator="gam"))] == ["seed0", "seed1", "seed2"]
    assert [Path(c.out).name for c in exp.configs(study.Variant.make(modulator="se"))] == ["seed0"]
    longer = study.Variant.make(train_opts={"epochs": 30})  # "dsm" names the 8-epoch row only
    assert [Path(c.out).name for c in exp.configs(longer)] == ["seed0"]
    assert "seeds [0], and [1, 2] for `dsm`, and [1, 2] for `none`, and [1, 2] for `gam`" in exp.profile.describe()
    order = [v.name for v in exp.training_order()]
    assert order[:3] == ["dsm", "none", "cbam"]  # the headline rows, then the gate-map model
    assert order.index("lka") < order.index("timm-resnet18-dsm") < order.index("dsm-kernel_size=3")
    assert len(order) == len(set(order)) and {"timm-resnet18-none", "dsm-modulator_after=3"} <= set(order)
    longer = study.Variant.make(train_opts={"epochs": 30})
    assert order.index("timm-resnet18-none") < order.index(longer.name) < order.index("dsm-kernel_size=3")
    assert [(Path(c.out).name, c.epochs) for c in exp.configs(longer)] == [("seed0", 30)]
    assert {c.epochs for c in exp.configs(headline)} == {8}
    assert longer.name in {v.name for v in exp.result_variants()}
    longest = study.Variant.make(train_opts={"epochs": 60})  # schedules shortest first, both before the design
    assert order.index(longer.name) < order.index(longest.name) < order.index("dsm-kernel_size=3")
    assert [(Path(c.out).name, c.epochs) for c in exp.configs(longest)] == [("seed0", 60)]
    leased = study.Variant.make(train_opts={"epochs": 150})  # meant for a lent GPU: last on a CPU
    assert order[-1] == leased.name and "150 meant for a lent GPU" in exp.profile.describe()
    assert sum(len(exp.configs(v)) for v in exp.training_order()) == 28  # as book/reproduce.md says


@pytest.mark.slow
def test_book_builds_without_warnings(reproduced):
    proc = _build(reproduced / "book")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "WARNING" not in log, log[-3000:]
    html = reproduced / "_build" / "html"
    assert (html / "results" / "synthetic" / "gate_maps.html").is_file()
    assert (html / "references.html").is_file()


def test_a_failing_notebook_fails(tmp_path):
    """papermill raises on the first failing cell, so ``dsm reproduce`` (and ``make reproduce``) fails."""
    import papermill as pm

    src = tmp_path / "notebooks"
    src.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / "dataset_overview.ipynb", as_version=4)
    nb.cells = nb.cells[:2] + [nbformat.v4.new_code_cell("import dsm\nraise RuntimeError('boom in a notebook')")]
    nbformat.write(nb, src / "dataset_overview.ipynb")
    params = {"dataset": "synthetic", "data_dir": "nowhere", "profile": "smoke", "runs_dir": str(tmp_path / "runs")}
    (tmp_path / "out.ipynb").write_text("the page of the last good run")
    with pytest.raises(pm.PapermillExecutionError, match="boom in a notebook"):
        reproduce.execute_notebook("dataset_overview", tmp_path / "out.ipynb", params, "Data: x", notebooks_dir=src)
    assert (tmp_path / "out.ipynb").read_text() == "the page of the last good run"  # not half-overwritten
    executed = nbformat.read(tmp_path / "out.failed.ipynb", as_version=4)  # kept to debug, outside the toc
    assert any(o.output_type == "error" for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert sorted(p.name for p in tmp_path.glob("out*")) == ["out.failed.ipynb", "out.ipynb"]


def test_the_committed_book_builds(tmp_path):
    """The book as committed (static pages + book/results) builds with no warnings."""
    shutil.copy2(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("_build"))
    proc = _build(tmp_path / "book")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "WARNING" not in log, log[-3000:]


def test_a_longer_schedule_shares_its_network_latency(tmp_path, monkeypatch):
    from types import SimpleNamespace

    exp = study.Experiment.create("cpu", "fer2013", tmp_path / "data", tmp_path / "runs")
    longer = study.Variant.make(train_opts={"epochs": 30})
    assert longer.network == study.Variant.make() and longer.network.name == "dsm"
    summary = pd.DataFrame(
        {"variant": ["dsm", "none", longer.name], "accuracy_mean": [0.60, 0.59, 0.65],
         "accuracy_std": [0.01, None, None],
         "balanced_accuracy_mean": [0.5, 0.5, 0.55], "balanced_accuracy_std": [0.02, None, None], "n_runs": [3, 1, 1],
         "runs": [[exp.runs_dir / "dsm" / f"seed{i}" for i in range(3)], [exp.runs_dir / "none" / "seed0"],
                  [exp.runs_dir / longer.name / "seed0"]]}
    )  # fmt: skip
    monkeypatch.setattr(exp, "load", lambda variants, report_missing=False: [])
    monkeypatch.setattr(exp, "summary", lambda runs: summary)
    bench = [
        SimpleNamespace(name=f"{n}@1x48", modulator=m, latency_ms_median=t, macs=1e8, params_deploy=1e6)
        for n, m, t in (("dsm", "dsm", 4.2), ("none", "none", 3.8), ("cbam", "cbam", 4.3))
    ]
    points = exp.accuracy_latency(bench).set_index("label")
    assert sorted(points.index) == ["dsm", longer.name, "none"]  # cbam has no finished run here
    assert points.loc[longer.name, "latency_ms"] == points.loc["dsm", "latency_ms"] == 4.2
    assert points.loc[longer.name, "accuracy"] == 0.65 and points.loc["none", "latency_ms"] == 3.8
    assert points.loc["dsm", "run records"] == "dsm/seed0/run.json, dsm/seed1/run.json, dsm/seed2/run.json"
    shown = viz.accuracy_latency_table(points.reset_index()).set_index("row")  # what the page prints
    assert shown.loc["dsm", "Accuracy"] == "60.00 ± 1.00" and shown.loc["dsm", "Balanced acc."] == "50.00 ± 2.00"
    assert shown.loc["none", "Accuracy"] == "59.00" and shown.loc["none", "latency (ms)"] == 3.8  # no "± nan"
    assert shown.loc["none", "MACs (M)"] == 100.0 and shown.loc["none", "params deployed (M)"] == 1.0


def test_targets_report_says_met_or_not_from_the_runs(tmp_path, monkeypatch):
    exp = study.Experiment.create("cpu", "fer2013", tmp_path / "data", tmp_path / "runs")
    monkeypatch.setattr(exp, "input_spec", lambda: (1, 48, 7))
    longer = study.Variant.make(train_opts={"epochs": 30}).name
    runs = [{"variant": v} for v in ("dsm", "none", longer)]

    def summary_of(accs, vals=(0.5, 0.6), n=(3, 1)):
        return lambda rs: pd.DataFrame(
            {"variant": [r["variant"] for r in rs], "accuracy_mean": accs, "val_accuracy_mean": vals, "n_runs": n}
        )

    monkeypatch.setattr(exp, "summary", summary_of([0.60, 0.72]))  # only dsm_net + DSM rows are considered
    report = exp.targets_report(runs)
    assert "floor 70.0 %: met" in report and "goal 73.5 % with at most 1.5 M parameters: **not met**" in report
    assert f"(60.00 %): `{longer}`, test 72.00 % (a single run" in report and "M as trained, within" in report
    monkeypatch.setattr(exp, "summary", summary_of([0.74, 0.60], vals=(0.7, 0.6)))  # chosen on validation, not test
    report = exp.targets_report(runs)
    assert "goal 73.5 % with at most 1.5 M parameters: met" in report
    assert "`dsm`, test 74.00 % (mean of 3 runs)" in report
    monkeypatch.setattr(exp, "summary", summary_of([0.60, 0.74], vals=(0.7, 0.6)))
    assert "floor 70.0 %: **not met**" in exp.targets_report(runs)  # the better test row is not chosen
    assert study.Experiment.create("smoke", "synthetic", tmp_path, tmp_path).targets_report([]).startswith("No ")


def test_confusion_runs_add_the_best_validation_run_of_the_headline_network(tmp_path):
    exp = study.Experiment.create("cpu", "fer2013", tmp_path / "data", tmp_path / "runs")
    longer = study.Variant.make(train_opts={"epochs": 30}).name

    def run(variant, seed, val):
        where = exp.runs_dir / variant / f"seed{seed}"
        metrics = {"val_metrics": {"accuracy": val}, "test_metrics": {"accuracy": 0.5}}
        return {"variant": variant, "run_dir": where, **metrics}

    runs = [run("dsm", 0, 0.58), run("dsm", 1, 0.59), run("none", 0, 0.70), run(longer, 0, 0.65)]
    assert exp.best_headline_run(runs)["variant"] == longer  # "none" is not the headline network, however good
    assert list(exp.confusion_runs(runs)) == [
        "dsm_net + DSM, dsm/seed0/run.json, test split",
        f"dsm_net + DSM, best validation accuracy: {longer}/seed0/run.json, test split",
    ]
    runs[0]["val_metrics"]["accuracy"] = 0.9  # the first repeat is also the best: one matrix, not two
    assert list(exp.confusion_runs(runs)) == ["dsm_net + DSM, dsm/seed0/run.json, test split"]
    assert exp.confusion_runs([run("none", 0, 0.7)]) == {} and exp.best_headline_run([]) is None
    runs[0]["test_metrics"] = None  # a data set without a test split: the matrix is the validation one, and says so
    assert list(exp.confusion_runs(runs)) == ["dsm_net + DSM, dsm/seed0/run.json, validation split"]


def test_runs_note_names_records_and_which_split_the_accuracy_is_from(tmp_path):
    exp = study.Experiment.create("cpu", "fer2013", tmp_path / "data", tmp_path / "runs")
    runs = {
        "DSM": {"run_dir": exp.runs_dir / "dsm" / "seed0", "test_metrics": {"accuracy": 0.6}},
        "CBAM": {"run_dir": exp.runs_dir / "cbam" / "seed0", "test_metrics": None, "val_metrics": {"accuracy": 0.5}},
    }
    assert exp.runs_note(runs) == (
        "Models: DSM: `dsm/seed0/run.json` (test accuracy 60.00 %); "
        "CBAM: `cbam/seed0/run.json` (validation accuracy 50.00 %)."
    )


def test_targets_report_reads_the_speedup_target_from_the_throughput_record(tmp_path, monkeypatch):
    exp = study.Experiment.create("cpu", "fer2013", tmp_path / "data", tmp_path / "runs")
    monkeypatch.setattr(exp, "input_spec", lambda: (1, 48, 7))
    monkeypatch.setattr(exp, "summary", lambda runs: pd.DataFrame())
    record = tmp_path / "throughput.json"

    def write(*speedups):
        names = ["naive", "+ channels_last", "the cpu recipe as trained, glibc's default allocator"]
        names.append("the cpu recipe as trained: + EMA")
        pairs = zip(names, speedups, strict=True)
        rows = [{"variant": n, "images_per_s": 60 * x, "speedup_vs_naive": x} for n, x in pairs]
        meta = {"device": "cpu: test, 2 threads", "git_commit": "abcdef0123", "time": "2026-11-30T00:00:00+0000"}
        record.write_text(json.dumps({**meta, "rows": rows}))
        return exp.targets_report([], throughput=record)

    report = write(1.0, 2.6, 2.2, 2.4)
    assert "as the naive one (60 images/s, cpu: test, 2 threads): met; best 2.60x (+ channels_last)" in report
    assert "as trained 2.40x" in report and "commit abcdef0" in report
    not_met = write(1.0, 1.7, 1.2, 2.4)
    assert "one (60 images/s, cpu: test, 2 threads): **not met**; best 2.40x (the cpu recipe" in not_met
    assert "no throughput record at" in exp.targets_report([], throughput=tmp_path / "missing.json")


def test_no_train_keeps_going_past_a_page_whose_runs_are_missing(tmp_path, monkeypatch, capsys):
    """Early in a study, --no-train renders what it can: a failing page keeps its previous version, the
    other pages still run, and the command says which failed (exit 1)."""
    ran = []

    def fake_execute(name, out, params, title, **_):
        ran.append(name)
        if name == "results":
            raise RuntimeError("KeyError: no run of variant 'dsm'")
        return out

    monkeypatch.setattr(reproduce, "execute_notebook", fake_execute)
    failures: list[str] = []
    profile = study.PROFILES["smoke"]
    book = tmp_path / "book"
    args = (profile, tmp_path / "data", tmp_path / "runs", book, ["results", "ablations"])
    reproduce.reproduce_dataset("synthetic", *args, train=False, failures=failures)
    assert ran == ["results", "ablations"] and failures == ["synthetic/results"]
    out = capsys.readouterr().out
    assert "[synthetic] results FAILED, previous page kept: KeyError: no run of variant 'dsm'" in out
    with pytest.raises(RuntimeError, match="no run of variant"):  # training runs: the first failure stops
        reproduce.reproduce_dataset("synthetic", *args, train=True)


def test_executed_notebooks_keep_no_per_cell_timings():
    """A re-render of the same results should change only what changed, not every cell's clock."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Old"), nbformat.v4.new_code_cell("1")])
    nb.metadata["papermill"] = {"start_time": "t0", "input_path": "/abs/notebooks/x.ipynb"}
    for cell in nb.cells:
        cell.metadata["papermill"] = {"duration": 1.5, "start_time": "t0", "status": "completed"}
        cell.metadata["execution"] = {"iopub.status.busy": "t0"}
    reproduce._clean(nb, "New")
    assert nb.cells[0].source == "# New\n" and nb.metadata["papermill"]["start_time"] == "t0"
    assert all("papermill" not in c.metadata and "execution" not in c.metadata for c in nb.cells)


def test_speedup_report_counts_only_rows_of_the_same_arithmetic(tmp_path):
    def row(variant: str, speedup: float) -> dict:
        return {"variant": variant, "images_per_s": 80 * speedup, "speedup_vs_naive": speedup}

    rec = {"device": "cpu: X, 2 threads", "git_commit": "abcdef0123", "time": "t", "cpu_bf16_flags": ["amx_bf16"]}
    rec["rows"] = [row("naive", 1.0), row("+ channels_last", 1.8), row("the cpu recipe as trained: + EMA", 1.7)]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rec))
    line = study.speedup_report(2.5, path)
    assert "**not met**; best 1.80x (+ channels_last), the `cpu` recipe as trained 1.70x" in line
    assert "not counted" not in line
    rec["rows"].append(row("bf16 autocast: the cpu recipe as trained", 2.6))
    path.write_text(json.dumps(rec))
    line = study.speedup_report(2.5, path)  # faster, but other rounding: still not met
    assert "**not met**; best 1.80x" in line
    assert "not counted, as its rounding differs: 2.60x (bf16 autocast: the cpu recipe as trained" in line
    assert "bf16 flags: amx_bf16" in line
    rec["rows"].append(row("channels_last, batch 64, torch.compile", 2.5))
    path.write_text(json.dumps(rec))
    assert ": met; best 2.50x" in study.speedup_report(2.5, path)
