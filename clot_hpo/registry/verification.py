"""The ledger's check of the tracking server: only what the Optuna storage vouches for is promoted.

MLflow tags and files alone prove nothing: anyone who reaches the server can write them. A
trial run is real when a COMPLETE trial of the Optuna storage names it (:func:`verify_trial`);
its metric must be the one that trial recorded (:func:`vouch`); its model file and
predictions files must have the sha256 the trial recorded (:func:`verify_outputs`), and so
must the champion's test predictions (:class:`VerifiedFiles`). Any difference is refused with
exit code 2 (:class:`LedgerMismatch`), naming the trial (docs/security.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.registry.artifacts import (
    MODEL_FILE,
    TEST_PREDICTIONS,
    VAL_PREDICTIONS,
    download_model_file,
    download_run_file,
)
from clot_hpo.registry.candidates import PromotionCandidate
from clot_hpo.tracking.store import MlflowClient, MlflowException
from clot_hpo.tracking.study_reader import Ledger, LedgerFacts
from clot_hpo.tracking.tags import (
    TAG_DIGEST,
    TAG_MODEL_ID,
    TAG_OPTUNA_STUDY,
    TAG_PARENT,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
)
from clot_hpo.util import file_sha256


class LedgerMismatch(ConfigError):
    """The tracking server's copy of a trial differs from what the Optuna storage records (exit 2)."""


def verify_trial(run: Any, ledger: Ledger) -> tuple[LedgerFacts | None, str | None]:
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


def ledger_value(entry: LedgerFacts, metric: str, objectives: Mapping[str, Any]) -> float | None:
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


def vouch(
    candidates: list[PromotionCandidate], ledger: Ledger, metric: str, objectives: Mapping[str, Any]
) -> tuple[list[PromotionCandidate], list[str]]:
    """The candidates the Optuna storage vouches for (their value now the ledger's), and the refusals.

    Raises:
        LedgerMismatch: a real trial's metric on the tracking server differs from its record.
    """
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
                cand.entry, cand.value = record, recorded
                vouched.append(cand)
        if why is not None:
            refusals.append(f"run {cand.run.info.run_id} ({metric} = {cand.value:.4f}): {why}")
    return vouched, refusals


# ----- the files ----------------------------------------------------------------------------
def _differs(who: str, what: str, recorded: str | None, found: str | None) -> LedgerMismatch:
    return LedgerMismatch(
        f"{who}: {what} differs from the Optuna storage (recorded {recorded or 'none'}, the tracking "
        f"server has {found or 'none'}): its copy on the tracking server was changed, so nothing is "
        "registered and no alias moves"
    )


def verify_outputs(
    client: MlflowClient, tracking_uri: str, cand: PromotionCandidate, work: Path
) -> tuple[Path, Path | None]:
    """Download a candidate's model file and predictions and check each against its trial's sha256.

    Returns the model file and the verified ``test_predictions.csv`` (None: the trial recorded
    none, and the run has none).

    Raises:
        LedgerMismatch: a file, or the model's run, is not the one the trial recorded.
    """
    entry, who = cand.vouched, cand.who
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
    model_file = download_model_file(client, tracking_uri, cand.model_id, work / "model")
    found = file_sha256(model_file) if model_file is not None else None
    if found != entry.model_sha256:
        what = f"the sha256 of {MODEL_FILE} of models:/{cand.model_id}"
        raise _differs(who, what, entry.model_sha256, found)
    assert model_file is not None
    verified: dict[str, Path | None] = {}
    for name in (VAL_PREDICTIONS, TEST_PREDICTIONS):
        verified[name] = verified_run_file(client, cand.run, entry, name, work / "candidate", who)
    return model_file, verified[TEST_PREDICTIONS]


def verified_run_file(
    client: MlflowClient, run: Any, entry: LedgerFacts, name: str, dst: Path, who: str
) -> Path | None:
    """The run's predictions file ``name`` if its sha256 is the trial's (None: neither has one).

    Raises:
        LedgerMismatch: the file differs from, or lacks, the one the trial recorded.
    """
    recorded = entry.predictions_sha256(name)
    path = download_run_file(client, run.info.run_id, name, dst)
    found = file_sha256(path) if path is not None else None
    if found != recorded:
        raise _differs(who, f"the sha256 of {name} of run {run.info.run_id}", recorded, found)
    return path


@dataclass
class VerifiedFiles:
    """Files checked against the Optuna storage, for the gate: the candidate's, the champions'."""

    client: MlflowClient
    ledger: Ledger
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
            path = verified_run_file(
                self.client, run, entry, TEST_PREDICTIONS, self.work / f"champion-{key}", who
            )
            self.champions[key] = (run, path)
        return self.champions[key]


__all__ = [
    "LedgerMismatch",
    "VerifiedFiles",
    "ledger_value",
    "same_value",
    "verified_run_file",
    "verify_outputs",
    "verify_trial",
    "vouch",
]
