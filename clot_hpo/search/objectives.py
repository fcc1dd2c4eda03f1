"""Objectives: which Keras history key a study optimizes, and in which direction."""

from __future__ import annotations

from dataclasses import dataclass

from clot_hpo.config.schema import ObjectiveName
from clot_hpo.errors import refuse_choice


@dataclass(frozen=True)
class Objective:
    """A search objective read from the validation metrics of each epoch."""

    name: str
    history_key: str
    direction: str  # "maximize" or "minimize"

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` beats ``b``."""
        return a > b if self.direction == "maximize" else a < b


def get_objective(name: ObjectiveName) -> Objective:
    """The objective ``name`` (``search.objective``): its epoch history key and direction."""
    match name:
        case "val_auc" | "val_accuracy":
            return Objective(name, name, "maximize")
        case "val_loss":
            return Objective(name, name, "minimize")
        case "sensitivity_at_specificity":
            return Objective(name, "val_sensitivity_at_specificity", "maximize")
        case _:
            refuse_choice("search.objective", ObjectiveName, name)
