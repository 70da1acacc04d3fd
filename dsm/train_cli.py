"""``dsm train``: a recipe, then a YAML file, then flags, each overriding the one before."""

from __future__ import annotations

import argparse
import dataclasses
import json

import yaml

from dsm.config import RECIPES, TrainConfig, recipe
from dsm.errors import fail, one_line, warnings_as_lines

PROG = "dsm train"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", help="prepared data set directory (data_scripts/prepare.py); required unless --config has it"
    )
    p.add_argument(
        "--recipe",
        default=None,
        choices=list(RECIPES),
        help="named recipe (default: 'default', the authors' optimiser, schedule and augmentation at their "
        "112x112 input with the data's own channels; 'paper' is the same with 3-channel input; 'cpu' is 48x48 gray)",
    )
    p.add_argument("--config", default=None, help="YAML file of TrainConfig fields")
    p.add_argument("--model", default=None, help="dsm_net or timm:<arch>")
    p.add_argument("--modulator", default=None, help="registered modulator, or none")
    p.add_argument(
        "--init-from",
        default=None,
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights (a run's best, or dsm/assets/checkpoints/fer2013_dsm_net) "
        "instead of a random init",
    )
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--in-chans", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--out", default=None, help="run directory (default runs/<dataset>/<model>-<modulator>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last if present")
    p.add_argument("--protocol", default=None, choices=["official", "paper-random", "kfold"])
    p.add_argument("--run-index", type=int, default=None, help="paper-random: 1..5")
    p.add_argument("--fold", type=int, default=None, help="kfold: fold used as test")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the training model")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop cleanly before the next epoch would end past this many seconds (--resume continues)",
    )
    p.add_argument(
        "--defer-test",
        action="store_true",
        default=None,
        help="train, but leave the final evaluation (validation and test) to the next --resume",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any TrainConfig field (YAML value)")
    p.add_argument("--throughput", action="store_true", help="measure images/s (full step vs fwd+bwd) and exit")
    p.add_argument("--throughput-steps", type=int, default=20, metavar="N", help="timed steps (default 20)")
    # the old names, which read like ``dsm reproduce --profile`` (a study's size); kept so recorded commands still run
    p.add_argument("--profile", action="store_true", dest="throughput", help=argparse.SUPPRESS)
    p.add_argument("--profile-steps", type=int, dest="throughput_steps", help=argparse.SUPPRESS)


_FLAGS = (
    "data",
    "model",
    "modulator",
    "init_from",
    "input_size",
    "in_chans",
    "epochs",
    "batch_size",
    "lr",
    "out",
    "protocol",
    "run_index",
    "fold",
    "seed",
    "device",
    "threads",
    "compile",
    "time_limit",
    "defer_test",
)


def _load_yaml(path: str, recipe_name: str | None) -> TrainConfig:
    try:
        return TrainConfig.from_yaml(path, recipe_name)
    except OSError as e:
        raise ValueError(f"--config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path}: not valid YAML ({one_line(e)})") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config {path}: not a UTF-8 text file") from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config; ValueError naming the flag or file for bad input."""
    # recipe, then the YAML file's fields, then flags: --recipe names the recipe the file's fields change
    cfg = _load_yaml(args.config, args.recipe) if args.config else recipe(args.recipe or "default")
    changes = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            changes[key.replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {item!r}: VALUE is not valid YAML") from None
    if changes.get("modulator") in ("none", ""):
        changes["modulator"] = None
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown := set(changes) - names:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    cfg = cfg.replace(**changes)
    if not cfg.data:
        raise ValueError("--data DIR is required (a prepared data set)")
    cfg.check()
    if cfg.out == TrainConfig.out:  # not chosen by flag or YAML: name the run after what it trains
        name = f"{cfg.model.replace(':', '-')}-{cfg.modulator or 'none'}-s{cfg.seed}"
        cfg = cfg.replace(out=f"runs/{_dataset_name(cfg.data)}/{name}")
    return cfg


def _dataset_name(data: str) -> str:
    from pathlib import Path

    manifest = Path(data) / "manifest.json"
    try:
        return json.loads(manifest.read_text()).get("dataset", Path(data).name)
    except (OSError, ValueError, AttributeError):  # missing or broken: loading the data set reports it
        return Path(data).name


def run(args: argparse.Namespace) -> int:
    from dsm.checkpoint import CheckpointError
    from dsm.data.format import DataError
    from dsm.train import pick_device

    try:
        cfg = config_from_args(args)
    except ValueError as e:
        return fail(e, PROG)
    try:
        pick_device(cfg.device)
    except RuntimeError as e:
        return fail(f"--device {cfg.device}: {e}", PROG)
    try:
        if args.throughput:
            from dsm.throughput import profile

            print(json.dumps(profile(cfg, steps=args.throughput_steps), indent=1))
            return 0
        from pathlib import Path

        from dsm.train import train

        if not args.resume and (Path(cfg.out) / "last.json").is_file():
            return fail(f"{cfg.out} already holds a run; pass --resume to continue it or a new --out", PROG)
        with warnings_as_lines(PROG):
            record = train(cfg, resume=args.resume)
    except (DataError, CheckpointError, ValueError, FloatingPointError) as e:  # bad data or run; a diverged run
        return fail(e, PROG)
    except OSError as e:  # --out not writable, not a folder
        return fail(f"{e.filename or cfg.out}: {e.strerror or e}", PROG)
    if record["status"] != "finished":
        print(json.dumps({"out": cfg.out, "status": record["status"], "epochs_done": len(record["epochs"])}))
        return 0
    test = record["test_metrics"] or {}
    print(
        json.dumps(
            {
                "out": cfg.out,
                "best_epoch": record["best_epoch"],
                "val_accuracy": record["val_metrics"]["accuracy"],
                "test_accuracy": test.get("accuracy"),
            }
        )
    )
    return 0
