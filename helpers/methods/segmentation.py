"""Zero-shot segmentation: the decomposition's segmenter, explainability baselines, metrics.

Every method returns one soft map per image on the patch grid, ``[B, gh, gw]`` (higher means
"more foreground"); :func:`segment` upsamples, post-processes and thresholds them the same way
for all methods, and :class:`SegmentationScores` accumulates the metrics over a dataset.

Methods (:data:`METHODS`):

* ``"decomposition"`` -- the paper's segmenter: patch tokens summed over the chosen
  attention layers and heads (class token excluded), scored against the predicted class's
  text minus the mean over classes (equal to :func:`helpers.methods.spatial.own_class_maps` of the
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
* ``"lrp"`` -- layer-wise relevance propagation of the class score to the pixels, summed per
  patch; ``"partial_lrp"`` -- the relevance of the last block's class-token attention row,
  clipped at 0 and averaged over heads (both as Chefer et al., CVPR 2021, compare against
  them; see :mod:`helpers.methods.lrp`).

**Variants** (``variant=``, :data:`BASELINE_VARIANTS`). The descriptions above are the course's
(``"course"``). ``"paper"`` runs the baselines as Chefer et al.'s evaluation code ran them
(``imagenet_seg_eval.py``, whose method list is the paper's table): rollout from block 1
(``start_layer=1``); GradCAM on the last block's attention probabilities, one weight per head
(the mean over patches of the gradient of the class-token row), ``clamp(mean_h(w_h A_h))``;
"Chefer et al." as their transformer attribution (per block ``C_b = mean_h((grad(A) * R_A)^+)``
with ``R_A`` the attention's relevance under their ``layers_ours`` rules, ``J = C_1 + I``, then
``J = (C_b + I) J``, no row normalisation); LRP and partial LRP under their ``layers_lrp`` rules
(:mod:`helpers.methods.lrp`), full LRP scored as the pixel map itself. Their post-processing is
min-max without the clip at 0 (:func:`segment` with ``clip=False``, see :func:`clips`); the
decomposition keeps the paper's clip. Their gradients are of the model's logit
(``logit_scale * cos``, as Chefer et al.'s CLIP notebook differentiates ``logits_per_image``):
the scale matters to the transformer attribution, whose ``C_b + I`` is not scale-free.

The class score for the course's gradient methods is the cosine similarity of the image
embedding with the target class's text embedding (the zero-shot logit). Without labels the target
is the zero-shot prediction, and every method reads it off its own forward pass (the one its
gradient or relevance starts from), as the decomposition does: no method pays a second forward
pass for it. Attention matrices are recomputed
from each block's own ``nn.MultiheadAttention`` weights, reading the named hook sites of
:mod:`helpers.engine.hooks` on stock open_clip modules; Chefer et al.'s method *patches* each
attention output with the recomputed one (equal up to rounding) so that the attention matrix
is part of the autograd graph, and GradCAM patches the input of the last attention the same way.

Metrics follow Chefer et al.: pixel accuracy and IoU of foreground and background are
accumulated over the whole dataset (``mIoU`` is their mean), ``mAP`` is the mean over images of
the average precision of the soft map (their protocol scores the map and its complement
against foreground and background together; the foreground-only variant is kept too); they
live in :mod:`helpers.methods.metrics`
(:class:`~helpers.methods.metrics.SegmentationScores`, re-exported here), and image-mask alignment in
:mod:`helpers.engine.images` (:func:`~helpers.engine.images.transform_pair`, re-exported here).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..engine.decompose import Decomposer, check_model_supported
from ..engine.hooks import hooked
from ..engine.images import MASK_GEOMETRIES, model_batch, transform_pair
from ..engine.labels import Selection, resolve_indices
from ..engine.text import text_matrix, zero_shot_prediction
from .maps import postprocess, threshold_map
from .metrics import SegmentationScores, mass_by_region

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "BACKWARD_METHODS",
    "BASELINE_VARIANTS",
    "PAPER_VARIANTS",
    "method_label",
    "clips",
    "pixel_maps",
    "segmentation_maps",
    "postprocess",
    "segment",
    "SegmentationScores",
    "predicted_classes",
    "transform_pair",
    "SegmentationTask",
    "evaluate_methods",
    "layer_maps",
    "mass_by_region",
    "patch_norm_ratio",
]

METHODS: tuple[str, ...] = ("decomposition", "raw_attention", "rollout", "gradcam", "chefer", "lrp", "partial_lrp")

#: How each method is named in sentences.
METHOD_NAMES: dict[str, str] = {"decomposition": "the decomposition", "raw_attention": "raw attention",
                                "rollout": "rollout", "gradcam": "GradCAM", "chefer": "Chefer et al.",
                                "lrp": "LRP", "partial_lrp": "partial LRP"}

#: The methods that need a backward pass after the forward one: a gradient (GradCAM, Chefer
#: et al.) or a relevance propagation (LRP, partial LRP; by hand in :mod:`helpers.methods.lrp`).
BACKWARD_METHODS: tuple[str, ...] = ("gradcam", "chefer", "lrp", "partial_lrp")

BASELINE_VARIANTS: tuple[str, ...] = ("course", "paper")
"""Values of ``variant``: the course's baselines, or Chefer et al.'s as the paper's table ran them."""

#: The methods whose ``"paper"`` variant differs from the course's, and how.
PAPER_VARIANTS: dict[str, str] = {
    "rollout": "from block 1 (start_layer=1)",
    "gradcam": "on the last block's attention, one weight per head",
    "chefer": "transformer attribution (LRP relevance x gradient, from block 1)",
    "lrp": "separate positive / negative normalisation, scored on the pixel map",
    "partial_lrp": "separate positive / negative normalisation",
}


def method_label(method: str, variant: str = "course") -> str:
    """How a method is named in a table: its name, and for a method with two variants which
    one (``"LRP (Chefer's)"``, ``"LRP (course)"``)."""
    if method not in METHOD_NAMES:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    _check_variant(variant)
    name = METHOD_NAMES[method]
    if method not in PAPER_VARIANTS:
        return name
    return f"{name} ({'course' if variant == 'course' else 'Chefer' + chr(8217) + 's'})"


def clips(method: str, variant: str = "course") -> bool:
    """Whether a method's maps are clipped at 0 before min-max normalisation: always in the
    course's variant, and for the decomposition (the paper's segmenter); not for Chefer et
    al.'s baselines (``variant="paper"``), which their evaluation only min-max normalises."""
    _check_variant(variant)
    return variant == "course" or method == "decomposition"


def pixel_maps(method: str, variant: str = "course") -> bool:
    """Whether ``method`` maps the pixels rather than the patches: full LRP in Chefer et al.'s
    variant (:func:`segmentation_maps`), whose pixel map :func:`evaluate_methods` keeps summed
    per patch for display."""
    _check_variant(variant)
    return method == "lrp" and variant == "paper"


def _check_variant(variant: str) -> None:
    if variant not in BASELINE_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(map(repr, BASELINE_VARIANTS))}, got {variant!r}")


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
def _capture_attention(visual: nn.Module, *, in_graph: bool,
                       layers: Sequence[int] | None = None) -> Iterator[list[Tensor | None]]:
    """Record every block's attention matrix ``[B, H, T, T]`` during a forward pass (or only
    those of ``layers``; the others stay ``None``).

    Without ``in_graph`` the matrices are recomputed from each attention's input (the
    ``blocks.{l}.ln_1`` site) and the forward pass is unchanged. With ``in_graph`` each
    attention output (site ``blocks.{l}.attn``) is patched with the recomputed one (equal up to
    rounding), so gradients reach the recorded matrices.
    """
    blocks = list(visual.transformer.resblocks)
    store: list[Tensor | None] = [None] * len(blocks)
    chosen = range(len(blocks)) if layers is None else [l % len(blocks) for l in layers]

    def reader(layer: int) -> Callable[[Tensor], None]:
        def read(x: Tensor) -> None:
            store[layer] = _full_attention(blocks[layer].attn, x)[0]
        return read

    def patcher(layer: int) -> Callable[[Tensor, tuple[Any, ...]], Tensor]:
        def patch(_out: Tensor, inputs: tuple[Any, ...]) -> Tensor:
            store[layer], out = _full_attention(blocks[layer].attn, inputs[0])
            return out
        return patch

    if in_graph:
        hooks = hooked(visual, patch={f"blocks.{i}.attn": patcher(i) for i in chosen})
    else:
        hooks = hooked(visual, {f"blocks.{i}.ln_1": reader(i) for i in chosen})
    with hooks:
        yield store


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


def _rollout_product(mats: Sequence[Tensor], start_layer: int = 0) -> Tensor:
    """Rollout of head-averaged attention matrices ``[B, T, T]`` (first block first):
    ``M_b = rownorm(A_b + I)``, ``J = M_s``, then ``J = M_b J`` for the later blocks."""
    rollout = None
    for m in mats[start_layer:]:
        eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
        m = m + eye
        m = m / m.sum(-1, keepdim=True)  # = (A + I) / 2: the rows of A sum to 1
        rollout = m if rollout is None else m @ rollout
    if rollout is None:
        raise ValueError(f"start_layer {start_layer} leaves no block of {len(mats)}")
    return rollout


def _rollout(visual: nn.Module, x: Tensor, start_layer: int = 0) -> Tensor:
    """Rollout's class-token row from block ``start_layer`` on (:func:`_rollout_product`)."""
    with torch.no_grad(), _capture_attention(visual, in_graph=False) as store:
        _forward(visual, x)
    mats = []
    for a in store:
        assert a is not None
        mats.append(a.mean(1))
    return _rollout_product(mats, start_layer)[:, 0]


def _class_score(visual: nn.Module, x: Tensor, E: Tensor, lab: Tensor | None,
                 scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The summed target scores of a batch (cosines, or logits when ``scale``, the model's
    ``logit_scale.exp()``, is given) and the unit targets ``[B, d']``: each image's class ``lab``
    among the class embeddings ``E``, or with ``lab=None`` its zero-shot prediction, read off
    this forward pass (as :func:`predicted_classes` predicts)."""
    emb = F.normalize(_forward(visual, x), dim=-1)
    if lab is None:
        lab = zero_shot_prediction(emb.detach(), E)
    targets = F.normalize(E[lab], dim=-1).detach()
    score = (emb * targets).sum()
    return (score if scale is None else scale * score), targets


def _attention_gradcam(visual: nn.Module, x: Tensor, E: Tensor, lab: Tensor | None, scale: Tensor) -> Tensor:
    """Chefer et al.'s GradCAM baseline: the last block's attention ``A`` and the gradient ``G``
    of the logit; per head ``w_h = mean over patches of G_h[CLS, 1:]``, map
    ``clamp(mean_h(w_h A_h[CLS, 1:]), 0)`` (the class token's entry is 0)."""
    with torch.enable_grad(), _capture_attention(visual, in_graph=True, layers=[-1]) as store:
        score, _ = _class_score(visual, x, E, lab, scale)
        a = store[-1]
        assert a is not None
        (grad,) = torch.autograd.grad(score, a)
    rows = _head_gradcam(a.detach()[:, :, 0, 1:], grad[:, :, 0, 1:])
    return torch.cat([rows.new_zeros(rows.shape[0], 1), rows], 1)


def _head_gradcam(cam: Tensor, grad: Tensor) -> Tensor:
    """GradCAM with the heads as channels: the class-token rows ``cam`` ``[B, H, P]`` of the
    attention and their gradients ``grad``; ``clamp(mean_h(w_h cam_h), 0)`` with ``w_h`` the
    mean of ``grad_h`` over the patches: ``[B, P]``."""
    w = grad.mean(-1, keepdim=True)
    return (w * cam).mean(1).clamp_min(0)


def _attribution_product(cams: Sequence[Tensor], start_layer: int) -> Tensor:
    """``J = C_s + I``, then ``J = (C_b + I) J`` for the later blocks (no row normalisation;
    Chefer et al.'s transformer attribution): ``[B, T, T]``."""
    eye = torch.eye(cams[0].shape[-1], dtype=cams[0].dtype, device=cams[0].device)
    joint = cams[start_layer] + eye
    for c in cams[start_layer + 1:]:
        joint = (c + eye) @ joint
    return joint


def _transformer_attribution(model: nn.Module, visual: nn.Module, x: Tensor, E: Tensor, lab: Tensor | None,
                             scale: Tensor, start_layer: int = 1) -> Tensor:
    """Chefer et al.'s transformer attribution (CVPR 2021): per block
    ``C_b = mean_h((G_b * R_A,b)^+)`` with ``G_b`` the gradient of the logit and ``R_A,b`` the
    attention's relevance under their ``layers_ours`` rules; the class-token row of
    :func:`_attribution_product` from ``start_layer``."""
    from .lrp import _CHUNK, lrp

    with torch.enable_grad(), _capture_attention(visual, in_graph=True) as store:
        score, targets = _class_score(visual, x, E, lab, scale)
        grads = torch.autograd.grad(score, [a for a in store if a is not None])
    if len(grads) != len(store):
        raise RuntimeError("attention was not recorded in every block")
    rows = []
    for i in range(0, x.shape[0], _CHUNK):
        rel = lrp(model, x[i:i + _CHUNK], targets[i:i + _CHUNK], rules="ours", pixels=False,
                  all_attention=True).attention_maps
        assert rel is not None
        cams = [(g[i:i + _CHUNK] * r).clamp_min(0).mean(1) for g, r in zip(grads, rel)]
        rows.append(_attribution_product(cams, start_layer)[:, 0])
    return torch.cat(rows).detach()


def _gradcam(visual: nn.Module, x: Tensor, E: Tensor, lab: Tensor | None) -> Tensor:
    kept: dict[str, Tensor] = {}

    def keep(act: Tensor, _inputs: tuple[Any, ...]) -> Tensor:
        kept["act"] = act  # batch first, and in the graph: the forward pass continues from it
        return act

    last = f"blocks.{len(visual.transformer.resblocks) - 1}.ln_1"
    with torch.enable_grad(), hooked(visual, patch={last: keep}):
        score, _ = _class_score(visual, x, E, lab)
        (grad,) = torch.autograd.grad(score, kept["act"])
    act = kept["act"].detach()
    weights = grad[:, 1:].mean(1, keepdim=True)  # [B, 1, D]
    cam = (act[:, 1:] * weights).sum(-1).clamp_min(0)
    return torch.cat([cam.new_zeros(cam.shape[0], 1), cam], 1).detach()


def _chefer(visual: nn.Module, x: Tensor, E: Tensor, lab: Tensor | None) -> Tensor:
    with torch.enable_grad(), _capture_attention(visual, in_graph=True) as store:
        score, _ = _class_score(visual, x, E, lab)
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
    visual = check_model_supported(model)
    with torch.no_grad():
        emb = F.normalize(_forward(visual, images), dim=-1)
    return zero_shot_prediction(emb, class_emb)


_CHUNK = 16  # images per forward pass of the decomposition segmenter (bounds the kept activations)


def _labels(labels: Any, n: int, E: Tensor) -> Tensor:
    lab = torch.as_tensor(labels, device=E.device).reshape(-1).long()
    if lab.numel() != n:
        raise ValueError(f"got {lab.numel()} labels for {n} images")
    if bool(((lab < 0) | (lab >= E.shape[0])).any()):
        raise IndexError(f"labels must be class indices in 0..{E.shape[0] - 1}")
    return lab


def _decomposition_maps(model: nn.Module, x: Tensor, E: Tensor, lab: Tensor | None, layers: Selection,
                        heads: Selection, *, per_layer: bool = False, convention: str = "course") -> Tensor:
    """The paper's maps in one forward pass: keep each layer's attention and values, read the
    prediction off the same pass, then contract with one direction per image (its class text
    minus the mean class text) -- never with all classes. ``[B, gh, gw]``, or ``[B, L', gh, gw]``
    (one map per chosen layer) with ``per_layer``."""
    dec = Decomposer(model)
    lidx, hidx = resolve_indices(layers, dec.n_layers, "layer"), resolve_indices(heads, dec.n_heads, "head")
    with torch.no_grad():
        d = dec(x.to(E.dtype), heads=False, tokens=True).normalized()
        if lab is None:
            lab = (d.embedding @ E.T).argmax(-1)  # the zero-shot prediction, from the same pass
        U = E[lab] - E.mean(0, keepdim=True)  # [B, d']
        scores = d.token_scores(U, lidx, hidx, keep=("layer",) if per_layer else (), convention=convention)
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
    visual = check_model_supported(model)
    x = model_batch(model, images, preprocess)
    E = text_matrix(class_emb, model=model, tokenizer=tokenizer, width=visual.proj.shape[1], what="class_emb").to(
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
                      tokenizer: Callable[..., Tensor] | None = None, variant: str = "course",
                      convention: str = "course") -> Tensor:
    """Soft foreground maps on the patch grid, ``[B, gh, gw]``, by ``method`` (see :data:`METHODS`);
    full LRP's ``"paper"`` variant gives the pixel map ``[B, H, W]`` (what Chefer et al. score).

    Args:
        model: an open_clip ViT CLIP.
        images: a preprocessed batch ``[B, 3, H, W]`` (or PIL images / arrays).
        class_emb: ``[C, d']`` class text embeddings (a zero-shot classifier), or strings with
            ``tokenizer``.
        method: one of :data:`METHODS`.
        labels: the target class of each image; ``None`` uses the zero-shot prediction (as the
            paper does). Ignored by the class-agnostic ``raw_attention`` and ``rollout``.
        layers, heads: for ``"decomposition"``, which attention layers/heads to sum.
        variant: ``"course"`` (default) or ``"paper"``: Chefer et al.'s baselines as the paper's
            table ran them (see the module notes; :data:`PAPER_VARIANTS`).
        convention: for ``"decomposition"``, how the per-token terms share the biases and the
            ``ln_post`` mean: ``"course"`` or the reference code's ``"reference"``
            (:meth:`helpers.engine.decompose.Decomposition.token_scores`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    _check_variant(variant)
    paper = variant == "paper"
    visual = check_model_supported(model)
    x = model_batch(model, images, preprocess)
    grid = tuple(visual.grid_size)
    E = text_matrix(class_emb, model=model, tokenizer=tokenizer, width=visual.proj.shape[1], what="class_emb").to(
        device=x.device, dtype=visual.proj.dtype)
    if method in ("raw_attention", "rollout"):
        if layers is not None or heads is not None:
            raise ValueError(f"{method} uses every layer's attention; layers/heads apply to 'decomposition'")
        xs = x.to(visual.proj.dtype)
        rows = _raw_attention(visual, xs) if method == "raw_attention" else _rollout(visual, xs, 1 if paper else 0)
        return _cls_to_patches(rows, grid)
    if convention != "course" and method != "decomposition":
        raise ValueError(f"convention applies to 'decomposition', not to {method!r}")
    if method == "decomposition":
        if E.shape[0] < 2:
            raise ValueError("the decomposition segmenter subtracts the mean over classes: give at least two")
        return torch.cat([_decomposition_maps(model, x[i:i + _CHUNK], E,
                                              None if labels is None else _labels(labels, x.shape[0], E)[i:i + _CHUNK],
                                              layers, heads, convention=convention)
                          for i in range(0, x.shape[0], _CHUNK)])
    # the target: the given label, or the zero-shot prediction read off each method's own forward pass
    lab = None if labels is None else _labels(labels, x.shape[0], E)
    if layers is not None or heads is not None:
        raise ValueError(f"{method} takes no layer/head selection; it applies to 'decomposition'")
    if method in ("lrp", "partial_lrp"):
        from .lrp import lrp_maps

        targets = None if lab is None else F.normalize(E[lab], dim=-1)
        return lrp_maps(model, x.to(visual.proj.dtype), targets, partial=method == "partial_lrp",
                        rules="lrp" if paper else "course", pixel_map=pixel_maps(method, variant),
                        classes=E if lab is None else None)
    was_training = visual.training
    visual.eval()
    try:
        xs = x.to(visual.proj.dtype).detach()
        if not paper:
            rows = (_gradcam if method == "gradcam" else _chefer)(visual, xs, E, lab)
        else:
            from .lrp import _logit_scale

            scale = _logit_scale(model, xs.dtype, xs.device)
            if method == "gradcam":
                rows = _attention_gradcam(visual, xs, E, lab, scale)
            else:
                rows = _transformer_attribution(model, visual, xs, E, lab, scale)
    finally:
        visual.train(was_training)
    return _cls_to_patches(rows, grid)


def segment(maps: Tensor, size: int | tuple[int, int], threshold: str | float = "mean", *,
            clip: bool = True) -> tuple[Tensor, Tensor]:
    """Soft maps ``[B, H, W]`` (:func:`postprocess`, clipped at 0 unless ``clip=False``) and hard
    masks thresholded at each map's mean (``"mean"``, the paper's rule) or at a fixed value in
    ``[0, 1]``."""
    soft = postprocess(maps, size, clip=clip)
    if isinstance(threshold, str):
        if threshold != "mean":
            raise ValueError(f"threshold must be 'mean' or a number in [0, 1], got {threshold!r}")
    elif not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"a fixed threshold must be in [0, 1], got {threshold}")
    return soft, threshold_map(soft, threshold, dtype=None)


def patch_norm_ratio(model: nn.Module, images: Any, *,
                     preprocess: Callable[[Image.Image], Tensor] | None = None) -> Tensor:
    """How far the largest patch token stands out after each block: the norm of the largest
    patch token over the median patch token's norm, per image, ``[L, B]``.

    Large ViTs trained on photos grow a few background tokens with outsized norms that hold
    global information (Darcet et al., ICLR 2024); the class token's attention then points at
    them, and raw-attention maps with it. Ratios near 1 mean no such tokens.
    """
    visual = check_model_supported(model)
    x = model_batch(model, images, preprocess).to(visual.proj.dtype)
    per_block: list[Tensor] = []  # one [b] tensor per block of the current chunk, in forward order

    def read(tokens: Tensor) -> None:
        n = tokens[:, 1:].norm(dim=-1)  # patch tokens only [b, P]
        per_block.append(n.max(-1).values / n.median(-1).values)

    chunks = []
    with torch.no_grad(), hooked(visual, {"blocks.*.resid_post": read}):
        for i in range(0, x.shape[0], _CHUNK):  # bounded activations on large models
            _forward(visual, x[i:i + _CHUNK])
            chunks.append(torch.stack(per_block))
            per_block.clear()
    return torch.cat(chunks, 1)


# ----------------------------------------------------------------------------------------------
# Tasks: images, aligned masks and class prompts (loaded by helpers.data.segmentation_tasks)
# ----------------------------------------------------------------------------------------------


@dataclass
class SegmentationTask:
    """Preprocessed images with foreground masks at the model's resolution, and the zero-shot
    class prompts the segmenters classify with.

    ``images`` ``[N, 3, H, W]``, ``masks`` ``[N, H, W]`` (bool), ``views`` the PIL images the
    model sees (for display), ``prompts`` class name -> prompts, ``labels`` the true class of
    each image where known (the world), else ``None``. ``target`` says which class a method
    is asked to segment by default: the zero-shot ``"prediction"`` (the paper's protocol, one
    object per image) or the ``"label"`` (scenes with several objects, where the mask is the
    one object the label names). ``clutter`` ``[N, H, W]`` (bool, in the geometry of ``masks``)
    marks unnamed distractors where the world draws them (world-v3), else ``None``.

    ``mask_geometry`` says how ``masks`` were brought to the model's input
    (:func:`~helpers.engine.images.transform_pair`: ``"aligned"``, the course's, or the reference
    code's ``"reference"``); ``masks_by_geometry`` holds the masks under every geometry the
    loader made (``masks`` among them), so the same maps can be scored against each.
    """

    name: str
    images: Tensor
    masks: Tensor
    views: list[Image.Image]
    prompts: dict[str, list[str]]
    labels: Tensor | None = None
    target: str = "prediction"
    clutter: Tensor | None = None
    mask_geometry: str = "aligned"
    masks_by_geometry: dict[str, Tensor] | None = None

    def __post_init__(self) -> None:
        if self.target not in ("prediction", "label"):
            raise ValueError(f"target must be 'prediction' or 'label', got {self.target!r}")
        if self.target == "label" and self.labels is None:
            raise ValueError("a task that segments the labelled object needs labels")
        if self.mask_geometry not in MASK_GEOMETRIES:
            raise ValueError(f"mask_geometry must be one of {', '.join(map(repr, MASK_GEOMETRIES))}, "
                             f"got {self.mask_geometry!r}")
        if self.masks_by_geometry is None:
            self.masks_by_geometry = {self.mask_geometry: self.masks}
        for g, m in self.masks_by_geometry.items():
            if g not in MASK_GEOMETRIES:
                raise ValueError(f"unknown mask geometry {g!r}")
            if tuple(m.shape) != tuple(self.masks.shape):
                raise ValueError(f"the {g!r} masks are {tuple(m.shape)}, the task's {tuple(self.masks.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def masks_for(self, geometry: str) -> Tensor:
        """The masks under ``geometry`` (a clear error when the loader did not make them)."""
        assert self.masks_by_geometry is not None
        if geometry not in self.masks_by_geometry:
            raise ValueError(f"{self.name} has masks for {', '.join(self.masks_by_geometry)}, not {geometry!r}")
        return self.masks_by_geometry[geometry]


def evaluate_methods(model: nn.Module, task: SegmentationTask, class_emb: Tensor,
                     methods: Sequence[str] = METHODS, *, batch_size: int = 50,
                     threshold: str | float = "mean", use_labels: bool | None = None,
                     progress: bool = False, warmup: int = 2, variant: str = "course",
                     geometries: Sequence[str] | None = None, population: int | None = None,
                     reuse: tuple[Tensor, Mapping[str, Tensor]] | None = None,
                     ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Every method on every image of ``task``: metrics per method, and the soft maps at the
    patch grid ``[N, gh, gw]`` per method (for display; a pixel map is summed per patch). The
    target class is the zero-shot prediction (the paper's protocol) or the label, as
    ``use_labels`` says (default: the task's ``target``). Each method's scores are
    :meth:`SegmentationScores.summary` (the paper's ``"mAP"`` and the foreground-only
    ``"object AP"`` both), plus ``"images/s"``.

    ``variant`` chooses the baselines (``"course"`` or Chefer et al.'s ``"paper"``, see the
    module notes) and with it each method's post-processing (:func:`clips`). ``geometries``
    (e.g. ``("aligned", "reference")``) scores the same maps against the task's masks under each
    geometry (:attr:`SegmentationTask.masks_by_geometry`): the result is then
    ``{geometry: {method: scores}}`` (the maps are computed once); without it,
    ``{method: scores}`` against ``task.masks``. ``population`` (the size of the dataset the
    task's images were drawn from) adds each score's sampling error as ``"<score> SE"``
    (:meth:`SegmentationScores.standard_errors`).

    ``"images/s"`` times the maps alone (:func:`segmentation_maps`, the zero-shot prediction
    included; not the post-processing and the metrics, which are the same code for every
    method), each method after a warm-up call on its first ``warmup`` images (at most a batch;
    0: none), so that no method pays for first-call costs (allocations, kernel choices) and every
    table times the methods the same way. A warm-up that covers the whole first batch computes
    that batch: its maps are kept, and the rate comes from the batches after it (a task of one
    batch is timed on a second call). The methods take turns on each batch, so a change in the
    machine's load hits all of them alike, and the rate is one over the median time per image
    of the batches, so a batch slowed by other work does not set it. On a GPU each timed call
    is synchronised."""
    import time

    if warmup < 0:
        raise ValueError(f"warmup must be >= 0 images, got {warmup}")
    _check_variant(variant)
    if use_labels is None:
        use_labels = task.target == "label"
    if use_labels and task.labels is None:
        raise ValueError(f"{task.name} has no class labels; use the predictions")
    geos = list(geometries) if geometries is not None else None
    truths = {g: task.masks_for(g) for g in geos} if geos is not None else {"": task.masks}
    size = tuple(task.masks.shape[-2:])
    device = next(model.parameters()).device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    reused: Mapping[str, Tensor] = {}
    if reuse is not None:
        images, earlier = reuse
        if images.shape != task.images.shape or not torch.equal(images.to(task.images.device), task.images):
            raise ValueError(f"reuse holds maps of other images than {task.name}'s: compute them on this task")
        reused = {m: t for m, t in earlier.items() if not pixel_maps(m, variant) and t.shape[0] == len(task)}

    def maps_of(method: str, i: int, j: int) -> Tensor:
        if method in reused:
            return reused[method][i:j]
        lab = task.labels[i:j] if use_labels and task.labels is not None else None
        return segmentation_maps(model, task.images[i:j].to(device), class_emb, method, labels=lab,
                                 variant=variant).detach()

    grid = getattr(getattr(model, "visual", model), "grid_size", None)  # the patch grid, for pixel maps
    methods = list(methods)
    scores = {g: {m: SegmentationScores() for m in methods} for g in truths}
    parts: dict[str, list[Tensor]] = {m: [] for m in methods}
    per_image: dict[str, list[float]] = {m: [] for m in methods}  # seconds per image of each batch
    first = min(batch_size, len(task))
    warm = min(warmup, first)
    warmed: dict[str, Tensor] = {}  # the warm-up's maps, where they are the first batch's
    for method in methods:
        if warm and method not in reused:
            maps = maps_of(method, 0, warm)
            if warm == first and len(task) > first:
                warmed[method] = maps
    for i in range(0, len(task), batch_size):
        for method in methods:  # interleaved: a change in the machine's load hits every method alike
            if i == 0 and method in warmed:
                maps = warmed.pop(method)  # computed by the warm-up: not timed
            else:
                sync()
                t0 = time.perf_counter()
                maps = maps_of(method, i, i + batch_size)
                sync()
                per_image[method].append((time.perf_counter() - t0) / maps.shape[0])
            maps = maps.float().cpu()
            soft, hard = segment(maps, size, threshold, clip=clips(method, variant))
            for g, truth in truths.items():
                scores[g][method].update(soft, hard, truth[i:i + batch_size])
            if grid is not None and tuple(maps.shape[-2:]) != tuple(grid):  # a pixel map: kept per patch
                ph, pw = maps.shape[-2] // grid[0], maps.shape[-1] // grid[1]
                maps = F.avg_pool2d(maps[:, None], (ph, pw))[:, 0] * (ph * pw)
            parts[method].append(maps)
    rates = {m: float("nan") if m in reused else 1.0 / max(float(np.median(per_image[m])), 1e-12) for m in methods}
    def row(sc: SegmentationScores, method: str) -> dict[str, float]:
        out = {**sc.summary(), "images/s": rates[method]}
        if population is not None:
            out.update({f"{k} SE": v for k, v in sc.standard_errors(population).items()})
        return out

    results: dict[str, Any] = {g: {m: row(scores[g][m], m) for m in methods} for g in truths}
    maps_out = {m: torch.cat(parts[m]) for m in methods}
    if progress:
        for g, table in results.items():
            for method, r in table.items():
                print(f"{g + ' ' if g else ''}{method:14s} " + "  ".join(f"{k} {v:.3f}" for k, v in r.items()))
    return (results if geos is not None else results[""]), maps_out
