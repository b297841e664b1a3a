"""One candidate from genome to model folder: build, pretrain, fine-tune, calibrate, evaluate, save.

:func:`prepare_data` reads a dataset and makes the semi-synthetic images once; a search calls
:func:`train_candidate` for every trial on the same prepared data.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skipnas.counting.calibrate import (
    DEFAULT_SELECTION,
    FEW_PARTICLES,
    CalibrationGrid,
    calibrate,
    calibration_record,
    draw_until_enough,
)
from skipnas.counting.evaluation import Evaluation
from skipnas.counting.postprocess import PostprocessConfig
from skipnas.data.io import count_instances, image_range
from skipnas.data.loading import LabeledImage, load_labeled
from skipnas.data.rescale import rescale_labeled
from skipnas.data.scan import DatasetIndex, resolve_dataset
from skipnas.data.statistics import dataset_summary, normalisation_stats, particle_sizes
from skipnas.data.validate import check_dataset
from skipnas.genome import Genome
from skipnas.modelio import save_model_folder
from skipnas.models import build_model
from skipnas.predict import Prediction, auxiliary_maps, predict_images
from skipnas.progress import progress_bar
from skipnas.runtime.normalise import Normalisation
from skipnas.train.adapt import AUTO, adapt_to_data
from skipnas.train.config import TrainConfig
from skipnas.train.data import load_split, synthetic_images
from skipnas.train.trainer import TrainResult, fit_model
from skipnas.train.validation import Callback


@dataclass
class PreparedData:
    """A dataset read into memory with its statistics and the semi-synthetic pretraining images.

    ``train`` and ``synthetic`` are at the config's input scale (what the network trains on);
    ``val`` keeps its own size, since validation predicts and scores full images as counting does.
    """

    root: Path
    index: DatasetIndex
    normalisation: Normalisation
    train: list[LabeledImage]
    val: list[LabeledImage]
    synthetic: list[LabeledImage] = field(default_factory=list)
    seconds: float = 0.0
    scale: float = 1.0

    @property
    def channels(self) -> int:
        return self.train[0].channels


def open_dataset(spec: str | Path | DatasetIndex) -> DatasetIndex:
    """The checked index of ``spec`` (a folder or ``"demo"``); an index is taken as already checked."""
    if isinstance(spec, DatasetIndex):
        return spec
    # the split seed stays fixed (0) so evaluate and baseline-count see the same split as training
    return check_dataset(resolve_dataset(spec))


def prepare_data(spec: str | Path | DatasetIndex, config: TrainConfig | None = None) -> PreparedData:
    """Load ``spec`` (a folder, ``"demo"``, or the index :func:`open_dataset` gave, so it is not
    checked again); generate the pretraining images."""
    started = time.perf_counter()
    config = config or TrainConfig()
    index = open_dataset(spec)
    root = index.root
    train, val = load_split(index, "train"), load_split(index, "val")
    if config.normalise == "image":
        normalisation = Normalisation.stretched(train[0].channels)
    else:
        mean, std = normalisation_stats(index)
        normalisation = Normalisation(tuple(mean), tuple(std), image_range(train[0].image.dtype))
    train = [rescale_labeled(item, config.scale) for item in train]
    synthetic: list[LabeledImage] = []
    if config.pretrain.enabled and config.synthetic_images > 0:
        synthetic = synthetic_images(train, config.synthetic_images, config.seed, config.synth)
    return PreparedData(root, index, normalisation, train, val, synthetic, time.perf_counter() - started, config.scale)


def adapt_config_to_dataset(
    spec: str | Path | DatasetIndex,
    config: TrainConfig,
    genome_depth: int,
    *,
    scale: float | None = None,
    tile: int | None = None,
    batch: int | None = None,
    auxiliary: str | None = AUTO,
    normalise: str | None = None,
    invert: bool | None = None,
) -> tuple[TrainConfig, list[str]]:
    """:func:`~skipnas.train.adapt.adapt_to_data` on the training split of ``spec``: its masks'
    particles, its images' brightness and its particles' polarity."""
    index = open_dataset(spec)
    sizes = particle_sizes(index, "train")
    train = dataset_summary(index)["splits"]["train"]
    return adapt_to_data(
        config, sizes, 2**genome_depth, scale=scale, tile=tile, batch=batch, auxiliary=auxiliary, normalise=normalise,
        brightness=train.get("brightness_spread"), invert=invert, polarity=train.get("particle_polarity"),
        where=f"{index.root}: the train masks",
    )


def evaluate_probabilities(
    probs: Sequence[np.ndarray],
    images: Sequence[LabeledImage],
    postprocess: PostprocessConfig,
    auxiliary: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """:class:`Evaluation` summary of foreground maps (and their auxiliary maps) against the images' masks."""
    maps: Sequence[np.ndarray | None] = [None] * len(probs) if auxiliary is None else auxiliary
    evaluation = Evaluation()
    for prob, extra, item in zip(probs, maps, images, strict=True):
        evaluation.add(prob, item.instances, postprocess, stem=item.stem, auxiliary=extra)
    return evaluation.summary()


def evaluate_predictions(
    predictions: Sequence[Prediction], images: Sequence[LabeledImage], postprocess: PostprocessConfig
) -> dict[str, Any]:
    """:func:`evaluate_probabilities` of model predictions: the foreground and, where predicted, the auxiliary map."""
    return evaluate_probabilities([p.foreground for p in predictions], images, postprocess, auxiliary_maps(predictions))


@dataclass(frozen=True)
class CountingCalibration:
    postprocess: PostprocessConfig  # the chosen counting setting
    record: dict[str, Any]  # why it was chosen, for postprocess.json (:func:`calibration_record`)
    metrics: dict[str, Any]  # its metrics on the images that chose it: selection scores


def calibrate_counting(
    predictions: Sequence[Prediction],
    images: Sequence[LabeledImage],
    grid: CalibrationGrid | None = None,
    selection: str = DEFAULT_SELECTION,
    progress: bool = False,
) -> CountingCalibration:
    """The counting setting of ``grid`` that counts these predicted images best (:func:`calibrate`),
    with its record and metrics; with auxiliary maps the grid also tries the methods that count from them."""
    postprocess, table = calibrate(
        [p.foreground for p in predictions], [item.instances for item in images], PostprocessConfig(), grid,
        auxiliary_maps(predictions), selection, progress=progress,
    )
    return CountingCalibration(postprocess, calibration_record(table, grid), evaluate_predictions(predictions, images, postprocess))


def extra_calibration_images(data: PreparedData, calibrate_on: str) -> tuple[list[LabeledImage], str | None]:
    """The training images (at their own size, as counting sees them) that choose the counting setting
    besides val under ``calibrate_on`` (:data:`~skipnas.train.config.CALIBRATE_ON`), and why; none for ``val``,
    nor for ``auto`` when val holds at least ``FEW_PARTICLES`` particles. Images are drawn until the
    calibration holds ``CALIBRATION_PARTICLES`` particles (:func:`~skipnas.counting.calibrate.draw_until_enough`)."""
    if calibrate_on == "val":
        return [], None
    particles = sum(count_instances(item.instances) for item in data.val)
    if calibrate_on == "auto" and particles >= FEW_PARTICLES:
        return [], None
    why = "asked for" if calibrate_on == "val+train" else f"val holds {particles} particles, fewer than {FEW_PARTICLES}"
    return training_images_for_counting(data.index, particles), why


def training_images_for_counting(index: DatasetIndex, held: int = 0) -> list[LabeledImage]:
    """Training images, drawn as a calibration draws them, until with ``held`` particles it holds enough
    (:func:`~skipnas.counting.calibrate.draw_until_enough`)."""
    return draw_until_enough(index.samples("train"), lambda sample: load_labeled([sample]), lambda item: count_instances(item.instances), held)


@dataclass
class CandidateResult:
    genome: Genome
    metrics: dict[str, Any]  # validation metrics with the calibrated post-processing
    postprocess: PostprocessConfig
    training: TrainResult
    model_dir: Path | None
    seconds: dict[str, float]
    calibration: dict[str, Any] = field(default_factory=dict)  # why the counting setting was chosen


def train_candidate(
    genome: Genome,
    data: PreparedData,
    config: TrainConfig,
    out: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    data_choices: Sequence[str] = (),
    initial_weights: Mapping[str, torch.Tensor] | None = None,
) -> CandidateResult:
    """Train ``genome`` on ``data`` (from ``initial_weights``, a state dict of the same network, or
    from scratch), calibrate counting on validation, and write a model folder to ``out``."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(genome, in_channels=data.channels, classes=1, auxiliary=config.auxiliary)
    if initial_weights is not None:
        model.load_state_dict(initial_weights)
    result = fit_model(model, config, data.normalisation, data.train, data.val, data.synthetic, callbacks, progress)
    trained = time.perf_counter()
    predictions = predict_images(
        result.model, data.val, data.normalisation, result.setup, config.val_tile, config.val_overlap, config.tta, config.scale,
        config.val_batch,
    )
    extra, why = extra_calibration_images(data, config.calibrate_on)
    if extra:
        extra_predictions = []
        with progress_bar("predicting training images for the counting", total=len(extra), enabled=progress) as bar:
            for item in extra:
                extra_predictions += predict_images(
                    result.model, [item], data.normalisation, result.setup, config.val_tile, config.val_overlap, config.tta,
                    config.scale, config.val_batch,
                )
                bar.advance()
        counting = calibrate_counting(
            [*predictions, *extra_predictions], [*data.val, *extra], config.count_grid, config.calibration_selection, progress
        )
        calibration = {
            **counting.record,
            "calibrated_on": {"splits": ["val", "train"], "images": len(data.val) + len(extra), "why": why},
            "note": "the train images were trained on: the network predicts them better than new images",
        }
        # the run's metrics stay val's, comparable with runs calibrated on val alone
        postprocess, metrics = counting.postprocess, evaluate_predictions(predictions, data.val, counting.postprocess)
    else:
        counting = calibrate_counting(predictions, data.val, config.count_grid, config.calibration_selection, progress)
        postprocess, calibration, metrics = counting.postprocess, counting.record, counting.metrics
    evaluated = time.perf_counter()
    model_dir = None
    if out is not None:
        model_dir = save_model_folder(
            out,
            result.model,
            genome,
            data.normalisation,
            postprocess,
            in_channels=data.channels,
            inference_tile=config.val_tile,
            inference_tta=config.tta,
            input_scale=config.scale,
            train_config=asdict(config),
            training=result.to_dict(),
            metrics=metrics,
            calibration=calibration,
            data_choices=list(data_choices),
        )
    seconds = {
        "train": trained - started,
        "calibrate_evaluate": evaluated - trained,
        "save": time.perf_counter() - evaluated,
    }
    return CandidateResult(genome, metrics, postprocess, result, model_dir, seconds, calibration)

