"""Text embeddings and zero-shot classifiers."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["encode_texts", "zero_shot_classifier", "cached_text_embeddings"]


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
    try:
        out = [model.encode_text(tokenizer(texts[i:i + batch_size]).to(device), normalize=normalize)
               for i in range(0, len(texts), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


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
    import numpy as np

    return torch.from_numpy(np.array(arrays["emb"])).to(device)
