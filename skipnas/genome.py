"""The genome: which encoder level feeds which decoder level. Pure data; never imports torch.

``skips[i][j] == 1`` means encoder level ``i`` feeds decoder level ``j``. Level 0 is full
resolution, level ``depth - 1`` the coarsest above the bottleneck. Like nasbench's ``ModelSpec``
a genome is validated on construction and hashed canonically, and
:func:`skipnas.models.builder.build_model` is the only place it becomes an ``nn.Module``.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skipnas.errors import SkipnasError

DEFAULT_DEPTH = 4
DEFAULT_BASE_WIDTH = 16
FUSION_MODES = ("concat", "sum")
GENOME_FORMAT_VERSION = 1

SkipMatrix = tuple[tuple[int, ...], ...]


class GenomeError(SkipnasError, ValueError):
    """A genome that cannot exist: wrong shape, a gene other than 0/1, an unknown name."""


def _standard(i: int, j: int, depth: int) -> bool:
    return i == j


def _reverse(i: int, j: int, depth: int) -> bool:
    return j == depth - 1 - i


def _semi_dense(i: int, j: int, depth: int) -> bool:
    # decoder j gets its own level and every shallower (higher-resolution) encoder level
    return i <= j


def _dense(i: int, j: int, depth: int) -> bool:
    return True


def _none(i: int, j: int, depth: int) -> bool:
    return False


NAMED_TOPOLOGIES: dict[str, Callable[[int, int, int], bool]] = {
    "standard": _standard,
    "semi-dense": _semi_dense,
    "reverse": _reverse,
    "dense": _dense,
    "none": _none,
}
TOPOLOGY_DESCRIPTIONS: dict[str, str] = {
    "standard": "classic U-Net: encoder i feeds decoder i",
    "semi-dense": "decoder j receives every encoder level i <= j",
    "reverse": "encoder i feeds decoder depth-1-i",
    "dense": "every encoder level feeds every decoder level",
    "none": "no skip connections (plain encoder-decoder)",
}


def named_skips(name: str, depth: int = DEFAULT_DEPTH) -> SkipMatrix:
    """The skip matrix of a named topology at ``depth``."""
    try:
        rule = NAMED_TOPOLOGIES[name]
    except KeyError:
        known = ", ".join(NAMED_TOPOLOGIES)
        raise GenomeError(f"unknown topology {name!r}: use one of {known}, or a genome JSON file") from None
    return tuple(tuple(int(rule(i, j, depth)) for j in range(depth)) for i in range(depth))


def _as_matrix(skips: Iterable[Iterable[Any]], depth: int) -> SkipMatrix:
    try:
        rows = [list(row) for row in skips]
    except TypeError:
        raise GenomeError(f"skips must be a {depth}x{depth} list of lists of 0/1, got {skips!r}") from None
    if len(rows) != depth or any(len(row) != depth for row in rows):
        shape = f"{len(rows)}x" + "/".join(str(len(r)) for r in rows) if rows else "empty"
        raise GenomeError(f"skips must be {depth}x{depth} for depth {depth}, got {shape}")
    matrix = []
    for i, row in enumerate(rows):
        out_row = []
        for j, gene in enumerate(row):
            # integers only (numpy ints included): 1.0 or "1" are not genes
            if not isinstance(gene, numbers.Integral) or gene not in (0, 1):
                raise GenomeError(f"skips[{i}][{j}] must be 0 or 1, got {gene!r}")
            out_row.append(int(gene))
        matrix.append(tuple(out_row))
    return tuple(matrix)


@dataclass(frozen=True)
class Genome:
    """A U-Net topology: depth, skip matrix and the architecture hyperparameters of the builder.

    ``base_width`` is the channel count of encoder level 0; level ``i`` has
    ``base_width * 2**i``. ``fusion`` says how a decoder level merges its inputs:
    ``"concat"`` (channel concatenation, the classic U-Net) or ``"sum"`` (each skip projected
    by a 1x1 convolution to the upsampled channel count and added).
    """

    skips: SkipMatrix
    depth: int = DEFAULT_DEPTH
    base_width: int = DEFAULT_BASE_WIDTH
    fusion: str = "concat"
    _hash: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.depth) is not int or not 1 <= self.depth <= 8:
            raise GenomeError(f"depth must be an integer from 1 to 8, got {self.depth!r}")
        if type(self.base_width) is not int or self.base_width < 1:
            raise GenomeError(f"base_width must be a positive integer, got {self.base_width!r}")
        if self.fusion not in FUSION_MODES:
            raise GenomeError(f"fusion must be one of {', '.join(FUSION_MODES)}, got {self.fusion!r}")
        object.__setattr__(self, "skips", _as_matrix(self.skips, self.depth))
        digest = hashlib.sha256(self.canonical_string().encode()).hexdigest()
        object.__setattr__(self, "_hash", digest)

    # construction ---------------------------------------------------------------------------
    @classmethod
    def named(
        cls, name: str, depth: int = DEFAULT_DEPTH, base_width: int = DEFAULT_BASE_WIDTH, fusion: str = "concat"
    ) -> Genome:
        return cls(named_skips(name, depth), depth=depth, base_width=base_width, fusion=fusion)

    @classmethod
    def from_genes(
        cls,
        genes: Sequence[int],
        depth: int = DEFAULT_DEPTH,
        base_width: int = DEFAULT_BASE_WIDTH,
        fusion: str = "concat",
    ) -> Genome:
        """From the flat gene vector, row-major: gene ``i * depth + j`` is ``skips[i][j]``."""
        genes = list(genes)
        if len(genes) != depth * depth:
            raise GenomeError(f"a depth-{depth} genome has {depth * depth} genes, got {len(genes)}")
        rows = [genes[i * depth : (i + 1) * depth] for i in range(depth)]
        return cls(rows, depth=depth, base_width=base_width, fusion=fusion)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genome:
        if not isinstance(data, dict) or "skips" not in data:
            raise GenomeError('a genome needs a "skips" matrix, e.g. {"skips": [[1,0],[0,1]], "depth": 2}')
        unknown = set(data) - {"skips", "depth", "base_width", "fusion", "name", "format_version", "hash"}
        if unknown:
            raise GenomeError(f"unknown genome field(s): {', '.join(sorted(unknown))}")
        skips = data["skips"]
        depth = data.get("depth", len(skips) if isinstance(skips, list) else DEFAULT_DEPTH)
        return cls(
            skips,
            depth=depth,
            base_width=data.get("base_width", DEFAULT_BASE_WIDTH),
            fusion=data.get("fusion", "concat"),
        )

    @classmethod
    def from_json(cls, text: str) -> Genome:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenomeError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        return cls.from_dict(data)

    # views ----------------------------------------------------------------------------------
    @property
    def genes(self) -> tuple[int, ...]:
        """The flat gene vector, row-major (see :meth:`from_genes`)."""
        return tuple(g for row in self.skips for g in row)

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical string: equal genomes hash equal."""
        return self._hash

    @property
    def short_hash(self) -> str:
        return self._hash[:12]

    @property
    def name(self) -> str:
        """The named topology this genome's skips equal, else ``"custom"``."""
        for name in NAMED_TOPOLOGIES:
            if self.skips == named_skips(name, self.depth):
                return name
        return "custom"

    def encoder_widths(self) -> list[int]:
        return [self.base_width * 2**i for i in range(self.depth)]

    def skips_into(self, j: int) -> list[int]:
        """Encoder levels feeding decoder level ``j``, shallowest first."""
        return [i for i in range(self.depth) if self.skips[i][j]]

    def num_links(self) -> int:
        return sum(self.genes)

    def canonical_string(self) -> str:
        rows = "/".join("".join(str(g) for g in row) for row in self.skips)
        return f"v{GENOME_FORMAT_VERSION};d={self.depth};w={self.base_width};f={self.fusion};s={rows}"

    def with_(self, **changes: Any) -> Genome:
        data = {"skips": self.skips, "depth": self.depth, "base_width": self.base_width, "fusion": self.fusion}
        data.update(changes)
        return Genome(**data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": GENOME_FORMAT_VERSION,
            "name": self.name,
            "depth": self.depth,
            "skips": [list(row) for row in self.skips],
            "base_width": self.base_width,
            "fusion": self.fusion,
            "hash": self.hash,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        return f"Genome({self.name}, {self.canonical_string()})"


def load_genome(spec: str | os.PathLike[str], depth: int = DEFAULT_DEPTH, base_width: int | None = None) -> Genome:
    """A genome from a topology name or a JSON file; ``base_width`` overrides the file's."""
    text_spec = os.fspath(spec)
    path = Path(text_spec)
    if text_spec in NAMED_TOPOLOGIES:
        genome = Genome.named(text_spec, depth=depth)
    elif path.suffix.lower() == ".json" or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GenomeError(f"{path}: no such file; give a topology name ({', '.join(NAMED_TOPOLOGIES)}) or an existing genome JSON file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GenomeError(f"{path}: cannot read it ({exc.__class__.__name__}); check the path and permissions") from None
        try:
            genome = Genome.from_json(text)
        except GenomeError as exc:
            raise GenomeError(f"{path}: {exc}") from None
    else:
        named_skips(text_spec, depth)  # raises the unknown-name error
        raise AssertionError("unreachable")
    return genome if base_width is None else genome.with_(base_width=base_width)
