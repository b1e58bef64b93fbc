"""The shared notebook kernel (tests/_kernel.py) runs each notebook as a kernel of its own
would: nothing an earlier notebook defined, patched or switched is seen by the next."""

import json

import nbformat
import pytest
import torch

from helpers.course.main_job import stderr_outputs


def _notebook(path, *cells):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('record_to = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


PATCHES = """
import logging, os, sys, warnings
import numpy as np, plotly.io as pio, torch, ipywidgets
import open_clip.transformer as T
import helpers.engine.labels as L
import helpers.course.narrative as N

left_over = 1
L.layer_label = lambda *a, **k: "patched"
T.ResidualAttentionBlock.forward = lambda self, *a, **k: None
T.ResidualAttentionBlock.added_by_a = 1
N.added_by_a = 1
torch.nn.functional.relu = None
warnings.simplefilter("ignore")
logging.getLogger().setLevel(logging.CRITICAL)
logging.disable(logging.WARNING)
torch.set_grad_enabled(False)
torch.set_default_dtype(torch.float64)
torch.manual_seed(123)
torch.use_deterministic_algorithms(True)
hook = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
os.environ["SET_BY_A"] = "1"
del os.environ["PYTHONPATH"]
sys.path.insert(0, "/nowhere")
os.chdir("/")
np.seterr(all="raise")
np.set_printoptions(precision=2)
pio.renderers.default = "json"
pio.templates.default = "none"
get_ipython().events.register("post_run_cell", lambda *a: print("a callback of notebook a"))
slider = ipywidgets.IntSlider()
display(slider)
"""

CHECKS = """
import json, logging, os, sys, warnings
import numpy as np, plotly.io as pio, torch, ipywidgets
import open_clip.transformer as T
import helpers.engine.labels as L
import helpers.course.narrative as N

assert "left_over" not in globals() and "slider" not in globals()
assert L.layer_label(3) != "patched"
assert T.ResidualAttentionBlock.forward.__qualname__ == "ResidualAttentionBlock.forward"
assert not hasattr(T.ResidualAttentionBlock, "added_by_a") and not hasattr(N, "added_by_a")
assert torch.nn.functional.relu is not None
assert ("ignore", None, Warning, None, 0) not in warnings.filters
assert logging.getLogger().level != logging.CRITICAL and logging.root.manager.disable == 0
assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32
assert not torch.are_deterministic_algorithms_enabled()
assert not torch.nn.modules.module._global_forward_hooks
assert "SET_BY_A" not in os.environ and os.environ["PYTHONPATH"] == {pythonpath!r}
assert os.environ["SET_FOR_B"] == "b" and {unset!r} not in os.environ
assert "/nowhere" not in sys.path and os.getcwd() == {cwd!r}
assert np.geterr()["divide"] != "raise" and np.get_printoptions()["precision"] == 8
assert pio.renderers.default != "json" and pio.templates.default != "none"
assert not ipywidgets.widgets.widget._instances
json.dump({{"rand": torch.rand(4).tolist()}}, open(record_to, "w"))
"""

WARNER = "import warnings\n\ndef warn():\n    warnings.warn('shown in every notebook', UserWarning)\n"


def test_a_notebook_sees_nothing_of_the_one_before(notebook_kernel, tmp_path):
    env = notebook_kernel.env  # the kernel's environment at its start
    unset = next(k for k in sorted(env) if k != "PYTHONPATH")  # one that notebook b runs without
    a = _notebook(tmp_path / "a" / "a.ipynb", PATCHES, "print('a done')")
    b = _notebook(tmp_path / "b" / "b.ipynb", CHECKS.format(cwd=str((tmp_path / "b").resolve()),
                                                           pythonpath=env["PYTHONPATH"], unset=unset))
    notebook_kernel.execute(a, tmp_path / "out-a", html=False)
    figures = notebook_kernel.execute(b, tmp_path / "out-b", html=False, env={"SET_FOR_B": "b", unset: None})
    out = json.loads((tmp_path / "out-b" / "notebooks" / "b.ipynb").read_text())
    assert "a callback of notebook a" not in json.dumps(out)
    assert [c["execution_count"] for c in out["cells"]] == [1, 2, 3]  # counted from 1, as in a kernel of its own
    # torch's generator starts where it stood after the kernel's imports, not where notebook a left it
    from _kernel import SharedKernel

    if not isinstance(notebook_kernel, SharedKernel):
        return  # COURSE_FRESH_KERNELS=1: a fresh process seeds torch anew
    again = notebook_kernel.execute(b, tmp_path / "out-b2", html=False, env={"SET_FOR_B": "b", unset: None})
    assert again["rand"] == figures["rand"]
    assert figures["rand"] != torch.rand(4, generator=torch.Generator().manual_seed(123)).tolist()


def test_a_warning_shown_before_is_shown_again(notebook_kernel, tmp_path):
    """Python shows a warning once per place; each notebook must still show its own."""
    (tmp_path / "warner.py").write_text(WARNER)
    for name in ("first", "second"):
        nb = _notebook(tmp_path / f"{name}.ipynb", f"import sys\nsys.path.insert(0, {str(tmp_path)!r})",
                       "import warner\nwarner.warn()")
        notebook_kernel.execute(nb, tmp_path / f"out-{name}", html=False)
        noisy = stderr_outputs(tmp_path / f"out-{name}" / "notebooks" / f"{name}.ipynb")
        assert noisy and "shown in every notebook" in noisy[0][1], (name, noisy)


def test_a_failed_notebook_leaves_a_working_kernel(notebook_kernel, tmp_path):
    import papermill as pm

    bad = _notebook(tmp_path / "bad.ipynb", "broken = 1", "raise RuntimeError('on purpose')")
    with pytest.raises(pm.PapermillExecutionError, match="on purpose"):
        notebook_kernel.execute(bad, tmp_path / "out-bad", html=False)
    executed = json.loads((tmp_path / "out-bad" / "notebooks" / "bad.ipynb").read_text())
    assert "on purpose" in json.dumps(executed)  # the executed copy keeps the error, as papermill writes it
    good = _notebook(tmp_path / "good.ipynb", "assert 'broken' not in globals()",
                     "import json\njson.dump({'ok': True}, open(record_to, 'w'))")
    assert notebook_kernel.execute(good, tmp_path / "out-good", html=False) == {"ok": True}


@pytest.mark.slow  # it names papermill (tests/test_tiers.py), though it runs no notebook
def test_papermill_reads_and_writes_without_moving_the_working_folder(tmp_path, monkeypatch):
    """The notebooks run in a thread beside the other tests: papermill's reads and writes there
    must not change the process's working folder (tests/_kernel.py)."""
    import os

    from _kernel import papermill_keeps_the_working_folder
    from papermill.iorw import local_file_io_cwd, papermill_io

    papermill_keeps_the_working_folder()
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    seen = []
    real_chdir = os.chdir
    monkeypatch.setattr(os, "chdir", lambda p: seen.append(p) or real_chdir(p))
    target = tmp_path / "elsewhere" / "n.ipynb"
    target.parent.mkdir()
    with local_file_io_cwd(str(tmp_path)):  # as papermill.execute_notebook does at its start
        papermill_io.write("{}", str(target))
        assert papermill_io.read(str(target)) == "{}"
    assert seen == [] and os.getcwd() == str(here)


# --- the queue of runs: the kernel takes it from the front, the helper kernel from the end --------

class _FakeRunner:
    """A runner that runs nothing: it records which notebooks it was given, in order."""

    def __init__(self, name, log, pause=0.02, fail=()):
        self.name, self.log, self.pause, self.fail = name, log, pause, set(fail)

    def execute(self, path, out_dir, parameters=None, *, html=False, env=None, timeout=900):
        import time

        time.sleep(self.pause)
        self.log.append((self.name, path.name))
        if path.name in self.fail:
            raise RuntimeError(f"{path.name} failed")
        return {"ran": path.name, "on": self.name}

    def close(self):
        pass


@pytest.mark.parametrize("with_helper", [False, True], ids=["one kernel", "a helper kernel"])
def test_queued_runs_are_taken_from_both_ends_and_each_runs_once(tmp_path, with_helper):
    from pathlib import Path

    from _kernel import NotebookRuns

    log = []
    names = [f"nb{i}.ipynb" for i in range(8)]
    helper = _FakeRunner("helper", log, pause=0.05) if with_helper else None
    runs = NotebookRuns(_FakeRunner("kernel", log, fail={"nb3.ipynb"}), tmp_path, helper=helper)
    runs.prefetch([((Path(n),), {}) for n in names])
    try:
        for n in names:  # in the tests' order, as they ask
            if n == "nb3.ipynb":
                with pytest.raises(RuntimeError, match="nb3.ipynb failed"):
                    runs.run(Path(n))
                continue
            got = runs.run(Path(n))
            assert got.figures["ran"] == n
        assert runs.run(Path("nb9.ipynb")).figures == {"ran": "nb9.ipynb", "on": "kernel"}  # not queued: run here
    finally:
        runs.close()
    assert sorted(n for _, n in log) == sorted(names + ["nb9.ipynb"])  # each once
    mine = [n for who, n in log if who == "kernel" and n != "nb9.ipynb"]
    assert mine == sorted(mine) and mine[0] == "nb0.ipynb"  # from the front, in order
    theirs = [n for who, n in log if who == "helper"]
    assert theirs == sorted(theirs, reverse=True) and (not with_helper or theirs[0] == "nb7.ipynb")  # from the end
    assert bool(theirs) == with_helper


@pytest.mark.slow  # two kernels started, notebooks run: the slow tier's, as every notebook run
def test_a_kernel_started_in_the_background_is_waited_for(tmp_path):
    """A whole-suite run starts its kernel while the tests are collected (tests/conftest.py): a
    notebook asked for meanwhile waits for that start and runs on that kernel; a start that
    failed is made again by the first notebook, which says why when it fails again."""
    import os

    from _kernel import KernelError, SharedKernel

    nb = _notebook(tmp_path / "nb.ipynb", "import json\njson.dump({'pid': __import__('os').getpid()}, open(record_to, 'w'))")
    kernel = SharedKernel(env=dict(os.environ), preload="import json\n")  # the kernel without the course's imports
    try:
        kernel.start_in_background()
        first = kernel.execute(nb, tmp_path / "out-1", html=False)
        assert kernel.starts == 1 and kernel.execute(nb, tmp_path / "out-2", html=False) == first
    finally:
        kernel.close()
    broken = SharedKernel(env=dict(os.environ), preload="raise RuntimeError('a preload that fails')\n")
    try:
        broken.start_in_background()
        with pytest.raises(KernelError, match="a preload that fails"):
            broken.execute(nb, tmp_path / "out-3", html=False)
        assert broken.starts == 2  # the start in the background, and the one the notebook made
    finally:
        broken.close()


def test_only_whole_suite_runs_start_the_kernel_early():
    from pathlib import Path
    from types import SimpleNamespace

    from conftest import _whole_suite

    here = Path(__file__).resolve().parent

    def config(*args, testpaths=False, cwd=here.parent):
        source = pytest.Config.ArgsSource.TESTPATHS if testpaths else pytest.Config.ArgsSource.ARGS
        return SimpleNamespace(args=list(args), args_source=source, rootpath=here.parent,
                               invocation_params=SimpleNamespace(dir=cwd))

    assert _whole_suite(config("tests", testpaths=True, cwd="/"))  # `pytest` alone, from any folder
    assert _whole_suite(config("tests")) and _whole_suite(config(".")) and _whole_suite(config(".", cwd=here))
    assert not _whole_suite(config("tests/test_metrics.py"))
    assert not _whole_suite(config("tests", "tests/test_metrics.py::test_x"))
    assert not _whole_suite(config("test_metrics.py", cwd=here))
