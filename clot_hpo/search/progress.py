"""What a person watching a study sees: a progress bar and, at the end, the top trials."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from clot_hpo.search.objectives import Objective
from clot_hpo.util import FINISHED_TRIAL_STATES

_FINISHED = tuple(TrialState[name] for name in sorted(FINISHED_TRIAL_STATES))


def objective_value(trial: optuna.trial.FrozenTrial) -> float:
    """A completed trial's objective value, for sorting (NaN for a trial without one)."""
    return float("nan") if trial.value is None else trial.value


class StudyProgress:
    """A rich progress bar: trial k of N, best value so far, elapsed time and ETA."""

    def __init__(
        self, console: Console, study: optuna.Study, objective: Objective, n_trials: int | None
    ) -> None:
        self.study = study
        self.objective = objective
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("trials", total=n_trials, best="", start=True)

    def __enter__(self) -> StudyProgress:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def update(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Refresh the count of finished trials and the best value."""
        finished = sum(t.state in _FINISHED for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        best = ""
        if complete:
            pick = max if self.objective.direction == "maximize" else min
            top = pick(complete, key=objective_value)
            best = f"best {self.objective.name} {top.value:.4f} (trial {top.number})"
        self.progress.update(self.task, completed=finished, best=best, description="trials")

    def start_trial(self, number: int) -> None:
        """Say which trial runs now."""
        self.progress.update(self.task, description=f"trial {number}")

    def note(self, text: str) -> None:
        """Show a short status in place of the description."""
        self.progress.update(self.task, description=text)


def _fmt(attrs: dict[str, Any], key: str) -> str:
    value = attrs.get(key)
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def print_top_trials(console: Console, study: optuna.Study, objective: Objective, top: int = 5) -> None:
    """A table of the best completed trials, then a count of every state."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    complete.sort(key=objective_value, reverse=objective.direction == "maximize")
    table = Table(title=f"top trials of {study.study_name} by {objective.name}")
    for column in ("trial", "backbone", objective.name, "test AUC", "test sens.", "test spec.", "epochs"):
        table.add_column(column, justify="right")
    for t in complete[:top]:
        a = t.user_attrs
        table.add_row(
            str(t.number),
            str(a.get("backbone", "-")),
            f"{t.value:.4f}",
            _fmt(a, "test_auc"),
            _fmt(a, "test_sensitivity"),
            _fmt(a, "test_specificity"),
            str(a.get("epochs_run", "-")),
        )
    if complete:
        console.print(table)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    console.print("trials: " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n))
