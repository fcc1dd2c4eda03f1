"""Where a trial's time goes: one wall-clock figure per phase, kept on the trial and its run.

The trial process measures its phases with :class:`PhaseTimer`; the figures travel back in the
:class:`~clot_hpo.search.trial.task.TrialOutcome` and the study process records them as Optuna user
attributes ``time_<phase>`` and as MLflow metrics ``time_<phase>_s`` of the trial's run.
``benchmarks/trial_overhead.py`` tabulates them; ``docs/performance.md`` explains each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

# In the order a trial goes through them. `startup` may overlap the previous trial (the process
# is started ahead of its task); `startup_waited` is the part of it the trial waited for.
PHASES: dict[str, str] = {
    "startup": "interpreter start, imports and preloading, until the process was ready for a task",
    "startup_waited": "from the task being handed over to the process reading it (0 s: started in time)",
    "setup": "the config, the seeds, loading the study and sampling the hyperparameters",
    "build": "building and compiling the model",
    "vram_estimate": "the VRAM plan, read from the built model",
    # After the plan: a trial the budget prunes decodes nothing.
    "data": "decoded images from the study's cache (decoding them on a cache miss)",
    "first_epoch": "epoch 1, with tracing the training and validation steps",
    "later_epochs": "every epoch after the first",
    # Intervals and figures come after the outcome without a GPU, before it with one.
    "evaluate": "predictions on validation and test, threshold and metrics (with a GPU: intervals, figures)",
    "save_model": "saving the model into the trial's spool",
    "total": "from the task being handed over to the outcome being written",
}
# Set by the study process in the environment of each trial process it starts: time.time() then.
SPAWNED_AT_ENV = "CLOT_HPO_SPAWNED_AT"


class PhaseTimer:
    """Wall-clock seconds per phase; a phase measured twice (OOM retry, schedule) adds up.

    Args:
        origin: ``time.time()`` when the first phase began (default: now).
    """

    def __init__(self, origin: float | None = None) -> None:
        self.origin = time.time() if origin is None else origin
        self._mark = self.origin
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        """Add ``seconds`` to ``phase``."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {list(PHASES)}, but got {phase!r}")
        self.seconds[phase] = self.seconds.get(phase, 0.0) + max(0.0, float(seconds))

    def lap(self, phase: str) -> float:
        """Charge the time since the previous lap (or the origin) to ``phase``; return it."""
        now = time.time()
        elapsed = now - self._mark
        self._mark = now
        self.add(phase, elapsed)
        return elapsed

    def restart(self, at: float | None = None) -> None:
        """Start the next lap at ``at`` (default: now) without charging the time in between."""
        self._mark = time.time() if at is None else at

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the time spent in the ``with`` block to ``name``."""
        self.restart()
        try:
            yield
        finally:
            self.lap(name)

    def attrs(self) -> dict[str, float]:
        """``time_<phase>`` -> seconds (rounded to ms), in phase order: for Optuna user attributes."""
        return {f"time_{p}": round(self.seconds[p], 3) for p in PHASES if p in self.seconds}


def metric_names(attrs: dict[str, float]) -> dict[str, float]:
    """``time_<phase>`` -> ``time_<phase>_s``: the MLflow metric names (units in the name)."""
    return {f"{key}_s": value for key, value in attrs.items() if key.startswith("time_")}


def process_started_at() -> float | None:
    """When this process started (``time.time()`` scale), or None off Linux.

    The study process sets :data:`SPAWNED_AT_ENV` just before starting a trial process, which
    also counts the interpreter's own start; ``/proc`` is the fallback for a process started
    by hand.
    """
    given = os.environ.get(SPAWNED_AT_ENV)
    if given:
        try:
            return float(given)
        except ValueError:
            pass
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(float(line.split()[1]) for line in fh if line.startswith("btime"))
        with open("/proc/self/stat", encoding="ascii") as fh:
            # Field 22 (starttime), counted after the command name, which may hold spaces.
            started = int(fh.read().rsplit(")", 1)[1].split()[19])
        return boot + started / ticks
    except (OSError, ValueError, StopIteration, IndexError):
        return None
