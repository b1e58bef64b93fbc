"""The explorer app as a visitor meets it: Voilà serving notebooks/app/explorer.ipynb, driven by a real Chromium.

The test starts Voilà on 127.0.0.1 exactly as ``python -m helpers.course.app`` does (same
options), on the offline default with a small gallery (``APP_IMAGES`` scenes) and an empty cache
of its own, so the page's first load also builds the head catalogue. In Debian's Chromium
(Playwright, the harness of ``tests/test_browser.py``) it checks that:

* the page shows the header and one tab per analysis, and no code;
* every tab draws its output (no error output, no stderr, every plotly figure a chart, no
  message about bad input);
* changing the first control of every tab redraws that tab's output; the time from the change
  to the redrawn output (figures drawn) is measured and printed per tab, as is the time from a
  tab's first click to its drawn output (a tab draws when it is first shown);
* an uploaded text file gets a clear message and an uploaded PNG joins the image lists and is
  drawn;
* no JavaScript error shows on the page (a resource the offline machine cannot fetch from another
  host, the page template's icon font, is let through, as in ``tests/test_browser.py``).

A screenshot per tab lands in ``build/browser/app_<tab>.png`` (``COURSE_BROWSER_OUT`` moves them).
The catalogue's build time (read off the page's header) and every response time are printed.

The check runs in the browser lane of tests/test_browser.py, first, on a page of the lane's
Chromium: from the session's start, beside the other tests, instead of in this test's turn.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import _early
import pytest
from _lab import PageErrors, _free_port
from test_browser import APP_CHECK, FINGERPRINT_JS, OUT_DIR, _change, _controls, _outcome, start_browser_lane  # noqa: F401

from helpers.course.app import ENV_CACHE, ENV_N_IMAGES, ENV_PRESET, NOTEBOOK, TABS, VOILA_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
APP_IMAGES = 120  # gallery of the served page: small, so its first load (catalogue included) is quick
LOAD_LIMIT_S = 240  # the first load: kernel, model, head terms, catalogue, every tab drawn
REDRAW_LIMIT_S = 60  # one redraw (the goal is under a second; measured, printed, not asserted here)
PANEL = ".widget-tab-contents > .widget-vbox:not(.lm-mod-hidden)"  # the tab on show
FAILURES = ('[data-mime-type="application/vnd.jupyter.stderr"], [data-mime-type="application/vnd.jupyter.error"], '
            'p[style*="b00020"]')  # tracebacks, stderr, the app's own messages about bad input
DRAWN_JS = "([el, before]) => { const fp = (" + FINGERPRINT_JS + """)(el);
  if (fp === before || !fp.trim()) return false;
  return [...el.querySelectorAll('.js-plotly-plot')].every(p => p.querySelector('svg.main-svg'));
}"""


class Voila:
    def __init__(self, base: str, proc: subprocess.Popen, log: Path):
        self.base, self.proc, self.log = base, proc, log


def _wait_port(port: int, proc: subprocess.Popen, log: Path, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None, f"Voila exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"Voila did not start:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


@contextlib.contextmanager
def _voila(tmp: Path):
    """Voilà serving the app as ``python -m helpers.course.app`` does, with a cache of its own in ``tmp``."""
    # looked up, not imported: Voilà runs in a process of its own, and this runs in the browser
    # lane's thread, where an import that makes loggers races pytest's reading of them
    if importlib.util.find_spec("voila") is None:
        pytest.skip("Voila is not installed (it is in requirements-pinned.txt)")
    data = tmp / "data"
    spec = data / "kernels" / "python3"  # the notebook's kernel is this environment's python
    spec.mkdir(parents=True)
    python = os.path.abspath(sys.executable)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (course)", "language": "python"}))
    env = {k: v for k, v in _early.environ().items()
           if not k.startswith(("JUPYTER", "CLIP_APP_")) and k not in ("COURSE_HEADLESS", "QUERY_STRING")}
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(data), JUPYTER_PATH=str(data),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_PLATFORM_DIRS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]),
               **{ENV_PRESET: "offline", ENV_N_IMAGES: str(APP_IMAGES), ENV_CACHE: str(tmp / "cache")})
    port = _free_port()
    log = tmp / "voila.log"
    before = hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest()
    with open(log, "w") as fh:
        proc = subprocess.Popen([python, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={port}",
                                 "--Voila.ip=127.0.0.1", *VOILA_ARGS],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        _wait_port(port, proc, log)
        yield Voila(f"http://127.0.0.1:{port}", proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest() == before, "serving the app changed its notebook"


def _failures(page) -> list[str]:
    return [t[:1500] for t in page.locator(FAILURES).all_inner_texts()]


def _drawn(page, output, before: str, limit_s: float) -> float:
    """Seconds until ``output`` differs from ``before`` with its figures drawn (polled every frame)."""
    t0 = time.perf_counter()
    page.wait_for_function(DRAWN_JS, arg=[output.element_handle(), before], polling="raf", timeout=limit_s * 1000)
    return time.perf_counter() - t0


def _png(size=(48, 36)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (30, 160, 60)).save(buf, format="PNG")
    return buf.getvalue()


def check_app(browser, tmp: Path) -> str:
    """Every check above on a page of ``browser`` (a Chromium context of the browser lane,
    tests/test_browser.py); the line the test prints."""
    with _voila(tmp) as voila:
        return _check_page(browser, voila)


def _check_page(browser, voila: Voila) -> str:
    page = browser.new_page()
    page.set_viewport_size({"width": 1400, "height": 1500})
    errors = PageErrors(page, voila.base)
    t0 = time.perf_counter()
    page.goto(voila.base + "/", timeout=LOAD_LIMIT_S * 1000)
    page.wait_for_function(f"() => document.querySelectorAll('.lm-TabBar-tab').length === {len(TABS)}",
                           timeout=LOAD_LIMIT_S * 1000)
    loaded_s = time.perf_counter() - t0
    assert page.locator(".lm-TabBar-tab").all_inner_texts() == list(TABS)
    header = page.get_by_text(re.compile(r"^Preset offline")).inner_text()
    built = dict(re.findall(r"(Head terms|catalogue) (computed in [0-9.]+ s|read from the cache in [0-9.]+ s)",
                            header))
    assert set(built) == {"Head terms", "catalogue"} and f"{APP_IMAGES} images" in header, header
    body = page.inner_text("body")
    assert "start_app" not in body and "import" not in body, "the page shows code"
    assert not _failures(page), "\n---\n".join(_failures(page))

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    times, shown, shots = {}, {}, []
    for name in TABS:
        t1 = time.perf_counter()
        page.locator(".lm-TabBar-tab", has_text=re.compile(rf"^{re.escape(name)}$")).click()
        panel = page.locator(PANEL)
        output = panel.locator(".widget-output").first
        page.wait_for_function("([el]) => el.innerText.trim().length > 0 && [...el.querySelectorAll("
                               "'.js-plotly-plot')].every(p => p.querySelector('svg.main-svg'))",
                               arg=[output.element_handle()], timeout=REDRAW_LIMIT_S * 1000)
        shown[name] = time.perf_counter() - t1  # a tab draws when it is first shown
        assert not _failures(page), f"{name}:\n" + "\n---\n".join(_failures(page))
        for plot in output.locator(".js-plotly-plot").all():  # inside the page's width
            width = plot.evaluate("el => el.querySelector('svg.main-svg').getBoundingClientRect().width")
            assert width <= 1400, f"{name}: a {width:.0f} px figure"
        controls = _controls(panel)
        assert controls, f"{name}: no controls"
        kind, el = controls[0]
        before = output.evaluate(FINGERPRINT_JS)
        what = _change(page, kind, el)
        times[name] = _drawn(page, output, before, REDRAW_LIMIT_S)
        assert not _failures(page), f"{name}: {what}:\n" + "\n---\n".join(_failures(page))
        shot = OUT_DIR / f"app_{re.sub(r'[^a-z]+', '_', name.lower()).strip('_')}.png"
        page.screenshot(path=str(shot))
        shots.append(shot.name)

    # uploads: a text file gets a message, an image joins the lists and the tab on show draws it
    with page.expect_file_chooser() as chooser:
        page.get_by_text("Upload an image").click()
    chooser.value.set_files([{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture\n"}])
    refused = page.get_by_text(re.compile(r"'notes\.txt' is not an image"))
    refused.wait_for(timeout=REDRAW_LIMIT_S * 1000)
    output = page.locator(PANEL).locator(".widget-output").first
    before = output.evaluate(FINGERPRINT_JS)
    t1 = time.perf_counter()
    with page.expect_file_chooser() as chooser:
        page.get_by_text("Upload an image").click()
    chooser.value.set_files([{"name": "leaf.png", "mimeType": "image/png", "buffer": _png()}])
    page.get_by_text(re.compile(r"^Added leaf\.png \(48 × 36 px\)")).wait_for(timeout=REDRAW_LIMIT_S * 1000)
    times["upload (Layer view)"] = (time.perf_counter() - t1) + _drawn(page, output, before, REDRAW_LIMIT_S)
    chosen = page.locator(PANEL).locator("select").first.evaluate("s => s.selectedOptions[0].textContent")
    chosen = chosen.replace("\xa0", " ")  # the list shows spaces as non-breaking ones
    assert chosen == "upload: leaf.png", chosen
    assert not _failures(page), "\n---\n".join(_failures(page))
    assert not errors.errors, "JavaScript errors:\n" + "\n".join(errors.errors)
    page.close()
    return (f"explorer app: first load {loaded_s:.1f} s (head terms {built['Head terms']}, catalogue "
            f"{built['catalogue']}); control change -> redrawn output: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
            + "; a tab's first showing -> drawn: " + ", ".join(f"{k} {v:.2f} s" for k, v in shown.items())
            + f"; screenshots in {OUT_DIR}: {', '.join(shots)}")


@pytest.mark.early("start_browser_lane")
def test_explorer_app_in_chromium(tmp_path_factory, capsys):
    """Checked in the browser lane (its first check, in the lane's Chromium), beside the other tests."""
    said = _outcome(APP_CHECK, tmp_path_factory)
    with capsys.disabled():
        print(f"\n{said}")
