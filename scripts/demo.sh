#!/usr/bin/env bash
# `make demo`: search both backbones on synthetic data, promote the best model, report, use it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
START=${DEMO_START:-$(date +%s)}
URI=sqlite:///mlruns/mlflow.db

$BIN/clot-hpo search experiments/quickstart.yaml
$BIN/clot-hpo promote --tracking-uri "$URI" --experiment quickstart
echo
# The study's evidence: the table with intervals per backbone, paired tests, calibration.
$BIN/clot-hpo report --tracking-uri "$URI" --experiment quickstart --out mlruns/reports/quickstart
echo
echo "Using the champion on two synthetic images:"
$BIN/clot-hpo predict --tracking-uri "$URI" --model models:/blood-clot-detector@champion \
  "$(ls data/synthetic/positive/* | head -1)" "$(ls data/synthetic/negative/* | head -1)"
END=$(date +%s)
# Straight to the study's trials and charts: MLflow 3's UI otherwise opens on its GenAI view.
LINK=$($BIN/python -m clot_hpo.tracking.ui_links --store "$URI" --experiment quickstart 2>/dev/null \
       || echo http://127.0.0.1:5000)
cat <<MSG

Done in $((END - START)) s (including installation).
  Results:    mlruns/studies/quickstart/ (resolved config, split manifest, trials.csv)
  Report:     mlruns/reports/quickstart/report.html (self-contained; report.md beside it,
              and both on the study's MLflow run under report/)
  MLflow:     $URI, artifacts in mlruns/artifacts/
  Optuna:     sqlite:///mlruns/optuna.db (study "quickstart"; rerun to resume)
  Browse:     make mlflow-server   then open $LINK
  Diagnose:   $BIN/clot-hpo serve --tracking-uri $URI --model models:/blood-clot-detector@champion
              then open http://127.0.0.1:8080/ (drop an image: probability, decision, Grad-CAM)
MSG
