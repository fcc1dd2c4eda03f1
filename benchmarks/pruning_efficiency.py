"""Does pruning pay? The same study with a pruner and without: epochs, wall time, best val AUC.

Both arms run ``clot-hpo search`` (no tracking) with the same seed, sampler (TPE), search
space, data and trial count, one after the other in this run: the tiny CNN on a synthetic set
of ``--difficulty`` (medium by default, where learning rate, optimizer and pooling decide
between a useless and a good model), ``--epochs`` epochs per trial. The search space is
benchmark-specific (``SPACE`` below): one image size, and a wide learning-rate range, so that
some trials learn and some do not, as in a real first search.

The issue's targets (#11, item 5): the pruned arm reaches the unpruned arm's best validation
AUC within 0.01 using at most 50% of its epochs and at most 70% of its wall time. Wall time is
that of the whole ``clot-hpo search`` command, fixed per-trial costs included; ``cpu_s``
(user + system time of the command and its trial processes) is printed too, as it moves less
than wall time when other work shares the machine.

Prints one JSON object (both arms, every trial, the ratios, which targets are met) and a table.

    .venv/bin/python benchmarks/pruning_efficiency.py [--trials 16] [--epochs 12]
        [--pruner hyperband] [--difficulty medium] [--image-size 48] [--n-per-class 800]
        [--repo PATH] [--json out.json]

``--repo`` measures another checkout of clot-hpo with this script and this virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _common import children_cpu_s

REPO = Path(__file__).resolve().parents[1]
SPACE = """backbone: tiny_cnn
parameters:
  image_size: {{type: fixed, value: {size}}}
  batch_size: {{type: categorical, choices: [16, 32]}}
  optimizer: {{type: categorical, choices: [adam, sgd]}}
  learning_rate: {{type: float, low: 1.0e-5, high: 3.0e-2, log: true}}
  momentum: {{type: float, low: 0.8, high: 0.99, when: {{optimizer: [sgd]}}}}
  dropout: {{type: float, low: 0.0, high: 0.5}}
  pooling: {{type: categorical, choices: [avg, max]}}
"""
# Targets of issue #11, item 5 (pruned arm / unpruned arm).
MAX_EPOCHS_RATIO = 0.50
MAX_WALL_RATIO = 0.70
MAX_AUC_SHORTFALL = 0.01


def _env(repo: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(repo),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def write_config(work: Path, data: Path, space: Path, pruner: str, *, trials: int, epochs: int) -> Path:
    """A study config for one arm; the study is named after its pruner (Hyperband hashes the name)."""
    config = work / f"{pruner}.yaml"
    config.write_text(
        f"name: {pruner}\nseed: 1\n"
        f"data: {{path: {data}, group_column: group, val_fraction: 0.2, test_fraction: 0.2}}\n"
        f"training: {{epochs: {epochs}, weights: none}}\n"
        f"search: {{backbones: [tiny_cnn], search_spaces: {{tiny_cnn: {space}}}, pruner: {pruner},"
        f" sampler: tpe, storage: 'sqlite:///{work}/optuna.db', n_trials: {trials}}}\n"
        "evaluation: {bootstrap_samples: 200}\n"
        "budget: {vram_gb: 4}\n"
    )
    return config


def run_arm(repo: Path, work: Path, config: Path, pruner: str) -> dict[str, Any]:
    """Run one arm's study to its trial budget; summarise it from the Optuna storage."""
    import optuna

    cpu_before = children_cpu_s()
    started = time.monotonic()
    with open(work / f"{pruner}.log", "w") as out, open(work / f"{pruner}.err", "w") as err:
        code = subprocess.call(
            [sys.executable, "-m", "clot_hpo.cli", "search", str(config), "--no-tracking"],
            cwd=work,
            env=_env(repo),
            stdout=out,
            stderr=err,
        )
    wall = time.monotonic() - started
    # Trial processes are the command's children, waited for: their CPU time is counted here.
    cpu = children_cpu_s() - cpu_before
    if code != 0:
        raise SystemExit(f"study {pruner} failed (exit {code}); see {work}/{pruner}.err")
    study = optuna.load_study(study_name=pruner, storage=f"sqlite:///{work}/optuna.db")
    trials = sorted(study.trials, key=lambda t: t.number)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if not complete:
        raise SystemExit(f"study {pruner}: no trial completed; see {work}/{pruner}.err")
    best = max(complete, key=lambda t: t.value)
    timed = [t for t in trials if "time_later_epochs" in t.user_attrs]  # older checkouts time nothing
    later_s = sum(float(t.user_attrs["time_later_epochs"]) for t in timed)
    later_epochs = sum(max(int(t.user_attrs.get("epochs_run", 0)) - 1, 0) for t in timed)
    wall_epochs = wall - sum(float(t.user_attrs.get("time_first_epoch", 0.0)) for t in timed) - later_s
    return {
        "epochs": sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials),
        "best_val_auc": round(float(best.value), 4),
        "best_trial": best.number,
        "complete": len(complete),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "failed": sum(t.state.name == "FAIL" for t in trials),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        # How much of the wall time epochs are at all: a steady epoch's cost, and what the
        # command spent outside the trials' epochs (per trial; the first epoch's tracing counts
        # as epoch time here, so this is a lower bound of the fixed cost).
        "s_per_later_epoch": round(later_s / later_epochs, 2) if later_epochs else None,
        "s_outside_epochs_per_trial": round(wall_epochs / len(trials), 1) if timed else None,
        "mean_first_epoch_s": round(
            sum(float(t.user_attrs["time_first_epoch"]) for t in timed) / len(timed), 1
        )
        if timed
        else None,
        "trials": [_trial_row(t) for t in trials],
    }


def _trial_row(trial: Any) -> dict[str, Any]:
    curve = [round(float(trial.intermediate_values[s]), 3) for s in sorted(trial.intermediate_values)]
    return {
        "number": trial.number,
        "state": trial.state.name,
        "epochs_run": int(trial.user_attrs.get("epochs_run", 0)),
        "value": None if trial.value is None else round(float(trial.value), 4),
        "val_auc_per_epoch": curve,
        "params": {
            k: (round(v, 6) if isinstance(v, float) else v)
            for k, v in trial.params.items()
            if k not in ("backbone", "image_size")
        },
    }


def summarize(pruned: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Ratios (pruned arm over unpruned arm) and which of the issue's targets they meet."""
    epochs_ratio = pruned["epochs"] / base["epochs"]
    wall_ratio = pruned["wall_s"] / base["wall_s"]
    auc_diff = pruned["best_val_auc"] - base["best_val_auc"]
    return {
        "epochs_ratio": round(epochs_ratio, 3),
        "wall_ratio": round(wall_ratio, 3),
        "cpu_ratio": round(pruned["cpu_s"] / base["cpu_s"], 3),
        "best_auc_diff": round(auc_diff, 4),
        "targets_met": {
            f"epochs_ratio <= {MAX_EPOCHS_RATIO}": epochs_ratio <= MAX_EPOCHS_RATIO,
            f"wall_ratio <= {MAX_WALL_RATIO}": wall_ratio <= MAX_WALL_RATIO,
            f"best_auc_diff >= -{MAX_AUC_SHORTFALL}": auc_diff >= -MAX_AUC_SHORTFALL - 1e-9,
        },
    }


def print_table(pruner: str, pruned: dict[str, Any], base: dict[str, Any], ratios: dict[str, Any]) -> None:
    rows = [
        ("epochs", "epochs", "epochs_ratio", "{:d}"),
        ("wall s", "wall_s", "wall_ratio", "{:.1f}"),
        ("cpu s", "cpu_s", "cpu_ratio", "{:.1f}"),
        ("best val AUC", "best_val_auc", "best_auc_diff", "{:.4f}"),
        ("pruned trials", "pruned", None, "{:d}"),
        ("complete trials", "complete", None, "{:d}"),
    ]
    print(f"{'':<16}{pruner:>12}{'none':>12}{'ratio/diff':>12}")
    for label, key, ratio_key, fmt in rows:
        ratio = (
            ""
            if ratio_key is None
            else (f"{ratios[ratio_key]:+.4f}" if key == "best_val_auc" else f"{ratios[ratio_key]:.3f}")
        )
        print(f"{label:<16}{fmt.format(pruned[key]):>12}{fmt.format(base[key]):>12}{ratio:>12}")
    for target, met in ratios["targets_met"].items():
        print(f"  {'met' if met else 'MISSED':<7}{target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12, help="epochs per trial (as the product's recipe)")
    parser.add_argument("--pruner", default="hyperband", help="the pruned arm's pruner (hyperband or median)")
    parser.add_argument("--difficulty", default="medium", help="synthetic data: easy, medium, hard or 0..1")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--n-per-class", type=int, default=800)
    parser.add_argument("--repo", type=Path, default=REPO, help="the clot-hpo checkout to measure")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    repo = args.repo.resolve()
    sys.path.insert(0, str(repo))
    warnings.filterwarnings("ignore", category=FutureWarning)
    from clot_hpo.data.synthetic import make_synthetic

    try:
        from clot_hpo.search.pruners import describe_pruner

        pruner_info: dict[str, Any] | None = describe_pruner(args.pruner, max_epochs=args.epochs)
    except ImportError:  # an older checkout given with --repo
        pruner_info = None

    work = Path(tempfile.mkdtemp(prefix="pruning-"))
    data = make_synthetic(
        work / "data",
        n_per_class=args.n_per_class,
        image_size=args.image_size,
        seed=0,
        difficulty=args.difficulty,
    )
    space = work / "space.yaml"
    space.write_text(SPACE.format(size=args.image_size))
    # Warm the disk cache: the first arm must not pay for reading the libraries from disk.
    subprocess.run(
        [sys.executable, "-c", "import tensorflow, keras, optuna, sklearn"],
        check=True,
        env=_env(repo),
        capture_output=True,
    )

    arms = {}
    for pruner in (args.pruner, "none"):
        config = write_config(work, data, space, pruner, trials=args.trials, epochs=args.epochs)
        arms[pruner] = run_arm(repo, work, config, pruner)
        print(json.dumps({pruner: {k: v for k, v in arms[pruner].items() if k != "trials"}}), flush=True)
    ratios = summarize(arms[args.pruner], arms["none"])
    result = {
        "trials": args.trials,
        "epochs_per_trial": args.epochs,
        "difficulty": args.difficulty,
        "image_size": args.image_size,
        "images": 2 * args.n_per_class,
        "pruner": pruner_info,
        args.pruner: arms[args.pruner],
        "none": arms["none"],
        **ratios,
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{args.trials} trials x {args.epochs} epochs · tiny CNN · {args.image_size} px · "
        f"{2 * args.n_per_class} images ({args.difficulty}) · repo {repo} · work folder {work}"
    )
    print_table(args.pruner, arms[args.pruner], arms["none"], ratios)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
