"""Preemptible workers, for real: SIGKILL and SIGTERM to `clot-hpo search`, then the resume.

One trial (the tiny CNN's search-space defaults, 32 px, 4 epochs, a few dozen images), SQLite
storage, tracking off: the checkpoint travels through the trial folders here; through the
tracking server in tests/integration/test_scale_out.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from clot_hpo.search.ledger import recorded_checkpoints
from clot_hpo.search.trial.resume import GracefulStop, epochs_spent
from tests.support import studies

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLOT_HPO = str(BIN / "clot-hpo") if (BIN / "clot-hpo").exists() else "clot-hpo"
EPOCHS = 8  # short epochs (a fraction of a second): the kill lands well before the last
STUDY = "preempt"


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """One trial of the tiny CNN's defaults at 32 px, 8 epochs; heartbeat 1 s, grace 2 s."""
    folder = tmp_path_factory.mktemp("preempt-config")
    space = yaml.safe_load((ROOT / "search_spaces" / "tiny_cnn.yaml").read_text(encoding="utf-8"))
    space["parameters"]["image_size"] = {"type": "fixed", "value": 32}
    (folder / "tiny_cnn_32.yaml").write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    config = {
        "name": STUDY,
        "seed": 7,
        "data": {"path": str(tiny_dataset), "val_fraction": 0.25, "test_fraction": 0.25},
        "training": {"epochs": EPOCHS, "weights": "none"},
        "search": {
            "backbones": ["tiny_cnn"],
            "search_spaces": {"tiny_cnn": "tiny_cnn_32.yaml"},
            "storage": "sqlite:///mlruns/optuna.db",
            "pruner": "none",
            "n_trials": 1,
            "heartbeat_interval": 1,
            "grace_period": 2,
            "max_retry": 2,
            "preemption_grace_s": 20,
        },
        "evaluation": {"bootstrap_samples": 100, "explanations": False},
    }
    path = folder / "preempt.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _start(config: Path, cwd: Path, *extra: str, **env_extra: str) -> subprocess.Popen[bytes]:
    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", COLUMNS="200", **env_extra)
    with open(cwd / "out.log", "ab") as out:
        return subprocess.Popen(
            [CLOT_HPO, "search", str(config), "--no-tracking", *extra],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own group: SIGKILL of the group takes the trial process
        )


def _log(cwd: Path) -> str:
    return (cwd / "out.log").read_text(errors="replace")


def _trials(cwd: Path) -> list[Any]:
    """The trials so far, read without writing to the storage the worker may be creating."""
    return studies.trials(f"sqlite:///{cwd / 'mlruns' / 'optuna.db'}", STUDY)


def _wait_running_epochs(cwd: Path, proc: subprocess.Popen[bytes], epochs: int, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for trial in _trials(cwd):
            if trial.state.name == "RUNNING" and len(trial.intermediate_values) >= epochs:
                return trial
        if proc.poll() is not None:
            pytest.fail(f"the worker exited {proc.returncode} before epoch {epochs}:\n{_log(cwd)[-3000:]}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # no worker left training after the test
    pytest.fail(f"no trial reached epoch {epochs} in {timeout:.0f} s:\n{_log(cwd)[-3000:]}")


def _finish(proc: subprocess.Popen[bytes], cwd: Path, timeout: float = 240) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the worker did not finish in {timeout:.0f} s:\n{_log(cwd)[-3000:]}")


@pytest.fixture(scope="module")
def uninterrupted(config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The same study run to its end without interruption: the reference."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    assert _finish(_start(config_path, cwd), cwd) == 0, _log(cwd)
    (trial,) = _trials(cwd)
    assert trial.state.name == "COMPLETE"
    return trial


def _auc_tolerance(cwd: Path) -> float:
    """One positive/negative pair of the validation split swapping order: 1 / (n_pos * n_neg).

    The resumed weights equal the uninterrupted ones up to float32 rounding (the unit test
    measures exactly 0 in one process; another process may pick other oneDNN reduction
    orders), so the predictions agree to ~1e-6, and the exact AUC moves only if two validation
    images score within that distance of each other, by one pair's share at a time.
    """
    import pandas as pd

    manifest = pd.read_csv(cwd / "mlruns" / "studies" / STUDY / "data" / "split_manifest.csv")
    val = manifest[manifest["split"] == "val"]
    n_pos = int((val["label"] == 1).sum())
    return 1.0 / (n_pos * (len(val) - n_pos)) + 1e-9


def test_sigkill_after_a_checkpoint_resumes_at_the_next_epoch(
    config_path: Path, tmp_path: Path, uninterrupted: Any
) -> None:
    from clot_hpo.checkpoint_file import read_header

    worker = _start(config_path, tmp_path)
    killed = _wait_running_epochs(tmp_path, worker, 2)  # reported: its checkpoint is on disk
    os.killpg(worker.pid, signal.SIGKILL)  # the whole machine, as far as the study can tell
    worker.wait(timeout=30)
    folder = tmp_path / "mlruns" / "studies" / STUDY / "trials" / f"{killed.number:04d}"
    header = read_header(folder / "checkpoint.npz")
    assert header is not None
    k = header["epoch"]  # the trial may have gone on an epoch or two before the kill landed
    assert 2 <= k < EPOCHS

    rerun = _start(config_path, tmp_path)  # "resume the study": the same command again
    assert _finish(rerun, tmp_path) == 0, _log(tmp_path)[-3000:]

    trials = _trials(tmp_path)
    original, retry = trials[killed.number], trials[-1]
    assert original.state.name == "FAIL" and retry.state.name == "COMPLETE"
    assert retry.system_attrs["failed_trial"] == original.number
    assert retry.params == original.params == uninterrupted.params
    assert retry.user_attrs["resumed_from_epoch"] == k
    assert retry.user_attrs["resumed_from_trial"] == original.number
    # One unbroken curve: epochs 1..n reported once each, the first k as the killed trial had them.
    assert sorted(retry.intermediate_values) == list(range(EPOCHS))
    for epoch in sorted(original.intermediate_values):
        assert retry.intermediate_values[epoch] == original.intermediate_values[epoch]
    log = _log(tmp_path)
    assert f"resumed from trial {original.number}'s checkpoint at epoch {k}" in log
    trained = [
        int(line.split(" · epoch ")[1].split("/")[0])
        for line in log.splitlines()
        if f"trial {retry.number} · epoch " in line
    ]
    assert trained == list(range(k + 1, EPOCHS + 1)), "the retry trains from epoch k+1 on, each once"
    # The epoch budget counts each epoch once: k by the killed trial (the kill may land after
    # checkpoint k was recorded but before epochs_run=k was), n - k by its retry.
    own = retry.user_attrs["epochs_run"] - retry.user_attrs["resumed_from_epoch"]
    assert own == EPOCHS - k and original.user_attrs["epochs_run"] in (k - 1, k)
    # A kill after checkpoint k+1's sha256 reached the ledger but before its file replaced
    # checkpoint k's: epoch k+1 was trained twice, and the budget says so.
    last = max(recorded_checkpoints(original.user_attrs))
    assert last in (k, k + 1)
    assert epochs_spent([original, retry]) == EPOCHS + last - k
    # Same seed, same data order, same optimizer state: the uninterrupted run's result.
    assert retry.value == pytest.approx(uninterrupted.value, abs=_auc_tolerance(tmp_path))
    for epoch in range(EPOCHS):
        assert retry.intermediate_values[epoch] == pytest.approx(
            uninterrupted.intermediate_values[epoch], abs=1e-4
        )


def test_sigterm_mid_epoch_exits_within_the_grace_and_the_next_worker_resumes_at_once(
    config_path: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    # A heartbeat retry would take ten minutes, more than `_finish` waits: the resume below
    # passes only if the preempted trial was queued at once.
    config["search"].update(grace_period=600, preemption_grace_s=15)
    config["training"]["epochs"] = 12  # SIGTERM lands mid-training, not after it
    path = config_path.with_name("preempt-sigterm.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    worker = _start(path, tmp_path)
    running = _wait_running_epochs(tmp_path, worker, 1)
    time.sleep(0.3)  # into the second epoch
    sent = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)  # the worker only, as `docker stop` does
    code = _finish(worker, tmp_path, timeout=60)
    stopped_in = time.monotonic() - sent
    assert code == 75, _log(tmp_path)[-3000:]
    # The grace, and time to record the trial and exit on a loaded machine.
    assert stopped_in < 15 + 15, f"the worker took {stopped_in:.1f} s to stop"
    trials = _trials(tmp_path)
    preempted = trials[running.number]
    assert preempted.state.name == "FAIL" and preempted.user_attrs["preempted"] is True
    done = preempted.user_attrs["epochs_run"]
    assert done >= 1
    assert trials[-1].state.name == "WAITING"  # queued at once, no heartbeat needed
    assert "preempted" in _log(tmp_path)

    second = _start(path, tmp_path)
    assert _finish(second, tmp_path) == 0, _log(tmp_path)[-3000:]  # within 240 s: no heartbeat wait
    retry = _trials(tmp_path)[-1]
    assert retry.state.name == "COMPLETE" and retry.user_attrs["resumed_from_epoch"] == done
    assert sorted(retry.intermediate_values) == list(range(12))


def test_an_oom_after_two_epochs_resumes_the_trials_own_checkpoint(config_path: Path, tmp_path: Path) -> None:
    """The same trial number resumed: the runtime-OOM retry keeps the epochs done before it."""
    worker = _start(config_path, tmp_path, CLOT_HPO_FAULT_INJECT="oom2:0")
    assert _finish(worker, tmp_path) == 0, _log(tmp_path)[-3000:]
    (trial,) = _trials(tmp_path)
    assert trial.state.name == "COMPLETE" and "oom_retry" in trial.user_attrs
    log = _log(tmp_path)
    assert "trial 0 · resumed its own checkpoint at epoch 2" in log
    trained = [
        int(line.split(" · epoch ")[1].split("/")[0])
        for line in log.splitlines()
        if "trial 0 · epoch " in line
    ]
    assert trained == list(range(1, EPOCHS + 1)), "epochs 1-2 before the OOM, 3..n after it, each once"
    assert sorted(trial.intermediate_values) == list(range(EPOCHS))
    assert trial.user_attrs["epochs_run"] == EPOCHS and not trial.user_attrs.get("resumed_from_epoch")


def test_graceful_stop_passes_sigterm_on_to_the_trial_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    stop = GracefulStop().install()
    try:
        stop.watch(child.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        assert child.wait(timeout=10) == -signal.SIGTERM
        assert stop.requested == "SIGTERM"
    finally:
        stop.uninstall()
        child.kill()
    assert signal.getsignal(signal.SIGTERM) is not stop._handle
