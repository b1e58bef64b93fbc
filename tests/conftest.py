"""Shared fixtures and the suite's two tiers.

Tiers (README, "Two commands"):

* ``slow``: notebook runs, browser runs and the heavy computations. Every test that uses a
  fixture of ``NOTEBOOK_FIXTURES`` (a notebook kernel, JupyterLab, Chromium) is marked
  ``slow`` here, whatever its file says; tests/test_tiers.py checks that no other test runs a
  notebook or a browser unmarked.
* ``fast``: everything not marked ``slow``, plus the few notebook runs in ``FAST_RUNS`` (marked
  ``fast`` explicitly), so that the fast tier runs a notebook end to end too.
  ``bash scripts/test.sh -m fast`` runs it.

Notebook runs share one kernel per session (fixture ``notebook_kernel``; tests/_kernel.py),
reset between notebooks; ``notebook_runs`` runs each (notebook, parameters) once per session for
every test that asks. Browser tests share one JupyterLab and one Chromium (fixtures ``lab`` and
``browser``; tests/_lab.py).
"""

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

# fixtures that run notebooks or drive a browser: a test using one is in the slow tier
NOTEBOOK_FIXTURES = {"notebook_kernel", "notebook_runs", "lab", "browser"}
# the notebook runs that the fast tier includes (node ids without the file's folder)
FAST_RUNS = {"test_notebooks.py::test_notebook_runs_and_records[01_residual_decomposition]"}


def pytest_configure(config):
    config.addinivalue_line("markers", "fast: the development tier (`-m fast`): what is not slow, and FAST_RUNS")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if NOTEBOOK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        short = item.nodeid.split("/")[-1]
        if short in FAST_RUNS or item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.fast)


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
    unless a run sets it)."""
    from _kernel import FreshKernels, SharedKernel

    from helpers.engine.paths import ROOT

    env = {k: v for k, v in os.environ.items() if k != "COURSE_HEADLESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    runner = FreshKernels(env) if os.environ.get("COURSE_FRESH_KERNELS") == "1" else SharedKernel(env=env)
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def notebook_runs(notebook_kernel, tmp_path_factory):
    """Each (notebook, parameters, environment) executed once per session, for every test that
    asks: ``notebook_runs.run(path, parameters, env=..., html=...)`` returns a
    :class:`_kernel.Run` (its figures and files), or raises the run's error again."""
    from _kernel import NotebookRuns

    return NotebookRuns(notebook_kernel, tmp_path_factory.mktemp("notebook-runs"))
