"""Widgets and plots that work live (JupyterLab, Notebook, Colab, Binder, VS Code) and in batch runs.

:func:`live` shows controls once and redraws their output on every change when a front end is
attached. In a batch run (papermill, ``nbconvert --execute``, the main job) nothing could ever
move a control, so it calls the function once with the controls' defaults and its figures land
in the executed notebook as ordinary outputs. :func:`headless` tells the two apart by itself:

* ``COURSE_HEADLESS=1`` (or ``0``) in the environment decides outright;
* otherwise a run is headless when there is no Jupyter kernel (a plain script) or when the cell
  was sent by a client that takes no keyboard input. Front ends (JupyterLab, Notebook, VS Code)
  execute cells with ``allow_stdin`` set; nbclient, which papermill and nbconvert use, never
  does. Colab counts as a front end whatever it sends.

Figures are written once, in plotly's own mimetype, which JupyterLab, Notebook 7 and VS Code
render with the plotly.js their plotly extension serves; a saved notebook therefore holds each
figure's data and nothing else. Colab renders each output in its own frame, so there a figure is
HTML that loads plotly.js from plotly's CDN. The HTML export
(:mod:`helpers.course.export`) draws the same figures from their data with one copy of plotly.js
per page. Widgets work on ipywidgets 8 and on 7.7 (Colab's); in Colab the custom widget manager
is turned on when the installed ipywidgets needs it (8 and later).

The interactive path never uses an Output widget as a context manager: the function's outputs
are captured in the kernel and handed to the Output widget in one assignment. A batch client
that mimics Output widgets (nbclient) therefore never has to answer on the shell channel while
it waits for a cell to finish, which is the race that could leave a plain ``papermill`` run
waiting forever; it also spares the page the flicker of a clear-then-redraw.
"""

from __future__ import annotations

import base64
import os
import sys
from typing import Any, Callable

__all__ = ["headless", "front_end", "in_colab", "setup_plotting", "live", "live_widget", "show", "RERUN_HINT",
           "PLOTLY_MIMETYPE"]

RERUN_HINT = "Interactive widget: run this cell to bring it back."
PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"


def in_colab() -> bool:
    return "google.colab" in sys.modules


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return None
    return get_ipython()


def front_end() -> bool:
    """Whether a front end that shows widgets runs the current cell (see the module docstring)."""
    if in_colab():
        return True
    kernel = getattr(_shell(), "kernel", None)
    if kernel is None:  # plain Python, or a terminal IPython: nothing can show a widget
        return False
    try:
        parent = kernel.get_parent("shell") or {}
    except Exception:  # an unusual kernel: assume a person is watching
        return True
    if parent.get("header", {}).get("msg_type") != "execute_request":
        return True  # called from a widget callback or similar: only a front end sends those
    return bool(parent.get("content", {}).get("allow_stdin", False))


def headless() -> bool:
    """True when widgets cannot be shown: ``COURSE_HEADLESS=1``, or no front end detected."""
    flag = os.environ.get("COURSE_HEADLESS", "").strip()
    if flag in ("1", "0"):
        return flag == "1"
    return not front_end()


def setup_plotting() -> None:
    """Set plotly's renderer for where the notebook runs, and in Colab the widget manager.

    * Colab: ``"colab"`` (each figure as HTML that loads plotly.js from plotly's CDN, since
      every output is drawn in its own frame); with ipywidgets 8 or later, Colab's custom widget
      manager is turned on (its built-in one speaks ipywidgets 7 only).
    * elsewhere (JupyterLab, Notebook 7, VS Code, batch runs): ``"plotly_mimetype"``, each
      figure's data once, drawn by the front end's plotly renderer. Nothing is embedded in the
      notebook; the HTML export adds plotly.js once per page (:mod:`helpers.course.export`).
    """
    import plotly.io as pio

    if in_colab():
        pio.renderers.default = "colab"
        if _ipywidgets_major() >= 8:
            from google.colab import output

            output.enable_custom_widget_manager()
    else:
        pio.renderers.default = "plotly_mimetype"


def _ipywidgets_major() -> int:
    import ipywidgets

    return int(str(ipywidgets.__version__).split(".")[0])


def show(fig: Any) -> None:
    """Display a plotly figure with the renderers chosen by :func:`setup_plotting`."""
    fig.show()


class _Recorder:
    """Collects what a function prints and displays, in order, as notebook output dicts."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []

    def stream(self, name: str, text: str) -> None:
        if not text:
            return
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self.outputs.append({"output_type": "stream", "name": name, "text": text})

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None) -> None:
        # binary payloads (PNG, JPEG) travel base64-encoded in notebook outputs, as the kernel sends them
        data = {k: base64.b64encode(v).decode("ascii") if isinstance(v, (bytes, bytearray)) else v
                for k, v in data.items()}
        self.outputs.append({"output_type": "display_data", "data": data, "metadata": dict(metadata or {})})

    def clear(self) -> None:
        self.outputs.clear()


class _Stream:
    def __init__(self, recorder: _Recorder, name: str) -> None:
        self._recorder, self.name = recorder, name

    def write(self, text: str) -> int:
        self._recorder.stream(self.name, text)
        return len(text)

    encoding = "utf-8"

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _captured(fn: Callable[..., Any], kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Call ``fn(**kwargs)``; return its printed text, displays and any error as output dicts."""
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    rec = _Recorder()

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
            rec.display(data, metadata)

        def clear_output(self, wait=False):
            rec.clear()

    saved = shell.display_pub, sys.stdout, sys.stderr
    shell.display_pub = Publisher(shell=shell)
    sys.stdout, sys.stderr = _Stream(rec, "stdout"), _Stream(rec, "stderr")
    try:
        fn(**kwargs)
    except Exception as exc:
        etype, value, tb = sys.exc_info()
        try:
            lines = shell.InteractiveTB.structured_traceback(etype, value, tb)
        except Exception:  # pragma: no cover - the formatter itself failed
            lines = [f"{etype.__name__}: {value}"]
        rec.outputs.append({"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc),
                            "traceback": list(lines)})
    finally:
        shell.display_pub, sys.stdout, sys.stderr = saved
    return rec.outputs


def live(fn: Callable[..., Any], **controls: Any) -> None:
    """Show ``fn(**values)`` under its controls, once, and redraw it whenever a control changes.

    ``controls`` maps ``fn``'s argument names to ipywidgets value widgets (their current values
    are the defaults). Text boxes are set to update on Enter or when they lose focus, never on
    every key. Headless (see :func:`headless`) the function runs once with the defaults and its
    output is ordinary cell output. Returns ``None`` in both cases, so a cell ending in
    ``live(...)`` shows the widget exactly once; keep your own references to the controls to
    read or set them from code (setting a value redraws, as moving the control does).
    """
    _check_controls(controls)
    if headless():
        fn(**{k: w.value for k, w in controls.items()})
        return None
    _display_widget(live_widget(fn, **controls))
    return None


def _check_controls(controls: dict[str, Any]) -> None:
    import ipywidgets as widgets

    for name, w in controls.items():
        if not isinstance(w, widgets.ValueWidget):
            raise TypeError(f"control {name!r} must be an ipywidgets value widget, got {type(w).__name__}")


def live_widget(fn: Callable[..., Any], *, draw_now: bool = True, **controls: Any) -> Any:
    """The widget :func:`live` shows, built and returned instead of displayed: the controls in a
    row above ``fn``'s output, drawn now (``draw_now``; else at the first change or
    ``.redraw()``) and redrawn on every change, whatever runs the code (for pages assembled from
    several such panels, e.g. :mod:`helpers.course.app`).

    The returned ``VBox`` has ``.redraw()`` (draw again with the current values), ``.drawn``
    (whether it has drawn yet) and ``.controls`` (the name -> widget mapping).
    """
    import ipywidgets as widgets

    _check_controls(controls)
    values = lambda: {k: w.value for k, w in controls.items()}  # noqa: E731
    for w in controls.values():
        if isinstance(w, (widgets.Text, widgets.Textarea)):
            w.continuous_update = False  # a change may cost a forward pass: not one per key
        if len(getattr(w, "description", "")) > 8 and hasattr(w.style, "description_width"):
            w.style.description_width = "initial"  # long labels in full, not cut off
    out = widgets.Output()
    box = widgets.VBox([widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap")), out])

    def redraw(_change: Any = None) -> None:
        out.outputs = tuple(_captured(fn, values()))
        box.drawn = True

    box.redraw, box.controls, box.drawn = redraw, dict(controls), False
    if draw_now:
        redraw()
    for w in controls.values():
        w.observe(redraw, names="value")
    return box


def _widget_bundle(widget: Any) -> dict[str, Any]:
    """The display bundle of ``widget`` (its view), on ipywidgets 8 and on 7 (which has no
    ``_repr_mimebundle_``: it displays itself from ``_ipython_display_``)."""
    own = getattr(widget, "_repr_mimebundle_", None)
    if callable(own):
        return own()
    bundle = {"application/vnd.jupyter.widget-view+json": {
        "version_major": 2, "version_minor": 0, "model_id": widget.model_id}}
    displayed = getattr(widget, "_handle_displayed", None)  # ipywidgets 7: the widget's on_displayed callbacks
    if callable(displayed):
        displayed()
    return bundle


def _display_widget(widget: Any) -> None:
    """Display a widget whose plain-text form, shown where its state is gone, says how to get it back."""
    from IPython.display import display

    bundle = _widget_bundle(widget)
    bundle["text/plain"] = RERUN_HINT
    display(bundle, raw=True)
