"""What the benchmarks share: their common options, a random-weight model, interleaved timing
and a peak-memory sampler run in a fresh process.

The benchmarks are scripts (``python benchmarks/bench_x.py``); importing this module puts the
repository root on ``sys.path`` so that ``helpers`` imports from a clone without installing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def parser(doc: str, *, model: str, repeats: int = 7, threads: int = 2) -> argparse.ArgumentParser:
    """An argument parser with the options every timing benchmark takes: ``--model``,
    ``--repeats`` (interleaved repeats) and ``--threads`` (torch's CPU threads)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=model)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--threads", type=int, default=threads)
    return ap


def parse_or_work(doc: str, *, model: str, size: tuple[str, int], mode: str,
                  worker: Callable[[str, int, str], None]) -> argparse.Namespace | None:
    """The options of a benchmark that sets ``mode`` against a plain forward pass: those of
    :func:`parser`, ``size`` (its option and default, e.g. ``("--batch", 8)``) and ``--worker``
    (``"plain"`` or ``mode``). Sets torch's CPU threads; in worker mode runs
    ``worker(model, size, mode)`` and returns ``None``, else returns the options."""
    ap = parser(doc, model=model)
    ap.add_argument(size[0], type=int, default=size[1])
    ap.add_argument("--worker", choices=["plain", mode])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args.model, getattr(args, size[0].lstrip("-")), args.worker)
        return None
    return args


def peaks(script: str, args: argparse.Namespace, size: str, mode: str) -> dict[str, dict]:
    """The worker's measurement (:func:`print_peak`) of the plain forward and of ``mode``, each in a
    fresh process of ``script`` with the same ``--model``, ``size`` option and ``--threads``."""
    value = str(getattr(args, size.lstrip("-")))
    options = ("--model", args.model, size, value, "--threads", str(args.threads))
    return {m: in_fresh_process(script, "--worker", m, *options) for m in ("plain", mode)}


def random_model(model_name: str) -> torch.nn.Module:
    """``model_name`` from open_clip (or the course's own names) with random weights, seed 0, in
    eval mode."""
    import open_clip

    import helpers.engine.models  # noqa: F401  (registers the course's own model names)

    torch.manual_seed(0)
    return open_clip.create_model(model_name).eval()


def interleaved(repeats: int, steps: dict[str, Callable[[], Any]], sync: Callable[[], None] = lambda: None,
                grad: bool = False, warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time each step ``repeats`` times, the steps taking turns so that drifts in a shared
    machine's load hit all alike: ``(seconds per step, each step's last result)``. ``sync`` is
    called before and after each timed step (``torch.cuda.synchronize`` on a GPU); the steps run
    without autograd unless ``grad``. The first ``warmup`` rounds are not timed."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    last: dict[str, Any] = {}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            with torch.set_grad_enabled(grad):
                last[name] = step()
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times, last


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(t) for name, t in times.items()}


class PeakRSS:
    """Samples this process's resident set size (Linux /proc) in a thread; peak above start."""

    def __init__(self, interval: float = 0.0005) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start = self.peak = self._rss()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def print_peak(work: Callable[[], torch.Tensor]) -> None:
    """A worker's measurement: run ``work`` once (after the caller's warm-up) without autograd,
    sampling the resident set size, and print ``{"extra_mib", "shape"}`` as JSON (for
    :func:`in_fresh_process`)."""
    gc.collect()
    with PeakRSS() as mem, torch.no_grad():
        out = work()
    print(json.dumps({"extra_mib": mem.extra_mib, "shape": list(out.shape)}))


def in_fresh_process(script: str, *args: str) -> dict:
    """Run ``python script *args`` (a benchmark's worker mode) and read the JSON object its last
    line prints. Large blocks come straight from mmap and freed ones go back at once, so that the
    resident set size follows live memory instead of what glibc keeps cached: workers doing
    different work are then compared fairly."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])
