"""helpers.course.ui: front-end detection, widgets shown once and redrawn, batch runs that cannot hang."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# front-end detection
# ---------------------------------------------------------------------------------------------


def _fake_shell(parent):
    kernel = types.SimpleNamespace(get_parent=lambda channel=None: parent)
    return types.SimpleNamespace(kernel=kernel)


def _execute(allow_stdin):
    return {"header": {"msg_type": "execute_request"}, "content": {"code": "", "allow_stdin": allow_stdin}}


@pytest.mark.parametrize("shell, expected", [
    (None, False),                                                  # plain Python
    (types.SimpleNamespace(), False),                               # a terminal IPython: no kernel
    (_fake_shell(_execute(True)), True),                            # JupyterLab, Notebook, VS Code
    (_fake_shell(_execute(False)), False),                          # nbclient: papermill, nbconvert
    (_fake_shell({"header": {"msg_type": "execute_request"}, "content": {}}), False),  # field absent
    (_fake_shell({"header": {"msg_type": "comm_msg"}, "content": {}}), True),  # a widget callback
], ids=["no-ipython", "terminal", "lab", "nbclient", "no-field", "comm"])
def test_front_end_detection(monkeypatch, shell, expected):
    from helpers.course import ui

    monkeypatch.delenv("COURSE_HEADLESS", raising=False)
    monkeypatch.setattr(ui, "_shell", lambda: shell)
    assert ui.front_end() is expected
    assert ui.headless() is (not expected)


def test_colab_counts_as_a_front_end_and_the_environment_overrides(monkeypatch):
    from helpers.course import ui

    monkeypatch.setattr(ui, "_shell", lambda: _fake_shell(_execute(False)))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.delenv("COURSE_HEADLESS", raising=False)
    assert ui.front_end() and not ui.headless()
    monkeypatch.setenv("COURSE_HEADLESS", "1")
    assert ui.headless()
    monkeypatch.delitem(sys.modules, "google.colab")
    monkeypatch.setenv("COURSE_HEADLESS", "0")
    assert not ui.headless()


# ---------------------------------------------------------------------------------------------
# plotly's renderer and Colab's widget manager
# ---------------------------------------------------------------------------------------------


def _fake_colab(monkeypatch):
    """``google.colab`` as Colab's kernel has it imported, recording calls to its widget switch."""
    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("custom"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    return calls


def test_figures_are_written_once_as_plotly_data_outside_colab(monkeypatch):
    import plotly.graph_objects as go
    import plotly.io as pio

    from helpers.course import ui

    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    ui.setup_plotting()
    assert pio.renderers.default == "plotly_mimetype"
    bundle = pio.renderers._build_mime_bundle(go.Figure(go.Bar(y=[1, 2])).to_dict())
    assert list(bundle) == [ui.PLOTLY_MIMETYPE]  # the data once: no HTML copy, no plotly.js


@pytest.mark.parametrize("major, turned_on", [(7, False), (8, True)])
def test_colab_gets_its_renderer_and_the_widget_manager_its_ipywidgets_needs(monkeypatch, major, turned_on):
    import plotly.io as pio

    from helpers.course import ui

    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    calls = _fake_colab(monkeypatch)
    monkeypatch.setattr(ui, "_ipywidgets_major", lambda: major)
    ui.setup_plotting()
    assert pio.renderers.default == "colab"
    assert calls == (["custom"] if turned_on else [])


def test_widgets_display_without_repr_mimebundle_as_on_ipywidgets_7(monkeypatch):
    """ipywidgets 7 displays a widget from ``_ipython_display_``: the bundle is built the same way."""
    import ipywidgets as widgets

    from helpers.course import ui

    box = widgets.VBox([widgets.IntSlider()])
    shown = []
    monkeypatch.setattr(box, "_repr_mimebundle_", None)  # what ipywidgets 7's widgets lack
    monkeypatch.setattr(box, "_handle_displayed", lambda **kw: shown.append(kw), raising=False)
    bundle = ui._widget_bundle(box)
    assert bundle == {"application/vnd.jupyter.widget-view+json": {
        "version_major": 2, "version_minor": 0, "model_id": box.model_id}}
    assert shown == [{}]  # the widget's display callbacks ran, as display() would run them
    monkeypatch.undo()
    assert ui._widget_bundle(box)["application/vnd.jupyter.widget-view+json"]["model_id"] == box.model_id


# ---------------------------------------------------------------------------------------------
# live(): shown once, redrawn on change
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def shell(monkeypatch):
    """An IPython shell whose displays are recorded, with interactive widgets forced on."""
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    shown = []

    class Recording(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
            shown.append(data)

    monkeypatch.setattr(sh, "display_pub", Recording(shell=sh))
    monkeypatch.setenv("COURSE_HEADLESS", "0")
    sh.shown = shown
    return sh


def _output_widget(bundle):
    import ipywidgets as widgets
    from ipywidgets.widgets.widget import _instances  # the live widgets by model id

    box = _instances[bundle["application/vnd.jupyter.widget-view+json"]["model_id"]]
    controls, out = box.children
    assert isinstance(out, widgets.Output)
    return controls, out


def test_live_shows_the_widget_once_and_redraws_in_order(shell):
    import ipywidgets as widgets
    from IPython.display import HTML, display

    from helpers.course.ui import RERUN_HINT, live

    calls = []

    def fn(n, word):
        calls.append((n, word))
        print(f"n={n}")
        display(HTML(f"<b>{word * n}</b>"))
        print("after")

    slider, text = widgets.IntSlider(value=2, max=5), widgets.Text(value="ab")
    assert live(fn, n=slider, word=text) is None  # nothing for the cell to echo as Out[n]
    assert len(shell.shown) == 1
    bundle = shell.shown[0]
    assert bundle["text/plain"] == RERUN_HINT  # what a front end without the widget's state shows
    controls, out = _output_widget(bundle)
    assert list(controls.children) == [slider, text]
    assert text.continuous_update is False  # no forward pass per key
    assert calls == [(2, "ab")]
    assert [o["output_type"] for o in out.outputs] == ["stream", "display_data", "stream"]
    assert out.outputs[0]["text"] == "n=2\n" and out.outputs[2]["text"] == "after\n"
    assert out.outputs[1]["data"]["text/html"] == "<b>abab</b>"

    slider.value = 3
    text.value = "x"
    assert calls == [(2, "ab"), (3, "ab"), (3, "x")]
    assert out.outputs[0]["text"] == "n=3\n" and out.outputs[1]["data"]["text/html"] == "<b>xxx</b>"
    assert len(out.outputs) == 3  # replaced, not appended
    assert len(shell.shown) == 1  # redraws never display anything in the cell itself


def test_live_images_are_stored_as_base64_text(shell):
    import base64
    import io

    import ipywidgets as widgets
    from IPython.display import display
    from PIL import Image

    from helpers.course.ui import live

    def fn(size):
        display(Image.new("RGB", (size, size), (255, 0, 0)))

    size = widgets.IntSlider(value=3, description="image size")
    live(fn, size=size)
    assert size.style.description_width == "initial"  # a long label is shown in full
    _, out = _output_widget(shell.shown[0])
    png = out.outputs[0]["data"]["image/png"]
    assert isinstance(png, str)  # bytes would be sent to the page as a binary buffer, not an image
    img = Image.open(io.BytesIO(base64.b64decode(png)))
    assert img.size == (3, 3) and img.convert("RGB").getpixel((1, 1)) == (255, 0, 0)


def test_live_reports_an_error_inside_the_widget_and_keeps_working(shell):
    import ipywidgets as widgets

    from helpers.course.ui import live

    def fn(k):
        if k == 1:
            raise ValueError("k must not be 1")
        print(f"k={k}")

    slider = widgets.IntSlider(value=0)
    live(fn, k=slider)
    _, out = _output_widget(shell.shown[0])
    slider.value = 1
    (err,) = out.outputs
    assert err["output_type"] == "error" and err["ename"] == "ValueError" and err["evalue"] == "k must not be 1"
    assert any("k must not be 1" in line for line in err["traceback"])
    slider.value = 2
    assert out.outputs == ({"output_type": "stream", "name": "stdout", "text": "k=2\n"},)
    assert type(sys.stdout).__name__ != "_Stream" and type(sys.stderr).__name__ != "_Stream"  # restored


def test_live_rejects_plain_values():
    from helpers.course.ui import live

    with pytest.raises(TypeError, match="control 'a' must be an ipywidgets value widget"):
        live(lambda a: None, a=5)


# ---------------------------------------------------------------------------------------------
# figures that fit a notebook column
# ---------------------------------------------------------------------------------------------


def test_maps_figure_wraps_into_rows_that_fit_a_column():
    import torch

    from helpers.course.plots import maps_figure

    img = np.zeros((48, 64, 3), np.uint8)
    maps = {f"m{i}": torch.randn(8, 8) for i in range(5)}
    fig = maps_figure(img, maps, mask=np.zeros((48, 64), bool), title="t")  # 7 panels
    assert fig.layout.width <= 950
    rows = sorted({round(fig.layout[f"yaxis{'' if k == 0 else k + 1}"].domain[0], 6) for k in range(7)})
    assert len(rows) == 2  # 4 panels, then 3
    # every map sits on its own image, in its own panel, with square pixels
    heat = [t for t in fig.data if t.type == "heatmap"]
    imgs = [t for t in fig.data if t.type == "image"]
    assert len(heat) == 5 and len(imgs) == 7
    assert len({(t.xaxis, t.yaxis) for t in imgs}) == 7
    assert {(t.xaxis, t.yaxis) for t in heat} <= {(t.xaxis, t.yaxis) for t in imgs}
    for k in range(7):
        ax = fig.layout[f"yaxis{'' if k == 0 else k + 1}"]
        assert ax.scaleanchor == f"x{'' if k == 0 else k + 1}"
    # a short figure stays one row, as wide as its panels
    one = maps_figure(img, {"a": torch.randn(8, 8)}, panel_size=200)
    assert one.layout.width == 2 * 200 + 40
    with pytest.raises(ValueError, match="per_row"):
        maps_figure(img, maps, per_row=0)


# ---------------------------------------------------------------------------------------------
# batch runs: papermill without COURSE_HEADLESS
# ---------------------------------------------------------------------------------------------


def _widget_notebook(path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("k = 2", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import ipywidgets as widgets\n"
            "import plotly.graph_objects as go\n"
            "from helpers.course.ui import headless, live, setup_plotting\n"
            "setup_plotting()\n"
            "print('headless:', headless())"),
        nbformat.v4.new_code_cell(
            "def draw(n, word):\n"
            "    print(f'drawn {n} {word}')\n"
            "    go.Figure(go.Bar(x=list(range(n)), y=list(range(n)))).show()\n"
            "for i in range(3):\n"
            "    live(draw, n=widgets.IntSlider(value=k + i), word=widgets.Text(value='w'))"),
        nbformat.v4.new_code_cell("print('end')"),
    ]
    nbformat.write(nb, str(path))


def _run(src, dst, env_headless, monkeypatch):
    import papermill as pm

    if env_headless is None:
        monkeypatch.delenv("COURSE_HEADLESS", raising=False)
    else:
        monkeypatch.setenv("COURSE_HEADLESS", env_headless)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    limit = 120
    pm.execute_notebook(str(src), str(dst), parameters={"k": 3}, cwd=str(ROOT), progress_bar=False,
                        execution_timeout=limit, kernel_name="python3")
    import nbformat

    nb = nbformat.read(str(dst), as_version=4)  # multi-line strings joined
    # a lost reply only wakes the client at its time limit, and the cell then counts as done
    durations = [c.metadata.get("papermill", {}).get("duration") or 0 for c in nb.cells]
    assert max(durations) < limit / 2, durations
    return nb


@pytest.mark.slow
def test_plain_papermill_runs_render_widgets_statically(tmp_path, monkeypatch):
    src = tmp_path / "w.ipynb"
    _widget_notebook(src)
    for r in range(3):  # a hang would raise papermill's cell timeout instead of waiting
        nb = _run(src, tmp_path / f"out{r}.ipynb", None, monkeypatch)
        setup, cell, end = nb["cells"][2], nb["cells"][3], nb["cells"][4]
        assert "headless: True" in "".join(o.get("text", "") for o in setup["outputs"])
        texts = [o["text"] for o in cell["outputs"] if o["output_type"] == "stream"]
        assert "".join(texts) == "drawn 3 w\ndrawn 4 w\ndrawn 5 w\n"
        figs = [o for o in cell["outputs"] if "application/vnd.plotly.v1+json" in o.get("data", {})]
        assert [len(f["data"]["application/vnd.plotly.v1+json"]["data"][0]["x"]) for f in figs] == [3, 4, 5]
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell["outputs"])
        assert end["outputs"][0]["text"] == "end\n"


@pytest.mark.slow
def test_interactive_widgets_under_a_batch_client_do_not_hang(tmp_path, monkeypatch):
    """Forced interactive under nbclient (the client that mimics Output widgets): no race, no hang."""
    src = tmp_path / "w.ipynb"
    _widget_notebook(src)
    for r in range(3):
        nb = _run(src, tmp_path / f"out{r}.ipynb", "0", monkeypatch)
        cell = nb["cells"][3]
        views = [o for o in cell["outputs"] if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(views) == 3 and not [o for o in cell["outputs"] if o["output_type"] == "execute_result"]
        state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        outs = [s["state"]["outputs"] for s in state.values() if s["model_name"] == "OutputModel"]
        drawn = sorted(o["text"] for out in outs for o in out if o["output_type"] == "stream")
        assert drawn == ["drawn 3 w\n", "drawn 4 w\n", "drawn 5 w\n"]
        assert nb["cells"][4]["outputs"][0]["text"] == "end\n"


def test_image_panels_put_each_map_on_its_own_image():
    import torch

    from helpers.course.plots import image_panels

    imgs = [np.zeros((40, 40, 3), np.uint8) for _ in range(7)]
    fig = image_panels(imgs, [f"t{i}" for i in range(7)], maps=[torch.randn(4, 4)] * 6 + [None], per_row=3, title="x")
    heat = [t for t in fig.data if t.type == "heatmap"]
    pics = [t for t in fig.data if t.type == "image"]
    assert len(pics) == 7 and len(heat) == 6  # the seventh image has no map
    assert {(t.xaxis, t.yaxis) for t in heat} < {(t.xaxis, t.yaxis) for t in pics}
    assert [a.text for a in fig.layout.annotations] == [f"t{i}" for i in range(7)]
    rows = sorted({round(fig.layout[f"yaxis{'' if k == 0 else k + 1}"].domain[0], 6) for k in range(7)})
    assert len(rows) == 3 and fig.layout.width == 3 * 150 + 40
    assert len(image_panels(imgs[:2]).data) == 2  # no titles, no maps
    with pytest.raises(ValueError, match="titles"):
        image_panels(imgs, ["one"])
    with pytest.raises(ValueError, match="no images"):
        image_panels([])
