"""Trial processes started ahead of their task: handed one task, replaced when dead, discarded at the end.

A stand-in child (a few lines of Python) takes the place of the trial process, so these
tests cost milliseconds, not TensorFlow imports.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clot_hpo.search.trial.launcher import TrialLauncher, TrialProcess, describe_exit
from clot_hpo.search.trial.task import OUTCOME_WRITTEN, TrialOutcome, TrialTask

# Reads its task's path, prints two lines, writes a COMPLETE outcome; FAKE_MODE changes that.
CHILD = r"""
import json, os, signal, sys, time
mode = os.environ.get("FAKE_MODE", "")
if mode == "die-waiting":
    sys.exit(3)
line = sys.stdin.readline().strip()
if not line:
    sys.exit(0)
task = json.load(open(line))
print("started", flush=True)
if mode == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
print("done", flush=True)
print("to stderr", file=sys.stderr, flush=True)
json.dump({"state": "COMPLETE", "value": 0.5, "timings": {"time_total": 0.1}}, open(task["result_path"], "w"))
if mode == "after":  # the outcome first, then the evaluation's intervals and figures
    print(OUTCOME_WRITTEN, flush=True)
    time.sleep(0.5)
    print("evaluated", flush=True)
    sys.exit(int(os.environ.get("FAKE_AFTER_EXIT", "0")))
"""
# The marker line, as the trial process prints it.
CHILD = f"OUTCOME_WRITTEN = {OUTCOME_WRITTEN!r}\n" + CHILD


def test_the_outcome_comes_before_the_evaluations_intervals_and_figures(
    launcher: TrialLauncher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FAKE_MODE", "after")
    lines: list[str] = []
    outcome, rest = launcher.run(
        _task(tmp_path), _trial_dir(tmp_path), on_line=lines.append, start_next=False
    )
    assert outcome.state == "COMPLETE" and rest is not None
    assert [line.strip() for line in lines] == ["started", "done"], "returned at the marker line, not printed"
    rest()
    assert lines[-1].strip() == "evaluated", "the rest is followed to the process's end"
    monkeypatch.setenv("FAKE_AFTER_EXIT", "1")
    outcome, rest = launcher.run(
        _task(tmp_path, 1), _trial_dir(tmp_path, 1), on_line=lines.append, start_next=False
    )
    assert outcome.state == "COMPLETE" and rest is not None
    with caplog.at_level("WARNING"):
        rest()
    assert "trial 1's process exited with code 1" in caplog.text and "may lack" in caplog.text


def _task(tmp_path: Path, number: int = 0) -> TrialTask:
    return TrialTask(
        config={},
        study_name="s",
        storage="sqlite://",
        trial_id=number,
        trial_number=number,
        spool_dir="",
        manifest_path="",
        spaces={},
        max_epochs=1,
        result_path=str(tmp_path / f"trial{number}" / "outcome.json"),
    )


@pytest.fixture()
def launcher(tmp_path: Path) -> Iterator[TrialLauncher]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    launcher = TrialLauncher(tmp_path / "workers", command=(sys.executable, str(script)))
    yield launcher
    launcher.close()


def _trial_dir(tmp_path: Path, number: int = 0) -> Path:
    path = tmp_path / f"trial{number}"
    path.mkdir(exist_ok=True)
    return path


def test_a_task_runs_in_a_started_process_and_its_log_moves_to_the_trial(
    launcher: TrialLauncher, tmp_path: Path
) -> None:
    lines: list[str] = []
    task = _task(tmp_path)
    before = time.time()
    outcome, _ = launcher.run(task, _trial_dir(tmp_path), on_line=lines.append, start_next=False)
    assert outcome == TrialOutcome(state="COMPLETE", value=0.5, timings={"time_total": 0.1})
    assert [line.strip() for line in lines] == ["started", "done"]
    assert (tmp_path / "trial0" / "stderr.0.log").read_text().strip() == "to stderr"
    saved = json.loads((tmp_path / "trial0" / "task.0.json").read_text())
    assert saved["handed_at"] >= before, "the child's clock starts when the task is handed over"
    assert list((tmp_path / "workers").iterdir()) == [], "no waiting process was asked for"


def test_the_next_process_starts_with_the_trial_and_serves_the_next_trial(
    launcher: TrialLauncher, tmp_path: Path
) -> None:
    seen_waiting = []

    def on_line(line: str) -> None:
        seen_waiting.append(launcher._waiting is not None)

    _ = launcher.run(_task(tmp_path, 0), _trial_dir(tmp_path, 0), on_line=on_line, start_next=True)
    assert seen_waiting == [True, True], "started as soon as the running trial had its task"
    waiting = launcher._waiting
    assert waiting is not None and waiting.alive
    outcome, _ = launcher.run(
        _task(tmp_path, 1), _trial_dir(tmp_path, 1), on_line=lambda _: None, start_next=False
    )
    assert outcome.state == "COMPLETE"
    assert waiting.handed and waiting.proc.returncode == 0, "the pre-started process ran trial 1"
    assert launcher._waiting is None


def test_a_process_that_died_while_waiting_is_replaced(
    launcher: TrialLauncher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "die-waiting")
    launcher.start_next()
    dead = launcher._waiting
    assert dead is not None
    dead.proc.wait(timeout=30)
    monkeypatch.delenv("FAKE_MODE")
    outcome, _ = launcher.run(_task(tmp_path), _trial_dir(tmp_path), on_line=lambda _: None, start_next=False)
    assert outcome.state == "COMPLETE", outcome.reason


def test_a_process_that_dies_on_its_task_fails_the_trial_with_the_reason(
    launcher: TrialLauncher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "segv")
    outcome, _ = launcher.run(_task(tmp_path), _trial_dir(tmp_path), on_line=lambda _: None, start_next=True)
    assert outcome.state == "FAIL"
    assert "died from SIGSEGV" in (outcome.reason or "")
    assert str(tmp_path / "trial0" / "stderr.0.log") in (outcome.reason or "")
    assert launcher._waiting is not None, "the next trial still gets its process started"


def test_close_ends_the_waiting_process_and_removes_its_empty_log(launcher: TrialLauncher) -> None:
    launcher.start_next()
    waiting = launcher._waiting
    assert waiting is not None
    launcher.close()
    assert not waiting.alive
    assert not waiting.stderr_path.exists()
    launcher.close()  # twice is fine


def test_a_process_runs_one_task_only(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    process = TrialProcess.start(tmp_path, (sys.executable, str(script)))
    task = _task(tmp_path)
    _trial_dir(tmp_path)
    path = task.save(tmp_path / "task.json")
    assert process.hand(path, tmp_path / "stderr.log")
    with pytest.raises(RuntimeError, match="one task only"):
        process.hand(path, tmp_path / "stderr.log")
    assert process.follow(lambda _: None) == 0


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (-11, "died from SIGSEGV"),
        (-9, "died from SIGKILL (killed: out of memory?)"),
        (1, "exited with code 1 before reporting"),
        (None, "did not exit"),
    ],
)
def test_describe_exit(code: int | None, text: str) -> None:
    assert describe_exit(code) == text
