"""What the MLflow UI shows when a user opens a study: its runs grouped, and a chart view.

MLflow 3's UI reads a "shared view" from the experiment tag ``mlflow.sharedViewState.<key>``
when the URL says ``viewStateShareKey=<key>`` (`ui_links` prints such URLs). The view is the
UI's private state, not an API: this module is the one place that writes it, checked against
MLflow 3.17's UI in a browser by ``tests/integration/test_tracking_ui.py``. Upstream:
https://github.com/mlflow/mlflow/blob/master/mlflow/server/js/src/experiment-tracking/components/experiment-page/models/ExperimentPageUIState.tsx
(the keys, and those a shared view leaves out) and
https://github.com/mlflow/mlflow/blob/master/mlflow/server/js/src/experiment-tracking/components/runs-charts/runs-charts.types.ts
(a chart's fields).

* ``groupBy`` the study tag: the UI keeps which parent runs are expanded (``runsExpanded``)
  in the browser only and leaves it out of shared views, so a study's trials are listed in
  a run group named after the study instead, which opens expanded;
* ``compareRunCharts`` / ``compareRunSections``: a first section with the objective per epoch
  for every trial, a parallel-coordinates chart of the searched hyperparameters against the
  objective value, and the headline test metric with its interval bounds; the UI adds a chart
  for every other metric by itself, into its "Model metrics" section, which starts collapsed;
* the columns of the runs table: the headline metrics, then the trial's state.

A pruned trial's run ends FINISHED (MLflow draws KILLED as a failure) and
:func:`pruned_run_tags` names it ``trial-<n> (pruned at epoch <e>)``; the Optuna state stays
in the tag ``optuna.trial_state``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clot_hpo.tracking.headline import headline_metric_names
from clot_hpo.tracking.tags import (
    METRIC_VALUE,
    TAG_NOTE,
    TAG_PRUNED_AT_EPOCH,
    TAG_RUN_NAME,
    TAG_STUDY,
    TAG_TRIAL_STATE,
)

CI_SUFFIXES = ("_ci_low", "_ci_high")
STUDY_SECTION = "Study"
# The UI's names for the sections it fills with one chart per metric by itself.
UI_SECTIONS = ("Model metrics", "System metrics")
# Runs a chart draws (the UI's default is the first 10).
CHART_RUNS = 1000


def _chart(kind: str, name: str, uuid: str, **fields: Any) -> dict[str, Any]:
    """One chart of the study's section (the UI's ``RunsChartsCardConfig``, serialized)."""
    return {
        "uuid": f"clot-hpo-{uuid}",
        "type": kind,
        "displayName": name,
        "runsCountToCompare": CHART_RUNS,
        "metricSectionId": f"clot-hpo-{STUDY_SECTION.lower()}",
        "deleted": False,
        "isGenerated": False,
        **fields,
    }


def _line(key: str) -> dict[str, Any]:
    return _chart(
        "LINE",
        f"{key} per epoch",
        f"line-{key}",
        metricKey=key,
        selectedMetricKeys=[key],
        xAxisKey="step",
        xAxisScaleType="linear",
        scaleType="linear",
        lineSmoothness=0,
        selectedXAxisMetricKey="",
        yAxisKey="metric",
        yAxisExpressions=[],
        ignoreOutliers=False,
        useGlobalXaxisKey=False,
        useGlobalLineSmoothing=False,
        range={},
    )


def _bar(key: str, name: str) -> dict[str, Any]:
    return _chart("BAR", name, f"bar-{key}", metricKey=key)


def study_charts(
    objective: str | None, headline: Sequence[str], params: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """The charts of the study's section, in order.

    The objective per epoch (``val_auc``) for every trial, then the validation metric of
    each headline test metric when it differs; a parallel-coordinates chart of each list of
    ``params`` against the objective value (``value``: completed trials only, as Optuna
    plots them); the headline test metrics (``test_auc``) with their interval bounds, one
    bar per completed trial.
    """
    points = [key for key in headline if not key.endswith(CI_SUFFIXES)]
    lines = [objective or METRIC_VALUE, *(f"val_{key.removeprefix('test_')}" for key in points)]
    charts = [_line(key) for key in dict.fromkeys(lines)]
    for label, names in params.items():
        if names:
            charts.append(
                _chart(
                    "PARALLEL",
                    f"{label or 'searched hyperparameters'} against the objective",
                    f"parallel-{label}" if label else "parallel",
                    selectedParams=list(names),
                    selectedMetrics=[METRIC_VALUE],
                    showAllRuns=False,
                )
            )
    for key in points:
        charts.append(_bar(key, key))
        for suffix, bound in zip(CI_SUFFIXES, ("lower", "upper"), strict=True):
            if key + suffix in headline:
                charts.append(_bar(key + suffix, f"{key}: {bound} bound of its interval"))
    return charts


def _section(name: str, *, display: bool, generated: bool) -> dict[str, Any]:
    """One chart section (an accordion; ``display``: open)."""
    uuid = f"clot-hpo-{name.lower().replace(' ', '-')}"
    return {
        "uuid": uuid,
        "name": name,
        "display": display,
        "isReordered": not generated,
        "deleted": False,
        "isGenerated": generated,
    }


def _sections() -> list[dict[str, Any]]:
    """The study's section open first; the UI's own sections closed below it."""
    rest = [_section(name, display=False, generated=True) for name in UI_SECTIONS]
    return [_section(STUDY_SECTION, display=True, generated=False), *rest]


def ui_view_state(
    objective: str | None,
    headline: Sequence[str] = (),
    *,
    direction: str | None = None,
    params: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The MLflow UI's shared view of a study (JSON): see the module's docstring.

    Args:
        objective: the metric the trials log per epoch and the study optimizes (``val_auc``).
        headline: the best trial's test metrics the study run shows (``test_auc`` and its
            interval bounds), from the metric catalogue.
        direction: ``"maximize"`` or ``"minimize"``: a group's row shows its best trial's
            value (max or min); the mean without it.
        params: the searched hyperparameters, one parallel-coordinates chart per entry
            (:func:`searched_parameters`).
    """
    # The study run's headline first, then the trials' own objective and test metrics.
    points = [key for key in headline if not key.endswith(CI_SUFFIXES)]
    names = [*headline_metric_names(objective, headline), objective or METRIC_VALUE, *points]
    columns = [*(f"metrics.`{name}`" for name in names), f"tags.`{TAG_TRIAL_STATE}`"]
    aggregate = {"maximize": "max", "minimize": "min"}.get(direction or "", "average")
    charts = study_charts(objective, headline, params or {})
    return json.dumps(
        {
            "selectedColumns": columns,
            "columnOrder": columns,
            "groupBy": {
                "aggregateFunction": aggregate,
                "groupByKeys": [{"mode": "tag", "groupByData": TAG_STUDY}],
            },
            # Oldest first: the study run heads its group, then trial-0, trial-1, ...
            "orderByKey": "attributes.start_time",
            "orderByAsc": True,
            "useGroupedValuesInCharts": False,  # a line per trial, not the group's mean
            "runsHiddenMode": "SHOW_ALL",
            "hideEmptyCharts": True,
            "compareRunCharts": charts,
            "compareRunSections": _sections(),
            "isAccordionReordered": False,
        }
    )


def searched_parameters(search_spaces: Mapping[str, Any]) -> dict[str, list[str]]:
    """The parallel-coordinates charts of a study: a label and the parameters each one draws.

    The UI leaves out of such a chart a run that lacks one of its parameters, so a chart
    draws the parameters without a ``when`` condition that the space searches (not
    ``fixed``), as the trials log them. A study of one backbone gets one chart (label "").
    A study of several logs each backbone's parameters under ``<backbone>.<name>`` (the
    hypermodel's scope), so it gets a chart of ``backbone`` against the objective and one
    chart per backbone (its trials only).

    Args:
        search_spaces: backbone -> its space (a YAML file's path or the parsed mapping), as
            ``log_study_inputs`` receives them. A space that cannot be read is skipped.
    """
    from clot_hpo.search_space import load_search_space, parse_search_space

    spaces = {}
    for backbone, space in search_spaces.items():
        try:
            is_file = isinstance(space, (str, Path)) and Path(space).is_file()
            spaces[str(backbone)] = load_search_space(space) if is_file else parse_search_space(space)
        except Exception:  # noqa: BLE001  (the view is a convenience; the search already checked them)
            continue
    searched = {
        backbone: [n for n, spec in space.parameters.items() if spec.when is None and spec.type != "fixed"]
        for backbone, space in spaces.items()
    }
    if len(search_spaces) == 1:
        return {"": next(iter(searched.values()), [])}
    return {"backbone": ["backbone"]} | {b: [f"{b}.{n}" for n in names] for b, names in searched.items()}


def pruned_run_tags(number: int | None, epoch: int | None, reason: str | None) -> dict[str, str]:
    """The tags that make a pruned trial's run read as pruned in the UI.

    Args:
        number: the trial's number (``trial-<n>``); None keeps the run's name.
        epoch: the last epoch it trained, counted from 1; 0 when it stopped before training
            (e.g. by the VRAM budget); None when unknown.
        reason: the pruner's words (``pruned at epoch 2 with val_auc=0.6123``).
    """
    where = "" if epoch is None else f" at epoch {epoch}" if epoch > 0 else " before training"
    tags = {TAG_NOTE: f"Pruned by the study{where}" + (f": {reason}" if reason else ".")}
    if epoch is not None:
        tags[TAG_PRUNED_AT_EPOCH] = str(epoch)
    if number is not None:
        tags[TAG_RUN_NAME] = f"trial-{number} (pruned{where})"
    return tags


__all__ = ["pruned_run_tags", "searched_parameters", "study_charts", "ui_view_state"]
