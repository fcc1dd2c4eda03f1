"""Two promotions of one model, in two processes: the second waits for the lock the first holds.

A fabricated study (a real MLflow run with a tiny model and its predictions, a real Optuna
storage) on a SQLite store, as in tests/unit/registry/test_promotion_gate.py; the waiting
promotion is a real ``clot-hpo promote`` process.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest
from mlflow import MlflowClient

from clot_hpo.registry.lock import promotion_lock
from tests.support.cli import CLI, REPO
from tests.support.promotion import fabricate_study, predictions


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("gate-lock")
    uri, storage = f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}"
    trial = {"metrics": {"val_auc": 0.70, "threshold": 0.5}, "predictions": predictions(separation=0.3)}
    runs = {"weak": fabricate_study(uri, storage, root, "weak", [trial])}
    client = MlflowClient(uri, registry_uri=uri)
    return {"uri": uri, "storage": storage, "root": root, "runs": runs, "client": client}


def _champion_run(gate: dict[str, Any], name: str) -> str:
    return str(gate["client"].get_model_version_by_alias(name, "champion").run_id)


def test_a_promotion_waits_for_the_lock_another_process_holds(gate: dict[str, Any]) -> None:
    name = "gate-lock"
    cmd = [*CLI, "promote", "--tracking-uri", gate["uri"], "--storage", gate["storage"], "--model-name", name]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with promotion_lock(gate["client"], name) as holder:
        proc = subprocess.Popen(
            [*cmd, "--experiment", "weak"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            waited = ""
            deadline = time.monotonic() + 120
            assert proc.stdout is not None
            while time.monotonic() < deadline and "waiting for the promotion lock" not in waited:
                waited += proc.stdout.readline()
                assert proc.poll() is None or "waiting" in waited, proc.stderr.read() if proc.stderr else ""
            assert f"held by {holder}" in waited
            time.sleep(1.0)
            assert proc.poll() is None  # still waiting while the lock is held
            assert not gate["client"].search_model_versions(f"name = '{name}'")
        except BaseException:
            proc.kill()
            raise
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _champion_run(gate, name) == gate["runs"]["weak"][0]
