"""Spatial decomposition: where in the image each text's similarity comes from.

The attention term of every layer splits exactly over heads and source tokens (see
:mod:`helpers.engine.decompose`). Scoring those per-token terms against a text embedding ``t`` and
summing over the chosen layers and heads gives one number per image patch::

    sim(image, t) = sum_patches map[patch] + cls + rest

* ``map`` -- the patches' contributions through the chosen attention heads (a heat map);
* ``cls`` -- what the chosen heads read from the class token itself (it has no location);
* ``rest`` -- everything else: the embedding term, the MLPs, the ``ln_post`` bias and the
  attention of the heads that were not chosen.

The identity is exact (up to floating-point rounding), and everything is linear in ``t``:
the map for ``a - b`` is the map for ``a`` minus the map for ``b``. That is what the paper's
segmentation uses (class text minus the mean over classes, ``subtract_mean=True``) and what
:func:`contrastive_map` computes in one pass.

The per-token scores are contracted with the texts inside the forward pass, so no
``[layers x tokens x heads x dim]`` tensor is ever formed; see :func:`heatmaps`.

Also here: the CLIP-InterpreT analyses (:func:`topic_segmentation`, :func:`contrastive_map`),
the joint head-and-token view of one head along a direction (:func:`head_direction_map`), and
:func:`upsample` (patch maps to image resolution, from :mod:`helpers.methods.maps`). Drawing the
maps is :mod:`helpers.course.plots`' job, measuring them against masks :mod:`helpers.methods.metrics`',
turning images into batches :mod:`helpers.engine.images`', and saying in words how they compare
:mod:`helpers.course.narrative`'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from ..engine.decompose import Decomposer, Decomposition
from ..engine.images import ImagesLike, model_batch
from ..engine.labels import Selection, resolve_indices, single_index
from ..engine.text import TextsLike, text_matrix
from .maps import threshold_map, upsample

__all__ = [
    "HeatmapResult",
    "heatmaps",
    "own_class_maps",
    "own_class_maps_by_layer",
    "head_direction_map",
    "topic_segmentation",
    "contrastive_map",
    "upsample",
]

# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------


@dataclass
class HeatmapResult:
    """Per-patch contributions to image-text similarities, and the parts without a location.

    For every image ``b`` and text ``m``::

        patch_maps[b, m].sum() + cls[b, m] + rest[b, m] == similarity[b, m]

    Attributes:
        patch_maps: ``[B, M, gh, gw]`` contributions of each patch through the chosen
            attention layers/heads.
        cls: ``[B, M]`` the chosen heads' attention to the class token itself.
        rest: ``[B, M]`` embedding term + MLPs + ``ln_post`` bias + attention of the layers/heads
            that were not chosen.
        similarity: ``[B, M]`` the image embedding (unit-normalised when ``normalized``) times
            each scored text.
        grid: ``(gh, gw)`` patch grid.
        layers, heads: the chosen (sorted, non-negative) indices.
        texts: ``[M, d']`` the text matrix actually scored (after mean subtraction, if any).
        normalized: whether the scores are on the unit-normalised embedding's scale.
    """

    patch_maps: Tensor
    cls: Tensor
    rest: Tensor
    similarity: Tensor
    grid: tuple[int, int]
    layers: list[int] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    texts: Tensor | None = field(default=None, repr=False)
    normalized: bool = True

    @property
    def n_images(self) -> int:
        return self.patch_maps.shape[0]

    @property
    def n_texts(self) -> int:
        return self.patch_maps.shape[1]

    def total(self) -> Tensor:
        """``patch_maps`` summed over the grid, plus ``cls`` and ``rest``: ``[B, M]``."""
        return self.patch_maps.sum((-2, -1)) + self.cls + self.rest

    def max_error(self) -> float:
        """Largest absolute gap between :meth:`total` and :attr:`similarity`."""
        return float((self.total() - self.similarity).abs().max())

    def upsampled(self, size: int | tuple[int, int]) -> Tensor:
        """The patch maps bilinearly upsampled to ``size``: ``[B, M, H, W]``."""
        return upsample(self.patch_maps, size)

    def masks(self, how: str | float = "mean") -> Tensor:
        """:func:`threshold_map` of every patch map (at grid resolution)."""
        return threshold_map(self.patch_maps, how)

    def __repr__(self) -> str:
        B, M, gh, gw = self.patch_maps.shape
        return (f"HeatmapResult(images={B}, texts={M}, grid={gh}x{gw}, layers={len(self.layers)}, "
                f"heads={len(self.heads)}, normalized={self.normalized}, dtype={self.patch_maps.dtype})")


# ----------------------------------------------------------------------------------------------
# Heat maps
# ----------------------------------------------------------------------------------------------


Strategy = Literal["auto", "forward", "lazy"]


def heatmaps(model: nn.Module, images: ImagesLike, texts_emb: TextsLike, *, layers: Selection = None,
             heads: Selection = None, normalize: bool = True, subtract_mean: bool = False,
             preprocess: Callable[[Image.Image], Tensor] | None = None,
             tokenizer: Callable[..., Tensor] | None = None, batch_size: int | None = None,
             strategy: Strategy = "auto") -> HeatmapResult:
    """Per-patch contributions of attention layers/heads to each image-text similarity.

    Args:
        model: an open_clip ViT CLIP (or its image tower). For an attention-pooled tower (SigLIP)
            the maps are the tokens' terms through the pooling attention: ``heads`` picks pooling
            heads, ``layers`` the backbone layers whose outputs at each token are mapped, and
            ``cls`` is 0 (no class token).
        images: a preprocessed batch ``[B, 3, H, W]``, or PIL images / arrays (one or a list),
            which go through ``preprocess`` (default: the model's own, :func:`model_preprocess`).
        texts_emb: text embeddings ``[M, d']`` (or one ``[d']``); strings are accepted together
            with ``tokenizer``. They are used as given (``helpers.engine.text.encode_texts`` returns
            unit vectors, so similarities are cosines when ``normalize``).
        layers, heads: which attention layers and, within each, which heads (``None``: all).
            Negative indices count from the end.
        normalize: score the unit-normalised image embedding (cosine scale) rather than the raw one.
        subtract_mean: score against each text minus the mean of the given texts (the paper's
            segmentation: class text minus the mean over classes); needs at least two texts.
        batch_size: process the images in chunks of this size (bounds memory for large batches).
        strategy: how the restricted selections are contracted. ``"forward"`` scores inside the
            forward pass keeping the layer/head axes that must be selected (about
            ``T x M x [L] x [H]`` numbers per image); ``"lazy"`` keeps each layer's attention
            values instead (``T x L x width`` numbers per image, independent of ``M``) and
            contracts the chosen heads afterwards. ``"auto"`` picks the smaller. With all
            layers and heads the forward pass always contracts to ``T x M`` directly.

    Returns:
        a :class:`HeatmapResult` whose maps, ``cls`` and ``rest`` add up to ``similarity``.
    """
    dec = Decomposer(model)  # joint-space maps are shared per image tower by the Decomposer
    pooled = _attention_pooled(dec)
    lidx = resolve_indices(layers, dec.n_layers, "layer")
    hidx = resolve_indices(heads, dec.maps().q.shape[0] if pooled else dec.n_heads, "head")
    param = next(dec.visual.parameters())
    dtype, device = param.dtype, param.device
    E = text_matrix(texts_emb, model=model, tokenizer=tokenizer, width=dec.info.embed_dim,
                    what="texts_emb").to(device=device, dtype=dtype)
    if subtract_mean:
        if E.shape[0] < 2:
            raise ValueError("subtract_mean needs at least two texts (with one, every text minus the mean is 0)")
        E = E - E.mean(0, keepdim=True)
    if strategy not in ("auto", "forward", "lazy"):
        raise ValueError(f"strategy must be 'auto', 'forward' or 'lazy', got {strategy!r}")
    x = model_batch(model, images, preprocess)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    step = x.shape[0] if batch_size is None else batch_size
    batch = _pooled_heatmaps_batch if pooled else _heatmaps_batch
    parts = [batch(dec, x[i:i + step], E, lidx, hidx, normalize, strategy)
             for i in range(0, x.shape[0], step)]
    maps, cls, rest, sim = (torch.cat(p, 0) for p in zip(*parts))
    return HeatmapResult(patch_maps=maps, cls=cls, rest=rest, similarity=sim, grid=tuple(dec.grid_size),
                         layers=lidx, heads=hidx, texts=E, normalized=normalize)


def _heatmaps_batch(dec: Decomposer, x: Tensor, E: Tensor, lidx: list[int], hidx: list[int],
                    normalize: bool, strategy: Strategy) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    L, H = dec.n_layers, dec.n_heads
    B, M = x.shape[0], E.shape[0]
    T = dec.info.n_tokens
    all_layers, all_heads = len(lidx) == L, len(hidx) == H
    keep: set[str] = set()
    if not all_layers:
        keep.add("layer")
    if not all_heads:
        keep.add("head")
    lazy = False
    if keep:
        forward_numbers = B * T * M * (L if "layer" in keep else 1) * (H if "head" in keep else 1)
        lazy_numbers = B * T * L * (dec.width + H)  # values and attention of every layer
        lazy = strategy == "lazy" or (strategy == "auto" and lazy_numbers < forward_numbers)

    d: Decomposition = dec(x, heads=not all_heads, tokens=lazy, texts=None if lazy else E,
                           text_keep=tuple(sorted(keep)))
    if normalize:
        d = d.normalized()
    if lazy:
        scores = d.token_scores(E, lidx, hidx)  # (image, token, text)
    else:
        scores = d.text_scores
        assert scores is not None
        if "layer" in keep:
            scores = scores.select(layer=lidx).sum("layer")
        if "head" in keep:
            scores = scores.select(head=hidx).sum("head")
    cls = scores.data[:, 0, :]
    maps = d.spatial_map(scores).permute(0, 3, 1, 2)  # [B, M, gh, gw]

    Et = E.T
    similarity = d.embedding @ Et
    outside = d.embed + d.mlp.sum(1) + d.const[None, :] * d.scale[:, None]
    if not all_heads:
        chosen = torch.zeros(L, H, dtype=torch.bool, device=x.device)
        chosen[torch.as_tensor(lidx)[:, None], torch.as_tensor(hidx)[None, :]] = True
        assert d.heads is not None
        outside = outside + d.heads[:, ~chosen].sum(1)
    elif not all_layers:
        others = [i for i in range(L) if i not in set(lidx)]
        outside = outside + d.attn[:, others].sum(1)
    rest = outside @ Et
    return maps.contiguous(), cls, rest, similarity


def _attention_pooled(dec: Any) -> bool:
    from ..engine.decompose_map import MapDecomposer

    return isinstance(dec, MapDecomposer)


def _pooled_heatmaps_batch(dec: Any, x: Tensor, E: Tensor, lidx: list[int], hidx: list[int],
                           normalize: bool, _strategy: Strategy) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`_heatmaps_batch` for an attention-pooled tower (SigLIP): the maps are the tokens'
    terms through the pooling attention (``heads``: pooling heads; ``layers``: each token's
    stream restricted to those backbone layers' attention and MLP outputs; all layers: the whole
    stream, embedding and value biases included). There is no class token (``cls`` is 0);
    ``rest`` is the embedding minus the chosen part, that part summed over the tokens first."""
    L = dec.n_layers
    all_layers = len(lidx) == L
    d = dec(x, heads=False, tokens=True)
    if normalize:
        d = d.normalized()
    layers = None if all_layers else lidx
    scores = d.token_scores(E, layers, hidx)  # (image, token, text)
    maps = d.spatial_map(scores).permute(0, 3, 1, 2)  # [B, M, gh, gw]
    m = d._maps
    hs = torch.as_tensor(hidx, device=x.device)
    if all_layers:
        chosen = d.pool_heads[:, hs].sum(1)
    else:
        idx = d._stream_index(lidx)
        c = d._streams[:, :, idx].sum(2)  # [B, T, D]: the chosen layers' outputs, summed first
        w = d._probs[:, hs] / d.sigma[:, None, :]
        chosen = torch.einsum("bhd,hdk,hke->be", torch.einsum("bht,btd->bhd", w, c), m.Gv[hs], m.VP[hs])
        chosen = chosen * d.scale[:, None]
    Et = E.T
    similarity = d.embedding @ Et
    rest = (d.embedding - chosen) @ Et
    cls = torch.zeros_like(similarity)
    return maps.contiguous(), cls, rest, similarity


def own_class_maps(model: nn.Module, images: ImagesLike, class_emb: TextsLike, labels: Sequence[int] | Tensor,
                   *, size: int | tuple[int, int] | None = None, layers: Selection = None,
                   heads: Selection = None, normalize: bool = True, **kwargs: Any) -> Tensor:
    """Each image's map for its own class text minus the mean over all classes (the paper's
    segmentation maps): ``[B, gh, gw]``, or ``[B, *size]`` bilinearly upsampled when ``size``.

    ``class_emb`` ``[C, d']`` are the class embeddings (e.g. a zero-shot classifier), ``labels``
    the class index of each image. Thresholding with :func:`helpers.methods.metrics.threshold_map` gives
    the predicted foreground.
    """
    res = heatmaps(model, images, class_emb, layers=layers, heads=heads, normalize=normalize,
                   subtract_mean=True, **kwargs)
    lab = torch.as_tensor(labels, device=res.patch_maps.device).reshape(-1).long()
    if lab.numel() != res.n_images:
        raise ValueError(f"got {lab.numel()} labels for {res.n_images} images")
    if bool(((lab < 0) | (lab >= res.n_texts)).any()):
        raise IndexError(f"labels must be class indices in 0..{res.n_texts - 1}")
    maps = res.patch_maps[torch.arange(res.n_images, device=lab.device), lab]
    return maps if size is None else upsample(maps, size)


def own_class_maps_by_layer(model: nn.Module, images: ImagesLike, class_emb: TextsLike,
                            labels: Sequence[int] | Tensor, *, normalize: bool = True,
                            batch_size: int = 16) -> Tensor:
    """:func:`own_class_maps` of each attention layer alone, ``[L, B, gh, gw]``: entry ``l`` is
    ``own_class_maps(model, images, class_emb, labels, layers=[l])``, all of them from one forward
    pass per ``batch_size`` images (the decomposition keeps each layer's attention values and
    contracts them, layer by layer, with one direction per image: its class text minus the mean
    class text, never with every class) instead of one pass per layer. On a class-token tower this
    is :func:`helpers.methods.segmentation.layer_maps` with the labels given; this one also maps an
    attention-pooled tower (SigLIP)."""
    dec = Decomposer(model)
    E = text_matrix(class_emb, model=model, width=dec.info.embed_dim, what="class_emb")
    if E.shape[0] < 2:
        raise ValueError("the maps subtract the mean over the classes: give at least two class embeddings")
    x = model_batch(model, images, None)
    param = next(dec.visual.parameters())
    E = E.to(device=param.device, dtype=param.dtype)
    E = E - E.mean(0, keepdim=True)
    lab = torch.as_tensor(labels).reshape(-1).long()
    if lab.numel() != x.shape[0]:
        raise ValueError(f"got {lab.numel()} labels for {x.shape[0]} images")
    if bool(((lab < 0) | (lab >= E.shape[0])).any()):
        raise IndexError(f"labels must be class indices in 0..{E.shape[0] - 1}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = []
    for i in range(0, x.shape[0], batch_size):
        d = dec(x[i:i + batch_size], heads=False, tokens=True)
        if normalize:
            d = d.normalized()
        U = E[lab[i:i + batch_size].to(param.device)]  # [B, d']: each image's own direction
        rows = torch.arange(U.shape[0], device=param.device)
        # [B, gh, gw, B] per layer -> each image against its own direction
        out.append(torch.stack([d.spatial_map(d.token_scores(U, [layer]))[rows, ..., rows]
                                for layer in range(dec.n_layers)]))
    return torch.cat(out, 1)


# ----------------------------------------------------------------------------------------------
# One head; contrasts
# ----------------------------------------------------------------------------------------------


def head_direction_map(model: nn.Module, images: ImagesLike, layer: int, head: int, direction: Any, *,
                       normalize: bool = True, **kwargs: Any) -> Tensor:
    """Which patches drive one head's output along ``direction``: ``[B, gh, gw]``.

    ``direction`` ``[d']`` is any vector of the joint space: a TextSpan direction of that head
    (``helpers.methods.textspan``), or a text embedding. The map plus the head's class-token part
    (``heatmaps(..., layers=[layer], heads=[head]).cls``) sums to the head's term times
    ``direction`` (joint decomposition over heads and tokens).
    """
    layer, head = single_index(layer, "layer"), single_index(head, "head")
    _no_head_maps(model, "head_direction_map")
    width = Decomposer(model).info.embed_dim
    if isinstance(direction, str) or (isinstance(direction, (list, tuple)) and direction
                                      and isinstance(direction[0], str)):
        v = text_matrix(direction, model=model, tokenizer=kwargs.pop("tokenizer", None), width=width,
                        what="direction")
    else:
        v = torch.as_tensor(direction) if not isinstance(direction, Tensor) else direction
        if v.ndim == 2 and v.shape[0] == 1:
            v = v[0]
        if v.ndim != 1:
            raise ValueError(f"direction must be one vector [{width}], got shape {tuple(v.shape)} "
                             "(use topic_segmentation for several)")
        v = text_matrix(v, width=width, what="direction")
    res = heatmaps(model, images, v, layers=[layer], heads=[head], normalize=normalize, **kwargs)
    return res.patch_maps[:, 0]


def topic_segmentation(model: nn.Module, images: ImagesLike, layer: int, head: int, texts_emb: TextsLike, *,
                       normalize: bool = True, subtract_mean: bool = False, **kwargs: Any) -> Tensor:
    """CLIP-InterpreT's topic segmentation: one head's map for each text, ``[B, M, gh, gw]``.

    Shows where in the image a head (e.g. a "colour" or "location" head found by TextSpan)
    finds each of several texts. ``subtract_mean`` scores each text minus the texts' mean,
    which removes what they have in common.
    """
    layer, head = single_index(layer, "layer"), single_index(head, "head")
    _no_head_maps(model, "topic_segmentation")
    res = heatmaps(model, images, texts_emb, layers=[layer], heads=[head], normalize=normalize,
                   subtract_mean=subtract_mean, **kwargs)
    return res.patch_maps


def _no_head_maps(model: nn.Module, what: str) -> None:
    from ..engine.models import UnsupportedModelError

    if _attention_pooled(Decomposer(model)):
        raise UnsupportedModelError(
            f"{what} maps one backbone head over the tokens it reads from the class token; an "
            "attention-pooled tower (SigLIP) has no class token: use heatmaps(..., heads=...) for "
            "the pooling heads' maps")


def contrastive_map(model: nn.Module, images: ImagesLike, text_a: TextsLike, text_b: TextsLike,
                    layers: Selection = None, heads: Selection = None, *, normalize: bool = True,
                    tokenizer: Callable[..., Tensor] | None = None, **kwargs: Any) -> Tensor:
    """Where the image looks more like ``text_a`` than ``text_b``: ``[B, gh, gw]``.

    Computed as one contraction against ``a - b``. The per-patch scores are linear in the text,
    so this is exactly ``map(a) - map(b)`` (up to rounding), at the cost of a single text.
    """
    width = Decomposer(model).info.embed_dim
    a = text_matrix(text_a, model=model, tokenizer=tokenizer, width=width, what="text_a")
    b = text_matrix(text_b, model=model, tokenizer=tokenizer, width=width, what="text_b")
    for t, name in ((a, "text_a"), (b, "text_b")):
        if t.shape[0] != 1:
            raise ValueError(f"{name} must be a single text (embedding), got {t.shape[0]}")
    diff = a.to(torch.promote_types(a.dtype, b.dtype)) - b.to(torch.promote_types(a.dtype, b.dtype))
    res = heatmaps(model, images, diff, layers=layers, heads=heads, normalize=normalize, **kwargs)
    return res.patch_maps[:, 0]


# ----------------------------------------------------------------------------------------------
# Resolution
# ----------------------------------------------------------------------------------------------
