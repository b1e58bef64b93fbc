"""Exercises of notebook 6 (zero-shot segmentation): reference solutions, test cases, typical mistakes,
checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .check import Case, Exercise, Mistake, compare_tensor, make_check, register, scalar_diff, shape_of, to_tensor
from .seeds import gen, rand, randn

__all__ = ["check_postprocess", "check_threshold_at_mean", "check_dataset_miou", "check_best_layer_range",
           "range_items"]


def _postprocess(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """The paper's post-processing: upsample bilinearly to ``size``, clip at 0, min-max
    normalise each map to ``[0, 1]`` (a constant map becomes 0)."""
    from ...methods.maps import postprocess

    return postprocess(maps, size)


def _post_cases() -> list[Case]:
    g = gen(601)
    positive = 1.0 + rand(g, 2, 3, 4)  # every value above 0: the minimum matters after clipping
    const = torch.cat([randn(g, 1, 3, 4), torch.full((1, 3, 4), 0.5, dtype=torch.float64)])
    negative = torch.cat([randn(g, 1, 3, 3), -1.0 - rand(g, 1, 3, 3)])
    return [Case("two signed 3 x 4 maps to 6 x 8", (randn(g, 2, 3, 4), (6, 8))),
            Case("maps above 0 everywhere", (positive, (9, 12))),
            Case("a constant map", (const, (6, 8))),
            Case("a map below 0 everywhere", (negative, (6, 6))),
            Case("non-square output", (randn(g, 1, 2, 2), (5, 7)))]


def _up(m: Tensor, size: tuple[int, int], mode: str = "bilinear", align: bool | None = False) -> Tensor:
    kw = {} if mode == "nearest" else {"align_corners": align}
    return F.interpolate(m[:, None], size=size, mode=mode, **kw)[:, 0]


def _minmax(x: Tensor, over_batch: bool = False) -> Tensor:
    dims = (0, -2, -1) if over_batch else (-2, -1)
    lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-300), torch.zeros_like(x))


register(Exercise(
    id="6.1", name="postprocess", task="upsample bilinearly, clip at 0, min-max normalise each map",
    reference=_postprocess, cases=_post_cases, compare=compare_tensor("the soft map"),
    error_hint="maps are [B, gh, gw]; torch.nn.functional.interpolate wants [B, 1, gh, gw] "
               "(add a channel axis with maps[:, None], remove it afterwards)",
    mistakes=(
        Mistake(lambda m, s: _minmax(_up(m, s)).clamp_min(0),
                "you normalised before clipping: clip at 0 first, then min-max normalise what is left"),
        Mistake(lambda m, s: _up(m, s).clamp_min(0),
                "not normalised: min-max normalise each map to [0, 1] after clipping"),
        Mistake(lambda m, s: torch.where(_up(m, s).clamp_min(0).amax((-2, -1), keepdim=True) > 0,
                                         _up(m, s).clamp_min(0) / _up(m, s).clamp_min(0).amax((-2, -1), keepdim=True),
                                         torch.zeros_like(_up(m, s))),
                "you divided by the maximum only: subtract each map's minimum first (min-max)"),
        Mistake(lambda m, s: _minmax(_up(m, s).clamp_min(0), over_batch=True),
                "you normalised over the whole batch; normalise each map on its own"),
        Mistake(lambda m, s: _minmax(_up(m, s, "nearest").clamp_min(0)),
                "you upsampled with nearest neighbours; the paper upsamples bilinearly"),
        Mistake(lambda m, s: _minmax(_up(m, s, align=True).clamp_min(0)),
                "you upsampled with align_corners=True; use align_corners=False (the patch centres sit "
                "half a patch inside the image)"),
        Mistake(lambda m, s: _minmax(_up(m.clamp_min(0), s)),
                "you clipped before upsampling: upsample first, then clip at 0"),
    ),
))


def _threshold_at_mean(soft: Tensor) -> Tensor:
    """Boolean masks: the pixels of each map strictly above that map's mean."""
    from ...methods.maps import threshold_map

    return threshold_map(soft, "mean")


def _thr_cases() -> list[Case]:
    g = gen(602)
    skew = rand(g, 2, 5, 6) ** 3  # mean and median differ
    skew[1] = skew[1] * 0.2  # the second map is much weaker: the batch mean differs from its own
    const = torch.cat([rand(g, 1, 4, 4), torch.full((1, 4, 4), 0.3, dtype=torch.float64)])
    return [Case("two skewed maps of different strength", (skew,)), Case("one map", (rand(g, 1, 3, 5),)),
            Case("a constant map", (const,)), Case("maps mostly near 1", (1.0 - 0.1 * rand(g, 2, 4, 4),))]


def _mask_compare(got: Any, expected: Tensor) -> str | None:
    t = to_tensor(got)
    if t is None:
        return f"the masks are a {type(got).__name__}; expected a boolean tensor of shape {shape_of(expected)}"
    if t.shape != expected.shape:
        return f"wrong shape: expected {shape_of(expected)}, got {shape_of(t)}"
    if t.dtype != torch.bool:
        if not bool(((t == 0) | (t == 1)).all()):
            return "the masks should be True/False (pixel above the mean or not), not scores"
        t = t.bool()
    wrong = int((t != expected.bool()).sum())
    if wrong == 0:
        return None
    if bool((t == ~expected.bool()).all()):
        return "the masks are inverted: foreground is the pixels *above* the mean"
    return f"{wrong} of {t.numel()} pixels differ"


register(Exercise(
    id="6.2", name="threshold_at_mean", task="the foreground mask: pixels above their map's mean",
    reference=_threshold_at_mean, cases=_thr_cases, compare=_mask_compare,
    error_hint="soft is [B, H, W]; take the mean over the last two axes with keepdim=True",
    mistakes=(
        Mistake(lambda s: s > s.mean(), "you thresholded at the mean of the whole batch; use each map's own mean"),
        Mistake(lambda s: s >= s.mean((-2, -1), keepdim=True),
                "pixels equal to the mean are background: keep the pixels strictly above it (>)"),
        Mistake(lambda s: s > 0.5, "you thresholded at 0.5; the paper thresholds each map at its own mean"),
        Mistake(lambda s: s > s.flatten(-2).median(-1).values[:, None, None],
                "you thresholded at the median; use the mean"),
    ),
))


def _dataset_miou(pred: Tensor, truth: Tensor) -> tuple[float, float, float]:
    """Foreground IoU, background IoU and their mean, each accumulated over the whole dataset
    (intersections and unions added up over all images before dividing)."""
    from ...methods.segmentation import SegmentationScores

    p, t = pred.bool(), truth.bool()
    s = SegmentationScores().update(p.double(), p, t)
    return s.iou_foreground, s.iou_background, s.miou


def _miou_cases() -> list[Case]:
    g = gen(603)

    def blob(N: int, H: int, W: int) -> tuple[Tensor, Tensor]:
        truth = torch.zeros(N, H, W, dtype=torch.bool)
        pred = torch.zeros(N, H, W, dtype=torch.bool)
        for i in range(N):
            h, w = int(torch.randint(1, H, (1,), generator=g)), int(torch.randint(1, W, (1,), generator=g))
            truth[i, :h, :w] = True
            dh, dw = int(torch.randint(0, 2, (1,), generator=g)), int(torch.randint(0, 2, (1,), generator=g))
            pred[i, dh:dh + h, dw:dw + w] = True
        return pred, truth

    small_big = blob(3, 8, 8)
    empty = blob(2, 5, 5)
    empty[0][1] = False
    empty[1][1] = False  # an image with no object and no prediction
    return [Case("three images with objects of different sizes", small_big), Case("an image with no object", empty),
            Case("a perfect prediction", (blob(2, 4, 6)[1],) * 2), Case("one image", blob(1, 6, 6))]


def _miou_compare(got: Any, expected: tuple[float, float, float]) -> str | None:
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return f"return three numbers, (foreground IoU, background IoU, mIoU); got a {type(got).__name__}"
    for value, want, what in zip(got, expected, ("the foreground IoU", "the background IoU", "the mIoU")):
        diff = scalar_diff(value, want, what)
        if diff:
            return diff
    return None


def _iou(p: Tensor, t: Tensor) -> float:
    return float((p & t).sum()) / max(1, int((p | t).sum()))


def _miou_per_image(pred, truth):  # noqa: ANN001, ANN202
    p, t = pred.bool(), truth.bool()
    fg = float(np.mean([_iou(a, b) if bool((a | b).any()) else 1.0 for a, b in zip(p, t)]))
    bg = float(np.mean([_iou(~a, ~b) if bool((~a | ~b).any()) else 1.0 for a, b in zip(p, t)]))
    return fg, bg, (fg + bg) / 2


def _miou_fg_only(pred, truth):  # noqa: ANN001, ANN202
    fg, bg, _ = _dataset_miou(pred, truth)
    return fg, bg, fg


def _miou_union_twice(pred, truth):  # noqa: ANN001, ANN202
    p, t = pred.bool(), truth.bool()
    fg = float((p & t).sum()) / max(1, int(p.sum() + t.sum()))
    bg = float((~p & ~t).sum()) / max(1, int((~p).sum() + (~t).sum()))
    return fg, bg, (fg + bg) / 2


def _miou_bg_not_complemented(pred, truth):  # noqa: ANN001, ANN202
    fg, _, _ = _dataset_miou(pred, truth)
    p, t = pred.bool(), truth.bool()
    bg = float((~p & t).sum()) / max(1, int((~p | t).sum()))
    return fg, bg, (fg + bg) / 2


register(Exercise(
    id="6.3", name="dataset_miou", task="foreground IoU, background IoU and mIoU accumulated over a dataset",
    reference=_dataset_miou, cases=_miou_cases, compare=_miou_compare,
    error_hint="pred and truth are boolean [N, H, W]; ~pred is the predicted background",
    mistakes=(
        Mistake(_miou_per_image, "you averaged per-image IoUs; this metric adds up the intersections and the "
                                 "unions over the whole dataset first, then divides (large objects weigh more)"),
        Mistake(_miou_fg_only, "the mIoU here is the mean of the foreground IoU and the background IoU"),
        Mistake(_miou_union_twice, "the union counts the intersection twice: use (pred | truth), or "
                                   "pred + truth - intersection"),
        Mistake(_miou_bg_not_complemented, "the background IoU compares the predicted background (~pred) with "
                                           "the true background (~truth)"),
    ),
))


def range_items(per_layer: Tensor, masks: Tensor) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """What exercise 6.4 is judged on: for every layer range ``(first, last)``, the per-image
    intersections and unions of the segmenter that sums those layers' maps (the paper's
    post-processing and mean threshold), from which its mIoU is :data:`SEGMENTATION_STATISTICS`."""
    from ...methods.segmentation import segment

    L = per_layer.shape[0]
    size = tuple(masks.shape[-2:])
    t = masks.bool()
    out = {}
    for a in range(L):
        total = per_layer[a:].cumsum(0)
        for b in range(a, L):
            _, hard = segment(total[b - a], size)
            p = hard.bool()
            out[(a, b)] = {"inter_fg": (p & t).sum((-2, -1)).numpy(), "union_fg": (p | t).sum((-2, -1)).numpy(),
                           "inter_bg": (~p & ~t).sum((-2, -1)).numpy(), "union_bg": (~p | ~t).sum((-2, -1)).numpy()}
    return out


RANGE_MARGIN = 0.01
"""Exercise 6.4's stated margin: mIoU differences under 0.01 count as none."""


def _ranges(ctx: dict) -> dict:
    if "ranges" in ctx:  # given by the notebook (range_items of its per-layer maps)
        return ctx["ranges"]
    if "_ranges" not in ctx:  # computed once per check
        ctx["_ranges"] = range_items(ctx["per_layer"], ctx["masks"])
    return ctx["_ranges"]


def _miou(items: dict) -> float:
    from ...methods.stats import SEGMENTATION_STATISTICS

    return SEGMENTATION_STATISTICS["mIoU"](items)


def _range_reference(ctx: dict) -> tuple[int, int]:
    r = _ranges(ctx)
    return max(r, key=lambda k: _miou(r[k]))


def _range_assess(answer: Any, ctx: dict) -> tuple[bool, str]:
    from ...methods.stats import SEGMENTATION_STATISTICS, paired_bootstrap, widened
    from ..narrative import num

    r = _ranges(ctx)
    L = 1 + max(b for _, b in r)
    try:
        a, b = (int(v) for v in answer)
    except (TypeError, ValueError):
        return False, f"answer with a pair (first, last) of layer indices from 0 to {L - 1}; got {answer!r}."
    if (a, b) not in r:
        if (b, a) in r:
            return False, f"write the range as (first, last) with first <= last: ({b}, {a})."
        if 1 <= a and b == L:
            return False, f"layers are numbered from 0 to {L - 1}: did you mean ({a - 1}, {b - 1})?"
        return False, f"both layers must lie in 0..{L - 1} with first <= last; got ({a}, {b})."
    best = _range_reference(ctx)
    ev = widened(paired_bootstrap(r[best], r[(a, b)], SEGMENTATION_STATISTICS["mIoU"]), RANGE_MARGIN)
    said = f"summing layers {a}-{b} gives mIoU {num(_miou(r[(a, b)]))}; the best range, {best[0]}-{best[1]}, {num(ev.a)}"
    if ev.side <= 0:
        said = (f"summing layers {a}-{b} gives the best mIoU, {num(ev.a)}" if (a, b) == best else
                f"{said} (within noise of it: {ev.basis})")
        return True, f"yes: {said}. Layers outside the range add mass off the object or write against the class."
    if (a, b) == (0, L - 1):
        return False, (f"all layers is the segmenter as the paper runs it, not the best range here: {said}, clearly "
                       f"ahead ({ev.basis}).")
    if (a - 1, b - 1) == best:
        return False, f"layers are numbered from 0: did you mean ({best[0]}, {best[1]})? {said}."
    return False, f"{said}, clearly ahead ({ev.basis})."


def _range_cases() -> list[Case]:
    g = gen(640)
    N, gh, gw, H = 40, 4, 4, 8
    masks = torch.zeros(N, H, H, dtype=torch.bool)
    obj = torch.zeros(N, gh, gw, dtype=torch.float64)
    for i in range(N):
        r0, c0 = int(torch.randint(0, 3, (1,), generator=g)), int(torch.randint(0, 3, (1,), generator=g))
        masks[i, 2 * r0:2 * r0 + 4, 2 * c0:2 * c0 + 4] = True
        obj[i, r0:r0 + 2, c0:c0 + 2] = 1.0
    per_layer = torch.stack([
        0.8 * rand(g, N, gh, gw),                          # L0: noise off and on the object
        0.6 * rand(g, N, gh, gw) + 0.2 * (1 - obj),        # L1: mass off the object
        0.6 * obj + 0.7 * rand(g, N, gh, gw),              # L2: the object, noisy
        0.6 * obj + 0.7 * rand(g, N, gh, gw),              # L3: the object, with noise of its own
        -0.5 * obj + 0.8 * rand(g, N, gh, gw),             # L4: writes against the class on the object
    ]).float()
    return [Case("five layers, the middle ones find the object", ({"per_layer": per_layer, "masks": masks},))]


register(Exercise(
    id="6.4", name="best_layer_range", kind="find",
    task="the layer range (first, last) whose summed map segments best (mIoU)",
    reference=_range_reference, assess=_range_assess, cases=_range_cases,
    mistakes=(
        Mistake(lambda ctx: (0, 1 + max(b for _, b in _ranges(ctx)) - 1), "all layers is the segmenter as the paper runs it"),
        Mistake(lambda ctx: tuple(v + 1 for v in _range_reference(ctx)), "numbered from 0"),
        Mistake(lambda ctx: tuple(reversed(_range_reference(ctx))) if _range_reference(ctx)[0] != _range_reference(ctx)[1]
                else (0, 0), "(first, last) with first <= last"),
    ),
))


check_postprocess = make_check("6.1")
check_threshold_at_mean = make_check("6.2")
check_dataset_miou = make_check("6.3")
check_best_layer_range = make_check("6.4")
