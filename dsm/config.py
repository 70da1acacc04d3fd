"""Training configuration: one dataclass, saved with every run, overridable from YAML and flags.

Defaults are the authors' recipe (AdamW lr 1e-3, wd 1e-4, batch 64, cosine, 100 epochs,
horizontal flip + random erasing, early stopping on validation loss with patience 30,
best checkpoint by validation accuracy). ``RECIPES`` holds named variants (``cpu``,
``paper``); a YAML file or CLI flags override single fields on top.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    # what to train on
    data: str = ""
    protocol: str = "official"  # official | paper-random | kfold
    run_index: int = 1  # paper-random: 1..5
    fold: int | None = None  # kfold: 0..k-1
    val_fraction: float = 0.1  # held out of train where a data set has no val split
    balanced_sampling: bool = False  # draw training images with class-balanced weights (AffectNet)
    # the model
    model: str = "dsm_net"
    modulator: str | None = "dsm"
    modulator_opts: dict[str, Any] = field(default_factory=dict)
    model_opts: dict[str, Any] = field(default_factory=dict)
    # a checkpoint (a run's ``best``, the released model) whose weights start the run instead of a random init:
    # fine-tuning, or one more leg of a schedule longer than a session; the record keeps its sha256 (``init``)
    init_from: str | None = None
    input_size: int = 112
    in_chans: int | None = None  # default: the data set's channels
    # optimisation
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    # EMA of weights, evaluated and saved when set; a cap that timm's warm-up reaches after about
    # (1 - ema_decay) ** -1.5 steps (each epoch's record gives the decay it ended at)
    ema_decay: float | None = None
    early_stop_patience: int | None = 30  # epochs without val-loss improvement
    # augmentation (batched, on tensors)
    hflip: bool = True
    random_erasing: float = 0.5  # probability per image
    crop_scale: float = 0.0  # random translation/scale jitter; 0 = off
    rotation: float = 0.0  # degrees, uniform +-
    mixup: float = 0.0  # alpha; 0 = off
    cutmix: float = 0.0  # alpha; 0 = off
    # execution
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None
    # None: on CUDA only. On CPU it helps at 48 px (benchmarks/) but torch 2.14's channels_last backward of
    # dsm_net at 112 px aborts in libgomp ("Out of memory allocating" ~200 GB), so it is opt-in there.
    channels_last: bool | None = None
    compile: bool = False
    # torch.compile's mode when compiling; "reduce-overhead" replays each step as a CUDA graph, for a GPU whose
    # steps are launch-bound (a small network, or a sandbox where each kernel launch is slow)
    compile_mode: str | None = None
    amp: bool = True  # bf16 autocast on CUDA
    # bf16 autocast on the CPU: pays only where the CPU multiplies bf16 in hardware (AMX, AVX512-BF16; the bf16
    # rows of benchmarks/results/train_throughput_*). Rounding differs from fp32, so it is part of the run
    amp_cpu: bool = False
    eval_batch_size: int = 256
    limit_train_batches: int | None = None  # for smoke tests
    # a lease or job with a deadline: stop cleanly before the next epoch would pass this many seconds (resume
    # continues), and/or leave the final evaluation of the best checkpoint to the next resume (a machine that
    # holds no test images)
    time_limit: float | None = None
    defer_test: bool = False
    out: str = "runs/default"
    recipe: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> TrainConfig:
        """ValueError naming the first field outside its range, before anything is trained or written."""

        def bad(name: str, want: str) -> ValueError:
            return ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")

        def number(v: Any) -> bool:  # finite: an infinite rate or angle would fail deep in the first step
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        def count(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        for name in ("epochs", "batch_size", "input_size", "eval_batch_size", "run_index"):
            if not count(getattr(self, name)):
                raise bad(name, "a positive integer")
        for name in ("in_chans", "threads", "limit_train_batches", "early_stop_patience"):
            if getattr(self, name) is not None and not count(getattr(self, name)):
                raise bad(name, "a positive integer or null")
        for name in ("lr", "weight_decay", "warmup_epochs", "min_lr", "crop_scale", "rotation", "mixup", "cutmix"):
            if not (number(getattr(self, name)) and getattr(self, name) >= 0):
                raise bad(name, "a number >= 0")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0):
            raise bad("seed", "an integer >= 0")
        if self.fold is not None and not (
            isinstance(self.fold, int) and not isinstance(self.fold, bool) and self.fold >= 0
        ):
            raise bad("fold", "an integer >= 0 or null")
        for name in ("model_opts", "modulator_opts"):
            if not isinstance(getattr(self, name), dict):
                raise bad(name, "a mapping")
        for name in ("balanced_sampling", "hflip", "compile", "amp", "amp_cpu", "defer_test"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise bad("channels_last", "true, false or null")
        if not (number(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise bad("label_smoothing", "in [0, 1)")
        if not (number(self.random_erasing) and 0 <= self.random_erasing <= 1):
            raise bad("random_erasing", "a probability in [0, 1]")
        if self.ema_decay is not None and not (number(self.ema_decay) and 0 < self.ema_decay < 1):
            raise bad("ema_decay", "in (0, 1) or null")
        for name in ("grad_clip", "time_limit"):
            if getattr(self, name) is not None and not (number(getattr(self, name)) and getattr(self, name) > 0):
                raise bad(name, "a positive number or null")
        if self.init_from is not None and not (isinstance(self.init_from, str) and self.init_from):
            raise bad("init_from", "a checkpoint path or null")
        if self.compile_mode not in COMPILE_MODES:
            raise bad("compile_mode", f"one of {', '.join(map(str, COMPILE_MODES))}")
        if not (number(self.val_fraction) and 0 < self.val_fraction < 1):
            raise bad("val_fraction", "in (0, 1)")
        return self

    def same_run(self, other: dict[str, Any]) -> bool:
        """Whether a saved config describes the same run; where and how fast it executes may differ."""
        other = {**TrainConfig().to_dict(), **other}  # fields added since the run was saved take their defaults
        mine = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}
        return mine == {k: v for k, v in other.items() if k not in EXECUTION_FIELDS}

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path, recipe_name: str | None = None) -> TrainConfig:
        """The recipe the file names (``recipe_name`` overrides it; neither: the authors'), then only the
        fields the file sets."""
        d = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        name = recipe_name or d.get("recipe", "default")
        d.pop("recipe", None)
        try:
            return recipe(name, **d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e


COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

EXECUTION_FIELDS = (
    "data",
    "out",
    "device",
    "threads",
    "compile",
    "compile_mode",
    "channels_last",
    "eval_batch_size",
    "time_limit",
    "defer_test",
)
"""Fields a resumed or reused run may change: where the data and the run live, how fast it executes and
where one invocation stops.
They do not change the model, the data (checked by manifest hash) or the recipe. On one device they change
results only up to float rounding; moving a run between CPU and GPU also changes its random streams (the
augmentation draws on the device) and, on a GPU, turns on bf16 autocast, so such a run is valid but not
bit-reproducible: its record lists the device of every resume."""

RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    # the authors' recipe at their resolution, for a GPU
    "paper": {"input_size": 112, "in_chans": 3, "epochs": 100},
    # what fits a few hours on 2 CPU cores: native 48x48 gray, shorter schedule, stronger regularisation
    "cpu": {
        "input_size": 48,
        "in_chans": 1,
        "channels_last": True,
        "epochs": 30,
        "batch_size": 128,
        "lr": 2e-3,
        "weight_decay": 0.05,
        "warmup_epochs": 1.0,
        "label_smoothing": 0.1,
        "crop_scale": 0.1,
        "rotation": 10.0,
        "early_stop_patience": None,
        "ema_decay": 0.999,
    },
    # seconds-long runs for tests and the synthetic smoke profile
    "smoke": {"input_size": 48, "epochs": 2, "batch_size": 32, "early_stop_patience": None},
}


def recipe(name: str, **overrides: Any) -> TrainConfig:
    """A named recipe with field overrides on top."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return TrainConfig.from_dict({**RECIPES[name], "recipe": name, **overrides})
