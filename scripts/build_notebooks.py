"""Build the course notebooks from their sources notebooks/src/NN_*.py (percent format), twice.

    python scripts/build_notebooks.py          # write both builds
    python scripts/build_notebooks.py --check  # exit 1 if a notebook of either build is out of date

Two builds come from the same sources:

* the **full** build, ``notebooks/NN_*.ipynb``: every exercise holds its solution (what the
  main job and the tests execute, and what an instructor presents);
* the **learner** build, ``notebooks/learner/NN_*.ipynb``: every exercise's solution is
  replaced by a stub that raises ``NotImplementedError``, and the solution follows the
  exercise in a collapsed ``<details>`` markdown cell.

Source format: jupytext's percent format (read with ``jupytext``; in JupyterLab with jupytext
the sources open as notebooks, see ``jupytext.toml``): cells start with ``# %%`` (code) or
``# %% [markdown]``. Cells with a role carry a tag:

* ``# %% tags=["parameters"]``: the papermill parameters cell;
* ``# %% tags=["exercise"]``: a code cell defining the function the learner writes. The lines
  between ``# --- solution ---`` and ``# --- end ---`` (one pair, inside the function) are
  the solution; the learner build replaces them by a stub at the same indentation. Exercises
  are numbered ``N.k`` (notebook ``N``, ``k``-th exercise) in order;
* ``# %% [markdown] tags=["predict"]``: a "Predict, then run" prompt: the question, then a
  line ``Answer:``, then the answer, which is rendered collapsed;
* ``# %% [markdown] tags=["hint"]``: a hint to the exercise cell that follows, rendered
  collapsed (``Hint 1``, ``Hint 2``: two levels, the second closer to the answer). Hints stand
  right before their exercise, in both builds.

An exercise cell names what the learner does and what it costs, as jupytext cell metadata on
its marker line::

    # %% tags=["exercise"] kind="implement" difficulty=2 importance=3 minutes=10

``kind``: ``implement`` (write a step from the idea in words), ``find`` (look something up with
the course's tools) or ``decide`` (choose, then defend the choice); ``difficulty`` and
``importance`` 1-3; ``minutes`` the time a learner needs. The builds show them in a line above
the exercise (:func:`exercise_badge`).

What stays the course's own here is the two builds (learner stubs and hidden solutions, the
rendered predictions), the substitutions and the stable cell ids; the format is jupytext's.

Substitutions: a line ``# {{SETUP}}`` becomes ``notebooks/src/_setup.py`` (the Colab/Binder/
local set-up cell), ``{{REPO}}`` the GitHub ``owner/name`` in ``notebooks/src/REPO``, ``{{REF}}``
the version the notebooks are built from (:func:`course_ref`), ``{{NOTEBOOK}}`` the notebook's
name, and ``{{EXERCISE_NOTE}}`` a sentence saying which build the reader has. In the learner
build the Colab badge points at the learner copy.

The version is the release tag of ``pyproject.toml``'s version, ``v<version>``: in Colab the
set-up cell clones that tag, so a notebook meets the code it was built with, however far the
repository has moved on since. A commit hash would do the same but change every notebook on every
commit (and ``--check`` with it); the version changes only with a release, when the notebooks
are rebuilt anyway (``--check`` fails until they are). Until the tag is published (between a
version bump and its release) the cell clones the default branch and says so.

Cell ids are ``cNN-XX`` (``XX`` the cell's index in the source), the same in both builds; the
learner build's solution cells are ``cNN-XX-solution`` after exercise cell ``XX``. Notebooks
are written without outputs.

Apps: a source ``notebooks/src/app_NAME.py`` builds one notebook, ``notebooks/app/NAME.ipynb``
(served as a page by Voila, see ``helpers.course.app``): the same format and substitutions, a
``parameters`` cell, no exercises, predictions or hints; cell ids ``app-XX``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "notebooks" / "src"
REPO_URL_FILE = SRC / "REPO"
LEARNER_DIR = "learner"
APP_DIR = "app"
APP_PREFIX = "app_"

SOLUTION_START = "# --- solution ---"
SOLUTION_END = "# --- end ---"
ANSWER_LINE = "Answer:"

EXERCISE_NOTE = {
    "full": ("This is the **full** version: every exercise already holds its solution. Learners work in "
             "`notebooks/learner/`, where the exercises are stubs and the solutions are hidden."),
    "learner": ("This is the **learner** version: write the body of every function marked *Exercise* (it "
                "raises `NotImplementedError` until you do), then run the check cell under it. A solution "
                "is hidden under each exercise. Skipped an exercise? The check hands the next cells a "
                "reference solution, so the notebook still runs."),
}


ROLES = ("parameters", "exercise", "predict", "hint")
KINDS = ("implement", "find", "decide")
EXERCISE_KEYS = ("kind", "difficulty", "importance", "minutes")


def read_cells(text: str) -> list[nbformat.NotebookNode]:
    """The cells of a percent-format source (jupytext), each checked for a known role."""
    cells = jupytext.reads(text, fmt="py:percent").cells
    for cell in cells:
        tags = cell.metadata.get("tags", [])
        unknown = [t for t in tags if t not in ROLES]
        if unknown or len(tags) > 1:
            raise ValueError(f"cell {cell.source[:60]!r}: tags must be one of {ROLES}, got {tags}")
        if role(cell) in ("predict", "hint") and cell.cell_type != "markdown":
            raise ValueError(f"a {role(cell)} cell is markdown: # %% [markdown] tags=[\"{role(cell)}\"] "
                             f"({cell.source[:60]!r})")
        if cell.cell_type == "code" and cell.metadata.get("title"):
            raise ValueError(f"unknown cell marker [{cell.metadata['title']}] (roles are tags: "
                             f"# %% tags=[\"exercise\"]): {cell.source[:60]!r}")
    return cells


def role(cell: nbformat.NotebookNode) -> str:
    """``"parameters"``, ``"exercise"``, ``"predict"`` or ``""``."""
    tags = cell.metadata.get("tags", [])
    return tags[0] if tags else ""


@dataclass
class ExerciseCell:
    number: str  # "2.1"
    function: str
    full: str  # the code with the solution in place (markers kept)
    stub: str  # the code with the solution replaced by a stub
    solution: str  # the code with the markers removed (shown in the learner's collapsed cell)
    kind: str | None = None  # "implement", "find" or "decide"
    difficulty: int | None = None  # 1-3
    importance: int | None = None  # 1-3
    minutes: int | None = None
    hints: tuple[str, ...] = ()


def split_exercise(body: str, number: str, meta: dict | None = None, hints: tuple[str, ...] = ()) -> ExerciseCell:
    """The three versions of an exercise cell (see the module docstring), with its metadata
    (``kind``, ``difficulty``, ``importance``, ``minutes``, checked) and hints."""
    lines = body.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.strip() == SOLUTION_START]
    ends = [i for i, ln in enumerate(lines) if ln.strip() == SOLUTION_END]
    if len(starts) != 1 or len(ends) != 1 or not starts[0] < ends[0]:
        raise ValueError(f"exercise {number}: need exactly one {SOLUTION_START!r} line followed by one "
                         f"{SOLUTION_END!r} line")
    s, e = starts[0], ends[0]
    defs = [m.group(1) for ln in lines[:s] if (m := re.match(r"def (\w+)\(", ln))]
    if not defs:
        raise ValueError(f"exercise {number}: no function definition before the solution")
    name = defs[-1]
    if not any(ln.strip() for ln in lines[s + 1:e]):
        raise ValueError(f"exercise {number}: the solution of {name} is empty")
    indent = lines[s][: len(lines[s]) - len(lines[s].lstrip())]
    stub = [f"{indent}# Exercise {number}: your code here (a solution is hidden in the cell below).",
            f'{indent}raise NotImplementedError("Exercise {number} not done yet: write the body of {name}")']
    return ExerciseCell(number=number, function=name, full=body,
                        stub="\n".join(lines[:s] + stub + lines[e + 1:]),
                        solution="\n".join(lines[:s] + lines[s + 1:e] + lines[e + 1:]),
                        hints=tuple(hints), **_exercise_meta(meta or {}, number))


def _exercise_meta(meta: dict, number: str) -> dict:
    """The exercise keys of a cell's metadata, checked."""
    out = {k: meta[k] for k in EXERCISE_KEYS if k in meta}
    if "kind" in out and out["kind"] not in KINDS:
        raise ValueError(f"exercise {number}: kind must be one of {KINDS}, got {out['kind']!r}")
    for key, lo, hi in (("difficulty", 1, 3), ("importance", 1, 3), ("minutes", 1, 60)):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise ValueError(f"exercise {number}: {key} must be a whole number in {lo}..{hi}, got {v!r}")
    return out


def exercise_badge(ex: ExerciseCell) -> str | None:
    """The line above an exercise: its number, kind, difficulty, importance and minutes
    (``None`` when the source gives none of them)."""
    if ex.kind is None and ex.difficulty is None and ex.importance is None and ex.minutes is None:
        return None
    dots = lambda n: "●" * n + "○" * (3 - n)  # noqa: E731
    parts = [f"**Exercise {ex.number}**"]
    if ex.kind:
        parts.append(f"*{ex.kind}*")
    if ex.difficulty:
        parts.append(f"difficulty {dots(ex.difficulty)}")
    if ex.importance:
        parts.append(f"importance {dots(ex.importance)}")
    if ex.minutes:
        parts.append(f"about {ex.minutes} min")
    return " · ".join(parts)


def render_hint(body: str, number: str, k: int) -> str:
    return f"<details><summary>Hint {k} to exercise {number}</summary>\n\n{body.strip()}\n\n</details>"


def walk(cells: list[nbformat.NotebookNode], notebook: int) -> list[tuple[nbformat.NotebookNode, ExerciseCell | None]]:
    """Each cell with its exercise (for exercise and hint cells), hints checked: at most two, each
    right before its exercise."""
    out: list[tuple[nbformat.NotebookNode, ExerciseCell | None]] = []
    pending: list[int] = []
    k = 0
    for i, cell in enumerate(cells):
        kind = role(cell)
        if pending and kind not in ("hint", "exercise"):
            raise ValueError(f"a hint must stand right before its exercise cell: {cells[pending[0]].source[:60]!r}")
        if kind == "hint":
            pending.append(len(out))
            out.append((cell, None))
            continue
        if kind == "exercise":
            k += 1
            if len(pending) > 2:
                raise ValueError(f"exercise {notebook}.{k}: at most two hints, got {len(pending)}")
            ex = split_exercise(cell.source, f"{notebook}.{k}", cell.metadata,
                                tuple(out[j][0].source for j in pending))
            for j in pending:
                out[j] = (out[j][0], ex)
            pending = []
            out.append((cell, ex))
            continue
        out.append((cell, None))
    if pending:
        raise ValueError("a hint must stand right before its exercise cell (none follows)")
    return out


def render_predict(body: str) -> str:
    lines = body.splitlines()
    marks = [i for i, ln in enumerate(lines) if ln.strip() == ANSWER_LINE]
    if len(marks) != 1:
        raise ValueError(f"a [predict] cell needs one line {ANSWER_LINE!r} between question and answer: {body[:80]!r}")
    question = "\n".join(lines[:marks[0]]).strip()
    answer = "\n".join(lines[marks[0] + 1:]).strip()
    if not question or not answer:
        raise ValueError(f"a [predict] cell needs a question and an answer: {body[:80]!r}")
    return (f"**Predict, then run.** {question}\n\n<details><summary>Answer (open it after running the next "
            f"cell)</summary>\n\n{answer}\n\n</details>")


def render_solution(ex: ExerciseCell) -> str:
    return (f"<details><summary>Solution to exercise {ex.number}</summary>\n\n```python\n{ex.solution}\n```"
            "\n\n</details>")


def course_ref(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The release tag of the course's version: ``v`` and ``[project].version`` of ``pyproject.toml``."""
    import tomllib

    return "v" + tomllib.loads(pyproject.read_text())["project"]["version"]


def source_text(src: Path, repo: str, variant: str, ref: str | None = None) -> str:
    setup = (src.parent / "_setup.py").read_text().strip("\n")
    text = src.read_text().replace("# {{SETUP}}", setup)
    if variant == "learner":
        text = text.replace("/notebooks/{{NOTEBOOK}}.ipynb", f"/notebooks/{LEARNER_DIR}/{{{{NOTEBOOK}}}}.ipynb")
    return (text.replace("{{REPO}}", repo).replace("{{REF}}", ref or course_ref())
            .replace("{{NOTEBOOK}}", src.stem).replace("{{EXERCISE_NOTE}}", EXERCISE_NOTE[variant]))


def exercises(src: Path, repo: str = "owner/name") -> list[ExerciseCell]:
    """The exercises of one source, in order."""
    return [ex for cell, ex in walk(read_cells(source_text(src, repo, "full")), int(src.stem[:2]))
            if role(cell) == "exercise"]


def build(src: Path, repo: str, variant: str = "full") -> nbformat.NotebookNode:
    """One notebook of the ``"full"`` or the ``"learner"`` build."""
    if variant not in EXERCISE_NOTE:
        raise ValueError(f"variant must be 'full' or 'learner', got {variant!r}")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (cell, ex) in enumerate(walk(read_cells(source_text(src, repo, variant)), int(src.stem[:2]))):
        cid = f"c{src.stem[:2]}-{i:02d}"
        extra = None
        kind = role(cell)
        first = kind == "hint" and cell.source == ex.hints[0] or kind == "exercise" and not ex.hints
        if first and exercise_badge(ex):  # the exercise's line goes above its hints and code
            header = nbformat.v4.new_markdown_cell(exercise_badge(ex))
            header.metadata["tags"] = ["exercise-badge"]
            header["id"] = f"{cid}-badge"
            nb.cells.append(header)
        if kind == "hint":
            new = nbformat.v4.new_markdown_cell(render_hint(cell.source, ex.number, ex.hints.index(cell.source) + 1))
            new.metadata["tags"] = ["hint"]
        elif kind == "predict":
            new = nbformat.v4.new_markdown_cell(render_predict(cell.source))
            new.metadata["tags"] = ["predict"]
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source)
        elif kind == "exercise":
            new = nbformat.v4.new_code_cell(ex.full if variant == "full" else ex.stub)
            new.metadata["tags"] = ["exercise"]
            if variant == "learner":
                extra = nbformat.v4.new_markdown_cell(render_solution(ex))
                extra.metadata["tags"] = ["solution"]
                extra["id"] = f"{cid}-solution"
        else:
            new = nbformat.v4.new_code_cell(cell.source)
            if kind == "parameters":
                new.metadata["tags"] = ["parameters"]
        new["id"] = cid
        nb.cells.append(new)
        if extra is not None:
            nb.cells.append(extra)
    return nb


def build_app(src: Path, repo: str) -> nbformat.NotebookNode:
    """The notebook of an app source (``app_NAME.py``): its cells as they are, the parameters tagged."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(read_cells(source_text(src, repo, "full"))):
        kind = role(cell)
        if kind not in ("", "parameters"):
            raise ValueError(f"{src.name}: an app has no {kind} cells ({cell.source[:60]!r})")
        if cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source)
        else:
            new = nbformat.v4.new_code_cell(cell.source)
            if kind == "parameters":
                new.metadata["tags"] = ["parameters"]
        new["id"] = f"app-{i:02d}"
        nb.cells.append(new)
    return nb


def app_target(src: Path) -> Path:
    return ROOT / "notebooks" / APP_DIR / f"{src.stem.removeprefix(APP_PREFIX)}.ipynb"


def targets(src: Path) -> dict[str, Path]:
    nbdir = ROOT / "notebooks"
    return {"full": nbdir / f"{src.stem}.ipynb", "learner": nbdir / LEARNER_DIR / f"{src.stem}.ipynb"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    repo = REPO_URL_FILE.read_text().strip()
    stale = []
    for src in sorted(SRC.glob("[0-9][0-9]_*.py")):
        for variant, target in targets(src).items():
            text = nbformat.writes(build(src, repo, variant), version=4) + "\n"
            if args.check:
                if not target.exists() or target.read_text() != text:
                    stale.append(str(target.relative_to(ROOT / "notebooks")))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    for src in sorted(SRC.glob(f"{APP_PREFIX}*.py")):
        target = app_target(src)
        text = nbformat.writes(build_app(src, repo), version=4) + "\n"
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target.relative_to(ROOT / "notebooks")))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    if args.check:
        for nb in (ROOT / "notebooks" / APP_DIR).glob("*.ipynb"):
            if not (SRC / f"{APP_PREFIX}{nb.stem}.py").exists():
                stale.append(f"{nb.relative_to(ROOT / 'notebooks')} (no source)")
        for variant_dir in (ROOT / "notebooks", ROOT / "notebooks" / LEARNER_DIR):
            for nb in variant_dir.glob("[0-9][0-9]_*.ipynb"):
                if not (SRC / f"{nb.stem}.py").exists():
                    stale.append(f"{nb.relative_to(ROOT / 'notebooks')} (no source)")
    if stale:
        print("out of date (run python scripts/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
