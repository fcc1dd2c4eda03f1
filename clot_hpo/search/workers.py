"""A study process among others on one storage: its worker id and the failures it counts.

Several study processes (workers) may run one study: on one machine, or in identical
containers (``docker compose --scale worker=4``). Each records its id on the trials it runs
(:data:`WORKER_ATTR`) and stops after ``search.max_consecutive_failures`` of its *own* trials
failed in a row: another worker's failures say nothing about this one.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable

import optuna
from optuna.trial import TrialState

from clot_hpo.errors import FatalError
from clot_hpo.util import FINISHED_TRIAL_STATES

WORKER_ATTR = "worker_id"
"""Trial user attribute naming the study process (worker) that ran the trial."""

FINISHED = tuple(TrialState[name] for name in sorted(FINISHED_TRIAL_STATES))


def new_worker_id() -> str:
    """A worker id unique across machines and containers: host name, process id, random token.

    The process id alone is not: identical containers (``docker compose --scale worker=4``)
    very likely run their worker under the same PID, and each would count the others'
    failures as its own.
    """
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class ConsecutiveFailures:
    """Counts one worker's failed trials in a row; too many stop its study.

    Args:
        worker_id: the worker's id (:func:`new_worker_id`), as recorded on its trials.
        limit: failures in a row that stop the study (``search.max_consecutive_failures``).
    """

    def __init__(self, worker_id: str, limit: int) -> None:
        self.worker_id = worker_id
        self.limit = limit
        self.count = 0
        self._counted: set[int] = set()  # trial numbers already counted

    def update(self, trials: Iterable[optuna.trial.FrozenTrial]) -> None:
        """Count this worker's trials that finished since the last call.

        By worker and by number, not by position: an enqueued trial (defaults first, a retry)
        was already listed, WAITING, before this worker ran it. A surplus trial (not run: the
        budget was taken meanwhile) is no failure.

        Raises:
            FatalError: ``limit`` of this worker's trials failed in a row.
        """
        mine = [
            t
            for t in trials
            if t.user_attrs.get(WORKER_ATTR) == self.worker_id
            and t.number not in self._counted
            and t.state != TrialState.RUNNING
        ]
        self._counted.update(t.number for t in mine)
        for trial in mine:
            if trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
                self.count += 1
            elif trial.state in FINISHED:
                self.count = 0
        if self.count >= self.limit:
            last = mine[-1].user_attrs.get("fail_reason", "unknown") if mine else "unknown"
            raise FatalError(
                f"{self.count} trials failed in a row (search.max_consecutive_failures="
                f"{self.limit}); last reason: {last}"
            )
