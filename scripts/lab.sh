#!/usr/bin/env bash
# Set up .venv, then open the course in JupyterLab from it; the notebooks' kernel is .venv's python.
#
#   bash scripts/lab.sh                                      # opens a browser on this machine
#   bash scripts/lab.sh --no-browser --ip 0.0.0.0 --port 8888   # on a remote machine: open the printed URL
#
# Arguments are passed on to `jupyter lab` (scripts/setup.py lab). Widget state is saved with the
# notebooks, so a reopened notebook shows its widgets (moving them again needs its cells run again).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/setup.py lab "$@"
