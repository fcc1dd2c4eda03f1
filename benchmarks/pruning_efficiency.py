"""Epochs spent and best validation AUC: the same trial budget with Hyperband and without.

Both studies use the same seed, search space, data and trial count (tiny CNN, 32 px);
prints one JSON object with the epochs each spent, the best val AUC each reached and ratios.

    .venv/bin/python benchmarks/pruning_efficiency.py [--trials 12] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import clot_hpo, write_space

SPACE = """  image_size: {type: categorical, choices: [32]}
  batch_size: {type: categorical, choices: [16, 32]}
  optimizer: {type: categorical, choices: [adam, sgd]}
  learning_rate: {type: float, low: 1.0e-5, high: 3.0e-2, log: true}
  dropout: {type: float, low: 0.0, high: 0.6}
"""


def run_study(work: Path, data: Path, space: Path, pruner: str, trials: int, epochs: int) -> dict[str, float]:
    import optuna

    config = work / f"{pruner}.yaml"
    config.write_text(
        f"name: {pruner}\nseed: 1\ndata: {{path: {data}}}\ntraining: {{epochs: {epochs}, weights: none}}\n"
        f"search: {{backbones: [tiny_cnn], search_spaces: {{tiny_cnn: {space}}}, pruner: {pruner},"
        f" sampler: tpe, storage: 'sqlite:///{work}/optuna.db', n_trials: {trials}}}\n"
    )
    started = time.monotonic()
    proc = clot_hpo("search", str(config), "--no-tracking", cwd=work,
                    stdout=open(work / f"{pruner}.log", "w"), stderr=open(work / f"{pruner}.err", "w"))
    if proc.wait() != 0:
        raise SystemExit(f"study {pruner} failed; see {work}/{pruner}.err")
    study = optuna.load_study(study_name=pruner, storage=f"sqlite:///{work}/optuna.db")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    return {
        "epochs": sum(int(t.user_attrs.get("epochs_run", 0)) for t in study.trials),
        "best_val_auc": round(max(t.value for t in complete), 4),
        "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from clot_hpo.data.synthetic import make_synthetic

    work = Path(tempfile.mkdtemp(prefix="pruning-"))
    data = make_synthetic(work / "data", n_per_class=80, image_size=32, seed=0)
    space = write_space(work / "space.yaml", "tiny_cnn", SPACE)
    hyperband = run_study(work, data, space, "hyperband", args.trials, args.epochs)
    nopruning = run_study(work, data, space, "none", args.trials, args.epochs)
    print(json.dumps({
        "trials": args.trials,
        "epochs_per_trial": args.epochs,
        "hyperband": hyperband,
        "no_pruning": nopruning,
        "epochs_ratio_hyperband_over_none": round(hyperband["epochs"] / nopruning["epochs"], 3),
        "best_auc_ratio_hyperband_over_none": round(hyperband["best_val_auc"] / nopruning["best_val_auc"], 3),
        "wall_ratio_hyperband_over_none": round(hyperband["wall_s"] / nopruning["wall_s"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
