"""Where the course's files are, without importing torch: the repository root and the data folder
(the offline models, the text pools).

One rule for every reader of ``data/`` (:func:`helpers.engine.models.data_dir`, the pools, the
datasets): ``$CLIP_COURSE_DATA`` when set; else the copy an installed wheel carries
(``helpers/course_data/``, written by the build, see ``setup.py``); else the repository's
``data/`` beside the package (a clone, or an editable install of one).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ROOT", "SHIPPED_DATA", "data_dir"]

PACKAGE = Path(__file__).resolve().parents[1]
"""The ``helpers`` package folder."""

ROOT = PACKAGE.parent
"""The repository root in a clone (the folder that holds ``helpers/``, ``notebooks/``, ``data/``)."""

SHIPPED_DATA = "course_data"
"""The folder, inside the package, that holds a wheel's copy of the repository's ``data/``."""


def data_dir() -> Path:
    """The course's data folder: ``$CLIP_COURSE_DATA``, the installed copy, or the repository's
    ``data/``."""
    env = os.environ.get("CLIP_COURSE_DATA")
    if env:
        return Path(env)
    shipped = PACKAGE / SHIPPED_DATA
    return shipped if shipped.is_dir() else ROOT / "data"
