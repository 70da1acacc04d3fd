"""``dsm reproduce``: run every notebook with papermill for each data set, then build the book.

What is run — profiles, variants, the experiment on one data set — is described as data in
``dsm.study``, so the notebooks only call ``dsm`` and plot. This driver executes the notebooks
of ``NOTEBOOKS`` into ``book/results/<dataset>/``, writes a "how to prepare it" page for a real
data set that is not prepared, executes the data-set independent
``notebooks/using_the_model.ipynb`` (the released model on a photo and its runtime latency)
into ``book/results/`` once per released checkpoint, regenerates ``book/_toc.yml`` from what
exists and runs ``jupyter-book build``. ``--train-only`` trains the study's runs in the
background, most needed first, without notebooks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsm.data.build import positive_int
from dsm.errors import fail, one_line, warnings_as_lines
from dsm.study import PROFILES, DatasetInfo, Experiment, Profile, dataset_info, get_profile

PROG = "dsm reproduce"

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

BOOK_DATASETS = ("fer2013", "rafdb", "ckplus", "affectnet", "jaffe", "synthetic")  # one chapter each, in this order


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

    ``out`` is replaced only by a notebook that ran to the end: a failed run leaves the previous page
    as it was and its partial output in ``<out>.failed.ipynb`` (outside the book's table of contents).
    ``metadata`` goes into the executed notebook's metadata under ``dsm``."""
    import nbformat
    import papermill as pm

    out.parent.mkdir(parents=True, exist_ok=True)
    partial, failed = out.with_name(f"{out.stem}.partial.ipynb"), out.with_name(f"{out.stem}.failed.ipynb")
    try:
        pm.execute_notebook(
            str(notebooks_dir / f"{name}.ipynb"),
            str(partial),
            parameters=dict(parameters),
            kernel_name="python3",
            cwd=str(Path.cwd()),
            progress_bar=False,
            log_output=False,
            report_mode=False,
        )
    except BaseException:
        if partial.exists():
            os.replace(partial, failed)
        raise
    nb = nbformat.read(str(partial), as_version=4)
    nb.metadata.get("papermill", {})["output_path"] = str(out)
    _clean(nb, title)
    if metadata:
        nb.metadata["dsm"] = dict(metadata)
    nbformat.write(nb, str(partial))
    os.replace(partial, out)
    failed.unlink(missing_ok=True)
    return out


def _clean(nb: Any, title: str) -> None:
    """Give the executed notebook its page title, drop stderr noise (warnings, progress bars),
    machine-specific paths from papermill's metadata and its per-cell timings (a re-render of the same
    results then changes only what changed; the notebook's own start and end times stay)."""
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
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
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
    failures: list[str] | None = None,
) -> list[Path]:
    """Execute the data set's notebooks into ``book/results/<dataset>/``. With ``failures`` (a list), a
    notebook that fails is named there and the others still run (``--no-train`` early in a study: a page
    whose runs have not finished keeps its previous version); without, the first failure raises."""
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
        try:
            done.append(execute_notebook(name, out_dir / f"{name}.ipynb", params, title))
        except Exception as e:
            if failures is None:
                raise
            failures.append(f"{dataset}/{name}")
            print(f"[{dataset}] {name} FAILED, previous page kept: {one_line(e)[-300:]}", flush=True)
            continue
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


def _name_dir(text: str) -> tuple[str, str]:
    """--data-dir: ``fer2013=/data/fer`` -> ("fer2013", "/data/fer")."""
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, e.g. fer2013=/data/fer2013, got {text!r}")
    return name, path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", default="synthetic", help="comma list (default: synthetic); e.g. synthetic,fer2013")
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="how much to run (default: quick)")
    p.add_argument(
        "--data-root", default=None, help="prepared data sets as ROOT/<dataset>/ (default: $DSM_DATA_ROOT or ./data)"
    )
    p.add_argument(
        "--data-dir",
        action="append",
        type=_name_dir,
        default=[],
        metavar="NAME=DIR",
        help="a prepared data set elsewhere (repeatable)",
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
    p.add_argument(
        "--plan", action="store_true", help="list every run of the study in training order and where it stands; no work"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="with --train-only: CPU threads for training (default: the profile's)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="with --train-only: train with torch.compile (faster on CPU, see benchmarks/; same runs)",
    )
    p.add_argument("--no-build", action="store_true", help="run the notebooks but do not build the book")
    p.add_argument("--no-strict", action="store_true", help="build the book without -W -n (warnings not fatal)")


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    profile = get_profile(args.profile)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in datasets:
        try:
            dataset_info(d)
        except ValueError as e:
            return fail(f"--datasets: {e}", PROG)
    if (args.threads or args.compile) and not args.train_only:
        return fail("--threads and --compile apply to --train-only", PROG)
    selected = [n.strip() for n in args.notebooks.split(",") if n.strip()] if args.notebooks else [*NOTEBOOKS, USING]
    unknown = set(selected) - {*NOTEBOOKS, USING}
    if unknown:
        choices = ", ".join([*NOTEBOOKS, USING])
        return fail(f"--notebooks: unknown {sorted(unknown)}; choose from {choices}", PROG)
    notebooks = [n for n in selected if n in NOTEBOOKS]
    if not notebooks:
        datasets = []  # only the data-set independent page
    data_root = Path(args.data_root or os.environ.get("DSM_DATA_ROOT") or "data")
    runs_root = Path(args.runs_root or os.environ.get("DSM_RUNS_ROOT") or "runs")
    explicit = dict(args.data_dir)

    def data_dir_of(dataset: str, prepare: bool = True) -> Path:
        if dataset in explicit:
            return Path(explicit[dataset])
        if dataset_info(dataset).real:
            return data_root / dataset
        out = synthetic_dir(data_root, profile)
        return ensure_synthetic(out, profile) if prepare else out

    if args.plan or args.train_only:  # runs only: nothing is written into the book
        missing = []
        for dataset in datasets:
            data_dir = data_dir_of(dataset, prepare=args.train_only)
            if not (data_dir / "manifest.json").is_file():
                print(f"[{dataset}] skipped: {data_dir}/manifest.json not found")
                missing.append(f"{data_dir}/manifest.json")
                continue
            runs_dir = runs_root / dataset / profile.name
            if args.plan:
                plan = Experiment.create(profile, dataset, data_dir, runs_dir).plan()
                done = int(plan["state"].str.startswith("finished").sum())
                bare = int((plan["state"] == "finished (record only)").sum())
                weights = f" ({bare} with the record only, no checkpoint)" if bare else ""
                print(f"[{dataset}] {runs_dir}: {done} of {len(plan)} runs finished{weights}, in training order")
                print(plan.astype(object).where(plan.notna(), "-").to_string(index=False), flush=True)
                continue
            prof = dataclasses.replace(
                profile,
                train_threads=args.threads or profile.train_threads,
                overrides={**profile.overrides, **({"compile": True} if args.compile else {})},
            )
            exp = Experiment.create(prof, dataset, data_dir, runs_dir)
            with warnings_as_lines(PROG):  # e.g. a run that starts over: one line in the log
                exp.run(exp.training_order())
        if args.train_only:
            print(f"dsm reproduce --train-only: {time.perf_counter() - t_start:.0f} s", flush=True)
        if missing:  # the other data sets were done: the exit status says that one was not
            return fail(f"{', '.join(missing)}: not found (prepare the data set: data_scripts/prepare.py)", PROG)
        return 0

    book_dir = Path(args.book)
    if not (book_dir / "intro.md").is_file():
        return fail(f"{book_dir}: not the book's source directory (no intro.md)", PROG)
    write_figures(book_dir)
    failures: list[str] | None = [] if args.no_train else None  # training runs must not be skipped over
    for dataset in datasets:
        info = dataset_info(dataset)
        data_dir = data_dir_of(dataset)
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
        reproduce_dataset(dataset, profile, data_dir, runs_dir, book_dir, notebooks, not args.no_train, failures)
    if USING in selected:
        from dsm.checkpoint import CheckpointError

        try:
            reproduce_using(book_dir, profile, force=bool(args.notebooks))
        except CheckpointError as e:
            return fail(e, PROG)
    write_toc(book_dir)
    rc = 0 if args.no_build else build_book(book_dir, strict=not args.no_strict)
    book = "not built (--no-build)" if args.no_build else "built" if rc == 0 else "FAILED"
    print(f"dsm reproduce: {time.perf_counter() - t_start:.0f} s, book {book}", flush=True)
    if failures:
        print(f"dsm reproduce: notebooks failed, their previous pages kept: {', '.join(failures)}", flush=True)
        return rc or 1
    return rc


def copy_book(dest: Path, book_dir: Path = REPO / "book") -> Path:
    """A copy of the book (and the root ``_config.yml``) under ``dest``, for test builds: ``dest/book``."""
    shutil.copy2(REPO / "_config.yml", dest / "_config.yml")
    shutil.copytree(book_dir, dest / "book", ignore=shutil.ignore_patterns("_build", "results"))
    return dest / "book"


__all__ = ["NOTEBOOKS", "USING", "add_arguments", "copy_book", "reproduce_dataset", "reproduce_using", "run"]
