"""K-fold cross-validation over a dataset's labelled train and val images, for data without test masks.

Each fold holds out one part as its ``test`` split, takes the next part as ``val`` (which chooses
the kept weights and calibrates the counting) and trains on the rest, so every labelled image is
held out exactly once and no held-out image took part in any choice of its fold. Images of one
group (tiles of one source image, see :mod:`skipnas.data.scan`) stay in one part, so no part learns
from a neighbour of an image it is scored on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from skipnas.data.scan import DatasetIndex, Sample
from skipnas.errors import SkipnasError

MIN_FOLDS = 3  # a test part, a val part and at least one training part


def fold_parts(samples: Sequence[Sample], folds: int, seed: int = 0) -> list[list[Sample]]:
    """``samples`` in ``folds`` parts of whole groups, as even in images as the groups allow: groups
    shuffled by ``seed``, the largest first, each into the part with the fewest images so far."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.group].append(sample)
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    parts: list[list[Sample]] = [[] for _ in range(folds)]
    for name in sorted(shuffled, key=lambda n: -len(groups[n])):  # stable: shuffled order among equal sizes
        min(parts, key=len).extend(groups[name])
    return [sorted(part, key=lambda s: s.stem) for part in parts]


def cross_validation_folds(index: DatasetIndex, folds: int = 3, seed: int = 0) -> list[DatasetIndex]:
    """One dataset index per fold: ``test`` the fold's part, ``val`` the next part, ``train`` the others,
    made of the labelled train and val images of ``index``."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < MIN_FOLDS:
        raise SkipnasError(f"--folds must be a whole number of at least {MIN_FOLDS} (test, val and train parts), got {folds!r}")
    labelled = [s for split in ("train", "val") for s in index.samples(split) if s.mask_path is not None]
    groups = {s.group for s in labelled}
    if len(groups) < folds:
        raise SkipnasError(
            f"{index.root}: {len(groups)} group(s) of labelled train and val images cannot fill {folds} folds; "
            "label more images, lower --folds, or add a test split with masks"
        )
    parts = fold_parts(labelled, folds, seed)
    return [
        DatasetIndex(
            index.root,
            {
                "train": sorted((s for j, part in enumerate(parts) if j not in (k, (k + 1) % folds) for s in part), key=lambda s: s.stem),
                "val": parts[(k + 1) % folds],
                "test": parts[k],
            },
            presplit=True,
        )
        for k in range(folds)
    ]


__all__: Sequence[str] = ("MIN_FOLDS", "cross_validation_folds", "fold_parts")
