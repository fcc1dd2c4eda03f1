"""Sampler registry: ``create_sampler`` and ``list_samplers``."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from clot_hpo.errors import ConfigError

# Constraint name under which each trial records its VRAM feasibility (<= 0 feasible, > 0 not)
# with ``Trial.set_constraint``; TPE reads it to stop proposing what cannot fit. (Optuna 5
# deprecates the samplers' ``constraints_func`` in favour of per-trial constraints.)
VRAM_CONSTRAINT = "vram"


def _tpe(seed: int | None) -> optuna.samplers.BaseSampler:
    # multivariate + group model the conditional per-backbone spaces jointly; both are
    # flagged experimental by Optuna, which we accept knowingly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(seed: int | None) -> optuna.samplers.BaseSampler:
    # CMA-ES handles the continuous parameters; categorical ones fall back to TPE.
    return optuna.samplers.CmaEsSampler(
        seed=seed, independent_sampler=optuna.samplers.TPESampler(seed=seed), warn_independent_sampling=False
    )


_SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
    "cmaes": _cmaes,
}


def list_samplers() -> list[str]:
    """Names accepted by :func:`create_sampler`."""
    return sorted(_SAMPLERS)


def create_sampler(name: str, *, seed: int | None) -> optuna.samplers.BaseSampler:
    """Build sampler ``name``, seeded."""
    if name not in _SAMPLERS:
        raise ConfigError(f"search.sampler must be one of {list_samplers()}, but got {name!r}")
    return _SAMPLERS[name](seed)
