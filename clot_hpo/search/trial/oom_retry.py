"""A trial that ran out of GPU memory at run time: retried once at half the batch.

The VRAM plan is an estimate; when a trial still runs out of memory, the study process
runs it once more at half the batch with gradient accumulation keeping the effective batch
(:func:`clot_hpo.budget.halve_for_oom`), in a fresh process, before it fails the trial.
The launcher (:meth:`~clot_hpo.search.trial.launcher.TrialLauncher.run`) is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
from rich.console import Console

from clot_hpo.checkpoint_file import read_header
from clot_hpo.errors import ConfigError
from clot_hpo.search.optuna_compat import trial_user_attrs
from clot_hpo.search.trial.task import TrialOutcome, TrialTask
from clot_hpo.tracking.spool import SpoolReader

Launch = Callable[[TrialTask], tuple[TrialOutcome, Callable[[], None] | None]]
"""Runs a task in a trial process: what :meth:`TrialLauncher.run` returns."""


def run_with_oom_retry(
    launch: Launch,
    task: TrialTask,
    *,
    study: optuna.Study,
    trial: optuna.Trial,
    console: Console,
    spool: SpoolReader | None = None,
) -> tuple[TrialOutcome, Callable[[], None] | None]:
    """Run ``task``; after a runtime OOM, once more at half the batch with gradient accumulation.

    Args:
        launch: runs a task in a fresh trial process.
        task: the trial's task; changed in place into the retry's (attempt 1, the halved batch).
        study: the study (the trial's budget attributes are read fresh from its storage).
        trial: the trial.
        console: where the retry is announced.
        spool: the trial's spool reader; the retry spools into a fresh folder it follows.

    Returns:
        What ``launch`` returned for the last attempt; a failed one's reason says why there
        was no retry, or that the retry ran out of memory too.
    """
    from clot_hpo.budget import BudgetDecision, halve_for_oom

    first, rest = launch(task)
    if first.state != "FAIL" or not first.oom:
        return first, rest
    try:
        decision = BudgetDecision.from_attrs(trial_user_attrs(study, trial), prefix="budget_")
    except ConfigError:  # the child died before it planned: nothing to halve
        return first, None
    batch = first.batch_size or decision.batch_size
    retry = halve_for_oom(decision)
    if retry is None:
        first.reason = f"out of memory at batch {batch} and no smaller batch is allowed: {first.reason}"
        return first, None
    new_batch, accumulation = retry.batch_size, retry.accumulation_steps
    trial.set_user_attr("oom_retry", f"batch {batch} -> {new_batch} x{accumulation} accumulation")
    console.print(
        f"  [yellow]trial {task.trial_number} ran out of memory; retrying at batch "
        f"{new_batch} with {accumulation} accumulation steps[/]"
    )
    task.attempt = 1
    task.batch_override, task.accumulation_override = new_batch, accumulation
    if task.checkpoint_path and read_header(task.checkpoint_path) is not None:
        # Out of memory after some epochs: the retry keeps them (docs/preemption.md).
        task.resume_from, task.resume_trial = task.checkpoint_path, task.trial_number
    task.result_path = str(Path(task.result_path).with_name("outcome.retry.json"))
    if spool is not None:  # the retry spools into a fresh folder; the reader follows both
        task.spool_dir = str(spool.new_attempt())
    second, rest = launch(task)
    # Both attempts' phases count: the retry's first epoch traces again.
    for key, value in first.timings.items():
        second.timings[key] = round(second.timings.get(key, 0.0) + value, 3)
    if second.state == "FAIL" and second.oom:
        second.reason = f"out of memory again at batch {new_batch} after the retry: {second.reason}"
    return second, rest
