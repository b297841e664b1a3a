"""The only place a genome becomes an ``nn.Module``: encoder -> decoder -> head (and the auxiliary head)."""

from __future__ import annotations

import torch
from torch import nn

from skipnas.auxiliary import check_auxiliary
from skipnas.genome import Genome
from skipnas.models.blocks import DecoderBlock, DoubleConv, EncoderStage, SegmentationHead, resize_to_level


def decoder_widths(genome: Genome) -> list[int]:
    """Output channels of decoder level ``j``: as the classic bilinear U-Net, half the encoder width of
    level ``j`` (the full width at level 0), so the ``standard`` genome at width 64 is that U-Net."""
    return [genome.base_width * 2 ** max(j - 1, 0) for j in range(genome.depth)]


class UNetEncoder(nn.Module):
    """``depth`` levels plus a bottleneck; returns every level's feature map, finest first."""

    def __init__(self, genome: Genome, in_channels: int) -> None:
        super().__init__()
        widths = genome.encoder_widths()
        stages = []
        previous = in_channels
        for level, width in enumerate(widths):
            stages.append(EncoderStage(previous, width, downsample=level > 0))
            previous = width
        self.stages = nn.ModuleList(stages)
        # bottleneck width = the deepest level's (classic bilinear U-Net: 1024 // 2)
        self.bottleneck = EncoderStage(previous, widths[-1], downsample=True)
        self.out_channels = widths

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features, self.bottleneck(x)


class UNetDecoder(nn.Module):
    """Decoder level ``j`` (deepest first) fuses the upsampled deeper output with every encoder level
    ``i`` where ``skips[i][j] == 1``, each resized to level ``j``."""

    def __init__(self, genome: Genome) -> None:
        super().__init__()
        self.genome = genome
        encoder_widths = genome.encoder_widths()
        out_widths = decoder_widths(genome)
        blocks: dict[str, DecoderBlock] = {}
        deeper = encoder_widths[-1]
        for j in reversed(range(genome.depth)):
            skip_channels = [encoder_widths[i] for i in genome.skips_into(j)]
            blocks[str(j)] = DecoderBlock(deeper, skip_channels, out_widths[j], fusion=genome.fusion)
            deeper = out_widths[j]
        self.blocks = nn.ModuleDict(blocks)
        self.out_channels = out_widths[0]

    def forward(self, features: list[torch.Tensor], bottleneck: torch.Tensor) -> torch.Tensor:
        x = bottleneck
        for j in reversed(range(self.genome.depth)):
            size = features[j].shape[-2:]
            skips = [resize_to_level(features[i], i, j, size) for i in self.genome.skips_into(j)]
            x = self.blocks[str(j)](x, size, skips)
        return x


class SkipUNet(nn.Module):
    """A U-Net whose skip connections follow a genome. Returns logits of shape (N, classes, H, W).

    With ``auxiliary`` set (one of :data:`skipnas.auxiliary.AUXILIARY_TARGETS`), a second 1x1 head on the same last
    decoder features adds one channel after the class channels: (N, classes + 1, H, W). It is a
    separate module (``auxiliary_head``), so a model without it has exactly the parameters it had
    before the head existed and old weights load unchanged.
    """

    def __init__(self, genome: Genome, in_channels: int = 1, classes: int = 1, auxiliary: str | None = None) -> None:
        super().__init__()
        self.genome = genome
        self.in_channels = in_channels
        self.classes = classes
        self.auxiliary = auxiliary
        self.encoder = UNetEncoder(genome, in_channels)
        self.decoder = UNetDecoder(genome)
        self.head = SegmentationHead(self.decoder.out_channels, classes)
        self.auxiliary_head = SegmentationHead(self.decoder.out_channels, 1) if auxiliary is not None else None

    @property
    def min_input_size(self) -> int:
        """The smallest side that survives ``depth`` poolings into the bottleneck."""
        return 2**self.genome.depth

    @property
    def out_channels(self) -> int:
        """Logit channels: the classes, then the auxiliary map when there is a head for it."""
        return self.classes + (self.auxiliary_head is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, bottleneck = self.encoder(x)
        decoded = self.decoder(features, bottleneck)
        logits = self.head(decoded)
        if self.auxiliary_head is None:
            return logits
        return torch.cat([logits, self.auxiliary_head(decoded)], dim=1)


def build_model(genome: Genome, in_channels: int = 1, classes: int = 1, auxiliary: str | None = None) -> SkipUNet:
    """Build the U-Net of ``genome``: ``in_channels`` image channels, ``classes`` logit channels, and
    with ``auxiliary`` (e.g. ``"distance"``) one more channel, the auxiliary map's logits, after them."""
    if in_channels < 1 or classes < 1:
        raise ValueError(f"in_channels and classes must be >= 1, got {in_channels} and {classes}")
    check_auxiliary(auxiliary)
    return SkipUNet(genome, in_channels=in_channels, classes=classes, auxiliary=auxiliary)


__all__ = ["DoubleConv", "SkipUNet", "UNetDecoder", "UNetEncoder", "build_model", "decoder_widths"]
