"""skipnas: search U-Net skip-connection topologies for segmenting and counting microplastics."""

from __future__ import annotations

from skipnas.errors import SkipnasError
from skipnas.genome import NAMED_TOPOLOGIES, Genome, load_genome

__version__ = "0.1.0"

__all__ = ["NAMED_TOPOLOGIES", "Genome", "SkipnasError", "__version__", "load_genome"]
