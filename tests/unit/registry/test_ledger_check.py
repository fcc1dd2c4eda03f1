"""``promote`` trusts the Optuna storage, not the tracking server: each fact a writer could change.

A worker account on the tracking server can rewrite any run's tags, metrics and artifacts
with MLflow's public client. Each test fabricates a real study (MLflow runs on SQLite, a real
Optuna storage holding the ledger), changes one fact on the tracking server as such an
account would, and checks that ``promote`` refuses with exit code 2 in one line naming the
trial, registers nothing and moves no alias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from clot_hpo.errors import ConfigError
from clot_hpo.registry import promote
from clot_hpo.search.ledger import TrialLedger
from tests.support.mlflow_server import tiny_keras_model
from tests.support.promotion import fabricate_study, predictions

GOOD = predictions(separation=1.5, noise_seed=2)
MEDIOCRE = predictions(separation=0.5, noise_seed=3)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ledger-check")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return {"uri": uri, "storage": f"sqlite:///{root / 'optuna.db'}", "root": root}


def _study(store: dict[str, Any], name: str) -> dict[int, str]:
    """Trial 0 (val_auc 0.9, the best) and trial 1 (0.7), each with val and test predictions."""
    trials = [
        {"metrics": {"val_auc": 0.9, "threshold": 0.5}, "predictions": GOOD, "val_predictions": GOOD},
        {"metrics": {"val_auc": 0.7, "threshold": 0.5}, "predictions": MEDIOCRE, "val_predictions": MEDIOCRE},
    ]
    return fabricate_study(store["uri"], store["storage"], store["root"], name, trials)


def _promote(store: dict[str, Any], study: str, name: str) -> Any:
    return promote(store["uri"], study, ledger=TrialLedger(store["storage"]), model_name=name)


def _refused(store: dict[str, Any], study: str, name: str) -> str:
    """``promote``'s refusal: exit code 2, one line."""
    with pytest.raises(ConfigError) as info:
        _promote(store, study, name)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message
    return message


def _versions(store: dict[str, Any], name: str) -> list[Any]:
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    return list(client.search_model_versions(f"name = '{name}'"))


def test_a_model_tag_pointing_at_another_model_is_refused(store: dict[str, Any]) -> None:
    runs = _study(store, "forged-model")
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    genuine = client.get_run(runs[0]).data.tags["clot_hpo.model_id"]
    from clot_hpo.tracking.mlflow_tracker import MlflowTracker

    # What a worker account can do: log another model into the genuine run; the tracker tags
    # the run with the new model's id (clot_hpo.model_id).
    tracker = MlflowTracker(store["uri"], experiment_name="forged-model", tries=1, backoff_s=0.01)
    forged = tracker.log_model(runs[0], tiny_keras_model(32, seed=99), image_size=32, threshold=0.5)
    assert forged and client.get_run(runs[0]).data.tags["clot_hpo.model_id"] == forged
    message = _refused(store, "forged-model", "forged-model")
    assert "trial 0 of study 'forged-model'" in message
    assert f"recorded {genuine}, the tracking server has {forged}" in message
    assert _versions(store, "forged-model") == []


def test_a_model_file_replaced_in_the_genuine_model_is_refused(store: dict[str, Any], tmp_path: Path) -> None:
    runs = _study(store, "replaced-file")
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    model_id = client.get_run(runs[0]).data.tags["clot_hpo.model_id"]
    # Same model id, same run: only the file inside the logged model differs.
    (tmp_path / "data").mkdir()
    tiny_keras_model(32, seed=99).save(tmp_path / "data" / "model.keras")
    client.log_model_artifacts(model_id, str(tmp_path))
    message = _refused(store, "replaced-file", "replaced-file")
    assert "trial 0 of study 'replaced-file'" in message
    assert f"sha256 of data/model.keras of models:/{model_id}" in message
    assert _versions(store, "replaced-file") == []


@pytest.mark.parametrize("file", ["test_predictions.csv", "val_predictions.csv"])
def test_a_rewritten_predictions_file_is_refused(store: dict[str, Any], file: str) -> None:
    study = f"rewritten-{file.split('_')[0]}"
    runs = _study(store, study)
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    perfect = GOOD.assign(probability=GOOD["label"].astype(float))
    client.log_text(runs[0], perfect.to_csv(index=False), file)
    message = _refused(store, study, study)
    assert f"trial 0 of study '{study}'" in message and f"sha256 of {file}" in message
    assert _versions(store, study) == []


def test_a_metric_rewritten_on_the_tracking_server_is_refused(store: dict[str, Any]) -> None:
    runs = _study(store, "rewritten-metric")
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    client.log_metric(runs[1], "val_auc", 1.0, step=10)  # the worse trial now looks the best
    message = _refused(store, "rewritten-metric", "rewritten-metric")
    assert "trial 1 of study 'rewritten-metric'" in message
    assert "val_auc = 1.0 on the tracking server, but the Optuna storage records 0.7" in message
    assert _versions(store, "rewritten-metric") == []


def test_trials_are_ranked_by_the_values_in_the_storage(store: dict[str, Any], tmp_path: Path) -> None:
    runs = _study(store, "ranked")
    # The Optuna storage is what ranks: a trial the storage values higher wins even where the
    # tracking server was told the same (both agree here; the storage's value is reported).
    result = _promote(store, "ranked", "ranked")
    assert result.run_id == runs[0] and result.value == 0.9 and result.trial_number == 0
    entry = TrialLedger(store["storage"]).trial("ranked", 0)
    assert entry is not None and entry.value == 0.9 and entry.metric("val_auc") == 0.9
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    version = client.get_model_version("ranked", result.version)
    assert version.tags["model_sha256"] == entry.model_sha256


def test_a_champion_whose_test_predictions_were_rewritten_blocks_the_next_promotion(
    store: dict[str, Any],
) -> None:
    name = "champion-rewritten"
    first = fabricate_study(
        store["uri"],
        store["storage"],
        store["root"],
        "champ-first",
        [{"metrics": {"val_auc": 0.7, "threshold": 0.5}, "predictions": MEDIOCRE}],
    )
    assert _promote(store, "champ-first", name).alias_moved
    fabricate_study(
        store["uri"],
        store["storage"],
        store["root"],
        "champ-second",
        [{"metrics": {"val_auc": 0.9, "threshold": 0.5}, "predictions": GOOD}],
    )
    client = MlflowClient(store["uri"], registry_uri=store["uri"])
    # Inverted: the champion would look far worse than it is, and any candidate would beat it.
    inverted = MEDIOCRE.assign(probability=1.0 - MEDIOCRE["probability"])
    client.log_text(first[0], inverted.to_csv(index=False), "test_predictions.csv")
    message = _refused(store, "champ-second", name)
    assert "champion version 1" in message and "sha256 of test_predictions.csv" in message
    assert [str(v.version) for v in _versions(store, name)] == ["1"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
