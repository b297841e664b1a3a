"""Torch models built from genomes. :func:`build_model` is the only place a genome becomes an ``nn.Module``."""

from __future__ import annotations

from skipnas.models.builder import SkipUNet, build_model, decoder_widths

__all__ = ["SkipUNet", "build_model", "decoder_widths"]
