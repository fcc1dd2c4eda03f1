#!/usr/bin/env bash
# The MLflow UI and REST API over the local store, on a loopback address (used by `make mlflow-server`).
#
#   scripts/mlflow_server.sh [HOST] [PORT]        (defaults: 127.0.0.1 5000)
#
# Backend store: sqlite:///mlruns/mlflow.db, artifacts under mlruns/artifacts (both relative to
# the repository root, the same store `clot-hpo search` writes by default). Point studies at it
# with `--tracking-uri http://HOST:PORT`.
# Overridable through the environment: MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION.
set -euo pipefail

HOST="${1:-127.0.0.1}"
PORT="${2:-5000}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MLFLOW="$ROOT/.venv/bin/mlflow"
PYTHON="$ROOT/.venv/bin/python"
if [ ! -x "$MLFLOW" ]; then
    MLFLOW="$(command -v mlflow || true)"
    PYTHON="$(command -v python3 || true)"
fi
if [ -z "$MLFLOW" ]; then
    echo "mlflow-server: mlflow is not installed; run \`make install\` first" >&2
    exit 2
fi

BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///mlruns/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-$ROOT/mlruns/artifacts}"
mkdir -p "$ROOT/mlruns" "$ARTIFACTS"

# Without job execution disabled and a single worker the server takes ~3.6 GB of RAM.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
# Nothing leaves the machine: no usage telemetry.
export MLFLOW_DISABLE_TELEMETRY=true
export DO_NOT_TRACK=true

case "$HOST" in
    127.*|localhost|::1) ;;
    *) echo "mlflow-server: warning: binding to $HOST exposes the UI beyond this machine;" \
            "the server has no authentication" >&2 ;;
esac

case "$HOST" in
    0.0.0.0|::) LINK_HOST=127.0.0.1 ;;  # reachable from this machine whatever the interface
    *) LINK_HOST="$HOST" ;;
esac
echo "mlflow-server: http://$HOST:$PORT  (store $BACKEND, artifacts $ARTIFACTS; Ctrl-C stops it)"
# MLflow 3's UI opens on its GenAI view (traces): link each study's runs in the model-training
# view instead. Reading the store takes a few seconds; the server starts right after.
LINKS=""
if [ -n "$PYTHON" ]; then
    LINKS="$("$PYTHON" -m clot_hpo.tracking.ui_links --store "$BACKEND" --server "http://$LINK_HOST:$PORT" \
             2>/dev/null || true)"
fi
if [ -n "$LINKS" ]; then
    echo "mlflow-server: each study's trials and charts (open one of these, not the home page):"
    echo "$LINKS" | sed 's/^/  /'
else
    echo "mlflow-server: no study in the store yet; once there is one, its runs are at" \
         "http://$LINK_HOST:$PORT/#/experiments/<id>/runs?workflowType=machine_learning (see docs/tracking.md)"
fi
exec "$MLFLOW" server \
    --backend-store-uri "$BACKEND" \
    --artifacts-destination "$ARTIFACTS" \
    --host "$HOST" \
    --port "$PORT" \
    --workers 1
