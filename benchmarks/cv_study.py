"""What ``search.cv_folds`` costs: the same small study with and without folds, in one run.

Both studies search the same space (tiny CNN, 32 px, learning rate searched) on the same
synthetic set with the same seed, untracked, with the same number of trials and epochs; one
with ``search.cv_folds: K``. It prints each study's wall time, its trials' states and epochs,
and the ratios of the wall times and of the epochs trained (a cross-validated trial trains K
folds and, when it completes, the refit: up to K + 1 trainings where the plain trial trains
one). On a CPU with a tiny model the wall-time ratio stays far below the epochs ratio: each
trial's fixed costs (its process, imports, the first epoch's tracing, the evaluation) are
paid once per trial, not per fold, since the folds reuse one compiled model.

    .venv/bin/python benchmarks/cv_study.py                  # 5 folds, 3 trials, 4 epochs
    .venv/bin/python benchmarks/cv_study.py --folds 3 --trials 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import clot_hpo, write_space  # noqa: E402

SPACE = """  image_size: {type: fixed, value: 32}
  batch_size: {type: fixed, value: 8}
  optimizer: {type: fixed, value: adam}
  learning_rate: {type: float, low: 1.0e-5, high: 5.0e-3, log: true, default: 3.0e-3}
  dropout: {type: fixed, value: 0.0}
  pooling: {type: fixed, value: max}
  use_dense: {type: fixed, value: false}
  aug_flip: {type: fixed, value: true}
"""


def _study(
    work: Path, data: Path, name: str, folds: int | None, args: argparse.Namespace
) -> dict[str, object]:
    """Run one study to its trial budget; its wall time and trials."""
    import optuna

    cv = f", cv_folds: {folds}" if folds else ""
    (work / f"{name}.yaml").write_text(
        f"name: {name}\nseed: 7\ndata: {{path: {data}, val_fraction: 0.2, test_fraction: 0.2}}\n"
        f"training: {{epochs: {args.epochs}, weights: none}}\n"
        f"search: {{backbones: [tiny_cnn], search_spaces: {{tiny_cnn: space.yaml}}, pruner: hyperband{cv}}}\n"
        "budget: {vram_gb: 4}\nevaluation: {bootstrap_samples: 200}\n"
    )
    storage = f"sqlite:///{work}/{name}.db"
    started = time.monotonic()
    proc = clot_hpo(
        "search",
        f"{name}.yaml",
        "--no-tracking",
        "--storage",
        storage,
        "--n-trials",
        str(args.trials),
        cwd=work,
    )
    if proc.wait() != 0:
        raise SystemExit(f"the {name} study failed (exit {proc.returncode})")
    seconds = time.monotonic() - started
    trials = optuna.load_study(study_name=name, storage=storage).trials
    return {
        "wall_s": round(seconds, 1),
        "states": [t.state.name for t in trials],
        "epochs_run": [t.user_attrs.get("epochs_run") for t in trials],
        # Completed trials only: Optuna gives a pruned trial its last reported value.
        "best_value": max((t.value for t in trials if t.state.name == "COMPLETE"), default=None),
        "epochs_total": sum(int(t.user_attrs.get("epochs_run") or 0) for t in trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n-per-class", type=int, default=60)
    args = parser.parse_args()
    from clot_hpo.data.synthetic import make_synthetic

    with tempfile.TemporaryDirectory(prefix="cv-study-") as tmp:
        work = Path(tmp)
        data = make_synthetic(
            work / "data", n_per_class=args.n_per_class, image_size=32, seed=1, progress=False
        )
        write_space(work / "space.yaml", "tiny_cnn", SPACE)
        plain = _study(work, data, "plain", None, args)
        folded = _study(work, data, "folds", args.folds, args)
    result = {
        "folds": args.folds,
        "trials": args.trials,
        "epochs": args.epochs,
        "images": 2 * args.n_per_class,
        "plain": plain,
        "cv": folded,
        "wall_ratio_cv_over_plain": round(float(folded["wall_s"]) / float(plain["wall_s"]), 2),  # type: ignore[arg-type]
        "epochs_ratio_cv_over_plain": round(folded["epochs_total"] / plain["epochs_total"], 2),  # type: ignore[operator]
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
