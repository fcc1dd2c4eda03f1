"""The Optuna storage as the ledger of real trials, for ``clot-hpo promote``.

The MLflow server has no authentication by default: anyone who reaches its port can create
a run tagged as a trial. The Optuna storage (a database the study's workers write) is the
record of what the search really ran, so ``promote`` accepts a run only when a COMPLETE
trial there names it: same study, trial number, MLflow run id, parent (study) run id and
dataset digest. :class:`StudyRunner` records the last three as the trial's user attributes
(:data:`ATTR_RUN_ID`, :data:`ATTR_PARENT_RUN_ID`, :data:`ATTR_DIGEST`).

The registry reads this through :class:`TrialLedger`'s ``trial(study, number)`` (a
structural interface: the registry does not import Optuna); ``clot-hpo promote`` builds it
from ``--storage``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.util import first_line

ATTR_RUN_ID = "mlflow_run_id"
ATTR_PARENT_RUN_ID = "mlflow_parent_run_id"
ATTR_DIGEST = "dataset_digest"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the Optuna storage holds it."""

    study: str
    number: int
    state: str  # Optuna's TrialState name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    run_id: str | None
    parent_run_id: str | None
    dataset_digest: str | None
    user_attrs: dict[str, Any] = field(default_factory=dict)


class TrialLedger:
    """Trials of an Optuna storage, read on demand and cached per study.

    Args:
        storage_url: the Optuna storage the study ran on (``sqlite:///...`` or
            ``postgresql+psycopg2://...``), as ``search.storage`` or ``--storage`` gives it.
    """

    def __init__(self, storage_url: str) -> None:
        self.storage_url = storage_url
        self._storage: Any = None
        self._studies: dict[str, dict[int, TrialRecord] | None] = {}

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

    def trials(self, study: str) -> dict[int, TrialRecord] | None:
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
            records = {}
            for t in loaded.get_trials(deepcopy=False):
                attrs = dict(t.user_attrs)
                records[t.number] = TrialRecord(
                    study=study,
                    number=t.number,
                    state=t.state.name,
                    run_id=_text(attrs.get(ATTR_RUN_ID)),
                    parent_run_id=_text(attrs.get(ATTR_PARENT_RUN_ID)),
                    dataset_digest=_text(attrs.get(ATTR_DIGEST)),
                    user_attrs=attrs,
                )
            self._studies[study] = records
        return self._studies[study]

    def trial(self, study: str, number: int) -> TrialRecord | None:
        """Trial ``number`` of ``study``, or None when the storage has no such study or trial."""
        records = self.trials(study)
        return None if records is None else records.get(number)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


__all__ = ["ATTR_DIGEST", "ATTR_PARENT_RUN_ID", "ATTR_RUN_ID", "TrialLedger", "TrialRecord"]
