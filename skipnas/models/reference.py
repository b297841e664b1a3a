"""The classic U-Net as the widely used reference implementation builds it (milesial/Pytorch-UNet).

Kept for parity tests and speed benchmarks against :func:`skipnas.models.build_model`; the
``standard`` genome at width 64 has the same layers. Here: ReLU, bilinear upsampling, ``conv_bias``
selects the older releases' biased convolutions (the current release has none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None, bias: bool) -> None:
        mid_channels = mid_channels or out_channels
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _Up(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bias: bool) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = _DoubleConv(in_channels, out_channels, in_channels // 2, bias)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1 = self.up(x1)
        dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class ClassicUNet(nn.Module):
    """Bilinear U-Net: widths w, 2w, 4w, 8w, bottleneck 8w (``1024 // 2`` at w = 64)."""

    def __init__(self, in_channels: int = 1, classes: int = 1, width: int = 64, conv_bias: bool = True) -> None:
        super().__init__()
        w, b = width, conv_bias
        self.inc = _DoubleConv(in_channels, w, None, b)
        self.downs = nn.ModuleList(
            [_DoubleConv(w, 2 * w, None, b), _DoubleConv(2 * w, 4 * w, None, b),
             _DoubleConv(4 * w, 8 * w, None, b), _DoubleConv(8 * w, 8 * w, None, b)]
        )
        self.ups = nn.ModuleList(
            [_Up(16 * w, 4 * w, b), _Up(8 * w, 2 * w, b), _Up(4 * w, w, b), _Up(2 * w, w, b)]
        )
        self.outc = nn.Conv2d(w, classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)
