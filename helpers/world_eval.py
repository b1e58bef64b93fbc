"""Measuring a model on the synthetic world against its ground truth.

These are the figures of the offline default's model card, re-measured by the tests on
freshly generated scenes:

* zero-shot accuracy of every factor (prompts from :func:`helpers.world.class_prompts`);
* mean-ablation of shape classification (MLPs, early attention layers, last attention layers);
* worst-group accuracy on the Waterbirds-like groups (family x water/grass background);
* spatial maps against the object masks (mIoU);
* head specialisation: purity of the properties of each head's TextSpan texts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import world
from .ablation import DirectTerms, accuracy, collect_terms
from .decompose import Decomposer
from .text import encode_texts, zero_shot_classifier
from .training import images_to_tensor

__all__ = ["factor_accuracies", "ablation_figures", "group_accuracies", "object_maps", "map_iou",
           "head_purity", "evaluate"]

ZERO_SHOT_FACTORS = ("shape", "colour", "background", "position", "size", "count", "pattern", "family")


def _classifiers(model: nn.Module, tokenizer, factors: Sequence[str]) -> dict[str, Tensor]:
    return {f: zero_shot_classifier(model, tokenizer, world.class_prompts(f)) for f in factors}


@torch.no_grad()
def factor_accuracies(model: nn.Module, tokenizer, scenes: world.Scenes, terms: DirectTerms | None = None,
                      factors: Sequence[str] = ZERO_SHOT_FACTORS) -> dict[str, float]:
    """Zero-shot accuracy of each factor on ``scenes``."""
    if terms is None:
        terms = collect_terms(model, images_to_tensor(scenes.images))
    emb = terms.embeddings()
    out = {}
    for f, clf in _classifiers(model, tokenizer, factors).items():
        out[f] = accuracy(emb, clf, torch.as_tensor(scenes.factors[f]))
    return out


def ablation_figures(terms: DirectTerms, classifier: Tensor, labels: Tensor, last_k: int = 4) -> dict[str, float]:
    """Accuracy after the paper's mean ablations (see notebook 2)."""
    L = terms.n_layers
    k = min(last_k, L)
    early = list(range(L - k))
    acc = lambda e: accuracy(e, classifier, labels)  # noqa: E731
    return {
        "baseline": acc(terms.embeddings()),
        "mlps": acc(terms.ablated(mlps=range(L))),
        "attn_except_last_k": acc(terms.ablated(attn=early)),
        "everything_except_last_k_attn": acc(terms.ablated(mlps=range(L), attn=early, embed=True)),
        "last_k_attn": acc(terms.ablated(attn=range(L - k, L))),
    }


@torch.no_grad()
def group_accuracies(model: nn.Module, tokenizer, n_per_group: int = 100, seed: int = 0,
                     terms_fn=None) -> dict[str, Any]:
    """Family classification on the balanced Waterbirds-like groups.

    Returns per-group accuracy, the average over images, and the worst group.
    ``terms_fn(terms) -> embeddings`` may modify the embeddings (e.g. ablate heads).
    """
    scenes = world.waterbirds_test_set(n_per_group, seed=seed)
    terms = collect_terms(model, images_to_tensor(scenes.images), heads=terms_fn is not None)
    emb = terms.embeddings() if terms_fn is None else terms_fn(terms)
    clf = zero_shot_classifier(model, tokenizer, world.class_prompts("family"))
    pred = (F.normalize(emb, dim=-1) @ clf.T).argmax(-1).cpu().numpy()
    fam = np.asarray(scenes.factors["family"])
    groups = np.asarray(scenes.groups)
    per = {}
    for g, name in enumerate(world.WATERBIRDS_GROUP_NAMES):
        sel = groups == g
        per[name] = float((pred[sel] == fam[sel]).mean())
    return {"groups": per, "average": float((pred == fam).mean()), "worst_group": min(per.values())}


@torch.no_grad()
def object_maps(model: nn.Module, tokenizer, scenes: world.Scenes, factor: str = "shape") -> Tensor:
    """Patch maps of each scene's own ``factor`` text, minus the mean over the factor's classes.

    Sums the per-token attention contributions over all layers and heads (class token
    excluded), scores them against the class embedding of the scene's value minus the average
    class embedding, and upsamples the patch grid bilinearly to the image: ``[N, H, W]``.
    """
    clf = zero_shot_classifier(model, tokenizer, world.class_prompts(factor))
    dec = Decomposer(model)
    x = images_to_tensor(scenes.images).to(clf.device)
    d = dec(x, heads=False, texts=clf, text_keep=()).normalized()
    grid = d.spatial_map(d.text_scores)  # [N, gh, gw, C]
    labels = torch.as_tensor(scenes.factors[factor], device=grid.device)
    own = grid[torch.arange(len(labels)), :, :, labels]
    maps = own - grid.mean(-1)
    size = scenes.images.shape[1:3]
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def map_iou(maps: Tensor, masks: np.ndarray | Tensor) -> np.ndarray:
    """IoU of each map thresholded at its own mean (after clipping at 0) with a boolean mask."""
    m = maps.clamp_min(0)
    pred = m > m.flatten(1).mean(1)[:, None, None]
    truth = torch.as_tensor(np.asarray(masks), device=pred.device).bool()
    inter = (pred & truth).flatten(1).sum(1).float()
    union = (pred | truth).flatten(1).sum(1).float().clamp_min(1)
    return (inter / union).cpu().numpy()


def head_purity(heads: Tensor, text_emb: Tensor, properties: Sequence[str], n: int = 10,
                layers: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """TextSpan on each head of ``layers``; the dominant property of its ``n`` texts and its share.

    ``heads`` is ``[N, L, H, d]``; ``properties[j]`` the tag of text ``j``.
    """
    from .textspan import textspan

    L, H = heads.shape[1], heads.shape[2]
    layers = list(range(L)) if layers is None else [i % L for i in layers]
    C = heads[:, layers].permute(1, 2, 0, 3).reshape(len(layers) * H, heads.shape[0], -1)
    res = textspan(C, text_emb, n)
    out = []
    for idx, (li, h) in enumerate((li, h) for li in layers for h in range(H)):
        picked = [int(j) for j in res.indices[idx].tolist()]
        counts = Counter(properties[j] for j in picked)
        prop, cnt = counts.most_common(1)[0]
        out.append({"layer": li, "head": h, "property": prop, "purity": cnt / len(picked),
                    "texts": picked, "variance": float(res.cumulative[idx, -1])})
    return out


@torch.no_grad()
def evaluate(model: nn.Module, tokenizer, n: int = 600, seed: int = 1, n_per_group: int = 150,
             n_maps: int = 200, purity_texts: int = 10) -> dict[str, Any]:
    """All model-card figures on fresh held-out scenes (``split='test'``, given seed)."""
    scenes = world.sample(n, split="test", seed=seed)
    terms = collect_terms(model, images_to_tensor(scenes.images), heads=True)
    figs: dict[str, Any] = {"n_test_scenes": n}
    figs["zero_shot"] = factor_accuracies(model, tokenizer, scenes, terms)
    shape_clf = zero_shot_classifier(model, tokenizer, world.class_prompts("shape"))
    figs["shape_ablation"] = ablation_figures(terms, shape_clf, torch.as_tensor(scenes.factors["shape"]))
    figs["waterbirds"] = group_accuracies(model, tokenizer, n_per_group, seed=seed)
    sub = world.sample(n_maps, split="test", seed=seed + 100)
    maps = object_maps(model, tokenizer, sub, "shape")
    figs["shape_map_miou"] = float(map_iou(maps, sub.foreground).mean())
    pool = world.text_pool()
    texts = [t for t, _, _ in pool]
    props = [p for _, p, _ in pool]
    temb = encode_texts(model, tokenizer, texts)
    L = terms.n_layers
    rows = head_purity(terms.heads, temb, props, n=purity_texts, layers=range(max(0, L - 4), L))
    figs["head_roles"] = [{k: r[k] for k in ("layer", "head", "property", "purity")} for r in rows]
    figs["heads_purity_ge_0.6"] = sum(r["purity"] >= 0.6 for r in rows)
    return figs
