"""A head catalogue computed for any model, and the head terms behind it, cached on disk.

CLIP-InterpreT (Madasu et al. 2024) backs its explorer with a hand-written table of which head
of the last layers carries which property (a language model labelled each head's TextSpan
texts). This module computes that table instead, for whatever model it is given:

* :class:`HeadTerms` holds the direct terms of every head of the last layers for ``N`` images
  (``[N, layers, heads, d]``), with what puts them on the reference code's cosine scale (each
  image's embedding norm and the heads' share of the ``ln_post`` bias). :func:`head_terms`
  decomposes a batch (a photo, an upload); :func:`cached_head_terms` streams a whole dataset
  through the on-disk cache (:mod:`helpers.engine.cache`), so a second run reads them back;
  memory is bounded by one batch plus the last layers' terms, never the whole decomposition.
* :func:`cached_textspan` runs TextSpan (:func:`~helpers.methods.textspan.textspan`) over the
  heads a few at a time through the same cache, for both text projections (the numerical span
  and the reference code's top-80 span); the progress bar counts heads.
* :class:`HeadCatalogue` reads each head's role and purity off its texts' tags
  (:func:`~helpers.methods.heads.head_roles`) and scores association and both entanglements
  (:func:`~helpers.methods.heads.interpretability_scores`); :func:`build_catalogue` makes one
  from a TextSpan result.

Everything here takes and returns data; which images and which pool is the caller's choice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..engine.decompose import Decomposer
from ..engine.labels import head_label, resolve_indices
from ..engine.pool import Pool
from .heads import (
    DEFAULT_IGNORE,
    HeadRole,
    InterpretabilityScores,
    head_roles,
    heads_for_property,
    interpretability_scores,
)
from .textspan import TextSpanResult, textspan

__all__ = [
    "HEAD_TERMS_VERSION",
    "CATALOGUE_VERSION",
    "SPANS",
    "HeadTerms",
    "head_terms",
    "cached_head_terms",
    "pool_digest",
    "cached_textspan",
    "HeadCatalogue",
    "build_catalogue",
]

HEAD_TERMS_VERSION = 1  # bump when the meaning of the stored head terms changes
CATALOGUE_VERSION = 1  # bump when the stored TextSpan fields change

SPANS: tuple[str, ...] = ("numerical", "paper")
"""TextSpan's two text projections (:func:`~helpers.methods.textspan.textspan`'s ``span``)."""


# ----------------------------------------------------------------------------------------------
# Head terms of the last layers
# ----------------------------------------------------------------------------------------------


@dataclass
class HeadTerms:
    """Direct terms of the heads of some layers, for ``N`` images.

    Attributes:
        heads: ``[N, Lk, H, d]`` each head's direct term (raw scale, as
            :class:`~helpers.methods.ablation.DirectTerms` holds them).
        norms: ``[N]`` the norm of each image's embedding (the model's ``encode_image``).
        share: ``[d]`` a head's share of the ``ln_post`` bias on the reference scale,
            ``const / ((2L + 1) H)`` (the reference code spreads the bias evenly over the
            ``2L + 1`` summands of the residual stream, a layer's share evenly over its heads).
        layers: the ``Lk`` layers (non-negative, in the order of ``heads``' second axis).
    """

    heads: Tensor
    norms: Tensor
    share: Tensor
    layers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.heads.ndim != 4:
            raise ValueError(f"heads must be [N, layers, heads, d], got shape {tuple(self.heads.shape)}")
        N, Lk, _, d = self.heads.shape
        if self.norms.shape != (N,):
            raise ValueError(f"norms must be [{N}], got shape {tuple(self.norms.shape)}")
        if self.share.shape != (d,):
            raise ValueError(f"share must be [{d}], got shape {tuple(self.share.shape)}")
        if len(self.layers) != Lk:
            raise ValueError(f"{len(self.layers)} layers named for {Lk} layers of terms")

    def __len__(self) -> int:
        return self.heads.shape[0]

    @property
    def n_heads(self) -> int:
        """Heads per layer."""
        return self.heads.shape[2]

    @property
    def labels(self) -> list[tuple[int, int]]:
        """``(layer, head)`` of each row of :meth:`stack`."""
        return [(layer, h) for layer in self.layers for h in range(self.n_heads)]

    @property
    def names(self) -> list[str]:
        """``"L7.H2"``-style names of the rows of :meth:`stack`."""
        return [head_label(layer, h) for layer, h in self.labels]

    def stack(self, scale: str = "raw") -> Tensor:
        """The terms as one stack ``[Lk * H, N, d]`` (rows ordered by layer, then head).

        ``scale="raw"``: as they are, a view of :attr:`heads` (no copy); ``"paper"``: on the
        reference code's cosine scale, ``(term + share) / norm`` (a new tensor), which equals
        ``stack_heads(terms, layers, scale="paper")`` of the full decomposition.
        """
        if scale == "raw":
            h = self.heads
        elif scale == "paper":
            h = (self.heads + self.share) / self.norms[:, None, None, None]
        else:
            raise ValueError(f"scale must be 'raw' or 'paper', got {scale!r}")
        N, Lk, H, d = h.shape
        return h.reshape(N, Lk * H, d).transpose(0, 1)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> "HeadTerms":
        return HeadTerms(self.heads.to(device=device, dtype=dtype), self.norms.to(device=device, dtype=dtype),
                         self.share.to(device=device, dtype=dtype), list(self.layers))


def _layers(dec: Any, layers: Any) -> list[int]:
    """Checked, non-negative layer indices in the given order (``None``: every layer)."""
    return resolve_indices(layers, dec.n_layers, "layer", sort=False)


def _check_tok(dec: Any) -> None:
    if dec.info.pooling != "tok":
        from ..engine.support import UnsupportedModelError

        raise UnsupportedModelError("head terms follow the class token; an attention-pooled tower (SigLIP) has "
                                    "none: use helpers.engine.decompose_map for its pooling heads")


def _share(dec: Any, const: Tensor) -> Tensor:
    return const / ((2 * dec.n_layers + 1) * dec.n_heads)


def head_terms(model: nn.Module, images: Tensor, layers: Iterable[int] | int, *,
               batch_size: int = 64) -> HeadTerms:
    """:class:`HeadTerms` of a preprocessed batch ``[B, 3, H, W]`` (decomposed in chunks of
    ``batch_size``; nothing is cached)."""
    dec = Decomposer(model)
    _check_tok(dec)
    chosen = _layers(dec, layers)
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty [B, 3, H, W] tensor, got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
    device = next(dec.visual.parameters()).device
    heads, norms, const = [], [], None
    with torch.no_grad():
        for x in images.split(batch_size):
            d = dec(x.to(device), heads=True)
            heads.append(d.heads[:, chosen])
            norms.append(d.embedding.norm(dim=-1))
            const = d.const
    return HeadTerms(torch.cat(heads), torch.cat(norms), _share(dec, const), chosen)


def cached_head_terms(model: nn.Module, dataset: Any, *, layers: Iterable[int] | int, dataset_id: str,
                      cache_dir: str | Path, batch_size: int = 64, progress: bool = True, model_name: str = "",
                      weights: str | None = None) -> tuple[HeadTerms, bool]:
    """:class:`HeadTerms` of every item of ``dataset``, streamed through the on-disk cache.

    ``dataset`` is indexable and yields preprocessed images ``[3, H, W]`` or tuples whose first
    element is one (a :class:`~helpers.data.datasets.ZeroShotTask`'s ``dataset``). The entry is
    keyed by the model's name and weights fingerprint (``weights``, when already computed),
    ``dataset_id`` (which names the images and their number), the layers and the dtype; only
    the chosen layers' head terms and the embedding norms are stored.

    Returns:
        ``(terms, computed)``: ``computed`` is False when every item came from the cache.
    """
    from torch.utils.data import DataLoader, Subset

    from ..engine.cache import stream_to_cache, weights_fingerprint

    n = len(dataset)
    if n == 0:
        raise ValueError("empty dataset")
    dec = Decomposer(model)
    _check_tok(dec)
    chosen = _layers(dec, layers)
    param = next(dec.visual.parameters())
    key = dict(what="head-terms", version=HEAD_TERMS_VERSION, model=model_name or type(model).__name__,
               weights=weights or weights_fingerprint(model), dataset=dataset_id, layers=chosen,
               dtype=str(param.dtype))
    computed = []

    def source(start: int):
        return DataLoader(Subset(dataset, range(start, n)), batch_size=batch_size, shuffle=False)

    def compute(batch: Any) -> dict[str, Tensor]:
        computed.append(True)
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        with torch.no_grad():
            d = dec(x.to(param.device), heads=True)
        return {"heads": d.heads[:, chosen], "norm": d.embedding.norm(dim=-1)}

    arrays = stream_to_cache(compute, source, n_items=n, key=key, cache_dir=cache_dir, progress=progress,
                             desc=f"head terms of {dataset_id}")
    const = dec.maps(param.dtype, param.device).const
    get = lambda name: torch.from_numpy(np.array(arrays[name])).to(param.device, param.dtype)  # noqa: E731
    return HeadTerms(get("heads"), get("norm"), _share(dec, const), chosen), bool(computed)


# ----------------------------------------------------------------------------------------------
# TextSpan over the heads, through the cache
# ----------------------------------------------------------------------------------------------


def pool_digest(pool: Pool) -> str:
    """A short hash of a pool's texts and tags (what a catalogue's roles depend on)."""
    h = hashlib.sha256()
    for t, p in zip(pool.texts, pool.properties):
        h.update(t.encode())
        h.update(b"\t")
        h.update(p.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


_FIELDS = ("indices", "directions", "variance", "criterion", "span_rank")


def cached_textspan(stack: Tensor, pool_emb: Tensor, n: int, *, key: dict[str, Any], cache_dir: str | Path,
                    spans: Sequence[str] = SPANS, heads_per_step: int = 4, progress: bool = True,
                    ) -> tuple[dict[str, TextSpanResult], bool]:
    """TextSpan of every head of ``stack`` ``[Hs, N, d]`` with ``n`` texts, for each of ``spans``,
    through the on-disk cache (the heads are the cached items, ``heads_per_step`` at a time).

    ``key`` must name what the stack and the pool are (model, weights fingerprint, images,
    layers, :func:`pool_digest`); ``n`` and the spans are added to it.

    Returns:
        ``({span: TextSpanResult}, computed)``: batched results ``[Hs, n]``, equal to
        ``textspan(stack, pool_emb, n, span=span)``; ``computed`` is False when every head came
        from the cache.
    """
    from ..engine.cache import slice_batches, stream_to_cache

    spans = list(spans)
    for sp in spans:
        if sp not in SPANS:
            raise ValueError(f"span must be one of {', '.join(map(repr, SPANS))}, got {sp!r}")
    if stack.ndim != 3:
        raise ValueError(f"stack must be [Hs, N, d], got shape {tuple(stack.shape)}")
    Hs = stack.shape[0]
    full_key = dict(key, what="textspan-catalogue", version=CATALOGUE_VERSION, n=int(n), spans=spans,
                    heads=Hs, images=int(stack.shape[1]))
    computed = []

    def compute(rows: tuple[int, int]) -> dict[str, Tensor]:
        computed.append(True)
        part = stack[rows[0]:rows[1]]
        out: dict[str, Tensor] = {}
        for sp in spans:
            r = textspan(part, pool_emb, n, span=sp)
            for f in _FIELDS:
                out[f"{f}.{sp}"] = getattr(r, f)
            out["mean"], out["total_variance"] = r.mean, r.total_variance
        return out

    arrays = stream_to_cache(compute, slice_batches(lambda a, b: (a, b), Hs, heads_per_step), n_items=Hs,
                             key=full_key, cache_dir=cache_dir, progress=progress, desc="TextSpan per head")
    get = lambda name: torch.from_numpy(np.array(arrays[name]))  # noqa: E731
    results = {sp: TextSpanResult(indices=get(f"indices.{sp}").long(), directions=get(f"directions.{sp}"),
                                  variance=get(f"variance.{sp}"), mean=get("mean"),
                                  total_variance=get("total_variance"), criterion=get(f"criterion.{sp}"),
                                  span_rank=get(f"span_rank.{sp}"))
               for sp in spans}
    return results, bool(computed)


# ----------------------------------------------------------------------------------------------
# The catalogue
# ----------------------------------------------------------------------------------------------


@dataclass
class HeadCatalogue:
    """Every head of the last layers: its TextSpan texts, role and purity, association and
    entanglement, for one model, one set of images and one tagged pool.

    Attributes:
        roles: one :class:`~helpers.methods.heads.HeadRole` per head (stack order), read off
            its first ``n_role`` texts.
        scores: association and both entanglements of the heads
            (:class:`~helpers.methods.heads.InterpretabilityScores`).
        result: the TextSpan result (``[Hs, n_fit]``; more texts than the role reads).
        texts: per head, all ``n_fit`` chosen texts; ``tags``: their property tags.
        span: the text projection used (``"numerical"`` or ``"paper"``).
        pool_name: the pool the texts come from.
    """

    roles: list[HeadRole]
    scores: InterpretabilityScores
    result: TextSpanResult
    texts: list[list[str]]
    tags: list[list[str]]
    span: str
    pool_name: str

    def __len__(self) -> int:
        return len(self.roles)

    @property
    def names(self) -> list[str]:
        return [r.label for r in self.roles]

    def index(self, name: str) -> int:
        """Stack index of the head called ``name`` (``"L7.H2"``)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no head {name!r} in the catalogue (heads: {', '.join(self.names)})") from None

    def properties(self) -> list[str]:
        """The properties that are some head's role, most heads first (ties: first seen)."""
        counts = {p: c for p, c in self.scores.heads_per_property.items() if c}
        return sorted(counts, key=lambda p: -counts[p])

    def heads_for(self, property: str, min_purity: float = 0.0) -> list[int]:
        """Stack indices of the heads whose role is ``property`` with at least ``min_purity``."""
        return heads_for_property(self.roles, property, min_purity)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per head: name, role, purity, variance explained, covered properties (within
        head) and other heads sharing its role (across heads), and its texts with their tags."""
        out = []
        for i, r in enumerate(self.roles):
            out.append({"head": r.label, "layer": r.layer, "index": i, "role": r.property, "purity": r.purity,
                        "variance": r.variance, "properties_covered": self.scores.properties_per_head[i],
                        "heads_sharing": self.scores.heads_sharing[i], "texts": self.texts[i], "tags": self.tags[i]})
        return out


def build_catalogue(result: TextSpanResult, pool: Pool, labels: Sequence[tuple[int, int]], *, n_role: int = 5,
                    span: str = "numerical", ignore: Iterable[str] = DEFAULT_IGNORE,
                    entanglement: str = "within_head") -> HeadCatalogue:
    """A :class:`HeadCatalogue` from a batched TextSpan result on ``pool``'s embeddings.

    Roles and purities are read off each head's first ``n_role`` texts (at most the number
    fitted); the scores use the pool's properties as the property set, so catalogues of
    different models on one pool compare.
    """
    if result.indices is None or not result.batched:
        raise ValueError("a batched TextSpan result with text indices is needed")
    n_role = min(int(n_role), result.n)
    ignore = tuple(ignore)
    roles = head_roles(result, pool, labels, n_role, ignore=ignore)
    scores = interpretability_scores(roles, ignore=ignore, properties=pool, entanglement=entanglement)
    idx = result.indices.tolist()
    return HeadCatalogue(roles=roles, scores=scores, result=result,
                         texts=[[pool.texts[j] for j in row] for row in idx],
                         tags=[[pool.properties[j] for j in row] for row in idx], span=span, pool_name=pool.name)
