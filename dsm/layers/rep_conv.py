"""RepVGG-style re-parameterisable convolution.

Training form: a k x k conv+BN branch, a parallel 1 x 1 conv+BN branch (when k > 1)
and an identity BN branch (when shapes allow), summed and activated. ``fuse()``
folds all branches into one k x k conv with bias, so the deployed network is a
plain conv stack whose logits equal the training form's in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


def _fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepConv(nn.Module):
    """k x k conv (+ 1 x 1 and identity branches while training), fusable to one conv."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        use_identity: bool = True,
        use_scale: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:  # "same" padding k // 2 and the centred 1 x 1 branch need a centre tap
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_chs, self.out_chs, self.kernel_size = in_chs, out_chs, kernel_size
        self.stride, self.groups = stride, groups
        self.conv = _conv_bn(in_chs, out_chs, kernel_size, stride, groups)
        self.scale = _conv_bn(in_chs, out_chs, 1, stride, groups) if use_scale and kernel_size > 1 else None
        identity_ok = use_identity and in_chs == out_chs and stride == 1
        self.identity = nn.BatchNorm2d(out_chs) if identity_ok else None
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        y = self.conv(x)
        if self.scale is not None:
            y = y + self.scale(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    @torch.no_grad()
    def _fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        k, b = _fold_bn(self.conv[0].weight, self.conv[1])
        pad = self.kernel_size // 2
        if self.scale is not None:
            k1, b1 = _fold_bn(self.scale[0].weight, self.scale[1])
            k, b = k + F.pad(k1, [pad] * 4), b + b1
        if self.identity is not None:
            per_group = self.in_chs // self.groups
            eye = torch.zeros_like(self.conv[0].weight)
            for i in range(self.out_chs):
                eye[i, i % per_group, pad, pad] = 1.0
            ki, bi = _fold_bn(eye, self.identity)
            k, b = k + ki, b + bi
        return k, b

    @torch.no_grad()
    def fuse(self) -> None:
        """Replace the branches by one biased conv (idempotent)."""
        if self.fused is not None:
            return
        k, b = self._fused_kernel_bias()
        conv = self.conv[0]
        self.fused = nn.Conv2d(
            self.in_chs, self.out_chs, self.kernel_size, self.stride, self.kernel_size // 2, groups=self.groups
        ).to(k.device, k.dtype)
        self.fused.weight.copy_(k)
        self.fused.bias.copy_(b)
        del conv
        self.conv = self.scale = self.identity = None  # type: ignore[assignment]
