#!/usr/bin/env bash
# Screenshot of one MLflow run page, as served by `mlflow ui`, with headless Chromium.
#   scripts/mlflow_screenshot.sh STORE_URI EXPERIMENT_ID RUN_ID OUT.png
# e.g. after `mribundles evaluate-recon ... --track --output-dir eval`:
#   scripts/mlflow_screenshot.sh sqlite:///$PWD/eval/mlruns.db 1 <run id> docs/mlflow_evaluate_recon_run.png
set -euo pipefail
store=$1 experiment=$2 run=$3 out=$4
port=${PORT:-5099}
mlflow=${MLFLOW:-.venv/bin/mlflow}
"$mlflow" ui --backend-store-uri "$store" --host 127.0.0.1 --port "$port" --workers 1 >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1700 \
    --virtual-time-budget=20000 --screenshot="$out" \
    "http://127.0.0.1:$port/#/experiments/$experiment/runs/$run"
