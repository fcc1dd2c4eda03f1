"""OptunaHyperParameters: KerasTuner builders run unchanged while Optuna samples the values."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from clot_hpo import OptunaHyperParameters as ExportedHP
from clot_hpo.errors import ConfigError
from clot_hpo.models.hypermodel import ClotHyperModel
from clot_hpo.search.defaults import default_trials, enqueue_default_trials
from clot_hpo.search.hp import OptunaHyperParameters, optuna_distribution, scoped_name
from clot_hpo.search_space import (
    SearchSpace,
    default_search_space_path,
    load_search_space,
    parse_search_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- KerasTuner-style builders of several shapes (tiny inputs, explicit layer names so that
# two builds of the same values give identical configs) ---------------------------------------


def build_layer_loop(hp: kt.HyperParameters) -> keras.Model:
    """A loop of hp.Int layers, a Choice, a Boolean and a log Float."""
    inputs = keras.Input(shape=(8,), name="x")
    x = inputs
    for i in range(hp.Int("num_layers", 1, 3)):
        x = keras.layers.Dense(
            hp.Int(f"units_{i}", 4, 16, step=4),
            activation=hp.Choice("activation", ["relu", "tanh"]),
            name=f"dense_{i}",
        )(x)
    if hp.Boolean("use_dropout"):
        x = keras.layers.Dropout(0.25, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="out")(x)
    model = keras.Model(inputs, outputs, name="loop")
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-2, sampling="log")),
        loss="binary_crossentropy",
    )
    return model


def build_conditional(hp: kt.HyperParameters) -> keras.Model:
    """KerasTuner's conditional_scope example on 8x8 inputs; both branches declare their hps.

    Declaring outside the ``if`` makes the inactive branch's hp exist (value None), which is
    the case conditional scopes are for.
    """
    inputs = keras.Input(shape=(8, 8, 1), name="x")
    model_type = hp.Choice("model_type", ["mlp", "cnn"])
    x = inputs
    with hp.conditional_scope("model_type", ["mlp"]):
        mlp_units = hp.Int("mlp_units", 4, 8)
        assert (mlp_units is None) == (model_type != "mlp")
        if model_type == "mlp":
            x = keras.layers.Flatten(name="flat")(x)
            x = keras.layers.Dense(mlp_units, activation="relu", name="mlp")(x)
    with hp.conditional_scope("model_type", ["cnn"]):
        filters = hp.Int("filters", 2, 4)
        assert (filters is None) == (model_type != "cnn")
        if model_type == "cnn":
            x = keras.layers.Conv2D(filters, 3, activation="relu", name="conv")(x)
            x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="out")(x)
    return keras.Model(inputs, outputs, name="cond")


class FitOverridingHyperModel(kt.HyperModel):
    """A HyperModel whose fit() reads its own hyperparameter (batch size), as KerasTuner allows."""

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        inputs = keras.Input(shape=(8, 8, 1), name="x")
        x = keras.layers.Flatten(name="flat")(inputs)
        x = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.1), name="drop")(x)
        outputs = keras.layers.Dense(1, activation="sigmoid", name="out")(x)
        model = keras.Model(inputs, outputs, name="hm")
        model.compile(optimizer="sgd", loss="binary_crossentropy")
        return model

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        return model.fit(*args, batch_size=hp.Choice("batch_size", [4, 8]), **kwargs)


def _run_study(objective: Callable[[optuna.Trial], float], n_trials: int = 3, enqueue=()) -> optuna.Study:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    for params in enqueue:
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=n_trials)
    assert len(study.trials) == n_trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return study


def _sampled_values(hp: OptunaHyperParameters) -> dict[str, Any]:
    """hp.values minus Fixed hyperparameters (documented as not sampled)."""
    fixed = {p.name for p in hp.space if isinstance(p, kt.engine.hyperparameters.Fixed)}
    return {k: v for k, v in hp.values.items() if k not in fixed}


def test_exported_from_package_root() -> None:
    assert ExportedHP is OptunaHyperParameters
    assert issubclass(OptunaHyperParameters, kt.HyperParameters)


def test_layer_loop_distributions_values_and_rebuild() -> None:
    seen: dict[int, dict[str, Any]] = {}

    def objective(trial: optuna.Trial) -> float:
        hp = OptunaHyperParameters(trial)
        model = build_layer_loop(hp)
        seen[trial.number] = {
            "values": dict(hp.values),
            "config": model.get_config(),
            "lr": float(model.optimizer.learning_rate.numpy()),
        }
        return 0.0

    study = _run_study(objective, enqueue=[{"num_layers": 3}])
    for trial in study.trials:
        d = trial.distributions
        n = trial.params["num_layers"]
        assert d["num_layers"] == IntDistribution(1, 3)
        assert d["activation"] == CategoricalDistribution(["relu", "tanh"])
        assert d["use_dropout"] == CategoricalDistribution([False, True])
        assert d["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
        assert {k for k in trial.params if k.startswith("units_")} == {f"units_{i}" for i in range(n)}
        for i in range(n):
            assert d[f"units_{i}"] == IntDistribution(4, 16, step=4)
            assert trial.params[f"units_{i}"] in (4, 8, 12, 16)
        assert seen[trial.number]["values"] == trial.params
        assert math.isclose(seen[trial.number]["lr"], trial.params["lr"], rel_tol=1e-6)

        # Rebuild from the finished trial's params alone: the same model.
        rebuilt = build_layer_loop(OptunaHyperParameters.from_params(trial.params))
        assert rebuilt.get_config() == seen[trial.number]["config"]
        # ... and from the FrozenTrial itself.
        hp_frozen = OptunaHyperParameters(trial)
        assert build_layer_loop(hp_frozen).get_config() == seen[trial.number]["config"]
        assert hp_frozen.values == trial.params
    assert study.trials[0].params["num_layers"] == 3


def test_same_name_twice_returns_first_value_without_resuggesting() -> None:
    results = []

    def objective(trial: optuna.Trial) -> float:
        hp = OptunaHyperParameters(trial)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = hp.Int("units", 4, 64, step=4)
            again = hp.Int("units", 4, 64, step=4)
            other_range = hp.Int("units", 1, 1000)  # KerasTuner returns the existing value too
            choice = hp.Choice("opt", ["adam", "sgd"])
            choice_again = hp.Choice("opt", ["adam", "sgd"])
        results.append((first, again, other_range, choice, choice_again, caught))
        return 0.0

    study = _run_study(objective)
    for trial, (first, again, other, choice, choice_again, caught) in zip(study.trials, results, strict=True):
        assert first == again == other == trial.params["units"]
        assert choice == choice_again == trial.params["opt"]
        assert trial.distributions["units"] == IntDistribution(4, 64, step=4)
        assert not [w for w in caught if "Inconsistent parameter" in str(w.message)]


def test_conditional_scope_matches_kerastuner_semantics() -> None:
    records: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def objective(trial: optuna.Trial) -> float:
        hp = OptunaHyperParameters(trial)
        build_conditional(hp)
        branch = hp.get("model_type")
        active, inactive = ("mlp_units", "filters") if branch == "mlp" else ("filters", "mlp_units")
        with pytest.raises(ValueError, match="inactive"):  # KerasTuner's behaviour for inactive hps
            hp.get(inactive)
        checks = {
            "active_in": active in hp,
            "inactive_in": inactive in hp,
            "is_active": hp.is_active(active),
            "is_inactive": hp.is_active(inactive),
            "getitem": hp[active],
        }
        records[trial.number] = (dict(hp.values), checks)
        return 0.0

    study = _run_study(objective, enqueue=[{"model_type": "mlp"}, {"model_type": "cnn"}])
    branches = []
    for trial in study.trials:
        values, checks = records[trial.number]
        branch = trial.params["model_type"]
        branches.append(branch)
        active, inactive = ("mlp_units", "filters") if branch == "mlp" else ("filters", "mlp_units")
        assert values == trial.params
        assert active in trial.params and inactive not in trial.params
        assert checks == {
            "active_in": True,
            "inactive_in": False,
            "is_active": True,
            "is_inactive": False,
            "getitem": trial.params[active],
        }
        expected = IntDistribution(4, 8) if branch == "mlp" else IntDistribution(2, 4)
        assert trial.distributions[active] == expected
        # Rebuilding needs no value for the inactive branch.
        rebuilt = build_conditional(OptunaHyperParameters.from_params(trial.params))
        assert [layer.name for layer in rebuilt.layers][1] == ("flat" if branch == "mlp" else "conv")
    assert branches[:2] == ["mlp", "cnn"]

    # Plain KerasTuner agrees: the inactive hp returns None and stays out of values.
    plain = kt.HyperParameters()
    build_conditional(plain)
    assert "filters" not in plain.values and plain.values["model_type"] == "mlp"


def test_hypermodel_subclass_with_fit_override() -> None:
    x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 2, size=(16, 1)).astype(np.float32)
    hypermodel = FitOverridingHyperModel()
    steps: dict[int, int] = {}

    def objective(trial: optuna.Trial) -> float:
        hp = OptunaHyperParameters(trial)
        model = hypermodel.build(hp)
        history = hypermodel.fit(hp, model, x, y, epochs=1, verbose=0)
        steps[trial.number] = model.optimizer.iterations.numpy().item()
        assert hp.values == trial.params
        return float(history.history["loss"][-1])

    study = _run_study(objective, n_trials=2, enqueue=[{"batch_size": 4}, {"batch_size": 8}])
    for trial in study.trials:
        assert trial.distributions["dropout"] == FloatDistribution(0.0, 0.5, step=0.1)
        assert trial.distributions["batch_size"] == CategoricalDistribution([4, 8])
        assert steps[trial.number] == 16 // trial.params["batch_size"]  # fit really used the hp


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda hp: hp.Int("n", 1, 64, sampling="log"), IntDistribution(1, 64, log=True)),
        (lambda hp: hp.Int("n", 0, 10, step=3), IntDistribution(0, 9, step=3)),
        (lambda hp: hp.Float("f", 0.0, 1.0, step=0.3), FloatDistribution(0.0, 0.9, step=0.3)),
        (lambda hp: hp.Float("f", 0.1, 0.9), FloatDistribution(0.1, 0.9)),
        (
            lambda hp: hp.Int("n", 2, 32, step=2, sampling="log"),
            CategoricalDistribution([2, 4, 8, 16, 32]),
        ),
        (
            lambda hp: hp.Float("f", 1e-4, 1e-1, step=10, sampling="log"),
            CategoricalDistribution([1e-4, 1e-3, 1e-2, 1e-1]),
        ),
        (lambda hp: hp.Float("f", 1.0, 10.0, sampling="reverse_log"), FloatDistribution(1.0, 10.0)),
    ],
    ids=[
        "int-log",
        "int-step-uneven",
        "float-step-uneven",
        "float-linear",
        "int-log-step-grid",
        "float-log-step-grid",
        "float-reverse-log",
    ],
)
def test_distribution_mapping(call: Callable[[Any], Any], expected: Any) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    hp = OptunaHyperParameters(trial)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Optuna warning about ranges not divisible by step
        value = call(hp)
    (name,) = trial.params
    assert trial.distributions[name] == expected
    assert hp.values == trial.params == {name: value}
    assert expected._contains(expected.to_internal_repr(value))


def test_log_step_grid_is_kerastuner_value_set() -> None:
    kt_hp = kt.HyperParameters()
    kt_hp.Int("b", 3, 200, step=3, sampling="log")
    kt_hp.Float("f", 0.5, 40.0, step=2.0, sampling="reverse_log")
    for hp_obj in kt_hp.space:
        dist = optuna_distribution(hp_obj)
        expected = sorted(v if isinstance(v, int) else round(v, 9) for v in hp_obj.values)
        got = [c if isinstance(c, int) else round(c, 9) for c in dist.choices]
        assert got == [int(v) if isinstance(hp_obj, kt.engine.hyperparameters.Int) else v for v in expected]


def test_reverse_log_is_noted_on_the_trial() -> None:
    trial = optuna.create_study().ask()
    OptunaHyperParameters(trial).Float("decay", 0.5, 0.999, sampling="reverse_log")
    assert "reverse_log" in trial.user_attrs["hp_sampling:decay"]


def test_huge_log_step_grid_is_a_config_error() -> None:
    hp = OptunaHyperParameters(optuna.create_study().ask())
    with pytest.raises(ConfigError, match=r"'lr'.*at most 1000"):
        hp.Float("lr", 1e-6, 1.0, step=1.001, sampling="log")


def test_fixed_boolean_default_and_name_scope() -> None:
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    hp = OptunaHyperParameters(trial)
    assert hp.Fixed("epochs", 3) == 3
    units = hp.Int("units", 8, 64, step=8, default=32)
    with hp.name_scope("block"):
        flag = hp.Boolean("flag", default=True)
    assert "epochs" not in trial.params and hp.values["epochs"] == 3
    assert trial.params == {"units": units, "block/flag": flag}
    assert _sampled_values(hp) == trial.params
    assert hp.get("block/flag") is flag
    # A Fixed parent drives a conditional scope like any other.
    with hp.conditional_scope("epochs", [3]):
        assert hp.Float("active_child", 0.0, 1.0) is not None
    with hp.conditional_scope("epochs", [4]):
        assert hp.Float("inactive_child", 0.0, 1.0) is None
    assert "active_child" in trial.params and "inactive_child" not in trial.params


def test_from_params_returns_exactly_the_params_and_names_missing_ones() -> None:
    params = {
        "num_layers": 2,
        "units_0": 12,
        "units_1": 4,
        "activation": "tanh",
        "use_dropout": True,
        "lr": 0.00123,
        "unused": 1,
    }
    hp = OptunaHyperParameters.from_params(params)
    model = build_layer_loop(hp)
    assert hp.values == {k: v for k, v in params.items() if k != "unused"}
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [
        12,
        4,
        1,
    ]
    assert math.isclose(float(model.optimizer.learning_rate.numpy()), 0.00123, rel_tol=1e-6)

    missing = dict(params)
    del missing["units_1"]
    with pytest.raises(ConfigError, match="'units_1'"):
        build_layer_loop(OptunaHyperParameters.from_params(missing))
    with pytest.raises(ConfigError, match=r"'activation'.*not in"):
        build_layer_loop(OptunaHyperParameters.from_params({**params, "activation": "gelu"}))
    with pytest.raises(ConfigError, match="'num_layers'"):
        OptunaHyperParameters().Int("num_layers", 1, 3)


def test_copy_keeps_sampling_from_the_trial() -> None:
    trial = optuna.create_study().ask()
    hp = OptunaHyperParameters(trial)
    first = hp.Int("a", 1, 5)
    clone = hp.copy()
    assert isinstance(clone, OptunaHyperParameters) and clone.get("a") == first
    clone.Int("b", 1, 5)
    assert set(trial.params) == {"a", "b"}


# --- scoped redeclarations ---------------------------------------------------------------------


def test_scoped_name_lists_every_condition() -> None:
    hp = kt.HyperParameters()
    hp.Choice("x", [1, 2, 3])
    with hp.conditional_scope("x", [1, 3]):
        hp.Choice("y", ["b", "c"])  # KerasTuner: a parent is declared in its child's outer scope
        with hp.conditional_scope("y", "b"):
            hp.Int("a", 0, 1)
    assert scoped_name("a", hp.space[-1].conditions) == "a[x=1|3,y=b]"


def _branchy(hp: kt.HyperParameters) -> Any:
    """``size`` is a Choice of other values in each branch; only the active branch declares it."""
    branch = hp.Choice("branch", ["a", "b"])
    with hp.conditional_scope("branch", [branch]):
        return hp.Choice("size", [1, 2] if branch == "a" else [3, 4])


def test_scoped_name_when_another_worker_records_the_plain_name_meanwhile() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"branch": "a"})
    study.enqueue_trial({"branch": "b"})
    first, second = study.ask(), study.ask()
    late = OptunaHyperParameters(second)
    late.Choice("branch", ["a", "b"])
    with late.conditional_scope("branch", ["b"]):
        late.Int("probe", 0, 1)  # reads the study now: no `size` recorded yet
    _branchy(OptunaHyperParameters(first))  # the other worker records `size` in [1, 2]
    with late.conditional_scope("branch", ["b"]):
        size = late.Choice("size", [3, 4])  # Optuna refuses the plain name: scoped instead
    assert late.optuna_names["size"] == "size[branch=b]"
    assert second.params["size[branch=b]"] == size == late.get("size")
    frozen = study.get_trials(deepcopy=False)[second.number]
    rebuilt = OptunaHyperParameters(frozen)
    assert _branchy(rebuilt) == size and rebuilt.optuna_names["size"] == "size[branch=b]"


def test_unconditional_name_with_another_distribution_is_a_config_error() -> None:
    study = optuna.create_study()
    OptunaHyperParameters(study.ask()).Choice("width", [1, 2])
    with pytest.raises(ConfigError, match=r"'width'.*conditional_scope.*'width\[parent=value\]'"):
        OptunaHyperParameters(study.ask()).Choice("width", [3, 4])


def test_config_keeps_recorded_names_and_needs_no_trial() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"branch": "a"})
    study.enqueue_trial({"branch": "b"})
    _branchy(OptunaHyperParameters(study.ask()))
    hp = OptunaHyperParameters(study.ask())
    size = _branchy(hp)
    clone = OptunaHyperParameters.from_config(hp.get_config())
    assert clone.trial is None and clone.optuna_names == {"branch": "branch", "size": "size[branch=b]"}
    assert _branchy(clone) == size
    copied = hp.copy()
    assert copied.trial is hp.trial and copied.recorded_params == hp.recorded_params


# --- defaults first ------------------------------------------------------------------------------


def test_for_defaults_records_kerastuner_defaults_and_checks_forced_choices() -> None:
    hp = OptunaHyperParameters.for_defaults()
    build_layer_loop(hp)
    plain = kt.HyperParameters()
    build_layer_loop(plain)
    assert hp.values == plain.values == hp.recorded_params
    assert hp.trial is None
    with pytest.raises(ConfigError, match=r"'activation'.*'gelu'.*not one of its choices"):
        build_layer_loop(OptunaHyperParameters.for_defaults({"activation": "gelu"}))


def _space(backbone: str, **overrides: Any) -> SearchSpace:
    parameters: dict[str, Any] = {
        "image_size": {"type": "categorical", "choices": [32, 48], "default": 48},
        "batch_size": {"type": "categorical", "choices": [16, 32]},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"], "default": "sgd"},
        "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True, "default": 1.0e-3},
        "momentum": {
            "type": "float",
            "low": 0.8,
            "high": 0.99,
            "default": 0.9,
            "when": {"optimizer": ["sgd"]},
        },
        "use_dense": {"type": "bool"},
        "dense_units": {"type": "int", "low": 16, "high": 64, "step": 16, "when": {"use_dense": [True]}},
        "dropout": {"type": "float", "low": 0.0, "high": 0.6, "step": 0.1},
        "freeze_epochs": {"type": "fixed", "value": 0},
    }
    parameters.update(overrides)
    return parse_search_space({"backbone": backbone, "parameters": parameters})


def test_default_trials_are_the_declared_defaults_under_the_names_trials_record() -> None:
    spaces = {
        "tiny_cnn": _space("tiny_cnn"),
        "resnet50": _space("resnet50", optimizer={"type": "categorical", "choices": ["adam", "sgd"]}),
    }
    single = default_trials({"tiny_cnn": spaces["tiny_cnn"]})
    assert single == [
        {
            "image_size": 48,
            "batch_size": 16,
            "optimizer": "sgd",
            "learning_rate": 1.0e-3,
            "momentum": 0.9,
            "use_dense": False,
            "dropout": 0.0,
        }
    ]
    both = default_trials(spaces)
    assert [t["backbone"] for t in both] == ["tiny_cnn", "resnet50"]
    assert both[1] == {
        "backbone": "resnet50",
        **{f"resnet50.{k}": v for k, v in single[0].items() if k != "momentum"},
        "resnet50.optimizer": "adam",
    }
    # The same names and values as the adapter records for ClotHyperModel.settings.
    for one in ({"tiny_cnn": spaces["tiny_cnn"]}, spaces):
        hypermodel = ClotHyperModel(one, weights="none")
        for expected in default_trials(one):
            hp = OptunaHyperParameters.for_defaults(
                {"backbone": expected.get("backbone")} if len(one) > 1 else {}
            )
            hypermodel.settings(hp)
            assert hp.recorded_params == expected


def test_enqueued_default_trials_run_first_and_only_once() -> None:
    spaces = {"tiny_cnn": _space("tiny_cnn"), "resnet50": _space("resnet50")}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    enqueued = enqueue_default_trials(study, spaces)
    assert len(enqueued) == 2
    hypermodel = ClotHyperModel(spaces, weights="none")
    for expected in enqueued:
        trial = study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every enqueued value fits its distribution
            settings = hypermodel.settings(OptunaHyperParameters(trial))
        assert trial.params == expected and settings.backbone == expected["backbone"]
        study.tell(trial, 0.5)
    assert enqueue_default_trials(study, spaces) == []  # a resume enqueues nothing
    sampled = study.ask()
    hypermodel.settings(OptunaHyperParameters(sampled))
    assert sampled.params not in enqueued


def test_bundled_spaces_give_defaults_their_distributions_contain() -> None:
    for name in ("tiny_cnn", "quickstart_resnet50", "resnet50", "efficientnet_b1"):
        space = load_search_space(default_search_space_path(name))
        study = optuna.create_study()
        (params,) = enqueue_default_trials(study, {space.backbone: space})
        trial = study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Optuna warns when an enqueued value is out of range
            ClotHyperModel({space.backbone: space}, weights="none").settings(OptunaHyperParameters(trial))
        assert trial.params == params, name


def test_defaults_first_is_on_by_default() -> None:
    from clot_hpo.config import ExperimentConfig

    assert ExperimentConfig().search.defaults_first is True
