"""Exercises of notebook 3 (TextSpan): reference solutions, test cases, typical mistakes, checks."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .check import (
    Case,
    Exercise,
    Mistake,
    compare_tensor,
    gen,
    make_check,
    rand,
    randn,
    register,
    scalar,
    scalar_diff,
    tensor_diff,
)

__all__ = ["check_project_texts", "check_textspan_step", "check_role_and_purity"]


def _project_texts(C: Tensor, R: Tensor, rank: int) -> Tensor:
    """Texts ``R [M, d]`` projected on the span of the top-``rank`` right singular vectors of
    the (uncentred) head outputs ``C [K, d]``: ``R V_r V_r^T``."""
    _, _, vh = torch.linalg.svd(C, full_matrices=False)
    V = vh[:rank]  # [r, d]: the rows of V^T are the right singular vectors
    return R @ V.T @ V


def _project_cases() -> list[Case]:
    g = gen(301)

    def make(K: int, d: int, M: int, rank: int) -> tuple:
        scales = torch.linspace(3.0, 0.3, d, dtype=torch.float64)
        C = randn(g, K, d) * scales + 2.0 * randn(g, 1, d)  # outputs with a mean of their own
        return C, randn(g, M, d), rank

    return [Case("12 images, 6 dimensions, rank 3", make(12, 6, 5, 3)), Case("rank 1", make(10, 5, 4, 1)),
            Case("one text", make(8, 4, 1, 2)), Case("rank = d (nothing removed)", make(9, 4, 3, 4))]


def _svd_vh(C: Tensor) -> Tensor:
    return torch.linalg.svd(C, full_matrices=False)[2]


register(Exercise(
    id="3.1", name="project_texts", task="texts projected on the span of a head's outputs",
    reference=_project_texts, cases=_project_cases, compare=compare_tensor("the projected texts"),
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
    g = gen(302)

    def make(K: int, d: int, M: int) -> tuple:
        C = randn(g, K, d) * torch.linspace(2.0, 0.5, d, dtype=torch.float64)
        C = C - C.mean(0, keepdim=True)
        R = randn(g, M, d) * (0.3 + 2.0 * rand(g, M, 1))  # residual texts of different lengths
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
    j = scalar(got[0])
    if j is None or j != int(j):
        return f"the first thing returned should be the index of the chosen text (an int), got {got[0]!r}"
    if int(j) != expected[0]:
        return f"picked text {int(j)}; the text of largest variance is {expected[0]}"
    return tensor_diff(got[1], expected[1], "the deflated data") or tensor_diff(got[2], expected[2],
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


register(Exercise(
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
    from ...methods.heads import dominant_property

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
    return scalar_diff(got[1], expected[1], "the purity")


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


register(Exercise(
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


check_project_texts = make_check("3.1")
check_textspan_step = make_check("3.2")
check_role_and_purity = make_check("3.3")
