"""A trial's checkpoint on the tracking server, so that a retry on another machine finds it.

The trial process writes its checkpoint (:mod:`clot_hpo.checkpoint_file`) into the trial's folder
after every epoch; the study process offers each new one to :meth:`CheckpointStore.offer`,
which uploads it as the artifact ``checkpoint/checkpoint.npz`` of the trial's run. Uploads are
throttled: at most one in flight, and a newer checkpoint replaces one still waiting (a slow
server then skips epochs, never falls behind). Each upload sends a snapshot, copied when it
was offered, so the trial can replace its file meanwhile.

Before a retried trial starts, the study process looks for the checkpoint of the trial it
retries in the local trial folders; when another machine ran that trial, :meth:`download`
fetches it from the run of that trial.

:class:`NullCheckpointStore` does nothing (no tracking, or a local-only study).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from clot_hpo.tracking.background import LatestOnly
from clot_hpo.tracking.tags import TAG_PARENT, TAG_TRIAL_NUMBER

log = logging.getLogger("clot_hpo.tracking")

ARTIFACT_DIR = "checkpoint"


class CheckpointStore(ABC):
    """Where trial checkpoints go besides the trial's own folder."""

    enabled: bool = True

    @abstractmethod
    def offer(self, run_id: str, file: Path) -> None:
        """Upload ``file`` (a snapshot of it, now) as the checkpoint of run ``run_id``, throttled."""

    @abstractmethod
    def download(self, trial_number: int, dest: Path, *, name: str, run_id: str | None = None) -> Path | None:
        """Fetch trial ``trial_number``'s checkpoint file ``name`` into folder ``dest``; None if none."""

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the uploads in flight; False when ``timeout`` ran out first."""
        return True

    def close(self, timeout: float | None = None) -> None:
        """Finish the uploads in flight (up to ``timeout``)."""
        return None


class NullCheckpointStore(CheckpointStore):
    """Keeps checkpoints in the trial folders only."""

    enabled = False

    def offer(self, run_id: str, file: Path) -> None:  # noqa: D102
        return None

    def download(  # noqa: D102
        self, trial_number: int, dest: Path, *, name: str, run_id: str | None = None
    ) -> Path | None:
        return None


class MlflowCheckpointStore(CheckpointStore):
    """Checkpoints as artifacts of the trial runs of an MLflow tracker.

    Args:
        tracker: the study process's :class:`~clot_hpo.tracking.mlflow_tracker.MlflowTracker`
            (its client, retries and experiment).
    """

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self._snapshots = Path(tempfile.mkdtemp(prefix="clot-hpo-checkpoints-"))
        self._uploads = LatestOnly("clot-hpo-checkpoint", on_drop=self._discard)
        self.uploaded: list[tuple[str, int]] = []  # (run id, snapshot number), for tests and logs
        self._count = 0

    def offer(self, run_id: str, file: Path) -> None:
        """Snapshot ``file`` now and upload it after the upload in flight (newest wins)."""
        if not run_id or not file.is_file():
            return
        self._count += 1
        snapshot = self._snapshots / f"{self._count}" / file.name
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(file, snapshot)
        except OSError as exc:  # the trial replaced or removed it meanwhile: the next one comes
            log.debug("tracking: no snapshot of %s: %s", file, exc)
            return
        self._uploads.submit(f"upload the checkpoint of run {run_id}", self._upload, run_id, snapshot)

    def _upload(self, run_id: str, snapshot: Path) -> None:
        try:
            self.tracker._call(
                "upload the checkpoint",
                self.tracker.client.log_artifact,
                run_id,
                str(snapshot),
                ARTIFACT_DIR,
            )
            self.uploaded.append((run_id, int(snapshot.parent.name)))
        finally:
            self._discard(run_id, snapshot)

    @staticmethod
    def _discard(run_id: str, snapshot: Path) -> None:
        shutil.rmtree(snapshot.parent, ignore_errors=True)

    def find_run(self, trial_number: int) -> str | None:
        """The newest run of trial ``trial_number`` in this study's experiment, if any."""
        exp_id = self.tracker._call("find the experiment", self.tracker._get_or_create_experiment)
        if exp_id is None:
            return None
        conditions = [f"tags.`{TAG_TRIAL_NUMBER}` = '{int(trial_number)}'"]
        parent = getattr(self.tracker, "parent_run_id", None)
        if parent:
            conditions.append(f"tags.`{TAG_PARENT}` = '{parent}'")
        runs = self.tracker._call(
            f"find the run of trial {trial_number}",
            self.tracker.client.search_runs,
            [exp_id],
            filter_string=" and ".join(conditions),
            max_results=1,
            order_by=["attributes.start_time DESC"],
            default=[],
        )
        return str(runs[0].info.run_id) if runs else None

    def download(self, trial_number: int, dest: Path, *, name: str, run_id: str | None = None) -> Path | None:
        """Fetch checkpoint ``name`` of trial ``trial_number`` (of ``run_id`` if known) into ``dest``."""
        run_id = run_id or self.find_run(trial_number)
        if not run_id:
            return None
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            try:
                # One attempt: a run without a checkpoint answers "not found", and retrying it
                # for a minute would delay the trial for nothing.
                local = self.tracker.client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{name}", tmp)
            except Exception as exc:  # noqa: BLE001 - no checkpoint there: the trial starts from scratch
                log.info(
                    "tracking: no checkpoint of trial %d on the server (%s)", trial_number, type(exc).__name__
                )
                return None
            target = dest / name
            Path(local).replace(target)
        return target

    def flush(self, timeout: float | None = None) -> bool:  # noqa: D102
        return self._uploads.flush(timeout)

    def close(self, timeout: float | None = None) -> None:  # noqa: D102
        self._uploads.close(timeout)
        shutil.rmtree(self._snapshots, ignore_errors=True)


def checkpoint_store_for(tracker: Any) -> CheckpointStore:
    """The checkpoint store of a study's tracker: MLflow artifacts, or nothing."""
    if getattr(tracker, "enabled", False) and hasattr(tracker, "client") and hasattr(tracker, "_call"):
        return MlflowCheckpointStore(tracker)
    return NullCheckpointStore()


__all__ = [
    "ARTIFACT_DIR",
    "CheckpointStore",
    "MlflowCheckpointStore",
    "NullCheckpointStore",
    "checkpoint_store_for",
]
