"""The study on tiny synthetic data: completes, prunes, resumes, survives crashes, stops on budgets.

Trials use the tiny CNN at 32 px without tracking (tracking has its own tests), so each
trial costs a few seconds; every trial still runs in its own child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
import pytest
from optuna.trial import TrialState

from tests.support import studies
from tests.support.cli import REPO, copy_project_files, run_cli

pytestmark = pytest.mark.slow

T = TypeVar("T")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what the trial budget counts


def _search(
    sandbox: Path, data: Path, *extra: str, env: dict[str, str] | None = None, study: str = "t"
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "search",
        "experiments/tiny.yaml",
        "--data",
        str(data),
        "--study-name",
        study,
        "--storage",
        f"sqlite:///{sandbox}/optuna.db",
        "--no-tracking",
        *extra,
        cwd=sandbox,
        env=env,
    )


def _trials(sandbox: Path, study: str = "t") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{sandbox}/optuna.db").trials


def _poll_trials(sandbox: Path, study: str = "t") -> list[optuna.trial.FrozenTrial]:
    """The trials so far, read without writing to the storage the study process may be creating."""
    return studies.trials(f"sqlite:///{sandbox}/optuna.db", study)


def _states(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    return [t.state.name for t in trials]


def _module_sandbox(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A working folder like the ``sandbox`` fixture's, for a study that several tests read."""
    return copy_project_files(tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def resumed_study(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> dict[str, Any]:
    """One study run twice: stopped by a 1 s time budget after its first trial, then resumed to 3.

    The completion, resume and time-budget tests read it: every study process and every trial
    process imports TensorFlow (seconds of CPU each), so one study serves the three.
    """
    sandbox = _module_sandbox(tmp_path_factory, "resumed")
    timed = _search(sandbox, tiny_dataset, "--n-trials", "5", "--timeout", "1")
    assert timed.returncode == 0, timed.stderr
    after_timeout = _trials(sandbox)
    # The process started ahead for a second trial was discarded: its log stays when it needed
    # SIGKILL (a slow start on a busy machine). The resume's own processes are checked below.
    workers = sandbox / "mlruns/studies/t/workers"
    discarded = set(workers.iterdir())
    resumed = _search(sandbox, tiny_dataset, "--n-trials", "3")
    assert resumed.returncode == 0, resumed.stderr
    return {
        "sandbox": sandbox,
        "timed": timed,
        "after_timeout": after_timeout,
        "discarded": discarded,
        "resumed": resumed,
    }


def test_study_completes_and_records_every_active_hyperparameter(resumed_study: dict[str, Any]) -> None:
    sandbox, result = resumed_study["sandbox"], resumed_study["resumed"]
    trials = _trials(sandbox)
    assert _states(trials) == ["COMPLETE"] * 3
    for t in trials:
        assert {"learning_rate", "batch_size", "optimizer"} <= set(t.params)
        assert t.user_attrs["epochs_run"] == 2
        assert 0.0 <= t.value <= 1.0
        assert t.user_attrs["weights_used"].startswith("none")
        assert t.user_attrs["budget_action"] == "run"
    assert len({t.params["learning_rate"] for t in trials}) == 3, "each child must sample anew"
    phases = {
        "startup",
        "startup_waited",
        "setup",
        "data",
        "build",
        "vram_estimate",
        "first_epoch",
        "later_epochs",
        "evaluate",
        "total",
    }
    for t in trials:
        assert {f"time_{p}" for p in phases} <= set(t.user_attrs), sorted(t.user_attrs)
        assert t.user_attrs["budget_trainable"] == "all"
    # Trial 2 started while trial 1 trained, in the same study process (trials 0 and 1 are the
    # first of theirs): it waited for part of its start at most.
    third = trials[2]
    assert third.user_attrs["time_startup_waited"] < third.user_attrs["time_startup"], third.user_attrs
    assert "time_handoff" in third.user_attrs
    study_dir = sandbox / "mlruns/studies/t"
    cached = {p.name.split("-")[0] for p in (study_dir / "cache").glob("*.npy")}
    assert cached == {"train", "val", "test"}, "decoded once per split and image size"
    left = set((study_dir / "workers").iterdir()) - resumed_study["discarded"]
    assert left == set(), "no trial process left waiting"
    assert (study_dir / "trials/0002/stderr.0.log").is_file()
    assert "trial budget spent (3 of 3 trials finished)" in result.stdout
    assert "top trials" in result.stdout
    assert (sandbox / "mlruns/studies/t/config.resolved.yaml").is_file()
    assert (sandbox / "mlruns/studies/t/trials.csv").is_file()


def test_resume_runs_only_the_missing_trials(resumed_study: dict[str, Any]) -> None:
    (first,) = resumed_study["after_timeout"]
    trials = _trials(resumed_study["sandbox"])
    assert _states(trials) == ["COMPLETE"] * 3, "the resume ran the 2 trials missing, no more"
    assert trials[0].datetime_complete == first.datetime_complete, "a completed trial was redone"
    assert "resuming with 1 trials on record" in resumed_study["resumed"].stdout


# The trial budget is test_study_completes_and_records_every_active_hyperparameter's: it asserts
# "trial budget spent (3 of 3 trials finished)" and three finished trials.
def test_the_time_budget_stops_the_study_and_says_so(resumed_study: dict[str, Any]) -> None:
    assert "time budget spent (1 s)" in resumed_study["timed"].stdout
    finished = [t for t in resumed_study["after_timeout"] if t.state in FINISHED]
    assert len(finished) == 1


@pytest.fixture(scope="module")
def learnable_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough synthetic images (120 per class) for the tiny CNN to learn within a few epochs."""
    from clot_hpo.data.synthetic import make_synthetic

    return make_synthetic(
        tmp_path_factory.mktemp("learnable") / "data", n_per_class=120, image_size=32, seed=5
    )


def test_median_pruner_stops_a_hopeless_trial(sandbox: Path, learnable_dataset: Path) -> None:
    storage = f"sqlite:///{sandbox}/optuna.db"
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    good = {
        "learning_rate": 0.002,
        "batch_size": 16,
        "optimizer": "adam",
        "image_size": 32,
        "use_dense": False,
        "dropout": 0.0,
        "label_smoothing": 0.0,
        "aug_flip": False,
        "aug_rotation": 0.0,
        "aug_zoom": 0.0,
        "aug_contrast": 0.0,
        "aug_brightness": 0.0,
    }
    hopeless = {**good, "learning_rate": 1e-7, "optimizer": "sgd", "momentum": 0.0}  # cannot move
    for params in (good, good, hopeless):
        study.enqueue_trial(params, skip_if_exists=False)
    (sandbox / "prune.yaml").write_text(
        (sandbox / "experiments/tiny.yaml")
        .read_text()
        .replace("pruner: none", "pruner: median")
        .replace("epochs: 2", "epochs: 5")
    )
    result = run_cli(
        "search",
        "prune.yaml",
        "--data",
        str(learnable_dataset),
        "--study-name",
        "t",
        "--storage",
        storage,
        "--no-tracking",
        "--n-trials",
        "3",
        cwd=sandbox,
    )
    assert result.returncode == 0, result.stderr
    trials = _trials(sandbox)
    assert trials[2].state == TrialState.PRUNED, [t.intermediate_values for t in trials]
    assert trials[2].user_attrs["epochs_run"] < 5, [t.intermediate_values for t in trials]
    assert "pruned at epoch" in trials[2].user_attrs["prune_reason"]


@pytest.fixture(scope="module")
def faulty_study(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> dict[str, Any]:
    """Trial 0's process dies (SIGSEGV), trial 1 hits a runtime OOM, a 3-epoch budget ends the study.

    The crash, OOM-retry and epoch-budget tests read this one study: a study of its own each
    cost a study process and two or three trial processes more.
    """
    sandbox = _module_sandbox(tmp_path_factory, "faulty")
    result = _search(
        sandbox,
        tiny_dataset,
        "--n-trials",
        "5",
        "--max-total-epochs",
        "3",
        env={"CLOT_HPO_FAULT_INJECT": "segv:0,oom:1"},
    )
    assert result.returncode == 0, result.stderr
    return {"result": result, "trials": _trials(sandbox)}


def test_a_crashing_child_fails_its_trial_and_the_study_goes_on(faulty_study: dict[str, Any]) -> None:
    trials = faulty_study["trials"]
    assert _states(trials) == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "died from SIGSEGV" in trials[0].user_attrs["fail_reason"]


def test_consecutive_failures_stop_the_study_with_a_clear_message(sandbox: Path, tiny_dataset: Path) -> None:
    (sandbox / "fail.yaml").write_text(
        (sandbox / "experiments/tiny.yaml")
        .read_text()
        .replace("heartbeat_interval: 2", "heartbeat_interval: 2\n  max_consecutive_failures: 2")
    )
    result = run_cli(
        "search",
        "fail.yaml",
        "--data",
        str(tiny_dataset),
        "--study-name",
        "t",
        "--storage",
        f"sqlite:///{sandbox}/optuna.db",
        "--no-tracking",
        "--n-trials",
        "3",
        cwd=sandbox,
        env={"CLOT_HPO_FAULT_INJECT": "segv:0,segv:1"},
    )
    assert result.returncode == 1
    assert "2 trials failed in a row" in result.stderr
    assert "Traceback" not in result.stderr
    assert _states(_trials(sandbox)) == ["FAIL", "FAIL"]


def test_runtime_oom_is_retried_once_at_half_the_batch(faulty_study: dict[str, Any]) -> None:
    trial = faulty_study["trials"][1]
    assert trial.state == TrialState.COMPLETE
    batch = trial.params["batch_size"]
    assert trial.user_attrs["oom_retry"] == f"batch {batch} -> {batch // 2} x2 accumulation"
    assert trial.user_attrs["budget_batch_size"] == batch


def test_the_epoch_budget_stops_the_study_and_says_so(faulty_study: dict[str, Any]) -> None:
    assert "epoch budget spent (3 of 3 epochs)" in faulty_study["result"].stdout
    finished = [t for t in faulty_study["trials"] if t.state in FINISHED]
    assert [t.user_attrs["epochs_run"] for t in finished] == [2, 1], "the last trial gets what is left"


def _wait_for_trials(
    sandbox: Path,
    proc: subprocess.Popen[bytes],
    log: Path,
    what: str,
    found: Callable[[list[optuna.trial.FrozenTrial]], T | None],
    timeout: float = 300,  # the first epoch traces its model: minutes on a loaded machine
) -> T:
    """Poll the study's trials until ``found`` returns something; fail with the log if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:]
            pytest.fail(f"the study exited {proc.returncode} while waiting for {what}:\n{tail}")
        value = found(_poll_trials(sandbox))
        if value is not None:
            return value
        time.sleep(0.1)
    pytest.fail(f"waited {timeout:.0f} s for {what}:\n{log.read_text()[-3000:]}")


def _catch_second_trial_training(
    sandbox: Path, proc: subprocess.Popen[bytes], log: Path, epochs: int
) -> tuple[optuna.trial.FrozenTrial, optuna.trial.FrozenTrial]:
    """Freeze the study (SIGSTOP) once trial 0 is complete and trial 1 is training; return both.

    Trial 1 is caught with at least two of its ``epochs`` and its evaluation still to run, and
    frozen nothing changes before the kill: it is still running when it dies.
    """

    def both(trials: list[optuna.trial.FrozenTrial]) -> tuple[Any, Any] | None:
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        training = [
            t
            for t in trials
            if t.state == TrialState.RUNNING and 1 <= t.user_attrs.get("epochs_run", 0) <= epochs - 2
        ]
        return (done[0], training[0]) if done and training else None

    caught = _wait_for_trials(sandbox, proc, log, "trial 1 to train past its first epoch", both)
    os.killpg(proc.pid, signal.SIGSTOP)
    return caught


def test_killed_study_resumes_and_retries_the_stale_trial(sandbox: Path, tiny_dataset: Path) -> None:
    storage = f"sqlite:///{sandbox}/optuna.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "clot_hpo.cli",
        "search",
        "experiments/tiny.yaml",
        "--data",
        str(tiny_dataset),
        "--study-name",
        "t",
        "--storage",
        storage,
        "--no-tracking",
        "--n-trials",
        "2",  # no process started ahead for a third trial: the kill lands in the second
        "--epochs",
        "12",  # the second trial's window to be caught in: 11 epochs after its first report
    ]
    log = sandbox / "study.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=sandbox, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        done, running = _catch_second_trial_training(sandbox, proc, log, epochs=12)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the study process and its trial child at once
        proc.wait()
    killed = running.number
    result = run_cli(
        "search",
        "experiments/tiny.yaml",
        "--data",
        str(tiny_dataset),
        "--study-name",
        "t",
        "--storage",
        storage,
        "--no-tracking",
        "--n-trials",
        "2",  # trial 0 and the stale trial's retry: all the assertions need
        cwd=sandbox,
    )
    assert result.returncode == 0, result.stderr
    trials = _trials(sandbox)
    assert trials[0].datetime_complete == done.datetime_complete, "a completed trial was redone"
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed].params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2


def test_ctrl_c_records_the_trial_and_exits_130(sandbox: Path, tiny_dataset: Path) -> None:
    storage = f"sqlite:///{sandbox}/optuna.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "clot_hpo.cli",
        "search",
        "experiments/tiny.yaml",
        "--data",
        str(tiny_dataset),
        "--study-name",
        "t",
        "--storage",
        storage,
        "--no-tracking",
        "--n-trials",
        "1",  # one trial: no second trial process started ahead, for nothing
        "--epochs",
        "200",
    ]
    # A shell's background jobs start with SIGINT ignored, and Python keeps it ignored: give
    # the study the default disposition a terminal would, so Ctrl-C means KeyboardInterrupt.
    # Output to files, never an unread pipe (a full one would stop the study), and at hand below.
    out_log, err_log = sandbox / "stdout.log", sandbox / "stderr.log"
    with out_log.open("wb") as out, err_log.open("wb") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=sandbox,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        _wait_for_trials(
            sandbox,
            proc,
            err_log,
            "a trial's first epoch",
            lambda trials: True if any(t.user_attrs.get("epochs_run") for t in trials) else None,
        )
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole group
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # the test failed first: no 200-epoch study left training
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = err_log.read_text()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    (trial,) = _trials(sandbox)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "interrupted by the user"
