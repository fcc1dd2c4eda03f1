"""``training.class_weight: balanced`` against ``none`` on rare positives, the same seed, in one run.

Generates a synthetic set at ``--prevalence`` (train, validation and test from other seeds,
so other synthetic patients), trains the tiny CNN twice through the product's own pieces
(``ClotHyperModel`` with fixed hyperparameters, ``train`` with ``class_weights``), once per
rule, from the same seed, and evaluates each with ``evaluate_trial`` (threshold chosen on
validation by ``--threshold``, PPV and NPV at ``evaluation.prevalence`` = ``--prevalence``).
Prints one JSON object per rule, then a table of AUC, sensitivity, specificity, PPV and NPV
on the test split with their intervals, and the same at the fixed threshold 0.5, where the
weighting shows most (an uncalibrated score then decides alone).

    .venv/bin/python benchmarks/class_weight.py
    .venv/bin/python benchmarks/class_weight.py --prevalence 0.05 --epochs 8 --difficulty 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import write_space  # noqa: E402
from clot_hpo.config.schema import EvaluationConfig  # noqa: E402
from clot_hpo.data.synthetic import make_synthetic  # noqa: E402
from clot_hpo.evaluate import binary_metrics, evaluate_trial, format_estimate  # noqa: E402

SHOWN = ("auc", "sensitivity", "specificity", "ppv", "npv")
SPACE = """\
  image_size: {type: fixed, value: SIZE}
  batch_size: {type: fixed, value: 32}
  optimizer: {type: fixed, value: adam}
  learning_rate: {type: fixed, value: 3.0e-3}
  dropout: {type: fixed, value: 0.1}
  pooling: {type: fixed, value: max}
  use_dense: {type: fixed, value: false}
  aug_flip: {type: fixed, value: false}
"""


def load(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB pixels (N, S, S, 3) and 0/1 labels of a synthetic folder."""
    meta = pd.read_csv(root / "metadata.csv")
    pixels = [np.asarray(Image.open(root / rel).convert("RGB"), dtype=np.uint8) for rel in meta.image]
    return np.stack(pixels), (meta.label == "positive").to_numpy(dtype=np.int64)


def run(
    rule: str, splits: dict[str, tuple[np.ndarray, np.ndarray]], space: Path, args: argparse.Namespace
) -> dict:
    """Train the tiny CNN with ``class_weight: rule`` and evaluate it."""
    import keras
    import keras_tuner

    from clot_hpo.data.pipeline import make_array_dataset
    from clot_hpo.models.hypermodel import ClotHyperModel
    from clot_hpo.search_space import load_search_space
    from clot_hpo.train import class_weights, predict_probabilities, train

    keras.utils.set_random_seed(args.seed)
    hypermodel = ClotHyperModel(
        {"tiny_cnn": load_search_space(space)}, weights="none", seed=args.seed, class_weight=rule
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    y_tr = splits["train"][1]
    data = {
        name: make_array_dataset(
            x, y.astype(np.float32), batch_size=32, shuffle=name == "train", seed=args.seed
        )
        for name, (x, y) in splits.items()
    }
    start = time.perf_counter()
    weights = class_weights(y_tr, hypermodel.settings(hp)["class_weight"])
    train(hypermodel, hp, model, data["train"], data["val"], epochs=args.epochs, class_weight=weights)
    seconds = time.perf_counter() - start
    yv, pv = predict_probabilities(model, data["val"])
    yt, pt = predict_probabilities(model, data["test"])
    cfg = EvaluationConfig(threshold=args.threshold, prevalence=args.prevalence, bootstrap_samples=1000)
    report = evaluate_trial(yv, pv, yt, pt, cfg, seed=args.seed, figures=False)
    at_half = binary_metrics(
        yt, pt, threshold=0.5, n_bootstrap=1000, seed=args.seed, prevalence=args.prevalence
    )
    return {
        "class_weight": rule,
        "weights": weights,
        "threshold": report.threshold,
        "test": {k[len("test_") :]: v for k, v in report.metrics.items() if k.startswith("test_")},
        "test_at_0.5": at_half,
        "mean_probability_test": float(np.mean(pt)),
        "train_s": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prevalence", type=float, default=0.1)
    parser.add_argument("--n-train", type=int, default=200, help="train images = 2 x this")
    parser.add_argument("--n-val", type=int, default=100, help="validation images = 2 x this")
    parser.add_argument("--n-test", type=int, default=200, help="test images = 2 x this")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--difficulty", default="0.5")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threshold", default="youden", help="evaluation.threshold rule")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="class-weight-") as tmp:
        root = Path(tmp)
        splits = {}
        for offset, (name, n) in enumerate(
            (("train", args.n_train), ("val", args.n_val), ("test", args.n_test))
        ):
            folder = make_synthetic(
                root / name,
                n_per_class=n,
                image_size=args.image_size,
                seed=args.seed + 1000 * offset,
                difficulty=float(args.difficulty),
                prevalence=args.prevalence,
            )
            splits[name] = load(folder)
        space = write_space(root / "tiny_cnn.yaml", "tiny_cnn", SPACE.replace("SIZE", str(args.image_size)))
        results = [run(rule, splits, space, args) for rule in ("none", "balanced")]
    for row in results:
        print(json.dumps(row), flush=True)

    counts = {k: f"{int(v[1].sum())}/{len(v[1])}" for k, v in splits.items()}
    print(
        f"\nprevalence {args.prevalence:g} (positives/images: {counts}), {args.image_size} px, difficulty "
        f"{args.difficulty}, tiny CNN {args.epochs} epochs, seed {args.seed}; test split, 95% intervals; "
        f"PPV and NPV at prevalence {args.prevalence:g}"
    )
    for title, key in (
        (f"threshold chosen on validation ({args.threshold})", "test"),
        ("threshold 0.5", "test_at_0.5"),
    ):
        print(f"\n{title}")
        print(" | ".join(f"{h:>22}" for h in ("class_weight", *SHOWN)))
        for row in results:
            print(
                " | ".join(
                    [f"{row['class_weight']:>22}", *(f"{format_estimate(row[key], m):>22}" for m in SHOWN)]
                )
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
