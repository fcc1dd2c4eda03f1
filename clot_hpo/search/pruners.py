"""Pruner registry: ``create_pruner`` and ``list_pruners``; reported once per epoch."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from clot_hpo.errors import ConfigError


def _hyperband(max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 1), reduction_factor=3)


def _median(max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def _none(max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


_PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "hyperband": _hyperband,
    "median": _median,
    "none": _none,
}


def list_pruners() -> list[str]:
    """Names accepted by :func:`create_pruner`."""
    return sorted(_PRUNERS)


def create_pruner(name: str, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """Build pruner ``name`` for trials of at most ``max_epochs`` epochs."""
    if name not in _PRUNERS:
        raise ConfigError(f"search.pruner must be one of {list_pruners()}, but got {name!r}")
    return _PRUNERS[name](max_epochs)
