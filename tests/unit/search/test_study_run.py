"""One MLflow run per study, however many workers open it: the Optuna storage records which."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from clot_hpo.search.ledger import STUDY_ATTR_RUN_ID
from clot_hpo.search.storage import open_storage
from clot_hpo.search.study import open_study_run
from clot_hpo.tracking.mlflow_tracker import MlflowTracker


@pytest.fixture()
def stores(tmp_path: Path) -> dict[str, str]:
    """A SQLite Optuna storage holding study ``s``, and a SQLite MLflow store."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=open_storage(storage))
    return {
        "storage": storage,
        "tracking": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifacts": str(tmp_path / "artifacts"),
    }


def _tracker(stores: dict[str, str], experiment: str = "s") -> MlflowTracker:
    return MlflowTracker(
        stores["tracking"], experiment_name=experiment, artifact_root=stores["artifacts"], tries=1
    )


def _study(stores: dict[str, str]) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=open_storage(stores["storage"]))


def _study_runs(stores: dict[str, str], experiment: str = "s") -> list[Any]:
    """Every run of the experiment, deleted ones too."""
    client = MlflowClient(stores["tracking"])
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL) if exp else []


def test_workers_opening_at_once_share_one_run_that_the_study_records(
    stores: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _tracker(stores).check_available()  # MLflow's schema, once
    # Each worker searches for the study's run, then (finding none) creates one: a slow search
    # makes every worker search before any creates, unless they take turns.
    search_runs = MlflowClient.search_runs

    def slow_search(self: MlflowClient, *args: Any, **kwargs: Any) -> Any:
        found = search_runs(self, *args, **kwargs)
        time.sleep(0.3)
        return found

    monkeypatch.setattr(MlflowClient, "search_runs", slow_search)
    workers = 4
    start = threading.Barrier(workers)
    opened: list[str] = []

    def worker() -> None:
        tracker, study = _tracker(stores), _study(stores)
        start.wait(timeout=60)  # a worker that failed to start breaks the barrier, not the test run
        opened.append(open_study_run(study, stores["storage"], tracker))

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    monkeypatch.undo()

    runs = _study_runs(stores)
    assert len(runs) == 1, f"one run per study, got {len(runs)}"
    assert opened == [runs[0].info.run_id] * workers
    assert _study(stores).user_attrs[STUDY_ATTR_RUN_ID] == runs[0].info.run_id


def test_the_recorded_run_is_reopened_and_a_wrong_record_is_corrected(
    stores: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    first = open_study_run(_study(stores), stores["storage"], _tracker(stores))
    assert first and _study(stores).user_attrs[STUDY_ATTR_RUN_ID] == first
    assert open_study_run(_study(stores), stores["storage"], _tracker(stores)) == first

    # A record naming another study's run (a storage reused with a mixed-up experiment):
    # the run tagged as this study's is reopened, with a warning, and the record corrected.
    other = _tracker(stores, "elsewhere").start_study("other")
    _study(stores).set_user_attr(STUDY_ATTR_RUN_ID, other)
    assert open_study_run(_study(stores), stores["storage"], _tracker(stores)) == first
    assert "is not its live study run" in caplog.text
    assert _study(stores).user_attrs[STUDY_ATTR_RUN_ID] == first
    assert len(_study_runs(stores)) == 1


def test_a_record_from_another_tracking_server_opens_a_run_here(
    stores: dict[str, str], tmp_path: Path
) -> None:
    first = open_study_run(_study(stores), stores["storage"], _tracker(stores))
    moved = dict(stores, tracking=f"sqlite:///{tmp_path / 'moved.db'}")
    second = open_study_run(_study(moved), moved["storage"], _tracker(moved))
    assert second and second != first
    assert [r.info.run_id for r in _study_runs(moved)] == [second]
    assert _study(stores).user_attrs[STUDY_ATTR_RUN_ID] == second


def test_an_unreachable_tracking_server_records_nothing(stores: dict[str, str]) -> None:
    dead = MlflowTracker("http://127.0.0.1:9", experiment_name="s", tries=1, backoff_s=0.0)
    assert open_study_run(_study(stores), stores["storage"], dead) == ""
    assert STUDY_ATTR_RUN_ID not in _study(stores).user_attrs
