"""Random-init checkpoints for the tests of export and prediction (no training needed)."""

from pathlib import Path

import torch

import dsm
from dsm.checkpoint import save_checkpoint

CLASSES = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]


def random_checkpoint(
    path: Path,
    in_chans: int = 1,
    size: int = 48,
    modulator: str = "dsm",
    head_scale: float = 1.0,
    classes: list[str] = CLASSES,
) -> Path:
    """A seeded random dsm_net checkpoint; ``head_scale`` > 1 makes logits O(1), so tight tolerances test something."""
    torch.manual_seed(0)
    kwargs = {"num_classes": len(classes), "in_chans": in_chans, "modulator": modulator}
    model = dsm.create_model("dsm_net", **kwargs)
    with torch.no_grad():
        model.fc.weight.mul_(head_scale)
    info = {
        "model": {"name": "dsm_net", "kwargs": kwargs},
        "classes": classes,
        "input": {"size": size, "channels": in_chans},
    }
    save_checkpoint(path, {"model." + k: v for k, v in model.state_dict().items()}, info)
    return path
