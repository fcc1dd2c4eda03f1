"""Parent-process memory across trials: clot-hpo's process per trial vs one KerasTuner process.

Runs the same N trials (EfficientNetB1 by default, tiny images, one epoch) twice:
  1. ``clot-hpo search``: the study process's RSS is sampled after each finished trial;
  2. the plain KerasTuner way: ``keras_tuner.RandomSearch`` in this process, with
     ``keras.backend.clear_session()`` after each trial, RSS sampled after each trial.
Prints one JSON object with both series (MiB) and the ratio of their growth.

    .venv/bin/python benchmarks/trial_memory.py [--trials 8] [--backbone efficientnet_b1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import clot_hpo, rss_mb, write_space

SPACE = """  image_size: {type: categorical, choices: [32]}
  batch_size: {type: categorical, choices: [16]}
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  dropout: {type: float, low: 0.0, high: 0.5}
"""


def isolated_series(work: Path, data: Path, space: Path, backbone: str, trials: int) -> list[float]:
    import optuna

    config = work / "exp.yaml"
    config.write_text(
        f"name: mem\ndata: {{path: {data}}}\ntraining: {{epochs: 1, weights: none}}\n"
        f"search: {{backbones: [{backbone}], search_spaces: {{{backbone}: {space}}}, pruner: none,"
        f" storage: 'sqlite:///{work}/optuna.db', n_trials: {trials}}}\n"
    )
    with open(work / "isolated.log", "w") as out, open(work / "isolated.err", "w") as err:
        proc = clot_hpo("search", str(config), "--no-tracking", cwd=work, stdout=out, stderr=err)
    series: list[float] = []
    seen = 0
    while proc.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="mem", storage=f"sqlite:///{work}/optuna.db")
        except KeyError:
            continue
        finished = sum(t.state.is_finished() for t in study.trials)
        if finished > seen:
            seen = finished
            series.append(round(rss_mb(proc.pid), 1))
    if proc.returncode != 0:
        raise SystemExit(f"clot-hpo search failed; see {work}/isolated.err")
    return series


def in_process_series(data: Path, space: Path, backbone: str, trials: int) -> list[float]:
    import keras
    import keras_tuner
    import pandas as pd

    from clot_hpo.config import DataConfig
    from clot_hpo.data.pipeline import make_dataset
    from clot_hpo.data.scan import scan_dataset
    from clot_hpo.models.hypermodel import ClotHyperModel
    from clot_hpo.search_space import load_search_space

    frame: pd.DataFrame = scan_dataset(DataConfig(path=str(data)))
    train = make_dataset(
        list(frame["path"]), list(frame["label"]), image_size=32, batch_size=16, shuffle=True, seed=0
    )
    series: list[float] = []

    class Tuner(keras_tuner.RandomSearch):
        def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
            super().on_trial_end(trial)
            keras.backend.clear_session()
            series.append(round(rss_mb(), 1))

    hypermodel = ClotHyperModel({backbone: load_search_space(space)}, weights="none")
    tuner = Tuner(
        hypermodel,
        objective=keras_tuner.Objective("val_auc", "max"),
        max_trials=trials,
        directory=tempfile.mkdtemp(),
        project_name="mem",
        overwrite=True,
        seed=0,
    )
    tuner.search(train, validation_data=train, epochs=1, verbose=0)
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--backbone", default="efficientnet_b1")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from clot_hpo.data.synthetic import make_synthetic

    work = Path(tempfile.mkdtemp(prefix="trial-memory-"))
    data = make_synthetic(work / "data", n_per_class=48, image_size=32, seed=0)
    space = write_space(work / "space.yaml", args.backbone, SPACE)
    isolated = isolated_series(work, data, space, args.backbone, args.trials)
    in_process = in_process_series(data, space, args.backbone, args.trials)
    growth_iso = isolated[-1] - isolated[0]
    growth_in = in_process[-1] - in_process[0]
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "trials": args.trials,
                "clot_hpo_parent_rss_mb": isolated,
                "keras_tuner_in_process_rss_mb": in_process,
                "growth_clot_hpo_mb": round(growth_iso, 1),
                "growth_keras_tuner_mb": round(growth_in, 1),
                "growth_per_trial_keras_tuner_mb": round(growth_in / max(1, len(in_process) - 1), 1),
                "growth_ratio_keras_tuner_over_clot_hpo": round(growth_in / max(abs(growth_iso), 1.0), 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
