"""Executed notebooks as HTML pages whose plotly figures draw offline, with plotly.js once a page.

A course notebook holds each figure once, as plotly's own mimetype (see
:func:`helpers.course.ui.setup_plotting`): JupyterLab, Notebook 7 and VS Code draw it with the
plotly.js their plotly renderer serves, so nothing else needs to be stored. nbconvert's HTML
templates do not draw that mimetype. :class:`PlotlyHTML` is an nbconvert preprocessor that gives
each such output an HTML form (a ``div`` and a ``Plotly.newPlot`` call on the same data) and puts
plotly.js, the copy inside the plotly package (no network), into the first of them only: a page
carries it once, whatever the number of figures.

    python -m helpers.course.export build/notebooks/01_residual_decomposition.ipynb   # .html beside it

:func:`to_html` is what the main job writes into ``build/html/``. JupyterLab's own
*File > Save and Export Notebook As > HTML* uses the preprocessor when the server's configuration
names it (:data:`SERVER_CONFIG`; ``scripts/lab.sh`` writes it into the environment with
``python -m helpers.course.export --server-config .venv/etc/jupyter``).

JupyterLab's plotly renderer adds a PNG snapshot of every figure it draws to the figure's output,
for viewers without plotly; saved, those snapshots would outweigh the figures' data several times.
The same configuration names :func:`drop_plotly_snapshots` as the server's pre-save hook, so a
learner's saved notebook holds each figure once, as data (the renderer draws it again on opening).

:data:`SIZE_LIMIT_BYTES` is what a course notebook with its outputs may weigh, executed by the
main job or saved by a learner; the main job flags a notebook above it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nbconvert.preprocessors import Preprocessor

from .ui import PLOTLY_MIMETYPE

__all__ = ["PlotlyHTML", "figure_html", "to_html", "SIZE_LIMIT_BYTES", "SERVER_CONFIG", "write_server_config",
           "drop_plotly_snapshots", "main"]

SIZE_LIMIT_BYTES = 1_500_000
"""1.5 MB: an executed notebook with its figures, or a learner's saved notebook, stays below it."""


SERVER_CONFIG = {"HTMLExporter": {"preprocessors": ["helpers.course.export.PlotlyHTML"]},
                 "ContentsManager": {"pre_save_hook": "helpers.course.export.drop_plotly_snapshots"}}
"""Jupyter server configuration: JupyterLab's HTML export draws the figures, and saved notebooks
keep each figure once (:func:`drop_plotly_snapshots`)."""


def drop_plotly_snapshots(model: dict[str, Any], **kwargs: Any) -> None:
    """A Jupyter server pre-save hook: remove the ``image/png`` snapshot JupyterLab's plotly renderer
    adds beside a figure's plotly data, from the cells' outputs and from the outputs held in
    saved widget state. Other images (a PNG on its own) are kept."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    nb = model["content"]
    outputs = [o for c in nb.get("cells", []) for o in c.get("outputs", []) or []]
    state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    for widget in (state.get("state") or {}).values():
        outputs += (widget.get("state") or {}).get("outputs") or []
    for out in outputs:
        data = out.get("data") if isinstance(out, dict) else None
        if isinstance(data, dict) and PLOTLY_MIMETYPE in data:
            data.pop("image/png", None)


def write_server_config(config_dir: str | Path) -> Path:
    """Merge :data:`SERVER_CONFIG` into ``jupyter_server_config.json`` of a Jupyter configuration
    folder (settings already there for other classes or keys are kept)."""
    target = Path(config_dir) / "jupyter_server_config.json"
    config = json.loads(target.read_text()) if target.exists() and target.read_text().strip() else {}
    for section, values in SERVER_CONFIG.items():
        config.setdefault(section, {}).update(values)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(config, indent=1) + "\n")
    return target


def figure_html(figure: dict[str, Any], *, include_plotlyjs: bool) -> str:
    """The HTML of one figure from its plotly mimetype data: a ``div`` and the script that draws
    it, with plotly.js itself in front when ``include_plotlyjs``."""
    import plotly.io as pio

    return pio.to_html(figure, config=figure.get("config"), include_plotlyjs=include_plotlyjs,
                       include_mathjax=False, full_html=False, default_width="100%", default_height=525,
                       validate=False)


class PlotlyHTML(Preprocessor):
    """Give every plotly output an HTML form for nbconvert; plotly.js goes into the first only.

    Outputs that already have HTML are left alone (a figure shown with an HTML renderer)."""

    def preprocess(self, nb: Any, resources: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        first = True
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if PLOTLY_MIMETYPE in data and "text/html" not in data:
                    data["text/html"] = figure_html(data[PLOTLY_MIMETYPE], include_plotlyjs=first)
                    first = False
        return nb, resources


def to_html(notebook: str | Path) -> str:
    """The HTML page of an executed notebook (nbconvert's lab template), figures drawn offline."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    exporter.register_preprocessor(PlotlyHTML(), enabled=True)
    body, _ = exporter.from_filename(str(notebook))
    return body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write each notebook as an HTML page (beside it, or into --out) "
                                             "whose figures draw offline.")
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, help="folder for the pages (default: beside each notebook)")
    ap.add_argument("--server-config", type=Path, metavar="DIR",
                    help="write the configuration that makes JupyterLab's HTML export use this into DIR")
    args = ap.parse_args(argv)
    if args.server_config:
        write_server_config(args.server_config)
    elif not args.notebooks:
        ap.error("name the notebooks to export")
    for nb in args.notebooks:
        target = (args.out or nb.parent) / (nb.stem + ".html")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(to_html(nb))
        print(f"{nb} -> {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
