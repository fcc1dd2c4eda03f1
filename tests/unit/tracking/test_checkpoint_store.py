"""Checkpoints through the tracking store: throttled uploads (newest wins) and the download on retry."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from clot_hpo.tracking import NullTracker
from clot_hpo.tracking.background import LatestOnly
from clot_hpo.tracking.checkpoint_upload import (
    MlflowCheckpointStore,
    NullCheckpointStore,
    checkpoint_store_for,
)
from clot_hpo.tracking.mlflow_tracker import MlflowTracker


def test_latest_only_runs_one_call_at_a_time_and_the_newest_waiting_one_wins() -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[int] = []
    dropped: list[int] = []

    def slow(n: int) -> None:
        started.set()
        release.wait(5)
        ran.append(n)

    queue = LatestOnly(on_drop=dropped.append)
    queue.submit("upload 1", slow, 1)
    assert started.wait(5)
    for n in (2, 3, 4):  # arrive while 1 uploads: only the newest waits
        queue.submit(f"upload {n}", slow, n)
    assert queue.pending
    release.set()
    assert queue.flush(5)
    assert ran == [1, 4] and dropped == [2, 3]
    queue.submit("upload 5", slow, 5)
    queue.close(5)
    assert ran == [1, 4, 5]


def test_a_failed_upload_is_logged_and_the_next_one_runs(caplog) -> None:
    def fail() -> None:
        raise OSError("server away")

    queue = LatestOnly()
    queue.submit("upload the checkpoint", fail)
    assert queue.flush(5)
    queue.submit("upload again", time.sleep, 0)
    queue.close(5)
    assert queue.done == 1
    assert "could not upload the checkpoint: OSError: server away" in caplog.text


def test_checkpoint_travels_through_the_tracking_store(tmp_path: Path) -> None:
    tracker = MlflowTracker(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment_name="ckpt",
        artifact_root=str(tmp_path / "artifacts"),
        tries=2,
        backoff_s=0.01,
    )
    tracker.check_available()
    tracker.start_study("ckpt")
    run_id = tracker.start_trial(3)
    store = checkpoint_store_for(tracker)
    assert isinstance(store, MlflowCheckpointStore)
    local = tmp_path / "machine-a" / "checkpoint.npz"
    local.parent.mkdir()
    for epoch in (1, 2):
        local.write_bytes(f"epoch {epoch}".encode())
        store.offer(run_id, local)
    assert store.flush(30)
    local.unlink()  # the trial replaces its file; the upload sent the snapshot it was offered

    fetched = store.download(3, tmp_path / "machine-b", name="checkpoint.npz")
    assert fetched == tmp_path / "machine-b" / "checkpoint.npz"
    assert fetched.read_bytes() == b"epoch 2"
    assert store.download(4, tmp_path / "machine-c", name="checkpoint.npz") is None  # no such trial
    other = tracker.start_trial(5)
    assert store.download(5, tmp_path / "machine-c", name="checkpoint.npz", run_id=other) is None
    store.close()
    tracker.end_study()


def test_no_tracking_keeps_checkpoints_local(tmp_path: Path) -> None:
    store = checkpoint_store_for(NullTracker())
    assert isinstance(store, NullCheckpointStore) and not store.enabled
    store.offer("run", tmp_path / "x")
    assert store.download(1, tmp_path, name="checkpoint.npz") is None
