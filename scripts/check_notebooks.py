"""Exit 1 if a notebook given on the command line (default: every committed notebook) carries
outputs or execution counts: notebooks are committed clean; the main job makes executed copies.

    python scripts/check_notebooks.py [NOTEBOOK ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def dirty_cells(path: Path) -> list[int]:
    """Indices of the code cells of ``path`` that hold outputs or an execution count."""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    return [i for i, c in enumerate(cells)
            if c.get("cell_type") == "code" and (c.get("outputs") or c.get("execution_count") is not None)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] or sorted((ROOT / "notebooks").rglob("*.ipynb"))
    bad = {p: cells for p in paths if (cells := dirty_cells(p))}
    for p, cells in bad.items():
        print(f"{p}: outputs in cells {cells} (clear them: the sources in notebooks/src build clean notebooks)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
