#!/usr/bin/env bash
# Set up, then run the main job on the offline default: every notebook executed into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m helpers.course.main_job "$@"
