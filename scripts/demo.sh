#!/usr/bin/env bash
# Set up and run the main job on the embedded default: the study of the three shipped toys
# (toy-llava, toy-paligemma, toy-qwen2vl) on a fresh ShapesWorld set. Each model: answers and
# signals, probes, the predictor table, top-30% patch masking and probe-neuron ablation (on the
# first 500 items); then the study tables (runs/demo/tables: Parquet, CSV, LaTeX), the paper's
# claims checked (runs/demo/summary.json) and the study report (runs/demo/report/index.html).
# Rerunning resumes (finished runs are skipped); --fresh starts over.
# Usage: bash scripts/demo.sh [--fresh] [extra `vrp study` options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
"$PY" -m pip install -q --disable-pip-version-check -e .
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ "${1:-}" == "--fresh" ]]; then
  rm -rf runs/demo
  shift
fi
"$PY" -m vrp.cli study --out runs/demo --intervene patches --intervene neurons --intervene-limit 500 "$@"
