"""Widgets and plots that work live (Jupyter, Colab, Binder) and headless (papermill, HTML).

With a front end, :func:`live` shows controls and redraws on change. Headless (the main job
and the tests set ``COURSE_HEADLESS=1``), it still builds the controls, then calls the
function once with their default values so the figure lands in the executed notebook and its
HTML copy.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

__all__ = ["headless", "in_colab", "setup_plotting", "live", "show"]


def headless() -> bool:
    return os.environ.get("COURSE_HEADLESS") == "1"


def in_colab() -> bool:
    return "google.colab" in sys.modules


def setup_plotting() -> None:
    """Pick plotly renderers that show live and also survive export to static HTML."""
    import plotly.io as pio

    if in_colab():
        pio.renderers.default = "colab"
    else:
        # the mimetype for JupyterLab / VS Code, plus an embedded plotly.js copy for HTML export
        pio.renderers.default = "plotly_mimetype+notebook"


def show(fig: Any) -> None:
    """Display a plotly figure with the renderers chosen by :func:`setup_plotting`."""
    fig.show()


def live(fn: Callable[..., Any], **controls: Any) -> Any:
    """Call ``fn(**values)`` now and again whenever a control changes.

    ``controls`` maps ``fn``'s argument names to ipywidgets (their current values are the
    defaults). Returns the container widget (``None`` headless).
    """
    import ipywidgets as widgets
    from IPython.display import display

    for name, w in controls.items():
        if not isinstance(w, widgets.ValueWidget):
            raise TypeError(f"control {name!r} must be an ipywidgets value widget, got {type(w).__name__}")
    if headless():
        fn(**{k: w.value for k, w in controls.items()})
        return None
    out = widgets.interactive_output(fn, controls)
    box = widgets.VBox([widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap")), out])
    display(box)
    return box
