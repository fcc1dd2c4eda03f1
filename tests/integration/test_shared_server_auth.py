"""The shared server's logins and the study's secrets, against a real basic-auth ``mlflow server``.

Issue 12, items 3 and 4. The server is the compose stack's: MLflow's basic-auth app started
through ``docker/mlflow-entrypoint.sh`` (no Docker needed), logins made with
``docker/mlflow_users.py`` as the stack's ``mlflow-users`` service makes them. Then:

* anonymous requests are refused (401), ``/health`` stays open for health checks;
* a study logs with a worker's login, its storage URL carrying a PostgreSQL password and its
  tracking URI a tracking password; afterwards neither password is in any file under the
  study's folder, any artifact or file of the server, any MLflow param or tag, or the output;
* a read-only user reads everything and can neither log, register a version nor move an alias;
* the promotion lock model, created at start by the stack (``mlflow_users.py ensure-lock``),
  can be taken or broken by the admin only (issue 20, item 5).

The throwaway PostgreSQL cluster trusts loopback connections, so the role's password is not
checked there: what matters here is that the URL carries one, as it does in production.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from clot_hpo.errors import TrackingUnavailable
from clot_hpo.registry.lock import claims, lock_name, promotion_lock
from clot_hpo.tracking.mlflow_tracker import MlflowTracker
from clot_hpo.tracking.tags import TAG_MODEL_ID
from tests.support.cli import REPO, run_cli, run_main
from tests.support.mlflow_server import (
    BasicAuth,
    MlflowServer,
    start_mlflow_server,
    stop_mlflow_server,
    write_images,
)
from tests.support.postgres import PostgresServer, postgres_session  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

ADMIN = ("admin", "Zq81-adm-pw-4c2e9b")
WORKER = ("worker", "Wk-secret-71c3e0a9f5")
READER = ("alice", "Rd-secret-5b2f8e1d3a")
PG_PASSWORD = "Pg-secret-94e7a1c06b"
STUDY = "secrets"
PLANTED = "planted_by_an_older_study"
SPACE = """backbone: tiny_cnn
parameters:
  image_size: {type: categorical, choices: [32]}
  batch_size: {type: categorical, choices: [16]}
  learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


def _with_login(uri: str, login: tuple[str, str]) -> str:
    return uri.replace("http://", f"http://{login[0]}:{login[1]}@", 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = start_mlflow_server(
        tmp_path_factory.mktemp("auth-server"), auth=BasicAuth(admin_password=ADMIN[1])
    )
    try:
        yield started
    finally:
        stop_mlflow_server(started)


def _users(server: MlflowServer, *args: str, stdin: str = "", **env: str) -> int:
    """docker/mlflow_users.py's main(), as the stack's mlflow-users service runs it (as the admin)."""
    spec = importlib.util.spec_from_file_location("mlflow_users", REPO / "docker" / "mlflow_users.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        for key, value in {
            "MLFLOW_TRACKING_URI": server.uri,
            "MLFLOW_TRACKING_USERNAME": ADMIN[0],
            "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
            **env,
        }.items():
            patch.setenv(key, value)
        return int(script.main(list(args)))


@pytest.fixture(scope="module")
def logins(server: MlflowServer) -> None:
    assert _users(server, "ensure-worker", MLFLOW_WORKER_PASSWORD="change-me-mlflow-worker") == 2
    assert (
        _users(server, "ensure-worker", MLFLOW_WORKER_USER=WORKER[0], MLFLOW_WORKER_PASSWORD=WORKER[1]) == 0
    )
    assert _users(server, "add-reader", READER[0], stdin=READER[1] + "\n") == 0


@pytest.fixture(scope="module")
def study(
    server: MlflowServer,
    logins: None,
    postgres_session: PostgresServer,  # noqa: F811
    tiny_dataset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    conn = postgres_session.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS secret_optuna")
            cur.execute("DROP ROLE IF EXISTS secret_role")
            cur.execute(f"CREATE ROLE secret_role LOGIN PASSWORD '{PG_PASSWORD}'")
            cur.execute("CREATE DATABASE secret_optuna OWNER secret_role")
    finally:
        conn.close()
    storage = (
        f"postgresql+psycopg2://secret_role:{PG_PASSWORD}@{postgres_session.host}:"
        f"{postgres_session.port}/secret_optuna"
    )
    work = tmp_path_factory.mktemp("secret-study")
    # The user's own config holds the passwords, by choice; it lives outside the study's folder.
    inputs = tmp_path_factory.mktemp("secret-inputs")
    (inputs / "space.yaml").write_text(SPACE)
    (inputs / "exp.yaml").write_text(
        "name: secrets\ntraining: {epochs: 1, weights: none}\n"
        f"search: {{backbones: [tiny_cnn], search_spaces: {{tiny_cnn: space.yaml}}, pruner: none, "
        f"n_trials: 2, storage: '{storage}'}}\n"
        f"tracking: {{uri: '{_with_login(server.uri, WORKER)}'}}\n"
        "budget: {vram_gb: 4}\nevaluation: {bootstrap_samples: 100, explanations: false}\n"
    )
    # An older study of the same name, whose stores were wiped, left trial 0's spool behind.
    old_spool = work / "mlruns" / "studies" / STUDY / "trials" / "0000" / "tracking"
    old_spool.mkdir(parents=True)
    (old_spool / "events.jsonl").write_text(f'{{"event": "params", "params": {{"{PLANTED}": 1}}}}\n')
    result = run_cli("search", str(inputs / "exp.yaml"), "--data", str(tiny_dataset), cwd=work)
    assert result.returncode == 0, result.stderr
    return {"work": work, "result": result, "storage": storage}


def test_anonymous_requests_are_refused(server: MlflowServer) -> None:
    for path in ("/api/2.0/mlflow/experiments/search?max_results=1", "/ajax-api/2.0/mlflow/runs/search"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.uri + path, timeout=10)
        assert refused.value.code == 401, path
    with urllib.request.urlopen(server.uri + "/health", timeout=10) as resp:
        assert resp.status == 200, "health checks need no login"
    # The product says what to do instead of an opaque failure.
    tracker = MlflowTracker(server.uri, experiment_name="anonymous", tries=1, backoff_s=0.01)
    with pytest.raises(TrackingUnavailable, match="MLFLOW_TRACKING_USERNAME"):
        tracker.check_available()


def test_a_worker_logs_with_mlflows_environment_variables(
    server: MlflowServer, logins: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", WORKER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", WORKER[1])
    tracker = MlflowTracker(server.uri, experiment_name="env-login", tries=1, backoff_s=0.01)
    tracker.check_available()
    tracker.start_study("env-login")
    run_id = tracker.start_trial(0)
    tracker.log_params(run_id, {"lr": 0.01})
    tracker.end_trial(run_id, "COMPLETE")
    tracker.end_study()
    assert MlflowClient(server.uri).get_run(run_id).data.params == {"lr": "0.01"}


def test_no_password_is_written_anywhere(server: MlflowServer, study: dict[str, Any]) -> None:
    secrets = (PG_PASSWORD, WORKER[1])
    result = study["result"]
    for secret in secrets:
        assert secret not in result.stdout + result.stderr
    # Every file of the study (configs, task files, spools, logs) and of the server (artifacts,
    # its database with every param, tag and dataset input, its log).
    files = [p for root in (study["work"], server.root) for p in root.rglob("*") if p.is_file()]
    assert any(p.name.startswith("task.") for p in files) and any(p.suffix == ".png" for p in files)
    for file in files:
        data = file.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{file} holds a password"
    for task in (study["work"] / "mlruns" / "studies" / STUDY).rglob("task.*.json"):
        assert task.stat().st_mode & 0o077 == 0, f"{task} is readable by others"
    # And through the API: every run's params and tags, every logged model's, every artifact.
    client = MlflowClient(_with_login(server.uri, ADMIN))
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == 3, "the study run and its two trials"
    for run in runs:
        shown = str(run.data.params) + str(run.data.tags) + str(experiment.tags)
        assert not any(secret in shown for secret in secrets), run.info.run_id
        assert PLANTED not in run.data.params, "an older study's spool was replayed"
    config = client.download_artifacts(
        next(r for r in runs if "mlflow.parentRunId" not in r.data.tags).info.run_id, "config.yaml"
    )
    assert "secret_role:***@" in Path(config).read_text()
    for model in client.search_logged_models(experiment_ids=[experiment.experiment_id]):
        assert not any(secret in str(model.params) + str(model.tags) for secret in secrets)


def test_a_reader_can_read_but_not_promote(server: MlflowServer, study: dict[str, Any]) -> None:
    admin = MlflowClient(_with_login(server.uri, ADMIN), registry_uri=_with_login(server.uri, ADMIN))
    experiment = admin.get_experiment_by_name(STUDY)
    trial = next(
        r
        for r in admin.search_runs([experiment.experiment_id])
        if "mlflow.parentRunId" in r.data.tags and TAG_MODEL_ID in r.data.tags
    )
    model_id = trial.data.tags[TAG_MODEL_ID]
    # The admin promotes (registers a version, moves the alias).
    admin.create_registered_model("blood-clot-detector")
    version = admin.create_model_version(
        "blood-clot-detector", source=f"models:/{model_id}", run_id=trial.info.run_id, model_id=model_id
    )
    admin.set_registered_model_alias("blood-clot-detector", "champion", version.version)

    reader_uri = _with_login(server.uri, READER)
    reader = MlflowClient(reader_uri, registry_uri=reader_uri)
    assert reader.get_run(trial.info.run_id).data.metrics, "a reader reads runs"
    assert reader.get_model_version_by_alias("blood-clot-detector", "champion").version == version.version
    assert reader.list_artifacts(trial.info.run_id), "a reader reads artifacts"
    refusals = {
        "register a version": lambda: reader.create_model_version(
            "blood-clot-detector", source=f"models:/{model_id}", run_id=trial.info.run_id, model_id=model_id
        ),
        "move the alias": lambda: reader.set_registered_model_alias("blood-clot-detector", "champion", "1"),
        "log to a run": lambda: reader.log_param(trial.info.run_id, "x", "1"),
        "delete the model": lambda: reader.delete_registered_model("blood-clot-detector"),
    }
    for what, call in refusals.items():
        with pytest.raises(MlflowException) as refused:
            call()
        assert refused.value.error_code == "PERMISSION_DENIED", what
    assert len(admin.search_model_versions("name = 'blood-clot-detector'")) == 1


def test_predict_needs_a_login_and_a_reader_may_use_the_champion(
    server: MlflowServer,
    study: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clot_hpo.cli import main

    monkeypatch.setenv("PYTHONWARNINGS", "")
    admin = MlflowClient(_with_login(server.uri, ADMIN), registry_uri=_with_login(server.uri, ADMIN))
    if not admin.search_registered_models("name = 'blood-clot-detector'"):
        pytest.skip("needs the champion that test_a_reader_can_read_but_not_promote registers")
    image = write_images(tmp_path, 1)[0]
    args = ["predict", "--tracking-uri", server.uri, str(image)]
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    assert main(args) == 2, "anonymous: refused with exit 2, not 'unexpected error'"
    err = capsys.readouterr().err
    assert "requires a login" in err and "MLFLOW_TRACKING_USERNAME" in err
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", READER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", READER[1])
    assert main(args) == 0, capsys.readouterr().err
    assert '"probability"' in capsys.readouterr().out


def test_the_lock_model_made_at_start_is_the_promoting_roles_alone(
    server: MlflowServer, logins: None
) -> None:
    model = "locked-detector"
    assert _users(server, "ensure-lock", MLFLOW_MODEL_NAME=model) == 0
    assert _users(server, "ensure-lock", MLFLOW_MODEL_NAME=model) == 0, "a restarted stack finds it"
    lock = lock_name(model)
    admin_uri = _with_login(server.uri, ADMIN)
    admin = MlflowClient(admin_uri, registry_uri=admin_uri)
    others = {}
    for login in (READER, WORKER):
        uri = _with_login(server.uri, login)
        others[login[0]] = MlflowClient(uri, registry_uri=uri)
    for who, client in others.items():
        with pytest.raises(MlflowException) as taken:
            client.create_registered_model(lock)
        assert taken.value.error_code == "RESOURCE_ALREADY_EXISTS", who  # the stack made it first
        with pytest.raises(MlflowException) as refused, promotion_lock(client, model, timeout_s=5):
            pass
        assert refused.value.error_code == "PERMISSION_DENIED", f"{who} took the lock"
    with promotion_lock(admin, model, timeout_s=30) as holder:
        (claim,) = claims(admin, model)
        assert claim.holder == holder
        for who, client in others.items():
            for what, call in {
                "break the lock": lambda c=client: c.delete_model_version(lock, str(claim.version)),
                "delete the lock model": lambda c=client: c.delete_registered_model(lock),
                "retag the claim": lambda c=client: c.set_model_version_tag(
                    lock, str(claim.version), "x", "1"
                ),
            }.items():
                with pytest.raises(MlflowException) as refused:
                    call()
                assert refused.value.error_code == "PERMISSION_DENIED", f"{who} could {what}"
        assert [c.holder for c in claims(admin, model)] == [holder]
    assert claims(admin, model) == [] and admin.get_registered_model(lock).name == lock


def test_a_worker_account_cannot_put_its_own_model_behind_the_champion(
    server: MlflowServer,
    study: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 20's forging scenario: the tracking server is a mirror, the Optuna storage the ledger.

    After the study and a first promote, a worker account (MLflow's public client only, no
    access to the Optuna storage) logs a model of its own into the other COMPLETE trial's run
    and points the run's model tag at it, rewrites both its predictions files (perfect) and its
    ``val_auc`` (1.0). The next promote refuses with exit code 2 naming that trial; the champion
    and its alias stay; predict still answers with the genuine model.
    """
    import keras
    import mlflow
    import numpy as np
    import pandas as pd

    name = "forging-detector"
    # The storage URL (with its password) from the environment, as docs/security.md says.
    admin_env = {
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
        "CLOT_HPO_STORAGE": study["storage"],
    }
    promote = ("promote", "--tracking-uri", server.uri, "--experiment", STUDY, "--model-name", name)
    # The first promote and the last predict run in this process (no fresh interpreter importing
    # MLflow and TensorFlow again); the refused promote is a real process, for its one line.
    for key, value in admin_env.items():
        monkeypatch.setenv(key, value)
    first = run_main(capsys, *promote)
    assert first.returncode == 0, first.stdout + first.stderr
    admin = MlflowClient(_with_login(server.uri, ADMIN), registry_uri=_with_login(server.uri, ADMIN))
    champion = admin.get_model_version_by_alias(name, "champion")
    experiment = admin.get_experiment_by_name(STUDY)
    trials = [r for r in admin.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    [other] = [r for r in trials if r.info.run_id != champion.run_id and r.info.status == "FINISHED"]
    number = other.data.tags["optuna.trial_number"]

    # The worker account, through MLflow's public API.
    for key, value in zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), WORKER, strict=True):
        monkeypatch.setenv(key, value)
    worker = MlflowClient(server.uri)
    mlflow.set_tracking_uri(server.uri)
    forged_model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid", kernel_initializer="zeros", bias_initializer="zeros"),
        ]
    )
    forged_model.layers[-1].bias.assign(np.array([-10.0], dtype=np.float32))  # "no clot", always
    run_id = other.info.run_id
    with mlflow.start_run(run_id=run_id):
        # Requirements given: MLflow infers them otherwise by loading the model in a fresh
        # interpreter (8-10 s), which the forgery does not need.
        logged = mlflow.keras.log_model(forged_model, name="model", pip_requirements=["keras"])
    worker.set_tag(run_id, TAG_MODEL_ID, logged.model_id)
    for file in ("val_predictions.csv", "test_predictions.csv"):
        genuine = pd.read_csv(worker.download_artifacts(run_id, file, str(tmp_path)))
        perfect = genuine.assign(probability=genuine["label"].astype(float))
        worker.log_text(run_id, perfect.to_csv(index=False), file)
    worker.log_metric(run_id, "val_auc", 1.0, step=10**6)
    for key, value in admin_env.items():
        monkeypatch.setenv(key, value)

    refused = run_cli(*promote, env=admin_env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"trial {number} of study '{STUDY}'" in lines[0] and "Optuna storage" in lines[0], lines[0]
    assert len(admin.search_model_versions(f"name = '{name}'")) == 1, "nothing registered"
    after = admin.get_model_version_by_alias(name, "champion")
    assert (after.version, after.run_id) == (champion.version, champion.run_id)

    image = write_images(tmp_path / "images", 1)[0]
    predicted = run_main(
        capsys, "predict", "--tracking-uri", server.uri, "--model", f"models:/{name}@champion", str(image)
    )
    assert predicted.returncode == 0, predicted.stderr
    probability = json.loads(predicted.stdout.strip().splitlines()[-1])["probability"]
    assert abs(probability - 1 / (1 + np.exp(10.0))) > 1e-3, "the forged model answered"
    assert after.model_id != logged.model_id
