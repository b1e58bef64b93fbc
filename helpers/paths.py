"""Where the course's data folder is (the offline models, the text pools), without importing torch.

One rule for every reader (:func:`helpers.models.data_dir`, the pools, the datasets):
``$CLIP_COURSE_DATA`` when set; else the copy an installed wheel carries
(``helpers/course_data/``, written by the build, see ``setup.py``); else the repository's
``data/`` beside the package (a clone, or an editable install of one).
"""

from __future__ import annotations

import os
from pathlib import Path

# the folder, inside the package, that holds the wheel's copy of the repository's data/
SHIPPED_DATA = "course_data"


def data_dir() -> Path:
    """The course's data folder: ``$CLIP_COURSE_DATA``, the installed copy, or the repository's
    ``data/``."""
    env = os.environ.get("CLIP_COURSE_DATA")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    shipped = package / SHIPPED_DATA
    return shipped if shipped.is_dir() else package.parent / "data"
