"""The main job: execute every course notebook on the offline default into ``build/``.

    python -m helpers.course.main_job [--out build] [--only 01] [--param n_images=200] [--learner] [--slides]

For each ``notebooks/NN_*.ipynb`` it writes ``build/notebooks/NN_*.ipynb`` (executed),
``build/html/NN_*.html`` and ``build/figures/NN_*.json`` (the key figures the notebook
recorded), printing one progress line per notebook (with the executed notebook's size) and the
total time. Exits non-zero if a notebook fails (the partly executed copy is still written, with
the error in it). A notebook that writes to stderr (a warning, say), or that weighs more than
:data:`helpers.course.export.SIZE_LIMIT_BYTES`, is flagged on its progress line.

``--learner`` runs the learner build instead (``notebooks/learner/``, exercises as stubs, into
``build/learner/``): every check then falls back to its reference solution.

``--slides`` also writes one reveal.js deck per notebook, ``build/slides/NN_*.slides.html``, from
the executed notebook: its headings, key figures and generated text, without the code
(:mod:`helpers.course.slides`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..engine.paths import ROOT

__all__ = ["notebook_paths", "execute_notebook", "run_files", "export_html", "stderr_outputs", "main"]



def notebook_paths(folder: Path | None = None) -> list[Path]:
    """The course notebooks in teaching order (file names start with their number)."""
    folder = folder or ROOT / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def execute_notebook(path: Path, out_dir: Path, parameters: dict[str, Any] | None = None,
                     *, html: bool = True, kernel: str = "python3", timeout: int = 900) -> dict[str, Any]:
    """Execute one notebook headless with papermill; returns its recorded figures.

    No flag is needed: with no front end attached, widgets draw their default view as ordinary
    output (see :func:`helpers.course.ui.headless`).
    """
    import papermill as pm

    out_dir = Path(out_dir)
    executed, figures, params = run_files(path, out_dir, parameters)
    # the kernel's own log stays quiet below errors (its warning about unencrypted local TCP
    # sockets would otherwise interleave with the job's progress lines)
    pm.execute_notebook(str(path), str(executed), parameters=params, kernel_name=kernel,
                        cwd=str(path.parent), progress_bar=False, execution_timeout=timeout,
                        extra_arguments=["--IPKernelApp.log_level=ERROR"])
    if html:
        export_html(executed, out_dir)
    return json.loads(figures.read_text()) if figures.exists() else {}


def run_files(path: Path, out_dir: Path, parameters: dict[str, Any] | None = None) -> tuple[Path, Path, dict]:
    """Where a run of ``path`` writes (``out_dir/notebooks/<name>``, its figures
    ``out_dir/figures/<stem>.json``; both folders made) and its parameters with ``record_to``."""
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    figures = out_dir / "figures" / (path.stem + ".json")
    return out_dir / "notebooks" / path.name, figures, {"record_to": str(figures.resolve()), **(parameters or {})}


def export_html(executed: Path, out_dir: Path) -> Path:
    """The static HTML page of an executed notebook, ``out_dir/html/<name>.html``: figures
    drawn offline, plotly.js once a page (:func:`helpers.course.export.to_html`)."""
    from .export import to_html

    page = Path(out_dir) / "html" / (Path(executed).stem + ".html")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(to_html(executed))
    return page


def stderr_outputs(executed: Path) -> list[tuple[int, str]]:
    """``(cell index, text)`` of every stderr stream output of an executed notebook (warnings,
    stray log lines): an executed course notebook should have none."""
    nb = json.loads(Path(executed).read_text())
    return [(i, "".join(out.get("text", "")))
            for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "stream" and out.get("name") == "stderr"]


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    from .export import SIZE_LIMIT_BYTES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build")
    ap.add_argument("--only", action="append", default=[], help="run notebooks whose name contains this")
    ap.add_argument("--param", action="append", default=[], type=_parse_param,
                    help="papermill parameter NAME=VALUE (JSON values), for every notebook")
    ap.add_argument("--no-html", action="store_true")
    ap.add_argument("--learner", action="store_true", help="run the learner build (notebooks/learner/)")
    ap.add_argument("--slides", action="store_true", help="also write a reveal.js deck per notebook (build/slides/)")
    args = ap.parse_args(argv)
    if args.learner:
        folder, out = ROOT / "notebooks" / "learner", args.out / "learner"
    else:
        folder, out = ROOT / "notebooks", args.out
    paths = [p for p in notebook_paths(folder) if not args.only or any(o in p.name for o in args.only)]
    if not paths:
        print("no notebooks to run", file=sys.stderr)
        return 1
    params = dict(args.param)
    t_all = time.perf_counter()
    failed = []
    summary = {}
    for i, path in enumerate(paths, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(paths)}] {path.name} ...", flush=True)
        try:
            figs = execute_notebook(path, out, params, html=not args.no_html)
            size = (out / "notebooks" / path.name).stat().st_size
            status = f"ok, {size / 1e6:.2f} MB"
            if args.slides:
                from .slides import write_deck

                write_deck(out / "notebooks" / path.name, out / "slides")
                status += ", deck written"
            noisy = stderr_outputs(out / "notebooks" / path.name)
            if noisy:
                status += f" (stderr output in cell {', '.join(str(i) for i, _ in noisy)})"
            if size > SIZE_LIMIT_BYTES:
                status += f" (over the {SIZE_LIMIT_BYTES / 1e6:.1f} MB a notebook may weigh)"
        except Exception as exc:  # report and go on with the other notebooks
            figs, status = {}, f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            failed.append(path.name)
        dt = time.perf_counter() - t0
        summary[path.stem] = {"status": status, "seconds": round(dt, 1), "figures": figs}
        if not status.startswith("FAILED"):
            summary[path.stem]["bytes"] = size
        print(f"[{i}/{len(paths)}] {path.name}: {status} in {dt:.1f} s ({len(figs)} figures recorded)", flush=True)
    total = time.perf_counter() - t_all
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"done: {len(paths) - len(failed)}/{len(paths)} notebooks ok in {total:.1f} s; "
          f"outputs in {out}/", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
