#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned environment plus this package (editable):
# scripts/setup.py, run by $PYTHON (default: python3). A second run only checks.
# Options go to scripts/setup.py: --cpu / --cuda (torch build), --check, --venv PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/setup.py "$@"
