"""The suite's two tiers (README, "Two commands"), applied by tests/conftest.py.

* ``slow``: notebook runs, browser runs and the heavy computations. A test that uses a fixture of
  ``NOTEBOOK_FIXTURES`` (a notebook kernel, JupyterLab, Chromium) is ``slow`` wherever it is
  written; tests/test_tiers.py checks that no other test runs a notebook or a browser unmarked.
* ``fast``: every test not marked ``slow``, plus the notebook runs named in ``FAST_RUNS``, so
  that the fast tier (``bash scripts/test.sh -m fast``) runs a notebook end to end too.
"""

import pytest

# fixtures that run notebooks or drive a browser: a test using one is in the slow tier
NOTEBOOK_FIXTURES = {"notebook_kernel", "notebook_runs", "notebook_run", "lab", "browser"}
# the notebook runs the fast tier includes (node ids from the file name on)
FAST_RUNS = {"test_notebooks.py::test_notebook_runs_and_records[01_residual_decomposition]"}
# a fast-tier test that takes longer than this is named at the end of a `-m fast` run
FAST_TEST_S = 10.0


def mark_tiers(items, notebook_fixtures=NOTEBOOK_FIXTURES, fast_runs=FAST_RUNS) -> None:
    for item in items:
        if notebook_fixtures & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.nodeid.split("/")[-1] in fast_runs or item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.fast)
