"""Named hook sites of a stock open_clip image tower, and the one way the helpers hook into it.

Every helper that needs an activation of the image tower asks for it *by name* here, instead
of registering its own PyTorch hooks. The names are stable and the same for every supported
tower; each site hands its hook the activation in one layout (batch first), whatever the
tower's own layout is::

    from helpers.engine.hooks import capture, hooked, site_names

    site_names(model)[:6]      # ['ln_pre', 'blocks.0.resid_pre', 'blocks.0.ln_1', ...]
    with capture(model, ["blocks.*.attn_out", "ln_post.in"]) as cache:
        model.encode_image(images)
    cache["blocks.3.attn_out"].shape   # [B, T, D]

Sites of an open_clip ``VisionTransformer`` with ``L`` blocks (``T`` tokens, width ``D``):

========================  ==========================================================  ==============
name                      what the hook receives                                      module
========================  ==========================================================  ==============
``ln_pre``                the residual stream entering the first block ``[B, T, D]``  ``ln_pre``
``blocks.{l}.resid_pre``  block ``l``'s input ``[B, T, D]``                             block (input)
``blocks.{l}.ln_1``       the normalised input of the attention ``[B, T, D]``         ``ln_1``
``blocks.{l}.attn``       the attention output before LayerScale ``[B, T, D]``        ``attn``
``blocks.{l}.attn_out``   what the attention branch adds to the stream ``[B, T, D]``  ``ls_1``
``blocks.{l}.ln_2``       the normalised input of the MLP ``[B, T, D]``               ``ln_2``
``blocks.{l}.mlp_out``    what the MLP branch adds to the stream ``[B, T, D]``        ``ls_2``
``blocks.{l}.resid_post`` block ``l``'s output ``[B, T, D]``                            block
``ln_post.in``            the input of the final layer norm (``[B, D]`` after         ``ln_post``
                          class-token pooling, or ``[B, T, D]``)                      (input)
``ln_post``               the output of the final layer norm                          ``ln_post``
========================  ==========================================================  ==============

Hooks are *read-only* by default: :func:`hooked` ignores what a reading hook returns, so the
model computes exactly what it computes without hooks. A few methods (gradient-based
explanations) need a tensor of their own inside the autograd graph; they *patch* a site with
``hooked(model, patch={...})``, where the function returns a replacement for the activation
(batch first) that must equal it up to rounding. Every hook is removed when the ``with``
block ends, also after an error.
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from torch import Tensor, nn

__all__ = ["Site", "SITE_DOCS", "POOL_SITE_DOCS", "UnknownSiteError", "sites", "site_names", "hooked", "run_tower", "capture", "ActivationCache",
           "register_builder"]

SITE_DOCS: dict[str, str] = {
    "ln_pre": "the residual stream entering the first block [B, T, D]",
    "blocks.{l}.resid_pre": "block l's input [B, T, D]",
    "blocks.{l}.ln_1": "the normalised input of the attention [B, T, D]",
    "blocks.{l}.attn": "the attention output before LayerScale [B, T, D]",
    "blocks.{l}.attn_out": "what the attention branch adds to the residual stream [B, T, D]",
    "blocks.{l}.ln_2": "the normalised input of the MLP [B, T, D]",
    "blocks.{l}.mlp_out": "what the MLP branch adds to the residual stream [B, T, D]",
    "blocks.{l}.resid_post": "block l's output [B, T, D]",
    "ln_post.in": "the input of the final layer norm ([B, D] pooled, or [B, T, D])",
    "ln_post": "the output of the final layer norm",
}
"""One line per site name pattern (``{l}`` is the block index)."""

POOL_SITE_DOCS: dict[str, str] = {
    "blocks.{l}.attn_heads": "the attention's per-head outputs before its output projection, heads "
                             "concatenated [B, T, H * dh]",
    "pool.attn_out": "the attention pooling's output after its projection [B, 1, D]",
    "pool.ln": "the pooling's layer norm output, the input of its MLP [B, 1, D]",
    "pool.mlp_out": "what the pooling's MLP adds to the pooled vector [B, 1, D]",
}
"""The extra sites of timm ViT towers with attention pooling (open_clip's SigLIP / SigLIP 2
image towers), on top of :data:`SITE_DOCS`. There ``ln_pre`` is the stream after the patch and
position embeddings (timm's ``norm_pre``), ``ln_post`` the trunk's final norm over every token
``[B, T, D]``, and ``attn_out`` / ``mlp_out`` the outputs of ``ls1`` / ``ls2``."""


@dataclass(frozen=True)
class Site:
    """One named place in the image tower.

    Attributes:
        name: the stable name (``"blocks.3.attn_out"``).
        module: the stock module the PyTorch hook goes on.
        when: ``"output"`` (a forward hook; the activation is the module's output) or
            ``"input"`` (a forward pre-hook; the activation is its first input).
        seq_first: the module sees ``[T, B, D]`` (open_clip towers built with
            ``batch_first=False``); the hook still receives ``[B, T, D]``.
    """

    name: str
    module: nn.Module
    when: str
    seq_first: bool = False

    def to_batch_first(self, x: Tensor) -> Tensor:
        """The module's activation in the batch-first layout (a view)."""
        return self._swap(x)

    def to_module_layout(self, x: Tensor) -> Tensor:
        """A batch-first tensor in the module's own layout (a view)."""
        return self._swap(x)

    def _swap(self, x: Tensor) -> Tensor:
        return x.transpose(0, 1) if self.seq_first and x.ndim == 3 else x


def _open_clip_sites(visual: nn.Module) -> dict[str, Site]:
    t = visual.transformer
    seq_first = not bool(getattr(t, "batch_first", True))
    # ln_pre runs before open_clip turns the stream to [T, B, D] (towers built with batch_first=False)
    out: dict[str, Site] = {"ln_pre": Site("ln_pre", visual.ln_pre, "output")}
    for l, blk in enumerate(t.resblocks):
        p = f"blocks.{l}."
        for name, module, when in (("resid_pre", blk, "input"), ("ln_1", blk.ln_1, "output"),
                                   ("attn", blk.attn, "output"), ("attn_out", blk.ls_1, "output"),
                                   ("ln_2", blk.ln_2, "output"), ("mlp_out", blk.ls_2, "output"),
                                   ("resid_post", blk, "output")):
            out[p + name] = Site(p + name, module, when, seq_first)
    # ln_post runs after open_clip has turned the stream back to batch-first
    out["ln_post.in"] = Site("ln_post.in", visual.ln_post, "input")
    out["ln_post"] = Site("ln_post", visual.ln_post, "output")
    return out


def _is_timm_map_tower(visual: nn.Module) -> bool:
    trunk = getattr(visual, "trunk", None)
    return type(visual).__name__ == "TimmModel" and hasattr(trunk, "blocks") and \
        getattr(trunk, "attn_pool", None) is not None and hasattr(trunk, "norm_pre")


def _timm_map_sites(visual: nn.Module) -> dict[str, Site]:
    trunk = visual.trunk
    out: dict[str, Site] = {"ln_pre": Site("ln_pre", trunk.norm_pre, "output")}
    for l, blk in enumerate(trunk.blocks):
        p = f"blocks.{l}."
        for name, module, when in (("resid_pre", blk, "input"), ("ln_1", blk.norm1, "output"),
                                   ("attn_heads", blk.attn.proj, "input"), ("attn", blk.attn, "output"),
                                   ("attn_out", blk.ls1, "output"), ("ln_2", blk.norm2, "output"),
                                   ("mlp_out", blk.ls2, "output"), ("resid_post", blk, "output")):
            out[p + name] = Site(p + name, module, when)
    out["ln_post.in"] = Site("ln_post.in", trunk.norm, "input")
    out["ln_post"] = Site("ln_post", trunk.norm, "output")
    pool = trunk.attn_pool
    out["pool.attn_out"] = Site("pool.attn_out", pool.proj_drop, "output")
    if getattr(pool, "mlp", None) is not None:
        out["pool.ln"] = Site("pool.ln", pool.norm, "output")
        out["pool.mlp_out"] = Site("pool.mlp_out", pool.mlp, "output")
    return out


_BUILDERS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module], dict[str, Site]]]] = []


def register_builder(applies: Callable[[nn.Module], bool], build: Callable[[nn.Module], dict[str, Site]]) -> None:
    """Add the site table of another family of image towers (checked before the default).

    ``applies(tower)`` says whether ``build(tower)`` -- a ``{name: Site}`` table using the
    names of :data:`SITE_DOCS` -- describes the tower.
    """
    _BUILDERS.insert(0, (applies, build))


_register_builder = register_builder
_BUILDERS.append((_is_timm_map_tower, _timm_map_sites))


def sites(model: nn.Module) -> dict[str, Site]:
    """Every named hook site of ``model``'s image tower, in forward order.

    Raises:
        UnsupportedModelError: a tower without the residual blocks of an open_clip ViT (and
            of no family added with :func:`register_builder`).
    """
    from .support import image_tower

    visual = image_tower(model)
    for applies, build in _BUILDERS:
        if applies(visual):
            return build(visual)
    if not hasattr(visual, "transformer") or not hasattr(getattr(visual, "transformer"), "resblocks"):
        from .support import SUPPORTED_DESCRIPTION, UnsupportedModelError

        raise UnsupportedModelError(f"no hook sites for an image tower of type {type(visual).__name__}. "
                                    f"Supported: {SUPPORTED_DESCRIPTION}.")
    return _open_clip_sites(visual)


def site_names(model: nn.Module) -> list[str]:
    """The names of :func:`sites`, in forward order."""
    return list(sites(model))


class UnknownSiteError(KeyError):
    """A hook site name (or pattern) that names no site of the model."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


def _select(table: Mapping[str, Site], pattern: str) -> list[Site]:
    if not isinstance(pattern, str):
        raise TypeError(f"hook site names are strings, got {pattern!r}")
    if pattern in table:
        return [table[pattern]]
    hits = [s for n, s in table.items() if fnmatch.fnmatchcase(n, pattern)]
    if not hits:
        n_blocks = sum(1 for n in table if n.endswith(".resid_post"))
        docs = list(SITE_DOCS) + [n for n in POOL_SITE_DOCS if n.replace("{l}", "0") in table]
        raise UnknownSiteError(
            f"no hook site matches {pattern!r}. Sites are {', '.join(docs)} with l in 0..{n_blocks - 1} "
            "(glob patterns such as 'blocks.*.attn_out' allowed; see helpers.engine.hooks.SITE_DOCS)")
    return hits


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, tuple) else x


@contextmanager
def hooked(model: nn.Module, read: Mapping[str, Callable[..., Any]] | None = None, *,
           patch: Mapping[str, Callable[..., Tensor]] | None = None, with_name: bool = False) -> Iterator[None]:
    """Attach hooks to named sites for the duration of a ``with`` block.

    Args:
        model: an open_clip model (or its image tower).
        read: ``{site name or glob pattern: fn}``; ``fn(activation)`` is called with the
            batch-first activation (``fn(name, activation)`` with ``with_name``). What it
            returns is ignored: the forward pass is unchanged.
        patch: ``{site: fn}`` for output sites whose activation a method needs inside its own
            autograd graph; ``fn(activation, inputs)`` gets the batch-first activation and the
            module's (batch-first) input tensors, and returns the replacement (batch first),
            which must equal the activation up to rounding.
        with_name: pass the site name as first argument to the functions.

    The hooks are removed when the block exits, also after an error.
    """
    table = sites(model)
    for fn in list((read or {}).values()) + list((patch or {}).values()):
        if not callable(fn):
            raise TypeError(f"hook functions must be callable, got {fn!r}")
    handles = []

    def reader(site: Site, fn: Callable[..., Any]):
        if site.when == "input":
            def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
                x = site.to_batch_first(args[0])
                fn(site.name, x) if with_name else fn(x)
            return pre

        def post(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
            x = site.to_batch_first(_first(out))
            fn(site.name, x) if with_name else fn(x)
        return post

    def patcher(site: Site, fn: Callable[..., Tensor]):
        def post(_m: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
            x = site.to_batch_first(_first(out))
            inputs = tuple(site.to_batch_first(a) if isinstance(a, Tensor) else a for a in args)
            new = fn(site.name, x, inputs) if with_name else fn(x, inputs)
            new = site.to_module_layout(new)
            return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new
        return post

    try:
        for pattern, fn in (read or {}).items():
            for site in _select(table, pattern):
                f = reader(site, fn)
                handles.append(site.module.register_forward_pre_hook(f) if site.when == "input"
                               else site.module.register_forward_hook(f))
        for pattern, fn in (patch or {}).items():
            for site in _select(table, pattern):
                if site.when != "output":
                    raise ValueError(f"site {site.name!r} is an input site; only output sites can be patched")
                handles.append(site.module.register_forward_hook(patcher(site, fn)))
        yield
    finally:
        for h in handles:
            h.remove()


def run_tower(visual: nn.Module, images: Tensor, read: Mapping[str, Callable[..., Any]] | None = None, *,
              grad: bool = False) -> Tensor:
    """One forward pass of an image tower in eval mode, with ``read`` hooks (:func:`hooked`):
    the image embeddings (the first output where the tower returns a tuple). The tower's
    training mode is restored afterwards, also after an error; the autograd graph is kept
    only with ``grad`` (and where grad mode is on)."""
    import torch

    was_training = visual.training
    try:
        visual.eval()
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()), hooked(visual, read):
            out = visual(images)
    finally:
        visual.train(was_training)
    return out[0] if isinstance(out, tuple) else out


class ActivationCache(dict):
    """What :func:`capture` recorded: ``{site name: tensor}`` (the last call's, or a list of
    every call's with ``keep_all``)."""

    def stack(self, pattern: str, dim: int = 0) -> Tensor:
        """The activations of every site matching ``pattern`` (in forward order), stacked."""
        import torch

        hits = [v for n, v in self.items() if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise KeyError(f"nothing captured matches {pattern!r}; captured: {list(self)[:6]} ...")
        return torch.stack(hits, dim)


@contextmanager
def capture(model: nn.Module, names: Iterable[str], *, detach: bool = True,
            keep_all: bool = False) -> Iterator[ActivationCache]:
    """Record the activations of named sites (glob patterns allowed) during the ``with`` block.

    ``detach`` (default) stores detached tensors; ``keep_all`` keeps a list per site (one
    entry per forward pass) instead of the last one.
    """
    if isinstance(names, str):
        names = [names]
    cache = ActivationCache()

    def store(name: str, x: Tensor) -> None:
        x = x.detach() if detach else x
        if keep_all:
            cache.setdefault(name, []).append(x)
        else:
            cache[name] = x

    with hooked(model, {n: store for n in names}, with_name=True):
        yield cache
