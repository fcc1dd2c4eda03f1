"""How hard the synthetic data is, per difficulty level: three figures in one run.

For each difficulty, generates a training set and a held-out test set (other seed, so other
synthetic "patients") and measures on the test set:

- ``mean_lr_acc``: a logistic regression on each image's mean intensity (should stay near
  chance: brightness is no cue);
- ``pixel_lr_acc`` / ``pixel_lr_auc``: a logistic regression on the raw pixels of 16 px
  grayscale thumbnails (standardised, L2 strength chosen by 5-fold cross-validation);
- ``cnn_acc`` / ``cnn_auc``: a small CNN (three conv blocks) trained from random
  initialisation for a few epochs at ``--image-size``.

Prints one JSON object per level and a table at the end.

    .venv/bin/python benchmarks/synthetic_difficulty.py
    .venv/bin/python benchmarks/synthetic_difficulty.py --levels 0 0.25 0.5 --image-size 48
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# scikit-learn announces parameter default changes that do not affect these fits.
warnings.filterwarnings("ignore", category=FutureWarning)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clot_hpo.data.synthetic import DIFFICULTY_LEVELS, make_synthetic, resolve_difficulty  # noqa: E402

THUMBNAIL = 16


def load(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB pixels (N, S, S, 3) in [0, 255], 16 px grayscale thumbnails (N, 256) and labels."""
    meta = pd.read_csv(root / "metadata.csv")
    rgb, thumbs = [], []
    for rel in meta.image:
        with Image.open(root / rel) as img:
            rgb.append(np.asarray(img.convert("RGB"), dtype=np.float32))
            small = img.convert("L").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX)
            thumbs.append(np.asarray(small, dtype=np.float32).ravel())
    return np.stack(rgb), np.stack(thumbs), (meta.label == "positive").to_numpy(dtype=np.int64)


def linear_figures(
    train: tuple[np.ndarray, np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> dict[str, float]:
    """Mean-intensity and raw-pixel logistic regressions, fitted on train, scored on test."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x_tr, t_tr, y_tr), (x_te, t_te, y_te) = train, test
    mean_lr = make_pipeline(StandardScaler(), LogisticRegression())
    mean_lr.fit(x_tr.mean(axis=(1, 2, 3))[:, None], y_tr)
    mean_acc = mean_lr.score(x_te.mean(axis=(1, 2, 3))[:, None], y_te)
    # The pixel model gets its best regularisation strength: a weak baseline proves nothing.
    pixel_lr = make_pipeline(
        StandardScaler(), LogisticRegressionCV(Cs=[1e-4, 1e-3, 1e-2, 1e-1, 1.0], cv=5, max_iter=2000)
    )
    pixel_lr.fit(t_tr, y_tr)
    return {
        "mean_lr_acc": float(mean_acc),
        "pixel_lr_acc": float(pixel_lr.score(t_te, y_te)),
        "pixel_lr_auc": float(roc_auc_score(y_te, pixel_lr.predict_proba(t_te)[:, 1])),
    }


def cnn_figures(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    epochs: int,
    seed: int = 0,
) -> dict[str, float]:
    """A small CNN from random initialisation, trained on train, scored on test."""
    import keras
    from sklearn.metrics import roc_auc_score

    (x_tr, _, y_tr), (x_te, _, y_te) = train, test
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(x_tr.shape[1:]),
            layers.Rescaling(1 / 127.5, offset=-1.0),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.GlobalMaxPooling2D(),
            layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    model.fit(x_tr, y_tr.astype(np.float32), epochs=epochs, batch_size=32, verbose=0)
    p = model.predict(x_te, batch_size=256, verbose=0).ravel()
    return {
        "cnn_acc": float(np.mean((p >= 0.5) == (y_te == 1))),
        "cnn_auc": float(roc_auc_score(y_te, p)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--levels",
        nargs="+",
        default=list(DIFFICULTY_LEVELS),
        help="difficulties: names or numbers in [0, 1] (default: easy medium hard)",
    )
    parser.add_argument("--n-train", type=int, default=200, help="training images per class")
    parser.add_argument("--n-test", type=int, default=150, help="test images per class")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory(prefix="synthetic-difficulty-") as tmp:
        for name in args.levels:
            level = resolve_difficulty(name)
            start = time.perf_counter()
            kwargs = {"image_size": args.image_size, "difficulty": level}
            train_dir = make_synthetic(
                Path(tmp) / f"{level}-train", n_per_class=args.n_train, seed=args.seed, **kwargs
            )
            test_dir = make_synthetic(
                Path(tmp) / f"{level}-test", n_per_class=args.n_test, seed=args.seed + 1000, **kwargs
            )
            generate_s = time.perf_counter() - start
            train, test = load(train_dir), load(test_dir)
            row = {
                "difficulty": name,
                "level": level,
                **linear_figures(train, test),
                **cnn_figures(train, test, epochs=args.epochs, seed=args.seed),
                "generate_s": round(generate_s, 2),
                "images": 2 * (args.n_train + args.n_test),
            }
            results.append(row)
            print(json.dumps(row), flush=True)

    print(
        f"\n{args.image_size} px, {args.n_train} + {args.n_test} images per class "
        f"(train + test), CNN {args.epochs} epochs"
    )
    header = ("difficulty", "mean_lr_acc", "pixel_lr_acc", "pixel_lr_auc", "cnn_acc", "cnn_auc")
    print(" | ".join(f"{h:>12}" for h in header))
    for row in results:
        cells = [f"{row['difficulty']:>12}"] + [f"{row[h]:>12.3f}" for h in header[1:]]
        print(" | ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
