"""JupyterLab and Chromium for the browser tests: ``start_lab`` (one JupyterLab server) and
``chromium_context`` (one headless Chromium), both context managers; tests/test_browser.py runs
them in a thread of its own, tests/test_app.py beside its Voilà server.

The server runs this environment's python as the notebooks' kernel, with the course's own
settings (binder/lab-settings.json) and a few for testing, in a folder of its own
(``lab.work``): a test copies what it opens there and opens it with ``lab.url(relative path)``.
Chromium is Debian's (``apt-get install -y chromium fonts-liberation``; ``.ci/run`` installs it
when missing), driven by Playwright through ``executable_path``, no browser download. Without
Chromium and without a way to install it, a test that asks for it is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import _early
import pytest

from helpers.course.export import write_server_config

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 3000}  # tall, for the screenshots
LAB_SETTINGS = ROOT / "binder" / "lab-settings.json"  # the course's own JupyterLab settings
TEST_SETTINGS = {
    # every cell stays in the page, so each output can be inspected without scrolling to it
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    # offline: no news or update checks
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def _find_chromium() -> str | None:
    for name in (os.environ.get("COURSE_CHROMIUM", ""), "chromium", "chromium-browser"):
        found = name and shutil.which(name)
        if found:
            return found
    return None


def chromium() -> str:
    """Debian's Chromium; installed with apt-get when missing and possible, else a skip."""
    found = _find_chromium()
    if found:
        return found
    apt = shutil.which("apt-get")
    if not apt or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "run `apt-get install -y chromium fonts-liberation`, or set COURSE_CHROMIUM")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = [apt, "install", "-y", "-qq", "chromium", "fonts-liberation"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # fresh machines have no package lists yet
        subprocess.run([apt, "update", "-qq"], env=env, capture_output=True, text=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    found = _find_chromium()
    assert found, f"apt-get could not install Chromium:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on 127.0.0.1 and its REST API."""

    def __init__(self, base: str, token: str, work: Path, proc: subprocess.Popen, log: Path):
        self.base, self.token, self.work, self.proc, self.log = base, token, work, proc, log

    def get(self, path: str, timeout: float = 30) -> str:
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()

    def api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
        return json.loads(text) if text else None

    def close_sessions(self) -> None:
        """Delete every session (and so shut its kernel down): none survives one test."""
        for s in self.api("GET", "/api/sessions"):
            try:
                self.api("DELETE", f"/api/sessions/{s['id']}")
            except urllib.error.HTTPError:
                pass

    def kernels_idle(self) -> bool:
        kernels = self.api("GET", "/api/kernels")
        return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)

    def url(self, path: str) -> str:
        """The page of ``path`` (relative to ``work``) in JupyterLab.

        reset: a fresh workspace, so no earlier document reopens in a background tab."""
        return f"{self.base}/lab/tree/{path}?reset&token={self.token}"


@contextlib.contextmanager
def start_lab(tmp: Path):
    """A JupyterLab server serving ``tmp / "work"``; shut down on exit."""
    work = tmp / "work"
    work.mkdir(parents=True)
    # the kernel the notebooks name, "python3", is this environment's python by absolute path
    # (not resolved: a venv's python is a link whose target is outside the venv)
    data = tmp / "data"
    spec = data / "kernels" / "python3"
    spec.mkdir(parents=True)
    python = os.path.abspath(sys.executable)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (course)", "language": "python"}))
    config = tmp / "config"
    (config / "labconfig").mkdir(parents=True)
    settings = json.loads(LAB_SETTINGS.read_text())
    settings.update(TEST_SETTINGS)
    (config / "labconfig" / "default_setting_overrides.json").write_text(json.dumps(settings))
    write_server_config(config)  # HTML export and saving as scripts/lab.sh sets them up (helpers.course.export)
    session_env = _early.environ()  # it runs beside tests that change os.environ
    env = {k: v for k, v in session_env.items() if k != "COURSE_HEADLESS" and not k.startswith("JUPYTER")}
    env.update(JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(data), JUPYTER_PATH=str(data),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTER_PLATFORM_DIRS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [session_env.get("PYTHONPATH")] if p]))
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [python, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
             "--ServerApp.terminals_enabled=False",
             # window.jupyterapp: the tests open notebook after notebook in one page (Pages)
             "--LabApp.expose_app_in_browser=True"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=work)
    server = Lab(f"http://127.0.0.1:{port}", token, work, proc, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                server.api("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, f"JupyterLab exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"JupyterLab did not start:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        argv = server.api("GET", "/api/kernelspecs")["kernelspecs"]["python3"]["spec"]["argv"]
        assert argv[0] == python, f"the notebooks' kernel is {argv[0]}, not this environment's {python}"
        server.close_sessions()
        yield server
    finally:
        try:
            server.close_sessions()
        except Exception:
            pass
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def chromium_context(profile: Path):
    """A headless Chromium (a persistent context in ``profile``), closed on exit."""
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright package is not installed (requirements-pinned.txt)")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_FLAGS, viewport=VIEWPORT,
            chromium_sandbox=False)
        try:
            yield ctx
        finally:
            ctx.close()


class PageErrors:
    """JavaScript errors on a page: uncaught exceptions and console errors.

    The one thing let through: a resource the offline machine cannot fetch from another host
    (the notebooks' "Open in Colab" badge image); anything from the server itself counts.
    """

    def __init__(self, page, base: str):
        self.base, self.errors = base, []
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("console", self._console)

    def _console(self, msg) -> None:
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        if msg.text.startswith("Failed to load resource") and url and not url.startswith(self.base):
            return
        self.errors.append(f"console: {msg.text} ({url})")


class Pages:
    """One JupyterLab page for the notebooks a lane opens one after another.

    JupyterLab loads once (a load costs Chromium about 4 CPU-seconds); each notebook then opens in
    the running application (``docmanager:open``, on the application the server exposes), after
    the one before was closed and its kernel shut down: what a learner gets from the file browser.
    :meth:`reset` drops the page (after a check that failed half-way), so the next notebook gets a
    fresh one.
    """

    def __init__(self, ctx, lab: Lab):
        self.ctx, self.lab, self.page, self.errors = ctx, lab, None, None

    def open(self, path: str):
        """Open ``path`` (relative to ``lab.work``); returns the page and its :class:`PageErrors`
        (this notebook's only) once the notebook shows and its kernel is idle."""
        if self.page is None or self.page.is_closed():
            self.page = self.ctx.new_page()
            self.errors = PageErrors(self.page, self.lab.base)
            self.page.goto(self.lab.url(path))
        else:
            self.close_documents()
            self.errors.errors.clear()
            self.page.evaluate("p => window.jupyterapp.commands.execute('docmanager:open', "
                               "{path: p, factory: 'Notebook'})", path)
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=120_000)
        # the kernel is up when the session's kernel reports idle
        deadline = time.monotonic() + 120
        while not (self.lab.api("GET", "/api/sessions") and self.lab.kernels_idle()):
            assert time.monotonic() < deadline, "the notebook's kernel did not start"
            time.sleep(0.5)
        return self.page, self.errors

    def close_documents(self) -> None:
        """Close every document of the page without asking to save (the tests save what they
        keep), then every session."""
        if self.page is not None and not self.page.is_closed():
            self.page.evaluate("""() => {
              for (const w of Array.from(window.jupyterapp.shell.widgets('main'))) {
                if (w.context && w.context.model) { w.context.model.dirty = false; }
                w.dispose();
              }
            }""")
            self.page.wait_for_selector(".jp-NotebookPanel", state="detached", timeout=30_000)
        self.lab.close_sessions()

    def reset(self) -> None:
        if self.page is not None and not self.page.is_closed():
            self.page.close()
        self.page = None
        self.lab.close_sessions()


def menu(page, name: str, item: str) -> None:
    """Click ``item`` of the menu ``name`` (e.g. "Run", "Run All Cells")."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{re.escape(name)}$")).click()
    page.locator(".lm-Menu-item:visible", has_text=re.compile(rf"^{re.escape(item)}")).first.click()
