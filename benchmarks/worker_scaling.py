"""Trials per minute with 1 and with 2 workers on one study, against a throwaway PostgreSQL.

Both runs do identical work: the same fixed hyperparameter sets (tiny CNN, 32 px) are enqueued
into a fresh study, and ``clot-hpo search`` workers drain it. Each worker is limited to one CPU
thread (``OMP_NUM_THREADS``/``TF_NUM_*_THREADS=1``) and pinned to its own core with
``taskset`` where available, so the ratio shows how the shared study scales, not how
TensorFlow's thread pool does. Tracking is off (``--no-tracking``): this measures the study,
not the MLflow server. Prints one JSON object:

    .venv/bin/python benchmarks/worker_scaling.py [--trials 6] [--epochs 2]

Needs the Debian ``postgresql`` package (``make system-deps``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.postgres, when run as a script

from tests.support.postgres import PostgresUnavailable, postgres_server  # noqa: E402

BIN = Path(sys.executable).parent
CLOT_HPO = str(BIN / "clot-hpo") if (BIN / "clot-hpo").exists() else "clot-hpo"
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def fixed_trials(n: int) -> list[dict[str, Any]]:
    """``n`` complete parameter sets of search_spaces/tiny_cnn.yaml (32 px, no conditionals)."""
    rates = [3e-3, 1e-3, 5e-3, 2e-3, 8e-4, 4e-3, 6e-3, 1.5e-3]
    return [
        {
            "image_size": 32,
            "batch_size": 16,
            "optimizer": "adam",
            "learning_rate": rates[i % len(rates)],
            "weight_decay": 1e-4,
            "label_smoothing": 0.0,
            "dropout": 0.1 + 0.05 * (i % 4),
            "pooling": "avg",
            "use_dense": False,
            "aug_flip": bool(i % 2),
            "aug_rotation": 0.0,
            "aug_zoom": 0.0,
            "aug_contrast": 0.0,
            "aug_brightness": 0.0,
        }
        for i in range(n)
    ]


def write_config(path: Path, epochs: int) -> Path:
    """experiments/tiny.yaml, without pruning and with a 5 s heartbeat."""
    import yaml

    config = yaml.safe_load((ROOT / "experiments" / "tiny.yaml").read_text(encoding="utf-8"))
    config["search"].update(pruner="none", sampler="random", heartbeat_interval=5, grace_period=30)
    config.setdefault("training", {}).update(epochs=epochs)
    config.setdefault("evaluation", {})["bootstrap_samples"] = 100
    config.setdefault("tracking", {})["log_model"] = False
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def prepare_study(url: str, name: str, params: list[dict[str, Any]]) -> None:
    """Create the study with the objective's direction and enqueue the fixed trials."""
    import optuna

    from clot_hpo.search.objectives import get_objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction=get_objective("val_auc").direction)
    for p in params:
        study.enqueue_trial(p)


def run_workers(
    n_workers: int, *, config: Path, data: Path, url: str, study: str, n_trials: int, work: Path
) -> dict[str, Any]:
    """Start ``n_workers`` searches on one study, wait for all; return timings and checks."""
    import optuna

    cpus = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset") if len(cpus) >= n_workers else None
    procs = []
    started = time.monotonic()
    for i in range(n_workers):
        cwd = work / f"{study}-w{i}"
        cwd.mkdir(parents=True)
        cmd = [
            CLOT_HPO,
            "search",
            str(config),
            "--study-name",
            study,
            "--storage",
            url,
            "--n-trials",
            str(n_trials),
            "--data",
            str(data),
            "--no-tracking",
        ]
        if taskset:
            cmd = [taskset, "-c", str(cpus[i]), *cmd]
        log = open(cwd / "worker.log", "wb")  # noqa: SIM115 - closed below
        procs.append(
            (
                subprocess.Popen(
                    cmd,
                    cwd=cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **ONE_THREAD, "TF_CPP_MIN_LOG_LEVEL": "2"},
                    start_new_session=True,
                ),
                log,
                cwd,
            )
        )
    codes = []
    for proc, log, cwd in procs:
        codes.append(proc.wait())
        log.close()
        if proc.returncode != 0:
            tail = (cwd / "worker.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"worker in {cwd} exited {proc.returncode}:\n{tail}")
    wall = time.monotonic() - started

    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    span = (
        max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)
    ).total_seconds()
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in complete]
    return {
        "workers": n_workers,
        "pinned_cpus": [cpus[i] for i in range(n_workers)] if taskset else None,
        "trials_complete": len(complete),
        "trials_other": len(trials) - len(complete),
        "workers_used": len({t.user_attrs.get("worker_id") for t in complete}),
        "wall_s": round(wall, 1),
        "trials_per_minute": round(len(complete) / wall * 60, 2),
        # From the first trial's start to the last one's end: without worker start-up.
        "trial_span_s": round(span, 1),
        "trials_per_minute_trial_span": round(len(complete) / span * 60, 2),
        "mean_trial_s": round(statistics.mean(durations), 1),
        "params": sorted(json.dumps(t.params, sort_keys=True) for t in complete),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="fixed trials per run")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from clot_hpo.data.synthetic import make_synthetic

    params = fixed_trials(args.trials)
    with tempfile.TemporaryDirectory(prefix="worker-scaling-") as tmp:
        work = Path(tmp)
        data = work / "data"
        make_synthetic(data, n_per_class=40, image_size=32, seed=3)
        config = write_config(work / "bench.yaml", args.epochs)
        try:
            pg_context = postgres_server()
            pg = pg_context.__enter__()
        except PostgresUnavailable as exc:
            print(json.dumps({"benchmark": "worker_scaling", "skipped": str(exc)}))
            return 0
        try:
            runs = {}
            for n_workers in (1, 2):
                study = f"scaling-{n_workers}w"
                url = pg.create_database(f"bench_{n_workers}w")
                prepare_study(url, study, params)
                runs[n_workers] = run_workers(
                    n_workers, config=config, data=data, url=url, study=study, n_trials=len(params), work=work
                )
        finally:
            pg_context.__exit__(None, None, None)

    same_work = runs[1]["params"] == runs[2]["params"] and runs[1]["trials_complete"] == len(params)
    for run in runs.values():
        del run["params"]
    result = {
        "benchmark": "worker_scaling",
        "storage": "postgresql (throwaway cluster, 127.0.0.1)",
        "backbone": "tiny_cnn",
        "image_size": 32,
        "epochs": args.epochs,
        "trials": len(params),
        "threads_per_worker": 1,
        "cpus_available": len(os.sched_getaffinity(0)),
        "identical_work": same_work,
        "one_worker": runs[1],
        "two_workers": runs[2],
        "ratio_trials_per_minute": round(runs[2]["trials_per_minute"] / runs[1]["trials_per_minute"], 2),
        "ratio_trial_span": round(
            runs[2]["trials_per_minute_trial_span"] / runs[1]["trials_per_minute_trial_span"], 2
        ),
    }
    print(json.dumps(result, indent=2))
    return 0 if same_work else 1


if __name__ == "__main__":
    sys.exit(main())
