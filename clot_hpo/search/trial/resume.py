"""Preemptible workers: resuming a retried trial from its checkpoint, and stopping on SIGTERM.

A trial checkpoints after every epoch (:mod:`clot_hpo.checkpoint_file`). When it is retried, the
retry starts from the newest checkpoint of the trials it retries:

* **Lineage.** Optuna re-queues a dead trial's parameters as a new WAITING trial
  (``RetryHeartbeatStaleTrialCallback``), whose system attributes list the trials it retries
  (``retry_history``, oldest first). :func:`find_checkpoint` looks for their checkpoints in the
  local trial folders, newest epoch first, and, when another machine ran them, downloads the
  newest from the tracking server (:mod:`clot_hpo.tracking.checkpoint_upload`).
* **Verification.** The tracking server is a mirror others write to; the Optuna storage is the
  ledger (:mod:`clot_hpo.search.ledger`). A checkpoint is used only if its sha256 is one its
  trial recorded, for the epoch its header says; its header names the study, the trial and
  the seed of the lineage; its epoch is within the trial's epochs; and its history of the
  objective equals the values the trial reported to Optuna (:func:`checkpoint_refusal`). The
  trial process checks the parameters and reports the ledger's values, never the file's.
  A refused checkpoint is said in one line; the retry takes the next one, or starts over.
* **Preemption.** SIGTERM to a worker (:class:`GracefulStop`) is forwarded to its trial
  process (:class:`TrialPreemption`), which finishes the epoch it is in and its checkpoint
  within ``search.preemption_grace_s``, then stops. The worker marks the trial FAIL with the
  user attribute ``preempted`` and queues its retry at once (:func:`requeue`), so the next
  worker resumes it without waiting out the heartbeat's grace period; then it exits with
  :data:`~clot_hpo.errors.EXIT_PREEMPTED` (75).
* **Budget.** A resumed trial records the epoch it resumed from (``resumed_from_epoch``);
  :func:`epochs_spent` counts only the epochs each trial trained itself, so the epochs a retry
  took over from its checkpoint are not counted twice against ``search.max_total_epochs``.
  :func:`too_many_resumes` fails a trial resumed more than ``search.max_resumes`` times.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from clot_hpo.checkpoint_file import CHECKPOINT_FILE, read_header
from clot_hpo.errors import TrialFailed
from clot_hpo.search.ledger import (
    ATTR_CHECKPOINTS,
    ATTR_RUN_ID,
    OUTPUT_ATTRS,
    LedgerEntry,
    entry_of,
    recorded_checkpoints,
)
from clot_hpo.search.workers import WORKER_ATTR
from clot_hpo.util import file_sha256

if TYPE_CHECKING:
    from clot_hpo.tracking.checkpoint_upload import CheckpointStore

log = logging.getLogger("clot_hpo.search")

PREEMPTED_ATTR = "preempted"
"""Trial user attribute: the trial stopped because its worker was told to (SIGTERM)."""
RESUMED_FROM_ATTR = "resumed_from_epoch"
"""Trial user attribute: epochs the trial took over from a checkpoint (0: from scratch)."""
RESUMED_TRIAL_ATTR = "resumed_from_trial"
"""Trial user attribute: the trial whose checkpoint it resumed."""
TAG_RESUMED_FROM = "clot_hpo.resumed_from_epoch"
"""Tag of a resumed trial's MLflow run: the epoch it resumed from."""


def lineage(trial: optuna.trial.FrozenTrial) -> list[int]:
    """The numbers of the trials ``trial`` retries, oldest first (empty: not a retry)."""
    with warnings.catch_warnings():  # experimental since Optuna 3.0, unchanged since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return [int(n) for n in RetryHeartbeatStaleTrialCallback.retry_history(trial)]


@dataclass(frozen=True)
class ResumePoint:
    """Where a retried trial resumes: the checkpoint file and the epochs it holds."""

    trial: int
    path: Path
    epoch: int
    downloaded: bool = False


# Why a checkpoint is refused (None: it may be used), given the point and its header.
Verifier = Callable[[ResumePoint, dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class CheckpointRules:
    """What a retry's checkpoint must agree with, besides its trial's ledger entry.

    Attributes:
        study: the study's name.
        seed: the study's seed (a trial trains with ``seed + the lineage's first number``).
        epochs: ``training.epochs``: no checkpoint holds more.
        history_key: the objective's key in the training history (the values reported).
    """

    study: str
    seed: int
    epochs: int
    history_key: str


def checkpoint_refusal(
    point: ResumePoint,
    header: dict[str, Any],
    *,
    sha256: str,
    source: LedgerEntry,
    lineage_first: int,
    rules: CheckpointRules,
) -> str | None:
    """Why the checkpoint at ``point`` must not be used, in a few words; None when it may.

    Args:
        point: the checkpoint (its trial and file).
        header: its header (:func:`~clot_hpo.checkpoint_file.read_header`).
        sha256: the file's sha256.
        source: the ledger entry of the trial that wrote it (``point.trial``).
        lineage_first: the first trial of the retry's lineage (whose seed it keeps).
        rules: the study's facts.
    """
    epoch = header.get("epoch")
    raw_meta = header.get("meta")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    number, key = source.number, rules.history_key
    recorded = [e for e, digest in source.checkpoints.items() if digest == sha256]
    if not recorded:
        return f"its sha256 {sha256[:12]}… is not one trial {source.number} recorded in the Optuna storage"
    if recorded != [epoch]:
        return (
            f"its header says epoch {epoch!r}, but trial {number} recorded this file at epoch {recorded[0]}"
        )
    expected = {"study": rules.study, "trial": source.number, "seed": rules.seed + lineage_first}
    for fact, want in expected.items():
        if meta.get(fact) != want:
            return f"its header names {fact} {meta.get(fact)!r}, but the lineage's is {want!r}"
    if not isinstance(epoch, int) or not 1 <= epoch <= rules.epochs:
        return f"its epoch {epoch!r} is not within the trial's 1..{rules.epochs} epochs"
    history = (header.get("history") or {}).get(rules.history_key)
    if not isinstance(history, list) or len(history) < epoch:
        return f"its history of {key} does not cover its {epoch} epochs"
    # A trial killed between writing an epoch's checkpoint and reporting the epoch leaves
    # the last epochs unreported: only a tail may be missing, and the file's sha256 is recorded.
    reported = [source.intermediate_values.get(e) for e in range(epoch)]
    known = len(reported) - next(
        (i for i, v in enumerate(reversed(reported)) if v is not None), len(reported)
    )
    if any(v is None for v in reported[:known]):
        return f"the values trial {number} reported to Optuna have a gap before epoch {known}"
    if [float(v) for v in history[:known]] != reported[:known]:
        return f"its history of {key} differs from the values trial {number} reported to Optuna"
    return None


def _local_candidates(
    numbers: Iterable[int], trial_dir: Callable[[int], Path], verify: Verifier | None, refused: list[str]
) -> list[ResumePoint]:
    found = []
    for number in numbers:
        path = trial_dir(number) / CHECKPOINT_FILE
        header = read_header(path) if path.is_file() else None
        if header is not None:
            point = ResumePoint(number, path, int(header["epoch"]))
            why = verify(point, header) if verify is not None else None
            if why is None:
                found.append(point)
            else:
                refused.append(f"the local checkpoint of trial {number} was refused: {why}")
        elif path.is_file():
            log.warning("checkpoint %s cannot be read; skipped", path)
    return found


def find_checkpoint(
    trial: optuna.trial.FrozenTrial,
    *,
    trial_dir: Callable[[int], Path],
    download: Callable[[int, Path], Path | None] | None = None,
    dest: Path | None = None,
    verify: Verifier | None = None,
    refused: list[str] | None = None,
) -> ResumePoint | None:
    """The newest verified checkpoint among the trials ``trial`` retries, local first, then downloaded.

    Args:
        trial: the retry (its ``retry_history`` names the trials it retries).
        trial_dir: the local folder of a trial number.
        download: fetches a trial's checkpoint into a folder (the tracking server), or None.
        dest: where a downloaded checkpoint goes (the retry's own folder).
        verify: why a checkpoint must not be used (None: it may); None checks nothing.
        refused: receives one line per refused checkpoint.
    """
    refused = [] if refused is None else refused
    numbers = lineage(trial)
    if not numbers:
        return None
    local = _local_candidates(numbers, trial_dir, verify, refused)
    if local:
        return max(local, key=lambda p: (p.epoch, p.trial))
    if download is None or dest is None:
        return None
    for number in reversed(numbers):  # the newest retry got furthest
        path = download(number, dest / f"from-{number:04d}")
        header = read_header(path) if path is not None else None
        if path is not None and header is not None:
            point = ResumePoint(number, path, int(header["epoch"]), downloaded=True)
            why = verify(point, header) if verify is not None else None
            if why is None:
                return point
            refused.append(
                f"the checkpoint of trial {number} downloaded from the tracking server was refused: {why}"
            )
            path.unlink(missing_ok=True)
            continue
        if path is not None:
            log.warning(
                "the checkpoint of trial %d downloaded from the tracking server cannot be read", number
            )
    return None


def too_many_resumes(trial: optuna.trial.FrozenTrial, max_resumes: int) -> str | None:
    """Why ``trial`` must not run again (resumed more than ``max_resumes`` times), or None."""
    before = lineage(trial)
    if len(before) <= max_resumes:
        return None
    return (
        f"retried {len(before)} times (trials {', '.join(map(str, before))}), more than "
        f"search.max_resumes={max_resumes}: the trial keeps dying, see their fail reasons"
    )


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue ``trial``'s parameters again at once, as Optuna does for a dead trial's.

    The copy carries ``retry_history``, so it resumes from ``trial``'s checkpoint; how often a
    trial may come back is :func:`too_many_resumes`' to decide, not the callback's.
    """
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)


def epochs_spent(trials: Iterable[optuna.trial.FrozenTrial]) -> int:
    """Epochs trained over ``trials``, each epoch once.

    A retry inherits its original's user attributes (``epochs_run`` among them) while it
    waits, and a resumed trial's ``epochs_run`` includes the epochs it took over from the
    checkpoint: neither is counted again. A trial killed after its checkpoint of epoch k was
    recorded but before it said ``epochs_run=k`` trained epoch k all the same (its retry
    resumes there), so its newest recorded checkpoint counts too.
    """
    total = 0
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        checkpointed = max(recorded_checkpoints(t.user_attrs), default=0)
        run = max(int(t.user_attrs.get("epochs_run", 0) or 0), checkpointed)
        resumed = int(t.user_attrs.get(RESUMED_FROM_ATTR, 0) or 0)
        total += max(0, run - resumed)
    return total


class GracefulStop:
    """The study process's SIGTERM: stop after the running trial has checkpointed.

    While installed, SIGTERM sets :attr:`requested` and is passed on to the trial process
    named by :meth:`watch`; the study loop checks :attr:`requested` between trials. A second
    SIGTERM is passed on as well (the trial process then stops at once).
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self.at: float | None = None
        self._pid: int | None = None
        self._previous: Any = None

    def install(self) -> GracefulStop:
        """Handle SIGTERM from now on (main thread only); :meth:`uninstall` restores the old handler."""
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the handler that was there before :meth:`install`."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def watch(self, pid: int | None) -> None:
        """The trial process to pass SIGTERM on to (None: no trial runs)."""
        self._pid = pid
        if pid is not None and self.requested:
            self._forward()

    def _forward(self) -> None:
        if self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGTERM)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = signal.Signals(signum).name
        self.at = self.at or time.monotonic()
        self._forward()


class PreemptedStop(Exception):
    """Raised in the trial process after the checkpoint of the epoch that saw SIGTERM."""


class TrialPreemption:
    """The trial process's SIGTERM: finish the epoch and its checkpoint, within a grace time.

    Before :meth:`arm` (no checkpoint to finish: starting up, evaluating) SIGTERM interrupts
    at once, as SIGINT does (``interrupt``). Armed, it sets :attr:`requested`; the epoch's end
    calls :meth:`check` after the checkpoint is written, which raises :class:`PreemptedStop`.
    If the epoch does not end within ``grace_s`` (less a margin for the outcome and the
    process's exit), ``interrupt`` runs anyway: the previous epoch's checkpoint stands.

    Args:
        grace_s: ``search.preemption_grace_s``.
        interrupt: what stops the process at once (raises ``KeyboardInterrupt``).
    """

    # Seconds of the grace kept for writing the outcome and exiting.
    MARGIN_S = 3.0

    def __init__(self, grace_s: float, interrupt: Callable[[int, object], None]) -> None:
        self.grace_s = float(grace_s)
        self.interrupt = interrupt
        self.armed = False
        self.requested: str | None = None
        self.epoch_started_at: float | None = None

    def arm(self) -> None:
        """From now on, SIGTERM waits for the epoch's checkpoint."""
        self.armed = True

    def disarm(self) -> None:
        """SIGTERM interrupts at once again (training is over); a pending alarm is cancelled."""
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def handle(self, signum: int, frame: object) -> None:
        """The SIGTERM handler."""
        if not self.armed or self.requested:
            self.interrupt(signum, frame)
            return
        self.requested = signal.Signals(signum).name
        signal.signal(signal.SIGALRM, self._too_late)
        signal.setitimer(signal.ITIMER_REAL, max(0.1, self.grace_s - self.MARGIN_S))

    def _too_late(self, signum: int, frame: object) -> None:
        self.armed = False
        self.interrupt(signal.SIGTERM, frame)

    def check(self, epochs_done: int) -> None:
        """After an epoch's checkpoint: stop here when SIGTERM came."""
        if self.requested and self.armed:
            self.disarm()
            raise PreemptedStop(f"preempted ({self.requested}) after epoch {epochs_done}, checkpointed")


class Resumer:
    """The study process's side of resuming: where a retry starts, what its task says, what stays.

    Args:
        search: the config's ``search`` section (``resume``, ``max_resumes``,
            ``preemption_grace_s``).
        checkpoints: the tracking server's checkpoints (a no-op store when trials stay local).
        trials_root: the study's ``trials/`` folder (one ``NNNN`` folder per trial number).
        console: where the decisions are printed.
    """

    def __init__(
        self,
        search: Any,
        *,
        checkpoints: CheckpointStore,
        trials_root: Path,
        console: Any,
        rules: CheckpointRules | None = None,
    ) -> None:
        self.search = search
        self.checkpoints = checkpoints
        self.trials_root = trials_root
        self.console = console
        self.rules = rules
        self._requeued: set[int] = set()

    def trial_dir(self, number: int) -> Path:
        """The local folder of trial ``number``."""
        return self.trials_root / f"{number:04d}"

    def point(
        self, trial: optuna.Trial, frozen: optuna.trial.FrozenTrial, trials: list[optuna.trial.FrozenTrial]
    ) -> ResumePoint | None:
        """Where a retried trial resumes (None: from scratch); refuse one retried too often.

        A retry inherits its original's user attributes: what describes a run of its own
        (epochs, run id, the resume) starts over here.

        Raises:
            TrialFailed: the trial was retried more than ``search.max_resumes`` times.
        """
        if not lineage(frozen):
            return None
        for key in ("epochs_run", RESUMED_FROM_ATTR, PREEMPTED_ATTR, "fail_reason", *OUTPUT_ATTRS):
            if key in frozen.user_attrs:
                trial.set_user_attr(key, 0 if key in ("epochs_run", RESUMED_FROM_ATTR) else None)
        if frozen.user_attrs.get(ATTR_CHECKPOINTS):
            trial.set_user_attr(ATTR_CHECKPOINTS, {})  # its own checkpoints, not its original's
        too_many = too_many_resumes(frozen, self.search.max_resumes)
        if too_many is not None:
            trial.set_user_attr("fail_reason", too_many)
            self.console.print(f"  [red]trial {trial.number} not resumed:[/] {too_many}")
            raise TrialFailed(too_many)
        if not self.search.resume:
            return None

        def download(number: int, dest: Path) -> Path | None:
            run_id = trials[number].user_attrs.get(ATTR_RUN_ID) if number < len(trials) else None
            return self.checkpoints.download(number, dest, name=CHECKPOINT_FILE, run_id=run_id)

        chain = lineage(frozen)
        refused: list[str] = []
        point = find_checkpoint(
            frozen,
            trial_dir=self.trial_dir,
            download=download if self.checkpoints.enabled else None,
            dest=self.trial_dir(trial.number) / "resume",
            verify=self._verifier(trial.study.study_name, trials, chain[0]),
            refused=refused,
        )
        for line in refused:
            self.console.print(f"  [yellow]trial {trial.number}:[/] {line}")
        if point is None:
            why = "every checkpoint was refused" if refused else "no checkpoint"
            self.console.print(f"  trial {trial.number} retries trial {chain[-1]} from scratch ({why})")
            return None
        trial.set_user_attr(RESUMED_FROM_ATTR, point.epoch)
        trial.set_user_attr(RESUMED_TRIAL_ATTR, point.trial)
        trial.set_user_attr("epochs_run", point.epoch)
        where = "downloaded from the tracking server" if point.downloaded else "local"
        self.console.print(
            f"  trial {trial.number} resumes trial {point.trial} at epoch {point.epoch + 1} "
            f"(checkpoint {where})"
        )
        return point

    def _verifier(self, study: str, trials: list[optuna.trial.FrozenTrial], first: int) -> Verifier | None:
        """Checks a checkpoint against the ledger entry of the trial that wrote it."""
        rules = self.rules
        if rules is None:
            return None

        def verify(point: ResumePoint, header: dict[str, Any]) -> str | None:
            if point.trial >= len(trials):
                return f"the Optuna storage has no trial {point.trial}"
            source = entry_of(study, trials[point.trial])
            return checkpoint_refusal(
                point, header, sha256=file_sha256(point.path), source=source, lineage_first=first, rules=rules
            )

        return verify

    def prepare(
        self, task: Any, frozen: optuna.trial.FrozenTrial, point: ResumePoint | None, *, epochs_left: int
    ) -> None:
        """Tell the trial's task where to checkpoint, which seed to keep and where to resume.

        ``epochs_left`` is the study's epoch budget left: the checkpoint's epochs are spent.
        """
        if self.search.resume:
            task.checkpoint_path = str(self.trial_dir(task.trial_number) / CHECKPOINT_FILE)
        task.preemption_grace_s = self.search.preemption_grace_s
        chain = lineage(frozen)
        task.seed_trial = chain[0] if chain else None  # a retry trains with its original's seed
        if point is not None:
            task.resume_from, task.resume_trial = str(point.path), point.trial
            task.max_epochs = min(task.max_epochs, point.epoch + epochs_left)

    def finished(self, number: int, point: ResumePoint | None) -> None:
        """A trial that completed or was pruned has nothing left to resume: drop its checkpoints."""
        (self.trial_dir(number) / CHECKPOINT_FILE).unlink(missing_ok=True)
        if point is not None and point.downloaded:
            point.path.unlink(missing_ok=True)

    def requeue_preempted(
        self, trials: list[optuna.trial.FrozenTrial], study: optuna.Study, worker_id: str
    ) -> str:
        """Queue this worker's preempted trials to resume at once; say which, in a few words."""
        mine = [
            t
            for t in trials
            if t.state == TrialState.FAIL
            and t.user_attrs.get(PREEMPTED_ATTR)
            and t.user_attrs.get(WORKER_ATTR) == worker_id
            and t.number not in self._requeued
        ]
        for trial in mine:
            self._requeued.add(trial.number)
            requeue(study, trial)
        return (
            ", ".join(
                f"trial {t.number} stopped after epoch {t.user_attrs.get('epochs_run', 0)}, queued to resume"
                for t in mine
            )
            or "no trial was running"
        )


__all__ = [
    "CheckpointRules",
    "Resumer",
    "PREEMPTED_ATTR",
    "RESUMED_FROM_ATTR",
    "RESUMED_TRIAL_ATTR",
    "TAG_RESUMED_FROM",
    "GracefulStop",
    "PreemptedStop",
    "ResumePoint",
    "TrialPreemption",
    "checkpoint_refusal",
    "epochs_spent",
    "find_checkpoint",
    "lineage",
    "requeue",
    "too_many_resumes",
]
