#!/usr/bin/env bash
# Set up and run the main job on the embedded default (toy-llava on a fresh ShapesWorld set):
# answer and capture, signals, probes, the predictor table and the HTML report (runs/demo/report/index.html).
# Usage: bash scripts/demo.sh [extra `vrp run` options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
"$PY" -m pip install -q --disable-pip-version-check -e .
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -m vrp.cli run --out runs/demo --force "$@"
