"""Direct terms of a whole dataset, mean ablation, and zero-shot accuracy through them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..engine.components import Components, DirectEffects
from ..engine.decompose import Decomposer
from ..engine.images import check_finite

__all__ = ["ABLATION_SCALES", "DirectTerms", "AblationSet", "MEAN_ABLATION_PROTOCOLS", "mean_ablation_rows", "collect_terms",
           "cached_terms", "term_arrays", "accuracy", "ablation_accuracies", "sample_index", "component_table", "variance_shares",
           "margin_contributions", "group_variance_share", "pattern_held", "variance_pattern_held",
           "PATTERN_SMALL_DROP", "PATTERN_LARGE_DROP"]


ABLATION_SCALES: tuple[str, ...] = ("raw", "paper")
"""Values of ``scale`` in :meth:`DirectTerms.ablated`: means of the raw terms (the course's)
or of each image's terms divided by its embedding norm (the reference code's)."""


@dataclass
class DirectTerms(DirectEffects):
    """Direct contributions for ``N`` images (all on one device, joint space, unnormalised).

    The tensors are also handed out with named axes, like a
    :class:`~helpers.engine.decompose.Decomposition`'s: :meth:`components` ``(image, component, dim)``,
    :meth:`attention` / :meth:`mlps` ``(image, layer, dim)``, :meth:`head_terms`
    ``(image, layer, head, dim)`` and :meth:`cls_self_terms`.

    ``cls_self`` is each layer's attention term flowing from the class token to itself (the
    ``i = CLS`` summand), kept when requested because the paper ablates it separately.
    """

    embed: Tensor  # [N, d]
    attn: Tensor  # [N, L, d]
    mlp: Tensor  # [N, L, d]
    const: Tensor  # [d]: the image-independent term (the ln_post bias through the projection)
    heads: Tensor | None = None  # [N, L, H, d]
    cls_self: Tensor | None = None  # [N, L, d]
    pool_mlp: Tensor | None = None  # [N, d]: an attention-pooled tower's pooling-MLP term (SigLIP)
    pool_heads: Tensor | None = None  # [N, Hp, d]: its pooling heads' terms, out-projection bias left out

    _no_heads = "the terms have no per-head contributions: collect them with heads=True"

    def __post_init__(self) -> None:
        d = self.embed.shape[-1]
        if self.const.ndim != 1 or self.const.shape[0] != d:
            hint = (" (a per-image term, such as an attention-pooled tower's pooling MLP, belongs in "
                    "pool_mlp)" if self.const.ndim == 2 else "")
            raise ValueError(f"const must be [{d}], one image-independent vector, got shape "
                             f"{tuple(self.const.shape)}{hint}")
        if self.pool_mlp is not None and tuple(self.pool_mlp.shape) != tuple(self.embed.shape):
            raise ValueError(f"pool_mlp must be [N, d] = {tuple(self.embed.shape)}, got shape "
                             f"{tuple(self.pool_mlp.shape)}")
        if self.pool_heads is not None and (self.pool_heads.ndim != 3 or self.pool_heads.shape[0] != len(self)
                                            or self.pool_heads.shape[2] != d):
            raise ValueError(f"pool_heads must be [N, Hp, d] with N = {len(self)}, d = {d}, got shape "
                             f"{tuple(self.pool_heads.shape)}")

    def _const_rows(self) -> Tensor:
        return self.const.expand(len(self), -1)

    def components(self) -> Components:
        """All direct terms as ``(image, component, dim)``: embed, attn.0, mlp.0, ...,
        (``pool.mlp`` for an attention-pooled tower), const; they add up to the embeddings."""
        comps = super().components()
        if self.pool_mlp is None:
            return comps
        labels = comps.labels["component"]
        data = torch.cat([comps.data[:, :-1], self.pool_mlp[:, None], comps.data[:, -1:]], 1)
        return Components(data, comps.axes, {"component": labels[:-1] + ["pool.mlp", labels[-1]]})

    def cls_self_terms(self) -> Components:
        """Each layer's class-token-to-itself attention term ``(image, layer, dim)``."""
        if self.cls_self is None:
            raise AttributeError("the terms have no class-token terms: collect them with cls_self=True")
        return Components(self.cls_self, ("image", "layer", "dim"))

    def __len__(self) -> int:
        return self.embed.shape[0]

    def embeddings(self) -> Tensor:
        """The full embeddings (sum of every term)."""
        out = self.embed + self.attn.sum(1) + self.mlp.sum(1) + self.const
        return out if self.pool_mlp is None else out + self.pool_mlp

    @property
    def has_cls_self(self) -> bool:
        """Whether the class-token-to-itself terms were kept."""
        return self.cls_self is not None

    def embedding_norms(self) -> Tensor:
        """``[N]`` the norm of each image's embedding."""
        return self.embeddings().norm(dim=-1)

    def subset(self, index: Tensor | Sequence[int]) -> "DirectTerms":
        """The terms of the images at ``index`` (a new set)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.embed.device)
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return DirectTerms(embed=self.embed[idx], attn=self.attn[idx], mlp=self.mlp[idx], const=self.const,
                           heads=pick(self.heads), cls_self=pick(self.cls_self), pool_mlp=pick(self.pool_mlp),
                           pool_heads=pick(self.pool_heads))

    def sample(self, n: int) -> tuple["DirectTerms", Tensor]:
        """At most ``n`` images, evenly spaced over the set (:func:`sample_index`), and their
        indices: the set itself when it has no more than ``n``."""
        index = sample_index(len(self), n)
        return (self if len(index) == len(self) else self.subset(index)), index

    def reference_scale(self) -> tuple[Tensor, Tensor]:
        """What :meth:`normalized` applies: the share of the ``ln_post`` bias term each of the
        ``2L + 1`` summands takes (``const / (2L + 1)``, ``[d]``: image-independent only; an
        attention-pooled tower's pooling-MLP term is not shared), and each image's embedding
        norm ``[N, 1]`` (1 where the embedding is zero). A term ``t`` on the reference scale is
        ``(t + share) / norm``; a head's, ``(t + share / H) / norm``."""
        nrm = self.embeddings().norm(dim=-1, keepdim=True)
        return self.const / (2 * self.n_layers + 1), torch.where(nrm > 0, nrm, torch.ones_like(nrm))

    def normalized(self) -> "DirectTerms":
        """The terms on the reference code's cosine scale: each image's terms divided by the
        norm of that image's embedding, so that they sum to the unit embedding.

        As in the paper's reference code, the ``ln_post`` bias term (``const``) is first shared
        evenly among the ``2L + 1`` summands of the residual stream (the embedding term, each
        attention layer, each MLP; a layer's share split evenly over its heads), so the result
        has ``const = 0`` and every term varies with the image's norm. ``cls_self`` is divided
        by the norm without a share, and so is an attention-pooled tower's ``pool_mlp``, which
        stays a term of its own: it is not part of the residual stream, and not a constant.
        (The reference also shares the residual stream's mean evenly among the summands, where
        the decomposition removes each summand's own mean; that convention of the decomposition
        is kept.)
        """
        share, nrm = self.reference_scale()
        heads = None
        if self.heads is not None:
            heads = (self.heads + share / self.heads.shape[2]) / nrm[:, None, None]
        return DirectTerms(embed=(self.embed + share) / nrm, attn=(self.attn + share) / nrm[:, None],
                           mlp=(self.mlp + share) / nrm[:, None], const=torch.zeros_like(self.const),
                           heads=heads, cls_self=None if self.cls_self is None else self.cls_self / nrm[:, None],
                           pool_mlp=None if self.pool_mlp is None else self.pool_mlp / nrm,
                           pool_heads=None if self.pool_heads is None else self.pool_heads / nrm[:, None])

    def ablated(self, *, mlps: Iterable[int] = (), attn: Iterable[int] = (),
                heads: Iterable[tuple[int, int]] = (), embed: bool = False,
                cls_self: Iterable[int] = (), means: "DirectTerms | None" = None,
                scale: str = "raw", pool_mlp: bool = False) -> Tensor:
        """Embeddings with the named terms replaced by their mean over the dataset.

        Args:
            mlps / attn: layer indices (negative allowed) whose MLP / whole attention term is
                mean-ablated.
            heads: ``(layer, head)`` pairs mean-ablated individually (needs ``heads``).
            embed: mean-ablate the class-token embedding term.
            cls_self: layers whose class-token-to-itself attention summand is mean-ablated.
            pool_mlp: mean-ablate an attention-pooled tower's pooling-MLP term.
            means: take the means from another set (e.g. a reference dataset); default: self.
            scale: ``"raw"`` (default): means of the terms as they are. ``"paper"``: the
                reference code's, means of each image's terms divided by its embedding norm
                (:meth:`normalized`); the result is then on that scale (the unablated rows
                are unit vectors). Zero-shot predictions are scale-free per image, so only the
                means differ.
        """
        if scale not in ABLATION_SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(repr, ABLATION_SCALES))}, got {scale!r}")
        if scale == "paper":
            return self.normalized().ablated(mlps=mlps, attn=attn, heads=heads, embed=embed, cls_self=cls_self,
                                              means=None if means is None else means.normalized(),
                                              pool_mlp=pool_mlp)
        ref = means if means is not None else self
        L = self.n_layers
        norm = lambda ix: sorted({i % L for i in ix})  # noqa: E731
        for i in list(mlps) + list(attn) + [h[0] for h in heads] + list(cls_self):
            if not -L <= i < L:
                raise IndexError(f"layer {i} out of range for a {L}-layer model")
        mlps_, attn_, self_ = norm(mlps), norm(attn), norm(cls_self)
        out = self.embeddings().clone()
        if embed:
            out += ref.embed.mean(0) - self.embed
        if pool_mlp:
            if self.pool_mlp is None or ref.pool_mlp is None:
                raise ValueError("pool_mlp ablation needs the terms of an attention-pooled tower (no pool_mlp here)")
            out += ref.pool_mlp.mean(0) - self.pool_mlp
        for i in mlps_:
            out += ref.mlp[:, i].mean(0) - self.mlp[:, i]
        for i in attn_:
            out += ref.attn[:, i].mean(0) - self.attn[:, i]
        heads = [(li % L, h) for li, h in heads if li % L not in attn_]
        if heads:
            if self.heads is None or ref.heads is None:
                raise ValueError("head ablation needs terms collected with heads=True")
            H = self.heads.shape[2]
            for li, h in heads:
                if not -H <= h < H:
                    raise IndexError(f"head {h} out of range ({H} heads)")
                out += ref.heads[:, li, h].mean(0) - self.heads[:, li, h]
        self_ = [i for i in self_ if i not in attn_]
        if self_:
            if self.cls_self is None or ref.cls_self is None:
                raise ValueError("class-token ablation needs terms collected with cls_self=True")
            for i in self_:
                out += ref.cls_self[:, i].mean(0) - self.cls_self[:, i]
        return out


@torch.no_grad()
def collect_terms(model: nn.Module, batches: Iterable[Tensor] | Tensor, *, heads: bool = False,
                  cls_self: bool = False, batch_size: int = 64, device: str | torch.device | None = None,
                  progress: bool = False, total: int | None = None, pool_heads: bool = False) -> DirectTerms:
    """Decompose every image of ``batches`` (a tensor ``[N, 3, H, W]`` or an iterable of
    batches, or of ``(images, ...)`` tuples) and stack the direct terms.

    ``pool_heads`` (attention-pooled towers, SigLIP): also keep each pooling head's term
    ``[N, Hp, d]``, without its share of the pooling's out-projection bias (a constant per head,
    which the reference code's per-head terms do not carry): what
    :func:`helpers.methods.heads.pool_head_textspan` explains."""
    dec = Decomposer(model)
    if device is None:
        device = _tower_param(dec).device
    if isinstance(batches, Tensor):
        if batches.ndim != 4 or batches.shape[0] == 0:
            raise ValueError(f"expected a non-empty [N, 3, H, W] tensor, got {tuple(batches.shape)}")
        total = batches.shape[0]
        batches = batches.split(batch_size)
    parts: dict[str, list[Tensor]] = {"embed": [], "attn": [], "mlp": [], "heads": [], "cls_self": [],
                                      "pool_mlp": [], "pool_heads": []}
    const = None
    bar = tqdm(total=total, desc="decomposing", unit="img", disable=not progress)
    seen = 0
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        check_finite(x, first=seen)  # names the images by their place in the whole stream
        seen += x.shape[0]
        d = dec(x.to(device), heads=heads, tokens=cls_self)
        parts["embed"].append(d.embed)
        parts["attn"].append(d.attn)
        parts["mlp"].append(d.mlp)
        if heads:
            parts["heads"].append(d.heads)
        if cls_self:
            parts["cls_self"].append(torch.stack(
                [d.tokens(layers=[i]).data[:, 0] for i in range(d.n_layers)], 1))
        const = d.const
        if getattr(d, "pool_mlp", None) is not None:  # attention pooling: its MLP's term, per image
            parts["pool_mlp"].append(d.pool_mlp)
        if pool_heads:
            if getattr(d, "pool_heads", None) is None:
                raise ValueError("pool_heads=True needs an attention-pooled tower (SigLIP); this one reads "
                                 "its class token")
            parts["pool_heads"].append(d.pool_heads - d._maps.bias_share)
        bar.update(x.shape[0])
    bar.close()
    if const is None:
        raise ValueError("no images")
    return DirectTerms(
        embed=torch.cat(parts["embed"]), attn=torch.cat(parts["attn"]), mlp=torch.cat(parts["mlp"]),
        const=const, heads=torch.cat(parts["heads"]) if heads else None,
        cls_self=torch.cat(parts["cls_self"]) if cls_self else None,
        pool_mlp=torch.cat(parts["pool_mlp"]) if parts["pool_mlp"] else None,
        pool_heads=torch.cat(parts["pool_heads"]) if parts["pool_heads"] else None)


def accuracy(embeddings: Tensor, classifier: Tensor, labels: Tensor | Sequence[int]) -> float:
    """Top-1 zero-shot accuracy of (unnormalised) image embeddings against class embeddings.

    ``embeddings`` may also be embeddings of terms streamed from disk
    (:class:`helpers.methods.streamed.StreamedEmbeddings`, what ``embeddings()`` and ``ablated()``
    of :class:`~helpers.methods.streamed.StreamedTerms` return): then they are read chunk by
    chunk."""
    if not isinstance(embeddings, Tensor) and callable(getattr(embeddings, "accuracy", None)):
        return embeddings.accuracy(classifier, labels)
    labels = torch.as_tensor(labels, device=embeddings.device)
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {labels.shape[0]} labels")
    logits = torch.nn.functional.normalize(embeddings, dim=-1) @ classifier.to(embeddings).T
    return float((logits.argmax(-1) == labels).float().mean())


def ablation_accuracies(terms: Any, specs: Sequence[Mapping[str, Any]], classifier: Tensor,
                        labels: Tensor | Sequence[int]) -> list[float]:
    """Zero-shot accuracy after each of several mean ablations: ``specs`` are keyword
    arguments of :meth:`DirectTerms.ablated` (``{}``: no ablation, the baseline).

    Equal to ``[accuracy(terms.ablated(**s), classifier, labels) for s in specs]``; for terms
    streamed from disk (:class:`helpers.methods.streamed.StreamedTerms`) every ablation is
    evaluated in one pass over the data."""
    specs = [dict(s) for s in specs]
    if not isinstance(terms, DirectTerms) and callable(getattr(terms, "ablation_accuracies", None)):
        return terms.ablation_accuracies(specs, classifier, labels)
    return [accuracy(terms.ablated(**s), classifier, labels) for s in specs]


def sample_index(N: int, n: int | None) -> Tensor:
    """``min(n, N)`` indices spread evenly over ``0 .. N - 1`` (first and last included; all
    of them when ``n`` is ``None`` or at least ``N``): a sample that keeps the order of the set,
    and with it every class of a set sorted by class (ImageNet's validation folders)."""
    N = int(N)
    if N < 1:
        raise ValueError(f"need at least one item, got N = {N}")
    if n is None or int(n) >= N:
        return torch.arange(N)
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if int(n) == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.as_tensor(np.unique(np.round(np.linspace(0, N - 1, int(n))).astype(np.int64)))


TERMS_VERSION = 1  # bump when the meaning of the stored terms changes


def cached_terms(model: nn.Module, dataset: Any, *, dataset_id: str, cache_dir: str | Path,
                 preprocess_id: str = "", heads: bool = True, cls_self: bool = False,
                 batch_size: int = 64, device: str | torch.device | None = None, progress: bool = True,
                 model_name: str = "") -> DirectTerms:
    """Direct terms of every item of ``dataset``, streamed through the on-disk cache.

    ``dataset`` is indexable (``len`` and ``[i]``) and yields preprocessed image tensors
    ``[3, H, W]`` or tuples whose first element is one. Results are keyed by the model's name
    and weights fingerprint, ``dataset_id``, ``preprocess_id`` (describe any preprocessing that
    is not part of the dataset's identity) and the options, so a second call (even in a new
    process, or after an interruption) reads what was done instead of recomputing it. The
    terms are then loaded into memory; :func:`helpers.methods.streamed.stream_terms` leaves
    them on disk and reads them chunk by chunk.
    """
    arrays, const, device, dtype = term_arrays(model, dataset, dataset_id=dataset_id, cache_dir=cache_dir,
                                               preprocess_id=preprocess_id, heads=heads, cls_self=cls_self,
                                               batch_size=batch_size, device=device, progress=progress,
                                               model_name=model_name)

    def get(name: str) -> Tensor | None:
        return torch.from_numpy(np.array(arrays[name])).to(device, dtype) if name in arrays else None

    return DirectTerms(embed=get("embed"), attn=get("attn"), mlp=get("mlp"), const=const,
                       heads=get("heads"), cls_self=get("cls_self"), pool_mlp=get("pool_mlp"))


def term_arrays(model: nn.Module, dataset: Any, *, dataset_id: str, cache_dir: str | Path, preprocess_id: str = "",
                heads: bool = True, head_layers: Iterable[int] | None = None, cls_self: bool = False,
                batch_size: int = 64, device: str | torch.device | None = None, progress: bool = True,
                model_name: str = "") -> tuple[Any, Tensor, torch.device, torch.dtype]:
    """The on-disk cache entry behind :func:`cached_terms` (computed batch by batch where it is
    missing): ``(arrays, const, device, dtype)`` with ``arrays`` a
    :class:`~helpers.engine.cache.CachedArrays` of ``embed``, ``attn``, ``mlp`` (and
    ``heads``, ``cls_self``, ``pool_mlp``), ``const`` the image-independent term on
    ``device``, and the tower's dtype. ``head_layers`` (with ``heads``) keeps the heads of
    those layers only, ``heads [N, len(head_layers), H, d]``."""
    from torch.utils.data import DataLoader, Subset

    from ..engine.cache import stream_to_cache, weights_fingerprint

    n = len(dataset)
    if n == 0:
        raise ValueError("empty dataset")
    dec = Decomposer(model)
    if device is None:
        device = _tower_param(dec).device
    key = dict(what="direct-terms", version=TERMS_VERSION, model=model_name or type(model).__name__,
               weights=weights_fingerprint(model), dataset=dataset_id, preprocess=preprocess_id,
               heads=heads, cls_self=cls_self, dtype=str(_tower_param(dec).dtype))
    chosen = None
    if heads and head_layers is not None:
        from ..engine.labels import resolve_indices

        chosen = resolve_indices(list(head_layers), dec.n_layers, "layer", sort=False)
        if not chosen:
            raise ValueError("head_layers is empty: pass None for every layer's heads, or heads=False")
        key["head_layers"] = chosen

    position = {"next": 0}  # the dataset index of the next batch's first item, for error messages

    def source(start: int):
        position["next"] = start
        return DataLoader(Subset(dataset, range(start, n)), batch_size=batch_size, shuffle=False)

    def compute(batch: Any) -> dict[str, Tensor]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        check_finite(x, "dataset item", first=position["next"])  # the batches before it stay cached
        position["next"] += x.shape[0]
        with torch.no_grad():
            d = dec(x.to(device), heads=heads, tokens=cls_self)
        out = {"embed": d.embed, "attn": d.attn, "mlp": d.mlp}
        if getattr(d, "pool_mlp", None) is not None:
            out["pool_mlp"] = d.pool_mlp
        if heads:
            out["heads"] = d.heads if chosen is None else d.heads[:, chosen]
        if cls_self:
            out["cls_self"] = torch.stack([d.tokens(layers=[i]).data[:, 0] for i in range(d.n_layers)], 1)
        return out

    arrays = stream_to_cache(compute, source, n_items=n, key=key, cache_dir=cache_dir, progress=progress,
                             desc=f"decomposing {dataset_id}")
    dtype = _tower_param(dec).dtype
    const = dec.maps(dtype, _tower_param(dec).device).const.to(device)
    return arrays, const, torch.device(device), dtype


def _tower_param(dec: Any) -> Tensor:
    """A parameter of the decomposer's image tower (its device and dtype)."""
    return next(dec.visual.parameters())


def component_table(terms: DirectTerms) -> tuple[list[str], Tensor]:
    """All direct terms as ``(labels, [N, C, d])``: embed, attn.0, mlp.0, ..., (const last);
    :meth:`DirectTerms.components` as a plain pair."""
    comps = terms.components()
    return comps.labels["component"], comps.data


def variance_shares(terms: DirectTerms) -> dict[str, float]:
    """Each term's variance over the images as a fraction of the embedding's total variance.

    This is the mean squared change of the embedding when that term alone is mean-ablated,
    relative to the embedding's spread: a direct-effect size that needs no labels.
    """
    comps = terms.components()
    total = terms.embeddings().var(0).sum()
    shares = comps.data.var(0).sum(-1) / total
    return dict(zip(comps.labels["component"], shares.tolist()))


def margin_contributions(terms: DirectTerms, classifier: Tensor, labels: Tensor) -> dict[str, float]:
    """Mean contribution of each term to the correct class's margin over the average class.

    With ``e`` the embedding and ``t_k`` the class embeddings, the cosine logit margin
    ``(e / |e|) . (t_y - mean_k t_k)`` splits exactly over the terms of ``e``.
    """
    comps = terms.components()
    emb = terms.embeddings()
    classifier = classifier.to(emb)
    labels = torch.as_tensor(labels, device=emb.device)
    direction = classifier[labels] - classifier.mean(0)  # [N, d]
    contrib = torch.einsum("ncd,nd->nc", comps.data, direction) / emb.norm(dim=-1, keepdim=True)
    return dict(zip(comps.labels["component"], contrib.mean(0).tolist()))


def group_variance_share(terms: DirectTerms, *, attn: Iterable[int] = (), mlps: Iterable[int] = (),
                         embed: bool = False) -> float:
    """Variance over the images of the *sum* of the chosen terms, relative to the embedding's.

    Equal to the mean squared change of the embedding when the whole group is mean-ablated
    together (relative to its spread). Unlike a sum of single-term shares it counts the
    covariance between the terms, which is large when layers write along shared directions.
    """
    L = terms.n_layers
    total = terms.embed * 0
    if embed:
        total = total + terms.embed
    for i in attn:
        total = total + terms.attn[:, i % L]
    for i in mlps:
        total = total + terms.mlp[:, i % L]
    return float(total.var(0).sum() / terms.embeddings().var(0).sum())


@dataclass(frozen=True)
class AblationSet(Mapping):
    """A set of terms to mean-ablate together, usable as keyword arguments.

    ``terms.ablated(**s)`` and :class:`helpers.methods.spurious.GroupEvaluator`'s ``evaluate(**s)``
    take it as it is. :meth:`mask` says which components it removes.

    Attributes:
        heads: ``(layer, head)`` pairs.
        attn, mlps: layers whose whole attention term / MLP term is removed.
        embed: remove the class-token embedding term.
        scale: ``"raw"`` or ``"paper"`` (see :meth:`DirectTerms.ablated`).
    """

    heads: tuple[tuple[int, int], ...] = ()
    attn: tuple[int, ...] = ()
    mlps: tuple[int, ...] = ()
    embed: bool = False
    scale: str = "raw"

    def __post_init__(self) -> None:
        if self.scale not in ABLATION_SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(repr, ABLATION_SCALES))}, got {self.scale!r}")
        object.__setattr__(self, "heads", tuple((int(l), int(h)) for l, h in self.heads))
        object.__setattr__(self, "attn", tuple(int(i) for i in self.attn))
        object.__setattr__(self, "mlps", tuple(int(i) for i in self.mlps))

    _KEYS = ("heads", "attn", "mlps", "embed", "scale")

    def __getitem__(self, key: str) -> Any:
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)

    def mask(self, n_layers: int, n_heads: int) -> dict[str, Tensor]:
        """The removed components: ``{"embed": [] bool, "heads": [L, H] bool, "mlps": [L] bool}``
        (a whole attention layer marks all its heads)."""
        L, H = int(n_layers), int(n_heads)
        heads = torch.zeros(L, H, dtype=torch.bool)
        mlps = torch.zeros(L, dtype=torch.bool)
        for i in self.attn:
            if not -L <= i < L:
                raise IndexError(f"layer {i} out of range for a {L}-layer model")
            heads[i % L] = True
        for li, h in self.heads:
            if not -L <= li < L or not -H <= h < H:
                raise IndexError(f"head ({li}, {h}) out of range for {L} layers of {H} heads")
            heads[li % L, h % H] = True
        for i in self.mlps:
            if not -L <= i < L:
                raise IndexError(f"layer {i} out of range for a {L}-layer model")
            mlps[i % L] = True
        return {"embed": torch.tensor(bool(self.embed)), "heads": heads, "mlps": mlps}


MEAN_ABLATION_PROTOCOLS: tuple[str, ...] = ("raw", "paper")
"""Values of :func:`mean_ablation_rows`' ``protocol``."""


def mean_ablation_rows(terms: DirectTerms, classifier: Tensor, labels: Tensor | Sequence[int], *, last: int = 4,
                       protocol: str = "raw") -> dict[str, float]:
    """Zero-shot accuracy after the paper's mean ablations, one row per ablation.

    Rows: ``"baseline"``; ``"MLPs"``; ``"CLS-to-itself attention"`` and ``"MLPs + CLS-to-itself
    attention"`` (when the terms carry ``cls_self``); ``"attention except last k"``; ``"MLPs +
    embedding + attention except last k"``; ``"last k attention layers"`` (``k = min(last, L)``).

    ``protocol="raw"`` (the course's): means of the raw terms; the ``"MLPs"`` row removes the
    MLPs only. ``protocol="paper"`` (the reference code's): means of each image's terms divided
    by its embedding norm (``scale="paper"``), and the ``"MLPs"`` row also removes the
    class-token embedding term (the reference stores it as the first of its MLP terms).
    """
    if protocol not in MEAN_ABLATION_PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(map(repr, MEAN_ABLATION_PROTOCOLS))}, "
                         f"got {protocol!r}")
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ValueError(f"last must be a positive integer, got {last!r}")
    paper = protocol == "paper"
    scale = "paper" if paper else "raw"
    L = terms.n_layers
    k = min(last, L)
    every, early = list(range(L)), list(range(L - k))
    specs = {"baseline": {}, "MLPs": dict(mlps=every, embed=paper)}
    if terms.has_cls_self:
        specs["CLS-to-itself attention"] = dict(cls_self=every)
        specs["MLPs + CLS-to-itself attention"] = dict(mlps=every, embed=paper, cls_self=every)
    specs[f"attention except last {k}"] = dict(attn=early)
    specs[f"MLPs + embedding + attention except last {k}"] = dict(mlps=every, attn=early, embed=True)
    specs[f"last {k} attention layers"] = dict(attn=range(L - k, L))
    for name, spec in specs.items():
        if name != "baseline":
            spec["scale"] = scale
    return dict(zip(specs, ablation_accuracies(terms, list(specs.values()), classifier, labels)))


PATTERN_SMALL_DROP = 0.10
"""Largest accuracy drop (a fraction) that still counts as "costs little" in :func:`pattern_held`."""

PATTERN_LARGE_DROP = 0.40
"""Smallest accuracy drop that counts as "destroys the accuracy" in :func:`pattern_held`."""


def pattern_held(rows: Mapping[str, float], *, small: float = PATTERN_SMALL_DROP,
                 large: float = PATTERN_LARGE_DROP) -> bool:
    """Whether mean-ablation rows (:func:`mean_ablation_rows`) show the paper's pattern.

    The pattern: removing all MLPs, the attention layers before the last ``k``, and all of
    those together with the embedding term each costs at most ``small`` of accuracy, while
    removing the last ``k`` attention layers costs at least ``large``.
    """
    base = rows["baseline"]
    last = [key for key in rows if key.startswith("last ") and key.endswith(" attention layers")]
    early = [key for key in rows if key.startswith("attention except last ")]
    both = [key for key in rows if key.startswith("MLPs + embedding + attention except last ")]
    if len(last) != 1 or len(early) != 1 or len(both) != 1 or "MLPs" not in rows:
        raise KeyError("rows must come from mean_ablation_rows (baseline, MLPs, attention except last k, "
                       "MLPs + embedding + attention except last k, last k attention layers)")
    cheap = all(base - rows[key] <= small for key in ("MLPs", early[0], both[0]))
    return bool(cheap and base - rows[last[0]] >= large)


def variance_pattern_held(last_share: float, mlp_share: float, *, majority: float = 0.5,
                          factor: float = 5.0) -> bool:
    """Whether variance shares (:func:`group_variance_share`) show the paper's pattern: the last
    attention layers carry at least ``majority`` of the embedding's variance, and more than
    ``factor`` times the share of all MLPs together."""
    return bool(last_share >= majority and last_share > factor * mlp_share)
