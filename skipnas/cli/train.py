"""``skipnas train``: train one topology, calibrate its counting, write a model folder."""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skipnas.auxiliary import AUXILIARY_TARGETS
from skipnas.cli._common import CALIBRATE_ON_CHOICES, console, parse_auto, print_json, status_console
from skipnas.errors import SkipnasError
from skipnas.tta import TTA_MODES

if TYPE_CHECKING:
    from skipnas.genome import Genome
    from skipnas.train.config import PhaseConfig

# TrainConfig's pretraining defaults (tied by a test; TrainConfig imports torch, the parser must not)
PRETRAIN_LR = 1e-3
SYNTHETIC_IMAGES = 64

METRIC_ROWS = (
    ("dice", "Dice"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("iou", "IoU"),
    ("count_mae", "count MAE"),
    ("count_mse", "count MSE"),
    ("exact_count_accuracy", "exact-count accuracy"),
    ("relative_count_error", "relative count error"),
    ("object_precision", "object precision"),
    ("object_recall", "object recall"),
    ("images", "images"),
)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="where to run (default: auto)")


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """``--tta`` of the commands that predict with a model folder: by default the folder's own."""
    parser.add_argument(
        "--tta", choices=TTA_MODES, default=None,
        help="test-time augmentation: average the prediction over mirrored views (flips: 4, dihedral: 8; each "
        "view costs one pass). Default: the one the model's counting was calibrated with (skipnas train --tta)",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one topology on the real training images (optionally pretrained on semi-synthetic ones) and write a model folder",
        description="Train one topology: train on the real training images (after --pretrain-seconds of pretraining on "
        "semi-synthetic images made from the training split, if given), calibrate the counting post-processing on "
        "validation, write a model folder and print the validation metrics.",
    )
    parser.add_argument("--data", default="demo", metavar="DIR|demo", help="dataset folder (default: the embedded demo)")
    parser.add_argument("--topology", default="standard", metavar="NAME_OR_JSON", help="named topology or genome JSON (default: standard)")
    parser.add_argument(
        "--width", default=None, metavar="N|auto",
        help="base width (channels of the first level; each level down doubles them); auto: the topology's width (16 "
        "for a named one), narrowed down to 8 where a step's tiles hold more pixels than 8 tiles of 64 px, so a step's "
        "arithmetic (pixels x width squared) stays near that of 8 such tiles and the seconds train more steps "
        "(default: a genome file's own width, else auto)",
    )
    parser.add_argument(
        "--pretrain-seconds", type=float, default=0.0, metavar="S",
        help="pretraining budget on semi-synthetic images; 0 skips it (default 0: on the real datasets measured, "
        "fine-tuning for the whole budget counted better)",
    )
    parser.add_argument(
        "--finetune-seconds", type=float, default=180.0, metavar="S",
        help="fine-tuning budget on the real training images; 0 skips it (default 180)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, metavar="N",
        help="train N steps in all instead of for a time, split between the phases as their seconds are "
        "(all fine-tuning by default): the same run gives the same model on the same machine",
    )
    parser.add_argument(
        "--pretrain-epochs", type=int, default=None, metavar="N", help="also stop pretraining after N epochs (with --pretrain-seconds)"
    )
    parser.add_argument("--finetune-epochs", type=int, default=None, metavar="N", help="also stop fine-tuning after N epochs")
    parser.add_argument(
        "--lr", type=float, default=None,
        help=f"pretraining learning rate, with --pretrain-seconds (default {PRETRAIN_LR:g}); training on your images: --finetune-lr",
    )
    parser.add_argument("--finetune-lr", type=float, default=5e-4, help="fine-tuning learning rate (default 5e-4)")
    parser.add_argument(
        "--batch", default="auto", metavar="N|auto",
        help="batch size; auto: 8, more for tiles under 64 px (as many pixels a step as 8 tiles of 64 px) (default auto)",
    )
    parser.add_argument(
        "--tile", default="auto", metavar="PX|auto",
        help="training tile size in px; auto: at least twice the large particles' width at the input scale, and 64 "
        "or more (default auto)",
    )
    parser.add_argument(
        "--scale", default="auto", metavar="S|auto",
        help="resize images by S before the network (training, validation, counting; particles come back in the "
        "image's own pixels); "
        "auto: shrink large particles (95th percentile width) to 64 px, never the median below 12 px, never enlarge "
        "(default auto)",
    )
    parser.add_argument(
        "--normalise", choices=("auto", "dataset", "image"), default="auto",
        help="dataset: every image by the training split's mean and std; image: each image stretched by its own "
        "0.5-99.5 percentiles first; auto: image where the training images' mean brightness differs by more than "
        "2 standard deviations between images (default auto)",
    )
    parser.add_argument(
        "--invert", choices=("auto", "on", "off"), default="auto",
        help="invert training tiles at random (each channel around its mean); auto: on where the particles are brighter "
        "than their surroundings in some training images and darker in others, each in at least 20%% of the images "
        "where either is clear (default auto)",
    )
    parser.add_argument(
        "--synthetic", type=int, default=None, metavar="N",
        help=f"semi-synthetic images to pretrain on, with --pretrain-seconds (default {SYNTHETIC_IMAGES})",
    )
    parser.add_argument("--loss", choices=("bce_dice", "focal", "bce"), default="bce_dice", help="loss (default bce_dice)")
    parser.add_argument(
        "--particle-weight", type=float, default=0.0, metavar="W",
        help="add W x a per-particle Dice term (every particle counts alike, however small or faint; needs instance "
        "masks to tell touching particles apart) (default 0: pixel losses only)",
    )
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="optimiser (default adam)")
    parser.add_argument(
        "--scheduler", choices=("plateau", "step", "cosine", "none"), default="plateau",
        help="LR schedule: halve on a validation Dice plateau, step, a half cosine over each phase's budget, or none (default plateau)",
    )
    parser.add_argument(
        "--ema-decay", type=float, default=0.0, metavar="DECAY",
        help="validate a moving average of the weights and save it as the model (each step moves it 1 - DECAY of the "
        "way to the weights; it warms up, so until about 9 / (1 - DECAY) steps it spans about the last ninth of the "
        "steps, then about the last 1 / (1 - DECAY)): steadier than the weights the last steps left; 0: the weights "
        "themselves (default 0)",
    )
    parser.add_argument(
        "--validation-steps", type=int, default=100, metavar="N",
        help="validate (and step the scheduler and early stopping) every N steps, within an epoch or across several, "
        "and at the end of each phase; 0: after every epoch (default 100)",
    )
    parser.add_argument(
        "--patience", type=int, default=8, metavar="N",
        help="end a phase after N validations without a better score (early stopping); 0: never, train the whole "
        "budget (default 8)",
    )
    parser.add_argument(
        "--auxiliary", choices=(*AUXILIARY_TARGETS, "none", "auto"), default="auto",
        help="add a second head trained on this target from the instance masks (distance: each particle's distance "
        "to its own border; centres: a Gaussian peak at each particle's deepest point), so calibration may count by "
        "its seeds and split touching particles; auto: distance when 10 %% or more of the training particles touch "
        "another (default auto)",
    )
    parser.add_argument(
        "--auxiliary-weight", type=float, default=1.0, metavar="W", help="with --auxiliary: the auxiliary loss's weight (default 1)"
    )
    parser.add_argument(
        "--keep-best", choices=("dice", "count"), default="dice",
        help="which fine-tuning validation's weights to keep: the highest pixel Dice, or the lowest count MAE with the "
        "counting calibrated on val at every validation (slower validations) (default dice)",
    )
    parser.add_argument(
        "--calibrate-on", choices=CALIBRATE_ON_CHOICES, default="auto",
        help="the labelled images that choose the counting setting (threshold, morphology, minimum area, method): val; "
        "val+train: val and training images drawn until the calibration holds 1,000 particles (they were trained on, so "
        "they flatter the network a little); auto: val+train when val holds fewer than 100 particles, too few for a "
        "setting that carries over to new images, else val (default auto)",
    )
    parser.add_argument(
        "--tta", choices=TTA_MODES, default="none",
        help="test-time augmentation of the final calibration's val predictions (flips: 4 mirrored views averaged, "
        "dihedral: 8), recorded in the model folder so skipnas count and evaluate predict the same way (default none)",
    )
    parser.add_argument(
        "--init", type=Path, default=None, metavar="MODEL_DIR",
        help="start from this model folder's weights instead of from scratch (its genome, auxiliary head, input scale "
        "and normalisation carried over): fine-tune a served or exported model on new or corrected images",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_device_arguments(parser)
    parser.add_argument(
        "--out", type=Path, default=None, metavar="MODEL_DIR",
        help="model folder: new, empty, or a model folder (only its model files are replaced) "
        "(default: runs/models/TOPOLOGY-wWIDTH)",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="also write into a folder of other files, beside them (they are kept; files named like the model's are refused)",
    )
    parser.add_argument("--json", action="store_true", help="print the validation metrics as one JSON object")
    parser.set_defaults(func=_train)


def check_budgets(args: argparse.Namespace) -> None:
    """Refuse negative (or NaN) budgets, loss weights and patience, learning rates that are not above
    0, and a run that would train nothing, naming the flag: before any data is read."""
    for flag in ("pretrain_seconds", "finetune_seconds"):
        value = getattr(args, flag)
        if not value >= 0:  # NaN fails too
            raise SkipnasError(f"--{flag.replace('_', '-')} must be 0 or more (0 skips the phase), got {value:g}")
    if args.steps is not None and args.steps < 1:
        raise SkipnasError(f"--steps must be at least 1, got {args.steps}")
    for flag in ("particle_weight", "auxiliary_weight"):
        value = getattr(args, flag)
        if not (math.isfinite(value) and value >= 0):
            raise SkipnasError(f"--{flag.replace('_', '-')} must be 0 or more (0: no such loss term), got {value:g}")
    if args.patience < 0:
        raise SkipnasError(f"--patience must be 0 (never stop early) or more, got {args.patience}")
    for flag in ("pretrain_epochs", "finetune_epochs", "synthetic"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            skips = "pretraining" if flag == "synthetic" else "the phase"
            raise SkipnasError(f"--{flag.replace('_', '-')} must be 0 or more (0 skips {skips}), got {value}")
    for flag in ("lr", "finetune_lr"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SkipnasError(f"--{flag.replace('_', '-')} must be above 0 (e.g. 1e-3), got {value:g}")
    pretraining_only = [f"--{flag.replace('_', '-')}" for flag in ("lr", "pretrain_epochs", "synthetic") if getattr(args, flag) is not None]
    if args.pretrain_seconds == 0 and pretraining_only:
        *others, last = pretraining_only
        flags = f"{', '.join(others)} and {last}" if others else last
        rate = "; the rate of training on your images is --finetune-lr" if args.lr is not None else ""
        raise SkipnasError(
            f"{flags} only {'applies' if len(pretraining_only) == 1 else 'apply'} to pretraining, which is off "
            f"(--pretrain-seconds 0, the default): give --pretrain-seconds S to pretrain{rate}"
        )
    pretrains = args.pretrain_seconds > 0 and args.pretrain_epochs != 0 and synthetic_images(args) > 0
    if not pretrains and (args.finetune_seconds == 0 or args.finetune_epochs == 0):
        raise SkipnasError(
            "nothing to train: both phases are skipped (a 0 seconds or epochs budget, or --synthetic 0 for pretraining); "
            "give --finetune-seconds or --pretrain-seconds a budget above 0"
        )


def synthetic_images(args: argparse.Namespace) -> int:
    return SYNTHETIC_IMAGES if args.synthetic is None else args.synthetic


def phase_budgets(args: argparse.Namespace) -> tuple[PhaseConfig, PhaseConfig]:
    """The two phases' budgets: seconds (and epochs), or with ``--steps`` that many steps split as the
    seconds are, with no time limit."""
    from skipnas.train.config import PhaseConfig, split_steps

    pretrain_lr = PRETRAIN_LR if args.lr is None else args.lr
    if args.steps is None:
        return (
            PhaseConfig(epochs=args.pretrain_epochs, seconds=args.pretrain_seconds, lr=pretrain_lr),
            PhaseConfig(epochs=args.finetune_epochs, seconds=args.finetune_seconds, lr=args.finetune_lr),
        )
    pretrain_steps, finetune_steps = split_steps(args.steps, args.pretrain_seconds / (args.pretrain_seconds + args.finetune_seconds))
    return (
        PhaseConfig(epochs=args.pretrain_epochs, steps=pretrain_steps, lr=pretrain_lr),
        PhaseConfig(epochs=args.finetune_epochs, steps=finetune_steps, lr=args.finetune_lr),
    )


def default_model_folder(genome: Genome) -> Path:
    return Path("runs") / "models" / f"{genome.name}-w{genome.base_width}"


def load_init_folder(args: argparse.Namespace) -> Any:
    """The ``--init`` model folder, refusing options that would contradict what it carries over."""
    from skipnas.modelio import load_model_folder

    given = [flag for flag, value in (("--topology", args.topology != "standard"), ("--width", args.width is not None),
                                       ("--scale", args.scale != "auto"), ("--normalise", args.normalise != "auto")) if value]
    if args.auxiliary not in ("auto",):
        given.append("--auxiliary")
    if given:
        raise SkipnasError(f"--init carries over the model's genome, head, scale and normalisation; leave out {', '.join(given)}")
    return load_model_folder(args.init)


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in METRIC_ROWS:
        if key in metrics:
            value = metrics[key]
            table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value))
    out = console()
    out.print(f"[bold]{title}[/]")
    out.print(table)


def _train(args: argparse.Namespace) -> int:
    from skipnas.candidate import adapt_config_to_dataset, open_dataset, prepare_data, train_candidate
    from skipnas.data.particles import check_batch, check_tile_size
    from skipnas.data.rescale import check_scale
    from skipnas.fileio import staging_dir
    from skipnas.genome import NAMED_TOPOLOGIES, load_genome
    from skipnas.modelio import check_model_target, install_model_folder
    from skipnas.train.adapt import adapt_width
    from skipnas.train.average import check_ema_decay
    from skipnas.train.config import TrainConfig
    from skipnas.train.losses import LossConfig

    if args.auxiliary == "none" and args.auxiliary_weight != 1.0:
        raise SkipnasError("--auxiliary-weight needs --auxiliary distance: without a head there is no auxiliary loss to weigh")
    tile = parse_auto(args.tile, int, "--tile")
    scale = parse_auto(args.scale, float, "--scale")
    batch = parse_auto(args.batch, int, "--batch")
    width = None if args.width is None else parse_auto(args.width, int, "--width")
    if width is not None and width < 1:
        raise SkipnasError(f"--width must be auto or a whole number of 1 or more, got {width}")
    check_ema_decay(args.ema_decay, "--ema-decay")
    check_budgets(args)
    init = load_init_folder(args) if args.init is not None else None
    genome = init.genome if init is not None else load_genome(args.topology, base_width=width)
    width_from_data = init is None and (args.width == "auto" or (args.width is None and args.topology in NAMED_TOPOLOGIES))
    if init is not None:
        scale = init.scale
    # checked before the data is read, so a typo costs nothing
    if tile is not None:
        check_tile_size(tile, 2**genome.depth)
    if scale is not None:
        check_scale(scale)
    if batch is not None:
        check_batch(batch)
    pretrain, finetune = phase_budgets(args)
    config = TrainConfig(
        pretrain=pretrain,
        finetune=finetune,
        synthetic_images=synthetic_images(args),
        loss=LossConfig(kind=args.loss, particle_weight=args.particle_weight),
        optimizer=args.optimizer,
        scheduler=args.scheduler,
        ema_decay=args.ema_decay,
        validation_steps=args.validation_steps or None,
        early_stopping=args.patience or None,
        auxiliary_weight=args.auxiliary_weight,
        keep_best_by=args.keep_best,
        calibrate_on=args.calibrate_on,
        tta=args.tta,
        device=args.device,
        seed=args.seed,
    )
    out: Path | None = None
    if args.out or not width_from_data:
        # checked before the data is read, unless the default folder's name waits for the width the data gives
        out = check_model_target(args.out or default_model_folder(genome), args.overwrite)
    notes = status_console()
    notes.print(f"preparing data from {args.data} ...")
    auxiliary = None if args.auxiliary == "none" else args.auxiliary
    if init is not None:
        auxiliary = init.auxiliary
    index = open_dataset(args.data)
    config, choices = adapt_config_to_dataset(
        index, config, genome.depth, scale=scale, tile=tile, batch=batch, auxiliary=auxiliary,
        normalise=None if args.normalise == "auto" else args.normalise,
        invert=None if args.invert == "auto" else args.invert == "on",
    )
    if config.auxiliary is None and args.auxiliary_weight != 1.0:
        raise SkipnasError(
            "--auxiliary-weight needs an auxiliary head, and this data gets none (few particles touch); "
            "add --auxiliary distance or drop --auxiliary-weight"
        )
    if width_from_data:
        genome, width_notes = adapt_width(genome, config)
        choices = [*choices, *width_notes]
    if out is None:
        out = check_model_target(default_model_folder(genome), args.overwrite)
    for line in choices:
        notes.print(f"  {line}", soft_wrap=True, markup=False)
    data = prepare_data(index, config)
    initial_weights = None
    if init is not None:
        if data.channels != init.in_channels:
            raise SkipnasError(
                f"{args.data}: images of {data.channels} channel(s), and the model in {args.init} takes {init.in_channels}; "
                "convert the images or train from scratch"
            )
        # the network learnt its weights on inputs normalised its own way
        data = dataclasses.replace(data, normalisation=init.normalisation)
        initial_weights = init.model.state_dict()
        choices = [*choices, f"started from the weights of {args.init} ({genome.name}, width {genome.base_width})"]
    notes.print(
        f"{len(data.train)} train / {len(data.val)} val images, "
        + (f"{len(data.synthetic)} semi-synthetic to pretrain on; " if data.synthetic else "no pretraining; ")
        + f"training {genome.name} (width {genome.base_width})"
        + (f" with an auxiliary {config.auxiliary} head" if config.auxiliary else "")
    )
    if args.overwrite:
        # train_candidate writes only where no permission is needed: a new folder, installed from there
        staging = staging_dir(out)
        try:
            result = train_candidate(
                genome, data, config, out=staging, progress=not args.json, data_choices=choices, initial_weights=initial_weights
            )
            install_model_folder(staging, out, overwrite=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        result = train_candidate(
            genome, data, config, out=out, progress=not args.json, data_choices=choices, initial_weights=initial_weights
        )
    calibrated_on = result.calibration.get("calibrated_on")
    if args.json:
        print_json({**result.metrics, "model_dir": str(out), "stop_reasons": result.training.stop_reasons, "calibrated_on": calibrated_on})
        return 0
    if calibrated_on:
        console().print(
            f"counting chosen on val and train ({calibrated_on['images']} images, {result.calibration['particles']} particles; "
            f"{calibrated_on['why']}): {result.postprocess.method}",
            soft_wrap=True,
        )
    print_metrics(
        f"validation ({len(data.val)} images; selection scores: these images chose the weights and the counting), "
        f"counting: {result.postprocess.method}",
        result.metrics,
    )
    caution = result.calibration.get("caution")
    if caution:
        console().print(f"[yellow]note: {caution}[/]", soft_wrap=True)
    console().print(f"stopped: {', '.join(f'{k}: {v}' for k, v in result.training.stop_reasons.items())}")
    kept = result.training.kept
    if kept is not None:
        console().print(f"kept the weights of step {kept.step} ({kept.scores()})")
    console().print(f"model folder: {out}")
    return 0
