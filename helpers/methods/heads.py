"""Roles of attention heads, interpretability scores, replacement by text bases, neighbours.

Everything here works on precomputed arrays: the direct terms of a dataset
(:class:`~helpers.methods.ablation.DirectTerms`, with per-head contributions ``heads [N, L, H, d]``),
TextSpan results (:class:`~helpers.methods.textspan.TextSpanResult`) and a tagged text pool
(:class:`~helpers.data.pools.Pool`). No model is called, so every function is fast and works for
any CLIP-like model and any pool whose texts carry a property tag.

The pieces, in the order a study uses them:

* :func:`stack_heads` gathers the heads of some layers into one ``[Hs, N, d]`` stack (the
  input :func:`~helpers.methods.textspan.textspan` takes) with ``(layer, head)`` labels.
* :func:`head_roles` names each head after the most common property among its first ``n``
  TextSpan texts (paper, section 4.2: "colour", "shape", "location", ... heads) and measures
  how pure that role is.
* :func:`interpretability_scores` condenses the roles into the two numbers of the follow-up
  study (CLIP-InterpreT, Madasu et al. 2024): an *association* score (how consistently a
  head's texts are about its property) and an *entanglement* score -- how much a property is
  shared across heads (the course's score after the study's description), or the course's
  within-head count of how many properties a head mixes. The study has an LLM label the texts; a tagged pool makes them exact.
* :func:`reconstruction_accuracy` replaces the heads of the last layers by their rank-``n``
  reconstruction on a text basis (TextSpan), on the principal axes (PCA, the upper bound) or
  on a basis of random texts (the baseline), and measures zero-shot accuracy (paper,
  section 4.1, table 2 / figure 3).
* :func:`property_neighbours`, :func:`head_image_neighbours` and :func:`head_text_neighbours`
  are the nearest-neighbour analyses of CLIP-InterpreT, restricted to the contributions of
  one head or of the heads sharing a property (:func:`heads_for_property`);
  :func:`terms_neighbours` searches for a query image outside the searched set (its own terms).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.labels import Head
from ..engine.pool import Pool
from .ablation import ABLATION_SCALES, DirectTerms, accuracy
from .streamed import StreamedStack, StreamedTerms, share_right
from .textspan import TextSpanResult, pca_basis, random_texts, textspan

__all__ = [
    "DEFAULT_IGNORE",
    "stack_heads",
    "HeadRole",
    "head_roles",
    "dominant_property",
    "InterpretabilityScores",
    "ENTANGLEMENTS",
    "interpretability_scores",
    "fit_basis",
    "pool_head_textspan",
    "reconstructed_embeddings",
    "reconstruction_accuracy",
    "variance_explained_curve",
    "NEIGHBOUR_SCORES",
    "property_neighbours",
    "head_image_neighbours",
    "head_text_neighbours",
    "terms_neighbours",
    "heads_for_property",
    "SearchAgreement",
    "search_agreement",
    "neighbour_overlap",
]

DEFAULT_IGNORE: tuple[str, ...] = ("other", "unknown")
"""Tags that say nothing about a property (untagged files read as ``"unknown"``)."""

Method = Literal["textspan", "pca", "random"]


# ----------------------------------------------------------------------------------------------
# Small checks
# ----------------------------------------------------------------------------------------------


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        if isinstance(v, Tensor) and v.ndim == 0 and not v.is_floating_point() and v.dtype != torch.bool:
            return int(v)
        raise ValueError(f"{name} must be an integer, got {v!r}")
    return int(v)


def _tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{name} must be an array or tensor ({e})") from None


def _float_work(x: Tensor) -> Tensor:
    """``x`` in a dtype suitable for sums and norms (half precision is widened)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_stack(heads_stack: Any) -> Tensor:
    if isinstance(heads_stack, StreamedStack):
        raise ValueError("this stack stays on disk (streamed terms): read the images to search into memory "
                         "with its rows(index)")
    S = _tensor(heads_stack, "heads_stack")
    if S.ndim != 3:
        raise ValueError(f"heads_stack must be [Hs, N, d], got shape {tuple(S.shape)}")
    if 0 in S.shape:
        raise ValueError(f"heads_stack is empty, shape {tuple(S.shape)}")
    if not (S.is_floating_point()):
        S = S.float()
    return S


def _index(i: Any, size: int, name: str) -> int:
    i = _int(i, name)
    if not -size <= i < size:
        raise IndexError(f"{name} {i} out of range for {size} items")
    return i % size


# ----------------------------------------------------------------------------------------------
# Stacking heads
# ----------------------------------------------------------------------------------------------


def _layer_indices(layers: Any, L: int) -> list[int]:
    """``layers`` (one layer or several, negative allowed) as distinct indices into ``L`` layers."""
    layer_list = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    if not layer_list:
        raise ValueError("no layers given")
    norm = [_index(li, L, "layer") for li in layer_list]
    if len(set(norm)) != len(norm):
        raise ValueError(f"a layer is given twice: {layer_list} (layers {norm} of {L})")
    return norm


def stack_heads(terms: DirectTerms, layers: int | Iterable[int], *, scale: str = "raw"
                ) -> tuple[Tensor, list[tuple[int, int]]]:
    """The per-head contributions of ``layers`` as one stack ``[Hs, N, d]``.

    Args:
        terms: direct terms collected with ``heads=True`` (``terms.heads`` is ``[N, L, H, d]``).
        layers: one layer or several, in any order; negative indices count from the end
            (``range(-4, 0)`` is the last four layers, the paper's choice).
        scale: ``"raw"`` (default): the terms as they are. ``"paper"``: on the reference code's
            cosine scale, as ``stack_heads(terms.normalized(), layers)`` without rescaling the
            heads of the other layers (:meth:`DirectTerms.reference_scale`).

    Returns:
        ``(stack, labels)``: ``stack[i] = terms.heads[:, l, h]`` for ``labels[i] = (l, h)``,
        heads ordered by the given layer order, then by head; ``l`` is non-negative.

    Terms streamed from disk (:class:`~helpers.methods.streamed.StreamedTerms`) give a
    :class:`~helpers.methods.streamed.StreamedStack` of the same shape, which stays on disk
    (TextSpan and PCA read its moments).

    Raises:
        ValueError: no per-head terms, no layers, or a layer given twice.
        IndexError: a layer out of range.
    """
    if isinstance(terms, StreamedTerms):
        norm = _layer_indices(layers, terms.n_layers)
        streamed = terms.head_stack(norm, scale)
        return streamed, list(streamed.labels)
    if terms.heads is None:
        raise ValueError("the terms have no per-head contributions: collect them with heads=True")
    if terms.heads.ndim != 4:
        raise ValueError(f"terms.heads must be [N, L, H, d], got shape {tuple(terms.heads.shape)}")
    _, L, H, _ = terms.heads.shape
    norm = _layer_indices(layers, L)
    if scale not in ABLATION_SCALES:
        raise ValueError(f"scale must be one of {', '.join(map(repr, ABLATION_SCALES))}, got {scale!r}")
    heads = terms.heads[:, norm]
    if scale == "paper":
        share, nrm = terms.reference_scale()
        heads = (heads + share / H) / nrm[:, None, None]
    stack = heads.permute(1, 2, 0, 3).reshape(len(norm) * H, terms.heads.shape[0], -1)
    labels = [(li, h) for li in norm for h in range(H)]
    return stack, labels


# ----------------------------------------------------------------------------------------------
# Roles
# ----------------------------------------------------------------------------------------------


@dataclass
class HeadRole(Head):
    """The property a head is about, read off its TextSpan texts.

    Attributes:
        layer, head: the head (``layer`` non-negative); :attr:`label` is ``"L{layer}.H{head}"``.
        property: the dominant property among the first ``n`` texts (``None`` when every text
            carries an ignored tag).
        purity: the share of the ``n`` texts tagged with ``property`` (0 when ``None``).
        texts: the first ``n`` texts, in order of choice.
        text_properties: their tags.
        variance: fraction of the head's variance the ``n`` texts explain (cumulative).
        variances: the fraction each text adds, in order (they sum to ``variance``).
    """

    property: str | None
    purity: float
    texts: list[str] = field(default_factory=list)
    text_properties: list[str] = field(default_factory=list)
    variance: float = float("nan")
    variances: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.text_properties)


def dominant_property(tags: Sequence[str], ignore: Iterable[str] = ()) -> tuple[str | None, float]:
    """The most common tag of ``tags`` that is not ignored, and its share of *all* tags.

    Ties go to the tag whose first occurrence comes first (for TextSpan texts: the
    earlier-chosen, more important text). Returns ``(None, 0.0)`` when no tag is left.
    """
    tags = list(tags)
    if not tags:
        raise ValueError("no tags")
    skip = set(ignore)
    counts = Counter(t for t in tags if t not in skip)
    if not counts:
        return None, 0.0
    first = {}
    for i, t in enumerate(tags):
        first.setdefault(t, i)
    best = min(counts, key=lambda t: (-counts[t], first[t]))
    return best, counts[best] / len(tags)


def head_roles(result: TextSpanResult, pool: Pool, labels: Sequence[tuple[int, int]],
               n: int | None = None, *, ignore: Iterable[str] = ()) -> list[HeadRole]:
    """One :class:`HeadRole` per head of a TextSpan result.

    The role of a head is the most common property tag among its first ``n`` chosen texts,
    ``p* = argmax_p #{i <= n : tag(t_i) = p}`` (ties: the property of the earlier-chosen
    text), and its purity is ``#{i <= n : tag(t_i) = p*} / n``.

    Args:
        result: batched TextSpan result ``[Hs, n_fit]`` computed on ``pool``'s embeddings.
        pool: the tagged pool the texts were chosen from.
        labels: ``(layer, head)`` of each head of the result (as :func:`stack_heads` gives).
        n: number of texts to read (default: all chosen; at most ``result.n``).
        ignore: tags that may not be a head's property (e.g. ``("other", "unknown")``); texts
            carrying them still count in the purity's denominator.

    Raises:
        ValueError: a PCA result (no texts), mismatched labels, or ``n`` out of range.
        IndexError: an index beyond the pool.
    """
    if result.indices is None:
        raise ValueError("the result has no text indices (a PCA basis has no texts)")
    idx = result.indices if result.batched else result.indices.unsqueeze(0)
    cum = result.cumulative if result.batched else result.cumulative.unsqueeze(0)
    steps = result.variance if result.batched else result.variance.unsqueeze(0)
    Hs, n_fit = idx.shape
    labels = [tuple(int(x) for x in lab) for lab in labels]
    if len(labels) != Hs:
        raise ValueError(f"{len(labels)} labels for {Hs} heads")
    if n is None:
        n = n_fit
    n = _int(n, "n")
    if not 1 <= n <= n_fit:
        raise ValueError(f"n must be in [1, {n_fit}] (the texts chosen per head), got {n}")
    ignore = tuple(ignore)
    rows = idx[:, :n].tolist()
    M = len(pool)
    roles = []
    for (layer, head), row, c, v in zip(labels, rows, cum[:, n - 1].tolist(), steps[:, :n].tolist()):
        for j in row:
            if not 0 <= j < M:
                raise IndexError(f"text index {j} out of range for a pool of {M} texts")
        tags = [pool.properties[j] for j in row]
        prop, purity = dominant_property(tags, ignore)
        roles.append(HeadRole(layer=layer, head=head, property=prop, purity=purity,
                              texts=[pool.texts[j] for j in row], text_properties=tags,
                              variance=float(c), variances=[float(x) for x in v]))
    return roles


def heads_for_property(roles: Sequence[HeadRole], property: str, min_purity: float = 0.0) -> list[int]:
    """Indices (into ``roles``, i.e. into the head stack) of the heads whose role is ``property``
    with a purity of at least ``min_purity``."""
    if not 0.0 <= min_purity <= 1.0:
        raise ValueError(f"min_purity must be in [0, 1], got {min_purity}")
    return [i for i, r in enumerate(roles) if r.property == property and r.purity >= min_purity]


# ----------------------------------------------------------------------------------------------
# Interpretability scores
# ----------------------------------------------------------------------------------------------


@dataclass
class InterpretabilityScores:
    """Association and entanglement of a set of heads (see :func:`interpretability_scores`).

    Attributes:
        association: mean purity over the heads with a (non-ignored) property (NaN if none).
        association_per_property: the same mean over the heads of each property.
        entanglement: the score chosen with ``entanglement=`` (``entanglement_kind``): the
            within-head score (default) or the across-heads score.
        properties_per_head: per head, the number of properties occurring at least
            ``min_count`` times among its texts.
        heads_per_property: per property, how many heads have it as their role (every
            property of the scored set, zeros included).
        properties: the properties scored (non-ignored), in order of first appearance.
        n_heads: number of heads scored; ``n_assigned`` of them have a property.
        min_count: the threshold used for ``properties_per_head``.
        within_head_entanglement: in ``[0, 1]``; how many properties each head mixes (0 when
            every head's texts are about one property).
        across_heads_entanglement: in ``[0, 1]``; the course's across-heads score, after the
            study's description (property disentanglement across heads): how much a property is
            shared across heads (0 when every head has a property of its own).
        heads_sharing: per head, how many *other* heads have the same role (0 without a role).
        entanglement_kind: ``"within_head"`` or ``"across_heads"`` (which one ``entanglement`` holds).
    """

    association: float
    association_per_property: dict[str, float]
    entanglement: float
    properties_per_head: list[int]
    heads_per_property: dict[str, int]
    properties: list[str]
    n_heads: int
    n_assigned: int
    min_count: int
    within_head_entanglement: float = float("nan")
    across_heads_entanglement: float = float("nan")
    heads_sharing: list[int] = field(default_factory=list)
    entanglement_kind: str = "within_head"

    def as_dict(self) -> dict[str, Any]:
        return {"association": self.association, "entanglement": self.entanglement,
                "within_head_entanglement": self.within_head_entanglement,
                "across_heads_entanglement": self.across_heads_entanglement,
                "entanglement_kind": self.entanglement_kind,
                "n_heads": self.n_heads, "n_assigned": self.n_assigned,
                "n_properties": len(self.properties), "min_count": self.min_count}


ENTANGLEMENTS: tuple[str, ...] = ("within_head", "across_heads")
"""Values of :func:`interpretability_scores`' ``entanglement``: the course's two scores. Neither is
CLIP-InterpreT's own formula, which the course could not check (the across-heads score follows
the study's description)."""


def interpretability_scores(roles: Sequence[HeadRole], *, ignore: Iterable[str] = DEFAULT_IGNORE,
                            min_count: int = 2,
                            properties: Pool | Iterable[str] | None = None,
                            entanglement: str = "within_head") -> InterpretabilityScores:
    """Association and entanglement scores of heads described by tagged texts.

    Tag-based versions of the two scores of CLIP-InterpreT (Madasu et al. 2024), where a
    language model labels each TextSpan text with a property. Here the pool's tags are the
    labels, so the scores are exact and computable for any model and any tagged pool. For
    head ``h`` with texts ``t_1..t_n`` (from :func:`head_roles`) and the set ``P`` of scored
    properties (ignored tags removed):

    * role: ``p*(h) = argmax_{p in P} c_h(p)`` with ``c_h(p) = #{i : tag(t_i) = p}`` (ties:
      the property of the earlier-chosen text); none if no text has a tag in ``P``.
    * association of a head: ``a(h) = c_h(p*(h)) / n`` (its purity, over *all* ``n`` texts).
      Association of the model: ``A = mean_{h : p*(h) exists} a(h)``; per property ``p``:
      ``A_p = mean_{h : p*(h) = p} a(h)``.
    * within-head entanglement (the course's, ``entanglement="within_head"``):
      ``k(h) = #{p in P : c_h(p) >= min_count}`` properties a head really covers, and
      ``E_within = mean_h max(k(h) - 1, 0) / (|P| - 1)`` over *all* heads, in ``[0, 1]``: 0
      when no head covers two properties, 1 when every head covers all of them
      (``E_within = 0`` when ``|P| <= 1``). It measures how much one head *mixes*.
    * across-heads entanglement (the course's, ``entanglement="across_heads"``, after the
      study's description, "property disentanglement across heads"; the study's own formula
      could not be checked): how much a property is *shared across heads*, i.e. how far the
      model is from one head per property. With ``A`` the heads that have a role and ``n_p = #{h in A : p*(h) = p}``,
      each head's score is the share of the *other* heads with its property,
      ``e(h) = (n_{p*(h)} - 1) / (|A| - 1)``, and the model's is their mean over ``A``:
      ``E_across = mean_{h in A} e(h) = sum_p n_p (n_p - 1) / (|A| (|A| - 1))``, in ``[0, 1]``:
      0 when every head has a property of its own (fully disentangled), 1 when all heads share
      one property (``E_across = 0`` when ``|A| <= 1``). It is the chance that two different
      heads drawn at random share their property. Lower is more interpretable, as in the
      follow-up study, where larger models score lower.
    * ``heads_per_property[p] = #{h : p*(h) = p}``: how many heads share each property.

    Roles are recomputed from ``text_properties`` with ``ignore``, so the scores do not depend
    on the ``ignore`` used when the roles were made.

    Args:
        roles: the heads' roles (all with the same ``n`` for comparable purities).
        ignore: tags that are no property (excluded from ``P``).
        min_count: occurrences a property needs among a head's texts to count as covered.
        properties: the property set ``P``: a :class:`~helpers.data.pools.Pool` (its tags), or
            names. Default: the tags occurring among the heads' texts. Pass the pool to make
            scores comparable between models (texts of a property no head picked still
            enlarge ``|P|``).
        entanglement: which score the ``entanglement`` field holds: ``"within_head"``
            (default) or ``"across_heads"``. Both are always in the result, as
            ``within_head_entanglement`` and ``across_heads_entanglement``.
    """
    if entanglement == "paper":
        raise ValueError("entanglement='paper' was renamed 'across_heads': it is the course's across-heads score; "
                         "CLIP-InterpreT's own formula was not available to check")
    if entanglement not in ENTANGLEMENTS:
        raise ValueError(f"entanglement must be one of {', '.join(map(repr, ENTANGLEMENTS))}, "
                         f"got {entanglement!r}")
    roles = list(roles)
    if not roles:
        raise ValueError("no roles to score")
    min_count = _int(min_count, "min_count")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    skip = set(ignore)
    if properties is None:
        names: Iterable[str] = (t for r in roles for t in r.text_properties)
    elif isinstance(properties, Pool):
        names = properties.properties
    elif isinstance(properties, str):
        raise ValueError("properties must be a pool or a list of names, not a string")
    else:
        names = properties
    P = [p for p in dict.fromkeys(names) if p not in skip]
    in_P = set(P)

    purity: dict[str, list[float]] = {p: [] for p in P}
    assigned: list[float] = []
    per_head: list[int] = []
    role_of: list[str | None] = []
    for r in roles:
        if not r.text_properties:
            raise ValueError(f"head {r.label} has no texts")
        tags = r.text_properties
        prop, share = dominant_property(tags, ignore=[t for t in set(tags) if t not in in_P])
        role_of.append(prop)
        if prop is not None:
            assigned.append(share)
            purity[prop].append(share)
        c = Counter(t for t in tags if t in in_P)
        per_head.append(sum(1 for v in c.values() if v >= min_count))

    association = float(np.mean(assigned)) if assigned else float("nan")
    per_prop = {p: float(np.mean(v)) for p, v in purity.items() if v}
    if len(P) > 1:
        within = float(np.mean([max(k - 1, 0) for k in per_head])) / (len(P) - 1)
    else:
        within = 0.0
    counts = {p: len(v) for p, v in purity.items()}
    n_a = len(assigned)
    across = sum(c * (c - 1) for c in counts.values()) / (n_a * (n_a - 1)) if n_a > 1 else 0.0
    sharing = [counts[p] - 1 if p is not None else 0 for p in role_of]
    return InterpretabilityScores(
        association=association, association_per_property=per_prop,
        entanglement=across if entanglement == "across_heads" else within,
        properties_per_head=per_head, heads_per_property=counts,
        properties=P, n_heads=len(roles), n_assigned=n_a, min_count=min_count,
        within_head_entanglement=within, across_heads_entanglement=float(across), heads_sharing=sharing,
        entanglement_kind=entanglement)


# ----------------------------------------------------------------------------------------------
# Replacing heads by their reconstruction
# ----------------------------------------------------------------------------------------------


def variance_explained_curve(result: TextSpanResult) -> Tensor:
    """``[Hs, n]``: fraction of each head's variance explained by its first ``1..n`` directions
    (a single-head result gives ``[1, n]``)."""
    cum = result.cumulative
    return cum if cum.ndim == 2 else cum.unsqueeze(0)


def fit_basis(stack: Tensor, method: Method, n: int, *, pool_embeddings: Any = None,
              n_random_texts: int | None = None, rank: int = 80, seed: int = 0,
              span: str = "numerical") -> TextSpanResult:
    """A rank-``n`` basis per head of ``stack [Hs, N, d]``.

    ``method``: ``"textspan"`` (TextSpan on ``pool_embeddings [M, d]``), ``"pca"`` (principal
    axes) or ``"random"`` (TextSpan on ``n_random_texts`` random unit vectors drawn with
    ``seed``; default: as many as ``pool_embeddings`` has rows, so both choose among as many
    candidates). ``span`` is TextSpan's (:func:`~helpers.methods.textspan.textspan`: ``"numerical"``
    or the reference code's ``"paper"``).
    """
    if method == "textspan":
        if pool_embeddings is None:
            raise ValueError("method='textspan' needs pool_embeddings")
        R = _tensor(pool_embeddings, "pool_embeddings")
        _check_texts(R, stack.shape[-1])
        return textspan(stack, R, n, rank, span=span)
    if method == "pca":
        return pca_basis(stack, n)
    if method == "random":
        if n_random_texts is None:
            if pool_embeddings is None:
                raise ValueError("method='random' needs pool_embeddings (for the pool size) or "
                                 "n_random_texts")
            R = _tensor(pool_embeddings, "pool_embeddings")
            _check_texts(R, stack.shape[-1])
            n_random_texts = R.shape[0]
        M = _int(n_random_texts, "n_random_texts")
        dtype = torch.float64 if stack.dtype == torch.float64 else torch.float32
        R = random_texts(M, stack.shape[-1], seed, device=stack.device, dtype=dtype)
        return textspan(stack, R, n, rank, span=span)
    raise ValueError(f"method must be 'textspan', 'pca' or 'random', got {method!r}")


def pool_head_textspan(pool_terms: DirectTerms | Any, texts: Any, n: int | None = None) -> TextSpanResult:
    """TextSpan per pooling head of an attention-pooled tower (SigLIP), as the reference code runs it.

    The reference explains each pooling head's terms (summed over the tokens, without the
    out-projection bias, on the raw scale: the pooled output has no layer norm after it) with
    TextSpan at full width: the span's rank and the number of texts both equal the width ``d``,
    so with at least ``d`` images the text projection is the identity and ``d`` texts rebuild
    the head exactly. With fewer images (``N < d``) the reference itself runs out of texts after
    ``N`` picks (its projected texts vanish), so ``n`` is capped at ``min(d, N, M)``.

    Args:
        pool_terms: :class:`~helpers.methods.ablation.DirectTerms` collected with
            ``pool_heads=True``, or the terms ``[N, Hp, d]`` themselves.
        texts: ``[M, d]`` text embeddings.
        n: texts per head (default and maximum: ``min(d, N, M)``).

    Returns:
        A batched :class:`~helpers.methods.textspan.TextSpanResult` over the ``Hp`` heads
        (``span="paper"``, ``rank = d``), its ``scale`` ``"raw"``.
    """
    if isinstance(pool_terms, DirectTerms):
        if pool_terms.pool_heads is None:
            raise ValueError("the terms have no pooling-head terms: collect them with pool_heads=True "
                             "(an attention-pooled tower)")
        P = pool_terms.pool_heads
    else:
        P = _tensor(pool_terms, "pool_terms")
    if P.ndim != 3:
        raise ValueError(f"pooling-head terms must be [N, Hp, d], got shape {tuple(P.shape)}")
    R = _tensor(texts, "texts")
    N, _, d = P.shape
    _check_texts(R, d)
    cap = min(d, N, R.shape[0])
    n = cap if n is None else _int(n, "n")
    if not 1 <= n <= cap:
        raise ValueError(f"n must be in [1, min(d, N, M)] = [1, {cap}], got {n}")
    return replace(textspan(P.transpose(0, 1), R, n, d, span="paper"), scale="raw")


def _check_texts(R: Tensor, d: int) -> None:
    if R.ndim != 2:
        raise ValueError(f"pool_embeddings must be [M, d], got shape {tuple(R.shape)}")
    if R.shape[1] != d:
        raise ValueError(f"pool_embeddings have dimension {R.shape[1]}, the heads {d}")


def _check_result(result: TextSpanResult, stack: Tensor) -> None:
    if not result.batched or result.directions.shape[0] != stack.shape[0]:
        got = result.directions.shape[0] if result.batched else "a single head"
        raise ValueError(f"the result must hold the {stack.shape[0]} heads of the layers, got {got}")
    if result.directions.shape[-1] != stack.shape[-1]:
        raise ValueError(f"result dimension {result.directions.shape[-1]} != head dimension "
                         f"{stack.shape[-1]}")


def _earlier_layers(labels: Sequence[tuple[int, int]]) -> list[int]:
    first = min(li for li, _ in labels)
    return list(range(first))


def _check_scale(scale: str) -> None:
    if scale not in ABLATION_SCALES:
        raise ValueError(f"scale must be one of {', '.join(map(repr, ABLATION_SCALES))}, got {scale!r}")


def _check_result_scale(result: TextSpanResult, scale: str) -> None:
    if result.scale is not None and result.scale != scale:
        raise ValueError(f"the basis was fitted on the {result.scale!r} scale, but scale={scale!r}: fit it on "
                         f"stack_heads(terms, layers, scale={scale!r}), or pass scale={result.scale!r}")


def reconstructed_embeddings(terms: DirectTerms, layers: int | Iterable[int], result: TextSpanResult,
                             n: int | None = None, *, ablate_earlier: bool = True, scale: str = "raw") -> Tensor:
    """Embeddings ``[N, d]`` with every head of ``layers`` replaced by its reconstruction.

    Head ``(l, h)``'s term ``c`` becomes ``mean + (c - mean) U_n^T U_n`` on the first ``n``
    directions of ``result`` (fitted on :func:`stack_heads` of the same layers, in the same
    order, on the same ``scale``); the attention layers before the first of ``layers`` are
    mean-ablated when ``ablate_earlier``; every other term is kept. The embedding is the sum of
    the terms, so the change is the sum over heads of ``reconstruction - term``, added in one
    step. ``scale="paper"`` works on the reference code's scale (every image's terms divided by
    its embedding norm, the ``ln_post`` bias shared over the summands: :meth:`DirectTerms.normalized`),
    means included; the result is then on that scale.
    """
    _check_scale(scale)
    stack, labels = stack_heads(terms, layers, scale=scale)
    _check_result(result, stack)
    _check_result_scale(result, scale)
    if n is not None:
        n = _int(n, "n")
        if not 1 <= n <= result.n:
            raise ValueError(f"n must be in [1, {result.n}] (the directions fitted), got {n}")
        if n < result.n:
            result = result.truncate(n)
    if ablate_earlier:
        base = terms.ablated(attn=_earlier_layers(labels), scale=scale)
    else:
        base = terms.normalized().embeddings() if scale == "paper" else terms.embeddings()
    rec = result.reconstruct(stack)  # [Hs, N, d] in the result's dtype
    delta = (rec - stack.to(rec.dtype)).sum(0)
    return base + delta.to(base.dtype)


def reconstruction_accuracy(terms: DirectTerms, classifier: Tensor, labels: Tensor | Sequence[int],
                            layers: int | Iterable[int], method: Method, n_values: Iterable[int],
                            pool_embeddings: Any = None, seed: int = 0, *, rank: int = 80,
                            n_random_texts: int | None = None,
                            result: TextSpanResult | None = None, span: str = "numerical",
                            scale: str = "raw") -> dict[int, float]:
    """Zero-shot accuracy with the heads of ``layers`` replaced by rank-``n`` reconstructions.

    For each ``n`` in ``n_values``: every head of ``layers`` (e.g. ``range(-4, 0)``) is
    replaced by ``mean + (c - mean) U_n^T U_n``, with ``U_n`` its first ``n`` directions from
    ``method`` (see :func:`fit_basis`), the attention layers before them are mean-ablated,
    the MLPs and everything else kept (paper, table 2 and figure 3). The basis is fitted once
    with ``max(n_values)`` directions and truncated: greedy TextSpan choices and principal
    axes are prefix-consistent.

    Args:
        terms: direct terms with per-head contributions.
        classifier: ``[C, d]`` class embeddings; ``labels``: ``[N]`` class indices.
        layers: the layers whose heads are reconstructed.
        method: ``"textspan"``, ``"pca"`` or ``"random"``.
        n_values: basis sizes to evaluate (each ``>= 1``; at most what the method can fit).
        pool_embeddings: ``[M, d]`` text embeddings (TextSpan's pool; the random baseline's
            pool size).
        seed: seed of the random texts.
        rank: TextSpan's span rank (see :func:`~helpers.methods.textspan.textspan`).
        span: TextSpan's span, ``"numerical"`` or the reference code's ``"paper"``.
        n_random_texts: number of random texts (default: the pool size).
        result: a basis already fitted on ``stack_heads(terms, layers, scale=scale)`` with at
            least ``max(n_values)`` directions (then ``method`` and the pool are not used); a
            basis that records another scale (:attr:`TextSpanResult.scale`) is refused.
        scale: ``"raw"`` (default, the course's): fit and score on the terms as they are.
            ``"paper"`` (the reference code's): fit, mean-ablate and reconstruct on each
            image's terms divided by its embedding norm with the ``ln_post`` bias shared over
            the summands (:meth:`DirectTerms.normalized`); the basis (the SVD, the means, the
            variance TextSpan ranks by) then differs, while the argmax stays scale-free per
            image.

    Returns:
        ``{n: accuracy}`` in the order of ``n_values``.

    With terms streamed from disk (:class:`~helpers.methods.streamed.StreamedTerms`, the
    heads of ``layers`` stored) the basis is fitted on the heads' moments and every ``n`` is
    measured in one pass over the data.
    """
    _check_scale(scale)
    ns = [_int(v, "n") for v in n_values]
    if not ns:
        raise ValueError("n_values is empty")
    if min(ns) < 1:
        raise ValueError(f"every n must be >= 1, got {ns}")
    stack, head_labels = stack_heads(terms, layers, scale=scale)
    classifier = _tensor(classifier, "classifier")
    d = stack.shape[-1]
    if classifier.ndim != 2 or classifier.shape[1] != d:
        raise ValueError(f"classifier must be [C, {d}], got shape {tuple(classifier.shape)}")
    lab = torch.as_tensor(labels)
    if lab.ndim != 1 or lab.shape[0] != stack.shape[1]:
        raise ValueError(f"labels must be [{stack.shape[1]}] (one per image), got shape {tuple(lab.shape)}")
    n_max = max(ns)
    if result is None:
        limit = min(stack.shape[1], d)
        if n_max > limit:
            raise ValueError(f"n = {n_max} is larger than possible: at most min(N, d) = {limit}")
        result = fit_basis(stack, method, n_max, pool_embeddings=pool_embeddings,
                           n_random_texts=n_random_texts, rank=rank, seed=seed, span=span)
        result = replace(result, scale=scale)
    else:
        _check_result(result, stack)
        _check_result_scale(result, scale)
    if result.n < n_max:
        raise ValueError(f"the given result has {result.n} directions, fewer than n = {n_max}")
    if isinstance(stack, StreamedStack):
        return _streamed_reconstruction_accuracy(terms, stack, result, ns, _earlier_layers(head_labels), scale,
                                                 classifier, lab)
    base = terms.ablated(attn=_earlier_layers(head_labels), scale=scale)
    stack_w = stack.to(result.directions.dtype)
    out: dict[int, float] = {}
    for n in ns:
        if n in out:
            continue
        rec = result.truncate(n).reconstruct(stack_w)
        emb = base + (rec - stack_w).sum(0).to(base.dtype)
        out[n] = accuracy(emb, classifier, lab.to(emb.device))
    return out


def _streamed_reconstruction_accuracy(terms: StreamedTerms, stack: StreamedStack, result: TextSpanResult,
                                      ns: list[int], earlier: list[int], scale: str, classifier: Tensor,
                                      labels: Tensor) -> dict[int, float]:
    """:func:`reconstruction_accuracy` over terms streamed from disk: one pass, each chunk's
    heads projected on every truncation of the basis."""
    sizes = list(dict.fromkeys(ns))
    bases = {n: result.truncate(n) if n < result.n else result for n in sizes}
    cls = classifier.to(terms.device, terms.dtype)
    lab = labels.to(terms.device)
    right = dict.fromkeys(sizes, 0)
    spec = {"attn": earlier, "scale": scale}
    for i, t, h in terms.chunks(heads=True):
        assert h is not None
        base = terms.ablate_chunk(t, spec)
        x = stack.of_chunk(t, h)
        xw = x.to(result.directions.dtype)
        y = lab[i:i + len(t)]
        for n, b in bases.items():
            emb = base + (b.reconstruct(xw) - xw).sum(0).to(base.dtype)
            right[n] += int(((F.normalize(emb, dim=-1) @ cls.T).argmax(-1) == y).sum())
    return {n: share_right(right[n], len(terms)) for n in ns}


# ----------------------------------------------------------------------------------------------
# Nearest neighbours (CLIP-InterpreT analyses)
# ----------------------------------------------------------------------------------------------


def _select_heads(heads: Any, Hs: int) -> list[int]:
    if isinstance(heads, (int, np.integer)) and not isinstance(heads, bool):
        return [_index(heads, Hs, "head index")]
    t = _tensor(heads, "heads")
    if t.dtype == torch.bool:
        if t.ndim != 1 or t.shape[0] != Hs:
            raise ValueError(f"a head mask must have {Hs} entries, got shape {tuple(t.shape)}")
        sel = t.nonzero().flatten().tolist()
    else:
        if t.is_floating_point() or t.ndim > 1:
            raise ValueError("heads must be a boolean mask or a list of head indices")
        sel = [_index(i, Hs, "head index") for i in t.flatten().tolist()]
    if not sel:
        raise ValueError("no heads selected")
    return sorted(set(sel))


def _top_k(scores: Tensor, k: int, exclude: int | None = None) -> tuple[Tensor, Tensor]:
    if exclude is not None:
        scores = scores.clone()
        scores[exclude] = float("-inf")
    vals, idx = scores.topk(k)
    return idx, vals


NEIGHBOUR_SCORES: tuple[str, ...] = ("cosine", "dot")
"""Values of the neighbour functions' ``score``: cosine (the course's) or dot product (the
reference code's)."""


def _check_score(score: str) -> None:
    if score not in NEIGHBOUR_SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, NEIGHBOUR_SCORES))}, got {score!r}")


def property_neighbours(heads_stack: Any, heads: Any, query_index: int, k: int = 5, *,
                        centre: bool = False, score: str = "cosine") -> tuple[Tensor, Tensor]:
    """Nearest images of image ``query_index`` as seen by a group of heads.

    Each image is represented by ``s_i = sum_{h in heads} c_{h,i}``, the summed direct
    contributions of the chosen heads (e.g. all heads whose role is "colour"), and images are
    ranked by the cosine ``cos(s_q, s_i)`` (``score="cosine"``) or by the dot product
    ``s_q . s_i`` (``score="dot"``, as the paper's reference code ranks per-head neighbours),
    the query itself left out. The reference's terms are on its cosine scale (each image's
    terms divided by its embedding norm): build the stack from
    :meth:`~helpers.methods.ablation.DirectTerms.normalized` terms to rank exactly as it does.

    Args:
        heads_stack: ``[Hs, N, d]`` per-head contributions (:func:`stack_heads`).
        heads: a boolean mask ``[Hs]``, a list of indices into the stack, or one index.
        query_index: the query image (negative indices allowed).
        k: number of neighbours, ``1 <= k < N``.
        centre: subtract the mean of ``s`` over the images first (removes the shared offset
            that otherwise makes every image similar; off by default, as in the tool).
        score: ``"cosine"`` (default) or ``"dot"``.

    Returns:
        ``(indices [k], scores [k])``, most similar first.
    """
    S = _check_stack(heads_stack)
    q = _index(query_index, S.shape[1], "query_index")
    return terms_neighbours(S, heads, S[:, q], k, centre=centre, score=score, exclude=q)


def head_image_neighbours(heads_stack: Any, head_index: int, query_index: int, k: int = 5, *,
                          centre: bool = False, score: str = "cosine") -> tuple[Tensor, Tensor]:
    """Nearest images of image ``query_index`` through one head's contributions (cosine, or
    the dot product with ``score="dot"``); :func:`property_neighbours` with a single head."""
    S = _check_stack(heads_stack)
    h = _index(head_index, S.shape[0], "head index")
    return property_neighbours(S, [h], query_index, k, centre=centre, score=score)


def head_text_neighbours(heads_stack: Any, head_index: int, text_embedding: Any, k: int = 5, *,
                         centre: bool = False, score: str = "cosine") -> tuple[Tensor, Tensor]:
    """Images whose contribution from one head is most similar to a text embedding.

    Ranks images ``i`` by ``cos(c_{h,i}, t)`` for the text embedding ``t [d]``, or by the dot
    product ``c_{h,i} . t`` with ``score="dot"`` (the text as given).

    Returns:
        ``(indices [k], scores [k])``, most similar first (``1 <= k <= N``).
    """
    _check_score(score)
    S = _check_stack(heads_stack)
    Hs, N, d = S.shape
    h = _index(head_index, Hs, "head index")
    t = _tensor(text_embedding, "text_embedding")
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 1 or t.shape[0] != d:
        raise ValueError(f"text_embedding must be [{d}], got shape {tuple(t.shape)}")
    k = _int(k, "k")
    if not 1 <= k <= N:
        raise ValueError(f"k must be in [1, N] = [1, {N}], got {k}")
    c = _float_work(S[h])
    if centre:
        c = c - c.mean(0, keepdim=True)
    t = t.to(device=c.device, dtype=c.dtype)
    if score == "dot":
        return _top_k(c @ t, k)
    t = F.normalize(t, dim=0)
    return _top_k(F.normalize(c, dim=-1) @ t, k)


def terms_neighbours(heads_stack: Any, heads: Any, query_terms: Any, k: int = 5, *, centre: bool = False,
                     score: str = "cosine", exclude: int | None = None) -> tuple[Tensor, Tensor]:
    """Nearest images of a query given by its own per-head terms, through a group of heads.

    The query need not be one of the stack's images (a photo, an uploaded image): its terms
    ``query_terms [Hs, d]`` (the same heads, on the same scale as the stack) are summed over
    ``heads`` like every image's, ``s_q = sum_{h in heads} q_h``, and the images are ranked by
    ``cos(s_q, s_i)`` or ``s_q . s_i`` as in :func:`property_neighbours`. With
    ``query_terms = heads_stack[:, q]`` and ``exclude=q`` this is
    ``property_neighbours(heads_stack, heads, q, k)``.

    Args:
        heads_stack: ``[Hs, N, d]`` per-head contributions of the searched images.
        heads: a boolean mask ``[Hs]``, a list of indices into the stack, or one index.
        query_terms: ``[Hs, d]`` the query's per-head contributions.
        k: number of neighbours (``1 <= k <= N``, one fewer with ``exclude``).
        centre: subtract the searched images' mean of ``s`` from theirs and from the query's.
        score: ``"cosine"`` (default) or ``"dot"``.
        exclude: an image left out (the query itself, when it is one of the stack's).

    Returns:
        ``(indices [k], scores [k])``, most similar first.
    """
    _check_score(score)
    S = _check_stack(heads_stack)
    Hs, N, d = S.shape
    sel = _select_heads(heads, Hs)
    q = _tensor(query_terms, "query_terms")
    if q.shape != (Hs, d):
        raise ValueError(f"query_terms must be [{Hs}, {d}] (the stack's heads and width), got shape {tuple(q.shape)}")
    skip = None if exclude is None else _index(exclude, N, "exclude")
    k = _int(k, "k")
    limit = N - (skip is not None)
    if not 1 <= k <= limit:
        left_out = " (the query is left out)" if skip is not None else ""
        raise ValueError(f"k must be in [1, {limit}]{left_out}, got {k}")
    s = _float_work(S[sel].sum(0))
    sq = q[sel].sum(0).to(device=s.device, dtype=s.dtype)
    if centre:
        mu = s.mean(0)
        s, sq = s - mu, sq - mu
    if score == "cosine":
        s, sq = F.normalize(s, dim=-1), F.normalize(sq, dim=0)
    return _top_k(s @ sq, k, exclude=skip)


# ----------------------------------------------------------------------------------------------
# How well a neighbour search agrees with the query (ground-truth factors)
# ----------------------------------------------------------------------------------------------


@dataclass
class SearchAgreement:
    """How often neighbours found through groups of heads share the query's factor values.

    Attributes:
        agreement: ``{group: {factor: share}}``: over the queries, the share of each query's
            ``k`` neighbours (found through the group's heads) whose value of ``factor``
            equals the query's.
        chance: ``{factor: share}``: the same share for neighbours drawn at random (for each
            query, the share of the *other* images with its value), averaged over the queries.
        queries: the query images used; ``k``: neighbours per query.
    """

    agreement: dict[str, dict[str, float]]
    chance: dict[str, float]
    queries: list[int]
    k: int

    def lift(self, group: str, factor: str) -> float:
        """``agreement / chance`` for one group and factor (``inf`` when chance is 0)."""
        c = self.chance[factor]
        return self.agreement[group][factor] / c if c > 0 else float("inf")

    def best_factor(self, group: str) -> str:
        """The factor the group's neighbours agree on most, relative to chance (ties: the first)."""
        return max(self.agreement[group], key=lambda f: self.lift(group, f))


def search_agreement(heads_stack: Any, groups: dict[str, Any], factors: dict[str, Any], *,
                     queries: Any = None, k: int = 5, centre: bool = True,
                     score: str = "cosine") -> SearchAgreement:
    """Property-based image search (:func:`property_neighbours`) scored on known factors.

    For every group of heads (``{name: heads}``, as :func:`property_neighbours` takes them)
    and every query image, the ``k`` nearest images through the group are found; for each
    factor (``{name: [N] values}``, e.g. a world's scene factors) the share of neighbours with
    the query's value is averaged over the queries. ``chance`` is what random neighbours would
    give: the share of the other images that share the query's value.

    Args:
        queries: image indices (default: every image).
        k, centre, score: as in :func:`property_neighbours`.
    """
    S = _check_stack(heads_stack)
    _, N, _ = S.shape
    if not groups:
        raise ValueError("no groups of heads given")
    if not factors:
        raise ValueError("no factors given")
    vals = {}
    for name, v in factors.items():
        t = torch.as_tensor(np.asarray(v)).flatten()
        if t.shape[0] != N:
            raise ValueError(f"factor {name!r} has {t.shape[0]} values for {N} images")
        vals[name] = t
    qs = _queries(queries, N)
    if not qs:
        raise ValueError("no queries given")
    k = _int(k, "k")
    agreement: dict[str, dict[str, float]] = {}
    for g, heads in groups.items():
        idx = _all_neighbours(S, heads, qs, k, centre, score)  # [Q, k]
        agreement[g] = {f: float((v[idx] == v[qs].unsqueeze(1)).double().mean()) for f, v in vals.items()}
    chance = {}
    for f, v in vals.items():
        same = (v[qs].unsqueeze(1) == v.unsqueeze(0)).sum(1).double() - 1  # the query itself left out
        chance[f] = float((same / (N - 1)).mean())
    return SearchAgreement(agreement=agreement, chance=chance, queries=qs, k=k)


def neighbour_overlap(heads_stack: Any, heads: Any, *, queries: Any = None, k: int = 5,
                      centre: bool = False, scores: tuple[str, str] = ("dot", "cosine"),
                      first_stack: Any = None) -> float:
    """Mean share of the ``k`` nearest images two scores have in common (any order).

    For each query, :func:`property_neighbours` through ``heads`` is run with each of the two
    ``scores`` (default: the reference's dot product and the cosine), and the share of
    neighbours both find is averaged over the queries (default: every image). 1 means the two
    rankings pick the same neighbours. ``first_stack`` (the shape of ``heads_stack``) is what the
    first score ranks, when it ranks other terms: the reference code's dot product ranks the
    terms on the cosine scale (``stack_heads(terms.normalized(), layers)``).
    """
    S = _check_stack(heads_stack)
    S1 = S if first_stack is None else _check_stack(first_stack)
    if S1.shape != S.shape:
        raise ValueError(f"first_stack {tuple(S1.shape)} must have the shape of heads_stack {tuple(S.shape)}")
    _, N, _ = S.shape
    a, b = scores
    qs = _queries(queries, N)
    if not qs:
        raise ValueError("no queries given")
    k = _int(k, "k")
    ia = _all_neighbours(S1, heads, qs, k, centre, a)
    ib = _all_neighbours(S, heads, qs, k, centre, b)
    common = (ia.unsqueeze(2) == ib.unsqueeze(1)).any(2).double().sum(1)  # [Q]
    return float((common / k).mean())


def _all_neighbours(S: Tensor, heads: Any, queries: list[int], k: int, centre: bool, score: str) -> Tensor:
    """``[Q, k]``: :func:`property_neighbours`' indices for many queries at once."""
    _check_score(score)
    Hs, N, _ = S.shape
    if not 1 <= k < N:
        raise ValueError(f"k must be in [1, N - 1] = [1, {N - 1}] (the query is left out), got {k}")
    sel = _select_heads(heads, Hs)
    s = _float_work(S[sel].sum(0))
    if centre:
        s = s - s.mean(0, keepdim=True)
    if score == "cosine":
        s = F.normalize(s, dim=-1)
    q = torch.as_tensor(queries, dtype=torch.long, device=s.device)
    sims = s[q] @ s.T  # [Q, N]
    sims[torch.arange(len(queries), device=s.device), q] = float("-inf")
    return sims.topk(k, dim=-1).indices.cpu()


def _queries(queries: Any, N: int) -> list[int]:
    """Query indices (default: every image), checked against ``N`` images."""
    if queries is None:
        return list(range(N))
    return [_index(q, N, "query") for q in _tensor(queries, "queries").flatten().tolist()]
