"""``clot-hpo search``: flags override the YAML; the resolved config is saved with results."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console

from clot_hpo.config import load_config
from clot_hpo.util import redact_url

# The Optuna storage URL from the environment: credentials never on the command line, where
# `ps` shows them to every user of the machine. `--storage` wins; the YAML's value comes last.
STORAGE_ENV = "CLOT_HPO_STORAGE"


def search_command(args: argparse.Namespace) -> int:
    """Run (or resume) the study of ``args.config``; returns the exit code."""
    started = time.monotonic()
    overrides = {
        "search.n_trials": args.n_trials,
        "search.timeout": args.timeout,
        "search.max_total_epochs": args.max_total_epochs,
        "search.study_name": args.study_name,
        "search.storage": args.storage or os.environ.get(STORAGE_ENV) or None,
        "tracking.uri": args.tracking_uri,
        "data.path": args.data,
        "seed": args.seed,
        "training.epochs": args.epochs,
        "budget.vram_gb": args.vram_gb,
    }
    config = load_config(args.config, overrides)
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
