"""``skipnas synth``: a folder of semi-synthetic pairs made from a dataset's train split, rerunnable in place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from skipnas.data.io import is_image_file, read_image, write_image, write_mask
from skipnas.data.loading import load_labeled
from skipnas.data.scan import scan_dataset
from skipnas.data.synth import (
    ImagePair,
    SynthConfig,
    SyntheticGenerator,
    check_source_image,
    checked_image,
    describe_format,
    pixel_format,
)
from skipnas.errors import SkipnasError
from skipnas.fileio import write_json_atomic
from skipnas.progress import progress_bar

SYNTH_MARKER = "synth.json"


SYNTH_FORMAT_VERSION = 1


SYNTH_PREFIX = "synth-"


def _read_sources(source: Path) -> tuple[list[ImagePair], list[Path]]:
    """The source dataset's labelled train images (all labelled images when it has no split folders)."""
    index = scan_dataset(source)
    samples = index.samples("train")  # without split folders: the same grouped split training uses
    labelled = [sample for sample in samples if sample.mask_path is not None]
    if not labelled:
        where = f"{index.root / 'train'}" if index.presplit else f"{index.root}"
        raise SkipnasError(
            f"{where}: no images with masks to cut particles from; "
            "put annotated images in images/ and their masks in masks/"
        )
    pairs: list[ImagePair] = []
    paths: list[Path] = []
    for sample, item in zip(labelled, load_labeled(labelled)):
        check_source_image(item.image, str(sample.image_path))
        if pairs and pixel_format(item.image) != pixel_format(pairs[0][0]):
            raise SkipnasError(
                f"{sample.image_path}: is {describe_format(pixel_format(item.image))} but {paths[0].name} is "
                f"{describe_format(pixel_format(pairs[0][0]))}; convert the dataset to one pixel format"
            )
        pairs.append((item.image, item.instances))
        paths.append(sample.image_path)
    return pairs, paths


def _read_backgrounds(folder: Path) -> list[np.ndarray]:
    if not folder.is_dir():
        raise SkipnasError(f"{folder}: backgrounds folder not found; give a folder of particle-free images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p))
    if not files:
        raise SkipnasError(f"{folder}: holds no .tif, .png or .jpg images; add particle-free background images")
    return [checked_image(read_image(path), str(path)) for path in files]


def _is_synth_output(folder: Path) -> bool:
    try:
        marker = json.loads((folder / SYNTH_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format_version") == SYNTH_FORMAT_VERSION


def _check_output_folder(out: Path, source: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SkipnasError(f"{out}: is a file; give a new or empty folder for the synthetic dataset")
    if out.resolve() == source.resolve():
        raise SkipnasError(f"{out}: is the source dataset itself; give a different output folder")
    if out.is_dir() and any(out.iterdir()) and not _is_synth_output(out):
        raise SkipnasError(
            f"{out}: is not empty and holds no {SYNTH_MARKER} from an earlier `skipnas synth`; "
            "give a new or empty folder"
        )


def _remove_stale(out: Path, written: set[str]) -> None:
    """Pairs left by an earlier, longer run into the same folder."""
    for sub in ("images", "masks"):
        for path in (out / sub).glob(f"{SYNTH_PREFIX}*.tif"):
            if path.stem not in written:
                path.unlink()


def write_synthetic_dataset(
    source: Path,
    out: Path,
    n: int,
    seed: int = 0,
    backgrounds: Path | None = None,
    config: SynthConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write ``n`` synthetic pairs as ``out/images/synth-NNNNN.tif`` and ``out/masks/synth-NNNNN.tif``.

    Particles are cut from ``source``'s train split (without split folders, the grouped split that
    training uses), so nothing from val or test leaks into training. ``backgrounds``: a folder of
    particle-free images for blank mode. ``out`` must be new, empty, or an earlier synth output
    (recognised by its ``synth.json``). Returns ``out``.
    """
    source, out = Path(source), Path(out)
    config = config or SynthConfig()
    if n < 1:
        raise SkipnasError(f"n must be at least 1, got {n}")
    if backgrounds is not None and config.background == "semi":
        raise SkipnasError("backgrounds are for blank mode; drop them or use the blank background mode")
    _check_output_folder(out, source)
    pairs, _ = _read_sources(source)
    generator = SyntheticGenerator(
        pairs, config, _read_backgrounds(Path(backgrounds)) if backgrounds is not None else None
    )
    marker = {
        "format_version": SYNTH_FORMAT_VERSION,
        "source": str(source.resolve()),
        "backgrounds": None if backgrounds is None else str(Path(backgrounds).resolve()),
        "n": n,
        "seed": seed,
        "particles": len(generator.particles),
        "config": config.to_dict(),
    }
    # the marker goes first so an interrupted run can be rerun into the same folder
    write_json_atomic(out / SYNTH_MARKER, {**marker, "complete": False})
    digits = max(5, len(str(n - 1)))
    names: set[str] = set()
    with progress_bar("writing synthetic pairs", total=n, enabled=progress) as bar:
        for index, (image, instances) in enumerate(generator.generate(n, seed)):
            name = f"{SYNTH_PREFIX}{index:0{digits}d}"
            write_image(out / "images" / f"{name}.tif", image)
            write_mask(out / "masks" / f"{name}.tif", instances)
            names.add(name)
            bar.advance()
    _remove_stale(out, names)
    write_json_atomic(out / SYNTH_MARKER, {**marker, "complete": True})
    return out
