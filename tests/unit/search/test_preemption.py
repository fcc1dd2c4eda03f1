"""Resume lineage, budget accounting and the SIGTERM handling of preemptible workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from clot_hpo.checkpoint_file import CHECKPOINT_FILE, TrainingCheckpoint, save_checkpoint
from clot_hpo.search.ledger import ATTR_CHECKPOINTS
from clot_hpo.search.trial.resume import (
    RESUMED_FROM_ATTR,
    PreemptedStop,
    TrialPreemption,
    epochs_spent,
    find_checkpoint,
    lineage,
    requeue,
    too_many_resumes,
)


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(storage=optuna.storages.RDBStorage("sqlite:///:memory:"))


def _fail_and_retry(study: optuna.Study, epochs: int) -> optuna.trial.FrozenTrial:
    """Run the next trial for ``epochs`` epochs, fail it, queue its retry; return the retry."""
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    trial.set_user_attr("epochs_run", epochs)
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, study.trials[trial.number])
    return study.trials[-1]


def _checkpoint(folder: Path, epoch: int) -> Path:
    return save_checkpoint(
        folder / CHECKPOINT_FILE, TrainingCheckpoint(epoch=epoch, model=[np.zeros(2)], optimizer=[])
    )


def test_an_epoch_checkpointed_but_killed_before_its_report_is_counted_once() -> None:
    # Killed between recording checkpoint 3 in the ledger and saying epochs_run=3: its
    # retry resumes at 3 and trains 4..8, so the study trained 8 epochs, not 2 + 5.
    study = _study()
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    trial.set_user_attr("epochs_run", 2)
    trial.set_user_attr(ATTR_CHECKPOINTS, {"1": "a" * 64, "2": "b" * 64, "3": "c" * 64})
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, study.trials[0])
    assert epochs_spent(study.trials) == 3  # the waiting retry counts nothing yet
    retry = study.ask()
    retry.set_user_attr(ATTR_CHECKPOINTS, {"4": "d" * 64, "8": "e" * 64})
    retry.set_user_attr(RESUMED_FROM_ATTR, 3)
    retry.set_user_attr("epochs_run", 8)
    study.tell(retry, 0.9)
    assert epochs_spent(study.trials) == 8


def test_a_retry_resumes_the_newest_checkpoint_of_its_lineage(tmp_path: Path) -> None:
    study = _study()
    first_retry = _fail_and_retry(study, 2)
    assert first_retry.state == TrialState.WAITING and lineage(first_retry) == [0]
    assert first_retry.params == study.trials[0].params
    # The retry runs as trial 1 and dies again at epoch 4.
    trial = study.ask()
    assert trial.number == 1
    trial.set_user_attr("epochs_run", 4)
    trial.set_user_attr(RESUMED_FROM_ATTR, 2)
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, study.trials[1])
    second_retry = study.trials[-1]
    assert lineage(second_retry) == [0, 1]

    folder = lambda n: tmp_path / f"{n:04d}"  # noqa: E731
    assert find_checkpoint(second_retry, trial_dir=folder) is None
    _checkpoint(folder(0), 2)
    _checkpoint(folder(1), 4)
    point = find_checkpoint(second_retry, trial_dir=folder)
    assert point is not None and (point.trial, point.epoch, point.downloaded) == (1, 4, False)
    (folder(1) / CHECKPOINT_FILE).write_bytes(b"torn")  # unreadable: the older one serves
    point = find_checkpoint(second_retry, trial_dir=folder)
    assert point is not None and (point.trial, point.epoch) == (0, 2)
    assert find_checkpoint(study.trials[0], trial_dir=folder) is None  # not a retry

    # Epochs each trial trained itself: 2 + (4 - 2); the waiting retry inherited epochs_run=4.
    assert second_retry.user_attrs["epochs_run"] == 4
    assert epochs_spent(study.trials) == 4
    assert too_many_resumes(second_retry, 2) is None
    reason = too_many_resumes(second_retry, 1)
    assert reason is not None and "retried 2 times (trials 0, 1), more than search.max_resumes=1" in reason


def test_another_machine_downloads_the_checkpoint(tmp_path: Path) -> None:
    study = _study()
    retry = _fail_and_retry(study, 3)
    elsewhere = _checkpoint(tmp_path / "server", 3)
    asked: list[int] = []

    def download(number: int, dest: Path) -> Path | None:
        asked.append(number)
        dest.mkdir(parents=True)
        return Path(dest / CHECKPOINT_FILE).write_bytes(elsewhere.read_bytes()) and dest / CHECKPOINT_FILE

    point = find_checkpoint(
        retry, trial_dir=lambda n: tmp_path / "local" / str(n), download=download, dest=tmp_path / "mine"
    )
    assert asked == [0]
    assert point is not None and point.downloaded and point.epoch == 3
    assert point.path.parent.parent == tmp_path / "mine"


def test_trial_preemption_waits_for_the_checkpoint_but_not_past_the_grace() -> None:
    interrupted: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    preemption = TrialPreemption(grace_s=3.2, interrupt=interrupt)
    previous = signal.signal(signal.SIGTERM, preemption.handle)
    try:
        with pytest.raises(KeyboardInterrupt):  # not armed: at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        preemption.arm()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert preemption.requested == "SIGTERM" and interrupted == [signal.SIGTERM]
        with pytest.raises(PreemptedStop, match=r"preempted \(SIGTERM\) after epoch 2"):
            preemption.check(2)
        time.sleep(0.5)  # the alarm was cancelled with the stop
        assert interrupted == [signal.SIGTERM]

        late = TrialPreemption(grace_s=3.2, interrupt=interrupt)  # 0.2 s after the margin
        signal.signal(signal.SIGTERM, late.handle)
        late.arm()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # an epoch that does not end in time
        assert 0.1 <= time.monotonic() - started < 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, previous)
