"""Zero-shot segmentation: the decomposition's segmenter, explainability baselines, metrics.

Every method returns one soft map per image on the patch grid, ``[B, gh, gw]`` (higher means
"more foreground"); :func:`segment` upsamples, post-processes and thresholds them the same way
for all methods, and :class:`SegmentationScores` accumulates the metrics over a dataset.

Methods (:data:`METHODS`):

* ``"decomposition"`` -- the paper's segmenter: patch tokens summed over the chosen
  attention layers and heads (class token excluded), scored against the predicted class's
  text minus the mean over classes (equal to :func:`helpers.spatial.own_class_maps` of the
  prediction, computed in one forward pass with one text direction per image). No backward
  pass.
* ``"raw_attention"`` -- the last layer's attention from the class token to each patch,
  averaged over heads (class-agnostic).
* ``"rollout"`` -- attention rollout (Abnar & Zuidema, 2020): the product over layers of
  ``0.5 * mean_heads(A) + 0.5 * I`` (rows renormalised), class-token row (class-agnostic).
* ``"gradcam"`` -- Grad-CAM on the input of the last block's attention (the tokens it
  reads; the block's *output* patch tokens do not reach the class-token embedding): channel
  weights = gradient of the class score averaged over patches, map = ReLU of the weighted sum.
* ``"chefer"`` -- Chefer et al. (2021, "Generic attention-model explainability"): relevance
  ``R = I``, then for every layer ``R += mean_heads((grad(A) * A)^+) @ R``; class-token row.

The class score for the gradient methods is the cosine similarity of the image embedding with
the target class's text embedding (the zero-shot logit). Attention matrices are recomputed
from each block's own ``nn.MultiheadAttention`` weights inside forward hooks on stock
open_clip modules; for the gradient methods the hook also returns the recomputed attention
output so that the attention matrix is part of the autograd graph.

Metrics follow Chefer et al.: pixel accuracy and IoU of foreground and background are
accumulated over the whole dataset (``mIoU`` is their mean), ``mAP`` is the mean over images of
the average precision of the soft map.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .decompose import check_model_supported
from .spatial import Selection, _image_batch, _text_matrix, average_precision, model_view, upsample

__all__ = [
    "METHODS",
    "segmentation_maps",
    "postprocess",
    "segment",
    "SegmentationScores",
    "predicted_classes",
    "transform_pair",
    "ImageNetSeg",
    "IMAGENET_SEG_URL",
    "imagenet_seg",
    "SegmentationTask",
    "load_segmentation_task",
    "evaluate_methods",
    "layer_maps",
    "mass_by_region",
    "patch_norm_ratio",
]

METHODS: tuple[str, ...] = ("decomposition", "raw_attention", "rollout", "gradcam", "chefer")


def _visual(model: nn.Module) -> nn.Module:
    return check_model_supported(model)


# ----------------------------------------------------------------------------------------------
# Attention matrices through hooks
# ----------------------------------------------------------------------------------------------


def _full_attention(attn: nn.MultiheadAttention, x: Tensor) -> tuple[Tensor, Tensor]:
    """Attention probabilities ``[B, H, T, T]`` and the module's output ``[B, T, D]`` for a
    batch-first self-attention input ``x``, recomputed from the module's weights."""
    B, T, D = x.shape
    H = attn.num_heads
    dh = D // H
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q, k, v = F.linear(x, w, b).reshape(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)  # each [B, H, T, dh]
    a = ((q * dh ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    out = (a @ v).transpose(1, 2).reshape(B, T, D)
    return a, attn.out_proj(out)


@contextmanager
def _capture_attention(visual: nn.Module, *, in_graph: bool) -> Iterator[list[Tensor | None]]:
    """Record every block's attention matrix ``[B, H, T, T]`` during a forward pass.

    With ``in_graph`` the hook replaces the attention output by the recomputed one (equal up to
    rounding) so gradients reach the recorded matrices.
    """
    blocks = list(visual.transformer.resblocks)
    batch_first = bool(getattr(visual.transformer, "batch_first", True))
    store: list[Tensor | None] = [None] * len(blocks)

    def make(layer: int):
        def hook(module: nn.MultiheadAttention, args: tuple[Any, ...], output: Any) -> Any:
            x = args[0] if batch_first else args[0].transpose(0, 1)
            a, out = _full_attention(module, x)
            store[layer] = a
            if in_graph:
                out = out if batch_first else out.transpose(0, 1)
                return (out, None)
            return None
        return hook

    handles = [blk.attn.register_forward_hook(make(i)) for i, blk in enumerate(blocks)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def _cls_to_patches(rows: Tensor, grid: tuple[int, int]) -> Tensor:
    """``[B, T]`` class-token rows -> ``[B, gh, gw]`` patch maps (class token dropped)."""
    return rows[:, 1:].reshape(rows.shape[0], *grid)


def _forward(visual: nn.Module, x: Tensor) -> Tensor:
    out = visual(x)
    return out[0] if isinstance(out, tuple) else out


def _raw_attention(visual: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad(), _capture_attention(visual, in_graph=False) as store:
        _forward(visual, x)
    a = store[-1]
    assert a is not None
    return a.mean(1)[:, 0]


def _rollout(visual: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad(), _capture_attention(visual, in_graph=False) as store:
        _forward(visual, x)
    rollout = None
    for a in store:
        assert a is not None
        m = a.mean(1)
        eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
        m = 0.5 * m + 0.5 * eye
        m = m / m.sum(-1, keepdim=True)
        rollout = m if rollout is None else m @ rollout
    assert rollout is not None
    return rollout[:, 0]


def _class_score(visual: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    emb = F.normalize(_forward(visual, x), dim=-1)
    return (emb * targets).sum()


def _gradcam(visual: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    last = visual.transformer.resblocks[-1]
    batch_first = bool(getattr(visual.transformer, "batch_first", True))
    kept: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        kept["act"] = out

    handle = last.ln_1.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            score = _class_score(visual, x, targets)
            (grad,) = torch.autograd.grad(score, kept["act"])
    finally:
        handle.remove()
    act = kept["act"].detach()
    if not batch_first:
        act, grad = act.transpose(0, 1), grad.transpose(0, 1)
    weights = grad[:, 1:].mean(1, keepdim=True)  # [B, 1, D]
    cam = (act[:, 1:] * weights).sum(-1).clamp_min(0)
    return torch.cat([cam.new_zeros(cam.shape[0], 1), cam], 1).detach()


def _chefer(visual: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    with torch.enable_grad(), _capture_attention(visual, in_graph=True) as store:
        score = _class_score(visual, x, targets)
        grads = torch.autograd.grad(score, [a for a in store if a is not None])
    if len(grads) != len(store):
        raise RuntimeError("attention was not recorded in every block")
    rel = None
    for a, g in zip(store, grads):
        assert a is not None
        cam = (g * a.detach()).clamp_min(0).mean(1)  # [B, T, T]
        if rel is None:
            rel = torch.eye(cam.shape[-1], dtype=cam.dtype, device=cam.device).expand_as(cam).clone()
        rel = rel + cam @ rel
    assert rel is not None
    return rel[:, 0]


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def predicted_classes(model: nn.Module, images: Tensor, class_emb: Tensor) -> Tensor:
    """Zero-shot predictions (cosine similarity with each class embedding): ``[B]``."""
    visual = _visual(model)
    with torch.no_grad():
        emb = F.normalize(_forward(visual, images), dim=-1)
    return (emb @ class_emb.to(emb.dtype).T).argmax(-1)


_CHUNK = 16  # images per forward pass of the decomposition segmenter (bounds the kept activations)


def _labels(labels: Any, n: int, E: Tensor) -> Tensor:
    lab = torch.as_tensor(labels, device=E.device).reshape(-1).long()
    if lab.numel() != n:
        raise ValueError(f"got {lab.numel()} labels for {n} images")
    if bool(((lab < 0) | (lab >= E.shape[0])).any()):
        raise IndexError(f"labels must be class indices in 0..{E.shape[0] - 1}")
    return lab


def _decomposition_maps(model: nn.Module, x: Tensor, E: Tensor, lab: Tensor | None, layers: Selection,
                        heads: Selection, *, per_layer: bool = False) -> Tensor:
    """The paper's maps in one forward pass: keep each layer's attention and values, read the
    prediction off the same pass, then contract with one direction per image (its class text
    minus the mean class text) -- never with all classes. ``[B, gh, gw]``, or ``[B, L', gh, gw]``
    (one map per chosen layer) with ``per_layer``."""
    from .decompose import Decomposer
    from .spatial import _resolve

    dec = Decomposer(model)
    lidx, hidx = _resolve(layers, dec.n_layers, "layer"), _resolve(heads, dec.n_heads, "head")
    with torch.no_grad():
        d = dec(x.to(E.dtype), heads=False, tokens=True).normalized()
        if lab is None:
            lab = (d.embedding @ E.T).argmax(-1)  # the zero-shot prediction, from the same pass
        U = E[lab] - E.mean(0, keepdim=True)  # [B, d']
        scores = d.token_scores(U, lidx, hidx, keep=("layer",) if per_layer else ())
        maps = d.spatial_map(scores)  # [B, (L',) gh, gw, B]
    idx = torch.arange(x.shape[0], device=maps.device)
    return maps[idx, ..., idx]


def layer_maps(model: nn.Module, images: Any, class_emb: Any, *, labels: Sequence[int] | Tensor | None = None,
               preprocess: Callable[[Image.Image], Tensor] | None = None,
               tokenizer: Callable[..., Tensor] | None = None) -> Tensor:
    """The decomposition segmenter's map split by attention layer: ``[L, B, gh, gw]``.

    Summing over any range of layers gives that range's map (the maps are a sum over layers),
    so a layer-range slider needs no further forward pass. One forward pass per 16 images.
    """
    visual = _visual(model)
    x = _image_batch(model, visual, images, preprocess)
    E = _text_matrix(model, class_emb, visual.proj.shape[1], tokenizer, "class_emb").to(
        device=x.device, dtype=visual.proj.dtype)
    if E.shape[0] < 2:
        raise ValueError("the decomposition segmenter subtracts the mean over classes: give at least two")
    lab = None if labels is None else _labels(labels, x.shape[0], E)
    parts = [_decomposition_maps(model, x[i:i + _CHUNK], E, None if lab is None else lab[i:i + _CHUNK], None, None,
                                 per_layer=True) for i in range(0, x.shape[0], _CHUNK)]
    return torch.cat(parts).transpose(0, 1)


def segmentation_maps(model: nn.Module, images: Any, class_emb: Any, method: str = "decomposition", *,
                      labels: Sequence[int] | Tensor | None = None, layers: Selection = None,
                      heads: Selection = None, preprocess: Callable[[Image.Image], Tensor] | None = None,
                      tokenizer: Callable[..., Tensor] | None = None) -> Tensor:
    """Soft foreground maps on the patch grid, ``[B, gh, gw]``, by ``method`` (see :data:`METHODS`).

    Args:
        model: an open_clip ViT CLIP.
        images: a preprocessed batch ``[B, 3, H, W]`` (or PIL images / arrays).
        class_emb: ``[C, d']`` class text embeddings (a zero-shot classifier), or strings with
            ``tokenizer``.
        method: one of :data:`METHODS`.
        labels: the target class of each image; ``None`` uses the zero-shot prediction (as the
            paper does). Ignored by the class-agnostic ``raw_attention`` and ``rollout``.
        layers, heads: for ``"decomposition"``, which attention layers/heads to sum.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    visual = _visual(model)
    x = _image_batch(model, visual, images, preprocess)
    grid = tuple(visual.grid_size)
    E = _text_matrix(model, class_emb, visual.proj.shape[1], tokenizer, "class_emb").to(
        device=x.device, dtype=visual.proj.dtype)
    if method in ("raw_attention", "rollout"):
        if layers is not None or heads is not None:
            raise ValueError(f"{method} uses every layer's attention; layers/heads apply to 'decomposition'")
        rows = (_raw_attention if method == "raw_attention" else _rollout)(visual, x.to(visual.proj.dtype))
        return _cls_to_patches(rows, grid)
    if method == "decomposition":
        if E.shape[0] < 2:
            raise ValueError("the decomposition segmenter subtracts the mean over classes: give at least two")
        return torch.cat([_decomposition_maps(model, x[i:i + _CHUNK], E,
                                              None if labels is None else _labels(labels, x.shape[0], E)[i:i + _CHUNK],
                                              layers, heads) for i in range(0, x.shape[0], _CHUNK)])
    if labels is None:
        lab = predicted_classes(model, x, E)
    else:
        lab = _labels(labels, x.shape[0], E)
    if layers is not None or heads is not None:
        raise ValueError(f"{method} takes no layer/head selection; it applies to 'decomposition'")
    targets = F.normalize(E[lab], dim=-1).detach()
    was_training = visual.training
    visual.eval()
    try:
        rows = (_gradcam if method == "gradcam" else _chefer)(visual, x.to(visual.proj.dtype).detach(), targets)
    finally:
        visual.train(was_training)
    return _cls_to_patches(rows, grid)


def postprocess(maps: Tensor, size: int | tuple[int, int]) -> Tensor:
    """The paper's post-processing: upsample bilinearly to ``size``, clip at 0, min-max
    normalise each map to ``[0, 1]`` (a constant map becomes 0): ``[B, H, W]``."""
    up = upsample(maps, size).clamp_min(0)
    lo = up.flatten(-2).min(-1).values[..., None, None]
    hi = up.flatten(-2).max(-1).values[..., None, None]
    span = hi - lo
    return torch.where(span > 0, (up - lo) / span.clamp_min(torch.finfo(up.dtype).tiny), torch.zeros_like(up))


def segment(maps: Tensor, size: int | tuple[int, int], threshold: str | float = "mean") -> tuple[Tensor, Tensor]:
    """Soft maps ``[B, H, W]`` (:func:`postprocess`) and hard masks thresholded at each map's
    mean (``"mean"``, the paper's rule) or at a fixed value in ``[0, 1]``."""
    soft = postprocess(maps, size)
    if isinstance(threshold, str):
        if threshold != "mean":
            raise ValueError(f"threshold must be 'mean' or a number in [0, 1], got {threshold!r}")
        thr = soft.mean((-2, -1), keepdim=True)
    else:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"a fixed threshold must be in [0, 1], got {threshold}")
        thr = torch.as_tensor(float(threshold), dtype=soft.dtype)
    return soft, soft > thr


@dataclass
class SegmentationScores:
    """Metrics accumulated over a dataset (Chefer et al. style).

    ``update(soft, pred, truth)`` adds a batch: ``soft`` ``[B, H, W]`` scores, ``pred`` and
    ``truth`` boolean masks. Then ``pixel_accuracy``, ``iou_foreground``, ``iou_background``,
    ``miou`` (their mean) and ``map`` (mean per-image average precision; images whose mask is
    empty are skipped) are available, also together via :meth:`summary`.
    """

    correct: int = 0
    pixels: int = 0
    inter: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))  # [bg, fg]
    union: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    ap: list[float] = field(default_factory=list)

    def update(self, soft: Tensor, pred: Tensor, truth: Any) -> "SegmentationScores":
        t = torch.as_tensor(np.asarray(truth) if not isinstance(truth, Tensor) else truth).bool().to(pred.device)
        p = pred.bool()
        if p.shape != t.shape or soft.shape != t.shape:
            raise ValueError(f"shapes differ: soft {tuple(soft.shape)}, pred {tuple(p.shape)}, "
                             f"truth {tuple(t.shape)} (transform image and mask together)")
        self.correct += int((p == t).sum())
        self.pixels += t.numel()
        for c, (pc, tc) in enumerate(((~p, ~t), (p, t))):
            self.inter[c] += int((pc & tc).sum())
            self.union[c] += int((pc | tc).sum())
        ap = average_precision(soft, t).reshape(-1).cpu().numpy()
        self.ap.extend(float(a) for a in ap if np.isfinite(a))
        return self

    @property
    def pixel_accuracy(self) -> float:
        return self.correct / max(1, self.pixels)

    @property
    def iou_foreground(self) -> float:
        return float(self.inter[1] / max(1, self.union[1]))

    @property
    def iou_background(self) -> float:
        return float(self.inter[0] / max(1, self.union[0]))

    @property
    def miou(self) -> float:
        return 0.5 * (self.iou_foreground + self.iou_background)

    @property
    def map(self) -> float:
        return float(np.mean(self.ap)) if self.ap else float("nan")

    def summary(self) -> dict[str, float]:
        return {"pixel accuracy": self.pixel_accuracy, "mIoU": self.miou, "mAP": self.map,
                "IoU foreground": self.iou_foreground, "IoU background": self.iou_background}


def mass_by_region(maps: Tensor, masks: Any) -> dict[str, Tensor]:
    """Where a patch-grid map puts its weight relative to a pixel mask.

    ``maps`` ``[..., N, gh, gw]`` (e.g. one map per layer, :func:`layer_maps`), ``masks``
    ``[N, H, W]`` aligned with the model's input. A patch is *on* the object when the mask
    touches it. Returns three tensors of shape ``[..., N]``: ``"on"`` and ``"off"``, the
    positive mass on and off the object's patches, and ``"against"``, the negative mass on
    the object's patches (written *against* the class). ``on / (on + off)`` is the share of a
    map's positive mass that falls on the object: what thresholding can hope to keep.
    """
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, Tensor) else masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {tuple(m.shape)}")
    if maps.ndim < 3 or maps.shape[-3] != m.shape[0]:
        raise ValueError(f"maps {tuple(maps.shape)} must end in [N, gh, gw] with N = {m.shape[0]} masks")
    grid = tuple(maps.shape[-2:])
    if m.shape[-2] % grid[0] or m.shape[-1] % grid[1]:
        raise ValueError(f"mask size {tuple(m.shape[-2:])} is not a whole number of {grid} patches")
    cover = F.adaptive_max_pool2d(m.to(maps.device).float()[:, None], grid)[:, 0] > 0  # [N, gh, gw]
    pos, neg = maps.clamp_min(0), (-maps).clamp_min(0)
    return {"on": (pos * cover).sum((-2, -1)), "off": (pos * ~cover).sum((-2, -1)),
            "against": (neg * cover).sum((-2, -1))}


def patch_norm_ratio(model: nn.Module, images: Any, *,
                     preprocess: Callable[[Image.Image], Tensor] | None = None) -> Tensor:
    """How far the largest patch token stands out after each block: the norm of the largest
    patch token over the median patch token's norm, per image, ``[L, B]``.

    Large ViTs trained on photos grow a few background tokens with outsized norms that hold
    global information (Darcet et al., ICLR 2024); the class token's attention then points at
    them, and raw-attention maps with it. Ratios near 1 mean no such tokens.
    """
    visual = _visual(model)
    x = _image_batch(model, visual, images, preprocess).to(visual.proj.dtype)
    batch_first = bool(getattr(visual.transformer, "batch_first", True))
    per_block: list[Tensor] = []  # one [b] tensor per block of the current chunk

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        tokens = out if batch_first else out.transpose(0, 1)
        n = tokens[:, 1:].norm(dim=-1)  # patch tokens only [b, P]
        per_block.append(n.max(-1).values / n.median(-1).values)

    handles = [blk.register_forward_hook(hook) for blk in visual.transformer.resblocks]
    chunks = []
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], _CHUNK):  # bounded activations on large models
                _forward(visual, x[i:i + _CHUNK])
                chunks.append(torch.stack(per_block))
                per_block.clear()
    finally:
        for h in handles:
            h.remove()
    return torch.cat(chunks, 1)


# ----------------------------------------------------------------------------------------------
# Image and mask through the same geometry
# ----------------------------------------------------------------------------------------------


def _mask_step(step: Any) -> Callable[[Image.Image], Image.Image] | None:
    """The geometric part of one preprocessing step, for a mask (nearest neighbour), or None for
    a step that does not move pixels (colour conversion)."""
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode

    name = type(step).__name__
    if isinstance(step, T.Resize):
        return T.Resize(step.size, interpolation=InterpolationMode.NEAREST, max_size=step.max_size)
    if isinstance(step, T.CenterCrop):
        return step
    if name == "ResizeKeepRatio":  # open_clip's resize for resize_mode="longest"
        import copy

        nearest = copy.copy(step)
        nearest.interpolation = InterpolationMode.NEAREST
        return nearest
    if name == "CenterCropOrPad":
        import copy

        padded = copy.copy(step)
        padded.fill = 0
        return padded
    if "convert" in name.lower() or "convert" in getattr(step, "__name__", "").lower():
        return None  # colour-mode conversion: no geometry
    raise TypeError(f"do not know how to apply {name} to a mask; crop and resize image and mask yourself")


def transform_pair(image: Any, mask: Any, preprocess: Callable[[Image.Image], Tensor]) -> tuple[Tensor, Tensor]:
    """Preprocess ``image`` and apply the *same* geometric steps to its ``mask``.

    ``preprocess`` is the model's torchvision ``Compose`` (resize, centre crop, ...); the mask is
    resized with nearest-neighbour interpolation and cropped identically, so it stays aligned
    with the pixels the model sees, also for non-square images. Returns the image tensor
    ``[3, H, W]`` and the boolean mask ``[H, W]``.
    """
    from .images import to_rgb

    img = to_rgb(image)
    m = mask if isinstance(mask, np.ndarray) else (mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask))
    if m.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {m.shape}")
    if m.shape != (img.height, img.width):
        raise ValueError(f"mask is {m.shape} but the image is {(img.height, img.width)}")
    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        raise TypeError("preprocess is not a torchvision Compose; cannot apply its geometry to the mask")
    mask_img = Image.fromarray(m.astype(bool).astype(np.uint8) * 255, "L")
    for step in steps:
        if "ToTensor" in type(step).__name__ or "PILToTensor" in type(step).__name__:
            break
        geo = _mask_step(step)
        if geo is not None:
            mask_img = geo(mask_img)
    return preprocess(img), torch.from_numpy(np.asarray(mask_img) > 127)


# ----------------------------------------------------------------------------------------------
# ImageNet-Segmentation (online path)
# ----------------------------------------------------------------------------------------------

#: ImageNet-Segmentation (Guillaumin et al.): 4,276 ImageNet validation images with foreground
#: masks, as used by Chefer et al. and the paper. MATLAB v7.3 (HDF5), about 1.4 GB.
IMAGENET_SEG_URL = "http://calvin-vision.net/bigstuff/proj-imagenet/data/gtsegs_ijcv.mat"
IMAGENET_SEG_SIZE = 4276


class ImageNetSeg:
    """The images and masks of ``gtsegs_ijcv.mat`` (read lazily with h5py).

    ``image(i)`` is an RGB PIL image, ``mask(i)`` a boolean ``[H, W]`` array of the same size;
    ``pair(i, preprocess)`` gives both after the model's preprocessing (:func:`transform_pair`).
    """

    def __init__(self, path: str | Any, n: int | None = None) -> None:
        import h5py

        self.path = str(path)
        self._file = h5py.File(self.path, "r")
        try:
            self._img = self._file["value/img"]
            self._gt = self._file["value/gt"]
        except KeyError as exc:
            self._file.close()
            raise ValueError(f"{self.path} is not ImageNet-Segmentation's gtsegs_ijcv.mat "
                             "(no value/img and value/gt)") from exc
        total = int(self._img.shape[0])
        if n is not None and not 0 < n:
            raise ValueError(f"n must be positive, got {n}")
        self.n = total if n is None else min(int(n), total)

    def __len__(self) -> int:
        return self.n

    def _check(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError(f"image {i} out of range for {self.n}")
        return i % self.n

    def image(self, i: int) -> Image.Image:
        arr = np.asarray(self._file[self._img[self._check(i), 0]])
        return Image.fromarray(np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(np.uint8), "RGB")

    def mask(self, i: int) -> np.ndarray:
        arr = np.asarray(self._file[self._gt[self._check(i), 0]])
        return np.ascontiguousarray(arr.transpose(1, 0)) > 0

    def pair(self, i: int, preprocess: Callable[[Image.Image], Tensor]) -> tuple[Tensor, Tensor]:
        return transform_pair(self.image(i), self.mask(i), preprocess)

    def close(self) -> None:
        self._file.close()


def imagenet_seg(n: int | None = None, path: str | None = None) -> ImageNetSeg:
    """ImageNet-Segmentation from ``path``, or downloaded once into the course cache.

    The publishers give no checksum: the first download records the file's SHA-256 and later
    uses verify it (see :func:`helpers.download.fetch`). Offline, fails within seconds with
    :class:`helpers.download.OfflineError`.
    """
    if path is None:
        from .download import fetch

        path = fetch(IMAGENET_SEG_URL, None, what="ImageNet-Segmentation (gtsegs_ijcv.mat, about 1.4 GB)",
                     folder="imagenet-seg",
                     hint="Use the offline world (notebook default), or pass path= to a local copy of "
                          "gtsegs_ijcv.mat.")
    return ImageNetSeg(path, n)


# ----------------------------------------------------------------------------------------------
# Tasks: images, aligned masks and class prompts
# ----------------------------------------------------------------------------------------------


@dataclass
class SegmentationTask:
    """Preprocessed images with aligned foreground masks at the model's resolution, and the
    zero-shot class prompts the segmenters classify with.

    ``images`` ``[N, 3, H, W]``, ``masks`` ``[N, H, W]`` (bool), ``views`` the PIL images the
    model sees (for display), ``prompts`` class name -> prompts, ``labels`` the true class of
    each image where known (the world), else ``None``. ``target`` says which class a method
    is asked to segment by default: the zero-shot ``"prediction"`` (the paper's protocol, one
    object per image) or the ``"label"`` (scenes with several objects, where the mask is the
    one object the label names).
    """

    name: str
    images: Tensor
    masks: Tensor
    views: list[Image.Image]
    prompts: dict[str, list[str]]
    labels: Tensor | None = None
    target: str = "prediction"

    def __post_init__(self) -> None:
        if self.target not in ("prediction", "label"):
            raise ValueError(f"target must be 'prediction' or 'label', got {self.target!r}")
        if self.target == "label" and self.labels is None:
            raise ValueError("a task that segments the labelled object needs labels")

    def __len__(self) -> int:
        return self.images.shape[0]


def _aligned(items: Any, preprocess: Callable[[Image.Image], Tensor]) -> tuple[Tensor, Tensor, list[Image.Image]]:
    """``(image, mask)`` pairs through the same geometry: stacked images ``[N, 3, H, W]``,
    masks ``[N, H, W]`` and the views the model sees."""
    xs, ms, views = [], [], []
    for image, mask in items:
        x, m = transform_pair(image, mask, preprocess)
        xs.append(x)
        ms.append(m)
        views.append(model_view(None, image, preprocess))
    return torch.stack(xs), torch.stack(ms), views


def load_segmentation_task(name: str, preprocess: Callable[[Image.Image], Tensor], n: int = 200, *,
                           seed: int = 0, templates: str = "openai") -> SegmentationTask:
    """``"world"`` / ``"world:<factor>"`` (held-out synthetic scenes and their true masks; the
    classes are the factor's values, default ``shape``), ``"world-pairs:<factor>"`` (two
    objects that differ in shape, colour and cell; the mask is the first object's, and methods
    segment the class of its label: "find the red one"), or ``"imagenet-seg"`` /
    ``"imagenet-seg:/path/to/gtsegs_ijcv.mat"`` (downloaded once; classified 1000-way with
    ImageNet's class names). Images and masks go through the same geometry
    (:func:`transform_pair`)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if name == "world" or name.startswith("world:"):
        from . import world

        factor = world._check_factor(name.partition(":")[2] or "shape")
        scenes = world.sample(n, split="test", seed=seed + 1)
        xs, ms, views = _aligned(zip(scenes.images, scenes.foreground), preprocess)
        return SegmentationTask(f"world:{factor}", xs, ms, views,
                                world.class_prompts(factor), torch.as_tensor(scenes.factors[factor]))
    if name == "world-pairs" or name.startswith("world-pairs:"):
        from . import world

        factor = world._check_factor(name.partition(":")[2] or "colour")
        if factor not in ("shape", "colour", "position"):
            raise ValueError(f"pairs differ in their objects, not in {factor!r}: use shape, colour or position")
        pairs = world.sample_pairs(n, split="test", seed=seed + 1)
        xs, ms, views = _aligned(zip(pairs.images, pairs.masks[:, 0]), preprocess)
        return SegmentationTask(f"world-pairs:{factor}", xs, ms, views,
                                world.class_prompts(factor), torch.as_tensor(pairs.factors[factor][:, 0]),
                                target="label")
    if name == "imagenet-seg" or name.startswith("imagenet-seg:"):
        from .datasets import _imagenet_metadata

        path = name.partition(":")[2] or None
        ds = imagenet_seg(path=path)
        try:
            pick = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
            xs, ms, views = _aligned(((ds.image(i), ds.mask(i)) for i in pick.tolist()), preprocess)
        finally:
            ds.close()
        names, tmpl = _imagenet_metadata(templates)
        return SegmentationTask("imagenet-seg", xs, ms, views,
                                {c: [t(c) for t in tmpl] for c in names}, None)
    raise ValueError(f"unknown segmentation dataset {name!r}: use 'world', 'world:<factor>', "
                     "'world-pairs:<factor>', 'imagenet-seg' "
                     "or 'imagenet-seg:/path/to/gtsegs_ijcv.mat'")


def evaluate_methods(model: nn.Module, task: SegmentationTask, class_emb: Tensor,
                     methods: Sequence[str] = METHODS, *, batch_size: int = 50,
                     threshold: str | float = "mean", use_labels: bool | None = None,
                     progress: bool = False) -> tuple[dict[str, dict[str, float]], dict[str, Tensor]]:
    """Every method on every image of ``task``: metrics per method, and the soft maps at the
    patch grid ``[N, gh, gw]`` per method (for display). The target class is the zero-shot
    prediction (the paper's protocol) or the label, as ``use_labels`` says (default: the task's
    ``target``). Also reports images per second."""
    import time

    if use_labels is None:
        use_labels = task.target == "label"
    if use_labels and task.labels is None:
        raise ValueError(f"{task.name} has no class labels; use the predictions")
    results: dict[str, dict[str, float]] = {}
    maps_out: dict[str, Tensor] = {}
    size = tuple(task.masks.shape[-2:])
    device = next(model.parameters()).device
    for method in methods:
        scores = SegmentationScores()
        parts = []
        t0 = time.perf_counter()
        for i in range(0, len(task), batch_size):
            x = task.images[i:i + batch_size].to(device)
            lab = task.labels[i:i + batch_size] if use_labels and task.labels is not None else None
            maps = segmentation_maps(model, x, class_emb, method, labels=lab).detach().float().cpu()
            soft, hard = segment(maps, size, threshold)
            scores.update(soft, hard, task.masks[i:i + batch_size])
            parts.append(maps)
        seconds = time.perf_counter() - t0
        results[method] = {**scores.summary(), "images/s": len(task) / seconds}
        maps_out[method] = torch.cat(parts)
        if progress:
            print(f"{method:14s} " + "  ".join(f"{k} {v:.3f}" for k, v in results[method].items()))
    return results, maps_out
