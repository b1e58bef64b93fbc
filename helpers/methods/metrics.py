"""Measuring maps against masks: thresholds, IoU, pixel accuracy, average precision, and the
dataset-level scores of zero-shot segmentation.

Every mask metric of the course lives here, in four parts:

* **Thresholds** -- :func:`threshold_map`: a soft map -> a boolean mask (clip at 0, keep what
  lies above the map's own mean, the paper's rule, or above a fixed value).
* **Per-mask metrics** -- :func:`iou`, :func:`pixel_accuracy` on boolean masks, batched over
  leading axes; :func:`map_iou` and :func:`map_scores` apply them to soft maps.
* **Average precision** -- :func:`average_precision`: pixels ranked by a soft map against a
  mask, one number per map.
* **Dataset-level scores** -- :class:`SegmentationScores` accumulates pixel accuracy, IoU of
  foreground and background over a whole dataset (Chefer et al.'s protocol) and the mean of the
  per-image average precisions; :func:`mass_by_region` says where a map's weight falls.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .maps import as_tensor, postprocess, threshold_map, upsample

__all__ = [
    "threshold_map",
    "iou",
    "pixel_accuracy",
    "average_precision",
    "AP_PROTOCOLS",
    "map_iou",
    "map_scores",
    "mass_by_region",
    "SegmentationScores",
    "BASELINES",
    "baseline_scores",
    "map_coverage",
    "proportion_se",
    "bootstrap_se",
]


def _masks(pred: Any, true: Any) -> tuple[Tensor, Tensor]:
    p, t = as_tensor(pred).bool(), as_tensor(true).bool()
    t = t.to(p.device)
    if p.ndim < 2 or t.ndim < 2:
        raise ValueError("masks must be [..., H, W]")
    if p.shape[-2:] != t.shape[-2:]:
        raise ValueError(f"mask sizes differ: {tuple(p.shape[-2:])} vs {tuple(t.shape[-2:])} "
                         "(upsample the maps to the mask size first)")
    return p, t


# ----------------------------------------------------------------------------------------------
# Per-mask metrics
# ----------------------------------------------------------------------------------------------


def iou(pred_mask: Any, true_mask: Any, *, empty: float = 1.0) -> Tensor:
    """Intersection over union of boolean masks ``[..., H, W]`` (broadcast), per mask: ``[...]``.

    Where both masks are empty the IoU is ``empty`` (they agree perfectly: 1 by default).
    """
    p, t = _masks(pred_mask, true_mask)
    inter = (p & t).flatten(-2).sum(-1).double()
    union = (p | t).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, float(empty)))


def pixel_accuracy(pred_mask: Any, true_mask: Any) -> Tensor:
    """Fraction of pixels where the masks agree, per mask: ``[...]``."""
    p, t = _masks(pred_mask, true_mask)
    return (p == t).flatten(-2).double().mean(-1)


def map_iou(maps: Tensor, masks: Any) -> np.ndarray:
    """IoU of each map thresholded at its own mean (after clipping at 0) with a boolean mask
    (0 where both are empty): ``[N]`` for maps ``[N, H, W]`` at the masks' size."""
    truth = torch.as_tensor(np.asarray(masks), device=maps.device).bool()
    return iou(threshold_map(maps), truth, empty=0.0).cpu().numpy()


def map_scores(maps: Tensor, masks: Any) -> dict[str, float]:
    """Soft patch maps ``[N, gh, gw]`` against masks ``[N, H, W]``, each score averaged over the
    images. The maps are upsampled to the masks' size, then:

    - ``"object IoU"``: IoU of the map thresholded at its mean (:func:`threshold_map`) with the
      object's mask (0 for an image whose mask and map are both empty);
    - ``"pixel accuracy"`` of the same thresholded map;
    - ``"mAP"``: the paper's average precision (Chefer et al.: the map after the paper's
      post-processing -- clipped at 0 and min-max normalised to ``[0, 1]``,
      :func:`helpers.methods.maps.postprocess` -- and its complement, scored against foreground
      and background together, :func:`average_precision` with ``protocol="paper"``; the
      normalisation makes it independent of the map's scale);
    - ``"object AP"``: the average precision of the map against the object's pixels alone
      (images with empty masks skipped).

    Not to be confused with :class:`SegmentationScores`' ``"mIoU"``, which averages the
    foreground and background IoU of a whole dataset's pixels."""
    truth = as_tensor(masks)
    up = upsample(maps, truth.shape[-2:])
    pred = threshold_map(up)
    soft = postprocess(maps, tuple(truth.shape[-2:]))
    return {"object IoU": iou(pred, truth, empty=0.0).mean().item(),
            "pixel accuracy": pixel_accuracy(pred, truth).mean().item(),
            "mAP": float(average_precision(soft, truth, protocol="paper").mean()),
            "object AP": float(np.nanmean(average_precision(up, truth).numpy()))}


# ----------------------------------------------------------------------------------------------
# Average precision
# ----------------------------------------------------------------------------------------------


AP_PROTOCOLS: tuple[str, ...] = ("paper", "foreground")
"""The two average precisions: Chefer et al.'s (the paper's) and the foreground-only one."""


def average_precision(map: Any, true_mask: Any, *, protocol: str = "foreground") -> Tensor:
    """Average precision of ranking pixels by ``map`` against a boolean mask, per map: ``[...]``.

    ``protocol="foreground"`` (the course's): mean over the mask's pixels of the precision
    among pixels scored at least as high (ties broken by position); ``nan`` for an empty mask.

    ``protocol="paper"`` (Chefer et al.'s, used by the paper's reference code): the map is
    scored as two channels at once -- the map against the foreground and its complement
    ``1 - map`` against the background -- and one average precision is taken over all
    ``2 H W`` scores. Tied scores form one threshold (the step-wise definition of
    scikit-learn's ``average_precision_score``): ``AP = sum_t (R_t - R_{t-1}) P_t`` over the
    distinct scores ``t`` in decreasing order. A map that is identically 0 (a constant map
    after :func:`helpers.methods.maps.postprocess`) has a complement of 0 as well, as in the
    reference, where its min-max normalisation gives NaN that is then set to 0. Maps are
    expected in ``[0, 1]`` for this protocol. Every map gets a finite value (half the scores
    are positives), also for an empty mask.
    """
    if protocol not in AP_PROTOCOLS:
        raise ValueError(f"protocol must be 'foreground' or 'paper', got {protocol!r}")
    s = as_tensor(map).double()
    _, t = _masks(s, true_mask)
    s, t = torch.broadcast_tensors(s, t.to(s.device))
    s, t = s.flatten(-2), t.flatten(-2)
    if protocol == "paper":
        blank = (s == 0).all(-1, keepdim=True)
        s = torch.cat([torch.where(blank, torch.zeros_like(s), 1 - s), s], -1)
        t = torch.cat([~t, t], -1)
        return _tied_average_precision(s, t)
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices
    hits = t.gather(-1, order).double()
    precision = hits.cumsum(-1) / torch.arange(1, hits.shape[-1] + 1, dtype=hits.dtype, device=hits.device)
    n_pos = hits.sum(-1)
    ap = (precision * hits).sum(-1) / n_pos.clamp_min(1)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan")))


def _tied_average_precision(scores: Tensor, truth: Tensor) -> Tensor:
    """Step-wise average precision over the last axis, tied scores taken as one threshold:
    each positive counts the precision at the end of its group of equal scores. ``nan`` where
    there is no positive."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    ss = scores.gather(-1, order)
    hits = truth.gather(-1, order).double()
    n = ss.shape[-1]
    pos = torch.arange(n, device=ss.device)
    end = torch.ones_like(ss, dtype=torch.bool)
    end[..., :-1] = ss[..., :-1] != ss[..., 1:]
    # index of the last element of each element's group: a reversed running minimum
    marks = torch.where(end, pos.expand_as(ss), torch.full_like(pos, n).expand_as(ss))
    last = marks.flip(-1).cummin(-1).values.flip(-1)
    cum = hits.cumsum(-1)
    precision_at_end = cum.gather(-1, last) / (last + 1).to(cum.dtype)
    n_pos = hits.sum(-1)
    ap = (hits * precision_at_end).sum(-1) / n_pos.clamp_min(1)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan")))


# ----------------------------------------------------------------------------------------------
# Dataset-level scores
# ----------------------------------------------------------------------------------------------


@dataclass
class SegmentationScores:
    """Metrics accumulated over a dataset (Chefer et al. style).

    ``update(soft, pred, truth)`` adds a batch: ``soft`` ``[B, H, W]`` scores, ``pred`` and
    ``truth`` boolean masks. Then ``pixel_accuracy``, ``iou_foreground``, ``iou_background``,
    ``miou`` (their mean) and ``map`` (mean per-image :func:`average_precision`) are
    available, also together via :meth:`summary`.

    Both average precisions are accumulated, each with one name: ``map_paper``, the summary's
    ``"mAP"`` (Chefer et al.'s protocol, the paper's: map and complement scored against
    foreground and background together, every image counted) and ``map_foreground``, the
    summary's ``"object AP"`` (the soft map against the object's pixels only; images whose mask
    is empty are skipped). ``protocol`` (keyword only: ``"paper"``, the default, or
    ``"foreground"``) says which one :attr:`map` returns.
    """

    correct: int = 0
    pixels: int = 0
    inter: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))  # [bg, fg]
    union: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    ap: list[float] = field(default_factory=list)
    _: KW_ONLY
    protocol: str = "paper"
    ap_paper: list[float] = field(default_factory=list)
    per_image: list[np.ndarray] = field(default_factory=list)  # [correct, pixels, inter bg, inter fg, union bg, union fg]

    def __post_init__(self) -> None:
        if self.protocol not in AP_PROTOCOLS:
            raise ValueError(f"protocol must be 'foreground' or 'paper', got {self.protocol!r}")

    def update(self, soft: Tensor, pred: Tensor, truth: Any) -> "SegmentationScores":
        t = torch.as_tensor(np.asarray(truth) if not isinstance(truth, Tensor) else truth).bool().to(pred.device)
        p = pred.bool()
        if p.shape != t.shape or soft.shape != t.shape:
            raise ValueError(f"shapes differ: soft {tuple(soft.shape)}, pred {tuple(p.shape)}, "
                             f"truth {tuple(t.shape)} (transform image and mask together)")
        flat_p, flat_t = p.reshape(-1, *p.shape[-2:]), t.reshape(-1, *t.shape[-2:])
        counts = [(flat_p == flat_t).sum((-2, -1)), torch.full((flat_t.shape[0],), flat_t[0].numel() if len(flat_t) else 0)]
        counts += [(pc & tc).sum((-2, -1)) for pc, tc in ((~flat_p, ~flat_t), (flat_p, flat_t))]
        counts += [(pc | tc).sum((-2, -1)) for pc, tc in ((~flat_p, ~flat_t), (flat_p, flat_t))]
        per = torch.stack([c.to(torch.int64).cpu() for c in counts], 1).numpy()  # [B, 6]
        self.per_image.append(per)
        tot = per.sum(0)
        self.correct += int(tot[0])
        self.pixels += int(tot[1])
        self.inter += tot[2:4]
        self.union += tot[4:6]
        ap = average_precision(soft, t).reshape(-1).cpu().numpy()
        self.ap.extend(float(a) for a in ap if np.isfinite(a))
        ap2 = average_precision(soft, t, protocol="paper").reshape(-1).cpu().numpy()
        self.ap_paper.extend(float(a) for a in ap2)
        return self

    @property
    def pixel_accuracy(self) -> float:
        return self.correct / max(1, self.pixels)

    @property
    def iou_foreground(self) -> float:
        return float(self.inter[1] / max(1, self.union[1]))

    @property
    def iou_background(self) -> float:
        return float(self.inter[0] / max(1, self.union[0]))

    @property
    def miou(self) -> float:
        return 0.5 * (self.iou_foreground + self.iou_background)

    @property
    def map_foreground(self) -> float:
        return float(np.mean(self.ap)) if self.ap else float("nan")

    @property
    def map_paper(self) -> float:
        return float(np.mean(self.ap_paper)) if self.ap_paper else float("nan")

    @property
    def map(self) -> float:
        return self.map_paper if self.protocol == "paper" else self.map_foreground

    def counts(self) -> np.ndarray:
        """Per-image counts ``[N, 6]``: correct pixels, pixels, background and foreground
        intersections, background and foreground unions (the image is the sampling unit)."""
        return np.concatenate(self.per_image) if self.per_image else np.zeros((0, 6), dtype=np.int64)

    def standard_errors(self, population: int | None = None, *, B: int = 1000, seed: int = 0) -> dict[str, float]:
        """Sampling errors of :meth:`summary`'s first four scores, the images being a sample of
        ``population`` images drawn without replacement (``None``: an infinite population).

        Pixel accuracy and mIoU are ratios of sums over images: their error is a bootstrap over
        images (:func:`bootstrap_se`, ``B`` resamples, ``seed``); mAP and object AP are means of
        per-image values: ``s / sqrt(n)``. Both are times ``sqrt(1 - n / N)``. (Pixels within an
        image are not independent, so no pixel-level binomial error is used.)
        """
        c = self.counts().astype(np.float64)

        def pixel_accuracy(x: np.ndarray) -> float:
            return float(x[:, 0].sum() / max(1.0, x[:, 1].sum()))

        def miou(x: np.ndarray) -> float:
            inter, union = x[:, 2:4].sum(0), np.maximum(1.0, x[:, 4:6].sum(0))
            return float((inter / union).mean())

        return {"pixel accuracy": bootstrap_se(pixel_accuracy, c, B=B, seed=seed, population=population),
                "mIoU": bootstrap_se(miou, c, B=B, seed=seed, population=population),
                "mAP": _mean_se(self.ap_paper, population), "object AP": _mean_se(self.ap, population)}

    def summary(self) -> dict[str, float]:
        """Every score under its one name: ``"pixel accuracy"``, ``"mIoU"`` (mean of the
        foreground and background IoU over the dataset's pixels), ``"mAP"`` (the paper's),
        ``"object AP"`` (foreground only), ``"IoU foreground"``, ``"IoU background"``."""
        return {"pixel accuracy": self.pixel_accuracy, "mIoU": self.miou, "mAP": self.map_paper,
                "object AP": self.map_foreground, "IoU foreground": self.iou_foreground,
                "IoU background": self.iou_background}


def mass_by_region(maps: Tensor, masks: Any, exclude: Any = None) -> dict[str, Tensor]:
    """Where a patch-grid map puts its weight relative to a pixel mask.

    ``maps`` ``[..., N, gh, gw]`` (e.g. one map per layer, :func:`helpers.methods.segmentation.layer_maps`),
    ``masks`` ``[N, H, W]`` aligned with the model's input. A patch is *on* the object when the
    mask touches it. Returns three tensors of shape ``[..., N]``: ``"on"`` and ``"off"``, the
    positive mass on and off the object's patches, and ``"against"``, the negative mass on
    the object's patches (written *against* the class). ``on / (on + off)`` is the share of a
    map's positive mass that falls on the object: what thresholding can hope to keep.

    ``exclude`` (masks like ``masks``): patches it touches are never *on*, e.g. the named object's
    patches when ``masks`` marks unnamed clutter beside it, so that ``on`` is the mass on the
    clutter alone.
    """
    m = as_tensor(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {tuple(m.shape)}")
    if maps.ndim < 3 or maps.shape[-3] != m.shape[0]:
        raise ValueError(f"maps {tuple(maps.shape)} must end in [N, gh, gw] with N = {m.shape[0]} masks")
    grid = tuple(maps.shape[-2:])
    if m.shape[-2] % grid[0] or m.shape[-1] % grid[1]:
        raise ValueError(f"mask size {tuple(m.shape[-2:])} is not a whole number of {grid} patches")
    def touched(mask: Tensor) -> Tensor:  # [N, gh, gw]: the patches a pixel mask touches
        return F.adaptive_max_pool2d(mask.to(maps.device).float()[:, None], grid)[:, 0] > 0

    cover = touched(m)
    if exclude is not None:
        ex = as_tensor(exclude)
        if ex.shape != m.shape:
            raise ValueError(f"exclude must have the masks' shape {tuple(m.shape)}, got {tuple(ex.shape)}")
        cover = cover & ~touched(ex)
    pos, neg = maps.clamp_min(0), (-maps).clamp_min(0)
    return {"on": (pos * cover).sum((-2, -1)), "off": (pos * ~cover).sum((-2, -1)),
            "against": (neg * cover).sum((-2, -1))}


# ----------------------------------------------------------------------------------------------
# Trivial baselines and what a thresholded map covers
# ----------------------------------------------------------------------------------------------


BASELINES: dict[str, str] = {"object IoU": "whole image", "pixel accuracy": "all or nothing",
                             "mAP": "random map", "object AP": "random map"}
"""The trivial map each score of :func:`map_scores` is compared with (:func:`baseline_scores`):
a mask covering the whole image (IoU), the better of an empty and a full mask per image (pixel
accuracy), a map of random numbers per patch (both average precisions)."""


def baseline_scores(masks: Any, grid: tuple[int, int], *, seed: int = 0) -> dict[str, float]:
    """The scores of :func:`map_scores` reached by the trivial maps of :data:`BASELINES`, for
    masks ``[N, H, W]`` and maps on a ``grid`` of patches: what a map must beat to show it has
    found anything. The random map is drawn with ``seed`` (uniform numbers per patch)."""
    truth = as_tensor(masks).bool()
    if truth.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {tuple(truth.shape)}")
    share = truth.flatten(-2).double().mean(-1)
    rnd = torch.rand((truth.shape[0], *grid), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    scored = map_scores(rnd, truth)
    return {"object IoU": iou(torch.ones_like(truth), truth, empty=0.0).mean().item(),
            "pixel accuracy": torch.maximum(share, 1 - share).mean().item(),
            "mAP": scored["mAP"], "object AP": scored["object AP"]}


def map_coverage(maps: Tensor, masks: Any) -> dict[str, float]:
    """What the thresholded maps cover, averaged over the images (maps ``[N, gh, gw]``, masks
    ``[N, H, W]``):

    - ``"kept"``: the share of pixels the mean threshold keeps (:func:`threshold_map`);
    - ``"region"``: the share of pixels in the mask;
    - ``"IoU bound"``: the best IoU a mask of that size can reach, ``min(kept, region) /
      max(kept, region)`` per image (a mask keeping fewer pixels than the region cannot
      cover it);
    - ``"mean inside"`` and ``"mean outside"``: the (signed, upsampled) map's mean value on
      the mask's pixels and on the others (images with an empty or full mask skipped): a map
      that finds the region is higher inside.
    """
    truth = as_tensor(masks).bool()
    up = upsample(maps, truth.shape[-2:]).double()
    truth = truth.to(up.device)
    kept = threshold_map(up).flatten(-2).double().mean(-1)
    region = truth.flatten(-2).double().mean(-1)
    bound = torch.where(torch.maximum(kept, region) > 0,
                        torch.minimum(kept, region) / torch.maximum(kept, region).clamp_min(1e-12),
                        torch.zeros_like(kept))
    n_in = truth.flatten(-2).sum(-1)
    n_out = truth[0].numel() - n_in
    both = (n_in > 0) & (n_out > 0)
    inside = (up * truth).flatten(-2).sum(-1) / n_in.clamp_min(1)
    outside = (up * ~truth).flatten(-2).sum(-1) / n_out.clamp_min(1)
    return {"kept": kept.mean().item(), "region": region.mean().item(), "IoU bound": bound.mean().item(),
            "mean inside": inside[both].mean().item(), "mean outside": outside[both].mean().item()}


# ----------------------------------------------------------------------------------------------
# Sampling errors: a figure measured on n images drawn from a population of N
# ----------------------------------------------------------------------------------------------


def proportion_se(p: float, n: int, population: int | None = None) -> float:
    """Standard error of a proportion ``p`` measured on ``n`` items drawn without replacement
    from ``population`` items (``None``: infinitely many):
    ``sqrt(p (1 - p) / n * (N - n) / (N - 1))``. An accuracy on a subset is such a proportion."""
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p must be a proportion in [0, 1], got {p}")
    var = float(p) * (1.0 - float(p)) / n
    if population is not None:
        N = int(population)
        if N < n:
            raise ValueError(f"the population ({N}) is smaller than the sample ({n})")
        var *= (N - n) / (N - 1) if N > 1 else 0.0
    return var ** 0.5


def bootstrap_se(stat: Any, per_item: Any, *, B: int = 1000, seed: int = 0, population: int | None = None) -> float:
    """Bootstrap standard error of ``stat(per_item)`` over items (the first axis of
    ``per_item``): ``B`` resamples with replacement (a generator seeded with ``seed``), the
    standard deviation of the statistic over them, times ``sqrt(1 - n / N)`` for a sample of
    ``n`` of ``population`` items."""
    x = np.asarray(per_item)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 items to resample, got {n}")
    if B < 2:
        raise ValueError(f"B must be >= 2, got {B}")
    rng = np.random.default_rng(seed)
    values = np.array([stat(x[rng.integers(0, n, n)]) for _ in range(int(B))], dtype=np.float64)
    se = float(values.std(ddof=1))
    if population is not None:
        if population < n:
            raise ValueError(f"the population ({population}) is smaller than the sample ({n})")
        se *= (1.0 - n / population) ** 0.5
    return se


def _mean_se(values: list[float], population: int | None) -> float:
    """``s / sqrt(n)`` of per-item values, times ``sqrt(1 - n / N)``; NaN with fewer than two."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float("nan")
    se = float(v.std(ddof=1) / np.sqrt(len(v)))
    if population is not None:
        if population < len(v):
            raise ValueError(f"the population ({population}) is smaller than the sample ({len(v)})")
        se *= (1.0 - len(v) / population) ** 0.5
    return se
