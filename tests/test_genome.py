from __future__ import annotations

import json
import subprocess
import sys

import pytest

from skipnas.genome import NAMED_TOPOLOGIES, Genome, GenomeError, load_genome, named_skips


def test_literal_matrix_round_trips_through_json_and_genes() -> None:
    genome = Genome([[1, 0], [1, 1]], depth=2, base_width=4, fusion="sum")
    assert genome.skips == ((1, 0), (1, 1))
    assert Genome.from_json(genome.to_json()) == genome
    assert genome.genes == (1, 0, 1, 1)
    assert Genome.from_genes(genome.genes, depth=2, base_width=4, fusion="sum") == genome
    assert genome.skips_into(0) == [0, 1]
    assert genome.skips_into(1) == [1]


@pytest.mark.parametrize(
    ("skips", "depth", "message"),
    [
        ([[1, 0], [0, 1]], 3, "3x3"),
        ([[1, 0], [0]], 2, "2x2"),
        ([[1, 0], [0, 2]], 2, "skips[1][1] must be 0 or 1"),
        ([[1, 0], [0, 1.0]], 2, "skips[1][1] must be 0 or 1"),
        ([[1, 0], [0, "1"]], 2, "skips[1][1] must be 0 or 1"),
        (5, 2, "list of lists"),
    ],
)
def test_invalid_matrices_are_rejected(skips: object, depth: int, message: str) -> None:
    with pytest.raises(GenomeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Genome(skips, depth=depth)  # type: ignore[arg-type]


def test_invalid_hyperparameters_are_rejected() -> None:
    with pytest.raises(GenomeError, match="base_width"):
        Genome.named("standard", base_width=0)
    with pytest.raises(GenomeError, match="fusion"):
        Genome.named("standard", fusion="multiply")
    with pytest.raises(GenomeError, match="depth"):
        Genome([], depth=0)
    with pytest.raises(GenomeError, match="genes"):
        Genome.from_genes([1, 0, 1], depth=2)


def test_equal_genomes_hash_equal_and_different_ones_differ() -> None:
    a = Genome([[1, 0], [0, 1]], depth=2)
    b = Genome(((True, False), (False, True)), depth=2)
    assert a == b and a.hash == b.hash and hash(a) == hash(b)
    assert a.hash != a.with_(base_width=8).hash
    assert a.hash != a.with_(fusion="sum").hash
    assert a.hash != Genome([[0, 1], [0, 1]], depth=2).hash
    assert len({Genome.named(n).hash for n in NAMED_TOPOLOGIES}) == len(NAMED_TOPOLOGIES)


def test_named_matrices_at_depth_4() -> None:
    assert named_skips("standard") == ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1))
    assert named_skips("reverse") == ((0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 0, 0), (1, 0, 0, 0))
    # decoder j gets encoder levels i <= j: its own level and every shallower one
    assert named_skips("semi-dense") == ((1, 1, 1, 1), (0, 1, 1, 1), (0, 0, 1, 1), (0, 0, 0, 1))
    assert named_skips("dense") == ((1,) * 4,) * 4
    assert named_skips("none") == ((0,) * 4,) * 4
    for name in NAMED_TOPOLOGIES:
        assert Genome.named(name).name == name
    assert Genome([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).name == "custom"


def test_named_topologies_follow_depth() -> None:
    assert named_skips("reverse", depth=2) == ((0, 1), (1, 0))
    assert named_skips("standard", depth=1) == ((1,),)
    with pytest.raises(GenomeError, match="unknown topology 'symmetric'"):
        named_skips("symmetric")


def test_load_genome_from_name_and_file(tmp_path) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"skips": [[0, 1], [1, 0]], "base_width": 4}))
    assert load_genome(path) == Genome([[0, 1], [1, 0]], depth=2, base_width=4)
    assert load_genome(path, base_width=8).base_width == 8
    assert load_genome("semi-dense", base_width=4) == Genome.named("semi-dense", base_width=4)
    path.write_text("{not json")
    with pytest.raises(GenomeError, match=r"g\.json: not valid JSON"):
        load_genome(path)
    path.write_text(json.dumps({"skips": [[1]], "colour": "red"}))
    with pytest.raises(GenomeError, match="unknown genome field"):
        load_genome(path)
    with pytest.raises(GenomeError, match="missing.json: no such file"):
        load_genome(tmp_path / "missing.json")


def test_genome_module_never_imports_torch() -> None:
    code = "import sys, skipnas.genome, skipnas.space; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
