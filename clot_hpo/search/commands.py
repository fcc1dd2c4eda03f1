"""``clot-hpo search`` and ``prepare-study``: flags override the YAML; the resolved config is saved."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from clot_hpo.config import ExperimentConfig, load_config
from clot_hpo.util import redact_url

# The Optuna storage URL from the environment: credentials never on the command line, where
# `ps` shows them to every user of the machine. `--storage` wins; the YAML's value comes last.
STORAGE_ENV = "CLOT_HPO_STORAGE"


def _study_config(args: argparse.Namespace, **more: Any) -> ExperimentConfig:
    """The experiment config with the study flags shared by ``search`` and ``prepare-study`` applied."""
    overrides = {
        "search.study_name": args.study_name,
        "search.storage": args.storage or os.environ.get(STORAGE_ENV) or None,
        "tracking.uri": args.tracking_uri,
        "data.path": args.data,
        "seed": args.seed,
        **more,
    }
    return load_config(args.config, overrides)


def search_config(args: argparse.Namespace) -> ExperimentConfig:
    """The config ``search`` runs: the YAML with the study flags and the search's own flags applied."""
    return _study_config(
        args,
        **{
            "search.n_trials": args.n_trials,
            "search.timeout": args.timeout,
            "search.max_total_epochs": args.max_total_epochs,
            "search.fidelity": args.fidelity,
            "training.epochs": args.epochs,
            "budget.vram_gb": args.vram_gb,
        },
    )


def search_command(args: argparse.Namespace) -> int:
    """Run (or resume) the study of ``args.config``; returns the exit code."""
    started = time.monotonic()
    config = search_config(args)
    from clot_hpo.search.study import run_search

    console = Console(soft_wrap=True)
    outcome = run_search(
        config, tracking=not args.no_tracking, console=console, base_dir=Path(args.config).resolve().parent
    )
    console.print(f"results: {outcome.out_dir} (resolved config, split manifest, trials.csv)")
    if not args.no_tracking:
        console.print(
            f"tracking: {redact_url(config.tracking.uri)} · "
            f"experiment {config.tracking.experiment or outcome.study_name}"
        )
    console.print(f"search took {time.monotonic() - started:.0f} s")
    return 0


def prepare_study_command(args: argparse.Namespace) -> int:
    """Validate config, data and servers, create the study and enqueue its defaults once."""
    config = _study_config(args)
    from clot_hpo.search.study import prepare_study

    prepared = prepare_study(
        config, tracking=not args.no_tracking, base_dir=Path(args.config).resolve().parent
    )
    console = Console(soft_wrap=True)
    what = (
        f"enqueued {len(prepared.enqueued)} defaults trial(s)"
        if prepared.enqueued
        else "already prepared: nothing enqueued"
    )
    console.print(
        f"study {prepared.study_name} on {redact_url(config.search.storage)}: {what}; "
        f"{prepared.trials_on_record} trial(s) on record; data: {prepared.n_images} images valid"
    )
    return 0
