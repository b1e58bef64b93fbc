"""Patch maps to pixel maps: upsampling, the paper's post-processing, thresholds.

Every map of the course -- the decomposition's, each baseline's, a head's -- lives on the patch
grid ``[..., gh, gw]``; these three steps bring it to the image and to a mask, the same way for
all of them (:mod:`helpers.methods.metrics` scores the result):

* :func:`upsample` -- bilinear, to the image's ``(H, W)``;
* :func:`postprocess` -- the paper's: upsample, clip at 0, min-max normalise each map;
* :func:`threshold_map` -- a soft map -> a boolean mask (clip at 0, keep what lies above the
  map's own mean, the paper's rule, or above a fixed value).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["as_tensor", "upsample", "postprocess", "threshold_map"]


def as_tensor(x: Any) -> Tensor:
    """A tensor view of ``x`` (tensors pass through; arrays and lists are converted)."""
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def upsample(maps: Tensor | np.ndarray, size: int | tuple[int, int]) -> Tensor:
    """Bilinear upsampling of ``[..., gh, gw]`` maps to ``[..., H, W]`` (any leading axes).

    ``size`` is ``H`` (square) or ``(H, W)``. Returns a tensor (floating point).
    """
    t = as_tensor(maps)
    if t.ndim < 2:
        raise ValueError(f"maps must have at least two axes [..., gh, gw], got shape {tuple(t.shape)}")
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not torch.is_floating_point(t):
        t = t.float()
    lead = t.shape[:-2]
    flat = t.reshape(-1, 1, *t.shape[-2:])
    if flat.shape[0] == 0:
        return t.new_zeros(*lead, *size)
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def postprocess(maps: Tensor, size: int | tuple[int, int], *, clip: bool = True) -> Tensor:
    """The paper's post-processing: upsample bilinearly to ``size``, clip at 0, min-max
    normalise each map to ``[0, 1]`` (a constant map becomes 0): ``[B, H, W]``.

    ``clip=False`` skips the clip, as Chefer et al.'s evaluation post-processes its baselines
    (min-max only; it matters for maps with negative values, such as full LRP's pixel map).
    Maps already at ``size`` are left as they are by the upsampling (bilinear to the same size
    is the identity)."""
    up = upsample(maps, size)
    if clip:
        up = up.clamp_min(0)
    lo = up.flatten(-2).min(-1).values[..., None, None]
    hi = up.flatten(-2).max(-1).values[..., None, None]
    span = hi - lo
    return torch.where(span > 0, (up - lo) / span.clamp_min(torch.finfo(up.dtype).tiny), torch.zeros_like(up))


def threshold_map(map: Any, how: str | float = "mean", *, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """Binary foreground masks from maps ``[..., H, W]`` (batched over leading axes).

    The map is clipped at 0, then ``how="mean"`` keeps pixels above the clipped map's own mean
    (the paper's rule); a number keeps pixels above that value. The comparison is made in
    ``dtype`` (``None``: the map's own floating dtype).
    """
    m = as_tensor(map)
    if m.ndim < 2:
        raise ValueError(f"maps must be [..., H, W], got shape {tuple(m.shape)}")
    if dtype is not None:
        m = m.to(dtype)
    elif not torch.is_floating_point(m):
        m = m.double()
    m = m.clamp_min(0)
    if isinstance(how, str):
        if how != "mean":
            raise ValueError(f"how must be 'mean' or a number, got {how!r}")
        thr = m.mean((-2, -1), keepdim=True)
    else:
        thr = torch.as_tensor(float(how), dtype=m.dtype)
    return m > thr
