"""The course's exercises: reference solutions, and checks that explain mistakes in plain words.

Every notebook has two or three exercises: a small function the learner writes, at the heart
of the method the notebook teaches. A check cell follows each one::

    linearise = check_linearise(linearise)

The check runs the learner's function and a reference solution on fresh test inputs (small,
seeded, several cases with edge cases among them) and prints a one-line verdict:

* **correct**: the learner's function agrees with the reference on every case;
* **not done yet**: the function still raises the ``NotImplementedError`` of the stub;
* **not right yet**: what is wrong, in plain words when the mistake is a typical one (wrong
  shape, sign flipped, a missing term, off by the mean, forgot to divide by sigma, wrong axis,
  transposed, not normalised, the wrong set of components, ...);
* **error**: the learner's function raised; the exception is reported in one line that names
  the function and the line it failed on, never as a traceback from inside the helpers.

A check returns the function the later cells should use, callable like it: the learner's
when it passes, otherwise the reference, so a learner who skips an exercise is not stuck. The
returned :class:`Checked` also carries the verdict (``.passed``, ``.status``, ``.message``,
``.result``), which is what the tests assert on.

The references reuse the helpers' own code where it exists (``accuracy``,
``dominant_property``, ``rank_heads``/``choose_heads``, ``group_metrics``, ``postprocess``,
``threshold_map``, ``SegmentationScores``, the decomposition's per-token contraction); the
others are plain formulas that ``tests/test_exercises.py`` checks against the helpers
(``Decomposer``, ``DirectTerms.ablated``, ``group_variance_share``, ``textspan``).

:data:`EXERCISES` lists them all (``"1.1"`` is notebook 1's first exercise).
:func:`residual_pieces` and :func:`head_parts` hand the notebooks the inputs of exercises 1.1
and 4.1 from a real model.
"""

from __future__ import annotations

import functools
import math
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CheckResult",
    "Checked",
    "Exercise",
    "EXERCISES",
    "run_check",
    "ResidualPieces",
    "residual_pieces",
    "HeadParts",
    "head_parts",
    "check_linearise",
    "check_reassemble",
    "check_variance_share",
    "check_mean_ablate",
    "check_zero_shot_accuracy",
    "check_project_texts",
    "check_textspan_step",
    "check_role_and_purity",
    "check_head_patch_map",
    "check_contrastive_head_map",
    "check_choose_spurious_heads",
    "check_worst_group_accuracy",
    "check_postprocess",
    "check_threshold_at_mean",
    "check_dataset_miou",
]


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
    (built fresh on every check), typical mistakes, and how to compare results."""

    id: str
    name: str
    task: str
    reference: Callable[..., Any]
    cases: Callable[[], list[Case]]
    compare: Callable[[Any, Any], str | None]
    mistakes: tuple[Mistake, ...] = ()
    error_hint: str = ""


EXERCISES: dict[str, Exercise] = {}
"""Every exercise by number (``"1.1"``, ``"1.2"``, ...), in teaching order."""


def _register(ex: Exercise) -> Exercise:
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


_FALLBACK = "The next cells use the reference solution until this check passes."


def run_check(exercise: str, fn: Any, *, quiet: bool = False) -> Checked:
    """Check the learner's ``fn`` for ``exercise`` (e.g. ``"2.1"``), print the verdict (unless
    ``quiet``) and return the function later cells should use (see :class:`Checked`)."""
    ex = EXERCISES[exercise]
    learner = fn.learner if isinstance(fn, Checked) else fn
    result = _verdict(ex, learner)
    if not quiet:
        print(result.message)
    return Checked(learner if result.passed else ex.reference, learner, result)


def _verdict(ex: Exercise, fn: Any) -> CheckResult:
    head = f"Exercise {ex.id} ({ex.name})"

    def result(status: str, text: str, case: str = "") -> CheckResult:
        return CheckResult(ex.id, ex.name, status, f"{head}: {text}", case)

    if not callable(fn):
        return result("error", f"expected a function, got {type(fn).__name__}. " + _FALLBACK)
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
                                   f"(test case: {case.name}). " + _FALLBACK, case.name)
        except Exception as exc:  # noqa: BLE001 - any error of the learner's code is reported in one line
            hint = ""
            text = str(exc)
            if ex.error_hint and any(s in text for s in ("size of tensor", "shapes cannot", "mat1 and mat2",
                                                         "broadcast", "dimension", "index")):
                hint = f" Hint: {ex.error_hint}"
            return result("error", f"your {ex.name} raised {_first_line(exc)}{_where(exc, fn)} "
                                   f"(test case: {case.name}).{hint} " + _FALLBACK, case.name)
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
        return result("wrong", f"not right yet (test case: {case.name}): {diff}. " + _FALLBACK, case.name)
    return result("passed", f"correct on all {len(cases)} test cases. The next cells use your function.")


# ----------------------------------------------------------------------------------------------
# Comparing results
# ----------------------------------------------------------------------------------------------


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _to_tensor(x: Any) -> Tensor | None:
    if isinstance(x, Tensor):
        return x.detach().cpu()
    if isinstance(x, (np.ndarray, np.generic, int, float, bool)) or (
            isinstance(x, (list, tuple)) and all(isinstance(v, (int, float, bool, np.generic)) for v in x)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError):
            return None
    return None


def _close(a: Tensor, b: Tensor, rtol: float = 1e-5) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=rtol, atol=1e-6 * max(1.0, scale), equal_nan=True))


def _tensor_diff(got: Any, expected: Tensor, what: str = "the result") -> str | None:
    """``None`` when ``got`` equals ``expected`` (up to rounding), else what differs, in words."""
    g = _to_tensor(got)
    e = expected.detach().cpu().double()
    if g is None:
        return f"{what} is a {type(got).__name__}; expected a tensor of shape {_shape(e)}"
    if g.dtype == torch.bool or not (g.is_floating_point() or g.is_complex()):
        g = g.double()
    if g.is_complex():
        return f"{what} is complex; expected real numbers"
    g = g.double()
    if g.shape != e.shape:
        if g.ndim == e.ndim >= 2 and g.shape == e.shape[:-2] + e.shape[-2:][::-1] and _close(g.mT, e):
            return f"{what} is transposed: expected shape {_shape(e)}, got {_shape(g)}"
        if g.numel() == e.numel() and _close(g.reshape(e.shape), e):
            return f"the right numbers in the wrong shape: expected {_shape(e)}, got {_shape(g)}"
        return f"wrong shape: expected {_shape(e)}, got {_shape(g)}"
    bad_g, bad_e = ~torch.isfinite(g), ~torch.isfinite(e)
    if bool((bad_g & ~bad_e).any()):
        return f"{what} contains NaN or infinite values where the expected one has numbers (a division by zero?)"
    if _close(g, e):
        return None
    if _close(g, -e):
        return f"the sign is flipped: {what} is minus the expected one"
    if g.ndim >= 2 and g.shape[-1] == g.shape[-2] and _close(g.mT, e):
        return f"{what} is transposed (rows and columns swapped)"
    g0, e0 = torch.nan_to_num(g), torch.nan_to_num(e)
    denom = float((e0 * e0).sum())
    if denom > 0:
        c = float((g0 * e0).sum()) / denom
        if abs(c) > 1e-12 and _close(g0, c * e0, rtol=1e-4):
            return f"{what} is off by a constant factor: it is about {c:.3g} times the expected one"
    d = g0 - e0
    if g.ndim >= 2 and _close(d, d[:1].expand_as(d), rtol=1e-4):
        return (f"{what} is off by the same amount for every row: a constant term is missing, "
                "or added where it does not belong")
    err = float(d.abs().max())
    scale = float(e0.abs().max())
    return f"{what} differs from the expected one (largest difference {err:.3g}; values reach {scale:.3g})"


def _scalar(x: Any) -> float | None:
    t = _to_tensor(x)
    if t is None or t.numel() != 1:
        return None
    return float(t.reshape(()))


def _scalar_diff(got: Any, expected: float, what: str = "the result", rtol: float = 1e-6) -> str | None:
    g = _scalar(got)
    if g is None:
        t = _to_tensor(got)
        if t is not None:
            return f"{what} has shape {_shape(t)}; expected a single number"
        return f"{what} is a {type(got).__name__}; expected a single number"
    if math.isnan(g) and not math.isnan(expected):
        return f"{what} is NaN (a division by zero?)"
    if math.isclose(g, expected, rel_tol=rtol, abs_tol=1e-9):
        return None
    if expected != 0 and math.isclose(g, -expected, rel_tol=rtol, abs_tol=1e-9):
        return f"the sign is flipped: {what} is minus the expected one"
    return f"{what} is {g:.4g}, expected {expected:.4g}"


def _compare_tensor(what: str = "the result") -> Callable[[Any, Any], str | None]:
    return lambda got, expected: _tensor_diff(got, expected, what)


def _compare_scalar(what: str = "the result") -> Callable[[Any, Any], str | None]:
    return lambda got, expected: _scalar_diff(got, expected, what)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _rand(g: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# Notebook 1: the embedding as a sum
# ----------------------------------------------------------------------------------------------


def _linearise(pieces: Tensor, sigma: Tensor, gamma: Tensor, proj: Tensor) -> Tensor:
    """Direct contributions ``[B, K, E]`` of residual pieces ``[B, K, D]`` through ``ln_post``
    (centring over the ``D`` features, ``gamma``, ``1/sigma`` per image) and ``proj``."""
    centred = pieces - pieces.mean(-1, keepdim=True)
    return (centred * gamma / sigma[:, None, None]) @ proj


def _linearise_cases() -> list[Case]:
    g = _gen(101)

    def make(B: int, K: int, D: int = 6, E: int = 5) -> tuple:
        pieces = _randn(g, B, K, D) + 2.0 * _randn(g, B, K, 1)  # each piece has its own mean
        sigma = 0.5 + 2.0 * _rand(g, B)
        gamma = 0.5 + _rand(g, D)
        proj = _randn(g, D, E)
        return pieces, sigma, gamma, proj

    return [Case("3 images, 4 pieces", make(3, 4)), Case("one image", make(1, 4)),
            Case("one piece", make(2, 1)), Case("one image, one piece", make(1, 1))]


_register(Exercise(
    id="1.1", name="linearise", task="the direct contribution of each residual piece through ln_post and proj",
    reference=_linearise, cases=_linearise_cases, compare=_compare_tensor("the result"),
    error_hint="pieces are [B, K, D], sigma [B] (one per image: use sigma[:, None, None]), gamma [D], "
               "proj [D, E]; the mean is over the last axis (keepdim=True)",
    mistakes=(
        Mistake(lambda c, s, gm, p: (c * gm / s[:, None, None]) @ p,
                "the pieces are not centred: ln_post subtracts each vector's mean over its D features "
                "before scaling, so every piece must be centred on its own (the result is off by the mean)"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(1, keepdim=True)) * gm / s[:, None, None]) @ p,
                "centred over the wrong axis (over the pieces): the mean ln_post subtracts is over the "
                "features of each vector, the last axis"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(0, keepdim=True)) * gm / s[:, None, None]) @ p,
                "centred over the wrong axis (over the images): the mean ln_post subtracts is over the "
                "features of each vector, the last axis"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(-1, keepdim=True)) * gm) @ p,
                "you forgot to divide by sigma: the layer norm's standard deviation, held fixed per image"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(-1, keepdim=True)) * gm * s[:, None, None]) @ p,
                "you multiplied by sigma; divide by it"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(-1, keepdim=True)) / s[:, None, None]) @ p,
                "gamma (ln_post's scale, one weight per feature) is missing"),
        Mistake(lambda c, s, gm, p: (c - c.mean(-1, keepdim=True)) * gm / s[:, None, None],
                "the projection is missing: multiply by proj to go from the residual stream [D] to the "
                "joint space [E]"),
    ),
))


def _reassemble(contributions: Tensor, beta: Tensor, proj: Tensor) -> Tensor:
    """The embedding ``[B, E]``: the direct contributions ``[B, K, E]`` added up, plus the
    constant term ``beta @ proj`` (``ln_post``'s bias through the projection)."""
    return contributions.sum(1) + beta @ proj


def _reassemble_cases() -> list[Case]:
    g = _gen(102)

    def make(B: int, K: int, D: int = 6, E: int = 5) -> tuple:
        return _randn(g, B, K, E), _randn(g, D), _randn(g, D, E)

    return [Case("3 images, 4 pieces", make(3, 4)), Case("one image", make(1, 3)),
            Case("one piece", make(2, 1)), Case("E = D", make(2, 3, 5, 5))]


_register(Exercise(
    id="1.2", name="reassemble", task="the embedding from the direct contributions and the constant term",
    reference=_reassemble, cases=_reassemble_cases, compare=_compare_tensor("the embedding"),
    error_hint="contributions are [B, K, E], beta [D] and proj [D, E]: beta @ proj is one [E] vector",
    mistakes=(
        Mistake(lambda c, b, p: c.sum(1),
                "the constant term is missing: ln_post's bias beta, through proj (beta @ proj), is added "
                "once to every embedding"),
        Mistake(lambda c, b, p: c.sum(1) + c.shape[1] * (b @ p),
                "you added the constant term once per piece; it enters the embedding once"),
        Mistake(lambda c, b, p: c.mean(1) + b @ p,
                "you averaged the pieces; the embedding is their sum"),
        Mistake(lambda c, b, p: c.sum(0) + b @ p,
                "you added up over the images (axis 0); add up the pieces of each image (axis 1)"),
        Mistake(lambda c, b, p: c.sum(1) - b @ p,
                "the constant term has the wrong sign: add beta @ proj"),
    ),
))


def _variance_share(group: Tensor, embeddings: Tensor) -> float:
    """The variance over images of the group's summed terms, summed over dimensions, as a share
    of the embeddings' total variance."""
    total = group.sum(1)
    return float(total.var(0).sum() / embeddings.var(0).sum())


def _variance_share_cases() -> list[Case]:
    g = _gen(103)

    def make(N: int, K: int, E: int = 4, cancel: bool = False) -> tuple:
        common = _randn(g, N, 1, E)  # terms that write along a shared direction are correlated
        signs = torch.tensor([(-1.0) ** k if cancel else 1.0 for k in range(K)], dtype=torch.float64)
        group = 0.5 * _randn(g, N, K, E) + signs[None, :, None] * common
        emb = group.sum(1) + _randn(g, N, E)
        return group, emb

    return [Case("6 images, 3 correlated terms", make(6, 3)), Case("two images", make(2, 2)),
            Case("one term", make(5, 1)), Case("two terms that cancel", make(6, 2, cancel=True))]


_register(Exercise(
    id="1.3", name="variance_share", task="the variance share of a group of terms",
    reference=_variance_share, cases=_variance_share_cases, compare=_compare_scalar("the share"),
    error_hint="group is [N, K, E], embeddings [N, E]; the variance is over images (axis 0)",
    mistakes=(
        Mistake(lambda grp, emb: float(grp.var(0).sum() / emb.var(0).sum()),
                "you added up the shares of the single terms; the group's share is the variance of their "
                "*sum*, which counts the covariances between the terms (correlated terms add more, terms "
                "that cancel add less)"),
        Mistake(lambda grp, emb: float(grp.sum(1).std(0).sum() / emb.std(0).sum()),
                "you compared standard deviations; a variance share compares variances"),
        Mistake(lambda grp, emb: float(grp.sum(1).var(1).sum() / emb.var(1).sum()),
                "you took the variance over the embedding dimensions; take it over the images (axis 0), "
                "then add it up over the dimensions"),
        Mistake(lambda grp, emb: float(grp.sum(1).var(0).sum()),
                "not normalised: divide by the embeddings' total variance to get a share"),
        Mistake(lambda grp, emb: float((grp.sum(1).var(0) / emb.var(0)).mean()),
                "you averaged per-dimension ratios; divide the total variance (summed over dimensions) "
                "of the group by that of the embeddings"),
    ),
))


@dataclass
class ResidualPieces:
    """What exercise 1.1 needs from a real model, for a batch of ``B`` images.

    Attributes:
        pieces: ``[B, K, D]`` what each piece adds to the residual stream at the class token:
            the embedding term (``ln_pre``'s output), then attention and MLP of every block.
        names: the ``K`` piece names (``embed``, ``attn.0``, ``mlp.0``, ...).
        sigma: ``[B]`` the standard deviation ``ln_post`` divides by (its ``eps`` included).
        gamma, beta: ``[D]`` ``ln_post``'s scale and bias; proj: ``[D, E]`` the projection.
    """

    pieces: Tensor
    names: list[str]
    sigma: Tensor
    gamma: Tensor
    beta: Tensor
    proj: Tensor


@torch.no_grad()
def residual_pieces(model: nn.Module, images: Tensor) -> ResidualPieces:
    """The raw residual-stream pieces at the class token, read with the named hook sites
    (``ln_pre``, ``blocks.*.attn_out``, ``blocks.*.mlp_out``, ``ln_post.in``)."""
    from .decompose import check_model_supported
    from .hooks import capture

    visual = check_model_supported(model)
    L = len(visual.transformer.resblocks)
    with capture(model, ["ln_pre", "blocks.*.attn_out", "blocks.*.mlp_out", "ln_post.in"]) as cache:
        visual(images)
    parts, names = [cache["ln_pre"][:, 0]], ["embed"]
    for layer in range(L):
        parts += [cache[f"blocks.{layer}.attn_out"][:, 0], cache[f"blocks.{layer}.mlp_out"][:, 0]]
        names += [f"attn.{layer}", f"mlp.{layer}"]
    z = cache["ln_post.in"]
    z = z if z.ndim == 2 else z[:, 0]
    ln = visual.ln_post
    width = z.shape[-1]
    sigma = (z.var(-1, unbiased=False) + ln.eps).sqrt()
    gamma = ln.weight if ln.weight is not None else torch.ones(width, dtype=z.dtype, device=z.device)
    beta = ln.bias if ln.bias is not None else torch.zeros(width, dtype=z.dtype, device=z.device)
    return ResidualPieces(torch.stack(parts, 1), names, sigma, gamma.detach().clone(), beta.detach().clone(),
                          visual.proj.detach().clone())


# ----------------------------------------------------------------------------------------------
# Notebook 2: mean ablation
# ----------------------------------------------------------------------------------------------


def _mean_ablate(components: Tensor, ablate: Sequence[int]) -> Tensor:
    """Embeddings ``[N, d]``: the components ``[N, C, d]`` added up, the ones in ``ablate``
    replaced by their mean over the ``N`` images."""
    idx = list(ablate)
    out = components.sum(1)
    if idx:
        chosen = components[:, idx]
        out = out + (chosen.mean(0, keepdim=True) - chosen).sum(1)
    return out


def _mean_ablate_cases() -> list[Case]:
    g = _gen(201)

    def comps(N: int, C: int = 6, d: int = 4) -> Tensor:
        return _randn(g, N, C, d) + 3.0 * _randn(g, 1, C, d)  # every component has its own mean

    return [Case("5 images, ablate components 1 and 3", (comps(5), [1, 3])),
            Case("ablate nothing", (comps(4), [])),
            Case("ablate one component", (comps(4), [0])),
            Case("ablate everything", (comps(3), list(range(6)))),
            Case("one image", (comps(1), [2, 4]))]


def _all_but(c: Tensor, idx: Sequence[int]) -> list[int]:
    return [i for i in range(c.shape[1]) if i not in set(idx)]


def _ma_not_summed(c: Tensor, idx: Sequence[int]) -> Tensor:
    out = c.clone()
    idx = list(idx)
    if idx:
        out[:, idx] = c[:, idx].mean(0, keepdim=True)
    return out


_register(Exercise(
    id="2.1", name="mean_ablate", task="embeddings with chosen components replaced by their dataset mean",
    reference=_mean_ablate, cases=_mean_ablate_cases, compare=_compare_tensor("the embeddings"),
    error_hint="components are [N, C, d] (images, components, dimensions); ablate is a list of component "
               "indices; the mean is over images (axis 0, keepdim=True)",
    mistakes=(
        Mistake(lambda c, idx: c.sum(1) - c[:, list(idx)].sum(1),
                "you removed the chosen components (zero ablation); mean ablation replaces each one by its "
                "average over the images, so it still adds that average"),
        Mistake(lambda c, idx: _mean_ablate(c, _all_but(c, idx)),
                "you ablated every component except the chosen ones"),
        Mistake(lambda c, idx: c.sum(1) + (c[:, list(idx)].mean(1, keepdim=True) - c[:, list(idx)]).sum(1),
                "the mean is over the wrong axis (over the components); take it over the images (axis 0)"),
        Mistake(lambda c, idx: c.sum(1) + (c[:, list(idx)].mean(-1, keepdim=True) - c[:, list(idx)]).sum(1),
                "the mean is over the wrong axis (over the dimensions); take it over the images (axis 0)"),
        Mistake(_ma_not_summed,
                "you returned the components; add them up over axis 1 to get one embedding per image"),
        Mistake(lambda c, idx: _mean_ablate(c, range(c.shape[1])),
                "you mean-ablated every component, so every image gets the same embedding"),
    ),
))


def _zero_shot_accuracy(embeddings: Tensor, classifier: Tensor, labels: Tensor) -> float:
    """Top-1 zero-shot accuracy: the class of highest cosine similarity, against the labels."""
    from .ablation import accuracy

    return accuracy(embeddings, classifier, labels)


def _accuracy_cases() -> list[Case]:
    g = _gen(202)

    def make(N: int, C: int = 4, d: int = 5, right: bool = False) -> tuple:
        cls = F.normalize(_randn(g, C, d), dim=-1)
        labels = torch.randint(0, C, (N,), generator=g)
        emb = (0.5 + 3.0 * _rand(g, N, 1)) * _randn(g, N, d)
        if right:
            emb = (1 + _rand(g, N, 1)) * cls[labels]
        return emb, cls, labels

    cases = []
    for seed in range(50):  # a first case whose accuracy is neither 0, 1/2 nor 1
        emb, cls, labels = make(9)
        acc = _zero_shot_accuracy(emb, cls, labels)
        if 0.1 < acc < 0.9 and abs(acc - 0.5) > 0.05:
            cases.append(Case("9 images, 4 classes", (emb, cls, labels)))
            break
    cases += [Case("every image right", make(6, right=True)), Case("one image", make(1)),
              Case("two classes", make(8, C=2))]
    return cases


_register(Exercise(
    id="2.2", name="zero_shot_accuracy", task="top-1 zero-shot accuracy of embeddings against class embeddings",
    reference=_zero_shot_accuracy, cases=_accuracy_cases, compare=_compare_scalar("the accuracy"),
    error_hint="embeddings are [N, d], classifier [C, d] (one row per class), labels [N]: the logits are "
               "[N, C] and the prediction is the argmax over classes (axis 1)",
    mistakes=(
        Mistake(lambda e, c, y: float(((F.normalize(e, dim=-1) @ c.T).argmax(1) == y).sum()),
                "you returned the number of correct images; the accuracy is that number divided by the "
                "number of images"),
        Mistake(lambda e, c, y: 1.0 - float(((e @ c.T).argmax(1) == y).double().mean()),
                "you returned the error rate (the share of wrong images)"),
        Mistake(lambda e, c, y: float(((e @ c.T).argmin(1) == y).double().mean()),
                "you picked the least similar class (argmin); the prediction is the most similar class"),
    ),
))


# ----------------------------------------------------------------------------------------------
# Notebook 3: TextSpan
# ----------------------------------------------------------------------------------------------


def _project_texts(C: Tensor, R: Tensor, rank: int) -> Tensor:
    """Texts ``R [M, d]`` projected on the span of the top-``rank`` right singular vectors of
    the (uncentred) head outputs ``C [K, d]``: ``R V_r V_r^T``."""
    _, _, vh = torch.linalg.svd(C, full_matrices=False)
    V = vh[:rank]  # [r, d]: the rows of V^T are the right singular vectors
    return R @ V.T @ V


def _project_cases() -> list[Case]:
    g = _gen(301)

    def make(K: int, d: int, M: int, rank: int) -> tuple:
        scales = torch.linspace(3.0, 0.3, d, dtype=torch.float64)
        C = _randn(g, K, d) * scales + 2.0 * _randn(g, 1, d)  # outputs with a mean of their own
        return C, _randn(g, M, d), rank

    return [Case("12 images, 6 dimensions, rank 3", make(12, 6, 5, 3)), Case("rank 1", make(10, 5, 4, 1)),
            Case("one text", make(8, 4, 1, 2)), Case("rank = d (nothing removed)", make(9, 4, 3, 4))]


def _svd_vh(C: Tensor) -> Tensor:
    return torch.linalg.svd(C, full_matrices=False)[2]


_register(Exercise(
    id="3.1", name="project_texts", task="texts projected on the span of a head's outputs",
    reference=_project_texts, cases=_project_cases, compare=_compare_tensor("the projected texts"),
    error_hint="C is [K, d], R [M, d]; torch.linalg.svd(C, full_matrices=False) returns U, S, Vh with the "
               "right singular vectors as the ROWS of Vh [min(K, d), d]",
    mistakes=(
        Mistake(lambda C, R, r: _project_texts(C - C.mean(0, keepdim=True), R, r),
                "you centred C before the SVD; the span is that of the uncentred outputs (the mean the head "
                "writes is part of what it writes)"),
        Mistake(lambda C, R, r: R @ _svd_vh(C)[-r:].T @ _svd_vh(C)[-r:],
                "you kept the smallest singular directions; keep the top r (largest singular values)"),
        Mistake(lambda C, R, r: R @ _svd_vh(C)[:r].T,
                "you returned the coordinates in the span ([M, r]); map them back with V_r^T to get texts in "
                "the joint space ([M, d])"),
        Mistake(lambda C, R, r: R @ _svd_vh(C)[:, :r] @ _svd_vh(C)[:, :r].T,
                "you used the columns of Vh; the right singular vectors are its rows"),
        Mistake(lambda C, R, r: F.normalize(_project_texts(C, R, r), dim=-1),
                "you normalised the projected texts; TextSpan keeps their length (how much of a text lies in "
                "the head's span matters)"),
    ),
))


def _textspan_step(C: Tensor, R: Tensor) -> tuple[int, Tensor, Tensor]:
    """One greedy TextSpan step: the text ``j`` whose scores ``C @ R[j]`` vary most over the
    images, then ``u = R[j] / |R[j]|`` removed from the data and from every text."""
    var = (C @ R.T).var(0)
    j = int(var.argmax())
    u = R[j] / R[j].norm()
    return j, C - torch.outer(C @ u, u), R - torch.outer(R @ u, u)


def _step_cases() -> list[Case]:
    g = _gen(302)

    def make(K: int, d: int, M: int) -> tuple:
        C = _randn(g, K, d) * torch.linspace(2.0, 0.5, d, dtype=torch.float64)
        C = C - C.mean(0, keepdim=True)
        R = _randn(g, M, d) * (0.3 + 2.0 * _rand(g, M, 1))  # residual texts of different lengths
        return C, R

    def picks_differ(C: Tensor, R: Tensor) -> bool:
        var = (C @ R.T).var(0)
        nvar = (C @ F.normalize(R, dim=-1).T).var(0)
        return int(var.argmax()) != int(nvar.argmax()) and int(var.argmax()) != int(var.argmin())

    first = make(10, 5, 6)
    while not picks_differ(*first):  # seeded: the same case every time
        first = make(10, 5, 6)
    return [Case("10 images, 6 texts of different lengths", first), Case("one text", make(6, 4, 1)),
            Case("more texts than dimensions", make(12, 3, 8)), Case("two images", make(2, 4, 3))]


def _step_compare(got: Any, expected: tuple[int, Tensor, Tensor]) -> str | None:
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return (f"return three things, (j, C_new, R_new); got a {type(got).__name__}"
                + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""))
    j = _scalar(got[0])
    if j is None or j != int(j):
        return f"the first thing returned should be the index of the chosen text (an int), got {got[0]!r}"
    if int(j) != expected[0]:
        return f"picked text {int(j)}; the text of largest variance is {expected[0]}"
    return _tensor_diff(got[1], expected[1], "the deflated data") or _tensor_diff(got[2], expected[2],
                                                                                 "the deflated texts")


def _step_normalised_scores(C: Tensor, R: Tensor) -> tuple[int, Tensor, Tensor]:
    j = int((C @ F.normalize(R, dim=-1).T).var(0).argmax())
    u = R[j] / R[j].norm()
    return j, C - torch.outer(C @ u, u), R - torch.outer(R @ u, u)


def _step_argmin(C: Tensor, R: Tensor) -> tuple[int, Tensor, Tensor]:
    j = int((C @ R.T).var(0).argmin())
    u = R[j] / R[j].norm()
    return j, C - torch.outer(C @ u, u), R - torch.outer(R @ u, u)


def _step_unit(C: Tensor, R: Tensor) -> tuple[int, Tensor, Tensor]:
    j = int((C @ R.T).var(0).argmax())
    r = R[j].clone()
    return j, C - torch.outer(C @ r, r), R - torch.outer(R @ r, r)


def _step_no_texts(C: Tensor, R: Tensor) -> tuple[int, Tensor, Tensor]:
    j, C2, _ = _textspan_step(C, R)
    return j, C2, R


def _step_no_data(C: Tensor, R: Tensor) -> tuple[int, Tensor, Tensor]:
    j, _, R2 = _textspan_step(C, R)
    return j, C, R2


def _step_drop_row(C: Tensor, R: Tensor) -> tuple[int, Tensor, Tensor]:
    j, C2, R2 = _textspan_step(C, R)
    return j, C2, torch.cat([R2[:j], R2[j + 1:]])


_register(Exercise(
    id="3.2", name="textspan_step", task="one greedy TextSpan step: pick a text, deflate data and texts",
    reference=_textspan_step, cases=_step_cases, compare=_step_compare,
    error_hint="C is [K, d] (images x dimensions), R [M, d] (texts x dimensions): the scores C @ R.T are "
               "[K, M] and their variance over the images is over axis 0",
    mistakes=(
        Mistake(_step_normalised_scores,
                "you normalised the texts before scoring them; TextSpan scores the residual texts as they "
                "are, so a text with more of its length left in the head's span is preferred"),
        Mistake(_step_argmin, "you picked the text of smallest variance; pick the largest"),
        Mistake(_step_unit,
                "you removed R[j] without normalising it: use u = R[j] / |R[j]|, so that the chosen "
                "direction is removed exactly once"),
        Mistake(_step_no_texts,
                "the texts were not deflated: remove u from every text too (R - (R u) u^T), or the next "
                "step can pick the same direction again"),
        Mistake(_step_no_data,
                "the data was not deflated: remove its part along u (C - (C u) u^T)"),
        Mistake(_step_drop_row,
                "you dropped the chosen text; keep all M texts (the chosen one becomes zero after "
                "deflation), so their indices stay those of the pool"),
    ),
))


def _role_and_purity(tags: Sequence[str], ignore: Sequence[str]) -> tuple[str | None, float]:
    """A head's role (the most common tag among its texts that is not ignored; ties go to the
    earlier text) and its purity (that tag's share of *all* the texts)."""
    from .heads import dominant_property

    return dominant_property(tags, ignore)


def _role_cases() -> list[Case]:
    return [Case("colour twice, 'other' three times", (["colour", "other", "shape", "colour", "other", "other"],
                                                       ("other",))),
            Case("a tie", (["shape", "colour", "colour", "shape", "size"], ("other",))),
            Case("another tie", (["colour", "shape", "colour", "shape"], ("other",))),
            Case("only ignored tags", (["other", "unknown"], ("other", "unknown"))),
            Case("nothing ignored", (["size", "size", "count"], ())),
            Case("one text", (["background"], ("other",)))]


def _role_compare(got: Any, expected: tuple[str | None, float]) -> str | None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"return two things, (role, purity); got a {type(got).__name__}"
    if got[0] != expected[0]:
        return f"the role is {got[0]!r}, expected {expected[0]!r}"
    return _scalar_diff(got[1], expected[1], "the purity")


def _role_over_kept(tags: Sequence[str], ignore: Sequence[str]) -> tuple[str | None, float]:
    kept = [t for t in tags if t not in set(ignore)]
    prop, _ = _role_and_purity(tags, ignore)
    return prop, (kept.count(prop) / len(kept) if kept and prop is not None else 0.0)


def _role_with_ignored(tags: Sequence[str], ignore: Sequence[str]) -> tuple[str | None, float]:
    return _role_and_purity(tags, ())


def _role_last_tie(tags: Sequence[str], ignore: Sequence[str]) -> tuple[str | None, float]:
    prop, purity = _role_and_purity(list(tags)[::-1], ignore)
    return prop, purity


def _role_alphabetical(tags: Sequence[str], ignore: Sequence[str]) -> tuple[str | None, float]:
    kept = [t for t in tags if t not in set(ignore)]
    if not kept:
        return None, 0.0
    best = min(set(kept), key=lambda t: (-kept.count(t), t))
    return best, kept.count(best) / len(tags)


def _role_count(tags: Sequence[str], ignore: Sequence[str]) -> tuple[str | None, float]:
    prop, purity = _role_and_purity(tags, ignore)
    return prop, purity * len(tags)


_register(Exercise(
    id="3.3", name="role_and_purity", task="a head's role and purity from its texts' tags",
    reference=_role_and_purity, cases=_role_cases, compare=_role_compare,
    mistakes=(
        Mistake(_role_over_kept,
                "the purity's denominator is all n texts, ignored tags included: a head with many 'other' "
                "texts is less pure"),
        Mistake(_role_with_ignored, "an ignored tag (such as 'other') cannot be a head's role"),
        Mistake(_role_last_tie, "ties go to the property of the text chosen first (the earlier text)"),
        Mistake(_role_alphabetical, "ties go to the property of the text chosen first, not the first in "
                                    "alphabetical order"),
        Mistake(_role_count, "the purity is a share (between 0 and 1), not a count"),
    ),
))


# ----------------------------------------------------------------------------------------------
# Notebook 4: spatial maps
# ----------------------------------------------------------------------------------------------


def _head_patch_map(attn: Tensor, values: Tensor, to_joint: Tensor, bias: Tensor, text: Tensor,
                    grid: tuple[int, int]) -> Tensor:
    """One head's map ``[gh, gw]`` for one text: patch ``i``'s term ``a_i (v_i W + b)`` scored
    against the text, for the patch tokens ``1..T-1`` in row-major order (token 0 is the class
    token). Uses the decomposition's own per-token contraction."""
    from .decompose import token_text_scores

    t = text.to(to_joint.dtype)
    QE = (to_joint @ t)[None, :, None]  # [h=1, dh, M=1]
    BE = (bias @ t).reshape(1, 1)  # [h=1, M=1]
    scores = token_text_scores(attn[None, None], values[None, :, None], QE, BE, keep_head=False)  # [1, T, 1]
    return scores[0, 1:, 0].reshape(grid)


def _head_cases(two_texts: bool = False, seed: int = 401) -> Callable[[], list[Case]]:
    def cases() -> list[Case]:
        g = _gen(seed)

        def make(grid: tuple[int, int], dh: int = 4, E: int = 5) -> tuple:
            T = 1 + grid[0] * grid[1]
            attn = (2.0 * _randn(g, T)).softmax(0)
            values = _randn(g, T, dh)
            to_joint = _randn(g, dh, E)
            bias = 2.0 * _randn(g, E)
            texts = (_randn(g, E), _randn(g, E)) if two_texts else (_randn(g, E),)
            return (attn, values, to_joint, bias, *texts, grid)

        return [Case("a 3 x 3 grid", make((3, 3))), Case("a 2 x 3 grid (2 rows, 3 columns)", make((2, 3))),
                Case("a single patch", make((1, 1))), Case("a 4 x 2 grid", make((4, 2), dh=2, E=3))]
    return cases


def _hm_no_attn(a, v, W, b, t, grid):  # noqa: ANN001, ANN202 - typical mistakes, same signature
    return ((v @ W + b) @ t)[1:].reshape(grid)


def _hm_no_bias(a, v, W, b, t, grid):  # noqa: ANN001, ANN202
    return (a[:, None] * (v @ W) @ t)[1:].reshape(grid)


def _hm_bias_unweighted(a, v, W, b, t, grid):  # noqa: ANN001, ANN202
    return (a * ((v @ W) @ t) + b @ t)[1:].reshape(grid)


def _hm_drop_last(a, v, W, b, t, grid):  # noqa: ANN001, ANN202
    return (a * ((v @ W + b) @ t))[:-1].reshape(grid)


def _hm_column_major(a, v, W, b, t, grid):  # noqa: ANN001, ANN202
    return (a * ((v @ W + b) @ t))[1:].reshape(grid[1], grid[0]).T


_register(Exercise(
    id="4.1", name="head_patch_map", task="one head's patch map for one text from attention weights and values",
    reference=_head_patch_map, cases=_head_cases(), compare=_compare_tensor("the map"),
    error_hint="attn is [T], values [T, dh], to_joint [dh, E], bias [E], text [E]; token 0 is the class "
               "token, so the patches are tokens 1..T-1 (T - 1 = rows x columns)",
    mistakes=(
        Mistake(_hm_no_attn, "the attention weights are missing: each token's term is a_i times (its value "
                             "through the head's map, plus the bias)"),
        Mistake(_hm_no_bias, "the bias term is missing: each token also carries a_i times the head's share of "
                             "the output bias"),
        Mistake(_hm_bias_unweighted, "the bias is shared among the tokens by attention weight: a_i * bias, not "
                                     "the whole bias for every token"),
        Mistake(_hm_drop_last, "you dropped the last patch instead of the class token: the class token is "
                               "token 0, the patches are tokens 1..T-1"),
        Mistake(_hm_column_major, "the map is transposed: patches are numbered row by row (row-major), so "
                                  "reshape to grid = (rows, columns) directly"),
    ),
))


def _contrastive_head_map(attn: Tensor, values: Tensor, to_joint: Tensor, bias: Tensor, text_a: Tensor,
                          text_b: Tensor, grid: tuple[int, int]) -> Tensor:
    """Where the head makes the image look more like ``text_a`` than ``text_b``: the map of
    ``a - b`` (the maps are linear in the text)."""
    return _head_patch_map(attn, values, to_joint, bias, text_a - text_b, grid)


_register(Exercise(
    id="4.2", name="contrastive_head_map", task="the contrastive map of two texts as a difference of maps",
    reference=_contrastive_head_map, cases=_head_cases(two_texts=True, seed=402), compare=_compare_tensor("the map"),
    error_hint="compute the map of each text with head_patch_map (same arguments, one text each) and "
               "subtract",
    mistakes=(
        Mistake(lambda a, v, W, b, ta, tb, grid: _head_patch_map(a, v, W, b, tb - ta, grid),
                "the sign is flipped: you computed B minus A; the contrastive map is map(A) - map(B)"),
        Mistake(lambda a, v, W, b, ta, tb, grid: _head_patch_map(a, v, W, b, ta + tb, grid),
                "you added the two maps; the contrastive map is their difference"),
        Mistake(lambda a, v, W, b, ta, tb, grid: _head_patch_map(a, v, W, b, F.normalize(ta - tb, dim=0), grid),
                "you normalised the difference of the texts; the contrastive map is map(A) - map(B) as it is"),
    ),
))


@dataclass
class HeadParts:
    """What exercise 4.1 needs for one head of one image (cosine scale: everything is already
    divided by ``ln_post``'s sigma and by the embedding's norm).

    Attributes:
        attn: ``[T]`` the class token's attention weights over the tokens (token 0 is itself).
        values: ``[T, dh]`` the head's value vectors of the tokens.
        to_joint: ``[dh, E]`` the head's map from its value space into the joint space (its
            slice of the output projection, then ``ln_post``'s centring, gamma, 1/sigma and
            ``proj``, and the 1/norm of the embedding).
        bias: ``[E]`` the head's share of the output-projection bias, through the same map.
        grid: ``(rows, columns)`` of the patch grid.
    """

    attn: Tensor
    values: Tensor
    to_joint: Tensor
    bias: Tensor
    grid: tuple[int, int]


@torch.no_grad()
def head_parts(model: nn.Module, image: Tensor, layer: int, head: int) -> HeadParts:
    """The attention weights, values and joint-space map of head ``(layer, head)`` for one
    preprocessed image (``[3, H, W]`` or ``[1, 3, H, W]``)."""
    from .decompose import Decomposer

    x = image[None] if image.ndim == 3 else image
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"give one preprocessed image [3, H, W], got shape {tuple(image.shape)}")
    dec = Decomposer(model)
    layer, head = int(layer) % dec.n_layers, int(head) % dec.n_heads
    parts = dec(x, heads=False, tokens=True).normalized().head_inputs(layer, head)
    return HeadParts(attn=parts.attn[0], values=parts.values[0], to_joint=parts.to_joint[0], bias=parts.bias[0],
                     grid=parts.grid)


# ----------------------------------------------------------------------------------------------
# Notebook 5: a spurious cue
# ----------------------------------------------------------------------------------------------


def _choose_spurious_heads(roles: Sequence[Any], properties: Sequence[str], min_score: float) -> list[tuple[int, int]]:
    """The ``(layer, head)`` pairs whose TextSpan texts are at least ``min_score`` about the
    spurious ``properties``: the share of the variance the head's texts explain that comes
    from texts tagged with one of them."""
    from .spurious import choose_heads, rank_heads

    return choose_heads(rank_heads(roles, properties), min_score=min_score)


def _spurious_cases() -> list[Case]:
    from .heads import HeadRole

    g = np.random.default_rng(501)
    tags = ("background", "colour", "shape", "other")

    def role(layer: int, head: int, text_tags: list[str], variances: list[float]) -> HeadRole:
        return HeadRole(layer=layer, head=head, property=None, purity=0.0,
                        texts=[f"text {i}" for i in range(len(text_tags))], text_properties=text_tags,
                        variance=float(sum(variances)), variances=variances)

    def random_roles(n_layers: int, n_heads: int, n: int = 4) -> list[HeadRole]:
        out = []
        for layer in range(6, 6 + n_layers):
            for head in range(n_heads):
                tt = [str(t) for t in g.choice(tags, size=n, p=[0.35, 0.25, 0.25, 0.15])]
                out.append(role(layer, head, tt, [float(v) for v in np.sort(g.uniform(0.01, 0.3, size=n))[::-1]]))
        return out

    first = [  # heads that tell the typical mistakes apart
        role(6, 0, ["background", "colour", "colour", "shape"], [0.40, 0.05, 0.04, 0.01]),  # 0.8; 1/4 of the texts
        role(6, 1, ["colour", "background", "background", "background"], [0.40, 0.05, 0.04, 0.01]),  # 0.2 vs 3/4
        role(6, 2, ["background", "shape"], [0.25, 0.25]),  # exactly 0.5
        role(7, 0, ["background", "colour", "background", "colour"], [0.30, 0.02, 0.01, 0.01]),  # role background
        role(7, 1, ["shape", "shape", "other", "other"], [0.2, 0.1, 0.05, 0.05]),
        role(7, 2, ["other", "background", "colour", "background"], [0.3, 0.2, 0.1, 0.1]),  # 0.43, half the texts
        role(8, 0, ["background", "background", "colour", "shape", "other"], [0.05, 0.05, 0.3, 0.2, 0.1]),  # role
        role(8, 1, ["colour", "colour", "background", "background"], [0.3, 0.2, 0.1, 0.1]),  # half, role colour
    ]
    return [Case("eight heads, one exactly at min_score", (first, ("background",), 0.5)),
            Case("twelve random heads", (random_roles(3, 4), ("background",), 0.5)),
            Case("two spurious properties, min_score 0.3", (random_roles(2, 4), ("background", "other"), 0.3)),
            Case("no head qualifies", (first[4:5], ("background",), 0.5))]


def _heads_compare(got: Any, expected: list[tuple[int, int]]) -> str | None:
    if isinstance(got, (str, bytes)) or not hasattr(got, "__iter__"):
        return f"return a list of (layer, head) pairs; got a {type(got).__name__}"
    items = list(got)
    pairs = []
    for it in items:
        if isinstance(it, str):
            return f"return (layer, head) pairs of ints, not labels such as {it!r}"
        if isinstance(it, (int, np.integer)):
            return "return (layer, head) pairs, not indices into the table"
        try:
            layer, head = it
            pairs.append((int(layer), int(head)))
        except (TypeError, ValueError):
            return f"return (layer, head) pairs; got an item {it!r}"
    if len(set(pairs)) != len(pairs):
        return "a head is listed twice"
    want = set(expected)
    missing, extra = sorted(want - set(pairs)), sorted(set(pairs) - want)
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append("missing " + ", ".join(f"L{a}.H{b}" for a, b in missing))
    if extra:
        parts.append("should not include " + ", ".join(f"L{a}.H{b}" for a, b in extra))
    return "; ".join(parts)


def _spur_count(roles, props, min_score):  # noqa: ANN001, ANN202
    return [(r.layer, r.head) for r in roles
            if np.mean([t in set(props) for t in r.text_properties]) >= min_score]


def _spur_role(roles, props, min_score):  # noqa: ANN001, ANN202
    from .heads import dominant_property

    return [(r.layer, r.head) for r in roles if dominant_property(r.text_properties)[0] in set(props)]


def _spur_strict(roles, props, min_score):  # noqa: ANN001, ANN202
    from .spurious import rank_heads

    return [(s.layer, s.head) for s in rank_heads(roles, props) if s.score > min_score]


_register(Exercise(
    id="5.1", name="choose_spurious_heads", task="the heads whose TextSpan texts are about the spurious cue",
    reference=_choose_spurious_heads, cases=_spurious_cases, compare=_heads_compare,
    error_hint="each role has .layer, .head, .text_properties (one tag per text) and .variances (the variance "
               "each text explains)",
    mistakes=(
        Mistake(_spur_count, "you counted texts; weight each text by the variance it explains (a head's first "
                             "texts explain most of it)"),
        Mistake(_spur_role, "you chose the heads whose *role* (most common tag) is spurious; the score is the "
                            "share of the variance explained by all of a head's spurious texts"),
        Mistake(_spur_strict, "a head whose score equals min_score is chosen too (>=, not >)"),
    ),
))


def _worst_group_accuracy(pred: Tensor, labels: Tensor, groups: Tensor) -> float:
    """The lowest accuracy over the groups that have images."""
    from .spurious import group_metrics

    n = int(torch.as_tensor(groups).max()) + 1
    return group_metrics(pred, labels, groups, [str(k) for k in range(n)]).worst_group


def _worst_cases() -> list[Case]:
    def t(x: list[int]) -> Tensor:
        return torch.as_tensor(x, dtype=torch.long)

    # group sizes 6, 4, 2, 4; accuracies 5/6, 3/4, 1/2, 1
    groups = t([0] * 6 + [1] * 4 + [2] * 2 + [3] * 4)
    labels = t([0] * 6 + [0] * 4 + [1] * 2 + [1] * 4)
    pred = labels.clone()
    pred[0] = 1
    pred[6] = 1
    pred[10] = 0
    g = torch.Generator().manual_seed(502)
    n = 40
    groups2 = torch.randint(0, 4, (n,), generator=g)
    labels2 = groups2 // 2
    pred2 = torch.where(torch.rand(n, generator=g) < 0.3, 1 - labels2, labels2)
    missing = t([0, 0, 1, 1, 3, 3, 3])  # no image in group 2
    return [Case("four groups of different sizes", (pred, labels, groups)),
            Case("forty random images", (pred2, labels2, groups2)),
            Case("a group with no images", (t([0, 1, 1, 1, 1, 1, 0]), t([0, 1, 1, 1, 1, 1, 1]), missing)),
            Case("one group", (t([1, 0, 1]), t([1, 1, 1]), t([2, 2, 2])))]


def _wg_average(p, y, g):  # noqa: ANN001, ANN202
    return float((p == y).double().mean())


def _wg_group_mean(p, y, g):  # noqa: ANN001, ANN202
    return float(np.mean([float((p[g == k] == y[g == k]).double().mean()) for k in torch.unique(g).tolist()]))


def _wg_best(p, y, g):  # noqa: ANN001, ANN202
    return max(float((p[g == k] == y[g == k]).double().mean()) for k in torch.unique(g).tolist())


def _wg_all_images(p, y, g):  # noqa: ANN001, ANN202
    return min(float((p[g == k] == y[g == k]).sum()) / len(p) for k in torch.unique(g).tolist())


def _wg_empty_zero(p, y, g):  # noqa: ANN001, ANN202
    return min(float((p[g == k] == y[g == k]).double().mean()) if bool((g == k).any()) else 0.0
               for k in range(int(g.max()) + 1))


_register(Exercise(
    id="5.2", name="worst_group_accuracy", task="the worst-group accuracy of predictions",
    reference=_worst_group_accuracy, cases=_worst_cases, compare=_compare_scalar("the worst-group accuracy"),
    error_hint="pred, labels and groups are [N] integer tensors; select a group's images with groups == k",
    mistakes=(
        Mistake(_wg_average, "you returned the average accuracy over all images; the worst group is the "
                             "lowest of the per-group accuracies"),
        Mistake(_wg_group_mean, "you returned the mean over the groups; the worst group is their minimum"),
        Mistake(_wg_best, "you returned the best group's accuracy; take the minimum"),
        Mistake(_wg_all_images, "a group's accuracy divides by the number of images *in that group*, not by "
                                "all images"),
        Mistake(_wg_empty_zero, "a group with no images has no accuracy (0 out of 0): leave it out rather "
                                "than counting it as 0"),
    ),
))


# ----------------------------------------------------------------------------------------------
# Notebook 6: zero-shot segmentation
# ----------------------------------------------------------------------------------------------


def _postprocess(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """The paper's post-processing: upsample bilinearly to ``size``, clip at 0, min-max
    normalise each map to ``[0, 1]`` (a constant map becomes 0)."""
    from .segmentation import postprocess

    return postprocess(maps, size)


def _post_cases() -> list[Case]:
    g = _gen(601)
    positive = 1.0 + _rand(g, 2, 3, 4)  # every value above 0: the minimum matters after clipping
    const = torch.cat([_randn(g, 1, 3, 4), torch.full((1, 3, 4), 0.5, dtype=torch.float64)])
    negative = torch.cat([_randn(g, 1, 3, 3), -1.0 - _rand(g, 1, 3, 3)])
    return [Case("two signed 3 x 4 maps to 6 x 8", (_randn(g, 2, 3, 4), (6, 8))),
            Case("maps above 0 everywhere", (positive, (9, 12))),
            Case("a constant map", (const, (6, 8))),
            Case("a map below 0 everywhere", (negative, (6, 6))),
            Case("non-square output", (_randn(g, 1, 2, 2), (5, 7)))]


def _up(m: Tensor, size: tuple[int, int], mode: str = "bilinear", align: bool | None = False) -> Tensor:
    kw = {} if mode == "nearest" else {"align_corners": align}
    return F.interpolate(m[:, None], size=size, mode=mode, **kw)[:, 0]


def _minmax(x: Tensor, over_batch: bool = False) -> Tensor:
    dims = (0, -2, -1) if over_batch else (-2, -1)
    lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-300), torch.zeros_like(x))


_register(Exercise(
    id="6.1", name="postprocess", task="upsample bilinearly, clip at 0, min-max normalise each map",
    reference=_postprocess, cases=_post_cases, compare=_compare_tensor("the soft map"),
    error_hint="maps are [B, gh, gw]; torch.nn.functional.interpolate wants [B, 1, gh, gw] "
               "(add a channel axis with maps[:, None], remove it afterwards)",
    mistakes=(
        Mistake(lambda m, s: _minmax(_up(m, s)).clamp_min(0),
                "you normalised before clipping: clip at 0 first, then min-max normalise what is left"),
        Mistake(lambda m, s: _up(m, s).clamp_min(0),
                "not normalised: min-max normalise each map to [0, 1] after clipping"),
        Mistake(lambda m, s: torch.where(_up(m, s).clamp_min(0).amax((-2, -1), keepdim=True) > 0,
                                         _up(m, s).clamp_min(0) / _up(m, s).clamp_min(0).amax((-2, -1), keepdim=True),
                                         torch.zeros_like(_up(m, s))),
                "you divided by the maximum only: subtract each map's minimum first (min-max)"),
        Mistake(lambda m, s: _minmax(_up(m, s).clamp_min(0), over_batch=True),
                "you normalised over the whole batch; normalise each map on its own"),
        Mistake(lambda m, s: _minmax(_up(m, s, "nearest").clamp_min(0)),
                "you upsampled with nearest neighbours; the paper upsamples bilinearly"),
        Mistake(lambda m, s: _minmax(_up(m, s, align=True).clamp_min(0)),
                "you upsampled with align_corners=True; use align_corners=False (the patch centres sit "
                "half a patch inside the image)"),
        Mistake(lambda m, s: _minmax(_up(m.clamp_min(0), s)),
                "you clipped before upsampling: upsample first, then clip at 0"),
    ),
))


def _threshold_at_mean(soft: Tensor) -> Tensor:
    """Boolean masks: the pixels of each map strictly above that map's mean."""
    from .spatial import threshold_map

    return threshold_map(soft, "mean")


def _thr_cases() -> list[Case]:
    g = _gen(602)
    skew = _rand(g, 2, 5, 6) ** 3  # mean and median differ
    skew[1] = skew[1] * 0.2  # the second map is much weaker: the batch mean differs from its own
    const = torch.cat([_rand(g, 1, 4, 4), torch.full((1, 4, 4), 0.3, dtype=torch.float64)])
    return [Case("two skewed maps of different strength", (skew,)), Case("one map", (_rand(g, 1, 3, 5),)),
            Case("a constant map", (const,)), Case("maps mostly near 1", (1.0 - 0.1 * _rand(g, 2, 4, 4),))]


def _mask_compare(got: Any, expected: Tensor) -> str | None:
    t = _to_tensor(got)
    if t is None:
        return f"the masks are a {type(got).__name__}; expected a boolean tensor of shape {_shape(expected)}"
    if t.shape != expected.shape:
        return f"wrong shape: expected {_shape(expected)}, got {_shape(t)}"
    if t.dtype != torch.bool:
        if not bool(((t == 0) | (t == 1)).all()):
            return "the masks should be True/False (pixel above the mean or not), not scores"
        t = t.bool()
    wrong = int((t != expected.bool()).sum())
    if wrong == 0:
        return None
    if bool((t == ~expected.bool()).all()):
        return "the masks are inverted: foreground is the pixels *above* the mean"
    return f"{wrong} of {t.numel()} pixels differ"


_register(Exercise(
    id="6.2", name="threshold_at_mean", task="the foreground mask: pixels above their map's mean",
    reference=_threshold_at_mean, cases=_thr_cases, compare=_mask_compare,
    error_hint="soft is [B, H, W]; take the mean over the last two axes with keepdim=True",
    mistakes=(
        Mistake(lambda s: s > s.mean(), "you thresholded at the mean of the whole batch; use each map's own mean"),
        Mistake(lambda s: s >= s.mean((-2, -1), keepdim=True),
                "pixels equal to the mean are background: keep the pixels strictly above it (>)"),
        Mistake(lambda s: s > 0.5, "you thresholded at 0.5; the paper thresholds each map at its own mean"),
        Mistake(lambda s: s > s.flatten(-2).median(-1).values[:, None, None],
                "you thresholded at the median; use the mean"),
    ),
))


def _dataset_miou(pred: Tensor, truth: Tensor) -> tuple[float, float, float]:
    """Foreground IoU, background IoU and their mean, each accumulated over the whole dataset
    (intersections and unions added up over all images before dividing)."""
    from .segmentation import SegmentationScores

    p, t = pred.bool(), truth.bool()
    s = SegmentationScores().update(p.double(), p, t)
    return s.iou_foreground, s.iou_background, s.miou


def _miou_cases() -> list[Case]:
    g = _gen(603)

    def blob(N: int, H: int, W: int) -> tuple[Tensor, Tensor]:
        truth = torch.zeros(N, H, W, dtype=torch.bool)
        pred = torch.zeros(N, H, W, dtype=torch.bool)
        for i in range(N):
            h, w = int(torch.randint(1, H, (1,), generator=g)), int(torch.randint(1, W, (1,), generator=g))
            truth[i, :h, :w] = True
            dh, dw = int(torch.randint(0, 2, (1,), generator=g)), int(torch.randint(0, 2, (1,), generator=g))
            pred[i, dh:dh + h, dw:dw + w] = True
        return pred, truth

    small_big = blob(3, 8, 8)
    empty = blob(2, 5, 5)
    empty[0][1] = False
    empty[1][1] = False  # an image with no object and no prediction
    return [Case("three images with objects of different sizes", small_big), Case("an image with no object", empty),
            Case("a perfect prediction", (blob(2, 4, 6)[1],) * 2), Case("one image", blob(1, 6, 6))]


def _miou_compare(got: Any, expected: tuple[float, float, float]) -> str | None:
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return f"return three numbers, (foreground IoU, background IoU, mIoU); got a {type(got).__name__}"
    for value, want, what in zip(got, expected, ("the foreground IoU", "the background IoU", "the mIoU")):
        diff = _scalar_diff(value, want, what)
        if diff:
            return diff
    return None


def _iou(p: Tensor, t: Tensor) -> float:
    return float((p & t).sum()) / max(1, int((p | t).sum()))


def _miou_per_image(pred, truth):  # noqa: ANN001, ANN202
    p, t = pred.bool(), truth.bool()
    fg = float(np.mean([_iou(a, b) if bool((a | b).any()) else 1.0 for a, b in zip(p, t)]))
    bg = float(np.mean([_iou(~a, ~b) if bool((~a | ~b).any()) else 1.0 for a, b in zip(p, t)]))
    return fg, bg, (fg + bg) / 2


def _miou_fg_only(pred, truth):  # noqa: ANN001, ANN202
    fg, bg, _ = _dataset_miou(pred, truth)
    return fg, bg, fg


def _miou_union_twice(pred, truth):  # noqa: ANN001, ANN202
    p, t = pred.bool(), truth.bool()
    fg = float((p & t).sum()) / max(1, int(p.sum() + t.sum()))
    bg = float((~p & ~t).sum()) / max(1, int((~p).sum() + (~t).sum()))
    return fg, bg, (fg + bg) / 2


def _miou_bg_not_complemented(pred, truth):  # noqa: ANN001, ANN202
    fg, _, _ = _dataset_miou(pred, truth)
    p, t = pred.bool(), truth.bool()
    bg = float((~p & t).sum()) / max(1, int((~p | t).sum()))
    return fg, bg, (fg + bg) / 2


_register(Exercise(
    id="6.3", name="dataset_miou", task="foreground IoU, background IoU and mIoU accumulated over a dataset",
    reference=_dataset_miou, cases=_miou_cases, compare=_miou_compare,
    error_hint="pred and truth are boolean [N, H, W]; ~pred is the predicted background",
    mistakes=(
        Mistake(_miou_per_image, "you averaged per-image IoUs; this metric adds up the intersections and the "
                                 "unions over the whole dataset first, then divides (large objects weigh more)"),
        Mistake(_miou_fg_only, "the mIoU here is the mean of the foreground IoU and the background IoU"),
        Mistake(_miou_union_twice, "the union counts the intersection twice: use (pred | truth), or "
                                   "pred + truth - intersection"),
        Mistake(_miou_bg_not_complemented, "the background IoU compares the predicted background (~pred) with "
                                           "the true background (~truth)"),
    ),
))


# ----------------------------------------------------------------------------------------------
# The check functions the notebooks call
# ----------------------------------------------------------------------------------------------


def _make_check(exercise: str) -> Callable[[Any], Checked]:
    ex = EXERCISES[exercise]

    def check(fn: Any, *, quiet: bool = False) -> Checked:
        return run_check(exercise, fn, quiet=quiet)

    check.__name__ = f"check_{ex.name}"
    check.__qualname__ = check.__name__
    check.__doc__ = (f"Check exercise {ex.id}, ``{ex.name}``: {ex.task}.\n\n"
                     "Prints a one-line verdict and returns the function later cells should use (the "
                     "learner's when it passes, else the reference), with the verdict attached "
                     "(:class:`Checked`).")
    return check


check_linearise = _make_check("1.1")
check_reassemble = _make_check("1.2")
check_variance_share = _make_check("1.3")
check_mean_ablate = _make_check("2.1")
check_zero_shot_accuracy = _make_check("2.2")
check_project_texts = _make_check("3.1")
check_textspan_step = _make_check("3.2")
check_role_and_purity = _make_check("3.3")
check_head_patch_map = _make_check("4.1")
check_contrastive_head_map = _make_check("4.2")
check_choose_spurious_heads = _make_check("5.1")
check_worst_group_accuracy = _make_check("5.2")
check_postprocess = _make_check("6.1")
check_threshold_at_mean = _make_check("6.2")
check_dataset_miou = _make_check("6.3")
