"""``promote``, ``predict`` and ``evaluate`` read their defaults from ``--config``.

A study searched with ``tracking.model_name: my-detector`` must be promoted to and used from
``my-detector`` without repeating the name (the key used to be documented and ignored).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clot_hpo import cli
from clot_hpo.config.defaults import apply_config_defaults
from clot_hpo.errors import ConfigError

CONFIG = """\
name: study-x
tracking: {uri: "sqlite:///elsewhere/mlflow.db", model_name: my-detector}
"""


def _args(*argv: str) -> argparse.Namespace:
    args = cli.build_parser().parse_args(list(argv))
    apply_config_defaults(args)
    return args


@pytest.fixture()
def config(tmp_path: Path) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(CONFIG)
    return str(path)


def test_promote_takes_model_name_store_and_study_from_the_config(config: str) -> None:
    args = _args("promote", "--config", config)
    assert (args.model_name, args.tracking_uri, args.experiment) == (
        "my-detector",
        "sqlite:///elsewhere/mlflow.db",
        "study-x",
    )
    # Flags still win over the config.
    args = _args(
        "promote",
        "--config",
        config,
        "--model-name",
        "other",
        "--experiment",
        "s2",
        "--tracking-uri",
        "http://h:5000",
    )
    assert (args.model_name, args.tracking_uri, args.experiment) == ("other", "http://h:5000", "s2")


def test_tracking_experiment_names_the_study_to_promote(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("name: a\ntracking: {experiment: runs-of-a}\n")
    assert _args("promote", "--config", str(path)).experiment == "runs-of-a"


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_predict_and_evaluate_use_the_configs_model(config: str, command: str) -> None:
    extra = ["--data", "d"] if command == "evaluate" else ["img.png"]
    args = _args(command, "--config", config, *extra)
    assert args.model == "models:/my-detector@champion"
    assert args.tracking_uri == "sqlite:///elsewhere/mlflow.db"
    assert _args(command, "--config", config, "--model", "models:/m/3", *extra).model == "models:/m/3"


def test_without_a_config_the_schema_defaults_apply() -> None:
    args = _args("predict", "img.png")
    assert args.model == "models:/blood-clot-detector@champion"
    assert args.tracking_uri == "sqlite:///mlruns/mlflow.db"
    args = _args("promote", "--experiment", "s")
    assert (args.model_name, args.tracking_uri) == ("blood-clot-detector", "sqlite:///mlruns/mlflow.db")


def test_promote_needs_an_experiment_or_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--experiment"):
        _args("promote")
    assert cli.main(["promote"]) == 2
    assert "promote needs --experiment (the study name) or --config" in capsys.readouterr().err


def test_promote_reads_the_optuna_storage_and_the_gate_options(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text('name: a\nsearch: {storage: "postgresql+psycopg2://db/optuna"}\n')
    assert _args("promote", "--config", str(path)).storage == "postgresql+psycopg2://db/optuna"
    assert _args("promote", "--experiment", "a").storage == "sqlite:///mlruns/optuna.db"
    assert _args("promote", "--config", str(path), "--storage", "sqlite:///o.db").storage == "sqlite:///o.db"
    from clot_hpo.registry.commands import gate_rule

    rule = gate_rule(
        _args("promote", "--experiment", "a", "--gate-metric", "accuracy", "--min-delta", "0.01")
    )
    assert (rule.metric, rule.min_delta, rule.min_sensitivity, rule.allow_different_test_sets) == (
        "accuracy",
        0.01,
        None,
        False,
    )
    assert gate_rule(_args("promote", "--experiment", "a", "--max-ece", "0.1")).max_ece == 0.1


@pytest.mark.parametrize("command", ["predict", "evaluate", "explain"])
def test_dicom_window_and_frame_come_from_the_config_unless_flags_say_otherwise(
    tmp_path: Path, command: str
) -> None:
    # Issue 23: a model trained with data.dicom.window must be applied with the same window.
    from clot_hpo.data.dicom import DicomSettings

    path = tmp_path / "exp.yaml"
    path.write_text("name: ct\ndata: {dicom: {window: [300, 600], frame: 2}}\n")
    extra = {"predict": ["x.dcm"], "evaluate": ["--data", "d"], "explain": ["--out", "o", "x.dcm"]}[command]
    args = _args(command, "--config", str(path), *extra)
    assert DicomSettings.from_args(args) == DicomSettings(window=(300.0, 600.0), frame=2)
    args = _args(command, "--config", str(path), "--dicom-window", "40", "80", "--dicom-frame", "0", *extra)
    assert DicomSettings.from_args(args) == DicomSettings(window=(40.0, 80.0), frame=0)
    assert DicomSettings.from_args(_args(command, *extra)) == DicomSettings()


def test_search_fidelity_comes_from_the_config_unless_the_flag_says_otherwise(tmp_path: Path) -> None:
    from clot_hpo.search.commands import search_config

    path = tmp_path / "exp.yaml"
    path.write_text("name: study-f\nsearch: {fidelity: resolution, fidelity_sizes: [0.25, 0.5]}\n")
    assert search_config(_args("search", str(path))).search.fidelity == "resolution"
    flagged = search_config(_args("search", str(path), "--fidelity", "both"))
    assert flagged.search.fidelity == "both" and flagged.search.fidelity_sizes == [0.25, 0.5]
    with pytest.raises(SystemExit):
        _args("search", str(path), "--fidelity", "pixels")


@pytest.mark.parametrize("command", ["serve", "predict", "evaluate", "explain", "validate-data"])
def test_the_defaults_the_help_states_are_the_schemas(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The help spells out the config's defaults (no import of the schema for ``--help``): they must agree."""
    from clot_hpo.config import DataConfig, ServeConfig

    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal's width, hyphens too

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"data.max_pixels, else {DataConfig().max_pixels:,}" in text
    if command == "serve":
        for key, value in ServeConfig().model_dump().items():
            if key != "trusted_hosts":
                assert f"serve.{key}, else {value:g}" in text, key


def test_the_tracking_and_storage_defaults_the_help_states_are_the_schemas(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from clot_hpo.config import ExperimentConfig

    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal's width, hyphens too

    schema = ExperimentConfig()
    stated = {}
    for command in ("promote", "report", "predict"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([command, "--help"])
        stated[command] = " ".join(capsys.readouterr().out.split())
    assert f"tracking.uri, else {schema.tracking.uri}" in stated["promote"]
    assert f"tracking.model_name, else {schema.tracking.model_name}" in stated["promote"]
    assert f"search.storage, else {schema.search.storage}" in stated["promote"]
    assert f"default: {schema.tracking.uri}" in stated["report"]
    assert f"tracking.model_name, else {schema.tracking.model_name}>@champion" in stated["predict"]
