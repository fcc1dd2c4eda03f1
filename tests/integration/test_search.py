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
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.support.cli import REPO, run_cli

pytestmark = pytest.mark.slow


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
    """The trials so far, read without creating tables (the study process may be doing that)."""
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{sandbox}/optuna.db", skip_table_creation=True)
        return optuna.load_study(study_name=study, storage=storage).trials
    except Exception:  # noqa: BLE001 - not created yet
        return []


def _states(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    return [t.state.name for t in trials]


def test_study_completes_and_records_every_active_hyperparameter(sandbox: Path, tiny_dataset: Path) -> None:
    result = _search(sandbox, tiny_dataset, "--n-trials", "3")
    assert result.returncode == 0, result.stderr
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
    for t in trials[1:]:
        # Started while the previous trial trained: the trial waited for part of its start at most.
        assert t.user_attrs["time_startup_waited"] < t.user_attrs["time_startup"], t.user_attrs
        assert "time_handoff" in t.user_attrs
    study_dir = sandbox / "mlruns/studies/t"
    cached = {p.name.split("-")[0] for p in (study_dir / "cache").glob("*.npy")}
    assert cached == {"train", "val", "test"}, "decoded once per split and image size"
    assert list((study_dir / "workers").iterdir()) == [], "no trial process left waiting"
    assert (study_dir / "trials/0002/stderr.0.log").is_file()
    assert "trial budget spent (3 of 3 trials finished)" in result.stdout
    assert "top trials" in result.stdout
    assert (sandbox / "mlruns/studies/t/config.resolved.yaml").is_file()
    assert (sandbox / "mlruns/studies/t/trials.csv").is_file()


def test_resume_runs_only_the_missing_trials(sandbox: Path, tiny_dataset: Path) -> None:
    assert _search(sandbox, tiny_dataset, "--n-trials", "1").returncode == 0
    first = _trials(sandbox)[0]
    result = _search(sandbox, tiny_dataset, "--n-trials", "2")
    assert result.returncode == 0, result.stderr
    trials = _trials(sandbox)
    assert _states(trials) == ["COMPLETE", "COMPLETE"]
    assert trials[0].datetime_complete == first.datetime_complete, "a completed trial was redone"
    assert "resuming with 1 trials on record" in result.stdout


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


def test_a_crashing_child_fails_its_trial_and_the_study_goes_on(sandbox: Path, tiny_dataset: Path) -> None:
    result = _search(sandbox, tiny_dataset, "--n-trials", "2", env={"CLOT_HPO_FAULT_INJECT": "segv:0"})
    assert result.returncode == 0, result.stderr
    trials = _trials(sandbox)
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


def test_runtime_oom_is_retried_once_at_half_the_batch(sandbox: Path, tiny_dataset: Path) -> None:
    result = _search(sandbox, tiny_dataset, "--n-trials", "1", env={"CLOT_HPO_FAULT_INJECT": "oom:0"})
    assert result.returncode == 0, result.stderr
    (trial,) = _trials(sandbox)
    assert trial.state == TrialState.COMPLETE
    batch = trial.params["batch_size"]
    assert trial.user_attrs["oom_retry"] == f"batch {batch} -> {batch // 2} x2 accumulation"
    assert trial.user_attrs["budget_batch_size"] == batch


# The trial budget is test_study_completes_and_records_every_active_hyperparameter's: it asserts
# "trial budget spent (3 of 3 trials finished)" and three finished trials.
@pytest.mark.parametrize(
    ("flags", "reason", "finished"),
    [
        (("--n-trials", "5", "--timeout", "1"), "time budget spent (1 s)", 1),
        (("--n-trials", "5", "--max-total-epochs", "3"), "epoch budget spent (3 of 3 epochs)", 2),
    ],
    ids=["timeout", "epochs"],
)
def test_each_budget_stops_the_study_and_says_which(
    sandbox: Path, tiny_dataset: Path, flags: tuple[str, ...], reason: str, finished: int
) -> None:
    result = _search(sandbox, tiny_dataset, *flags)
    assert result.returncode == 0, result.stderr
    assert reason in result.stdout
    trials = _trials(sandbox)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == finished
    if "--max-total-epochs" in flags:
        assert [t.user_attrs["epochs_run"] for t in trials] == [2, 1]


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
        "3",
        "--epochs",
        "6",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=sandbox,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            trials = _poll_trials(sandbox)
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("epochs_run")]
            if done and running:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the study never reached its second trial")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the study process and its trial child at once
        proc.wait()
    killed = running[0].number
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
        "3",
        cwd=sandbox,
    )
    assert result.returncode == 0, result.stderr
    trials = _trials(sandbox)
    assert trials[0].datetime_complete == done[0].datetime_complete, "a completed trial was redone"
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed].params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


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
        "3",
        "--epochs",
        "200",
    ]
    # A shell's background jobs start with SIGINT ignored, and Python keeps it ignored: give
    # the study the default disposition a terminal would, so Ctrl-C means KeyboardInterrupt.
    proc = subprocess.Popen(
        cmd,
        cwd=sandbox,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        trials = _poll_trials(sandbox)
        if any(t.user_attrs.get("epochs_run") for t in trials):
            break
        time.sleep(0.5)
    else:
        pytest.fail("no trial reached its first epoch")
    assert proc.poll() is None, "the study ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    (trial,) = _trials(sandbox)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "interrupted by the user"
