"""The suite's tiers hold as README says: every test that runs a notebook or drives a browser is
in the slow tier, and the fast tier (``-m fast``) runs only the notebook runs named in
``tests/_tiers.py``'s ``FAST_RUNS``.

The check reads the tests of the current session (whatever ``-m`` / ``-k`` selected): a test
that uses one of the notebook or browser fixtures, or whose code (or a function of its own
module it calls) names papermill, nbclient, a kernel manager, JupyterLab or Playwright.
"""

import ast
import inspect
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import _tiers
import pytest

# names (and command-line words) that start a notebook run or a browser
RUNS_NOTEBOOKS = {"execute_notebook", "papermill", "nbclient", "NotebookClient", "KernelManager", "start_kernel",
                  "ipykernel_launcher", "jupyterlab", "playwright", "sync_playwright"}


def _function(fn):
    """The ``def`` of ``fn``, parsed (decorators and all)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    return next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)


def _words(node) -> set[str]:
    """Names, attributes, imported modules and one-word strings in a function's body (not in its
    decorators, comments or docstring; not the strings it compares a result with)."""
    found = set()
    compared = {id(c) for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Compare)
                for c in ast.walk(n) if isinstance(c, ast.Constant)}  # a word a test compares with is not run
    for stmt in node.body:
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name):
                found.add(n.id)
            elif isinstance(n, ast.Attribute):
                found.add(n.attr)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                found.update(part for a in n.names for part in a.name.split("."))
                found.update((getattr(n, "module", None) or "").split("."))
            elif isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.isidentifier() \
                    and id(n) not in compared:
                found.add(n.value)
    return found


def _runs_notebooks(item) -> bool:
    """Uses a notebook or browser fixture, or its code (or a function of its own module it calls)
    names what starts a notebook run or a browser."""
    if _tiers.NOTEBOOK_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    fn = getattr(item, "function", None)
    node = _function(fn) if fn is not None else None
    if node is None:
        return False
    words = _words(node)
    module = inspect.getmodule(fn)
    for name in sorted(words):
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == module.__name__ and helper is not fn:
            inner = _function(helper)
            words |= _words(inner) if inner is not None else set()
    return bool(RUNS_NOTEBOOKS & words)


def test_notebook_and_browser_runs_are_slow(request):
    items = [i for i in request.session.items if i is not request.node]
    runs = [i for i in items if _runs_notebooks(i)]
    unmarked = [i.nodeid for i in runs if i.get_closest_marker("slow") is None]
    assert not unmarked, f"tests that run notebooks or a browser without the slow mark: {unmarked}"
    fast = {i.nodeid.split("/")[-1] for i in runs if i.get_closest_marker("fast") is not None}
    assert fast <= _tiers.FAST_RUNS, (
        f"notebook runs in the fast tier that FAST_RUNS does not name: {sorted(fast - _tiers.FAST_RUNS)}")


def test_the_fast_tier_runs_a_notebook():
    """FAST_RUNS names tests that exist and run a notebook (through the shared kernel)."""
    import test_notebooks

    assert _tiers.FAST_RUNS
    for run in _tiers.FAST_RUNS:
        file, _, name = run.partition("::")
        assert file == "test_notebooks.py", run  # the one file FAST_RUNS takes its runs from today
        function, _, param = name.partition("[")
        fn = getattr(test_notebooks, function)
        assert {"notebook_run", "notebook_runs", "notebook_kernel"} & set(inspect.signature(fn).parameters), run
        assert param.rstrip("]") in {p.stem for p in test_notebooks.notebook_paths()}, run


INNER_CONFTEST = """import pytest
from _tiers import mark_tiers


def pytest_collection_modifyitems(config, items):
    mark_tiers(items, {"nb"}, {"test_x.py::test_with_a_notebook[2]"})


def pytest_configure(config):
    config.addinivalue_line("markers", "fast: f")


@pytest.fixture
def nb():
    return 1
"""


@pytest.mark.parametrize("marks", [(), ("slow",)])
def test_marking(marks, tmp_path):
    """Not slow means fast; a test using a notebook fixture is slow wherever it is written, and
    one FAST_RUNS names is in both tiers."""
    (tmp_path / "conftest.py").write_text(INNER_CONFTEST)
    decorators = "".join(f"@pytest.mark.{m}\n" for m in marks)
    (tmp_path / "test_x.py").write_text(f"import pytest\n\n\n{decorators}def test_plain():\n    pass\n\n\n"
                                        "@pytest.mark.parametrize('i', [1, 2])\ndef test_with_a_notebook(nb, i):\n"
                                        "    pass\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(_tiers.__file__).parent), os.environ.get("PYTHONPATH", "")]))
    ran = {}
    for tier in ("fast", "slow"):
        out = subprocess.run([sys.executable, "-m", "pytest", "-m", tier, "-q", "-rA", "-p", "no:cacheprovider",
                              "--rootdir", str(tmp_path), str(tmp_path)],
                             cwd=tmp_path, env=env, capture_output=True, text=True)
        ran[tier] = {line.split("::")[-1] for line in out.stdout.splitlines() if line.startswith("PASSED")}
    plain_fast = not marks
    assert ran["fast"] == ({"test_plain"} if plain_fast else set()) | {"test_with_a_notebook[2]"}, ran
    assert ran["slow"] == ({"test_plain"} if not plain_fast else set()) | {"test_with_a_notebook[1]",
                                                                           "test_with_a_notebook[2]"}, ran


def test_early_work_sees_the_sessions_environment_not_a_tests(monkeypatch):
    """A job started early runs beside the other tests: what a test sets in ``os.environ`` (as
    many do, with ``monkeypatch.setenv``) must not reach the processes the job starts."""
    import _early

    before = os.environ.get("CLIP_COURSE_CACHE")
    monkeypatch.setenv("CLIP_COURSE_CACHE", "/a/test/s/own/cache")
    seen = _early.job(("environment-probe", id(monkeypatch)),
                      lambda: _early.environ().get("CLIP_COURSE_CACHE")).result(timeout=60)
    assert seen == before
    snapshot = _early.environ()
    snapshot["CLIP_COURSE_CACHE"] = "changed in a copy"
    assert _early.environ().get("CLIP_COURSE_CACHE") == before  # each call gives a copy


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_early_work_yields_the_processors_to_the_tests_running_now():
    """Early work and the processes it starts run at a lower priority (tests/_early.py): the
    tests in their turn and the notebook kernel get the processors first."""
    import _early

    def niceness():
        child = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True,
                               text=True, check=True)
        return int(child.stdout)

    here = os.nice(0)
    in_child = _early.job(("priority-probe", os.getpid()), niceness).result(timeout=60)
    if _early.REFUSED:
        pytest.skip(f"this system does not let a thread lower its priority: {_early.REFUSED[0]}")
    assert in_child == min(19, here + _early.EARLY_NICE)
    assert os.nice(0) == here  # this process, the tests' own, keeps its priority
    # a lane asked for at the tests' priority (the browser's) keeps it, in a thread of its own
    thread = _early.job(("priority-probe-normal", os.getpid()), lambda: (niceness(), threading.current_thread().name),
                        nice=False).result(timeout=60)
    assert thread[0] == here and thread[1].startswith("early-")
