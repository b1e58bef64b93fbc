"""The course in Colab: the set-up cell (notebooks/src/_setup.py), helpers.course.colab, and a
rehearsal of the whole path in an environment made like Colab's.

The rehearsal (slow) builds a fresh virtual environment holding what matters as Colab
preinstalls it: its own torch and torchvision (this environment's, linked in through a ``.pth``
file rather than downloaded again), ipywidgets 7.7.1, ipykernel 6.17.1, IPython 7.34 and the
classic notebook server, and none of the course's other packages. A stand-in ``google.colab``
module is imported by the kernel at start, as Colab's kernel has it. The repository is served
from a bare copy of this one (``file://``, the tag of the built version included) and the set-up
cell of notebook 1 is run as the notebook holds it: first with no package index (pip fails: no
marker, the next run retries), then for real, then once more (nothing to do). Notebook 1 is then
executed headless in that kernel (Colab counts as a front end: its widgets are interactive, its
figures HTML). It needs a package index (PyPI) and is skipped, with the reason, without one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import _early
import pytest
from _small import SMALL_RUNS

from helpers.course import colab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_residual_decomposition.ipynb"


def _git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _setup_cell(notebook: Path = NOTEBOOK) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    cell = next(c for c in cells if c["cell_type"] == "code" and "google.colab" in "".join(c["source"]))
    return "".join(cell["source"])


def _course_ref() -> str:
    import tomllib

    return "v" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# ---------------------------------------------------------------------------------------------
# helpers.course.colab, with pip stubbed
# ---------------------------------------------------------------------------------------------

PIP_LOG = """\
Requirement already satisfied: numpy>=1.24 in /usr/lib/python3/dist-packages (from -r x) (2.0.2)
Requirement already satisfied: numpy>=1.24 in /usr/lib/python3/dist-packages (2.0.2)
Requirement already satisfied: pillow>=9 in /usr/lib/python3/dist-packages (11.1.0)
Collecting open_clip_torch<4,>=2.24
  Downloading open_clip_torch-3.3.0-py3-none-any.whl (1.5 MB)
Collecting timm
  Downloading timm-1.0.31-py3-none-any.whl (2.4 MB)
  Downloading scipy-1.17.1-cp311-cp311-manylinux_2_28_x86_64.whl (35.2 MB)
  Downloading ftfy-6.3.1-py3-none-any.whl (44 kB)
Installing collected packages: ftfy, scipy, timm, open_clip_torch
Successfully installed ftfy-6.3.1 open_clip_torch-3.3.0 scipy-1.17.1 timm-1.0.31
"""


def test_pip_output_is_summarised():
    s = colab.summarise_pip(PIP_LOG)
    assert s["installed"] == ["ftfy 6.3.1", "open_clip_torch 3.3.0", "scipy 1.17.1", "timm 1.0.31"]
    assert s["already"] == 2  # numpy (named twice) and pillow
    assert abs(s["downloaded_mb"] - (1.5 + 2.4 + 35.2 + 0.044)) < 1e-9


def test_what_pip_must_leave_alone():
    from importlib import metadata

    kept = colab.kept_distributions()
    assert kept["torch"] == metadata.version("torch") and kept["ipywidgets"] == metadata.version("ipywidgets")
    assert "pytest" in kept  # loaded by this interpreter: a running kernel's packages stay as they are
    assert "numpy" in kept
    assert "numpy" not in colab.kept_distributions(exclude=["NumPy"])
    assert all(not k.startswith("no-such") for k in colab.kept_distributions(keep=["no-such-package"]))


def test_the_course_requirements_come_from_pyproject():
    name, needs = colab.course_requirements(ROOT)
    assert name == "clip-decomposition-course"
    names = [colab._requirement_name(r) for r in needs]
    assert {"torch", "open-clip-torch", "plotly", "ipywidgets"} <= set(names)
    assert colab._requirement_name("open_clip_torch>=2.24,<4") == "open-clip-torch"
    assert colab._requirement_name("scikit-image >= 0.21 ; python_version>'3'") == "scikit-image"


@pytest.fixture
def fake_course(tmp_path):
    """A git repository that looks like the course (pyproject, helpers/), with one commit."""
    repo = tmp_path / "course"
    (repo / "helpers").mkdir(parents=True)
    (repo / "helpers" / "__init__.py").write_text("")
    (repo / "notebooks").mkdir()
    (repo / "notebooks" / "README.md").write_text("notebooks\n")
    (repo / "pyproject.toml").write_text('[project]\nname = "clip-decomposition-course"\nversion = "9.9.9"\n'
                                         'dependencies = ["torch>=2.1", "ipywidgets>=8", "plotly>=5.15"]\n')
    _git("init", "-q", "-b", "main", cwd=repo)
    for i in range(2):  # two commits: a tag on the first, the default branch on the second
        (repo / "history.txt").write_text(f"{i}\n")
        _git("add", "-A", cwd=repo)
        _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"commit {i}", cwd=repo)
    return repo


class FakePip:
    """``colab._pip`` stood in: records the arguments; fails while ``fail`` is set."""

    def __init__(self, monkeypatch):
        self.calls, self.fail = [], False
        monkeypatch.setattr(colab, "_pip", self)

    def __call__(self, args, log):
        self.calls.append(args)
        if self.fail:
            raise RuntimeError("pip could not install the course's packages; run this cell again to retry.")
        return PIP_LOG if "-c" in args else "Successfully installed clip-decomposition-course-9.9.9\n"


def _plotly_not_loaded(monkeypatch):
    """As in a fresh Colab kernel, where plotly is installed but not imported (this test process
    may have imported it, which would hold it as Colab's own)."""
    real = colab.kept_distributions
    monkeypatch.setattr(colab, "kept_distributions",
                        lambda *a, **kw: {k: v for k, v in real(*a, **kw).items() if k != "plotly"})


def _colab_runs(monkeypatch, run) -> None:
    """``subprocess.run`` as helpers.course.colab sees it, and only there: the session's early work
    runs processes in other threads meanwhile, with the real one."""
    monkeypatch.setattr(colab, "subprocess", types.SimpleNamespace(run=run))


def test_set_up_marks_done_only_after_it_worked_and_then_does_nothing(fake_course, monkeypatch, capsys):
    pip = FakePip(monkeypatch)
    _plotly_not_loaded(monkeypatch)
    checks = []
    real_run = subprocess.run

    def run(cmd, *a, **kw):  # the import check in a fresh interpreter: passes here, the real one in the rehearsal
        if cmd[:2] == [sys.executable, "-c"]:
            checks.append(cmd[2])
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return real_run(cmd, *a, **kw)

    _colab_runs(monkeypatch, run)
    pip.fail = True
    with pytest.raises(RuntimeError, match="run this cell again"):
        colab.set_up(fake_course, expected="v9.9.9")
    assert not colab.marker_path(fake_course).exists()  # a failed install leaves no marker
    pip.fail = False
    line = colab.set_up(fake_course, expected="v9.9.9")
    assert colab.marker_path(fake_course).exists() and checks == [colab.IMPORT_CHECK]
    # Colab's own packages are held by the constraints and left out of the requirements
    constraints = (fake_course / ".colab-setup" / "constraints.txt").read_text()
    assert re.search(r"^torch==\S+$", constraints, re.M) and re.search(r"^ipywidgets==\S+$", constraints, re.M)
    first, editable = pip.calls[-2:]
    assert first[:2] == ["-c", str(fake_course / ".colab-setup" / "constraints.txt")]
    assert first[2:] == ["plotly>=5.15"]  # torch and ipywidgets are installed: kept, not required
    assert editable == ["--no-deps", "-e", str(fake_course)]
    assert line.startswith("Course set up in ") and "main@" in line and "(no v9.9.9 published yet" in line
    assert "pip installed 4 packages (39 MB downloaded: ftfy 6.3.1, open_clip_torch 3.3.0, scipy 1.17.1, timm" in line
    assert "2 were there" in line and "kept Colab's torch" in line and line.endswith(" as they are.")
    assert capsys.readouterr().out.strip().splitlines()[-1] == line  # one line
    n = len(pip.calls)
    again = colab.set_up(fake_course, expected="v9.9.9")
    assert len(pip.calls) == n and len(checks) == 1  # the second run does nothing
    assert again == f"Course already set up in {fake_course} (main@{_git('rev-parse', '--short', 'HEAD', cwd=fake_course)}" \
                    " (no v9.9.9 published yet: the default branch)): nothing to do."


def test_nothing_to_add_when_colab_holds_every_requirement(fake_course, monkeypatch):
    pip = FakePip(monkeypatch)
    real = colab.kept_distributions
    monkeypatch.setattr(colab, "kept_distributions", lambda *a, **kw: {**real(*a, **kw), "plotly": "6.0.0"})
    _colab_runs(monkeypatch, lambda cmd, *a, **kw: subprocess.CompletedProcess(cmd, 0, "", ""))
    colab.set_up(fake_course)
    assert pip.calls == [["--no-deps", "-e", str(fake_course)]]  # only the course itself
    assert colab.marker_path(fake_course).exists()


def test_a_failing_import_check_leaves_no_marker(fake_course, monkeypatch, capsys):
    FakePip(monkeypatch)
    real_run = subprocess.run

    def run(cmd, *a, **kw):
        if cmd[:2] == [sys.executable, "-c"]:
            return subprocess.CompletedProcess(cmd, 1, "", "ModuleNotFoundError: No module named 'open_clip'\n")
        return real_run(cmd, *a, **kw)

    _colab_runs(monkeypatch, run)
    with pytest.raises(RuntimeError, match="do not import"):
        colab.set_up(fake_course)
    assert "No module named 'open_clip'" in capsys.readouterr().out
    assert not colab.marker_path(fake_course).exists()


def test_a_failing_pip_prints_its_whole_log(tmp_path, capsys):
    with pytest.raises(RuntimeError, match="run this cell again to retry"):
        colab._pip(["--no-index", "--find-links", str(tmp_path), "no-such-package-for-the-course"], tmp_path / "log")
    out = capsys.readouterr().out
    assert "no-such-package-for-the-course" in out and "$ " in out
    assert (tmp_path / "log").read_text().strip() == out.strip()


# ---------------------------------------------------------------------------------------------
# the set-up cell's clone, with set_up stubbed
# ---------------------------------------------------------------------------------------------


def _run_cell(monkeypatch, course_dir, repo_url):
    """Run notebook 1's set-up cell here, as Colab would (google.colab imported), set_up recorded."""
    import plotly.io as pio

    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(colab, "set_up", lambda d, **kw: calls.append((d, kw)))
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(course_dir.parent)
    monkeypatch.setenv("COURSE_DIR", str(course_dir))
    monkeypatch.setenv("COURSE_REPO", repo_url)
    import helpers.course.ui as ui

    monkeypatch.setattr(ui, "_ipywidgets_major", lambda: 7)
    exec(compile(_setup_cell(), "setup-cell", "exec"), {"__name__": "__main__"})
    return calls


def test_the_cell_clones_the_built_version_and_falls_back_to_the_default_branch(fake_course, tmp_path, monkeypatch):
    ref = _course_ref()
    assert f'"--branch", "{ref}"' in _setup_cell() and f'expected="{ref}"' in _setup_cell()
    url = f"file://{fake_course}"
    # not tagged yet: the default branch
    dest = tmp_path / "content" / "course"
    dest.parent.mkdir()
    (tmp_path / "content" / "course.part").mkdir()  # a clone interrupted earlier
    calls = _run_cell(monkeypatch, dest, url)
    assert calls == [(str(dest), {"expected": ref, "started": calls[0][1]["started"]})]
    assert (dest / "helpers").is_dir() and not (tmp_path / "content" / "course.part").exists()
    assert _git("rev-parse", "HEAD", cwd=dest) == _git("rev-parse", "HEAD", cwd=fake_course)
    assert Path.cwd() == dest / "notebooks" and sys.path[0] == str(dest)
    # run again: no second clone
    marker = dest / "untracked-marker"
    marker.write_text("x")
    _run_cell(monkeypatch, dest, url)
    assert marker.exists()
    # tagged: the tag, not the newer default branch
    tagged = _git("rev-parse", "HEAD~1", cwd=fake_course)
    _git("tag", ref, tagged, cwd=fake_course)
    other = tmp_path / "content" / "other"
    _run_cell(monkeypatch, other, url)
    assert _git("rev-parse", "HEAD", cwd=other) == tagged


# ---------------------------------------------------------------------------------------------
# the rehearsal
# ---------------------------------------------------------------------------------------------

COLAB_PREINSTALLED = ["ipywidgets==7.7.1", "ipykernel==6.17.1", "ipython==7.34.0", "notebook==6.5.7"]
FAKE_COLAB = {
    "google/colab/__init__.py": '"""Stands in for Colab\'s module in the Colab rehearsal (tests/test_colab.py)."""\n'
                                "from . import output  # noqa: F401\n",
    "google/colab/output.py": "import os\n\n\ndef enable_custom_widget_manager():\n"
                              "    with open(os.environ['COLAB_REHEARSAL_CALLS'], 'a') as fh:\n"
                              "        fh.write('enable_custom_widget_manager\\n')\n",
}


def _pip_reaches_an_index(tmp_path) -> str | None:
    """None when pip can fetch from its package index, else why not."""
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(tmp_path / "probe"),
                           "--no-cache-dir", "--progress-bar", "off", COLAB_PREINSTALLED[0]],
                          capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return None
    last = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()][-1:]
    return last[0] if last else f"pip download exited with {done.returncode}"


def _torch_stack() -> list:
    """torch with everything it needs, and torchvision: the distributions Colab brings for torch."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen, todo, done = {}, [("torch", "")], set()
    while todo:  # (distribution, extra) pairs: an extra of a requirement brings its own requirements
        name, extra = todo.pop()
        if (colab._canonical(name), extra) in done:
            continue
        done.add((colab._canonical(name), extra))
        dist = seen.setdefault(colab._canonical(name), metadata.distribution(name))
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, "")] + [(req.name, e) for e in req.extras]
    seen["torchvision"] = metadata.distribution("torchvision")
    return list(seen.values())


def _link_preinstalled(target: Path) -> int:
    """Link the torch stack's files into ``target`` (a folder a .pth puts on the path); returns how many."""
    target.mkdir()
    for dist in _torch_stack():
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or []}:
            if top != ".." and not (target / top).exists() and (site / top).exists():
                (target / top).symlink_to(site / top)
    return len(list(target.iterdir()))


def _venv_site(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _rehearse(tmp_path: Path) -> dict:
    """The rehearsal's steps, each in processes of its own (it runs in a thread beside other tests:
    nothing here changes this process's environment): what each step printed and found, for
    :func:`test_colab_rehearsal` to check. Steps stop at the first that cannot go on."""
    r: dict = {"times": {}}
    t = time.perf_counter()

    # an environment made like Colab's
    venv = tmp_path / "colab-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = _venv_site(venv)
    linked = tmp_path / "preinstalled"
    r["linked"], r["linked_count"] = linked, _link_preinstalled(linked)
    (site / "colab-preinstalled.pth").write_text(f"{linked}\n")
    env = {k: v for k, v in _early.environ().items() if k not in ("PYTHONPATH", "COURSE_HEADLESS", "VIRTUAL_ENV")}
    # the venv's own setuptools is older than the one torch needs: Colab's fits its torch, so the linked one serves
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], env=env, check=True)
    r["preinstall"] = subprocess.run([str(python), "-m", "pip", "install", "--progress-bar", "off", "-q",
                                      "--no-compile", *COLAB_PREINSTALLED], env=env, capture_output=True, text=True)
    if r["preinstall"].returncode != 0:
        return r
    for rel, text in FAKE_COLAB.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)

    def probe():
        """Where torch lives and the versions of Colab's own packages, in the Colab-like environment."""
        out = subprocess.run([str(python), "-c", "import json, importlib.util as u, importlib.metadata as m; print("
                              "json.dumps([u.find_spec('torch').origin] + [m.version(d) for d in "
                              "('torch', 'torchvision', 'ipywidgets', 'ipykernel')]))"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    r["before"] = probe()
    r["course_packages"] = subprocess.run([str(python), "-c", "import open_clip"], env=env, cwd=tmp_path,
                                          capture_output=True)
    r["times"]["environment"] = time.perf_counter() - t

    # the published repository: a bare copy of this one, HEAD as the default branch and the built version's tag
    t = time.perf_counter()
    origin = tmp_path / "origin.git"
    _git("init", "-q", "--bare", "-b", "main", str(origin))
    _git("push", "-q", str(origin), "HEAD:refs/heads/main", f"HEAD:refs/tags/{_course_ref()}", cwd=ROOT)
    content = tmp_path / "content"
    content.mkdir()
    course = r["course"] = content / "course"
    calls = r["calls"] = tmp_path / "colab-calls.txt"
    env.update(COURSE_REPO=f"file://{origin}", COURSE_DIR=str(course), COLAB_REHEARSAL_CALLS=str(calls))
    cell = "import google.colab\n" + _setup_cell()

    def run_cell(**extra):
        return subprocess.run([str(python), "-c", cell], env={**env, **extra}, cwd=content, capture_output=True,
                              text=True)

    # 1. no package index: pip fails, nothing is marked done
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    r["failed"] = run_cell(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty))
    r["after_failure"] = {"cloned": (course / "helpers").is_dir(), "marked": colab.marker_path(course).exists()}
    # 2. the next run retries, and succeeds
    r["ok"] = run_cell()
    if r["ok"].returncode != 0:
        return r
    r["marker"] = json.loads(colab.marker_path(course).read_text()) if colab.marker_path(course).exists() else None
    r["after_setup"] = probe()
    r["torch_in_venv"] = (site / "torch").exists() or bool(list(site.glob("torch-*.dist-info")))
    # 3. a second run does nothing
    log = (course / ".colab-setup" / "pip.log").read_text()
    r["again"] = run_cell()
    r["pip_ran_again"] = (course / ".colab-setup" / "pip.log").read_text() != log
    r["times"]["set-up cell"] = time.perf_counter() - t

    # notebook 1, headless, in a kernel of that environment that has google.colab imported at start
    t = time.perf_counter()
    ipython_dir = tmp_path / "ipython"
    (ipython_dir / "profile_default" / "startup").mkdir(parents=True)
    (ipython_dir / "profile_default" / "startup" / "00-colab.py").write_text("import google.colab  # noqa\n")
    spec = tmp_path / "jupyter" / "kernels" / "colab-rehearsal"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab rehearsal", "language": "python",
        "env": {"IPYTHONDIR": str(ipython_dir), "COURSE_REPO": env["COURSE_REPO"], "COURSE_DIR": str(course),
                "COLAB_REHEARSAL_CALLS": str(calls)}}))
    executed = r["executed"] = tmp_path / "01_executed.ipynb"
    # papermill in a process of its own: the kernel imports the clone's helpers, not this checkout's
    pm_env = {k: v for k, v in _early.environ().items() if k not in ("PYTHONPATH", "COURSE_HEADLESS")}
    pm_env["JUPYTER_PATH"] = str(tmp_path / "jupyter")
    # the small run of tests/_small.py: the path through Colab is checked here, the figures elsewhere
    small = [arg for name, value in SMALL_RUNS["01"].items() for arg in ("-p", name, str(value))]
    r["papermill"] = subprocess.run(
        [sys.executable, "-m", "papermill", str(course / "notebooks" / NOTEBOOK.name), str(executed),
         "-k", "colab-rehearsal", *small, "--cwd", str(content), "--no-progress-bar",
         "--execution-timeout", "900"], env=pm_env, capture_output=True, text=True)
    r["times"]["notebook 1"] = time.perf_counter() - t
    r["after_notebook"] = probe()
    return r


def _rehearsal(tmp_path: Path) -> tuple[str | None, dict | None]:
    """``(why not, None)`` when pip reaches no package index, else ``(None, what the rehearsal found)``."""
    why = _pip_reaches_an_index(tmp_path)
    return (why, None) if why else (None, _rehearse(tmp_path))


def start_rehearsal(tmp_path_factory, items=()) -> None:
    """The rehearsal, started at the session's start in a thread (the ``early`` mark, tests/_early.py)."""
    _early.job("colab", _rehearsal, tmp_path_factory.mktemp("colab"))


@pytest.mark.slow
@pytest.mark.early("start_rehearsal")
def test_colab_rehearsal(tmp_path, capsys):
    why, r = _early.job("colab", _rehearsal, tmp_path).result()
    if why:
        pytest.skip(f"the Colab rehearsal installs from a package index, and none is reachable: {why}")
    from importlib import metadata

    assert r["linked_count"] > 2
    assert r["preinstall"].returncode == 0, r["preinstall"].stdout + r["preinstall"].stderr
    before = r["before"]
    assert before[1:] == [metadata.version("torch"), metadata.version("torchvision"), "7.7.1", "6.17.1"]
    assert before[0].startswith(str(r["linked"]))
    assert r["course_packages"].returncode != 0, "the Colab-like environment must not hold the course's packages"
    course, failed, ok, again = r["course"], r["failed"], r["ok"], r["again"]
    # 1. no package index: pip fails, nothing is marked done
    assert failed.returncode != 0
    assert "run this cell again to retry" in failed.stderr, failed.stderr[-2000:]
    assert "ERROR: Could not find a version" in failed.stdout  # pip's own log, printed in full on failure
    assert r["after_failure"] == {"cloned": True, "marked": False}
    # 2. the next run retries, and succeeds
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    lines = ok.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Course set up in "), ok.stdout
    assert f"{_course_ref()} in {course}" in lines[0] and "published yet" not in lines[0]
    marker = r["marker"]
    assert marker is not None, "no marker after a set-up that worked"
    installed = {colab._requirement_name(p) for p in marker["installed"]}
    assert {"open-clip-torch", "plotly"} <= installed
    assert not installed & {"torch", "torchvision", "ipywidgets", "widgetsnbextension", "ipykernel"}, installed
    assert r["after_setup"] == before, "Colab's torch or ipywidgets changed"
    assert not r["torch_in_venv"]
    # 3. a second run does nothing
    assert again.returncode == 0 and again.stdout.strip().endswith("nothing to do."), again.stdout + again.stderr
    assert len(again.stdout.strip().splitlines()) == 1
    assert not r["pip_ran_again"]
    # notebook 1 in the Colab-like kernel
    assert r["papermill"].returncode == 0, r["papermill"].stderr[-3000:]
    import nbformat

    nb = nbformat.read(str(r["executed"]), as_version=4)  # multi-line strings joined
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    stderr = [o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"]
    assert not stderr, f"warnings or log lines in the executed notebook: {stderr[:3]}"
    setup = next(c for c in code if "google.colab" in "".join(c["source"]))
    said = "".join(o.get("text", "") for o in setup["outputs"])
    assert said.strip().endswith("nothing to do.") and len(said.strip().splitlines()) == 1, said
    # Colab's renderer: every figure HTML that draws itself, plotly.js from plotly's CDN
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    figures = [h for h in html if "Plotly.newPlot" in h]
    assert figures and all("cdn.plot.ly" in h for h in figures)
    assert not any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)
    # Colab is a front end: live() widgets are interactive, drawn through ipywidgets 7.7.1
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views and all(o["data"]["application/vnd.jupyter.widget-view+json"]["version_major"] == 2 for o in views)
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    drawn = [s["state"].get("outputs") for s in state.values() if s["model_name"] == "OutputModel"]
    assert drawn and all(drawn), "a live() widget drew nothing"
    versions = {s["model_module"]: s["model_module_version"] for s in state.values()}
    assert versions["@jupyter-widgets/controls"] == "1.5.0", versions  # ipywidgets 7's models (8's are 2.0.0)
    # the built-in widget manager serves ipywidgets 7: the custom one was not turned on
    assert not r["calls"].exists()
    assert r["after_notebook"] == before
    with capsys.disabled():
        print("\nColab rehearsal: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["times"].items())
              + f"; {sum(r['times'].values()):.0f} s in all; set-up: {lines[0]}")
