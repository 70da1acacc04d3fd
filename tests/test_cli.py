"""Bad input to ``dsm runs``, ``dsm train`` and ``dsm reproduce``: one line naming the file or flag, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsm.cli import main
from dsm.config import TrainConfig
from dsm.runs import METRICS, RunRecord


def finished_run(run_dir: Path, drop: tuple[str, ...] = (), **changes: object) -> Path:
    """A run directory holding a finished run record, with top-level ``changes`` applied and ``drop`` left out."""
    run_dir.mkdir(parents=True)
    record = RunRecord(
        config=TrainConfig().to_dict(),
        data={"dataset": "toy", "manifest_hash": "abc", "classes": ["calm", "glad"]},
        git_commit=None,
        versions={},
        device="cpu",
        started="2024-01-01T00:00:00",
        status="finished",
        best_epoch=1,
        val_metrics={m: 0.5 for m in METRICS},
    ).to_dict()
    record.update(changes)
    (run_dir / "run.json").write_text(json.dumps({k: v for k, v in record.items() if k not in drop}))
    return run_dir


def test_runs_summarizes_a_complete_record(tmp_path, capsys):
    run = finished_run(tmp_path / "run")
    assert main(["runs", "summarize", str(run), "--csv", str(tmp_path / "t.csv")]) == 0
    assert "toy" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "t.csv"]  # no temporary file left behind


def test_runs_summary_keeps_preparations_with_other_classes_apart(tmp_path):
    """One data set name, several preparations (AffectNet with 7 or 8 classes): never one mean over them."""
    from dsm.runs import summarize

    seven = [finished_run(tmp_path / f"a{i}") for i in range(2)]
    data = {"dataset": "toy", "manifest_hash": "d", "classes": ["calm", "glad", "x"]}
    eight = finished_run(tmp_path / "b", data=data)
    bigger = finished_run(tmp_path / "c", data={**data, "classes": ["calm", "glad"], "split_sizes": {"train": 9}})
    df = summarize([*seven, eight, bigger])  # and a preparation of more images: its own row too
    assert sorted(df["n_runs"]) == [1, 1, 2] and set(df["classes"]) == {"calm,glad", "calm,glad,x"}
    assert set(df["split_sizes"]) == {"", "train=9"}


@pytest.mark.parametrize(
    ("changes", "missing"),
    [
        ("{}", "status"),
        ('{"status": "finished"}', "config"),
        ({"drop": ("data",)}, "data"),
        ({"config": {"model": "dsm_net"}}, "config.modulator"),
        ({"val_metrics": {"accuracy": 0.5}}, "val_metrics.balanced_accuracy"),
        ({"drop": ("epochs",)}, "epochs"),
    ],
)
def test_runs_names_the_missing_key(tmp_path, capsys, changes, missing):
    """``changes``: to a finished record (see ``finished_run``), or the whole text of run.json."""
    run = finished_run(tmp_path / "run", **(changes if isinstance(changes, dict) else {}))
    if isinstance(changes, str):
        (run / "run.json").write_text(changes)
    assert main(["runs", "list", str(run)]) == 2
    assert capsys.readouterr().err == f"dsm runs: error: {run / 'run.json'}: missing {missing}\n"


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"data": {"dataset": "toy", "manifest_hash": "abc", "classes": 7}}, "TypeError"),
        ({"config": {**TrainConfig().to_dict(), "modulator_opts": None}}, "TypeError"),
    ],
)
def test_runs_names_a_record_with_a_key_of_the_wrong_kind(tmp_path, capsys, changes, kind):
    good, run = finished_run(tmp_path / "good"), finished_run(tmp_path / "run", **changes)
    assert main(["runs", "summarize", str(good), str(run)]) == 2
    assert capsys.readouterr().err.startswith(f"dsm runs: error: {run / 'run.json'}: malformed run record ({kind}: ")


def test_runs_unwritable_csv_is_one_line(tmp_path, capsys):
    run = finished_run(tmp_path / "run")
    csv = tmp_path / "no-such-dir" / "t.csv"
    assert main(["runs", "summarize", str(run), "--csv", str(csv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dsm runs: error: --csv {csv}: ") and err.count("\n") == 1 and "no-such-dir" in err
    assert not (tmp_path / "no-such-dir").exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("epochs: 1\nfoo: 2\n", "unknown config keys: ['foo']"),
        ("epochs: [1,\n", "not valid YAML"),
        (None, "No such file or directory"),
        (b"\x89PNG\r\n", "not a UTF-8 text file"),
    ],
)
def test_train_bad_config_file_is_one_line(tmp_path, capsys, text, problem):
    config = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    elif text is not None:
        config.write_text(text)
    assert main(["train", "--config", str(config), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsm train: error: ") and err.count("\n") == 1
    assert str(config) in err and problem in err
    assert not (tmp_path / "o").exists()


def test_reproduce_data_dir_needs_name_equals_dir(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--data-dir", "fer2013"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "dsm reproduce: error: argument --data-dir: expected NAME=DIR, e.g. fer2013=/data/fer2013, got 'fer2013'"
    )
    assert "Traceback" not in err


def test_reproduce_reports_bad_flags_in_one_line(capsys):
    assert main(["reproduce", "--notebooks", "results,nosuchpage", "--no-build"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsm reproduce: error: --notebooks: unknown ['nosuchpage']") and err.count("\n") == 1
    assert main(["reproduce", "--compile"]) == 2
    assert "--threads and --compile apply to --train-only" in capsys.readouterr().err


def test_a_missing_extra_is_named_with_its_install_command(monkeypatch, capsys):
    import builtins
    import sys

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "dsm.export_cli", raising=False)
    monkeypatch.delitem(sys.modules, "dsm.export", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert main(["export", "--onnx", "x.onnx"]) == 2
    assert capsys.readouterr().err == "dsm export: error: needs onnx: pip install -e '.[onnx]' in the dsm checkout\n"


def test_the_commit_ignores_what_reproduce_writes(tmp_path, monkeypatch):
    """A fresh clone's own `make reproduce` rewrites the committed executed notebooks: not '+dirty'."""
    import subprocess

    import dsm.runs

    repo = tmp_path / "repo"
    (repo / "book" / "results").mkdir(parents=True)
    (repo / "dsm").mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for f in ("book/results/a.ipynb", "book/_toc.yml", "dsm/code.py"):
        (repo / f).write_text("v1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(dsm.runs, "_REPO", repo)
    for f in ("book/results/a.ipynb", "book/_toc.yml"):
        (repo / f).write_text("v2\n")
    dsm.runs.git_commit.cache_clear()
    assert not dsm.runs.git_commit().endswith("+dirty")
    (repo / "dsm" / "code.py").write_text("v2\n")
    dsm.runs.git_commit.cache_clear()
    assert dsm.runs.git_commit().endswith("+dirty")
    dsm.runs.git_commit.cache_clear()


def test_train_refuses_out_of_range_settings_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    for flag, value, message in (("--batch-size", "0", "batch_size must be a positive integer, got 0"),
                                 ("--epochs", "0", "epochs must be a positive integer, got 0"),
                                 ("--lr", "-1", "lr must be a number >= 0, got -1.0"),
                                 ("--lr", "inf", "lr must be a number >= 0, got inf"),
                                 ("--set", "warmup_epochs=.inf", "warmup_epochs must be a number >= 0, got inf"),
                                 ("--set", "seed=abc", "seed must be an integer >= 0, got 'abc'"),
                                 ("--set", "hflip=maybe", "hflip must be true or false, got 'maybe'"),
                                 ("--set", "model_opts=3", "model_opts must be a mapping, got 3")):  # fmt: skip
        assert main(["train", "--data", str(tmp_path), "--out", str(out), flag, value]) == 2
        assert capsys.readouterr().err == f"dsm train: error: {message}\n"
    assert main(["train", "--data", str(tmp_path), "--out", str(out), "--device", "gpu"]) == 2
    assert capsys.readouterr().err.startswith("dsm train: error: --device gpu: ")
    assert not out.exists()


def test_an_unforeseen_error_is_one_line_unless_debugging(tmp_path, capsys, monkeypatch):
    import dsm.runs_cli

    def broken(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.json"))

    monkeypatch.setattr(dsm.runs_cli, "run", broken)
    assert main(["runs", "summarize", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"dsm runs: error: {tmp_path / 'x.json'}: Permission denied\n"
    monkeypatch.setenv("DSM_DEBUG", "1")
    with pytest.raises(PermissionError):
        main(["runs", "summarize", str(tmp_path)])


def test_numeric_flags_are_checked_by_the_parser(capsys):
    for argv in (["evaluate", "--data", "x", "--batch-size", "0"], ["bench", "--input-size", "0"],
                 ["predict", "x.jpg", "--min-face", "2"], ["reproduce", "--threads", "0"]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and "must be" in capsys.readouterr().err
    assert main(["reproduce", "--datasets", "bogus", "--plan"]) == 2
    assert capsys.readouterr().err.startswith("dsm reproduce: error: --datasets: unknown data set 'bogus'")


def test_plan_and_train_only_fail_on_a_data_set_that_is_not_prepared(tmp_path, capsys):
    """The other data sets still run; the exit status and one line on stderr say which one could not."""
    for flag in ("--plan", "--train-only"):
        argv = ["reproduce", "--datasets", "fer2013", "--data-root", str(tmp_path), "--profile", "smoke", flag]
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert f"[fer2013] skipped: {tmp_path}/fer2013/manifest.json not found" in captured.out
        assert captured.err == (
            f"dsm reproduce: error: {tmp_path}/fer2013/manifest.json: not found (prepare the data set: "
            "data_scripts/prepare.py)\n"
        )
    assert not any(tmp_path.iterdir())


def test_version(capsys):
    import dsm

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"dsm {dsm.__version__}\n"


def test_train_throughput_flag_and_its_old_name():
    """``--throughput`` measures images/s; ``--profile``, its old name, still parses so recorded commands run."""
    import argparse

    from dsm import train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    new = parser.parse_args(["--throughput", "--throughput-steps", "3"])
    old = parser.parse_args(["--profile", "--profile-steps", "3"])
    assert (new.throughput, new.throughput_steps) == (old.throughput, old.throughput_steps) == (True, 3)
    plain = parser.parse_args([])
    assert (plain.throughput, plain.throughput_steps) == (False, 20)
    assert "--profile" not in parser.format_help() and "--throughput" in parser.format_help()


def test_train_config_file_changes_the_named_recipe_only_where_it_says(tmp_path):
    """recipe, then the YAML file's fields, then flags: ``--recipe cpu --config f.yaml`` keeps every cpu value
    the file does not set (it used to fall back to the authors' recipe for all of them)."""
    import argparse

    from dsm import train_cli
    from dsm.config import recipe

    config = tmp_path / "c.yaml"
    config.write_text("data: data/x\nepochs: 5\n")
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    cfg = train_cli.config_from_args(parser.parse_args(["--recipe", "cpu", "--config", str(config), "--lr", "0.01"]))
    assert cfg == recipe("cpu", data="data/x", epochs=5, lr=0.01, out=cfg.out)
    config.write_text("recipe: cpu\nepochs: 5\n")  # the file names the recipe; --recipe overrides it
    named = train_cli.config_from_args(parser.parse_args(["--config", str(config), "--data", "d"]))
    assert named == recipe("cpu", data="d", epochs=5, out=named.out)
    other = train_cli.config_from_args(parser.parse_args(["--recipe", "smoke", "--config", str(config), "--data", "d"]))
    assert other == recipe("smoke", data="d", epochs=5, out=other.out)
