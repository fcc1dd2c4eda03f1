"""Wall time of the same short study with MLflow tracking and with the no-op tracker.

Both studies run identical enqueued trials (same parameters, same data, same seed) through
``clot-hpo search``; the only difference is ``--no-tracking``. Prints one JSON object with
both wall times and the overhead ratio (target: under 5%).

    .venv/bin/python benchmarks/tracking_overhead.py [--backbone efficientnet_b1] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import clot_hpo, write_space

SPACE = """  image_size: {type: categorical, choices: [64]}
  batch_size: {type: categorical, choices: [32]}
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


def timed_study(work: Path, data: Path, space: Path, backbone: str, trials: int, epochs: int,
                tracking: bool) -> float:
    import optuna

    name = "tracked" if tracking else "untracked"
    storage = f"sqlite:///{work}/{name}.db"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    for lr in (1e-3, 3e-3, 1e-2, 3e-4, 5e-3)[:trials]:
        study.enqueue_trial({"learning_rate": lr})
    config = work / f"{name}.yaml"
    config.write_text(
        f"name: {name}\nseed: 1\ndata: {{path: {data}}}\ntraining: {{epochs: {epochs}, weights: none}}\n"
        f"search: {{backbones: [{backbone}], search_spaces: {{{backbone}: {space}}}, pruner: none,"
        f" storage: '{storage}', n_trials: {trials}}}\n"
        f"tracking: {{uri: 'sqlite:///{work}/mlflow.db', artifact_root: '{work}/artifacts'}}\n"
    )
    args = ["search", str(config)] + ([] if tracking else ["--no-tracking"])
    started = time.monotonic()
    proc = clot_hpo(*args, cwd=work, stdout=open(work / f"{name}.log", "w"), stderr=open(work / f"{name}.err", "w"))
    if proc.wait() != 0:
        raise SystemExit(f"{name} study failed; see {work}/{name}.err")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_b1")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-per-class", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from clot_hpo.data.synthetic import make_synthetic

    work = Path(tempfile.mkdtemp(prefix="tracking-overhead-"))
    data = make_synthetic(work / "data", n_per_class=args.n_per_class, image_size=64, seed=0)
    space = write_space(work / "space.yaml", args.backbone, SPACE)
    untracked = timed_study(work, data, space, args.backbone, args.trials, args.epochs, tracking=False)
    tracked = timed_study(work, data, space, args.backbone, args.trials, args.epochs, tracking=True)
    print(json.dumps({
        "backbone": args.backbone,
        "trials": args.trials,
        "epochs": args.epochs,
        "images_per_class": args.n_per_class,
        "wall_s_null_tracker": round(untracked, 1),
        "wall_s_mlflow": round(tracked, 1),
        "overhead_ratio": round(tracked / untracked - 1.0, 4),
    }, indent=2))


if __name__ == "__main__":
    main()
