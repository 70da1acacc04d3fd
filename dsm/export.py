"""Checkpoint -> ONNX: the fused (deployed) model, with a dynamic batch axis by default.

The file carries what a consumer needs without dsm, as JSON strings in ``metadata_props``:
``classes``, ``input`` (size, channels, layout and the normalisation of
``dsm.preprocess``), ``model`` (the dsm spec) and ``checkpoint_id``.

Exporter: the TorchScript-based one by default. It writes exactly the requested opset
and takes a fraction of a second; torch 2.14's torch.export-based ("dynamo") exporter
also handles every registered modulator, but cannot convert this graph down to opset 17
(it logs a converter traceback and writes opset 18). ``exporter="dynamo"`` selects it,
and it is the fallback should the TorchScript exporter fail or disappear. Either way a file
whose opset is not the one asked for is an ``ExportError``, and nothing is left at the target;
the written file is always one self-contained ``.onnx`` (no ``.onnx.data`` beside it).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn

import dsm
from dsm.checkpoint import load_model
from dsm.errors import one_line, parents_made_for
from dsm.preprocess import MEAN, STD
from dsm.reparam import reparameterize

INPUT, OUTPUT = "input", "logits"


def opset_range(exporter: str = "torchscript") -> tuple[int, int]:
    """The ONNX opsets ``exporter`` can write with the installed PyTorch."""
    from torch.onnx import _constants as c

    if exporter == "dynamo":
        return 18, c.ONNX_MAX_OPSET  # the dynamo exporter starts at opset 18
    return c.ONNX_MIN_OPSET, c.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET


class ExportError(ValueError):
    """The exporter could not write what was asked (e.g. another opset); nothing is left at the target."""


def export_model(
    model: nn.Module,
    path: str | Path,
    input_shape: Sequence[int],
    opset: int = 17,
    dynamic_batch: bool = True,
    metadata: dict[str, Any] | None = None,
    exporter: str = "torchscript",
) -> Path:
    """Write ``model`` (exported as is: fuse it first) to ONNX; ``metadata`` values become JSON strings.
    The caller's model is left as it was (device, train/eval mode): a CPU copy in eval mode is exported."""
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"unknown exporter {exporter!r}: torchscript or dynamo")
    path = Path(path)
    with parents_made_for(path):
        return _export(model, path, input_shape, opset, dynamic_batch, metadata, exporter)


def _export(
    model: nn.Module,
    path: Path,
    input_shape: Sequence[int],
    opset: int,
    dynamic_batch: bool,
    metadata: dict[str, Any] | None,
    exporter: str,
) -> Path:
    model = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(*input_shape)
    # exporters write beside their target (dynamo adds NAME.data): work in a scratch folder, move one file at the end
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as scratch:
        raw, final = Path(scratch) / "raw.onnx", Path(scratch) / "final.onnx"
        failed = ""
        if exporter == "torchscript":
            try:
                _export_torchscript(model, x, raw, opset, dynamic_batch)
            except Exception as e:  # noqa: BLE001  (any exporter failure: try the other one)
                failed = f"the TorchScript exporter failed ({one_line(e)[:200]}); "
                warnings.warn(f"{failed}using the dynamo exporter", stacklevel=2)
                exporter = "dynamo"
        if exporter == "dynamo":
            _export_dynamo(model, x, raw, opset, dynamic_batch)
        proto = onnx.load(str(raw))  # with any external data folded in: the result is one self-contained file
        if (written := opset_of(proto)) != opset:
            raise ExportError(f"{path}: {failed}the {exporter} exporter wrote opset {written}, not {opset}")
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        proto.producer_name, proto.producer_version = "dsm", dsm.__version__
        onnx.checker.check_model(proto)
        onnx.save(proto, str(final))
        os.replace(final, path)
    return path


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic_batch: bool) -> None:
    axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy exporter": chosen on purpose, see above
        warnings.simplefilter("ignore", FutureWarning)  # its internal use of torch.jit
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            opset_version=opset,
            dynamic_axes=axes,
            dynamo=False,
        )


def _export_dynamo(model: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic_batch: bool) -> None:
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=[INPUT],
        output_names=[OUTPUT],
        opset_version=opset,
        dynamic_shapes=shapes,
        dynamo=True,
        verbose=False,
    )


def export_checkpoint(
    checkpoint: str | Path,
    path: str | Path,
    opset: int = 17,
    dynamic_batch: bool = True,
    batch: int = 1,
    exporter: str = "torchscript",
) -> Path:
    """Export a checkpoint's fused model; ``batch`` is the fixed batch size when not dynamic."""
    model, info = load_model(checkpoint)
    size, chans = int(info["input"]["size"]), int(info["input"]["channels"])
    metadata = {
        "classes": list(info["classes"]),
        "input": {
            "size": size,
            "channels": chans,
            "layout": "NCHW",
            "color": "gray" if chans == 1 else "RGB",
            "normalize": f"x / 255 then (x - {MEAN}) / {STD}",
            "mean": MEAN,
            "std": STD,
        },
        "model": info.get("model"),
        "checkpoint_id": info.get("id"),
    }
    fused = reparameterize(model)
    return export_model(fused, path, (batch, chans, size, size), opset, dynamic_batch, metadata, exporter)


def opset_of(model: onnx.ModelProto | str | Path) -> int:
    """The default-domain opset of an ONNX model or file."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX file, JSON values decoded."""
    out = {}
    for p in onnx.load(str(path), load_external_data=False).metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except json.JSONDecodeError:
            out[p.key] = p.value
    return out


def session(path: str | Path, threads: int | None = None):  # -> onnxruntime.InferenceSession
    """A CPU onnxruntime session; ``threads`` sets intra-op threads (default: onnxruntime's)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def max_abs_error(path: str | Path, model: nn.Module, input_shape: Sequence[int], seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch| logit difference on a random input of ``input_shape`` (the model run
    in eval mode on whatever device it is, then put back in its mode)."""
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    device, was_training = next(model.parameters(), torch.empty(0)).device, model.training
    with torch.inference_mode():
        ref = model.eval()(x.to(device)).float().cpu().numpy()
    model.train(was_training)
    got = session(path).run(None, {INPUT: x.numpy()})[0]
    return float(np.abs(got - ref).max())
