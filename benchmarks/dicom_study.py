"""A DICOM study learnt end to end, and the same images as PNG: two test AUCs in one run.

Writes the synthetic set as 16-bit DICOM (``make-synthetic --format dicom``: half
MONOCHROME1, rescale slope and intercept, a PatientID per synthetic patient, no metadata CSV)
and the same pictures as 8-bit grayscale PNG with a metadata CSV whose groups are the DICOM
study's patient pseudonyms, so both studies split the same images the same way. For each
format it runs the command line a user runs: ``search`` (tiny CNN, 32 px), ``promote``,
``predict`` on the test split; and prints the trial's ``test_auc``, the AUC of ``predict``'s
probabilities on the test split and the wall time of each step, then the difference of the
two formats' AUCs.

    .venv/bin/python benchmarks/dicom_study.py                      # 150 per class, 2 trials
    .venv/bin/python benchmarks/dicom_study.py --n-per-class 60 --trials 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPACE = """backbone: tiny_cnn
parameters:
  image_size: {type: fixed, value: 32}
  batch_size: {type: fixed, value: 16}
  optimizer: {type: fixed, value: adam}
  learning_rate: {type: float, low: 2.0e-3, high: 5.0e-3, log: true, default: 3.0e-3}
  dropout: {type: fixed, value: 0.0}
  pooling: {type: fixed, value: max}
  use_dense: {type: fixed, value: false}
  aug_flip: {type: fixed, value: true}
"""


def experiment(name: str, epochs: int) -> str:
    """The study's YAML: the tiny CNN only, from random initialisation, local stores."""
    return (
        f"name: {name}\nseed: 7\n"
        "data: {val_fraction: 0.2, test_fraction: 0.2}\n"
        f"training: {{epochs: {epochs}, weights: none}}\n"
        "search: {backbones: [tiny_cnn], search_spaces: {tiny_cnn: space.yaml}, pruner: none,\n"
        "  storage: 'sqlite:///optuna.db', objective: val_auc}\n"
        "evaluation: {bootstrap_samples: 200}\n"
        "tracking: {uri: 'sqlite:///mlflow.db', artifact_root: artifacts}\n"
        "budget: {vram_gb: 4}\n"
    )


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``clot-hpo ARGS`` in a fresh process (raises with its stderr when it fails)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", "clot_hpo.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"clot-hpo {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def png_twin(dicom_root: Path, out: Path, manifest: Path, args: argparse.Namespace) -> Path:
    """The DICOM set's pictures as 8-bit grayscale PNG, grouped by the DICOM study's pseudonyms."""
    from PIL import Image

    from clot_hpo.data.synthetic import make_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        source = make_synthetic(
            Path(tmp) / "rgb", n_per_class=args.n_per_class, image_size=32, seed=args.seed, difficulty=0.0
        )
        rows = (source / "metadata.csv").read_text().splitlines()[1:]
        for index, row in enumerate(rows):  # make_synthetic_dicom names files by this order
            rel, cls, _ = row.split(",")
            (out / cls).mkdir(parents=True, exist_ok=True)
            Image.open(source / rel).convert("L").save(out / cls / f"img{index:05d}.png")
    with manifest.open() as fh:
        groups = [(r["relpath"], r["label"], r["group"]) for r in csv.DictReader(fh)]
    with (out / "metadata.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "group"])
        for rel, label, group in groups:
            writer.writerow([rel.replace(".dcm", ".png"), "positive" if label == "1" else "negative", group])
    return out


def run_study(data: Path, work: Path, name: str, args: argparse.Namespace) -> dict[str, float | str]:
    """search -> promote -> predict the test split; AUCs and timings."""
    from mlflow import MlflowClient
    from sklearn.metrics import roc_auc_score

    work.mkdir(parents=True, exist_ok=True)
    (work / "space.yaml").write_text(SPACE)
    (work / "exp.yaml").write_text(experiment(name, args.epochs))
    times = {}
    start = time.perf_counter()
    cli("search", "exp.yaml", "--data", str(data), "--n-trials", str(args.trials), cwd=work)
    times["search_s"] = time.perf_counter() - start
    start = time.perf_counter()
    cli("promote", "--config", "exp.yaml", cwd=work)
    times["promote_s"] = time.perf_counter() - start
    manifest = work / "mlruns" / "studies" / name / "data" / "split_manifest.csv"
    with manifest.open() as fh:
        test = [(data / r["relpath"], int(r["label"])) for r in csv.DictReader(fh) if r["split"] == "test"]
    start = time.perf_counter()
    predicted = cli("predict", "--config", "exp.yaml", *(str(p) for p, _ in test), cwd=work)
    times["predict_s"] = time.perf_counter() - start
    probability = {
        line["image"]: line["probability"]
        for line in map(json.loads, (x for x in predicted.stdout.splitlines() if x.startswith("{")))
    }
    labels = np.array([y for _, y in test])
    scores = np.array([probability[str(p)] for p, _ in test])
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("blood-clot-detector", "champion")
    run = client.get_run(champion.run_id)
    return {
        "format": name,
        "images": len(list(data.rglob("img*"))),
        "test_images": len(test),
        "test_positives": int(labels.sum()),
        "trial_test_auc": round(run.data.metrics["test_auc"], 4),
        "predict_test_auc": round(float(roc_auc_score(labels, scores)), 4),
        **{k: round(v, 1) for k, v in times.items()},
        "manifest": str(manifest),
    }


def main() -> None:
    """Run both studies and print one JSON object per format, then the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=150)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="keep everything in this folder (default: a temporary one)")
    args = parser.parse_args()

    from clot_hpo.data.synthetic_dicom import make_synthetic_dicom

    with tempfile.TemporaryDirectory(prefix="clot-hpo-dicom-study-") as tmp:
        root = Path(args.work) if args.work else Path(tmp)
        dicom = make_synthetic_dicom(
            root / "data-dicom", n_per_class=args.n_per_class, image_size=32, seed=args.seed
        )
        first = run_study(dicom, root / "study-dicom", "dicom", args)
        print(json.dumps(first), flush=True)
        png = png_twin(dicom, root / "data-png", Path(str(first["manifest"])), args)
        second = run_study(png, root / "study-png", "png", args)
        print(json.dumps(second), flush=True)
        print(
            json.dumps(
                {
                    "dicom_test_auc": first["trial_test_auc"],
                    "png_test_auc": second["trial_test_auc"],
                    "auc_difference": round(
                        abs(float(first["trial_test_auc"]) - float(second["trial_test_auc"])), 4
                    ),
                    "same_test_split": _same_split(
                        Path(str(first["manifest"])), Path(str(second["manifest"]))
                    ),
                    "load": os.getloadavg(),
                }
            )
        )


def _same_split(a: Path, b: Path) -> bool:
    def read(path: Path) -> list[tuple[str, str]]:
        with path.open() as fh:
            return sorted((Path(r["relpath"]).stem, r["split"]) for r in csv.DictReader(fh))

    return read(a) == read(b)


if __name__ == "__main__":
    main()
