#!/usr/bin/env bash
# Set up .venv, then open the course in JupyterLab from it; the notebooks' kernel is .venv's python.
#
#   bash scripts/lab.sh                                      # opens a browser on this machine
#   bash scripts/lab.sh --no-browser --ip 0.0.0.0 --port 8888   # on a remote machine: open the printed URL
#
# Arguments are passed on to `jupyter lab`. Widget state is saved with the notebooks, so a
# reopened notebook shows its widgets (moving them again needs its cells run again).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# the kernel the notebooks ask for ("python3") is this environment's python, by absolute path
python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (course .venv)" >/dev/null
# the course's JupyterLab settings, as defaults for this environment
mkdir -p .venv/etc/jupyter/labconfig
cp binder/lab-settings.json .venv/etc/jupyter/labconfig/default_setting_overrides.json
# File > Save and Export Notebook As > HTML draws the figures offline (plotly.js once a page), and a
# saved notebook keeps each figure once, without the PNG copy JupyterLab adds (helpers.course.export)
python -m helpers.course.export --server-config .venv/etc/jupyter
extra=()
if [ "$(id -u)" = 0 ]; then extra+=(--allow-root); fi
exec jupyter lab --ServerApp.root_dir="$PWD" --LabApp.default_url=/lab/tree/notebooks "${extra[@]}" "$@"
