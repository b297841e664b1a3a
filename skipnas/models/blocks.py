"""U-Net building blocks: DoubleConv, encoder stages, skip routing and the decoder block."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    """(conv3x3 without bias -> BatchNorm -> LeakyReLU) twice; the bias is redundant before BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        mid_channels = mid_channels or out_channels
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(inplace=True),
        )


class EncoderStage(nn.Module):
    """Max-pool by 2 (except at full resolution), then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:
            x = F.max_pool2d(x, kernel_size=2)
        return self.conv(x)


def resize_to_level(feature: torch.Tensor, source_level: int, target_level: int, size: Sequence[int]) -> torch.Tensor:
    """Bring an encoder feature from its level to another level's spatial ``size``.

    Shallower (finer) features are max-pooled by ``2**(target - source)``, which gives exactly the
    floor-halved sizes of repeated pooling; deeper (coarser) features are interpolated bilinearly.
    """
    if source_level < target_level:
        factor = 2 ** (target_level - source_level)
        feature = F.max_pool2d(feature, kernel_size=factor, stride=factor)
    elif source_level > target_level:
        return F.interpolate(feature, size=tuple(size), mode="bilinear", align_corners=True)
    return match_size(feature, size)


def match_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad (or crop) the last two dims to ``size``, centred, as the classic U-Net pads odd sizes."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    # F.pad takes negative amounts as crops
    return F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])


class DecoderBlock(nn.Module):
    """Upsample the deeper decoder output, fuse it with an optional list of skips, DoubleConv.

    ``fusion="concat"`` concatenates ``[skips..., upsampled]`` along channels (the classic U-Net);
    ``fusion="sum"`` projects each skip with a 1x1 convolution to the upsampled width and adds it.
    With no skips the block is a plain upsampling decoder stage.
    """

    def __init__(
        self, in_channels: int, skip_channels: Sequence[int], out_channels: int, fusion: str = "concat"
    ) -> None:
        super().__init__()
        self.fusion = fusion
        if fusion == "concat":
            self.projections = None
            fused = in_channels + sum(skip_channels)
        elif fusion == "sum":
            self.projections = nn.ModuleList(
                nn.Sequential(nn.Conv2d(c, in_channels, kernel_size=1, bias=False), nn.BatchNorm2d(in_channels))
                for c in skip_channels
            )
            fused = in_channels
        else:
            raise ValueError(f"unknown fusion {fusion!r}")
        # the classic bilinear U-Net halves the channels in the first conv; never below the output width
        self.conv = DoubleConv(fused, out_channels, mid_channels=max(fused // 2, out_channels))

    def forward(self, x: torch.Tensor, size: Sequence[int], skips: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = match_size(x, size)
        skips = list(skips or [])
        if self.projections is None:
            x = torch.cat([*skips, x], dim=1) if skips else x
        else:
            for projection, skip in zip(self.projections, skips, strict=True):
                x = x + projection(skip)
        return self.conv(x)


class SegmentationHead(nn.Conv2d):
    """1x1 convolution to per-pixel logits."""

    def __init__(self, in_channels: int, classes: int) -> None:
        super().__init__(in_channels, classes, kernel_size=1)
