"""Exercises of notebook 4 (spatial maps): reference solutions, test cases, typical mistakes, checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .check import Case, Exercise, Mistake, compare_tensor, gen, make_check, randn, register

__all__ = ["HeadParts", "head_parts", "check_head_patch_map", "check_contrastive_head_map"]


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
            attn = (2.0 * randn(g, T)).softmax(0)
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


check_head_patch_map = make_check("4.1")
check_contrastive_head_map = make_check("4.2")
