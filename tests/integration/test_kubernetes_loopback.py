"""The Kubernetes pods' own commands, run for real on loopback (no cluster, no Docker).

The commands, arguments and environments come from the manifests under deploy/kubernetes/
(``$(VAR)`` expanded as the kubelet does); only their values are mapped to this test's
servers: a throwaway PostgreSQL (the Optuna storage, a role named as in the ConfigMap) and an
``mlflow server`` with the stack's basic-auth app and logins. Then, as a cluster would:

1. the users Job's command creates the workers' login, the prepare Job's command prepares the
   study (run twice: the second changes nothing);
2. three worker pods start together; one gets SIGTERM mid-epoch (what the kubelet sends on
   preemption), one SIGKILL (a node lost); the Job controller's reading of the
   podFailurePolicy decides on each exit code, and the preempted pod is replaced as it would be;
3. the study ends with every trial counted once, nothing RUNNING or WAITING (in Optuna or
   MLflow), the defaults enqueued once, the preempted trial resumed from its checkpoint
   (through the tracking server) and the killed one retried.

Tiny on purpose: tiny CNN at 32 px, 80 images, 8 short epochs, 4 trials.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import studies
from tests.support.kubernetes import (
    ROOT,
    container_argv,
    container_env,
    containers,
    find,
    pod_failure_action,
    secret_template,
    settings,
)
from tests.support.mlflow_server import BasicAuth, MlflowServer, start_mlflow_server, stop_mlflow_server
from tests.support.postgres import PostgresServer, postgres_session  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

ADMIN_PASSWORD = "Adm-k8s-secret-3f9c1e"
WORKER_PASSWORD = "Wk-k8s-secret-8d2a7b"
PG_PASSWORD = "Pg-k8s-secret-51e0c4"
N_TRIALS, EPOCHS = 4, 8
CLOT_HPO = str(Path(sys.executable).with_name("clot-hpo"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = start_mlflow_server(
        tmp_path_factory.mktemp("k8s-mlflow"), auth=BasicAuth(admin_password=ADMIN_PASSWORD)
    )
    try:
        yield started
    finally:
        stop_mlflow_server(started)


@pytest.fixture(scope="module")
def study_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiments/tiny.yaml at 32 px, short heartbeats, epochs short enough to stop mid-trial."""
    folder = tmp_path_factory.mktemp("k8s-config")
    space = yaml.safe_load((ROOT / "search_spaces" / "tiny_cnn.yaml").read_text(encoding="utf-8"))
    space["parameters"]["image_size"] = {"type": "fixed", "value": 32}
    (folder / "tiny_cnn_32.yaml").write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    config = yaml.safe_load((ROOT / "experiments" / "tiny.yaml").read_text(encoding="utf-8"))
    config["search"].update(
        search_spaces={"tiny_cnn": "tiny_cnn_32.yaml"},
        sampler="random",
        heartbeat_interval=1,
        grace_period=3,
        max_retry=1,
        preemption_grace_s=20,
    )
    config["training"]["epochs"] = EPOCHS
    config["evaluation"] = {"bootstrap_samples": 100, "explanations": False}
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Pods:
    """Maps the manifests' values to this test's servers and runs the pods' commands."""

    pg: PostgresServer
    server: MlflowServer
    config: Path
    data: Path
    tmp: Path
    started: list[Worker] = field(default_factory=list)  # stopped by the fixture, whatever happens

    def values(self) -> tuple[dict[str, str], dict[str, str]]:
        """The ConfigMap and the Secret as this test fills them."""
        config = settings()
        role = config["OPTUNA_DB"]
        config.update(
            STUDY_CONFIG=str(self.config),
            N_TRIALS=str(N_TRIALS),
            # The manifest's URL, pointed at the loopback cluster: same driver, role, no password.
            CLOT_HPO_STORAGE=config["CLOT_HPO_STORAGE"].replace(
                "@postgres:5432/", f"@{self.pg.host}:{self.pg.port}/"
            ),
            MLFLOW_TRACKING_URI=self.server.uri,
        )
        assert role in config["CLOT_HPO_STORAGE"]
        secrets = {key: f"unused-{key}-0123456789" for key in secret_template()}
        secrets.update(
            {
                "optuna-db-password": PG_PASSWORD,
                "mlflow-admin-password": ADMIN_PASSWORD,
                "mlflow-worker-password": WORKER_PASSWORD,
            }
        )
        return config, secrets

    def argv_env(self, job: str, container: str) -> tuple[list[str], dict[str, str]]:
        (spec,) = [c for c in containers(find("Job", job)) if c["name"] == container]
        config, secrets = self.values()
        env = container_env(spec, config, secrets)
        argv = container_argv(spec, env)
        # Paths inside the image, mapped to this checkout and this test's data.
        argv = [str(self.data) if a == "/data" else a for a in argv]
        if argv[0] == "clot-hpo":
            argv[0] = CLOT_HPO
        if argv[:2] == ["python", "/usr/local/lib/clot-hpo/mlflow_users.py"]:
            argv[:2] = [sys.executable, str(ROOT / "docker" / "mlflow_users.py")]
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        return argv, full_env

    def run(self, job: str, container: str) -> subprocess.CompletedProcess[str]:
        argv, env = self.argv_env(job, container)
        cwd = self.tmp / job
        cwd.mkdir(exist_ok=True)
        return subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
        )

    def start_worker(self, name: str) -> Worker:
        argv, env = self.argv_env("clot-hpo-workers", "worker")
        cwd = self.tmp / name  # its own /work/mlruns, as each pod has
        cwd.mkdir()
        log = cwd / "out.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append(worker := Worker(name, proc, log))
        return worker


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return f"--- {self.name} ---\n{self.log.read_text(errors='replace')[-3000:]}"

    def kill_pod(self) -> None:
        """SIGKILL every process of the pod (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def exit_code(self, timeout: float = 300) -> int:
        """The container's exit code as the kubelet reports it (128 + N for signal N)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_pod()
            pytest.fail(f"{self.name} still running after {timeout:.0f} s\n{self.output()}")
        return 128 - code if code < 0 else code


_trials = studies.trials  # polled every 0.1 s: one storage per URL (tests/support/studies.py)


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str, workers: list[Worker]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n" + "\n".join(w.output() for w in workers))


def _pid_of(trial: Any) -> int:
    """The worker process of a trial: its worker id is ``host-pid-token``."""
    return int(str(trial.user_attrs["worker_id"]).rsplit("-", 2)[1])


@pytest.fixture
def pods(
    postgres_session: PostgresServer,  # noqa: F811
    server: MlflowServer,
    study_config: Path,
    tiny_dataset: Path,
    tmp_path: Path,
) -> Iterator[Pods]:
    role = settings()["OPTUNA_DB"]
    conn = postgres_session.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{role}"')
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{PG_PASSWORD}'")
            cur.execute(f'CREATE DATABASE "{role}" OWNER "{role}"')
    finally:
        conn.close()
    pods = Pods(postgres_session, server, study_config, tiny_dataset, tmp_path)
    yield pods
    for worker in pods.started:  # a failed test leaves no worker training against torn-down servers
        if worker.proc.poll() is None:
            worker.kill_pod()


def _runs_left_running(server: MlflowServer, study: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The study's MLflow runs still RUNNING, read as the admin."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) >= N_TRIALS + 1, "the study's run and a run per trial"
    return [r.info.run_name for r in runs if r.info.status == "RUNNING"]


@pytest.mark.timeout(420)
def test_the_manifests_worker_pods_survive_preemption_and_a_lost_node(
    pods: Pods, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = pods.values()
    storage, study = config["CLOT_HPO_STORAGE"], config["STUDY_NAME"]
    users = pods.run("clot-hpo-mlflow-users", "mlflow-users")
    assert users.returncode == 0, users.stderr
    prepared = pods.run("clot-hpo-prepare", "prepare")
    assert prepared.returncode == 0, prepared.stderr + prepared.stdout
    assert "enqueued 1 defaults trial(s)" in prepared.stdout
    again = pods.run("clot-hpo-prepare", "prepare")
    assert again.returncode == 0 and "nothing enqueued" in again.stdout, again.stderr
    (defaults,) = _trials(storage, study)
    assert defaults.state.name == "WAITING"
    default_params = defaults.system_attrs["fixed_params"]

    workers = [pods.start_worker(f"worker-{i}") for i in range(3)]
    job = find("Job", "clot-hpo-workers")
    by_pid = {w.proc.pid: w for w in workers}

    def mid_epoch(exclude: set[int], not_retrying: int | None = None) -> tuple[Worker, Any] | None:
        """A worker whose trial is past its first epoch and before its last (not a retry of one)."""
        for trial in _trials(storage, study):
            if (
                trial.state.name == "RUNNING"
                and trial.system_attrs.get("failed_trial", -1) != not_retrying
                and trial.intermediate_values
                and len(trial.intermediate_values) < EPOCHS - 1
                and "mlflow_run_id" in trial.user_attrs
                and _pid_of(trial) in by_pid
                and _pid_of(trial) not in exclude
                and by_pid[_pid_of(trial)].proc.poll() is None
            ):
                return by_pid[_pid_of(trial)], trial
        return None

    # Preemption: the kubelet sends SIGTERM to the container's main process only.
    preempted_worker, preempted = _wait_for(lambda: mid_epoch(set()), 240, "a trial mid-way", workers)
    preempted_worker.proc.send_signal(signal.SIGTERM)
    code = preempted_worker.exit_code(timeout=60)
    assert code == 75, preempted_worker.output()
    assert pod_failure_action(job, code) == "Ignore", "a preemption does not count against backoffLimit"
    # The Job controller replaces an ignored pod: parallelism is 3 again.
    workers.append(replacement := pods.start_worker("worker-replacement"))
    by_pid[replacement.proc.pid] = replacement

    # A node lost: every process of another pod killed at once.
    killed_worker, killed = _wait_for(
        lambda: mid_epoch({preempted_worker.proc.pid}, preempted.number),
        240,
        "another trial mid-way",
        workers,
    )
    killed_worker.kill_pod()
    assert killed_worker.exit_code() == 137
    assert pod_failure_action(job, 137) == "Count"
    assert pod_failure_action(job, 137, ("DisruptionTarget",)) == "Ignore", "as on a drained node"

    for worker in workers:
        if worker not in (preempted_worker, killed_worker):
            assert worker.exit_code() == 0, worker.output()

    trials = _trials(storage, study)
    states = [t.state.name for t in trials]
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == N_TRIALS, states
    assert not {"RUNNING", "WAITING"} & set(states), states
    assert len({t.number for t in trials}) == len(trials)
    originals = [
        t.number for t in trials if t.params == default_params and "failed_trial" not in t.system_attrs
    ]
    assert originals == [defaults.number], "the defaults trial was enqueued and run once"

    first = {t.number: t for t in trials}[preempted.number]
    assert first.state.name == "FAIL" and first.user_attrs["preempted"] is True
    (resumed,) = [t for t in trials if t.system_attrs.get("failed_trial") == preempted.number]
    assert resumed.state.name == "COMPLETE" and resumed.params == first.params
    assert resumed.user_attrs["resumed_from_epoch"] == first.user_attrs["epochs_run"] >= 1
    assert sorted(resumed.intermediate_values) == list(range(EPOCHS)), "the whole curve, each epoch once"

    lost = {t.number: t for t in trials}[killed.number]
    assert lost.state.name == "FAIL", "a vanished worker's trial is failed by heartbeat"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert [t.state.name for t in retries] == ["COMPLETE"] and retries[0].params == lost.params
    assert _runs_left_running(pods.server, study, monkeypatch) == [], "no MLflow run left RUNNING"
