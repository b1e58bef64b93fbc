"""One notebook kernel for many papermill runs: started once, reset between notebooks.

A notebook run costs a kernel start and the imports of torch, open_clip, plotly and the course's
package (about 10 s on two cores) before its first cell does any work. :class:`SharedKernel`
pays that once: it starts a kernel, imports what the notebooks import, records the kernel's
state (``tests/_kernel_side.py``), and before each notebook puts that state back: a fresh user
namespace and execution count, the notebook's folder as working folder, the environment asked
for, no monkeypatch, warning filter, logging level or torch setting left by an earlier notebook,
torch's random generator back where it stood after the imports. Each notebook is then run by
papermill (parameters injected, outputs and errors written to the executed copy as
:func:`helpers.course.main_job.execute_notebook` writes them), on the kept kernel.

A kernel that died, hung past its time limit or failed to reset is replaced by a fresh one
before the next notebook. ``tests/conftest.py`` holds one per test session (fixture
``notebook_kernel``), and :class:`NotebookRuns` runs each notebook once per session, the runs
the session's tests declare (``@pytest.mark.notebook``) in a background thread from the
session's start. ``COURSE_FRESH_KERNELS=1`` gives every run a kernel of its own instead (the
plain ``execute_notebook``, no background runs), to tell a notebook's own failure from one of
sharing; ``COURSE_PREFETCH=0`` keeps the shared kernel but runs each notebook when its test asks.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KERNEL_SIDE = (Path(__file__).with_name("_kernel_side.py")).read_text()

# what the course notebooks import, imported once per kernel: the libraries of their import cells
# and every module of the course's package (so a new module is in the snapshot the resets go back to)
PRELOAD = """
import copy, importlib, json, math, os, pkgutil, sys
import numpy, pandas, torch, open_clip, ipywidgets, plotly.express, plotly.graph_objects, plotly.io
from IPython.display import display
import helpers
for _m in pkgutil.walk_packages(helpers.__path__, "helpers."):
    if not _m.name.endswith("__main__"):
        importlib.import_module(_m.name)
del _m
"""


# (notebook, parameters, seconds, end on time.monotonic(), which kernel) of every notebook run on
# the shared kernels this session, for the terminal summary (tests/conftest.py): where the suite's time goes
RUN_TIMES: list[tuple[str, dict[str, Any], float, float, str]] = []


def papermill_keeps_the_working_folder() -> None:
    """papermill's local file handler changes the process's working folder around each read and
    write (to the one that was current when the run began); from the thread that runs notebooks
    that would move the tests running meanwhile (a test's own ``chdir`` undone under it). The
    suite hands papermill absolute paths only: the handler reads and writes them where they are."""
    from papermill.iorw import papermill_io

    papermill_io.get_handler("local").cwd = lambda new_path: None


class KernelError(RuntimeError):
    pass


def _engine(km):
    """A papermill engine that runs on ``km``'s kernel and leaves it running."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    class SharedKernelEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            final = merge_kwargs(kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                                 kernel_name=kernel_name, log=logger, log_output=log_output,
                                 stdout_file=stdout_file, stderr_file=stderr_file)
            client = PapermillNotebookClient(nb_man, km=km, **final)
            try:
                return client.execute()
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()

    return SharedKernelEngine


class SharedKernel:
    """A kernel kept across notebook runs (see the module docstring)."""

    def __init__(self, kernel_name: str = "python3", env: dict[str, str] | None = None,
                 preload: str = PRELOAD, startup_timeout: int = 120, nice: int = 0):
        self.kernel_name, self.preload, self.startup_timeout = kernel_name, preload, startup_timeout
        self.nice = nice  # added to the kernel's niceness at its start (Linux, macOS): a helper's kernel
        self.env = dict(os.environ if env is None else env)
        self.km = None
        self.runs = 0  # notebooks run on the current kernel
        self.starts = 0
        self.lock = threading.RLock()  # one notebook at a time, from whichever thread asks
        self._starting: threading.Thread | None = None

    # -- the kernel -----------------------------------------------------------------------

    def start_in_background(self) -> None:
        """Start the kernel in a thread of its own (it holds the lock until the kernel is ready:
        a notebook asked for meanwhile waits for it). A start that fails here leaves no kernel,
        and the first notebook starts one again, and says why if it fails again."""
        started = threading.Event()

        def run() -> None:
            with self.lock:
                started.set()
                try:
                    self.start()
                except Exception:  # noqa: BLE001 - told by the next start, in the notebook that needs it
                    self.close()

        self._starting = threading.Thread(target=run, name="kernel-start", daemon=True)
        self._starting.start()
        started.wait()  # the lock is taken before this returns: no notebook can slip in first

    def start(self) -> None:
        from jupyter_client.manager import KernelManager

        self.close()
        self.km = KernelManager(kernel_name=self.kernel_name)
        # the kernel's own log stays quiet below errors, as in execute_notebook; its history in
        # memory, as nbclient starts kernels (no shared history file for kernels to lock)
        self.km.start_kernel(env=self.env, cwd=str(ROOT / "notebooks"),
                             extra_arguments=["--IPKernelApp.log_level=ERROR", "--HistoryManager.hist_file=:memory:"])
        self.starts += 1
        self.runs = 0
        setup = (f"import sys as _s, types as _t\n_m = _t.ModuleType('_shared_kernel')\n"
                 f"exec(compile({KERNEL_SIDE!r}, '_kernel_side.py', 'exec'), _m.__dict__)\n"
                 f"_s.modules['_shared_kernel'] = _m\ndel _s, _t, _m\n")
        nice = f"import os as _o\nif hasattr(_o, 'nice'): _o.nice({int(self.nice)})\ndel _o\n" if self.nice else ""
        out = self._run(setup + nice + self.preload + "\nimport _shared_kernel\n_shared_kernel.snapshot()\n",
                        timeout=self.startup_timeout)
        if out["stderr"]:  # an import that warns would warn in every fresh kernel: not hidden here
            raise KernelError(f"the shared kernel's imports wrote to stderr:\n{out['stderr'][:3000]}")

    def alive(self) -> bool:
        return self.km is not None and self.km.is_alive()

    def close(self) -> None:
        starting = self._starting
        if starting is not None and starting is not threading.current_thread():
            starting.join()  # a kernel still starting would outlive its close
            self._starting = None
        if self.km is not None:
            try:
                self.km.shutdown_kernel(now=True)
            except Exception:
                pass
            self.km = None

    def _run(self, code: str, timeout: float) -> dict[str, str]:
        """Run ``code`` (not stored in the history); its stdout and stderr. Raises on an error."""
        from jupyter_client.session import Session

        # a client of its own, with a session of its own: message ids from another client's
        # session (papermill's) could match this one's, and its outputs be taken for these
        own = self.km.session
        kc = self.km.client(session=Session(key=own.key, signature_scheme=own.signature_scheme))
        kc.start_channels()
        out = {"stdout": "", "stderr": "", "error": ""}
        try:
            kc.wait_for_ready(timeout=self.startup_timeout)
            msg_id = kc.execute(code, store_history=False, allow_stdin=False)
            while True:
                try:
                    msg = kc.get_iopub_msg(timeout=timeout)
                except queue.Empty:
                    raise KernelError(f"the shared kernel did not answer within {timeout} s") from None
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out[content["name"]] += content["text"]
                elif kind == "error":
                    out["error"] = "\n".join(content["traceback"])
                elif kind == "status" and content["execution_state"] == "idle":
                    break
        finally:
            kc.stop_channels()
        if out["error"]:
            raise KernelError(f"the shared kernel failed:\n{out['error'][-3000:]}")
        return out

    # -- notebooks ------------------------------------------------------------------------

    def reset(self, cwd: Path, env: dict[str, str | None] | None = None) -> None:
        env = env or {}
        setenv = {k: str(v) for k, v in env.items() if v is not None}
        unset = [k for k, v in env.items() if v is None]
        self._run(f"__import__('_shared_kernel').reset({str(cwd)!r}, {setenv!r}, {unset!r})\n",
                  timeout=120)

    def execute(self, path: Path, out_dir: Path, parameters: dict[str, Any] | None = None, *,
                html: bool = True, env: dict[str, str | None] | None = None, timeout: int = 900) -> dict[str, Any]:
        """As :func:`helpers.course.main_job.execute_notebook` (same files written, same return),
        on the shared kernel; ``env`` sets variables for this notebook (``None`` removes one)."""
        with self.lock:
            return self._execute(Path(path), Path(out_dir), parameters, html=html, env=env, timeout=timeout)

    def _execute(self, path, out_dir, parameters, *, html, env, timeout):
        import papermill as pm
        from papermill.engines import papermill_engines

        from helpers.course.main_job import run_files

        papermill_keeps_the_working_folder()
        executed, figures, params = run_files(path, out_dir, parameters)
        if not self.alive():
            self.start()
        try:
            self.reset(path.parent.resolve(), env)
        except KernelError:
            self.start()
            self.reset(path.parent.resolve(), env)
        name = f"shared-kernel-{id(self)}"
        papermill_engines.register(name, _engine(self.km))
        started = time.perf_counter()
        try:
            # written once at the end (or at the error), not after every cell
            pm.execute_notebook(str(path), str(executed), parameters=params, engine_name=name,
                                kernel_name=self.kernel_name, progress_bar=False, execution_timeout=timeout,
                                request_save_on_cell_execute=False)
        except pm.PapermillExecutionError:
            raise  # an error in a cell: the notebook's own; the next reset clears what it left
        except BaseException:
            self.close()  # dead, hung past its limit, or interrupted: the next notebook gets a new kernel
            raise
        finally:
            self.runs += 1
            RUN_TIMES.append((f"{path.parent.name}/{path.name}", dict(parameters or {}), time.perf_counter() - started,
                              time.monotonic(), "helper kernel" if self.nice else "kernel"))
        if html:
            from helpers.course.main_job import export_html

            export_html(executed, out_dir)
        return json.loads(figures.read_text()) if figures.exists() else {}


class FreshKernels:
    """The same interface, a kernel of its own for every notebook (``COURSE_FRESH_KERNELS=1``)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = dict(os.environ if env is None else env)

    def execute(self, path, out_dir, parameters=None, *, html=True, env=None, timeout=900):
        from helpers.course.main_job import execute_notebook

        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        for k, v in (env or {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        try:
            return execute_notebook(Path(path), Path(out_dir), parameters, html=html, timeout=timeout)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def close(self) -> None:
        pass


class Run:
    """One executed notebook: ``figures`` (what it recorded), ``executed`` (the executed copy),
    ``html`` (its HTML export, when asked for), ``out_dir``."""

    def __init__(self, path: Path, out_dir: Path, figures: dict[str, Any], html: bool):
        self.path, self.out_dir, self.figures = Path(path), Path(out_dir), figures
        self.executed = self.out_dir / "notebooks" / self.path.name
        self.html = self.out_dir / "html" / f"{self.path.stem}.html" if html else None

    def notebook(self) -> dict[str, Any]:
        return json.loads(self.executed.read_text())


class NotebookRuns:
    """Runs each (notebook, parameters, environment, html) once; later asks get the same :class:`Run`
    (or the same error again).

    :meth:`prefetch` runs a list of them in a thread of its own, in that order, while the test
    session goes on with other tests: the kernel computes on one core while the tests use the
    other. With a ``helper`` runner (a second kernel, at a lower priority), a second thread takes
    runs from the end of the same list: it computes on what the others leave of the processors,
    and the list is done sooner. A test that asks for a run waits for it if it is queued or
    running, and runs it itself if not.
    """

    def __init__(self, runner, root: Path, helper=None):
        self.runner, self.helper, self.root = runner, helper, Path(root)
        self._done: dict[str, Run | BaseException] = {}
        self._queued: list[tuple[str, tuple, dict]] = []
        self._running: set[str] = set()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._count = 0

    @staticmethod
    def key(path: Path, parameters: dict[str, Any] | None = None, *, env: dict[str, str | None] | None = None,
            html: bool = False, timeout: int = 900) -> str:
        return json.dumps([str(Path(path).resolve()), parameters or {}, env or {}, html], sort_keys=True, default=str)

    def _execute(self, key: str, path: Path, parameters=None, *, env=None, html=False, timeout=900,
                 runner=None) -> None:
        with self._cond:
            out = self.root / f"run{self._count:03d}-{Path(path).stem}"
            self._count += 1
        try:
            figures = (runner or self.runner).execute(path, out, parameters, html=html, env=env, timeout=timeout)
            result: Run | BaseException = Run(path, out, figures, html)
        except BaseException as exc:  # kept for the test that asks
            result = exc
        with self._cond:
            self._done[key] = result
            self._running.discard(key)
            self._cond.notify_all()

    def prefetch(self, runs: list[tuple[tuple, dict]]) -> None:
        """Start running ``runs`` (each ``(args, kwargs)`` as for :meth:`run`) in the background:
        the runner from the front of the list, the helper (if any) from its end."""
        with self._cond:
            seen = set(self._done) | self._running | {k for k, _, _ in self._queued}
            for args, kwargs in runs:
                k = self.key(*args, **kwargs)
                if k not in seen:
                    self._queued.append((k, args, kwargs))
                    seen.add(k)
            if self._queued and not self._busy():
                workers = [(self.runner, False)] + ([(self.helper, True)] if self.helper is not None else [])
                self._threads = [threading.Thread(target=self._work, args=(runner, from_end), daemon=True,
                                                  name=f"notebook-prefetch{'-helper' if from_end else ''}")
                                 for runner, from_end in workers]
                for t in self._threads:
                    t.start()

    def _busy(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _work(self, runner, from_end: bool) -> None:
        mine: list[str] = []
        try:
            while True:
                with self._cond:
                    if self._stop or not self._queued:
                        return
                    key, args, kwargs = self._queued.pop(-1 if from_end else 0)
                    self._running.add(key)
                    mine.append(key)
                self._execute(key, *args, runner=runner, **kwargs)
        except BaseException as exc:  # whatever stops this thread, no test waits for it in vain
            with self._cond:
                for key in [k for k, _, _ in self._queued] + [k for k in mine if k in self._running]:
                    self._done.setdefault(key, exc)
                    self._running.discard(key)
                self._queued.clear()
                self._cond.notify_all()
            raise
        finally:
            with self._cond:
                if self._stop:  # what is left runs when a test asks for it
                    self._queued.clear()
                self._cond.notify_all()

    def run(self, path: Path, parameters: dict[str, Any] | None = None, *, env: dict[str, str | None] | None = None,
            html: bool = False, timeout: int = 900) -> Run:
        key = self.key(path, parameters, env=env, html=html)

        def pending():
            return key in self._running or any(k == key for k, _, _ in self._queued)

        with self._cond:
            if key not in self._done and pending() and self._busy():
                self._cond.wait_for(lambda: key in self._done or not self._busy() or not pending())
            mine = key not in self._done
            if mine:  # not queued any more (the threads stopped): run here, and no thread takes it
                self._queued = [q for q in self._queued if q[0] != key]
                self._running.add(key)
        if mine:
            self._execute(key, path, parameters, env=env, html=html, timeout=timeout)
        done = self._done[key]
        if isinstance(done, BaseException):
            raise done
        return done

    def close(self) -> None:
        """Stop after the notebooks running now (the kernels' shutdown ends them sooner)."""
        with self._cond:
            self._stop = True
            threads = list(self._threads)
        if any(t.is_alive() for t in threads):
            self.runner.close()  # the session's kernel: its fixture closes it again at the end
        if self.helper is not None:
            self.helper.close()
        for t in threads:
            t.join(timeout=60)
