"""Where a trial's time goes, and what a clot-hpo trial costs next to a bare fit of the same model.

For each backbone, in one run:

- **a study**: ``clot-hpo search`` with tracking (MLflow, SQLite store), evaluation and model
  logging, ``--trials`` trials of identical, fixed hyperparameters (the demo's size: 48 px,
  batch 32, Adam 1e-3, 300 synthetic images split 60/20/20). Each trial records its phases as
  ``time_<phase>`` user attributes (:mod:`clot_hpo.search.trial.timing`); the table shows their
  median over the steady-state trials.
- **a bare fit**: the same model (built by the same ``ClotHyperModel`` with the same values)
  trained with ``model.fit`` on the same split, already decoded into NumPy arrays, for the same
  epochs with the validation split, then ``model.predict`` on validation and test, in a process
  that had already imported TensorFlow. Timed: build + compile + fit + both predicts.

**What a trial costs in a study.** The next trial's process is started while the current one
trains, so a trial's wall cost is the time between consecutive trial completions
(``datetime_complete``) in the steady state: trial 0 is left out (it has no pre-started
process and builds the decode cache), and the median interval is the cost per trial (on a
shared machine one interval can catch another user's burst of work; all are printed).
``ratio = cost per steady-state trial / bare fit``; the issue's target is at most 1.15.
``drain`` is the time from the last completion to the end of the ``clot-hpo search`` command
(tracking uploads still queued, the study summary).

    .venv/bin/python benchmarks/trial_overhead.py [--backbones tiny_cnn,efficientnet_b1] [--trials 4]
        [--epochs 2] [--repo PATH] [--json out.json]

``--repo`` measures another checkout of clot-hpo (e.g. a ``git worktree`` of an older commit)
with this script and this virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPACE = """backbone: {backbone}
parameters:
  image_size: {{type: fixed, value: {size}}}
  batch_size: {{type: fixed, value: {batch}}}
  optimizer: {{type: fixed, value: adam}}
  learning_rate: {{type: fixed, value: 0.001}}
"""
# Phases in trial order (clot_hpo.search.trial.timing.PHASES); older checkouts may record fewer.
PHASES = (
    "startup",
    "startup_waited",
    "setup",
    "build",
    "vram_estimate",
    "data",
    "first_epoch",
    "later_epochs",
    "evaluate",
    "save_model",
    "total",
    "handoff",
)


def _env(repo: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(repo),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def write_config(
    work: Path, data: Path, backbone: str, *, trials: int, epochs: int, size: int, batch: int
) -> Path:
    """A study config and search space with every hyperparameter fixed."""
    space = work / f"{backbone}.space.yaml"
    space.write_text(SPACE.format(backbone=backbone, size=size, batch=batch))
    config = work / f"{backbone}.yaml"
    config.write_text(
        f"name: overhead-{backbone}\nseed: 1\n"
        f"data: {{path: {data}, group_column: group, val_fraction: 0.2, test_fraction: 0.2}}\n"
        f"training: {{epochs: {epochs}, weights: none}}\n"
        f"search: {{backbones: [{backbone}], search_spaces: {{{backbone}: {space}}}, sampler: random,"
        f" pruner: none, storage: 'sqlite:///{work}/optuna.db', n_trials: {trials}}}\n"
        "evaluation: {bootstrap_samples: 500}\n"
        f"tracking: {{uri: 'sqlite:///{work}/mlflow.db', artifact_root: '{work}/artifacts'}}\n"
        "budget: {vram_gb: 4}\n"
    )
    return config


def run_study(repo: Path, work: Path, config: Path, backbone: str) -> dict[str, Any]:
    """Run the study; return completion times, per-trial phases and the command's wall time."""
    import optuna

    name = f"overhead-{backbone}"
    started = time.time()
    with open(work / f"{name}.log", "w") as out, open(work / f"{name}.err", "w") as err:
        code = subprocess.call(
            [sys.executable, "-m", "clot_hpo.cli", "search", str(config)],
            cwd=work,
            env=_env(repo),
            stdout=out,
            stderr=err,
        )
    ended = time.time()
    if code != 0:
        raise SystemExit(f"study {name} failed (exit {code}); see {work}/{name}.err")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{work}/optuna.db")
    trials = sorted(study.trials, key=lambda t: t.number)
    states = [t.state.name for t in trials]
    if any(s != "COMPLETE" for s in states):
        raise SystemExit(f"study {name}: every trial must complete, but got {states}")
    completions = [t.datetime_complete.timestamp() for t in trials]
    phases = [
        {k.removeprefix("time_"): float(v) for k, v in t.user_attrs.items() if k.startswith("time_")}
        for t in trials
    ]
    return {"started": started, "ended": ended, "completions": completions, "phases": phases}


def run_bare(repo: Path, work: Path, manifest: Path, space: Path, backbone: str, epochs: int) -> float:
    """Seconds of build + fit + predict in a process that has already imported TensorFlow."""
    out = subprocess.run(
        [sys.executable, __file__, "--bare-child", str(manifest), str(space), backbone, str(epochs)],
        cwd=work,
        env=_env(repo),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"bare fit of {backbone} failed:\n{out.stderr[-3000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def bare_child(manifest: str, space_path: str, backbone: str, epochs: int) -> None:
    """The bare fit, in this (fresh) process: imports and decoding first, untimed."""
    import keras
    import keras_tuner
    import numpy as np
    import pandas as pd
    import tensorflow as tf  # noqa: F401 - imported before the clock starts, like a running notebook

    from clot_hpo.data.pipeline import load_image_batch
    from clot_hpo.models.hypermodel import ClotHyperModel
    from clot_hpo.search_space import load_search_space

    space = load_search_space(space_path)
    frame = pd.read_csv(manifest)
    size, batch = int(space.parameters["image_size"].value), int(space.parameters["batch_size"].value)
    arrays = {}
    for split in ("train", "val", "test"):
        part = frame[frame["split"] == split]
        arrays[split] = (load_image_batch(list(part["path"]), size), part["label"].to_numpy(np.float32))
    keras.utils.set_random_seed(1)
    hypermodel = ClotHyperModel({backbone: space}, weights="none", seed=1)
    started = time.perf_counter()
    model = hypermodel.build(keras_tuner.HyperParameters())
    (x, y), (xv, yv), (xt, _) = arrays["train"], arrays["val"], arrays["test"]
    model.fit(x, y, batch_size=batch, epochs=epochs, validation_data=(xv, yv), shuffle=True, verbose=0)
    model.predict(xv, batch_size=batch, verbose=0)
    model.predict(xt, batch_size=batch, verbose=0)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def summarize(backbone: str, study: dict[str, Any], bare: list[float]) -> dict[str, Any]:
    """Steady-state cost per trial, the phases' medians and the ratio to the bare fit."""
    done = study["completions"]
    steady = [b - a for a, b in zip(done, done[1:], strict=False)]
    phases = study["phases"][1:] or study["phases"]
    medians = {
        p: round(statistics.median(x[p] for x in phases), 2) for p in PHASES if all(p in x for x in phases)
    }
    # The median: on a shared machine one interval can catch someone else's burst of work.
    cost = statistics.median(steady) if steady else done[0] - study["started"]
    bare_s = statistics.median(bare)
    return {
        "backbone": backbone,
        "first_trial_s": round(done[0] - study["started"], 1),
        "steady_trial_s": [round(s, 1) for s in steady],
        "cost_per_trial_s": round(cost, 1),
        "drain_s": round(study["ended"] - done[-1], 1),
        "bare_fit_s": [round(b, 1) for b in bare],
        "ratio": round(cost / bare_s, 3),
        "phases_s": medians,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    """Phases (median over steady-state trials) per backbone, then cost, bare fit and ratio."""
    names = [r["backbone"] for r in rows]
    width = max(14, *(len(n) + 2 for n in names))
    print(f"{'phase (s)':<18}" + "".join(f"{n:>{width}}" for n in names))
    for phase in PHASES:
        cells = [r["phases_s"].get(phase) for r in rows]
        if all(c is None for c in cells):
            continue
        print(f"{phase:<18}" + "".join(f"{'-' if c is None else f'{c:.2f}':>{width}}" for c in cells))
    for label, key in (
        ("trial in study", "cost_per_trial_s"),
        ("first trial", "first_trial_s"),
        ("drain at end", "drain_s"),
    ):
        print(f"{label:<18}" + "".join(f"{r[key]:>{width}.1f}" for r in rows))
    print(
        f"{'bare fit+predict':<18}"
        + "".join(f"{statistics.median(r['bare_fit_s']):>{width}.1f}" for r in rows)
    )
    print(f"{'ratio':<18}" + "".join(f"{r['ratio']:>{width}.3f}" for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="tiny_cnn,efficientnet_b1")
    parser.add_argument(
        "--trials", type=int, default=4, help="trials per study (trial 0 is not steady state)"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-per-class", type=int, default=150)
    parser.add_argument("--bare-repeats", type=int, default=2, help="bare fits (the median is used)")
    parser.add_argument("--repo", type=Path, default=REPO, help="the clot-hpo checkout to measure")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--bare-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        manifest, space, backbone, epochs = args.bare_child
        bare_child(manifest, space, backbone, int(epochs))
        return
    if args.trials < 2:
        raise SystemExit(f"--trials must be at least 2 (trial 0 is not steady state), but got {args.trials}")

    repo = args.repo.resolve()
    sys.path.insert(0, str(REPO))
    from clot_hpo.data.synthetic import make_synthetic

    work = Path(tempfile.mkdtemp(prefix="trial-overhead-"))
    data = make_synthetic(work / "data", n_per_class=args.n_per_class, image_size=args.image_size, seed=0)
    # Warm the disk cache, and create the MLflow store once: neither is a trial's cost.
    subprocess.run(
        [sys.executable, "-c", "import tensorflow, keras, optuna, mlflow, sklearn, matplotlib"],
        check=True,
        env=_env(repo),
        capture_output=True,
    )
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{work}/mlflow.db").search_experiments()

    rows = []
    for backbone in args.backbones.split(","):
        config = write_config(
            work,
            data,
            backbone,
            trials=args.trials,
            epochs=args.epochs,
            size=args.image_size,
            batch=args.batch_size,
        )
        study = run_study(repo, work, config, backbone)
        manifest = work / "mlruns" / "studies" / f"overhead-{backbone}" / "trial_manifest.csv"
        bare = [
            run_bare(repo, work, manifest, work / f"{backbone}.space.yaml", backbone, args.epochs)
            for _ in range(args.bare_repeats)
        ]
        rows.append(summarize(backbone, study, bare))
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\nrepo {repo} · {args.trials} trials of {args.epochs} epochs · {args.image_size} px · "
        f"{2 * args.n_per_class} images · work folder {work}"
    )
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
