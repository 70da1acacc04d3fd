"""``dsm reproduce``: run every notebook with papermill for each data set, then build the book.

The experiments behind the book are described here as data, so the notebooks only call
``dsm`` and plot:

* ``Profile`` — how much to run (epochs, synthetic set size, seeds or folds, which
  modulators and which DSM design ablations, benchmark repetitions). ``smoke`` is for
  tests (seconds per notebook), ``quick`` is ``make reproduce`` on a laptop CPU (minutes,
  on the synthetic set), ``full`` is the paper-scale study (a GPU and real data).
* ``Variant`` — one model to train: model, modulator and their options. Options equal to
  a default are dropped, so "kernel 7" of the kernel ablation *is* the DSM run of the
  results table and trains once.
* ``Experiment`` — a profile applied to one prepared data set and one runs directory:
  it turns variants into ``TrainConfig``s under ``runs/<dataset>/<profile>/<variant>/<seed>``,
  trains or reloads them through ``dsm.runs.run_or_load`` (an interrupted reproduction
  continues where it stopped), and builds the benchmark and accuracy-latency tables.

The driver executes the notebooks of ``NOTEBOOKS`` into ``book/results/<dataset>/``, writes a
"how to prepare it" page for a real data set that is not prepared, executes the data-set
independent ``notebooks/using_the_model.ipynb`` (the released model on a photo and its runtime
latency) into ``book/results/`` once per released checkpoint, regenerates ``book/_toc.yml``
from what exists and runs ``jupyter-book build``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dsm.bench import BenchConfig
from dsm.config import TrainConfig, recipe
from dsm.registry import create_model, list_modulators

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("dataset_overview", "results", "ablations", "gate_maps", "efficiency")
NOTEBOOK_TITLES = {
    "dataset_overview": "Data",
    "results": "Results",
    "ablations": "Ablations",
    "gate_maps": "Gate maps",
    "efficiency": "Efficiency",
}
USING = "using_the_model"  # data-set independent: executed once per released checkpoint
USING_TITLE = "Example: the released model on a photo"
PHOTO = REPO / "tests" / "assets" / "astronaut.jpg"  # public domain, see tests/assets/README.md
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
BOOK_DATASETS = ("fer2013", "rafdb", "ckplus", "affectnet", "synthetic")  # one chapter each, in this order


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
    headline_seeds: tuple[int, ...] = ()  # more seeds for the headline row only (dsm_net + DSM)
    headline_epochs: int | None = None  # the headline row once more at this schedule (seed 0): how far it gets
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
                + (f", and {list(self.headline_seeds)} for dsm_net + DSM" if self.headline_seeds else "")
                + f" (k-fold data sets: folds {list(self.folds)})",
                *(
                    [f"- longer schedule: dsm_net + DSM also trained for {self.headline_epochs} epochs (one run)"]
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
        "label smoothing, flip/affine/erasing augmentation; half an hour to an hour per run on 2 cores. The "
        "study is trained over several sessions: a page lists the runs that have not finished yet.",
        recipe="cpu",
        overrides={"epochs": 8},
        headline_seeds=(1, 2),
        headline_epochs=30,
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
        """The headline row at the profile's longer schedule, if it names one."""
        epochs = self.profile.headline_epochs
        return [Variant.make(train_opts={"epochs": epochs})] if epochs else []

    def ablation_variants(self) -> dict[str, list[Variant]]:
        """Group -> variants: ``modulators`` (every compared modulator in dsm_net), then the DSM design groups."""
        groups = {"modulators": [Variant.make(modulator=m) for m in self.profile.ablation_modulators]}
        return groups | design_variants(self.profile.design)

    def gate_map_variants(self) -> list[Variant]:
        return [Variant.make(modulator="dsm"), Variant.make(modulator="cbam")]

    def training_order(self) -> list[Variant]:
        """Every variant the notebooks need, most needed first: the dsm_net rows of the results table, the
        gate-map models, the modulator comparison, the other models of the results table, the longer
        schedule, the design groups."""
        results, ablations, longer = self.result_variants(), self.ablation_variants(), self.schedule_variants()
        design = [v for g, vs in ablations.items() if g != "modulators" for v in vs]
        order = [v for v in results if v.model == "dsm_net" and v not in longer] + self.gate_map_variants()
        order += ablations["modulators"] + [v for v in results if v.model != "dsm_net"] + longer + design
        return list(dict.fromkeys(order))

    def all_variants(self) -> list[Variant]:
        out = self.result_variants() + [v for vs in self.ablation_variants().values() for v in vs]
        return list(dict.fromkeys(out))

    # configs and runs
    def repeats(self, variant: Variant | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(directory name, TrainConfig changes) per repeat: seeds, or folds on a k-fold data set.
        The headline variant (dsm_net + DSM) also gets the profile's ``headline_seeds``."""
        if self.info.protocol == "kfold":
            return [(f"fold{k}", {"protocol": "kfold", "fold": k}) for k in self.profile.folds]
        seeds = self.profile.seeds
        if variant == Variant.make():
            seeds = tuple(dict.fromkeys(seeds + self.profile.headline_seeds))
        return [(f"seed{s}", {"seed": s}) for s in seeds]

    def configs(self, variant: Variant) -> list[TrainConfig]:
        base = {**self.profile.overrides, **variant.train_fields(), "data": str(self.data_dir)}
        return [
            recipe(self.profile.recipe, **base, **changes, out=str(self.runs_dir / variant.name / name))
            for name, changes in self.repeats(variant)
        ]

    def run(self, variants: Iterable[Variant], log: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """Train (or reload finished) runs of every variant and repeat; returns their run records.

        Training output goes to ``runs_dir/train.log``; one line per run is printed. With ``train`` off,
        only the finished runs are returned and the missing ones are printed.
        """
        from dsm.runs import finished_run, run_or_load

        if not self.train:
            return self.load(variants, report_missing=True)
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
                    _torch_threads(threads),
                ):
                    print(f"== {cfg.out} ({time.strftime('%Y-%m-%d %H:%M:%S')}, threads {threads or 'default'})")
                    run = run or run_or_load(cfg)  # a finished run is not looked up twice
                run["variant"] = variant.name
                what = "loaded" if finished else f"trained in {time.perf_counter() - t0:.0f} s"
                acc = (run.get("test_metrics") or run.get("val_metrics") or {}).get("accuracy", float("nan"))
                print(f"{variant.name:<28} {Path(cfg.out).name:<7} {what:<18} accuracy {acc:.4f}")
                runs.append(run)
        return runs

    def load(self, variants: Iterable[Variant], report_missing: bool = False) -> list[dict[str, Any]]:
        """The finished runs of ``variants`` that exist (nothing is trained); ``report_missing`` prints the others."""
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
            print(f"not run yet ({len(missing)} of {len(runs) + len(missing)} runs): {', '.join(missing)}")
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

    # efficiency
    def input_spec(self) -> tuple[int, int, int]:
        """(in_chans, input_size, num_classes) the runs of this experiment use."""
        from dsm.data.format import load_prepared

        data = load_prepared(self.data_dir)
        cfg = recipe(self.profile.recipe, **self.profile.overrides)
        return cfg.in_chans or data.channels, cfg.input_size, len(data.classes)

    def bench_configs(self) -> list[BenchConfig]:
        """The profile's modulators in dsm_net, its DSM design variants, its reference models and every
        variant of the results table."""
        chans, size, ncls = self.input_spec()
        variants = [Variant.make(modulator=m) for m in self.profile.bench_modulators if m in list_modulators()]
        variants += [v for vs in design_variants(self.profile.design).values() for v in vs]
        variants += [Variant.make(model=m, modulator="none") for m in self.profile.bench_models]
        variants += self.result_variants()  # e.g. timm:resnet18 with and without DSM
        return [OptsBenchConfig(v, size, chans, ncls) for v in dict.fromkeys(variants)]

    def accuracy_latency(self, bench_results: Sequence[Any]) -> pd.DataFrame:
        """One row per benchmarked variant that has finished runs: latency, MACs, params and test accuracy."""
        runs = self.load(self.all_variants())
        summary = self.summary(runs)
        rows = []
        for res in bench_results:
            variant = res.name.rsplit("@", 1)[0]
            match = summary[summary["variant"] == variant] if not summary.empty else summary
            if match.empty:
                continue
            s = match.iloc[0]
            rows.append(
                {
                    "label": variant,
                    "modulator": res.modulator,
                    "latency_ms": res.latency_ms_median,
                    "macs": res.macs,
                    "params": res.params_deploy,
                    "accuracy": s["accuracy_mean"],
                    "accuracy_std": s["accuracy_std"],
                    "balanced_accuracy": s["balanced_accuracy_mean"],
                    "n_runs": int(s["n_runs"]),
                }
            )
        return pd.DataFrame(rows)

    def describe(self) -> str:
        """Markdown: what this profile ran on this data set."""
        head = f"Data set **{self.info.title}** (`{self.dataset}`), reported protocol: {self.info.protocol}."
        if not self.info.real:
            head = (
                "These numbers come from the **synthetic** data set (procedural faces, not real people): "
                "they test the pipeline, they say nothing about facial-expression recognition. " + head
            )
        return head + "\n\n" + self.profile.describe()


def cpu_busy(seconds: float = 0.5) -> float:
    """Fraction of all CPU time used by anything over the next ``seconds`` (Linux ``/proc/stat``; 0 elsewhere)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def _train_threads(policy: int | str | None) -> int | None:
    """Threads for one CPU training run. "auto": one thread when other processes already keep more than a
    quarter of the CPU busy (a multi-threaded PyTorch process sharing cores slows down many-fold: measured
    17 vs 55 images/s on 2 cores), else PyTorch's default. The thread count is not part of the run's config."""
    if policy != "auto":
        return policy if isinstance(policy, int) else None
    return 1 if (os.cpu_count() or 1) > 1 and cpu_busy() > 0.25 else None


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


# --- the driver --------------------------------------------------------------------------------------


def synthetic_dir(data_root: Path, profile: Profile) -> Path:
    default = PROFILES["quick"].synthetic_n
    return data_root / ("synthetic" if profile.synthetic_n == default else f"synthetic-{profile.synthetic_n}")


def ensure_synthetic(out: Path, profile: Profile, seed: int = 0) -> Path:
    """Prepare the embedded synthetic data set at ``out`` unless an identical one is there already
    (same generator version, size, number of images and seed)."""
    from dsm.data import prepare_dataset, synthetic

    want = {"n": profile.synthetic_n, "seed": seed, "size": profile.synthetic_size}
    manifest = out / "manifest.json"
    if manifest.is_file():
        have = json.loads(manifest.read_text())
        if have.get("options") == want and have.get("preparer_version") == synthetic.VERSION:
            return out
        print(f"{out}: prepared with other options or generator version; preparing it again", flush=True)
    print(f"preparing the synthetic data set ({profile.synthetic_n} images) in {out}", flush=True)
    prepare_dataset("synthetic", None, out, **want, overwrite=True, progress=False)
    return out


def not_prepared_page(info: DatasetInfo, expected: Path) -> str:
    return f"""# {info.title}: not prepared

When this book was built, no prepared {info.title} was found at `{expected}`
(no `manifest.json` there), so this chapter has no results yet. {info.title} cannot be
redistributed: obtain it from its authors {{cite:p}}`{info.cite}`, then prepare it once and
reproduce:

```bash
{info.prepare_command}
make reproduce DATASETS=synthetic,{info.name} PROFILE=quick   # or: dsm reproduce --datasets {info.name}
```

The preparer checks the image counts against the official release and writes
`data/{info.name}/manifest.json`; `dsm reproduce` then finds it (or pass `--data-root`,
or set `DSM_DATA_ROOT`).
"""


def execute_notebook(
    name: str,
    out: Path,
    parameters: Mapping[str, Any],
    title: str,
    notebooks_dir: Path = REPO / "notebooks",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Run ``notebooks/<name>.ipynb`` with papermill into ``out``; fails (raises) if any cell fails.

    ``metadata`` goes into the executed notebook's metadata under ``dsm``."""
    import nbformat
    import papermill as pm

    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(notebooks_dir / f"{name}.ipynb"),
        str(out),
        parameters=dict(parameters),
        kernel_name="python3",
        cwd=str(Path.cwd()),
        progress_bar=False,
        log_output=False,
        report_mode=False,
    )
    nb = nbformat.read(str(out), as_version=4)
    _clean(nb, title)
    if metadata:
        nb.metadata["dsm"] = dict(metadata)
    nbformat.write(nb, str(out))
    return out


def _clean(nb: Any, title: str) -> None:
    """Give the executed notebook its page title, drop stderr noise (warnings, progress bars) and
    machine-specific paths from papermill's metadata."""
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = _relative(Path(meta[key]))
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            first, _, rest = cell.source.lstrip().partition("\n")
            cell.source = f"# {title}\n{rest}"
            break
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                o
                for o in cell.outputs
                if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
                and "application/vnd.jupyter.widget-view+json" not in o.get("data", {})
            ]


def write_toc(book_dir: Path) -> Path:
    """``_toc.yml`` from the static pages and whatever ``book/results/<dataset>/`` holds."""
    results = book_dir / "results"

    def sections(dataset: str, names: Sequence[str]) -> list[str]:
        out = [f"results/{dataset}/{n}" for n in names if (results / dataset / f"{n}.ipynb").is_file()]
        if not out and (results / dataset / "not_prepared.md").is_file() and names[0] == "dataset_overview":
            out = [f"results/{dataset}/not_prepared"]
        return out

    def chapter(file: str, secs: list[str]) -> list[str]:
        lines = [f"      - file: {file}"]
        if secs:
            lines.append("        sections:")
            lines += [f"          - file: {s}" for s in secs]
        return lines

    lines = [
        "# Generated by `dsm reproduce` (dsm.reproduce.write_toc) from book/results/; edit the code, not this file.",
        "format: jb-book",
        "root: intro",
        "parts:",
        "  - caption: The method",
        "    chapters:",
        *chapter("method", []),
        *chapter("protocols", []),
        "  - caption: Data sets and results",
        "    chapters:",
    ]
    for ds in BOOK_DATASETS:
        lines += chapter(f"datasets/{ds}", sections(ds, ["dataset_overview", "results"]))
    lines += ["  - caption: Studies", "    chapters:"]
    for page, nb in (("ablations", "ablations"), ("efficiency", "efficiency"), ("gate_maps", "gate_maps")):
        lines += chapter(page, [s for ds in BOOK_DATASETS for s in sections(ds, [nb])])
    lines += ["  - caption: Practice", "    chapters:"]
    lines += chapter("using", [f"results/{USING}"] if (results / f"{USING}.ipynb").is_file() else [])
    for page in ("reproduce", "references"):
        lines += chapter(page, [])
    path = book_dir / "_toc.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_figures(book_dir: Path) -> None:
    from dsm.viz import dsm_diagram

    (book_dir / "figures").mkdir(parents=True, exist_ok=True)
    dsm_diagram().savefig(book_dir / "figures" / "dsm_module.png", dpi=110, bbox_inches="tight")


def build_book(book_dir: Path, strict: bool = True) -> int:
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(book_dir)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when below it (keeps executed notebooks machine-independent)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def reproduce_dataset(
    dataset: str,
    profile: Profile,
    data_dir: Path,
    runs_dir: Path,
    book_dir: Path,
    notebooks: Sequence[str] = NOTEBOOKS,
    train: bool = True,
) -> list[Path]:
    info = dataset_info(dataset)
    out_dir = book_dir / "results" / dataset
    params = {
        "dataset": dataset,
        "data_dir": _relative(data_dir),
        "profile": profile.name,
        "runs_dir": _relative(runs_dir),
        "train": train,
    }
    done = []
    for name in notebooks:
        t0 = time.perf_counter()
        print(f"[{dataset}] {name} ...", flush=True)
        title = f"{NOTEBOOK_TITLES[name]}: {info.title}"
        done.append(execute_notebook(name, out_dir / f"{name}.ipynb", params, title))
        print(f"[{dataset}] {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
    stale = out_dir / "not_prepared.md"
    if stale.exists():
        stale.unlink()
    return done


def using_parameters(profile: Profile, checkpoint: str | os.PathLike | None = None) -> dict[str, Any]:
    """papermill parameters of the "Using the model" notebook (``checkpoint`` None: the released model)."""
    return {
        "checkpoint": None if checkpoint is None else _relative(Path(checkpoint)),
        "photo": _relative(PHOTO),
        "runs": profile.runtime_runs,
        "warmup": profile.runtime_warmup,
        "threads": 1,
        "backends": list(profile.runtime_backends),
        "batches": [1, 32],
    }


def reproduce_using(
    book_dir: Path, profile: Profile, checkpoint: str | os.PathLike | None = None, force: bool = False
) -> Path | None:
    """Execute ``notebooks/using_the_model.ipynb`` into ``book/results/using_the_model.ipynb``.

    The page does not depend on a data set and is executed once per checkpoint: it is kept when it was
    made from the same checkpoint (the ``id`` both checkpoint files share) with the same parameters. When
    the released checkpoint is not there yet it is skipped (None; an existing page is kept), unless
    ``force``: then it is executed anyway, and a missing checkpoint raises ``CheckpointError``.
    """
    import nbformat

    from dsm.checkpoint import RELEASED, CheckpointError, checkpoint_paths

    path = RELEASED if checkpoint is None else Path(checkpoint)
    out = book_dir / "results" / f"{USING}.ipynb"
    st_path, js_path = checkpoint_paths(path)
    if not (st_path.is_file() and js_path.is_file()):
        missing = f"no checkpoint at {path} (.safetensors + .json)"
        if force:
            raise CheckpointError(f"{USING}: {missing}; `dsm train` one or pass the released model")
        kept = f"; keeping {out}" if out.is_file() else "; the 'Using the model' chapter has no example yet"
        print(f"[{USING}] skipped: {missing}{kept}", flush=True)
        return out if out.is_file() else None
    ckpt_id = json.loads(js_path.read_text()).get("id")
    params = using_parameters(profile, checkpoint)
    if out.is_file() and not force:
        nb = nbformat.read(str(out), as_version=4)
        same_params = nb.metadata.get("papermill", {}).get("parameters") == params
        if nb.metadata.get("dsm", {}).get("checkpoint_id") == ckpt_id and same_params:
            print(f"[{USING}] up to date ({out} was made from checkpoint {ckpt_id})", flush=True)
            return out
    t0 = time.perf_counter()
    print(f"[{USING}] {_relative(path)} ...", flush=True)
    meta = {"checkpoint": _relative(path), "checkpoint_id": ckpt_id}
    execute_notebook(USING, out, params, USING_TITLE, metadata=meta)
    print(f"[{USING}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", default="synthetic", help="comma list (default: synthetic); e.g. synthetic,fer2013")
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="how much to run (default: quick)")
    p.add_argument(
        "--data-root", default=None, help="prepared data sets as ROOT/<dataset>/ (default: $DSM_DATA_ROOT or ./data)"
    )
    p.add_argument(
        "--data-dir", action="append", default=[], metavar="NAME=DIR", help="a prepared data set elsewhere (repeatable)"
    )
    p.add_argument(
        "--runs-root", default=None, help="runs as ROOT/<dataset>/<profile>/ (default: $DSM_RUNS_ROOT or ./runs)"
    )
    p.add_argument("--book", default="book", help="the book's source directory (default: book)")
    p.add_argument(
        "--notebooks",
        default=None,
        help=f"comma list of notebooks to run (default: all; {USING} only when its page is missing or was made "
        "from another checkpoint, naming it re-executes it)",
    )
    p.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: the notebooks use the finished runs and list the missing ones (a study in progress)",
    )
    p.add_argument(
        "--train-only",
        action="store_true",
        help="train (or resume) every run the notebooks need, most needed first, and stop: no notebooks, no book",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for training (default: the profile's)")
    p.add_argument(
        "--compile", action="store_true", help="train with torch.compile (faster on CPU, see benchmarks/; same runs)"
    )
    p.add_argument("--no-build", action="store_true", help="run the notebooks but do not build the book")
    p.add_argument("--no-strict", action="store_true", help="build the book without -W -n (warnings not fatal)")


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    profile = get_profile(args.profile)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in datasets:
        dataset_info(d)
    selected = [n.strip() for n in args.notebooks.split(",") if n.strip()] if args.notebooks else [*NOTEBOOKS, USING]
    unknown = set(selected) - {*NOTEBOOKS, USING}
    if unknown:
        raise SystemExit(f"unknown notebooks {sorted(unknown)}; choose from {', '.join([*NOTEBOOKS, USING])}")
    notebooks = [n for n in selected if n in NOTEBOOKS]
    if not notebooks:
        datasets = []  # only the data-set independent page
    data_root = Path(args.data_root or os.environ.get("DSM_DATA_ROOT") or "data")
    runs_root = Path(args.runs_root or os.environ.get("DSM_RUNS_ROOT") or "runs")
    explicit = dict(item.split("=", 1) for item in args.data_dir)
    book_dir = Path(args.book)
    if not (book_dir / "intro.md").is_file():
        raise SystemExit(f"{book_dir}: not the book's source directory (no intro.md)")

    write_figures(book_dir)
    for dataset in datasets:
        info = dataset_info(dataset)
        if dataset in explicit:
            data_dir = Path(explicit[dataset])
        elif info.real:
            data_dir = data_root / dataset
        else:
            data_dir = ensure_synthetic(synthetic_dir(data_root, profile), profile)
        if not (data_dir / "manifest.json").is_file():
            out_dir = book_dir / "results" / dataset
            if any(out_dir.glob("*.ipynb")):
                print(f"[{dataset}] {data_dir}/manifest.json not found; keeping the results already in {out_dir}")
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "not_prepared.md").write_text(not_prepared_page(info, data_dir / "manifest.json"))
            print(f"[{dataset}] skipped: {data_dir}/manifest.json not found; wrote {out_dir}/not_prepared.md")
            continue
        runs_dir = runs_root / dataset / profile.name
        if args.train_only:
            prof = dataclasses.replace(
                profile,
                train_threads=args.threads or profile.train_threads,
                overrides={**profile.overrides, **({"compile": True} if args.compile else {})},
            )
            exp = Experiment.create(prof, dataset, data_dir, runs_dir)
            exp.run(exp.training_order())
            continue
        reproduce_dataset(dataset, profile, data_dir, runs_dir, book_dir, notebooks, train=not args.no_train)
    if args.train_only:
        print(f"dsm reproduce --train-only: {time.perf_counter() - t_start:.0f} s", flush=True)
        return 0
    if USING in selected:
        from dsm.checkpoint import CheckpointError

        try:
            reproduce_using(book_dir, profile, force=bool(args.notebooks))
        except CheckpointError as e:
            raise SystemExit(f"dsm reproduce: {e}") from None
    write_toc(book_dir)
    rc = 0 if args.no_build else build_book(book_dir, strict=not args.no_strict)
    print(f"dsm reproduce: {time.perf_counter() - t_start:.0f} s, book {'built' if rc == 0 else 'FAILED'}", flush=True)
    return rc


def copy_book(dest: Path, book_dir: Path = REPO / "book") -> Path:
    """A copy of the book (and the root ``_config.yml``) under ``dest``, for test builds: ``dest/book``."""
    shutil.copy2(REPO / "_config.yml", dest / "_config.yml")
    shutil.copytree(book_dir, dest / "book", ignore=shutil.ignore_patterns("_build", "results"))
    return dest / "book"


__all__ = [
    "DATASETS",
    "PROFILES",
    "Experiment",
    "Profile",
    "Variant",
    "banner",
    "get_profile",
    "run",
]
