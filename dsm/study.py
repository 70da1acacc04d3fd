"""The study behind the book, as data: which networks to train on a data set, how much, and how to read them.

* ``Profile`` — how much to run (epochs, synthetic set size, seeds or folds, which
  modulators and which DSM design ablations, benchmark repetitions). ``smoke`` is for
  tests (seconds per notebook), ``quick`` is ``make reproduce`` on a laptop CPU (minutes,
  on the synthetic set), ``cpu`` is the real-data study on 2 CPU cores, ``full`` is the
  paper-scale study (a GPU and real data).
* ``Variant`` — one model to train: model, modulator and their options. Options equal to
  a default are dropped, so "kernel 7" of the kernel ablation *is* the DSM run of the
  results table and trains once.
* ``Experiment`` — a profile applied to one prepared data set and one runs directory:
  it turns variants into ``TrainConfig``s under ``runs/<dataset>/<profile>/<variant>/<seed>``,
  trains or reloads them through ``dsm.runs.run_or_load`` (an interrupted study
  continues where it stopped), and builds the benchmark and accuracy-latency tables.

The notebooks call this module (``Experiment.create(...)``); ``dsm.reproduce`` executes them.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsm.bench import BenchConfig, cpu_busy, torch_threads
from dsm.config import TrainConfig, recipe
from dsm.registry import create_model, list_modulators

ALL_MODULATORS = ("none", "dsm", "se", "cbam", "bam", "eca", "ca", "simam", "gam", "lka")


# --- data sets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    real: bool
    protocol: str  # the protocol the book reports: official | kfold
    cite: str
    source_hint: str  # what to pass to the preparer

    @property
    def prepare_command(self) -> str:
        if not self.real:
            return f"python data_scripts/prepare.py synthetic --out data/{self.name}"
        return f"python data_scripts/prepare.py {self.name} --source {self.source_hint} --out data/{self.name}"


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("fer2013", "FER2013", True, "official", "goodfellow2013challenges", "<fer2013.csv or archive.zip>"),
        DatasetInfo("rafdb", "RAF-DB", True, "official", "li2017rafdb", "<RAF-DB basic directory or zip>"),
        DatasetInfo("ckplus", "CK+", True, "kfold", "lucey2010ckplus", "<CK+ release or CK+48 directory/zip>"),
        DatasetInfo("affectnet", "AffectNet", True, "official", "mollahosseini2019affectnet", "<AffectNet directory>"),
        DatasetInfo("jaffe", "JAFFE", True, "kfold", "lyons1998jaffe", "<JAFFE directory or zip>"),
        DatasetInfo("synthetic", "Synthetic (not real faces)", False, "official", "", ""),
    )
}


@dataclass(frozen=True)
class Targets:
    """What the headline network (dsm_net + DSM) should reach on a data set's test split: single crop, no
    extra data, checkpoint chosen on validation only. Reported against the runs, met or not."""

    floor: float  # test accuracy
    goal: float  # test accuracy, together with max_params
    max_params: int  # parameters of the network as trained
    context: str  # why these numbers
    speedup: float | None = None  # CPU training step against the naive one, e.g. 2.5 for 2.5x
    speedup_record: str | None = None  # benchmarks/train_throughput.py output, relative to the checkout


TARGETS: dict[str, Targets] = {
    "fer2013": Targets(
        0.70,
        0.735,
        1_500_000,
        "The goal is above the best published single-network FER2013 accuracy without extra training data that we "
        "know of, 73.28 % with a VGG network (Khaireddin and Chen 2021, cited in the FER2013 chapter).",
        speedup=2.5,
        speedup_record="benchmarks/results/train_throughput_fer2013_48_2threads_isolated.json",
    )
}

OTHER_ROUNDING = "bf16 autocast"  # how benchmarks/train_throughput.py names rows that are not the naive arithmetic
CHECKOUT = Path(__file__).resolve().parents[1]  # benchmarks/ lives here in a git checkout, not in a wheel


def speedup_report(target: float, record: str | os.PathLike) -> str:
    """Markdown line: the CPU training speed-up target against a ``benchmarks/train_throughput.py`` record."""
    path = Path(record)
    if not path.is_file():
        return f"- CPU training step {target:g}x the naive one: no throughput record at `{path}` (see benchmarks/)"
    rec = json.loads(path.read_text())
    # the target asks for the same maths: rows with bf16 autocast round otherwise, so they are named, not counted
    other, rows = [], []
    for r in rec["rows"]:
        (other if r["variant"].startswith(OTHER_ROUNDING) else rows).append(r)
    naive, best = rows[0], max(rows, key=lambda r: r["speedup_vs_naive"])
    trained = next((r for r in rows if r["variant"].startswith("the cpu recipe as trained:")), None)
    as_trained = f", the `cpu` recipe as trained {trained['speedup_vs_naive']:.2f}x" if trained else ""
    verdict = "met" if best["speedup_vs_naive"] >= target else "**not met**"
    if other:
        fastest = max(other, key=lambda r: r["speedup_vs_naive"])
        bf16 = ", ".join(rec.get("cpu_bf16_flags", [])) or "none"
        as_trained += (
            f"; not counted, as its rounding differs: {fastest['speedup_vs_naive']:.2f}x ({fastest['variant']}; "
            f"the CPU's bf16 flags: {bf16})"
        )
    name = path.relative_to(CHECKOUT) if path.is_relative_to(CHECKOUT) else path
    return (
        f"- CPU training step at least {target:g}x as fast as the naive one ({naive['images_per_s']:.0f} images/s, "
        f"{rec['device']}): {verdict}; best {best['speedup_vs_naive']:.2f}x ({best['variant']}){as_trained} "
        f"(`{name}`, commit {rec['git_commit'][:7]}, {rec['time']})"
    )


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


# --- profiles --------------------------------------------------------------------------------------

# DSM design ablations: group -> (where the option goes, option name, values); the paper's choice is a default.
DESIGN_OPTIONS: dict[str, tuple[str, str, tuple[Any, ...]]] = {
    "kernel": ("modulator", "kernel_size", (3, 5, 7, 9, 11)),
    "reduction": ("modulator", "reduction", (2, 4, 8, 16)),
    "dropout": ("modulator", "dropout", (0.0, 0.1, 0.2, 0.3)),
    "rep": ("modulator", "rep", (True, False)),
    "position": ("model", "modulator_after", ([1], [2], [3])),
}


@dataclass
class Profile:
    """How much of the study to run. Every field is reported in the book next to the numbers."""

    name: str
    description: str
    recipe: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields on top of the recipe
    seeds: tuple[int, ...] = (0,)
    # more seeds for some variants (by name): the headline row "dsm", and rows to compare it with seed by seed
    more_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    headline_epochs: tuple[int, ...] = ()  # the headline row once more at each schedule (seed 0): how far it gets
    lease_epochs: tuple[int, ...] = ()  # such schedules meant for a lent GPU: trained last on a CPU
    folds: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)  # k-fold data sets (CK+, JAFFE)
    synthetic_n: int = 2100
    synthetic_size: int = 48
    models: tuple[str, ...] = ("dsm_net",)
    result_modulators: tuple[str, ...] = ("none", "dsm", "cbam")
    ablation_modulators: tuple[str, ...] = ALL_MODULATORS
    design: dict[str, tuple[Any, ...]] = field(default_factory=lambda: {k: v[2] for k, v in DESIGN_OPTIONS.items()})
    train_threads: int | str | None = None  # CPU threads for training; "auto": 1 when other processes keep the CPU busy
    bench_modulators: tuple[str, ...] = ALL_MODULATORS
    bench_models: tuple[str, ...] = ()
    bench_runs: int = 100
    bench_warmup: int = 20
    bench_threads: int | None = None
    gate_per_class: int = 2
    gate_mean_per_class: int = 16
    sample_per_class: int = 8
    # the "Using the model" page: runtime latency of the released model (torch.compile costs ~30 s per batch size)
    runtime_backends: tuple[str, ...] = ("eager", "onnxruntime", "compile")
    runtime_runs: int = 100
    runtime_warmup: int = 20

    def describe(self) -> str:
        design = "; ".join(f"{g}: {', '.join(map(str, v))}" for g, v in self.design.items()) or "none"
        cfg = recipe(self.recipe, **self.overrides)
        return "\n".join(
            [
                f"**Profile `{self.name}`** — {self.description}",
                "",
                f"- training: recipe `{self.recipe}` with {json.dumps(self.overrides)} "
                f"({cfg.epochs} epochs, batch {cfg.batch_size}, input {cfg.input_size}x{cfg.input_size})",
                f"- repeats: seeds {list(self.seeds)}"
                + "".join(f", and {list(seeds)} for `{name}`" for name, seeds in self.more_seeds.items())
                + f" (k-fold data sets: folds {list(self.folds)})",
                *(
                    [
                        "- longer schedules: dsm_net + DSM also trained for "
                        + " and ".join(map(str, self.headline_epochs))
                        + " epochs (one run each)"
                        + (
                            f"; {' and '.join(map(str, self.lease_epochs))} meant for a lent GPU, trained last here"
                            if self.lease_epochs
                            else ""
                        )
                    ]
                    if self.headline_epochs
                    else []
                ),
                f"- CPU threads for training: {self.train_threads or 'PyTorch default'}"
                + (" (one thread when other processes keep the CPU busy)" if self.train_threads == "auto" else ""),
                f"- results: models {list(self.models)}, modulators {list(self.result_modulators)}",
                f"- modulator comparison: {', '.join(self.ablation_modulators)}",
                f"- DSM design ablations (paper default in each group shared with the DSM run): {design}",
                f"- benchmark: {self.bench_runs} timed runs after {self.bench_warmup} warm-up, batch 1",
            ]
        )


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        "tiny and meaningless: checks that every notebook runs (tests).",
        recipe="smoke",
        overrides={"epochs": 1, "batch_size": 16, "limit_train_batches": 2, "device": "cpu", "eval_batch_size": 64},
        folds=(0,),
        synthetic_n=140,
        result_modulators=("dsm", "cbam"),
        ablation_modulators=("dsm", "se"),
        design={"kernel": (3,)},
        train_threads="auto",
        bench_modulators=("none", "dsm", "cbam"),
        bench_runs=3,
        bench_warmup=1,
        gate_per_class=1,
        gate_mean_per_class=2,
        sample_per_class=3,
        runtime_backends=("eager", "onnxruntime"),
        runtime_runs=3,
        runtime_warmup=1,
    ),
    "quick": Profile(
        "quick",
        "a few CPU minutes on the synthetic set: short training without augmentation beyond flips, a subset of "
        "the ablations, one seed. It shows the pipeline end to end; its numbers are not the paper's.",
        recipe="smoke",
        overrides={"epochs": 5, "lr": 2e-3, "random_erasing": 0.0, "warmup_epochs": 0.3, "device": "cpu"},
        folds=(0, 1),
        synthetic_n=1400,
        result_modulators=("none", "dsm", "cbam"),
        ablation_modulators=("none", "dsm", "se", "cbam", "eca"),
        design={"kernel": (3, 7), "rep": (True, False)},
        train_threads="auto",
        bench_runs=30,
        bench_warmup=5,
        bench_models=("timm:resnet18", "timm:mobilenetv3_small_100"),
    ),
    "cpu": Profile(
        "cpu",
        "the CPU recipe on a real data set: native 48x48 gray, batch 128, 8 epochs, AdamW with weight EMA, "
        "label smoothing, flip/affine/erasing augmentation; a quarter of an hour to an hour and a half per run on 2 "
        "cores, by host. The "
        "study is trained over several sessions: a page lists the runs that have not finished yet.",
        recipe="cpu",
        overrides={"epochs": 8},
        more_seeds={"dsm": (1, 2), "none": (1, 2), "gam": (1, 2)},
        headline_epochs=(30, 60, 150),
        lease_epochs=(150,),
        models=("dsm_net", "timm:resnet18"),
        result_modulators=("dsm", "none"),
        design={
            "kernel": (3, 7, 11),
            "reduction": (4, 8),
            "dropout": (0.0, 0.2),
            "rep": (True, False),
            "position": ([1], [2], [3]),
        },
        train_threads="auto",
    ),
    "full": Profile(
        "full",
        "the paper-scale study: the authors' recipe, every modulator, every design ablation, three seeds "
        "(ten folds on CK+). Meant for a GPU.",
        recipe="paper",
        overrides={"device": "auto"},
        seeds=(0, 1, 2),
        bench_models=("timm:resnet18", "timm:mobilenetv3_small_100", "timm:efficientnet_b0"),
        gate_per_class=3,
        gate_mean_per_class=64,
    ),
}


def get_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[profile]


# --- variants --------------------------------------------------------------------------------------


def _defaults(fn: Any) -> dict[str, Any]:
    return {
        k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty
    }


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, tuple | list) else v  # noqa: E731
    return norm(a) == norm(b)


def _drop_defaults(opts: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in opts.items() if not (k in defaults and _same(defaults[k], v))}


@dataclass(frozen=True)
class Variant:
    """One network to train: model + modulator + options (defaults dropped), and any training-recipe
    changes that belong to this row alone (e.g. a longer schedule)."""

    model: str = "dsm_net"
    modulator: str = "dsm"
    modulator_opts: tuple[tuple[str, Any], ...] = ()
    model_opts: tuple[tuple[str, Any], ...] = ()
    train_opts: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(
        cls,
        model: str = "dsm_net",
        modulator: str | None = "dsm",
        modulator_opts: Mapping[str, Any] | None = None,
        model_opts: Mapping[str, Any] | None = None,
        train_opts: Mapping[str, Any] | None = None,
    ) -> Variant:
        modulator = modulator or "none"
        mod_opts = dict(modulator_opts or {})
        if modulator == "dsm":
            from dsm.modulators.dsm import DecomposedSpatialModulator

            mod_opts = _drop_defaults(mod_opts, _defaults(DecomposedSpatialModulator.__init__))
        m_opts = dict(model_opts or {})
        if model == "dsm_net":
            from dsm.models.dsm_net import DSMNet

            m_opts = _drop_defaults(m_opts, _defaults(DSMNet.__init__))
        freeze = lambda d: tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))  # noqa: E731
        return cls(model, modulator, freeze(mod_opts), freeze(m_opts), freeze(dict(train_opts or {})))

    @property
    def options(self) -> dict[str, Any]:
        opts = (*self.modulator_opts, *self.model_opts, *self.train_opts)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in opts}

    @property
    def name(self) -> str:
        """Directory name and table label, e.g. ``dsm``, ``dsm-kernel_size=3``, ``timm-resnet18-none``,
        ``dsm-epochs=30``."""
        base = self.modulator if self.model == "dsm_net" else f"{self.model.replace(':', '-')}-{self.modulator}"
        opts = "-".join(f"{k}={_fmt(v)}" for k, v in sorted(self.options.items()))
        return base + (f"-{opts}" if opts else "")

    @property
    def network(self) -> Variant:
        """The same network without this row's training changes: what a latency benchmark measures."""
        return Variant(self.model, self.modulator, self.modulator_opts, self.model_opts)

    def train_fields(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "modulator": self.modulator,
            "modulator_opts": {k: v for k, v in self.options.items() if k in dict(self.modulator_opts)},
            "model_opts": {k: v for k, v in self.options.items() if k in dict(self.model_opts)},
            **{k: v for k, v in self.options.items() if k in dict(self.train_opts)},
        }


def _fmt(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ",".join(map(str, v))
    return str(v)


def design_variants(design: Mapping[str, Iterable[Any]]) -> dict[str, list[Variant]]:
    """DSM design ablation groups -> variants (the paper's value of each group is the plain DSM variant)."""
    groups: dict[str, list[Variant]] = {}
    for group, values in design.items():
        where, opt, _ = DESIGN_OPTIONS[group]
        groups[group] = [
            Variant.make(modulator_opts={opt: v}) if where == "modulator" else Variant.make(model_opts={opt: v})
            for v in values
        ]
    return groups


class OptsBenchConfig(BenchConfig):
    """A ``BenchConfig`` that also carries the model and modulator options of a ``Variant``."""

    def __init__(self, variant: Variant, input_size: int, in_chans: int, num_classes: int) -> None:
        super().__init__(variant.model, variant.modulator, input_size, in_chans, num_classes)
        self.variant = variant

    @property
    def name(self) -> str:
        return f"{self.variant.name}@{self.in_chans}x{self.input_size}"

    def build(self) -> Any:
        kw = self.variant.train_fields()
        kwargs = {"num_classes": self.num_classes, "in_chans": self.in_chans, "modulator": kw["modulator"]}
        if kw["modulator_opts"]:
            kwargs["modulator_opts"] = kw["modulator_opts"]
        return create_model(self.model, **kwargs, **kw["model_opts"])


# --- one profile on one data set --------------------------------------------------------------------


@dataclass
class Experiment:
    """A profile applied to one prepared data set, with its runs under ``runs_dir``."""

    profile: Profile
    dataset: str
    data_dir: Path
    runs_dir: Path
    train: bool = True  # False: ``run`` only loads finished runs and names the missing ones

    @classmethod
    def create(
        cls,
        profile: str | Profile,
        dataset: str,
        data_dir: str | os.PathLike,
        runs_dir: str | os.PathLike,
        train: bool = True,
    ) -> Experiment:
        exp = cls(get_profile(profile), dataset, Path(data_dir).resolve(), Path(runs_dir).resolve(), train)
        if exp.profile.train_threads == "auto":  # a notebook kernel sharing a busy CPU: see _train_threads
            import torch

            n = _train_threads("auto")
            if n:
                torch.set_num_threads(n)
        return exp

    @property
    def info(self) -> DatasetInfo:
        return DATASETS.get(self.dataset, DatasetInfo(self.dataset, self.dataset, True, "official", "", ""))

    # variants
    def result_variants(
        self, models: Sequence[str] | None = None, modulators: Sequence[str] | None = None
    ) -> list[Variant]:
        models = models or self.profile.models
        modulators = modulators or self.profile.result_modulators
        variants = [Variant.make(model=m, modulator=mod) for m in models for mod in modulators]
        return variants + [v for v in self.schedule_variants() if v.model in models and v.modulator in modulators]

    def schedule_variants(self) -> list[Variant]:
        """The headline row at each of the profile's longer schedules, shortest first."""
        return [Variant.make(train_opts={"epochs": e}) for e in sorted(self.profile.headline_epochs)]

    def ablation_variants(self) -> dict[str, list[Variant]]:
        """Group -> variants: ``modulators`` (every compared modulator in dsm_net), then the DSM design groups."""
        groups = {"modulators": [Variant.make(modulator=m) for m in self.profile.ablation_modulators]}
        return groups | design_variants(self.profile.design)

    def gate_map_variants(self) -> list[Variant]:
        return [Variant.make(modulator="dsm"), Variant.make(modulator="cbam")]

    def training_order(self) -> list[Variant]:
        """Every variant the notebooks need, most needed first: the dsm_net rows of the results table, the
        gate-map models, the modulator comparison, the other models of the results table, the longer
        schedules, the design groups, and last the schedules meant for a lent GPU."""
        results, ablations, longer = self.result_variants(), self.ablation_variants(), self.schedule_variants()
        design = [v for g, vs in ablations.items() if g != "modulators" for v in vs]
        order = [v for v in results if v.model == "dsm_net" and v not in longer] + self.gate_map_variants()
        lease = [v for v in longer if dict(v.train_opts).get("epochs") in self.profile.lease_epochs]
        longer = [v for v in longer if v not in lease]
        order += ablations["modulators"] + [v for v in results if v.model != "dsm_net"] + longer + design + lease
        return list(dict.fromkeys(order))

    def all_variants(self) -> list[Variant]:
        out = self.result_variants() + [v for vs in self.ablation_variants().values() for v in vs]
        return list(dict.fromkeys(out))

    # configs and runs
    def repeats(self, variant: Variant | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(directory name, TrainConfig changes) per repeat: seeds, or folds on a k-fold data set.
        A variant named in the profile's ``more_seeds`` also gets those seeds."""
        if self.info.protocol == "kfold":
            return [(f"fold{k}", {"protocol": "kfold", "fold": k}) for k in self.profile.folds]
        seeds = self.profile.seeds
        if variant is not None:
            seeds = tuple(dict.fromkeys(seeds + self.profile.more_seeds.get(variant.name, ())))
        return [(f"seed{s}", {"seed": s}) for s in seeds]

    def configs(self, variant: Variant) -> list[TrainConfig]:
        base = {**self.profile.overrides, **variant.train_fields(), "data": str(self.data_dir)}
        return [
            recipe(self.profile.recipe, **base, **changes, out=str(self.runs_dir / variant.name / name))
            for name, changes in self.repeats(variant)
        ]

    def run(
        self, variants: Iterable[Variant], log: str | os.PathLike | None = None, label: str = ""
    ) -> list[dict[str, Any]]:
        """Train (or reload finished) runs of every variant and repeat; returns their run records.

        Training output goes to ``runs_dir/train.log``; one line per run is printed. With ``train`` off,
        only the finished runs are returned and the missing ones are printed (under ``label``, e.g. the
        ablation group, when a page calls this once per group).
        """
        from dsm.runs import finished_run, run_or_load

        if not self.train:
            return self.load(variants, report_missing=True, label=label)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        log_path = Path(log) if log else self.runs_dir / "train.log"
        runs = []
        for variant in dict.fromkeys(variants):
            for cfg in self.configs(variant):
                t0 = time.perf_counter()
                run = finished_run(cfg)
                finished = run is not None
                threads = None if finished else _train_threads(self.profile.train_threads)
                with (
                    open(log_path, "a") as f,
                    contextlib.redirect_stdout(f),
                    contextlib.redirect_stderr(f),
                    torch_threads(threads),
                ):
                    print(f"== {cfg.out} ({time.strftime('%Y-%m-%d %H:%M:%S')}, threads {threads or 'default'})")
                    run = run or run_or_load(cfg)  # a finished run is not looked up twice
                run["variant"] = variant.name
                what = "loaded" if finished else f"trained in {time.perf_counter() - t0:.0f} s"
                acc = (run.get("test_metrics") or run.get("val_metrics") or {}).get("accuracy", float("nan"))
                print(f"{variant.name:<28} {Path(cfg.out).name:<7} {what:<18} accuracy {100 * acc:.2f} %")
                runs.append(run)
        return runs

    def plan(self) -> pd.DataFrame:
        """Every run of ``training_order`` and where it stands: finished (with its test accuracy and
        minutes; "record only" when its best checkpoint is absent, as in a fresh clone, so pages that draw
        its weights cannot be rebuilt), stopped after some epochs (it resumes), not started, or in the way:
        a directory holding a run of another config, architecture or data (training starts it over, or
        refuses once it has a checkpoint). Reads run records only."""
        from dsm.data.format import load_prepared
        from dsm.runs import differs, finished_run, load_run

        hashes = load_prepared(self.data_dir).hashes
        rows = []
        for variant in self.training_order():
            for cfg in self.configs(variant):
                run, state = finished_run(cfg), "not started"
                checkpoint = (Path(cfg.out) / "last.json").is_file()
                if run is not None:  # its weights are not committed: a fresh clone has the record only
                    state = "finished" if (Path(cfg.out) / "best.json").is_file() else "finished (record only)"
                else:
                    with contextlib.suppress(FileNotFoundError, ValueError):
                        partial = load_run(cfg.out)
                        if why := differs(cfg, partial, hashes):
                            then = "training refuses (move it away)" if checkpoint else "starts over"
                            state = f"other {why}: {then}"
                        else:
                            state = f"epoch {len(partial.get('epochs') or [])} of {cfg.epochs} done"
                            if partial.get("epochs") and not checkpoint:
                                state += ", no checkpoint: starts over"
                acc = ((run or {}).get("test_metrics") or {}).get("accuracy")
                rows.append(
                    {
                        "run": str(Path(cfg.out).relative_to(self.runs_dir)),
                        "state": state,
                        "test accuracy %": None if acc is None else round(100 * acc, 2),
                        "minutes": None if run is None else round(run.get("wall_time_s", 0) / 60),
                    }
                )
        return pd.DataFrame(rows).astype({"minutes": "Int64"})

    def unfinished_runs(self, variants: Iterable[Variant]) -> dict[str, dict[str, Any]]:
        """Label -> run record of each run of ``variants`` that stopped part-way (this config, network and
        data, some epochs recorded, not finished), so a page can draw how far a long schedule got. Such a
        record has no test metrics; the label says which epoch it reached."""
        from dsm.data.format import load_prepared
        from dsm.runs import differs, load_run

        hashes = load_prepared(self.data_dir).hashes
        out = {}
        for variant in dict.fromkeys(variants):
            for cfg in self.configs(variant):
                with contextlib.suppress(FileNotFoundError, ValueError):
                    run = load_run(cfg.out)
                    n = len(run.get("epochs") or []) if run.get("status") != "finished" else 0
                    if n and differs(cfg, run, hashes) is None:
                        rel = Path(cfg.out).relative_to(self.runs_dir)
                        out[f"{rel} (unfinished: epoch {n} of {cfg.epochs})"] = run | {"variant": variant.name}
        return out

    def load(self, variants: Iterable[Variant], report_missing: bool = False, label: str = "") -> list[dict[str, Any]]:
        """The finished runs of ``variants`` that exist (nothing is trained); ``report_missing`` prints the others
        (after ``label``, when given)."""
        from dsm.runs import finished_run

        runs, missing = [], []
        for variant in dict.fromkeys(variants):
            for cfg in self.configs(variant):
                run = finished_run(cfg)
                if run is None:
                    missing.append(str(Path(cfg.out).relative_to(self.runs_dir)))
                    continue
                run["variant"] = variant.name
                runs.append(run)
        if report_missing and missing:
            where = f"{label}: " if label else ""
            print(f"not finished yet ({where}{len(missing)} of {len(runs) + len(missing)} runs): {', '.join(missing)}")
        return runs

    def summary(self, runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """``dsm.runs.summarize`` of ``runs`` with a ``variant`` column, in the order given."""
        from dsm.runs import summarize

        df = summarize([r["run_dir"] for r in runs])
        if df.empty:
            return df
        by_dir = {str(r["run_dir"]): r["variant"] for r in runs}
        df.insert(0, "variant", [by_dir.get(str(rs[0]), "") for rs in df["runs"]])
        return df

    def table(self, runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """The results table of ``runs``: variant, metrics in % (mean ± std), run record paths."""
        from dsm.viz import results_table

        labels = {str(r["run_dir"]): r["variant"] for r in runs}
        return results_table(self.summary(runs), labels)

    def paired_difference(self, runs: Sequence[Mapping[str, Any]], variant: str, baseline: str) -> pd.DataFrame:
        """Test accuracy and balanced accuracy (%) of ``variant`` and ``baseline`` for each repeat (seed or
        fold) both finished, their difference in points, and (for two or more) a last row of mean ± std over
        those repeats. Paired by repeat, so a gap that re-training alone does not explain shows in every row."""
        by_repeat: dict[str, dict[str, Mapping[str, Any]]] = {}
        for r in runs:
            if r["variant"] in (variant, baseline) and r.get("test_metrics"):
                by_repeat.setdefault(Path(r["run_dir"]).name, {})[r["variant"]] = r
        rows, records = [], {}
        for repeat, pair in by_repeat.items():
            if len(pair) < 2:
                continue
            row: dict[str, Any] = {"repeat": repeat}
            for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc.")):
                a, b = (100 * pair[v]["test_metrics"][key] for v in (variant, baseline))
                row |= {f"{label}: {variant}": a, f"{label}: {baseline}": b, f"{label}: difference": a - b}
            rows.append(row)
            records[repeat] = ", ".join(self._record_name(pair[v]["run_dir"]) for v in (variant, baseline))
        if not rows:
            return pd.DataFrame()
        df = pd.DataFrame(rows).set_index("repeat")
        fmt = {c: "{:+.2f}" if c.endswith("difference") else "{:.2f}" for c in df.columns}
        out = pd.DataFrame({c: df[c].map(fmt[c].format) for c in df.columns})
        mean = pd.Series({c: fmt[c].format(df[c].mean()) for c in df.columns})
        if len(df) > 1:
            out.loc[f"mean ± std over {len(df)}"] = mean + " ± " + df.std().map("{:.2f}".format)
        out["run records"] = pd.Series(records)
        return out.fillna("").reset_index()

    def ablation_table(self, groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
        """One table over ablation groups (``{group: runs}``), with a ``group`` column first."""
        parts = [self.table(runs).assign(group=group) for group, runs in groups.items() if runs]
        if not parts:
            return pd.DataFrame()
        df = pd.concat(parts, ignore_index=True)
        return df[["group", *[c for c in df.columns if c != "group"]]]

    @staticmethod
    def per_variant(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Variant name -> its first repeat's run (for curves and confusion matrices)."""
        out: dict[str, dict[str, Any]] = {}
        for r in runs:
            out.setdefault(r["variant"], dict(r))
        return out

    def headline_variants(self) -> set[str]:
        """Names of the variants that train the headline network, ``dsm_net`` + DSM, on any schedule."""
        return {v.name for v in self.all_variants() if v.network == Variant.make()}

    def best_headline_run(self, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """The single run of ``dsm_net`` + DSM (any schedule) with the best validation accuracy: the one
        ``dsm release`` publishes. None when no such run has finished."""
        names = self.headline_variants()
        candidates = [r for r in runs if r["variant"] in names and r.get("val_metrics")]
        return dict(max(candidates, key=lambda r: r["val_metrics"]["accuracy"])) if candidates else None

    def confusion_runs(self, runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Title -> run for the confusion matrices of a results page: the first repeat of the equal-recipe
        DSM row and, when it is another run, the best-validation ``dsm_net`` + DSM run (the released kind)."""
        from dsm.viz import metrics_split

        out: dict[str, dict[str, Any]] = {}
        first = self.per_variant(runs).get(Variant.make().name)
        if first is not None:
            out[f"dsm_net + DSM, {self._record_name(first['run_dir'])}, {metrics_split(first)} split"] = first
        best = self.best_headline_run(runs)
        if best is not None and (first is None or Path(best["run_dir"]) != Path(first["run_dir"])):
            name = self._record_name(best["run_dir"])
            out[f"dsm_net + DSM, best validation accuracy: {name}, {metrics_split(best)} split"] = best
        return out

    def runs_note(self, runs: Mapping[str, Mapping[str, Any]]) -> str:
        """Markdown: which run record each named model of a page comes from, with its test accuracy."""
        from dsm.viz import metrics_split

        parts = []
        for name, run in runs.items():
            split = metrics_split(run)
            acc = (run.get("test_metrics") or run.get("val_metrics") or {}).get("accuracy")
            shown = "no metrics recorded" if acc is None else f"{split} accuracy {100 * acc:.2f} %"
            parts.append(f"{name}: `{self._record_name(run['run_dir'])}` ({shown})")
        return "Models: " + "; ".join(parts) + "."

    def first(self, runs: Sequence[Mapping[str, Any]], variant: Variant | str) -> dict[str, Any]:
        """The first repeat's run of ``variant`` among ``runs``."""
        name = variant if isinstance(variant, str) else variant.name
        for r in runs:
            if r["variant"] == name:
                return dict(r)
        raise KeyError(f"no run of variant {name!r}")

    @staticmethod
    def load_best(run: Mapping[str, Any], device: str = "cpu") -> tuple[Any, dict[str, Any]]:
        """(eval model, checkpoint info) of a run's best checkpoint."""
        from dsm.checkpoint import load_model

        return load_model(Path(run["run_dir"]) / "best", device)

    def split_indices(self, run: Mapping[str, Any], split: str = "test") -> np.ndarray:
        """Indices of ``split`` as ``run`` saw it (its protocol, fold, run index and seed): a k-fold
        model's test split is its fold, not meta.csv's ``test`` (empty on k-fold data sets)."""
        from dsm.data.format import load_prepared
        from dsm.evaluate import select_split, split_options

        protocol = run["config"].get("protocol")
        opts = split_options({"config": run["config"]}, protocol, None, None)
        return select_split(load_prepared(self.data_dir), split, protocol, **opts)

    # efficiency
    def input_spec(self) -> tuple[int, int, int]:
        """(in_chans, input_size, num_classes) the runs of this experiment use."""
        from dsm.data.format import load_prepared

        data = load_prepared(self.data_dir)
        cfg = recipe(self.profile.recipe, **self.profile.overrides)
        return cfg.in_chans or data.channels, cfg.input_size, len(data.classes)

    def recorded_gpu_bench(self, root: str | os.PathLike | None = None) -> tuple[list[dict], dict] | None:
        """(results, meta) of this data set's and profile's networks timed on a lent GPU
        (``benchmarks/device_session.py bench``; ``root`` default: the checkout's benchmarks/results), or
        None where none was recorded."""
        from dsm.bench import load_results

        root = Path(root) if root is not None else Path(__file__).resolve().parents[1] / "benchmarks" / "results"
        path = root / f"bench_gpu_{self.dataset}_{self.profile.name}.json"
        return load_results(path) if path.is_file() else None

    def bench_configs(self) -> list[BenchConfig]:
        """The profile's modulators in dsm_net, its DSM design variants, its reference models and every
        variant of the results table."""
        chans, size, ncls = self.input_spec()
        variants = [Variant.make(modulator=m) for m in self.profile.bench_modulators if m in list_modulators()]
        variants += [v for vs in design_variants(self.profile.design).values() for v in vs]
        variants += [Variant.make(model=m, modulator="none") for m in self.profile.bench_models]
        variants += [v.network for v in self.result_variants()]  # e.g. timm:resnet18 with and without DSM
        return [OptsBenchConfig(v, size, chans, ncls) for v in dict.fromkeys(variants)]

    def accuracy_latency(self, bench_results: Sequence[Any]) -> pd.DataFrame:
        """One row per finished variant whose network was benchmarked: latency, MACs, params and test
        accuracy. A row with its own training (e.g. a longer schedule) shares its network's latency."""
        summary = self.summary(self.load(self.all_variants(), report_missing=True))
        if summary.empty:
            return pd.DataFrame()
        network = {v.name: v.network.name for v in self.all_variants()}
        rows = []
        for res in bench_results:
            for _, s in summary.iterrows():
                if network.get(s["variant"], s["variant"]) != res.name.rsplit("@", 1)[0]:
                    continue
                rows.append(
                    {
                        "label": s["variant"],
                        "modulator": res.modulator,
                        "latency_ms": res.latency_ms_median,
                        "macs": res.macs,
                        "params": res.params_deploy,
                        "accuracy": s["accuracy_mean"],
                        "accuracy_std": s["accuracy_std"],
                        "balanced_accuracy": s["balanced_accuracy_mean"],
                        "balanced_accuracy_std": s["balanced_accuracy_std"],
                        "n_runs": int(s["n_runs"]),
                        "run records": ", ".join(self._record_name(r) for r in s["runs"]),
                    }
                )
        return pd.DataFrame(rows)

    def _record_name(self, run_dir: str | Path) -> str:
        """``<variant>/<seed>/run.json`` under the runs directory (the full path when it lies elsewhere)."""
        path = Path(run_dir) / "run.json"
        return str(path.relative_to(self.runs_dir)) if path.is_relative_to(self.runs_dir) else str(path)

    def targets_report(self, runs: Sequence[Mapping[str, Any]], throughput: str | os.PathLike | None = None) -> str:
        """Markdown: the data set's targets (``TARGETS``) and whether the finished headline rows meet them;
        the speed-up target is read from ``throughput`` (default: the target's record in this checkout)."""
        targets = TARGETS.get(self.dataset)
        if targets is None:
            return f"No accuracy targets are set for {self.info.title}."
        speed = []
        if targets.speedup is not None:
            record = throughput or CHECKOUT / (targets.speedup_record or "")
            speed = [speedup_report(targets.speedup, record)]
        headline = Variant.make()
        chans, _, ncls = self.input_spec()
        model = create_model(headline.model, modulator=headline.modulator, in_chans=chans, num_classes=ncls)
        params = sum(p.numel() for p in model.parameters())
        small = params <= targets.max_params
        names = self.headline_variants()
        summary = self.summary([r for r in runs if r["variant"] in names])
        floor, goal, limit = 100 * targets.floor, 100 * targets.goal, targets.max_params / 1e6
        lines = [
            f"**Targets** for `dsm_net` + DSM on {self.info.title} (test split, single crop, no extra data, "
            f"checkpoint chosen on validation): floor {floor:.1f} %; goal at least {goal:.1f} % with at most "
            f"{limit:.1f} M parameters. {targets.context}",
            "",
            f"- parameters: {params / 1e6:.3f} M as trained, {'within' if small else '**over**'} the limit",
        ]
        if summary.empty:
            return "\n".join([*lines, "- accuracy: no finished run of `dsm_net` + DSM yet", *speed])
        best = summary.loc[summary["val_accuracy_mean"].idxmax()]  # chosen on validation, like a checkpoint
        acc, n = best["accuracy_mean"], int(best["n_runs"])
        verdict = {
            k: "met" if ok else "**not met**"
            for k, ok in (("floor", acc >= targets.floor), ("goal", acc >= targets.goal and small))
        }
        lines += [
            f"- row with the best validation accuracy ({100 * best['val_accuracy_mean']:.2f} %): "
            f"`{best['variant']}`, test {100 * acc:.2f} % "
            + (f"(mean of {n} runs)" if n > 1 else "(a single run: no seed spread behind it)"),
            f"- floor {floor:.1f} %: {verdict['floor']}",
            f"- goal {goal:.1f} % with at most {limit:.1f} M parameters: {verdict['goal']}",
            *speed,
        ]
        return "\n".join(lines)

    def describe(self) -> str:
        """Markdown: what this profile ran on this data set."""
        head = f"Data set **{self.info.title}** (`{self.dataset}`), reported protocol: {self.info.protocol}."
        if not self.info.real:
            head = (
                "These numbers come from the **synthetic** data set (procedural faces, not real people): "
                "they test the pipeline, they say nothing about facial-expression recognition. " + head
            )
        return head + "\n\n" + self.profile.describe()


def _train_threads(policy: int | str | None) -> int | None:
    """Threads for one CPU training run. "auto": one thread when other processes already keep more than a
    quarter of the CPU busy (a multi-threaded PyTorch process sharing cores slows down many-fold: measured
    17 vs 55 images/s on 2 cores), else PyTorch's default. The thread count is not part of the run's config."""
    if policy != "auto":
        return policy if isinstance(policy, int) else None
    return 1 if (os.cpu_count() or 1) > 1 and cpu_busy() > 0.25 else None


def banner(dataset: str) -> str:
    """A Markdown admonition for the top of every results notebook of ``dataset``."""
    info = DATASETS.get(dataset)
    if info is not None and not info.real:
        return (
            "```{warning}\nSynthetic data: procedurally drawn faces, not photographs of people. These results check "
            "that the pipeline runs end to end; they are not facial-expression-recognition results and must not be "
            "compared with the paper's numbers.\n```"
        )
    title = info.title if info else dataset
    return f"```{{note}}\nResults on **{title}**, computed by this repository's pipeline (see the run records).\n```"
