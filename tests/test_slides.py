"""Slides from executed notebooks: headings and key figures, no code, the diagram included."""

import base64
import json

import nbformat
import pytest

from helpers.course.slides import deck, slide_types, write_deck


def _executed():
    nb = nbformat.v4.new_notebook()
    title = nbformat.v4.new_markdown_cell("[Open in Colab](x)\n\n# 9 · A toy\n\n![d](attachment:d.svg)")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    title["attachments"] = {"d.svg": {"image/svg+xml": base64.b64encode(svg).decode()}}
    before = nbformat.v4.new_markdown_cell("### Before you start\n\n| a | b |")
    setup = nbformat.v4.new_code_cell("import os", outputs=[nbformat.v4.new_output("stream", name="stdout",
                                                                                    text="settings printed\n")])
    heading = nbformat.v4.new_markdown_cell("## A section\n\nSome prose.")
    prose = nbformat.v4.new_markdown_cell("More prose for the speaker.")
    fig = nbformat.v4.new_code_cell("fig.show()", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(b"\x89PNG fake").decode(), "text/plain": "<Figure>"})])
    said = nbformat.v4.new_code_cell("what_we_see('x')", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/markdown": "**What we see**\n\n* The figure shows a toy.", "text/plain": "x"})])
    hint = nbformat.v4.new_markdown_cell("<details><summary>Hint 1</summary>secret hint</details>")
    hint.metadata["tags"] = ["hint"]
    ex = nbformat.v4.new_code_cell("def double(x):\n    return 2 * x  # the solution")
    ex.metadata["tags"] = ["exercise"]
    check = nbformat.v4.new_code_cell("double = check_double(double)", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/html": "<div>PASSED</div>", "text/plain": "PASSED"})])
    nb.cells = [title, before, setup, heading, prose, fig, said, hint, ex, check]
    return nb


def test_slide_types_keep_headings_figures_and_text_and_leave_the_rest_out():
    nb = _executed()
    assert slide_types(nb) == ["slide", "skip", "skip", "slide", "notes", "subslide", "fragment", "skip", "skip",
                               "skip"]
    d = deck(nb)
    assert d.cells[2]["outputs"] == []  # printed lines are for the notebook reader
    assert d.cells[5]["metadata"]["slideshow"] == {"slide_type": "subslide"}


def test_a_deck_is_reveal_html_without_code(tmp_path):
    pytest.importorskip("nbconvert")
    path = tmp_path / "09_toy.ipynb"
    nbformat.write(_executed(), str(path))
    out = write_deck(path, tmp_path / "slides")
    html = out.read_text()
    assert out.name == "09_toy.slides.html" and "reveal" in html.lower()
    assert "A section" in html and "The figure shows a toy." in html and "data:image/png;base64" in html
    assert "data:image/svg+xml;base64" in html  # the attached diagram travels with the deck
    assert "the solution" not in html and "secret hint" not in html and "import os" not in html
    assert "settings printed" not in html


def test_notebook_1_has_the_diagram_for_its_deck():
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parent.parent / "notebooks" / "01_residual_decomposition.ipynb").read_text())
    attached = [c for c in nb["cells"] if "residual_decomposition.png" in c.get("attachments", {})]
    assert attached and slide_types(nb)[nb["cells"].index(attached[0])] == "slide"
