from __future__ import annotations

from typing import get_args

import optuna
import pytest

from clot_hpo.config.schema import ObjectiveName, PrunerName, SamplerName
from clot_hpo.errors import ConfigError
from clot_hpo.search.objectives import get_objective
from clot_hpo.search.pruners import create_pruner
from clot_hpo.search.samplers import VRAM_CONSTRAINT, create_sampler

# The config's Literals are the one list of choices; mypy checks each `match` is exhaustive,
# and these tests build every choice the schema accepts.


@pytest.mark.parametrize("name", get_args(SamplerName))
def test_every_sampler_is_seeded(name: str) -> None:
    def sample(seed: int) -> list[float]:
        study = optuna.create_study(sampler=create_sampler(name, seed=seed))
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=6)
        return [t.params["x"] for t in study.trials]

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


@pytest.mark.parametrize("name", get_args(PrunerName))
def test_every_pruner_builds_for_the_epoch_budget(name: str) -> None:
    assert isinstance(create_pruner(name, max_epochs=5), optuna.pruners.BasePruner)


@pytest.mark.parametrize("name", get_args(ObjectiveName))
def test_every_objective_reads_a_validation_history_key(name: str) -> None:
    objective = get_objective(name)
    assert objective.name == name and objective.history_key.startswith("val_")


@pytest.mark.parametrize(("name", "direction"), [("val_auc", "maximize"), ("val_loss", "minimize")])
def test_objective_direction(name: str, direction: str) -> None:
    objective = get_objective(name)
    assert objective.direction == direction
    assert objective.better(0.9, 0.8) == (direction == "maximize")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: create_sampler("grid", seed=0), "search.sampler must be one of"),
        (lambda: create_pruner("asha", max_epochs=3), "search.pruner must be one of"),
        (lambda: get_objective("f2"), "search.objective must be one of"),
    ],
)
def test_unknown_names_are_config_errors(factory: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        factory()  # type: ignore[operator]


def test_tpe_proposes_fewer_infeasible_configs_once_told_about_vram() -> None:
    def late_infeasible(constrained: bool) -> int:
        study = optuna.create_study(sampler=create_sampler("tpe", seed=0), direction="maximize")
        for _ in range(40):
            trial = study.ask()
            x = trial.suggest_float("x", 0, 1)
            if constrained:  # large x "does not fit in memory" but would score best
                trial.set_constraint(VRAM_CONSTRAINT, x - 0.5)
            study.tell(trial, x)
        return sum(t.params["x"] > 0.5 for t in study.trials[20:])

    with_budget, without = late_infeasible(True), late_infeasible(False)
    assert with_budget <= without - 5, (with_budget, without)
