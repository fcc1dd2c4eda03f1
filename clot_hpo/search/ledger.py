"""The Optuna storage as the ledger of trials; the tracking server is a mirror of it.

Workers need the Optuna storage to run trials at all; an account on the tracking server is a
weaker credential (every worker has one, and MLflow lets any writer rewrite a run's tags,
metrics and artifacts). So everything ``clot-hpo promote`` and a resuming worker rely on is
written to the Optuna trial by the process that produced it, and checked against what is
downloaded from the tracking server (docs/security.md):

* when the trial starts: its MLflow run id and its study run's, the dataset digest and the
  seed it trains with (:data:`ATTR_RUN_ID`, :data:`ATTR_PARENT_RUN_ID`, :data:`ATTR_DIGEST`,
  :data:`ATTR_SEED`);
* after each checkpoint is written, before it can be uploaded: its sha256 by epoch
  (:data:`ATTR_CHECKPOINTS`, ``{"<epoch>": sha256}``);
* at the end of a completed trial: the sha256 of the model file (``model.keras``) and of
  ``val_predictions.csv`` / ``test_predictions.csv``; the objective is the trial's value and
  the headline metrics (:data:`HEADLINE_METRICS`) its user attributes;
* once the study process has uploaded the model: its MLflow model id, on the study
  (:data:`STUDY_ATTR_MODEL_ID`: a finished trial cannot be changed);
* when the first worker opens the study's MLflow run: its id, on the study
  (:data:`STUDY_ATTR_RUN_ID`: the run every later worker reopens).

:class:`LedgerEntry` is one trial's record, typed and free of Optuna and MLflow types: the
registry reads it through a structural interface (it does not import Optuna),
``clot-hpo promote`` builds the :class:`TrialLedger` from ``--storage``, and the study process
reads its own trials with :func:`entry_of`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.evaluate.catalogue import SPLITS, metric_keys
from clot_hpo.util import first_line

ATTR_RUN_ID = "mlflow_run_id"
ATTR_PARENT_RUN_ID = "mlflow_parent_run_id"
ATTR_DIGEST = "dataset_digest"
ATTR_SEED = "seed"
ATTR_MODEL_SHA256 = "model_sha256"
ATTR_VAL_PREDICTIONS_SHA256 = "val_predictions_sha256"
ATTR_TEST_PREDICTIONS_SHA256 = "test_predictions_sha256"
ATTR_CHECKPOINTS = "checkpoint_sha256"
# The logged model's id is known only once its upload is done, usually after Optuna was told
# the trial's outcome, and Optuna refuses to change a finished trial: the study process records
# it on the study, one attribute per trial number (:func:`record_model_id`).
STUDY_ATTR_MODEL_ID = "model_id:{number}"
# The study's own MLflow run (the parent of its trial runs), recorded by the worker that created it.
STUDY_ATTR_RUN_ID = "mlflow_run_id"

# What a completed trial's outcome records as user attributes: the threshold and the
# catalogue's summary metrics of both splits (point values), the values `promote` ranks by
# and compares with the mirror's.
HEADLINE_METRICS = (
    "threshold",
    *(k for split in SPLITS for k in metric_keys(split, summary=True, intervals=False)),
)
# Facts of a finished trial's own outputs: a retry inherits its original's user attributes
# and must not carry them as its own.
OUTPUT_ATTRS = (ATTR_MODEL_SHA256, ATTR_VAL_PREDICTIONS_SHA256, ATTR_TEST_PREDICTIONS_SHA256)


@dataclass(frozen=True)
class LedgerEntry:
    """One trial as the Optuna storage records it: what the tracking server must agree with.

    Attributes:
        study: the Optuna study's name.
        number: the trial's number in it.
        state: Optuna's state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING).
        value: the objective's value (COMPLETE trials), as Optuna was told it.
        run_id: the trial's MLflow run.
        model_id: the MLflow model the study process logged for it (``models:/<model_id>``).
        parent_run_id: the study's MLflow run.
        dataset_digest: the digest of the data the trial trained and was tested on.
        seed: the seed the trial trained with (a retry keeps its original's).
        model_sha256: sha256 of the trained model's ``.keras`` file.
        val_predictions_sha256: sha256 of ``val_predictions.csv``.
        test_predictions_sha256: sha256 of ``test_predictions.csv``.
        metrics: the metrics the trial recorded (``val_*``, ``test_*``, ``threshold``; the
            search records :data:`HEADLINE_METRICS`).
        checkpoints: epoch -> sha256 of each checkpoint the trial wrote.
        intermediate_values: epoch (0-based) -> the value reported to Optuna.
        user_attrs: every user attribute, for what is only shown (the model card).
    """

    study: str
    number: int
    state: str
    value: float | None = None
    run_id: str | None = None
    model_id: str | None = None
    parent_run_id: str | None = None
    dataset_digest: str | None = None
    seed: int | None = None
    model_sha256: str | None = None
    val_predictions_sha256: str | None = None
    test_predictions_sha256: str | None = None
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    checkpoints: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    intermediate_values: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))
    user_attrs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def metric(self, name: str) -> float | None:
        """The recorded value of metric ``name``, or None when the trial did not record it."""
        return self.metrics.get(name)

    def predictions_sha256(self, filename: str) -> str | None:
        """The recorded sha256 of ``val_predictions.csv`` or ``test_predictions.csv``."""
        return {
            "val_predictions.csv": self.val_predictions_sha256,
            "test_predictions.csv": self.test_predictions_sha256,
        }.get(filename)


def entry_of(study: str, trial: Any, study_attrs: Mapping[str, Any] | None = None) -> LedgerEntry:
    """The ledger entry of an Optuna ``FrozenTrial`` of ``study``.

    ``study_attrs`` (the study's user attributes) hold the trial's model id; without them the
    entry has none.
    """
    attrs = dict(trial.user_attrs)
    metrics = {
        k: v
        for k, raw in attrs.items()
        if (k in HEADLINE_METRICS or k.startswith(("val_", "test_"))) and "_sha256" not in k
        if (v := _number(raw)) is not None
    }
    checkpoints = recorded_checkpoints(attrs)
    seed = attrs.get(ATTR_SEED)
    return LedgerEntry(
        study=study,
        number=int(trial.number),
        state=trial.state.name,
        value=_number(trial.value) if trial.state.name == "COMPLETE" else None,
        run_id=_text(attrs.get(ATTR_RUN_ID)),
        model_id=_text((study_attrs or {}).get(STUDY_ATTR_MODEL_ID.format(number=trial.number))),
        parent_run_id=_text(attrs.get(ATTR_PARENT_RUN_ID)),
        dataset_digest=_text(attrs.get(ATTR_DIGEST)),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        model_sha256=_text(attrs.get(ATTR_MODEL_SHA256)),
        val_predictions_sha256=_text(attrs.get(ATTR_VAL_PREDICTIONS_SHA256)),
        test_predictions_sha256=_text(attrs.get(ATTR_TEST_PREDICTIONS_SHA256)),
        metrics=MappingProxyType(metrics),
        checkpoints=MappingProxyType(checkpoints),
        intermediate_values=MappingProxyType(
            {int(k): float(v) for k, v in dict(trial.intermediate_values).items()}
        ),
        user_attrs=MappingProxyType(attrs),
    )


def recorded_checkpoints(user_attrs: Mapping[str, Any]) -> dict[int, str]:
    """The checkpoints a trial's user attributes record, ``{epoch: sha256}`` (malformed entries left out)."""
    raw = user_attrs.get(ATTR_CHECKPOINTS)
    if not isinstance(raw, dict):
        return {}
    return {int(e): digest for e, digest in raw.items() if str(e).isdigit() and isinstance(digest, str)}


def record_checkpoint(trial: Any, epoch: int, sha256: str) -> None:
    """Add checkpoint ``epoch``'s sha256 to ``trial``'s ledger (an ``optuna.Trial``, still running).

    Called by the process that wrote the file, before it can be uploaded: a checkpoint
    downloaded later is used only if its sha256 is the one recorded for its epoch.
    """
    known = trial.user_attrs.get(ATTR_CHECKPOINTS)
    recorded = dict(known) if isinstance(known, dict) else {}
    recorded[str(int(epoch))] = sha256
    trial.set_user_attr(ATTR_CHECKPOINTS, recorded)


def record_model_id(study: Any, number: int, model_id: str) -> None:
    """Record trial ``number``'s logged model id on ``study`` (an ``optuna.Study``)."""
    study.set_user_attr(STUDY_ATTR_MODEL_ID.format(number=int(number)), model_id)


class TrialLedger:
    """Trials of an Optuna storage, read on demand and cached per study.

    Args:
        storage_url: the Optuna storage the study ran on (``sqlite:///...`` or
            ``postgresql+psycopg2://...``), as ``search.storage`` or ``--storage`` gives it.
    """

    def __init__(self, storage_url: str) -> None:
        self.storage_url = storage_url
        self._storage: Any = None
        self._studies: dict[str, dict[int, LedgerEntry] | None] = {}

    def _open(self) -> Any:
        if self._storage is None:
            from pathlib import Path

            from clot_hpo.search.storage import open_storage, redact_url

            if self.storage_url.startswith("sqlite:///") and ":memory:" not in self.storage_url:
                # Opening a missing SQLite file would create an empty storage: say so instead.
                path = Path(self.storage_url.removeprefix("sqlite:///").split("?", 1)[0]).expanduser()
                if not path.is_file():
                    raise ConfigError(
                        f"--storage: the Optuna storage {redact_url(self.storage_url)} does not exist "
                        f"({path} is missing); pass the storage the study ran on"
                    )
            self._storage = open_storage(self.storage_url)
        return self._storage

    def trials(self, study: str) -> dict[int, LedgerEntry] | None:
        """Every trial of ``study`` by number, or None when the storage has no such study."""
        if study not in self._studies:
            import optuna

            storage = self._open()
            try:
                loaded = optuna.load_study(study_name=study, storage=storage)
            except KeyError:
                self._studies[study] = None
                return None
            except Exception as exc:  # sqlalchemy raises many kinds for a dead server
                raise ConfigError(
                    f"--storage: cannot read study {study!r} from the Optuna storage: "
                    f"{type(exc).__name__}: {first_line(exc)}"
                ) from exc
            attrs = dict(loaded.user_attrs)
            self._studies[study] = {
                t.number: entry_of(study, t, attrs) for t in loaded.get_trials(deepcopy=False)
            }
        return self._studies[study]

    def trial(self, study: str, number: int) -> LedgerEntry | None:
        """Trial ``number`` of ``study``, or None when the storage has no such study or trial."""
        records = self.trials(study)
        return None if records is None else records.get(number)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


__all__ = [
    "ATTR_CHECKPOINTS",
    "ATTR_DIGEST",
    "ATTR_MODEL_SHA256",
    "ATTR_PARENT_RUN_ID",
    "ATTR_RUN_ID",
    "ATTR_SEED",
    "ATTR_TEST_PREDICTIONS_SHA256",
    "ATTR_VAL_PREDICTIONS_SHA256",
    "HEADLINE_METRICS",
    "OUTPUT_ATTRS",
    "STUDY_ATTR_MODEL_ID",
    "LedgerEntry",
    "TrialLedger",
    "entry_of",
    "record_checkpoint",
    "recorded_checkpoints",
    "record_model_id",
]
