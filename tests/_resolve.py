"""Resolve requirements with pip as a learner's machine would (``pip install --dry-run``), for
tests/test_setup.py and tests/test_packaging.py.

pip runs with a plain configuration: no configuration files (``PIP_CONFIG_FILE`` set to the null
device), and of the ``PIP_*`` environment variables only the index (``PIP_INDEX_URL``) and the
certificate bundle (``PIP_CERT``). So extra local indexes, wheel folders or constraint files that
a machine's own configuration adds do not take part: the answer is the package index's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import _early
import pytest

ROOT = Path(__file__).resolve().parent.parent
KEPT = ("PIP_INDEX_URL", "PIP_CERT")


def index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def plain_pip_env() -> dict[str, str]:
    env = {k: v for k, v in _early.environ().items() if not k.startswith("PIP_") or k in KEPT}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_DEFAULT_TIMEOUT="60")
    env.pop("PYTHONPATH", None)
    return env


def reachable(url: str, timeout: float = 10.0) -> str:
    """``""`` when ``url`` answers, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return ""
    except Exception as exc:  # noqa: BLE001 - any failure: not reachable
        return str(getattr(exc, "reason", None) or exc) or type(exc).__name__


def require_index() -> None:
    """Skip (with the reason) when the package index cannot be reached."""
    why = reachable(index_url() + "/pip/")
    if why:
        pytest.skip(f"no package index reachable ({index_url()}: {why}): the resolution needs one")


def resolve(requirements: list[str], python_version: str, tmp_path: Path) -> tuple[int, list[dict], str]:
    """Resolve ``requirements`` (lines of a requirements file) for Python ``python_version`` on
    this platform, wheels only: ``(pip's exit status, the packages it would install, its
    messages)``. Each package: ``{"name", "version", "url"}``."""
    req = tmp_path / f"requirements-{python_version}.txt"
    req.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    report = tmp_path / f"report-{python_version}.json"
    # fast-deps: where an index does not serve a wheel's metadata on its own (PEP 658), pip reads
    # it from the wheel with HTTP range requests instead of downloading the whole file (PyTorch's
    # wheels weigh hundreds of MB): the same resolution, with a fraction of the processor's time
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(report), "--python-version", python_version, "--only-binary=:all:",
           "--use-feature=fast-deps", "--retries", "1", "-r", str(req)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=plain_pip_env(), cwd=tmp_path, timeout=900)
    packages = []
    if done.returncode == 0:
        for item in json.loads(report.read_text())["install"]:
            packages.append({"name": item["metadata"]["name"], "version": item["metadata"]["version"],
                             "url": item["download_info"]["url"]})
    return done.returncode, packages, done.stdout + done.stderr


def requirement_lines(path: Path) -> list[str]:
    """The lines of a requirements file without comments and blank lines."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def normalize(name: str) -> str:
    """A project name as the package index compares it (PEP 503)."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()
