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

**Rule sets** (``rules=``). The rules above are the course's (``"course"``): one joint
normalisation of the linear layers' positive contributions, a sign-aware ``eps`` guard, and the
head merged into one weight. Chefer et al.'s evaluation code ran two others, offered here for
the paper's protocol:

* ``"lrp"`` (their ``layers_lrp``, for LRP and partial LRP): a linear layer normalises
  ``x+ W+`` and ``x- W-`` *separately*, and each part receives all of the output's relevance
  (so relevance is not conserved: a layer where both parts are non-zero hands on twice its
  input);
* ``"ours"`` (their ``layers_ours``, behind their transformer attribution): the joint linear
  rule, and residual additions rescaled so that each addend's total relevance is its share
  ``|sum a| / (|sum a| + |sum b|)`` of the output's (per image);

both with their stabiliser (``z + 1e-9``, and 0 where ``z == 0``; the patch embedding's
``Za + 1e-9``), the queries' product ``Q K^T`` taken before the ``1/sqrt(dh)`` scale, copies
(the residual stream's branches, the class token's selection) rescaled by ``x / (x + 1e-9)``,
and the head as the model's two linear layers -- the projection ``proj`` and the text
classifier (the normalised embedding times ``logit_scale * t``) -- started from a relevance of
1 at the target logit (one-hot), as their ``generate_LRP`` starts.

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
from ..engine.text import zero_shot_prediction

__all__ = ["LRP_RULES", "LRPResult", "lrp", "lrp_maps"]

LRP_RULES: tuple[str, ...] = ("course", "lrp", "ours")
"""Values of :func:`lrp`'s ``rules``: the course's rules, Chefer et al.'s ``layers_lrp`` (LRP and
partial LRP in their table) and their ``layers_ours`` (their transformer attribution)."""


@dataclass
class LRPResult:
    """Relevance of one backward pass for a batch of ``B`` images.

    Attributes:
        score: ``[B]`` the target's score: ``cos(embedding, target)`` under the course's rules,
            the model's logit ``logit_scale * cos`` under Chefer's.
        tokens: ``[B, T]`` relevance of each token entering the first block (summed over the
            width); under the course's rules it sums to ``score`` (``None`` for partial LRP).
        pixels: ``[B, H, W]`` relevance of each input pixel, summed over the colour channels
            (``None`` for partial LRP or when not asked for).
        absorbed: ``[B]`` relevance absorbed by the class and positional embeddings:
            ``pixels.sum() + absorbed == score`` under the course's rules.
        attention: ``[B, heads, T]`` relevance of the last block's attention probabilities on
            the class token's row (the half Chefer et al. keep for partial LRP).
        start: ``[B]`` the relevance the propagation started from: ``score`` (the course's
            rules) or 1 at the target logit (Chefer's).
        attention_maps: with ``all_attention=True``, every block's attention relevance
            ``[B, heads, T, T]``, first block first (what Chefer et al.'s transformer
            attribution multiplies by the attention's gradient).
        labels: ``[B]`` each image's predicted class when the targets were predicted from
            ``classes`` (else ``None``).
    """

    score: Tensor
    attention: Tensor
    tokens: Tensor | None = None
    pixels: Tensor | None = None
    absorbed: Tensor | None = None
    start: Tensor | None = None
    attention_maps: list[Tensor] | None = None
    labels: Tensor | None = None


# ----------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------

_CHEFER_EPS = 1e-9  # Chefer et al.'s stabiliser


@dataclass(frozen=True)
class _Rules:
    """One rule set: how linear layers share (``separate``), how additions share
    (``normalised_add``), and which stabiliser guards divisions (``chefer`` or the course's
    sign-aware ``eps``)."""

    separate: bool = False
    normalised_add: bool = False
    chefer: bool = False
    eps: float = 0.0

    def div(self, r: Tensor, z: Tensor) -> Tensor:
        if self.chefer:
            # z + 1e-9 (Chefer et al.'s safe_divide writes it as two clamps, z.clamp(min=1e-9) +
            # z.clamp(max=1e-9): the same sum, term for term), 1e-9 where that sum is 0, and 0
            # wherever z itself is 0
            den = z + _CHEFER_EPS
            den = den + (den == 0).to(den.dtype) * _CHEFER_EPS
            return r / den * (z != 0).to(z.dtype)
        return _div(r, z, self.eps)

    def div_nonnegative(self, r: Tensor, z: Tensor) -> Tensor:
        """:meth:`div` for a ``z`` that cannot be negative (sums of products of like signs):
        with the course's ``eps > 0`` the denominator is ``z + eps`` (what the sign-aware guard
        picks for every ``z >= 0``, -0.0 included), without testing the signs."""
        if self.chefer or self.eps <= 0:
            return self.div(r, z)
        return r / (z + self.eps)

    def copy(self, x: Tensor, r: Tensor) -> Tensor:
        """A copied or selected tensor ``x`` receiving relevance ``r`` (Chefer's ``Clone`` and
        ``IndexSelect`` rescale by ``x / (x + 1e-9)``; the course passes ``r`` on)."""
        return x * self.div(r, x) if self.chefer else r


def _rules(name: str, eps: float) -> _Rules:
    if name == "course":
        return _Rules(eps=eps)
    if name == "lrp":
        return _Rules(separate=True, chefer=True)
    if name == "ours":
        return _Rules(normalised_add=True, chefer=True)
    raise ValueError(f"rules must be one of {', '.join(map(repr, LRP_RULES))}, got {name!r}")


def _as_rules(rules: float | _Rules) -> _Rules:
    return rules if isinstance(rules, _Rules) else _Rules(eps=float(rules))


def _div(r: Tensor, z: Tensor, eps: float) -> Tensor:
    """``r / z`` with ``z`` moved ``eps`` away from 0 (a vanishing denominator passes nothing
    on: its numerators vanish with it)."""
    den = torch.where(z >= 0, z + eps, z - eps)
    if eps > 0:  # then no denominator is 0: |den| >= eps
        return r / den
    return torch.where(den == 0, torch.zeros_like(r), r / den)


def _linear(x: Tensor, weight: Tensor, r: Tensor, rules: float | _Rules) -> Tensor:
    """Alpha1-beta0 rule for ``y = x W^T (+ b)`` (``rules``: a rule set, or the course's ``eps``).

    Joint (the course's, Chefer's ``layers_ours``): ``R_j = sum_k (x_j W_kj)^+ / z_k^+ R_k``
    with ``z^+ = x+ W+^T + x- W-^T``. Separate (Chefer's ``layers_lrp``): the parts
    ``x+ W+`` and ``x- W-`` are normalised by their own sums, and each receives all of ``R_k``.
    ``weight`` may carry leading batch axes (one weight per image).
    """
    rs = _as_rules(rules)
    wp, wn = weight.clamp_min(0), weight.clamp_max(0)
    xp, xn = x.clamp_min(0), x.clamp_max(0)
    zp, zn = xp @ wp.mT, xn @ wn.mT
    if rs.separate:
        return xp * (rs.div_nonnegative(r, zp) @ wp) + xn * (rs.div_nonnegative(r, zn) @ wn)
    s = rs.div_nonnegative(r, zp + zn)  # x+ W+ and x- W- are both >= 0
    return xp * (s @ wp) + xn * (s @ wn)


def _split(a: Tensor, b: Tensor, r: Tensor, rules: float | _Rules) -> tuple[Tensor, Tensor]:
    """z-rule for ``y = a + b`` (elementwise): ``(a / y R, b / y R)``. Chefer's ``layers_ours``
    then rescales each part, per image, so that its total is ``|sum a| / (|sum a| + |sum b|)``
    of the total ``R`` (resp. ``b``)."""
    rs = _as_rules(rules)
    s = rs.div(r, a + b)
    ra, rb = a * s, b * s
    if not rs.normalised_add:
        return ra, rb
    dims = tuple(range(1, r.ndim))
    sa, sb, total = ra.sum(dims, keepdim=True), rb.sum(dims, keepdim=True), r.sum(dims, keepdim=True)
    whole = sa.abs() + sb.abs()
    fa, fb = rs.div(sa.abs(), whole) * total, rs.div(sb.abs(), whole) * total
    return ra * rs.div(fa, sa), rb * rs.div(fb, sb)


def _product(a: Tensor, b: Tensor, r: Tensor, rules: float | _Rules) -> tuple[Tensor, Tensor]:
    """z-rule for ``o = a @ b`` (batched): each factor receives the whole relevance, shared by
    contribution ``a_ij b_jd / o_id``; returns the halves kept for ``a`` and ``b``."""
    s = _as_rules(rules).div(r, a @ b)
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
    """Unscaled queries, keys, values ``[B, H, T, dh]`` and probabilities ``[B, H, T, T]`` of a
    batch-first input, recomputed from the module's weights."""
    B, T, D = x.shape
    H = attn.num_heads
    dh = D // H
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).reshape(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)
    return q, k, v, ((q * dh ** -0.5) @ k.mT).softmax(-1)


def _block(blk: nn.Module, x_in: Tensor, attn_out: Tensor, mlp_out: Tensor, r: Tensor,
           rules: _Rules, through: bool = True) -> tuple[Tensor | None, Tensor]:
    """Relevance at one block's input from the relevance ``r`` at its output; also the
    relevance of its attention probabilities ``[B, H, T, T]``. Without ``through`` the
    propagation stops at the attention probabilities (the input's relevance is ``None``)."""
    B, T, D = x_in.shape
    mid = x_in + attn_out
    # MLP branch: y = mid + mlp(ln_2(mid))
    r_mid, r_mlp = _split(mid, mlp_out, r, rules)
    fc, middle, proj = _mlp_parts(blk.mlp)
    x2 = blk.ln_2(mid)
    h = fc(x2)
    for m in middle:
        h = m(h)
    r_h = _linear(h, proj.weight, r_mlp, rules)  # activation (and any norm) pass relevance through
    r_mid = rules.copy(mid, r_mid) + rules.copy(mid, _linear(x2, fc.weight, r_h, rules))
    # attention branch: mid = x_in + out_proj(A V)
    r_in, r_att = _split(x_in, attn_out, r_mid, rules)
    attn = blk.attn
    x1 = blk.ln_1(x_in)
    q, k, v, a = _attention_parts(attn, x1)
    H = attn.num_heads
    o = (a @ v).transpose(1, 2).reshape(B, T, D)
    r_o = _linear(o, attn.out_proj.weight, r_att, rules).reshape(B, T, H, D // H).transpose(1, 2)
    r_a, r_v = _product(a, v, r_o, rules)
    if not through:
        return None, r_a
    # the softmax passes relevance through; the course shares Q K^T on the scaled queries (the
    # z-rule is scale-free but for its guard), Chefer et al. on the unscaled ones
    r_q, r_kt = _product(q if rules.chefer else q * (D // H) ** -0.5, k.mT, r_a, rules)
    r_qkv = torch.stack([r_q, r_kt.mT, r_v]).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * D)
    r_in = rules.copy(x_in, r_in) + rules.copy(x_in, _linear(x1, attn.in_proj_weight, r_qkv, rules))
    return r_in, r_a


def _patch_pixels(visual: nn.Module, images: Tensor, r_patch: Tensor, rules: _Rules) -> Tensor:
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
    s = r_patch / (z + _CHEFER_EPS) if rules.chefer else _div(r_patch, z, rules.eps)
    r_cols = cols * (s @ w) - lo * (s @ wp) - hi * (s @ wn)
    return F.fold(r_cols.mT, (Hh, Ww), p, stride=p).sum(1)


def _unit_targets(t: Tensor) -> Tensor:
    """Target text embeddings ``[B, d']``, normalised (a clear error for non-finite or zero rows)."""
    if not bool(torch.isfinite(t).all()) or bool((t.norm(dim=-1) == 0).any()):
        raise ValueError("targets must be finite, non-zero text embeddings")
    return F.normalize(t, dim=-1)


def _logit_scale(model: nn.Module, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The model's ``logit_scale.exp()`` (1 for a tower without one)."""
    s = getattr(model, "logit_scale", None)
    if s is None:
        return torch.ones((), dtype=dtype, device=device)
    return s.detach().to(device=device, dtype=dtype).exp()


@torch.no_grad()
def lrp(model: nn.Module, images: Tensor, targets: Tensor | None, *, partial: bool = False, pixels: bool = True,
        eps: float | None = None, rules: str = "course", all_attention: bool = False,
        classes: Tensor | None = None) -> LRPResult:
    """Propagate each image's target score back through the image tower (see the module notes).

    Args:
        model: an open_clip ViT CLIP (or its image tower) of a supported architecture.
        images: preprocessed ``[B, 3, H, W]`` on the model's device.
        targets: ``[B, d']`` the target text embedding of each image, or ``[d']`` for all
            (normalised here: the score is the cosine with the image embedding); ``None`` with
            ``classes``.
        partial: stop at the last block's attention (partial LRP): only that block is
            propagated through.
        pixels: carry the relevance on to the pixels (full LRP only).
        eps: the course's denominator guard (default ``1e-12`` in float64, ``1e-6``
            otherwise); Chefer's rule sets use their own stabiliser.
        rules: ``"course"`` (default), or Chefer et al.'s ``"lrp"`` or ``"ours"`` (see the
            module notes; :data:`LRP_RULES`).
        all_attention: also return every block's attention relevance
            (:attr:`LRPResult.attention_maps`; not with ``partial``).
        classes: ``[C, d']`` class text embeddings (a zero-shot classifier), with
            ``targets=None``: each image's target is its zero-shot prediction among them (the
            class of largest ``unit embedding . class``, as
            :func:`~helpers.methods.segmentation.predicted_classes` predicts), read off the
            propagation's own forward pass (:attr:`LRPResult.labels`).

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
    if partial and all_attention:
        raise ValueError("all_attention needs the whole propagation (partial=False)")
    dtype, dev = visual.proj.dtype, visual.proj.device
    x = images.to(device=dev, dtype=dtype)
    B = x.shape[0]
    width = visual.proj.shape[1]
    if (targets is None) == (classes is None):
        raise ValueError("give the targets, or the classes to predict them from (targets=None), not both")
    if targets is None:
        E = torch.as_tensor(classes).to(device=dev, dtype=dtype)
        if E.ndim != 2 or E.shape[0] == 0 or E.shape[1] != width or not bool(torch.isfinite(E).all()):
            raise ValueError(f"classes must be finite [C, {width}] class text embeddings, got {tuple(E.shape)}")
        t = None
    else:
        t = torch.as_tensor(targets).to(device=dev, dtype=dtype)
        if t.ndim == 1:
            t = t.expand(B, -1)
        if t.ndim != 2 or t.shape != (B, width):
            raise ValueError(f"targets must be [{B}, {width}] (one text embedding per image), got {tuple(t.shape)}")
        t = _unit_targets(t)
    if eps is None:
        eps = 1e-12 if dtype == torch.float64 else 1e-6
    rs = _rules(rules, eps)
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
        labels = None
        if t is None:  # the zero-shot prediction, from this pass
            labels = zero_shot_prediction(F.normalize(emb, dim=-1), E)
            t = _unit_targets(E[labels])
        post = acts["ln_post"]
        post = post[:, 0] if post.ndim == 3 else post
        if rules == "course":
            # the head merged: score = x_post . w with w = proj t / |e|
            w = (t @ visual.proj.T) / emb.norm(dim=-1, keepdim=True)  # [B, D]
            score = (post * w).sum(-1)
            c = (post * w).clamp_min(0)  # alpha1-beta0 for one output: the positive contributions
            r_post = c * _div(score, c.sum(-1), eps).unsqueeze(-1)
            start = score
        else:
            # the head as the model's two linear layers, from 1 at the target logit: the text
            # classifier (the unit embedding times logit_scale * t), then the projection
            unit = F.normalize(emb, dim=-1)
            w_text = _logit_scale(model, dtype, dev) * t  # [B, d']: each image's target row
            score = (unit * w_text).sum(-1)
            start = torch.ones_like(score)
            r_emb = _linear(unit[:, None], w_text[:, None], start[:, None, None], rs)[:, 0]  # [B, d']
            r_post = _linear(post, visual.proj.T, r_emb, rs)
            r_post = rs.copy(post, r_post)  # the class token's selection (ln_post passes it on)
        T = acts[f"blocks.{L - 1}.resid_pre"].shape[1]
        r = torch.zeros(B, T, post.shape[-1], dtype=dtype, device=dev)
        r[:, 0] = r_post  # ln_post and the class-token pooling pass relevance through
        r_attn = None
        maps: list[Tensor] = []
        for l in range(L - 1, first - 1, -1):
            r_in, r_a = _block(blocks[l], acts[f"blocks.{l}.resid_pre"], acts[f"blocks.{l}.attn_out"],
                               acts[f"blocks.{l}.mlp_out"], r, rs, through=not partial)
            if l == L - 1:
                r_attn = r_a[:, :, 0]  # [B, H, T]: the class token's row
            if all_attention:
                maps.append(r_a)
            if r_in is None:
                break
            r = r_in
        assert r_attn is not None
        kept = maps[::-1] if all_attention else None
        if partial:
            return LRPResult(score=score, attention=r_attn, start=start, labels=labels)
        tokens = r.sum(-1)
        if not pixels:
            return LRPResult(score=score, attention=r_attn, tokens=tokens, start=start, attention_maps=kept,
                             labels=labels)
        # ln_pre passes relevance through; the embeddings enter as tokens + positions
        patches = F.conv2d(x, visual.conv1.weight, visual.conv1.bias, stride=visual.conv1.stride)
        tok = torch.cat([visual.class_embedding.to(dtype).expand(B, 1, -1), patches.flatten(2).mT], 1)
        r_tok, r_pos = _split(tok, visual.positional_embedding.to(dtype).expand_as(tok), r, rs)
        pix = _patch_pixels(visual, x, r_tok[:, 1:], rs)
        absorbed = r_pos.sum((1, 2)) + r_tok[:, 0].sum(-1)
        return LRPResult(score=score, attention=r_attn, tokens=tokens, pixels=pix, absorbed=absorbed, start=start,
                         attention_maps=kept, labels=labels)
    finally:
        visual.train(was_training)


_CHUNK = 8  # images per pass (bounds the kept activations of full LRP)


def lrp_maps(model: nn.Module, images: Tensor, targets: Tensor | None, *, partial: bool = False, rules: str = "course",
             pixel_map: bool = False, classes: Tensor | None = None) -> Tensor:
    """Maps for the segmentation comparison.

    Full LRP: the pixels' relevance summed within each patch, ``[B, gh, gw]`` (pooling gives
    every method the same grid and post-processing), or with ``pixel_map`` the pixel map
    itself, ``[B, H, W]``, as Chefer et al. score it. Partial LRP: the class token's row of the
    last block's attention relevance, clipped at 0 and averaged over heads, on the patches.
    ``rules`` as in :func:`lrp`; so are ``targets`` and ``classes`` (with ``classes`` and
    ``targets=None``, each image's target is predicted from the same forward pass).
    """
    visual = check_model_supported(model)
    grid = tuple(visual.grid_size)
    parts = []
    for i in range(0, images.shape[0], _CHUNK):
        res = lrp(model, images[i:i + _CHUNK], None if targets is None else targets[i:i + _CHUNK], partial=partial,
                  rules=rules, classes=classes)
        if partial:
            rows = res.attention.clamp_min(0).mean(1)[:, 1:]
            parts.append(rows.reshape(rows.shape[0], *grid))
        elif pixel_map:
            assert res.pixels is not None
            parts.append(res.pixels)
        else:
            assert res.pixels is not None
            ph, pw = res.pixels.shape[-2] // grid[0], res.pixels.shape[-1] // grid[1]
            parts.append(F.avg_pool2d(res.pixels[:, None], (ph, pw))[:, 0] * (ph * pw))
    return torch.cat(parts)
