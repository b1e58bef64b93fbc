"""Named-axis tensors: the one result type of every decomposition.

A :class:`Components` is a tensor whose axes have names (``image``, ``layer``, ``head``,
``token``, ``component``, ``dim``, ``text``), optionally with labels for the entries of an
axis (the component names of :func:`helpers.engine.labels.component_labels`). Both the decomposition
of a batch (:class:`helpers.engine.decompose.Decomposition`) and the stored direct terms of a dataset
(:class:`helpers.methods.ablation.DirectTerms`) hand out their terms as :class:`Components`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .labels import Selection, component_labels

__all__ = ["Components", "stack_components", "DirectEffects", "token_text_scores", "score_components"]


@dataclass(frozen=True)
class Components:
    """A tensor whose axes have names, e.g. ``("image", "layer", "head", "dim")``.

    ``dim`` is the joint embedding axis; scoring against text embeddings replaces it by
    ``text``. ``labels`` optionally names the entries of one axis (e.g. component names).
    """

    data: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.ndim != len(self.axes):
            raise ValueError(f"tensor has {self.data.ndim} axes but {len(self.axes)} names {self.axes}")
        if len(set(self.axes)) != len(self.axes):
            raise ValueError(f"duplicate axis names {self.axes}")

    @property
    def shape(self) -> dict[str, int]:
        return dict(zip(self.axes, self.data.shape))

    def axis(self, name: str) -> int:
        try:
            return self.axes.index(name)
        except ValueError:
            raise KeyError(f"no axis {name!r}; axes are {self.axes}") from None

    def sum(self, *axes: str) -> "Components":
        """Sum over the named axes (all but ``image``/``dim``/``text`` if none given)."""
        if not axes:
            axes = tuple(a for a in self.axes if a not in ("image", "dim", "text"))
        idx = [self.axis(a) for a in axes]
        keep = tuple(a for a in self.axes if a not in axes)
        labels = {k: v for k, v in self.labels.items() if k in keep}
        return Components(self.data.sum(dim=idx) if idx else self.data, keep, labels)

    def select(self, **index: Selection | str) -> "Components":
        """Index axes by name: an int drops the axis, a list/slice keeps it (in the given
        order; an entry may repeat). Labelled axes also take their labels.

        ``c.select(layer=[-2, -1], head=0)``, ``c.select(component=["attn.6", "attn.7"])``
        """
        data, axes, labels = self.data, list(self.axes), dict(self.labels)
        for name, ix in index.items():
            ax = axes.index(name) if name in axes else self.axis(name)
            n = data.shape[ax]
            ix = self._by_label(name, ix, labels)
            if isinstance(ix, int):
                if not -n <= ix < n:
                    raise IndexError(f"{name} index {ix} out of range for size {n}")
                data = data.select(ax, ix)
                axes.pop(ax)
                labels.pop(name, None)
                continue
            if isinstance(ix, slice):
                pos = list(range(n))[ix]
            else:
                pos = [int(i) for i in (ix.tolist() if isinstance(ix, Tensor) else ix)]
                bad = [i for i in pos if not -n <= i < n]
                if bad:
                    raise IndexError(f"{name} indices {bad} out of range for size {n}")
                pos = [i % n for i in pos]
            data = data.index_select(ax, torch.as_tensor(pos, dtype=torch.long, device=data.device))
            if name in labels:
                labels[name] = [labels[name][i] for i in pos]
        return Components(data, tuple(axes), labels)

    @staticmethod
    def _by_label(name: str, ix: Any, labels: dict[str, list[str]]) -> Any:
        """Entries named by their labels (``"attn.3"``) -> positions."""
        names = [ix] if isinstance(ix, str) else ix
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(s, str) for s in names):
            return ix
        if name not in labels:
            raise KeyError(f"axis {name!r} has no labels; select it by position")
        where = {s: i for i, s in enumerate(labels[name])}
        missing = [s for s in names if s not in where]
        if missing:
            raise KeyError(f"no {name} named {missing}; names are {labels[name][:6]} ...")
        pos = [where[s] for s in names]
        return pos[0] if isinstance(ix, str) else pos

    def score(self, texts: Tensor) -> "Components":
        """Dot products with text embeddings ``[M, dim]`` (or ``[dim]``): ``dim`` -> ``text``."""
        ax = self.axis("dim")
        texts = texts.to(self.data)
        if texts.ndim == 1:
            texts = texts[None]
        if texts.ndim != 2 or texts.shape[1] != self.data.shape[ax]:
            raise ValueError(f"text embeddings must be [M, {self.data.shape[ax]}], got {tuple(texts.shape)}")
        out = torch.tensordot(self.data.movedim(ax, -1), texts, dims=([-1], [1]))
        axes = tuple(a for a in self.axes if a != "dim") + ("text",)
        return Components(out, axes, dict(self.labels))

    def numpy(self) -> Any:
        return self.data.detach().cpu().numpy()

    def __repr__(self) -> str:
        dims = ", ".join(f"{a}={n}" for a, n in self.shape.items())
        return f"Components({dims}, dtype={self.data.dtype})"


def stack_components(embed: Tensor, attn: Tensor, mlp: Tensor, const: Tensor) -> Components:
    """Every direct term as ``(image, component, dim)``, labelled by
    :func:`~helpers.engine.labels.component_labels`: ``embed [N, d]``, ``attn``/``mlp`` ``[N, L, d]``
    (interleaved per layer: ``attn.0, mlp.0, attn.1, ...``) and ``const`` (``[d]`` shared by
    every image, or ``[N, d]``)."""
    n, n_layers = attn.shape[0], attn.shape[1]
    const = const.expand(n, -1) if const.ndim == 1 else const
    per_layer = torch.stack([attn, mlp], 2).reshape(n, 2 * n_layers, -1)
    data = torch.cat([embed[:, None], per_layer, const[:, None]], 1)
    return Components(data, ("image", "component", "dim"), {"component": component_labels(n_layers)})



class DirectEffects:
    """Named-axis views of direct terms, shared by :class:`helpers.engine.decompose.Decomposition` (one
    batch) and :class:`helpers.methods.ablation.DirectTerms` (a dataset).

    A subclass has tensors ``embed [N, d]``, ``attn`` and ``mlp`` ``[N, L, d]``, ``heads``
    ``[N, L, H, d]`` or ``None``, and gives its ``ln_post`` bias term per image with
    :meth:`_const_rows`.
    """

    embed: Tensor
    attn: Tensor
    mlp: Tensor
    heads: Tensor | None
    _no_heads = "the terms have no per-head contributions"

    @property
    def n_images(self) -> int:
        return self.attn.shape[0]

    @property
    def n_layers(self) -> int:
        return self.attn.shape[1]

    def _const_rows(self) -> Tensor:
        raise NotImplementedError

    def components(self) -> Components:
        """All direct terms as ``(image, component, dim)``: embed, attn.0, mlp.0, ..., const
        (labels from :func:`helpers.engine.labels.component_labels`); they add up to the embeddings."""
        return stack_components(self.embed, self.attn, self.mlp, self._const_rows())

    def attention(self) -> Components:
        """Per-layer attention terms ``(image, layer, dim)``."""
        return Components(self.attn, ("image", "layer", "dim"))

    def mlps(self) -> Components:
        """Per-layer MLP terms ``(image, layer, dim)``."""
        return Components(self.mlp, ("image", "layer", "dim"))

    def head_terms(self) -> Components:
        """Per-head attention terms ``(image, layer, head, dim)``."""
        if self.heads is None:
            raise AttributeError(self._no_heads)
        return Components(self.heads, ("image", "layer", "head", "dim"))


def max_deviation(sums: Tensor | list[Tensor], embedding: Tensor, relative: bool = True) -> float:
    """Largest deviation of one or several reconstructions (each ``[N, d]``) from the model's
    embeddings ``[N, d]``; relative to the embeddings' largest entry unless ``relative=False``."""
    err = max((s - embedding).abs().max() for s in ([sums] if isinstance(sums, Tensor) else sums))
    if relative:
        err = err / embedding.abs().max().clamp_min(torch.finfo(embedding.dtype).tiny)
    return float(err)


# ----------------------------------------------------------------------------------------------
# Per-token text scores, shared by both decomposers
# ----------------------------------------------------------------------------------------------


def token_text_scores(a: Tensor, v: Tensor, QE: Tensor, BE: Tensor, keep_head: bool) -> Tensor:
    """One layer's per-token scores against texts, contracted before any ``d'`` axis exists.

    ``a`` [B, h, T] attention of the class token, ``v`` [B, T, h, dh] values, ``QE`` [h, dh, M]
    and ``BE`` [h, M] the head maps already multiplied by the texts. Returns [B, T, h, M] when
    ``keep_head`` else [B, T, M].
    """
    if keep_head:
        return a.transpose(1, 2)[..., None] * (torch.einsum("bthk,hkm->bthm", v, QE) + BE)
    return torch.einsum("bht,bthk,hkm->btm", a, v, QE) + torch.einsum("bht,hm->btm", a, BE)


def score_components(per_layer: list[Tensor], keep: set[str], factor: Tensor, last: str = "text") -> Components:
    """Stack per-layer token terms into ``(image, [layer], token, [head], last)``."""
    data = torch.stack(per_layer, 1) if "layer" in keep else torch.stack(per_layer, 0).sum(0)
    data = data * factor.reshape([-1] + [1] * (data.ndim - 1))
    axes = ("image",) + (("layer",) if "layer" in keep else ()) + ("token",) + \
        (("head",) if "head" in keep else ()) + (last,)
    return Components(data, axes)
