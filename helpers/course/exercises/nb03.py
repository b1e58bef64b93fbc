"""Exercises of notebook 3 (TextSpan): reference solutions, test cases, typical mistakes, checks."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .check import Case, Exercise, Mistake, compare_tensor, make_check, register, scalar, scalar_diff, tensor_diff
from .seeds import gen, rand, randn

__all__ = ["check_project_texts", "check_textspan_step", "check_role_and_purity", "check_shape_head",
           "head_agreement"]


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

    def make(K: int, d: int, M: int, heavy: bool = False) -> tuple:
        C = randn(g, K, d) * torch.linspace(2.0, 0.5, d, dtype=torch.float64)
        if heavy:  # heavy tails: a few images write far more than the rest (a Student-t like spread)
            C = C * torch.exp(1.2 * randn(g, K, 1))
        C = C - C.mean(0, keepdim=True)
        R = randn(g, M, d) * (0.3 + 2.0 * rand(g, M, 1))  # residual texts of different lengths
        return C, R

    def picks_differ(C: Tensor, R: Tensor) -> bool:
        """The variance, the normalised texts' variance and the mean |score| pick three different texts."""
        S = C @ R.T
        picks = {int(S.var(0).argmax()), int((C @ F.normalize(R, dim=-1).T).var(0).argmax()),
                 int(S.abs().mean(0).argmax())}
        return len(picks) == 3 and int(S.var(0).argmax()) != int(S.var(0).argmin())

    first = make(12, 5, 8, heavy=True)
    while not picks_differ(*first):  # seeded: the same case every time
        first = make(12, 5, 8, heavy=True)
    return [Case("12 images with heavy tails, 8 texts of different lengths", first), Case("one text", make(6, 4, 1)),
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


def _step_mean_abs(C: Tensor, R: Tensor) -> tuple[int, Tensor, Tensor]:
    j = int((C @ R.T).abs().mean(0).argmax())
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
        Mistake(_step_mean_abs,
                "you chose by the mean |score| over the images; TextSpan chooses by the *variance* of the scores "
                "(the mean of their squares, the data being centred), which weighs the images where the head "
                "writes far along a text much more: on data with heavy tails the two pick different texts"),
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


def head_agreement(stack: Tensor, labels: Sequence[str], factors: dict, prop: str, *, k: int = 6,
                   score: str = "cosine") -> tuple[dict[str, float], float, int]:
    """What exercise 3.4 is judged on, from the world's ground truth: for every head, how often the
    ``k`` nearest images *through that head alone* share the query's ``prop`` (over every image
    as a query); what random images would give; the number of queries."""
    from ...methods.heads import search_agreement

    groups = {lab: [i] for i, lab in enumerate(labels)}
    a = search_agreement(stack, groups, {prop: factors[prop]}, k=k, centre=False, score=score)
    return {lab: float(a.agreement[lab][prop]) for lab in labels}, float(a.chance[prop]), int(stack.shape[1])


def _parse_head(answer: Any, labels: Sequence[str]) -> str | None:
    if isinstance(answer, str):
        text = answer.strip().upper().replace(" ", "")
        return text if text in labels else None
    if isinstance(answer, (tuple, list)) and len(answer) == 2:
        try:
            lab = f"L{int(answer[0])}.H{int(answer[1])}"
        except (TypeError, ValueError):
            return None
        return lab if lab in labels else None
    return None


def _head_reference(ctx: dict) -> str:
    agree = ctx["agreement"]
    return max(agree, key=agree.get)


def _head_assess(answer: Any, ctx: dict) -> tuple[bool, str]:
    from ...methods.stats import accuracy_tolerance
    from ..narrative import pct

    prop, agree, chance = ctx.get("prop", "shape"), ctx["agreement"], ctx["chance"]
    roles = {r.label: r for r in ctx["roles"]}
    labels = list(agree)
    lab = _parse_head(answer, labels)
    if lab is None:
        if isinstance(answer, str) and answer.strip().lower() in {str(r.property).lower() for r in roles.values()}:
            return False, (f"name a head, not a property: one of {', '.join(labels[:3])}, ... (the labels in the head "
                           "browser's menu).")
        return False, f"name one head of the table, as a label such as {labels[0]!r} or a pair (layer, head); got {answer!r}."
    best = _head_reference(ctx)
    tol = accuracy_tolerance(agree[best], ctx["n_queries"])
    r = roles.get(lab)
    texts = (f"its texts are about {r.property} ({pct(r.purity, 0)} of them)" if r is not None and r.property
             else "its texts have no common property")
    through = (f"the 6 nearest images through {lab} alone share the query's {prop} {pct(agree[lab], 0)} of the time "
               f"(random images {pct(chance, 0)})")
    if agree[best] - agree[lab] <= tol:
        also = "" if lab == best else f"; the best head, {best}, reaches {pct(agree[best], 0)}, within noise of it"
        return True, (f"yes: {through}{also}, and {texts}. The world's true {prop}s confirm what the texts say.")
    if r is not None and r.property == prop:
        return False, (f"{texts}, but {through}, against {pct(agree[best], 0)} for {best}: a head's texts say what it "
                       f"writes, and how much of its output follows {prop} is what the neighbours measure.")
    if r is not None and r.property and r.property != prop:
        return False, (f"{lab} is a {r.property} head, {texts}: {through}, against {pct(agree[best], 0)} for {best}. "
                       f"Look for a head whose texts are about {prop}, then check it with its neighbours.")
    return False, f"{through}, against {pct(agree[best], 0)} for {best}; {texts}."


def _head_cases() -> list[Case]:
    from ...methods.heads import HeadRole

    def role(label: str, prop: str, purity: float, variance: float) -> HeadRole:
        layer, head = (int(x[1:]) for x in label.split("."))
        return HeadRole(layer=layer, head=head, property=prop, purity=purity, texts=[], text_properties=[],
                        variance=variance, variances=[])

    roles = [role("L4.H0", "shape", 0.6, 0.70), role("L4.H1", "colour", 1.0, 0.80), role("L5.H0", "shape", 1.0, 0.75),
             role("L5.H1", "background", 0.6, 0.95), role("L6.H0", "colour", 0.8, 0.60)]
    agreement = {"L4.H0": 0.72, "L4.H1": 0.20, "L5.H0": 0.40, "L5.H1": 0.15, "L6.H0": 0.22}
    ctx = {"roles": roles, "agreement": agreement, "chance": 0.13, "n_queries": 500, "prop": "shape"}
    tied = dict(ctx, agreement={**agreement, "L5.H0": 0.70})  # two shape heads within noise of each other
    return [Case("five heads, one clear shape head", (ctx,)), Case("two shape heads within noise", (tied,))]


register(Exercise(
    id="3.4", name="shape_head", kind="find",
    task="the head whose outputs carry the objects' shape, found with the head browser",
    reference=_head_reference, assess=_head_assess, cases=_head_cases,
    mistakes=(
        Mistake(lambda ctx: max(ctx["roles"], key=lambda r: (r.purity, r.variance)).label, "is a colour head"),
        Mistake(lambda ctx: max((r for r in ctx["roles"] if r.property == ctx["prop"]),
                                key=lambda r: (r.purity, r.variance)).label,
                "a head's texts say what it writes"),
        Mistake(lambda ctx: max(ctx["roles"], key=lambda r: r.variance).label, "is a background head"),
        Mistake(lambda ctx: ctx["prop"], "name a head, not a property"),
    ),
))


check_project_texts = make_check("3.1")
check_textspan_step = make_check("3.2")
check_role_and_purity = make_check("3.3")
check_shape_head = make_check("3.4")
