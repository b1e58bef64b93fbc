"""Exercises of notebook 5 (a spurious cue): reference solutions, test cases, typical mistakes, checks."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .check import Case, Exercise, Mistake, compare_scalar, make_check, register

__all__ = ["check_choose_spurious_heads", "check_worst_group_accuracy", "check_heads_to_ablate", "AVERAGE_COST"]

AVERAGE_COST = 0.05
"""Exercise 5.3's rule: a repair may cost the average accuracy at most this much (5 points)."""


def _choose_spurious_heads(roles: Sequence[Any], properties: Sequence[str], min_score: float) -> list[tuple[int, int]]:
    """The ``(layer, head)`` pairs whose TextSpan texts are at least ``min_score`` about the
    spurious ``properties``: the share of the variance the head's texts explain that comes
    from texts tagged with one of them."""
    from ...methods.spurious import choose_heads, rank_heads

    return choose_heads(rank_heads(roles, properties), min_score=min_score)


def _spurious_cases() -> list[Case]:
    from ...methods.heads import HeadRole

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
    from ...methods.heads import dominant_property

    return [(r.layer, r.head) for r in roles if dominant_property(r.text_properties)[0] in set(props)]


def _spur_strict(roles, props, min_score):  # noqa: ANN001, ANN202
    from ...methods.spurious import rank_heads

    return [(s.layer, s.head) for s in rank_heads(roles, props) if s.score > min_score]


register(Exercise(
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
    from ...methods.spurious import group_metrics

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


register(Exercise(
    id="5.2", name="worst_group_accuracy", task="the worst-group accuracy of predictions",
    reference=_worst_group_accuracy, cases=_worst_cases, compare=compare_scalar("the worst-group accuracy"),
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


def _pairs(answer: Any) -> list[tuple[int, int]] | None:
    from ...engine.labels import parse_head

    if isinstance(answer, (str, bytes)) or not hasattr(answer, "__iter__"):
        return None
    out = []
    for it in answer:
        try:
            out.append(parse_head(it) if isinstance(it, str) else (int(it[0]), int(it[1])))
        except (TypeError, ValueError, IndexError):
            return None
    return out


def _ablate_reference(ctx: dict) -> list[tuple[int, int]]:
    return [tuple(p) for p in ctx["auto"]]


def _ablate_assess(answer: Any, ctx: dict) -> tuple[bool, str]:
    from ...engine.labels import head_labels
    from ..narrative import pct, pts

    heads = _pairs(answer)
    if heads is None:
        return False, f"answer with a list of heads, labels such as 'L7.H2' or (layer, head) pairs; got {answer!r}."
    known = {(r.layer, r.head): r for r in ctx["roles"]}
    unknown = [h for h in heads if h not in known]
    if unknown:
        return False, f"{', '.join(head_labels(unknown))} are not among the heads in the table."
    if not heads:
        return False, "you chose no head: nothing is removed, so nothing is repaired."
    before, after = ctx["before"], ctx["measure"](heads)
    gain, cost = after.worst_group - before.worst_group, after.average - before.average
    evidence = ctx["gain"](heads)  # the worst group's gain, weighed against its noise
    roles = sorted({str(known[h].property) for h in heads})
    spurious = set(ctx["spurious"])
    said = (f"ablating {', '.join(head_labels(heads))} moves the worst group from {pct(before.worst_group)} to "
            f"{pct(after.worst_group)} ({pts(gain)}) and the average by {pts(cost)}")
    rnd = ctx.get("random_worst")
    if callable(rnd):  # random heads as many as the learner's, from the same layers
        rnd = rnd(heads)
    if evidence.side > 0 and cost >= -AVERAGE_COST and (rnd is None or after.worst_group > rnd):
        auto = head_labels(ctx["auto"])
        return True, (f"a repair: {said}" + (f"; as many random heads reach {pct(rnd)} on average" if rnd is not None
                                             else "")
                      + f". The automatic choice from the texts' scores is {', '.join(auto) or 'no head'}.")
    if cost < -AVERAGE_COST:
        return False, (f"{said}: the average falls by more than {pts(AVERAGE_COST).lstrip('+')}, so the heads you "
                       "removed also carried the object. Keep to the heads whose texts are about the background.")
    if not set(roles) & spurious:
        return False, (f"the heads you chose are about {', '.join(roles)}, not the background: {said}. The cue to "
                       "remove is the one the worst group suffers from.")
    return False, (f"{said}: not beyond the noise of the worst group ({evidence.basis})"
                   + (f", or not above as many random heads ({pct(rnd)})" if rnd is not None else "") + ".")


def _ablate_cases() -> list[Case]:
    from types import SimpleNamespace

    from ...methods.heads import HeadRole

    props = {(6, 0): "background", (6, 1): "colour", (7, 0): "background", (7, 1): "shape", (7, 2): "colour"}
    effect = {(6, 0): (0.10, -0.01), (6, 1): (-0.02, -0.01), (7, 0): (0.12, 0.0), (7, 1): (-0.05, -0.20),
              (7, 2): (-0.01, -0.02)}  # (worst group, average) change when the head is ablated

    def measure(heads):  # noqa: ANN001, ANN202
        w = sum(effect[h][0] for h in heads)
        a = sum(effect[h][1] for h in heads)
        return SimpleNamespace(worst_group=0.55 + w, average=0.85 + a)

    def gain(heads):  # noqa: ANN001, ANN202
        from ...methods.stats import with_tolerance

        return with_tolerance(measure(heads).worst_group, measure([]).worst_group, 0.03, "a stated tolerance")

    roles = [HeadRole(layer=l, head=h, property=p, purity=0.8) for (l, h), p in props.items()]
    ctx = {"roles": roles, "measure": measure, "before": measure([]), "auto": [(6, 0), (7, 0)], "gain": gain,
           "random_worst": lambda heads: 0.56, "spurious": ("background",)}
    return [Case("five heads, two about the background", (ctx,))]


register(Exercise(
    id="5.3", name="heads_to_ablate", kind="decide",
    task="which heads to ablate, decided from their texts alone, measured on the groups",
    reference=_ablate_reference, assess=_ablate_assess, cases=_ablate_cases,
    mistakes=(
        Mistake(lambda ctx: [(r.layer, r.head) for r in ctx["roles"] if r.property in ("colour",)], "not the background"),
        Mistake(lambda ctx: [(r.layer, r.head) for r in ctx["roles"]], "also carried the object"),
        Mistake(lambda ctx: [], "you chose no head"),
        Mistake(lambda ctx: [f"L{r.layer}H{r.head}" for r in ctx["roles"]][:1], "answer with a list of heads"),
    ),
))


check_choose_spurious_heads = make_check("5.1")
check_worst_group_accuracy = make_check("5.2")
check_heads_to_ablate = make_check("5.3")
