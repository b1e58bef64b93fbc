#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned environment plus this package (editable).
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q --upgrade pip >/dev/null
# torch first, alone: an unpinned resolve could pull a multi-GB build
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -r requirements-pinned.txt
python -m pip install -q --no-deps -e .
python - <<'PY'
import helpers, torch, open_clip
print(f"environment ready: python {__import__('sys').version.split()[0]}, torch {torch.__version__}, "
      f"open_clip {open_clip.__version__}")
PY
