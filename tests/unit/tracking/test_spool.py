"""The trial process's spool and its forwarding by the study process."""

from __future__ import annotations

import logging
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

    def log_model(self, run_id: str, model: Any, **kwargs: Any) -> str | None:
        self.calls.append(("model", (run_id, Path(model), kwargs)))
        return "m-stored" if self.store_models else None


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


def test_figures_travel_as_png_files_not_pickles(tmp_path: Path) -> None:
    # Finding (issue 12, item 5): figures travelled pickled, and the study process unpickled
    # whatever the spool folder held. Now they are PNG files, the figure closed on the writer's side.
    spool, tracker = SpoolTracker(tmp_path / "s"), RecordingTracker()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="chance")
    spool.log_evaluation(
        "",
        metrics={"val_auc": 0.9},
        artifacts={"confusion_matrix.json": {"tp": 3}},
        figures={"roc_curve.png": fig, "explanations/false_positives": ax},
    )
    assert not plt.fignum_exists(fig.number), "the trial process keeps no figure open"
    assert not list(spool.folder.glob("*.pkl")), "nothing is pickled"
    SpoolReader(spool.folder).forward(tracker, "r")
    [(kind, (run_id, kwargs))] = tracker.calls
    assert kind == "evaluation" and kwargs["metrics"] == {"val_auc": 0.9}
    assert kwargs["artifacts"] == {"confusion_matrix.json": {"tp": 3}}
    figures = kwargs["figures"]
    assert sorted(figures) == ["explanations/false_positives", "roc_curve.png"]
    for path in figures.values():
        assert isinstance(path, Path) and path.parent == spool.folder
    assert not list(spool.folder.glob("*.png")), "forwarded figures are not kept twice"


def test_a_pickled_figures_file_is_never_loaded(tmp_path: Path) -> None:
    # The old event format: a pickle whose loading would run code (it would write `pwned`).
    import pickle

    folder = tmp_path / "s"
    folder.mkdir()

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path(tmp_path / "pwned").write_text, ("ran",))

    (folder / "figures.0.pkl").write_bytes(pickle.dumps({"roc.png": Payload()}))
    _write_events(
        folder, {"event": "evaluation", "metrics": {}, "artifacts": {}, "figures_file": "figures.0.pkl"}
    )
    tracker = RecordingTracker()
    SpoolReader(folder).forward(tracker, "r")
    assert not (tmp_path / "pwned").exists(), "the spool reader unpickled a file"
    assert tracker.calls[0][1][1]["figures"] == {}


def _write_events(folder: Path, *events: dict[str, Any]) -> None:
    import json

    with open(folder / EVENTS_FILE, "a", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event) + "\n")


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "subfolder", "symlink"])
def test_files_outside_the_spool_folder_are_refused(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Finding (item 5): a spool event's `file` was joined to the folder as given, so an
    # absolute path or `..` uploaded a file from elsewhere as model.keras, then deleted it.
    outside = tmp_path / "secret.keras"
    outside.write_bytes(b"not yours")
    folder = tmp_path / "trial" / "spool"
    folder.mkdir(parents=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "model.keras").write_bytes(b"nested")
    name = {
        "absolute": str(outside),
        "dotdot": "../../secret.keras",
        "subfolder": "sub/model.keras",
        "symlink": "link.keras",
    }[kind]
    if kind == "symlink":
        (folder / "link.keras").symlink_to(outside)
    _write_events(folder, {"event": "model", "file": name, "image_size": 32, "threshold": 0.5})
    tracker = RecordingTracker()
    with caplog.at_level(logging.ERROR, logger="clot_hpo.tracking"):
        assert SpoolReader(folder).forward(tracker, "r") == 1
    assert tracker.calls == [], f"{name!r} was forwarded"
    assert outside.read_bytes() == b"not yours", "the file outside the spool was touched"
    assert any("refused" in r.getMessage() for r in caplog.records)


def test_a_symlinked_events_file_is_not_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text('{"event": "params", "params": {"from": "outside"}}\n')
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / EVENTS_FILE).symlink_to(elsewhere)
    tracker = RecordingTracker()
    with caplog.at_level(logging.ERROR, logger="clot_hpo.tracking"):
        assert SpoolReader(folder).forward(tracker, "r") == 0
        assert SpoolReader(folder).forward(tracker, "r") == 0
    assert tracker.calls == [] and any("refused" in r.getMessage() for r in caplog.records)


def test_a_missing_model_file_is_an_error_not_a_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    _write_events(folder, {"event": "model", "file": MODEL_FILE, "image_size": 32, "threshold": 0.5})
    tracker = RecordingTracker()
    with caplog.at_level(logging.ERROR, logger="clot_hpo.tracking"):
        SpoolReader(folder).forward(tracker, "r")
    assert tracker.calls == []
    assert any("missing" in r.getMessage() for r in caplog.records)


def test_each_trial_and_attempt_spools_into_a_fresh_folder(tmp_path: Path) -> None:
    # Finding (item 5): a study name reused with fresh stores replayed the old trial 0's spool
    # (`trials/0000/tracking/`) into the new trial 0's run.
    trial_dir = tmp_path / "trials" / "0000"
    old = trial_dir / "tracking"
    old.mkdir(parents=True)
    _write_events(old, {"event": "params", "params": {"from": "an older study"}})
    first = SpoolReader.fresh(trial_dir)
    second = SpoolReader.fresh(trial_dir)
    assert first.folder != second.folder and first.folder != old
    assert not any(first.folder.iterdir()), "a fresh folder starts empty"
    tracker = RecordingTracker()
    assert first.forward(tracker, "r") == 0, "nothing of the older study is replayed"
    SpoolTracker(first.folder).log_params("", {"attempt": 0})
    retry = first.new_attempt()
    assert retry not in (first.folders[0], old) and not any(retry.iterdir())
    SpoolTracker(retry).log_params("", {"attempt": 1})
    assert first.forward(tracker, "r") == 2
    assert [c[1][1] for c in tracker.calls] == [{"attempt": 0}, {"attempt": 1}]


def test_an_evaluation_without_figures(tmp_path: Path) -> None:
    spool, tracker = SpoolTracker(tmp_path / "s"), RecordingTracker()
    spool.log_evaluation("", metrics={"val_auc": 0.5}, artifacts={}, figures={})
    SpoolReader(spool.folder).forward(tracker, "r")
    assert tracker.calls[0][1][1]["figures"] == {}


def test_the_evaluation_and_the_model_go_one_step_past_the_last_epoch_of_every_attempt(
    tmp_path: Path,
) -> None:
    # The epochs log val_auc too: the evaluation must be the run's latest value of it, also
    # when the epochs came from an earlier attempt (the OOM retry) or an earlier forward.
    tracker = RecordingTracker()
    reader = SpoolReader.fresh(tmp_path / "trial")
    first = SpoolTracker(reader.folder)
    for epoch in range(2):
        first.log_epoch("", epoch, {"val_auc": 0.6})
    reader.forward(tracker, "r")
    retry = SpoolTracker(reader.new_attempt())
    retry.log_epoch("", 2, {"val_auc": 0.65})
    retry.log_evaluation("", metrics={"val_auc": 0.7}, artifacts={}, figures={})
    retry.log_model("", FakeModel(), image_size=48, threshold=0.5)
    reader.forward(tracker, "r")
    steps = {kind: call[-1]["step"] for kind, call in tracker.calls if kind in ("evaluation", "model")}
    assert steps == {"evaluation": 3, "model": 3}


@pytest.mark.parametrize("stored", [True, False])
def test_model_file_is_removed_only_once_stored(tmp_path: Path, stored: bool) -> None:
    spool, tracker = SpoolTracker(tmp_path / "s"), RecordingTracker(store_models=stored)
    dicom = {"window": [300.0, 600.0], "frame": 0}
    assert spool.log_model("", FakeModel(), image_size=48, threshold=0.41, dicom=dicom) == MODEL_FILE
    model_ids: list[str] = []
    SpoolReader(spool.folder).forward(tracker, "r", on_model=model_ids.append)
    [(kind, (run_id, path, kwargs))] = tracker.calls
    assert model_ids == (["m-stored"] if stored else []), "the stored model's id is handed on"
    assert kind == "model" and path.name == MODEL_FILE
    assert kwargs == {"image_size": 48, "threshold": 0.41, "step": 0, "dicom": dicom}
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
