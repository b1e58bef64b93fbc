"""Build the course notebooks from their sources notebooks/src/NN_*.py (percent format), twice.

    python scripts/build_notebooks.py          # write both builds
    python scripts/build_notebooks.py --check  # exit 1 if a notebook of either build is out of date

Two builds come from the same sources:

* the **full** build, ``notebooks/NN_*.ipynb``: every exercise holds its solution (what the
  main job and the tests execute, and what an instructor presents);
* the **learner** build, ``notebooks/learner/NN_*.ipynb``: every exercise's solution is
  replaced by a stub that raises ``NotImplementedError``, and the solution follows the
  exercise in a collapsed ``<details>`` markdown cell.

Source format: cells start with ``# %%`` (code) or ``# %% [markdown]`` (markdown, every line
prefixed by ``# ``). Special cells:

* ``# %% [parameters]``: the papermill parameters cell;
* ``# %% [exercise]``: a code cell defining the function the learner writes. The lines
  between ``# --- solution ---`` and ``# --- end ---`` (one pair, inside the function) are
  the solution; the learner build replaces them by a stub at the same indentation. Exercises
  are numbered ``N.k`` (notebook ``N``, ``k``-th exercise) in order;
* ``# %% [predict]``: a markdown "Predict, then run" prompt: the question, then a line
  ``# Answer:``, then the answer, which is rendered collapsed.

Substitutions: a line ``# {{SETUP}}`` becomes ``notebooks/src/_setup.py`` (the Colab/Binder/
local set-up cell), ``{{REPO}}`` the GitHub ``owner/name`` in ``notebooks/src/REPO``,
``{{NOTEBOOK}}`` the notebook's name, and ``{{EXERCISE_NOTE}}`` a sentence saying which build
the reader has. In the learner build the Colab badge points at the learner copy.

Cell ids are ``cNN-XX`` (``XX`` the cell's index in the source), the same in both builds; the
learner build's solution cells are ``cNN-XX-solution`` after exercise cell ``XX``. Notebooks
are written without outputs.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "notebooks" / "src"
REPO_URL_FILE = SRC / "REPO"
LEARNER_DIR = "learner"

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


@dataclass
class Cell:
    kind: str  # "code" or "markdown"
    body: str
    role: str = ""  # "", "parameters", "exercise" or "predict"
    tags: list[str] = field(default_factory=list)


def parse(text: str) -> list[Cell]:
    cells: list[Cell] = []
    kind, role, lines = None, "", []

    def close() -> None:
        if kind is not None:
            cells.append(Cell(kind, "\n".join(lines).strip("\n"), role))

    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("# %%"):
            close()
            marker = line[4:].strip()
            if marker not in ("", "[markdown]", "[parameters]", "[exercise]", "[predict]"):
                raise ValueError(f"line {number}: unknown cell marker {line!r}")
            kind = "markdown" if marker in ("[markdown]", "[predict]") else "code"
            role = marker.strip("[]") if marker not in ("", "[markdown]") else ""
            lines = []
            continue
        if kind == "markdown":
            if line.strip() in ("#", ""):
                line = ""
            elif line.startswith("# "):
                line = line[2:]
            else:
                raise ValueError(f"line {number}: markdown lines must start with '# ': {line!r}")
        lines.append(line)
    close()
    return cells


@dataclass
class ExerciseCell:
    number: str  # "2.1"
    function: str
    full: str  # the code with the solution in place (markers kept)
    stub: str  # the code with the solution replaced by a stub
    solution: str  # the code with the markers removed (shown in the learner's collapsed cell)


def split_exercise(body: str, number: str) -> ExerciseCell:
    """The three versions of an exercise cell (see the module docstring)."""
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
                        solution="\n".join(lines[:s] + lines[s + 1:e] + lines[e + 1:]))


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


def source_text(src: Path, repo: str, variant: str) -> str:
    setup = (src.parent / "_setup.py").read_text().strip("\n")
    text = src.read_text().replace("# {{SETUP}}", setup)
    if variant == "learner":
        text = text.replace("/notebooks/{{NOTEBOOK}}.ipynb", f"/notebooks/{LEARNER_DIR}/{{{{NOTEBOOK}}}}.ipynb")
    return (text.replace("{{REPO}}", repo).replace("{{NOTEBOOK}}", src.stem)
            .replace("{{EXERCISE_NOTE}}", EXERCISE_NOTE[variant]))


def exercises(src: Path, repo: str = "owner/name") -> list[ExerciseCell]:
    """The exercises of one source, in order."""
    number = int(src.stem[:2])
    found = [c for c in parse(source_text(src, repo, "full")) if c.role == "exercise"]
    return [split_exercise(c.body, f"{number}.{k}") for k, c in enumerate(found, 1)]


def build(src: Path, repo: str, variant: str = "full") -> nbformat.NotebookNode:
    """One notebook of the ``"full"`` or the ``"learner"`` build."""
    if variant not in EXERCISE_NOTE:
        raise ValueError(f"variant must be 'full' or 'learner', got {variant!r}")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    number = int(src.stem[:2])
    k = 0
    for i, cell in enumerate(parse(source_text(src, repo, variant))):
        cid = f"c{src.stem[:2]}-{i:02d}"
        extra = None
        if cell.role == "predict":
            new = nbformat.v4.new_markdown_cell(render_predict(cell.body))
            new.metadata["tags"] = ["predict"]
        elif cell.kind == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.body)
        elif cell.role == "exercise":
            k += 1
            ex = split_exercise(cell.body, f"{number}.{k}")
            new = nbformat.v4.new_code_cell(ex.full if variant == "full" else ex.stub)
            new.metadata["tags"] = ["exercise"]
            if variant == "learner":
                extra = nbformat.v4.new_markdown_cell(render_solution(ex))
                extra.metadata["tags"] = ["solution"]
                extra["id"] = f"{cid}-solution"
        else:
            new = nbformat.v4.new_code_cell(cell.body)
            if cell.role == "parameters":
                new.metadata["tags"] = ["parameters"]
        new["id"] = cid
        nb.cells.append(new)
        if extra is not None:
            nb.cells.append(extra)
    return nb


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
    if args.check:
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
