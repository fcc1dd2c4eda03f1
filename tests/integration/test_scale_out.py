"""Scale-out with the real components, no Docker: PostgreSQL + MLflow server + worker processes.

The same parts as the compose stack, started as processes: a throwaway PostgreSQL cluster
(one database for Optuna, one per test for MLflow's backend store), a real ``mlflow server``
on that PostgreSQL, and two ``clot-hpo search`` workers on one study, each started in its own
session so ``kill -9`` of its process group takes its trial's child process with it.

Tiny on purpose (tiny CNN, 32 px, 2 epochs, a few trials, heartbeat 1 s / grace 3 s): the
file runs in a few minutes on two cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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

from clot_hpo.search.ledger import STUDY_ATTR_RUN_ID
from tests.support import studies, together
from tests.support.postgres import PostgresServer, postgres_session  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLOT_HPO = str(BIN / "clot-hpo") if (BIN / "clot-hpo").exists() else "clot-hpo"
MLFLOW = str(BIN / "mlflow") if (BIN / "mlflow").exists() else "mlflow"
TINY_CONFIG = ROOT / "experiments" / "tiny.yaml"
TINY_SPACE = ROOT / "search_spaces" / "tiny_cnn.yaml"
HEARTBEAT_INTERVAL, GRACE_PERIOD = 1, 3
WORKER_TIMEOUT = 240.0


# ----- processes ----------------------------------------------------------------------------
def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc: no psutil needed)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The command name is in parentheses and may hold spaces: split after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return []
    return raw.rstrip("\0").split("\0")


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # pgid == pid: started with start_new_session=True


@dataclass
class Worker:
    """One ``clot-hpo search`` process (its own session and working directory)."""

    name: str
    proc: subprocess.Popen[bytes]
    cwd: Path
    stdout_path: Path
    stderr_path: Path

    def running_trial(self) -> int | None:
        """The trial number the worker's child process is training right now, if any."""
        for child in _child_pids(self.proc.pid):
            args = _cmdline(child)
            if "clot_hpo.search.trial.process" in args:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    # A process started ahead (`--wait`) gets its task on stdin; once it has one,
                    # its stderr is that trial's log, trials/<number>/stderr.<attempt>.log.
                    log = os.readlink(f"/proc/{child}/fd/2")
                    found = re.search(r"trials/(\d+)/stderr\.\d+\.log$", log)
                    if found:
                        return int(found.group(1))
                    if args[-1] != "--wait":  # a task path, relative to the worker's folder
                        return int(json.loads((self.cwd / args[-1]).read_text())["trial_number"])
        return None

    def kill9(self) -> list[int]:
        """SIGKILL the worker and its trial process (the whole process group, then stragglers)."""
        children = _child_pids(self.proc.pid)
        _kill_group(self.proc.pid)
        for child in children:  # in case a child left the group
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return children

    def wait(self, timeout: float = WORKER_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            pytest.fail(f"worker {self.name} still running after {timeout:.0f} s\n{self.output()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self, n_chars: int = 3000) -> str:
        out = self.stdout_path.read_text(errors="replace")[-n_chars:]
        return f"--- {self.name} stdout ---\n{out}\n--- {self.name} stderr ---\n{self.stderr()[-n_chars:]}"


class PgMlflowServer:
    """A real ``mlflow server`` with a PostgreSQL backend store; restartable on the same port."""

    def __init__(self, backend_uri: str, root: Path) -> None:
        from tests.support.mlflow_server import free_port

        self.backend_uri = backend_uri
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "server.log"

    def start(self, timeout: float = 180.0) -> None:
        import urllib.request

        env = dict(
            os.environ,
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="true",
        )
        cmd = [
            MLFLOW,
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        _kill_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc.pid)
            self.proc.wait(timeout=20)

    def log_tail(self, n_chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n_chars:]
        return ""


# ----- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def worker_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiments/tiny.yaml with short heartbeats, no pruning and 32 px images only."""
    folder = tmp_path_factory.mktemp("scale-config")
    space = yaml.safe_load(TINY_SPACE.read_text(encoding="utf-8"))
    space["parameters"]["image_size"] = {"type": "fixed", "value": 32}
    space_path = folder / "tiny_cnn_32.yaml"
    space_path.write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    config = yaml.safe_load(TINY_CONFIG.read_text(encoding="utf-8"))
    config["search"].update(
        heartbeat_interval=HEARTBEAT_INTERVAL,
        grace_period=GRACE_PERIOD,
        max_retry=1,
        pruner="none",
        sampler="random",
        search_spaces={"tiny_cnn": str(space_path)},
    )
    config.setdefault("evaluation", {})["bootstrap_samples"] = 100
    # Two epochs: the first one's report tells the fault tests that a trial is mid-way.
    config.setdefault("training", {}).update(epochs=2)
    path = folder / "tiny-scale.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def optuna_url(postgres_session: PostgresServer) -> str:  # noqa: F811
    return postgres_session.create_database("scale_optuna")


@pytest.fixture(scope="module")
def mlflow_pg(
    postgres_session: PostgresServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgMlflowServer]:
    server = PgMlflowServer(
        postgres_session.create_database("scale_mlflow"), tmp_path_factory.mktemp("mlflow-pg")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Cluster:
    """Launches workers against one study and cleans up every process it started."""

    config: Path
    data: Path
    storage: str
    mlflow: PgMlflowServer
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, study: str, n_trials: int, name: str | None = None, *extra: str) -> Worker:
        name = name or f"w{len(self.workers)}"
        cwd = self.tmp / name  # its own mlruns/studies/...: like one container each
        cwd.mkdir(parents=True, exist_ok=True)
        out, err = cwd / "stdout.log", cwd / "stderr.log"
        cmd = [
            CLOT_HPO,
            "search",
            str(self.config),
            "--study-name",
            study,
            "--storage",
            self.storage,
            "--tracking-uri",
            self.mlflow.uri,
            "--n-trials",
            str(n_trials),
            "--data",
            str(self.data),
            *extra,
        ]
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            MLFLOW_DISABLE_TELEMETRY="true",
            PYTHONUNBUFFERED="1",
            COLUMNS="200",
        )
        with open(out, "wb") as fout, open(err, "wb") as ferr:
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=fout, stderr=ferr, env=env, start_new_session=True)
        worker = Worker(name=name, proc=proc, cwd=cwd, stdout_path=out, stderr_path=err)
        self.workers.append(worker)
        return worker

    def cleanup(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.kill9()


@pytest.fixture
def cluster(
    worker_config: Path, tiny_dataset: Path, optuna_url: str, mlflow_pg: PgMlflowServer, tmp_path: Path
) -> Iterator[Cluster]:
    c = Cluster(config=worker_config, data=tiny_dataset, storage=optuna_url, mlflow=mlflow_pg, tmp=tmp_path)
    try:
        yield c
    finally:
        c.cleanup()


# ----- reading the results ------------------------------------------------------------------
_trials = studies.trials  # polled: one storage per URL (tests/support/studies.py)


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str, workers: list[Worker]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for worker in workers:
            if worker.proc.poll() is not None:
                pytest.fail(
                    f"worker {worker.name} exited {worker.proc.returncode} while waiting for "
                    f"{what}\n{worker.output()}"
                )
        time.sleep(0.2)
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what}\n" + "\n".join(w.output() for w in workers)
    )


def _mid_trial(storage: str, study: str) -> bool:
    """Whether a trial is RUNNING and has reported its first epoch."""
    return any(t.state.name == "RUNNING" and t.intermediate_values for t in _trials(storage, study))


def _count(trials: list[Any], *states: str) -> int:
    return sum(t.state.name in states for t in trials)


def _runs(tracking_uri: str, study: str) -> tuple[Any, list[Any]]:
    """(parent runs, trial runs) of the study's MLflow experiment, every status."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None, f"no MLflow experiment named {study!r}"
    # Deleted runs too: no worker may have created a second parent run, even briefly.
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _trial_number(run: Any) -> int:
    return int(run.data.tags["optuna.trial_number"])


def _has_model(tracking_uri: str, run: Any) -> bool:
    """A model logged from this run (MLflow 3 logged model, or a model artifact folder)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    with contextlib.suppress(Exception):
        models = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
        )
        # A model whose upload finished: MLflow 3 marks it READY (PENDING/FAILED otherwise).
        if any(str(getattr(m, "status", "READY")).endswith("READY") for m in models):
            return True
    with contextlib.suppress(Exception):
        return any(a.path.startswith("model") for a in client.list_artifacts(run.info.run_id))
    return False


def _assert_tracking_complete(tracking_uri: str, study: str, trials: list[Any]) -> dict[int, Any]:
    """Every COMPLETE trial has exactly one FINISHED run with metrics and a model; none RUNNING."""
    parents, children = _runs(tracking_uri, study)
    assert len(parents) == 1, f"one parent run per study expected, got {[p.info.run_name for p in parents]}"
    parent_id = parents[0].info.run_id
    still_running = [
        (r.info.run_name, r.info.status) for r in parents + children if r.info.status == "RUNNING"
    ]
    assert not still_running, f"runs left RUNNING: {still_running}"
    by_number: dict[int, list[Any]] = {}
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent_id, "trial run outside the study's parent run"
        by_number.setdefault(_trial_number(run), []).append(run)
    finished: dict[int, Any] = {}
    for trial in trials:
        if trial.state.name != "COMPLETE":
            continue
        runs = by_number.get(trial.number, [])
        done = [r for r in runs if r.info.status == "FINISHED"]
        assert len(runs) == 1 and len(done) == 1, (
            f"trial {trial.number}: one FINISHED run expected, got {[r.info.status for r in runs]}"
        )
        run = done[0]
        assert "val_auc" in run.data.metrics and "test_auc" in run.data.metrics, (
            f"trial {trial.number}: metrics missing, got {sorted(run.data.metrics)}"
        )
        assert _has_model(tracking_uri, run), f"trial {trial.number}: no model logged"
        finished[trial.number] = run
    return finished


# ----- tests --------------------------------------------------------------------------------
_JOIN_AT_ONCE = (
    together.CHILD
    + r"""
import sys
from clot_hpo.config import load_config
from clot_hpo.search.storage import open_storage
from clot_hpo.search.study import create_or_load_study, open_study_run
from clot_hpo.tracking import tracker_from_config

config_path, tracking_uri, barrier, name, *storages = sys.argv[1:]
for r, storage in enumerate(storages):
    study = f"join-{r}"
    config = load_config(config_path, {"search.storage": storage, "tracking.uri": tracking_uri,
                                       "search.study_name": study})
    tracker = tracker_from_config(config.tracking, experiment_name=study)
    wait_for_go(f"{barrier}/{r}", name)  # every process ready for this round: go together
    opened = create_or_load_study(config, open_storage(storage, heartbeat_interval=1))
    print("parent run", r, open_study_run(opened, storage, tracker), flush=True)
"""
)


@pytest.mark.timeout(300)
def test_workers_starting_together_join_one_study_and_one_parent_run(
    postgres_session: PostgresServer,  # noqa: F811
    mlflow_pg: PgMlflowServer,
    worker_config: Path,
    tmp_path: Path,
) -> None:
    """`docker compose up --scale worker=4` on a fresh stack: every worker starts at once.

    Opening the storage creates Optuna's tables (a race on a fresh database) and each worker
    opens the study's parent run (a race in MLflow, which the Optuna storage settles). Several
    rounds, because a race may be lost: each process joins a fresh database and experiment per
    round, all processes of a round at the same instant (``tests/support/together.py``), so
    the imports are paid once per process.
    """
    rounds, per_round = 3, 3
    storages = [postgres_session.create_database(f"join_{r}") for r in range(rounds)]
    barrier = tmp_path / "barrier"
    for r in range(rounds):
        (barrier / str(r)).mkdir(parents=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _JOIN_AT_ONCE, str(worker_config), mlflow_pg.uri, str(barrier), f"p{i}"]
            + storages,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        for i in range(per_round)
    ]
    for r in range(rounds):
        together.release(barrier / str(r), per_round, procs, timeout=240)
    results: dict[int, list[str]] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, f"a worker could not join: {err.strip().splitlines()[-1:]}"
        for line in out.splitlines():
            if line.startswith("parent run "):
                r, run_id = line.split()[2:]
                results.setdefault(int(r), []).append(run_id)
    assert sorted(results) == list(range(rounds)), results
    for r, run_ids in results.items():
        assert len(run_ids) == per_round, f"round {r}: {run_ids}"
        study = studies.load_study(postgres_session.url(f"join_{r}"), f"join-{r}")
        assert len(study.trials) == 0
        parents, _ = _runs(mlflow_pg.uri, f"join-{r}")
        assert len(parents) == 1, f"round {r}: {len(parents)} parent runs for one study"
        assert set(run_ids) == {parents[0].info.run_id}, f"round {r}: workers use different parent runs"
        assert study.user_attrs[STUDY_ATTR_RUN_ID] == parents[0].info.run_id, f"round {r}: not on record"


@pytest.mark.timeout(420)
def test_two_workers_share_one_study_across_an_mlflow_restart(cluster: Cluster) -> None:
    """Two workers, one budget; the tracking server restarts mid-trial and loses no metrics.

    One study serves both claims: past the first epoch, evaluation, metrics and the model are
    logged across the restart, and every COMPLETE trial still has its one FINISHED run.
    """
    study, n_trials = "share", 3  # odd: a per-worker budget would run 6
    workers = [cluster.start_worker(study, n_trials) for _ in range(2)]
    _wait_for(lambda: _mid_trial(cluster.storage, study), 240, "a trial past its first epoch", workers)
    cluster.mlflow.stop()
    time.sleep(3.0)
    cluster.mlflow.start()

    codes = [w.wait() for w in workers]
    assert codes == [0, 0], "\n".join(w.output() for w in workers)

    trials = _trials(cluster.storage, study)
    assert _count(trials, "COMPLETE", "PRUNED") == n_trials, "the budget is global over workers"
    assert _count(trials, "RUNNING", "WAITING") == 0
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    workers = {t.user_attrs.get("worker_id") for t in trials if t.state.name == "COMPLETE"}
    assert len(workers) == 2, f"both workers should have run trials, got workers {workers}"

    runs = _assert_tracking_complete(cluster.mlflow.uri, study, trials)
    assert sorted(runs) == sorted(t.number for t in trials if t.state.name == "COMPLETE")
    _, children = _runs(cluster.mlflow.uri, study)
    run_numbers = [_trial_number(r) for r in children]
    assert len(run_numbers) == len(set(run_numbers)), f"a trial number ran twice: {sorted(run_numbers)}"


@pytest.mark.timeout(420)
def test_killed_worker_trial_is_retried(cluster: Cluster) -> None:
    study, n_trials, epochs = "kill", 2, 4  # caught after epoch 1 or 2: two epochs still to run
    workers = [cluster.start_worker(study, n_trials, None, "--epochs", str(epochs)) for _ in range(2)]

    def mid_trial(worker: Worker) -> int | None:
        trials = {t.number: t for t in _trials(cluster.storage, study)}
        number = worker.running_trial()
        # Mid-trial: the child sampled its parameters, opened its run and finished epoch 1.
        if (
            number is not None
            and number in trials
            and trials[number].state.name == "RUNNING"
            and "mlflow_run_id" in trials[number].user_attrs
            and 1 <= len(trials[number].intermediate_values) <= epochs - 2
        ):
            return number
        return None

    def a_worker_mid_trial() -> tuple[Worker, int] | None:
        for worker in workers:
            if mid_trial(worker) is None:
                continue
            # Frozen, the worker cannot finish the trial between this look and the kill; a
            # trial that finished before the freeze is let go, and the next one waited for.
            _kill_group(worker.proc.pid, signal.SIGSTOP)
            number = mid_trial(worker)
            if number is not None:
                return worker, number
            _kill_group(worker.proc.pid, signal.SIGCONT)
        return None

    victim, killed = _wait_for(a_worker_mid_trial, 180, "a trial past its first epoch", workers)
    children = victim.kill9()
    assert children, "the killed worker had a trial child process"
    # Dead within seconds (a SIGKILLed process on a loaded machine may take more than 0.2 s).
    deadline = time.monotonic() + 10.0
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(c) for c in children), "the trial process must die with its worker"
    survivor = next(w for w in workers if w is not victim)
    assert survivor.wait() == 0, survivor.output()

    trials = _trials(cluster.storage, study)
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state.name == "FAIL", "the vanished worker's trial must be marked FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE", (
        f"one COMPLETE retry of trial {killed} expected, got {[(t.number, t.state.name) for t in retried]}"
    )
    assert retried[0].params == by_number[killed].params, "the retry must run the same parameters"
    assert _count(trials, "COMPLETE", "PRUNED") == n_trials
    assert _count(trials, "RUNNING", "WAITING") == 0

    _assert_tracking_complete(cluster.mlflow.uri, study, trials)
    _, runs = _runs(cluster.mlflow.uri, study)
    killed_runs = [r for r in runs if _trial_number(r) == killed]
    assert [r.info.status for r in killed_runs] in (["FAILED"], ["KILLED"]), (
        f"the killed trial's run must be closed FAILED/KILLED, got {[r.info.status for r in killed_runs]}"
    )


def _preempt_first_trial(cluster: Cluster, study: str, epochs: int) -> tuple[Any, int]:
    """Start a worker, SIGTERM it past trial 0's first epoch; the preempted trial and its epochs.

    The trial's last checkpoint is on the tracking server (``checkpoint/checkpoint.npz`` of its
    run) and its retry is queued.
    """
    from mlflow import MlflowClient

    first = cluster.start_worker(study, 1, "first", "--epochs", str(epochs))

    def running_with_run() -> Any:
        return next(
            (
                t
                for t in _trials(cluster.storage, study)
                if t.state.name == "RUNNING"
                and 1 <= len(t.intermediate_values) <= epochs - 3  # SIGTERM lands mid-training
                and "mlflow_run_id" in t.user_attrs
            ),
            None,
        )

    running = _wait_for(running_with_run, 180, "a trial past its first epoch", [first])
    os.kill(first.proc.pid, signal.SIGTERM)  # the worker only, as `docker stop` does
    assert first.wait(timeout=60) == 75, first.output()
    trials = _trials(cluster.storage, study)
    preempted = trials[running.number]
    done = preempted.user_attrs["epochs_run"]
    assert preempted.state.name == "FAIL" and preempted.user_attrs["preempted"] is True
    assert 1 <= done < epochs
    assert trials[-1].state.name == "WAITING", "the preempted trial must be queued again at once"
    client = MlflowClient(cluster.mlflow.uri)
    uploaded = [a.path for a in client.list_artifacts(preempted.user_attrs["mlflow_run_id"], "checkpoint")]
    assert uploaded == ["checkpoint/checkpoint.npz"], uploaded
    return preempted, done


@pytest.mark.timeout(300)
def test_preempted_trial_resumes_on_another_machine_through_the_tracking_server(cluster: Cluster) -> None:
    """SIGTERM to a worker mid-epoch; a worker in another folder resumes from the server's copy."""
    from mlflow import MlflowClient

    study, epochs = "preempt", 10  # short epochs: SIGTERM lands mid-training
    preempted, done = _preempt_first_trial(cluster, study, epochs)
    client = MlflowClient(cluster.mlflow.uri)
    second = cluster.start_worker(study, 1, "second", "--epochs", str(epochs))  # another folder
    assert second.wait() == 0, second.output()
    assert "downloaded from the tracking server" in second.stdout_path.read_text()
    retry = _trials(cluster.storage, study)[-1]
    assert retry.state.name == "COMPLETE" and retry.user_attrs["resumed_from_epoch"] == done
    assert sorted(retry.intermediate_values) == list(range(epochs))
    # The retry's run holds the whole curve, each epoch on its own step once, and says where it resumed.
    run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert run.data.tags["clot_hpo.resumed_from_epoch"] == str(done)
    assert run.data.tags["optuna.retried_from"] == str(preempted.number)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps == list(range(epochs)), steps
    _assert_tracking_complete(cluster.mlflow.uri, study, _trials(cluster.storage, study))


@pytest.mark.timeout(300)
def test_a_planted_checkpoint_is_refused_and_the_retry_trains_its_epochs(cluster: Cluster) -> None:
    """Issue 20: a worker account replaces the preempted run's checkpoint with one claiming epoch 60.

    The retry (a worker in another folder) checks the download against the Optuna storage,
    refuses it in one line, trains every epoch itself and reports no value from the file.
    """
    from dataclasses import replace

    from mlflow import MlflowClient

    from clot_hpo.checkpoint_file import load_checkpoint, save_checkpoint

    study, epochs, planted_value = "planted", 6, 0.987654321
    preempted, done = _preempt_first_trial(cluster, study, epochs)
    client = MlflowClient(cluster.mlflow.uri)
    run_id = preempted.user_attrs["mlflow_run_id"]
    genuine = load_checkpoint(
        client.download_artifacts(run_id, "checkpoint/checkpoint.npz", str(cluster.tmp / "genuine"))
    )
    assert genuine is not None and genuine.epoch == done
    # Its own weights and header facts (study, trial, seed, parameters), 60 epochs of history.
    planted = replace(genuine, epoch=60, history={k: [planted_value] * 60 for k in genuine.history})
    path = save_checkpoint(cluster.tmp / "planted" / "checkpoint.npz", planted)
    client.log_artifact(run_id, str(path), "checkpoint")

    second = cluster.start_worker(study, 1, "second", "--epochs", str(epochs))  # another folder
    assert second.wait() == 0, second.output()
    said = " ".join(second.stdout_path.read_text().split())  # rich may wrap a long line
    assert (
        f"the checkpoint of trial {preempted.number} downloaded from the tracking server was refused" in said
    )
    assert f"is not one trial {preempted.number} recorded in the Optuna storage" in said, said[-3000:]
    assert "from scratch (every checkpoint was refused)" in said and "resumes trial" not in said
    retry = _trials(cluster.storage, study)[-1]
    assert retry.state.name == "COMPLETE", second.output()
    assert retry.user_attrs.get("resumed_from_epoch", 0) == 0 and retry.user_attrs["epochs_run"] == epochs
    assert sorted(retry.intermediate_values) == list(range(epochs))
    assert planted_value not in retry.intermediate_values.values()


# A deliberate stop (exit 1 or 2 with the CLI's one line), not "unexpected error".
_ONE_LINE_ERROR = re.compile(r"^clot-hpo: error: .+$")


@pytest.mark.timeout(480)
def test_postgres_outage_does_not_corrupt_the_study(
    cluster: Cluster,
    postgres_session: PostgresServer,  # noqa: F811
) -> None:
    study, n_trials = "pg-outage", 2
    workers = [cluster.start_worker(study, n_trials) for _ in range(2)]
    _wait_for(lambda: _mid_trial(cluster.storage, study), 240, "a trial past its first epoch", workers)
    postgres_session.stop(mode="fast")  # every connection is dropped
    time.sleep(5.0)
    postgres_session.start()

    codes = [w.wait() for w in workers]
    for worker, code in zip(workers, codes, strict=True):
        if code != 0:
            # Stopping is allowed, but with a clear one-line message and no traceback.
            lines = [ln for ln in worker.stderr().splitlines() if ln.strip()]
            assert "Traceback" not in worker.stderr(), worker.output()
            assert lines and _ONE_LINE_ERROR.match(lines[-1]), worker.output()

    # Not corrupted: the study loads, its counts add up, and a rerun finishes the budget.
    trials = _trials(cluster.storage, study)
    assert trials, "the study must still load after the outage"
    assert len({t.number for t in trials}) == len(trials)
    rerun = cluster.start_worker(study, n_trials, name="rerun")
    assert rerun.wait() == 0, rerun.output()
    trials = _trials(cluster.storage, study)
    assert _count(trials, "COMPLETE", "PRUNED") == n_trials
    assert _count(trials, "RUNNING", "WAITING") == 0, "no trial may stay RUNNING after the rerun"
    _assert_tracking_complete(cluster.mlflow.uri, study, trials)
