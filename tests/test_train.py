"""The training engine: learning, resume, model selection, run records, evaluation, CLI."""

import json
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dsm.allocator import keep_freed_memory
from dsm.checkpoint import CheckpointError, load_checkpoint, load_model
from dsm.cli import main
from dsm.config import TrainConfig, recipe
from dsm.data.format import PreparedWriter, load_prepared, sha256_file
from dsm.evaluate import evaluate, predict_proba
from dsm.runs import differs, finished_run, load_run, run_or_load, summarize
from dsm.train import Trainer, lr_at, train

CLASSES = ["neutral", "happiness", "sadness", "surprise"]


def _make_prepared(out: Path, classes=CLASSES, n_per=(48, 12, 12), size=16, seed=0, dataset="toy") -> Path:
    """A tiny prepared set whose class sets which horizontal band is bright: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    total = sum(n_per) * len(classes)
    with PreparedWriter(out, total, (size, size), dataset, classes) as w:
        for split, n in zip(("train", "val", "test"), n_per, strict=True):
            for c, name in enumerate(classes):
                for i in range(n):
                    img = rng.integers(0, 60, (size, size)).astype(np.uint8)
                    band = size // len(classes)  # horizontal bands survive horizontal flips
                    img[c * band : (c + 1) * band] += 150
                    w.add(img, name, split, source=f"{split}/{name}/{i}.png", subject=f"s{i % 5}")
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return _make_prepared(tmp_path_factory.mktemp("data") / "toy")


def _free_port() -> int:
    """A port nothing listens on now: two test runs on one host must not share torchrun's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        input_size=16,
        epochs=3,
        batch_size=16,
        lr=3e-3,
        device="cpu",
        random_erasing=0.25,
        early_stop_patience=None,
    )
    return recipe("smoke", **{**base, **kw})


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1.0, min_lr=0.0, warmup_epochs=1.0)
    lrs = [lr_at(cfg, s, total=100, steps_per_epoch=10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[-1] < 0.01


def test_train_learns_and_writes_a_complete_run_record(toy, tmp_path):
    record = train(_cfg(toy, tmp_path / "run", epochs=4), show_progress=False)
    run = load_run(tmp_path / "run")
    assert run["status"] == "finished" and len(run["epochs"]) == 4
    assert run["test_metrics"]["accuracy"] > 0.5  # 4 classes: chance is 0.25
    assert record["test_metrics"] == run["test_metrics"]
    for key in ("config", "git_commit", "versions", "device", "wall_time_s", "started", "finished"):
        assert key in run
    assert run["allocator"] == keep_freed_memory()  # a CPU run says which allocator settings it trained with
    assert all(e["cpu_user_s"] > 0 and e["cpu_system_s"] >= 0 for e in run["epochs"])
    assert run["data"]["manifest_hash"] and run["data"]["split_sizes"] == {"train": 192, "val": 48, "test": 48}
    assert set(run["test_metrics"]) >= {
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "per_class_recall",
        "confusion_matrix",
        "n",
    }
    # best checkpoint = best validation accuracy, never chosen on test
    best_val = max(e["val_acc"] for e in run["epochs"])
    assert run["val_metrics"]["accuracy"] == pytest.approx(best_val)
    assert run["epochs"][run["best_epoch"] - 1]["val_acc"] == best_val


def test_resume_after_kill_matches_uninterrupted_run(toy, tmp_path):
    full = train(_cfg(toy, tmp_path / "full"), show_progress=False)
    # "kill" after epoch 2: run 2 epochs of the same 3-epoch config by stopping the loop early
    cfg = _cfg(toy, tmp_path / "killed")
    from dsm.train import Trainer

    t = Trainer(cfg, show_progress=False)
    t.out.mkdir(parents=True)
    for epoch in range(2):
        t.record.add_epoch({"epoch": epoch + 1, **t.train_epoch(epoch)})
        val = t.validate()
        t.state["epoch"] = epoch + 1
        if val["accuracy"] > t.state["best_val_acc"]:
            t.state["best_val_acc"], t.state["best_epoch"] = val["accuracy"], epoch + 1
            t.save_best()
        t.state["best_val_loss"] = min(t.state["best_val_loss"], val["loss"])
        t.save_last()
    del t
    resumed = train(cfg, resume=True, show_progress=False)
    a, _ = load_checkpoint(tmp_path / "full" / "last")
    b, _ = load_checkpoint(tmp_path / "killed" / "last")
    for k in a:
        if k.startswith(("model.", "optim.")):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert resumed["test_metrics"]["accuracy"] == full["test_metrics"]["accuracy"]
    assert resumed["epochs"][-1]["train_loss"] == pytest.approx(full["epochs"][-1]["train_loss"], abs=1e-6)
    (resume,) = resumed["resumes"]  # who continued the run, from where
    assert resume["epoch"] == 2 and resume["device"].startswith("cpu") and set(resume) >= {"git_commit", "time"}
    assert full["resumes"] == []


def test_resume_on_another_number_of_processes_keeps_the_schedule(toy, tmp_path):
    """``last`` counts steps of the world it trained on; resumed on another, the schedule goes on from the
    epoch reached, not from a step count in the other world's units (which could run past the schedule's end)."""
    cfg = _cfg(toy, tmp_path / "r", time_limit=1e-9)  # stop after epoch 1 of 3
    train(cfg, show_progress=False)
    info = json.loads((tmp_path / "r" / "last.json").read_text())
    steps = info["state"]["step"]
    info["state"]["step"] = 2 * steps  # a count in other units, as a run on another number of processes leaves
    (tmp_path / "r" / "last.json").write_text(json.dumps(info))
    t = Trainer(cfg.replace(time_limit=None), resume=True, show_progress=False)
    assert t.load_last() and t.state["step"] == steps == t.steps_per_epoch


def test_a_diverged_run_stops_before_writing_a_checkpoint(toy, tmp_path, monkeypatch):
    monkeypatch.setattr("dsm.train.CHECK_EVERY", 2)  # the running loss is read every 2 steps, and after the last
    cfg = _cfg(toy, tmp_path / "nan", lr=1e30, epochs=2)
    with pytest.raises(FloatingPointError, match=r"nan: training loss is nan at epoch 1, by step \d+; the run stopped"):
        train(cfg, show_progress=False)
    assert load_run(tmp_path / "nan")["status"] == "running" and not (tmp_path / "nan" / "best.json").exists()


def test_a_time_limit_pauses_and_resume_matches_an_uninterrupted_run(toy, tmp_path, capsys):
    """A lease with a deadline: the run stops between epochs, still "running", and --resume finishes it."""
    full = train(_cfg(toy, tmp_path / "full"), show_progress=False)
    cfg = _cfg(toy, tmp_path / "leased", time_limit=1e-9)  # no epoch fits: stop after the first
    paused = train(cfg, show_progress=False)
    assert paused["status"] == "running" and len(paused["epochs"]) == 1 and paused["test_metrics"] is None
    assert "stopped after epoch 1 of 3 (time limit of 1e-09 s)" in capsys.readouterr().out
    resumed = train(cfg.replace(time_limit=None), resume=True, show_progress=False)
    assert resumed["status"] == "finished" and len(resumed["epochs"]) == 3
    assert resumed["test_metrics"]["accuracy"] == full["test_metrics"]["accuracy"]
    assert resumed["epochs"][-1]["train_loss"] == pytest.approx(full["epochs"][-1]["train_loss"], abs=1e-6)


def test_resume_without_checkpoint_says_it_starts_over(toy, tmp_path, capsys):
    """A fresh clone has a stopped run's record but not its (uncommitted) checkpoints: say so, start over."""
    cfg = _cfg(toy, tmp_path / "cloned", time_limit=1e-9)
    train(cfg, show_progress=False)
    for name in ("last.json", "last.safetensors", "best.json", "best.safetensors"):
        (tmp_path / "cloned" / name).unlink()
    capsys.readouterr()
    with pytest.warns(UserWarning, match=f"{re.escape(str(tmp_path / 'cloned' / 'run.json'))}: records 1 epoch but "
                      "there is no last checkpoint"):  # fmt: skip
        again = train(cfg, resume=True, show_progress=False)
    assert "resumed" not in capsys.readouterr().out and again["resumes"] == [] and len(again["epochs"]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with its checkpoint back, a resume is silent about it
        train(cfg, resume=True, show_progress=False)


def test_dsm_train_prints_a_warning_as_one_line(toy, tmp_path, capsys):
    """Python's warnings under ``dsm train``: one ``dsm train: warning:`` line, not two with a source line."""
    argv = ["train", "--data", str(toy), "--out", str(tmp_path / "r"), "--recipe", "smoke", "--epochs", "1",
            "--input-size", "16", "--protocol", "paper-random"]  # fmt: skip
    assert main(argv) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln.lower()]
    assert lines and all(ln.startswith("dsm train: warning: ") for ln in lines), lines


def test_a_deferred_test_is_run_by_the_next_resume(toy, tmp_path):
    """A machine without the test images trains every epoch; the final evaluation waits for one that has them."""
    cfg = _cfg(toy, tmp_path / "run", defer_test=True)
    trained = train(cfg, show_progress=False)
    assert trained["status"] == "running" and len(trained["epochs"]) == 3 and trained["val_metrics"] is None
    assert load_run(tmp_path / "run")["status"] == "running"
    finished = train(cfg.replace(defer_test=False), resume=True, show_progress=False)
    assert finished["status"] == "finished" and len(finished["epochs"]) == 3
    assert finished["test_metrics"]["accuracy"] > 0.5 and finished["resumes"][0]["epoch"] == 3
    again = train(cfg, resume=True, show_progress=False)  # deferring once more must not undo the finish
    assert again["status"] == load_run(tmp_path / "run")["status"] == "finished"
    assert again["test_metrics"] == finished["test_metrics"]


def test_compile_mode_is_checked_and_only_an_execution_setting():
    with pytest.raises(ValueError, match="compile_mode must be one of None, default, reduce-overhead"):
        TrainConfig(compile_mode="fast").check()
    assert TrainConfig(compile=True, compile_mode="reduce-overhead").check().same_run(TrainConfig().to_dict())


def test_bf16_autocast_on_the_cpu_is_another_run():
    # unlike compile or channels_last it changes the rounding of every conv, so a resume may not switch it
    assert not TrainConfig(amp_cpu=True).same_run(TrainConfig().to_dict())
    assert TrainConfig().same_run({k: v for k, v in TrainConfig().to_dict().items() if k != "amp_cpu"})


@pytest.mark.parametrize("emulated", [True, False])
def test_bf16_autocast_on_a_cpu_without_bf16_hardware_warns(toy, tmp_path, monkeypatch, emulated):
    monkeypatch.setattr("dsm.train.cpu_emulates_bf16", lambda: emulated)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(_cfg(toy, tmp_path / "run", amp_cpu=True), show_progress=False)
    slow = [w for w in caught if "bf16 autocast is emulated" in str(w.message)]
    assert len(slow) == emulated


def test_time_limit_must_be_positive():
    with pytest.raises(ValueError, match="time_limit must be a positive number or null, got 0"):
        TrainConfig(time_limit=0).check()


def test_resume_repairs_a_stop_between_last_and_best(toy, tmp_path):
    """A run stopped after writing last.* of a new best epoch but before best.*: resume rewrites best."""
    from dsm.train import Trainer

    cfg = _cfg(toy, tmp_path / "r", epochs=2)
    t = Trainer(cfg, show_progress=False)
    t.out.mkdir(parents=True)
    t.record.add_epoch({"epoch": 1, **t.train_epoch(0)})
    t.state.update(epoch=1, best_val_acc=t.validate()["accuracy"], best_epoch=1)
    t.save_last()  # ... and the process dies here, before save_best()
    del t
    assert not (tmp_path / "r" / "best.json").exists()
    t = Trainer(cfg, show_progress=False)
    assert t.load_last()
    best, info = load_checkpoint(tmp_path / "r" / "best")
    last, _ = load_checkpoint(tmp_path / "r" / "last")
    assert info["epoch"] == 1
    for k, v in best.items():
        torch.testing.assert_close(v, last[k], rtol=0, atol=0, msg=k)
    # a best.* from an earlier epoch is left alone when it is still the best
    t.state.update(epoch=2)
    t.save_last()
    t2 = Trainer(cfg, show_progress=False)
    assert t2.load_last() and load_checkpoint(tmp_path / "r" / "best")[1]["epoch"] == 1


def test_resume_refuses_a_different_config(toy, tmp_path):
    train(_cfg(toy, tmp_path / "r", epochs=1), show_progress=False)
    with pytest.raises(ValueError, match="different config"):
        train(_cfg(toy, tmp_path / "r", epochs=2, lr=1e-2), show_progress=False)


def test_resume_refuses_a_checkpoint_that_is_not_a_training_one(toy, tmp_path):
    """A model checkpoint (best, a released model) copied over last has no optimiser or record to resume."""
    out = tmp_path / "r"
    train(_cfg(toy, out, epochs=1), show_progress=False)
    for suffix in (".safetensors", ".json"):
        (out / f"last{suffix}").write_bytes((out / f"best{suffix}").read_bytes())
    with pytest.raises(ValueError, match=r"r/last\.json: not a training checkpoint \(no '\w+'\); use a new --out"):
        train(_cfg(toy, out, epochs=2), show_progress=False)


def test_resume_accepts_other_execution_settings(toy, tmp_path):
    train(_cfg(toy, tmp_path / "r", epochs=2, threads=2, defer_test=True), show_progress=False)  # test left over
    again = train(_cfg(toy, tmp_path / "r", epochs=2, threads=1, eval_batch_size=64), show_progress=False)
    assert len(again["epochs"]) == 2 and again["config"]["threads"] == 1 and again["status"] == "finished"


def test_resuming_a_finished_run_does_not_evaluate_the_test_split_again(toy, tmp_path, monkeypatch):
    cfg = _cfg(toy, tmp_path / "r", epochs=1)
    train(cfg, show_progress=False)
    before = (tmp_path / "r" / "run.json").read_bytes()
    monkeypatch.setattr(Trainer, "finish", lambda self: pytest.fail("evaluated the finished run again"))
    again = train(cfg.replace(threads=1), resume=True, show_progress=False)
    assert (
        again["test_metrics"] == json.loads(before)["test_metrics"]
        and (tmp_path / "r" / "run.json").read_bytes() == before
    )


def test_run_or_load_reuses_finished_runs(toy, tmp_path):
    cfg = _cfg(toy, tmp_path / "r", epochs=1)
    first = run_or_load(cfg)
    mtime = os.path.getmtime(tmp_path / "r" / "run.json")
    again = run_or_load(cfg)
    assert again["finished"] == first["finished"] and os.path.getmtime(tmp_path / "r" / "run.json") == mtime
    # the same data under another path is the same run; other data is not
    import shutil

    shutil.copytree(toy, tmp_path / "copy")
    assert run_or_load(cfg.replace(data=str(tmp_path / "copy")))["finished"] == first["finished"]
    other = _make_prepared(tmp_path / "other", dataset="other")
    with pytest.raises(ValueError, match="other data"):
        run_or_load(cfg.replace(data=str(other)))


@pytest.fixture(scope="module")
def baseline_epoch(toy, tmp_path_factory):
    """Losses of one epoch of the plain toy config: what every training option must change."""
    run = train(_cfg(toy, tmp_path_factory.mktemp("base") / "r", epochs=1), show_progress=False)
    return run["epochs"][0]["train_loss"], run["epochs"][0]["val_loss"]


OPTIONS = {
    "ema_decay": 0.9,
    "mixup": 0.2,
    "cutmix": 1.0,
    "label_smoothing": 0.1,
    "crop_scale": 0.1,
    "rotation": 10.0,
    "warmup_epochs": 0.5,
    "grad_clip": 1e-3,  # small enough to clip
    "balanced_sampling": True,
    "amp_cpu": True,  # bf16 autocast: other rounding, so other losses
}


def test_each_epoch_records_the_ema_decay_it_reached(toy, tmp_path):
    """ema_decay is a cap: timm's warm-up grows the decay as 1 - (1 + step) ** -2/3 towards it."""
    run = train(_cfg(toy, tmp_path / "r", epochs=2, ema_decay=0.999), show_progress=False)
    steps = run["data"]["split_sizes"]["train"] // run["config"]["batch_size"]  # full batches only
    reached = [e["ema_decay"] for e in run["epochs"]]
    assert reached == pytest.approx([1 - (n * steps - 1) ** (-2 / 3) for n in (1, 2)])
    assert reached[0] < reached[1] < 0.999


@pytest.mark.parametrize(("option", "value"), OPTIONS.items())
def test_each_training_option_changes_training(toy, tmp_path, baseline_epoch, option, value):
    run = train(_cfg(toy, tmp_path / "r", epochs=1, **{option: value}), show_progress=False)
    losses = run["epochs"][0]["train_loss"], run["epochs"][0]["val_loss"]
    assert run["status"] == "finished" and np.isfinite(losses).all()
    assert losses != baseline_epoch  # the option reached the training loop (same seed otherwise)


def test_init_from_starts_the_run_from_a_checkpoints_weights(toy, tmp_path):
    first = train(_cfg(toy, tmp_path / "a", epochs=1), show_progress=False)
    start = tmp_path / "a" / "best"
    params = [n for n, _ in load_model(start)[0].named_parameters()]
    # lr 0: AdamW moves no weight (its decay is scaled by lr too), so the run ends on the weights it started from
    cfg = _cfg(toy, tmp_path / "b", epochs=1, lr=0.0, ema_decay=0.9, init_from=str(start))
    run = train(cfg, show_progress=False)
    began, ended = load_checkpoint(start)[0], load_checkpoint(tmp_path / "b" / "best")[0]
    for n in params:
        torch.testing.assert_close(ended[f"model.{n}"], began[f"model.{n}"])
    assert run["init"]["sha256"] == sha256_file(start.with_suffix(".safetensors"))
    assert run["init"]["id"] == load_checkpoint(start)[1]["id"] and run["init"]["run"] == first["config"]["out"]
    assert first["init"] is None
    assert load_checkpoint(tmp_path / "b" / "best")[1]["init"] == run["init"]  # the checkpoint names it too
    # without it the same config starts from a random init
    scratch = train(cfg.replace(init_from=None, out=str(tmp_path / "c")), show_progress=False)
    name = f"model.{params[0]}"
    assert not torch.equal(load_checkpoint(tmp_path / "c" / "best")[0][name], began[name])
    assert scratch["epochs"][0]["train_loss"] != run["epochs"][0]["train_loss"]
    # another file at the start path is another run: not reloaded as finished, and a resume refuses
    assert finished_run(cfg) is not None
    saved = {f.name: f.read_bytes() for f in start.parent.glob("best.*")}
    for f in (tmp_path / "c").glob("best.*"):
        (start.parent / f.name).write_bytes(f.read_bytes())
    assert finished_run(cfg) is None and differs(cfg, run) == "init"
    with pytest.raises(ValueError, match=r"b/last\.json: started from another checkpoint than .*a/best holds now"):
        train(cfg, show_progress=False)
    for name, data in saved.items():
        (start.parent / name).write_bytes(data)
    assert differs(cfg, run) is None
    # a run that has begun resumes from its own checkpoint: the start file may be gone
    for f in start.parent.glob("best.*"):
        f.unlink()
    assert train(cfg, show_progress=False)["test_metrics"] == run["test_metrics"]


def test_init_from_weights_of_another_network_is_a_one_line_error(toy, tmp_path, capsys):
    train(_cfg(toy, tmp_path / "a", epochs=1), show_progress=False)
    cfg = _cfg(toy, tmp_path / "b", epochs=1, modulator="se", init_from=str(tmp_path / "a" / "best"))
    with pytest.raises(CheckpointError, match=r"a/best\.safetensors: weights do not fit the model this run trains"):
        train(cfg, show_progress=False)
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors: checkpoint file missing"):
        train(cfg.replace(init_from=str(tmp_path / "nothing")), show_progress=False)
    assert not (tmp_path / "b").exists()  # nothing written for a run that could not start
    argv = ["train", "--data", str(toy), "--recipe", "smoke", "--out", str(tmp_path / "b")]
    assert main([*argv, "--init-from", str(tmp_path / "nothing")]) == 2
    assert "nothing.safetensors: checkpoint file missing" in _one_line_error(capsys, "train")
    assert not (tmp_path / "b").exists()


def test_early_stopping_on_validation_loss(toy, tmp_path):
    # with lr 0 only BN statistics move: the validation loss soon stops improving
    run = train(_cfg(toy, tmp_path / "r", epochs=10, lr=0.0, early_stop_patience=2), show_progress=False)
    losses = [e["val_loss"] for e in run["epochs"]]
    assert run["stopped_early"] and len(losses) < 10
    assert len(losses) == int(np.argmin(losses)) + 1 + 2  # stopped exactly `patience` epochs after the best


def test_summarize_groups_seeds(toy, tmp_path):
    dirs = []
    for seed in (0, 1):
        cfg = _cfg(toy, tmp_path / f"s{seed}", epochs=1, seed=seed)
        train(cfg, show_progress=False)
        dirs.append(cfg.out)
    longer = _cfg(toy, tmp_path / "longer", epochs=3, seed=0)  # another schedule is another row, not a repeat
    train(longer, show_progress=False)
    df = summarize([*dirs, longer.out])
    assert len(df) == 2 and list(df["n_runs"]) == [2, 1]
    assert [json.loads(t)["epochs"] for t in df["training"]] == [1, 3]
    accs = [load_run(d)["test_metrics"]["accuracy"] for d in dirs]
    assert df.loc[0, "accuracy_mean"] == pytest.approx(np.mean(accs))
    assert df.loc[0, "accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert df.loc[0, "runs"] == dirs and df.loc[1, "runs"] == [longer.out]


def test_evaluate_reproduces_the_run_record_and_crosses_data_sets(toy, tmp_path):
    cfg = _cfg(toy, tmp_path / "r", epochs=2)
    run = train(cfg, show_progress=False)
    m = evaluate(tmp_path / "r" / "best", toy, split="test")
    assert m["accuracy"] == pytest.approx(run["test_metrics"]["accuracy"])
    assert m["classes_only_in_data"] == [] and m["tta"] == "none"
    # a data set with a class the model lacks (contempt) and lacking one the model has (surprise)
    other = _make_prepared(tmp_path / "other", ["neutral", "happiness", "sadness", "contempt"], dataset="other")
    m2 = evaluate(tmp_path / "r" / "best", other, split="test")
    assert m2["classes_only_in_data"] == ["contempt"] and m2["classes_only_in_model"] == ["surprise"]
    assert m2["unscorable"] == {"contempt": 12} and m2["n"] == 36
    assert m2["accuracy_all"] == pytest.approx(m2["accuracy"] * 36 / 48)  # the 12 contempt images count as errors
    crops = evaluate(tmp_path / "r" / "best", toy, split="test", tta="tencrop")
    assert crops["tta"] == "tencrop" and crops["n"] == m["n"]
    model, _ = load_model(tmp_path / "r" / "best")
    x = torch.from_numpy(np.array(load_prepared(toy).images[:8]))  # a writable copy of the memory map
    single, ten = predict_proba(model, x, 1, 16), predict_proba(model, x, 1, 16, "tencrop")
    assert not torch.allclose(single, ten) and torch.allclose(ten.sum(1), torch.ones(8))  # the views are used


def test_evaluate_rebuilds_a_protocol_split_with_the_checkpoints_own_settings(toy, tmp_path):
    """A paper-random run 3, seed 2 model is scored on its own test split, not on run 1, seed 0's."""
    from dsm.data.protocols import make_splits

    cfg = _cfg(toy, tmp_path / "r", epochs=1, protocol="paper-random", run_index=3, seed=2)
    run = train(cfg, show_progress=False)
    own = make_splits(toy, "paper-random", run_index=3, seed=2)
    assert set(make_splits(toy, "paper-random").test) & set(own.train)  # the default split would leak
    m = evaluate(tmp_path / "r" / "best", toy, split="test", protocol="paper-random")
    assert m["split_options"] == {"run_index": 3, "fold": None, "val_fraction": 0.1, "seed": 2}
    assert m["n"] == len(own.test) and m["accuracy"] == pytest.approx(run["test_metrics"]["accuracy"])
    assert m["confusion_matrix"] == run["test_metrics"]["confusion_matrix"]
    assert m["overlap_with_training"] == 0
    default = evaluate(tmp_path / "r" / "best", toy, split="test")  # its own protocol by default, not meta.csv's
    assert default["protocol"] == "paper-random" and default["n"] == m["n"] and default["accuracy"] == m["accuracy"]
    with pytest.warns(UserWarning, match=r"\d+ of the \d+ test images were in its training split"):
        other = evaluate(tmp_path / "r" / "best", toy, split="test", protocol="paper-random", run_index=1)
    assert other["split_options"]["run_index"] == 1 and other["split_options"]["seed"] == 2
    assert other["overlap_with_training"] == len(set(make_splits(toy, "paper-random").test) & set(own.train)) > 0
    # a setting no split here depends on is an error, not reported as applied
    with pytest.raises(ValueError, match=r"--fold 2: only protocol 'kfold' has one; this evaluation uses protocol "):
        evaluate(tmp_path / "r" / "best", toy, split="test", fold=2)
    with pytest.raises(ValueError, match=r"--run-index 2: only protocol 'paper-random' has one"):
        evaluate(tmp_path / "r" / "best", toy, split="test", protocol="official", run_index=2)


def test_cli_train_evaluate_summarize(toy, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "train",
        "--data",
        str(toy),
        "--recipe",
        "smoke",
        "--epochs",
        "1",
        "--input-size",
        "16",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--set",
        "early_stop_patience=null",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["out"] == str(out)
    saved = load_run(out)["config"]
    assert saved["epochs"] == 1 and saved["recipe"] == "smoke" and saved["early_stop_patience"] is None
    assert main(argv) == 2
    assert "already holds a run" in _one_line_error(capsys, "train")
    assert main(["evaluate", "--checkpoint", str(out / "best"), "--data", str(toy), "--device", "auto"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert main(["runs", "summarize", str(tmp_path)]) == 0
    assert "dsm_net" in capsys.readouterr().out


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"dsm {command}: error: ") and err.count("\n") == 1, err
    return err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert re.search(r"missing \(is .* a prepared data set", _one_line_error(capsys, "train"))
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none"), "--data", str(tmp_path)]) == 2
    assert "checkpoint file missing" in _one_line_error(capsys, "evaluate")


def test_profile_reports_throughput(toy, tmp_path):
    from dsm.throughput import profile

    p = profile(_cfg(toy, tmp_path / "p"), steps=3, warmup=1)
    assert p["full_step_images_per_s"] > 0 and p["model_only_images_per_s"] > 0 and 0 < p["ratio"] < 10
    assert p["allocator"] == keep_freed_memory()


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(toy, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "dsm.train",
        "--data",
        str(toy),
        "--recipe",
        "smoke",
        "--epochs",
        "2",
        "--input-size",
        "16",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a time limit stops both ranks after the same epoch (or one would wait for the other forever)
    proc = subprocess.run([*cmd, "--time-limit", "1e-9"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = load_run(out)
    assert run["status"] == "running" and len(run["epochs"]) == 1
    assert run["world_size"] == 2  # recorded while it trains: a single process may finish it
    cmd[cmd.index("--master_port") + 1] = str(_free_port())
    proc = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = load_run(out)
    assert run["status"] == "finished" and run["world_size"] == 2 and len(run["epochs"]) == 2
    assert run["ddp_param_max_abs_diff"] == 0.0


def test_same_run_ignores_execution_fields_and_fills_new_defaults():
    cfg = TrainConfig(data="d", threads=1)
    saved = cfg.replace(threads=4, device="cuda").to_dict()
    assert cfg.same_run(saved)
    del saved["ema_decay"]  # a field added after the run was saved: its default applies
    assert cfg.same_run(saved)
    assert not cfg.same_run({**saved, "lr": 0.5})


def test_channels_last_defaults_to_cuda_only(toy, tmp_path):
    from dsm.train import Trainer

    def conv_weight(trainer: Trainer) -> torch.Tensor:
        return next(p for p in trainer.model.parameters() if p.ndim == 4 and min(p.shape) > 1)

    default = Trainer(_cfg(toy, tmp_path / "a"), show_progress=False)  # CPU
    forced = Trainer(_cfg(toy, tmp_path / "b", channels_last=True), show_progress=False)
    assert not default.channels_last and forced.channels_last
    assert not conv_weight(default).is_contiguous(memory_format=torch.channels_last)
    assert conv_weight(forced).is_contiguous(memory_format=torch.channels_last)  # the model really was converted


def test_paper_protocol_driver_summarizes_its_runs(toy, tmp_path):
    from dsm.runs import run_paper_protocol

    with pytest.warns(UserWarning, match="subject"):  # the toy set has subjects: random splits leak them
        table = run_paper_protocol(_cfg(toy, tmp_path / "paper", epochs=1), run_indices=(1, 2))
    assert len(table) == 1 and table.loc[0, "n_runs"] == 2 and table.loc[0, "protocol"] == "paper-random"
    runs = [load_run(tmp_path / "paper" / f"run{i}") for i in (1, 2)]
    assert [r["config"]["run_index"] for r in runs] == [1, 2]
    assert runs[0]["data"]["split_sizes"]["test"] == runs[1]["data"]["split_sizes"]["test"] == 58


def test_git_commit_is_the_one_the_process_started_with(monkeypatch):
    """A long --train-only process must not stamp later runs with a HEAD that moved after it loaded its code."""
    from dsm import runs

    monkeypatch.delenv("DSM_GIT_COMMIT", raising=False)  # else git is never asked, and nothing is tested
    runs.git_commit.cache_clear()
    asked = []
    real_run = runs.subprocess.run
    monkeypatch.setattr(runs.subprocess, "run", lambda *a, **k: asked.append(a) or real_run(*a, **k))
    try:
        first = runs.git_commit()
        assert asked  # the first call did ask git

        def moved(*args, **kwargs):
            raise AssertionError("git asked again")

        monkeypatch.setattr(runs.subprocess, "run", moved)
        assert runs.git_commit() == first
    finally:
        runs.git_commit.cache_clear()


def test_a_copy_of_the_tree_names_its_commit_from_the_environment(monkeypatch):
    """The working tree sent to a GPU machine may carry no .git, or a stale one: DSM_GIT_COMMIT wins."""
    from dsm import runs

    runs.git_commit.cache_clear()
    try:
        head = runs.git_commit()
        runs.git_commit.cache_clear()
        monkeypatch.setenv("DSM_GIT_COMMIT", "abc123")
        assert runs.git_commit() == "abc123" != head
        runs.git_commit.cache_clear()
        monkeypatch.delenv("DSM_GIT_COMMIT")
        monkeypatch.setattr(
            runs.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 128, "", "not a git repository")
        )
        assert runs.git_commit() is None
    finally:
        runs.git_commit.cache_clear()


def test_a_changed_code_default_is_not_the_same_run(toy, tmp_path, monkeypatch):
    """Variant names and configs leave out options equal to the code defaults: the record keeps the resolved
    constructor arguments, so a later default change retrains instead of reusing the old network's run."""
    import dsm.modulators.dsm as dsm_module
    from dsm.runs import finished_run

    cfg = _cfg(toy, tmp_path / "r", epochs=1)
    run = train(cfg, show_progress=False)
    assert run["architecture"]["modulator"]["reduction"] == 8 and run["architecture"]["model"]["modulator_after"] == [2]
    assert finished_run(cfg) is not None
    init = dsm_module.DecomposedSpatialModulator.__init__
    defaults = list(init.__defaults__)
    defaults[1] = 4  # reduction: 8 -> 4 in the code, nothing in the config
    monkeypatch.setattr(init, "__defaults__", tuple(defaults))
    assert finished_run(cfg) is None
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    del record["architecture"]  # a record from before the field: still reused
    (tmp_path / "r" / "run.json").write_text(json.dumps(record))
    assert finished_run(cfg) is not None
