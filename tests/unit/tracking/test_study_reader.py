"""Issue 21 item 1: one typed reader of a finished study (``tracking.study_reader.read_study``).

A real SQLite MLflow store holding two studies of one experiment, written with MlflowClient
the way the tracker lays them out. The reader must hand back the config as the schema
validates it (defaults from the schema, not from its callers), the manifest and data report,
the trials in order, predictions files only when asked for, and the ledger's record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from clot_hpo.config.loader import load_config, save_resolved
from clot_hpo.config.schema import ExperimentConfig
from clot_hpo.errors import ConfigError
from clot_hpo.tracking.study_reader import read_study

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class _Entry:
    state: str
    run_id: str


class _Ledger:
    """A ledger holding one COMPLETE trial (the search's ``TrialLedger`` reads Optuna's storage)."""

    def __init__(self, study: str, number: int, run_id: str) -> None:
        self.key, self.entry = (study, number), _Entry("COMPLETE", run_id)
        self.asked: list[tuple[str, int]] = []

    def trial(self, study: str, number: int) -> Any:
        self.asked.append((study, number))
        return self.entry if (study, number) == self.key else None


def _study(client: MlflowClient, exp: str, name: str, files: Path, config: str | None) -> dict[str, Any]:
    files.mkdir()
    (files / "data").mkdir()
    pd.DataFrame({"sha256": ["0" * 64, "1" * 64], "label": [0, 1], "split": ["test", "val"]}).to_csv(
        files / "data" / "split_manifest.csv", index=False
    )
    (files / "data" / "data_report.json").write_text(json.dumps({"layout": "folders", "grouped": False}))
    tags = {"clot_hpo.role": "study", "clot_hpo.study": name, "clot_hpo.objective": "val_auc"}
    parent = client.create_run(exp, run_name=name, tags=tags).info.run_id
    if config is not None:
        (files / "config.yaml").write_text(config)
        client.log_artifact(parent, str(files / "config.yaml"))
    client.log_artifacts(parent, str(files / "data"), "data")
    runs = []
    for number in (1, 0):  # written out of order: the reader sorts by trial number
        run = client.create_run(
            exp,
            tags={
                "clot_hpo.role": "trial",
                "mlflow.parentRunId": parent,
                "optuna.trial_number": str(number),
                "optuna.study": name,
            },
        ).info.run_id
        client.log_param(run, "backbone", "tiny_cnn")
        client.log_metric(run, "val_auc", 0.7 + number / 10)
        if number == 0:
            client.log_text(run, "key,label,probability\n", "test_predictions.csv")
        client.set_terminated(run, "FINISHED" if number == 0 else "KILLED")
        runs.append(run)
    client.set_terminated(parent, "FINISHED")
    return {"run_id": parent, "trials": runs}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("reader-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("reader", artifact_location=(root / "artifacts").as_uri())
    # The first study's config leaves most keys out; the second one's is not valid here.
    first = _study(client, exp, "first", root / "first", "seed: 5\nevaluation: {bootstrap_samples: 300}\n")
    resolved = save_resolved(load_config(REPO / "experiments" / "tiny.yaml"), root / "resolved.yaml")
    saved = _study(client, exp, "saved", root / "saved", resolved.read_text(encoding="utf-8"))
    latest = _study(client, exp, "latest", root / "latest", "evaluation: {confidence_level: 2}\n")
    bare = client.create_experiment("bare", artifact_location=(root / "bare").as_uri())
    other = client.create_run(bare, tags={"clot_hpo.role": "trial"}).info.run_id
    return {"uri": uri, "first": first, "saved": saved, "latest": latest, "not_a_study": other}


def test_the_config_comes_back_validated_with_the_schemas_defaults(
    store: dict[str, Any], tmp_path: Path
) -> None:
    study = read_study(store["uri"], "reader", folder=tmp_path, run_id=store["first"]["run_id"])
    assert isinstance(study.config, ExperimentConfig) and study.config_problem is None
    assert study.config.seed == 5 and study.config.evaluation.bootstrap_samples == 300
    # Silent keys read as the schema's defaults, the one place defaults are written.
    assert study.config.evaluation.confidence_level == ExperimentConfig().evaluation.confidence_level
    assert study.settings is study.config
    assert study.data_report == {"layout": "folders", "grouped": False}
    assert study.manifest is not None and list(study.manifest["split"]) == ["test", "val"]
    assert study.manifest["sha256"].iloc[0] == "0" * 64  # kept as text, not parsed as a number
    assert study.trials_table is None  # this study logged no trials.csv


def test_a_config_as_the_search_saves_it_reads_back_unchanged(store: dict[str, Any], tmp_path: Path) -> None:
    study = read_study(store["uri"], "reader", folder=tmp_path, run_id=store["saved"]["run_id"])
    assert study.config == load_config(REPO / "experiments" / "tiny.yaml")


def test_the_latest_study_by_default_and_an_invalid_config_is_said_not_guessed(
    store: dict[str, Any], tmp_path: Path
) -> None:
    study = read_study(store["uri"], "reader", folder=tmp_path)
    assert study.run_id == store["latest"]["run_id"] and study.study == "latest"
    assert study.config is None
    assert study.config_problem is not None and "evaluation.confidence_level" in study.config_problem
    assert study.settings == ExperimentConfig()


def test_trials_are_typed_in_order_and_their_files_come_when_asked(
    store: dict[str, Any], tmp_path: Path
) -> None:
    study = read_study(store["uri"], "reader", folder=tmp_path, run_id=store["first"]["run_id"])
    assert [t.number for t in study.trials] == [0, 1]
    zero, one = study.trials
    assert (zero.state, one.state) == ("COMPLETE", "PRUNED")  # from the run status, no state tag
    assert zero.backbone == "tiny_cnn" and zero.metrics["val_auc"] == pytest.approx(0.7)
    assert zero.optuna_study == "first"
    assert not (tmp_path / "trials").exists()  # nothing downloaded until asked
    path = study.trial_file(zero, "test_predictions.csv")
    assert path is not None and path.read_text().startswith("key,label,probability")
    assert study.trial_file(one, "test_predictions.csv") is None


def test_the_ledgers_record_of_each_trial(store: dict[str, Any], tmp_path: Path) -> None:
    ledger = _Ledger("first", 0, store["first"]["trials"][1])
    study = read_study(
        store["uri"], "reader", folder=tmp_path, run_id=store["first"]["run_id"], ledger=ledger
    )
    zero, one = study.trials
    entry = study.ledger_entry(zero)
    assert entry is not None and entry.run_id == zero.run_id
    assert study.ledger_entry(one) is None and ledger.asked == [("first", 0), ("first", 1)]
    assert read_study(store["uri"], "reader", folder=tmp_path / "b").ledger_entry(zero) is None  # no ledger


def test_what_is_not_a_study_is_refused_naming_what_was_found(store: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a clot-hpo study run .* but its tag is 'trial'"):
        read_study(store["uri"], "bare", folder=tmp_path, run_id=store["not_a_study"])
    with pytest.raises(ConfigError, match="must belong to experiment 'reader' .* but it is in experiment id"):
        read_study(store["uri"], "reader", folder=tmp_path, run_id=store["not_a_study"])
    with pytest.raises(ConfigError, match="holds no clot-hpo study run"):
        read_study(store["uri"], "bare", folder=tmp_path)
    with pytest.raises(ConfigError, match="'missing' .* does not exist .*experiments there: bare, reader"):
        read_study(store["uri"], "missing", folder=tmp_path)
