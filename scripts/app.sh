#!/usr/bin/env bash
# Set up .venv, build the explorer's caches (progress bars on a first run), then serve the explorer
# app with Voila: the page, no code (notebooks/app/explorer.ipynb, helpers.course.app).
#
#   bash scripts/app.sh                                  # the offline default; opens http://localhost:8866
#   bash scripts/app.sh --preset "ViT-B-16 LAION"        # a real model (downloads weights and images once)
#   bash scripts/app.sh --no-browser --port 8866 --Voila.ip=0.0.0.0   # on a remote machine: open the URL
#
# --preset, --n-images, --cache-dir and --prepare-only are the app's own (python -m helpers.course.app
# --help); every other argument goes to voila. Windows: .venv\Scripts\python -m helpers.course.app
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m helpers.course.app "$@"
