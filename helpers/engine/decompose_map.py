"""Exact decomposition of an attention-pooled timm ViT image embedding (SigLIP, SigLIP 2).

open_clip builds the SigLIP image towers as timm ``VisionTransformer`` trunks without a class
token; the embedding is read off the last layer's tokens by an attention-pooling ("MAP") head
with one learned query::

    y_t = LN(z_t)                                  every token t, z_t its residual stream
    p   = sum_h sum_t a[h, t] W_P^h v_t^h + b_P    v_t^h = W_V^h y_t + b_V^h
    e   = (p + MLP(LN_p(p))) A + b                 A, b: the projection head (identity for SigLIP)

The pooling's MLP acts on the pooled vector through a layer norm: it is nonlinear, so its output
``MLP(LN_p(p)) A`` is one term of its own, computed from the pooled vector (exact). The rest is
linear in the values once each token's layer-norm scale ``sigma_t`` is held fixed (as ``ln_post``
is held per image for CLIP), and since ``sum_t a[h, t] = 1`` every bias on the value path adds
up to a constant. So the embedding splits exactly

* over the **pooling heads and tokens**: ``a[h, t] (v_t^h W_P^h + b_P / H) A``
  (:attr:`MapDecomposition.pool_heads`, :meth:`~MapDecomposition.tokens`), plus the MLP term and ``b``;
* over the **backbone's layers** through each token's stream
  ``z_t = embed_t + sum_l attn_{l,t} + sum_l mlp_{l,t}``: a component ``c`` adds
  ``sum_h sum_t a[h, t] / sigma_t * centre(c_t) * gamma  W_V^h^T W_P^h^T A``
  (:attr:`~MapDecomposition.attn`, :attr:`~MapDecomposition.mlp`, per backbone head
  :attr:`~MapDecomposition.heads`), plus the MLP term and one constant.

Activations come from the named hook sites of :mod:`helpers.engine.hooks` (read-only, removed on exit).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .components import Components, DirectEffects, max_deviation, token_text_scores
from .hooks import run_tower
from .images import check_batch
from .labels import Selection, component_labels, resolve_indices
from .models import ModelInfo, model_info
from .support import check_tower
from .text import text_matrix

__all__ = ["MapDecomposition", "MapDecomposer"]


def _linear_head(tower: nn.Module, width: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """The affine map ``x -> x A + b`` after the pooling (timm head, then open_clip's head)."""
    A = torch.eye(width, device=device, dtype=dtype)
    b = torch.zeros(width, device=device, dtype=dtype)
    mods = [tower.trunk.head] + list(getattr(tower, "head", None) or [])
    for m in mods:
        if isinstance(m, nn.Linear):
            W = m.weight.to(device, dtype)
            A, b = A @ W.T, b @ W.T
            if m.bias is not None:
                b = b + m.bias.to(device, dtype)
    return A, b


class _PoolMaps:
    """Per-tower constants: value maps of the pooling, backbone out-projections, biases."""

    def __init__(self, tower: nn.Module, dtype: torch.dtype, device: torch.device) -> None:
        trunk = tower.trunk
        pool = trunk.attn_pool
        with torch.no_grad():
            D = int(trunk.embed_dim)
            Hp = int(pool.num_heads)
            dh = D // Hp
            A, b = _linear_head(tower, D, dtype, device)
            self.A, self.b = A, b
            norm = trunk.norm
            gamma = norm.weight.to(device, dtype) if norm.weight is not None else torch.ones(D, device=device, dtype=dtype)
            beta = norm.bias.to(device, dtype) if norm.bias is not None else torch.zeros(D, device=device, dtype=dtype)
            self.eps = float(norm.eps)
            kw = pool.kv.weight.to(device, dtype)
            kb = pool.kv.bias.to(device, dtype) if pool.kv.bias is not None else torch.zeros(2 * D, device=device, dtype=dtype)
            self.Wk, self.bk = kw[:D], kb[:D]
            self.Wv, self.bv = kw[D:], kb[D:]
            latent = pool.latent.to(device, dtype)[0]  # [1, latent_dim]
            q = pool.q(latent.to(pool.latent.dtype)).to(device, dtype) if not isinstance(pool.q, nn.Identity) else latent
            self.q = q.reshape(Hp, dh) * pool.scale  # [Hp, dh]
            WP = pool.proj.weight.to(device, dtype)  # [D_out, D]
            bP = pool.proj.bias.to(device, dtype) if pool.proj.bias is not None else torch.zeros(WP.shape[0], device=device, dtype=dtype)
            # value (already weighted) of head h -> joint space: [Hp, dh, d']
            self.VP = (WP.T.reshape(Hp, dh, -1) @ A)
            self.bias_share = (bP @ A) / Hp  # [d'] per head
            # a token's residual component c -> head h's value (centred, gamma, no sigma): [Hp, D, dh]
            gv = gamma[:, None] * self.Wv.T  # [D, D_v]
            gv = gv - gv.mean(0, keepdim=True)
            self.Gv = gv.reshape(D, Hp, dh).permute(1, 0, 2).contiguous()
            # constant: value biases (beta and b_V) and b_P through the head, and the head's bias
            vbias = (beta @ self.Wv.T + self.bv).reshape(Hp, dh)  # [Hp, dh]
            self.value_bias = torch.einsum("hk,hke->he", vbias, self.VP)  # [Hp, d'] per head
            self.const = self.value_bias.sum(0) + bP @ A + b
            # backbone heads: head g's output (dh) of layer l -> head h's value: [L, H, dh, Hp, dh]
            M, Bo = [], []
            for blk in trunk.blocks:
                attn = blk.attn
                H = int(attn.num_heads)
                ls = blk.ls1.gamma.to(device, dtype) if hasattr(blk.ls1, "gamma") else torch.ones(D, device=device, dtype=dtype)
                WO = attn.proj.weight.to(device, dtype) * ls[:, None]  # [D, D_in]
                bo = attn.proj.bias.to(device, dtype) * ls if attn.proj.bias is not None else torch.zeros(D, device=device, dtype=dtype)
                WO_h = WO.T.reshape(H, D // H, D)  # [H, dhb, D]
                M.append(torch.einsum("gjd,hdk->gjhk", WO_h, self.Gv))
                Bo.append(torch.einsum("d,hdk,hke->he", bo, self.Gv, self.VP) / H)  # [Hp, d'] each head's share
            self.M = torch.stack(M)  # [L, H, dhb, Hp, dh]
            self.Bo = torch.stack(Bo)  # [L, Hp, d']
            self.n_heads = int(trunk.blocks[0].attn.num_heads)


@dataclass
class MapDecomposition(DirectEffects):
    """Direct contributions to a batch of attention-pooled image embeddings, in the joint space.

    Two exact splits of :attr:`embedding` (each term already carries ``scale``):

    * by backbone layer: ``embed + attn.sum(1) + mlp.sum(1) + pool_mlp + const``
      (:meth:`reconstruct`, :meth:`components`); ``heads`` splits ``attn`` per backbone head;
    * by pooling head: ``pool_heads.sum(1) + pool_mlp + head_bias`` (:meth:`reconstruct_pool`);
      :meth:`tokens` splits each pooling head over the tokens it attends to.

    Attributes:
        embedding: the tower's output ``[B, d']``.
        embed: the patch + position embedding term ``[B, d']``.
        attn, mlp: per backbone layer ``[B, L, d']``; heads: ``[B, L, H, d']`` or ``None``.
        pool_heads: per pooling head ``[B, Hp, d']``.
        pool_mlp: the pooling MLP's output through the head ``[B, d']``.
        const: the image-independent term of the layer split ``[d']``; head_bias: the head's bias.
        sigma: per-token layer-norm scale ``[B, T]``.
    """

    embedding: Tensor
    embed: Tensor
    attn: Tensor
    mlp: Tensor
    heads: Tensor | None
    pool_heads: Tensor
    pool_mlp: Tensor
    const: Tensor
    head_bias: Tensor
    sigma: Tensor
    scale: Tensor
    grid_size: tuple[int, int]
    _maps: _PoolMaps | None = field(default=None, repr=False)
    _probs: Tensor | None = field(default=None, repr=False)  # [B, Hp, T] pooling attention
    _values: Tensor | None = field(default=None, repr=False)  # [B, T, Hp, dh] pooling values
    _streams: Tensor | None = field(default=None, repr=False)  # [B, T, 1 + 2L, D] embed, attn.0, mlp.0, ...
    text_scores: Components | None = None

    _no_heads = "heads were not decomposed: call the decomposer with heads=True"

    # -- shapes --------------------------------------------------------------------------------
    @property
    def n_heads(self) -> int:
        """Heads per backbone layer."""
        if self.heads is not None:
            return self.heads.shape[2]
        if self._maps is not None:
            return self._maps.n_heads
        raise AttributeError("heads were not decomposed")

    @property
    def n_pool_heads(self) -> int:
        return self.pool_heads.shape[1]

    @property
    def n_tokens(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    # -- sums ------------------------------------------------------------------------------------
    def _const_rows(self) -> Tensor:
        return self.const[None, :] * self.scale[:, None]

    def reconstruct(self) -> Tensor:
        """Sum of the layer split: equals :attr:`embedding` up to floating-point error."""
        return self.embed + self.attn.sum(1) + self.mlp.sum(1) + self.pool_mlp + self._const_rows()

    def reconstruct_pool(self) -> Tensor:
        """Sum of the pooling-head split: equals :attr:`embedding` up to floating-point error."""
        return self.pool_heads.sum(1) + self.pool_mlp + self.head_bias[None, :] * self.scale[:, None]

    def max_error(self, relative: bool = True) -> float:
        """Largest deviation of either split (:meth:`reconstruct`, :meth:`reconstruct_pool`)
        from the model's embedding."""
        return max_deviation([self.reconstruct(), self.reconstruct_pool()], self.embedding, relative)

    def components(self) -> Components:
        """All terms of the layer split as ``(image, component, dim)``: embed, attn.0, mlp.0,
        ..., pool.mlp, const; they add up to the embeddings."""
        n, L = self.attn.shape[:2]
        per_layer = torch.stack([self.attn, self.mlp], 2).reshape(n, 2 * L, -1)
        data = torch.cat([self.embed[:, None], per_layer, self.pool_mlp[:, None], self._const_rows()[:, None]], 1)
        labels = component_labels(L)
        labels = labels[:-1] + ["pool.mlp", labels[-1]]
        return Components(data, ("image", "component", "dim"), {"component": labels})

    def pool_head_terms(self) -> Components:
        """Per pooling-head terms ``(image, head, dim)``."""
        return Components(self.pool_heads, ("image", "head", "dim"))

    def normalized(self) -> "MapDecomposition":
        """The same decomposition of the unit-normalised embedding (cosine-similarity scale)."""
        return self.rescaled(1.0 / self.embedding.norm(dim=-1))

    def rescaled(self, factor: Tensor) -> "MapDecomposition":
        f1 = factor[:, None]
        ts = self.text_scores
        if ts is not None:
            ts = Components(ts.data * factor.reshape([-1] + [1] * (ts.data.ndim - 1)), ts.axes, ts.labels)
        return replace(
            self, embedding=self.embedding * f1, embed=self.embed * f1, attn=self.attn * f1[..., None],
            mlp=self.mlp * f1[..., None], heads=None if self.heads is None else self.heads * f1[..., None, None],
            pool_heads=self.pool_heads * f1[..., None], pool_mlp=self.pool_mlp * f1,
            scale=self.scale * factor, text_scores=ts)

    # -- tokens ----------------------------------------------------------------------------------
    def _check_tokens(self) -> None:
        if self._probs is None or self._values is None or self._streams is None or self._maps is None:
            raise AttributeError("token terms were not kept: call the decomposer with tokens=True")

    def _stream_index(self, layers: Selection) -> list[int]:
        ls = resolve_indices(layers, self.n_layers, "layer", sort=False)
        return [k for l in ls for k in (1 + 2 * l, 2 + 2 * l)]

    def _values_of(self, layers: Selection | None) -> tuple[Tensor, bool]:
        """Pooling values ``[B, T, Hp, dh]`` of the whole stream (``layers=None``, biases
        included) or of the chosen layers' attention and MLP outputs only."""
        if layers is None:
            return self._values, True
        c = self._streams[:, :, self._stream_index(layers)].sum(2)  # [B, T, D]
        v = torch.einsum("btd,hdk->bthk", c, self._maps.Gv) / self.sigma[:, :, None, None]
        return v, False

    def _token_terms(self, layers: Selection | None, heads: Selection, texts: Tensor | None,
                     keep_head: bool) -> Tensor:
        self._check_tokens()
        hs = torch.as_tensor(resolve_indices(heads, self.n_pool_heads, "head", sort=False),
                             device=self.embedding.device)
        v, with_bias = self._values_of(layers)
        Q = self._maps.VP[hs]
        Bh = self._maps.bias_share.expand(len(hs), -1) if with_bias else torch.zeros_like(Q[:, 0])
        if texts is not None:
            Q, Bh = Q @ texts.T, Bh @ texts.T
        out = token_text_scores(self._probs[:, hs], v[:, :, hs], Q, Bh, keep_head)
        return out * self.scale.reshape([-1] + [1] * (out.ndim - 1))

    def tokens(self, layers: Selection | None = None, heads: Selection = None) -> Components:
        """Per-token terms of the pooling attention ``(image, token, dim)`` over the chosen
        pooling heads; tokens are the patches in row-major order. With ``layers=None`` they sum
        over tokens to the chosen :attr:`pool_heads`; with ``layers`` each token's stream is
        restricted to those backbone layers' attention and MLP outputs (the per-layer token
        streams, with the embedding and biases, add up to the ``layers=None`` terms)."""
        return Components(self._token_terms(layers, heads, None, False), ("image", "token", "dim"))

    def token_streams(self, heads: Selection = None) -> Components:
        """Each token's term split over its stream: ``(image, token, component, dim)`` with
        components embed, attn.0, mlp.0, ..., bias (the value-path biases); summing over
        components gives :meth:`tokens` (``layers=None``)."""
        self._check_tokens()
        hs = torch.as_tensor(resolve_indices(heads, self.n_pool_heads, "head", sort=False),
                             device=self.embedding.device)
        m = self._maps
        w = self._probs[:, hs] / self.sigma[:, None, :] * self.scale[:, None, None]  # [B, h, T]
        u = torch.einsum("btkd,hdj->btkhj", self._streams, m.Gv[hs])
        terms = torch.einsum("bht,btkhj,hje->btke", w, u, m.VP[hs])
        bias = torch.einsum("bht,he->bte", self._probs[:, hs] * self.scale[:, None, None],
                            m.value_bias[hs] + m.bias_share)
        data = torch.cat([terms, bias[:, :, None]], 2)
        labels = component_labels(self.n_layers)[:-1] + ["bias"]
        return Components(data, ("image", "token", "component", "dim"), {"component": labels})

    def token_scores(self, texts: Tensor, layers: Selection | None = None, heads: Selection = None,
                     keep: Iterable[str] = ()) -> Components:
        """Per-token contributions to the dot product with each text ``(image, token, [head],
        text)`` (``head``: pooling heads, when named in ``keep``)."""
        keep = set(keep)
        if not keep <= {"head"}:
            raise ValueError(f"keep may name 'head' (pooling heads) for an attention-pooled tower, got {sorted(keep)}")
        texts = text_matrix(texts, width=self.embedding.shape[-1]).to(self.embedding)
        data = self._token_terms(layers, heads, texts, "head" in keep)
        return Components(data, ("image", "token") + (("head",) if "head" in keep else ()) + ("text",))

    def spatial_map(self, scores: Components) -> Tensor:
        """Reshape a token-axis score tensor to the image grid ``(rows, cols)`` (every token is
        a patch: the tower has no class token)."""
        ax = scores.axis("token")
        shape = list(scores.data.shape)
        shape[ax:ax + 1] = list(self.grid_size)
        return scores.data.reshape(shape)


_SHARED_MAPS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class MapDecomposer:
    """Decomposes the image embeddings of an open_clip timm ViT tower with attention pooling
    (SigLIP / SigLIP 2). ``helpers.engine.decompose.Decomposer(model)`` hands such a model here."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.visual = check_tower(model)
        self.trunk = self.visual.trunk
        self.blocks: list[nn.Module] = list(self.trunk.blocks)
        self.info: ModelInfo = model_info(self.visual)
        self.n_layers, self.n_heads, self.width = self.info.n_layers, self.info.n_heads, self.info.width
        self.image_size, self.grid_size = self.info.image_size, self.info.grid_size
        self._maps_cache: dict[tuple[Any, ...], _PoolMaps] = _SHARED_MAPS.setdefault(self.visual, {})

    @property
    def dtype(self) -> torch.dtype:
        return self.trunk.attn_pool.kv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.trunk.attn_pool.kv.weight.device

    def _weights_state(self) -> tuple[int, ...]:
        return tuple(x for p in self.visual.parameters() for x in (p.data_ptr(), p._version))

    def maps(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> _PoolMaps:
        dtype, device = dtype or self.dtype, device or self.device
        key = (dtype, device, self._weights_state())
        if key not in self._maps_cache:
            self._maps_cache.clear()
            self._maps_cache[key] = _PoolMaps(self.visual, dtype, device)
        return self._maps_cache[key]

    def __call__(self, images: Tensor, *, heads: bool = True, tokens: bool = False,
                 texts: Tensor | None = None, text_keep: Iterable[str] = ("head",),
                 normalize: bool = False, grad: bool = False) -> MapDecomposition:
        """Run the tower once and decompose its embeddings (the arguments of
        :meth:`helpers.engine.decompose.Decomposer.__call__`; ``heads`` are the backbone's heads,
        ``texts`` gives per-token scores of the pooling attention, ``text_keep`` may name
        ``"head"`` for pooling heads)."""
        images = check_batch(images, self.image_size)
        keep = set(text_keep)
        if not keep <= {"head"}:
            raise ValueError(f"text_keep may name 'head' (pooling heads) for an attention-pooled tower, "
                             f"got {sorted(keep)}")
        visual, dtype = self.visual, self.dtype
        m = self.maps(dtype, self.device)
        L = self.n_layers
        store: dict[str, Any] = {"attn": [None] * L, "mlp": [None] * L, "heads": [None] * L}

        def put(kind: str, layer: int | None = None) -> Callable[[Tensor], None]:
            def read(x: Tensor) -> None:
                if layer is None:
                    store[kind] = x
                else:
                    store[kind][layer] = x
            return read

        read: dict[str, Callable[[Tensor], None]] = {"ln_pre": put("embed"), "ln_post.in": put("z"),
                                                     "ln_post": put("y")}
        if self.trunk.attn_pool.mlp is not None:
            read["pool.mlp_out"] = put("pool_mlp")
        for layer in range(L):
            read[f"blocks.{layer}.attn_out"] = put("attn", layer)
            read[f"blocks.{layer}.mlp_out"] = put("mlp", layer)
            if heads:
                read[f"blocks.{layer}.attn_heads"] = put("heads", layer)
        embedding = run_tower(visual, images.to(dtype), read, grad=grad)

        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            z, y = store["z"], store["y"]
            Bn, T, D = z.shape
            Hp, dh = m.q.shape
            sigma = (z.var(-1, unbiased=False) + m.eps).sqrt()  # [B, T]
            k = F.linear(y, m.Wk, m.bk).reshape(Bn, T, Hp, dh)
            v = F.linear(y, m.Wv, m.bv).reshape(Bn, T, Hp, dh)
            a = torch.einsum("hk,bthk->bht", m.q, k).softmax(-1)  # [B, Hp, T]
            o = torch.einsum("bht,bthk->bhk", a, v)
            pool_heads = torch.einsum("bhk,hke->bhe", o, m.VP) + m.bias_share
            pool_mlp = store["pool_mlp"][:, 0] @ m.A if "pool_mlp" in store else torch.zeros_like(embedding)

            w = a / sigma[:, None, :]  # [B, Hp, T]
            streams = [store["embed"]] + [x for l in range(L) for x in (store["attn"][l], store["mlp"][l])]

            def through_pool(c: Tensor) -> Tensor:  # [B, T, D] -> [B, d']
                x = torch.einsum("bht,btd->bhd", w, c)
                return torch.einsum("bhd,hdk,hke->be", x, m.Gv, m.VP)

            embed = through_pool(store["embed"])
            attn = torch.stack([through_pool(x) for x in store["attn"]], 1)
            mlp = torch.stack([through_pool(x) for x in store["mlp"]], 1)
            head_terms = None
            if heads:
                sw = w.sum(-1)  # [B, Hp]
                per = []
                for l in range(L):
                    O = store["heads"][l]
                    H = m.M.shape[1]
                    Y = torch.einsum("bht,btgj->bhgj", w, O.reshape(Bn, T, H, -1))
                    U = torch.einsum("bhgj,gjhk->bhgk", Y, m.M[l])
                    per.append(torch.einsum("bhgk,hke->bge", U, m.VP) + (sw @ m.Bo[l])[:, None, :])
                head_terms = torch.stack(per, 1)
            tscores = None
            if texts is not None:
                tmat = text_matrix(texts, width=m.const.shape[-1]).to(m.const)
                tscores = Components(
                    token_text_scores(a, v, m.VP @ tmat.T, m.bias_share.expand(Hp, -1) @ tmat.T, "head" in keep),
                    ("image", "token") + (("head",) if "head" in keep else ()) + ("text",))
            result = MapDecomposition(
                embedding=embedding, embed=embed, attn=attn, mlp=mlp, heads=head_terms, pool_heads=pool_heads,
                pool_mlp=pool_mlp, const=m.const, head_bias=m.b, sigma=sigma, scale=torch.ones_like(sigma[:, 0]),
                grid_size=self.grid_size, _maps=m, _probs=a if tokens else None, _values=v if tokens else None,
                _streams=torch.stack(streams, 2) if tokens else None, text_scores=tscores)
        return result.normalized() if normalize else result


def pooled_note(model_name: str, skipped: str) -> str:
    """One line for a notebook run on an attention-pooled tower (SigLIP): how its embedding is
    decomposed, and what the notebook ``skipped`` for it."""
    return (f"`{model_name}` reads its embedding off all tokens with an attention-pooling head, not "
            f"off a class token: its terms are the same layers and heads seen through the pooling's "
            f"value path, plus the pooling MLP's own term (`pool_mlp` of the stored terms, beside `const`); "
            f"{skipped}.")
