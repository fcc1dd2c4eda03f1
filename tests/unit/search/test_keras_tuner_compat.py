"""KerasTuner compatibility: what a KerasTuner user's builders do under OptunaHyperParameters.

Written from KerasTuner's documented behaviour (its docstrings and guides), not from its tests:
the same name in two conditional scopes, defaults first, ``merge``, proto and Keras
serialization, stepped float grids. Every trial must build, and ``from_params(trial.params)``
must rebuild the same model. The bundled application builders (backbones) are checked the same
way in tests/integration/test_keras_tuner_applications.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner as kt
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from clot_hpo.errors import ConfigError
from clot_hpo.search.hp import OptunaHyperParameters, enqueue_defaults, optuna_distribution

optuna.logging.set_verbosity(optuna.logging.ERROR)

Builder = Callable[[Any], keras.Model]


def _tiny(units: int, name: str = "tiny") -> keras.Model:
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Dense(int(units), name="dense")(inputs)
    return keras.Model(inputs, outputs, name=name)


def build_scoped_choice(hp: Any) -> keras.Model:
    """KerasTuner's conditional_scope docs: one name per scope, each with its own choices."""
    hp.Choice("choice", [1, 2, 3], default=2)
    with hp.conditional_scope("choice", [1, 3]):
        low = hp.Choice("child", [4, 5, 6])
    with hp.conditional_scope("choice", [2]):
        high = hp.Choice("child", [7, 8, 9])
    assert (low is None) != (high is None), "exactly one scope is active"
    return _tiny(low if low is not None else high)


def build_scoped_log(hp: Any) -> keras.Model:
    """The same name log-scaled in one branch and linear in the other."""
    optimizer = hp.Choice("optimizer", ["adam", "sgd"])
    with hp.conditional_scope("optimizer", ["adam"]):
        adam_lr = hp.Float("lr", 1e-4, 1e-2, sampling="log")
    with hp.conditional_scope("optimizer", ["sgd"]):
        sgd_lr = hp.Float("lr", 0.01, 0.1)
    model = _tiny(2)
    lr = adam_lr if adam_lr is not None else sgd_lr
    model.compile(
        optimizer=keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": lr}}), loss="mse"
    )
    return model


def build_active_branch_only(hp: Any) -> keras.Model:
    """An if/else builder: only the active branch declares its (differently shaped) ``units``."""
    kind = hp.Choice("kind", ["small", "large"])
    if kind == "small":
        with hp.conditional_scope("kind", ["small"]):
            units = hp.Choice("units", [2, 4])
    else:
        with hp.conditional_scope("kind", ["large"]):
            units = hp.Int("units", 16, 64, step=16)
    return _tiny(units)


def _model_json(build: Builder, hp: Any) -> str:
    # Layer names restart, so equal values give equal JSON. No garbage collection: a full
    # collection per build was most of these tests' time (seconds per trial).
    keras.utils.clear_session(free_memory=False)
    return str(build(hp).to_json())


def _run(build: Builder, n_trials: int, *, seed: int = 0, defaults_first: bool = False) -> optuna.Study:
    """Run ``n_trials`` trials; each must build and rebuild identically from its params."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    if defaults_first:
        enqueue_defaults(study, build)
    for _ in range(n_trials):
        trial = study.ask()
        hp = OptunaHyperParameters(trial)
        built = _model_json(build, hp)
        frozen = study.get_trials(deepcopy=False)[trial.number]
        assert hp.recorded_params == frozen.params
        assert _model_json(build, OptunaHyperParameters.from_params(frozen.params)) == built
        assert _model_json(build, OptunaHyperParameters(frozen)) == built
        study.tell(trial, 0.0)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * n_trials
    return study


def _one_distribution_per_name(study: optuna.Study) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for trial in study.trials:
        for name, dist in trial.distributions.items():
            assert seen.setdefault(name, dist) == dist, f"{name}: {seen[name]} and {dist}"
    return seen


# --- the same name in two conditional scopes ---------------------------------------------------


def test_same_name_with_other_choices_in_two_scopes_builds_every_trial() -> None:
    study = _run(build_scoped_choice, 8)
    dists = _one_distribution_per_name(study)
    assert dists["child"] == CategoricalDistribution([4, 5, 6])  # the first declaration's name
    assert dists["child[choice=2]"] == CategoricalDistribution([7, 8, 9])
    for trial in study.trials:
        hp = OptunaHyperParameters.from_params(trial.params)
        build_scoped_choice(hp)
        assert set(hp.values) == {"choice", "child"}  # the builder's own names
        assert hp.values["child"] in ((4, 5, 6) if hp.values["choice"] != 2 else (7, 8, 9))
    assert {t.params["choice"] for t in study.trials} == {1, 2, 3}


def test_same_name_log_in_one_scope_linear_in_the_other_builds_every_trial() -> None:
    study = _run(build_scoped_log, 6)
    dists = _one_distribution_per_name(study)
    assert dists["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["lr[optimizer=sgd]"] == FloatDistribution(0.01, 0.1)
    assert {t.params["optimizer"] for t in study.trials} == {"adam", "sgd"}


@pytest.mark.parametrize("first", ["small", "large"])
def test_only_the_active_branch_declares_the_name(first: str) -> None:
    """Branches a build never declares are told apart by the study's recorded distributions."""
    other = "large" if first == "small" else "small"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial({"kind": first})
    study.enqueue_trial({"kind": other})
    for _ in range(8):
        trial = study.ask()
        built = _model_json(build_active_branch_only, OptunaHyperParameters(trial))
        assert _model_json(build_active_branch_only, OptunaHyperParameters.from_params(trial.params)) == built
        study.tell(trial, 0.0)
    _one_distribution_per_name(study)
    # The branch seen first keeps the plain name; the other one is scoped.
    assert "units" in study.trials[0].params
    assert f"units[kind={other}]" in study.trials[1].params


# --- defaults first ------------------------------------------------------------------------------


def test_first_trial_builds_the_declared_defaults_as_kerastuner_does() -> None:
    plain = kt.HyperParameters()  # a fresh KerasTuner hp builds the defaults
    build_scoped_choice(plain)
    study = _run(build_scoped_choice, 4, defaults_first=True)
    first = OptunaHyperParameters.from_params(study.trials[0].params)
    build_scoped_choice(first)
    assert first.values == plain.values == {"choice": 2, "child": 7}
    assert enqueue_defaults(study, build_scoped_choice) == []  # not again on resume


def test_defaults_per_variant_use_the_names_their_trials_record() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    enqueued = enqueue_defaults(study, build_scoped_choice, variants=[{"choice": 1}, {"choice": 2}])
    assert enqueued == [{"choice": 1, "child": 4}, {"choice": 2, "child[choice=2]": 7}]
    for expected in enqueued:
        trial = study.ask()
        build_scoped_choice(OptunaHyperParameters(trial))
        assert trial.params == expected
        study.tell(trial, 0.0)


# --- merge ---------------------------------------------------------------------------------------


def test_merge_overwrite_fixed_before_the_build_wins_as_in_kerastuner() -> None:
    fixed = kt.HyperParameters()
    fixed.Fixed("child", 8)
    fixed.Fixed("choice", 2)
    plain = kt.HyperParameters()
    plain.merge(fixed, overwrite=True)
    trial = optuna.create_study().ask()
    hp = OptunaHyperParameters(trial)
    hp.merge(fixed, overwrite=True)
    assert _model_json(build_scoped_choice, hp) == _model_json(build_scoped_choice, plain)
    assert hp.values == plain.values == {"child": 8, "choice": 2}
    assert trial.params == {}  # Fixed values are not sampled


def test_merge_overwrite_after_the_trial_recorded_a_value_is_a_clear_error() -> None:
    hp = OptunaHyperParameters(optuna.create_study().ask())
    units = hp.Int("units", 1, 100)
    fixed = kt.HyperParameters()
    fixed.Fixed("units", units)
    hp.merge(fixed, overwrite=True)  # the same value: nothing changes
    fixed = kt.HyperParameters()
    fixed.Fixed("units", units + 1)
    hp.merge(fixed, overwrite=False)  # KerasTuner: an existing hyperparameter is kept
    assert hp.get("units") == units
    with pytest.raises(ConfigError, match=r"merge\(overwrite=True\) cannot set 'units'"):
        hp.merge(fixed, overwrite=True)


# --- proto and Keras serialization -----------------------------------------------------------------


def _sampled(build: Builder, seed: int) -> OptunaHyperParameters:
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    hp = OptunaHyperParameters(trial)
    build(hp)
    return hp


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_proto_round_trip_rebuilds_the_same_model(seed: int) -> None:
    hp = _sampled(build_scoped_choice, seed)
    back = OptunaHyperParameters.from_proto(hp.to_proto())
    assert back.values == hp.values
    assert kt.HyperParameters.from_proto(hp.to_proto()).values["choice"] == hp.values["choice"]
    assert _model_json(build_scoped_choice, back) == _model_json(
        build_scoped_choice, OptunaHyperParameters.from_params(hp.recorded_params)
    )


def test_keras_serialization_round_trip() -> None:
    hp = _sampled(build_scoped_log, 3)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(hp)))
    back = keras.saving.deserialize_keras_object(config)
    assert type(back) is OptunaHyperParameters
    assert back.values == hp.values and back.optuna_names == hp.optuna_names
    assert _model_json(build_scoped_log, back) == _model_json(
        build_scoped_log, OptunaHyperParameters.from_params(hp.recorded_params)
    )
    with pytest.raises(ConfigError, match="'extra' is active but has no value"):
        back.Int("extra", 1, 3)  # a deserialized hp has no trial to sample from


# --- stepped float grids ---------------------------------------------------------------------------


def test_stepped_float_grid_is_kerastuners_documented_set_upper_bound_included() -> None:
    # KerasTuner documents Float(0, 1, step=0.2) as [0, 0.2, 0.4, 0.6, 0.8, 1.0]; its float floor
    # ((1.0 - 0) // 0.2 == 4.0) drops 1.0 in practice. Optuna's decimal grid keeps the documented set.
    documented = kt.HyperParameters()
    documented.Float("f", 0.0, 1.0, step=0.2)
    documented.Float("dropout_rate", 0.0, 0.6, step=0.1)  # HyperXception's
    dists = [optuna_distribution(p) for p in documented.space]
    assert dists == [FloatDistribution(0.0, 1.0, step=0.2), FloatDistribution(0.0, 0.6, step=0.1)]
    assert max(documented.space[1].values) < 0.6  # KerasTuner's implementation: never the bound


# --- KerasTuner's bundled application builders -----------------------------------------------------
