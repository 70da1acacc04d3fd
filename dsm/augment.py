"""Batched training augmentation on tensors (on the GPU when there is one).

torchvision's v2 transforms draw one set of random parameters per call, so a batch
would get one flip, one crop and one erased box for all its images; per-image PIL
work is what makes a 2-core CPU input-bound. Here each image of a batch gets its own
flip, affine jitter (one ``grid_sample`` for the whole batch) and erased box, all
drawn from torch's global RNG so that seeding an epoch makes it reproducible.
MixUp/CutMix are torchvision's (they are batch transforms already).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


def random_hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_affine(x: torch.Tensor, scale: float = 0.1, rotation: float = 10.0) -> torch.Tensor:
    """Per-image rotation (+- ``rotation`` degrees), zoom (+- ``scale``) and shift (+- ``scale``)."""
    n = x.shape[0]
    u = torch.rand(n, 4, device=x.device) * 2 - 1
    angle = u[:, 0] * math.radians(rotation)
    zoom = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * scale], 1), torch.stack([sin, cos, u[:, 3] * scale], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_erasing(
    x: torch.Tensor, p: float = 0.5, area: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3)
) -> torch.Tensor:
    """Erase one random box per selected image with zeros (the normalised mean), as in Zhong et al."""
    n, _, h, w = x.shape
    dev = x.device
    frac = torch.empty(n, device=dev).uniform_(*area)
    logr = torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(logr)
    bh = (torch.sqrt(frac * h * w * r)).clamp(1, h)
    bw = (torch.sqrt(frac * h * w / r)).clamp(1, w)
    top = torch.rand(n, device=dev) * (h - bh)
    left = torch.rand(n, device=dev) * (w - bw)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    box = (
        (ys >= top.view(-1, 1, 1))
        & (ys < (top + bh).view(-1, 1, 1))
        & (xs >= left.view(-1, 1, 1))
        & (xs < (left + bw).view(-1, 1, 1))
    )
    on = (torch.rand(n, device=dev) < p).view(-1, 1, 1)
    return x.masked_fill((box & on).unsqueeze(1), 0.0)


class BatchAugment:
    """The training augmentation of a config, applied to a normalised N x C x H x W batch."""

    def __init__(
        self,
        num_classes: int,
        hflip: bool = True,
        crop_scale: float = 0.0,
        rotation: float = 0.0,
        erasing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
    ) -> None:
        self.hflip, self.crop_scale, self.rotation, self.erasing = hflip, crop_scale, rotation, erasing
        mixers = [m for a, m in ((mixup, v2.MixUp), (cutmix, v2.CutMix)) if a > 0]
        alphas = [a for a in (mixup, cutmix) if a > 0]
        self.mix = (
            v2.RandomChoice([m(alpha=a, num_classes=num_classes) for m, a in zip(mixers, alphas, strict=True)])
            if mixers
            else None
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the augmented batch and targets (class indices, or soft targets under MixUp/CutMix)."""
        if self.hflip:
            x = random_hflip(x)
        if self.crop_scale > 0 or self.rotation > 0:
            x = random_affine(x, self.crop_scale, self.rotation)
        if self.erasing > 0:
            x = random_erasing(x, self.erasing)
        if self.mix is not None:
            x, y = self.mix(x, y)
        return x, y
