"""Second-order effects of MLP neurons: what each neuron writes, carried to the image embedding
by the later attention heads' direct paths (Gandelsman, Efros, Steinhardt, "Interpreting the
Second-Order Effects of Neurons in CLIP", 2024).

The effect, in the factored form
--------------------------------
Neuron ``k`` of MLP layer ``l`` writes ``a_{k,m} w_k`` into the residual stream at token ``m``
(``a_{k,m}`` its activation, ``w_k`` its column of ``c_proj`` times the block's LayerScale, if
any). Its *second-order effect* on image ``I`` is what of that write reaches the embedding
through one later attention head ``(L, h)``, ``L > l``, and then straight down the residual
stream, with every attention weight and every layer-norm scale held at the values of the
image's own forward pass. Paths through later MLPs, through two attention layers, and the
neuron's own direct path are left out. With the statistics frozen, every map on the way is
linear:

* ``ln_1`` of layer ``L``: ``x -> gamma_L * (x - mean(x)) / sigma^L_m`` (the mean-centring is
  part of the linear map; its bias ``beta_L`` is a constant, not a neuron's);
* head ``h``: values ``W_V^h``, class-token attention ``A^{L,h}_{0m}``, output ``W_O^h``, then
  LayerScale (value and output biases are constants too);
* ``ln_post`` and ``proj``: ``z -> proj^T (gamma_post * (z - mean(z))) / sigma_post``.

Everything except ``A``, ``a`` and the ``sigma``'s is fixed, so::

    phi_k(I) = sum_{L>l, h} s^{L,h}_k(I) u^{L,h}_k,
    s^{L,h}_k(I) = (1 / sigma_post(I)) sum_m A^{L,h}_{0m}(I) a_{k,m}(I) / sigma^L_m(I),

with ``u^{L,h}_k`` (no image in it) computed once per model: the centred ``w_k`` through
``gamma_L``, head ``h``'s value and output maps (the head maps of
:class:`helpers.engine.decompose.Decomposer`) and the linear part of ``ln_post`` and ``proj``. Per
image the work is one contraction of the activations with the attention rows
(``[heads, tokens] x [tokens, neurons]``), then ``[neurons, heads] x [heads, d']`` per neuron.
The write of ``c_proj``'s bias (times LayerScale) goes the same way with ``a = 1``: the effects
of every neuron plus that *bias term* are the effect of the layer's whole MLP output through
the later heads' direct paths, exactly (:func:`exactness` checks it against forward-mode
differentiation through the model's own modules, :func:`direct_path_reference`).

Each image's effects of a layer live in the span of ``J = (later layers) x heads`` vectors per
neuron, so everything this module keeps per image and neuron is the ``J`` coefficients ``s``
(:class:`NeuronEffects`); ``[images, neurons, d']`` is formed only for a batch on request.
Norms (also centred on a mean) come from the ``J x J`` Gram matrix of each neuron's ``u``'s.

Dataset statistics (:func:`stream_neuron_stats`) follow the authors' ``compute_pcas``: per
neuron the mean effect, then the ``k`` images whose effect differs most from it (largest norm
of the centred effect, a second pass once the mean is known), their effects, the first
singular vector of those centred effects signed so that most of them project positively (the
neuron's *direction*), and the smallest of the ``k`` norms (the neuron's *significance
threshold*). Memory is bounded by one batch and the running top ``k``.

Scale: effects are in the joint space, unnormalised (``normalize=False``), or divided by the
norm of the image's embedding (``normalize=True``, the reference's scale up to its factor
100), which the dataset statistics use by default so that images count alike.

Uses: ablations measured as zero-shot accuracy (:func:`ablation_study`), sparse text
decompositions of directions (:func:`sparse_text_decomposition`), a segmenter
(:func:`neuron_segmentation_maps`), concept discovery (:func:`image_concepts`) and words that
push one class toward another (:func:`adversarial_words`).

Everything is read through the named hook sites of :mod:`helpers.engine.hooks` on stock open_clip
modules (``blocks.{l}.ln_2`` for the activations, recomputed with the block's own ``c_fc`` and
activation modules; ``blocks.{L}.resid_pre`` and ``blocks.{L}.ln_1`` for the ``ln_1`` scales
and class-token attention rows; ``ln_post.in`` for the final scale).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.decompose import Decomposer
from ..engine.hooks import hooked, run_tower
from ..engine.images import check_batch, model_batch
from ..engine.labels import Selection, resolve_indices
from ..engine.models import SUPPORTED_DESCRIPTION, UnsupportedModelError, model_info
from ..engine.support import check_tower, is_timm_tower
from ..engine.text import text_matrix
from .stats import Difference

__all__ = [
    "SecondOrder", "NeuronEffects", "NeuronStats", "NeuronDirections", "SparseTexts", "AblationResult",
    "ABLATIONS", "second_order", "check_supported", "direct_path_reference", "exactness", "stream_neuron_stats",
    "significance", "sparse_text_decomposition", "prepare_vocabulary", "ablated_embeddings", "ablation_study",
    "ablation_studies", "compare_rates", "RateComparison", "top_image_lift", "NeuronParts", "layer_effects",
    "neuron_segmentation_maps", "image_concepts", "rank_neurons_between", "adversarial_words",
]

DEFAULT_MAX_BYTES = 2 << 30
"""Largest ``u`` tensor (``[neurons, J, d']``) :class:`SecondOrder` builds without being asked to."""

ABLATIONS: tuple[str, ...] = ("baseline", "mean_ablated", "significant_only", "insignificant_only", "rank1")
"""The embeddings :func:`ablated_embeddings` returns, in order: the model's own; every neuron's
effect replaced by its mean; only the significant neurons' effects kept (the others mean-ablated);
only the insignificant ones kept; every effect replaced by the mean plus its projection on the
neuron's direction."""


# ----------------------------------------------------------------------------------------------
# Model checks
# ----------------------------------------------------------------------------------------------


def check_supported(model: nn.Module) -> nn.Module:
    """The model's open_clip ViT image tower, or :class:`~helpers.engine.models.UnsupportedModelError`
    saying why not (the rules of :mod:`helpers.engine.support`; towers with attention pooling, which
    the first-order decomposition supports, have no class token to carry a second-order effect)."""
    visual = check_tower(model)
    if is_timm_tower(model):
        raise UnsupportedModelError(
            "second-order effects need an open_clip VisionTransformer that reads the embedding from its class "
            "token; this image tower is a timm model with attention pooling (SigLIP-style), whose embedding is "
            f"a pooled query, not a class token. Supported: {SUPPORTED_DESCRIPTION} (class-token towers only).")
    return visual


def _blocks(visual: nn.Module) -> list[nn.Module]:
    return list(visual.transformer.resblocks)


def _mlp_parts(block: nn.Module) -> tuple[list[nn.Module], nn.Linear]:
    """The modules of a block's MLP before its output projection, and the projection."""
    mods = list(block.mlp.children())
    proj = mods[-1]
    if not isinstance(proj, nn.Linear):
        raise UnsupportedModelError(f"the MLP of this block ends in a {type(proj).__name__}, not a Linear output "
                                    f"projection. Supported: {SUPPORTED_DESCRIPTION}.")
    return mods[:-1], proj


def _gamma(ls: nn.Module, width: int, like: Tensor) -> Tensor:
    g = getattr(ls, "gamma", None)
    return g.to(like) if isinstance(g, Tensor) else torch.ones(width, dtype=like.dtype, device=like.device)


def _ln_weight(ln: nn.Module, width: int, like: Tensor) -> Tensor:
    w = getattr(ln, "weight", None)
    return w.to(like) if isinstance(w, Tensor) else torch.ones(width, dtype=like.dtype, device=like.device)


def _layer_index(layer: Any, n_layers: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"the MLP layer must be one int index, got {layer!r}")
    (i,) = resolve_indices(int(layer), n_layers, "layer")
    if i == n_layers - 1:
        raise ValueError(f"layer {i} is the last block: no attention layer follows it, so its neurons have no "
                         f"second-order effect. Choose a layer in 0..{n_layers - 2}")
    return i


# ----------------------------------------------------------------------------------------------
# One forward pass: what the factored form needs from an image
# ----------------------------------------------------------------------------------------------


@dataclass
class _Record:
    embedding: Tensor  # [B, d']
    sigma_post: Tensor  # [B]
    acts: dict[int, Tensor]  # MLP layer -> activations [B, T, K] (chosen neurons)
    probs: dict[int, Tensor]  # attention layer -> class-token rows [B, H, T]
    sigma: dict[int, Tensor]  # attention layer -> ln_1 scales [B, T]


def _record(visual: nn.Module, x: Tensor, mlp: Mapping[int, Tensor | None], attn_layers: Iterable[int]) -> _Record:
    """Run the tower once, recording the activations of the chosen neurons of the layers in
    ``mlp`` (``{layer: neuron indices or None for all}``) and, for each of ``attn_layers``, the
    class-token attention rows and the ``ln_1`` scales."""
    blocks = _blocks(visual)
    acts: dict[int, Tensor] = {}
    probs: dict[int, Tensor] = {}
    sigma: dict[int, Tensor] = {}
    post: dict[str, Tensor] = {}

    def on_ln2(layer: int, idx: Tensor | None) -> Callable[[Tensor], None]:
        mods, _ = _mlp_parts(blocks[layer])

        def read(y: Tensor) -> None:
            for m in mods:
                y = m(y)
            acts[layer] = y if idx is None else y.index_select(-1, idx.to(y.device))
        return read

    def on_resid(layer: int) -> Callable[[Tensor], None]:
        eps = float(blocks[layer].ln_1.eps)

        def read(r: Tensor) -> None:
            sigma[layer] = (r.var(-1, unbiased=False) + eps).sqrt()
        return read

    def on_ln1(layer: int) -> Callable[[Tensor], None]:
        attn = blocks[layer].attn

        def read(y: Tensor) -> None:
            Bn, T, D = y.shape
            H = attn.num_heads
            dh = D // H
            w, b = attn.in_proj_weight, attn.in_proj_bias
            bq, bk = (None, None) if b is None else (b[:D], b[D:2 * D])
            q = F.linear(y[:, 0], w[:D], bq).reshape(Bn, H, dh) * dh ** -0.5
            k = F.linear(y, w[D:2 * D], bk).reshape(Bn, T, H, dh)
            probs[layer] = torch.einsum("bhk,bthk->bht", q, k).softmax(-1)
        return read

    eps_post = float(visual.ln_post.eps)

    def on_post(z: Tensor) -> None:
        z0 = z[:, 0] if z.ndim == 3 else z
        post["sigma"] = (z0.var(-1, unbiased=False) + eps_post).sqrt()

    read: dict[str, Callable[[Tensor], None]] = {"ln_post.in": on_post}
    for layer, idx in mlp.items():
        read[f"blocks.{layer}.ln_2"] = on_ln2(layer, idx)
    for layer in attn_layers:
        read[f"blocks.{layer}.resid_pre"] = on_resid(layer)
        read[f"blocks.{layer}.ln_1"] = on_ln1(layer)
    with torch.no_grad():
        emb = run_tower(visual, x, read)
    return _Record(emb, post["sigma"], acts, probs, sigma)


# ----------------------------------------------------------------------------------------------
# Per-model precomputation for one layer
# ----------------------------------------------------------------------------------------------


# The image-independent tensors per image tower, {(layer, neurons): entry}; entries die with the
# tower (they hold tensors only, never the module).
_SHARED: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], dict[str, Any]]]" = weakref.WeakKeyDictionary()


class SecondOrder:
    """The second-order effects of the neurons of one MLP layer, in the factored form.

    Example::

        so = SecondOrder(model, layer=4)          # u: [neurons, J, d'], J = later layers x heads
        eff = so(images)                          # one forward pass -> NeuronEffects
        eff.effects().shape                       # [B, neurons, d']
        eff.total() + eff.bias()                  # the whole MLP output's effect (exact)

    Args:
        model: an open_clip CLIP with a supported ViT image tower (:func:`check_supported`).
        layer: the MLP layer (negative counts from the end; not the last block).
        neurons: which neurons (indices into the layer's hidden units, in the order given;
            default all).
        max_bytes: refuse to build a ``u`` tensor larger than this (early layers of big models:
            choose ``neurons`` in chunks instead).

    The object follows the model's weights: if they change (an optimiser step, ``.to()``), ``u``
    is rebuilt on the next call.
    """

    def __init__(self, model: nn.Module, layer: int, *, neurons: Selection = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.model = model
        self.visual = check_supported(model)
        self.blocks = _blocks(self.visual)
        info = model_info(self.visual)
        self.n_layers, self.n_heads, self.width = info.n_layers, info.n_heads, info.width
        self.image_size, self.grid_size = info.image_size, info.grid_size
        self.layer = _layer_index(layer, self.n_layers)
        _, proj = _mlp_parts(self.blocks[self.layer])
        self.mlp_width = int(proj.in_features)
        self.neurons = torch.as_tensor(resolve_indices(neurons, self.mlp_width, "neuron", sort=False),
                                       dtype=torch.long)
        self.later = list(range(self.layer + 1, self.n_layers))
        self.pairs: list[tuple[int, int]] = [(L, h) for L in self.later for h in range(self.n_heads)]
        itemsize = self.visual.proj.element_size()
        size = len(self.neurons) * len(self.pairs) * int(self.visual.proj.shape[1]) * itemsize
        if size > max_bytes:
            raise MemoryError(
                f"the u tensor of layer {self.layer} would take {size / 2**30:.2f} GiB ({len(self.neurons)} neurons x "
                f"{len(self.pairs)} later heads x {int(self.visual.proj.shape[1])} dims), over max_bytes="
                f"{max_bytes / 2**30:.2f} GiB: pass neurons=... in chunks, or raise max_bytes")
        full = len(self.neurons) == self.mlp_width and bool((self.neurons == torch.arange(self.mlp_width)).all())
        self._record_neurons: Tensor | None = None if full else self.neurons
        self._key = (self.layer, None if full else tuple(self.neurons.tolist()))
        self._shared = _SHARED.setdefault(self.visual, {})

    # -- the image-independent part -------------------------------------------------------------
    def _weights_state(self) -> tuple[Any, ...]:
        v = self.visual
        blk = self.blocks[self.layer]
        _, proj = _mlp_parts(blk)
        tensors = [v.proj, v.ln_post.weight, proj.weight, proj.bias, getattr(blk.ls_2, "gamma", None)]
        for L in self.later:
            b = self.blocks[L]
            tensors += [b.ln_1.weight, b.attn.in_proj_weight, b.attn.out_proj.weight,
                        getattr(b.ls_1, "gamma", None)]
        return tuple(x for t in tensors if t is not None for x in (t.data_ptr(), t._version, t.dtype, t.device))

    def _entry(self) -> dict[str, Any]:
        """This layer's image-independent tensors, shared by every :class:`SecondOrder` of the same
        tower, layer and neurons (rebuilt when the weights change)."""
        state = self._weights_state()
        entry = self._shared.get(self._key)
        if entry is None or entry["state"] != state:
            u, u_bias = self._build_u()
            entry = {"state": state, "u": u, "u_bias": u_bias, "gram": None, "centre": None}
            self._shared[self._key] = entry
        return entry

    def _build_u(self) -> tuple[Tensor, Tensor]:
        v = self.visual
        dtype, device = v.proj.dtype, v.proj.device
        maps = Decomposer(self.model).maps(dtype, device)  # Q: [L, H, dh, d'] = W_O^h, LayerScale, ln_post, proj
        blk = self.blocks[self.layer]
        _, proj = _mlp_parts(blk)
        D, H = self.width, self.n_heads
        with torch.no_grad():
            like = v.proj
            ls2 = _gamma(blk.ls_2, D, like)
            w = proj.weight.to(like)[:, self.neurons.to(device)].T * ls2  # [K, D]: each neuron's write
            b = (proj.bias.to(like) if proj.bias is not None else torch.zeros(D, dtype=dtype, device=device)) * ls2
            w = w - w.mean(-1, keepdim=True)  # ln_1's centring is linear: apply it to the write
            b = b - b.mean()
            us, ubs = [], []
            for L in self.later:
                lb = self.blocks[L]
                g = _ln_weight(lb.ln_1, D, like)
                wv = lb.attn.in_proj_weight.to(like)[2 * D:]  # [H * dh, D]
                val = ((w * g) @ wv.T).reshape(len(w), H, -1)  # [K, H, dh]
                us.append(torch.einsum("khe,hed->khd", val, maps.Q[L]))
                ubs.append(torch.einsum("he,hed->hd", ((b * g) @ wv.T).reshape(H, -1), maps.Q[L]))
        return torch.cat(us, 1).contiguous(), torch.cat(ubs, 0)  # [K, J, d'], [J, d']

    @property
    def u(self) -> Tensor:
        """``[neurons, J, d']``: each neuron's write carried to the joint space by head ``pairs[j]``
        (per unit of ``s``)."""
        return self._entry()["u"]

    @property
    def u_bias(self) -> Tensor:
        """``[J, d']``: the same for the write of ``c_proj``'s bias."""
        return self._entry()["u_bias"]

    @property
    def gram(self) -> Tensor:
        """``[neurons, J, J]`` float64: ``u u^T`` per neuron (norms without forming the effects)."""
        entry = self._entry()
        if entry["gram"] is None:
            u = entry["u"].double()
            entry["gram"] = u @ u.transpose(1, 2)
        return entry["gram"]

    # -- per image --------------------------------------------------------------------------------
    def _coefficients(self, rec: _Record, normalize: bool) -> "NeuronEffects":
        a = rec.acts[self.layer]  # [B, T, K]
        w_att = torch.cat([rec.probs[L] / rec.sigma[L][:, None, :] for L in self.later], 1)  # [B, J, T]
        scale = 1.0 / rec.sigma_post
        emb_scale = torch.ones_like(scale)
        if normalize:
            emb_scale = 1.0 / rec.embedding.norm(dim=-1)
            scale = scale * emb_scale
        coef = torch.bmm(a.transpose(1, 2), w_att.transpose(1, 2)) * scale[:, None, None]  # [B, K, J]
        bias = w_att.sum(-1) * scale[:, None]  # [B, J]
        entry = self._entry()
        return NeuronEffects(coef=coef, bias_coef=bias, embedding=rec.embedding * emb_scale[:, None],
                             scale=emb_scale, normalized=normalize, source=self, u=entry["u"], u_bias=entry["u_bias"])

    def effects(self, images: Tensor, *, normalize: bool = False) -> "NeuronEffects":
        """One forward pass over a preprocessed batch ``[B, 3, H, W]``: the layer's effects in
        the factored form (:class:`NeuronEffects`), unnormalised or divided by each image's
        embedding norm (``normalize``)."""
        x = self._prepare(images)
        rec = _record(self.visual, x, {self.layer: self._record_neurons}, self.later)
        return self._coefficients(rec, normalize)

    __call__ = effects

    def parts(self, images: Tensor, neuron: int) -> "NeuronParts":
        """The pieces of one neuron's effect on a batch, as the factored form combines them
        (:class:`NeuronParts`): its activations, the later heads' class-token attention rows,
        the ``ln_1`` scales of their layers (one row per head), ``ln_post``'s scale and its ``u``.
        ``neuron`` is a position in :attr:`neurons`. Unnormalised (joint-space units)."""
        K = len(self.neurons)
        if isinstance(neuron, bool) or not isinstance(neuron, (int, np.integer)) or not -K <= neuron < K:
            raise ValueError(f"neuron must be a position in 0..{K - 1} of this object's neurons, got {neuron!r}")
        pos = int(neuron) % K
        x = self._prepare(images)
        rec = _record(self.visual, x, {self.layer: self.neurons[pos:pos + 1]}, self.later)
        H = self.n_heads
        attention = torch.cat([rec.probs[L] for L in self.later], 1)  # [B, J, T]
        sigma = torch.cat([rec.sigma[L][:, None, :].expand(-1, H, -1) for L in self.later], 1)  # [B, J, T]
        return NeuronParts(acts=rec.acts[self.layer][..., 0], attention=attention, sigma=sigma,
                           sigma_post=rec.sigma_post, u=self.u[pos], pairs=list(self.pairs),
                           layer=self.layer, neuron=int(self.neurons[pos]))

    def _prepare(self, images: Tensor) -> Tensor:
        x = check_batch(images, self.image_size)
        p = self.visual.proj
        return x.to(device=p.device, dtype=p.dtype)

    def centre_terms(self, mean: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """``(u mu, |mu|^2)`` per neuron for centring norms on ``mean`` ``[neurons, d']`` (float64)."""
        if mean is None:
            return None
        mean = torch.as_tensor(mean)
        K, d = self.u.shape[0], self.u.shape[2]
        if tuple(mean.shape) != (K, d):
            raise ValueError(f"the mean effects must be [{K}, {d}] (one per neuron), got {tuple(mean.shape)}")
        entry = self._entry()
        m = mean.to(device=entry["u"].device, dtype=torch.float64)
        # the last mean's terms are kept: the same mean comes back for every batch and every test of
        # significance, and a float64 copy of u takes twice u's memory (hundreds of MB for a ViT-B)
        kept = entry["centre"]
        if kept is not None and torch.equal(kept[0], m):
            return kept[1]
        terms = torch.einsum("kjd,kd->kj", entry["u"].double(), m), (m * m).sum(-1)
        entry["centre"] = (m.clone(), terms)
        return terms

    def __repr__(self) -> str:
        return (f"SecondOrder(layer={self.layer}, neurons={len(self.neurons)}, later heads={len(self.pairs)}, "
                f"d'={int(self.visual.proj.shape[1])})")


def second_order(model: nn.Module, layer: int, neurons: Selection = None) -> SecondOrder:
    """``SecondOrder(model, layer, neurons=neurons)``: cheap to call again, since the ``u`` of a
    tower, layer and neurons is built once and shared (rebuilt only when the weights change)."""
    return SecondOrder(model, layer, neurons=neurons)


@torch.no_grad()
def layer_effects(model: nn.Module, images: Tensor, layers: Selection, *, neurons: Selection = None,
                  normalize: bool = False) -> dict[int, "NeuronEffects"]:
    """The effects of several MLP layers' neurons on one batch, from one forward pass:
    ``{layer: NeuronEffects}`` (as ``SecondOrder(model, layer)(images)`` for each layer)."""
    visual = check_supported(model)
    n_layers = model_info(visual).n_layers
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = [int(layers)]
    sos = {L: second_order(model, L, neurons)
           for L in (_layer_index(i, n_layers) for i in resolve_indices(layers, n_layers, "layer"))}
    if not sos:
        raise ValueError("no layers")
    x = next(iter(sos.values()))._prepare(images)
    rec = _record(visual, x, {L: so._record_neurons for L, so in sos.items()},
                  sorted({L for so in sos.values() for L in so.later}))
    return {L: so._coefficients(rec, normalize) for L, so in sos.items()}


# ----------------------------------------------------------------------------------------------
# One neuron's pieces (for reading the formula)
# ----------------------------------------------------------------------------------------------


@dataclass
class NeuronParts:
    """What one neuron's second-order effect on a batch is made of (:meth:`SecondOrder.parts`)::

        phi[b] = sum_j (sum_m attention[b, j, m] * acts[b, m] / sigma[b, j, m]) / sigma_post[b] * u[j]

    Attributes:
        acts: ``[B, T]`` the neuron's activation at every token (class token first).
        attention: ``[B, J, T]`` the class token's attention row of each later head ``pairs[j]``.
        sigma: ``[B, J, T]`` the scale of ``ln_1`` of head ``j``'s layer at every token.
        sigma_post: ``[B]`` the scale of ``ln_post`` at the class token.
        u: ``[J, d']`` the neuron's write carried by each later head to the joint space.
        pairs: the ``(layer, head)`` of each ``j``; layer, neuron: which neuron.
    """

    acts: Tensor
    attention: Tensor
    sigma: Tensor
    sigma_post: Tensor
    u: Tensor
    pairs: list[tuple[int, int]]
    layer: int
    neuron: int

    def coefficients(self) -> Tensor:
        """``[B, J]``: how much of ``u[j]`` head ``j`` carries for each image."""
        return torch.einsum("bjt,bt->bj", self.attention / self.sigma, self.acts) / self.sigma_post[:, None]

    def effect(self) -> Tensor:
        """``[B, d']``: the neuron's second-order effect."""
        return self.coefficients() @ self.u


# ----------------------------------------------------------------------------------------------
# A batch's effects
# ----------------------------------------------------------------------------------------------


@dataclass
class NeuronEffects:
    """The second-order effects of one layer's neurons on a batch, in the factored form.

    ``phi[b, k] = sum_j coef[b, k, j] * u[k, j]``; ``u`` belongs to :attr:`source`.

    Attributes:
        coef: ``[B, K, J]`` (already divided by ``sigma_post`` and multiplied by ``scale``).
        bias_coef: ``[B, J]``, the same for ``c_proj``'s bias term.
        embedding: the model's image embeddings ``[B, d']`` times ``scale``.
        scale: ``[B]``: 1, or ``1 / |embedding|`` when ``normalized``.
        normalized: whether the effects are on the cosine scale.
        source: the :class:`SecondOrder` that made them (layer, neurons).
        u, u_bias: the source's ``u`` and ``u_bias`` when the effects were computed.
    """

    coef: Tensor
    bias_coef: Tensor
    embedding: Tensor
    scale: Tensor
    normalized: bool
    source: SecondOrder = field(repr=False)
    u: Tensor = field(repr=False)
    u_bias: Tensor = field(repr=False)

    @property
    def layer(self) -> int:
        return self.source.layer

    @property
    def neurons(self) -> Tensor:
        return self.source.neurons

    def __len__(self) -> int:
        return self.coef.shape[0]

    def effects(self, neurons: Selection = None) -> Tensor:
        """``[B, K', d']``: each (chosen) neuron's effect on each image (``neurons`` index the
        positions in :attr:`neurons`)."""
        u = self.u
        coef = self.coef
        if neurons is not None:
            idx = torch.as_tensor(resolve_indices(neurons, coef.shape[1], "neuron", sort=False), device=coef.device)
            u, coef = u.index_select(0, idx), coef.index_select(1, idx)
        return torch.bmm(coef.transpose(0, 1), u).transpose(0, 1)

    def bias(self) -> Tensor:
        """``[B, d']``: the effect of the write of ``c_proj``'s bias (times LayerScale)."""
        return self.bias_coef @ self.u_bias

    def weighted_sum(self, weights: Tensor) -> Tensor:
        """``[B, d']``: ``sum_k weights[b, k] * phi[b, k]``, without forming ``[B, K, d']``."""
        u = self.u
        c = self.coef * weights.to(self.coef)[..., None]
        return c.reshape(c.shape[0], -1) @ u.reshape(-1, u.shape[-1])

    def total(self) -> Tensor:
        """``[B, d']``: the sum of every neuron's effect (the bias term not included)."""
        u = self.u
        return self.coef.reshape(self.coef.shape[0], -1) @ u.reshape(-1, u.shape[-1])

    def norms(self, mean: Tensor | None = None, *, centre: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``[B, K]`` float64: ``|phi[b, k] - mean[k]|`` (``mean`` ``[K, d']``; none: ``|phi|``),
        from each neuron's Gram matrix, without forming the effects. ``centre`` is
        ``source.centre_terms(mean)`` computed once for many batches (instead of ``mean``)."""
        s = self.coef.double().transpose(0, 1)  # [K, B, J]
        if self.source.u is self.u:
            gram = self.source.gram
        else:  # the weights changed since: the Gram matrices of these effects' u
            u = self.u.double()
            gram = u @ u.transpose(1, 2)
        q = (torch.bmm(s, gram) * s).sum(-1)  # [K, B]
        if centre is None:
            centre = self.source.centre_terms(mean)
        if centre is not None:
            um, mm = centre
            q = q - 2 * (s * um[:, None, :]).sum(-1) + mm[:, None]
        return q.clamp_min(0).sqrt().T

    def projections(self, directions: Tensor, mean: Tensor | None = None) -> Tensor:
        """``[B, K]``: ``(phi[b, k] - mean[k]) . directions[k]`` (``directions`` ``[K, d']``)."""
        u = self.u
        ud = torch.einsum("kjd,kd->kj", u, directions.to(u))
        out = torch.einsum("bkj,kj->bk", self.coef, ud)
        if mean is not None:
            out = out - (mean.to(u) * directions.to(u)).sum(-1)[None]
        return out


# ----------------------------------------------------------------------------------------------
# Independent reference: forward-mode differentiation through the model's own modules
# ----------------------------------------------------------------------------------------------


def direct_path_reference(model: nn.Module, layer: int, images: Tensor) -> Tensor:
    """The effect ``[B, d']`` of layer ``layer``'s whole MLP output through the later attention
    heads' direct paths, by forward-mode differentiation through the model's own modules.

    One forward pass of the stock tower, with patches at named hook sites:

    * ``blocks.{layer}.mlp_out``: the MLP output gets itself as tangent;
    * the residual stream carries it to every later block; each later ``ln_1`` passes it on with
      its scale frozen at the forward pass's value (``gamma * (t - mean(t)) / sigma``);
    * each later attention module is run again (hooks bypassed) with queries and keys from the
      plain input and values from the perturbed one, so its attention weights are frozen; after
      the block's LayerScale the class-token tangent of the branch is set aside and the plain
      output goes on, so no tangent passes through two attention layers;
    * later MLPs pass nothing;
    * at the last block's output the class token's tangent (the MLP output's own direct path) is
      replaced by the sum of what the attention layers set aside, which ``ln_post`` (scale
      frozen) and ``proj`` carry to the embedding.

    The tangent of the embedding is the second-order effect of the whole MLP output (neurons and
    bias together), computed without the factored form.
    """
    import torch.autograd.forward_ad as fwAD

    visual = check_supported(model)
    blocks = _blocks(visual)
    n = len(blocks)
    layer = _layer_index(layer, n)
    x = check_batch(images, model_info(visual).image_size).to(visual.proj)

    def primal(t: Tensor) -> Tensor:
        return fwAD.unpack_dual(t).primal

    def tangent(t: Tensor) -> Tensor | None:
        return fwAD.unpack_dual(t).tangent

    def frozen_ln(ln: nn.Module, stash: dict[str, Tensor] | None = None) -> Callable[[Tensor, tuple[Any, ...]], Tensor]:
        """The layer norm's output carrying ``gamma * (t - mean(t)) / sigma`` for its input's
        tangent ``t`` (``sigma`` of the plain input). With ``stash`` that dual output is kept for
        the attention's values and the plain output goes on (the stock attention then runs on
        plain tensors)."""
        def patch(out: Tensor, inputs: tuple[Any, ...]) -> Tensor:
            inp = inputs[0]
            t = tangent(inp)
            if t is None:
                return primal(out)
            p = primal(inp)
            sigma = (p.var(-1, unbiased=False, keepdim=True) + float(ln.eps)).sqrt()
            g = ln.weight if ln.weight is not None else 1.0
            dual = fwAD.make_dual(primal(out), g * (t - t.mean(-1, keepdim=True)) / sigma)
            if stash is None:
                return dual
            stash["values"] = dual
            return primal(out)
        return patch

    side: list[Tensor] = []

    def frozen_attention(attn: nn.MultiheadAttention, stash: dict[str, Tensor]) -> Callable[[Tensor, tuple[Any, ...]], Tensor]:
        def patch(out: Tensor, inputs: tuple[Any, ...]) -> Tensor:
            y = stash.pop("values", None)
            if y is None:
                return primal(out)
            q = primal(inputs[0])
            swap = not getattr(attn, "batch_first", False)
            args = [q.transpose(0, 1), q.transpose(0, 1), y.transpose(0, 1)] if swap else [q, q, y]
            # the module itself (hooks bypassed): weights from the plain input, values perturbed
            o = attn.forward(*args, need_weights=True, average_attn_weights=False)[0]
            return o.transpose(0, 1) if swap else o
        return patch

    def set_aside(out: Tensor, _inputs: tuple[Any, ...]) -> Tensor:
        # after LayerScale: the class token's tangent is kept aside, the plain output goes on
        t = tangent(out)
        if t is not None:
            side.append(t[:, 0].clone())
        return primal(out)

    def closed(out: Tensor, _inputs: tuple[Any, ...]) -> Tensor:
        return primal(out)

    def inject(out: Tensor, _inputs: tuple[Any, ...]) -> Tensor:
        p = primal(out)
        return fwAD.make_dual(p, p.clone())

    def collect(out: Tensor, _inputs: tuple[Any, ...]) -> Tensor:
        p = primal(out)
        t = torch.zeros_like(p)
        t[:, 0] = sum(side) if side else 0.0
        return fwAD.make_dual(p, t)

    patch: dict[str, Callable[..., Tensor]] = {f"blocks.{layer}.mlp_out": inject, "ln_post": frozen_ln(visual.ln_post),
                                               f"blocks.{n - 1}.resid_post": collect}
    for L in range(layer + 1, n):
        stash: dict[str, Tensor] = {}
        patch[f"blocks.{L}.mlp_out"] = closed
        patch[f"blocks.{L}.ln_1"] = frozen_ln(blocks[L].ln_1, stash)
        patch[f"blocks.{L}.attn"] = frozen_attention(blocks[L].attn, stash)
        patch[f"blocks.{L}.attn_out"] = set_aside
    was_training = visual.training
    visual.eval()
    try:
        with warnings.catch_warnings():
            # torch's forward-mode AD scripts its own decompositions the first time a dual tensor
            # is made, and torch.jit.script warns that it is deprecated: torch's notice, not ours
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
            with torch.no_grad(), fwAD.dual_level(), hooked(visual, patch=patch):
                out = visual(x)
                out = out[0] if isinstance(out, tuple) else out
                t = tangent(out)
                return torch.zeros_like(primal(out)) if t is None else t.clone()
    finally:
        visual.train(was_training)


def exactness(model: nn.Module, layer: int, images: Tensor) -> float:
    """Largest deviation of (every neuron's effect + the bias term's) from
    :func:`direct_path_reference`, relative to the reference's largest entry."""
    eff = SecondOrder(model, layer)(images)
    ours = eff.total() + eff.bias()
    ref = direct_path_reference(model, layer, images)
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(torch.finfo(ref.dtype).tiny))


# ----------------------------------------------------------------------------------------------
# Streaming statistics over a dataset
# ----------------------------------------------------------------------------------------------


def _batch_images(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _batch_source(batches: Any, batch_size: int) -> Callable[[], Iterator[Any]]:
    """A function returning a fresh iterator over the batches (for several passes)."""
    if isinstance(batches, Tensor):
        if batches.ndim != 4 or batches.shape[0] == 0:
            raise ValueError(f"expected a non-empty [N, 3, H, W] tensor of images, got {tuple(batches.shape)}")
        return lambda: iter(batches.split(batch_size))
    if callable(batches) and not hasattr(batches, "__iter__"):
        return lambda: iter(batches())
    if not hasattr(batches, "__iter__"):
        raise TypeError(f"batches must be an [N, 3, H, W] tensor, an iterable of batches or a function returning "
                        f"one; got {type(batches).__name__}")
    return lambda: iter(batches)


def _one_shot(batches: Any) -> bool:
    return not isinstance(batches, Tensor) and hasattr(batches, "__next__") and iter(batches) is batches


@dataclass
class NeuronStats:
    """Dataset statistics of one layer's neurons (:func:`stream_neuron_stats`).

    Attributes:
        layer: the MLP layer; neurons: ``[K]`` its neuron indices.
        n_images: images seen; k: images kept per neuron.
        normalized: effects on the cosine scale (divided by each embedding's norm).
        centered: the top images were ranked by the norm of ``effect - mean`` (the
            reference's rule); otherwise by the norm of the effect.
        mean: ``[K, d']`` each neuron's mean effect.
        top_index: ``[K, k]`` dataset positions of the top images, largest norm first.
        top_norm: ``[K, k]`` their (centred) norms, float64.
        top_coef: ``[K, k, J]`` their coefficients (:meth:`top_effects` forms the effects).
        source: the :class:`SecondOrder` of the layer.
    """

    layer: int
    neurons: Tensor
    n_images: int
    k: int
    normalized: bool
    centered: bool
    mean: Tensor
    top_index: Tensor
    top_norm: Tensor
    top_coef: Tensor
    source: SecondOrder = field(repr=False)

    @property
    def threshold(self) -> Tensor:
        """``[K]``: the smallest of each neuron's top-``k`` norms (significance threshold)."""
        return self.top_norm[:, -1]

    def top_effects(self, neurons: Selection = None) -> Tensor:
        """``[K', k, d']``: the effects of each (chosen) neuron on its top images."""
        u, c = self.source.u, self.top_coef
        if neurons is not None:
            idx = torch.as_tensor(resolve_indices(neurons, c.shape[0], "neuron", sort=False), device=c.device)
            u, c = u.index_select(0, idx), c.index_select(0, idx)
        return torch.bmm(c, u)

    def directions(self, *, chunk: int = 256) -> "NeuronDirections":
        """Each neuron's direction: the first right singular vector of its top images' effects
        minus its mean effect, signed so that more of them project positively than negatively
        (on a tie, so that their projections sum to at least 0); with :attr:`threshold` and
        :attr:`mean` (the reference's ``compute_pcas``, whose rule "more than half positive"
        this is up to ties and exact zeros, where its result would depend on the SVD's sign)."""
        out = []
        K = self.top_coef.shape[0]
        for i in range(0, K, chunk):
            idx = list(range(i, min(K, i + chunk)))
            X = self.top_effects(idx) - self.mean[idx][:, None, :]  # [c, k, d']
            _, _, vh = torch.linalg.svd(X, full_matrices=False)
            v = vh[:, 0, :]
            proj = (X @ v[..., None])[..., 0]  # [c, k]
            positive, negative = (proj > 0).sum(-1), (proj < 0).sum(-1)
            # more than half positive; a tie (possible for even k) goes by the sum of projections,
            # so the result does not depend on the sign the SVD happened to return
            keep = (positive > negative) | ((positive == negative) & (proj.sum(-1) >= 0))
            out.append(v * torch.where(keep, 1.0, -1.0).to(v)[:, None])
        vectors = torch.cat(out)
        return NeuronDirections(layer=torch.full((K,), self.layer, dtype=torch.long), neuron=self.neurons.clone(),
                                vectors=vectors, threshold=self.threshold.to(vectors), mean=self.mean.clone(),
                                normalized=self.normalized)

    def significant_share(self) -> Tensor:
        """``[K]``: the share of the images for which each neuron is significant (norm above its
        threshold) on this dataset: ``(k - 1) / n_images`` and more where norms tie; measure it on
        other images with :func:`ablation_study`."""
        return (self.top_norm > self.threshold[:, None]).sum(-1).double() / self.n_images


class _TopK:
    """Running top ``k`` per neuron: norms, dataset positions, coefficients."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.norm: Tensor | None = None
        self.index: Tensor | None = None
        self.coef: Tensor | None = None

    def add(self, norms: Tensor, coef: Tensor, start: int) -> None:
        B, K = norms.shape
        idx = torch.arange(start, start + B, device=norms.device).expand(K, B)
        n, c = norms.T, coef.transpose(0, 1)
        if self.norm is not None:
            n, idx, c = torch.cat([self.norm, n], 1), torch.cat([self.index, idx], 1), torch.cat([self.coef, c], 1)
        # stable: on ties the earlier image stays first
        order = torch.sort(n, dim=1, descending=True, stable=True).indices[:, :self.k]
        self.norm = n.gather(1, order)
        self.index = idx.gather(1, order)
        self.coef = c.gather(1, order[..., None].expand(-1, -1, c.shape[-1]))


@torch.no_grad()
def stream_neuron_stats(model: nn.Module, batches: Any, layers: Selection, *, k: int = 100,
                        normalize: bool = True, centered: bool = True, neurons: Selection = None,
                        means: Mapping[int, Tensor] | None = None, batch_size: int = 64,
                        progress: bool = False, total: int | None = None) -> dict[int, NeuronStats]:
    """Per-neuron statistics of the chosen layers over a dataset, with bounded memory.

    Args:
        model: an open_clip ViT CLIP.
        batches: an ``[N, 3, H, W]`` tensor of preprocessed images (split by ``batch_size``), an
            iterable of batches (or of ``(images, ...)`` tuples) that can be iterated twice (a
            list, a ``DataLoader``), or a function returning a fresh iterable of them.
        layers: MLP layers (one forward pass per batch serves them all).
        k: images kept per neuron (the reference: 100 of ~5k).
        normalize: effects on the cosine scale (each divided by its embedding's norm).
        centered: rank by ``|effect - mean|`` (the reference's rule; a second pass over the data
            once the mean is known, unless ``means`` are given); otherwise by ``|effect|`` in one pass.
        neurons: which neurons of every layer (default all).
        means: ``{layer: [K, d']}`` mean effects known beforehand (e.g. from another set): one pass.
        progress: show a progress bar (``total`` images, if known).

    Returns ``{layer: NeuronStats}``. Nothing of size ``[images, neurons, d']`` is formed: per
    batch ``[B, neurons, J]`` coefficients, per neuron the running top ``k``.
    """
    from tqdm.auto import tqdm

    visual = check_supported(model)
    n_layers = model_info(visual).n_layers
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = [int(layers)]
    layer_list = [_layer_index(i, n_layers) for i in resolve_indices(layers, n_layers, "layer")]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int (images kept per neuron), got {k!r}")
    sos = {L: second_order(model, L, neurons) for L in layer_list}
    attn_layers = sorted({L for so in sos.values() for L in so.later})
    mlp = {L: so._record_neurons for L, so in sos.items()}
    given = {}
    for L, m in (means or {}).items():
        L = _layer_index(L, n_layers)
        if L not in sos:
            raise ValueError(f"means are given for layer {L}, which is not among the layers {layer_list}")
        given[L] = m
    need_mean_pass = centered and any(L not in given for L in layer_list)
    if need_mean_pass and _one_shot(batches):
        raise ValueError("centred statistics read the data twice (the mean first), but batches is a one-shot "
                         "iterator: pass a list, a DataLoader, a tensor or a function returning a fresh iterable "
                         "(or centered=False, or the means)")
    if isinstance(batches, Tensor) and batches.ndim == 4 and batches.shape[0] < k:
        raise ValueError(f"k={k} images per neuron but the dataset has only {batches.shape[0]}")
    source = _batch_source(batches, batch_size)
    total = total if total is not None else (batches.shape[0] if isinstance(batches, Tensor) else None)

    def passes(desc: str) -> Iterator[tuple[int, dict[int, NeuronEffects]]]:
        start = 0
        with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
            for batch in source():
                x = sos[layer_list[0]]._prepare(_batch_images(batch))
                rec = _record(visual, x, mlp, attn_layers)
                out = {}
                for L, so in sos.items():
                    out[L] = so._coefficients(rec, normalize)
                yield start, out
                start += x.shape[0]
                bar.update(x.shape[0])

    sums = {L: None for L in layer_list}
    tops = {L: _TopK(k) for L in layer_list}
    n_seen = 0

    def accumulate(eff: dict[int, NeuronEffects], layers_: Iterable[int]) -> None:
        for L in layers_:
            s = eff[L].coef.double().sum(0)  # [K, J]
            sums[L] = s if sums[L] is None else sums[L] + s

    def mean_of(L: int, n: int) -> Tensor:
        so = sos[L]
        return torch.einsum("kj,kjd->kd", sums[L] / n, so.u.double()).to(so.u.dtype)

    mean: dict[int, Tensor] = {}
    if need_mean_pass:
        missing = [L for L in layer_list if L not in given]
        for start, eff in passes("second-order means"):
            accumulate(eff, missing)
            n_seen = start + len(eff[layer_list[0]])
        if n_seen == 0:
            raise ValueError("no images in batches")
        for L in missing:
            mean[L] = mean_of(L, n_seen)
    for L, m in given.items():
        mean[L] = torch.as_tensor(m).to(sos[L].u)
    centres = {L: sos[L].centre_terms(mean[L]) if centered else None for L in layer_list}
    n_second = 0
    for start, eff in passes("second-order top images"):
        if not need_mean_pass:
            accumulate(eff, [L for L in layer_list if L not in mean])
        for L in layer_list:
            e = eff[L]
            tops[L].add(e.norms(centre=centres[L]), e.coef, start)
        n_second = start + len(eff[layer_list[0]])
    if n_second == 0:
        raise ValueError("no images in batches")
    if need_mean_pass and n_second != n_seen:
        raise ValueError(f"the two passes over batches saw {n_seen} and {n_second} images: the batches must be the "
                         "same each time they are iterated")
    if n_second < k:
        raise ValueError(f"k={k} images per neuron but the dataset has only {n_second}")
    out = {}
    for L in layer_list:
        if L not in mean:
            mean[L] = mean_of(L, n_second)
        t = tops[L]
        out[L] = NeuronStats(layer=L, neurons=sos[L].neurons.clone(), n_images=n_second, k=k, normalized=normalize,
                             centered=centered, mean=mean[L], top_index=t.index, top_norm=t.norm, top_coef=t.coef,
                             source=sos[L])
    return out


# ----------------------------------------------------------------------------------------------
# Directions, significance
# ----------------------------------------------------------------------------------------------


@dataclass
class NeuronDirections:
    """Neuron directions, possibly of several layers (:meth:`cat`).

    Attributes:
        layer, neuron: ``[K]`` each row's MLP layer and neuron index.
        vectors: ``[K, d']`` unit directions.
        threshold: ``[K]`` significance thresholds (norm of ``effect - mean``).
        mean: ``[K, d']`` mean effects.
        normalized: the scale the thresholds and means are on (cosine scale when True).
    """

    layer: Tensor
    neuron: Tensor
    vectors: Tensor
    threshold: Tensor
    mean: Tensor
    normalized: bool

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def labels(self) -> list[str]:
        """``"L9.N123"`` per row."""
        return [f"L{int(a)}.N{int(b)}" for a, b in zip(self.layer, self.neuron)]

    def select(self, rows: Selection) -> "NeuronDirections":
        idx = torch.as_tensor(resolve_indices(rows, len(self), "row", sort=False), dtype=torch.long)
        return NeuronDirections(self.layer[idx], self.neuron[idx], self.vectors[idx.to(self.vectors.device)],
                                self.threshold[idx.to(self.threshold.device)], self.mean[idx.to(self.mean.device)],
                                self.normalized)

    @staticmethod
    def cat(parts: Sequence["NeuronDirections"]) -> "NeuronDirections":
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        if len({p.normalized for p in parts}) != 1:
            raise ValueError("directions on different scales (normalized and not) cannot be concatenated")
        return NeuronDirections(torch.cat([p.layer for p in parts]), torch.cat([p.neuron for p in parts]),
                                torch.cat([p.vectors for p in parts]), torch.cat([p.threshold for p in parts]),
                                torch.cat([p.mean for p in parts]), parts[0].normalized)


def _matching(effects: NeuronEffects, directions: NeuronDirections) -> None:
    so = effects.source
    if len(directions) != len(so.neurons) or bool((directions.layer != so.layer).any()) \
            or not torch.equal(directions.neuron.cpu(), so.neurons.cpu()):
        raise ValueError(f"the directions are not those of the effects' neurons (layer {so.layer}, "
                         f"{len(so.neurons)} neurons): compute both for the same layer and neurons")
    if directions.normalized != effects.normalized:
        raise ValueError(f"the directions were computed on the {'cosine' if directions.normalized else 'raw'} scale "
                         f"but the effects are on the {'cosine' if effects.normalized else 'raw'} one: use the same "
                         "normalize")


def significance(effects: NeuronEffects, directions: NeuronDirections) -> tuple[Tensor, Tensor]:
    """Per image and neuron: the norm of ``effect - mean`` ``[B, K]`` (float64) and whether it is
    above the neuron's threshold (significant) ``[B, K]``."""
    _matching(effects, directions)
    norms = effects.norms(directions.mean)
    return norms, norms > directions.threshold.to(norms)[None]


# ----------------------------------------------------------------------------------------------
# Sparse text decompositions
# ----------------------------------------------------------------------------------------------


@dataclass
class SparseTexts:
    """Sparse decompositions of directions over a vocabulary.

    Attributes:
        coef: ``[K, M]`` float64 weights (at most ``n_words`` non-zero per row).
        words: the ``M`` vocabulary entries.
        labels: one label per row (e.g. ``"L9.N123"``).
    """

    coef: Tensor
    words: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return self.coef.shape[0]

    def top(self, row: int, n: int | None = None) -> list[tuple[str, float]]:
        """Row ``row``'s non-zero words, largest ``|weight|`` first: ``[(word, weight), ...]``."""
        c = self.coef[row]
        nz = torch.nonzero(c).reshape(-1)
        order = nz[torch.argsort(c[nz].abs(), descending=True, stable=True)]
        if n is not None:
            order = order[:n]
        return [(self.words[int(i)], float(c[i])) for i in order]

    @staticmethod
    def cat(parts: Sequence["SparseTexts"]) -> "SparseTexts":
        parts = list(parts)
        if not parts or any(p.words != parts[0].words for p in parts):
            raise ValueError("decompositions over different vocabularies cannot be concatenated")
        return SparseTexts(torch.cat([p.coef for p in parts]), list(parts[0].words),
                           [lab for p in parts for lab in p.labels])


def prepare_vocabulary(embeddings: Tensor, normalize: str = "dimension") -> Tensor:
    """The dictionary for :func:`sparse_text_decomposition` ``[M, d']`` float64: text embeddings
    centred on their mean, then each *dimension* scaled to unit norm over the vocabulary
    (``"dimension"``, the reference's rule) or each *text* to unit norm (``"text"``)."""
    E = torch.as_tensor(embeddings).double()
    if E.ndim != 2 or E.shape[0] < 2:
        raise ValueError(f"the vocabulary must be [M, d'] with at least two texts, got {tuple(E.shape)}")
    E = E - E.mean(0, keepdim=True)
    if normalize == "dimension":
        n = E.norm(dim=0, keepdim=True)
    elif normalize == "text":
        n = E.norm(dim=1, keepdim=True)
    else:
        raise ValueError(f"normalize must be 'dimension' (the reference's) or 'text', got {normalize!r}")
    if bool((n == 0).any()):
        raise ValueError("the centred vocabulary has a zero dimension / text: give distinct texts")
    return E / n


def sparse_text_decomposition(directions: NeuronDirections | Tensor, vocabulary: Tensor, words: Sequence[str], *,
                              n_words: int = 32, normalize: str = "dimension") -> SparseTexts:
    """Each direction as a sparse combination of texts, by orthogonal matching pursuit
    (scikit-learn's ``OrthogonalMatchingPursuit``) over the vocabulary prepared by
    :func:`prepare_vocabulary`.

    Args:
        directions: :class:`NeuronDirections` or ``[K, d']`` vectors.
        vocabulary: ``[M, d']`` text embeddings of ``words`` (e.g. :func:`helpers.engine.text.encode_texts`).
        words: the ``M`` texts.
        n_words: non-zero weights per direction (the reference: 32 to 128; at most ``M`` and ``d'``).
    """
    from sklearn.linear_model import OrthogonalMatchingPursuit

    words = list(words)
    vecs = directions.vectors if isinstance(directions, NeuronDirections) else torch.as_tensor(directions)
    labels = directions.labels() if isinstance(directions, NeuronDirections) else [str(i) for i in range(len(vecs))]
    if vecs.ndim != 2:
        raise ValueError(f"directions must be [K, d'], got {tuple(vecs.shape)}")
    vocabulary = text_matrix(vocabulary, width=vecs.shape[1], what="vocabulary")
    if vocabulary.shape[0] != len(words):
        raise ValueError(f"{vocabulary.shape[0]} text embeddings but {len(words)} words")
    D = prepare_vocabulary(vocabulary.detach().cpu(), normalize)  # scikit-learn works on the CPU
    if isinstance(n_words, bool) or not isinstance(n_words, (int, np.integer)) or not 1 <= n_words <= min(D.shape):
        raise ValueError(f"n_words must be an int in 1..{min(D.shape)} (at most the vocabulary size {D.shape[0]} and "
                         f"the dimension {D.shape[1]}), got {n_words!r}")
    X = D.T.numpy()  # [d', M]: atoms as columns
    Y = vecs.detach().double().cpu().numpy().T  # [d', K]
    omp = OrthogonalMatchingPursuit(n_nonzero_coefs=int(n_words), fit_intercept=False, precompute=True)
    with warnings.catch_warnings():
        # a direction represented exactly with fewer atoms stops early; that is a result, not a problem
        warnings.filterwarnings("ignore", message="Orthogonal matching pursuit ended prematurely",
                                category=RuntimeWarning)
        omp.fit(X, Y)
    coef = torch.from_numpy(np.atleast_2d(omp.coef_).astype(np.float64))
    return SparseTexts(coef, words, labels)


# ----------------------------------------------------------------------------------------------
# Ablations
# ----------------------------------------------------------------------------------------------


def ablated_embeddings(effects: NeuronEffects, directions: NeuronDirections) -> dict[str, Tensor]:
    """The batch's embeddings (at the effects' scale) under each of :data:`ABLATIONS`.

    With ``phi_k`` the effects, ``mu_k`` the directions' means, ``d_k`` the directions and
    ``e`` the embedding: ``mean_ablated = e - sum_k (phi_k - mu_k)``; ``significant_only`` adds
    back ``phi_k - mu_k`` of the significant neurons, ``insignificant_only`` of the others;
    ``rank1`` adds back ``((phi_k - mu_k) . d_k) d_k`` of every neuron.
    """
    _matching(effects, directions)
    so = effects.source
    dtype = so.u.dtype
    mean = directions.mean.to(so.u)
    d = directions.vectors.to(so.u)
    e = effects.embedding
    mean_ab = e - effects.total() + mean.sum(0)[None]
    _, sig = significance(effects, directions)
    sig = sig.to(dtype)
    sig_part = effects.weighted_sum(sig) - sig @ mean  # sum over the significant k of (phi_k - mu_k)
    proj = effects.projections(d, mean)  # [B, K]
    return {"baseline": e, "mean_ablated": mean_ab, "significant_only": mean_ab + sig_part,
            "insignificant_only": e - sig_part, "rank1": mean_ab + proj @ d}


@dataclass
class AblationResult:
    """Zero-shot accuracy under each ablation (:data:`ABLATIONS`) and how often each neuron was
    significant (``significant_share`` ``[K]``) on ``n_images`` images; ``correct`` holds, per
    ablation, whether each image was classified right (``[n_images]`` bool), for paired
    comparisons (:func:`compare_rates`). ``significant_energy`` ``[K]``: the share of each
    neuron's squared centred effect norm, summed over the images, that falls on the images where
    it is significant (effects spread evenly would put about ``significant_share`` there)."""

    accuracy: dict[str, float]
    significant_share: Tensor
    n_images: int
    correct: dict[str, Tensor] = field(default_factory=dict, repr=False)
    significant_energy: Tensor | None = None


def _labelled_batches(batches: Any, labels: Any, batch_size: int) -> Iterator[Any]:
    if isinstance(batches, Tensor):
        if labels is None:
            raise ValueError("images given as a tensor need labels=...")
        lab = torch.as_tensor(labels).reshape(-1)
        if len(lab) != batches.shape[0]:
            raise ValueError(f"{batches.shape[0]} images but {len(lab)} labels")
        return zip(batches.split(batch_size), lab.split(batch_size))
    if labels is not None:
        raise ValueError("labels=... goes with images given as a tensor; batches already carry labels")
    return iter(batches)


@torch.no_grad()
def ablation_studies(model: nn.Module, directions: NeuronDirections | Mapping[int, NeuronDirections], batches: Any,
                     classifier: Tensor, *, labels: Sequence[int] | Tensor | None = None, batch_size: int = 64,
                     progress: bool = False) -> dict[int, AblationResult]:
    """:func:`ablation_study` of several layers in one forward pass per batch: ``{layer: result}``.

    ``directions`` are one :class:`NeuronDirections` spanning the layers (``NeuronDirections.cat``)
    or ``{layer: directions}``; each layer is ablated on its own (the others untouched)."""
    from tqdm.auto import tqdm

    if isinstance(directions, NeuronDirections):
        by_layer = {int(L): directions.select(torch.nonzero(directions.layer == L).reshape(-1).tolist())
                    for L in torch.unique(directions.layer).tolist()}
    else:
        by_layer = {int(L): d for L, d in directions.items()}
    if not by_layer:
        raise ValueError("no directions")
    for L, d in by_layer.items():
        if len(d) == 0 or bool((d.layer != L).any()):
            raise ValueError(f"the directions given for layer {L} are not all of layer {L}")
    if len({d.normalized for d in by_layer.values()}) != 1:
        raise ValueError("the layers' directions are on different scales (normalized and not)")
    normalize = next(iter(by_layer.values())).normalized
    sos = {L: second_order(model, L, d.neuron) for L, d in by_layer.items()}
    visual = sos[next(iter(sos))].visual
    attn_layers = sorted({L for so in sos.values() for L in so.later})
    mlp = {L: so._record_neurons for L, so in sos.items()}
    C = None
    correct = {L: {name: [] for name in ABLATIONS} for L in sos}
    share = {L: None for L in sos}
    energy = {L: torch.zeros(len(so.neurons), dtype=torch.float64) for L, so in sos.items()}
    energy_sig = {L: torch.zeros(len(so.neurons), dtype=torch.float64) for L, so in sos.items()}
    n = 0
    for batch in tqdm(_labelled_batches(batches, labels, batch_size), desc="second-order ablations", unit="batch",
                      disable=not progress):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("each batch must be (images, labels)")
        y = torch.as_tensor(batch[1]).reshape(-1)
        x = sos[next(iter(sos))]._prepare(batch[0])
        rec = _record(visual, x, mlp, attn_layers)
        for L, so in sos.items():
            eff = so._coefficients(rec, normalize)
            if C is None:
                C = text_matrix(classifier, width=eff.embedding.shape[-1], what="classifier").to(eff.embedding)
            yd = y.to(eff.embedding.device)
            if bool(((yd < 0) | (yd >= C.shape[0])).any()):
                raise IndexError(f"labels must be class indices in 0..{C.shape[0] - 1}")
            for name, emb in ablated_embeddings(eff, by_layer[L]).items():
                correct[L][name].append(((F.normalize(emb, dim=-1) @ C.T).argmax(-1) == yd).cpu())
            norms, sig = significance(eff, by_layer[L])
            s = sig.double().sum(0)
            share[L] = s if share[L] is None else share[L] + s
            sq = (norms * norms).cpu()
            energy[L] += sq.sum(0)
            energy_sig[L] += (sq * sig.cpu()).sum(0)
        n += len(y)
    if n == 0:
        raise ValueError("no images")
    out = {}
    for L in sos:
        hits = {name: torch.cat(v) for name, v in correct[L].items()}
        out[L] = AblationResult({k: float(v.double().mean()) for k, v in hits.items()}, share[L] / n, n, hits,
                                energy_sig[L] / energy[L].clamp_min(torch.finfo(torch.float64).tiny))
    return out


def ablation_study(model: nn.Module, directions: NeuronDirections, batches: Any, classifier: Tensor, *,
                   labels: Sequence[int] | Tensor | None = None, batch_size: int = 64,
                   progress: bool = False) -> AblationResult:
    """Zero-shot accuracy of the ablated embeddings (:func:`ablated_embeddings`) over a dataset.

    ``directions`` are one layer's (e.g. ``stats.directions()`` of training images; the
    ablations use their means and thresholds). ``batches`` is an ``[N, 3, H, W]`` tensor with
    ``labels``, or an iterable of ``(images, labels)`` batches. ``classifier`` is ``[C, d']``.
    Several layers in one pass: :func:`ablation_studies`.
    """
    layers = torch.unique(directions.layer)
    if len(layers) != 1:
        raise ValueError("ablation_study takes one layer's directions (select them with directions.select, or use "
                         "ablation_studies for several layers)")
    return ablation_studies(model, {int(layers[0]): directions}, batches, classifier, labels=labels,
                            batch_size=batch_size, progress=progress)[int(layers[0])]


# ----------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def neuron_segmentation_maps(model: nn.Module, images: Any, class_emb: Any, directions: NeuronDirections, *,
                             n_neurons: int = 200, labels: Sequence[int] | Tensor | None = None,
                             preprocess: Callable[..., Tensor] | None = None,
                             tokenizer: Callable[..., Tensor] | None = None) -> Tensor:
    """Soft foreground maps on the patch grid ``[B, gh, gw]`` from neurons (the reference's
    ``compute_segmentation``): for each image's class (the zero-shot prediction, or ``labels``),
    the ``n_neurons`` rows of ``directions`` (any layers) whose direction has the largest
    ``|dot|`` with the class text; their activations at each patch, averaged. Post-process
    (upsample, min-max, threshold; the reference thresholds at 0.5) like every segmentation
    method's maps.
    """
    visual = check_supported(model)
    info = model_info(visual)
    x = model_batch(model, images, preprocess).to(visual.proj.dtype)
    E = text_matrix(class_emb, model=model, tokenizer=tokenizer, width=info.embed_dim, what="class_emb").to(
        device=x.device, dtype=visual.proj.dtype)
    if isinstance(n_neurons, bool) or not isinstance(n_neurons, (int, np.integer)) or not 1 <= n_neurons <= len(directions):
        raise ValueError(f"n_neurons must be an int in 1..{len(directions)} (the rows of directions), got {n_neurons!r}")
    layers = sorted({int(v) for v in directions.layer})
    for L in layers:
        if not 0 <= L < info.n_layers:
            raise IndexError(f"the directions name layer {L} but the model has {info.n_layers}")
    mlp = {L: torch.unique(directions.neuron[directions.layer == L]) for L in layers}
    rec = _record(visual, x, mlp, [])
    if labels is None:
        lab = (F.normalize(rec.embedding, dim=-1) @ E.T).argmax(-1)
    else:
        lab = torch.as_tensor(labels, device=x.device).reshape(-1).long()
        if lab.numel() != x.shape[0]:
            raise ValueError(f"got {lab.numel()} labels for {x.shape[0]} images")
        if bool(((lab < 0) | (lab >= E.shape[0])).any()):
            raise IndexError(f"labels must be class indices in 0..{E.shape[0] - 1}")
    # every row's activations [B, T, rows], in the order of directions
    cols = []
    for L, neu in zip(directions.layer.tolist(), directions.neuron.tolist()):
        pos = int(torch.searchsorted(mlp[L], torch.tensor(neu)))
        cols.append((L, pos))
    acts = torch.stack([rec.acts[L][..., p] for L, p in cols], -1)  # [B, T, rows]
    scores = (directions.vectors.to(E) @ E.T).abs()  # [rows, C]
    top = scores.topk(int(n_neurons), dim=0).indices  # [n, C]
    sel = top[:, lab.to(top.device)].T  # [B, n]
    maps = acts[:, 1:].gather(2, sel[:, None, :].expand(-1, acts.shape[1] - 1, -1).to(acts.device)).mean(-1)
    return maps.reshape(x.shape[0], *info.grid_size)


# ----------------------------------------------------------------------------------------------
# Concept discovery and adversarial words
# ----------------------------------------------------------------------------------------------


def _pool(weights: Tensor, texts: SparseTexts, n_words: int | None, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
    """``sum_k weights[k] * coef[k, w]`` per word, largest positive first."""
    score = weights.double().cpu() @ texts.coef  # [M]
    drop = {w.strip().lower() for w in exclude}
    order = torch.argsort(score, descending=True, stable=True)
    out = []
    for i in order.tolist():
        if score[i] <= 0:
            break
        if texts.words[i].strip().lower() in drop:
            continue
        out.append((texts.words[i], float(score[i])))
        if n_words is not None and len(out) == n_words:
            break
    return out


def image_concepts(norms: Tensor, directions: NeuronDirections, texts: SparseTexts, *,
                   n_words: int = 10) -> list[list[tuple[str, float]]]:
    """Concept discovery: for each image, the words of its significant neurons pooled with the
    neurons' effect norms as weights (``sum_k |phi_k - mu_k| coef[k, w]`` over significant ``k``),
    largest first. ``norms`` ``[B, K]`` are the centred norms of :func:`significance` for the rows
    of ``directions`` and ``texts`` (layers concatenated alike)."""
    norms = torch.as_tensor(norms)
    if norms.ndim != 2 or norms.shape[1] != len(directions) or len(texts) != len(directions):
        raise ValueError(f"norms must be [B, {len(directions)}] and texts must have {len(directions)} rows, one per "
                         f"direction; got norms {tuple(norms.shape)} and {len(texts)} rows")
    sig = norms > directions.threshold.to(norms)[None]
    return [_pool(torch.where(sig[b], norms[b], torch.zeros_like(norms[b])), texts, n_words)
            for b in range(norms.shape[0])]


def rank_neurons_between(directions: NeuronDirections, class_a: Tensor, class_b: Tensor) -> tuple[Tensor, Tensor]:
    """How much each direction pushes class A toward class B: ``scores = d_k . (t_B - t_A)``
    ``[K]``, and the rows ordered by ``|score|``, largest first (the reference's ranking)."""
    a, b = (torch.as_tensor(t).reshape(-1).to(directions.vectors) for t in (class_a, class_b))
    if a.shape[0] != directions.vectors.shape[1] or b.shape[0] != a.shape[0]:
        raise ValueError(f"class embeddings must be [{directions.vectors.shape[1]}] vectors")
    scores = directions.vectors @ (b - a)
    return scores, torch.argsort(scores.abs(), descending=True, stable=True)


def adversarial_words(directions: NeuronDirections, texts: SparseTexts, class_a: Tensor, class_b: Tensor, *,
                      n_neurons: int = 50, n_words: int = 20, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
    """Words that push images of class A toward class B: the ``n_neurons`` rows with the largest
    ``|d_k . (t_B - t_A)|``, their words weighted by ``coef[k, w] * score_k`` and pooled, largest
    positive first, leaving out the entries of ``exclude`` (compared stripped and lower-case).

    As in the reference, a scene of class A drawn with these words should be taken for class B
    without showing B: exclude the words that name B (and its synonyms), e.g.
    ``exclude=[w for w in words if "square" in w]``."""
    if len(texts) != len(directions):
        raise ValueError(f"texts must have one row per direction ({len(directions)}), got {len(texts)}")
    if isinstance(n_neurons, bool) or not isinstance(n_neurons, (int, np.integer)) or not 1 <= n_neurons <= len(directions):
        raise ValueError(f"n_neurons must be an int in 1..{len(directions)}, got {n_neurons!r}")
    scores, order = rank_neurons_between(directions, class_a, class_b)
    w = torch.zeros_like(scores)
    keep = order[:int(n_neurons)]
    w[keep] = scores[keep]
    return _pool(w, texts, n_words, exclude)


# ----------------------------------------------------------------------------------------------
# Checking directions against labels; comparing two rates
# ----------------------------------------------------------------------------------------------


def top_image_lift(top_index: Tensor, labels: Any, values: Sequence[Any]) -> Tensor:
    """How much more often a neuron's top images carry a value than the dataset does: per
    neuron ``k``, the share of its top images ``top_index[k]`` whose label is ``values[k]``,
    divided by that value's share of all images (its base rate). ``[K]`` float64; NaN where
    ``values[k]`` is ``None`` (nothing to check) or the value never occurs.

    Args:
        top_index: ``[K, k]`` dataset positions of each neuron's top images
            (:attr:`NeuronStats.top_index`).
        labels: ``[N]`` one label per dataset image, or several kinds of labels
            ``{name: [N]}`` (e.g. every factor of a scene).
        values: one per neuron: the value to look for (with ``[N]`` labels), or ``(name, value)``
            (with named labels), or ``None``.
    """
    top = torch.as_tensor(top_index).long().cpu()
    named = isinstance(labels, Mapping)
    def cpu(v: Any) -> Tensor:
        return (v.detach().cpu() if isinstance(v, Tensor) else torch.as_tensor(np.asarray(v))).reshape(-1).long()

    table = {k: cpu(v) for k, v in labels.items()} if named else {None: cpu(labels)}
    sizes = {len(v) for v in table.values()}
    if len(sizes) != 1:
        raise ValueError(f"every kind of label needs one entry per image; got lengths {sorted(sizes)}")
    (n,) = sizes
    if top.ndim != 2:
        raise ValueError(f"top_index must be [K, k], got {tuple(top.shape)}")
    if len(values) != top.shape[0]:
        raise ValueError(f"{len(values)} values for {top.shape[0]} neurons")
    if top.numel() and (int(top.min()) < 0 or int(top.max()) >= n):
        raise IndexError(f"top_index must hold positions in 0..{n - 1} of the {n} labelled images")
    groups: dict[Any, tuple[list[int], list[int]]] = {}  # label kind -> (neurons, values)
    for k, v in enumerate(values):
        if v is None:
            continue
        key = None
        if named:
            if not isinstance(v, (tuple, list)) or len(v) != 2 or v[0] not in table:
                raise ValueError(f"with named labels each value is (name, value), name one of {sorted(table)}; "
                                 f"got {v!r}")
            key, v = v
        rows, vals = groups.setdefault(key, ([], []))
        rows.append(k)
        vals.append(int(v))
    out = torch.full((top.shape[0],), float("nan"), dtype=torch.float64)
    for key, (rows, vals) in groups.items():
        lab = table[key]
        r, v = torch.as_tensor(rows), torch.as_tensor(vals)
        base = (lab[None, :] == v[:, None]).double().mean(1)  # [R]
        share = (lab[top[r]] == v[:, None]).double().mean(1)
        ok = base > 0
        out[r[ok]] = share[ok] / base[ok]
    return out


@dataclass
class RateComparison:
    """Two rates on paired trials and the bootstrap interval of their difference
    (:func:`compare_rates`)."""

    rate_a: float
    rate_b: float
    difference: float
    low: float
    high: float
    level: float
    n_trials: int
    n_clusters: int

    @property
    def within_noise(self) -> bool:
        """Whether the interval of the difference contains 0."""
        return self.low <= 0.0 <= self.high

    def as_difference(self, unit: str = "trials") -> Difference:
        """The same comparison as a :class:`helpers.methods.stats.Difference` (``rate_a - rate_b``
        and its bootstrap interval; ``unit`` names what was resampled, e.g. ``"class pairs"``),
        for the course's comparative words (:func:`helpers.course.narrative.comparative`)."""
        return Difference(self.rate_a, self.rate_b, self.low, self.high,
                          f"a paired bootstrap over {self.n_clusters} {unit}", self.level, self.n_clusters)


def compare_rates(hits_a: Any, hits_b: Any, *, clusters: Any = None, n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> RateComparison:
    """The rates of two conditions on the same trials (``hits_a[i]``, ``hits_b[i]``: trial ``i``
    under each; e.g. whether a scene fools the model with adversarial and with random words) and
    a paired percentile bootstrap interval of ``rate_a - rate_b``.

    Trials are resampled with replacement, the two conditions of a trial together; with
    ``clusters`` (one id per trial, e.g. the class pair a scene was drawn for) whole clusters
    are resampled, so trials that share a cluster are not counted as independent.
    """
    def trials(h: Any) -> Tensor:
        h = h.detach().cpu().double() if isinstance(h, Tensor) else torch.as_tensor(np.asarray(h, dtype=np.float64))
        return h.reshape(-1)

    a, b = trials(hits_a), trials(hits_b)
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"hits_a and hits_b must be non-empty and paired (same length), got {a.numel()} and "
                         f"{b.numel()}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if clusters is None:
        ids = torch.arange(a.numel())
    else:
        c = clusters.detach().cpu().numpy() if isinstance(clusters, Tensor) else np.asarray(clusters)
        ids = torch.as_tensor(np.unique(c, return_inverse=True)[1]).reshape(-1)
        if ids.numel() != a.numel():
            raise ValueError(f"{ids.numel()} cluster ids for {a.numel()} trials")
    G = int(ids.max()) + 1
    d = a - b
    sum_d = torch.zeros(G, dtype=torch.float64).index_add_(0, ids, d)
    count = torch.zeros(G, dtype=torch.float64).index_add_(0, ids, torch.ones_like(d))
    g = torch.Generator().manual_seed(int(seed))
    pick = torch.randint(0, G, (int(n_boot), G), generator=g)
    boot = sum_d[pick].sum(1) / count[pick].sum(1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(boot, q).tolist()
    return RateComparison(float(a.mean()), float(b.mean()), float(d.mean()), float(low), float(high), float(level),
                          int(a.numel()), G)
