"""Spurious cues: group-wise accuracy, and choosing the heads that carry a spurious attribute.

The paper repairs a zero-shot landbird/waterbird classifier that leans on the background by
mean-ablating the heads whose TextSpan texts are about places and settings. Here:

* :func:`group_metrics` -- per-group accuracy, average, mean over groups and worst group, for
  any (label, spurious attribute) grouping;
* :class:`GroupEvaluator` -- the same through the decomposition: heads are mean-ablated on
  stored direct terms, so trying a set of heads costs no forward pass;
* :func:`rank_heads` -- heads ranked by how much of their TextSpan texts (weighted by the
  variance each text explains) is about the spurious properties; :func:`choose_heads` takes
  the top ones. An explicit list works too (:data:`PAPER_HEADS` has the paper's);
* :func:`random_heads` -- the control: as many heads drawn at random from the same layers.

The data -- Waterbirds, and the planted correlation of the synthetic world -- is
:mod:`helpers.data.waterbirds`'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from ..engine.labels import Head
from .ablation import AblationSet, DirectTerms
from .heads import HeadRole

__all__ = [
    "GroupMetrics",
    "group_metrics",
    "GroupEvaluator",
    "habitat_gap",
    "HeadScore",
    "rank_heads",
    "choose_heads",
    "random_heads",
    "PAPER_HEADS",
    "REPAIR_PROTOCOLS",
    "repair_ablation",
    "SPURIOUS_PROPERTIES",
    "WATERBIRDS_GROUPS",
]

#: Group ``g = 2 * label + attribute`` names for Waterbirds (label 1 = waterbird, place 1 = water).
WATERBIRDS_GROUPS: tuple[str, ...] = ("landbird on land", "landbird on water", "waterbird on land",
                                      "waterbird on water")

#: Properties of the tagged pools that describe where a picture is: the spurious attribute of
#: Waterbirds (the paper's "geolocation" and "image setting" heads). The world pool's
#: equivalent is ``("background",)``.
SPURIOUS_PROPERTIES: dict[str, tuple[str, ...]] = {
    "general": ("location", "landscape", "scene"),
    "world": ("background",),
}

#: The heads the paper's reference code ablates on Waterbirds, ``(layer, head)``, 0-indexed
#: (geolocation heads, then image-setting heads; (22, 12) is in both lists and kept once).
PAPER_HEADS: dict[str, tuple[tuple[int, int], ...]] = {
    "ViT-L-14": ((21, 1), (22, 12), (22, 13), (21, 11), (21, 14), (23, 6),
                 (21, 3), (21, 6), (21, 8), (21, 13), (22, 2), (22, 15), (23, 1), (23, 3), (23, 5)),
    "ViT-B-16": ((11, 6), (11, 0), (11, 3), (10, 11), (10, 10), (9, 8), (9, 6)),
    "ViT-H-14": ((31, 8), (30, 15), (30, 12), (30, 6), (29, 14), (29, 8),
                 (31, 12), (30, 11), (29, 4)),
}

REPAIR_PROTOCOLS: tuple[str, ...] = ("heads", "paper")
"""Values of :func:`repair_ablation`'s ``protocol``."""


def repair_ablation(heads: Iterable[tuple[int, int]], n_layers: int, protocol: str = "heads", *,
                    last: int = 4) -> AblationSet:
    """What to mean-ablate to remove a spurious cue carried by ``heads``.

    ``protocol="heads"`` (the course's): the chosen heads alone, raw terms.

    ``protocol="paper"`` (the reference code's Waterbirds repair): the chosen heads, plus every
    attention layer before the last ``last`` (4), every MLP and the class-token embedding
    term, with the means taken on the reference's scale (each image's terms divided by its
    embedding norm). Use it with the classifier of :func:`waterbirds_prompts` with
    ``templates="paper"`` (the 80 OpenAI templates) to match the reference.

    Returns an :class:`~helpers.methods.ablation.AblationSet`: ``evaluator(**repair_ablation(...))``.
    """
    if protocol not in REPAIR_PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(map(repr, REPAIR_PROTOCOLS))}, got {protocol!r}")
    L = int(n_layers)
    if L < 1:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    heads = tuple((int(l), int(h)) for l, h in heads)
    bad = [p for p in heads if not -L <= p[0] < L]
    if bad:
        raise IndexError(f"heads {bad} lie outside a {L}-layer model")
    if protocol == "heads":
        return AblationSet(heads=heads)
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ValueError(f"last must be a positive integer, got {last!r}")
    return AblationSet(heads=heads, attn=tuple(range(max(0, L - last))), mlps=tuple(range(L)), embed=True,
                       scale="paper")


# ----------------------------------------------------------------------------------------------
# Group metrics
# ----------------------------------------------------------------------------------------------


@dataclass
class GroupMetrics:
    """Accuracy per group, over all images (``average``), the unweighted mean over groups,
    and the worst group (its name in ``worst_name``); ``counts`` images per group."""

    groups: dict[str, float]
    counts: dict[str, int]
    average: float
    group_mean: float
    worst_group: float
    worst_name: str

    def as_dict(self) -> dict[str, Any]:
        return {"groups": dict(self.groups), "counts": dict(self.counts), "average": self.average,
                "group_mean": self.group_mean, "worst_group": self.worst_group, "worst_name": self.worst_name}


def group_metrics(pred: Any, labels: Any, groups: Any, names: Sequence[str] | None = None) -> GroupMetrics:
    """Group-wise accuracy of predictions ``pred`` against ``labels``.

    ``groups`` gives each image's group index (``0..G-1``); groups with no image are left out
    (and do not count for the worst group). ``names`` names the groups (default ``"group g"``).
    """
    p = np.asarray(pred.cpu() if isinstance(pred, Tensor) else pred).reshape(-1)
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
    g = np.asarray(groups.cpu() if isinstance(groups, Tensor) else groups).reshape(-1)
    if not (len(p) == len(y) == len(g)):
        raise ValueError(f"pred, labels and groups differ in length: {len(p)}, {len(y)}, {len(g)}")
    if len(p) == 0:
        raise ValueError("no images")
    if not np.issubdtype(g.dtype, np.integer) or (g < 0).any():
        raise ValueError("groups must be non-negative integer indices")
    n_groups = int(g.max()) + 1 if names is None else len(names)
    if g.max() >= n_groups:
        raise ValueError(f"group index {int(g.max())} but only {n_groups} names")
    names = list(names) if names is not None else [f"group {k}" for k in range(n_groups)]
    per, counts = {}, {}
    for k, name in enumerate(names):
        sel = g == k
        if sel.any():
            per[name] = float((p[sel] == y[sel]).mean())
            counts[name] = int(sel.sum())
    worst = min(per, key=per.get)
    return GroupMetrics(groups=per, counts=counts, average=float((p == y).mean()),
                        group_mean=float(np.mean(list(per.values()))), worst_group=per[worst], worst_name=worst)


def habitat_gap(metrics: GroupMetrics, names: Sequence[str] = WATERBIRDS_GROUPS) -> tuple[float, float]:
    """Mean accuracy of the groups whose background is the class's own habitat and of those
    whose background is the other class's habitat: ``(matched, mismatched)``.

    ``names`` are the four group names in the order ``g = 2 * label + place`` (label 1 lives on
    place 1), so groups 0 and 3 are matched, 1 and 2 mismatched. Groups without images are left
    out; a side with none is NaN.
    """
    if len(names) != 4:
        raise ValueError(f"habitat_gap needs the four group names, got {len(names)}")
    side = lambda idx: [metrics.groups[names[i]] for i in idx if names[i] in metrics.groups]  # noqa: E731
    mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
    return mean(side((0, 3))), mean(side((1, 2)))


class GroupEvaluator:
    """Zero-shot group metrics from stored direct terms, with heads mean-ablated on demand.

    Args:
        terms: direct terms of the evaluation images, collected with ``heads=True``.
        classifier: ``[C, d']`` class embeddings (unit rows).
        labels, groups: per image; ``names`` the group names.
        means: take the ablation means from another set of terms (e.g. a separate split);
            default: the evaluation images themselves, as in the paper.
    """

    def __init__(self, terms: DirectTerms, classifier: Tensor, labels: Any, groups: Any,
                 names: Sequence[str] | None = None, means: DirectTerms | None = None) -> None:
        if terms.heads is None:
            raise ValueError("GroupEvaluator needs terms collected with heads=True")
        self.terms, self.means = terms, means
        self.classifier = classifier.to(terms.embed.device, terms.embed.dtype)
        self.labels, self.groups, self.names = labels, groups, names
        self.n_layers, self.n_heads = terms.heads.shape[1], terms.heads.shape[2]

    def predict(self, heads: Iterable[tuple[int, int]] = (), **ablate: Any) -> Tensor:
        emb = self.terms.ablated(heads=list(heads), means=self.means, **ablate)
        return (F.normalize(emb, dim=-1) @ self.classifier.T).argmax(-1)

    def __call__(self, heads: Iterable[tuple[int, int]] = (), **ablate: Any) -> GroupMetrics:
        """Metrics with ``heads`` (``(layer, head)`` pairs) and any other terms accepted by
        :meth:`DirectTerms.ablated` (``mlps=``, ``attn=``, ``embed=``) mean-ablated."""
        return group_metrics(self.predict(heads, **ablate), self.labels, self.groups, self.names)


# ----------------------------------------------------------------------------------------------
# Choosing heads
# ----------------------------------------------------------------------------------------------


@dataclass
class HeadScore(Head):
    """How much of a head's TextSpan description is about the spurious properties.

    ``layer``, ``head`` and :attr:`label` (``"L{layer}.H{head}"``) as every head record;
    ``score``: the share of the variance its texts explain that comes from texts tagged with
    a spurious property; ``share``: the plain fraction of such texts; ``role``: the head's
    property (:attr:`helpers.methods.heads.HeadRole.property`); ``texts``: its spurious texts.
    """

    score: float
    share: float
    role: str | None
    texts: list[str] = field(default_factory=list)


def rank_heads(roles: Sequence[HeadRole], properties: Iterable[str]) -> list[HeadScore]:
    """Heads ordered from most to least about ``properties`` (e.g. ``("background",)``).

    Uses each head's texts from :func:`helpers.methods.heads.head_roles`, their property tags and the
    variance each text adds; ties are broken by the plain share of spurious texts.
    """
    props = set(properties)
    if not props:
        raise ValueError("name at least one spurious property")
    out = []
    for r in roles:
        var = np.clip(np.asarray(r.variances, dtype=np.float64), 0, None)
        hit = np.array([t in props for t in r.text_properties], dtype=bool)
        total = var.sum()
        score = float(var[hit].sum() / total) if total > 0 else float(hit.mean() if len(hit) else 0.0)
        out.append(HeadScore(layer=r.layer, head=r.head, score=score, share=float(hit.mean()) if len(hit) else 0.0,
                             role=r.property, texts=[t for t, h in zip(r.texts, hit) if h]))
    return sorted(out, key=lambda s: (-s.score, -s.share, s.layer, s.head))


def choose_heads(ranking: Sequence[HeadScore], *, min_score: float = 0.5, max_heads: int | None = None) -> list[tuple[int, int]]:
    """The heads of ``ranking`` whose score is at least ``min_score`` (at most ``max_heads``)."""
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    picked = [s.pair for s in ranking if s.score >= min_score]
    return picked if max_heads is None else picked[:max_heads]


def random_heads(n: int, layers: Iterable[int], n_heads: int, *, exclude: Iterable[tuple[int, int]] = (),
                 seed: int = 0) -> list[tuple[int, int]]:
    """``n`` distinct heads drawn uniformly from ``layers`` (skipping ``exclude``): the control."""
    pool = [(l, h) for l in layers for h in range(n_heads) if (l, h) not in set(exclude)]
    if n > len(pool):
        raise ValueError(f"cannot draw {n} heads from {len(pool)}")
    idx = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in sorted(idx.tolist())]
