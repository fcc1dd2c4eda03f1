"""The metric catalogue: one entry per metric, and every list of metrics generated from it.

Like timm's ``register_model`` or scikit-learn's ``_scorer.py``, a metric is declared once,
with its name, display label, direction, kind of interval, format and computation. From
the catalogue come :func:`~clot_hpo.evaluate.metrics.binary_metrics` (the values a trial
logs), the MLflow keys (:func:`metric_keys`: ``test_auc``, ``test_auc_ci_low``, ...), the
tables of the trial, the report and the model card (:func:`table_metrics`), the short
views (:func:`summary_metrics`: a trial's outcome, the top trials, the card's summary, the
study run's headline) and the one interval format (:func:`format_estimate`).

Adding a metric is one :func:`register_metric` call with its computation, nothing else.
A computation takes the :class:`Scored` split and returns, by the entry's ``interval``:

* ``"wilson"``: ``(count, n)``, a proportion; its interval is Wilson's score interval;
* ``"bootstrap"``: a float; its interval is the percentile bootstrap over resampled
  ``(label, score)`` pairs (computed again on each resample);
* ``"derived"``: ``(value, low, high)``, a value that brings its own interval;
* ``"none"``: a float without an interval.

A computation may return None when its metric does not apply (the entry is then left out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

Direction = Literal["maximize", "minimize"]
IntervalKind = Literal["wilson", "bootstrap", "derived", "none"]
INTERVAL_KINDS: tuple[IntervalKind, ...] = ("wilson", "bootstrap", "derived", "none")
SPLITS = ("val", "test")
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"
MISSING = "–"


@dataclass(frozen=True)
class Scored:
    """One split's labels and scores at the decision threshold: what a computation reads.

    Attributes:
        y: 0/1 labels (int64). p: scores in [0, 1] (float64). threshold: ``p >= threshold``
        is positive. confidence: the interval level. prevalence: the deployment prevalence
        from ``evaluation.prevalence``, or None for the split's own.
    """

    y: np.ndarray
    p: np.ndarray
    threshold: float
    confidence: float = 0.95
    prevalence: float | None = None

    @cached_property
    def counts(self) -> tuple[int, int, int, int]:
        """``(tn, fp, fn, tp)`` at the threshold."""
        pred = self.p >= self.threshold
        pos = self.y == 1
        return (
            int(np.sum(~pred & ~pos)),
            int(np.sum(pred & ~pos)),
            int(np.sum(~pred & pos)),
            int(np.sum(pred & pos)),
        )

    @property
    def single_class(self) -> bool:
        """Whether the labels hold one class only (AUC is undefined)."""
        return bool(self.y.min() == self.y.max())

    @property
    def deployment_prevalence(self) -> float:
        """``prevalence`` when configured, else the split's share of positives."""
        return float(self.y.mean()) if self.prevalence is None else self.prevalence


Computation = Callable[[Scored], Any]


@dataclass(frozen=True)
class Metric:
    """One catalogue entry.

    Attributes:
        name: the key suffix (``auc`` -> ``val_auc``, ``test_auc``); lower case, ``[a-z0-9_]``.
        label: the column title people read (``AUC``).
        compute: the computation (see the module docstring for what it returns).
        direction: whether higher (``maximize``) or lower (``minimize``) is better.
        interval: the kind of interval (``wilson``, ``bootstrap``, ``derived`` or ``none``).
        digits: decimals shown.
        table: shown in the results tables (trial, report, model card).
        summary: shown in the short views (a trial's outcome, the top trials, the card's
            summary).
        headline: its test value is copied onto the study run as the best trial's
            (``best_test_auc``), and its column opens the MLflow UI's view.
        description: one sentence for the docs and the card.
    """

    name: str
    label: str
    compute: Computation
    direction: Direction = "maximize"
    interval: IntervalKind = "none"
    digits: int = 3
    table: bool = True
    summary: bool = False
    headline: bool = False
    description: str = ""

    @property
    def has_interval(self) -> bool:
        """Whether the metric is logged with ``_ci_low`` / ``_ci_high``."""
        return self.interval != "none"

    def key(self, split: str = "") -> str:
        """The MLflow key of the metric on a split (``test_auc``), or its bare name."""
        return f"{split}_{self.name}" if split else self.name

    def keys(self, split: str = "") -> tuple[str, ...]:
        """The metric's key and, when it has an interval, its bounds' keys."""
        key = self.key(split)
        return (key, key + CI_LOW, key + CI_HIGH) if self.has_interval else (key,)


_CATALOGUE: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to the catalogue (after the metrics already there); return it.

    Raises:
        ValueError: the name is taken, is not ``[a-z0-9_]``, or the interval kind or
            direction is unknown.
    """
    if metric.name in _CATALOGUE:
        raise ValueError(f"metric names must be unique, but {metric.name!r} is already in the catalogue")
    if not metric.name or not all(c.islower() or c.isdigit() or c == "_" for c in metric.name):
        raise ValueError(f"a metric name must be lower case letters, digits and _, but got {metric.name!r}")
    if metric.interval not in INTERVAL_KINDS:
        raise ValueError(f"`interval` must be one of {list(INTERVAL_KINDS)}, but got {metric.interval!r}")
    if metric.direction not in ("maximize", "minimize"):
        raise ValueError(f"`direction` must be maximize or minimize, but got {metric.direction!r}")
    _CATALOGUE[metric.name] = metric
    return metric


def unregister_metric(name: str) -> None:
    """Remove a metric (tests that register one take it out again)."""
    _CATALOGUE.pop(name, None)


def all_metrics() -> tuple[Metric, ...]:
    """Every metric, in catalogue order."""
    return tuple(_CATALOGUE.values())


def get_metric(name: str) -> Metric:
    """The entry called ``name`` (``auc``); a split prefix (``test_auc``) is allowed."""
    bare = name.removeprefix("val_").removeprefix("test_")
    if bare not in _CATALOGUE:
        raise KeyError(f"metric {name!r} is not in the catalogue ({', '.join(_CATALOGUE)})")
    return _CATALOGUE[bare]


def metric_names() -> tuple[str, ...]:
    """Every metric's name, in catalogue order."""
    return tuple(_CATALOGUE)


def table_metrics() -> tuple[Metric, ...]:
    """The metrics of the results tables (trial, report, model card)."""
    return tuple(m for m in _CATALOGUE.values() if m.table)


def summary_metrics() -> tuple[Metric, ...]:
    """The metrics of the short views (outcome, top trials, card summary, headline)."""
    return tuple(m for m in _CATALOGUE.values() if m.summary)


def headline_keys() -> tuple[str, ...]:
    """The best trial's test metrics the study run shows (``test_auc`` and its interval)."""
    return tuple(k for m in _CATALOGUE.values() if m.headline for k in m.keys("test"))


def metric_keys(split: str, *, summary: bool = False, intervals: bool = True) -> tuple[str, ...]:
    """The MLflow keys of a split's metrics (``test_auc``, ``test_auc_ci_low``, ...)."""
    chosen = summary_metrics() if summary else all_metrics()
    return tuple(k for m in chosen for k in (m.keys(split) if intervals else (m.key(split),)))


# ----- the one format ---------------------------------------------------------------------------
def format_number(value: float | None, digits: int = 3) -> str:
    """``0.912``; ``–`` for a missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}f}"


def format_interval(low: float | None, high: float | None, digits: int = 3) -> str:
    """``0.871–0.941``; ``–`` when a bound is missing."""
    if low is None or high is None:
        return MISSING
    return f"{format_number(low, digits)}–{format_number(high, digits)}"


def format_estimate(values: Mapping[str, float | None], key: str, digits: int | None = None) -> str:
    """``0.912 (0.871–0.941)``: the metric ``key`` of ``values`` and its interval; ``–`` when absent.

    The digits are the catalogue's for the metric (3 for a key the catalogue lacks).
    """
    point = values.get(key)
    if point is None:
        return MISSING
    if digits is None:
        try:
            digits = get_metric(key).digits
        except KeyError:
            digits = 3
    low, high = values.get(key + CI_LOW), values.get(key + CI_HIGH)
    text = format_number(point, digits)
    return text if low is None or high is None else f"{text} ({format_interval(low, high, digits)})"


def format_level(confidence: float) -> str:
    """An interval's level as people write it: 0.95 -> ``95%``, 0.975 -> ``97.5%``."""
    return f"{confidence * 100:.10g}%"


def prevalence_text(prevalence: float | None) -> str:
    """Where PPV and NPV are taken: ``at a prevalence of 0.1 (evaluation.prevalence)`` or the split's own."""
    if prevalence is None:
        return "at each split's own prevalence (evaluation.prevalence not set)"
    return f"at a prevalence of {prevalence:g} (evaluation.prevalence)"


def interval_note(confidence: float, n_bootstrap: int, prevalence: float | None = None) -> str:
    """How the intervals were computed, in one sentence built from the catalogue."""
    kinds: dict[str, list[str]] = {}
    for m in all_metrics():
        kinds.setdefault(m.interval, []).append(m.label)
    parts = []
    if "wilson" in kinds:
        parts.append(f"Wilson for {', '.join(kinds['wilson'])}")
    if "bootstrap" in kinds:
        parts.append(f"percentile bootstrap ({n_bootstrap} resamples) for {', '.join(kinds['bootstrap'])}")
    if "derived" in kinds:
        parts.append(
            "Bayes' rule on the sensitivity and specificity Wilson bounds for "
            + f"{', '.join(kinds['derived'])}, {prevalence_text(prevalence)}"
        )
    return f"{format_level(confidence)} intervals: " + "; ".join(parts) + "."
