"""Slides from the executed notebooks: one reveal.js deck per notebook, with its key figures.

    python -m helpers.course.main_job --slides      # execute, then write build/slides/NN_*.slides.html

:func:`deck` marks each cell of an executed notebook with a slide type (the ``slideshow``
metadata that nbconvert's slides exporter reads) and exports it without the code:

* the title cell and every ``##`` heading start a slide; every ``###`` heading a sub-slide;
* a cell whose output is a figure (plotly, an image) or a table is a sub-slide of its own;
* generated *What we see* text appears as a fragment under the figure it explains;
* the rest of the prose becomes speaker notes; set-up, parameters, exercises, their checks,
  hints, solutions and the instructor's timing plan are left out.

Plain printed lines are dropped from the deck (they are for the notebook reader). Images embedded
in markdown as attachments (notebook 1's diagram of the residual decomposition) travel with the
deck.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

__all__ = ["slide_types", "deck", "write_deck"]

FIGURE_MIMES = ("application/vnd.plotly.v1+json", "image/png", "image/svg+xml", "image/jpeg")
LEFT_OUT_TAGS = {"parameters", "exercise", "hint", "solution", "exercise-badge", "timing"}


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _kind(cell: Any, index: int, after_exercise: bool) -> str:
    tags = set(cell.get("metadata", {}).get("tags", []))
    src = _source(cell)
    if tags & LEFT_OUT_TAGS or after_exercise:
        return "skip"
    if cell["cell_type"] == "markdown":
        if index == 0 or re.match(r"\s*(\[[^\]]*\]\([^)]*\)[^\n]*\n+)?#{1,2} ", src):
            return "slide"
        if re.match(r"\s*### ", src):
            return "skip" if "Before you start" in src else "subslide"
        if "predict" in tags or "discuss" in tags:
            return "subslide"
        return "notes"
    outputs = [o for o in cell.get("outputs", []) if o.get("output_type") in ("display_data", "execute_result")]
    if any(m in o.get("data", {}) for o in outputs for m in FIGURE_MIMES):
        return "subslide"
    if any("text/html" in o.get("data", {}) and "<table" in "".join(o["data"]["text/html"]) for o in outputs):
        return "subslide"
    if any("text/markdown" in o.get("data", {}) for o in outputs):
        return "fragment"
    return "skip"


def slide_types(nb: Any) -> list[str]:
    """The slide type of every cell of an executed notebook (see the module docstring)."""
    out, after = [], False
    for i, cell in enumerate(nb["cells"]):
        kind = _kind(cell, i, after)
        after = "exercise" in cell.get("metadata", {}).get("tags", [])
        out.append(kind)
    return out


def deck(nb: Any) -> Any:
    """A copy of an executed notebook marked up as a deck: slide types set, printed lines and
    widget outputs removed, attachments kept."""
    nb = copy.deepcopy(nb)
    for cell, kind in zip(nb["cells"], slide_types(nb)):
        cell.setdefault("metadata", {})["slideshow"] = {"slide_type": kind}
        if cell["cell_type"] == "code":
            cell["outputs"] = [o for o in cell.get("outputs", [])
                               if o.get("output_type") in ("display_data", "execute_result")
                               and "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    return nb


def write_deck(executed: Path, out_dir: Path) -> Path:
    """Export the deck of one executed notebook to ``out_dir/NN_*.slides.html`` (reveal.js, loaded
    from its CDN when the deck is opened); returns its path."""
    import nbformat
    from nbconvert import SlidesExporter

    nb = nbformat.read(str(executed), as_version=4)
    exporter = SlidesExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.from_dict(deck(nb)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{Path(executed).stem}.slides.html"
    path.write_text(body)
    return path
