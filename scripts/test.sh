#!/usr/bin/env bash
# Set up, then run the whole test suite (notebooks included) on the offline default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest "$@"
