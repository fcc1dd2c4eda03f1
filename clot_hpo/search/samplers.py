"""Samplers: ``create_sampler`` builds each of ``search.sampler``'s choices."""

from __future__ import annotations

import warnings

import optuna

from clot_hpo.config.schema import SamplerName
from clot_hpo.errors import refuse_choice

# Constraint name under which each trial records its VRAM feasibility (<= 0 feasible, > 0 not)
# with ``Trial.set_constraint``; TPE reads it to stop proposing what cannot fit. (Optuna 5
# deprecates the samplers' ``constraints_func`` in favour of per-trial constraints.)
VRAM_CONSTRAINT = "vram"


def create_sampler(name: SamplerName, *, seed: int | None) -> optuna.samplers.BaseSampler:
    """Build sampler ``name`` (``search.sampler``), seeded."""
    match name:
        case "tpe":
            # multivariate + group model the conditional per-backbone spaces jointly; both are
            # flagged experimental by Optuna, which we accept knowingly.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.TPESampler(
                    seed=seed, multivariate=True, group=True, n_startup_trials=5
                )
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "cmaes":
            # CMA-ES handles the continuous parameters; categorical ones fall back to TPE.
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                independent_sampler=optuna.samplers.TPESampler(seed=seed),
                warn_independent_sampling=False,
            )
        case _:
            refuse_choice("search.sampler", SamplerName, name)
