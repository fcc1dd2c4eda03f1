"""The ledger: one typed record per trial, read back from a real (in-memory) Optuna storage."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from clot_hpo.errors import ConfigError
from clot_hpo.search.ledger import (
    ATTR_MODEL_SHA256,
    ATTR_SEED,
    ATTR_TEST_PREDICTIONS_SHA256,
    TrialLedger,
    entry_of,
    record_checkpoint,
    record_model_id,
)


def test_an_entry_holds_what_the_trial_and_its_study_recorded(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    trial.set_user_attr(ATTR_SEED, 9)
    trial.report(0.5, 0)
    record_checkpoint(trial, 1, "a" * 64)
    trial.report(0.75, 1)
    record_checkpoint(trial, 2, "b" * 64)
    trial.set_user_attr("val_auc", 0.8125)
    trial.set_user_attr("test_auc", math.nan)  # not finite: not a value to rank by
    trial.set_user_attr(ATTR_MODEL_SHA256, "c" * 64)
    trial.set_user_attr(ATTR_TEST_PREDICTIONS_SHA256, "d" * 64)
    study.tell(trial, 0.8125)
    record_model_id(study, trial.number, "m-123")  # after the trial finished, as the upload does

    entry = TrialLedger(storage).trial("s", 0)
    assert entry is not None
    assert (entry.study, entry.number, entry.state, entry.value, entry.seed) == (
        "s",
        0,
        "COMPLETE",
        0.8125,
        9,
    )
    assert entry.model_id == "m-123" and entry.model_sha256 == "c" * 64
    assert entry.predictions_sha256("test_predictions.csv") == "d" * 64
    assert entry.predictions_sha256("val_predictions.csv") is None
    assert dict(entry.metrics) == {"val_auc": 0.8125}
    assert dict(entry.checkpoints) == {1: "a" * 64, 2: "b" * 64}
    assert dict(entry.intermediate_values) == {0: 0.5, 1: 0.75}
    with pytest.raises(TypeError):
        entry.checkpoints[3] = "e" * 64  # type: ignore[index]  # read-only
    # Read without the study's attributes (the study process's own view): no model id.
    assert entry_of("s", study.trials[0]).model_id is None
    assert TrialLedger(storage).trial("s", 5) is None and TrialLedger(storage).trials("other") is None


def test_an_unfinished_trial_has_no_value(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    study.tell(study.ask(), state=TrialState.FAIL)
    assert entry_of(study.study_name, study.trials[0]).value is None


def test_a_missing_sqlite_storage_is_named_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    with pytest.raises(ConfigError, match="does not exist"):
        TrialLedger(f"sqlite:///{missing}").trials("s")
    assert not missing.exists()
