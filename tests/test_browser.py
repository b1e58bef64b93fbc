"""The course as a learner meets it: JupyterLab from this environment, driven by a real Chromium.

For every notebook (a throw-away copy, so autosave never touches the repository's files) the
test opens it in JupyterLab, runs all cells from the Run menu, waits until the kernel is idle
and no prompt shows ``[*]``, then checks what the page shows:

* no error output and no stderr box;
* every plotly figure rendered as a chart (``.jp-RenderedPlotly`` with an SVG inside), no
  wider than the output column;
* every ``helpers.course.ui.live`` widget rendered once (no ``Out[n]`` copy), and changing one of its
  controls (slider, dropdown, text box, ...) changes what it shows;
* no JavaScript error on the page;
* saved and reopened on a fresh kernel, the notebook shows its widgets again from the widget
  state saved with it (binder/lab-settings.json), never "Error displaying widget";
* the saved notebook, outputs and widget state included, weighs at most
  ``helpers.course.export.SIZE_LIMIT_BYTES`` (1.5 MB), and JupyterLab's own HTML export draws
  every figure with one copy of plotly.js (the server configured as ``scripts/lab.sh`` configures
  it: ``helpers.course.export.SERVER_CONFIG``).
* generated prose shows as prose: no f-string source of a *What we see* cell is visible; the
  parameters cell does not run off the right edge; no image is broken (offline, the Colab link is
  text); notebook 3's log axis is labelled with the sizes tried, and its strip of images says how
  many of them show what its text names.

The learner build runs in the same JupyterLab (``test_learner_build_in_jupyterlab``): notebook 1 as
shipped (every check shows *not done*), then a wrong answer typed into exercise 1.1, whose check
must show a marked failure naming the concept and whose next line must say that the reference
stands in for the learner's function.

The notebooks open one after another in one JupyterLab page (``tests/_lab.py``, ``Pages``), each
after the one before was closed and its kernel shut down, as from the file browser; reopening a
saved notebook is the same. A screenshot per notebook lands in ``build/browser/`` (the path is
printed). JupyterLab and Chromium come from tests/_lab.py (one server for the test session);
without Chromium, and without a way to install it, the test is skipped with the reason.

The copies run with smaller parameters than the notebooks' defaults (``SMALL_RUNS``, as the
learner build's runs: this test checks what the page shows, the figures are
tests/test_notebooks.py's); ``COURSE_BROWSER_PARAMS`` (JSON) sets parameters for every notebook
instead, ``{}`` runs the notebooks as they are. ``COURSE_BROWSER_OUT`` moves the screenshots.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path

import _early
import pytest
from _lab import menu as _menu
from _small import SMALL_RUNS

from helpers.course.export import SIZE_LIMIT_BYTES
from helpers.course.main_job import notebook_paths

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = notebook_paths()
LEARNER = notebook_paths(ROOT / "notebooks" / "learner")[:1]  # notebook 1 as learners get it
RUN_LIMIT_S = 420  # one notebook's Run All
UPDATE_LIMIT_S = 120  # one widget's redraw
OUT_DIR = Path(os.environ.get("COURSE_BROWSER_OUT", ROOT / "build" / "browser"))
PLOTLY = "application/vnd.plotly.v1+json"
LIVE = ".jp-OutputArea-output:has(> .widget-vbox > .widget-output)"  # a helpers.course.ui.live() widget


def _browser_params(path: Path) -> dict:
    text = os.environ.get("COURSE_BROWSER_PARAMS", "").strip()
    return json.loads(text) if text else SMALL_RUNS[path.stem[:2]]


def _copy_notebook(src: Path, dst: Path, params: dict) -> None:
    """Copy a notebook; the parameters its parameters cell defines are set after it, as papermill does."""
    nb = json.loads(src.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    mine = {k: v for k, v in params.items() if re.search(rf"^{re.escape(k)}\s*=", source, re.M)}
    if mine:
        cell["source"] = source.rstrip("\n") + "\n# smaller runs for the browser test\n" + "".join(
            f"{k} = {v!r}\n" for k, v in mine.items())
    dst.write_text(json.dumps(nb, indent=1) + "\n")


def _copy_notebooks(lab) -> Path:
    """The notebooks' copies in the lab's folder (``notebooks/``, the learner build's in ``notebooks/learner/``)."""
    folder = lab.work / "notebooks"
    folder.mkdir(exist_ok=True)
    for path in NOTEBOOKS:
        _copy_notebook(path, folder / path.name, _browser_params(path))
    (folder / "learner").mkdir(exist_ok=True)
    for path in LEARNER:
        _copy_notebook(path, folder / "learner" / path.name, _browser_params(path))
    return folder


def _hashes() -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in NOTEBOOKS + LEARNER}


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------


def _open(pages, name: str):
    return pages.open(f"notebooks/{name}")


def _nb(page):
    """The notebook on show (other tabs' outputs are not this notebook's)."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first


# the prompts and the failures of the notebook on show, read in one call: a notebook's run is
# polled every second, and a text search over its whole page (plotly figures included) each time
# kept Chromium busy; here the prompts' text is read without a layout, and only a page that holds
# the words "Error displaying widget" is searched for them
STATE_JS = """() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  if (!nb) return {prompts: [], failures: []};
  const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent);
  const failures = [...nb.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], ' +
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')].map(e => e.innerText.slice(0, 1500));
  if (nb.textContent.includes('Error displaying widget')) {
    const walk = document.createTreeWalker(nb, NodeFilter.SHOW_TEXT);
    for (let t = walk.nextNode(); t; t = walk.nextNode())
      if (t.data.includes('Error displaying widget')) failures.push('widget: ' + t.parentElement.innerText);
  }
  return {prompts, failures};
}"""


def _state(page) -> dict:
    return page.evaluate(STATE_JS)


def _prompts(page) -> list[str]:
    return _state(page)["prompts"]


def _failures(page) -> list[str]:
    """Texts of error outputs, stderr boxes and widgets that could not be displayed."""
    return _state(page)["failures"]


def _wait_idle(page, lab, limit: float, settle: int = 3) -> list[str]:
    """Until the kernel is idle and no prompt shows [*], `settle` polls in a row.

    Returns the failures (see :func:`_failures`) seen on the way, even those gone since.
    """
    deadline, calm, seen = time.monotonic() + limit, 0, []
    while calm < settle:
        state = _state(page)
        busy = any("*" in p for p in state["prompts"]) or not lab.kernels_idle()
        calm = 0 if busy else calm + 1
        seen += [f for f in state["failures"] if f not in seen]
        assert time.monotonic() < deadline, f"still running after {limit} s; prompts {state['prompts']}; {seen}"
        time.sleep(1)
    return seen


def _save(page, path: Path) -> dict:
    """Save from the File menu and return the notebook once the file is written and settled.

    (The menu, not Ctrl+S: with the focus in a widget's text box the shortcut never reaches
    JupyterLab.)
    """
    before = path.stat().st_mtime_ns
    _menu(page, "File", "Save Notebook")
    deadline, last = time.monotonic() + 60, None
    while True:
        page.wait_for_timeout(500)
        try:
            text = path.read_text()
            if path.stat().st_mtime_ns != before and text == last:
                return json.loads(text)
            last = text
        except (OSError, json.JSONDecodeError):
            last = None
        assert time.monotonic() < deadline, "the notebook was not saved"


FINGERPRINT_JS = """el => {
  const parts = [el.innerText];
  el.querySelectorAll('img').forEach(i => parts.push('img ' + i.src.length + ' ' + i.src.slice(-80)));
  el.querySelectorAll('svg.main-svg').forEach(s => parts.push(s.textContent));
  el.querySelectorAll('svg image').forEach(i => { const h = i.getAttribute('href') || '';
                                                   parts.push('svgimg ' + h.length + ' ' + h.slice(-80)); });
  return parts.join('\\n');
}"""

CONTROL_KINDS = (  # (kind, the control's own class)
    ("text", "widget-text"),
    ("dropdown", "widget-dropdown"),
    ("select-multiple", "widget-select-multiple"),
    ("range slider", "widget-slider"),
    ("slider", "widget-slider"),
    ("checkbox", "widget-checkbox"),
)


def _controls(widget) -> list[tuple[str, object]]:
    """The controls of a live() widget, each with its kind."""
    found = []
    for el in widget.locator(".widget-hbox").first.locator(":scope > .jupyter-widgets").all():
        classes = el.get_attribute("class") or ""
        if "widget-slider" in classes:
            kind = "range slider" if el.locator(".noUi-handle").count() == 2 else "slider"
        else:
            kind = next((k for k, c in CONTROL_KINDS if c in classes.split()), None)
            if kind == "text" and el.locator("input[type=number]").count():
                kind = "number"  # IntText / FloatText: a number box
        if kind:
            found.append((kind, el))
    return found


def _change(page, kind: str, el) -> str:
    """Change one control as a person would; returns what was done."""
    if kind == "text":
        box = el.locator("input")
        new = "a green object" if box.input_value() != "a green object" else "a blue object"
        box.fill(new)
        box.press("Enter")  # text boxes update on Enter, not on every key
        return f"typed {new!r}"
    if kind == "number":
        box = el.locator("input")
        low, high = (box.get_attribute(a) for a in ("min", "max"))
        now = int(float(box.input_value() or 0))
        new = now + 1 if high is None or now + 1 <= float(high) else now - 1
        assert low is None or new >= float(low), f"a number box with nowhere to go: {now} in [{low}, {high}]"
        box.fill(str(new))
        box.press("Enter")
        return f"set {now} to {new}"
    if kind in ("dropdown", "select-multiple"):
        select = el.locator("select")
        options = select.locator("option").all_inner_texts()
        chosen = select.evaluate("s => [...s.selectedOptions].map(o => o.textContent)")
        if kind == "dropdown":
            other = next(o for o in options if o not in chosen)
            select.select_option(label=other)
            return f"chose {other!r}"
        pick = [o for o in options if o not in chosen][:1] or options[:1]
        select.select_option(label=pick)
        return f"selected {pick}"
    if kind in ("slider", "range slider"):
        handle = el.locator(".noUi-handle").first
        before = el.locator(".widget-readout").inner_text()
        handle.focus()
        handle.press("ArrowRight")
        if el.locator(".widget-readout").inner_text() == before:  # already at the top
            handle.press("ArrowLeft")
        return f"moved {before!r} to {el.locator('.widget-readout').inner_text()!r}"
    if kind == "checkbox":
        el.locator("input").click()
        return "toggled"
    raise AssertionError(kind)


VISIBLE_SOURCE_JS = """(nb, needle) => [...nb.querySelectorAll('.jp-CodeCell .cm-content')]
  .filter(e => e.offsetParent !== null && e.textContent.includes(needle)).length"""

BROKEN_IMAGES_JS = """nb => [...nb.querySelectorAll('.jp-RenderedMarkdown img, .jp-RenderedHTMLCommon img')]
  .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 80))"""

PARAMETERS_OVERFLOW_JS = """nb => [...nb.querySelectorAll('.jp-CodeCell')]
  .filter(c => (c.querySelector('.cm-content') || {}).textContent?.includes('preset = "offline"'))
  .map(c => { const s = c.querySelector('.cm-scroller'); return [s.scrollWidth, s.clientWidth]; })"""


def _page_reads_as_prose(page, name: str) -> None:
    """Generated prose shows as text, the parameters fit, no image is broken (see the module
    docstring); notebook 3's axis and strip say what they show."""
    nb = _nb(page)
    shown = nb.evaluate(VISIBLE_SOURCE_JS, "what_we_see(")
    assert shown == 0, f"{shown} cells show the f-string source of their generated prose"
    for width, room in nb.evaluate(PARAMETERS_OVERFLOW_JS):
        assert width <= room + 1, f"the parameters cell is {width} px wide in a {room} px editor"
    page.wait_for_timeout(500)
    broken = nb.evaluate(BROKEN_IMAGES_JS)
    assert not broken, f"broken images: {broken}"
    if name.startswith("03_"):
        plots = nb.locator(".jp-RenderedPlotly")
        ticks = None
        for i in range(plots.count()):
            if "Accuracy with the last" in " ".join(plots.nth(i).locator(".gtitle").all_text_contents()):
                ticks = plots.nth(i).locator(".xtick text").all_text_contents()
        assert ticks, "notebook 3's accuracy figure is missing"
        assert all(re.fullmatch(r"\d+", t) for t in ticks) and ticks == sorted(ticks, key=int), ticks
        titles = " ".join(nb.locator(".jp-RenderedPlotly .gtitle").all_text_contents())
        assert re.search(r"writes most along '[^']+' \(\d of 7 show", titles), titles[:500]


# ---------------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------------

def _check_notebook(path: Path, lab, pages, notebooks_in_lab: Path) -> str:
    """Every check of the module's docstring on one notebook; returns what it did, in one line."""
    copy = notebooks_in_lab / path.name
    cells = json.loads(copy.read_text())["cells"]
    n_live = sum(1 for c in cells if c["cell_type"] == "code" and re.search(r"^live\(", "".join(c["source"]), re.M))
    t0 = time.monotonic()
    page, errors = _open(pages, path.name)
    _menu(page, "Run", "Run All Cells")
    page.wait_for_timeout(2000)
    seen = _wait_idle(page, lab, RUN_LIMIT_S)
    ran_s = time.monotonic() - t0

    failures = _failures(page)
    assert not failures, "error outputs or stderr:\n" + "\n---\n".join(failures)
    assert not seen, "error outputs or stderr while the notebook ran:\n" + "\n---\n".join(seen)
    prompts = _prompts(page)
    assert all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts), f"cells not run: {prompts}"
    _page_reads_as_prose(page, path.name)

    # plotly: every figure a chart, inside the column
    nb = _nb(page)
    plots = nb.locator(".jp-RenderedPlotly")
    assert plots.count() >= 1, "no plotly figure rendered"
    deadline = time.monotonic() + 30  # plotly draws asynchronously
    while plots.evaluate_all("els => els.filter(e => !e.querySelector('svg.main-svg')).length"):
        if time.monotonic() > deadline:
            bad = plots.evaluate_all("els => els.filter(e => !e.querySelector('svg.main-svg'))"
                                     ".map(e => e.outerHTML.slice(0, 400))")
            raise AssertionError(f"{len(bad)} of {plots.count()} figures are no chart: {bad}; "
                                 f"page errors {errors.errors}")
        page.wait_for_timeout(500)
    for i in range(plots.count()):
        plot = plots.nth(i)
        title = plot.locator("svg.main-svg .gtitle").all_text_contents()
        widths = plot.evaluate("el => [el.parentElement.clientWidth, Math.max(...[...el.querySelectorAll("
                               "'svg.main-svg')].map(s => s.getBoundingClientRect().width))]")
        assert widths[1] <= widths[0] + 1, f"figure {i} {title} is {widths[1]:.0f} px in a {widths[0]} px column"
    # ... and every figure the notebook holds is one of them (none fell back to HTML or JSON)
    held = sum(1 for c in _save(page, copy)["cells"] for o in c.get("outputs", []) if PLOTLY in o.get("data", {}))
    top_level = plots.evaluate_all("els => els.filter(e => !e.closest('.widget-output')).length")
    assert top_level == held, f"{top_level} charts on the page, {held} plotly figures in the saved notebook"

    # widgets: each live() widget once, no Out[n] copy
    live_widgets = nb.locator(LIVE).all()
    assert len(live_widgets) == n_live, f"{len(live_widgets)} interactive widgets shown, {n_live} live() cells"
    assert nb.locator(".jp-OutputArea-executeResult .jupyter-widgets").count() == 0, "a widget shown twice"
    assert not nb.get_by_text(re.compile(r"^(VBox|HBox)\(")).count(), "a widget's text form is shown"
    changed = []
    for w in live_widgets:
        controls = _controls(w)
        assert controls, "a live() widget without controls"
        # its first control, and its first text box too
        picked = controls[:1] + [c for c in controls[1:] if c[0] == "text"][:1]
        output = w.locator(".widget-output").first
        for kind, el in picked:
            before = output.evaluate(FINGERPRINT_JS)
            assert before.strip(), "a live() widget shows nothing"
            el.scroll_into_view_if_needed()
            what = _change(page, kind, el)
            deadline = time.monotonic() + UPDATE_LIMIT_S
            while output.evaluate(FINGERPRINT_JS) == before:
                assert not _failures(page), "\n".join(_failures(page))
                assert time.monotonic() < deadline, f"{kind}: {what}, but the output did not change"
                page.wait_for_timeout(500)
            seen = _wait_idle(page, lab, UPDATE_LIMIT_S, settle=2)
            assert not seen, f"{kind}: {what}:\n" + "\n---\n".join(seen)
            changed.append(f"{kind} ({what})")
    assert not _failures(page), "\n".join(_failures(page))

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    shot = OUT_DIR / f"{path.stem}.png"
    if live_widgets:
        live_widgets[-1].evaluate("el => el.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(500)
    page.screenshot(path=str(shot))
    assert not errors.errors, "JavaScript errors:\n" + "\n".join(errors.errors)

    # saved and reopened on a fresh kernel: the widgets come back from their saved state
    saved = _save(page, copy)
    assert not n_live or saved.get("metadata", {}).get("widgets"), "widget state was not saved with the notebook"
    # a learner's saved notebook is small: each figure's data once, no plotly.js inside
    saved_bytes = copy.stat().st_size
    assert saved_bytes <= SIZE_LIMIT_BYTES, f"the saved notebook weighs {saved_bytes / 1e6:.2f} MB"
    # JupyterLab's HTML export draws every figure outside widgets, with plotly.js once
    exported = lab.get(f"/nbconvert/html/notebooks/{path.name}?download=false", timeout=120)
    from plotly.offline import get_plotlyjs

    assert exported.count("Plotly.newPlot(") == held, "a figure is missing from JupyterLab's HTML export"
    assert exported.count(get_plotlyjs()[:120]) == (1 if held else 0), "plotly.js once a page"
    page, errors = _open(pages, path.name)  # the saved file, on a fresh kernel
    # the widget manager loads the saved state after the kernel connects: until then a view may
    # briefly read "model not found"; what counts is the page once it has settled (on a busy machine
    # that took more than a minute once: the wait ends as soon as it has)
    deadline = time.monotonic() + UPDATE_LIMIT_S
    while True:
        broken = _nb(page).get_by_text("Error displaying widget").count()
        restored = _nb(page).locator(LIVE).count()
        if not broken and restored == n_live or time.monotonic() > deadline:
            break
        page.wait_for_timeout(500)
    assert not broken, f"a reopened notebook shows {broken} widget errors"
    assert restored == n_live, f"{restored} of {n_live} widgets came back after reopening"
    assert not errors.errors, "JavaScript errors after reopening:\n" + "\n".join(errors.errors)
    pages.close_documents()
    return (f"{path.stem}: ran in {ran_s:.0f} s in JupyterLab; changed {', '.join(changed) or 'no widget'}; "
            f"saved {saved_bytes / 1e6:.2f} MB; screenshot {shot}")


WRONG_LINEARISE = '''def linearise(pieces, sigma, gamma, proj):
    centred = pieces - pieces.mean(-1, keepdim=True)
    own = centred.std(-1, unbiased=False, keepdim=True)  # each piece's own sigma
    return (centred / own * gamma) @ proj
'''


def _check_learner(path: Path, lab, pages, notebooks_in_lab: Path) -> str:
    """The learner build as shipped (every check *not done*, the notebook runs to its end), then
    one wrong answer typed into exercise 1.1: a marked failure that names the concept, and the
    next line says that the reference stands in for the learner's function."""
    name = f"learner/{path.name}"
    page, errors = _open(pages, name)
    _menu(page, "Run", "Run All Cells")
    page.wait_for_timeout(2000)
    seen = _wait_idle(page, lab, RUN_LIMIT_S)
    assert not seen and not _failures(page), "\n".join(seen + _failures(page))
    nb = _nb(page)
    n_ex = sum("exercise" in c.get("metadata", {}).get("tags", []) for c in json.loads(path.read_text())["cells"])
    todo = nb.locator(".course-verdict-not-done")
    assert todo.count() == n_ex, f"{todo.count()} 'not done' verdicts for {n_ex} exercises"
    assert "\u2026 NOT DONE" in todo.first.inner_text()
    assert nb.evaluate(VISIBLE_SOURCE_JS, "what_we_see(") == 0

    # type a wrong answer into exercise 1.1 and run it and its check
    cell = nb.locator(".jp-CodeCell").filter(has_text="def linearise(pieces, sigma, gamma, proj)").first
    cell.scroll_into_view_if_needed()
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(WRONG_LINEARISE)
    page.keyboard.press("Escape")  # command mode, the edited cell selected
    trace = []
    # the exercise, its hidden solution (markdown), then its check: each run selects the next cell
    for _ in range(3):
        trace.append(nb.locator(".jp-Cell.jp-mod-active").first.inner_text()[:40])
        _menu(page, "Run", "Run Selected Cell")
        page.wait_for_timeout(1000)
        _wait_idle(page, lab, UPDATE_LIMIT_S)
    seen = _wait_idle(page, lab, UPDATE_LIMIT_S)
    assert not seen, "\n".join(seen)
    wrong = nb.locator(".course-verdict-wrong")
    deadline = time.monotonic() + 30
    while not wrong.count() and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    if wrong.count() != 1:
        verdicts = nb.locator(".course-verdict").evaluate_all("els => els.map(e => e.className + ': ' + e.innerText)")
        typed = cell.locator(".cm-content").inner_text()
        raise AssertionError(f"the wrong answer shows no failed verdict; verdicts {verdicts}; the cell reads {typed!r}; "
                             f"trace {trace}")
    text = wrong.first.inner_text()
    assert "\u2718 NOT YET" in text and "each piece divided by its own σ" in text and "one σ per image" in text, text
    box = wrong.first.bounding_box()
    column = wrong.first.evaluate("el => el.parentElement.getBoundingClientRect().width")
    assert box["width"] <= column + 1, "the verdict runs off its column"
    check_cell = nb.locator(".jp-CodeCell:has(.course-verdict-wrong)").first
    assert "the reference linearise (standing in for yours: exercise 1.1 is not right yet)" in check_cell.inner_text()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    shot = OUT_DIR / "learner-01-wrong-answer.png"
    wrong.first.evaluate("el => el.scrollIntoView({block: 'center'})")
    page.screenshot(path=str(shot))
    assert not errors.errors, "JavaScript errors:\n" + "\n".join(errors.errors)
    pages.close_documents()
    return f"learner {path.stem}: {n_ex} exercises not done, a wrong 1.1 diagnosed; screenshot {shot}"


# ---------------------------------------------------------------------------------------------
# the lane: one JupyterLab and one Chromium in a thread of their own, from the session's start
# ---------------------------------------------------------------------------------------------


APP_CHECK = "test_explorer_app_in_chromium"  # tests/test_app.py's, run first in this lane


def _browser_lane(tmp_path_factory, names: set[str] | None = None) -> dict:
    """The explorer app's check (tests/test_app.py) when ``names`` has it, then the checks of
    every notebook named in ``names`` (all when ``None``) and the learner build's, in this
    thread (Playwright's objects stay in the thread that made them): ``{name: the line it
    printed, or what it raised}``, and whether the repository's notebooks stayed untouched."""
    from _lab import chromium_context, start_lab

    before = _hashes()
    out: dict = {}
    try:
        tmp = tmp_path_factory.mktemp("browser-lane")
        with chromium_context(tmp / "chromium-profile") as browser:
            if names is None or APP_CHECK in names:
                from test_app import check_app

                (tmp / "app").mkdir()
                try:
                    out[APP_CHECK] = check_app(browser, tmp / "app")
                except BaseException as exc:  # kept for the app's test (a skip included)
                    out[APP_CHECK] = exc
            notebook_checks = {path.stem for path in NOTEBOOKS} | {f"learner-{path.stem}" for path in LEARNER}
            if names is None or names & notebook_checks:
                with start_lab(tmp / "lab") as lab:
                    out.update(_notebook_checks(browser, lab, names))
    except BaseException as exc:  # no JupyterLab or no Chromium: every test says why
        out["lane"] = exc
    out["untouched"] = _hashes() == before
    return out


def _notebook_checks(browser, lab, names: set[str] | None) -> dict:
    """The notebooks' checks named in ``names`` (all when ``None``), then the learner build's,
    on one JupyterLab page."""
    from _lab import Pages

    out: dict = {}
    folder = _copy_notebooks(lab)
    pages = Pages(browser, lab)  # one JupyterLab page for them all
    jobs = [(path.stem, _check_notebook, path) for path in NOTEBOOKS]
    jobs += [(f"learner-{path.stem}", _check_learner, path) for path in LEARNER]
    for name, check, path in jobs:
        if names is not None and name not in names:
            continue
        try:
            out[name] = check(path, lab, pages, folder)
        except BaseException as exc:  # kept for the notebook's test (a skip included)
            out[name] = exc
            with contextlib.suppress(Exception):
                pages.reset()  # a check stopped half-way: the next notebook gets a fresh page
    return out


def start_browser_lane(tmp_path_factory, items=()) -> None:
    """The lane, started at the session's start (the ``early`` mark, tests/_early.py) for the
    session's browser tests: the browser runs go on beside the other tests and the notebook
    kernel's runs."""
    names = {item.callspec.id if hasattr(item, "callspec") else item.name for item in items}
    _early.import_here(["playwright.sync_api"])  # the lane's thread uses it
    # at the tests' priority: the lane is long (one notebook after another), and run nicer it
    # stretches to the session's end (3 steps nicer, it ended at 620 s instead of 487 s)
    _early.job("browser", _browser_lane, tmp_path_factory, names, nice=False)


def _lane_result(tmp_path_factory) -> dict:
    return _early.job("browser", _browser_lane, tmp_path_factory).result()


def _outcome(name: str, tmp_path_factory) -> str:
    out = _lane_result(tmp_path_factory)
    found = out.get("lane", out.get(name))
    if isinstance(found, BaseException):
        raise found
    assert found is not None, f"the browser lane did not reach {name}"
    return found


@pytest.mark.early("start_browser_lane")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_in_jupyterlab(path, tmp_path_factory, capsys):
    said = _outcome(path.stem, tmp_path_factory)
    with capsys.disabled():
        print(f"\n{said}")


@pytest.mark.early("start_browser_lane")
@pytest.mark.parametrize("path", LEARNER, ids=lambda p: f"learner-{p.stem}")
def test_learner_build_in_jupyterlab(path, tmp_path_factory, capsys):
    said = _outcome(f"learner-{path.stem}", tmp_path_factory)
    with capsys.disabled():
        print(f"\n{said}")


@pytest.mark.early("start_browser_lane")
def test_repository_notebooks_untouched(tmp_path_factory):
    out = _lane_result(tmp_path_factory)
    if isinstance(out.get("lane"), BaseException):
        raise out["lane"]
    assert out["untouched"], "the repository's notebooks changed while JupyterLab ran the copies"
