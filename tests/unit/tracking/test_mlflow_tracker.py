"""The MLflow tracker against a SQLite store: runs, statuses, batching, artifacts, failures."""

from __future__ import annotations

import json
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from clot_hpo.errors import TrackingUnavailable
from clot_hpo.tracking.mlflow_tracker import MlflowTracker
from clot_hpo.tracking.spool import SpoolReader, SpoolTracker
from tests.support.mlflow_server import free_port


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One SQLite store per module (creating its schema takes seconds); tests use own experiments."""
    root = tmp_path_factory.mktemp("mlruns")
    uri = f"sqlite:///{root / 'db' / 'mlflow.db'}"
    return {"uri": uri, "artifacts": str(root / "artifacts"), "client": None}


def _tracker(store: dict[str, Any], name: str, **kwargs: Any) -> MlflowTracker:
    tracker = MlflowTracker(
        store["uri"],
        experiment_name=name,
        artifact_root=store["artifacts"],
        tries=2,
        backoff_s=0.01,
        **kwargs,
    )
    tracker.check_available()
    return tracker


def _client(store: dict[str, Any]) -> MlflowClient:
    return MlflowClient(store["uri"])


def test_check_available_creates_the_sqlite_folder(store: dict[str, Any]) -> None:
    _tracker(store, "exp-check")
    assert Path(store["uri"].removeprefix("sqlite:///")).is_file()
    assert Path(store["artifacts"]).is_dir()


def test_dead_http_server_is_unavailable_within_seconds() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable) as err:
        MlflowTracker(uri, experiment_name="e").check_available()
    assert time.monotonic() - started < 7.0
    assert uri in str(err.value)


def test_study_and_trial_runs_with_their_states(store: dict[str, Any]) -> None:
    tracker = _tracker(store, "exp-states")
    parent = tracker.start_study("study-states", tags={"note": "hello"})
    runs = {}
    for number, state, reason in (
        (0, "COMPLETE", None),
        (1, "PRUNED", "pruned at epoch 2"),
        (2, "FAIL", "OOM twice"),
    ):
        runs[number] = tracker.start_trial(number, tags={"backbone": "tiny_cnn"})
        tracker.end_trial(
            runs[number],
            state,
            reason=reason,
            attrs={"value": 0.7, "weights_used": "none"} if state == "COMPLETE" else None,
        )
    tracker.end_study()

    client = _client(store)
    exp = client.get_experiment_by_name("exp-states")
    assert exp.artifact_location.startswith(Path(store["artifacts"]).resolve().as_uri())
    p = client.get_run(parent)
    assert p.info.status == "FINISHED" and p.info.run_name == "study-states"
    assert p.data.tags["clot_hpo.role"] == "study" and p.data.tags["note"] == "hello"
    # A pruned run ends FINISHED (the UI draws KILLED as a failure); its Optuna state says PRUNED.
    expected = {0: ("FINISHED", "COMPLETE"), 1: ("FINISHED", "PRUNED"), 2: ("FAILED", "FAIL")}
    names = {0: "trial-0", 1: "trial-1 (pruned)", 2: "trial-2"}  # no objective: no stop epoch known
    for number, run_id in runs.items():
        run = client.get_run(run_id)
        tags = run.data.tags
        assert run.info.run_name == names[number]
        assert (run.info.status, tags["optuna.trial_state"]) == expected[number]
        assert tags["mlflow.parentRunId"] == parent
        assert tags["optuna.study"] == "study-states" and tags["optuna.trial_number"] == str(number)
        assert tags["backbone"] == "tiny_cnn"
    assert client.get_run(runs[1]).data.tags["fail_reason"] == "pruned at epoch 2"
    assert client.get_run(runs[2]).data.tags["fail_reason"] == "OOM twice"
    done = client.get_run(runs[0]).data
    assert done.metrics["value"] == 0.7 and done.tags["weights_used"] == "none"
    assert "fail_reason" not in done.tags
    with pytest.raises(ValueError, match="RUNNING"):
        tracker.end_trial(runs[0], "RUNNING")


def _headline_study(store: dict[str, Any], name: str, direction: str) -> tuple[MlflowTracker, str]:
    tracker = _tracker(store, name)
    parent = tracker.start_study(
        name,
        objective="val_auc",
        direction=direction,
        headline=("test_auc", "test_auc_ci_low", "test_auc_ci_high"),
    )
    for number, (state, value) in enumerate(
        (("COMPLETE", 0.7), ("COMPLETE", 0.8), ("PRUNED", None), ("FAIL", None), ("COMPLETE", 0.8))
    ):
        run_id = tracker.start_trial(number)
        if value is not None:
            tracker.log_evaluation(
                run_id,
                metrics={
                    "val_auc": value,
                    "test_auc": value - 0.1,
                    "test_auc_ci_low": value - 0.2,
                    "test_auc_ci_high": value,
                },
                artifacts={},
                figures={},
            )
        tracker.end_trial(run_id, state, attrs={"value": value} if value is not None else None)
    return tracker, parent


def test_the_study_run_records_its_direction_and_its_best_trial_as_headline_metrics(
    store: dict[str, Any],
) -> None:
    tracker, parent = _headline_study(store, "exp-headline", "maximize")
    run = _client(store).get_run(parent)
    assert (
        run.data.tags["optuna.direction"] == "maximize" and run.data.tags["clot_hpo.objective"] == "val_auc"
    )
    metrics = run.data.metrics
    # Trials 1 and 4 tie at 0.8: the lower number wins, as in Optuna.
    assert metrics["best_val_auc"] == 0.8 and metrics["best_trial"] == 1
    assert metrics["best_test_auc"] == pytest.approx(0.7)
    assert (metrics["best_test_auc_ci_low"], metrics["best_test_auc_ci_high"]) == pytest.approx((0.6, 0.8))
    assert (metrics["n_trials_complete"], metrics["n_trials_pruned"], metrics["n_trials_failed"]) == (3, 1, 1)

    # The UI's shared view shows these metrics as columns, best_<objective> first.
    view = json.loads(
        _client(store).get_experiment_by_name("exp-headline").tags["mlflow.sharedViewState.clot-hpo"]
    )
    assert view["columnOrder"][0] == "metrics.`best_val_auc`" and set(view["selectedColumns"]) >= {
        f"metrics.`{name}`" for name in metrics
    }

    # A study that minimizes its objective names the lowest value.
    _, parent = _headline_study(store, "exp-headline-min", "minimize")
    metrics = _client(store).get_run(parent).data.metrics
    assert metrics["best_val_auc"] == 0.7 and metrics["best_trial"] == 0

    # On resume without them, the recorded objective and direction are used.
    tracker.end_study()
    again = _tracker(store, "exp-headline")
    assert again.start_study("exp-headline") == parent_of(store, "exp-headline")
    assert (again.objective, again.direction) == ("val_auc", "maximize")
    with pytest.raises(ValueError, match="'upward'"):
        again.start_study("exp-headline", direction="upward")


def parent_of(store: dict[str, Any], experiment: str) -> str:
    client = _client(store)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    [run] = client.search_runs([exp_id], filter_string="tags.`clot_hpo.role` = 'study'")
    return run.info.run_id


def test_of_two_workers_logging_the_headline_at_once_the_later_reader_wins(
    store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A reads the trial runs, worker B ends a better trial and logs, then A logs what it read."""
    import clot_hpo.tracking.mlflow_study as mlflow_study

    a = _tracker(store, "exp-two-headlines")
    parent = a.start_study("two-headlines", objective="val_auc", direction="maximize")
    b = _tracker(store, "exp-two-headlines")
    assert b.start_study("two-headlines", run_id=parent) == parent

    def finish(tracker: MlflowTracker, number: int, value: float) -> None:
        run_id = tracker.start_trial(number)
        tracker.log_evaluation(run_id, metrics={"val_auc": value}, artifacts={}, figures={})
        tracker.end_trial(run_id, "COMPLETE", attrs={"value": value})

    finish(a, 0, 0.7)
    read = mlflow_study.search_all_runs

    def a_reads_then_b_ends_a_trial(*args: Any, **kwargs: Any) -> Any:
        runs = list(read(*args, **kwargs))  # read now (it pages lazily)
        monkeypatch.setattr(mlflow_study, "search_all_runs", read)  # once
        time.sleep(0.01)  # B's stamps come later, as on two machines
        finish(b, 1, 0.9)
        return runs

    monkeypatch.setattr(mlflow_study, "search_all_runs", a_reads_then_b_ends_a_trial)
    a._log_headline()  # A logs last, what it read before trial 1 ended
    metrics = _client(store).get_run(parent).data.metrics
    assert (metrics["best_trial"], metrics["best_val_auc"]) == (1, 0.9)
    assert metrics["n_trials_complete"] == 2


def test_resume_reopens_the_study_run_and_the_trial_run(store: dict[str, Any]) -> None:
    first = _tracker(store, "exp-resume")
    parent = first.start_study("study-resume")
    trial0 = first.start_trial(0)
    first.end_study("KILLED")  # interrupted, trial 0 left RUNNING by a crash

    second = _tracker(store, "exp-resume")  # a new study process
    assert second.start_study("study-resume") == parent
    client = _client(store)
    assert client.get_run(parent).info.status == "RUNNING"
    assert second.start_trial(0) == trial0  # the same trial number maps to the same run
    # Trial 1 is another worker's, started after this worker read which trials are over ({0}).
    trial1 = second.start_trial(1)
    assert second.close_orphaned_trials(only={0}) == [0]
    assert client.get_run(trial0).info.status == "FAILED"
    assert client.get_run(trial1).info.status == "RUNNING"
    assert second.close_orphaned_trials() == [1]  # None: every run still RUNNING
    second.end_study()
    assert len(client.search_runs([client.get_experiment_by_name("exp-resume").experiment_id])) == 3


def test_epoch_metrics_are_one_batch_per_epoch(
    store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = _tracker(store, "exp-epochs")
    tracker.start_study("study-epochs")
    run_id = tracker.start_trial(0)
    calls: list[int] = []
    real = tracker.client.log_batch

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs.get("metrics") or []))
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", counting)
    for epoch in range(3):
        tracker.log_epoch(
            run_id,
            epoch,
            {
                "loss": 1.0 / (epoch + 1),
                "auc": np.float32(0.5 + 0.1 * epoch),
                "val_loss": 1.2 / (epoch + 1),
                "val_auc": 0.5 + 0.05 * epoch,
            },
        )
    assert calls == [4, 4, 4]
    client = _client(store)
    history = client.get_metric_history(run_id, "val_auc")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx([0.5, 0.55, 0.6])


def test_evaluation_comes_after_the_epochs_with_artifacts_and_figures(
    store: dict[str, Any], tmp_path: Path
) -> None:
    tracker = _tracker(store, "exp-eval")
    tracker.start_study("study-eval")
    run_id = tracker.start_trial(0)
    # As a trial records it: spooled by its process, forwarded by the study process.
    spool = SpoolTracker(tmp_path / "spool")
    reader = SpoolReader(spool.folder)
    spool.log_params("", {"learning_rate": 1e-3, "backbone": "tiny_cnn"})
    for epoch in range(2):
        spool.log_epoch("", epoch, {"val_auc": 0.6, "val_accuracy": 0.55})
    reader.forward(tracker, run_id)  # the epochs go while the trial trains
    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    spool.log_evaluation(
        "",
        metrics={"val_auc": 0.81, "val_accuracy": 0.75, "test_auc": 0.79, "threshold": 0.42},
        artifacts={
            "confusion_matrix.json": {"tn": 5, "fp": 1, "fn": 2, "tp": 7, "threshold": 0.42},
            "test_predictions.csv": "key,label,probability\nab12,1,0.9375\n",
        },
        figures={"roc_curve.png": fig},
    )
    reader.forward(tracker, run_id)
    client = _client(store)
    run = client.get_run(run_id)
    # The evaluation (not the last epoch) is the run's value of the clashing names.
    assert run.data.metrics["val_auc"] == 0.81 and run.data.metrics["val_accuracy"] == 0.75
    assert client.get_metric_history(run_id, "val_auc")[-1].step == 2
    assert run.data.params == {"learning_rate": "0.001", "backbone": "tiny_cnn"}
    assert run.data.tags["threshold"] == "0.42"
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"confusion_matrix.json", "roc_curve.png"} <= names
    local = client.download_artifacts(run_id, "confusion_matrix.json")
    assert json.loads(Path(local).read_text()) == {"tn": 5, "fp": 1, "fn": 2, "tp": 7, "threshold": 0.42}
    # A text artifact (the predictions CSV) is stored as it was written, not as JSON.
    local = client.download_artifacts(run_id, "test_predictions.csv")
    assert Path(local).read_text() == "key,label,probability\nab12,1,0.9375\n"


def test_study_inputs_and_summary(store: dict[str, Any], tmp_path: Path) -> None:
    tracker = _tracker(store, "exp-inputs")
    parent = tracker.start_study("study-inputs")
    manifest = tmp_path / "split_manifest.csv"
    pd.DataFrame(
        {"path": ["a.png", "b.png", "c.png"], "label": [0, 1, 1], "split": ["train", "val", "test"]}
    ).to_csv(manifest, index=False)
    (tmp_path / "data_report.json").write_text('{"grouped": false}')  # prepare_data writes it beside
    space_file = tmp_path / "tiny_cnn.yaml"
    space_file.write_text("learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}\n")
    digest = "sha256:" + "ab" * 32
    tracker.log_study_inputs(
        config={"name": "demo", "data": {"path": "data/synthetic"}, "seed": 1},
        search_spaces={
            "efficientnet_b1": {"dropout": {"type": "float", "low": 0.1, "high": 0.5}},
            "tiny_cnn": space_file,
        },
        manifest_path=manifest,
        dataset_digest=digest,
    )
    child = tracker.start_trial(0)
    trials_csv = tmp_path / "trials.csv"
    trials_csv.write_text("number,value,state\n0,0.7,COMPLETE\n")
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([1, 2], [0.6, 0.7])
    tracker.log_study_summary(trials_csv, {"optimization_history.png": ax, "param_importances": fig})

    client = _client(store)
    run = client.get_run(parent)
    assert run.data.tags["clot_hpo.dataset_digest"] == digest
    assert client.get_run(child).data.tags["clot_hpo.dataset_digest"] == digest
    top = {a.path for a in client.list_artifacts(parent)}
    assert {
        "config.yaml",
        "search_spaces",
        "data",
        "trials.csv",
        "optimization_history.png",
        "param_importances.png",
    } <= top
    assert {a.path for a in client.list_artifacts(parent, "search_spaces")} == {
        "search_spaces/efficientnet_b1.yaml",
        "search_spaces/tiny_cnn.yaml",
    }
    assert {a.path for a in client.list_artifacts(parent, "data")} == {
        "data/split_manifest.csv",
        "data/data_report.json",
    }
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "synthetic"
    assert dataset_input.dataset.digest == digest[:36]


def test_tracking_failures_are_reported_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    tracker = MlflowTracker(f"http://127.0.0.1:{free_port()}", experiment_name="e", tries=2, backoff_s=0.01)
    with caplog.at_level(logging.WARNING, logger="clot_hpo.tracking"):
        assert tracker.start_study("s") == ""
        assert tracker.start_trial(0) == ""
        tracker.log_epoch("0123456789abcdef", 0, {"loss": 1.0})
        tracker.log_evaluation(
            "0123456789abcdef",
            metrics={"val_auc": 0.5},
            artifacts={"x.json": {}},
            figures={"f.png": Figure()},
        )
        tracker.end_trial("0123456789abcdef", "COMPLETE")
        tracker.end_study()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("start the study run" in w and tracker.tracking_uri in w for w in warnings)
    assert any("log epoch 0 metrics" in w for w in warnings)
    assert any("end run" in w for w in warnings)


def test_tracker_pickles_for_spawned_children(store: dict[str, Any]) -> None:
    tracker = _tracker(store, "exp-pickle")
    tracker.start_study("study-pickle")
    clone = pickle.loads(pickle.dumps(tracker))
    assert clone.parent_run_id == tracker.parent_run_id and clone._client is None
    run_id = clone.start_trial(3)
    assert _client(store).get_run(run_id).data.tags["mlflow.parentRunId"] == tracker.parent_run_id


def test_an_outage_costs_one_backoff_sequence_not_one_per_call(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    class DownClient:
        def log_batch(self, run_id: str, **kwargs: Any) -> None:
            calls.append(run_id)
            raise ConnectionError("connection refused")

    tracker = MlflowTracker("http://127.0.0.1:9", experiment_name="e", tries=3, backoff_s=0.001)
    tracker._client = DownClient()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="clot_hpo.tracking"):
        tracker.log_epoch("run", 0, {"loss": 1.0})
        assert len(calls) == 3  # the full retry sequence
        tracker.log_epoch("run", 1, {"loss": 0.9})
        tracker.log_epoch("run", 2, {"loss": 0.8})
        assert len(calls) == 5  # then one attempt per call
    assert sum("looks unavailable" in r.getMessage() for r in caplog.records) == 1

    class UpClient(DownClient):
        def log_batch(self, run_id: str, **kwargs: Any) -> None:
            calls.append(run_id)

    tracker._client = UpClient()  # type: ignore[assignment]
    tracker.log_epoch("run", 3, {"loss": 0.7})
    assert tracker._degraded_until == 0.0  # recovered: full retries again


def test_a_pruned_run_reads_as_pruned_with_its_stop_epoch(store: dict[str, Any]) -> None:
    tracker = _tracker(store, "exp-pruned")
    tracker.start_study("study-pruned", objective="val_auc", direction="maximize")
    trained = tracker.start_trial(0)
    for epoch in range(2):  # steps 0 and 1: the trial stopped after its second epoch
        tracker.log_epoch(trained, epoch, {"val_auc": 0.6 + epoch / 100, "loss": 0.5})
    tracker.end_trial(trained, "PRUNED", reason="pruned at epoch 2 with val_auc=0.6100")
    untrained = tracker.start_trial(1)
    tracker.end_trial(untrained, "PRUNED", reason="VRAM budget: 12.0 GiB > 4.0 GiB")
    tracker.end_study()

    client = _client(store)
    run = client.get_run(trained)
    assert (run.info.status, run.data.tags["optuna.trial_state"]) == ("FINISHED", "PRUNED")
    assert run.info.run_name == "trial-0 (pruned at epoch 2)"
    assert run.data.tags["clot_hpo.pruned_at_epoch"] == "2"
    assert run.data.tags["mlflow.note.content"] == (
        "Pruned by the study at epoch 2: pruned at epoch 2 with val_auc=0.6100"
    )
    assert run.data.tags["fail_reason"] == "pruned at epoch 2 with val_auc=0.6100"
    run = client.get_run(untrained)
    assert run.info.run_name == "trial-1 (pruned before training)"
    assert run.data.tags["clot_hpo.pruned_at_epoch"] == "0"
    # Counted as pruned, never as complete: the headline goes by the Optuna state.
    parent = client.get_run(tracker.parent_run_id).data.metrics
    assert (parent["n_trials_complete"], parent["n_trials_pruned"]) == (0, 2)


def test_the_ui_view_groups_the_trials_and_charts_the_catalogue_metrics(store: dict[str, Any]) -> None:
    tracker, _ = _headline_study(store, "exp-view", "maximize")
    spaces = {
        "tiny_cnn": {
            "backbone": "tiny_cnn",
            "parameters": {
                "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                "momentum": {"type": "float", "low": 0.8, "high": 0.99, "when": {"optimizer": ["sgd"]}},
                "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "image_size": {"type": "fixed", "value": 48},
                "dropout": {"type": "fixed", "value": 0.1},
            },
        },
        "resnet50": {
            "backbone": "resnet50",
            "parameters": {
                "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2},
                "image_size": {"type": "fixed", "value": 48},
                "optimizer": {"type": "categorical", "choices": ["adam"]},
                "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            },
        },
    }
    tracker.log_study_inputs(config={}, search_spaces=spaces, manifest_path=None, dataset_digest=None)
    view = json.loads(
        _client(store).get_experiment_by_name("exp-view").tags["mlflow.sharedViewState.clot-hpo"]
    )

    # The trials are listed under their study (a run group the UI opens expanded), one line each.
    assert view["groupBy"] == {
        "aggregateFunction": "max",
        "groupByKeys": [{"mode": "tag", "groupByData": "clot_hpo.study"}],
    }
    assert view["useGroupedValuesInCharts"] is False and view["runsHiddenMode"] == "SHOW_ALL"
    assert view["selectedColumns"][-1] == "tags.`optuna.trial_state`"
    # The study's section, open, first; the UI's one chart per metric closed below it.
    sections = view["compareRunSections"]
    assert [(s["name"], s["display"]) for s in sections] == [
        ("Study", True),
        ("Model metrics", False),
        ("System metrics", False),
    ]
    charts = view["compareRunCharts"]
    assert {c["metricSectionId"] for c in charts} == {sections[0]["uuid"]}
    assert [(c["type"], c.get("metricKey")) for c in charts] == [
        ("LINE", "val_auc"),  # the objective per epoch, every trial
        *[("PARALLEL", None)] * 3,
        ("BAR", "test_auc"),  # the headline test metric (the catalogue's) and its interval
        ("BAR", "test_auc_ci_low"),
        ("BAR", "test_auc_ci_high"),
    ]
    # Parallel coordinates: the backbone, then each backbone's searched parameters as its trials
    # log them (<backbone>.<name>); not momentum (conditional) nor image_size (fixed).
    parallel = [c["selectedParams"] for c in charts if c["type"] == "PARALLEL"]
    assert parallel == [
        ["backbone"],
        ["tiny_cnn.optimizer", "tiny_cnn.learning_rate"],
        ["resnet50.learning_rate", "resnet50.optimizer", "resnet50.dropout"],
    ]
    assert {m for c in charts if c["type"] == "PARALLEL" for m in c["selectedMetrics"]} == {"value"}


def test_a_deleted_experiment_is_reported_before_any_work(store: dict[str, Any]) -> None:
    from clot_hpo.errors import ConfigError

    client = _client(store)
    client.delete_experiment(client.create_experiment("exp-deleted"))
    with pytest.raises(ConfigError, match="'exp-deleted'.*deleted"):
        _tracker(store, "exp-deleted")


def test_links_open_the_runs_table_of_the_model_training_view(store: dict[str, Any]) -> None:
    from clot_hpo.tracking.store import runs_url
    from clot_hpo.tracking.ui_links import experiment_link, main, study_links

    assert runs_url("http://h:1/", "7") == "http://h:1/#/experiments/7/runs?workflowType=machine_learning"
    _headline_study(store, "exp-links", "maximize")
    exp_id = _client(store).get_experiment_by_name("exp-links").experiment_id
    link = experiment_link(store["uri"], "exp-links", server="http://h:1")
    assert link == (
        f"http://h:1/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        "&viewStateShareKey=clot-hpo&compareRunsMode=CHART"
    )
    assert ("exp-links", link) in study_links(store["uri"], server="http://h:1")
    assert experiment_link(store["uri"], "no-such-experiment") is None
    assert main(["--store", store["uri"], "--experiment", "no-such-experiment"]) == 2


def test_study_and_trial_runs_name_the_code_that_made_them(store: dict[str, Any]) -> None:
    import git  # GitPython, what MLflow reads the commit with (its `git` process is the library's)

    try:
        head = git.Repo(Path(__file__).parent, search_parent_directories=True).head.commit.hexsha
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        pytest.skip("not a git checkout (e.g. an unpacked source archive)")
    tracker = _tracker(store, "exp-source")
    parent = tracker.start_study("study-source")
    trial = tracker.start_trial(0)
    for run_id in (parent, trial):
        commit = _client(store).get_run(run_id).data.tags["mlflow.source.git.commit"]
        assert commit.removesuffix("-dirty") == head
