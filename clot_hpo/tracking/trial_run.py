"""The forwarder: a trial's tracking run, driven from the study process: opened, fed from the spool, closed.

Everything goes through the study's upload queue (:class:`~clot_hpo.tracking.background.
BackgroundQueue`: one thread, in order), so a trial's uploads overlap the next trial's
training instead of delaying it. The trial process never talks to the tracker: it spools
what it records (:mod:`clot_hpo.tracking.spool`), and :class:`TrialRun` forwards the spool
as the trial goes and once more when it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from clot_hpo.tracking.background import BackgroundQueue
from clot_hpo.tracking.base import Tracker
from clot_hpo.tracking.checkpoint_upload import CheckpointStore
from clot_hpo.tracking.spool import SpoolReader


class TrialRun:
    """One trial's run in the tracker, from the study process.

    Args:
        uploads: the study's upload queue.
        tracker: the study's tracker (opens and closes runs, receives the spool).
        number: the trial's number.
        tags: the run's tags.
        spool: the trial's spool reader (None: the study is not tracked).
        in_use: trial numbers whose runs this worker still closes; ``number`` is in it until
            the run is closed (another worker must not close it as orphaned meanwhile).
        checkpoints: where the trial's checkpoints go besides its folder (the tracking
            server, :mod:`clot_hpo.tracking.checkpoint_upload`); None: nowhere.
        checkpoint_file: the trial's checkpoint file, offered to ``checkpoints`` each time
            it changes.
        on_model: called with the id of the trial's model once the tracker stored it (the
            study process records it in the ledger).
    """

    def __init__(
        self,
        uploads: BackgroundQueue,
        tracker: Tracker,
        number: int,
        *,
        tags: dict[str, str],
        spool: SpoolReader | None,
        in_use: set[int],
        checkpoints: CheckpointStore | None = None,
        checkpoint_file: Path | None = None,
        on_model: Callable[[str], None] | None = None,
    ) -> None:
        self.uploads = uploads
        self.checkpoints = checkpoints if checkpoints is not None and checkpoints.enabled else None
        self.checkpoint_file = checkpoint_file
        self.on_model = on_model
        self._offered: int | None = None  # mtime (ns) of the checkpoint last offered
        self.tracker = tracker
        self.number = number
        self.spool = spool
        self._in_use = in_use
        # Queued, not awaited: the previous trial's uploads may still be running.
        self.run: Future[Any] = uploads.submit(
            f"open the run of trial {number}", tracker.start_trial, number, tags=tags
        )
        in_use.add(number)

    def forward(self) -> None:
        """Queue forwarding what the trial spooled so far (its process spools, then prints).

        A new checkpoint (the trial writes one before it prints an epoch's line) is offered to
        the checkpoint store once the run exists: throttled there, never queued here.
        """
        if self.spool is not None:
            self.uploads.submit(f"log trial {self.number}'s epochs", self._forward)
        if self.checkpoints is not None and self.run.done():
            self._offer_checkpoint()

    def offer_last_checkpoint(self) -> None:
        """Queue offering the trial's last checkpoint (a stopped trial's), once its run exists."""
        if self.checkpoints is not None:
            self.uploads.submit(f"offer trial {self.number}'s last checkpoint", self._offer_checkpoint)

    def _offer_checkpoint(self) -> None:
        run_id = self.run.result()
        if not run_id or self.checkpoints is None or self.checkpoint_file is None:
            return
        try:
            changed = self.checkpoint_file.stat().st_mtime_ns
        except OSError:
            return
        if changed != self._offered:
            self._offered = changed
            self.checkpoints.offer(run_id, self.checkpoint_file)

    def finish(
        self,
        state: str,
        reason: str | None = None,
        attrs: dict[str, Any] | None = None,
        rest: Callable[[], None] | None = None,
    ) -> None:
        """Queue closing the run with ``state``, ``reason`` and ``attrs``.

        First ``rest`` (the trial process's work after its outcome) and the spool's last events.
        """
        self.uploads.submit(
            f"log and close the run of trial {self.number}", self._forward_and_end, state, reason, attrs, rest
        )

    def _forward(self) -> None:
        run_id = self.run.result()  # resolved: the queue runs in order
        if run_id and self.spool is not None:
            self.spool.forward(self.tracker, run_id, self.on_model)

    def _forward_and_end(
        self,
        state: str,
        reason: str | None,
        attrs: dict[str, Any] | None,
        rest: Callable[[], None] | None,
    ) -> None:
        try:
            if rest is not None:  # the trial process still writes the evaluation into the spool
                rest()
            run_id = self.run.result()
            if not run_id:
                return
            if self.spool is not None:
                self.spool.forward(self.tracker, run_id, self.on_model)
            self.tracker.end_trial(run_id, state, reason=reason, attrs=attrs)
        finally:
            self._in_use.discard(self.number)


__all__ = ["TrialRun"]
