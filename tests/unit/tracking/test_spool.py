"""The trial process's spool and its forwarding by the study process."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from clot_hpo.tracking.base import StudyTracker, TrialTracker  # noqa: E402
from clot_hpo.tracking.spool import EVENTS_FILE, MODEL_FILE, SpoolReader, SpoolTracker  # noqa: E402


class RecordingTracker(TrialTracker):
    """Keeps every trial-process call it receives, in order."""

    enabled = True

    def __init__(self, store_models: bool = True) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.store_models = store_models

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self.calls.append(("params", (run_id, params)))

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        self.calls.append(("epoch", (run_id, epoch, metrics)))

    def log_evaluation(self, run_id: str, **kwargs: Any) -> None:
        self.calls.append(("evaluation", (run_id, kwargs)))

    def log_model(self, run_id: str, model: Any, **kwargs: Any) -> bool:
        self.calls.append(("model", (run_id, Path(model), kwargs)))
        return self.store_models


class FakeModel:
    """What SpoolTracker needs of a Keras model: ``save(path)``."""

    def save(self, path: Path) -> None:
        Path(path).write_bytes(b"weights")


def test_events_are_forwarded_in_order_and_only_once(tmp_path: Path) -> None:
    spool, tracker = SpoolTracker(tmp_path / "s"), RecordingTracker()
    reader = SpoolReader(spool.folder)
    spool.log_params("", {"lr": 0.001, "backbone": "tiny_cnn"})
    spool.log_epoch("", 0, {"loss": 0.7, "val_auc": float("nan")})
    assert reader.forward(tracker, "run-1") == 2
    assert reader.forward(tracker, "run-1") == 0, "nothing new: nothing sent twice"
    spool.log_epoch("", 1, {"loss": 0.6, "val_auc": 0.8})
    assert reader.forward(tracker, "run-1") == 1
    kinds = [kind for kind, _ in tracker.calls]
    assert kinds == ["params", "epoch", "epoch"]
    assert tracker.calls[0][1] == ("run-1", {"lr": 0.001, "backbone": "tiny_cnn"})
    assert math.isnan(tracker.calls[1][1][2]["val_auc"]), "a diverged metric is information: kept"
    assert tracker.calls[2][1][1:] == (1, {"loss": 0.6, "val_auc": 0.8})


def test_a_line_still_being_written_waits(tmp_path: Path) -> None:
    spool, tracker = SpoolTracker(tmp_path / "s"), RecordingTracker()
    spool.log_epoch("", 0, {"loss": 0.5})
    with open(spool.folder / EVENTS_FILE, "a", encoding="utf-8") as fh:
        fh.write('{"event": "epoch", "epoch": 1, "metr')  # the writer was killed mid-line
    reader = SpoolReader(spool.folder)
    assert reader.forward(tracker, "r") == 1
    with open(spool.folder / EVENTS_FILE, "a", encoding="utf-8") as fh:
        fh.write('ics": {"loss": 0.4}}\n')
    assert reader.forward(tracker, "r") == 1
    assert [c[1][1] for c in tracker.calls] == [0, 1]


def test_missing_spool_forwards_nothing(tmp_path: Path) -> None:
    assert SpoolReader(tmp_path / "never-written").forward(RecordingTracker(), "r") == 0


def test_figures_travel_pickled_and_are_closed_on_both_sides(tmp_path: Path) -> None:
    spool, tracker = SpoolTracker(tmp_path / "s"), RecordingTracker()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="chance")
    spool.log_evaluation(
        "",
        metrics={"val_auc": 0.9},
        artifacts={"confusion_matrix.json": {"tp": 3}},
        figures={"roc_curve.png": fig},
    )
    assert not plt.fignum_exists(fig.number), "the trial process keeps no figure open"
    SpoolReader(spool.folder).forward(tracker, "r")
    [(kind, (run_id, kwargs))] = tracker.calls
    assert kind == "evaluation" and kwargs["metrics"] == {"val_auc": 0.9}
    assert kwargs["artifacts"] == {"confusion_matrix.json": {"tp": 3}}
    [(name, received)] = kwargs["figures"].items()
    assert name == "roc_curve.png"
    assert [line.get_label() for line in received.axes[0].get_lines()] == ["chance"]
    assert not list(spool.folder.glob("figures.*.pkl")), "forwarded figures are not kept twice"


def test_an_evaluation_without_figures(tmp_path: Path) -> None:
    spool, tracker = SpoolTracker(tmp_path / "s"), RecordingTracker()
    spool.log_evaluation("", metrics={"val_auc": 0.5}, artifacts={}, figures={})
    SpoolReader(spool.folder).forward(tracker, "r")
    assert tracker.calls[0][1][1]["figures"] == {}


@pytest.mark.parametrize("stored", [True, False])
def test_model_file_is_removed_only_once_stored(tmp_path: Path, stored: bool) -> None:
    spool, tracker = SpoolTracker(tmp_path / "s"), RecordingTracker(store_models=stored)
    assert spool.log_model("", FakeModel(), image_size=48, threshold=0.41)
    SpoolReader(spool.folder).forward(tracker, "r")
    [(kind, (run_id, path, kwargs))] = tracker.calls
    assert kind == "model" and path.name == MODEL_FILE and kwargs == {"image_size": 48, "threshold": 0.41}
    # Nothing computed is lost: a model the tracker could not store stays on disk.
    assert (spool.folder / MODEL_FILE).exists() is not stored
    assert not list(spool.folder.glob("*.partial*"))


def test_the_spool_is_a_trial_tracker_only() -> None:
    # The trial process records; opening and closing runs is the study process's job, so the
    # spool has no study-side methods at all (it used to inherit NullTracker's no-ops).
    assert issubclass(SpoolTracker, TrialTracker) and not issubclass(SpoolTracker, StudyTracker)
    assert not any(
        hasattr(SpoolTracker, name) for name in ("start_study", "start_trial", "end_trial", "end_study")
    )
