"""Which trial runs a worker may close as orphaned: only those of trials Optuna says are over."""

from __future__ import annotations

import datetime

import optuna
from optuna.trial import TrialState

from clot_hpo.search.optimize import UPLOAD_GRACE_SECONDS, orphaned_runs


def _trial(number: int, state: TrialState, ended_s_ago: float | None = None) -> optuna.trial.FrozenTrial:
    finished = state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    trial = optuna.trial.create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None)
    trial.number = number
    if finished and ended_s_ago is not None:
        trial.datetime_complete = datetime.datetime.now() - datetime.timedelta(seconds=ended_s_ago)
    return trial


def test_only_trials_over_and_past_their_upload_are_orphans() -> None:
    long_ago = UPLOAD_GRACE_SECONDS + 60
    trials = [
        _trial(0, TrialState.COMPLETE, long_ago),  # its worker died while uploading: close
        _trial(1, TrialState.FAIL, long_ago),  # stale, failed by Optuna: close
        _trial(6, TrialState.FAIL, 5),  # a failed trial uploads nothing: close at once
        _trial(2, TrialState.PRUNED, 5),  # its worker may still be uploading: keep
        _trial(3, TrialState.RUNNING),  # another worker's: keep
        _trial(4, TrialState.WAITING),  # may be claimed, and its run opened, at any moment: keep
        _trial(5, TrialState.COMPLETE, long_ago),  # this worker still closes its run: keep
    ]
    assert orphaned_runs(trials, uploading={5}) == {0, 1, 6}


def test_a_trial_started_after_the_snapshot_is_never_an_orphan() -> None:
    # The snapshot knows trials 0 and 1; trial 2 starts (another worker) before it is acted on.
    snapshot = [_trial(0, TrialState.FAIL, UPLOAD_GRACE_SECONDS + 1), _trial(1, TrialState.RUNNING)]
    assert 2 not in orphaned_runs(snapshot, uploading=set())
