"""Promotion with aliases, and using the champion (predict / evaluate), on a SQLite store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from clot_hpo.errors import ConfigError, DataError
from clot_hpo.evaluate import binary_metrics
from clot_hpo.registry import (
    evaluate_command,
    predict_command,
    promote_command,
    resolve_model,
)
from clot_hpo.registry import promote as promote_model
from clot_hpo.registry.candidates import resolve_direction
from clot_hpo.search.ledger import TrialLedger
from clot_hpo.tracking.store import global_tracking_uri
from tests.support.cli import run_main
from tests.support.mlflow_server import write_images
from tests.support.promotion import fabricate_study, predictions

NAME = "blood-clot-detector"
USE = "clot-detector-in-use"  # registered by the fixture for predict/evaluate


def _study(
    uri: str,
    root: Path,
    name: str,
    trials: list[dict[str, Any]],
    *,
    objective: str = "val_auc",
    direction: str | None = "maximize",
) -> dict[int, str]:
    """A study with one child run per entry: metrics, final state, and a model unless told not to.

    The study records ``objective`` and ``direction`` as `clot-hpo search` does (None: a study
    run that recorded no direction, as before clot-hpo recorded it), and its trials in the
    Optuna storage ``root/optuna.db`` (``promote`` takes only trials recorded there). Every
    trial has test predictions on the same images (``predictions``, default: a middling model).
    """
    specs = [
        {"predictions": predictions(separation=0.8, noise_seed=n), **spec} for n, spec in enumerate(trials)
    ]
    return fabricate_study(
        uri,
        _storage(root),
        root,
        name,
        specs,
        digest="digest-shared",
        objective=objective,
        direction=direction,
    )


def _storage(root: Path) -> str:
    return f"sqlite:///{root / 'optuna.db'}"


def promote(uri: str, experiment: str, **kwargs: Any) -> Any:
    """``promote`` with the Optuna storage the studies of this module record their trials in."""
    root = Path(uri.removeprefix("sqlite:///")).parent
    return promote_model(uri, experiment, ledger=TrialLedger(_storage(root)), **kwargs)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    runs = _study(
        uri,
        root,
        "study-a",
        [
            {"metrics": {"val_auc": 0.70, "val_brier": 0.20, "test_auc": 0.6, "threshold": 0.4}},
            {"metrics": {"val_auc": 0.90, "val_brier": 0.25, "test_auc": 0.8, "threshold": 0.45}},
            {"metrics": {"val_auc": 0.99, "threshold": 0.5}, "state": "PRUNED"},  # not finished
            {"metrics": {"val_auc": 0.98, "threshold": 0.5}, "model": False},  # no model
        ],
    )
    # The model that predict/evaluate use, promoted once (the promotion tests use other names).
    promote(uri, "study-a", model_name=USE)
    return {"uri": uri, "root": root, "runs_a": runs}


def test_the_direction_is_the_one_the_study_recorded() -> None:
    recorded = {"val_auc": {"maximize"}, "val_loss": {"minimize"}}
    assert resolve_direction(recorded, "e", "val_loss", None) == ("val_loss", "minimize")
    assert resolve_direction({"val_auc": {"maximize"}}, "e", None, None) == ("val_auc", "maximize")
    # A metric no study optimized needs its direction from the user, and gets it.
    assert resolve_direction(recorded, "e", "val_brier", "minimize") == ("val_brier", "minimize")
    with pytest.raises(ConfigError, match="no study recorded a direction for 'val_brier'.*--direction"):
        resolve_direction(recorded, "e", "val_brier", None)
    with pytest.raises(ConfigError, match="contradicts"):
        resolve_direction(recorded, "e", "val_auc", "minimize")
    with pytest.raises(ConfigError, match="pass --metric"):
        resolve_direction(recorded, "e", None, None)
    with pytest.raises(ConfigError, match="both directions"):
        resolve_direction({"val_auc": {"maximize", "minimize"}}, "e", "val_auc", None)


def test_promote_registers_the_best_finished_trial_and_sets_the_alias(store: dict[str, Any]) -> None:
    result = promote(store["uri"], "study-a")  # the default name: blood-clot-detector
    assert result.run_id == store["runs_a"][1] and result.trial_number == 1
    assert result.registered and result.alias_moved and result.value == 0.90
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == result.version and champion.run_id == store["runs_a"][1]
    tags = champion.tags
    assert tags["study"] == "study-a" and tags["trial"] == "1" and tags["threshold"] == "0.45"
    assert tags["dataset_digest"] == "digest-shared" and tags["val_auc"] == "0.9"
    assert tags["image_size"] == "32" and tags["test_auc"] == "0.8"
    assert "gate: version 1 first champion" in result.message

    # Running it again changes nothing, and says so.
    again = promote(store["uri"], "study-a")
    assert (again.version, again.registered, again.alias_moved) == (result.version, False, False)
    assert "already registered" in again.message and "nothing to move" in again.message
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1


def test_a_worse_candidate_is_registered_but_does_not_take_the_alias(store: dict[str, Any]) -> None:
    name = "worse-scenario"
    promote(store["uri"], "study-a", model_name=name)
    worse = {"metrics": {"val_auc": 0.80, "threshold": 0.5}, "predictions": predictions(separation=0.2)}
    _study(store["uri"], store["root"], "study-worse", [worse])
    result = promote(store["uri"], "study-worse", model_name=name)
    assert result.registered and not result.alias_moved and result.decision == "kept"
    assert "stays on version" in result.message
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    assert str(client.get_model_version_by_alias(name, "champion").version) == result.previous_version


def test_a_better_candidate_takes_the_alias_and_lower_is_better_metrics(store: dict[str, Any]) -> None:
    name = "better-scenario"
    promote(store["uri"], "study-a", model_name=name)
    better = {"metrics": {"val_auc": 0.95, "threshold": 0.5}, "predictions": predictions(separation=2.5)}
    _study(store["uri"], store["root"], "study-better", [better])
    result = promote(store["uri"], "study-better", model_name=name)
    assert result.alias_moved and result.decision == "promoted"
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    assert str(client.get_model_version_by_alias(name, "champion").version) == result.version

    # By Brier score (lower is better) trial 0 of study-a wins, under its own alias.
    brier = promote(
        store["uri"], "study-a", model_name=name, metric="val_brier", direction="minimize", alias="calibrated"
    )
    assert brier.run_id == store["runs_a"][0] and brier.alias_moved


def test_promote_errors_name_what_is_missing(store: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="'no-such-study'"):
        promote(store["uri"], "no-such-study")
    _study(store["uri"], store["root"], "study-pruned", [{"metrics": {"val_auc": 0.9}, "state": "PRUNED"}])
    with pytest.raises(ConfigError, match="no finished trial with metric 'val_auc' and a logged model that"):
        promote(store["uri"], "study-pruned")
    with pytest.raises(ConfigError, match="does not exist"):
        promote(f"sqlite:///{store['root'] / 'nowhere.db'}", "study-a")


def test_promote_ranks_by_the_direction_the_study_recorded(store: dict[str, Any]) -> None:
    # A minimized objective whose name says nothing about its direction (no "loss" in it):
    # guessing from the name ranked the worst trial first.
    runs = _study(
        store["uri"],
        store["root"],
        "study-min",
        [
            {"metrics": {"val_error": 0.30, "threshold": 0.5}},
            {"metrics": {"val_error": 0.10, "threshold": 0.5}},
            {"metrics": {"val_error": 0.20, "threshold": 0.5}},
        ],
        objective="val_error",
        direction="minimize",
    )
    result = promote(store["uri"], "study-min", model_name="min-scenario", metric="val_error")
    assert result.run_id == runs[1] and result.value == 0.10 and result.direction == "minimize"
    assert "lower is better" in result.message
    # The metric defaults to the study's objective.
    assert promote(store["uri"], "study-min", model_name="min-scenario").run_id == runs[1]


def test_promote_without_a_recorded_direction_says_what_to_pass(store: dict[str, Any]) -> None:
    _study(store["uri"], store["root"], "study-unrecorded", [{"metrics": {"val_auc": 0.9}}], direction=None)
    with pytest.raises(ConfigError, match="recorded none.*pass --metric"):
        promote(store["uri"], "study-unrecorded", model_name="unrecorded-scenario")
    with pytest.raises(ConfigError, match="no study recorded a direction for 'val_auc'"):
        promote(store["uri"], "study-unrecorded", model_name="unrecorded-scenario", metric="val_auc")
    result = promote(
        store["uri"],
        "study-unrecorded",
        model_name="unrecorded-scenario",
        metric="val_auc",
        direction="maximize",
    )
    assert result.registered and result.alias_moved


def test_threshold_and_image_size_come_from_the_model_metadata(store: dict[str, Any]) -> None:
    # With every tag that used to be searched removed (version, run, logged model), the
    # model's own metadata still says how to apply it.
    name = "metadata-scenario"
    [run_id] = _study(
        store["uri"], store["root"], "study-metadata", [{"metrics": {"val_auc": 0.9, "threshold": 0.37}}]
    ).values()
    version = promote(store["uri"], "study-metadata", model_name=name).version
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    model_id = client.get_run(run_id).data.tags["clot_hpo.model_id"]
    for key in ("threshold", "image_size"):
        client.delete_model_version_tag(name, version, key)
        client.delete_tag(run_id, key)
        client.delete_logged_model_tag(model_id, key)
    for uri in (
        f"models:/{name}@champion",
        f"models:/{name}/{version}",
        f"models:/{model_id}",
        f"runs:/{run_id}/model",
    ):
        resolved = resolve_model(client, store["uri"], uri)
        assert (resolved.threshold, resolved.image_size) == (0.37, 32), uri
    assert resolve_model(client, store["uri"], f"models:/{name}@champion").run_id == run_id


def test_promote_command_prints_what_happened(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(
        tracking_uri=store["uri"],
        experiment="study-a",
        model_name="command-scenario",
        alias="champion",
        metric=None,
        direction=None,
    )
    assert promote_command(args, ledger=TrialLedger(_storage(store["root"]))) == 0
    out = capsys.readouterr().out
    assert "best trial: 1" in out and "alias 'champion'" in out


def test_pyfunc_of_the_champion_returns_n_probabilities(store: dict[str, Any]) -> None:
    batch = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    with global_tracking_uri(store["uri"]):
        model = mlflow.pyfunc.load_model(f"models:/{USE}@champion")
    out = np.asarray(model.predict(batch))
    assert out.size == 4 and np.all((out >= 0) & (out <= 1))


def _champion_keras(store: dict[str, Any]) -> Any:
    with global_tracking_uri(store["uri"]):
        return mlflow.keras.load_model(f"models:/{USE}@champion")


def test_predict_prints_one_json_line_per_image(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clot_hpo.data import load_image_batch

    champion = MlflowClient(store["uri"], registry_uri=store["uri"]).get_model_version_by_alias(
        USE, "champion"
    )
    threshold = float(champion.tags["threshold"])
    folder = write_images(tmp_path / "scans", 3)
    single = write_images(tmp_path / "one", 1, seed=9)[0]
    args = argparse.Namespace(
        tracking_uri=store["uri"],
        model=f"models:/{USE}@champion",
        paths=[str(tmp_path / "scans"), str(single)],
    )
    assert predict_command(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["image"]).name for r in lines] == sorted(p.name for p in [*folder, single])
    expected = _champion_keras(store).predict(load_image_batch([r["image"] for r in lines], 32), verbose=0)
    for record, prob in zip(lines, expected.reshape(-1), strict=True):
        assert set(record) == {"image", "probability", "label"}
        assert record["probability"] == pytest.approx(float(prob), abs=1e-5)
        assert record["label"] == int(record["probability"] >= threshold)


def test_evaluate_prints_the_table_and_json(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clot_hpo.data import load_image_batch

    data = tmp_path / "data"
    pos = write_images(data / "positive", 6, seed=1)
    neg = write_images(data / "negative", 6, seed=2)
    args = argparse.Namespace(
        tracking_uri=store["uri"], model=f"models:/{USE}@champion", data=str(data), config=None, json=True
    )
    assert evaluate_command(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 12 and result["threshold"] == 0.45
    paths = sorted([*pos, *neg], key=lambda p: (p.parent.name, p.name))
    labels = [1 if p.parent.name == "positive" else 0 for p in paths]
    probs = _champion_keras(store).predict(load_image_batch(paths, 32), verbose=0).reshape(-1)
    expected = binary_metrics(labels, probs, threshold=0.45)
    for key in ("accuracy", "sensitivity", "specificity", "precision", "auc", "accuracy_ci_low"):
        assert result["metrics"][key] == pytest.approx(expected[key], abs=1e-5), key
    cm = result["confusion_matrix"]
    assert cm["tp"] + cm["fn"] == 6 and cm["tn"] + cm["fp"] == 6

    args.json = False
    assert evaluate_command(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "| Split | Accuracy | Precision | Recall | Sensitivity | Specificity | PPV | NPV | AUC"
    )
    assert json.loads(out[out.index("{") :])["n"] == 12


def test_predict_and_evaluate_input_errors(store: dict[str, Any], tmp_path: Path) -> None:
    args = argparse.Namespace(
        tracking_uri=store["uri"], model=f"models:/{USE}@champion", paths=[str(tmp_path / "missing.png")]
    )
    with pytest.raises(DataError, match="missing.png"):
        predict_command(args)
    write_images(tmp_path / "ok", 1)
    args.paths, args.model = [str(tmp_path / "ok")], f"models:/{USE}@nobody"
    with pytest.raises(ConfigError, match="'nobody'"):
        predict_command(args)
    args.model = "models:/no-such-model@champion"
    with pytest.raises(ConfigError, match="'no-such-model'"):
        predict_command(args)


def test_cli_exit_code_2_names_the_missing_experiment_and_alias(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = run_main(
        capsys,
        "promote",
        "--tracking-uri",
        store["uri"],
        "--storage",
        _storage(store["root"]),
        "--experiment",
        "ghost-study",
    )
    assert proc.returncode == 2, proc.stderr
    assert "ghost-study" in proc.stderr and "Traceback" not in proc.stderr
    image = write_images(tmp_path, 1)[0]
    proc = run_main(
        capsys, "predict", "--tracking-uri", store["uri"], "--model", f"models:/{USE}@ghost", str(image)
    )
    assert proc.returncode == 2, proc.stderr
    assert "ghost" in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""
