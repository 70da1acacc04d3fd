"""uint8 images -> normalised model input, one function shared by training, evaluation and prediction.

Prepared data sets store uint8 N x H x W (gray) or N x H x W x 3 (RGB) at their native
size; a model wants float N x C x S x S. Doing the conversion in one place, on batched
tensors (on the GPU when there is one), keeps train/eval/predict consistent and keeps
per-image PIL work out of the hot loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MEAN, STD = 0.5, 0.5  # images are mapped to [-1, 1]; gray and RGB alike
_RGB_TO_GRAY = (0.299, 0.587, 0.114)


def to_model_input(batch: torch.Tensor, in_chans: int, size: int | None = None) -> torch.Tensor:
    """uint8 (N,H,W) or (N,H,W,3) -> float (N,in_chans,size,size), normalised.

    Gray images are repeated to 3 channels for RGB models; RGB images are converted to
    luma for 1-channel models. Resizing is bilinear with antialiasing.
    """
    if batch.dtype != torch.uint8 or batch.ndim not in (3, 4):
        raise ValueError(f"expected uint8 N x H x W[x3], got {batch.dtype} {tuple(batch.shape)}")
    x = batch.unsqueeze(1) if batch.ndim == 3 else batch.permute(0, 3, 1, 2)
    x = x.float().div_(255.0)
    if x.shape[1] == 1 and in_chans == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and in_chans == 1:
        w = torch.tensor(_RGB_TO_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x - MEAN) / STD
