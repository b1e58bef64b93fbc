#!/usr/bin/env bash
# Set up, then run the whole test suite (notebooks included) on the offline default.
# Arguments go to pytest (scripts/setup.py test).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/setup.py test "$@"
