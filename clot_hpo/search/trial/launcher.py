"""The trial processes a study process supervises: started ahead, handed one task, then discarded.

Every trial runs in a fresh interpreter (``python -m clot_hpo.search.trial.process --wait``):
a crash or an out-of-memory kill costs one trial, and the study process never holds a model.
Starting that interpreter and importing TensorFlow, Keras, Optuna and scikit-learn takes
seconds, so :class:`TrialLauncher` starts the *next* trial's process while the current trial
trains: it imports everything, then waits for one line on its stdin, the path of its task
file. It runs that one trial and exits; a process is never reused (its memory would grow
with every model, see :mod:`clot_hpo.search.trial.process`).

- A waiting process whose study process dies sees the end of its stdin and exits.
- Ctrl-C reaches every process of the terminal's group: the running trial records it, a
  waiting process just exits; :meth:`TrialLauncher.close` terminates whatever is left.
- A process that died while it waited (it had no task yet) is replaced by a fresh one; the
  trial never sees it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from clot_hpo.budget.gpu import is_oom_exit
from clot_hpo.search.trial.task import OUTCOME_WRITTEN, TrialOutcome, TrialTask
from clot_hpo.search.trial.timing import SPAWNED_AT_ENV

log = logging.getLogger(__name__)

TRIAL_MODULE = "clot_hpo.search.trial.process"
# What a waiting trial process runs: it reads its task file's path from stdin.
TRIAL_COMMAND = (sys.executable, "-m", TRIAL_MODULE, "--wait")
# How long a process gets to end after SIGTERM before it is killed.
STOP_SECONDS = 15.0
DISCARD_SECONDS = 3.0


class TrialProcess:
    """One trial's child process, from its start (maybe before its task exists) to its exit."""

    def __init__(self, proc: subprocess.Popen[str], stderr_path: Path, started: float) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.started = started
        self.handed = False

    @classmethod
    def start(
        cls, folder: Path, command: tuple[str, ...] = TRIAL_COMMAND, env: dict[str, str] | None = None
    ) -> TrialProcess:
        """Start a process that prepares itself, then waits for its task on stdin.

        Its stderr goes to a file in ``folder`` until :meth:`hand` moves it to the trial's folder;
        ``env`` adds to this process's environment.
        """
        folder.mkdir(parents=True, exist_ok=True)
        stderr_path = folder / f"waiting.{uuid.uuid4().hex[:12]}.stderr.log"
        started = time.time()
        env = {**os.environ, **(env or {}), SPAWNED_AT_ENV: repr(started)}
        with open(stderr_path, "w", encoding="utf-8") as stderr:
            proc = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
                env=env,
            )
        return cls(proc, stderr_path, started)

    @property
    def alive(self) -> bool:
        """Whether the process has not exited."""
        return self.proc.poll() is None

    def hand(self, task_path: Path, stderr_path: Path) -> bool:
        """Give the process its one task; False when it died before it could take it.

        Its stderr file moves to ``stderr_path`` (the trial's folder): the open file follows.
        """
        if self.handed:
            raise RuntimeError("a trial process runs one task only; this one already has its task")
        if not self.alive:
            return False
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{task_path}\n")
            self.proc.stdin.close()  # one task: the process reads one line
        except (BrokenPipeError, OSError):
            return False
        self.handed = True
        try:
            os.replace(self.stderr_path, stderr_path)
            self.stderr_path = stderr_path
        except OSError as exc:  # e.g. another filesystem: the log stays where it is
            log.debug("could not move %s to %s: %s", self.stderr_path, stderr_path, exc)
        return True

    def follow(self, on_line: Callable[[str], None], *, until: str | None = None) -> int | None:
        """Pass each line the process prints to ``on_line`` until it exits; return its exit code.

        At a line equal to ``until`` it returns None instead, leaving the process running; a
        later call follows the rest.
        """
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if until is not None and line.rstrip("\n") == until:
                return None
            on_line(line)
        return self.proc.wait()

    def stop(self, grace: float = STOP_SECONDS) -> None:
        """SIGTERM (the trial process records an interruption), then SIGKILL after ``grace`` s."""
        if self.alive:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):  # a broken pipe: nothing left to flush
                    stream.close()

    def discard(self) -> None:
        """End a process that never got a task, and remove its log unless it says something."""
        self.stop(grace=DISCARD_SECONDS)
        try:
            if self.stderr_path.stat().st_size == 0 or self.proc.returncode in (0, -signal.SIGTERM):
                self.stderr_path.unlink()
        except OSError:
            pass


class TrialLauncher:
    """Hands tasks to trial processes, keeping the next one started while a trial trains.

    Args:
        folder: where waiting processes keep their stderr (``<study>/workers``).
        prestart: start the next trial's process ahead of its task.
        command: what a trial process runs (tests replace it).
        env: added to the trial processes' environment (e.g. the storage to open ahead).
    """

    def __init__(
        self,
        folder: Path,
        *,
        prestart: bool = True,
        command: tuple[str, ...] = TRIAL_COMMAND,
        env: dict[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.prestart = prestart
        self.command = command
        self.env = dict(env or {})
        self._waiting: TrialProcess | None = None
        # Told the PID of the process running a trial, and None once it reported: the study
        # process passes SIGTERM on to it (clot_hpo.search.trial.resume.GracefulStop).
        self.on_handed: Callable[[int | None], None] | None = None

    def take(self) -> TrialProcess:
        """The waiting process if it is alive, else a fresh one."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None and waiting.alive:
            return waiting
        if waiting is not None:  # died while it waited: nothing was lost but its start
            log.warning(
                "a waiting trial process exited with %s before its task (log: %s); starting another",
                waiting.proc.returncode,
                waiting.stderr_path,
            )
        return TrialProcess.start(self.folder, self.command, self.env)

    def start_next(self) -> None:
        """Start the next trial's process now (if pre-starting is on and none is waiting)."""
        if self.prestart and self._waiting is None:
            self._waiting = TrialProcess.start(self.folder, self.command, self.env)

    def close(self) -> None:
        """End the waiting process, if any."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.discard()

    def run(
        self,
        task: TrialTask,
        trial_dir: Path,
        *,
        on_line: Callable[[str], None],
        start_next: bool,
    ) -> tuple[TrialOutcome, Callable[[], None] | None]:
        """Run ``task`` in a trial process; a process that dies becomes a FAIL outcome.

        Args:
            task: the trial's task; ``handed_at`` is set here.
            trial_dir: the trial's folder (task file, stderr log).
            on_line: called with each line the process prints.
            start_next: start the next trial's process as soon as this one has its task: its
                imports (one core, mostly) overlap this trial's work, whose setup and
                tracing are mostly single-threaded Python as well.

        Returns:
            The outcome, and what waits for the rest of the process's work when it reported
            its outcome before finishing (the evaluation's intervals and figures, see
            :data:`~clot_hpo.search.trial.task.OUTCOME_WRITTEN`): call it before reading the trial's
            spool for the last time. None when the process has exited.
        """
        Path(task.result_path).unlink(missing_ok=True)
        stderr_path = trial_dir / f"stderr.{task.attempt}.log"
        process = self.take()
        task.handed_at = time.time()
        task_path = task.save(trial_dir / f"task.{task.attempt}.json")
        if not process.hand(task_path, stderr_path):
            process.discard()
            process = TrialProcess.start(self.folder, self.command, self.env)
            if not process.hand(task_path, stderr_path):
                process.stop()
                reason = (
                    f"trial process {describe_exit(process.proc.returncode)} "
                    f"before it could take its task (stderr: {process.stderr_path})"
                )
                return TrialOutcome(state="FAIL", reason=reason), None
        if self.on_handed is not None:
            self.on_handed(process.proc.pid)
        if start_next:
            self.start_next()
        try:
            returncode = process.follow(on_line, until=OUTCOME_WRITTEN)
        except KeyboardInterrupt:
            process.stop()
            raise
        finally:
            if self.on_handed is not None:
                self.on_handed(None)
        outcome = TrialOutcome.load(task.result_path)
        if returncode is None and outcome is not None:
            return outcome, functools.partial(_finish, process, on_line, task.trial_number)
        if returncode is None:  # the line came without an outcome: follow the process to its end
            returncode = process.follow(on_line)
            outcome = TrialOutcome.load(task.result_path)
        if outcome is not None:
            return outcome, None
        failed = TrialOutcome(
            state="FAIL",
            reason=f"trial process {describe_exit(returncode)} (stderr: {process.stderr_path})",
            # The kernel's OOM killer sends SIGKILL; TensorFlow may abort with an OOM message.
            oom=is_oom_exit(returncode, tail(process.stderr_path)),
        )
        return failed, None


def _finish(process: TrialProcess, on_line: Callable[[str], None], number: int) -> None:
    """Follow a process that reported its outcome to its end; say so when that end went wrong."""
    returncode = process.follow(on_line)
    if returncode != 0:
        log.warning(
            "trial %d's process %s after reporting its outcome: its run may lack the evaluation's "
            "intervals and figures (stderr: %s)",
            number,
            describe_exit(returncode),
            process.stderr_path,
        )


def tail(path: Path, size: int = 4000) -> str:
    """The last ``size`` characters of a text file ("" when it does not exist)."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return text[-size:]


def describe_exit(returncode: int | None) -> str:
    """``"died from SIGSEGV"``, ``"exited with code 1 before reporting"``, ..."""
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (killed: out of memory?)" if returncode == -signal.SIGKILL else ""
        return f"died from {name}{hint}"
    return f"exited with code {returncode} before reporting"
