"""Issue 12, item 4: passwords in storage and tracking URLs are never written anywhere.

Each test reproduces a place where a password was written in clear before: the trial's task
file (world-readable), the resolved config, the error a user sees, a log line.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
import yaml

from clot_hpo.config import load_config, save_resolved
from clot_hpo.search.trial.task import PRELOAD_STORAGE_ENV, TrialOutcome, TrialTask
from clot_hpo.util import RedactingFilter, redact_secrets, redact_text

SECRET = "s3cret-Pw9"
STORAGE = f"postgresql+psycopg2://optuna:{SECRET}@db.internal:5432/optuna"
TRACKING = f"http://worker:{SECRET}@mlflow.internal:5000"


def _config() -> dict:
    return load_config(None, {"search.storage": STORAGE, "tracking.uri": TRACKING}).model_dump(mode="json")


def test_redaction_helpers_hide_every_password() -> None:
    text = f"cannot reach {TRACKING}/api and {STORAGE}; user@host.example stays"
    shown = redact_text(text)
    assert SECRET not in shown and "worker:***@mlflow.internal" in shown and "user@host.example" in shown
    nested = redact_secrets({"a": [STORAGE, {"b": TRACKING}], "n": 3, "s": "sqlite:///x.db"})
    assert SECRET not in str(nested) and nested["n"] == 3 and nested["s"] == "sqlite:///x.db"
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "could not log at %s", (TRACKING,), None)
    RedactingFilter().filter(record)
    assert SECRET not in record.getMessage()


def test_the_task_file_is_private_and_holds_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = TrialTask(
        config=_config(),
        study_name="s",
        storage=STORAGE,
        trial_id=1,
        trial_number=0,
        spool_dir="",
        manifest_path="m.csv",
        spaces={},
        max_epochs=1,
        result_path="o.json",
    )
    path = task.save(tmp_path / "task.0.json")
    assert SECRET not in path.read_text(), "the task file holds the password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
    # The trial process gets the password from its environment, set by the study process.
    monkeypatch.setenv(PRELOAD_STORAGE_ENV, STORAGE)
    loaded = TrialTask.load(path)
    assert loaded.storage == STORAGE and loaded.config["search"]["storage"] == STORAGE
    assert loaded.config["tracking"]["uri"] != TRACKING, "the tracking login stays out of the trial"


def test_the_resolved_config_holds_no_password(tmp_path: Path) -> None:
    config = load_config(None, {"search.storage": STORAGE, "tracking.uri": TRACKING})
    text = save_resolved(config, tmp_path / "config.resolved.yaml").read_text()
    assert SECRET not in text
    saved = yaml.safe_load(text)
    assert saved["search"]["storage"] == "postgresql+psycopg2://optuna:***@db.internal:5432/optuna"


def test_errors_and_log_lines_show_no_password(
    sandbox: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from clot_hpo.cli import main

    monkeypatch.setenv("PYTHONWARNINGS", "")
    # A tracking server that is not there: the error names it, without its password.
    code = main(
        [
            "search",
            "experiments/quickstart.yaml",
            "--data",
            str(tiny_dataset),
            "--study-name",
            "secret-errors",
            "--tracking-uri",
            "http://worker:" + SECRET + "@127.0.0.1:9",
            "--storage",
            f"sqlite:///{sandbox / 'optuna.db'}",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "worker:***@127.0.0.1:9" in captured.err
    assert SECRET not in captured.out + captured.err
    for file in (sandbox / "mlruns").rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file


def test_a_failed_trials_reason_shows_no_password(tmp_path: Path) -> None:
    # The reason becomes the run's fail_reason tag and the Optuna trial's user attribute.
    path = tmp_path / "outcome.json"
    TrialOutcome(state="FAIL", reason=f"cannot open {STORAGE}: connection refused").save(path)
    assert SECRET not in path.read_text()
    loaded = TrialOutcome.load(path)
    assert loaded is not None and loaded.reason is not None
    assert SECRET not in loaded.reason and "optuna:***@db.internal" in loaded.reason
