"""Study-level artifacts: the all-trials CSV and Optuna's plots, handed to the tracker."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from clot_hpo.tracking.base import Tracker

log = logging.getLogger(__name__)


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optimization history, parameter importances and parallel coordinates (matplotlib).

    Each plot needs enough completed trials; a plot that cannot be drawn yet is left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    # Any: the figure is reached through ``ax.figure`` or, for a grid of axes, ``ax.flat[0]``.
    plots: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history.png": ovm.plot_optimization_history
    }
    if len(complete) >= 2:
        plots["param_importances.png"] = ovm.plot_param_importances
        plots["parallel_coordinate.png"] = ovm.plot_parallel_coordinate
    figures: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is "experimental" in Optuna
        for name, plot in plots.items():
            try:
                ax = plot(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(10, 6)
                fig.tight_layout()
                figures[name] = fig
            except Exception as exc:  # noqa: BLE001 - a missing plot must not fail the study
                log.info("skipped %s: %s", name, exc)
    return figures


def summarize_study(study: optuna.Study, *, tracker: Tracker, out_dir: Path) -> Path | None:
    """Write ``trials.csv`` and hand it and the study plots to the tracker."""
    if not study.get_trials(deepcopy=False):
        return None
    csv = out_dir / "trials.csv"
    study.trials_dataframe().to_csv(csv, index=False)
    try:
        figures = study_figures(study)
        tracker.log_study_summary(csv, figures)
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    return csv
