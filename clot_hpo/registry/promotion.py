"""Promotion: register an experiment's best trial and move the alias to it when it wins.

:func:`promote` registers the best finished trial of an experiment as a new version of
``blood-clot-detector`` and moves the alias ``champion`` to it only when it beats the
current champion on the same metric. Registry stages are deprecated in MLflow: aliases only.

"Best" follows the direction the study recorded for its objective (the parent run's tags
``clot_hpo.objective`` and ``optuna.direction``, :mod:`clot_hpo.tracking.tags`), never a
guess from the metric's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.registry.models import DEFAULT_ALIAS, DEFAULT_MODEL_NAME, alias_version
from clot_hpo.tracking.store import (
    MlflowClient,
    MlflowException,
    global_tracking_uri,
    is_already_exists,
    open_client,
    quote,
    search_all_runs,
)
from clot_hpo.tracking.tags import (
    DIRECTIONS,
    ROLE_STUDY,
    ROLE_TRIAL,
    TAG_DIGEST,
    TAG_DIRECTION,
    TAG_IMAGE_SIZE,
    TAG_MODEL_ID,
    TAG_OBJECTIVE,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_THRESHOLD,
    TAG_TRIAL_NUMBER,
)
from clot_hpo.util import finite_float

MODEL_DESCRIPTION = "Binary blood-clot classifier (input: raw RGB pixels in [0, 255])."


@dataclass
class PromotionResult:
    """What :func:`promote` did (``messages`` says it in words)."""

    model_name: str
    alias: str
    metric: str
    version: str
    run_id: str
    value: float
    direction: str = "maximize"  # of the metric, as the study recorded it
    study: str | None = None
    trial_number: int | None = None
    registered: bool = False  # a new version was created
    alias_moved: bool = False
    previous_version: str | None = None
    previous_value: float | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """Every message, one per line."""
        return "\n".join(self.messages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def beats(self, other: float) -> bool:
        """Whether this candidate's value is strictly better than ``other``."""
        return self.value > other if self.direction == "maximize" else self.value < other


@dataclass
class _Candidate:
    run: Any
    value: float
    model_id: str

    @property
    def trial_number(self) -> int | None:
        raw = self.run.data.tags.get(TAG_TRIAL_NUMBER)
        return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None


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


def _candidates(
    client: MlflowClient, exp_id: str, metric: str, direction: str
) -> tuple[list[_Candidate], int]:
    """Finished trial runs with the metric and a logged model, best first; and how many finished."""
    finished = list(
        search_all_runs(
            client, exp_id, f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}' and attributes.status = 'FINISHED'"
        )
    )
    out = []
    for run in finished:
        value = finite_float(run.data.metrics.get(metric))
        model_id = _model_id_of(run)
        if value is not None and model_id:
            out.append(_Candidate(run=run, value=value, model_id=model_id))
    sign = -1.0 if direction == "maximize" else 1.0
    out.sort(key=lambda c: (sign * c.value, c.trial_number if c.trial_number is not None else 1 << 30))
    return out, len(finished)


def _ready(client: MlflowClient, model_id: str) -> bool:
    try:
        model = client.get_logged_model(model_id)
    except MlflowException:
        return False
    return str(getattr(model.status, "name", model.status)).upper() == "READY"


# ----- registering --------------------------------------------------------------------------
def _version_tags(client: MlflowClient, cand: _Candidate, experiment: str, metric: str) -> dict[str, str]:
    tags = cand.run.data.tags
    digest = tags.get(TAG_DIGEST)
    if not digest and tags.get(TAG_PARENT):
        try:
            digest = client.get_run(tags[TAG_PARENT]).data.tags.get(TAG_DIGEST)
        except MlflowException:
            digest = None
    out = {
        "experiment": experiment,
        "study": tags.get(TAG_STUDY, experiment),
        "trial": tags.get(TAG_TRIAL_NUMBER, ""),
        "promotion_metric": metric,
        metric: repr(cand.value),
    }
    for key in (TAG_THRESHOLD, TAG_IMAGE_SIZE):
        if key in tags:
            out[key] = tags[key]
    if digest:
        out["dataset_digest"] = digest
    for key, value in cand.run.data.metrics.items():
        if key.startswith(("val_", "test_")) and "_ci_" not in key and finite_float(value) is not None:
            out[key] = repr(float(value))
    return out


def _existing_version(client: MlflowClient, model_name: str, run_id: str) -> Any | None:
    try:
        versions = client.search_model_versions(f"name = {quote(model_name)} and run_id = {quote(run_id)}")
    except MlflowException:
        return None
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _register(client: MlflowClient, best: _Candidate, experiment: str, result: PromotionResult) -> None:
    """Reuse the candidate's version if it has one, else create it; fill ``result.version``."""
    existing = _existing_version(client, result.model_name, result.run_id)
    if existing is not None:
        result.version = str(existing.version)
        result.messages.append(
            f"already registered as {result.model_name} version {result.version}: no new version"
        )
        return
    try:
        client.create_registered_model(result.model_name, description=MODEL_DESCRIPTION)
    except MlflowException as exc:
        if not is_already_exists(exc):
            raise
    version = client.create_model_version(
        result.model_name,
        source=f"models:/{best.model_id}",
        run_id=result.run_id,
        tags=_version_tags(client, best, experiment, result.metric),
        model_id=best.model_id,
        description=f"trial {result.trial_number} of study {result.study}",
    )
    result.version, result.registered = str(version.version), True
    result.messages.append(f"registered {result.model_name} version {result.version}")


def _champion_value(client: MlflowClient, version: Any, metric: str) -> float | None:
    """The champion's own value of ``metric``: from its run, else from its version tags."""
    if version.run_id:
        try:
            value = finite_float(client.get_run(version.run_id).data.metrics.get(metric))
        except MlflowException:
            value = None
        if value is not None:
            return value
    return finite_float((version.tags or {}).get(metric))


def _move_alias(client: MlflowClient, result: PromotionResult) -> None:
    """Point the alias at ``result.version`` when there is no holder or the candidate beats it."""
    name, alias, metric, say = result.model_name, result.alias, result.metric, result.messages.append
    current = alias_version(client, name, alias)
    if current is not None and str(current.version) == result.version:
        result.previous_version, result.previous_value = result.version, result.value
        say(f"alias {alias!r} already points to version {result.version}: nothing to move")
        return
    if current is None:
        client.set_registered_model_alias(name, alias, result.version)
        result.alias_moved = True
        say(f"alias {alias!r} set to version {result.version} (there was no {alias})")
        return
    result.previous_version = str(current.version)
    prev = result.previous_value = _champion_value(client, current, metric)
    if prev is None:
        client.set_registered_model_alias(name, alias, result.version)
        result.alias_moved = True
        say(
            f"alias {alias!r} moved from version {current.version} (which has no {metric}) "
            f"to version {result.version}"
        )
        return
    if result.beats(prev):
        client.set_registered_model_alias(name, alias, result.version)
        result.alias_moved = True
        say(
            f"alias {alias!r} moved from version {current.version} ({metric} = {prev:.4f}) to version "
            f"{result.version} ({metric} = {result.value:.4f})"
        )
    else:
        say(
            f"alias {alias!r} stays on version {current.version}: its {metric} = {prev:.4f} is not beaten "
            f"by {result.value:.4f}"
        )
    digest_new = client.get_model_version(name, result.version).tags.get("dataset_digest")
    digest_old = (current.tags or {}).get("dataset_digest")
    if digest_new and digest_old and digest_new != digest_old:
        say("note: the two versions were evaluated on different datasets (dataset digests differ)")


# ----- promote ------------------------------------------------------------------------------
def promote(
    tracking_uri: str,
    experiment: str,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    alias: str = DEFAULT_ALIAS,
    metric: str | None = None,
    direction: str | None = None,
) -> PromotionResult:
    """Register the experiment's best finished trial and move ``alias`` to it if it wins.

    The best trial is the FINISHED child run with a finite ``metric`` and a logged model,
    ranked in the direction its study recorded (ties go to the lower trial number).
    ``metric`` defaults to the study's objective; ``direction`` is needed only for a metric
    no study recorded. If the best run is already registered, its version is reused
    (running this twice changes nothing). The alias moves only when the candidate is
    strictly better than the current holder on the same metric.

    Raises:
        ConfigError: the experiment does not exist, the metric's direction cannot be told,
            or no finished trial has the metric and a logged model.
    """
    client = open_client(tracking_uri)
    # MLflow's SQL registry store resolves `models:/<model_id>` sources through a client built
    # from the process-wide tracking URI, so that URI must be ours during the promotion.
    with global_tracking_uri(tracking_uri):
        exp = client.get_experiment_by_name(experiment)
        if exp is None or exp.lifecycle_stage == "deleted":
            names = sorted(e.name for e in client.search_experiments(max_results=50))
            raise ConfigError(
                f"MLflow experiment {experiment!r} does not exist at {tracking_uri} "
                f"(experiments there: {names})"
            )
        metric, direction = resolve_direction(
            recorded_objectives(client, exp.experiment_id), experiment, metric, direction
        )
        candidates, n_finished = _candidates(client, exp.experiment_id, metric, direction)
        best = next((c for c in candidates if _ready(client, c.model_id)), None)
        if best is None:
            raise ConfigError(
                f"experiment {experiment!r} has no finished trial with metric {metric!r} and a logged "
                f"model ({n_finished} finished trial run{'s' if n_finished != 1 else ''})"
            )
        result = PromotionResult(
            model_name=model_name,
            alias=alias,
            metric=metric,
            version="",
            run_id=best.run.info.run_id,
            value=best.value,
            direction=direction,
            study=best.run.data.tags.get(TAG_STUDY),
            trial_number=best.trial_number,
        )
        better = "higher" if direction == "maximize" else "lower"
        result.messages.append(
            f"best trial: {result.trial_number} of {experiment!r} ({metric} = {best.value:.4f}, "
            f"{better} is better as the study recorded; run {result.run_id})"
        )
        _register(client, best, experiment, result)
        _move_alias(client, result)
        return result


__all__ = ["PromotionResult", "promote", "recorded_objectives", "resolve_direction"]
