"""Spatial decomposition: where in the image each text's similarity comes from.

The attention term of every layer splits exactly over heads and source tokens (see
:mod:`helpers.decompose`). Scoring those per-token terms against a text embedding ``t`` and
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

Also here: plotting helpers that need no matplotlib (:func:`overlay`, :func:`heatmap_figure`),
the CLIP-InterpreT analyses (:func:`topic_segmentation`, :func:`contrastive_map`), the joint
head-and-token view of one head along a direction (:func:`head_direction_map`), and the
segmentation metrics (:func:`threshold_map`, :func:`iou`, :func:`pixel_accuracy`,
:func:`average_precision`).
"""

from __future__ import annotations

from collections.abc import Sequence as _Seq
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .decompose import Decomposer, Decomposition, check_model_supported
from .images import to_batch, to_rgb

__all__ = [
    "HeatmapResult",
    "heatmaps",
    "own_class_maps",
    "head_direction_map",
    "topic_segmentation",
    "contrastive_map",
    "model_preprocess",
    "model_view",
    "upsample",
    "colormap",
    "overlay",
    "heatmap_figure",
    "maps_figure",
    "threshold_map",
    "iou",
    "pixel_accuracy",
    "average_precision",
]

Selection = int | Sequence[int] | Tensor | None
ImagesLike = Any  # Tensor [B, 3, H, W], a PIL image / array, or a sequence of them
TextsLike = Any  # Tensor [M, d'] / [d'], or (with a tokenizer) strings

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
# Input checks
# ----------------------------------------------------------------------------------------------


def _resolve(which: Selection, n: int, what: str) -> list[int]:
    """Indices into ``n`` things (negative ones count from the end): sorted, unique."""
    if which is None:
        return list(range(n))
    if isinstance(which, Tensor):
        which = which.reshape(-1).tolist()
    elif isinstance(which, (int, np.integer)) and not isinstance(which, bool):
        which = [int(which)]
    elif isinstance(which, slice):
        which = list(range(n))[which]
    if isinstance(which, (str, bytes)) or not isinstance(which, (_Seq, range, np.ndarray)):
        raise TypeError(f"{what}s must be an int, a sequence of ints or None, got {type(which).__name__}")
    items = list(which)
    if not items:
        raise ValueError(f"empty {what} selection")
    out = []
    for i in items:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"{what} indices must be ints, got {i!r}")
        if not -n <= i < n:
            raise IndexError(f"{what} index {int(i)} out of range: the model has {n} {what}s, "
                             f"valid indices are 0..{n - 1} (or -{n}..-1 from the end)")
        out.append(int(i) % n)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate {what} indices {items} (each would be counted twice)")
    return sorted(out)


def _visual(model: nn.Module) -> nn.Module:
    return check_model_supported(model)


def _text_matrix(model: nn.Module, texts: TextsLike, width: int, tokenizer: Callable[..., Tensor] | None,
                 what: str = "texts_emb") -> Tensor:
    """Text embeddings ``[M, width]`` from a tensor/array, or strings encoded with ``tokenizer``."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, (list, tuple)):
        if len(texts) == 0:
            raise ValueError(f"{what} is empty: give at least one text (embedding)")
        if all(isinstance(t, str) for t in texts):
            bad = [t for t in texts if not t.strip()]
            if bad:
                raise ValueError(f"{what} contains empty text(s) {bad[:3]!r}: every text needs some words")
            if tokenizer is None:
                raise ValueError(f"{what} are strings: pass tokenizer=... to embed them, or embed them "
                                 "first with helpers.text.encode_texts")
            if not hasattr(model, "encode_text"):
                raise TypeError(f"{what} are strings but the model has no text tower: pass embeddings")
            from .text import encode_texts

            return encode_texts(model, tokenizer, list(texts))
        if any(isinstance(t, str) for t in texts):
            raise TypeError(f"{what} mixes strings and embeddings")
        if all(isinstance(t, Tensor) for t in texts):
            texts = torch.stack([t.reshape(-1) for t in texts])
    if not isinstance(texts, Tensor):
        texts = torch.as_tensor(np.asarray(texts))
    if texts.ndim == 1:
        texts = texts[None]
    if texts.ndim != 2:
        raise ValueError(f"{what} must be [M, {width}] (or one [{width}] vector), got shape {tuple(texts.shape)}")
    if texts.shape[0] == 0:
        raise ValueError(f"{what} is empty: give at least one text embedding")
    if texts.shape[1] != width:
        raise ValueError(f"{what} have dimension {texts.shape[1]}, but the model's joint image-text space "
                         f"has dimension {width} (embed the texts with the same model)")
    if not torch.is_floating_point(texts):
        raise TypeError(f"{what} must be floating point, got {texts.dtype}")
    if not bool(torch.isfinite(texts).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    return texts


def model_preprocess(model: nn.Module) -> Callable[[Image.Image], Tensor]:
    """The model's evaluation preprocessing (resize the shorter side, centre crop, normalise).

    Built from the image tower's ``preprocess_cfg`` (open_clip's defaults when it has none),
    as ``open_clip.create_model_and_transforms`` would return it.
    """
    import open_clip

    visual = _visual(model)
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = tuple(visual.image_size)
    return open_clip.image_transform(
        size if size[0] != size[1] else size[0], is_train=False,
        mean=cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), std=cfg.get("std", open_clip.OPENAI_DATASET_STD),
        resize_mode=cfg.get("resize_mode", "shortest"), interpolation=cfg.get("interpolation", "bicubic"),
        fill_color=cfg.get("fill_color", 0))


def model_view(model: nn.Module | None, image: Any,
               preprocess: Callable[[Image.Image], Tensor] | None = None) -> Image.Image:
    """The part of ``image`` the model sees, as a PIL image (resized and centre-cropped).

    Use it as the background of :func:`overlay` / :func:`heatmap_figure` for non-square
    images, so the map lines up with the pixels it describes. Applies the geometric steps of
    ``preprocess`` (default :func:`model_preprocess`; ``model`` may be ``None`` when
    ``preprocess`` is given) up to its tensor conversion.
    """
    if preprocess is None:
        if model is None:
            raise ValueError("give a model or its preprocess")
        preprocess = model_preprocess(model)
    img = to_rgb(image)
    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        raise TypeError("preprocess is not a torchvision Compose; crop the image yourself")
    for step in steps:
        if "ToTensor" in type(step).__name__:
            break
        img = step(img)
    return to_rgb(img)


def _image_batch(model: nn.Module, visual: nn.Module, images: ImagesLike,
                 preprocess: Callable[[Image.Image], Tensor] | None) -> Tensor:
    device = visual.proj.device
    size = tuple(visual.image_size)
    if isinstance(images, Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensors must be [B, 3, H, W] (preprocessed), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError("empty batch: no images")
        if tuple(images.shape[-2:]) != size:
            raise ValueError(f"images are {tuple(images.shape[-2:])} but the model expects {size}: run them "
                             "through the model's preprocess (helpers.spatial.model_preprocess(model)), or pass "
                             "PIL images, which are resized and centre-cropped for you")
        if not torch.is_floating_point(images):
            raise TypeError(f"image tensors must be floating point (preprocessed), got {images.dtype}")
        return images.to(device)
    if isinstance(images, (list, tuple)) and len(images) == 0:
        raise ValueError("empty list of images")
    return to_batch(images, preprocess or model_preprocess(model), device)


def _decomposer(model: nn.Module) -> Decomposer:
    return Decomposer(model)  # joint-space maps are shared per image tower by the Decomposer


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
        model: an open_clip ViT CLIP (or its image tower).
        images: a preprocessed batch ``[B, 3, H, W]``, or PIL images / arrays (one or a list),
            which go through ``preprocess`` (default: the model's own, :func:`model_preprocess`).
        texts_emb: text embeddings ``[M, d']`` (or one ``[d']``); strings are accepted together
            with ``tokenizer``. They are used as given (``helpers.text.encode_texts`` returns
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
    visual = _visual(model)
    dec = _decomposer(model)
    L, H = dec.n_layers, dec.n_heads
    lidx = _resolve(layers, L, "layer")
    hidx = _resolve(heads, H, "head")
    dtype, device = visual.proj.dtype, visual.proj.device
    E = _text_matrix(model, texts_emb, visual.proj.shape[1], tokenizer).to(device=device, dtype=dtype)
    if subtract_mean:
        if E.shape[0] < 2:
            raise ValueError("subtract_mean needs at least two texts (with one, every text minus the mean is 0)")
        E = E - E.mean(0, keepdim=True)
    if strategy not in ("auto", "forward", "lazy"):
        raise ValueError(f"strategy must be 'auto', 'forward' or 'lazy', got {strategy!r}")
    x = _image_batch(model, visual, images, preprocess)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    step = x.shape[0] if batch_size is None else batch_size
    parts = [_heatmaps_batch(dec, x[i:i + step], E, lidx, hidx, normalize, strategy)
             for i in range(0, x.shape[0], step)]
    maps, cls, rest, sim = (torch.cat(p, 0) for p in zip(*parts))
    return HeatmapResult(patch_maps=maps, cls=cls, rest=rest, similarity=sim, grid=tuple(dec.grid_size),
                         layers=lidx, heads=hidx, texts=E, normalized=normalize)


def _heatmaps_batch(dec: Decomposer, x: Tensor, E: Tensor, lidx: list[int], hidx: list[int],
                    normalize: bool, strategy: Strategy) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    L, H = dec.n_layers, dec.n_heads
    B, M = x.shape[0], E.shape[0]
    T = 1 + dec.grid_size[0] * dec.grid_size[1]
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


def own_class_maps(model: nn.Module, images: ImagesLike, class_emb: TextsLike, labels: Sequence[int] | Tensor,
                   *, size: int | tuple[int, int] | None = None, layers: Selection = None,
                   heads: Selection = None, normalize: bool = True, **kwargs: Any) -> Tensor:
    """Each image's map for its own class text minus the mean over all classes (the paper's
    segmentation maps): ``[B, gh, gw]``, or ``[B, *size]`` bilinearly upsampled when ``size``.

    ``class_emb`` ``[C, d']`` are the class embeddings (e.g. a zero-shot classifier), ``labels``
    the class index of each image. Thresholding with :func:`threshold_map` gives the predicted
    foreground.
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


# ----------------------------------------------------------------------------------------------
# One head; contrasts
# ----------------------------------------------------------------------------------------------


def _single_index(i: Any, what: str) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{what} must be a single int index, got {i!r}")
    return int(i)


def head_direction_map(model: nn.Module, images: ImagesLike, layer: int, head: int, direction: Any, *,
                       normalize: bool = True, **kwargs: Any) -> Tensor:
    """Which patches drive one head's output along ``direction``: ``[B, gh, gw]``.

    ``direction`` ``[d']`` is any vector of the joint space: a TextSpan direction of that head
    (``helpers.textspan``), or a text embedding. The map plus the head's class-token part
    (``heatmaps(..., layers=[layer], heads=[head]).cls``) sums to the head's term times
    ``direction`` (joint decomposition over heads and tokens).
    """
    layer, head = _single_index(layer, "layer"), _single_index(head, "head")
    visual = _visual(model)
    width = visual.proj.shape[1]
    if isinstance(direction, str) or (isinstance(direction, (list, tuple)) and direction
                                      and isinstance(direction[0], str)):
        v = _text_matrix(model, direction, width, kwargs.pop("tokenizer", None), "direction")
    else:
        v = torch.as_tensor(direction) if not isinstance(direction, Tensor) else direction
        if v.ndim == 2 and v.shape[0] == 1:
            v = v[0]
        if v.ndim != 1:
            raise ValueError(f"direction must be one vector [{width}], got shape {tuple(v.shape)} "
                             "(use topic_segmentation for several)")
        v = _text_matrix(model, v, width, None, "direction")
    res = heatmaps(model, images, v, layers=[layer], heads=[head], normalize=normalize, **kwargs)
    return res.patch_maps[:, 0]


def topic_segmentation(model: nn.Module, images: ImagesLike, layer: int, head: int, texts_emb: TextsLike, *,
                       normalize: bool = True, subtract_mean: bool = False, **kwargs: Any) -> Tensor:
    """CLIP-InterpreT's topic segmentation: one head's map for each text, ``[B, M, gh, gw]``.

    Shows where in the image a head (e.g. a "colour" or "location" head found by TextSpan)
    finds each of several texts. ``subtract_mean`` scores each text minus the texts' mean,
    which removes what they have in common.
    """
    layer, head = _single_index(layer, "layer"), _single_index(head, "head")
    res = heatmaps(model, images, texts_emb, layers=[layer], heads=[head], normalize=normalize,
                   subtract_mean=subtract_mean, **kwargs)
    return res.patch_maps


def contrastive_map(model: nn.Module, images: ImagesLike, text_a: TextsLike, text_b: TextsLike,
                    layers: Selection = None, heads: Selection = None, *, normalize: bool = True,
                    tokenizer: Callable[..., Tensor] | None = None, **kwargs: Any) -> Tensor:
    """Where the image looks more like ``text_a`` than ``text_b``: ``[B, gh, gw]``.

    Computed as one contraction against ``a - b``. The per-patch scores are linear in the text,
    so this is exactly ``map(a) - map(b)`` (up to rounding), at the cost of a single text.
    """
    visual = _visual(model)
    width = visual.proj.shape[1]
    a = _text_matrix(model, text_a, width, tokenizer, "text_a")
    b = _text_matrix(model, text_b, width, tokenizer, "text_b")
    for t, name in ((a, "text_a"), (b, "text_b")):
        if t.shape[0] != 1:
            raise ValueError(f"{name} must be a single text (embedding), got {t.shape[0]}")
    diff = a.to(torch.promote_types(a.dtype, b.dtype)) - b.to(torch.promote_types(a.dtype, b.dtype))
    res = heatmaps(model, images, diff, layers=layers, heads=heads, normalize=normalize, **kwargs)
    return res.patch_maps[:, 0]


# ----------------------------------------------------------------------------------------------
# Display
# ----------------------------------------------------------------------------------------------


def upsample(maps: Tensor | np.ndarray, size: int | tuple[int, int]) -> Tensor:
    """Bilinear upsampling of ``[..., gh, gw]`` maps to ``[..., H, W]`` (any leading axes).

    ``size`` is ``H`` (square) or ``(H, W)``. Returns a tensor (floating point).
    """
    t = maps if isinstance(maps, Tensor) else torch.as_tensor(np.asarray(maps))
    if t.ndim < 2:
        raise ValueError(f"maps must have at least two axes [..., gh, gw], got shape {tuple(t.shape)}")
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not torch.is_floating_point(t):
        t = t.float()
    lead = t.shape[:-2]
    flat = t.reshape(-1, 1, *t.shape[-2:])
    if flat.shape[0] == 0:
        return t.new_zeros(*lead, *size)
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


_COLORMAPS: dict[str, list[tuple[float, tuple[int, int, int]]]] = {
    "viridis": [(0.0, (68, 1, 84)), (0.125, (72, 40, 120)), (0.25, (62, 74, 137)), (0.375, (49, 104, 142)),
                (0.5, (38, 130, 142)), (0.625, (31, 158, 137)), (0.75, (53, 183, 121)),
                (0.875, (109, 205, 89)), (1.0, (253, 231, 37))],
    "jet": [(0.0, (0, 0, 128)), (0.125, (0, 0, 255)), (0.375, (0, 255, 255)), (0.625, (255, 255, 0)),
            (0.875, (255, 0, 0)), (1.0, (128, 0, 0))],
    "coolwarm": [(0.0, (59, 76, 192)), (0.25, (141, 176, 254)), (0.5, (221, 221, 221)),
                 (0.75, (244, 154, 123)), (1.0, (180, 4, 38))],
    "gray": [(0.0, (0, 0, 0)), (1.0, (255, 255, 255))],
}


def colormap(values: Any, name: str = "jet") -> np.ndarray:
    """Map values in ``[0, 1]`` (clipped) to RGB ``uint8`` colours ``[..., 3]``.

    ``name``: ``"jet"``, ``"viridis"``, ``"coolwarm"`` (diverging: 0.5 is grey) or ``"gray"``,
    each a piecewise-linear table.
    """
    if name not in _COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; choose from {sorted(_COLORMAPS)}")
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, 1.0)
    stops = np.array([s for s, _ in _COLORMAPS[name]])
    colours = np.array([c for _, c in _COLORMAPS[name]], dtype=np.float64)
    out = np.stack([np.interp(v, stops, colours[:, k]) for k in range(3)], -1)
    return np.round(out).astype(np.uint8)


def _as_2d(m: Any) -> np.ndarray:
    a = m.detach().cpu().double().numpy() if isinstance(m, Tensor) else np.asarray(m, dtype=np.float64)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ValueError(f"expected one map [gh, gw], got shape {np.shape(m)}")
    return a


def _scale(a: np.ndarray, vmin: float | None, vmax: float | None, symmetric: bool) -> np.ndarray:
    if symmetric:
        lim = float(np.abs(a).max()) if vmax is None else float(vmax)
        lo, hi = -lim, lim
    else:
        lo = float(a.min()) if vmin is None else float(vmin)
        hi = float(a.max()) if vmax is None else float(vmax)
    if hi <= lo:
        return np.full_like(a, 0.5)
    return (a - lo) / (hi - lo)


def overlay(image: Any, map: Any, alpha: float = 0.5, *, cmap: str = "jet", vmin: float | None = None,
            vmax: float | None = None, symmetric: bool = False) -> Image.Image:
    """``image`` with ``map`` (``[gh, gw]``, upsampled bilinearly to the image) blended on top.

    The map is scaled to ``[vmin, vmax]`` (its own range by default; ``symmetric`` centres the
    range on 0, for signed maps with ``cmap="coolwarm"``). Returns an RGB image of the input
    size. For non-square photos pass :func:`model_view` of the image so the map lines up.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = to_rgb(image)
    a = _as_2d(map)
    up = upsample(torch.from_numpy(a), (img.height, img.width)).numpy()
    colour = colormap(_scale(up, vmin, vmax, symmetric), cmap).astype(np.float64)
    base = np.asarray(img, dtype=np.float64)
    out = (1.0 - alpha) * base + alpha * colour
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")


def heatmap_figure(image: Any, map: Any, title: str | None = None, *, opacity: float = 0.5,
                   colorscale: str = "Jet", symmetric: bool = False) -> Any:
    """A plotly figure: ``image`` with the patch ``map`` drawn semi-transparently on top.

    Each heat-map cell covers its patch of the image; hovering shows the patch's value.
    ``symmetric`` centres the colour scale on 0 (use a diverging ``colorscale`` like ``"RdBu_r"``).
    """
    import plotly.graph_objects as go

    img = to_rgb(image)
    a = _as_2d(map)
    gh, gw = a.shape
    W, H = img.width, img.height
    dx, dy = W / gw, H / gh
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    heat = go.Heatmap(
        z=a, x0=dx / 2 - 0.5, dx=dx, y0=dy / 2 - 0.5, dy=dy, opacity=opacity, colorscale=colorscale,
        customdata=np.stack([rows, cols], -1),
        hovertemplate="patch row %{customdata[0]}, col %{customdata[1]}<br>value %{z:.4g}<extra></extra>",
        colorbar=dict(title="contribution"))
    if symmetric:
        lim = float(np.abs(a).max()) or 1.0
        heat.update(zmin=-lim, zmax=lim, zmid=0.0)
    fig = go.Figure([go.Image(z=np.asarray(img), hoverinfo="skip"), heat])
    fig.update_layout(title=title, width=520, height=480, margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    fig.update_xaxes(visible=False, range=[-0.5, W - 0.5])
    fig.update_yaxes(visible=False, range=[H - 0.5, -0.5], scaleanchor="x")
    return fig


def maps_figure(image: Any, maps: dict[str, Any], *, mask: Any = None, title: str | None = None,
                opacity: float = 0.55, symmetric: bool = True, colorscale: str = "RdBu_r",
                panel_size: int = 220) -> Any:
    """A row of plotly panels: the image, optionally its true ``mask``, then each named map.

    ``maps`` maps a panel title to a ``[gh, gw]`` map, drawn over the image with its own colour
    range (centred on 0 when ``symmetric``: red adds to the similarity, blue takes away).
    Hover shows each patch's value.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    img = np.asarray(to_rgb(image))
    H, W = img.shape[:2]
    panels = [("image", None)]
    if mask is not None:
        m = _as_tensor(mask).bool().cpu().numpy()
        if m.shape != (H, W):
            raise ValueError(f"mask is {m.shape}, the image {(H, W)}")
        panels.append(("true mask", m))
    panels += [(name, _as_2d(a)) for name, a in maps.items()]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels],
                        horizontal_spacing=0.02)
    for col, (name, a) in enumerate(panels, start=1):
        if name == "true mask" and a is not None:
            shown = (img * 0.35 + np.where(a[..., None], 255.0, 0.0) * 0.65).astype(np.uint8)
            fig.add_trace(go.Image(z=shown, hoverinfo="skip"), 1, col)
            continue
        fig.add_trace(go.Image(z=img, hoverinfo="skip"), 1, col)
        if a is None:
            continue
        gh, gw = a.shape
        dx, dy = W / gw, H / gh
        heat = go.Heatmap(z=a, x0=dx / 2 - 0.5, dx=dx, y0=dy / 2 - 0.5, dy=dy, opacity=opacity,
                          colorscale=colorscale, showscale=False, name=name,
                          hovertemplate=f"{name}<br>row %{{y:.0f}} px, col %{{x:.0f}} px<br>"
                                        "value %{z:.4g}<extra></extra>")
        if symmetric:
            lim = float(np.abs(a).max()) or 1.0
            heat.update(zmin=-lim, zmax=lim, zmid=0.0)
        fig.add_trace(heat, 1, col)
    fig.update_xaxes(visible=False, range=[-0.5, W - 0.5])
    fig.update_yaxes(visible=False, range=[H - 0.5, -0.5])
    for col in range(1, len(panels) + 1):
        fig.update_yaxes(scaleanchor=f"x{'' if col == 1 else col}", row=1, col=col)
    fig.update_layout(title=title, width=panel_size * len(panels) + 40, height=panel_size + (70 if title else 40),
                      margin=dict(l=10, r=10, t=60 if title else 30, b=10))
    return fig


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def threshold_map(map: Any, how: str | float = "mean") -> Tensor:
    """Binary foreground masks from maps ``[..., H, W]`` (batched over leading axes).

    The map is clipped at 0, then ``how="mean"`` keeps pixels above the clipped map's own mean
    (the paper's rule); a number keeps pixels above that value.
    """
    m = _as_tensor(map)
    if m.ndim < 2:
        raise ValueError(f"maps must be [..., H, W], got shape {tuple(m.shape)}")
    m = m.double().clamp_min(0)
    if isinstance(how, str):
        if how != "mean":
            raise ValueError(f"how must be 'mean' or a number, got {how!r}")
        thr = m.mean((-2, -1), keepdim=True)
    else:
        thr = torch.as_tensor(float(how), dtype=m.dtype)
    return m > thr


def _masks(pred: Any, true: Any) -> tuple[Tensor, Tensor]:
    p, t = _as_tensor(pred).bool(), _as_tensor(true).bool()
    t = t.to(p.device)
    if p.ndim < 2 or t.ndim < 2:
        raise ValueError("masks must be [..., H, W]")
    if p.shape[-2:] != t.shape[-2:]:
        raise ValueError(f"mask sizes differ: {tuple(p.shape[-2:])} vs {tuple(t.shape[-2:])} "
                         "(upsample the maps to the mask size first)")
    return p, t


def iou(pred_mask: Any, true_mask: Any, *, empty: float = 1.0) -> Tensor:
    """Intersection over union of boolean masks ``[..., H, W]`` (broadcast), per mask: ``[...]``.

    Where both masks are empty the IoU is ``empty`` (they agree perfectly: 1 by default).
    """
    p, t = _masks(pred_mask, true_mask)
    inter = (p & t).flatten(-2).sum(-1).double()
    union = (p | t).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, float(empty)))


def pixel_accuracy(pred_mask: Any, true_mask: Any) -> Tensor:
    """Fraction of pixels where the masks agree, per mask: ``[...]``."""
    p, t = _masks(pred_mask, true_mask)
    return (p == t).flatten(-2).double().mean(-1)


def average_precision(map: Any, true_mask: Any) -> Tensor:
    """Average precision of ranking pixels by ``map`` against a boolean mask, per map: ``[...]``.

    Mean over the mask's pixels of the precision among pixels scored at least as high (ties
    broken by position); ``nan`` for an empty mask.
    """
    s = _as_tensor(map).double()
    _, t = _masks(s, true_mask)
    s, t = torch.broadcast_tensors(s, t.to(s.device))
    s, t = s.flatten(-2), t.flatten(-2)
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices
    hits = t.gather(-1, order).double()
    precision = hits.cumsum(-1) / torch.arange(1, hits.shape[-1] + 1, dtype=hits.dtype, device=hits.device)
    n_pos = hits.sum(-1)
    ap = (precision * hits).sum(-1) / n_pos.clamp_min(1)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan")))
