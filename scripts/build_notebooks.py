"""Build the course notebooks from their sources notebooks/src/NN_*.py (percent format), twice.

    python scripts/build_notebooks.py          # write the three builds and the guide's generated parts
    python scripts/build_notebooks.py --check  # exit 1 if anything it writes is out of date

Three builds come from the same sources:

* the **full** build, ``notebooks/NN_*.ipynb``: every exercise holds its solution (what the
  main job and the tests execute);
* the **learner** build, ``notebooks/learner/NN_*.ipynb``: every exercise's solution is
  replaced by a stub that raises ``NotImplementedError``, and the solution follows the
  exercise in a collapsed ``<details>`` markdown cell;
* the **instructor** build, ``notebooks/instructor/NN_*.ipynb``: solutions in place, hints
  open, the answer key of every prediction and discussion prompt shown, and a timing plan
  after the header (each section's minutes, from :mod:`helpers.course.timing`).

It also writes the generated parts of the instructor guide, ``notebooks/README.md`` (between
``<!-- BEGIN name -->`` and ``<!-- END name -->`` lines): the agenda, whose times are the
notebooks' computed core paths; the exercise table; the discussion prompts.

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
  right before their exercise, in every build (open in the instructor's);
* ``# %% [markdown] tags=["discuss"]``: a discussion prompt (before the ``## Going further``
  heading) or an open-ended *going further* prompt (after it): the question, a line
  ``Answer:``, a sample answer that only the instructor build shows.

A notebook's **core path** ends at a markdown cell whose line reads ``## Going further``; its
header's ``{{TIME}}`` becomes the computed minutes of both parts (:mod:`helpers.course.timing`).

Code cells that only write generated prose (they call ``what_we_see`` or ``say`` and show no
figure, table, widget or printed line) are marked as such: their source is hidden in
JupyterLab (``jupyter.source_hidden``) and shown as a form in Colab (``cellView: "form"`` and a
``#@title`` line), so a learner reads the text, not the f-strings.

A markdown image ``![...](figures/NAME.png)`` is embedded as a cell attachment (the file
``notebooks/figures/NAME.png``, rendered from its SVG source by ``scripts/render_figures.py``), so
it shows offline, in Colab and in every build's folder.

An exercise cell names what the learner does and what it costs, as jupytext cell metadata on
its marker line::

    # %% tags=["exercise"] kind="implement" difficulty=2 importance=3 minutes=10

``kind``: ``implement`` (write a step from the idea in words), ``find`` (look something up with
the course's tools) or ``decide`` (choose, then defend the choice); ``difficulty`` and
``importance`` 1-3; ``minutes`` the time a learner needs. The builds show them in a line above
the exercise (:func:`exercise_badge`). Exercises are numbered ``N.k`` in order of appearance
unless the cell gives its ``number="N.k"`` (an exercise moved to the *going further* part keeps
its number).

What stays the course's own here is the two builds (learner stubs and hidden solutions, the
rendered predictions), the substitutions and the stable cell ids; the format is jupytext's.

Substitutions: a line ``# {{SETUP}}`` becomes ``notebooks/src/_setup.py`` (the Colab/Binder/
local set-up cell), ``{{REPO}}`` the GitHub ``owner/name`` in ``notebooks/src/REPO``, ``{{REF}}``
the version the notebooks are built from (:func:`course_ref`), ``{{NOTEBOOK}}`` the notebook's
name, ``{{EXERCISE_NOTE}}`` a sentence saying which build the reader has, and ``{{TIME}}`` the
computed minutes. The Colab link of each build points at its own copy.

The version is the release tag of ``pyproject.toml``'s version, ``v<version>``: in Colab the
set-up cell clones that tag, so a notebook meets the code it was built with, however far the
repository has moved on since. A commit hash would do the same but change every notebook on every
commit (and ``--check`` with it); the version changes only with a release, when the notebooks
are rebuilt anyway (``--check`` fails until they are). Until the tag is published (between a
version bump and its release) the cell clones the default branch and says so.

Cell ids are ``cNN-XX`` (``XX`` the cell's index in the source), the same in every build; the
learner build's solution cells are ``cNN-XX-solution`` after exercise cell ``XX``, the
instructor build's timing plan ``cNN-XX-timing``, the exercise line ``cNN-XX-badge``. So a cell
*id* names the same cell in every build, but cell *positions* differ (the learner build has a
solution cell after each exercise): point learners at a section or an exercise number, not at
"cell 14". Notebooks are written without outputs.

Apps: a source ``notebooks/src/app_NAME.py`` builds one notebook, ``notebooks/app/NAME.ipynb``
(served as a page by Voila, see ``helpers.course.app``): the same format and substitutions, a
``parameters`` cell, no exercises, predictions or hints; cell ids ``app-XX``.
"""

from __future__ import annotations

import argparse
import ast
import base64
import copy
import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # helpers.course.timing (no torch import)
    sys.path.insert(0, str(ROOT))

from helpers.course import timing  # noqa: E402

SRC = ROOT / "notebooks" / "src"
REPO_URL_FILE = SRC / "REPO"
FIGURES = ROOT / "notebooks" / "figures"
GUIDE = ROOT / "notebooks" / "README.md"
LEARNER_DIR = "learner"
INSTRUCTOR_DIR = "instructor"
WORKSHOP_LAST = 6  # notebooks 1-6 (the first paper) make the three-hour workshop; later ones extend it
VARIANTS = ("full", "learner", "instructor")
APP_DIR = "app"
APP_PREFIX = "app_"

SOLUTION_START = "# --- solution ---"
SOLUTION_END = "# --- end ---"
ANSWER_LINE = "Answer:"

EXERCISE_NOTE = {
    "full": ("This is the **full** version: every exercise already holds its solution. Learners work in "
             "`notebooks/learner/`, where the exercises are stubs and the solutions are hidden."),
    "learner": ("This is the **learner** version: write the body of every function marked *Exercise* (it "
                "raises `NotImplementedError` until you do), then run the check cell under it. Two hints and "
                "a solution are hidden around each exercise. Skipped an exercise? The check hands the next "
                "cells a reference solution, so the notebook still runs."),
    "instructor": ("This is the **instructor** version: solutions in place, hints open, the answer key under "
                   "every prediction and discussion prompt, and a timing plan below. Learners work in "
                   "`notebooks/learner/`; present from this copy or the full one."),
}


ROLES = ("parameters", "exercise", "predict", "hint", "discuss")
PROSE_CALLS = {"what_we_see", "say"}
SHOWING_CALLS = {"display", "live", "print", "show", "maps_figure", "strip"}
PROSE_TITLE = "#@title Generated from this run's numbers (the code only writes the text below)"
KINDS = ("implement", "find", "decide")
EXERCISE_KEYS = ("kind", "difficulty", "importance", "minutes")


def read_cells(text: str) -> list[nbformat.NotebookNode]:
    """The cells of a percent-format source (jupytext), each checked for a known role: a copy
    of its own for each caller (a build edits its cells), parsed once per text."""
    return copy.deepcopy(_checked_cells(text))


@functools.lru_cache(maxsize=64)
def _checked_cells(text: str) -> list[nbformat.NotebookNode]:
    cells = jupytext.reads(text, fmt="py:percent").cells
    for cell in cells:
        tags = cell.metadata.get("tags", [])
        unknown = [t for t in tags if t not in ROLES]
        if unknown or len(tags) > 1:
            raise ValueError(f"cell {cell.source[:60]!r}: tags must be one of {ROLES}, got {tags}")
        if role(cell) in ("predict", "hint", "discuss") and cell.cell_type != "markdown":
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


def render_hint(body: str, number: str, k: int, open_: bool = False) -> str:
    return (f"<details{' open' if open_ else ''}><summary>Hint {k} to exercise {number}</summary>\n\n{body.strip()}"
            "\n\n</details>")


def walk(cells: list[nbformat.NotebookNode], notebook: int) -> list[tuple[nbformat.NotebookNode, ExerciseCell | None]]:
    """Each cell with its exercise (for exercise and hint cells), hints checked: at most two, each
    right before its exercise."""
    out: list[tuple[nbformat.NotebookNode, ExerciseCell | None]] = []
    pending: list[int] = []
    seen: set[str] = set()
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
            number = str(cell.metadata.get("number", f"{notebook}.{k}"))
            if not re.fullmatch(rf"{notebook}\.\d+", number) or number in seen:
                raise ValueError(f"exercise number {number!r}: must be {notebook}.<k> and unique in the notebook")
            seen.add(number)
            if len(pending) > 2:
                raise ValueError(f"exercise {number}: at most two hints, got {len(pending)}")
            ex = split_exercise(cell.source, number, cell.metadata,
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


def _question_answer(body: str, what: str) -> tuple[str, str]:
    lines = body.splitlines()
    marks = [i for i, ln in enumerate(lines) if ln.strip() == ANSWER_LINE]
    if len(marks) != 1:
        raise ValueError(f"a [{what}] cell needs one line {ANSWER_LINE!r} between question and answer: {body[:80]!r}")
    question = "\n".join(lines[:marks[0]]).strip()
    answer = "\n".join(lines[marks[0] + 1:]).strip()
    if not question or not answer:
        raise ValueError(f"a [{what}] cell needs a question and an answer: {body[:80]!r}")
    return question, answer


def render_predict(body: str, variant: str = "full") -> str:
    question, answer = _question_answer(body, "predict")
    if variant == "instructor":
        return f"**Predict, then run.** {question}\n\n**Answer key.** {answer}"
    return (f"**Predict, then run.** {question}\n\n<details><summary>Answer (open it after running the next "
            f"cell)</summary>\n\n{answer}\n\n</details>")


def render_discuss(body: str, variant: str, further: bool) -> str:
    question, answer = _question_answer(body, "discuss")
    label = "Going further" if further else "Discuss"
    if variant == "instructor":
        return f"**{label}.** {question}\n\n**Sample answer.** {answer}"
    return f"**{label}.** {question}"


def prose_cell(source: str) -> bool:
    """Whether a code cell only writes generated prose: it calls ``what_we_see`` or ``say`` and
    nothing that shows a figure, a table, a widget or a printed line."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            calls.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return bool(calls & PROSE_CALLS) and not calls & SHOWING_CALLS and not any(c.startswith("check_") for c in calls)


def hide_source(cell: nbformat.NotebookNode) -> None:
    """Hide a generated-prose cell's code: collapsed in JupyterLab, a form in Colab."""
    cell.metadata["jupyter"] = {"source_hidden": True}
    cell.metadata["cellView"] = "form"
    cell.source = f"{PROSE_TITLE}\n{cell.source}"


def embed_figures(cell: nbformat.NotebookNode) -> None:
    """``![alt](figures/NAME.svg)`` -> a cell attachment (shows offline and in Colab)."""
    def attach(m: re.Match) -> str:
        name = m.group(2)
        path = FIGURES / name
        if not path.exists():
            raise ValueError(f"figure {path} not found")
        if not name.endswith((".png", ".jpg", ".jpeg")):
            raise ValueError(f"figure {name}: embed a PNG (JupyterLab shows no SVG attachment); render it with "
                             "python scripts/render_figures.py")
        mime = "image/png" if name.endswith(".png") else "image/jpeg"
        cell.setdefault("attachments", {})[name] = {mime: base64.b64encode(path.read_bytes()).decode("ascii")}
        return f"![{m.group(1)}](attachment:{name})"

    cell.source = re.sub(r"!\[([^\]]*)\]\(figures/([\w.-]+)\)", attach, cell.source)


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
    folder = {"learner": LEARNER_DIR, "instructor": INSTRUCTOR_DIR}.get(variant)
    if folder:
        text = text.replace("/notebooks/{{NOTEBOOK}}.ipynb", f"/notebooks/{folder}/{{{{NOTEBOOK}}}}.ipynb")
    return (text.replace("{{REPO}}", repo).replace("{{REF}}", ref or course_ref())
            .replace("{{NOTEBOOK}}", src.stem).replace("{{EXERCISE_NOTE}}", EXERCISE_NOTE[variant]))


def notebook_timing(src: Path, repo: str = "owner/name") -> "timing.Timing":
    """The computed minutes of one notebook (its full build, exercises with their minutes)."""
    nb = _build(src, repo, "full", with_time=False)
    exs = exercises(src, repo)
    missing = [ex.number for ex in exs if ex.minutes is None]
    if missing:
        raise ValueError(f"{src.name}: exercises {missing} give no minutes")
    return timing.estimate(nb.cells, {ex.number: ex.minutes for ex in exs})


def timing_plan(nb: nbformat.NotebookNode, exs: list[ExerciseCell]) -> str:
    """The instructor's timing plan: each section's minutes and the clock at its end."""
    minutes = {ex.number: ex.minutes or 0 for ex in exs}
    sections: list[tuple[str, list]] = [("Opening", [])]
    for cell in nb.cells:
        src = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        head = re.match(r"#{2,3}\s+(.+)", src) if cell.cell_type == "markdown" else None
        if head and "exercise-badge" not in cell.metadata.get("tags", []) and "Before you start" not in head.group(1):
            sections.append((head.group(1).strip(), []))
        sections[-1][1].append(cell)
    rows, clock, k = [], 0.0, 0
    for title, cells in sections:
        n = sum("exercise" in c.metadata.get("tags", []) for c in cells)
        own = dict(list(minutes.items())[k:k + n])
        k += n
        t = timing.estimate(cells, own)
        if title.startswith("Going further"):
            rows.append("| **Going further** (optional; homework or fast learners) | | |")
        span = sum(p.reading + p.running + p.exercise_minutes for p in (t.core, t.further))
        if span < 0.5:
            continue
        clock += span
        ex = f" ({', '.join(own)})" if own else ""
        rows.append(f"| {title}{ex} | {span:.0f} min | {clock:.0f} min |")
    return ("**Timing plan** (instructor build only; from `helpers.course.timing`: reading, running cells and "
            "the exercises' own minutes).\n\n| section | minutes | clock |\n|---|---|---|\n" + "\n".join(rows))


def exercises(src: Path, repo: str = "owner/name") -> list[ExerciseCell]:
    """The exercises of one source, in order."""
    return [ex for cell, ex in walk(read_cells(source_text(src, repo, "full")), int(src.stem[:2]))
            if role(cell) == "exercise"]


def build(src: Path, repo: str, variant: str = "full") -> nbformat.NotebookNode:
    """One notebook of the ``"full"``, ``"learner"`` or ``"instructor"`` build."""
    return _build(src, repo, variant, with_time=True)


def _build(src: Path, repo: str, variant: str, with_time: bool) -> nbformat.NotebookNode:
    if variant not in EXERCISE_NOTE:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    text = source_text(src, repo, variant)
    if with_time and "{{TIME}}" in text:
        text = text.replace("{{TIME}}", timing.header_line(notebook_timing(src, repo)))
    further = False
    plan_after = None
    for i, (cell, ex) in enumerate(walk(read_cells(text), int(src.stem[:2]))):
        cid = f"c{src.stem[:2]}-{i:02d}"
        extra = None
        kind = role(cell)
        if cell.cell_type == "markdown" and any(ln.strip() == timing.GOING_FURTHER for ln in cell.source.splitlines()):
            further = True
        first = kind == "hint" and cell.source == ex.hints[0] or kind == "exercise" and not ex.hints
        if first and exercise_badge(ex):  # the exercise's line goes above its hints and code
            header = nbformat.v4.new_markdown_cell(exercise_badge(ex))
            header.metadata["tags"] = ["exercise-badge"]
            header["id"] = f"{cid}-badge"
            nb.cells.append(header)
        if kind == "hint":
            new = nbformat.v4.new_markdown_cell(render_hint(cell.source, ex.number, ex.hints.index(cell.source) + 1,
                                                            open_=variant == "instructor"))
            new.metadata["tags"] = ["hint"]
        elif kind == "predict":
            new = nbformat.v4.new_markdown_cell(render_predict(cell.source, variant))
            new.metadata["tags"] = ["predict"]
        elif kind == "discuss":
            new = nbformat.v4.new_markdown_cell(render_discuss(cell.source, variant, further))
            new.metadata["tags"] = ["discuss"]
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source)
            embed_figures(new)
            if plan_after is None and "### Before you start" in cell.source:
                plan_after = cid
        elif kind == "exercise":
            new = nbformat.v4.new_code_cell(ex.stub if variant == "learner" else ex.full)
            new.metadata["tags"] = ["exercise"]
            if variant == "learner":
                extra = nbformat.v4.new_markdown_cell(render_solution(ex))
                extra.metadata["tags"] = ["solution"]
                extra["id"] = f"{cid}-solution"
        else:
            new = nbformat.v4.new_code_cell(cell.source)
            if kind == "parameters":
                new.metadata["tags"] = ["parameters"]
            elif prose_cell(cell.source):
                hide_source(new)
        new["id"] = cid
        nb.cells.append(new)
        if extra is not None:
            nb.cells.append(extra)
        if variant == "instructor" and plan_after == cid:
            plan = nbformat.v4.new_markdown_cell("")
            plan.metadata["tags"] = ["timing"]
            plan["id"] = f"{cid}-timing"
            nb.cells.append(plan)
    if variant == "instructor":
        exs = exercises(src, repo)
        for cell in nb.cells:
            if "timing" in cell.metadata.get("tags", []):
                cell.source = timing_plan(nb, exs) if all(ex.minutes for ex in exs) else ""
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
    return {"full": nbdir / f"{src.stem}.ipynb", "learner": nbdir / LEARNER_DIR / f"{src.stem}.ipynb",
            "instructor": nbdir / INSTRUCTOR_DIR / f"{src.stem}.ipynb"}


def title_of(src: Path) -> str:
    """``"Notebook 1 · The image embedding is a sum"`` from the source's first heading."""
    m = re.search(r"^# # (\d+) · (.+)$", src.read_text(), re.M)
    if not m:
        raise ValueError(f"{src.name}: no '# N · title' heading")
    return f"Notebook {m.group(1)} · {m.group(2).strip()}"


def guide_parts(sources: list[Path], repo: str) -> dict[str, str]:
    """The generated parts of the instructor guide: ``agenda``, ``exercises``, ``discussion``."""
    timings = {src.stem: notebook_timing(src, repo) for src in sources}
    titles = {src.stem: title_of(src) for src in sources}
    workshop = [src for src in sources if int(src.stem[:2]) <= WORKSHOP_LAST]
    table, total = timing.agenda({s.stem: timings[s.stem] for s in workshop}, titles)
    cores = ", ".join(f"{int(src.stem[:2])}: {timings[src.stem].core.total}" for src in workshop)
    further = ", ".join(f"{int(src.stem[:2])}: {timings[src.stem].further.total}" for src in workshop)
    agenda = (f"{table}\n\nIn all **{total // 60} h {total % 60:02d} min**. The core paths (minutes, from each "
              f"notebook's header: {cores}) are computed by `helpers.course.timing` from the notebooks themselves, and "
              f"this table is rewritten by `scripts/build_notebooks.py`; the *going further* parts ({further} min) "
              "are homework.")
    extensions = [src for src in sources if int(src.stem[:2]) > WORKSHOP_LAST]
    if extensions:
        agenda += " Beyond the first paper, a fourth hour or homework: " + "; ".join(
            f"**{titles[s.stem]}**, core path {timings[s.stem].core.total} min "
            f"(exercises {', '.join(timings[s.stem].core.exercises) or 'none'}), going further "
            f"{timings[s.stem].further.total} min" for s in extensions) + "."
    rows = ["| # | function | kind | difficulty | importance | minutes | part |", "|---|---|---|---|---|---|---|"]
    disc = []
    for src in sources:
        exs = exercises(src, repo)
        t = timings[src.stem]
        for ex in exs:
            part = "core" if ex.number in t.core.exercises else "going further"
            rows.append(f"| {ex.number} | `{ex.function}` | {ex.kind} | {ex.difficulty} | {ex.importance} | "
                        f"{ex.minutes} | {part} |")
        further = False
        qs = []
        for cell in read_cells(source_text(src, repo, "full")):
            if cell.cell_type == "markdown" and any(ln.strip() == timing.GOING_FURTHER for ln in cell.source.splitlines()):
                further = True
            if role(cell) == "discuss":
                q, _ = _question_answer(cell.source, "discuss")
                qs.append(f"* {'*(going further)* ' if further else ''}{' '.join(q.split())}")
        title = titles[src.stem]
        disc.append(f"**{title}{'' if title.endswith(('?', '.')) else '.'}**\n" + "\n".join(qs))
    return {"agenda": agenda, "exercises": "\n".join(rows), "discussion": "\n\n".join(disc)}


def render_guide(text: str, parts: dict[str, str]) -> str:
    for name, body in parts.items():
        pat = re.compile(rf"(<!-- BEGIN {name} [^>]*-->\n).*?(<!-- END {name} -->)", re.S)
        if not pat.search(text):
            raise ValueError(f"notebooks/README.md has no '<!-- BEGIN {name} ... -->' ... '<!-- END {name} -->' block")
        text = pat.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    repo = REPO_URL_FILE.read_text().strip()
    stale = []
    def write(target: Path, nb: nbformat.NotebookNode) -> None:
        """Write ``target`` (or, with --check, note it when it differs)."""
        text = nbformat.writes(nb, version=4) + "\n"
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target.relative_to(ROOT / "notebooks")))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    sources = sorted(SRC.glob("[0-9][0-9]_*.py"))
    for src in sources:
        for variant, target in targets(src).items():
            write(target, build(src, repo, variant))
    for src in sorted(SRC.glob(f"{APP_PREFIX}*.py")):
        write(app_target(src), build_app(src, repo))
    guide = render_guide(GUIDE.read_text(), guide_parts(sources, repo))
    if args.check:
        if GUIDE.read_text() != guide:
            stale.append("README.md (its generated parts)")
        for nb in (ROOT / "notebooks" / APP_DIR).glob("*.ipynb"):
            if not (SRC / f"{APP_PREFIX}{nb.stem}.py").exists():
                stale.append(f"{nb.relative_to(ROOT / 'notebooks')} (no source)")
        for variant_dir in (ROOT / "notebooks", ROOT / "notebooks" / LEARNER_DIR, ROOT / "notebooks" / INSTRUCTOR_DIR):
            for nb in variant_dir.glob("[0-9][0-9]_*.ipynb"):
                if not (SRC / f"{nb.stem}.py").exists():
                    stale.append(f"{nb.relative_to(ROOT / 'notebooks')} (no source)")
    else:
        GUIDE.write_text(guide)
    if stale:
        print("out of date (run python scripts/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
