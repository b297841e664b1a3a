"""``skipnas search``: the product's main job."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import console, print_json, status_console
from skipnas.errors import SkipnasError


def register(subparsers: Any) -> None:
    from skipnas.study.settings import OBJECTIVES, PRUNERS, SAMPLERS, SearchSettings

    defaults = SearchSettings()
    parser = subparsers.add_parser(
        "search",
        help="search skip-connection topologies (baselines first, then Optuna's sampler) under a memory budget",
        description="Train candidate U-Nets from scratch, each pretrained on semi-synthetic images and fine-tuned on "
        "real ones, under a memory budget (candidates over it are rejected before training). The standard, "
        "semi-dense, reverse, dense and no-skip nets are the first trials of every study. The study lives in "
        "Optuna storage: re-running the same command resumes it up to --trials in total, and several workers "
        "may share it.",
    )
    parser.add_argument("--trials", type=int, default=defaults.trials, help=f"trials in the study in total (default {defaults.trials})")
    parser.add_argument("--data", default=defaults.data, metavar="DIR|demo", help="dataset folder (default: the embedded demo)")
    parser.add_argument("--space", default=defaults.space, metavar="FILE", help="search-space TOML, or a name in search_spaces/ (default: default)")
    parser.add_argument("--storage", default=None, metavar="URL", help="Optuna storage: an RDB URL or a journal file path, in an existing folder (default: sqlite:///runs/skipnas.db)")
    parser.add_argument("--study", default=None, metavar="NAME", help="study name, also its folder under --runs-dir: letters, digits, - _ . (default: from data, space and objective)")
    parser.add_argument("--budget-mib", type=float, default=None, metavar="M", help="memory budget in MiB (default: the space file's)")
    parser.add_argument("--trial-seconds", type=float, default=defaults.trial_seconds, metavar="S", help=f"training seconds per trial, pretraining included (default {defaults.trial_seconds:g})")
    parser.add_argument("--trial-steps", type=int, default=None, metavar="N", help="instead of --trial-seconds: every trial trains N steps, pretraining included, so every candidate does the same work whatever its cost per step (default: the space's budget_steps, else seconds)")
    parser.add_argument("--validation-steps", type=int, default=None, metavar="N", help="every trial validates (and reports to the pruner) every N fine-tuning steps: smaller N gives a pruner more rungs to stop poor candidates at, each validation costs a prediction of the val images (default 100)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=defaults.sampler, help="Optuna sampler (default tpe)")
    parser.add_argument("--pruner", choices=PRUNERS, default=defaults.pruner, help="stops poor trials early on the objective (Dice, or count MAE) at each fine-tuning validation, its resource the fine-tuning steps (default median)")
    parser.add_argument("--objective", choices=OBJECTIVES, default=defaults.objective, help="what to optimise (default dice)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default 0)")
    parser.add_argument("--keep-models", type=int, default=None, metavar="K", help="keep the model folders of the best K trials only; the others' model files in the study's trials/ folder are deleted (default: keep all)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="where to train (default auto)")
    parser.add_argument("--jobs", type=int, default=1, metavar="K", help="worker processes on this machine, sharing the study (default 1; one GPU each where there are GPUs)")
    parser.add_argument("--jobs-per-gpu", type=int, default=None, metavar="K", help="pack K concurrent trials on each GPU")
    parser.add_argument("--threads", type=int, default=None, metavar="T", help="CPU threads per worker (default: the cores shared among the workers)")
    parser.add_argument("--heartbeat-seconds", type=int, default=defaults.heartbeat_seconds, metavar="S", help=f"RDB storages: a trial whose worker is silent for 2xS is failed and retried once (default {defaults.heartbeat_seconds})")
    parser.add_argument("--synthetic", type=int, default=defaults.synthetic_images, metavar="N", help=f"semi-synthetic images to pretrain on (default {defaults.synthetic_images})")
    parser.add_argument("--quiet", action="store_true", help="no live display (workers started by --jobs run this way)")
    parser.add_argument("--runs-dir", type=Path, default=defaults.runs_dir, metavar="DIR", help="where studies keep their files (default runs/)")
    parser.add_argument("--confirm", type=int, default=None, metavar="K", help="at the end, run skipnas confirm --top K --seeds 3: the top K candidates and the baselines trained again and scored on test")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end instead of the table")
    parser.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    from skipnas.study.display import SearchDisplay, trial_rows
    from skipnas.study.driver import search
    from skipnas.study.settings import SearchSettings

    settings = SearchSettings(
        trials=args.trials, data=args.data, space=args.space, storage=args.storage, study=args.study,
        budget_mib=args.budget_mib, trial_seconds=args.trial_seconds, trial_steps=args.trial_steps,
        validation_steps=args.validation_steps, sampler=args.sampler, pruner=args.pruner,
        objective=args.objective, seed=args.seed, device=args.device, runs_dir=args.runs_dir, keep_models=args.keep_models,
        jobs=args.jobs, jobs_per_gpu=args.jobs_per_gpu, threads=args.threads, heartbeat_seconds=args.heartbeat_seconds,
        synthetic_images=args.synthetic,
    )
    if args.confirm is not None and args.confirm < 1:
        raise SkipnasError(f"--confirm must be at least 1 (the candidates to confirm), got {args.confirm}")
    notes = status_console()
    if not args.quiet:
        notes.print(f"preparing data from {args.data} and opening the study ...")
    display = SearchDisplay(settings.trials, settings.study or "", enabled=not (args.json or args.quiet))
    with display:
        result = search(settings, on_progress=display.on_progress, on_study=display.on_study)
    rows = trial_rows(result.study, limit=None)
    summary = {
        "study": result.study_name,
        "storage": result.storage_url,
        "trials": len(result.study.trials),
        "interrupted": result.interrupted,
        "best": rows[0] if rows else None,
        "baselines": [r for r in rows if r["baseline"]],
    }
    for note in result.notes:
        notes.print(note)
    if args.confirm is not None and not result.interrupted:
        from skipnas.cli.confirm import print_confirmation
        from skipnas.study.confirm import confirm

        notes.print(f"confirming the top {args.confirm} candidates and the baselines on held-out data (3 seeds each) ...")
        summary["confirmation"] = confirm(result.study, top=args.confirm, seeds=3, device=args.device, runs_dir=args.runs_dir)
        if not args.json:
            print_confirmation(summary["confirmation"])
    if args.json:
        print_json(summary)
    elif not args.quiet:
        out = console()
        if rows:
            best = rows[0]
            out.print(f"best: trial {best['trial']} ({best['topology']}), value {best['value']:.4f}")
        out.print(f"study {result.study_name} in {result.storage_url}")
        out.print(f"next: skipnas export --storage {result.storage_url} --study {result.study_name} --out best-model")
    if result.interrupted:
        notes.print("interrupted: the running trial is recorded as failed (a baseline is queued again); run the same command to resume")
        return 130
    return 0
