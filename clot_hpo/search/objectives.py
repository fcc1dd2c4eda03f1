"""Objective registry: which Keras history key a study optimizes, and in which direction."""

from __future__ import annotations

from dataclasses import dataclass

from clot_hpo.errors import ConfigError


@dataclass(frozen=True)
class Objective:
    """A search objective read from the validation metrics of each epoch."""

    name: str
    history_key: str
    direction: str  # "maximize" or "minimize"

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` beats ``b``."""
        return a > b if self.direction == "maximize" else a < b


_OBJECTIVES = {
    "val_auc": Objective("val_auc", "val_auc", "maximize"),
    "val_accuracy": Objective("val_accuracy", "val_accuracy", "maximize"),
    "val_loss": Objective("val_loss", "val_loss", "minimize"),
    "sensitivity_at_specificity": Objective(
        "sensitivity_at_specificity", "val_sensitivity_at_specificity", "maximize"
    ),
}


def list_objectives() -> list[str]:
    """Names accepted by :func:`get_objective`."""
    return sorted(_OBJECTIVES)


def get_objective(name: str) -> Objective:
    """The objective called ``name``."""
    if name not in _OBJECTIVES:
        raise ConfigError(f"search.objective must be one of {list_objectives()}, but got {name!r}")
    return _OBJECTIVES[name]
