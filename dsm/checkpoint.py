"""Checkpoints as safetensors + a JSON sidecar: loading never unpickles anything.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` (tensors only) and ``NAME.json``
(everything else: how to build the model, class names, input size, the run's config,
metrics). Model weights live under the ``model.`` prefix; training checkpoints add
``optim.*`` tensors and RNG states. Both files are written to temporary names and
renamed; a shared random ``id`` in both tells a torn pair from a good one.

The JSON's ``model`` entry is ``{"name": ..., "kwargs": {...}}`` for ``dsm.create_model``;
``input`` is ``{"size": S, "channels": C}``; ``classes`` are canonical class names.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from dsm.data.format import sha256_file
from dsm.errors import one_line
from dsm.registry import create_model

RELEASED = Path(__file__).resolve().parent / "assets" / "checkpoints" / "fer2013_dsm_net"
"""The released FER2013 model (``.safetensors`` + ``.json``), the default of evaluate and predict."""


class CheckpointError(Exception):
    """A missing, torn or foreign checkpoint; the message names the file."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``run/best`` or ``run/best.safetensors`` or ``run/best.json`` -> both file paths."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """Write the pair atomically; returns the ``.safetensors`` path."""
    st_path, js_path = checkpoint_paths(path)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_id = uuid.uuid4().hex
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    tmp_st, tmp_js = st_path.with_name(st_path.name + ".tmp"), js_path.with_name(js_path.name + ".tmp")
    save_file(tensors, str(tmp_st), metadata={"id": ckpt_id})
    os.chmod(tmp_st, 0o666 & ~_umask())  # safetensors creates it 0600; the pair should share one mode
    tmp_js.write_text(json.dumps({**info, "id": ckpt_id}, indent=1, default=str) + "\n")
    os.replace(tmp_st, st_path)
    os.replace(tmp_js, js_path)
    return st_path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, info) of a checkpoint pair, checked to belong together."""
    st_path, js_path = checkpoint_paths(path)
    for p in (st_path, js_path):
        if p.is_dir():
            raise CheckpointError(f"{p}: a folder, not a checkpoint file (pass the checkpoint's path without suffix)")
        if not p.is_file():
            raise CheckpointError(f"{p}: checkpoint file missing")
        if not os.access(p, os.R_OK):
            raise CheckpointError(f"{p}: not readable (permission denied)")
    try:
        info = json.loads(js_path.read_text())
    except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError for a file that is not text
        raise CheckpointError(f"{js_path}: not valid JSON ({e})") from e
    except OSError as e:
        raise CheckpointError(f"{js_path}: cannot read ({e.strerror or e})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{js_path}: not a checkpoint description (a JSON {type(info).__name__}, not an object)")
    try:
        from safetensors import safe_open

        with safe_open(str(st_path), "pt") as f:
            st_id = (f.metadata() or {}).get("id")
        tensors = load_file(str(st_path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{st_path}: not a readable safetensors file ({e})") from e
    if st_id != info.get("id"):
        raise CheckpointError(f"{st_path}: does not belong to {js_path.name} (torn or mixed checkpoint)")
    return tensors, info


def model_state(tensors: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def build_model(info: dict[str, Any], where: str | Path | None = None) -> nn.Module:
    """The untrained model a checkpoint's JSON describes; ``where`` (the JSON's path) names it in errors."""
    name = where or f"checkpoint {info.get('id', '?')}"
    spec = info.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{name}: no 'model' entry to build the network from")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{name}: 'model.kwargs' is not an object")
    try:
        return create_model(spec["name"], **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # unknown name or arguments: a foreign checkpoint
        raise CheckpointError(f"{name}: cannot build model {spec['name']!r} ({one_line(e)})") from None


def _check_deployable(info: dict[str, Any], js_path: Path) -> None:
    """What predict, evaluate and export read besides the model: class names and input size/channels."""
    classes, inp = info.get("classes"), info.get("input")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{js_path}: 'classes' must be a non-empty list of class names")
    if not (isinstance(inp, dict) and all(isinstance(inp.get(k), int) and inp[k] > 0 for k in ("size", "channels"))):
        raise CheckpointError(f'{js_path}: \'input\' must be {{"size": S, "channels": C}} with positive integers')


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(eval-mode model with its weights, info) from a checkpoint."""
    tensors, info = load_checkpoint(path)
    st_path, js_path = checkpoint_paths(path)
    _check_deployable(info, js_path)
    model = build_model(info, js_path)
    _load_weights(model, tensors, st_path, f"the model {js_path.name} describes")
    _check_fits(model.eval(), info, js_path)
    return model.to(device), info


@torch.no_grad()
def _check_fits(model: nn.Module, info: dict[str, Any], js_path: Path) -> None:
    """The JSON's 'input' and 'classes' must describe the network: one forward pass of a blank image says so
    here, in one line naming the file, rather than deep inside whatever command reads the checkpoint next."""
    size, channels, classes = info["input"]["size"], info["input"]["channels"], info["classes"]
    try:
        out = model(torch.zeros(1, channels, size, size))
    except RuntimeError as e:
        why = f"the network does not take the input it names ({channels} channels, {size} px)"
        raise CheckpointError(f"{js_path}: {why}: {one_line(e)[:200]}") from None
    if out.ndim != 2 or out.shape[1] != len(classes):
        raise CheckpointError(
            f"{js_path}: 'classes' names {len(classes)} classes, the network gives {out.shape[-1]} outputs"
        )


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], st_path: Path, what: str) -> None:
    try:
        missing, unexpected = model.load_state_dict(model_state(tensors), strict=False)
    except RuntimeError as e:  # shapes that disagree (e.g. another number of classes)
        raise CheckpointError(f"{st_path}: weights do not fit {what} ({one_line(e)[:300]})") from None
    if missing or unexpected:
        raise CheckpointError(f"{st_path}: weights do not fit {what} (missing {missing[:3]}, extra {unexpected[:3]})")


def init_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Start a training ``model`` from a checkpoint's weights (``TrainConfig.init_from``): fine-tuning, or one
    more leg of a schedule whose optimiser state was not kept. Returns what the run record keeps of the start:
    the checkpoint's path, sha256 and id, and the run and epoch it came from."""
    tensors, info = load_checkpoint(path)
    st_path, _ = checkpoint_paths(path)
    _load_weights(model, tensors, st_path, "the model this run trains")
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    return {
        "path": str(st_path.with_suffix("")),
        "sha256": sha256_file(st_path),
        "id": info.get("id"),
        "run": config.get("out"),
        "epoch": info.get("epoch"),
    }
