#!/usr/bin/env bash
# Set up (torch + torchvision pair, the project with dev extras) and run lint + the test suite.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# A matched torch/torchvision pair first (CUDA builds that run on CPU); then the project.
"$PY" -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
"$PY" -m pip install -q --disable-pip-version-check -e ".[dev]"
# Debian's Chromium for the report's headless-browser test (skipped, with the reason, where it cannot be installed).
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) ||
    echo "could not install chromium: the browser test will be skipped"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -m ruff check src tests bench
"$PY" -m ruff format --check src tests bench
"$PY" -m pytest -q -m "not gpu" "$@"
