"""Exact decomposition of a CLIP-ViT image embedding into layers, heads and tokens.

The image embedding of a ViT CLIP is ``proj^T LN_post(z)`` where ``z`` is the residual
stream at the class token after the last block::

    z = z0 + sum_l attn_l + sum_l mlp_l

``LN_post`` is affine once the per-image standard deviation ``sigma`` of ``z`` is held fixed,
and its mean subtraction is the linear centring map ``c -> c - mean(c)``. So every summand
``c`` maps linearly into the joint image-text space::

    c  ->  ((c - mean(c)) * gamma / sigma) @ proj

and these images, plus the constant ``beta @ proj``, add up exactly to ``encode_image``.
(The paper splits the mean and the bias evenly over the summands instead; both conventions
are exact. Centring each piece keeps a component's value independent of how finely the rest
is split.)

Attention at the class token splits further over heads ``h`` and source tokens ``i``::

    attn_l = sum_h sum_i a[h, i] * (W_O^h v_i^h + b_O / H)      (times LayerScale if any)

with ``v_i^h = W_V^h x_i + b_V^h``. The output-projection bias is shared among heads evenly
and among tokens by attention weight, so per-head terms sum to the layer term and per-token
terms sum to the per-head terms.

Everything is captured through the named hook sites of :mod:`helpers.engine.hooks` (``ln_pre``,
each block's ``ln_1``, ``attn_out`` and ``mlp_out``, and ``ln_post.in``) on stock open_clip
modules; the hooks only read, and they are removed when the call returns, so the model
behaves exactly as before.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerScale, VisionTransformer
from torch import Tensor, nn

from .components import Components, DirectEffects, max_deviation, score_components, token_text_scores
from .hooks import run_tower
from .images import check_batch
from .labels import Selection, resolve_indices
from .models import ModelInfo, model_info
from .support import check_tower
from .text import text_matrix

__all__ = ["Components", "CONVENTIONS", "Decomposition", "Decomposer", "decompose", "check_model_supported"]

CONVENTIONS: tuple[str, ...] = ("course", "reference")
"""Values of :meth:`Decomposition.token_scores`' ``convention``: how the ``ln_post`` mean and bias
and the out-projection bias are split among the summands (the course's, or the paper's code's)."""

Index = Selection


# ----------------------------------------------------------------------------------------------
# Model checks and per-model constants
# ----------------------------------------------------------------------------------------------


def check_model_supported(model: nn.Module) -> VisionTransformer:
    """Return the model's ViT image tower, or raise :class:`~helpers.engine.models.UnsupportedModelError`
    saying why (the rules are :data:`helpers.engine.support.RULES`)."""
    return check_tower(model)


class _LayerMaps:
    """Per-layer maps from head value-space / residual space into the joint space."""

    def __init__(self, visual: VisionTransformer, dtype: torch.dtype, device: torch.device) -> None:
        with torch.no_grad():
            proj = visual.proj.to(device, dtype)
            ln = visual.ln_post
            width = proj.shape[0]
            gamma = ln.weight.to(device, dtype) if ln.weight is not None else torch.ones(width, device=device, dtype=dtype)
            beta = ln.bias.to(device, dtype) if ln.bias is not None else torch.zeros(width, device=device, dtype=dtype)
            gp = gamma[:, None] * proj
            self.G = gp - gp.mean(0, keepdim=True)  # centring, gamma, proj: [D, d']
            self.const = beta @ proj
            self.g = gp.sum(0)  # gamma @ proj: where a summand's channel mean goes [d']
            self.eps = float(ln.eps)
            Q, B, BG, MW, MB = [], [], [], [], []
            for blk in visual.transformer.resblocks:
                attn: nn.MultiheadAttention = blk.attn
                H = attn.num_heads
                dh = width // H
                ls = blk.ls_1.gamma.to(device, dtype) if isinstance(blk.ls_1, LayerScale) else torch.ones(width, device=device, dtype=dtype)
                wo_t = attn.out_proj.weight.to(device, dtype).t() * ls[None, :]  # [D_in, D]
                Q.append((wo_t @ self.G).reshape(H, dh, -1))  # [H, dh, d']
                bo = attn.out_proj.bias
                bo = bo.to(device, dtype) if bo is not None else torch.zeros(width, device=device, dtype=dtype)
                B.append(((bo * ls) @ self.G / H).expand(H, -1).clone())  # [H, d']
                BG.append((bo * ls) @ self.G)  # [d']
                MW.append(wo_t.mean(1).reshape(H, dh))  # each head's channel mean of W_O^h v, per value dim
                MB.append((bo * ls).mean())
            self.Q = torch.stack(Q)  # [L, H, dh, d']
            self.B = torch.stack(B)  # [L, H, d']
            # for the reference's convention (token_scores(convention="reference")): the bias
            # through the centred map, each head's channel-mean map, and the bias's channel mean
            self.BG = torch.stack(BG)  # [L, d']
            self.MW = torch.stack(MW)  # [L, H, dh]
            self.MB = torch.stack(MB)  # [L]


# ----------------------------------------------------------------------------------------------
# Result object
# ----------------------------------------------------------------------------------------------


@dataclass
class Decomposition(DirectEffects):
    """Direct contributions to a batch of image embeddings, in the joint space.

    All terms are already divided by the per-image LN scale; ``scale`` (per image) is an extra
    factor applied on top (1 for raw embeddings, ``1/||embedding||`` after :meth:`normalized`).

    Attributes:
        embedding: the model's own ``encode_image`` output ``[B, d']`` (times ``scale``).
        embed: the class-token embedding term ``[B, d']`` (``ln_pre`` output).
        attn: per-layer attention terms ``[B, L, d']``.
        mlp: per-layer MLP terms ``[B, L, d']``.
        heads: per-head attention terms ``[B, L, H, d']`` (``None`` unless requested).
        const: the ``ln_post`` bias term ``[d']``, the same for every image (times ``scale``).
        sigma: per-image standard deviation used by the linearised ``ln_post``.
    """

    embedding: Tensor
    embed: Tensor
    attn: Tensor
    mlp: Tensor
    heads: Tensor | None
    const: Tensor
    sigma: Tensor
    scale: Tensor
    grid_size: tuple[int, int]
    _maps: _LayerMaps | None = field(default=None, repr=False)
    _probs: list[Tensor] | None = field(default=None, repr=False)  # per layer [B, H, T]
    _values: list[Tensor] | None = field(default=None, repr=False)  # per layer [B, T, H, dh]
    text_scores: Components | None = None
    _mu: Tensor | None = field(default=None, repr=False)  # [B] channel mean of the class token entering ln_post

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def n_heads(self) -> int:
        if self.heads is not None:
            return self.heads.shape[2]
        if self._maps is not None:
            return self._maps.Q.shape[1]
        raise AttributeError("heads were not decomposed")

    @property
    def n_tokens(self) -> int:
        return 1 + self.grid_size[0] * self.grid_size[1]

    # -- summaries --------------------------------------------------------------------------------
    _no_heads = "heads were not decomposed: call the decomposer with heads=True"

    def _const_rows(self) -> Tensor:
        return self.const[None, :] * self.scale[:, None]

    def reconstruct(self) -> Tensor:
        """Sum of every term: equals :attr:`embedding` up to floating-point error."""
        return self.embed + self.attn.sum(1) + self.mlp.sum(1) + self._const_rows()

    def max_error(self, relative: bool = True) -> float:
        """Largest deviation of :meth:`reconstruct` from the model's embedding."""
        return max_deviation(self.reconstruct(), self.embedding, relative)

    def normalized(self) -> "Decomposition":
        """The same decomposition of the unit-normalised embedding (cosine-similarity scale)."""
        inv = 1.0 / self.embedding.norm(dim=-1)
        return self.rescaled(inv)

    def rescaled(self, factor: Tensor) -> "Decomposition":
        f1 = factor[:, None]
        ts = self.text_scores
        if ts is not None:
            shape = [1] * ts.data.ndim
            shape[0] = -1
            ts = Components(ts.data * factor.reshape(shape), ts.axes, ts.labels)
        return replace(
            self, embedding=self.embedding * f1, embed=self.embed * f1, attn=self.attn * f1[..., None],
            mlp=self.mlp * f1[..., None], heads=None if self.heads is None else self.heads * f1[..., None, None],
            scale=self.scale * factor, text_scores=ts)

    # -- tokens -------------------------------------------------------------------------------------
    def _check_tokens(self) -> None:
        if self._probs is None or self._values is None or self._maps is None:
            raise AttributeError("token terms were not kept: call the decomposer with tokens=True")

    def _token_factor(self) -> Tensor:
        return self.scale / self.sigma  # [B]

    def _per_layer(self, layers: Index, heads: Index, texts: Tensor | None, keep_head: bool,
                   convention: str = "course") -> list[Tensor]:
        """Per-layer token terms of the chosen heads: against ``texts`` [M, d'] when given
        (``[B, T, (h,) M]``), else in the joint space (``[B, T, (h,) d']``), under the course's
        convention or the reference code's (see :meth:`token_scores`)."""
        self._check_tokens()
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {', '.join(map(repr, CONVENTIONS))}, got {convention!r}")
        layers_ = resolve_indices(layers, self.n_layers, "layer", sort=False)
        hs = torch.as_tensor(resolve_indices(heads, self.n_heads, "head", sort=False), device=self.embedding.device)
        m = self._maps
        t = texts.T if texts is not None else torch.eye(m.const.shape[-1], dtype=m.const.dtype, device=m.const.device)
        out = []
        for layer in layers_:
            a, v = self._probs[layer][:, hs], self._values[layer][:, :, hs]
            Q = m.Q[layer][hs] @ t  # [h, dh, M]
            if convention == "course":
                out.append(token_text_scores(a, v, Q, m.B[layer][hs] @ t, keep_head))
                continue
            # the reference: each (token, head) summand keeps its own channel mean, takes b_O / (T H)
            # whatever its attention, and shares the stream's mean mu and the ln_post bias evenly
            # over the K T H summands of its layer's attention (K = 2L + 1)
            T, H, K = self.n_tokens, self.n_heads, 2 * self.n_layers + 1
            gt, ct = m.g @ t, m.const @ t  # [M]
            Qr = Q + m.MW[layer][hs][..., None] * gt  # a v (W_O^h G + mean_D(W_O^h) g)
            per = token_text_scores(a, v, Qr, torch.zeros_like(Qr[:, 0]), keep_head)
            assert self._mu is not None
            shared = (m.BG[layer] @ t + m.MB[layer] * gt)[None] / (T * H) \
                - (self._mu[:, None] * gt[None]) / (K * T * H) + self.sigma[:, None] * ct[None] / (K * T * H)
            shared = shared[:, None, None] if keep_head else shared[:, None] * len(hs)  # [B, 1, (1,) M]
            out.append(per + shared)
        return out

    def head_inputs(self, layer: int, head: int) -> "HeadInputs":
        """What head ``(layer, head)`` adds to the class token, in parts a learner can recombine:
        its attention weights ``[B, T]``, its values ``[B, T, dh]`` and the linear map ``[dh, d']``
        and bias ``[d']`` that carry a value (already weighted) into the joint space, at this
        decomposition's scale (so ``sum_t a_t (v_t W + b)`` is the head's term for each image)."""
        self._check_tokens()
        layer = resolve_indices(layer, self.n_layers, "layer", sort=False)[0]
        head = resolve_indices(head, self.n_heads, "head", sort=False)[0]
        f = self._token_factor()
        return HeadInputs(attn=self._probs[layer][:, head].clone(), values=self._values[layer][:, :, head].clone(),
                          to_joint=self._maps.Q[layer, head][None] * f[:, None, None],
                          bias=self._maps.B[layer, head][None] * f[:, None], grid=tuple(self.grid_size))

    def tokens(self, layers: Index = None, heads: Index = None) -> Components:
        """Per-token attention terms ``(image, token, dim)``, summed over the chosen layers/heads.

        Token 0 is the class token; tokens ``1..`` are patches in row-major order. Summing over
        tokens gives the chosen layers' (heads') attention terms.
        """
        return score_components(self._per_layer(layers, heads, None, False), set(), self._token_factor(),
                                 last="dim")

    def joint(self, layers: Index = None, heads: Index = None) -> Components:
        """The full joint terms ``(image, layer, token, head, dim)`` for the chosen layers/heads.

        This materialises ``B x L x T x H x d'`` numbers: prefer :meth:`token_scores`.
        """
        return score_components(self._per_layer(layers, heads, None, True), {"layer", "head"},
                                 self._token_factor(), last="dim")

    def token_scores(self, texts: Tensor, layers: Index = None, heads: Index = None,
                     keep: Iterable[str] = (), convention: str = "course") -> Components:
        """Per-token contributions to the dot product with each text, contracted early.

        Returns ``(image, [layer], token, [head], text)``: ``layer``/``head`` axes only when
        named in ``keep``. Never forms the ``dim`` axis per token.

        ``convention`` splits the ``ln_post`` mean, its bias and the out-projection bias among
        the summands: ``"course"`` (default; each summand centred by its own channel mean, the
        bias ``b_O / H`` per head shared over tokens by attention weight, ``beta`` a term of its
        own) or ``"reference"`` (the paper's code: a (layer, token, head) summand is
        ``[gamma (a W_O^h v + b_O / (T H) - mu / (K T H)) / sigma + beta / (K T H)] proj`` with
        ``mu`` the stream's channel mean and ``K = 2L + 1``). Both split the embedding exactly;
        they differ per token by a channel-mean part along ``gamma @ proj`` and by where the bias
        goes.
        """
        keep = set(keep)
        if not keep <= {"layer", "head"}:
            raise ValueError(f"keep may name 'layer' and/or 'head', got {sorted(keep)}")
        texts = text_matrix(texts, width=self.embedding.shape[-1]).to(self.embedding)
        return score_components(self._per_layer(layers, heads, texts, "head" in keep, convention), keep,
                                self._token_factor())

    def spatial_map(self, scores: Components) -> Tensor:
        """Reshape a token-axis score tensor's patch tokens to the image grid.

        ``scores`` must have a ``token`` axis; returns the patch part with that axis replaced by
        two axes ``(rows, cols)`` (class token dropped).
        """
        ax = scores.axis("token")
        patches = scores.data.narrow(ax, 1, scores.data.shape[ax] - 1)
        shape = list(patches.shape)
        shape[ax:ax + 1] = list(self.grid_size)
        return patches.reshape(shape)


@dataclass(frozen=True)
class HeadInputs:
    """One head's parts for a batch of images (see :meth:`Decomposition.head_inputs`):
    ``attn`` [B, T], ``values`` [B, T, dh], ``to_joint`` [B, dh, d'], ``bias`` [B, d']; token 0 is
    the class token, tokens ``1..`` the patches of a ``grid`` in row-major order."""

    attn: Tensor
    values: Tensor
    to_joint: Tensor
    bias: Tensor
    grid: tuple[int, int]


# ----------------------------------------------------------------------------------------------
# The decomposer
# ----------------------------------------------------------------------------------------------


# Joint-space maps per image tower, shared by every Decomposer of that tower (they cost several
# matrix products per layer); entries die with the model and are rebuilt when weights change.
_SHARED_MAPS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class Decomposer:
    """Decomposes image embeddings of an open_clip ViT CLIP with read-only forward hooks.

    Example::

        dec = Decomposer(model)
        d = dec(images, heads=True)          # per-layer and per-head terms
        d.max_error()                        # ~1e-7 in float32
        d.head_terms().score(text_emb)       # (image, layer, head, text)

    Args:
        model: an open_clip ``CLIP``/``CustomTextCLIP`` (or its ``VisionTransformer``). A model
            whose image tower is a timm ViT with attention pooling (SigLIP / SigLIP 2) gets a
            :class:`helpers.engine.decompose_map.MapDecomposer` (the same calls; the result is a
            :class:`helpers.engine.decompose_map.MapDecomposition`).
    """

    def __new__(cls, model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        # timm towers with attention pooling (SigLIP) have their own decomposer, same interface
        from .support import is_timm_tower

        if cls is Decomposer and is_timm_tower(model):
            from .decompose_map import MapDecomposer

            check_model_supported(model)  # the clear error for unsupported timm towers
            return MapDecomposer(model)
        return super().__new__(cls)

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.visual = check_model_supported(model)
        self.blocks: list[nn.Module] = list(self.visual.transformer.resblocks)
        self.info: ModelInfo = model_info(self.visual)
        self.n_layers, self.n_heads, self.width = self.info.n_layers, self.info.n_heads, self.info.width
        self.image_size, self.grid_size = self.info.image_size, self.info.grid_size
        self._maps_cache: dict[tuple[Any, ...], _LayerMaps] = _SHARED_MAPS.setdefault(self.visual, {})

    def _weights_state(self) -> tuple[int, ...]:
        """Identity and in-place version of every parameter the joint-space maps depend on, so
        the cached maps are rebuilt after an optimiser step, ``load_state_dict`` or a move."""
        v = self.visual
        tensors = [v.proj, v.ln_post.weight, v.ln_post.bias]
        for blk in self.blocks:
            tensors += [blk.attn.out_proj.weight, blk.attn.out_proj.bias, getattr(blk.ls_1, "gamma", None)]
        return tuple(x for t in tensors if t is not None for x in (t.data_ptr(), t._version))

    def maps(self, dtype: torch.dtype, device: torch.device) -> _LayerMaps:
        key = (dtype, device, self._weights_state())
        if key not in self._maps_cache:
            self._maps_cache.clear()
            self._maps_cache[key] = _LayerMaps(self.visual, dtype, device)
        return self._maps_cache[key]

    def __call__(self, images: Tensor, *, heads: bool = True, tokens: bool = False,
                 texts: Tensor | None = None, text_keep: Iterable[str] = ("layer", "head"),
                 normalize: bool = False, grad: bool = False) -> Decomposition:
        """Run the model once and decompose its image embeddings.

        Args:
            images: preprocessed batch ``[B, 3, H, W]`` on the model's device.
            heads: also compute per-head terms of every layer.
            tokens: keep what is needed for lazy per-token terms (:meth:`Decomposition.tokens`,
                :meth:`~Decomposition.joint`, :meth:`~Decomposition.token_scores`); costs memory
                of the order of one residual stream per layer.
            texts: text embeddings ``[M, d']``; per-token scores against them are contracted
                inside the forward pass into ``Decomposition.text_scores`` with axes
                ``(image, [layer], token, [head], text)`` (``text_keep`` picks the optional
                axes), without keeping per-token values.
            normalize: divide every term by the embedding norm (cosine scale).
            grad: keep the autograd graph (e.g. for training objectives on components).
        """
        images = check_batch(images, self.image_size)
        keep = set(text_keep)
        if not keep <= {"layer", "head"}:
            raise ValueError(f"text_keep may name 'layer' and/or 'head', got {sorted(keep)}")
        visual = self.visual
        dtype = visual.proj.dtype
        maps = self.maps(dtype, visual.proj.device)
        tmat = None
        if texts is not None:
            tmat = text_matrix(texts, width=maps.const.shape[-1]).to(maps.const)
            QE = torch.einsum("lhkd,md->lhkm", maps.Q, tmat)
            BE = maps.B @ tmat.T  # [L, H, M]

        L, H = self.n_layers, self.n_heads
        store: dict[str, Any] = {"attn": [None] * L, "mlp": [None] * L, "heads": [None] * L,
                                 "probs": [None] * L, "values": [None] * L, "tscores": [None] * L}

        def on_ln_pre(x: Tensor) -> None:
            store["embed"] = x[:, 0].clone()  # a copy: a view would pin [B, T, D]

        def on_ln_post(x: Tensor) -> None:
            store["z"] = x.clone() if x.ndim == 2 else x[:, 0].clone()

        def on_ln1(layer: int) -> Callable[[Tensor], None]:
            attn: nn.MultiheadAttention = self.blocks[layer].attn

            def read(x: Tensor) -> None:  # [B, T, D]
                Bn, T, D = x.shape
                dh = D // H
                w, b = attn.in_proj_weight, attn.in_proj_bias
                bq, bk, bv = (None, None, None) if b is None else b.chunk(3)
                q = F.linear(x[:, 0], w[:D], bq).reshape(Bn, H, dh) * dh ** -0.5
                k = F.linear(x, w[D:2 * D], bk).reshape(Bn, T, H, dh)
                v = F.linear(x, w[2 * D:], bv).reshape(Bn, T, H, dh)
                a = torch.einsum("bhk,bthk->bht", q, k).softmax(-1)
                if heads:
                    o = torch.einsum("bht,bthk->bhk", a, v)
                    store["heads"][layer] = torch.einsum("bhk,hkd->bhd", o, maps.Q[layer]) + maps.B[layer]
                if tokens:
                    store["probs"][layer] = a
                    store["values"][layer] = v
                if tmat is not None:
                    store["tscores"][layer] = token_text_scores(a, v, QE[layer], BE[layer], "head" in keep)
            return read

        def on_branch(kind: str, layer: int) -> Callable[[Tensor], None]:
            def read(x: Tensor) -> None:
                store[kind][layer] = x[:, 0].clone()
            return read

        read: dict[str, Callable[[Tensor], None]] = {"ln_pre": on_ln_pre, "ln_post.in": on_ln_post}
        for layer in range(L):
            if heads or tokens or tmat is not None:
                read[f"blocks.{layer}.ln_1"] = on_ln1(layer)
            read[f"blocks.{layer}.attn_out"] = on_branch("attn", layer)
            read[f"blocks.{layer}.mlp_out"] = on_branch("mlp", layer)
        embedding = run_tower(visual, images.to(dtype), read, grad=grad)

        z = store["z"]
        sigma = (z.var(-1, unbiased=False) + maps.eps).sqrt()
        inv = (1.0 / sigma)[:, None]
        G = maps.G
        embed = store["embed"] @ G * inv
        attn = torch.stack(store["attn"], 1) @ G * inv[..., None]
        mlp = torch.stack(store["mlp"], 1) @ G * inv[..., None]
        head_terms = torch.stack(store["heads"], 1) * inv[..., None, None] if heads else None
        text_scores = score_components(store["tscores"], keep, 1.0 / sigma) if tmat is not None else None
        result = Decomposition(
            embedding=embedding, embed=embed, attn=attn, mlp=mlp, heads=head_terms,
            const=maps.const, sigma=sigma, scale=torch.ones_like(sigma), grid_size=self.grid_size,
            _maps=maps, _probs=store["probs"] if tokens else None,
            _values=store["values"] if tokens else None, text_scores=text_scores, _mu=z.mean(-1))
        return result.normalized() if normalize else result


def decompose(model: nn.Module, images: Tensor, **kwargs: Any) -> Decomposition:
    """One-shot convenience: ``Decomposer(model)(images, **kwargs)``."""
    return Decomposer(model)(images, **kwargs)
