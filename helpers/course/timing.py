"""How long a notebook takes a learner, computed from the notebook itself.

Every course notebook has a **core path** (everything before its ``## Going further`` heading:
reading, running cells, the exercises there) and a **going further** part. :func:`estimate`
counts, for each part:

* **reading**: the words of its markdown (hints, hidden solutions and the instructor's answer
  keys left out; a prediction's answer counted, since the learner reads it after running) at
  :data:`WORDS_PER_MINUTE`;
* **running**: :data:`MINUTES_PER_CELL` for every code cell that is not an exercise or its
  check (running it, waiting, reading its output, including the generated *What we see*
  prose), plus :data:`MINUTES_PER_PREDICTION` for every *Predict, then run* prompt (writing the
  prediction down) and :data:`MINUTES_PER_DISCUSSION` for every discussion prompt;
* **exercises**: the ``minutes`` each exercise's metadata gives.

The builder (``scripts/build_notebooks.py``) writes the result into each notebook's header
(:func:`header_line`) and the agenda of ``notebooks/README.md`` (:func:`agenda`), and the tests
keep every core path within :data:`CORE_LIMIT` minutes. The model is deliberately simple and
stated, so an instructor can adjust it: a slower room reads fewer words per minute.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = ["WORDS_PER_MINUTE", "MINUTES_PER_CELL", "MINUTES_PER_PREDICTION", "MINUTES_PER_DISCUSSION",
           "CORE_LIMIT", "GOING_FURTHER", "Part", "Timing", "estimate", "header_line", "agenda", "words"]

WORDS_PER_MINUTE = 180
"""Reading speed for technical prose with formulas (a careful reader; plain prose is read faster)."""
MINUTES_PER_CELL = 0.5
"""Running one code cell and reading its output."""
MINUTES_PER_PREDICTION = 1.0
"""Writing a prediction down before running the cell."""
MINUTES_PER_DISCUSSION = 1.0
"""Thinking about a discussion prompt (alone; a room discussion takes longer)."""
CORE_LIMIT = 30
"""The most minutes a notebook's core path may take."""
GOING_FURTHER = "## Going further"
"""The heading that ends a notebook's core path."""

_SKIP_TAGS = {"hint", "solution", "exercise-badge", "timing"}


def words(text: str) -> int:
    """Words of a markdown text as a reader meets them: markup, links' targets, HTML tags and
    LaTeX commands left out, a formula counted as a few words."""
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # a link's target is not read
    text = re.sub(r"\$\$.*?\$\$", " formula formula formula formula ", text, flags=re.S)
    text = re.sub(r"\$[^$]+\$", " symbol ", text)
    return len(re.findall(r"[A-Za-z0-9][\w'’.-]*", text))


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


@dataclass
class Part:
    """The minutes of one part of a notebook (core or going further)."""

    words: int = 0
    cells: int = 0
    predictions: int = 0
    discussions: int = 0
    exercises: dict[str, int] = field(default_factory=dict)  # number -> minutes

    @property
    def reading(self) -> float:
        return self.words / WORDS_PER_MINUTE

    @property
    def running(self) -> float:
        return (self.cells * MINUTES_PER_CELL + self.predictions * MINUTES_PER_PREDICTION
                + self.discussions * MINUTES_PER_DISCUSSION)

    @property
    def exercise_minutes(self) -> int:
        return sum(self.exercises.values())

    @property
    def total(self) -> int:
        """Whole minutes, rounded up."""
        return math.ceil(self.reading + self.running + self.exercise_minutes - 1e-9)


@dataclass
class Timing:
    core: Part
    further: Part

    @property
    def total(self) -> int:
        return self.core.total + self.further.total


def estimate(cells: Iterable[Any], exercise_minutes: dict[str, int] | None = None) -> Timing:
    """The :class:`Timing` of a notebook's cells (nbformat cells, or dicts with ``cell_type``,
    ``source`` and ``metadata.tags``). Exercise cells are recognised by their ``exercise``
    tag and numbered in order ``1, 2, ...`` (keys of ``exercise_minutes``, e.g. ``"1.2"``, in
    that order); the cell after an exercise is its check and costs nothing extra."""
    core, further = Part(), Part()
    part = core
    minutes = list((exercise_minutes or {}).items())
    k = 0
    after_exercise = False
    for cell in cells:
        tags = _tags(cell)
        src = _source(cell)
        if cell.get("cell_type") == "markdown" and any(line.strip() == GOING_FURTHER for line in src.splitlines()):
            part = further
        if "exercise" in tags:
            if k >= len(minutes):
                raise ValueError("an exercise cell without minutes: give every exercise its minutes")
            number, m = minutes[k]
            part.exercises[number] = int(m)
            k += 1
            after_exercise = True
            continue
        if set(tags) & _SKIP_TAGS:
            continue
        if cell.get("cell_type") == "markdown":
            if "discuss" in tags:
                part.words += words(src.split("Answer:")[0])
                part.discussions += 1
            else:
                part.words += words(src)
                part.predictions += "predict" in tags
            continue
        if after_exercise:  # its check cell
            after_exercise = False
            continue
        part.cells += 1
    if k != len(minutes):
        raise ValueError(f"{len(minutes)} exercises given, {k} exercise cells found")
    return Timing(core, further)


def _exercise_list(numbers: Sequence[str]) -> str:
    if not numbers:
        return "no exercise"
    return ("exercise " if len(numbers) == 1 else "exercises ") + ", ".join(numbers)


def header_line(t: Timing) -> str:
    """The header's *Time* row: the core path and the going-further part, each split into
    reading, running and exercises."""
    def part(p: Part) -> str:
        return (f"{math.ceil(p.reading)} min reading, {math.ceil(p.running)} min running cells and reading "
                f"their output, {p.exercise_minutes} min of {_exercise_list(list(p.exercises))}")

    return (f"**core path about {t.core.total} min** ({part(t.core)}); *going further* about "
            f"{t.further.total} min ({part(t.further)}). Computed from this notebook "
            f"({WORDS_PER_MINUTE} words a minute, {MINUTES_PER_CELL:g} min a cell, {MINUTES_PER_PREDICTION:g} "
            "min a prediction or discussion prompt, and each exercise's own minutes)")


def _clock(minutes: int) -> str:
    return f"{minutes // 60}:{minutes % 60:02d}"


def agenda(timings: dict[str, Timing], titles: dict[str, str], *, welcome: int = 10, brk: int = 10,
           wrap_up: int = 5, break_after: int = 2) -> tuple[str, int]:
    """The three-hour agenda as a markdown table, from the notebooks' core paths: a welcome,
    each notebook's core path, a break after notebook ``break_after``, and a wrap-up. Returns
    the table and the total minutes."""
    rows = []
    t = 0

    def add(minutes: int, what: str, exercises: str = "") -> None:
        nonlocal t
        rows.append(f"| {_clock(t)}–{_clock(t + minutes)} | {what} | {exercises} |")
        t += minutes

    add(welcome, "Welcome; everyone opens `learner/01` and runs the set-up cell")
    for i, (name, tm) in enumerate(timings.items(), 1):
        add(tm.core.total, f"**{titles[name]}**, core path (header: {tm.core.total} min)",
            ", ".join(tm.core.exercises))
        if i == break_after:
            add(brk, "Break")
    add(wrap_up, "Wrap-up; the *going further* parts as homework")
    table = "| time | what | exercises |\n|---|---|---|\n" + "\n".join(rows)
    return table, t
