"""What a person watching a study sees: a progress bar and, at the end, the top trials."""

from __future__ import annotations

from types import TracebackType

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

from clot_hpo.evaluate.catalogue import format_number, summary_metrics
from clot_hpo.search.objectives import Objective
from clot_hpo.search.workers import FINISHED
from clot_hpo.util import finite_float, rank_trials


def ranked(trials: list[optuna.trial.FrozenTrial], direction: str) -> list[optuna.trial.FrozenTrial]:
    """The completed trials, best first, by the one best-trial rule (:func:`~clot_hpo.util.rank_trials`)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return rank_trials(complete, value=lambda t: t.value, number=lambda t: t.number, direction=direction)


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
        finished = sum(t.state in FINISHED for t in trials)
        best = ""
        if top := ranked(trials, self.objective.direction)[:1]:
            best = f"best {self.objective.name} {top[0].value:.4f} (trial {top[0].number})"
        self.progress.update(self.task, completed=finished, best=best, description="trials")

    def start_trial(self, number: int) -> None:
        """Say which trial runs now."""
        self.progress.update(self.task, description=f"trial {number}")

    def note(self, text: str) -> None:
        """Show a short status in place of the description."""
        self.progress.update(self.task, description=text)


def print_top_trials(console: Console, study: optuna.Study, objective: Objective, top: int = 5) -> None:
    """A table of the best completed trials, then a count of every state."""
    trials = study.get_trials(deepcopy=False)
    complete = ranked(trials, objective.direction)
    shown = summary_metrics()
    table = Table(title=f"top trials of {study.study_name} by {objective.name}")
    for column in ("trial", "backbone", objective.name, *(f"test {m.label}" for m in shown), "epochs"):
        table.add_column(column, justify="right")
    for t in complete[:top]:
        a = t.user_attrs
        table.add_row(
            str(t.number),
            str(a.get("backbone", "-")),
            f"{t.value:.4f}",
            *(format_number(finite_float(a.get(m.key("test"))), 4) for m in shown),
            str(a.get("epochs_run", "-")),
        )
    if complete:
        console.print(table)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    console.print("trials: " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n))
