"""Every bundled search space loads and samples through a real Optuna trial; sample() semantics."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import keras_tuner as kt
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from clot_hpo.search.hp import OptunaHyperParameters
from clot_hpo.search_space import ParamSpec, SearchSpace, load_search_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[3]
SPACE_FILES = sorted((REPO / "search_spaces").glob("*.yaml"))

# The names the HyperModel reads (issue 3), with their type.
HYPERMODEL_NAMES = {
    "image_size": ("categorical", "int", "fixed"),
    "batch_size": ("categorical", "fixed"),
    "optimizer": ("categorical",),
    "learning_rate": ("float",),
    "momentum": ("float",),
    "weight_decay": ("float", "fixed"),
    "label_smoothing": ("float", "fixed"),
    "dropout": ("float", "fixed"),
    "pooling": ("categorical", "fixed"),
    "use_dense": ("bool", "fixed"),
    "dense_units": ("int",),
    "freeze_epochs": ("int", "fixed"),
    "unfreeze_fraction": ("float", "fixed"),
    "aug_flip": ("bool", "fixed"),
    "aug_rotation": ("float", "fixed"),
    "aug_zoom": ("float", "fixed"),
    "aug_contrast": ("float", "fixed"),
    "aug_brightness": ("float", "fixed"),
}


def _expected_distribution(spec: ParamSpec) -> Any:
    if spec.type == "float":
        return FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    if spec.type == "int":
        return IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step or 1)
    if spec.type == "categorical":
        return CategoricalDistribution(list(spec.choices))
    assert spec.type == "bool"
    return CategoricalDistribution([False, True])


def _condition_holds(space: SearchSpace, name: str, values: dict[str, Any]) -> bool:
    for cond in space.condition_chain(name):
        current = space.backbone if cond.parent == "backbone" else values.get(cond.parent)
        if current not in cond.values:
            return False
    return True


def test_bundled_search_spaces_exist() -> None:
    names = {p.stem for p in SPACE_FILES}
    assert {"efficientnet_b1", "resnet50", "tiny_cnn"} <= names


@pytest.mark.parametrize("path", SPACE_FILES, ids=[p.stem for p in SPACE_FILES])
def test_search_space_file_loads_and_samples_through_optuna(path: Path) -> None:
    space = load_search_space(path)
    assert space.source == path
    sampled: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def objective(trial: optuna.Trial) -> float:
        hp = OptunaHyperParameters(trial)
        sampled[trial.number] = (space.sample(hp), dict(hp.values))
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11))
    # Force both sides of every bool condition (use_dense etc.) and of an sgd condition.
    study.enqueue_trial({n: True for n, s in space.parameters.items() if s.type == "bool"})
    study.enqueue_trial(
        {n: False for n, s in space.parameters.items() if s.type == "bool"}
        | (
            {"optimizer": "sgd"}
            if "sgd" in (getattr(space.parameters.get("optimizer"), "choices", None) or ())
            else {}
        )
    )
    study.optimize(objective, n_trials=3)

    for trial in study.trials:
        values, hp_values = sampled[trial.number]
        assert hp_values == values
        fixed = {n for n, s in space.parameters.items() if s.type == "fixed"}
        assert {k: v for k, v in values.items() if k not in fixed} == trial.params
        for name, spec in space.parameters.items():
            active = _condition_holds(space, name, values)
            assert (name in values) == active, name
            if not active:
                continue
            if spec.type == "fixed":
                assert values[name] == spec.value and name not in trial.distributions
            else:
                assert trial.distributions[name] == _expected_distribution(spec), name


FULL_SPACES = [p for p in SPACE_FILES if not p.stem.startswith("quickstart_")]
QUICKSTART_SPACES = [p for p in SPACE_FILES if p.stem.startswith("quickstart_")]


@pytest.mark.parametrize("path", QUICKSTART_SPACES, ids=[p.stem for p in QUICKSTART_SPACES])
def test_quickstart_spaces_are_narrow_small_and_read_by_the_hypermodel(path: Path) -> None:
    # The demo's spaces fix what is known to stall from random initialization; every name
    # they declare is still one the HyperModel reads, with the type it expects.
    params = load_search_space(path).parameters
    for name, spec in params.items():
        assert name in HYPERMODEL_NAMES and spec.type in HYPERMODEL_NAMES[name], name
    assert params["image_size"].type == "fixed" and params["image_size"].value <= 48
    assert params["learning_rate"].default is not None, (
        "defaults-first trials need a learning rate that learns"
    )


@pytest.mark.parametrize("path", FULL_SPACES, ids=[p.stem for p in FULL_SPACES])
def test_search_space_file_has_the_names_the_hypermodel_reads(path: Path) -> None:
    space = load_search_space(path)
    params = space.parameters
    for name, types in HYPERMODEL_NAMES.items():
        assert name in params, f"{path.name} lacks {name}"
        assert params[name].type in types, f"{path.name}: {name} is {params[name].type}"
    assert set(params["optimizer"].choices) == {"adam", "adamw", "sgd"}
    assert params["learning_rate"].log and params["learning_rate"].low > 0
    assert params["momentum"].when is not None and params["momentum"].when.parent == "optimizer"
    assert params["momentum"].when.values == ("sgd",)
    assert params["dense_units"].when is not None and params["dense_units"].when.values == (True,)
    assert params["dense_units"].step is not None
    for name in ("aug_rotation", "aug_zoom", "aug_contrast", "aug_brightness"):
        assert params[name].type == "fixed" or (params[name].low >= 0 and params[name].high <= 0.3)
    assert set(params["batch_size"].choices) <= {8, 16, 32}
    if path.stem == "tiny_cnn":
        assert set(params["image_size"].choices) <= {32, 48}
    if path.stem in ("efficientnet_b1", "resnet50"):
        assert {"efficientnet_b1": 240, "resnet50": 224}[path.stem] in params["image_size"].choices


NESTED = """\
backbone: resnet50
parameters:
  optimizer: {type: categorical, choices: [adam, sgd]}
  use_nesterov: {type: bool, when: {optimizer: [sgd]}}
  nesterov_boost: {type: float, low: 0.1, high: 0.2, when: {use_nesterov: [true]}}
  only_effnet: {type: int, low: 1, high: 3, when: {backbone: [efficientnet_b1]}}
  only_resnet: {type: int, low: 1, high: 3, when: {backbone: [resnet50]}}
  resnet_child: {type: fixed, value: x, when: {only_resnet: [1, 2, 3]}}
"""


def _space(tmp_path: Path, text: str, name: str = "s.yaml") -> SearchSpace:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_search_space(path)


def test_nested_and_backbone_conditions(tmp_path: Path) -> None:
    space = _space(tmp_path, NESTED)
    fixed_trial = optuna.trial.FixedTrial(
        {"optimizer": "sgd", "use_nesterov": True, "nesterov_boost": 0.15, "only_resnet": 2}
    )
    values = space.sample(OptunaHyperParameters(fixed_trial))
    assert values == {
        "optimizer": "sgd",
        "use_nesterov": True,
        "nesterov_boost": 0.15,
        "only_resnet": 2,
        "resnet_child": "x",
    }

    values = space.sample(
        OptunaHyperParameters(optuna.trial.FixedTrial({"optimizer": "adam", "only_resnet": 1}))
    )
    assert values == {"optimizer": "adam", "only_resnet": 1, "resnet_child": "x"}

    # Plain KerasTuner runs the same declarations (defaults: adam, so the sgd branch is inactive).
    hp = kt.HyperParameters()
    assert space.sample(hp) == {"optimizer": "adam", "only_resnet": 1, "resnet_child": "x"}
    assert "only_effnet" not in [p.name for p in hp.space]  # statically inactive: never declared
    assert {"use_nesterov", "nesterov_boost"} <= {p.name for p in hp.space}


def test_two_backbones_with_prefixes_in_one_trial() -> None:
    spaces = {
        b: load_search_space(REPO / "search_spaces" / f"{b}.yaml") for b in ("efficientnet_b1", "resnet50")
    }
    picked: dict[int, dict[str, dict[str, Any]]] = {}

    def objective(trial: optuna.Trial) -> float:
        hp = OptunaHyperParameters(trial)
        backbone = hp.Choice("backbone", list(spaces))
        out = {}
        for name, space in spaces.items():
            with hp.conditional_scope("backbone", [name]):
                out[name] = space.sample(hp, prefix=f"{name}/")
        picked[trial.number] = out
        assert backbone == trial.params["backbone"]
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    study.enqueue_trial({"backbone": "efficientnet_b1"})
    study.enqueue_trial({"backbone": "resnet50"})
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        chosen = trial.params["backbone"]
        other = next(b for b in spaces if b != chosen)
        assert picked[trial.number][other] == {}
        values = picked[trial.number][chosen]
        assert values and "image_size" in values
        expected = {"backbone": chosen} | {f"{chosen}/{k}": v for k, v in values.items()}
        assert trial.params == expected
