"""Worker identity: two workers with the same process id (identical containers) stay apart."""

from __future__ import annotations

import os
import socket

import optuna
import pytest

from clot_hpo.errors import FatalError
from clot_hpo.search.workers import WORKER_ATTR, ConsecutiveFailures, new_worker_id


def test_worker_ids_differ_within_one_process_and_name_the_host() -> None:
    a, b = new_worker_id(), new_worker_id()
    assert a != b
    assert a.startswith(f"{socket.gethostname()}-{os.getpid()}-")


def _fail(study: optuna.Study, worker_id: str) -> None:
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, worker_id)
    trial.set_user_attr("fail_reason", "boom")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_a_worker_counts_only_its_own_failures() -> None:
    # Both "containers" run their worker as PID 1: only the random part tells them apart.
    study = optuna.create_study()
    mine, theirs = ConsecutiveFailures("worker-1-aaaa", 2), ConsecutiveFailures("worker-1-bbbb", 2)
    for _ in range(3):
        _fail(study, theirs.worker_id)
    mine.update(study.get_trials())
    assert mine.count == 0
    _fail(study, mine.worker_id)
    _fail(study, mine.worker_id)
    with pytest.raises(FatalError, match="2 trials failed in a row"):
        mine.update(study.get_trials())


def test_an_enqueued_trial_that_fails_counts_once() -> None:
    # Defaults first: trial 0 is enqueued (WAITING) before the worker runs it.
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    runner = ConsecutiveFailures("worker-1-aaaa", 2)
    _fail(study, runner.worker_id)  # ask() takes the enqueued trial 0
    runner.update(study.get_trials())
    runner.update(study.get_trials())
    assert runner.count == 1
    _fail(study, runner.worker_id)
    with pytest.raises(FatalError, match="2 trials failed in a row"):
        runner.update(study.get_trials())
