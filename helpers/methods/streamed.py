"""Direct terms of a whole dataset kept on disk and read chunk by chunk.

ImageNet validation's 50,000 images do not fit in memory as stacked terms (notebook 2's
per-layer terms of ViT-L-14 take 11 GB, the heads of its last four layers another 10 GB).
:func:`stream_terms` decomposes the dataset once into the on-disk cache
(:mod:`helpers.engine.cache`; a second run reads it back) and returns :class:`StreamedTerms`,
which reads the terms back a chunk at a time (plain file reads of a bounded number of rows,
``chunk_bytes``), so that memory does not grow with the number of images:

* **mean ablation**: the means over the dataset (both scales, :meth:`DirectTerms.ablated`'s
  ``"raw"`` and ``"paper"``) are running sums of one pass (:meth:`StreamedTerms.means`); the
  accuracies of any number of ablations are then one more pass
  (:meth:`StreamedTerms.ablation_accuracies`, what
  :func:`~helpers.methods.ablation.ablation_accuracies` and
  :func:`~helpers.methods.ablation.mean_ablation_rows` call). ``ablated(...)`` and
  ``embeddings()`` return :class:`StreamedEmbeddings`, which
  :func:`~helpers.methods.ablation.accuracy` reads chunk by chunk.
* **TextSpan**: :func:`~helpers.methods.heads.stack_heads` of streamed terms is a
  :class:`StreamedStack`, whose :meth:`~StreamedStack.moments` (each head's mean and centred
  covariance, :class:`~helpers.methods.textspan.HeadMoments`) are all that
  :func:`~helpers.methods.textspan.textspan` and :func:`~helpers.methods.textspan.pca_basis`
  need; :func:`~helpers.methods.heads.reconstruction_accuracy` projects each chunk's head
  terms on the fitted bases.
* **what is shown**: :meth:`StreamedTerms.sample` / :meth:`StreamedStack.rows` read an evenly
  spaced sample into memory, for browsing images and searching neighbours.

Memory: one chunk of terms plus what the methods keep per head (a ``d x d`` covariance), and
a few numbers per image (the labels, each embedding's norm). The results equal the in-memory
computation's up to the rounding of the means (taken in float64 here).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .ablation import ABLATION_SCALES, DirectTerms, sample_index, term_arrays
from .textspan import HeadMoments, MomentSums

__all__ = ["DEFAULT_CHUNK_BYTES", "MEMORY_BUDGET_BYTES", "StreamedTerms", "StreamedEmbeddings", "StreamedStack",
           "TermMeans", "stream_terms", "terms_of", "terms_bytes", "should_stream", "share_right"]

DEFAULT_CHUNK_BYTES = 64 << 20
"""How many bytes of terms one chunk reads (at least one image)."""

MEMORY_BUDGET_BYTES = 4 << 30
"""Above this size the notebooks stream the terms instead of holding them (:func:`should_stream`)."""

_SPEC_KEYS = ("mlps", "attn", "heads", "embed", "cls_self", "scale", "pool_mlp")


def terms_bytes(n_images: int, n_layers: int, width: int, *, n_heads: int = 0, head_layers: int = 0,
                cls_self: bool = False, itemsize: int = 4) -> int:
    """Bytes of the terms of ``n_images`` held in memory: the embedding term, each layer's
    attention and MLP terms (and class-token terms), and the heads of ``head_layers`` layers."""
    per = (1 + 2 * n_layers + (n_layers if cls_self else 0) + n_heads * head_layers) * width * itemsize
    return int(n_images) * per


def should_stream(n_images: int, n_layers: int, width: int, *, budget: int = MEMORY_BUDGET_BYTES, **kw: Any) -> bool:
    """Whether the terms (:func:`terms_bytes`, same keywords) would take more than ``budget``
    bytes in memory: then the notebooks stream them from disk."""
    return terms_bytes(n_images, n_layers, width, **kw) > budget


class TermMeans:
    """The means over a dataset of every term, on both scales, and its embeddings' norms.

    Attributes:
        raw, paper: one-image :class:`~helpers.methods.ablation.DirectTerms` holding the means of
            the terms as they are, and of the terms on the reference code's cosine scale
            (:meth:`DirectTerms.normalized`; ``const`` 0); what :meth:`DirectTerms.ablated`
            takes as ``means``.
        norms: ``[N]`` each image's embedding norm.
    """

    def __init__(self, raw: DirectTerms, paper: DirectTerms, norms: Tensor) -> None:
        self.raw, self.paper, self.norms = raw, paper, norms

    def of(self, scale: str) -> DirectTerms:
        if scale not in ABLATION_SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(repr, ABLATION_SCALES))}, got {scale!r}")
        return self.raw if scale == "raw" else self.paper


class _Sums:
    """float64 running sums of a DirectTerms' fields over images."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}

    def add(self, t: DirectTerms) -> None:
        for name in ("embed", "attn", "mlp", "cls_self", "pool_mlp"):
            x = getattr(t, name)
            if x is None:
                continue
            s = x.to(torch.float64).sum(0)
            self.sums[name] = s if name not in self.sums else self.sums[name] + s

    def mean(self, n: int, const: Tensor, dtype: torch.dtype) -> DirectTerms:
        get = lambda name: None if name not in self.sums else (self.sums[name] / n).to(dtype).unsqueeze(0)  # noqa: E731
        return DirectTerms(embed=get("embed"), attn=get("attn"), mlp=get("mlp"), const=const,
                           cls_self=get("cls_self"), pool_mlp=get("pool_mlp"))


class StreamedTerms:
    """Direct terms of ``N`` images in the on-disk cache, read a chunk at a time.

    Made by :func:`stream_terms`. Like :class:`~helpers.methods.ablation.DirectTerms` it has
    ``n_layers``, ``len``, ``const``, :meth:`ablated` and :meth:`embeddings`, but these two
    return :class:`StreamedEmbeddings` (read when an accuracy is taken), not tensors.

    Attributes:
        arrays: the cache entry (:class:`~helpers.engine.cache.CachedArrays`).
        const: ``[d]`` the image-independent term.
        head_layers: the layers whose per-head terms are stored (``None``: none).
        device, dtype: where and how the chunks are read.
        chunk_size: images per chunk.
    """

    def __init__(self, arrays: Any, const: Tensor, *, head_layers: Sequence[int] | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        shapes = arrays.shapes
        for name in ("embed", "attn", "mlp"):
            if name not in shapes:
                raise ValueError(f"the cache entry has no {name!r} terms")
        if (head_layers is None) != ("heads" not in shapes):
            raise ValueError("head_layers must name the layers of the stored heads (and only when heads are stored)")
        self.arrays = arrays
        self.device = torch.device(device)
        self.dtype = dtype
        self.const = const.to(self.device, dtype)
        self.head_layers = None if head_layers is None else [int(i) for i in head_layers]
        self._n = int(arrays.n_items)
        self.n_layers = int(shapes["attn"][1])
        self.width = int(shapes["embed"][1])
        self.n_heads = int(shapes["heads"][2]) if "heads" in shapes else None
        if self.head_layers is not None and len(self.head_layers) != shapes["heads"][1]:
            raise ValueError(f"{len(self.head_layers)} head layers named for {shapes['heads'][1]} stored")
        row = sum(math.prod(s[1:]) * arrays.dtypes[k].itemsize for k, s in shapes.items())
        self.chunk_size = max(1, min(self._n, int(chunk_bytes) // max(1, row)))
        self._means: TermMeans | None = None
        self._moments: dict[str, HeadMoments] = {}

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"StreamedTerms({self._n} images, {self.n_layers} layers, chunks of {self.chunk_size}, {self.arrays.path})"

    @property
    def has_cls_self(self) -> bool:
        return "cls_self" in self.arrays

    @property
    def has_pool_mlp(self) -> bool:
        return "pool_mlp" in self.arrays

    # -- reading ---------------------------------------------------------------------------------

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(self.device, self.dtype)

    def _terms(self, get: Any) -> DirectTerms:
        opt = lambda name: get(name) if name in self.arrays else None  # noqa: E731
        return DirectTerms(embed=get("embed"), attn=get("attn"), mlp=get("mlp"), const=self.const,
                           cls_self=opt("cls_self"), pool_mlp=opt("pool_mlp"))

    def chunks(self, *, heads: bool = False) -> Iterator[tuple[int, DirectTerms, Tensor | None]]:
        """``(start, terms, heads)`` for every chunk in order: the chunk's terms as
        :class:`~helpers.methods.ablation.DirectTerms` (without per-head terms) and, with
        ``heads``, its stored head terms ``[n, len(head_layers), H, d]``."""
        if heads and self.head_layers is None:
            raise ValueError("no per-head terms were stored: stream the terms with head_layers")
        for i in range(0, self._n, self.chunk_size):
            j = min(self._n, i + self.chunk_size)
            t = self._terms(lambda name: self._tensor(self.arrays.read_rows(name, i, j)))
            yield i, t, (self._tensor(self.arrays.read_rows("heads", i, j)) if heads else None)

    def sample(self, n: int | None) -> tuple[DirectTerms, Tensor]:
        """At most ``n`` images evenly spaced over the set (:func:`~helpers.methods.ablation.sample_index`),
        read into memory as :class:`~helpers.methods.ablation.DirectTerms` (without per-head
        terms; :meth:`StreamedStack.rows` reads those), and their indices."""
        index = sample_index(self._n, n)
        return self._terms(lambda name: self._tensor(self.arrays.read_index(name, index))), index

    # -- means and mean ablation ------------------------------------------------------------------

    def means(self) -> TermMeans:
        """The dataset's means of every term on both scales and each embedding's norm (one
        pass over the data, taken once)."""
        if self._means is None:
            self._pass()
        assert self._means is not None
        return self._means

    def _pass(self, layers: Sequence[int] | None = None) -> None:
        """One pass: the means (when not yet taken) and, for ``layers``, the heads' moments."""
        want_means = self._means is None
        sums = {"raw": MomentSums(), "paper": MomentSums()} if layers is not None else None
        raw, paper = _Sums(), _Sums()
        norms = []
        for _, t, h in self.chunks(heads=sums is not None):
            if want_means:
                n_t = t.normalized()
                raw.add(t)
                paper.add(n_t)
                norms.append(t.embedding_norms().cpu())
            if sums is not None:
                assert h is not None and layers is not None
                for scale, acc in sums.items():
                    acc.add(self._head_stack(t, h, layers, scale))
        if want_means:
            n = self._n
            self._means = TermMeans(raw.mean(n, self.const, self.dtype),
                                    paper.mean(n, torch.zeros_like(self.const), self.dtype), torch.cat(norms))
        if sums is not None:
            key = _layers_key(layers)
            for scale, acc in sums.items():
                self._moments[f"{key}/{scale}"] = acc.result()

    def embedding_norms(self) -> Tensor:
        """``[N]`` the norm of each image's embedding (from the pass that takes the means)."""
        return self.means().norms

    def _check_spec(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - set(_SPEC_KEYS)
        if unknown:
            raise TypeError(f"unknown ablation keyword(s) {sorted(unknown)}; use {', '.join(_SPEC_KEYS)}")
        if spec.get("heads"):
            raise ValueError("streamed terms ablate layers, not single heads (mean-ablate heads on terms in memory)")
        out = {k: (list(v) if k in ("mlps", "attn", "cls_self") else v) for k, v in spec.items() if k != "heads"}
        self.means().raw.ablated(**{k: v for k, v in out.items() if k != "scale"})  # checks the layers now
        scale = out.get("scale", "raw")
        if scale not in ABLATION_SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(repr, ABLATION_SCALES))}, got {scale!r}")
        return out

    def ablate_chunk(self, t: DirectTerms, spec: Mapping[str, Any], normalized: DirectTerms | None = None) -> Tensor:
        """The embeddings ``[n, d]`` of one chunk ``t`` with ``spec`` (keywords of
        :meth:`DirectTerms.ablated`) mean-ablated with the dataset's means: what
        ``DirectTerms.ablated`` gives for these images when it holds the whole set.
        ``normalized``: ``t.normalized()`` when already made."""
        spec = dict(spec)
        scale = spec.pop("scale", "raw")
        means = self.means()
        if scale == "paper":
            return (t.normalized() if normalized is None else normalized).ablated(**spec, means=means.paper)
        return t.ablated(**spec, means=means.raw)

    def ablation_accuracies(self, specs: Sequence[Mapping[str, Any]], classifier: Tensor,
                            labels: Tensor | Sequence[int]) -> list[float]:
        """Zero-shot accuracy after each ablation of ``specs`` (keywords of
        :meth:`DirectTerms.ablated`), all in one pass over the data."""
        specs = [self._check_spec(s) for s in specs]
        lab = torch.as_tensor(labels).to(self.device)
        if lab.ndim != 1 or lab.shape[0] != self._n:
            raise ValueError(f"{self._n} embeddings but labels of shape {tuple(lab.shape)}")
        cls = classifier.to(self.device, self.dtype)
        right = torch.zeros(len(specs), dtype=torch.long)
        paper = any(s.get("scale") == "paper" for s in specs)
        for i, t, _ in self.chunks():
            y = lab[i:i + len(t)]
            nt = t.normalized() if paper else None
            for k, spec in enumerate(specs):
                emb = self.ablate_chunk(t, spec, nt)
                right[k] += int(((torch.nn.functional.normalize(emb, dim=-1) @ cls.T).argmax(-1) == y).sum())
        return [share_right(int(r), self._n) for r in right]

    def ablated(self, **spec: Any) -> "StreamedEmbeddings":
        """The embeddings with the named terms mean-ablated (keywords of
        :meth:`DirectTerms.ablated`; ``heads`` and ``means`` are not taken), as
        :class:`StreamedEmbeddings`."""
        if "means" in spec:
            raise TypeError("streamed terms take their own means; means= is for terms in memory")
        return StreamedEmbeddings(self, self._check_spec(spec))

    def embeddings(self) -> "StreamedEmbeddings":
        """The full embeddings, as :class:`StreamedEmbeddings`."""
        return StreamedEmbeddings(self, {})

    # -- heads ---------------------------------------------------------------------------------------

    def _positions(self, layers: Sequence[int]) -> list[int]:
        if self.head_layers is None:
            raise ValueError("no per-head terms were stored: stream the terms with head_layers")
        missing = [li for li in layers if li not in self.head_layers]
        if missing:
            raise ValueError(f"the heads of layers {missing} were not stored (stored: {self.head_layers})")
        return [self.head_layers.index(li) for li in layers]

    def _head_stack(self, t: DirectTerms, h: Tensor, layers: Sequence[int], scale: str) -> Tensor:
        """A chunk's heads of ``layers`` as a stack ``[len(layers) * H, n, d]`` on ``scale``."""
        x = h[:, self._positions(layers)]
        if scale == "paper":
            share, nrm = t.reference_scale()
            x = (x + share / x.shape[2]) / nrm[:, None, None]
        n, Lk, H, d = x.shape
        return x.permute(1, 2, 0, 3).reshape(Lk * H, n, d)

    def head_moments(self, layers: Sequence[int], scale: str = "raw") -> HeadMoments:
        """The moments of the heads of ``layers`` on ``scale`` (both scales are taken in one
        pass, with the means when those are not taken yet)."""
        layers = [int(li) for li in layers]
        self._positions(layers)
        if scale not in ABLATION_SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(repr, ABLATION_SCALES))}, got {scale!r}")
        key = f"{_layers_key(layers)}/{scale}"
        if key not in self._moments:
            self._pass(layers)
        return self._moments[key]

    def head_stack(self, layers: Sequence[int], scale: str = "raw") -> "StreamedStack":
        """The heads of ``layers`` as a :class:`StreamedStack` (:func:`~helpers.methods.heads.stack_heads`)."""
        layers = [int(li) for li in layers]
        self._positions(layers)
        if scale not in ABLATION_SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(repr, ABLATION_SCALES))}, got {scale!r}")
        return StreamedStack(self, layers, scale)


def share_right(right: int, n: int) -> float:
    """``right / n`` rounded as :func:`~helpers.methods.ablation.accuracy` rounds it (a float32
    mean of 0s and 1s), so that a streamed accuracy equals the one in memory to the last digit."""
    return float(torch.tensor(right, dtype=torch.float32) / n)


def _layers_key(layers: Sequence[int]) -> str:
    return ",".join(str(int(li)) for li in layers)


class StreamedEmbeddings:
    """Embeddings of streamed terms, ablated as ``spec`` says, read when used: by
    :func:`~helpers.methods.ablation.accuracy` (one pass), or whole with :meth:`tensor`."""

    def __init__(self, terms: StreamedTerms, spec: Mapping[str, Any]) -> None:
        self.terms, self.spec = terms, dict(spec)

    def __len__(self) -> int:
        return len(self.terms)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.terms), self.terms.width

    def accuracy(self, classifier: Tensor, labels: Tensor | Sequence[int]) -> float:
        """Top-1 zero-shot accuracy (one pass over the data)."""
        return self.terms.ablation_accuracies([self.spec], classifier, labels)[0]

    def chunks(self) -> Iterator[Tensor]:
        """The embeddings ``[n, d]`` chunk by chunk."""
        for _, t, _ in self.terms.chunks():
            yield self.terms.ablate_chunk(t, self.spec)

    def tensor(self) -> Tensor:
        """All the embeddings ``[N, d]`` in memory."""
        return torch.cat(list(self.chunks()))


class StreamedStack:
    """The heads of some layers of :class:`StreamedTerms` as a stack ``[Hs, N, d]`` that stays
    on disk (:func:`~helpers.methods.heads.stack_heads` of streamed terms).

    :meth:`moments` is what :func:`~helpers.methods.textspan.textspan` and
    :func:`~helpers.methods.textspan.pca_basis` take from it; :meth:`of_chunk` a chunk's stack;
    :meth:`rows` reads some images' stack into memory.
    """

    def __init__(self, terms: StreamedTerms, layers: Sequence[int], scale: str) -> None:
        self.terms, self.layers, self.scale = terms, list(layers), scale
        assert terms.n_heads is not None
        self.labels = [(li, h) for li in self.layers for h in range(terms.n_heads)]

    ndim = 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.labels), len(self.terms), self.terms.width

    @property
    def dtype(self) -> torch.dtype:
        return self.terms.dtype

    @property
    def device(self) -> torch.device:
        return self.terms.device

    def __repr__(self) -> str:
        return f"StreamedStack({self.shape}, layers {self.layers}, scale {self.scale!r})"

    def moments(self) -> HeadMoments:
        """Each head's mean and centred covariance over the images (one pass, taken once)."""
        return self.terms.head_moments(self.layers, self.scale)

    def of_chunk(self, t: DirectTerms, heads: Tensor) -> Tensor:
        """The stack ``[Hs, n, d]`` of one chunk of :meth:`StreamedTerms.chunks`."""
        return self.terms._head_stack(t, heads, self.layers, self.scale)

    def rows(self, index: Tensor | Sequence[int]) -> Tensor:
        """The stack of the images at ``index`` ``[Hs, len(index), d]``, read into memory."""
        idx = torch.as_tensor(index, dtype=torch.long)
        tt = self.terms
        get = lambda name: tt._tensor(tt.arrays.read_index(name, idx))  # noqa: E731
        return self.of_chunk(tt._terms(get), get("heads"))


def stream_terms(model: nn.Module, dataset: Any, *, dataset_id: str, cache_dir: str | Path, preprocess_id: str = "",
                 head_layers: Sequence[int] | None = None, cls_self: bool = False, batch_size: int = 64,
                 device: str | torch.device | None = None, progress: bool = True, model_name: str = "",
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> StreamedTerms:
    """Direct terms of every item of ``dataset``, decomposed once into the on-disk cache (or
    read from it) and left there: :class:`StreamedTerms`.

    ``dataset``, ``dataset_id``, ``preprocess_id`` and the cache are those of
    :func:`~helpers.methods.ablation.cached_terms`; ``head_layers`` keeps the per-head terms of
    those layers (``None``: no per-head terms), ``cls_self`` each layer's class-token-to-itself
    term. ``chunk_bytes`` bounds what one chunk reads back.
    """
    arrays, const, dev, dtype = term_arrays(model, dataset, dataset_id=dataset_id, cache_dir=cache_dir,
                                            preprocess_id=preprocess_id, heads=head_layers is not None,
                                            head_layers=head_layers, cls_self=cls_self, batch_size=batch_size,
                                            device=device, progress=progress, model_name=model_name)
    chosen = None
    if head_layers is not None:
        chosen = arrays.key["head_layers"]
    return StreamedTerms(arrays, const, head_layers=chosen, device=dev, dtype=dtype, chunk_bytes=chunk_bytes)


def terms_of(model: nn.Module, dataset: Any, *, stream: bool | None = None, dataset_id: str = "",
             cache_dir: str | Path | None = None, preprocess_id: str = "", head_layers: Sequence[int] | None = None,
             cls_self: bool = False, batch_size: int = 64, progress: bool = True, model_name: str = "",
             chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> DirectTerms | StreamedTerms:
    """The direct terms of every item of ``dataset``, held in memory or streamed from disk.

    ``stream=False``: :func:`~helpers.methods.ablation.collect_terms` (per-head terms of every
    layer when ``head_layers`` is given); ``True``: :func:`stream_terms` (per-head terms of
    ``head_layers`` only) into ``cache_dir`` (default: the course cache's ``features`` folder),
    keyed by ``dataset_id`` (which must name the images); ``None``: streamed when the terms held
    in memory would take more than :data:`MEMORY_BUDGET_BYTES` (:func:`should_stream`).
    """
    from torch.utils.data import DataLoader

    from ..engine.models import model_info
    from .ablation import collect_terms

    if stream is None:
        info = model_info(model)
        stream = should_stream(len(dataset), info.n_layers, info.embed_dim, cls_self=cls_self,
                               n_heads=info.n_heads if head_layers is not None else 0,
                               head_layers=info.n_layers if head_layers is not None else 0)
    if not stream:
        loader = DataLoader(dataset, batch_size=batch_size)
        return collect_terms(model, loader, heads=head_layers is not None, cls_self=cls_self, progress=progress,
                             total=len(dataset))
    if not dataset_id:
        raise ValueError("streamed terms are cached on disk under the dataset's name: pass dataset_id")
    if cache_dir is None:
        from ..engine.download import cache_root

        cache_dir = cache_root() / "features"
    return stream_terms(model, dataset, dataset_id=dataset_id, cache_dir=cache_dir, preprocess_id=preprocess_id,
                        head_layers=head_layers, cls_self=cls_self, batch_size=batch_size, progress=progress,
                        model_name=model_name, chunk_bytes=chunk_bytes)
