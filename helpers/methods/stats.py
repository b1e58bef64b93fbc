"""How sure a comparison is: a paired bootstrap over images, or a stated tolerance.

A notebook that says one method *beats* another, or that a pattern *held*, needs to know
whether the difference it reads is larger than the noise of its sample. This module returns
that as data (:class:`Difference`); the course's prose (:mod:`helpers.course.narrative`) turns
it into words.

* :func:`paired_bootstrap` -- two methods scored on the same items (images, scenes, queries):
  resample the items with replacement, the same draw for both, recompute each method's
  statistic and take the percentile interval of the difference. The statistic can be a mean
  of per-item values or any function of per-item parts (e.g. a dataset-level IoU from
  per-image intersections and unions).
* :func:`with_tolerance` -- a difference and a tolerance stated by the caller (e.g. two
  standard errors of an accuracy, :func:`accuracy_tolerance`).
* :func:`permutation_difference` -- a figure against the same figure computed on shuffled
  data (a permutation control): beyond the noise when it lies outside the shuffles' range.
* :func:`segmentation_items` / :data:`SEGMENTATION_STATISTICS` -- the per-image parts of the
  segmentation scores (:class:`helpers.methods.metrics.SegmentationScores`), so that mIoU,
  pixel accuracy, mAP and object AP can be bootstrapped over images exactly as they are
  accumulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = ["Difference", "paired_bootstrap", "batched", "with_tolerance", "permutation_difference", "widened", "accuracy_tolerance", "segmentation_items",
           "SEGMENTATION_STATISTICS", "per_image_correct", "region_difference"]


@dataclass(frozen=True)
class Difference:
    """A measured difference ``a - b`` and the interval it is known to.

    Attributes:
        a, b: the two figures on the whole sample.
        low, high: the interval of ``a - b`` (a bootstrap percentile interval, or ``a - b`` plus
            and minus a stated tolerance).
        basis: how the interval was found, in words (``"a paired bootstrap over 200 images"``).
        level: the interval's coverage (``None`` for a stated tolerance).
        n: the number of items resampled (0 for a stated tolerance).
    """

    a: float
    b: float
    low: float
    high: float
    basis: str
    level: float | None = None
    n: int = 0

    @property
    def diff(self) -> float:
        return self.a - self.b

    @property
    def side(self) -> int:
        """``+1`` when ``a`` is above ``b`` beyond the noise, ``-1`` when below, ``0`` within it."""
        if self.low > 0:
            return 1
        if self.high < 0:
            return -1
        return 0


_BLOCK = 250_000  # resampled values per block of draws (a batched statistic)


class _Taken(Mapping):
    """``{k: x[k][idx]}``, each part gathered when a statistic first reads it."""

    def __init__(self, parts: Mapping, idx: np.ndarray):
        self._parts, self._idx, self._got = parts, idx, {}

    def __getitem__(self, key: Any) -> Any:
        if key not in self._got:
            self._got[key] = _take(self._parts[key], self._idx)
        return self._got[key]

    def __iter__(self):
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)


def _take(x: Any, idx: np.ndarray) -> Any:
    if isinstance(x, Mapping):
        return _Taken(x, idx)
    if isinstance(x, tuple):
        return tuple(_take(v, idx) for v in x)
    return np.asarray(x)[idx]


def _length(x: Any) -> int:
    if isinstance(x, Mapping):
        sizes = {_length(v) for v in x.values()}
    elif isinstance(x, tuple):
        sizes = {_length(v) for v in x}
    else:
        sizes = {len(np.asarray(x))}
    if len(sizes) != 1:
        raise ValueError(f"every per-item part must have one entry per item, got lengths {sorted(sizes)}")
    return sizes.pop()


def batched(statistic: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Mark ``statistic`` as batched: given per-item parts (one value per item, ``[N]``) whose
    arrays carry a leading axis of bootstrap draws (``[K, N]``), it returns the ``K`` values at
    once, each as it would return for that draw alone. :func:`paired_bootstrap` then evaluates
    all draws in a few array operations instead of one call per draw."""
    statistic.batched = True  # type: ignore[attr-defined]
    return statistic


def _scalar(x: Any) -> Any:
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


@batched
def _nanmean(x: np.ndarray) -> Any:
    """The mean of the finite values along the last axis (NaN where there are none)."""
    x = np.asarray(x, dtype=np.float64)
    total = x.sum(-1)
    if np.isfinite(total).all():  # no NaN or infinity anywhere (they would carry into the sums)
        return _scalar(total / x.shape[-1]) if x.shape[-1] else _scalar(np.full(total.shape, np.nan))
    ok = np.isfinite(x)
    count = ok.sum(-1)
    total = np.where(ok, x, 0.0).sum(-1)
    return _scalar(np.where(count > 0, total / np.maximum(count, 1), np.nan))


def _flat_nanmean(x: np.ndarray) -> float:
    return _nanmean(np.ravel(np.asarray(x, dtype=np.float64)))


def paired_bootstrap(a: Any, b: Any, statistic: Callable[[Any], float] | None = None, *, n_boot: int = 1000,
                     level: float = 0.95, seed: int = 0, items: str = "images") -> Difference:
    """The difference of a statistic between two methods scored on the same items.

    ``a`` and ``b`` hold per-item values: arrays ``[N]`` (the statistic defaults to their mean,
    NaNs left out), or dicts / tuples of arrays whose first axis is the ``N`` items, reduced by
    ``statistic``. Every bootstrap draw resamples the same items for both, so what the two
    share (an easy image is easy for both) cancels. Returns a :class:`Difference` with the
    percentile interval at ``level``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100 for a percentile interval, got {n_boot}")
    stat = statistic or (_nanmean if np.ndim(a) == np.ndim(b) == 1 else _flat_nanmean)
    n = _length(a)
    if _length(b) != n:
        raise ValueError(f"a paired bootstrap needs the same items for both: {n} and {_length(b)}")
    if n < 2:
        raise ValueError("a bootstrap needs at least two items")
    va, vb = float(stat(a)), float(stat(b))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    if getattr(stat, "batched", False):  # the same draws as one at a time, in blocks of ~250k values
        step = max(1, min(n_boot, _BLOCK // n))
        for k in range(0, n_boot, step):
            idx = rng.integers(0, n, size=(min(step, n_boot - k), n))
            diffs[k:k + len(idx)] = np.asarray(stat(_take(a, idx))) - np.asarray(stat(_take(b, idx)))
    else:
        for k in range(n_boot):
            idx = rng.integers(0, n, size=n)
            diffs[k] = stat(_take(a, idx)) - stat(_take(b, idx))
    diffs = diffs[np.isfinite(diffs)]
    if not diffs.size:
        return Difference(va, vb, float("nan"), float("nan"), f"a paired bootstrap over {n} {items}", level, n)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return Difference(va, vb, float(lo), float(hi), f"a paired bootstrap over {n} {items}", level, n)


def with_tolerance(a: float, b: float, tolerance: float, basis: str = "") -> Difference:
    """``a - b`` known to within a stated ``tolerance`` (``basis`` says where it comes from)."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    a, b = float(a), float(b)
    d = a - b
    return Difference(a, b, d - tolerance, d + tolerance, basis or f"a stated tolerance of {tolerance:.3g}")


def permutation_difference(value: float, shuffled: Any, *, level: float = 0.95, items: str = "shuffles") -> Difference:
    """A figure against its permutation control: ``value`` measured on the data as it is, and
    ``shuffled`` the same figure on shuffled data (each neuron's words on another neuron's
    images, each image's words on another scene). Returns the :class:`Difference` of ``value``
    minus the shuffles' mean, with the interval ``value`` minus the middle ``level`` of the
    shuffles: it excludes 0 (beyond the noise) exactly when ``value`` lies outside that range."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    null = np.asarray(shuffled, dtype=np.float64).reshape(-1)
    null = null[np.isfinite(null)]
    if null.size < 2:
        raise ValueError(f"a permutation control needs at least two shuffles with a value, got {null.size}")
    v = float(value)
    lo, hi = np.quantile(null, [(1 - level) / 2, (1 + level) / 2])
    return Difference(v, float(null.mean()), v - float(hi), v - float(lo),
                      f"the middle {round(100 * level):d}% of {null.size} {items}", level, int(null.size))


def widened(d: Difference, margin: float, why: str = "") -> Difference:
    """``d`` with a stated practical margin: its interval widened by ``margin`` on both sides, so
    that a difference counts only when it is both beyond the noise and larger than ``margin``."""
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    note = why or f"differences under {margin:g} count as none"
    return Difference(d.a, d.b, d.low - margin, d.high + margin, f"{d.basis}; {note}", d.level, d.n)


def accuracy_tolerance(p: float, n: int, z: float = 2.0) -> float:
    """A tolerance for the difference of two accuracies measured on the same ``n`` images:
    ``z`` standard errors of an accuracy ``p`` (``sqrt(p (1 - p) / n)``), times ``sqrt(2)``
    for the two figures, at least one image's worth (``1 / n``)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    p = min(max(float(p), 0.0), 1.0)
    return max(z * math.sqrt(2 * p * (1 - p) / n), 1.0 / n)


def region_difference(values: Any, region: Any, *, z: float = 2.0, items: str = "patches") -> Difference:
    """The mean of ``values`` inside ``region`` minus their mean outside it (same shape, e.g. a
    head's patch map and the object's patches), known to within ``z`` standard errors of that
    difference (Welch's: ``sqrt(var_in / n_in + var_out / n_out)``). With fewer than two items on a
    side the interval is unbounded: nothing can be said."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    r = np.asarray(region, dtype=bool).reshape(-1)
    if v.shape != r.shape:
        raise ValueError(f"values and region differ in size: {v.size} and {r.size}")
    inside, outside = v[r], v[~r]
    a = float(inside.mean()) if inside.size else float("nan")
    b = float(outside.mean()) if outside.size else float("nan")
    if inside.size < 2 or outside.size < 2:
        return Difference(a, b, -math.inf, math.inf, f"too few {items} on one side", None, int(v.size))
    se = math.sqrt(inside.var(ddof=1) / inside.size + outside.var(ddof=1) / outside.size)
    d = a - b
    return Difference(a, b, d - z * se, d + z * se,
                      f"{z:g} standard errors over {inside.size} {items} inside and {outside.size} outside", None,
                      int(v.size))


def per_image_correct(embeddings: Tensor, classifier: Tensor, labels: Tensor) -> np.ndarray:
    """Whether each image's zero-shot prediction (highest cosine similarity) is right, ``[N]``
    booleans: the per-item values whose mean is the accuracy."""
    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    pred = (emb @ classifier.float().to(emb.device).T).argmax(-1).cpu()
    return (pred == torch.as_tensor(labels).cpu()).numpy()


def segmentation_items(soft: Tensor, pred: Tensor, truth: Any) -> dict[str, np.ndarray]:
    """Per-image parts of the segmentation scores of :class:`~helpers.methods.metrics.SegmentationScores`
    (``soft`` ``[N, H, W]`` soft maps, ``pred`` and ``truth`` boolean masks): correct pixels,
    pixels, foreground and background intersections and unions, and both average precisions.
    :data:`SEGMENTATION_STATISTICS` reduces them to the scores as the dataset-level metrics do."""
    from .metrics import average_precision

    t = torch.as_tensor(np.asarray(truth) if not isinstance(truth, Tensor) else truth).bool()
    p = pred.bool().cpu()
    t = t.cpu()
    if p.shape != t.shape or soft.shape != t.shape:
        raise ValueError(f"shapes differ: soft {tuple(soft.shape)}, pred {tuple(p.shape)}, truth {tuple(t.shape)}")
    dims = tuple(range(1, t.ndim))
    out = {"correct": (p == t).sum(dims).numpy(), "pixels": np.full(t.shape[0], int(np.prod(t.shape[1:])))}
    for name, (pc, tc) in (("bg", (~p, ~t)), ("fg", (p, t))):
        out[f"inter_{name}"] = (pc & tc).sum(dims).numpy()
        out[f"union_{name}"] = (pc | tc).sum(dims).numpy()
    out["ap_object"] = average_precision(soft.cpu(), t).reshape(-1).numpy().astype(np.float64)
    out["ap_paper"] = average_precision(soft.cpu(), t, protocol="paper").reshape(-1).numpy().astype(np.float64)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> Any:
    """Summed numerators over summed denominators along the last axis (at least 1 below)."""
    return _scalar(np.sum(num, -1) / np.maximum(1, np.sum(den, -1)))


SEGMENTATION_STATISTICS: dict[str, Callable[[Mapping[str, np.ndarray]], float]] = {
    "pixel accuracy": batched(lambda d: _ratio(d["correct"], d["pixels"])),
    "mIoU": batched(lambda d: 0.5 * (_ratio(d["inter_fg"], d["union_fg"]) + _ratio(d["inter_bg"], d["union_bg"]))),
    "IoU foreground": batched(lambda d: _ratio(d["inter_fg"], d["union_fg"])),
    "IoU background": batched(lambda d: _ratio(d["inter_bg"], d["union_bg"])),
    "mAP": batched(lambda d: _nanmean(d["ap_paper"])),
    "object AP": batched(lambda d: _nanmean(d["ap_object"])),
}
"""Each segmentation score as a function of :func:`segmentation_items` (the same reduction as
:class:`~helpers.methods.metrics.SegmentationScores`: sums over images for the pixel counts,
means over images for the average precisions)."""
