"""Layer-wise relevance propagation (LRP) and partial LRP for open_clip ViT image towers.

Two explainability baselines of the paper's segmentation table, in the form Chefer et al.
(CVPR 2021, "Transformer Interpretability Beyond Attention Visualization") compare against:

* **LRP** (Binder et al., 2016): the score of the target class is propagated backwards
  through every layer to the input pixels, and the pixels' relevance (summed over the colour
  channels) is the map.
* **partial LRP** (Voita et al., 2019): the same propagation, stopped at the last block's
  attention probabilities; the relevance of the class token's attention row, clipped at 0 and
  averaged over heads, is the map (one value per patch).

The score of image ``b`` is the zero-shot logit ``cos(e_b, t_b)`` of its target text
``t_b``, a linear function ``x . w_b`` of the class token after ``ln_post`` with
``w_b = proj t_b / |e_b|`` (the classifier head). The rules, applied layer by layer:

* linear layers (the head, ``in_proj``, ``out_proj``, the MLP's two layers): the
  LRP-alpha1-beta0 rule -- output ``k``'s relevance is shared among the inputs in proportion
  to their positive contributions ``(x_j W_kj)^+``; biases take none;
* residual additions ``y = a + b`` and the attention products ``A V`` and ``Q K^T``: the
  z-rule -- relevance shared in proportion to each term's contribution to the sum
  (``a / y``, ``a_ij v_jd / o_id``); each factor of a product receives all of it, then the two
  halves are kept (Chefer et al.'s convention), so the total is conserved;
* layer norms, the activation, the softmax and LayerScale pass relevance through unchanged;
* the patch embedding (a convolution on the pixels) uses the z^B rule with the image's own
  smallest and largest value as bounds; the class embedding and the positional embedding
  absorb their share of the tokens' relevance (:attr:`LRPResult.absorbed`).

So relevance is conserved: the tokens entering the first block carry exactly the score, and
the pixels the score minus what the embeddings absorb (up to the division guard
``eps`` that keeps denominators away from 0).

Activations are read through :func:`helpers.engine.hooks.capture` on the stock modules (each block's
input, attention branch and MLP branch, and ``ln_post``); everything else (layer norms,
attention probabilities, the MLP's hidden layer) is recomputed from the module's own weights.
No autograd is involved, so it runs under ``torch.no_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.decompose import check_model_supported
from ..engine.hooks import capture

__all__ = ["LRPResult", "lrp", "lrp_maps"]


@dataclass
class LRPResult:
    """Relevance of one backward pass for a batch of ``B`` images.

    Attributes:
        score: ``[B]`` the propagated score, ``cos(embedding, target)``.
        tokens: ``[B, T]`` relevance of each token entering the first block (summed over the
            width); sums to ``score`` (``None`` for partial LRP).
        pixels: ``[B, H, W]`` relevance of each input pixel, summed over the colour channels
            (``None`` for partial LRP or when not asked for).
        absorbed: ``[B]`` relevance absorbed by the class and positional embeddings:
            ``pixels.sum() + absorbed == score``.
        attention: ``[B, heads, T]`` relevance of the last block's attention probabilities on
            the class token's row (the half Chefer et al. keep for partial LRP).
    """

    score: Tensor
    attention: Tensor
    tokens: Tensor | None = None
    pixels: Tensor | None = None
    absorbed: Tensor | None = None


# ----------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------


def _div(r: Tensor, z: Tensor, eps: float) -> Tensor:
    """``r / z`` with ``z`` moved ``eps`` away from 0 (a vanishing denominator passes nothing
    on: its numerators vanish with it)."""
    den = torch.where(z >= 0, z + eps, z - eps)
    return torch.where(den == 0, torch.zeros_like(r), r / den)


def _linear(x: Tensor, weight: Tensor, r: Tensor, eps: float) -> Tensor:
    """Alpha1-beta0 rule for ``y = x W^T (+ b)``: ``R_j = sum_k (x_j W_kj)^+ / z_k^+ R_k``."""
    wp, wn = weight.clamp_min(0), weight.clamp_max(0)
    xp, xn = x.clamp_min(0), x.clamp_max(0)
    s = _div(r, xp @ wp.T + xn @ wn.T, eps)
    return xp * (s @ wp) + xn * (s @ wn)


def _split(a: Tensor, b: Tensor, r: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """z-rule for ``y = a + b`` (elementwise): ``(a / y R, b / y R)``."""
    s = _div(r, a + b, eps)
    return a * s, b * s


def _product(a: Tensor, b: Tensor, r: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """z-rule for ``o = a @ b`` (batched): each factor receives the whole relevance, shared by
    contribution ``a_ij b_jd / o_id``; returns the halves kept for ``a`` and ``b``."""
    s = _div(r, a @ b, eps)
    return 0.5 * a * (s @ b.mT), 0.5 * b * (a.mT @ s)


# ----------------------------------------------------------------------------------------------
# Propagation
# ----------------------------------------------------------------------------------------------


def _mlp_parts(mlp: nn.Module) -> tuple[nn.Linear, list[nn.Module], nn.Linear]:
    mods = list(mlp.children()) if isinstance(mlp, nn.Sequential) else []
    if len(mods) < 2 or not isinstance(mods[0], nn.Linear) or not isinstance(mods[-1], nn.Linear) \
            or any(isinstance(m, nn.Linear) for m in mods[1:-1]):
        raise NotImplementedError("LRP needs an MLP of two linear layers around elementwise modules; "
                                  f"got {type(mlp).__name__}")
    return mods[0], mods[1:-1], mods[-1]


def _attention_parts(attn: nn.MultiheadAttention, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scaled queries, keys, values ``[B, H, T, dh]`` and probabilities ``[B, H, T, T]`` of a
    batch-first input, recomputed from the module's weights."""
    B, T, D = x.shape
    H = attn.num_heads
    dh = D // H
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).reshape(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)
    q = q * dh ** -0.5
    return q, k, v, (q @ k.mT).softmax(-1)


def _block(blk: nn.Module, x_in: Tensor, attn_out: Tensor, mlp_out: Tensor, r: Tensor,
           eps: float, through: bool = True) -> tuple[Tensor | None, Tensor]:
    """Relevance at one block's input from the relevance ``r`` at its output; also the
    relevance of its attention probabilities ``[B, H, T, T]``. Without ``through`` the
    propagation stops at the attention probabilities (the input's relevance is ``None``)."""
    B, T, D = x_in.shape
    mid = x_in + attn_out
    # MLP branch: y = mid + mlp(ln_2(mid))
    r_mid, r_mlp = _split(mid, mlp_out, r, eps)
    fc, middle, proj = _mlp_parts(blk.mlp)
    x2 = blk.ln_2(mid)
    h = fc(x2)
    for m in middle:
        h = m(h)
    r_h = _linear(h, proj.weight, r_mlp, eps)  # activation (and any norm) pass relevance through
    r_mid = r_mid + _linear(x2, fc.weight, r_h, eps)
    # attention branch: mid = x_in + out_proj(A V)
    r_in, r_att = _split(x_in, attn_out, r_mid, eps)
    attn = blk.attn
    x1 = blk.ln_1(x_in)
    q, k, v, a = _attention_parts(attn, x1)
    H = attn.num_heads
    o = (a @ v).transpose(1, 2).reshape(B, T, D)
    r_o = _linear(o, attn.out_proj.weight, r_att, eps).reshape(B, T, H, D // H).transpose(1, 2)
    r_a, r_v = _product(a, v, r_o, eps)
    if not through:
        return None, r_a
    r_q, r_kt = _product(q, k.mT, r_a, eps)  # the softmax passes relevance through
    r_qkv = torch.stack([r_q, r_kt.mT, r_v]).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * D)
    r_in = r_in + _linear(x1, attn.in_proj_weight, r_qkv, eps)
    return r_in, r_a


def _patch_pixels(visual: nn.Module, images: Tensor, r_patch: Tensor, eps: float) -> Tensor:
    """z^B rule through the patch embedding: pixel relevance ``[B, H, W]`` (channels summed)."""
    conv = visual.conv1
    p = conv.kernel_size
    if conv.stride != p or conv.padding not in ((0, 0), 0, "valid") or conv.groups != 1:
        raise NotImplementedError("LRP to the pixels needs a patch embedding with stride = kernel size")
    B, C, Hh, Ww = images.shape
    cols = F.unfold(images, p, stride=p).mT  # [B, G, C*ph*pw]
    w = conv.weight.reshape(conv.weight.shape[0], -1)  # [D, C*ph*pw]
    wp, wn = w.clamp_min(0), w.clamp_max(0)
    lo = images.amin((1, 2, 3)).view(B, 1, 1)
    hi = images.amax((1, 2, 3)).view(B, 1, 1)
    z = cols @ w.T - lo * wp.sum(1) - hi * wn.sum(1)  # [B, G, D], >= 0
    s = _div(r_patch, z, eps)
    r_cols = cols * (s @ w) - lo * (s @ wp) - hi * (s @ wn)
    return F.fold(r_cols.mT, (Hh, Ww), p, stride=p).sum(1)


@torch.no_grad()
def lrp(model: nn.Module, images: Tensor, targets: Tensor, *, partial: bool = False, pixels: bool = True,
        eps: float | None = None) -> LRPResult:
    """Propagate each image's target score back through the image tower (see the module notes).

    Args:
        model: an open_clip ViT CLIP (or its image tower) of a supported architecture.
        images: preprocessed ``[B, 3, H, W]`` on the model's device.
        targets: ``[B, d']`` the target text embedding of each image, or ``[d']`` for all
            (normalised here: the score is the cosine with the image embedding).
        partial: stop at the last block's attention (partial LRP): only that block is
            propagated through.
        pixels: carry the relevance on to the pixels (full LRP only).
        eps: denominator guard (default ``1e-12`` in float64, ``1e-6`` otherwise).

    Returns:
        :class:`LRPResult`.
    """
    visual = check_model_supported(model)
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a preprocessed [B, 3, H, W] tensor, got {got}")
    if images.shape[0] == 0:
        raise ValueError("empty batch: no images")
    if tuple(images.shape[-2:]) != tuple(visual.image_size):
        raise ValueError(f"images are {tuple(images.shape[-2:])} but the model expects {tuple(visual.image_size)}")
    dtype, dev = visual.proj.dtype, visual.proj.device
    x = images.to(device=dev, dtype=dtype)
    B = x.shape[0]
    t = torch.as_tensor(targets).to(device=dev, dtype=dtype)
    if t.ndim == 1:
        t = t.expand(B, -1)
    if t.ndim != 2 or t.shape != (B, visual.proj.shape[1]):
        raise ValueError(f"targets must be [{B}, {visual.proj.shape[1]}] (one text embedding per image), "
                         f"got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t.norm(dim=-1) == 0).any()):
        raise ValueError("targets must be finite, non-zero text embeddings")
    t = F.normalize(t, dim=-1)
    if eps is None:
        eps = 1e-12 if dtype == torch.float64 else 1e-6
    blocks = list(visual.transformer.resblocks)
    L = len(blocks)
    first = L - 1 if partial else 0
    names = [f"blocks.{l}.{s}" for l in range(first, L) for s in ("resid_pre", "attn_out", "mlp_out")]
    names += ["ln_post"] + ([] if partial else ["ln_pre"])
    was_training = visual.training
    visual.eval()
    try:
        with capture(model, names) as acts:
            out = visual(x)
        emb = out[0] if isinstance(out, tuple) else out
        # the head: score = x_post . w with w = proj t / |e|
        post = acts["ln_post"]
        post = post[:, 0] if post.ndim == 3 else post
        w = (t @ visual.proj.T) / emb.norm(dim=-1, keepdim=True)  # [B, D]
        score = (post * w).sum(-1)
        c = (post * w).clamp_min(0)  # alpha1-beta0 for one output: the positive contributions
        r_post = c * _div(score, c.sum(-1), eps).unsqueeze(-1)
        T = acts[f"blocks.{L - 1}.resid_pre"].shape[1]
        r = torch.zeros(B, T, post.shape[-1], dtype=dtype, device=dev)
        r[:, 0] = r_post  # ln_post and the class-token pooling pass relevance through
        r_attn = None
        for l in range(L - 1, first - 1, -1):
            r_in, r_a = _block(blocks[l], acts[f"blocks.{l}.resid_pre"], acts[f"blocks.{l}.attn_out"],
                               acts[f"blocks.{l}.mlp_out"], r, eps, through=not partial)
            if l == L - 1:
                r_attn = r_a[:, :, 0]  # [B, H, T]: the class token's row
            if r_in is None:
                break
            r = r_in
        assert r_attn is not None
        if partial:
            return LRPResult(score=score, attention=r_attn)
        tokens = r.sum(-1)
        if not pixels:
            return LRPResult(score=score, attention=r_attn, tokens=tokens)
        # ln_pre passes relevance through; the embeddings enter as tokens + positions
        patches = F.conv2d(x, visual.conv1.weight, visual.conv1.bias, stride=visual.conv1.stride)
        tok = torch.cat([visual.class_embedding.to(dtype).expand(B, 1, -1), patches.flatten(2).mT], 1)
        r_tok, r_pos = _split(tok, visual.positional_embedding.to(dtype).expand_as(tok), r, eps)
        pix = _patch_pixels(visual, x, r_tok[:, 1:], eps)
        absorbed = r_pos.sum((1, 2)) + r_tok[:, 0].sum(-1)
        return LRPResult(score=score, attention=r_attn, tokens=tokens, pixels=pix, absorbed=absorbed)
    finally:
        visual.train(was_training)


_CHUNK = 8  # images per pass (bounds the kept activations of full LRP)


def lrp_maps(model: nn.Module, images: Tensor, targets: Tensor, *, partial: bool = False) -> Tensor:
    """Patch-grid maps ``[B, gh, gw]`` for the segmentation comparison.

    Full LRP: the pixels' relevance summed within each patch (Chefer et al. score the pixel
    map itself; pooling it gives every method the same grid and post-processing; the pixel
    map is :attr:`LRPResult.pixels`). Partial LRP: the class token's row of the last block's
    attention relevance, clipped at 0 and averaged over heads, on the patches.
    """
    visual = check_model_supported(model)
    grid = tuple(visual.grid_size)
    parts = []
    for i in range(0, images.shape[0], _CHUNK):
        res = lrp(model, images[i:i + _CHUNK], targets[i:i + _CHUNK], partial=partial)
        if partial:
            rows = res.attention.clamp_min(0).mean(1)[:, 1:]
            parts.append(rows.reshape(rows.shape[0], *grid))
        else:
            assert res.pixels is not None
            ph, pw = res.pixels.shape[-2] // grid[0], res.pixels.shape[-1] // grid[1]
            parts.append(F.avg_pool2d(res.pixels[:, None], (ph, pw))[:, 0] * (ph * pw))
    return torch.cat(parts)
