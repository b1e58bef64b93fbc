"""Work that runs in other processes (pip's resolutions, package builds, a rehearsal in a fresh
environment), started in threads at the session's start so that it goes on while the other tests
run; the test that needs it waits for its result.

A test declares it with ``@pytest.mark.early("name")``: at the session's start tests/conftest.py
calls the function ``name`` of the test's module once, with the session's ``tmp_path_factory``
and the session's tests that carry the mark; that function starts jobs with :func:`job`. The
test then asks :func:`job` for the same key and gets the same future (a job asked for before it
was started runs then). Early work runs at a lower priority (``nice=False``: at the tests' own,
for a lane that would otherwise end last). A job must not change this process's state
(environment variables, the working folder): it runs beside other tests, which do change the
environment (``monkeypatch.setenv``), so a job gives the processes it starts :func:`environ`,
the environment as it was when the session began, not ``os.environ``.
``COURSE_EARLY=0`` starts nothing early.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Hashable

_lock = threading.Lock()
_jobs: dict[Hashable, Future] = {}
_pool: ThreadPoolExecutor | None = None
EARLY_NICE = 10  # how much nicer early work's threads and processes are than the tests (Linux)
REFUSED: list[str] = []  # why the system refused to lower a thread's priority, if it did
_thread_state = threading.local()
# (key, start, end) of each job, seconds on time.monotonic(), for the session's time summary
TIMES: list[tuple[Hashable, float, float]] = []
_SESSION_ENV = dict(os.environ)  # read once, when the session imports this module (tests/conftest.py)


def environ() -> dict[str, str]:
    """A copy of the environment variables as they were when the session began."""
    return dict(_SESSION_ENV)


def job(key: Hashable, fn: Callable[..., Any], *args: Any, nice: bool = True, **kwargs: Any) -> Future:
    """The future of ``fn(*args, **kwargs)`` under ``key``, started once (later calls with the same
    key return the first call's future, whatever their arguments).

    ``nice=False``: the job runs in a thread of its own at the tests' priority, for a lane long
    enough to set the suite's end (the browser's): run nicer, it takes only what the tests and the
    notebook kernel leave, and ends after them."""
    global _pool
    with _lock:
        if key not in _jobs:
            if not nice:
                future: Future = Future()
                threading.Thread(target=_in_own_thread, args=(future, key, fn, args, kwargs), daemon=True,
                                 name=f"early-{key}").start()
                _jobs[key] = future
            else:
                if _pool is None:
                    _pool = ThreadPoolExecutor(8, thread_name_prefix="early")
                _jobs[key] = _pool.submit(_timed, key, fn, args, kwargs)
        return _jobs[key]


def _in_own_thread(future: Future, key: Hashable, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(_timed(key, fn, args, kwargs, lower=False))
    except BaseException as exc:  # the test that asks raises it
        future.set_exception(exc)


def _timed(key: Hashable, fn: Callable[..., Any], args: tuple, kwargs: dict, lower: bool = True) -> Any:
    if lower:
        _lower_priority()
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        TIMES.append((key, start, time.monotonic()))


def _lower_priority() -> None:
    """Lower this thread's scheduling priority (Linux: the nice value is per thread, and the
    processes it starts inherit it). Early work is waited for late in the session: the tests
    running now, and the notebook kernel they feed, get the processors first, and early work takes
    what they leave (while they wait on a process, a file or the network)."""
    if getattr(_thread_state, "lowered", False):
        return  # the pool's threads serve job after job: once each
    _thread_state.lowered = True
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id") and os.uname().sysname == "Linux":
        try:
            here = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, here, min(19, os.getpriority(os.PRIO_PROCESS, here) + EARLY_NICE))
        except OSError as exc:  # a system that refuses: the work runs at the tests' priority
            REFUSED.append(str(exc))


def shutdown() -> None:
    """Wait for the jobs started (at the session's end)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
        futures = list(_jobs.values())
        _jobs.clear()
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:  # those in threads of their own
        if not future.done():
            future.exception()


def import_here(names: list[str]) -> None:
    """Import ``names`` in this, the main, thread before a background thread needs them: an import
    that makes a logger while pytest iterates over the loggers (it does at each test's every
    phase) stops that test with "dictionary changed size during iteration". A module that is
    missing is left to the thread, which reports it to the test that needs it."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
