"""The check machinery of the course's exercises: test cases, typical mistakes, verdicts.

An :class:`Exercise` is a function the learner writes, with a reference solution, fresh test
inputs (:class:`Case`), typical wrong answers (:class:`Mistake`, each with what to tell the
learner) and a way to compare results. :func:`run_check` runs the learner's function and the
reference on every case and prints a one-line verdict:

* **correct**: the learner's function agrees with the reference on every case;
* **not done yet**: the function still raises the ``NotImplementedError`` of the stub;
* **not right yet**: what is wrong, in plain words when the mistake is a typical one;
* **error**: the learner's function raised; the exception is reported in one line that names
  the function and the line it failed on, never as a traceback from inside the helpers.

It returns a :class:`Checked`: the function later cells should use (the learner's when it
passes, else the reference), with the verdict attached. A sentence a later cell prints about
the learner's work names it with :attr:`Checked.yours`, which says plainly when the reference
stands in for it.

Exercises come in three kinds (``Exercise.kind``): **implement** (a function, checked on fresh
test cases against the reference), and **find** / **decide** (an answer the learner finds or
chooses with the course's tools, checked against the notebook's own data: the check is called
with that data as keyword arguments, ``check_shape_head(shape_head, roles=roles, ...)``, and
``Exercise.assess`` explains, from the figures, why the answer is or is not supported).

The verdict is shown with a mark and a colour where a front end renders HTML, and as one line
of text starting with the same mark in a headless run (:func:`show_verdict`). The exercises themselves live beside
their notebooks, one module each (:mod:`helpers.course.exercises.nb01` ... ``nb06``); each
registers its exercises here (:func:`register`) and makes its ``check_*`` functions with
:func:`make_check`. :func:`compare_tensor`, :func:`compare_scalar` and the seeded generators
:func:`gen`, :func:`randn`, :func:`rand` (from :mod:`.seeds`, where :func:`seeded_cases` also lives)
are what they build their cases and comparisons from.
"""

from __future__ import annotations

import functools
import math
import re
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .seeds import gen, rand, randn, seeded_cases

__all__ = ["CheckResult", "Checked", "Case", "Mistake", "Exercise", "EXERCISES", "KINDS", "register", "run_check",
           "make_check", "show_verdict", "MARKS",
           "compare_tensor", "compare_scalar", "tensor_diff", "scalar_diff", "shape_of", "to_tensor", "scalar", "close",
           "gen", "randn", "rand", "seeded_cases", "FALLBACK"]


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check.

    Attributes:
        exercise: the exercise's number, e.g. ``"2.1"``.
        function: the name of the function the learner writes.
        status: ``"passed"``, ``"not done"``, ``"wrong"`` or ``"error"``.
        message: the one-line verdict that was printed.
        case: the test case the verdict is about (``""`` when it passed or was not started).
    """

    exercise: str
    function: str
    status: str
    message: str
    case: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def mark(self) -> str:
        """The verdict's mark: a tick when it passed, a cross when wrong or raising, an ellipsis
        when not started."""
        return MARKS[self.status]

    @property
    def plain(self) -> str:
        """The verdict as one line of plain text, its mark and label first."""
        return f"{self.mark} {LABELS[self.status]} · {self.message}"

    def html(self) -> str:
        """The verdict as a coloured box (HTML) that wraps at word boundaries."""
        import html as _html

        fg, bg = COLOURS[self.status]
        text = _html.escape(self.message)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        return (f'<div class="course-verdict course-verdict-{self.status.replace(" ", "-")}" '
                f'style="border-left:6px solid {fg};background:{bg};color:#222;padding:6px 10px;margin:4px 0;'
                'white-space:normal;word-break:normal;overflow-wrap:break-word;max-width:100%;'
                'font-family:var(--jp-ui-font-family, sans-serif);font-size:0.95em;line-height:1.4">'
                f'<b style="color:{fg}">{self.mark} {LABELS[self.status]}</b> · {text}</div>')


MARKS = {"passed": "\u2714", "wrong": "\u2718", "error": "\u2718", "not done": "\u2026"}
"""The mark of each status (a plain-text run shows it too)."""
LABELS = {"passed": "PASSED", "wrong": "NOT YET", "error": "ERROR", "not done": "NOT DONE"}
COLOURS = {"passed": ("#2e7d32", "#e8f5e9"), "wrong": ("#c62828", "#ffebee"), "error": ("#c62828", "#ffebee"),
           "not done": ("#8d6e00", "#fff8e1")}


def show_verdict(result: CheckResult) -> None:
    """Show a verdict: a coloured box with its mark in a front end that renders HTML, and one line
    of plain text starting with the mark anywhere else (a headless run, a terminal, a script)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython ships with the course environment
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(result.plain)
        return
    display({"text/plain": result.plain, "text/html": result.html()}, raw=True)


class Checked:
    """What a check returns: the function later cells should use, with the verdict attached.

    Calling it calls :attr:`function` (the learner's when the check passed, else the
    reference). :attr:`learner` is the function that was checked, so running a check cell again
    checks the learner's function again rather than the fallback.
    """

    def __init__(self, function: Callable[..., Any], learner: Any, result: CheckResult) -> None:
        self.function = function
        self.learner = learner
        self.result = result
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    @property
    def passed(self) -> bool:
        return self.result.passed

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def message(self) -> str:
        return self.result.message

    @property
    def yours(self) -> str:
        """How a later sentence names the learner's work: ``"your linearise"`` when the check
        passed, else ``"the reference linearise (standing in for yours: exercise 1.1 has not
        passed)"``, so a line under a check never calls the reference's result the learner's."""
        r = self.result
        if self.passed:
            return f"your {r.function}"
        why = {"not done": "not done yet", "wrong": "not right yet", "error": "it raised"}.get(r.status, r.status)
        return f"the reference {r.function} (standing in for yours: exercise {r.exercise} is {why})"

    def __repr__(self) -> str:
        who = "yours" if self.passed else "the reference"
        return f"<exercise {self.result.exercise} {self.result.function}: {self.status}; using {who}>"


# ----------------------------------------------------------------------------------------------
# Exercises and the check runner
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One test input: a short name for messages and the positional arguments."""

    name: str
    args: tuple


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer (same signature as the exercise) and what to tell the learner."""

    fn: Callable[..., Any]
    message: str


@dataclass(frozen=True)
class Exercise:
    """One exercise: its number, the function the learner writes, the reference, test cases
    (built fresh on every check), typical mistakes, and how to compare results.

    ``kind="implement"`` (the default): the learner writes a function; ``reference`` takes the
    same arguments, ``cases`` gives test inputs, ``compare`` says what differs.

    ``kind="find"`` or ``"decide"``: the learner's function takes no argument and returns an
    answer found (or chosen) with the course's tools. The check is called with the notebook's
    data as keyword arguments (the *context*); ``reference(context)`` is the answer the data
    supports, ``assess(answer, context)`` returns ``(accepted, feedback)``, the feedback
    explaining from the figures either way; ``cases`` gives synthetic contexts for the tests
    (``Case(name, (context,))``) and each :class:`Mistake` maps a context to a plausible wrong
    answer (``Mistake.fn(context)``), whose feedback must contain ``Mistake.message``.
    """

    id: str
    name: str
    task: str
    reference: Callable[..., Any]
    cases: Callable[[], list[Case]]
    compare: Callable[[Any, Any], str | None] = lambda got, expected: None
    mistakes: tuple[Mistake, ...] = ()
    error_hint: str = ""
    kind: str = "implement"
    assess: Callable[[Any, dict], tuple[bool, str]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"exercise {self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "implement" and self.assess is None:
            raise ValueError(f"exercise {self.id}: a {self.kind} exercise needs assess(answer, context)")


KINDS = ("implement", "find", "decide")


EXERCISES: dict[str, Exercise] = {}
"""Every exercise by number (``"1.1"``, ``"1.2"``, ...), in teaching order."""


def register(ex: Exercise) -> Exercise:
    if ex.id in EXERCISES:
        raise ValueError(f"exercise {ex.id} is defined twice")
    EXERCISES[ex.id] = ex
    return ex


def _copy(x: Any) -> Any:
    """A deep copy of tensors/arrays (and of containers of them), so a function that changes
    its inputs in place cannot change what the reference sees."""
    if isinstance(x, Tensor):
        return x.clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, tuple):
        return tuple(_copy(v) for v in x)
    if isinstance(x, list):
        return [_copy(v) for v in x]
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    return x


def _raised_in(exc: BaseException, fn: Any) -> bool:
    code = getattr(fn, "__code__", None)
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return code is not None and last is not None and last.tb_frame.f_code is code


def _where(exc: BaseException, fn: Any) -> str:
    """`` at `source line``` for the deepest frame of the learner's own code, if any."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == code.co_filename]
    if not frames:
        return ""
    f = frames[-1]
    line = (f.line or "").strip()
    if line:
        return f" at `{line[:100]}`"
    return f" at line {f.lineno}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


FALLBACK = "The next cells use the reference solution until this check passes."
FALLBACK_ANSWER = "The next cells use the answer the data supports until this check passes."


def run_check(exercise: str, fn: Any, *, quiet: bool = False, **context: Any) -> Checked:
    """Check the learner's ``fn`` for ``exercise`` (e.g. ``"2.1"``), show the verdict (unless
    ``quiet``; see :func:`show_verdict`) and return the function later cells should use (see
    :class:`Checked`). A find or decide exercise takes the notebook's data as ``context``."""
    ex = EXERCISES[exercise]
    learner = fn.learner if isinstance(fn, Checked) else fn
    if ex.kind == "implement":
        if context:
            raise TypeError(f"exercise {exercise} checks a function on its own test cases; it takes no data "
                            f"(got {', '.join(sorted(context))})")
        result = _verdict(ex, learner)
        fallback = ex.reference
    else:
        result = _assessed(ex, learner, context)
        fallback = _reference_answer(ex, context)
    if not quiet:
        show_verdict(result)
    return Checked(learner if result.passed else fallback, learner, result)


def _reference_answer(ex: Exercise, context: dict) -> Callable[[], Any]:
    def reference() -> Any:
        return ex.reference(context)

    reference.__name__ = reference.__qualname__ = ex.name
    reference.__doc__ = f"The answer the notebook's data supports for exercise {ex.id} ({ex.task})."
    return reference


def _assessed(ex: Exercise, fn: Any, context: dict) -> CheckResult:
    """The verdict on a find or decide exercise: the learner's answer weighed against the data."""
    head = f"Exercise {ex.id} ({ex.name})"

    def result(status: str, text: str) -> CheckResult:
        return CheckResult(ex.id, ex.name, status, f"{head}: {text}")

    if not context:
        raise TypeError(f"exercise {ex.id} checks an answer against the notebook's data: call its check with "
                        "that data as keyword arguments")
    try:
        answer = fn() if callable(fn) else fn
    except NotImplementedError as exc:
        if _raised_in(exc, fn):
            return result("not done", "not done yet (the function still raises NotImplementedError). The next cells "
                                      "use the answer the data supports, so you can go on and come back to it.")
        return result("error", f"your {ex.name} raised {_first_line(exc)}{_where(exc, fn)}. " + FALLBACK_ANSWER)
    except Exception as exc:  # noqa: BLE001 - any error of the learner's code is reported in one line
        return result("error", f"your {ex.name} raised {_first_line(exc)}{_where(exc, fn)}. " + FALLBACK_ANSWER)
    ok, feedback = ex.assess(answer, context)
    if ok:
        return result("passed", f"{feedback} The next cells use your answer.")
    return result("wrong", f"not right yet: {feedback} " + FALLBACK_ANSWER)


def _verdict(ex: Exercise, fn: Any) -> CheckResult:
    head = f"Exercise {ex.id} ({ex.name})"

    def result(status: str, text: str, case: str = "") -> CheckResult:
        return CheckResult(ex.id, ex.name, status, f"{head}: {text}", case)

    if not callable(fn):
        return result("error", f"expected a function, got {type(fn).__name__}. " + FALLBACK)
    cases = ex.cases()
    for case in cases:
        expected = ex.reference(*_copy(case.args))
        try:
            got = fn(*_copy(case.args))
        except NotImplementedError as exc:
            if _raised_in(exc, fn):
                return result("not done", "not done yet (the function still raises NotImplementedError). "
                                          "The next cells use the reference solution, so you can go on "
                                          "and come back to it.")
            return result("error", f"your {ex.name} raised {_first_line(exc)}{_where(exc, fn)} "
                                   f"(test case: {case.name}). " + FALLBACK, case.name)
        except Exception as exc:  # noqa: BLE001 - any error of the learner's code is reported in one line
            hint = ""
            text = str(exc)
            if ex.error_hint and any(s in text for s in ("size of tensor", "shapes cannot", "mat1 and mat2",
                                                         "broadcast", "dimension", "index")):
                hint = f" Hint: {ex.error_hint}"
            return result("error", f"your {ex.name} raised {_first_line(exc)}{_where(exc, fn)} "
                                   f"(test case: {case.name}).{hint} " + FALLBACK, case.name)
        diff = ex.compare(got, expected)
        if diff is None:
            continue
        for mistake in ex.mistakes:
            try:
                wrong = mistake.fn(*_copy(case.args))
            except Exception:  # noqa: BLE001 - a mistake that cannot run on this case does not apply
                continue
            if ex.compare(got, wrong) is None and ex.compare(wrong, expected) is not None:
                shape = f" ({diff})" if diff.startswith("wrong shape") else ""
                diff = mistake.message + shape
                break
        return result("wrong", f"not right yet (test case: {case.name}): {diff}. " + FALLBACK, case.name)
    return result("passed", f"correct on all {len(cases)} test cases. The next cells use your function.")


# ----------------------------------------------------------------------------------------------
# Comparing results
# ----------------------------------------------------------------------------------------------


def shape_of(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def to_tensor(x: Any) -> Tensor | None:
    if isinstance(x, Tensor):
        return x.detach().cpu()
    if isinstance(x, (np.ndarray, np.generic, int, float, bool)) or (
            isinstance(x, (list, tuple)) and all(isinstance(v, (int, float, bool, np.generic)) for v in x)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError):
            return None
    return None


def close(a: Tensor, b: Tensor, rtol: float = 1e-5) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=rtol, atol=1e-6 * max(1.0, scale), equal_nan=True))


def tensor_diff(got: Any, expected: Tensor, what: str = "the result") -> str | None:
    """``None`` when ``got`` equals ``expected`` (up to rounding), else what differs, in words."""
    g = to_tensor(got)
    e = expected.detach().cpu().double()
    if g is None:
        return f"{what} is a {type(got).__name__}; expected a tensor of shape {shape_of(e)}"
    if g.dtype == torch.bool or not (g.is_floating_point() or g.is_complex()):
        g = g.double()
    if g.is_complex():
        return f"{what} is complex; expected real numbers"
    g = g.double()
    if g.shape != e.shape:
        if g.ndim == e.ndim >= 2 and g.shape == e.shape[:-2] + e.shape[-2:][::-1] and close(g.mT, e):
            return f"{what} is transposed: expected shape {shape_of(e)}, got {shape_of(g)}"
        if g.numel() == e.numel() and close(g.reshape(e.shape), e):
            return f"the right numbers in the wrong shape: expected {shape_of(e)}, got {shape_of(g)}"
        return f"wrong shape: expected {shape_of(e)}, got {shape_of(g)}"
    bad_g, bad_e = ~torch.isfinite(g), ~torch.isfinite(e)
    if bool((bad_g & ~bad_e).any()):
        return f"{what} contains NaN or infinite values where the expected one has numbers (a division by zero?)"
    if close(g, e):
        return None
    if close(g, -e):
        return f"the sign is flipped: {what} is minus the expected one"
    if g.ndim >= 2 and g.shape[-1] == g.shape[-2] and close(g.mT, e):
        return f"{what} is transposed (rows and columns swapped)"
    g0, e0 = torch.nan_to_num(g), torch.nan_to_num(e)
    denom = float((e0 * e0).sum())
    if denom > 0:
        c = float((g0 * e0).sum()) / denom
        if abs(c) > 1e-12 and close(g0, c * e0, rtol=1e-4):
            return (f"{what} is off by a constant factor: every entry is {c:.4g} times the expected one (a "
                    "scaling, not rounding: look for a normalisation or a weight that should not be there)")
    d = g0 - e0
    if g.ndim >= 2 and close(d, d[:1].expand_as(d), rtol=1e-4):
        return (f"{what} is off by the same amount for every row: a constant term is missing, "
                "or added where it does not belong")
    err = float(d.abs().max())
    scale = float(e0.abs().max())
    return f"{what} differs from the expected one (largest difference {err:.3g}; values reach {scale:.3g})"


def scalar(x: Any) -> float | None:
    t = to_tensor(x)
    if t is None or t.numel() != 1:
        return None
    return float(t.reshape(()))


def scalar_diff(got: Any, expected: float, what: str = "the result", rtol: float = 1e-6) -> str | None:
    g = scalar(got)
    if g is None:
        t = to_tensor(got)
        if t is not None:
            return f"{what} has shape {shape_of(t)}; expected a single number"
        return f"{what} is a {type(got).__name__}; expected a single number"
    if math.isnan(g) and not math.isnan(expected):
        return f"{what} is NaN (a division by zero?)"
    if math.isclose(g, expected, rel_tol=rtol, abs_tol=1e-9):
        return None
    if expected != 0 and math.isclose(g, -expected, rel_tol=rtol, abs_tol=1e-9):
        return f"the sign is flipped: {what} is minus the expected one"
    return f"{what} is {g:.4g}, expected {expected:.4g}"


def compare_tensor(what: str = "the result") -> Callable[[Any, Any], str | None]:
    return lambda got, expected: tensor_diff(got, expected, what)


def compare_scalar(what: str = "the result") -> Callable[[Any, Any], str | None]:
    return lambda got, expected: scalar_diff(got, expected, what)


# ----------------------------------------------------------------------------------------------
# The check functions the notebooks call
# ----------------------------------------------------------------------------------------------


def make_check(exercise: str) -> Callable[[Any], Checked]:
    ex = EXERCISES[exercise]

    def check(fn: Any, *, quiet: bool = False, **context: Any) -> Checked:
        return run_check(exercise, fn, quiet=quiet, **context)

    check.__name__ = f"check_{ex.name}"
    check.__qualname__ = check.__name__
    if ex.kind == "implement":
        what = ("Shows the verdict and returns the function later cells should use (the learner's when it "
                "passes, else the reference), with the verdict attached (:class:`Checked`).")
    else:
        what = ("Call it with the notebook's data as keyword arguments. Shows the verdict, with feedback from "
                "the figures, and returns what later cells should use (the learner's answer when it is "
                "accepted, else the answer the data supports), with the verdict attached (:class:`Checked`).")
    check.__doc__ = f"Check exercise {ex.id}, ``{ex.name}`` ({ex.kind}): {ex.task}.\n\n{what}"
    return check
