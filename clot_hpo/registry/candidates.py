"""Choosing what to promote: the metric and its direction, and the trial runs ranked by it.

The metric is the one the experiment's studies optimized, in the direction they recorded
(the study runs' tags ``clot_hpo.objective`` and ``optuna.direction``). Runs are ranked by
the one best-trial rule, :func:`clot_hpo.util.rank_trials` (ties go to the lower trial number).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.tracking.store import MlflowClient, MlflowException, search_all_runs
from clot_hpo.tracking.study_reader import LedgerFacts
from clot_hpo.tracking.tags import (
    DIRECTIONS,
    ROLE_STUDY,
    ROLE_TRIAL,
    TAG_DIRECTION,
    TAG_MODEL_ID,
    TAG_OBJECTIVE,
    TAG_OPTUNA_STUDY,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
)
from clot_hpo.util import finite_float, rank_trials


@dataclass
class PromotionCandidate:
    """A finished trial run with the promotion metric and a logged model.

    Attributes:
        run: the trial's MLflow run.
        value: its metric: the tracking server's, then the ledger's once vouched for.
        model_id: the MLflow model the run logged.
        entry: the trial as the Optuna storage records it, once vouched for.
    """

    run: Any
    value: float
    model_id: str
    entry: LedgerFacts | None = None

    @property
    def trial_number(self) -> int | None:
        """The run's trial number tag, when it is a number."""
        raw = self.run.data.tags.get(TAG_TRIAL_NUMBER)
        return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None

    @property
    def who(self) -> str:
        """The trial in words: ``trial 3 of study 's'``."""
        tags = self.run.data.tags
        return f"trial {self.trial_number} of study {tags.get(TAG_OPTUNA_STUDY) or tags.get(TAG_STUDY)!r}"

    @property
    def vouched(self) -> LedgerFacts:
        """:attr:`entry`, which the ledger's check has set before anything uses it."""
        assert self.entry is not None, f"{self.who} was not checked against the Optuna storage"
        return self.entry


# ----- what the study optimized -------------------------------------------------------------
def recorded_objectives(client: MlflowClient, experiment_id: str) -> dict[str, set[str]]:
    """Metric -> directions, as the experiment's study runs recorded them (tags on the parent)."""
    out: dict[str, set[str]] = {}
    for run in search_all_runs(client, experiment_id, f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}'"):
        objective, direction = run.data.tags.get(TAG_OBJECTIVE), run.data.tags.get(TAG_DIRECTION)
        if objective and direction:
            out.setdefault(objective, set()).add(direction)
    return out


def resolve_direction(
    recorded: dict[str, set[str]], experiment: str, metric: str | None, direction: str | None
) -> tuple[str, str]:
    """The metric to rank trials by and whether higher or lower is better.

    The metric defaults to the one the experiment's studies optimized. Its direction is the
    one the studies recorded; ``direction`` is needed only for a metric no study recorded,
    and must agree with a recorded one.

    Raises:
        ConfigError: the metric or its direction cannot be told, or contradicts the record.
    """
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(f"--direction must be one of {list(DIRECTIONS)}, but got {direction!r}")
    seen = ", ".join(f"{m} ({'/'.join(sorted(d))})" for m, d in sorted(recorded.items())) or "none"
    if metric is None:
        if len(recorded) != 1:
            raise ConfigError(
                f"experiment {experiment!r}: the metric to promote by must be the one its studies "
                f"optimized, but they recorded {seen}; pass --metric (and --direction for a metric "
                "no study recorded)"
            )
        metric = next(iter(recorded))
    directions = recorded.get(metric, set())
    if len(directions) > 1:
        raise ConfigError(
            f"experiment {experiment!r}: studies optimized {metric!r} in both directions "
            f"({sorted(directions)}); promote from one study's experiment"
        )
    if directions:
        [study_direction] = directions
        if direction is not None and direction != study_direction:
            raise ConfigError(
                f"--direction {direction} contradicts experiment {experiment!r}, whose studies "
                f"{study_direction} {metric!r}"
            )
        return metric, study_direction
    if direction is None:
        raise ConfigError(
            f"experiment {experiment!r}: no study recorded a direction for {metric!r} (recorded: {seen}); "
            "pass --direction maximize or --direction minimize"
        )
    return metric, direction


# ----- candidates ---------------------------------------------------------------------------
def _model_id_of(run: Any) -> str | None:
    model_id = run.data.tags.get(TAG_MODEL_ID)
    if model_id:
        return str(model_id)
    outputs = getattr(run, "outputs", None)
    models = getattr(outputs, "model_outputs", None) or []
    return str(models[-1].model_id) if models else None


def rank(candidates: Iterable[PromotionCandidate], direction: str) -> list[PromotionCandidate]:
    """Best first, by the one best-trial rule (:func:`clot_hpo.util.rank_trials`)."""
    return rank_trials(
        candidates, value=lambda c: c.value, number=lambda c: c.trial_number, direction=direction
    )


def finished_candidates(
    client: MlflowClient, exp_id: str, metric: str, direction: str
) -> tuple[list[PromotionCandidate], int]:
    """Finished trial runs with the metric and a logged model, best first; and how many finished."""
    finished = [
        run
        for run in search_all_runs(
            client, exp_id, f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}' and attributes.status = 'FINISHED'"
        )
        # A pruned trial's run ends FINISHED too (tracking/ui_view.py): its Optuna state says
        # PRUNED. A run without the tag goes on to the ledger, which refuses what it cannot vouch for.
        if run.data.tags.get(TAG_TRIAL_STATE, "COMPLETE") == "COMPLETE"
    ]
    out = []
    for run in finished:
        value = finite_float(run.data.metrics.get(metric))
        model_id = _model_id_of(run)
        if value is not None and model_id:
            out.append(PromotionCandidate(run=run, value=value, model_id=model_id))
    return rank(out, direction), len(finished)


def model_ready(client: MlflowClient, model_id: str) -> bool:
    """Whether the logged model finished uploading (status READY)."""
    try:
        model = client.get_logged_model(model_id)
    except MlflowException:
        return False
    return str(getattr(model.status, "name", model.status)).upper() == "READY"


def choose_best(
    client: MlflowClient, vouched: list[PromotionCandidate], direction: str
) -> PromotionCandidate | None:
    """The best vouched-for candidate whose model is ready (None: none is)."""
    return next((cand for cand in rank(vouched, direction) if model_ready(client, cand.model_id)), None)


__all__ = [
    "PromotionCandidate",
    "choose_best",
    "finished_candidates",
    "model_ready",
    "rank",
    "recorded_objectives",
    "resolve_direction",
]
