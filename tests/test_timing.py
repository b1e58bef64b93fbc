"""The course's time budget: each notebook's minutes are computed from the notebook itself, its
header states them, every core path fits in 30 minutes, and the agenda (built from the headers)
fits in three hours."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from helpers.course import timing

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks_t", ROOT / "scripts" / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


build_nb = _builder()


def md(text, *tags):
    return {"cell_type": "markdown", "source": text, "metadata": {"tags": list(tags)}}


def code(text, *tags):
    return {"cell_type": "code", "source": text, "metadata": {"tags": list(tags)}}


def test_estimate_counts_words_cells_predictions_and_exercises():
    words = " ".join(["word"] * 180)  # one minute of reading
    cells = [md(words), code("x = 1"), md("What?\n\nAnswer: this.", "predict"), md("a hint " * 50, "hint"),
             code("def f(): ...", "exercise"), code("f = check_f(f)"), md("Why?\nAnswer:\nbecause " * 30, "discuss"),
             md("## Going further\n\n" + words), code("y = 2"), code("def g(): ...", "exercise"), code("g = check(g)")]
    t = timing.estimate(cells, {"9.1": 6, "9.2": 4})
    assert t.core.words == 180 + 3 + 1 and t.core.cells == 1 and t.core.predictions == 1 and t.core.discussions == 1
    assert t.core.exercises == {"9.1": 6} and t.further.exercises == {"9.2": 4}  # the check cells cost nothing
    assert t.core.total == 1 + 1 + 1 + 1 + 6  # reading (rounded up with the rest), 0.5 cell + 1 + 1, 6
    assert t.further.cells == 1 and t.further.total == 6  # 182 words, one cell, 4 minutes: 5.5, rounded up
    assert "core path about 10 min" in timing.header_line(t)
    with pytest.raises(ValueError, match="without minutes"):
        timing.estimate(cells, {"9.1": 6})


def test_words_leave_markup_out():
    assert timing.words("**Bold** [a link](https://example.com/long/path) <b>x</b>") == 4
    assert timing.words("$x^2$ and $$\\sum_i c_i$$") == 1 + 1 + 4


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem[:2])
def test_every_core_path_fits_and_its_header_says_so(src):
    t = build_nb.notebook_timing(src)
    assert t.core.total <= timing.CORE_LIMIT, (src.stem, t.core.total)
    assert t.further.total > 0  # every notebook has a going-further part
    line = timing.header_line(t)
    for variant, target in build_nb.targets(src).items():
        nb = json.loads(target.read_text())
        header = "".join("".join(c["source"]) for c in nb["cells"][:3])
        assert line in header, (variant, src.stem)


def test_the_agenda_is_built_from_the_headers_and_fits_three_hours():
    parts = build_nb.guide_parts(SOURCES, "o/r")
    guide = (ROOT / "notebooks" / "README.md").read_text()
    assert parts["agenda"] in guide and parts["exercises"] in guide and parts["discussion"] in guide
    workshop = [s for s in SOURCES if int(s.stem[:2]) <= build_nb.WORKSHOP_LAST]
    timings = {src.stem: build_nb.notebook_timing(src) for src in SOURCES}
    _, total = timing.agenda({s.stem: timings[s.stem] for s in workshop}, {s.stem: s.stem for s in workshop})
    assert total <= 180, total
    for src in workshop:
        assert f"(header: {timings[src.stem].core.total} min)" in parts["agenda"]
    for src in set(SOURCES) - set(workshop):  # the extensions are listed after the three hours, with their minutes
        assert f"core path {timings[src.stem].core.total} min" in parts["agenda"].split("In all")[1]
