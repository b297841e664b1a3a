"""One trial: suggest -> cost -> (reject over budget | reuse a duplicate | build -> train -> report).

Everything a trial learns is stored as Optuna user attributes (see :data:`METRIC_ATTRS`), so the
dashboard, ``skipnas report`` and ``skipnas export`` read the study alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from skipnas.candidate import PreparedData, train_candidate
from skipnas.cost import CostConfig, estimate_cost
from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.modelio import MODEL_FOLDER_FILES, is_model_folder
from skipnas.runtime.device import select_device
from skipnas.space import SearchSpace
from skipnas.study.settings import DIRECTIONS, OBJECTIVES, SURPLUS_ATTR
from skipnas.study.trials import INTERRUPTED, counted_before
from skipnas.train.config import TrainConfig
from skipnas.train.trainer import training_loss
from skipnas.train.validation import EpochResult

METRIC_ATTRS = (
    "dice", "precision", "recall", "iou", "count_mae", "count_mse", "exact_count_accuracy",
    "relative_count_error", "object_precision", "object_recall",
)
# training hyperparameters a search space may declare, and where they go in TrainConfig
TRAINING_HYPERPARAMETERS = (
    "lr", "finetune_lr", "weight_decay", "optimizer", "scheduler", "loss", "dice_weight", "particle_weight",
    "batch_size", "auxiliary", "auxiliary_weight",
)
# TOML has no null: a space file writes auxiliary = "none" for a model without the head
NO_AUXILIARY = "none"


class StudyFull(Exception):
    """Raised inside a trial started after the study reached ``--trials``; the trial is marked failed
    with the ``surplus`` attribute and does not count."""


def check_training_hyperparameters(space: SearchSpace, base: TrainConfig) -> None:
    """Names and values of the space's training hyperparameters, checked before the first trial."""
    from skipnas.space import GENOME_HYPERPARAMETERS, Choice, Fixed

    where = space.source or space.name
    unknown = set(space.hyperparameters) - set(TRAINING_HYPERPARAMETERS) - set(GENOME_HYPERPARAMETERS)
    if unknown:
        raise SkipnasError(
            f"{where}: unknown hyperparameter(s) {', '.join(sorted(unknown))}; "
            f"searchable: {', '.join(GENOME_HYPERPARAMETERS + TRAINING_HYPERPARAMETERS)}"
        )
    for name, hp in space.hyperparameters.items():
        if name in GENOME_HYPERPARAMETERS:
            continue
        values = hp.choices if isinstance(hp, Choice) else (hp.value,) if isinstance(hp, Fixed) else (hp.low, hp.high)
        for value in values:
            try:
                training_config(base, {name: value})
            except (SkipnasError, ValueError, TypeError) as exc:
                raise SkipnasError(f"{where}: hyperparameters.{name} = {value!r} cannot be used ({exc})") from None


def training_config(base: TrainConfig, hyperparameters: dict[str, Any]) -> TrainConfig:
    """``base`` with a trial's training hyperparameters applied (``finetune_lr`` defaults to ``lr``;
    ``auxiliary = "none"`` trains without the auxiliary head)."""
    hp = dict(hyperparameters)
    changes: dict[str, Any] = {}
    if "lr" in hp or "finetune_lr" in hp:
        lr = float(hp.get("lr", base.pretrain.lr))
        changes["pretrain"] = dataclasses.replace(base.pretrain, lr=lr)
        changes["finetune"] = dataclasses.replace(base.finetune, lr=float(hp.get("finetune_lr", lr)))
    for key in ("weight_decay", "optimizer", "scheduler", "batch_size"):
        if key in hp:
            changes[key] = hp[key]
    if "auxiliary" in hp:
        changes["auxiliary"] = None if hp["auxiliary"] in (None, NO_AUXILIARY) else hp["auxiliary"]
    if "auxiliary_weight" in hp:
        changes["auxiliary_weight"] = float(hp["auxiliary_weight"])
    loss_changes = {key: hp[key] for key in ("loss", "dice_weight", "particle_weight") if key in hp}
    if loss_changes:
        changes["loss"] = dataclasses.replace(
            base.loss,
            kind=loss_changes.get("loss", base.loss.kind),
            **{key: float(value) for key, value in loss_changes.items() if key != "loss"},
        )
    return dataclasses.replace(base, **changes)


def candidate_hash(genome: Genome, hyperparameters: dict[str, Any]) -> str:
    """The genome's canonical hash, extended by the training hyperparameters when there are any:
    the same skips trained with another learning rate are another candidate."""
    if not hyperparameters:
        return genome.hash
    text = genome.canonical_string() + ";" + json.dumps(hyperparameters, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class TrialProgress:
    """What the live display shows about the running trial."""

    number: int | None = None
    topology: str = ""
    stage: str = ""
    epoch: int = 0
    val_dice: float | None = None
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Objective:
    """Callable for ``study.optimize``; holds the prepared data so trials share it."""

    space: SearchSpace
    data: PreparedData
    base_config: TrainConfig
    objective: str = "dice"
    budget_bytes: float = math.inf
    trials_dir: Path | None = None
    on_progress: Callable[[TrialProgress], None] | None = None
    max_trials: int | None = None  # the study's --trials, so a surplus start by a parallel worker stops
    data_choices: tuple[str, ...] = ()  # the settings chosen from the data, in words, for every model folder
    interrupted_trial: int | None = field(default=None, init=False)  # the trial Ctrl-C ended, for its retry
    _cost_cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise SkipnasError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        check_training_hyperparameters(self.space, self.base_config)

    # pieces -------------------------------------------------------------------------------------
    def _progress(self, state: TrialProgress, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(state, key, value)
        if self.on_progress is not None:
            self.on_progress(state)

    def _cost(self, genome: Genome, config: TrainConfig) -> Any:
        """The trial's own training step (its batch, optimiser as configured and loss) and its
        validation batch, on the device it trains on."""
        setup = select_device(config.device, config.precision, config.channels_last)
        cost_config = CostConfig(
            tile=config.tile.size,
            batch=config.batch_size,
            in_channels=self.data.channels,
            auxiliary=config.auxiliary,
            dtype="float32" if setup.amp_dtype is None else str(setup.amp_dtype).removeprefix("torch."),
            optimizer=config.optimizer,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            channels_last=setup.channels_last,
            instance_channel=config.loss.needs_instances,
            val_tile=config.val_tile,
            val_batch=config.val_batch,
            device_type=setup.device.type,
        )
        key = f"{genome.hash}:{cost_config}:{config.loss}"
        if key not in self._cost_cache:
            self._cost_cache[key] = estimate_cost(genome, cost_config, loss_fn=training_loss(config))
        return self._cost_cache[key]

    def _fit_validation_to_budget(self, genome: Genome, config: TrainConfig) -> tuple[TrainConfig, Any]:
        """``config`` and its cost, with the validation batch halved while validation alone puts the
        trial over the budget and a smaller batch brings it under."""
        cost = self._cost(genome, config)
        while cost.predicted_peak_bytes > self.budget_bytes and config.val_batch > 1:
            if cost.predicted_validation_bytes <= cost.predicted_train_step_bytes:
                break  # the training step is the peak: a smaller validation batch cannot help
            smaller = dataclasses.replace(config, val_batch=config.val_batch // 2)
            smaller_cost = self._cost(genome, smaller)
            config, cost = smaller, smaller_cost
        return config, cost

    def _values(self, attrs: dict[str, Any]) -> float | list[float]:
        if self.objective == "dice":
            return float(attrs["dice"])
        if self.objective == "count_mae":
            return float(attrs["count_mae"])
        return [float(attrs["dice"]), float(attrs["predicted_peak_mib"])]

    def _intermediate(self, result: EpochResult) -> float:
        """What the pruner compares, in the study's direction: the objective itself (a count MAE
        study keeps and scores its weights by count, so each validation has one)."""
        if self.objective == "count_mae":
            return result.val_count_mae if result.val_count_mae is not None else math.inf
        return result.val_dice

    @staticmethod
    def _earlier(trial: optuna.Trial, key: str) -> optuna.trial.FrozenTrial | None:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for other in trial.study.get_trials(deepcopy=False, states=states):
            if other.user_attrs.get("candidate_hash") == key and "duplicate_of" not in other.user_attrs:
                return other
        return None

    # the trial -----------------------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        """One trial; a failure or Ctrl-C is recorded in the trial's ``fail_reason`` before Optuna marks it failed."""
        try:
            return self._run(trial)
        except (optuna.TrialPruned, StudyFull):
            raise
        except KeyboardInterrupt:
            self.interrupted_trial = trial.number
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            trial.set_user_attr("fail_reason", f"{exc.__class__.__name__}: {message}"[:300])
            raise

    def _run(self, trial: optuna.Trial) -> float | list[float]:
        started = time.perf_counter()
        if self.max_trials is not None and counted_before(trial.study, trial.number) >= self.max_trials:
            # another worker started the last trial first: this one must not run
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise StudyFull(f"the study already holds {self.max_trials} trials")
        genome, hyperparameters = self.space.suggest(trial)
        config = training_config(self.base_config, hyperparameters)
        key = candidate_hash(genome, hyperparameters)
        trial.set_user_attr("genome", genome.to_dict())
        trial.set_user_attr("genome_hash", genome.hash)
        trial.set_user_attr("candidate_hash", key)
        trial.set_user_attr("topology", genome.name)
        trial.set_user_attr("auxiliary", config.auxiliary)
        state = TrialProgress(number=trial.number, topology=genome.name)
        self._progress(state, stage="cost model")

        requested_val_batch = config.val_batch
        config, cost = self._fit_validation_to_budget(genome, config)
        if config.val_batch != requested_val_batch:
            # validation predicts fewer tiles at a time (slower, the same maps) to keep the trial under budget
            trial.set_user_attr("val_batch", config.val_batch)
            trial.set_user_attr("val_batch_reduced_from", requested_val_batch)
        cost_attrs = {
            "params": cost.params,
            "flops": cost.train_step_flops,
            "predicted_train_step_bytes": cost.predicted_train_step_bytes,
            "predicted_validation_bytes": cost.predicted_validation_bytes,
            "predicted_peak_bytes": cost.predicted_peak_bytes,
            "predicted_peak_mib": round(cost.predicted_peak_mib, 3),
        }
        for name, value in cost_attrs.items():
            trial.set_user_attr(name, value)
        seconds = {"cost": time.perf_counter() - started}
        if math.isfinite(self.budget_bytes):
            budget_mib = self.budget_bytes / 2**20
            trial.set_user_attr("budget_mib", budget_mib)
            trial.set_constraint("memory_mib", cost.predicted_peak_mib - budget_mib)
            if cost.predicted_peak_bytes > self.budget_bytes:
                reason = f"over the memory budget: {cost.predicted_peak_mib:.4g} MiB predicted > {budget_mib:.4g} MiB"
                trial.set_user_attr("infeasible", True)
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)

        earlier = self._earlier(trial, key)
        if earlier is not None:
            trial.set_user_attr("duplicate_of", earlier.number)
            for name in (*METRIC_ATTRS, "model_dir", "counting_method", "train_seconds"):
                if name in earlier.user_attrs:
                    trial.set_user_attr(name, earlier.user_attrs[name])
            if earlier.state == optuna.trial.TrialState.PRUNED:
                reason = f"same candidate as trial {earlier.number}, which was pruned"
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)
            return self._values({**earlier.user_attrs, **cost_attrs})

        pretrain_steps = 0

        def report(result: EpochResult) -> None:
            # the pruner's resource is the fine-tuning steps so far: the same rungs for every
            # candidate whatever its pretraining (a seconds budget pretrains each a different number)
            nonlocal pretrain_steps
            self._progress(state, stage=result.phase, epoch=result.epoch, val_dice=result.val_dice)
            if result.phase == "pretrain":
                pretrain_steps = result.step
            if result.phase != "finetune" or self.objective == "dice+memory":
                return  # multi-objective studies cannot prune
            steps = result.step - pretrain_steps
            trial.report(self._intermediate(result), steps)
            if trial.should_prune():
                reason = f"pruned after {steps} fine-tuning steps: {result.scores()}"
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)

        out = self.trials_dir / str(trial.number) if self.trials_dir is not None else None
        candidate = train_candidate(
            genome, self.data, config, out=out, callbacks=[report], progress=False, data_choices=self.data_choices
        )
        seconds.update(candidate.seconds)
        metrics = {name: candidate.metrics[name] for name in METRIC_ATTRS if name in candidate.metrics}
        for name, value in metrics.items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("counting_method", candidate.postprocess.method)
        trial.set_user_attr("train_seconds", round(seconds["train"], 2))
        trial.set_user_attr("steps", candidate.training.steps)
        trial.set_user_attr("stop_reasons", candidate.training.stop_reasons)
        trial.set_user_attr("seconds", {k: round(v, 3) for k, v in seconds.items()})
        if candidate.model_dir is not None:
            # absolute: export may run from another folder, or another machine on a shared file system
            trial.set_user_attr("model_dir", str(candidate.model_dir.resolve()))
        for stage, measured in candidate.training.measured_peak_bytes.items():  # on CUDA only
            trial.set_user_attr(f"measured_{stage}_bytes", measured)
        self._progress(state, stage="done")
        return self._values({**metrics, **cost_attrs})


def prune_model_folders(study: optuna.Study, keep: int, objective: str, trials_dir: Path) -> list[Path]:
    """Delete the model folders of all completed trials but the best ``keep`` (first objective); returns them.

    Only a trial's own folder ``trials_dir/<number>`` is touched, never the path its ``model_dir``
    attribute names (anyone who can write the study can change that), and in it only a model
    folder's own files: the folder itself goes only when nothing else is left in it.
    """
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    reverse = DIRECTIONS[objective][0] == "maximize"
    ranked = sorted(complete, key=lambda t: t.values[0], reverse=reverse)
    kept = {_resolved(trials_dir / str(t.number)) for t in ranked[:keep]}
    kept |= {_resolved(Path(t.user_attrs["model_dir"])) for t in ranked[:keep] if isinstance(t.user_attrs.get("model_dir"), str)}
    removed = []
    for trial in ranked[keep:]:
        folder = trials_dir / str(trial.number)
        if _resolved(folder) not in kept and remove_model_folder(folder):
            removed.append(folder)
    return removed


def remove_model_folder(folder: Path) -> bool:
    """Delete a model folder's own files in ``folder``, and ``folder`` once empty; False (nothing touched)
    for a link or anything that is not a model folder."""
    if folder.is_symlink() or not folder.is_dir() or not is_model_folder(folder):
        return False
    for name in MODEL_FOLDER_FILES:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass  # it holds the user's own files: they stay, and the folder with them
    return True


def _resolved(path: Path) -> Path:
    return path.resolve(strict=False)
