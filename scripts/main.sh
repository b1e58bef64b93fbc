#!/usr/bin/env bash
# Set up, then run the main job on the offline default: every notebook executed into build/.
# Arguments go to python -m helpers.course.main_job (scripts/setup.py main).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/setup.py main "$@"
