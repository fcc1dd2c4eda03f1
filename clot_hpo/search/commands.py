"""``clot-hpo search`` and ``prepare-study``: flags override the YAML; the resolved config is saved."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clot_hpo.util import AddCommand, redact_url

if TYPE_CHECKING:
    from clot_hpo.config import ExperimentConfig


def _study_config(args: argparse.Namespace, **more: Any) -> ExperimentConfig:
    """The experiment config with the study flags shared by ``search`` and ``prepare-study`` applied."""
    from clot_hpo.config import load_config
    from clot_hpo.config.defaults import storage_from_env

    overrides = {
        "search.study_name": args.study_name,
        "search.storage": storage_from_env(args.storage),
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
    from rich.console import Console

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
    from rich.console import Console

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


def _add_study_options(p: argparse.ArgumentParser) -> None:
    """The options that name a study and its servers: ``search`` and ``prepare-study``."""
    p.add_argument("config", help="experiment YAML (experiments/*.yaml)")
    p.add_argument("--study-name")
    p.add_argument(
        "--storage",
        help="Optuna storage URL (sqlite:///..., postgresql+psycopg2://...); default: $CLOT_HPO_STORAGE, "
        "else the config's search.storage. No password here (`ps` shows it): use PGPASSWORD",
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (sqlite:///... or http://...); a server's login comes from "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
    )
    p.add_argument("--no-tracking", action="store_true", help="use the no-op tracker")
    p.add_argument("--data", help="data folder (overrides data.path)")
    p.add_argument("--seed", type=int)


def add_commands(add: AddCommand) -> None:
    """Declare ``search`` and ``prepare-study`` to the command line."""
    p = add("search", search_command, "launch or resume an Optuna study")
    _add_study_options(p)
    p.add_argument("--n-trials", type=int)
    p.add_argument("--timeout", type=float, help="wall-clock budget in seconds")
    p.add_argument("--max-total-epochs", type=int, help="budget of epochs over all trials")
    p.add_argument("--epochs", type=int, help="epochs per trial (overrides training.epochs)")
    p.add_argument("--vram-gb", type=float, help="VRAM budget in GiB (overrides budget.vram_gb)")
    p.add_argument(
        "--fidelity",
        choices=["epochs", "resolution", "both"],
        help="what the pruner's rungs spend (overrides search.fidelity; docs/pruning.md)",
    )

    p = add(
        "prepare-study",
        prepare_study_command,
        "validate config, data and servers, then create the study and enqueue its defaults once "
        "(run before starting workers; again changes nothing)",
    )
    _add_study_options(p)
