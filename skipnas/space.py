"""Search spaces: a declarative TOML file -> which links and hyperparameters a search may change.

A space file (see ``search_spaces/default.toml``) declares the depth, a mask of searchable links
(links outside it keep the value of a fixed topology), fixed or searchable hyperparameters, the tile
and batch size, and the memory budget. :func:`load_space` validates it with one clear error per
problem; :meth:`SearchSpace.suggest` turns an Optuna trial into a :class:`~skipnas.genome.Genome`
and the training hyperparameters. Optuna is imported only where a trial is used.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from skipnas.errors import SkipnasError
from skipnas.genome import DEFAULT_BASE_WIDTH, FUSION_MODES, NAMED_TOPOLOGIES, Genome, GenomeError, SkipMatrix, named_skips
from skipnas.paths import repo_root

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    import optuna

# hyperparameters the builder reads from the genome; every other one goes to training
GENOME_HYPERPARAMETERS = ("base_width", "fusion")


class SpaceError(SkipnasError):
    """A search-space file that cannot be used."""


def link_param_name(i: int, j: int) -> str:
    """The Optuna parameter of the link from encoder level ``i`` to decoder level ``j``."""
    return f"skip_e{i}_d{j}"


@dataclass(frozen=True)
class Fixed:
    value: Any

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return self.value


@dataclass(frozen=True)
class Choice:
    choices: tuple[Any, ...]

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)


Hyperparameter = Union[Fixed, Choice, FloatRange, IntRange]


@dataclass(frozen=True)
class SearchSpace:
    """Which links and hyperparameters a search may change, and what it must respect."""

    name: str = "default"
    depth: int = 4
    searchable: SkipMatrix = ()  # 1 where the link is an Optuna parameter
    fixed_skips: SkipMatrix = ()  # the value of every link outside ``searchable``
    hyperparameters: Mapping[str, Hyperparameter] = field(default_factory=dict)
    tile: int | None = None  # None: chosen from the training particles' sizes (skipnas.data.particles)
    batch: int | None = None  # None: chosen from the tile (skipnas.data.particles.choose_batch)
    budget_mib: float | None = None
    budget_steps: int | None = None  # training steps per trial (pretraining included); None: the search's seconds
    source: str | None = None  # the file it came from

    def __post_init__(self) -> None:
        ones = tuple(tuple(1 for _ in range(self.depth)) for _ in range(self.depth))
        if not self.searchable:
            object.__setattr__(self, "searchable", ones)
        if not self.fixed_skips:
            object.__setattr__(self, "fixed_skips", named_skips("standard", self.depth))
        for key in ("searchable", "fixed_skips"):
            # a genome validates shape and 0/1 values with the right message
            try:
                Genome(getattr(self, key), depth=self.depth)
            except GenomeError as exc:
                raise SpaceError(f"{self._where()}{key}: {exc}") from None
        if "base_width" not in self.hyperparameters:
            object.__setattr__(self, "hyperparameters", {"base_width": Fixed(DEFAULT_BASE_WIDTH), **self.hyperparameters})

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    def searchable_links(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.depth) for j in range(self.depth) if self.searchable[i][j]]

    def suggest(self, trial: optuna.Trial) -> tuple[Genome, dict[str, Any]]:
        """One candidate: a genome from the link parameters, and the training hyperparameters."""
        skips = [list(row) for row in self.fixed_skips]
        for i, j in self.searchable_links():
            skips[i][j] = trial.suggest_int(link_param_name(i, j), 0, 1)
        values = {name: hp.suggest(trial, name) for name, hp in self.hyperparameters.items()}
        genome_args = {k: values.pop(k) for k in GENOME_HYPERPARAMETERS if k in values}
        return Genome(skips, depth=self.depth, **genome_args), values  # type: ignore[arg-type]

    def contains(self, genome: Genome) -> bool:
        """Whether the search can reach ``genome``'s links (fixed links match)."""
        if genome.depth != self.depth:
            return False
        return all(
            self.searchable[i][j] or genome.skips[i][j] == self.fixed_skips[i][j]
            for i in range(self.depth)
            for j in range(self.depth)
        )

    def params_for(self, genome: Genome) -> dict[str, int]:
        """The Optuna link parameters that reproduce ``genome`` (for enqueuing baselines)."""
        if not self.contains(genome):
            raise SpaceError(f"{self._where()}topology {genome.name} uses links this space fixes otherwise")
        return {link_param_name(i, j): genome.skips[i][j] for i, j in self.searchable_links()}

    def num_candidates(self) -> int:
        """Distinct skip matrices the space holds (hyperparameters aside)."""
        return 2 ** len(self.searchable_links())


# loading ------------------------------------------------------------------------------------


def _parse_hyperparameter(where: str, name: str, spec: Any) -> Hyperparameter:
    if not isinstance(spec, Mapping):
        return Fixed(spec)  # a bare value: base_width = 16
    keys = set(spec)
    if keys == {"value"}:
        return Fixed(spec["value"])
    if keys == {"choices"}:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}hyperparameters.{name}.choices must be a non-empty list")
        return Choice(tuple(choices))
    if "low" in keys and "high" in keys and keys <= {"low", "high", "log", "step"}:
        low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise SpaceError(f"{where}hyperparameters.{name}: low and high must be numbers")
        if not low < high:
            raise SpaceError(f"{where}hyperparameters.{name}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise SpaceError(f"{where}hyperparameters.{name}: a log range needs low > 0")
        if isinstance(low, int) and isinstance(high, int) and not isinstance(spec.get("step", 1), float):
            return IntRange(low, high, step=int(spec.get("step", 1)), log=log)
        if "step" in spec:
            raise SpaceError(f"{where}hyperparameters.{name}: step is only for integer ranges")
        return FloatRange(float(low), float(high), log=log)
    raise SpaceError(
        f"{where}hyperparameters.{name}: use a value, {{value = X}}, {{choices = [...]}} or {{low, high[, log][, step]}}"
    )


def _parse_links(where: str, key: str, value: Any, depth: int) -> SkipMatrix:
    if isinstance(value, str):
        if value == "all":
            return named_skips("dense", depth)
        if value in NAMED_TOPOLOGIES:
            return named_skips(value, depth)
        raise SpaceError(f"{where}{key} = {value!r}: use \"all\", a topology name or a {depth}x{depth} matrix of 0/1")
    try:
        return Genome(value, depth=depth).skips
    except GenomeError as exc:
        raise SpaceError(f"{where}{key}: {exc}") from None


def _check_widths(where: str, hp: Hyperparameter) -> None:
    values = hp.choices if isinstance(hp, Choice) else (hp.value,) if isinstance(hp, Fixed) else (hp.low, hp.high)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise SpaceError(f"{where}hyperparameters.base_width must be positive integers, got {list(values)}")


def space_from_dict(data: Mapping[str, Any], source: str | None = None) -> SearchSpace:
    where = f"{source}: " if source else ""
    known = {"name", "depth", "searchable", "fixed", "hyperparameters", "tile", "batch", "budget_mib", "budget_steps"}
    unknown = set(data) - known
    if unknown:
        raise SpaceError(f"{where}unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(known))}")
    depth = data.get("depth", 4)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 8:
        raise SpaceError(f"{where}depth must be an integer from 1 to 8, got {depth!r}")
    tile, batch = data.get("tile", "auto"), data.get("batch", "auto")
    for key, value in (("tile", tile), ("batch", batch)):
        if value != "auto" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise SpaceError(f"{where}{key} must be a positive integer or 'auto', got {value!r}")
    tile = None if tile == "auto" else tile
    batch = None if batch == "auto" else batch
    if tile is not None and tile % 2**depth:
        raise SpaceError(f"{where}tile ({tile}) must be a multiple of 2**depth = {2**depth}")
    budget = data.get("budget_mib")
    if budget is not None and (not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget <= 0):
        raise SpaceError(f"{where}budget_mib must be a positive number of MiB, got {budget!r}")
    steps = data.get("budget_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise SpaceError(f"{where}budget_steps must be a whole number of training steps, at least 1, got {steps!r}")
    raw_hps = data.get("hyperparameters", {})
    if not isinstance(raw_hps, Mapping):
        raise SpaceError(f"{where}[hyperparameters] must be a table")
    hyperparameters = {name: _parse_hyperparameter(where, name, spec) for name, spec in raw_hps.items()}
    if "base_width" in hyperparameters:
        _check_widths(where, hyperparameters["base_width"])
    if "fusion" in hyperparameters:
        fusion = hyperparameters["fusion"]
        values = fusion.choices if isinstance(fusion, Choice) else (getattr(fusion, "value", None),)
        if any(v not in FUSION_MODES for v in values):
            raise SpaceError(f"{where}hyperparameters.fusion must be among {', '.join(FUSION_MODES)}")
    return SearchSpace(
        name=str(data.get("name", Path(source).stem if source else "custom")),
        depth=depth,
        searchable=_parse_links(where, "searchable", data.get("searchable", "all"), depth),
        fixed_skips=_parse_links(where, "fixed", data.get("fixed", "standard"), depth),
        hyperparameters=hyperparameters,
        tile=tile,
        batch=batch,
        budget_mib=float(budget) if budget is not None else None,
        budget_steps=steps,
        source=source,
    )


def resolve_space_path(spec: str | os.PathLike[str]) -> Path:
    """A space file path, or a name looked up in ``./search_spaces`` then the source tree's."""
    path = Path(spec)
    if path.suffix or path.exists() or len(path.parts) > 1:
        return path
    for folder in (Path.cwd() / "search_spaces", repo_root() / "search_spaces"):
        candidate = folder / f"{spec}.toml"
        if candidate.is_file():
            return candidate
    raise SpaceError(f"search space {spec!r} not found in ./search_spaces or {repo_root() / 'search_spaces'}; give a .toml file path")


def load_space(spec: str | os.PathLike[str] = "default") -> SearchSpace:
    """Load and validate a search-space TOML file (a path, or a name under ``search_spaces/``)."""
    path = resolve_space_path(spec)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such search-space file; check the path or use --space default") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"{path}: cannot read it ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    return space_from_dict(data, source=str(path))


def budget_bytes(space: SearchSpace, override_mib: float | None = None) -> float:
    """The memory budget in bytes (``override_mib`` wins), or infinity without one."""
    mib = override_mib if override_mib is not None else space.budget_mib
    return math.inf if mib is None else mib * 2**20
