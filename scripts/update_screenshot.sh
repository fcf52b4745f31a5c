#!/usr/bin/env bash
# Retake docs/img/04_sliders.png, the README's picture of notebook 04's ε and β sliders, with the
# real-browser test (tests/test_browser_sliders.py): JupyterLab + headless Debian chromium, both sliders
# moved (ε 0.20 -> 0.45, β 0.50 -> 0.75), the two slider cells cropped and stacked.
# Needs Debian's chromium (apt-get install chromium); fails, rather than skips, when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
GRPO_UPDATE_SCREENSHOT=1 GRPO_REQUIRE_BROWSER=1 "${VENV:-.venv}/bin/python" -m pytest \
  tests/test_browser_sliders.py -k real_browser -q -s -p no:cacheprovider
