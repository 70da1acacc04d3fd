"""Run records: what every number in the book points back to.

Each run directory holds ``run.json``: the full config, git commit, data set name and
manifest hash, the split sizes and protocol notes, library versions, device, wall time,
per-epoch metrics and the final validation/test metrics of the best checkpoint.
``summarize`` turns a set of run directories into one pandas table (mean +- std over
seeds, folds or run indices); ``run_folds``/``run_paper_protocol`` are the multi-run
drivers; ``run_or_load`` is how notebooks reuse finished runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import subprocess
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import timm
import torch

from dsm.config import EXECUTION_FIELDS, TrainConfig, recipe

_REPO = Path(__file__).resolve().parents[1]
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


GENERATED = ("book/results", "book/_toc.yml", "book/figures", "runs")  # written by dsm reproduce


@functools.cache
def git_commit() -> str | None:
    """HEAD of the checkout dsm runs from, with ``+dirty`` when it has uncommitted changes.

    What ``dsm reproduce`` itself writes (the executed notebooks, the table of contents, the
    figures, run records) does not count: a fresh clone's own reproduction is not "dirty".
    Asked once per process: a long ``dsm reproduce --train-only`` runs the code it loaded at its start,
    so later runs of that process must name that commit, not one HEAD has moved to since.
    A copy of a checkout (the working tree sent to a GPU machine, a container) names the commit it was
    copied from in ``DSM_GIT_COMMIT``, which wins: such a copy may carry no ``.git``, or a stale one."""
    if copied_from := os.environ.get("DSM_GIT_COMMIT"):
        return copied_from
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in GENERATED)],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class RunRecord:
    config: dict[str, Any]
    data: dict[str, Any]
    git_commit: str | None
    versions: dict[str, str]
    device: str
    started: str
    epochs: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    # the epochs' training-loop time summed: no validation, checkpoint writing or final test, no time between
    # processes, but a pause of the process within an epoch counts
    wall_time_s: float = 0.0
    best_epoch: int | None = None
    stopped_early: bool = False
    val_metrics: dict | None = None
    test_metrics: dict | None = None
    finished: str | None = None
    world_size: int = 1
    ddp_param_max_abs_diff: float | None = None  # across ranks at the end: 0 when DDP kept them in sync
    # each time the run was resumed: from which epoch, with which code, versions and device (git_commit,
    # versions and device above are the first process's)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    # the network's constructor arguments with the code defaults of the time (dsm.registry.resolved_options):
    # a record whose network a later default change altered is not reused (None: a record from before this field)
    architecture: dict[str, Any] | None = None
    # the CPU process's memory allocator settings (dsm.allocator); None on a GPU and in records from before
    allocator: str | None = None
    # the checkpoint whose weights started the run (dsm.checkpoint.init_weights); None: a random init
    init: dict[str, Any] | None = None

    @classmethod
    def start(cls, cfg: TrainConfig, data: Any, splits: Any, device: str, allocator: str | None = None) -> RunRecord:
        from dsm.bench import device_name

        return cls(
            config=cfg.to_dict(),
            data={
                "dataset": data.manifest.get("dataset"),
                "path": str(Path(cfg.data).resolve()),
                "manifest_hash": data.hash,
                "classes": data.classes,
                "split_sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
                "protocol_notes": list(getattr(splits, "notes", [])),
            },
            git_commit=git_commit(),
            versions={**_versions(), "python": platform.python_version()},
            device=device_name(device),
            started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            architecture=architecture(cfg),
            allocator=allocator,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resumed(self, epoch: int, device: str, allocator: str | None = None) -> None:
        """Note a resume at ``epoch``: a run may continue under other code or on another machine."""
        from dsm.bench import device_name

        self.resumes.append(
            {
                "epoch": epoch,
                "git_commit": git_commit(),
                "versions": _versions(),
                "device": device_name(device),
                "allocator": allocator,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )

    def add_epoch(self, row: dict[str, Any]) -> None:
        self.epochs.append(row)
        self.wall_time_s = sum(r.get("time_s", 0.0) for r in self.epochs)

    def finish(self, state: dict[str, Any], val: dict, test: dict | None) -> None:
        self.status, self.best_epoch, self.stopped_early = "finished", state["best_epoch"], state["stopped_early"]
        self.val_metrics, self.test_metrics = val, test
        self.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def write(self, out: str | Path) -> None:
        path = Path(out) / "run.json"
        tmp = path.with_name("run.json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")
        os.replace(tmp, path)


def _versions() -> dict[str, str]:
    """The versions of what computes a run (a run record's and each resume's)."""
    return {"dsm": _version(), "torch": torch.__version__, "timm": timm.__version__}


def _version() -> str:
    from dsm import __version__

    return __version__


RECORD_KEYS = ("status", "config", "data")  # what every run record holds, running or finished


def _check_keys(run: Mapping[str, Any], path: Path, keys: Collection[str]) -> None:
    """Raise ValueError naming ``path`` and the first of ``keys`` (dotted: nested) the run record lacks."""
    for key in keys:
        value: Any = run
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise ValueError(f"{path}: missing {key}")
            value = value[part]


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """The run record in ``run_dir``; ValueError naming the file if it is not one."""
    run = read_record(Path(run_dir) / "run.json")
    run["run_dir"] = str(run_dir)
    return run


def read_record(path: str | Path) -> dict[str, Any]:
    """A run record file (``run.json``, or a released model's ``NAME.run.json``); ValueError naming the file
    if it is not one, FileNotFoundError if it is absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run record")
    try:
        run = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid run record ({e})") from None
    if not isinstance(run, dict):
        raise ValueError(f"{path}: not a run record (a JSON {type(run).__name__}, not an object)")
    _check_keys(run, path, RECORD_KEYS)
    return run


def finished_run(cfg: TrainConfig) -> dict[str, Any] | None:
    """The run record in ``cfg.out`` if it is finished, of this config and of this data; else None."""
    try:
        run = load_run(cfg.out)
    except (FileNotFoundError, ValueError):
        return None
    return run if run.get("status") == "finished" and differs(cfg, run) is None else None


def differs(cfg: TrainConfig, run: Mapping[str, Any], hashes: Collection[str] | None = None) -> str | None:
    """What makes a run record another run than ``cfg`` trains: "config", "architecture" (the network's code
    defaults changed since), "init" (``init_from`` is now another file than the run started from) or "data"
    (not the manifest ``hashes``, by default those of ``cfg.data``, read only when the rest agrees); None when
    it is the same run."""
    if not cfg.same_run(run.get("config", {})):
        return "config"
    if run.get("architecture") not in (None, architecture(cfg)):
        return "architecture"
    if cfg.init_from and not _same_init(cfg.init_from, run.get("init")):
        return "init"
    if hashes is None:
        from dsm.data.format import load_prepared

        hashes = load_prepared(cfg.data).hashes
    return None if trained_on(run, hashes) else "data"


def _same_init(path: str, init: Mapping[str, Any] | None) -> bool:
    """Whether the checkpoint at ``path`` is the one a run started from (its recorded sha256). A start file that
    is gone (checkpoints are not committed) cannot tell, so a finished run stands."""
    from dsm.checkpoint import checkpoint_paths
    from dsm.data.format import sha256_file

    st_path, _ = checkpoint_paths(path)
    if not st_path.is_file():
        return True
    return init is not None and init.get("sha256") == sha256_file(st_path)


def architecture(cfg: TrainConfig) -> dict[str, Any]:
    """What ``cfg`` builds, code defaults included (see ``RunRecord.architecture``)."""
    from dsm.registry import resolved_options

    return resolved_options(cfg.model, cfg.modulator, cfg.model_opts, cfg.modulator_opts)


def run_or_load(cfg: TrainConfig, show_progress: bool = False) -> dict[str, Any]:
    """The finished run of exactly this config if ``cfg.out`` has one; otherwise train (resuming)."""
    run = finished_run(cfg)
    if run is not None:
        return run
    from dsm.train import train

    train(cfg, resume=True, show_progress=show_progress)
    return load_run(cfg.out)


def trained_on(run: Mapping[str, Any], hashes: Collection[str]) -> bool:
    """Whether a run record was trained on the data with these manifest hashes (``Prepared.hashes``, which
    holds the current and the legacy form of one data set's hash)."""
    return (run.get("data") or {}).get("manifest_hash") in hashes


def epochs_frame(run: dict[str, Any]) -> pd.DataFrame:
    """Per-epoch metrics of one run (epoch, train/val loss and accuracy, lr, images/s)."""
    return pd.DataFrame(run["epochs"])


# what a results row already names (model, modulator and their options, recipe, protocol) or repeats over
_NAMED_FIELDS = (
    "model",
    "modulator",
    "modulator_opts",
    "model_opts",
    "recipe",
    "protocol",
    "seed",
    "fold",
    "run_index",
)


def training_changes(config: dict[str, Any]) -> dict[str, Any]:
    """The training settings of a run's config that differ from its named recipe, e.g. ``{"epochs": 8}``:
    runs that differ here are different rows, not repeats. Model, modulator, repeat and execution fields
    are left out (they are named elsewhere or do not change what is computed)."""
    full = {**TrainConfig().to_dict(), **config}
    try:
        base = recipe(full["recipe"]).to_dict()
    except ValueError:  # a recipe this version does not know: compare with the defaults
        base = TrainConfig().to_dict()
    skip = {*EXECUTION_FIELDS, *_NAMED_FIELDS}
    return {k: v for k, v in full.items() if k not in skip and k in base and v != base[k]}


# what a finished run record needs to be a row of ``runs_frame`` (besides its metrics)
_ROW_KEYS = (
    *(f"config.{k}" for k in _NAMED_FIELDS),
    "data.dataset",
    "data.classes",
    "data.manifest_hash",
    "val_metrics.accuracy",
    "test_metrics",
    "best_epoch",
    "epochs",
    "wall_time_s",
    "git_commit",
)


def runs_frame(run_dirs: list[str | Path]) -> pd.DataFrame:
    """One row per finished run: identifying config fields and test (else val) metrics."""
    rows = []
    for d in run_dirs:
        run = load_run(d)
        if run["status"] != "finished":
            continue
        split = "test" if run.get("test_metrics") else "val"
        _check_keys(run, Path(d) / "run.json", [*_ROW_KEYS, *(f"{split}_metrics.{m}" for m in METRICS)])
        try:
            rows.append(_row(run, split, d))
        except (TypeError, KeyError, AttributeError, ValueError) as e:  # a key of the wrong kind: name the file
            raise ValueError(f"{Path(d) / 'run.json'}: malformed run record ({type(e).__name__}: {e})") from None
    return pd.DataFrame(rows)


def _row(run: dict[str, Any], split: str, d: str | Path) -> dict[str, Any]:
    """The table row of a finished run (its keys checked to exist by ``_check_keys``)."""
    cfg = run["config"]
    metrics = run[f"{split}_metrics"]
    return {
        "dataset": run["data"]["dataset"],
        "classes": ",".join(run["data"]["classes"]),  # one name, several preparations: CK+ with contempt
        "split_sizes": " ".join(f"{k}={v}" for k, v in (run["data"].get("split_sizes") or {}).items()),
        "model": cfg["model"],
        "modulator": cfg["modulator"] or "none",
        "options": json.dumps({**cfg["modulator_opts"], **cfg["model_opts"]}, sort_keys=True),
        "recipe": cfg["recipe"],
        "training": json.dumps(training_changes(cfg), sort_keys=True),
        "protocol": cfg["protocol"],
        "split": split,
        "seed": cfg["seed"],
        "fold": cfg["fold"],
        "run_index": cfg["run_index"],
        **{m: metrics[m] for m in METRICS},
        "val_accuracy": run["val_metrics"]["accuracy"],
        "best_epoch": run["best_epoch"],
        "epochs_run": len(run["epochs"]),
        "wall_time_s": run["wall_time_s"],
        "git_commit": run["git_commit"],
        "manifest_hash": run["data"]["manifest_hash"],
        "run_dir": str(d),
    }


GROUP_BY = [
    *("dataset", "classes", "split_sizes"),  # one data set name, several preparations: kept apart
    *("model", "modulator", "options", "recipe", "training", "protocol", "split"),
]


def summarize(run_dirs: list[str | Path]) -> pd.DataFrame:
    """Mean and std of accuracy, balanced accuracy and macro-F1 per group of runs that differ only in
    seed, fold or run index (``classes`` and ``split_sizes`` keep apart preparations of one data set name,
    such as AffectNet's 7 and 8 classes; ``training`` holds the settings that differ from the recipe, so a
    longer schedule is its own row); ``runs`` lists the run directories behind each row."""
    df = runs_frame(run_dirs)
    if df.empty:
        return df
    agg: dict[str, Any] = {f"{m}_{s}": (m, s) for m in METRICS for s in ("mean", "std")}
    agg["val_accuracy_mean"] = ("val_accuracy", "mean")  # what a row may be chosen by
    out = df.groupby(GROUP_BY, sort=False, dropna=False).agg(
        n_runs=("run_dir", "size"), **agg, runs=("run_dir", lambda s: list(s))
    )
    return out.reset_index()


def _sub_config(cfg: TrainConfig, name: str, **changes: Any) -> TrainConfig:
    return cfg.replace(out=str(Path(cfg.out) / name), **changes)


def run_folds(cfg: TrainConfig, folds: list[int], show_progress: bool = False) -> pd.DataFrame:
    """k-fold driver (CK+, JAFFE): one run per fold under ``cfg.out/fold<k>``, then the summary."""
    dirs = []
    for k in folds:
        sub = _sub_config(cfg, f"fold{k}", protocol="kfold", fold=k)
        run_or_load(sub, show_progress)
        dirs.append(sub.out)
    return summarize(dirs)


def run_paper_protocol(cfg: TrainConfig, run_indices: tuple[int, ...] = (1, 2, 3, 4, 5)) -> pd.DataFrame:
    """The authors' protocol: five random splits (run index 1..5) under ``cfg.out/run<i>``, then the summary."""
    dirs = []
    for i in run_indices:
        sub = _sub_config(cfg, f"run{i}", protocol="paper-random", run_index=i)
        run_or_load(sub)
        dirs.append(sub.out)
    return summarize(dirs)


def run_seeds(cfg: TrainConfig, seeds: tuple[int, ...]) -> pd.DataFrame:
    """The same config over several seeds under ``cfg.out/seed<s>``, then the summary."""
    dirs = []
    for s in seeds:
        sub = _sub_config(cfg, f"seed{s}", seed=s)
        run_or_load(sub)
        dirs.append(sub.out)
    return summarize(dirs)
