"""How far one Optuna study storage goes: no-op trials at 1 / 4 / 16 / 64 worker processes.

Each worker process runs the product's storage pattern with no training in between: ask, four
parameters (backbone, learning rate, batch size, dropout), three user attributes (worker id,
data digest, run id), five intermediate reports each followed by a pruning check, then tell.
Cells, each on a fresh study and bounded to ``--seconds`` of work:

* ``postgresql``: ``RDBStorage`` on PostgreSQL, SQLAlchemy's default pool (the product before
  this benchmark: ``pool_pre_ping`` only);
* ``postgresql-nullpool``: the same without a pool (a connection per storage call);
* ``postgresql-pool1``: what ``clot_hpo.search.storage`` opens now (``open_storage``);
* ``journal``: ``JournalStorage`` on a local file (``JournalFileBackend``);
* ``grpc``: Optuna's gRPC proxy (``run_grpc_proxy_server``) in front of PostgreSQL, each worker a
  ``GrpcStorageProxy``.

Reported per cell: trials per second over all workers, p50 and p95 of ask (``study.ask`` plus the
four suggestions) and of tell, and the most PostgreSQL connections open on the study's database
at once (``pg_stat_activity``, sampled every 0.2 s). RandomSampler in these cells, so the
storage, not the sampler, is measured.

Then TPE (the product's sampler, ``create_sampler("tpe")``) on PostgreSQL at 100 / 1,000 /
5,000 / 10,000 finished trials (100 added with ``study.add_trials``, then copied in SQL): the
first ask of a worker that just opened the study (it reads every trial) and the median of
later asks (each reads only what changed: Optuna's cached storage).

    .venv/bin/python benchmarks/storage_scale.py [--seconds 15] [--processes 1,4,16,64]
    .venv/bin/python benchmarks/storage_scale.py --trial-cost

``--trial-cost`` measures instead how many database transactions one no-op trial and one real
product trial (``clot-hpo search experiments/tiny.yaml``, 2 epochs, no tracking, heartbeats off)
take: their ratio turns the no-op figures into real trials.

Prints two Markdown tables and one JSON object; record ``uptime`` with them. Needs the Debian
``postgresql`` package (``make system-deps``). docs/kubernetes.md turns the figures into a
capacity table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.postgres and clot_hpo, when run as a script

import optuna  # noqa: E402

from clot_hpo.search.samplers import create_sampler  # noqa: E402
from clot_hpo.search.storage import open_storage  # noqa: E402
from tests.support.postgres import PostgresServer, PostgresUnavailable, postgres_server  # noqa: E402

STORAGES = ("postgresql", "postgresql-nullpool", "postgresql-pool1", "journal", "grpc")
TPE_SIZES = (100, 1000, 5000, 10000)
REPORTS = 5
STUDY = "bench"


def _suggest(trial: optuna.trial.BaseTrial) -> None:
    """The four parameters of a two-backbone study (search_spaces/*.yaml style)."""
    trial.suggest_categorical("backbone", ["efficientnet_b1", "resnet50"])
    trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    trial.suggest_categorical("batch_size", [8, 16, 32])
    trial.suggest_float("dropout", 0.0, 0.5)


def _open(kind: str, target: str) -> Any:
    """The storage a worker of cell ``kind`` opens (in its own process)."""
    if kind == "postgresql":
        return optuna.storages.RDBStorage(target, engine_kwargs={"pool_pre_ping": True})
    if kind == "postgresql-nullpool":
        from sqlalchemy.pool import NullPool

        return optuna.storages.RDBStorage(target, engine_kwargs={"poolclass": NullPool})
    if kind == "postgresql-pool1":
        return open_storage(target)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(target))
    if kind == "grpc":
        host, port = target.rsplit(":", 1)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
        proxy.wait_server_ready(timeout=60)
        return proxy
    raise ValueError(kind)


def _worker(kind: str, target: str, index: int, start_at: float, seconds: float, out: Any) -> None:
    """One worker process: no-op trials from ``start_at`` for ``seconds``; puts its timings on ``out``."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    asks: list[float] = []
    tells: list[float] = []
    error = ""
    try:
        study = optuna.load_study(
            study_name=STUDY, storage=_open(kind, target), sampler=optuna.samplers.RandomSampler(seed=index)
        )
        time.sleep(max(0.0, start_at - time.time()))
        end = start_at + seconds
        while time.time() < end:
            t0 = time.perf_counter()
            trial = study.ask()
            _suggest(trial)
            t1 = time.perf_counter()
            trial.set_user_attr("worker_id", f"w{index}")
            trial.set_user_attr("data_digest", "0" * 16)
            trial.set_user_attr("mlflow_run_id", f"{index:032x}")
            for step in range(REPORTS):
                trial.report(0.5 + step / 100, step)
                trial.should_prune()
            t2 = time.perf_counter()
            study.tell(trial, 0.5)
            t3 = time.perf_counter()
            asks.append(t1 - t0)
            tells.append(t3 - t2)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not raised in a child
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    out.put({"asks": asks, "tells": tells, "error": error})


def _proxy(url: str, port: int) -> None:
    """The gRPC proxy process (started before the parent touches gRPC: gRPC and fork do not mix)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.storages.run_grpc_proxy_server(optuna.storages.get_storage(url), host="127.0.0.1", port=port)


class _Connections:
    """The most connections open on one database, sampled on a thread."""

    def __init__(self, pg: PostgresServer, dbname: str) -> None:
        self.pg, self.dbname, self.peak = pg, dbname, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = self.pg.connect()
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.dbname,))
                    row = cur.fetchone()
                    self.peak = max(self.peak, int(row[0]) if row else 0)
                    self._stop.wait(0.2)
        finally:
            conn.close()

    def __enter__(self) -> _Connections:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_cell(pg: PostgresServer, kind: str, n: int, seconds: float, tmp: Path) -> dict[str, Any]:
    """One storage at ``n`` worker processes, on a fresh study."""
    dbname = f"bench_{kind.replace('-', '_')}_{n}"
    url = pg.create_database(dbname)
    ctx = mp.get_context("fork")
    proxy = None
    if kind == "journal":
        target = str(tmp / f"{dbname}.log")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        optuna.create_study(study_name=STUDY, storage=JournalStorage(JournalFileBackend(target)))
    else:
        setup = optuna.storages.RDBStorage(url)
        optuna.create_study(study_name=STUDY, storage=setup)
        setup.remove_session()
        setup.engine.dispose()
        target = url
    if kind == "grpc":
        from tests.support.mlflow_server import free_port

        port = free_port()
        proxy = ctx.Process(target=_proxy, args=(url, port), daemon=True)
        proxy.start()
        target = f"127.0.0.1:{port}"
    out = ctx.Queue()
    # Every process forked and connected before the clock starts.
    start_at = time.time() + 3.0 + 0.1 * n
    procs = [ctx.Process(target=_worker, args=(kind, target, i, start_at, seconds, out)) for i in range(n)]
    for proc in procs:
        proc.start()
    with _Connections(pg, dbname) as conns:
        results = [out.get(timeout=start_at - time.time() + seconds + 120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    if proxy is not None:
        proxy.kill()
        proxy.join(timeout=10)
    asks = [a for r in results for a in r["asks"]]
    tells = [t for r in results for t in r["tells"]]
    errors = sorted({r["error"] for r in results if r["error"]})
    return {
        "storage": kind,
        "processes": n,
        "trials": len(asks),
        "trials_per_s": round(len(asks) / seconds, 2),
        "ask_p50_ms": round(1000 * _quantile(asks, 0.5), 1),
        "ask_p95_ms": round(1000 * _quantile(asks, 0.95), 1),
        "tell_p50_ms": round(1000 * _quantile(tells, 0.5), 1),
        "tell_p95_ms": round(1000 * _quantile(tells, 0.95), 1),
        "db_connections_peak": conns.peak if kind != "journal" else 0,
        "errors": errors,
    }


def _finished(rng: Any, number: int) -> optuna.trial.FrozenTrial:
    params = {
        "backbone": ["efficientnet_b1", "resnet50"][int(rng.integers(2))],
        "learning_rate": float(10 ** rng.uniform(-5, -2)),
        "batch_size": [8, 16, 32][int(rng.integers(3))],
        "dropout": float(rng.uniform(0, 0.5)),
    }
    distributions = {
        "backbone": optuna.distributions.CategoricalDistribution(["efficientnet_b1", "resnet50"]),
        "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
        "batch_size": optuna.distributions.CategoricalDistribution([8, 16, 32]),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
    }
    value = float(rng.uniform(0.5, 0.95))
    return optuna.trial.create_trial(
        params=params,
        distributions=distributions,
        value=value,
        intermediate_values={step: value for step in range(REPORTS)},
        user_attrs={"worker_id": f"w{number % 64}"},
    )


# Child tables of a trial and their columns (Optuna 5's RDB schema, optuna/storages/_rdb/models.py):
# cloned with the trials by _grow.
_TRIAL_TABLES = {
    "trial_params": ("param_name", "param_value", "distribution_json"),
    "trial_values": ("objective", "value", "value_type"),
    "trial_intermediate_values": ("step", "intermediate_value", "intermediate_value_type"),
    "trial_user_attributes": ("key", "value_json"),
}


def _grow(pg: PostgresServer, dbname: str, seed: int, finished: int, target: int) -> None:
    """Clone the study's first ``seed`` finished trials in SQL until ``target`` are finished.

    ``study.add_trials`` writes one trial per transaction (85 ms each on this machine: 10,000
    would take a quarter of an hour); the copies read exactly like trials Optuna wrote.
    """
    conn = pg.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT min(trial_id) FROM trials")
            (first,) = cur.fetchone()
            while finished < target:
                k = min(seed, target - finished)
                cur.execute("SELECT max(trial_id), count(*) FROM trials")
                last, count = cur.fetchone()
                shift = {"ids": last + 1 - first, "numbers": count, "first": first, "k": k}
                seeds = "trial_id >= %(first)s AND trial_id < %(first)s + %(k)s"
                cur.execute(
                    "INSERT INTO trials (trial_id, number, study_id, state, datetime_start, "
                    "datetime_complete) SELECT trial_id + %(ids)s, number + %(numbers)s, study_id, state, "
                    f"datetime_start, datetime_complete FROM trials WHERE {seeds}",
                    shift,
                )
                for table, columns in _TRIAL_TABLES.items():
                    cols = ", ".join(columns)
                    cur.execute(
                        f"INSERT INTO {table} (trial_id, {cols}) "
                        f"SELECT trial_id + %(ids)s, {cols} FROM {table} WHERE {seeds}",
                        shift,
                    )
                finished += k
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('trials', 'trial_id'), max(trial_id)) FROM trials"
            )
    finally:
        conn.close()


def tpe_latency(pg: PostgresServer, asks: int = 10, seed: int = 100) -> list[dict[str, Any]]:
    """TPE's ask latency on PostgreSQL as the study grows to each of TPE_SIZES finished trials."""
    import numpy as np

    url = pg.create_database("bench_tpe")
    rng = np.random.default_rng(0)
    study = optuna.create_study(study_name=STUDY, storage=url, direction="maximize")
    study.add_trials([_finished(rng, i) for i in range(seed)])
    rows = []
    finished = seed
    for size in TPE_SIZES:
        _grow(pg, "bench_tpe", seed, finished, size)
        finished = size
        # A worker that just started: a new storage object, so the first ask reads every trial.
        t0 = time.perf_counter()
        fresh = optuna.load_study(study_name=STUDY, storage=url, sampler=create_sampler("tpe", seed=1))
        trial = fresh.ask()
        _suggest(trial)
        first = time.perf_counter() - t0
        fresh.tell(trial, state=optuna.trial.TrialState.FAIL)  # not counted by TPE, nor here
        later = []
        for _ in range(asks):
            t0 = time.perf_counter()
            trial = fresh.ask()
            _suggest(trial)
            later.append(time.perf_counter() - t0)
            fresh.tell(trial, state=optuna.trial.TrialState.FAIL)
        complete = sum(t.state.name == "COMPLETE" for t in fresh.get_trials(deepcopy=False))
        assert complete == size, f"{complete} finished trials, {size} expected"
        rows.append(
            {
                "finished_trials": size,
                "first_ask_s": round(first, 3),
                "ask_p50_s": round(statistics.median(later), 3),
                "ask_max_s": round(max(later), 3),
            }
        )
        print(f"  tpe at {size}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def _transactions(pg: PostgresServer, dbname: str) -> int:
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (dbname,)
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def _settled_transactions(pg: PostgresServer, dbname: str) -> int:
    # pg_stat_database is updated when a backend reports (at most every second or so).
    time.sleep(2.0)
    return _transactions(pg, dbname)


def trial_cost(pg: PostgresServer, tmp: Path, n_noop: int = 20, n_real: int = 3) -> dict[str, Any]:
    """Database transactions of one no-op trial (this benchmark's) and of one real product trial.

    The real trials: ``clot-hpo search experiments/tiny.yaml --no-tracking`` (tiny CNN, 2 epochs,
    defaults first) on a fresh database, heartbeats off so that only the trial's own work
    counts. The ratio converts the no-op figures above into real trials.
    """
    import subprocess

    import yaml

    from clot_hpo.data.synthetic import make_synthetic

    url = pg.create_database("cost_noop")
    storage = open_storage(url)
    study = optuna.create_study(study_name=STUDY, storage=storage, sampler=optuna.samplers.RandomSampler())
    before = _settled_transactions(pg, "cost_noop")
    for _ in range(n_noop):
        trial = study.ask()
        _suggest(trial)
        for key in ("worker_id", "data_digest", "mlflow_run_id"):
            trial.set_user_attr(key, "x")
        for step in range(REPORTS):
            trial.report(0.5, step)
            trial.should_prune()
        study.tell(trial, 0.5)
    noop = (_settled_transactions(pg, "cost_noop") - before) / n_noop

    data = tmp / "tiny-data"
    make_synthetic(data, n_per_class=20, image_size=32, seed=0)
    config = yaml.safe_load((ROOT / "experiments" / "tiny.yaml").read_text())
    config["search"].update(heartbeat_interval=3600, grace_period=7200)
    config["evaluation"] = {"bootstrap_samples": 100, "explanations": False}
    config_path = tmp / "tiny-cost.yaml"
    config_path.write_text(yaml.safe_dump(config))
    url = pg.create_database("cost_real")
    optuna.create_study(study_name="cost", storage=url)  # the schema, outside the count
    before = _settled_transactions(pg, "cost_real")
    search = subprocess.run(
        [sys.executable, "-m", "clot_hpo.cli", "search", str(config_path), "--study-name", "cost",
         "--storage", url, "--no-tracking", "--n-trials", str(n_real), "--data", str(data)],
        cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if search.returncode != 0:
        raise RuntimeError(f"the real trials failed ({search.returncode}): {search.stderr[-2000:]}")
    real = (_settled_transactions(pg, "cost_real") - before) / n_real
    return {
        "noop_trial_transactions": round(noop, 1),
        "real_trial_transactions": round(real, 1),
        "real_epochs": int(config["training"]["epochs"]),
        "ratio": round(real / noop, 2),
    }


TRIAL_MINUTES = (1, 10, 60)
MAX_WORKERS = 1000


def capacity_markdown(
    result: dict[str, Any], cost: dict[str, Any], *, heartbeat_s: int, max_connections: int
) -> str:
    """docs/kubernetes.md's capacity section from one run's JSON and the trial-cost JSON.

    Storage: the product's storage (``postgresql-pool1``) served at most ``S`` no-op trials per
    second (the best of its process counts); a real trial costs ``ratio`` no-op trials, and each
    running trial adds one heartbeat transaction every ``heartbeat_s`` seconds. ``W`` workers on
    trials of ``D`` seconds ask the storage for ``W * (ratio / D + 1 / (heartbeat_s * c))``
    no-op trials per second (``c``: transactions per no-op trial), so it serves
    ``S / (ratio / D + 1 / (heartbeat_s * c))`` of them. Connections: the peak per process
    measured, against ``max_connections``. Sampler: TPE's ask at the largest study measured, as a
    share of a trial.
    """
    cells = [c for c in result["cells"] if c["storage"] == "postgresql-pool1" and not c["errors"]]
    best = max(cells, key=lambda c: c["trials_per_s"])
    s_noop = best["trials_per_s"]
    ratio, c_noop = cost["ratio"], cost["noop_trial_transactions"]
    # At the most processes: a lone process's figure includes a connection opened for a moment.
    widest = max(cells, key=lambda c: c["processes"])
    per_conn = widest["db_connections_peak"] / widest["processes"]
    conn_cap = int((max_connections - 10) / per_conn)  # 10: MLflow's server and a psql session
    tpe = max(result["tpe"], key=lambda r: r["finished_trials"])
    lines = [
        f"- `S` = {s_noop} no-op trials/s: the most the product's storage served in the run "
        f"(`postgresql-pool1`, {best['processes']} processes).",
        f"- A real trial = {ratio} no-op trials ({cost['real_trial_transactions']} database transactions "
        f"against {c_noop}; `--trial-cost`).",
        f"- Heartbeats: one transaction per running trial every {heartbeat_s} s "
        f"(`search.heartbeat_interval`) = 1 / ({heartbeat_s} x {c_noop}) no-op trials/s per worker.",
        f"- Connections: {per_conn:.2f} per worker process at {widest['processes']} processes; "
        f"`max_connections={max_connections}` in `base/postgres.yaml`, less 10 for MLflow and a psql "
        f"session: {conn_cap} workers.",
        f"- TPE: at {tpe['finished_trials']:,} finished trials an ask took {tpe['ask_p50_s']} s (median), "
        f"a new worker's first ask {tpe['first_ask_s']} s (it reads every trial once).",
        "",
        "| trial length D | storage demand per worker (no-op trials/s) | workers the storage serves "
        "(S / demand) | TPE ask, share of a trial | GPU workers one study serves |",
        "|---|---|---:|---:|---:|",
    ]
    for minutes in TRIAL_MINUTES:
        d = 60 * minutes
        demand = ratio / d + 1 / (heartbeat_s * c_noop)
        storage_cap = s_noop / demand
        sampler_share = tpe["ask_p50_s"] / d
        served = min(storage_cap, conn_cap, MAX_WORKERS)
        limit = (
            "storage"
            if served == storage_cap
            else "connections"
            if served == conn_cap
            else "(on paper: 1,000)"
        )
        lines.append(
            f"| {minutes} min | {ratio} / {d} + 1 / ({heartbeat_s} x {c_noop}) = {demand:.4f} | "
            f"{s_noop} / {demand:.4f} = {storage_cap:,.0f} | "
            f"{tpe['ask_p50_s']} / {d} = {100 * sampler_share:.2f} % | {served:,.0f} ({limit}) |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="work time per cell")
    parser.add_argument("--processes", default="1,4,16,64", help="worker process counts")
    parser.add_argument("--storages", default=",".join(STORAGES))
    parser.add_argument("--skip-tpe", action="store_true")
    parser.add_argument(
        "--trial-cost",
        action="store_true",
        help="only: database transactions of a no-op trial and of a real product trial (tiny CNN)",
    )
    parser.add_argument(
        "--capacity",
        nargs=2,
        metavar=("RUN.json", "COST.json"),
        help="only: print docs/kubernetes.md's capacity table from a run's and --trial-cost's JSON",
    )
    parser.add_argument("--heartbeat", type=int, default=10, help="search.heartbeat_interval (--capacity)")
    parser.add_argument("--max-connections", type=int, default=400, help="PostgreSQL's (--capacity)")
    args = parser.parse_args()
    if args.capacity:
        result = json.loads(Path(args.capacity[0]).read_text())
        cost = json.loads(Path(args.capacity[1]).read_text())
        print(
            capacity_markdown(result, cost, heartbeat_s=args.heartbeat, max_connections=args.max_connections)
        )
        return 0
    if args.trial_cost:
        with postgres_server() as pg, tempfile.TemporaryDirectory(prefix="trial-cost-") as tmp:
            print(json.dumps({"load": [round(x, 2) for x in os.getloadavg()], **trial_cost(pg, Path(tmp))}))
        return 0
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    counts = [int(n) for n in args.processes.split(",")]
    load_before = os.getloadavg()
    cells = []
    try:
        with postgres_server() as pg, tempfile.TemporaryDirectory(prefix="storage-scale-") as tmp:
            for kind in args.storages.split(","):
                for n in counts:
                    cell = run_cell(pg, kind, n, args.seconds, Path(tmp))
                    print(f"  {cell}", file=sys.stderr, flush=True)
                    cells.append(cell)
            tpe = [] if args.skip_tpe else tpe_latency(pg)
    except PostgresUnavailable as exc:
        print(f"storage_scale: {exc}", file=sys.stderr)
        return 2
    print(f"\nNo-op trials, {args.seconds:g} s per cell (RandomSampler; ask = ask + 4 suggestions):\n")
    print(
        "| storage | processes | trials/s | ask p50 ms | ask p95 ms | tell p50 ms | tell p95 ms | DB conns |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in cells:
        note = f" ({'; '.join(c['errors'])})" if c["errors"] else ""
        print(
            f"| {c['storage']}{note} | {c['processes']} | {c['trials_per_s']} | {c['ask_p50_ms']} | "
            f"{c['ask_p95_ms']} | {c['tell_p50_ms']} | {c['tell_p95_ms']} | {c['db_connections_peak']} |"
        )
    if tpe:
        print("\nTPE (multivariate, group) ask on PostgreSQL, one worker:\n")
        print("| finished trials | first ask of a new worker s | ask p50 s | ask max s |")
        print("|---:|---:|---:|---:|")
        for r in tpe:
            print(f"| {r['finished_trials']} | {r['first_ask_s']} | {r['ask_p50_s']} | {r['ask_max_s']} |")
    result = {
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "seconds_per_cell": args.seconds,
        "cells": cells,
        "tpe": tpe,
    }
    print("\n" + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
