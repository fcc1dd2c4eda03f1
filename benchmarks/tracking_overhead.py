"""Wall time of the same short study with MLflow tracking and with the no-op tracker.

Both studies run identical enqueued trials (same parameters, same data, same seed) through
``clot-hpo search``; the only difference is ``--no-tracking``. Prints one JSON object with
both wall times, the overhead ratio (target: under 5%) and the overhead per trial.

The MLflow store is created before the clock starts: making its tables (~3 s) happens once
per store, not once per study. A warm-up imports TensorFlow first so that neither study
pays for a cold disk cache; ``--repeats 2`` runs untracked, tracked, tracked, untracked and
reports medians.

    .venv/bin/python benchmarks/tracking_overhead.py [--backbone efficientnet_b1] [--trials 3] [--repeats 2]

``--gallery`` adds the tracked study with ``evaluation.explanations: false`` and reports what
each trial's Grad-CAM failure gallery costs (the tracked studies draw it by default).
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

from _common import clot_hpo, write_space

SPACE = """  image_size: {type: categorical, choices: [64]}
  batch_size: {type: categorical, choices: [32]}
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


def timed_study(
    work: Path,
    data: Path,
    space: Path,
    backbone: str,
    trials: int,
    epochs: int,
    tracking: bool,
    run: int = 0,
    explanations: bool = True,
) -> float:
    import optuna

    name = f"{'tracked' if tracking else 'untracked'}{'' if explanations else '-no-gallery'}-{run}"
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
        f"evaluation: {{explanations: {str(explanations).lower()}}}\n"
    )
    args = ["search", str(config)] + ([] if tracking else ["--no-tracking"])
    started = time.monotonic()
    with open(work / f"{name}.log", "w") as out, open(work / f"{name}.err", "w") as err:
        proc = clot_hpo(*args, cwd=work, stdout=out, stderr=err)
    if proc.wait() != 0:
        raise SystemExit(f"{name} study failed; see {work}/{name}.err")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_b1")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-per-class", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of studies (medians reported)")
    parser.add_argument(
        "--gallery",
        action="store_true",
        help="also a tracked study without the Grad-CAM failure gallery: its cost per trial",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from clot_hpo.data.synthetic import make_synthetic

    work = Path(tempfile.mkdtemp(prefix="tracking-overhead-"))
    data = make_synthetic(work / "data", n_per_class=args.n_per_class, image_size=64, seed=0)
    space = write_space(work / "space.yaml", args.backbone, SPACE)
    subprocess.run([sys.executable, "-c", "import tensorflow, keras, optuna, mlflow"], check=True)  # warm-up
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{work}/mlflow.db").search_experiments()  # the store's one-time setup

    walls: dict[bool, list[float]] = {False: [], True: []}
    for i in range(args.repeats):
        order = (False, True) if i % 2 == 0 else (True, False)
        for tracking in order:
            walls[tracking].append(
                timed_study(
                    work, data, space, args.backbone, args.trials, args.epochs, tracking=tracking, run=i
                )
            )
    untracked, tracked = statistics.median(walls[False]), statistics.median(walls[True])
    gallery: dict[str, object] = {}
    if args.gallery:  # the same tracked study with evaluation.explanations: false
        without = [
            timed_study(
                work,
                data,
                space,
                args.backbone,
                args.trials,
                args.epochs,
                tracking=True,
                run=i,
                explanations=False,
            )
            for i in range(args.repeats)
        ]
        gallery = {
            "wall_s_mlflow_no_gallery": [round(w, 1) for w in without],
            "gallery_s_per_trial": round((tracked - statistics.median(without)) / args.trials, 2),
        }
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "trials": args.trials,
                "epochs": args.epochs,
                "images_per_class": args.n_per_class,
                "repeats": args.repeats,
                "wall_s_null_tracker": [round(w, 1) for w in walls[False]],
                "wall_s_mlflow": [round(w, 1) for w in walls[True]],
                "overhead_ratio": round(tracked / untracked - 1.0, 4),
                "overhead_s_per_trial": round((tracked - untracked) / args.trials, 2),
                **gallery,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
