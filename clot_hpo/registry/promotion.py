"""Promotion: register an experiment's best real trial, write its model card, and move the alias on proof.

:func:`promote`:

1. keeps only trial runs that a COMPLETE trial of the Optuna storage names (same study,
   trial number, run id, parent run, dataset digest: :class:`TrialLedger`): a run injected
   into the MLflow server is refused;
2. ranks them by the metric their study optimized, in the direction the study recorded (the
   parent run's tags ``clot_hpo.objective`` and ``optuna.direction``), by the values the
   Optuna storage records, never the tracking server's: a run whose metric differs from its
   trial's is refused with exit code 2 (the mirror was changed);
3. checks the best one's files against the sha256 its trial recorded (the model file,
   ``val_predictions.csv``, ``test_predictions.csv``), and the champion's test predictions
   against its own trial's, before anything is registered: any difference is refused with
   exit code 2, naming the trial (docs/security.md);
4. under the registry's promotion lock (:mod:`clot_hpo.registry.lock`), registers the best
   one (once per run) with the model sha256 its trial recorded, re-reads the champion, and
   lets the gate (:mod:`clot_hpo.registry.gate`) decide on the verified test predictions
   whether the alias moves; the decision is recorded on the version as tags, and the model
   card (:mod:`clot_hpo.registry.card`) as the run's artifacts and the version's description.

Rerunning it changes nothing: a version whose decision was taken against the current
champion under the same rule is not decided again. Registry stages are deprecated in
MLflow: aliases only.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from clot_hpo.errors import ConfigError, DataError
from clot_hpo.registry import card as cards
from clot_hpo.registry.gate import FIRST, PROMOTED, REFUSED, Evidence, GateDecision, GateRule, decide
from clot_hpo.registry.lock import promotion_lock
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
    TAG_GATE_CHAMPION,
    TAG_GATE_DECISION,
    TAG_GATE_REASON,
    TAG_GATE_RULE,
    TAG_IMAGE_SIZE,
    TAG_MODEL_ID,
    TAG_MODEL_SHA256,
    TAG_OBJECTIVE,
    TAG_OPTUNA_STUDY,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_THRESHOLD,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
)
from clot_hpo.util import file_sha256, finite_float, first_line, rank_trials

log = logging.getLogger("clot_hpo.registry")

MODEL_DESCRIPTION = "Binary blood-clot classifier (input: raw RGB pixels in [0, 255])."
TEST_PREDICTIONS = "test_predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"
MODEL_FILE = "data/model.keras"  # inside the logged MLflow model (tracking/keras_file_flavor.py)
MAX_LISTED_REFUSALS = 5


class LedgerEntryLike(Protocol):
    """A trial as the Optuna storage records it (:class:`clot_hpo.search.ledger.LedgerEntry`)."""

    @property
    def state(self) -> str: ...  # noqa: D102
    @property
    def value(self) -> float | None: ...  # noqa: D102
    @property
    def run_id(self) -> str | None: ...  # noqa: D102
    @property
    def parent_run_id(self) -> str | None: ...  # noqa: D102
    @property
    def dataset_digest(self) -> str | None: ...  # noqa: D102
    @property
    def model_id(self) -> str | None: ...  # noqa: D102
    @property
    def model_sha256(self) -> str | None: ...  # noqa: D102
    @property
    def user_attrs(self) -> Mapping[str, Any]: ...  # noqa: D102
    def metric(self, name: str) -> float | None: ...  # noqa: D102
    def predictions_sha256(self, filename: str) -> str | None: ...  # noqa: D102


class TrialLedger(Protocol):
    """Where the trials a study really ran are recorded (:class:`clot_hpo.search.ledger.TrialLedger`).

    The registry does not import Optuna: ``clot-hpo promote`` passes the search's ledger in.
    """

    def trial(self, study: str, number: int) -> LedgerEntryLike | None: ...  # noqa: D102


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
    decision: str | None = None  # the gate's (gate.FIRST, PROMOTED, KEPT, BLOCKED, REFUSED)
    decided_now: bool = False  # False: the recorded decision stands (a rerun)
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
    trial: Any = None  # its LedgerEntry in the Optuna storage, once verified

    @property
    def trial_number(self) -> int | None:
        raw = self.run.data.tags.get(TAG_TRIAL_NUMBER)
        return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None

    @property
    def who(self) -> str:
        """The trial in words: ``trial 3 of study 's'``."""
        tags = self.run.data.tags
        return f"trial {self.trial_number} of study {tags.get(TAG_OPTUNA_STUDY) or tags.get(TAG_STUDY)!r}"


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
            out.append(_Candidate(run=run, value=value, model_id=model_id))
    ranked = rank_trials(out, value=lambda c: c.value, number=lambda c: c.trial_number, direction=direction)
    return ranked, len(finished)


def verify_trial(run: Any, ledger: TrialLedger) -> tuple[LedgerEntryLike | None, str | None]:
    """The Optuna record of a trial run, and why the run is refused (None when it is real).

    A run is a real trial when the Optuna storage holds a COMPLETE trial of the run's study
    with the run's trial number that names this run, its parent (study) run and its dataset
    digest. MLflow tags alone prove nothing: anyone who reaches the server can write them.
    """
    tags = run.data.tags
    study = tags.get(TAG_OPTUNA_STUDY) or tags.get(TAG_STUDY)
    number_text = tags.get(TAG_TRIAL_NUMBER, "")
    parent, digest = tags.get(TAG_PARENT), tags.get(TAG_DIGEST)
    missing = [
        name
        for name, value in (("study", study), ("trial number", number_text), ("parent run", parent))
        if not value
    ]
    if not digest:
        missing.append("dataset digest")
    if missing:
        return None, f"it has no {', '.join(missing)} tag, so no Optuna trial can vouch for it"
    if not number_text.isdigit():
        return None, f"its trial number tag {number_text!r} is not a number"
    record = ledger.trial(str(study), int(number_text))
    if record is None:
        return None, f"the Optuna storage has no trial {number_text} of study {study!r}"
    if record.state != "COMPLETE":
        return None, f"trial {number_text} of study {study!r} is {record.state} in the Optuna storage"
    checks = (
        ("run id", record.run_id, run.info.run_id),
        ("parent run", record.parent_run_id, parent),
        ("dataset digest", record.dataset_digest, digest),
    )
    for what, recorded, claimed in checks:
        if recorded != claimed:
            return None, (
                f"trial {number_text} of study {study!r} records {what} {recorded or 'none'} in the Optuna "
                f"storage, but the run has {claimed}"
            )
    return record, None


def ledger_value(entry: LedgerEntryLike, metric: str, objectives: Mapping[str, Any]) -> float | None:
    """The value of ``metric`` the Optuna storage records for a trial (None: it records none).

    A study's objective is the trial's value as Optuna was told it; any other metric is the
    trial's user attribute of that name (the search records the headline metrics).
    """
    recorded = entry.metric(metric)
    if recorded is None and metric in objectives:
        recorded = entry.value
    return recorded


def same_value(a: float, b: float) -> bool:
    """Whether a metric the tracking server holds is the one the ledger records (float64 round trip)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


class LedgerMismatch(ConfigError):
    """The tracking server's copy of a trial differs from what the Optuna storage records (exit 2)."""


def _ready(client: MlflowClient, model_id: str) -> bool:
    try:
        model = client.get_logged_model(model_id)
    except MlflowException:
        return False
    return str(getattr(model.status, "name", model.status)).upper() == "READY"


# ----- registering --------------------------------------------------------------------------
def _version_tags(client: MlflowClient, cand: _Candidate, experiment: str, metric: str) -> dict[str, str]:
    tags = cand.run.data.tags
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
    if tags.get(TAG_DIGEST):
        out["dataset_digest"] = tags[TAG_DIGEST]
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


def _download_model_file(client: MlflowClient, tracking_uri: str, model_id: str, dst: Path) -> Path | None:
    """The logged model's ``data/model.keras``, downloaded into ``dst`` (None when unreadable)."""
    import mlflow.artifacts

    try:
        location = client.get_logged_model(model_id).artifact_location
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location.rstrip('/')}/{MODEL_FILE}", dst_path=str(dst), tracking_uri=tracking_uri
        )
    except (MlflowException, OSError) as exc:
        log.warning("promote: the model file of %s cannot be read: %s", model_id, first_line(exc))
        return None
    return Path(path)


def _register(
    client: MlflowClient,
    best: _Candidate,
    experiment: str,
    result: PromotionResult,
) -> None:
    """Reuse the candidate's version if it has one, else create it with its model's sha256.

    The sha256 is the one the trial recorded in the Optuna storage (the downloaded file was
    checked against it: :func:`verify_outputs`). Fills ``result.version``.
    """
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
    tags = _version_tags(client, best, experiment, result.metric)
    tags[TAG_MODEL_SHA256] = str(best.trial.model_sha256)
    version = client.create_model_version(
        result.model_name,
        source=f"models:/{best.model_id}",
        run_id=result.run_id,
        tags=tags,
        model_id=best.model_id,
        description=f"trial {result.trial_number} of study {result.study}",
    )
    result.version, result.registered = str(version.version), True
    result.messages.append(f"registered {result.model_name} version {result.version}")


# ----- the ledger's check of the mirror -----------------------------------------------------
def _differs(who: str, what: str, recorded: str | None, found: str | None) -> LedgerMismatch:
    return LedgerMismatch(
        f"{who}: {what} differs from the Optuna storage (recorded {recorded or 'none'}, the tracking "
        f"server has {found or 'none'}): its copy on the tracking server was changed, so nothing is "
        "registered and no alias moves"
    )


def verify_outputs(
    client: MlflowClient, tracking_uri: str, cand: _Candidate, work: Path
) -> tuple[Path, Path | None]:
    """Download a candidate's model file and predictions and check each against its trial's sha256.

    Returns the model file and the verified ``test_predictions.csv`` (None: the trial recorded
    none, and the run has none).

    Raises:
        LedgerMismatch: a file, or the model's run, is not the one the trial recorded.
    """
    entry, who = cand.trial, cand.who
    if entry.model_id != cand.model_id:
        raise _differs(who, f"its model (tag {TAG_MODEL_ID})", entry.model_id, cand.model_id)
    if not entry.model_sha256:
        raise LedgerMismatch(
            f"{who}: the Optuna storage records no model sha256 for it (a trial from before clot-hpo "
            "recorded one, or one that saved no model), so its model cannot be verified; nothing registered"
        )
    try:
        source_run = client.get_logged_model(cand.model_id).source_run_id
    except MlflowException:
        source_run = None
    if source_run != entry.run_id:
        raise _differs(who, f"the run of its model models:/{cand.model_id}", entry.run_id, source_run)
    model_file = _download_model_file(client, tracking_uri, cand.model_id, work / "model")
    found = file_sha256(model_file) if model_file is not None else None
    if found != entry.model_sha256:
        what = f"the sha256 of {MODEL_FILE} of models:/{cand.model_id}"
        raise _differs(who, what, entry.model_sha256, found)
    assert model_file is not None
    verified: dict[str, Path | None] = {}
    for name in (VAL_PREDICTIONS, TEST_PREDICTIONS):
        verified[name] = _verified_artifact(client, cand.run, entry, name, work / "candidate", who)
    return model_file, verified[TEST_PREDICTIONS]


def _verified_artifact(
    client: MlflowClient, run: Any, entry: LedgerEntryLike, name: str, dst: Path, who: str
) -> Path | None:
    """The run's predictions file ``name`` if its sha256 is the trial's (None: neither has one).

    Raises:
        LedgerMismatch: the file differs from, or lacks, the one the trial recorded.
    """
    recorded = entry.predictions_sha256(name)
    path = _download(client, run.info.run_id, name, dst)
    found = file_sha256(path) if path is not None else None
    if found != recorded:
        raise _differs(who, f"the sha256 of {name} of run {run.info.run_id}", recorded, found)
    return path


# ----- evidence -----------------------------------------------------------------------------
def _download(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path | None:
    """An artifact of a run, or None when the run has no such file."""
    folder = str(Path(path).parent) if "/" in path else None
    try:
        names = {a.path for a in client.list_artifacts(run_id, folder)}
        if path not in names:
            return None
        dst.mkdir(parents=True, exist_ok=True)
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError) as exc:
        log.warning("promote: %s of run %s cannot be read: %s", path, run_id, first_line(exc))
        return None


def _threshold(run: Any) -> float:
    value = finite_float(run.data.metrics.get("threshold"))
    if value is None:
        value = finite_float(run.data.tags.get(TAG_THRESHOLD))
    return 0.5 if value is None else value


def _evidence(version: Any, run: Any, path: Path | None, who: str) -> Evidence:
    """A version's test predictions (``path``, verified against its trial), threshold and digest.

    Raises:
        ConfigError: the run has no ``test_predictions.csv`` (exit code 2).
        DataError: the file is malformed (exit code 2, naming it).
    """
    from clot_hpo.evaluate.paired import read_predictions  # heavy: only when a promotion needs it

    if path is None:
        raise ConfigError(
            f"{who} (version {version.version}, run {run.info.run_id}) has no {TEST_PREDICTIONS} artifact: "
            "the gate compares models on their test predictions, so it cannot decide"
        )
    try:
        frame = read_predictions(path)
    except DataError as exc:
        raise DataError(f"{who} run {run.info.run_id}: {exc}") from exc
    digest = run.data.tags.get(TAG_DIGEST) or (version.tags or {}).get("dataset_digest")
    return Evidence(version=str(version.version), predictions=frame, threshold=_threshold(run), digest=digest)


@dataclass
class _Verified:
    """Files checked against the Optuna storage, for the gate: the candidate's, the champions'."""

    client: MlflowClient
    ledger: TrialLedger
    work: Path
    candidate_test: Path | None = None
    champions: dict[str, tuple[Any, Path | None]] = field(default_factory=dict)

    def champion(self, name: str, current: Any) -> tuple[Any, Path | None]:
        """The champion version's run and its test predictions, checked against its trial.

        Raises:
            ConfigError: the champion has no run, or no trial of the storage vouches for it.
            LedgerMismatch: its test predictions differ from the ones its trial recorded.
        """
        key = str(current.version)
        if key not in self.champions:
            run = self.client.get_run(current.run_id) if current.run_id else None
            if run is None:
                raise ConfigError(
                    f"champion version {current.version} of {name!r} has no run, so it has no test "
                    "predictions to compare with; move the alias by hand or promote into another model name"
                )
            entry, why = verify_trial(run, self.ledger)
            who = f"champion version {current.version} (run {run.info.run_id})"
            if entry is None:
                raise LedgerMismatch(
                    f"{who}: {why}; its test predictions cannot be verified, so nothing is registered "
                    "(the champion's study must be in the same --storage; or promote into another "
                    "--model-name)"
                )
            path = _verified_artifact(
                self.client, run, entry, TEST_PREDICTIONS, self.work / f"champion-{key}", who
            )
            self.champions[key] = (run, path)
        return self.champions[key]


# ----- the model card -----------------------------------------------------------------------
def _read_json(path: Path | None) -> dict[str, Any] | None:
    import json

    if path is None:
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _read_yaml(path: Path | None) -> dict[str, Any] | None:
    import yaml

    if path is None:
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _requirements(client: MlflowClient, tracking_uri: str, model_id: str, dst: Path) -> list[str]:
    import mlflow.artifacts

    try:
        location = client.get_logged_model(model_id).artifact_location
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location.rstrip('/')}/requirements.txt",
            dst_path=str(dst),
            tracking_uri=tracking_uri,
        )
        text = Path(path).read_text(encoding="utf-8")
    except (MlflowException, OSError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _write_card(
    client: MlflowClient,
    tracking_uri: str,
    result: PromotionResult,
    best: _Candidate,
    model_file: Path | None,
    evidence: Evidence | None,
    decision: GateDecision,
    work: Path,
) -> None:
    """Build the model card, log it to the version's run, and set the version's description."""
    run = best.run
    parent_id = run.data.tags.get(TAG_PARENT)
    config = manifest = report = None
    if parent_id:
        config = _read_yaml(_download(client, parent_id, "config.yaml", work / "parent"))
        manifest_path = _download(client, parent_id, "data/split_manifest.csv", work / "parent")
        if manifest_path is not None:
            try:
                manifest = pd.read_csv(manifest_path)
            except (OSError, ValueError):
                manifest = None
        report = _read_json(_download(client, parent_id, "data/data_report.json", work / "parent"))
    card = cards.build_card(
        model_name=result.model_name,
        version=result.version,
        run=run,
        model_id=best.model_id,
        study_config=config,
        manifest=manifest,
        data_report=report,
        trial_attrs=dict(getattr(best.trial, "user_attrs", {}) or {}),
        model_sha256=best.trial.model_sha256,  # the ledger's (the version's tag is the same)
        parameter_count=cards.keras_parameter_count(model_file) if model_file is not None else None,
        requirements=_requirements(client, tracking_uri, best.model_id, work / "env"),
        test_predictions=evidence.predictions if evidence is not None else None,
        decision=decision.tags(),
        dataset_digest=run.data.tags.get(TAG_DIGEST),
    )
    client.log_text(result.run_id, cards.render_markdown(card), cards.CARD_MD)
    client.log_text(result.run_id, cards.card_json(card), cards.CARD_JSON)
    client.update_model_version(result.model_name, result.version, description=cards.summary_markdown(card))
    result.messages.append(
        f"model card written: {cards.CARD_MD} and {cards.CARD_JSON} of run {result.run_id}"
    )


# ----- the decision -------------------------------------------------------------------------
def _recorded_decision(version: Any, current: Any | None, rule: GateRule) -> str | None:
    """The decision already recorded against the current champion under the same rule, if any."""
    tags = version.tags or {}
    compared = tags.get(TAG_GATE_CHAMPION)
    now = str(current.version) if current is not None else "none"
    if tags.get(TAG_GATE_DECISION) and compared == now and tags.get(TAG_GATE_RULE) == rule.describe():
        return str(tags[TAG_GATE_DECISION])
    return None


def _decide_and_record(
    client: MlflowClient,
    tracking_uri: str,
    best: _Candidate,
    result: PromotionResult,
    rule: GateRule,
    model_file: Path | None,
    work: Path,
    verified: _Verified,
) -> None:
    """Under the lock: re-read the champion, let the gate decide, record it, move the alias."""
    name, alias, say = result.model_name, result.alias, result.messages.append
    version = client.get_model_version(name, result.version)
    current = alias_version(client, name, alias)  # re-read under the lock
    if current is not None and str(current.version) == result.version:
        result.previous_version, result.previous_value = result.version, result.value
        result.decision = (version.tags or {}).get(TAG_GATE_DECISION)
        say(f"alias {alias!r} already points to version {result.version}: nothing to move")
        return
    result.previous_version = str(current.version) if current is not None else None
    recorded = _recorded_decision(version, current, rule)
    if recorded is not None:
        result.decision = recorded
        reason = (version.tags or {}).get(TAG_GATE_REASON, "")
        if recorded in (FIRST, PROMOTED):
            # Recorded as moving but the alias is elsewhere: a promotion interrupted between
            # its tags and the alias (or an alias removed by hand). Finish it.
            client.set_registered_model_alias(name, alias, result.version)
            result.alias_moved = True
            say(f"gate: version {result.version} {recorded} (recorded earlier): alias {alias!r} set to it")
            return
        say(f"gate: version {result.version} {recorded} (recorded earlier, nothing changed): {reason}")
        if recorded == REFUSED:
            raise ConfigError(f"promotion refused: {reason}")
        return
    floors = rule.min_sensitivity is not None or rule.max_ece is not None
    if current is None and not floors and verified.candidate_test is None:
        # Nothing to compare with and no floor to check: a run from before trials kept their
        # predictions can still become the first champion (its card says what is missing).
        decision = GateDecision(FIRST, rule.metric, None, "there was no champion", rule.describe())
        _record(client, tracking_uri, best, result, decision, model_file, None, None, work)
        return
    candidate = _evidence(version, best.run, verified.candidate_test, "the candidate")
    champion = None
    if current is not None:
        champ_run, champ_test = verified.champion(name, current)
        champion = _evidence(current, champ_run, champ_test, f"champion version {current.version}")
    decision = decide(candidate, champion, rule)
    _record(client, tracking_uri, best, result, decision, model_file, candidate, current, work)


def _record(
    client: MlflowClient,
    tracking_uri: str,
    best: _Candidate,
    result: PromotionResult,
    decision: GateDecision,
    model_file: Path | None,
    candidate: Evidence | None,
    current: Any | None,
    work: Path,
) -> None:
    """Record the decision on the version, move the alias if it says so, write the card, say it."""
    name, alias, say = result.model_name, result.alias, result.messages.append
    for key, value in decision.tags().items():
        client.set_model_version_tag(name, result.version, key, value)
    result.decision, result.decided_now = decision.decision, True
    if decision.moves:
        client.set_registered_model_alias(name, alias, result.version)
        result.alias_moved = True
    _write_card(client, tracking_uri, result, best, model_file, candidate, decision, work)
    say(decision.line(result.version))
    if decision.moves:
        were = f"from version {current.version}" if current is not None else "(there was no champion)"
        say(f"alias {alias!r} moved {were} to version {result.version}")
    else:
        held = f"version {current.version}" if current is not None else "nobody"
        say(f"alias {alias!r} stays on {held}")
    if decision.decision == REFUSED:
        raise ConfigError(f"promotion refused: {decision.reason}")


# ----- promote ------------------------------------------------------------------------------
def promote(
    tracking_uri: str,
    experiment: str,
    *,
    ledger: TrialLedger,
    model_name: str = DEFAULT_MODEL_NAME,
    alias: str = DEFAULT_ALIAS,
    metric: str | None = None,
    direction: str | None = None,
    rule: GateRule | None = None,
    lock_timeout_s: float = 300.0,
    on_wait: Callable[[str], None] | None = None,
) -> PromotionResult:
    """Register the experiment's best real trial and move ``alias`` to it if the gate says so.

    The best trial is the FINISHED child run with a finite ``metric`` and a logged model,
    ranked in the direction its study recorded (ties go to the lower trial number), among
    runs that ``ledger`` vouches for (:func:`verify_trial`). ``metric`` defaults to the
    study's objective; ``direction`` is needed only for a metric no study recorded. The
    alias moves only when ``rule`` (default: the AUC's paired 95% interval above zero) holds
    against the current champion; the decision is recorded on the version either way.

    Raises:
        ConfigError: the experiment does not exist, the metric's direction cannot be told,
            no real finished trial has the metric and a logged model, the evidence is
            missing, the test sets differ (without ``allow_different_test_sets``; the
            decision is recorded first), or the lock stayed taken.
    """
    rule = rule or GateRule()
    client = open_client(tracking_uri)
    # MLflow's SQL registry store resolves `models:/<model_id>` sources through a client built
    # from the process-wide tracking URI, so that URI must be ours during the promotion.
    with global_tracking_uri(tracking_uri), tempfile.TemporaryDirectory(prefix="clot-promote-") as tmp:
        work = Path(tmp)
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
        objectives = recorded_objectives(client, exp.experiment_id)
        candidates, n_finished = _candidates(client, exp.experiment_id, metric, direction)
        refusals: list[str] = []
        vouched = []
        for cand in candidates:
            record, why = verify_trial(cand.run, ledger)
            if record is not None:
                recorded = ledger_value(record, metric, objectives)
                if recorded is None:
                    why = f"the Optuna storage records no {metric} for it"
                elif not same_value(recorded, cand.value):
                    raise LedgerMismatch(
                        f"{cand.who}: its run {cand.run.info.run_id} has {metric} = {cand.value!r} on the "
                        f"tracking server, but the Optuna storage records {recorded!r}: its copy on the "
                        "tracking server was changed, so nothing is registered and no alias moves"
                    )
                else:
                    cand.trial, cand.value = record, recorded
                    vouched.append(cand)
            if why is not None:
                refusals.append(f"run {cand.run.info.run_id} ({metric} = {cand.value:.4f}): {why}")
        vouched = rank_trials(
            vouched, value=lambda c: c.value, number=lambda c: c.trial_number, direction=direction
        )
        best = next((cand for cand in vouched if _ready(client, cand.model_id)), None)
        if best is None:
            detail = "; ".join(refusals[:MAX_LISTED_REFUSALS])
            raise ConfigError(
                f"experiment {experiment!r} has no finished trial with metric {metric!r} and a logged "
                f"model that the Optuna storage vouches for ({n_finished} finished trial "
                f"run{'s' if n_finished != 1 else ''}" + (f"; refused: {detail}" if detail else "") + ")"
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
        for refusal in refusals[:MAX_LISTED_REFUSALS]:
            result.messages.append(f"refused (not a trial of the Optuna storage): {refusal}")
        better = "higher" if direction == "maximize" else "lower"
        result.messages.append(
            f"best trial: {result.trial_number} of {experiment!r} ({metric} = {best.value:.4f}, "
            f"{better} is better as the study recorded; run {result.run_id})"
        )
        # Everything checked before anything is registered: the candidate's files, and the
        # champion's test predictions (checked again under the lock if the champion changed).
        model_file, test_file = verify_outputs(client, tracking_uri, best, work)
        verified = _Verified(client, ledger, work, candidate_test=test_file)
        current = alias_version(client, model_name, alias)
        if current is not None and str(current.run_id) != result.run_id:
            verified.champion(model_name, current)
        with promotion_lock(client, model_name, timeout_s=lock_timeout_s, on_wait=on_wait):
            _register(client, best, experiment, result)
            _decide_and_record(client, tracking_uri, best, result, rule, model_file, work, verified)
        return result


__all__ = [
    "LedgerEntryLike",
    "LedgerMismatch",
    "PromotionResult",
    "TrialLedger",
    "promote",
    "recorded_objectives",
    "resolve_direction",
    "ledger_value",
    "same_value",
    "verify_outputs",
    "verify_trial",
]
