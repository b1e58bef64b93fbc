"""Time the test suite (or part of it) per test and per file, in wall-clock and CPU seconds.

    python scripts/time_suite.py [--base REF] [--rounds 1] [--json out.json] [-- PYTEST ARGS]

Runs ``python -m pytest PYTEST ARGS`` (default: the whole suite) with a small plugin that
records, for every test (its setup and teardown included), the wall-clock time and the CPU time
of the whole process tree: pytest itself, the notebook kernels, JupyterLab and Chromium.
Prints the slowest tests, the totals per file and for the run.

CPU seconds are the steadier figure on a shared machine: wall-clock time stretches with other
people's load, the CPU time a test needs much less. On an idle machine of N cores the wall time
lies between CPU / N and CPU.

``--base REF`` times a copy of the git revision REF (``git archive``, in a temporary folder) with the same
arguments, alternating the two, and prints new / old per file and in all: both measured in the
same period, so the ratio holds even when the load changes between periods. ``--rounds`` runs
each side that many times (the figures are the medians).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
import json, os, resource, time

import psutil

_ME = psutil.Process()
_OUT = os.environ["SUITE_TIMER_OUT"]
_rows = {}
_t0 = {}


def _tree_cpu():
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for p in _ME.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def pytest_sessionstart(session):
    _t0["session"] = (time.perf_counter(), _tree_cpu())


def pytest_runtest_logstart(nodeid, location):
    _t0[nodeid] = (time.perf_counter(), _tree_cpu())


def pytest_runtest_logfinish(nodeid, location):
    wall0, cpu0 = _t0.pop(nodeid)
    _rows[nodeid] = {"wall": time.perf_counter() - wall0, "cpu": _tree_cpu() - cpu0,
                     "outcome": _rows.get(nodeid, {}).get("outcome", "passed")}


def pytest_runtest_logreport(report):
    row = _rows.setdefault(report.nodeid, {})
    if report.failed:
        row["outcome"] = "failed"
    elif report.skipped and row.get("outcome") != "failed":
        row["outcome"] = "skipped"


def pytest_sessionfinish(session, exitstatus):
    wall0, cpu0 = _t0["session"]
    with open(_OUT, "w") as f:
        json.dump({"tests": _rows, "session_wall": time.perf_counter() - wall0,
                   "session_cpu": _tree_cpu() - cpu0, "exitstatus": int(exitstatus)}, f)
'''


def run(checkout: Path, pytest_args: list[str], python: str) -> dict:
    """One timed pytest run in ``checkout``; the plugin's figures plus the whole run's wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "suite_timer.py").write_text(PLUGIN)
        out = Path(tmp) / "times.json"
        env = dict(os.environ, SUITE_TIMER_OUT=str(out),
                   PYTHONPATH=os.pathsep.join([str(checkout), tmp]))
        t0 = time.perf_counter()
        done = subprocess.run([python, "-m", "pytest", "-p", "suite_timer", "-q", "-p", "no:cacheprovider",
                               *pytest_args], cwd=checkout, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if not out.exists():
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise SystemExit(f"pytest did not finish in {checkout} (exit {done.returncode})")
        result = json.loads(out.read_text())
    result["wall"] = wall
    result["summary"] = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return result


def per_file(result: dict) -> dict[str, dict[str, float]]:
    files: dict[str, dict[str, float]] = defaultdict(lambda: {"wall": 0.0, "cpu": 0.0, "n": 0})
    for nodeid, row in result["tests"].items():
        f = files[nodeid.split("::")[0]]
        f["wall"] += row.get("wall", 0.0)
        f["cpu"] += row.get("cpu", 0.0)
        f["n"] += 1
    return dict(files)


def _median_files(results: list[dict]) -> dict[str, dict[str, float]]:
    tables = [per_file(r) for r in results]
    names = sorted(set().union(*tables))
    return {n: {k: statistics.median(t.get(n, {}).get(k, 0.0) for t in tables) for k in ("wall", "cpu", "n")}
            for n in names}


def _totals(results: list[dict]) -> dict[str, float]:
    return {"wall": statistics.median(r["wall"] for r in results),
            "cpu": statistics.median(r["session_cpu"] for r in results),
            "n": statistics.median(len(r["tests"]) for r in results)}


def report(results: list[dict], top: int) -> None:
    last = results[-1]
    rows = sorted(last["tests"].items(), key=lambda kv: -kv[1].get("wall", 0.0))
    print(f"slowest {min(top, len(rows))} tests (wall s / CPU s):")
    for nodeid, row in rows[:top]:
        print(f"  {row.get('wall', 0):7.1f} {row.get('cpu', 0):7.1f}  {nodeid}")
    print("per file (wall s / CPU s / tests):")
    for name, f in sorted(_median_files(results).items(), key=lambda kv: -kv[1]["wall"]):
        print(f"  {f['wall']:7.1f} {f['cpu']:7.1f} {int(f['n']):4d}  {name}")
    t = _totals(results)
    print(f"whole run: {t['wall']:.1f} s wall (collection included), {t['cpu']:.1f} s CPU, {int(t['n'])} tests; "
          f"{last['summary']}")


def compare(old: list[dict], new: list[dict]) -> None:
    fo, fn = _median_files(old), _median_files(new)
    print("per file, old -> new (wall s; CPU s):")
    for name in sorted(set(fo) | set(fn), key=lambda n: -max(fo.get(n, {}).get("wall", 0), fn.get(n, {}).get("wall", 0))):
        a, b = fo.get(name, {"wall": 0, "cpu": 0, "n": 0}), fn.get(name, {"wall": 0, "cpu": 0, "n": 0})
        ratio = f"{b['wall'] / a['wall']:.2f}" if a["wall"] else "  - "
        print(f"  {a['wall']:7.1f} -> {b['wall']:7.1f} (x{ratio});  {a['cpu']:7.1f} -> {b['cpu']:7.1f}  "
              f"[{int(a['n'])} -> {int(b['n'])} tests]  {name}")
    to, tn = _totals(old), _totals(new)
    print(f"whole run: wall {to['wall']:.1f} -> {tn['wall']:.1f} s (new/old {tn['wall'] / to['wall']:.2f}); "
          f"CPU {to['cpu']:.1f} -> {tn['cpu']:.1f} s (new/old {tn['cpu'] / to['cpu']:.2f}); "
          f"tests {int(to['n'])} -> {int(tn['n'])}")
    print(f"old: {old[-1]['summary']}\nnew: {new[-1]['summary']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="git revision to compare with (timed in a temporary copy)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--top", type=int, default=25, help="how many of the slowest tests to list")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    ap.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = ap.parse_args(argv)
    python = sys.executable
    new: list[dict] = []
    old: list[dict] = []
    base_dir = None
    try:
        if args.base:  # the revision's files in a folder of their own (git archive: no worktree to register)
            base_dir = Path(tempfile.mkdtemp(prefix="suite-base-"))
            archive = subprocess.run(["git", "archive", args.base], cwd=ROOT, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base_dir)], input=archive, check=True)
        for i in range(args.rounds):
            if base_dir is not None:
                print(f"round {i + 1}: {args.base} ...", flush=True)
                old.append(run(base_dir, args.pytest_args, python))
            print(f"round {i + 1}: working tree ...", flush=True)
            new.append(run(ROOT, args.pytest_args, python))
    finally:
        if base_dir is not None:
            shutil.rmtree(base_dir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"old": old, "new": new}, indent=1) + "\n")
    report(new, args.top)
    if old:
        compare(old, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
