"""Run the course notebooks through papermill's Python API, as a batch user would, several times.

    python scripts/papermill_rounds.py [--rounds 3] [--cell-timeout 300] [--only 01] [--param n_images=100]

No ``COURSE_HEADLESS`` is set (an inherited one is removed): the notebooks must find out by
themselves that no front end is attached. Each cell runs under a time limit, so a cell that
hangs (kernel idle, client still waiting) is reported instead of being waited out; pick a limit
well above the slowest cell on the machine, or slow cells are reported as timed out. Prints one
line per notebook and round (naming the cell that hung), then the counts; exits non-zero unless
every run was ok.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cells(out: Path) -> list:
    import nbformat

    try:
        return nbformat.read(str(out), as_version=4).cells
    except Exception:
        return []


def _describe(cell, index: int) -> str:
    first = next((line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")), "")
    kind = "widget cell" if "live(" in cell.source else "cell"
    return f"{kind} {index}: {first[:60]}"


def waited_out(out: Path, cell_timeout: int) -> list[str]:
    """Cells of an executed notebook that completed only when their time limit ran out.

    When the client's poll misses the reply to a cell (the race), it wakes only at its
    timeout, finds the reply then, and records the cell as completed: a completed cell whose
    duration equals the limit is the trace such a hang leaves.
    """
    return [_describe(c, i) for i, c in enumerate(_cells(out))
            if c.get("metadata", {}).get("papermill", {}).get("status") == "completed"
            and (c.metadata["papermill"].get("duration") or 0) >= 0.98 * cell_timeout]


def still_running(out: Path, cell_timeout: int) -> list[str]:
    """Cells that ran into their time limit (or were still running when the run stopped)."""
    return [_describe(c, i) for i, c in enumerate(_cells(out))
            if c.get("metadata", {}).get("papermill", {}).get("status") == "running"
            or (c.get("metadata", {}).get("papermill", {}).get("duration") or 0) >= 0.98 * cell_timeout]


def run_once(path: Path, out: Path, params: dict, cell_timeout: int) -> tuple[str, str]:
    """Execute one notebook; returns (status, detail).

    status: 'ok'; 'hang' (a cell's reply was only found when its time limit ran out: a lost
    reply, certainly a hang); 'timeout' (a cell still had no reply at its limit: a hang, or a
    cell slower than the limit, as the named cell tells); 'error' (a cell failed).
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError

    try:
        pm.execute_notebook(str(path), str(out), parameters=params, cwd=str(path.parent), progress_bar=False,
                            execution_timeout=cell_timeout)
    except CellTimeoutError:
        return "timeout", "; ".join(still_running(out, cell_timeout)) or f"a cell ran past {cell_timeout} s"
    except Exception as exc:  # a failing cell: report it, go on
        text = str(exc).strip().splitlines()
        return "error", f"{type(exc).__name__}: {text[-1] if text else ''}"
    hung = waited_out(out, cell_timeout)
    if hung:
        return "hang", f"reply found only at the {cell_timeout} s limit: " + "; ".join(hung)
    return "ok", ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cell-timeout", type=int, default=300, help="seconds one cell may take before it counts as hung")
    ap.add_argument("--only", action="append", default=[], help="run notebooks whose name contains this")
    ap.add_argument("--param", action="append", default=[], help="papermill parameter NAME=VALUE (JSON values)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the executed copies (default: a temp dir)")
    args = ap.parse_args(argv)
    os.environ.pop("COURSE_HEADLESS", None)
    params = {}
    for p in args.param:
        key, _, value = p.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    paths = [p for p in paths if not args.only or any(o in p.name for o in args.only)]
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="papermill-rounds-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"ok": 0, "hang": 0, "timeout": 0, "error": 0}
    t_all = time.perf_counter()
    for r in range(1, args.rounds + 1):
        for path in paths:
            t0 = time.perf_counter()
            status, detail = run_once(path, out_dir / f"round{r}-{path.name}", params, args.cell_timeout)
            counts[status] += 1
            print(f"round {r} {path.stem}: {status} in {time.perf_counter() - t0:.1f} s"
                  + (f" ({detail})" if detail else ""), flush=True)
    print(f"{args.rounds} rounds x {len(paths)} notebooks in {time.perf_counter() - t_all:.0f} s: "
          f"{counts['ok']} ok, {counts['hang']} hung, {counts['timeout']} timed out, {counts['error']} failed; "
          f"executed copies in {out_dir}")
    return 0 if counts["ok"] == sum(counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
