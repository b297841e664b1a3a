"""Data: reading images and masks (``io``), dataset folders and statistics (``dataset``), tiling,
augmentation, synthetic images and the demo dataset. Import the sub-modules directly; this package
imports nothing heavy so ``skipnas --help`` stays fast."""

from __future__ import annotations
