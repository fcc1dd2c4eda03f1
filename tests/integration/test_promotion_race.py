"""Promotion against a real ``mlflow server``: concurrent ``promote`` processes and the gate.

Two studies on the same test images (a weak and a strong model) are fabricated on the
server, with their trials in a real Optuna storage (no training). Three ``clot-hpo promote``
processes start together (the weak study once, the strong one twice): whatever order the
lock gives them, the strong model must end as champion, with one version per run.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from mlflow import MlflowClient

from clot_hpo.registry import GateRule, promote
from clot_hpo.registry.lock import claims, lock_name
from clot_hpo.search.ledger import TrialLedger
from tests.support.cli import CLI, REPO
from tests.support.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (pytest fixture)
from tests.support.promotion import fabricate_study, predictions

MODEL = "race-detector"


@pytest.fixture(scope="module")
def studies(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    root = tmp_path_factory.mktemp("race")
    uri, storage = mlflow_server.uri, f"sqlite:///{root / 'optuna.db'}"

    def trial(separation: float, noise_seed: int, seed: int = 0, **kw: Any) -> dict[str, Any]:
        preds = predictions(separation=separation, noise_seed=noise_seed, seed=seed)
        return {"metrics": {"val_auc": 0.5 + separation / 4, "threshold": 0.5}, "predictions": preds, **kw}

    runs = {
        "race-weak": fabricate_study(uri, storage, root, "race-weak", [trial(0.3, 1)]),
        "race-strong": fabricate_study(uri, storage, root, "race-strong", [trial(1.5, 2)]),
    }
    return {"uri": uri, "storage": storage, "runs": runs}


def test_concurrent_promotions_end_with_the_better_model_and_one_version_per_run(
    studies: dict[str, Any],
) -> None:
    uri, storage = studies["uri"], studies["storage"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [*CLI, "promote", "--tracking-uri", uri, "--storage", storage, "--model-name", MODEL]
    procs = [
        subprocess.Popen(
            [*base, "--experiment", experiment],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for experiment in ("race-weak", "race-strong", "race-strong")
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err

    client = MlflowClient(uri, registry_uri=uri)
    weak, strong = studies["runs"]["race-weak"][0], studies["runs"]["race-strong"][0]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == strong
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(v.run_id for v in versions) == sorted([weak, strong])  # one version per run
    decisions = {v.run_id: v.tags["promotion.decision"] for v in versions}
    assert decisions[strong] in ("first champion", "promoted")
    assert decisions[weak] in ("first champion", "kept")
    # The lock is free once every promotion ended: its model stays, with no claim left on it
    # (other tests sharing this server leave their own models' locks).
    locks = [m.name for m in client.search_registered_models() if m.name.endswith(".promotion-lock")]
    assert lock_name(MODEL) in locks and claims(client, MODEL) == []


def test_the_gate_on_the_server_records_each_decision(studies: dict[str, Any]) -> None:
    uri, ledger = studies["uri"], TrialLedger(studies["storage"])
    weak, strong = studies["runs"]["race-weak"][0], studies["runs"]["race-strong"][0]
    name = "server-gate"
    client = MlflowClient(uri, registry_uri=uri)
    assert promote(uri, "race-weak", ledger=ledger, model_name=name).decision == "first champion"
    blocked = promote(uri, "race-strong", ledger=ledger, model_name=name, rule=GateRule(max_ece=0.001))
    assert (
        blocked.decision == "blocked" and client.get_model_version_by_alias(name, "champion").run_id == weak
    )
    promoted = promote(uri, "race-strong", ledger=ledger, model_name=name)
    assert (
        promoted.decision == "promoted"
        and client.get_model_version_by_alias(name, "champion").run_id == strong
    )
    tags = client.get_model_version(name, promoted.version).tags
    assert tags["promotion.compared_with"] == "1" and float(tags["promotion.interval"].split(",")[0][1:]) > 0
    # The model card reached the server's artifact store, and the summary the version.
    assert {"model_card.md", "model_card.json"} <= {a.path for a in client.list_artifacts(strong)}
    assert "not a diagnostic device" in client.get_model_version(name, promoted.version).description
