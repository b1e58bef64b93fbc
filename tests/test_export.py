"""helpers.course.export: notebooks hold each figure once (plotly's mimetype); their HTML pages
draw every figure offline with one copy of plotly.js."""

import json
import re

import nbformat
import plotly.graph_objects as go
import plotly.io as pio

from helpers.course.export import SERVER_CONFIG, PlotlyHTML, drop_plotly_snapshots, figure_html, main, to_html
from helpers.course.ui import PLOTLY_MIMETYPE


def _plotly_js_copies(html: str) -> int:
    """How many copies of the plotly.js bundle a page holds (each starts with its licence banner)."""
    banner = pio._html.get_plotlyjs()[:120]
    assert len(banner) == 120 and "plotly.js" in banner
    return html.count(banner)


def _notebook(path, n_figures=3):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i in range(n_figures):
        fig = go.Figure(go.Bar(x=[f"bar-{i}-a", f"bar-{i}-b"], y=[i, i + 1]))
        out = nbformat.v4.new_output("display_data", data={PLOTLY_MIMETYPE: fig.to_plotly_json()})
        nb.cells.append(nbformat.v4.new_code_cell(f"fig{i}.show()", outputs=[out]))
    html = nbformat.v4.new_output("display_data", data={"text/html": "<b>own html</b>", "text/plain": "x"})
    nb.cells.append(nbformat.v4.new_code_cell("display(HTML(...))", outputs=[html]))
    nbformat.write(nb, str(path))
    return path


def test_every_figure_is_drawn_and_plotly_js_is_in_the_page_once(tmp_path):
    page = to_html(_notebook(tmp_path / "nb.ipynb"))
    assert _plotly_js_copies(page) == 1
    assert page.count("Plotly.newPlot(") == 3
    for i in range(3):
        assert f"bar-{i}-a" in page  # each figure's own data
    assert "<b>own html</b>" in page
    assert not re.search(r"src=\"https?://cdn\.plot\.ly", page)  # offline: plotly.js is not fetched


def test_a_page_without_figures_carries_no_plotly_js(tmp_path):
    assert _plotly_js_copies(to_html(_notebook(tmp_path / "nb.ipynb", n_figures=0))) == 0


def test_outputs_with_their_own_html_are_left_alone(tmp_path):
    nb = nbformat.read(str(_notebook(tmp_path / "nb.ipynb", n_figures=1)), as_version=4)
    nb.cells[0].outputs[0].data["text/html"] = "<i>drawn already</i>"
    nb, _ = PlotlyHTML().preprocess(nb, {})
    assert nb.cells[0].outputs[0].data["text/html"] == "<i>drawn already</i>"


def test_figure_html_draws_from_the_mimetype_data():
    fig = go.Figure(go.Scatter(y=[3, 1, 2]), layout={"title": {"text": "a title"}})
    html = figure_html(fig.to_plotly_json(), include_plotlyjs=False)
    assert "Plotly.newPlot(" in html and "a title" in html and _plotly_js_copies(html) == 0


def test_the_command_writes_a_page_beside_the_notebook_or_into_a_folder(tmp_path, capsys):
    nb = _notebook(tmp_path / "nb.ipynb", n_figures=1)
    assert main([str(nb)]) == 0
    assert (tmp_path / "nb.html").exists()
    assert main([str(nb), "--out", str(tmp_path / "pages")]) == 0
    assert _plotly_js_copies((tmp_path / "pages" / "nb.html").read_text()) == 1
    assert "nb.html" in capsys.readouterr().out


def test_the_server_configuration_names_the_preprocessor(tmp_path):
    from traitlets.config import Config

    from helpers.course.export import write_server_config

    path = tmp_path / "jupyter_server_config.json"
    path.write_text(json.dumps({"ServerApp": {"port": 9999}, "HTMLExporter": {"exclude_input": True}}))
    assert main(["--server-config", str(tmp_path)]) == 0
    assert write_server_config(tmp_path) == path
    merged = json.loads(path.read_text())
    assert merged["ServerApp"] == {"port": 9999} and merged["HTMLExporter"]["exclude_input"] is True  # kept
    assert {k: {kk: merged[k][kk] for kk in v} for k, v in SERVER_CONFIG.items()} == SERVER_CONFIG
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(config=Config(SERVER_CONFIG))  # as jupyter_server builds it from its config
    assert any(isinstance(p, PlotlyHTML) for p in exporter._preprocessors)


def test_the_pre_save_hook_drops_the_snapshots_beside_plotly_data_only():
    from jupyter_server.services.contents.manager import ContentsManager
    from traitlets.config import Config

    fig = {"data": [{"type": "bar", "y": [1, 2]}], "layout": {}}
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("f", outputs=[
        nbformat.v4.new_output("display_data", data={PLOTLY_MIMETYPE: fig, "image/png": "iVBORw0KGgo="}),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "a picture"}),
        nbformat.v4.new_output("stream", name="stdout", text="x\n")])]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"w1": {
        "model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "data": {PLOTLY_MIMETYPE: fig, "image/png": "iVBORw0KGgo="}}]}}}}}
    model = {"type": "notebook", "content": json.loads(nbformat.writes(nb))}
    drop_plotly_snapshots(model=model, path="nb.ipynb", contents_manager=None)
    outs = model["content"]["cells"][0]["outputs"]
    assert list(outs[0]["data"]) == [PLOTLY_MIMETYPE]  # the figure's data, once
    assert "image/png" in outs[1]["data"]  # an image on its own stays
    state = model["content"]["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert list(state["w1"]["state"]["outputs"][0]["data"]) == [PLOTLY_MIMETYPE]
    nbformat.validate(nbformat.from_dict(model["content"]))
    drop_plotly_snapshots(model={"type": "file", "content": "text"}, path="a.txt")  # other files: untouched
    # the server's contents manager takes it from the configuration
    manager = ContentsManager(config=Config(SERVER_CONFIG))
    assert manager.pre_save_hook is drop_plotly_snapshots
