"""Text embeddings, text matrices and zero-shot classifiers."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["encode_texts", "text_matrix", "zero_shot_classifier", "zero_shot_prediction", "cached_text_embeddings",
           "Scoring", "scoring", "probabilities"]

TextsLike = Any
"""Text embeddings ``[M, d']`` / ``[d']`` (tensor, array, list of vectors), or strings to embed."""


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer: Callable[..., torch.Tensor], texts: Sequence[str],
                 *, batch_size: int = 256, normalize: bool = True,
                 device: str | torch.device | None = None) -> torch.Tensor:
    """Embed ``texts`` with the model's text tower, in batches: ``[len(texts), d']``."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to encode")
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"texts must be non-empty strings; got {bad[:3]!r}")
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            tokens = tokenizer(texts[i:i + batch_size]).to(device)
            with used_positions_only(model, tokens):
                out.append(model.encode_text(tokens, normalize=normalize))
    finally:
        model.train(was_training)
    return torch.cat(out)


def _causal_text_tower(model: nn.Module) -> tuple[nn.Module, str, int | None] | None:
    """``(text transformer, pooling, end-of-text id)`` of an open_clip text tower whose pooled
    token depends only on the tokens up to it: a causal attention mask, batch-first blocks, and
    pooling at the end-of-text token (``"argmax"`` or ``"eos"``); ``None`` for any other tower
    (SigLIP's, for one, attends both ways and pools the last position)."""
    text = getattr(model, "text", None)
    if isinstance(text, nn.Module) and hasattr(text, "transformer"):  # CustomTextCLIP's TextTransformer
        if getattr(text, "cls_emb", None) is not None or getattr(text, "use_pad_mask", False):
            return None
        tower, pool, eos, mask = text.transformer, getattr(text, "pool_type", None), \
            getattr(text, "eos_id", None), getattr(text, "attn_mask", None)
    elif isinstance(getattr(model, "transformer", None), nn.Module) and hasattr(model, "text_pool_type"):  # CLIP
        tower, pool, eos, mask = model.transformer, model.text_pool_type, getattr(model, "text_eos_id", None), \
            getattr(model, "attn_mask", None)
    else:
        return None
    if pool not in ("argmax", "eos") or (pool == "eos" and eos is None) or not getattr(tower, "batch_first", False):
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return None
    blocked = torch.isneginf(mask)
    if not torch.equal(blocked, torch.ones_like(blocked).triu(1)):
        return None
    return tower, pool, eos


@contextlib.contextmanager
def used_positions_only(model: nn.Module, tokens: torch.Tensor) -> Iterator[int]:
    """Within this context, ``model.encode_text(tokens)`` runs its text blocks on the positions
    up to the last end-of-text token of the batch only; yields how many positions run.

    In a causal tower that pools the end-of-text token (CLIP's), a position sees only those
    before it, so the padding after every text's end changes nothing the pooling reads: the
    embeddings are those of the whole context (the same arithmetic on the positions that count;
    float32 may differ in the last bits, from other matrix shapes). Prompts are short (about 10
    of CLIP's 77 positions), so the text tower does a fraction of the work. A forward pre-hook
    on the tower's stock blocks cuts their input and mask; for any other tower, or when no
    position can be left out, nothing changes.
    """
    found = _causal_text_tower(model) if tokens.ndim == 2 else None
    if found is None:
        yield tokens.shape[-1]
        return
    tower, pool, eos = found
    ends = tokens.argmax(-1) if pool == "argmax" else (tokens == eos).int().argmax(-1)
    used = int(ends.max()) + 1
    if used >= tokens.shape[1]:
        yield tokens.shape[1]
        return

    def cut(module, args, kwargs):
        x, rest = args[0], list(args[1:])
        if rest and isinstance(rest[0], torch.Tensor):  # the mask given by position
            rest[0] = rest[0][:used, :used]
        elif isinstance(kwargs.get("attn_mask"), torch.Tensor):
            kwargs = {**kwargs, "attn_mask": kwargs["attn_mask"][:used, :used]}
        return (x[:, :used], *rest), kwargs

    handle = tower.register_forward_pre_hook(cut, with_kwargs=True)
    try:
        yield used
    finally:
        handle.remove()


def text_matrix(texts: TextsLike, *, model: nn.Module | None = None,
                tokenizer: Callable[..., torch.Tensor] | None = None, width: int | None = None,
                what: str = "texts") -> torch.Tensor:
    """Text embeddings as one checked ``[M, width]`` floating-point matrix.

    ``texts`` are embeddings (a tensor or array ``[M, width]`` or one ``[width]`` vector, or a
    list of vectors), or strings, embedded with ``model``'s text tower and ``tokenizer``.
    ``width`` is the joint space's dimension (default: the model's, :func:`helpers.engine.models.model_info`).
    ``what`` names the argument in error messages.

    Raises:
        ValueError: empty, wrong shape or width, empty strings, NaN / infinite values, strings
            without a tokenizer.
        TypeError: mixed strings and vectors, integer embeddings, strings for a model without a
            text tower.
    """
    if width is None:
        if model is None:
            raise ValueError("give the embedding width or the model")
        from .models import model_info

        width = model_info(model).embed_dim
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, (list, tuple)):
        if len(texts) == 0:
            raise ValueError(f"{what} is empty: give at least one text (embedding)")
        if all(isinstance(t, str) for t in texts):
            bad = [t for t in texts if not t.strip()]
            if bad:
                raise ValueError(f"{what} contains empty text(s) {bad[:3]!r}: every text needs some words")
            if tokenizer is None:
                raise ValueError(f"{what} are strings: pass tokenizer=... to embed them, or embed them "
                                 "first with helpers.engine.text.encode_texts")
            if model is None or not hasattr(model, "encode_text"):
                raise TypeError(f"{what} are strings but the model has no text tower: pass embeddings")
            return encode_texts(model, tokenizer, list(texts))
        if any(isinstance(t, str) for t in texts):
            raise TypeError(f"{what} mixes strings and embeddings")
        if all(isinstance(t, torch.Tensor) for t in texts):
            texts = torch.stack([t.reshape(-1) for t in texts])
    if not isinstance(texts, torch.Tensor):
        texts = torch.as_tensor(np.asarray(texts))
    if texts.ndim == 1:
        texts = texts[None]
    if texts.ndim != 2:
        raise ValueError(f"{what} must be [M, {width}] (or one [{width}] vector), got shape {tuple(texts.shape)}")
    if texts.shape[0] == 0:
        raise ValueError(f"{what} is empty: give at least one text embedding")
    if texts.shape[1] != width:
        raise ValueError(f"{what} have dimension {texts.shape[1]}, but the model's joint image-text space "
                         f"has dimension {width} (embed the texts with the same model)")
    if not torch.is_floating_point(texts):
        raise TypeError(f"{what} must be floating point, got {texts.dtype}")
    if not bool(torch.isfinite(texts).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    return texts


def zero_shot_classifier(model: nn.Module, tokenizer: Callable[..., torch.Tensor],
                         classes: Sequence[str] | Mapping[str, Sequence[str]],
                         templates: Sequence[str | Callable[[str], str]] = ("a photo of a {}.",),
                         *, device: str | torch.device | None = None) -> torch.Tensor:
    """Class embeddings ``[C, d']`` as in CLIP: prompts normalised, averaged, renormalised.

    ``classes`` is either a list of class names (combined with ``templates``, which may be
    format strings with ``{}`` or callables as in ``open_clip.zero_shot_metadata``) or a mapping
    from class name to its own list of prompts.
    """
    if isinstance(classes, Mapping):
        prompts = [list(p) for p in classes.values()]
    else:
        if not templates:
            raise ValueError("no templates")
        prompts = [[t(c) if callable(t) else t.format(c) for t in templates] for c in classes]
    if not prompts or any(not p for p in prompts):
        raise ValueError("every class needs at least one prompt")
    flat = [p for ps in prompts for p in ps]
    emb = encode_texts(model, tokenizer, flat, device=device)
    out, i = [], 0
    for ps in prompts:
        out.append(emb[i:i + len(ps)].mean(0))
        i += len(ps)
    return torch.nn.functional.normalize(torch.stack(out), dim=-1)


def zero_shot_prediction(unit: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """The zero-shot prediction ``[B]``: for each unit image embedding ``[B, d']``, the class of
    ``class_emb`` ``[C, d']`` with the largest dot product (the cosine, for unit class embeddings
    such as :func:`zero_shot_classifier`'s)."""
    return (unit @ class_emb.to(unit.dtype).T).argmax(-1)


def cached_text_embeddings(model: nn.Module, tokenizer: Callable[..., torch.Tensor], texts: Sequence[str], *,
                           model_id: str, cache_dir: str | None = None, batch_size: int = 256,
                           progress: bool = True) -> torch.Tensor:
    """:func:`encode_texts` for a large pool, through the on-disk cache.

    Keyed by ``model_id``, the model's weights fingerprint and the texts themselves, so a pool
    is embedded once per model (a notebook rerun, or a resumed run, reads it back).
    """
    import hashlib

    from .cache import stream_to_cache, weights_fingerprint
    from .download import cache_root

    texts = list(texts)
    if not texts:
        raise ValueError("no texts to encode")
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    key = dict(what="text-embeddings", version=1, model=model_id, weights=weights_fingerprint(model),
               texts=digest)
    device = next(model.parameters()).device

    def source(start: int):
        return (texts[i:i + batch_size] for i in range(start, len(texts), batch_size))

    arrays = stream_to_cache(lambda batch: {"emb": encode_texts(model, tokenizer, batch, batch_size=batch_size)},
                             source, n_items=len(texts), key=key, cache_dir=cache_dir or cache_root() / "features",
                             progress=progress, desc="embedding texts")
    return torch.from_numpy(np.array(arrays["emb"])).to(device)


class Scoring(NamedTuple):
    """How a model turns cosine similarities into probabilities.

    ``kind`` is ``"softmax"`` (CLIP: a softmax over the texts of ``scale * cos``) or
    ``"sigmoid"`` (SigLIP: each image-text pair on its own, ``sigmoid(scale * cos + bias)``).
    """

    kind: str
    scale: float
    bias: float


def scoring(model: nn.Module) -> Scoring:
    """The model's own :class:`Scoring`: its ``logit_scale`` (stored as a log) and, for
    sigmoid-loss models, its ``logit_bias``; ``Scoring("softmax", 100, 0)`` for a model with
    neither (a bare image tower)."""
    ls = getattr(model, "logit_scale", None)
    scale = float(ls.detach().exp()) if isinstance(ls, torch.Tensor) else 100.0
    lb = getattr(model, "logit_bias", None)
    if isinstance(lb, torch.Tensor):
        return Scoring("sigmoid", scale, float(lb.detach()))
    return Scoring("softmax", scale, 0.0)


def probabilities(model: nn.Module | Scoring, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Probabilities ``[N, M]`` of texts for images (embeddings, normalised here), with the
    model's own scale and bias: a softmax over the texts for CLIP, a sigmoid per pair for
    sigmoid-loss models (SigLIP), whose rows need not sum to 1."""
    s = model if isinstance(model, Scoring) else scoring(model)
    images = torch.nn.functional.normalize(images, dim=-1)
    texts = torch.nn.functional.normalize(texts.to(images), dim=-1)
    logits = s.scale * images @ texts.T
    if s.kind == "sigmoid":
        return torch.sigmoid(logits + s.bias)
    return logits.softmax(-1)
