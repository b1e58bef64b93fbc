"""Exercises of notebook 4 (spatial maps): reference solutions, test cases, typical mistakes, checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .check import Case, Exercise, Mistake, compare_tensor, make_check, register
from .seeds import gen, randn

__all__ = ["HeadParts", "head_parts", "check_head_patch_map", "check_contrastive_head_map", "check_best_layer"]


def _head_patch_map(attn: Tensor, values: Tensor, to_joint: Tensor, bias: Tensor, text: Tensor,
                    grid: tuple[int, int]) -> Tensor:
    """One head's map ``[gh, gw]`` for one text: patch ``i``'s term ``a_i (v_i W + b)`` scored
    against the text, for the patch tokens ``1..T-1`` in row-major order (token 0 is the class
    token). Uses the decomposition's own per-token contraction."""
    from ...engine.components import token_text_scores

    t = text.to(to_joint.dtype)
    QE = (to_joint @ t)[None, :, None]  # [h=1, dh, M=1]
    BE = (bias @ t).reshape(1, 1)  # [h=1, M=1]
    scores = token_text_scores(attn[None, None], values[None, :, None], QE, BE, keep_head=False)  # [1, T, 1]
    return scores[0, 1:, 0].reshape(grid)


def _head_cases(two_texts: bool = False, seed: int = 401) -> Callable[[], list[Case]]:
    def cases() -> list[Case]:
        g = gen(seed)

        def make(grid: tuple[int, int], dh: int = 4, E: int = 5) -> tuple:
            T = 1 + grid[0] * grid[1]
            logits = 2.0 * randn(g, T)
            logits[0] += 2.0  # the class token attends to itself a lot (as in a real head): non-uniform weights
            attn = logits.softmax(0)
            values = randn(g, T, dh)
            to_joint = randn(g, dh, E)
            bias = 2.0 * randn(g, E)
            texts = (randn(g, E), randn(g, E)) if two_texts else (randn(g, E),)
            return (attn, values, to_joint, bias, *texts, grid)

        return [Case("a 3 x 3 grid", make((3, 3))), Case("a 2 x 3 grid (2 rows, 3 columns)", make((2, 3))),
                Case("a single patch", make((1, 1))), Case("a 4 x 2 grid", make((4, 2), dh=2, E=3))]
    return cases


def _hm_no_attn(a, v, W, b, t, grid):  # noqa: ANN001, ANN202 - typical mistakes, same signature
    return ((v @ W + b) @ t)[1:].reshape(grid)


def _hm_no_bias(a, v, W, b, t, grid):  # noqa: ANN001, ANN202
    return (a[:, None] * (v @ W) @ t)[1:].reshape(grid)


def _hm_bias_unweighted(a, v, W, b, t, grid):  # noqa: ANN001, ANN202
    return (a * ((v @ W) @ t) + b @ t)[1:].reshape(grid)


def _hm_drop_last(a, v, W, b, t, grid):  # noqa: ANN001, ANN202
    return (a * ((v @ W + b) @ t))[:-1].reshape(grid)


def _hm_renormalised(a, v, W, b, t, grid):  # noqa: ANN001, ANN202
    w = a[1:] / a[1:].sum()
    return (w * ((v[1:] @ W + b) @ t)).reshape(grid)


def _hm_column_major(a, v, W, b, t, grid):  # noqa: ANN001, ANN202
    return (a * ((v @ W + b) @ t))[1:].reshape(grid[1], grid[0]).T


register(Exercise(
    id="4.1", name="head_patch_map", task="one head's patch map for one text from attention weights and values",
    reference=_head_patch_map, cases=_head_cases(), compare=compare_tensor("the map"),
    error_hint="attn is [T], values [T, dh], to_joint [dh, E], bias [E], text [E]; token 0 is the class "
               "token, so the patches are tokens 1..T-1 (T - 1 = rows x columns)",
    mistakes=(
        Mistake(_hm_no_attn, "the attention weights are missing: each token's term is a_i times (its value "
                             "through the head's map, plus the bias)"),
        Mistake(_hm_no_bias, "the bias term is missing: each token also carries a_i times the head's share of "
                             "the output bias"),
        Mistake(_hm_bias_unweighted, "the bias is shared among the tokens by attention weight: a_i * bias, not "
                                     "the whole bias for every token"),
        Mistake(_hm_renormalised, "you renormalised the attention over the patches: the weights a_i are the class "
                                  "token's attention over *all* tokens, the class token included, and the map keeps "
                                  "them as they are (dropping token 0 from the map must not make the patch weights "
                                  "sum to 1), so map + class-token term add up to the head's score"),
        Mistake(_hm_drop_last, "you dropped the last patch instead of the class token: the class token is "
                               "token 0, the patches are tokens 1..T-1"),
        Mistake(_hm_column_major, "the map is transposed: patches are numbered row by row (row-major), so "
                                  "reshape to grid = (rows, columns) directly"),
    ),
))


def _contrastive_head_map(attn: Tensor, values: Tensor, to_joint: Tensor, bias: Tensor, text_a: Tensor,
                          text_b: Tensor, grid: tuple[int, int]) -> Tensor:
    """Where the head makes the image look more like ``text_a`` than ``text_b``: the map of
    ``a - b`` (the maps are linear in the text)."""
    return _head_patch_map(attn, values, to_joint, bias, text_a - text_b, grid)


register(Exercise(
    id="4.2", name="contrastive_head_map", task="the contrastive map of two texts as a difference of maps",
    reference=_contrastive_head_map, cases=_head_cases(two_texts=True, seed=402), compare=compare_tensor("the map"),
    error_hint="compute the map of each text with head_patch_map (same arguments, one text each) and "
               "subtract",
    mistakes=(
        Mistake(lambda a, v, W, b, ta, tb, grid: _head_patch_map(a, v, W, b, tb - ta, grid),
                "the sign is flipped: you computed B minus A; the contrastive map is map(A) - map(B)"),
        Mistake(lambda a, v, W, b, ta, tb, grid: _head_patch_map(a, v, W, b, ta + tb, grid),
                "you added the two maps; the contrastive map is their difference"),
        Mistake(lambda a, v, W, b, ta, tb, grid: _head_patch_map(a, v, W, b, F.normalize(ta - tb, dim=0), grid),
                "you normalised the difference of the texts; the contrastive map is map(A) - map(B) as it is"),
    ),
))


@dataclass
class HeadParts:
    """What exercise 4.1 needs for one head of one image (cosine scale: everything is already
    divided by ``ln_post``'s sigma and by the embedding's norm).

    Attributes:
        attn: ``[T]`` the class token's attention weights over the tokens (token 0 is itself).
        values: ``[T, dh]`` the head's value vectors of the tokens.
        to_joint: ``[dh, E]`` the head's map from its value space into the joint space (its
            slice of the output projection, then ``ln_post``'s centring, gamma, 1/sigma and
            ``proj``, and the 1/norm of the embedding).
        bias: ``[E]`` the head's share of the output-projection bias, through the same map.
        grid: ``(rows, columns)`` of the patch grid.
    """

    attn: Tensor
    values: Tensor
    to_joint: Tensor
    bias: Tensor
    grid: tuple[int, int]


@torch.no_grad()
def head_parts(model: nn.Module, image: Tensor, layer: int, head: int) -> HeadParts:
    """The attention weights, values and joint-space map of head ``(layer, head)`` for one
    preprocessed image (``[3, H, W]`` or ``[1, 3, H, W]``)."""
    from ...engine.decompose import Decomposer

    x = image[None] if image.ndim == 3 else image
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"give one preprocessed image [3, H, W], got shape {tuple(image.shape)}")
    dec = Decomposer(model)
    layer, head = int(layer) % dec.n_layers, int(head) % dec.n_heads
    parts = dec(x, heads=False, tokens=True).normalized().head_inputs(layer, head)
    return HeadParts(attn=parts.attn[0], values=parts.values[0], to_joint=parts.to_joint[0], bias=parts.bias[0],
                     grid=parts.grid)


def _layer_index(answer: object, L: int) -> int | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, str):
        text = answer.strip().upper()
        if text.startswith("L") and text[1:].isdigit():
            answer = int(text[1:])
        else:
            return None
    if isinstance(answer, (int, float)) and int(answer) == answer and 0 <= int(answer) < L:
        return int(answer)
    return None


def _layer_evidence(ctx: dict, layer: int):  # noqa: ANN202
    """The best layer minus ``layer``, per scene, by a paired bootstrap (computed once per pair)."""
    from ...methods.stats import paired_bootstrap

    iou = ctx["layer_iou"]
    best = _best_layer(ctx)
    cache = ctx.setdefault("_evidence", {})
    if layer not in cache:
        cache[layer] = paired_bootstrap(iou[best], iou[layer], items="scenes")
    return cache[layer]


def _best_layer(ctx: dict) -> int:
    import numpy as np

    means = [float(np.nanmean(v)) for v in ctx["layer_iou"]]
    return int(np.argmax(means))


def _best_layer_assess(answer: object, ctx: dict) -> tuple[bool, str]:
    import numpy as np

    from ..narrative import num, pct

    iou, mass = ctx["layer_iou"], ctx["mass"]
    L = len(iou)
    means = [float(np.nanmean(v)) for v in iou]
    a = _layer_index(answer, L)
    if a is None:
        return False, f"answer with a layer index from 0 to {L - 1} (or its label, e.g. 'L{L - 1}'); got {answer!r}."
    best = _best_layer(ctx)
    ev = _layer_evidence(ctx, a)
    heavy = int(np.argmax(mass))
    said = (f"L{a}'s map alone reaches object IoU {num(means[a])} and supplies {pct(mass[a])} of the map's mass; "
            f"the best layer, L{best}, {num(means[best])}")
    if ev.side <= 0:
        said = (f"L{a}'s map alone reaches the best object IoU, {num(means[a])}, and supplies {pct(mass[a])} of the "
                "map's mass" if a == best else f"{said} (within noise of it: a paired bootstrap over the scenes)")
        return True, (f"yes: {said}. A layer can localise well with little mass: the IoU ignores the map's "
                      "scale, the summed map does not.")
    if a == heavy:
        return False, (f"L{a} supplies the most *mass* ({pct(mass[a])}), but mass is how much a layer adds to the "
                       f"summed map, not how well its own map finds the objects: {said}.")
    if a == best + 1:
        return False, (f"layers are numbered from 0: did you mean L{best}? {said}.")
    if a >= L - 4 and best < L - 4:
        return False, (f"the early layers can localise too, though their maps are faint: {said}, "
                       "clearly ahead (a paired bootstrap over the scenes).")
    return False, f"{said}, clearly ahead (a paired bootstrap over the scenes)."


def _best_layer_cases() -> list[Case]:
    g = gen(430)
    N, L = 60, 6
    base = torch.tensor([0.20, 0.55, 0.30, 0.40, 0.30, 0.35], dtype=torch.float64)
    iou = (base[:, None] + 0.05 * randn(g, L, N)).clamp(0, 1).numpy()
    mass = [0.02, 0.03, 0.05, 0.10, 0.20, 0.60]  # the last layer has the mass, L1 localises best
    return [Case("six layers, the heaviest is not the best", ({"layer_iou": iou, "mass": mass},))]


register(Exercise(
    id="4.3", name="best_layer", kind="find",
    task="the single attention layer whose colour map finds the objects best (object IoU)",
    reference=_best_layer, assess=_best_layer_assess, cases=_best_layer_cases,
    mistakes=(
        Mistake(lambda ctx: max(range(len(ctx["mass"])), key=lambda i: ctx["mass"][i]), "supplies the most *mass*"),
        Mistake(lambda ctx: _best_layer(ctx) + 1, "numbered from 0"),
        Mistake(lambda ctx: max(range(len(ctx["mass"]) - 4, len(ctx["mass"])),
                                key=lambda i: float(ctx["layer_iou"][i].mean())), "the early layers can localise too"),
    ),
))


check_head_patch_map = make_check("4.1")
check_contrastive_head_map = make_check("4.2")
check_best_layer = make_check("4.3")
