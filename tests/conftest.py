"""Shared fixtures, and the suite's two tiers (tests/_tiers.py).

Notebook runs share one kernel per session (fixture ``notebook_kernel``; tests/_kernel.py),
reset between notebooks; ``notebook_runs`` runs each (notebook, parameters) once per session for
every test that asks (with more than two processors, a second kernel at a lower priority takes
queued runs from the end of the queue). The browser tests run in a lane of their own, the
explorer app's check and then one JupyterLab page, in one Chromium in a thread from the session's
start (tests/test_browser.py, tests/_lab.py, started like the other work of tests/_early.py). A
test using a notebook fixture is in the slow tier.
"""

import gc
import os
import time
import warnings

# The session's process holds about 600,000 long-lived objects once its tests are collected
# (torch, open_clip, plotly, Playwright, the test modules), and its tests make many more that
# live a while: at Python's default thresholds a full collection walks them all a dozen times in
# half a minute of tests. Collected less often, the same garbage goes (the full collections fell
# from 12 to 1 and the collector's time from 2.8 s to 0.8 s on 257 tests).
gc.set_threshold(10_000, 10, 10)

# One thread per process: the notebook kernel computes in the background while the tests run,
# JupyterLab's kernels and Chromium beside them; two threads each on two cores spin against each
# other. Set here, before torch and NumPy start their thread pools; the kernels inherit them.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import _early  # noqa: E402 - reads the session's environment before any test changes it
import pytest  # noqa: E402
import torch  # noqa: E402
from _tiers import FAST_TEST_S, mark_tiers  # noqa: E402

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# requests (papermill's, pooch's) says once, on its first import, that urllib3 lacks the optional
# SOCKS support; imported here, in the main thread before any background work starts, so that this
# one-time notice about the environment cannot land in whichever test runs when a thread imports it
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="SOCKS support in urllib3")
    import requests  # noqa: E402, F401
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_SESSION: dict[str, float] = {}
HELPER_NICE = 10  # the helper kernel's niceness above the tests' (fixture notebook_runs)


def pytest_sessionstart(session):
    _SESSION["start"] = time.monotonic()


def _kernel_env() -> dict[str, str]:
    """The environment of the session's notebook kernel: this one without ``COURSE_HEADLESS``
    (and pytest's note of the test it is running), the repository on the module path."""
    from helpers.engine.paths import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("COURSE_HEADLESS", "PYTEST_CURRENT_TEST")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


_PRESTARTED: dict[str, object] = {}  # the notebook kernel started while the tests are collected


def _whole_suite(config) -> bool:
    """The run names no test file or test, only the suite's folder (a whole-suite or tier run)."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    base = config.rootpath if config.args_source == pytest.Config.ArgsSource.TESTPATHS else config.invocation_params.dir
    return all((Path(base) / arg.split("::")[0]).resolve() in (here, here.parent) for arg in config.args)


def _prestart_kernel(config) -> None:
    """A whole-suite or tier run runs notebooks: their kernel starts now, in the background, on
    the processor the collection of the tests leaves idle (its imports take seconds), and the
    fixture ``notebook_kernel`` takes it. A run that names files or tests starts its kernel when
    a notebook is first asked for."""
    if (os.environ.get("COURSE_FRESH_KERNELS") == "1" or config.option.collectonly
            or os.environ.get("COURSE_PRESTART", "1") == "0" or not _whole_suite(config)):
        return
    from _kernel import SharedKernel

    kernel = SharedKernel(env=_kernel_env())
    kernel.start_in_background()
    _PRESTARTED["kernel"] = kernel


def pytest_unconfigure(config):
    kernel = _PRESTARTED.pop("kernel", None)
    if kernel is not None:  # started, and no test asked for it
        kernel.close()


def pytest_configure(config):
    config.addinivalue_line("markers", "fast: the development tier (`-m fast`): what is not slow, and "
                                       "the notebook runs tests/_tiers.py names")
    config.addinivalue_line("markers", "notebook(path, parameters=None, *, env=None, html=False): the notebook "
                                       "run a test's notebook_run fixture gives (started in the background)")
    config.addinivalue_line("markers", "early(name): the module's function `name` starts work in other processes "
                                       "at the session's start (tests/_early.py)")
    _prestart_kernel(config)


def pytest_collection_modifyitems(config, items):
    mark_tiers(items)
    # the tests that use the notebook kernel go last: its background runs go on while the other
    # tests run, and a test that asked for the kernel before they end would wait for them all
    # the tests that wait for work started early (tests/_early.py) go just before them, for the same reason
    kernel = {"notebook_kernel", "notebook_runs", "notebook_run"}
    def group(item):
        return 2 if kernel & set(getattr(item, "fixturenames", ())) else 1 if item.get_closest_marker("early") else 0

    items.sort(key=group)
    # the last test of each group, to say when the group ended (the terminal summary)
    names = ("the other tests", "the tests waiting for early work", "the tests of notebook runs")
    _GROUP_ENDS.update({item.nodeid: names[group(item)] for item, after in zip(items, items[1:] + [None])
                        if after is None or group(item) != group(after)})


_GROUP_ENDS: dict[str, str] = {}


def pytest_runtest_logfinish(nodeid, location):
    if nodeid in _GROUP_ENDS:
        _SESSION[_GROUP_ENDS[nodeid]] = time.monotonic()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The notebook runs on the shared kernels and their times (where the suite's time goes);
    after a fast-tier run, its tests that took long: candidates for the slow mark."""
    import _kernel

    if _kernel.RUN_TIMES:
        total = sum(r[2] for r in _kernel.RUN_TIMES)
        terminalreporter.write_sep("-", f"{len(_kernel.RUN_TIMES)} notebook runs on the shared kernels, "
                                        f"{total:.0f} s in all")
        for name, params, t, _, who in sorted(_kernel.RUN_TIMES, key=lambda r: -r[2]):
            shown = {k: v for k, v in params.items() if k != "record_to"}
            terminalreporter.write_line(f"{t:6.1f} s  {name} {shown if shown else ''}"
                                        f"{'  (helper kernel)' if who != 'kernel' else ''}")
    # when each lane ended, from the session's start: the last one to end sets the suite's time
    lanes = [(str(key), start, end) for key, start, end in _early.TIMES]
    lanes += [(f"{name} (in turn)", _SESSION["start"], end) for name, end in _SESSION.items() if name != "start"]
    for who in sorted({r[4] for r in _kernel.RUN_TIMES}):
        mine = [r for r in _kernel.RUN_TIMES if r[4] == who]
        lanes.append((f"notebook runs ({who})", min(r[3] - r[2] for r in mine), max(r[3] for r in mine)))
    if _SESSION.get("start") and lanes:
        t0 = _SESSION["start"]
        terminalreporter.write_sep("-", f"lanes, seconds from the session's start (it ended at "
                                        f"{time.monotonic() - t0:.0f} s)")
        for name, start, end in sorted(lanes, key=lambda r: r[2]):
            terminalreporter.write_line(f"{start - t0:6.0f} - {end - t0:4.0f} s  {name}")
    if "fast" not in (config.getoption("markexpr") or ""):
        return
    from _tiers import FAST_RUNS

    long = {}
    for reports in terminalreporter.stats.values():
        for r in reports:
            if getattr(r, "duration", None) is not None and hasattr(r, "nodeid"):
                long[r.nodeid] = long.get(r.nodeid, 0.0) + r.duration
    long = {k: v for k, v in long.items() if v > FAST_TEST_S and k.split("/")[-1] not in FAST_RUNS}
    if long:
        terminalreporter.write_sep("-", f"fast-tier tests over {FAST_TEST_S:.0f} s (mark them slow?)")
        for nodeid, s in sorted(long.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{s:6.1f} s  {nodeid}")


@pytest.fixture(scope="session")
def default_bundle():
    from helpers.engine.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model()


@pytest.fixture(scope="session")
def notebook_kernel():
    """Runs notebooks as ``helpers.course.main_job.execute_notebook`` does, on one kernel kept
    for the session: ``notebook_kernel.execute(path, out_dir, parameters, html=..., env=...)``
    (``env``: variables for that notebook, ``None`` removes one; ``COURSE_HEADLESS`` is unset
    unless a run sets it). In a whole-suite or tier run the kernel was started while the tests
    were collected, with the session's environment as it began."""
    from _kernel import FreshKernels, SharedKernel

    runner = _PRESTARTED.pop("kernel", None)  # started with the session's environment (_prestart_kernel)
    if runner is None:
        env = _kernel_env()
        runner = FreshKernels(env) if os.environ.get("COURSE_FRESH_KERNELS") == "1" else SharedKernel(env=env)
    yield runner
    runner.close()


def _processors() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.fixture(scope="session")
def notebook_runs(notebook_kernel, tmp_path_factory):
    """Each (notebook, parameters, environment) executed once per session, for every test that
    asks: ``notebook_runs.run(path, parameters, env=..., html=...)`` returns a
    :class:`_kernel.Run` (its figures and files), or raises the run's error again."""
    from _kernel import NotebookRuns, SharedKernel

    # with more than two processors, a second kernel at a lower priority takes the queued runs from
    # the end of the queue (COURSE_HELPER_KERNEL=1 or 0 says yes or no); on two, the tests in their
    # turn are the longest chain and a second kernel takes their processor: the suite took longer
    helper = None
    wanted = os.environ.get("COURSE_HELPER_KERNEL", "") or ("1" if _processors() > 2 else "0")
    if isinstance(notebook_kernel, SharedKernel) and wanted != "0":
        helper = SharedKernel(env=notebook_kernel.env, nice=HELPER_NICE)
    runs = NotebookRuns(notebook_kernel, tmp_path_factory.mktemp("notebook-runs"), helper=helper)
    yield runs
    runs.close()


@pytest.fixture
def notebook_run(request, notebook_runs):
    """The run a test's ``notebook`` mark names: ``@pytest.mark.notebook(path, parameters, env=...,
    html=...)`` (on the test, or on one of its parameters). Marked runs of the session's tests start
    in the background at the session's start (``notebook_prefetch``), in the order of the tests."""
    mark = request.node.get_closest_marker("notebook")
    assert mark is not None, "notebook_run needs @pytest.mark.notebook(path, parameters, env=..., html=...)"
    return notebook_runs.run(*mark.args, **mark.kwargs)


@pytest.fixture(scope="session", autouse=True)
def early_jobs(request, tmp_path_factory):
    """Start the work the session's tests declare with ``@pytest.mark.early("name")`` (tests/_early.py):
    the function ``name`` of the test's module once, with ``tmp_path_factory`` and the session's
    tests that mark it, before the first test. A function that several modules import (the
    browser lane's) is called once, with the tests of all of them."""

    if os.environ.get("COURSE_EARLY", "1") != "0":
        asking: dict = {}  # the function -> the session's tests that mark it
        for item in request.session.items:
            for mark in item.iter_markers("early"):
                asking.setdefault(getattr(item.module, mark.args[0]), []).append(item)
        for start, items in asking.items():
            start(tmp_path_factory, items)
    yield
    _early.shutdown()


@pytest.fixture(scope="session", autouse=True)
def notebook_prefetch(request):
    """Start the session's marked notebook runs in a background thread (the kernel computes while
    the other tests run); ``COURSE_PREFETCH=0`` runs each when its test asks instead."""
    marked = [m for m in (i.get_closest_marker("notebook") for i in request.session.items) if m is not None]
    if marked and os.environ.get("COURSE_PREFETCH", "1") != "0" and os.environ.get("COURSE_FRESH_KERNELS") != "1":
        _early.import_here(["papermill", "papermill.clientwrap", "papermill.engines", "papermill.iorw",
                            "jupyter_client.manager", "helpers.course.main_job"])
        request.getfixturevalue("notebook_runs").prefetch([(m.args, m.kwargs) for m in marked])
