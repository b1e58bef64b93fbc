"""Where the course's files are: the repository root and its ``data/`` folder (no torch import)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ROOT", "data_dir"]

ROOT = Path(__file__).resolve().parents[2]
"""The repository (or installation) root: the folder that holds ``helpers/``."""


def data_dir() -> Path:
    """The repository's ``data/`` folder (overridable with ``CLIP_COURSE_DATA``)."""
    env = os.environ.get("CLIP_COURSE_DATA")
    if env:
        return Path(env)
    return ROOT / "data"
