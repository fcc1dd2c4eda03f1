"""Worker identity: two workers with the same process id (identical containers) stay apart."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import optuna
import pytest

from clot_hpo.errors import FatalError
from clot_hpo.search.study import WORKER_ATTR, StudyRunner, new_worker_id


def test_worker_ids_differ_within_one_process_and_name_the_host() -> None:
    a, b = new_worker_id(), new_worker_id()
    assert a != b
    assert a.startswith(f"{socket.gethostname()}-{os.getpid()}-")


def _runner(study: optuna.Study, worker_id: str, limit: int = 2) -> SimpleNamespace:
    config = SimpleNamespace(search=SimpleNamespace(max_consecutive_failures=limit))
    return SimpleNamespace(
        study=study, worker_id=worker_id, consecutive_failures=0, config=config, _counted=set()
    )


def _fail(study: optuna.Study, worker_id: str) -> None:
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, worker_id)
    trial.set_user_attr("fail_reason", "boom")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_a_worker_counts_only_its_own_failures() -> None:
    # Both "containers" run their worker as PID 1: only the random part tells them apart.
    study = optuna.create_study()
    mine, theirs = _runner(study, "worker-1-aaaa"), _runner(study, "worker-1-bbbb")
    for _ in range(3):
        _fail(study, theirs.worker_id)
    StudyRunner._count_failures(mine)  # type: ignore[arg-type]
    assert mine.consecutive_failures == 0
    _fail(study, mine.worker_id)
    _fail(study, mine.worker_id)
    with pytest.raises(FatalError, match="2 trials failed in a row"):
        StudyRunner._count_failures(mine)  # type: ignore[arg-type]


def test_an_enqueued_trial_that_fails_counts_once() -> None:
    # Defaults first: trial 0 is enqueued (WAITING) before the worker runs it.
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    runner = _runner(study, "worker-1-aaaa")
    _fail(study, runner.worker_id)  # ask() takes the enqueued trial 0
    StudyRunner._count_failures(runner)  # type: ignore[arg-type]
    StudyRunner._count_failures(runner)  # type: ignore[arg-type]
    assert runner.consecutive_failures == 1
    _fail(study, runner.worker_id)
    with pytest.raises(FatalError, match="2 trials failed in a row"):
        StudyRunner._count_failures(runner)  # type: ignore[arg-type]
