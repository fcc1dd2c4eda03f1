"""Parameter importances from recorded trials (params as MLflow stores them: strings)."""

from __future__ import annotations

import numpy as np

from clot_hpo.search.importance import param_importances


def test_the_parameter_that_drives_the_objective_ranks_first() -> None:
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(30):
        lr, dropout = 10 ** rng.uniform(-4, -2), rng.uniform(0, 0.5)
        pooling = str(rng.choice(["avg", "max"]))
        value = 0.5 + 0.4 * (np.log10(lr) + 4) / 2 + 0.01 * rng.normal()  # learning rate only
        params = {
            "learning_rate": repr(lr),
            "dropout": repr(dropout),
            "pooling": pooling,
            "image_size": "32",  # the same in every trial: no information, left out
        }
        if pooling == "max":
            params["extra"] = "1"  # conditional: not in every trial, left out
        trials.append((params, value))
    importances = param_importances(trials)
    assert list(importances)[0] == "learning_rate" and importances["learning_rate"] > 0.8
    assert set(importances) == {"learning_rate", "dropout", "pooling"}
    assert abs(sum(importances.values()) - 1.0) < 1e-9
    assert param_importances(trials, seed=0) == importances, "seeded: the same trials, the same answer"


def test_too_few_trials_or_nothing_varying_gives_nothing() -> None:
    assert param_importances([({"lr": "0.1"}, 0.7)]) == {}
    assert param_importances([({"lr": "0.1"}, 0.7), ({"lr": "0.1"}, 0.8)]) == {}
    assert param_importances([({"lr": "0.1"}, float("nan")), ({"lr": "0.2"}, 0.8)]) == {}
