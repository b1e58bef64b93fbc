"""TextSpan: a text basis for an attention head's output space (paper, section 4.1).

Given one head's direct contributions ``C`` (``K`` images x ``d``, already in the joint
image-text space) and a pool of ``M`` L2-normalised text embeddings ``R`` (``M x d``),
TextSpan greedily picks ``n`` texts whose directions explain the most variance of the head:

1. Texts are projected onto the head's output span: the top ``r`` right singular vectors
   ``V_r`` of the *uncentred* ``C`` (``r = min(rank, K, d)``, reference ``rank = 80``), so
   ``R' = R V_r V_r^T``. Singular directions whose singular value is below
   ``rtol * sigma_max`` are numerically null (a ViT-B-16 head has only 64 dimensions, fewer
   than 80) and are left out: otherwise arbitrary null-space directions would leak into the
   chosen directions. ``span="paper"`` keeps them, as the authors' reference code does, to
   reproduce its picks (:func:`span_comparison` shows where the two lists part).
2. ``C`` is centred over images; its mean ``mu`` starts the reconstruction.
3. ``n`` times: choose the text ``j`` maximising the variance over images of ``C R'_j``
   where ``C`` is the current centred residual and ``R'_j`` the current, *unnormalised*
   residual text (texts are never renormalised, as in the authors' reference, so a text that
   still has a large component in the head's span is preferred). With
   ``u = R'_j / |R'_j|`` the projection ``(C u) u^T`` is added to the reconstruction and the
   direction ``u`` is removed from the data and from every text (Gram-Schmidt,
   ``R' <- R' - (R' u) u^T``). A chosen text, or one whose residual norm has dropped below
   ``text_tol * |R_j|``, is never chosen again.

The chosen directions are orthonormal, so the reconstruction is ``mu + (C - mu) U^T U``, the
projection of the centred data onto their span; :meth:`TextSpanResult.reconstruct` applies
the same map to held-out data, which is what replacing a head by its reconstruction uses.

Implementation (batched over heads, no Python loop over heads): the data and the texts only
ever matter through the ``r``-dimensional coordinates in ``V_r``, because every text, and so
every chosen direction, lies in ``span(V_r)``. With ``T = R V_r`` (``M x r`` per head) and
``Sigma = V_r^T S V_r`` (``S`` the covariance of the centred data), the variance of text
``j`` is ``t_j Sigma t_j^T`` at every step: ``t_j`` is orthogonal to the directions already
removed, so deflating the covariance as well changes nothing. A greedy step is then a few
``O(M r)`` passes (``a = T w``, ``b = T Sigma w``, rank-one updates of ``T`` and of the
variances, recomputed exactly every few steps), after an ``O(K d^2)`` Gram matrix, a batched
``d x d`` eigendecomposition (both in float64, whatever the input dtype, so that weak
directions of a float32 head are not lost in the Gram matrix's rounding) and an
``O(K d r + M d r)`` change of coordinates. Nothing of size ``M x K`` is ever formed.

:func:`textspan_reference` is a plain one-head NumPy version (SVD, explicit ``C R'^T`` each
step) used to check the batched code; :func:`pca_basis` gives the principal directions
(the upper bound of the comparisons) and :func:`random_baseline` TextSpan on random texts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SPANS",
    "TextSpanResult",
    "textspan",
    "HeadMoments",
    "MomentSums",
    "textspan_from_moments",
    "pca_from_moments",
    "SpanComparison",
    "span_comparison",
    "textspan_reference",
    "pca_basis",
    "random_texts",
    "random_baseline",
]

_REFRESH_EVERY = 8  # greedy steps between exact recomputations of the text variances

SPANS: tuple[str, ...] = ("numerical", "paper")
"""Values of :func:`textspan`'s ``span``: the numerical-rank projection (the course's) and
the reference code's top-``rank`` projection (``"paper"``)."""


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------


@dataclass
class TextSpanResult:
    """Directions chosen for one head (fields without the leading ``Hs`` axis) or several.

    Attributes:
        indices: ``[Hs, n]`` indices of the chosen texts in the pool, in order of choice
            (``None`` for :func:`pca_basis`).
        directions: ``[Hs, n, d]`` orthonormal directions ``u`` (the residual texts,
            normalised at the moment they were chosen; principal axes for PCA).
        variance: ``[Hs, n]`` fraction of the centred data's total variance captured by each
            step (the variance of the residual data along ``u``, over the total).
        mean: ``[Hs, d]`` mean of the head's contributions over the images.
        total_variance: ``[Hs]`` total variance of the centred data (trace of its
            covariance, normalised by ``K``).
        criterion: ``[Hs, n]`` the score that won each step: the variance over images of the
            residual data times the *unnormalised* residual text (PCA: the eigenvalue).
        span_rank: ``[Hs]`` number of singular directions kept for the text projection.
        reconstruction: ``[Hs, K, d]`` ``mean + projection`` of the fitted data, when asked.
        scale: the scale of the terms the basis was fitted on, when known: ``"raw"`` or the
            reference code's ``"paper"`` (:func:`helpers.methods.heads.stack_heads`); ``None``
            when not recorded. :func:`helpers.methods.heads.reconstruction_accuracy` records it
            and refuses a basis fitted on another scale.
    """

    indices: Tensor | None
    directions: Tensor
    variance: Tensor
    mean: Tensor
    total_variance: Tensor
    criterion: Tensor | None = None
    span_rank: Tensor | None = None
    reconstruction: Tensor | None = None
    scale: str | None = None

    _TENSORS = ("indices", "directions", "variance", "mean", "total_variance", "criterion", "span_rank",
                "reconstruction")

    @property
    def cumulative(self) -> Tensor:
        """``[Hs, n]`` fraction of the total variance captured by the first ``1..n`` steps."""
        return self.variance.cumsum(-1)

    @property
    def n(self) -> int:
        return self.directions.shape[-2]

    @property
    def batched(self) -> bool:
        return self.directions.ndim == 3

    def head(self, h: int) -> "TextSpanResult":
        """The result of head ``h`` alone (unbatched fields)."""
        if not self.batched:
            raise ValueError("this result holds a single head")
        kw = {name: (None if getattr(self, name) is None else getattr(self, name)[h]) for name in self._TENSORS}
        return TextSpanResult(**kw, scale=self.scale)

    def truncate(self, k: int) -> "TextSpanResult":
        """The first ``k`` steps (the greedy choice is the same as running with ``n = k``).

        The stored reconstruction, if any, is dropped (it belongs to all ``n`` steps).
        """
        if not 1 <= k <= self.n:
            raise ValueError(f"k must be in [1, {self.n}], got {k}")
        cut = lambda x, last: None if x is None else (x[..., :k, :] if last else x[..., :k])
        return replace(self, indices=cut(self.indices, False), directions=cut(self.directions, True),
                       variance=cut(self.variance, False), criterion=cut(self.criterion, False),
                       reconstruction=None)

    def project(self, C: Any) -> Tensor:
        """Coordinates ``(C - mean) U^T`` of data ``[Hs, K, d]`` (or ``[K, d]``) on the directions."""
        C = self._check_data(C)
        return (C - self.mean.unsqueeze(-2)) @ self.directions.mT

    def reconstruct(self, C: Any | None = None) -> Tensor:
        """``mean + (C - mean) U^T U``: ``C`` replaced by its projection on the chosen span.

        ``C`` may be held-out data of the same head(s) (``[Hs, K', d]``, or ``[K', d]`` for a
        single-head result); the stored training mean is used for centring. Without ``C`` the
        stored reconstruction of the fitted data is returned (``reconstruction=True``).
        """
        if C is None:
            if self.reconstruction is None:
                raise ValueError("no stored reconstruction: pass the data, or fit with "
                                 "reconstruction=True")
            return self.reconstruction
        coef = self.project(C)
        return self.mean.unsqueeze(-2) + coef @ self.directions

    def texts(self, pool: Sequence[str]) -> list[str] | list[list[str]]:
        """The chosen descriptions, looked up in ``pool`` (a list per head when batched)."""
        if self.indices is None:
            raise ValueError("this result has no text indices (PCA basis)")
        idx = self.indices.tolist()
        if self.batched:
            return [[pool[i] for i in row] for row in idx]
        return [pool[i] for i in idx]

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> "TextSpanResult":
        """A copy on ``device``; floating-point fields cast to ``dtype`` when given."""
        kw = {}
        for name in self._TENSORS:
            v = getattr(self, name)
            if v is not None:
                v = v.to(device=device, dtype=dtype if v.is_floating_point() else None)
            kw[name] = v
        return TextSpanResult(**kw, scale=self.scale)

    def _check_data(self, C: Any) -> Tensor:
        C = _as_tensor(C, "C")
        C = C.to(device=self.directions.device, dtype=self.directions.dtype)
        want = 3 if self.batched else 2
        if C.ndim != want:
            raise ValueError(f"data must have {want} axes ([Hs, K, d] for a batched result, "
                             f"[K, d] for one head), got shape {tuple(C.shape)}")
        if C.shape[-1] != self.directions.shape[-1]:
            raise ValueError(f"data dimension {C.shape[-1]} != {self.directions.shape[-1]}")
        if self.batched and C.shape[0] != self.directions.shape[0]:
            raise ValueError(f"data has {C.shape[0]} heads, the result {self.directions.shape[0]}")
        return C


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{name} must be an array or tensor ({e})") from None
    if t.is_complex():
        raise ValueError(f"{name} must be real, got {t.dtype}")
    return t


def _work_dtype(*ts: Tensor) -> torch.dtype:
    dt = torch.float32
    for t in ts:
        if t.dtype == torch.float64:
            dt = torch.float64
    return dt


def _check_finite(x: Tensor, name: str, row_axis: str) -> None:
    # Row sums carry any NaN or inf through (inf - inf is NaN) at a fraction of the cost of an
    # elementwise test; only rows they flag are examined element by element.
    flagged = ~torch.isfinite(x.sum(-1))
    if not bool(flagged.any()):
        return
    ok = torch.ones(flagged.shape, dtype=torch.bool, device=x.device)
    ok[flagged] = torch.isfinite(x[flagged]).all(-1)
    if not bool(ok.all()):
        bad = (~ok).nonzero()[0].tolist()
        where = ", ".join(f"{a}={b}" for a, b in zip(row_axis.split(",")[-len(bad):], bad))
        raise ValueError(f"{name} has NaN or inf values (first at {where})")


def _check_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    return int(v)


def _numerical_span(lam: Tensor, rtol: float, n: int) -> tuple[Tensor, Tensor]:
    """Which of each head's directions (eigenvalues ``lam`` ``[Hs, r]``, descending) stand above
    ``rtol`` squared times the largest, and how many: ``(keep [Hs, r], span_rank [Hs])``; an error
    when a head has fewer than ``n``."""
    lam_max = lam[..., :1]
    keep = (lam > (rtol * rtol) * lam_max) & (lam_max > 0)
    span_rank = keep.sum(-1)
    if int(span_rank.min()) < n:
        h = int(span_rank.argmin())
        raise ValueError(f"n = {n} exceeds the numerical rank of head {h}'s outputs "
                         f"({int(span_rank[h])} directions above rtol = {rtol:g})")
    return keep, span_rank


def _check_pool(R: Any, n: Any, rank: Any, K: int, d: int) -> tuple[Tensor, int, int, int, int]:
    """The text pool ``R`` ``[M, d]`` and the counts ``n`` and ``rank`` checked against heads of
    ``K`` images and width ``d``: ``(R, n, rank, M, r)`` with ``r = min(rank, K, d)`` the span used."""
    R = _as_tensor(R, "R")
    n = _check_int(n, "n")
    rank = _check_int(rank, "rank")
    if R.ndim != 2:
        raise ValueError(f"R must be [M, d], got shape {tuple(R.shape)}")
    M = R.shape[0]
    if M == 0:
        raise ValueError("the text pool is empty (M = 0)")
    if R.shape[1] != d:
        raise ValueError(f"text dimension {R.shape[1]} != head dimension {d}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > M:
        raise ValueError(f"n = {n} is larger than the text pool (M = {M})")
    r = min(rank, K, d)
    if n > r:
        raise ValueError(f"n = {n} is larger than the span used, min(rank, K, d) = "
                         f"min({rank}, {K}, {d}) = {r}")
    return R, n, rank, M, r


def _check_C(C: Any) -> tuple[Tensor, bool]:
    C = _as_tensor(C, "C")
    if C.ndim not in (2, 3):
        raise ValueError(f"C must be [K, d] or [Hs, K, d], got shape {tuple(C.shape)}")
    single = C.ndim == 2
    if single:
        C = C.unsqueeze(0)
    Hs, K, d = C.shape
    if Hs == 0:
        raise ValueError("C has no heads")
    if d == 0:
        raise ValueError("C has dimension d = 0")
    if K < 2:
        raise ValueError(f"need at least 2 images (K >= 2) to centre the data, got K = {K}")
    return C, single


def _gram64(C: Tensor, chunk_elems: int = 1 << 24) -> Tensor:
    """``C^T C`` per head in float64, accumulated over image chunks for float32 input.

    A float32 Gram matrix only resolves singular values down to about ``1e-3 sigma_max``,
    which would make weak but genuine directions of a head indistinguishable from its null
    space; float32 products are exact in float64, so this costs precision nothing.
    """
    if C.dtype == torch.float64:
        return C.mT @ C
    Hs, K, d = C.shape
    step = max(1, chunk_elems // max(1, Hs * d))
    G = torch.zeros(Hs, d, d, dtype=torch.float64, device=C.device)
    for k in range(0, K, step):
        x = C[:, k:k + step].to(torch.float64)
        G.baddbmm_(x.mT, x)
    return G


def _right_singular(C: Tensor, r: int, chunk_elems: int = 1 << 24) -> tuple[Tensor, Tensor]:
    """Singular values ``[Hs, r]`` and the top ``r`` right singular vectors ``[Hs, d, r]`` of
    each head's uncentred ``C`` (float64 SVD, a few heads at a time to bound the copy)."""
    Hs, K, d = C.shape
    step = max(1, chunk_elems // max(1, K * d))
    svals, vecs = [], []
    for h in range(0, Hs, step):
        _, sv, vh = torch.linalg.svd(C[h:h + step].to(torch.float64), full_matrices=False)
        svals.append(sv[..., :r])
        vecs.append(vh[..., :r, :].mT)
    return torch.cat(svals), torch.cat(vecs)


def _top_directions(C: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """The top ``r`` eigenpairs of ``C^T C`` per head, in float64: eigenvalues ``[Hs, r]``
    (descending) and eigenvectors ``[Hs, d, r]``.

    With at least as many images as dimensions (``K >= d``) they come from the ``d x d`` Gram
    matrix; with fewer, from the SVD of ``C`` itself, whose cost grows with ``K^2 d`` rather
    than ``d^3`` (a wide head seen on a handful of images: 48 heads of width 512 on 8 images
    take milliseconds instead of a minute on two CPU cores). Both give the same span.
    """
    Hs, K, d = C.shape
    if K >= d:
        lam, vec = torch.linalg.eigh(_gram64(C))  # ascending
        return lam[..., -r:].flip(-1), vec[..., -r:].flip(-1)
    _, sv, vh = torch.linalg.svd(C.to(torch.float64), full_matrices=False)  # descending
    return sv[..., :r].square(), vh[..., :r, :].mT


def _fraction(part: Tensor, total: Tensor) -> Tensor:
    tot = total.unsqueeze(-1)
    return torch.where(tot > 0, part / tot.clamp_min(torch.finfo(part.dtype).tiny), torch.zeros_like(part))


def _default_tols(dtype: torch.dtype, rtol: float | None, text_tol: float | None) -> tuple[float, float]:
    # Singular values from a float64 Gram matrix carry an absolute error of about
    # 1e-8 sigma_max, and the rounding of float32 data itself puts its numerical null space
    # near 1e-7 sigma_max; the default cut-offs leave a wide margin above both.
    if rtol is None:
        rtol = 1e-6 if dtype == torch.float64 else 1e-5
    if text_tol is None:
        text_tol = math.sqrt(torch.finfo(dtype).eps)
    if not (rtol >= 0 and text_tol >= 0):
        raise ValueError("rtol and text_tol must be non-negative")
    return float(rtol), float(text_tol)


# ----------------------------------------------------------------------------------------------
# TextSpan, batched over heads
# ----------------------------------------------------------------------------------------------


def _greedy(R: Tensor, V: Tensor, Sigma: Tensor, n: int, text_tol: float
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """TextSpan's greedy steps in span coordinates (step 3 of the module notes), shared by
    :func:`textspan` and :func:`textspan_from_moments`: texts ``R [M, d]``, span ``V [Hs, d, r]``
    and the centred covariance in span coordinates ``Sigma [Hs, r, r]``. Returns the chosen
    indices ``[Hs, n]``, directions in span coordinates ``[Hs, n, r]``, the variance along each
    and the winning criterion ``[Hs, n]``."""
    Hs, _, r = V.shape
    M = R.shape[0]
    dtype, dev = V.dtype, V.device
    T = torch.matmul(R, V)  # [Hs, M, r]: residual texts
    rnorm2 = (R * R).sum(-1)  # [M]
    thr = (text_tol * text_tol) * rnorm2
    var = ((T @ Sigma) * T).sum(-1)  # [Hs, M]
    admissible = torch.ones(Hs, M, dtype=torch.bool, device=dev)
    heads = torch.arange(Hs, device=dev)
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=dev)

    idx = torch.empty(Hs, n, dtype=torch.long, device=dev)
    W = torch.empty(Hs, n, r, dtype=dtype, device=dev)
    explained = torch.empty(Hs, n, dtype=dtype, device=dev)
    crit = torch.empty(Hs, n, dtype=dtype, device=dev)
    for step in range(n):
        if step and step % _REFRESH_EVERY == 0:
            var = ((T @ Sigma) * T).sum(-1)
        admissible &= torch.linalg.vector_norm(T, dim=-1).square() > thr
        score = torch.where(admissible, var, neg_inf)
        best, j = score.max(-1)
        if bool(torch.isinf(best).any()):
            h = int(torch.isinf(best).nonzero()[0, 0])
            raise ValueError(f"head {h}: no text with a non-negligible component in the span is "
                             f"left after {step} steps; the pool spans too few directions for "
                             f"n = {n}")
        t = T[heads, j]  # [Hs, r]
        w = t / t.norm(dim=-1, keepdim=True)
        s = (Sigma @ w.unsqueeze(-1)).squeeze(-1)  # [Hs, r]
        c = (w * s).sum(-1)  # variance along w
        ab = T @ torch.stack((w, s), -1)  # [Hs, M, 2]
        a, b = ab[..., 0], ab[..., 1]
        T.baddbmm_(a.unsqueeze(-1), w.unsqueeze(-2), alpha=-1)
        var = var - 2 * a * b + a * a * c.unsqueeze(-1)
        admissible[heads, j] = False
        idx[:, step] = j
        W[:, step] = w
        explained[:, step] = c
        crit[:, step] = best

    return idx, W, explained, crit


def textspan(C: Any, R: Any, n: int, rank: int = 80, *, reconstruction: bool = False,
             rtol: float | None = None, text_tol: float | None = None,
             span: str = "numerical") -> TextSpanResult:
    """Greedy text basis of one head ``C [K, d]`` or of several heads ``C [Hs, K, d]``.

    Args:
        C: direct contributions of the head(s) for ``K`` images (torch or NumPy; float32 or
            float64; the computation follows ``C``'s device). All heads are processed together.
        R: ``[M, d]`` text embeddings (L2-normalised in the paper), shared by all heads.
        n: number of texts to choose per head (``1 <= n <= min(M, rank, K, d)``).
        rank: number of singular directions of the uncentred ``C`` the texts are projected
            on (capped at ``min(K, d)``; with ``span="numerical"`` numerically null ones are
            dropped, see ``rtol``).
        reconstruction: also store ``mean + projection`` of ``C`` (``[Hs, K, d]``).
        rtol: singular directions with ``sigma <= rtol * sigma_max`` are treated as null
            (default ``1e-6`` for float64 data, ``1e-5`` for float32; the Gram matrix and
            its eigendecomposition are always computed in float64).
        text_tol: a text whose residual norm is ``<= text_tol * |R_j|`` is never chosen
            (default ``sqrt(eps)`` of the working dtype).
        span: which singular directions the texts are projected on.
            ``"numerical"`` (default): the top ``rank`` directions whose singular value is
            above ``rtol * sigma_max`` (the numerical rank of the head's outputs).
            ``"paper"``: the top ``rank`` right singular vectors of the uncentred ``C`` as the
            paper's reference code keeps them, numerically null ones included: a head of width
            64 read in a joint space of 768 dimensions has about 65 real directions, so
            ``rank = 80`` lets about 15 directions of its null space into the text
            projection. They are taken from a float64 SVD of ``C`` as given: where the data
            fix them (a noise floor well above rounding) the picks equal the reference's;
            where only rounding does, no implementation (the reference included, in float32)
            picks them reproducibly, and only the phenomenon carries over (the first pick is
            unchanged, later ones differ). With ``rank`` equal to the numerical rank both
            variants pick the same texts. See :func:`span_comparison`.

    Returns:
        :class:`TextSpanResult` (fields without the head axis when ``C`` is ``[K, d]``).

    Raises:
        ValueError: empty pool, non-finite values, mismatched dimensions, ``K < 2``, ``n``
            out of range, or no admissible text left at some step.

    ``C`` may also be a :class:`HeadMoments`, or an object whose ``moments()`` returns one
    (a stack of head terms streamed from disk, :class:`helpers.methods.streamed.StreamedStack`):
    then :func:`textspan_from_moments` fits the basis (no reconstruction: there are no images
    in memory).
    """
    moments = _moments_of(C)
    if moments is not None:
        if reconstruction:
            raise ValueError("reconstruction=True needs the images' terms; moments hold none (use "
                             "TextSpanResult.reconstruct on the terms, chunk by chunk)")
        return textspan_from_moments(moments, R, n, rank, rtol=rtol, text_tol=text_tol, span=span)
    C, single = _check_C(C)
    Hs, K, d = C.shape
    R, n, rank, M, r = _check_pool(R, n, rank, K, d)
    dtype = _work_dtype(C, R)
    dev = C.device
    C = C.to(dtype)
    R = R.to(device=dev, dtype=dtype)
    _check_finite(C, "C", "head,image")
    _check_finite(R, "R", "text")
    rtol, text_tol = _default_tols(dtype, rtol, text_tol)
    if span not in SPANS:
        raise ValueError(f"span must be one of {', '.join(map(repr, SPANS))}, got {span!r}")

    if span == "paper":
        # 1. the top r right singular vectors of the uncentred outputs, null ones included
        V = _right_singular(C, r)[1].to(dtype)  # [Hs, d, r]
        span_rank = torch.full((Hs,), r, dtype=torch.long, device=dev)
    else:
        # 1. span of the head's (uncentred) outputs: top eigenvectors of the Gram matrix (or the
        #    SVD of the data when there are fewer images than dimensions)
        lam, V = _top_directions(C, r)  # float64, [Hs, r] descending and [Hs, d, r]
        keep, span_rank = _numerical_span(lam, rtol, n)
        V = (V * keep.unsqueeze(-2)).to(dtype)

    # 2. centred data in span coordinates, and its total variance
    mean = C.mean(-2)  # [Hs, d]
    total = C.var(dim=-2, correction=0).sum(-1)  # [Hs]
    P = C @ V  # [Hs, K, r]
    P = P - P.mean(-2, keepdim=True)
    Sigma = P.mT @ P / K  # [Hs, r, r]
    del P

    # 3. greedy choice in span coordinates
    idx, W, explained, crit = _greedy(R, V, Sigma, n, text_tol)

    directions = W @ V.mT  # [Hs, n, d]
    frac = _fraction(explained, total)
    rec = None
    if reconstruction:
        rec = mean.unsqueeze(-2) + ((C - mean.unsqueeze(-2)) @ directions.mT) @ directions
    res = TextSpanResult(indices=idx, directions=directions, variance=frac, mean=mean,
                         total_variance=total, criterion=crit, span_rank=span_rank,
                         reconstruction=rec)
    return res.head(0) if single else res


# ----------------------------------------------------------------------------------------------
# TextSpan and PCA from per-head moments (a dataset read chunk by chunk)
# ----------------------------------------------------------------------------------------------


@dataclass
class HeadMoments:
    """All that TextSpan and PCA read of the heads' outputs, whatever the number of images.

    After step 1 TextSpan only uses each head's mean and centred covariance (the variance of
    ``C r_j`` over the images is ``r_j^T Sigma r_j``; deflating by a unit ``u`` maps ``Sigma`` to
    ``(I - u u^T) Sigma (I - u u^T)``), and step 1's span is the top eigenvectors of the
    uncentred second moment ``C^T C / n = Sigma + mu mu^T`` (the right singular vectors of
    ``C``). So ``n``, ``mean`` and ``cov`` (``d x d`` per head) replace the ``n x d`` data: a
    dataset of any size streams through :class:`MomentSums` chunk by chunk.

    Attributes:
        n: the number of images.
        mean: ``[Hs, d]`` each head's mean output (float64).
        cov: ``[Hs, d, d]`` each head's centred covariance, normalised by ``n`` (float64).
        data_dtype: the dtype of the terms the moments were taken of; it sets the default
            tolerances as :func:`textspan` sets them from its data's dtype.
    """

    n: int
    mean: Tensor
    cov: Tensor
    data_dtype: torch.dtype = torch.float64
    _eig: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mean.ndim != 2 or self.cov.shape != (*self.mean.shape, self.mean.shape[-1]):
            raise ValueError(f"mean must be [Hs, d] and cov [Hs, d, d], got {tuple(self.mean.shape)} and "
                             f"{tuple(self.cov.shape)}")
        if int(self.n) < 2:
            raise ValueError(f"need at least 2 images (n >= 2) to centre the data, got n = {self.n}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Hs, n, d)``: the shape of the stack the moments stand for."""
        Hs, d = self.mean.shape
        return Hs, int(self.n), d

    def second_moment(self) -> Tensor:
        """``[Hs, d, d]`` the uncentred second moment ``C^T C / n``."""
        return self.cov + self.mean.unsqueeze(-1) * self.mean.unsqueeze(-2)

    def eig(self, which: str) -> tuple[Tensor, Tensor]:
        """Eigenvalues (ascending) and eigenvectors of the ``"second"`` moment or of the
        ``"cov"``ariance, in float64, computed once: every basis fitted on these moments (both
        spans, several pools, PCA) shares them."""
        if which not in self._eig:
            m = self.second_moment() if which == "second" else self.cov
            self._eig[which] = torch.linalg.eigh(m.to(torch.float64))
        return self._eig[which]

    @classmethod
    def of(cls, C: Any) -> "HeadMoments":
        """The moments of data in memory, ``[Hs, K, d]`` (or one head ``[K, d]``)."""
        C, _ = _check_C(C)
        sums = MomentSums()
        sums.add(C)
        return sums.result()


class MomentSums:
    """Running per-head sums over chunks of images, for :class:`HeadMoments`.

    ``add(x)`` takes a chunk ``[Hs, k, d]`` (any float dtype; accumulated in float64 on its
    device), ``result()`` gives the moments of every image added so far. The sums are taken
    about a shift (each head's mean over the first chunk), so that the centred covariance does
    not lose digits when a head's mean is large against its spread.
    """

    def __init__(self) -> None:
        self.n = 0
        self._shift: Tensor | None = None
        self._a: Tensor | None = None
        self._b: Tensor | None = None
        self._dtype: torch.dtype | None = None

    def add(self, x: Any) -> None:
        x = _as_tensor(x, "x")
        if x.ndim != 3 or x.shape[1] == 0:
            raise ValueError(f"a chunk must be [Hs, k, d] with k >= 1, got shape {tuple(x.shape)}")
        _check_finite(x, "x", "head,image")
        y = x.to(torch.float64)
        if self._shift is None:
            self._shift = y.mean(1)
            Hs, _, d = y.shape
            self._a = torch.zeros(Hs, d, d, dtype=torch.float64, device=y.device)
            self._b = torch.zeros(Hs, d, dtype=torch.float64, device=y.device)
            self._dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        elif y.shape[0] != self._shift.shape[0] or y.shape[2] != self._shift.shape[1]:
            raise ValueError(f"chunk of shape {tuple(y.shape)} does not continue "
                             f"[{self._shift.shape[0]}, k, {self._shift.shape[1]}]")
        assert self._a is not None and self._b is not None
        y = y - self._shift.unsqueeze(1)
        self._a.baddbmm_(y.mT, y)
        self._b += y.sum(1)
        self.n += y.shape[1]

    def result(self) -> HeadMoments:
        if self._shift is None or self._a is None or self._b is None:
            raise ValueError("no images were added")
        m = self._b / self.n
        cov = self._a / self.n - m.unsqueeze(-1) * m.unsqueeze(-2)
        return HeadMoments(self.n, self._shift + m, cov, data_dtype=self._dtype or torch.float64)


def _moments_of(C: Any) -> HeadMoments | None:
    """``C`` as :class:`HeadMoments` when it is some (or has ``moments()``), else ``None``."""
    if isinstance(C, HeadMoments):
        return C
    if isinstance(C, (Tensor, np.ndarray)):
        return None
    get = getattr(C, "moments", None)
    if callable(get):
        m = get()
        if isinstance(m, HeadMoments):
            return m
    return None


def textspan_from_moments(moments: HeadMoments, R: Any, n: int, rank: int = 80, *, rtol: float | None = None,
                          text_tol: float | None = None, span: str = "numerical") -> TextSpanResult:
    """:func:`textspan` of heads known by their :class:`HeadMoments` (float64 throughout).

    The same steps on the same quantities: the span from the eigenvectors of the uncentred
    second moment (the right singular vectors of ``C``), the covariance in span coordinates
    ``V^T Sigma V`` and the same greedy steps; on the same data in float64 the picks are
    :func:`textspan`'s and the directions, variances and means agree to rounding. One caveat,
    ``span="paper"`` with more directions than the head's numerical rank: the extra, numerically
    null directions are whatever the eigensolver returns for a null space, as they are whatever
    the SVD returns in :func:`textspan`; picks after the first can differ between the two (see
    :func:`span_comparison`). Always batched: fields ``[Hs, ...]``.
    """
    if not isinstance(moments, HeadMoments):
        raise TypeError(f"moments must be HeadMoments, got {type(moments).__name__}")
    Hs, K, d = moments.shape
    R, n, rank, M, r = _check_pool(R, n, rank, K, d)
    if span not in SPANS:
        raise ValueError(f"span must be one of {', '.join(map(repr, SPANS))}, got {span!r}")
    dtype = torch.float64
    mean, cov = moments.mean.to(dtype), moments.cov.to(dtype)
    dev = mean.device
    R = R.to(device=dev, dtype=dtype)
    _check_finite(R, "R", "text")
    rtol, text_tol = _default_tols(moments.data_dtype, rtol, text_tol)

    # 1. the span: top eigenvectors of the uncentred second moment
    lam, vec = moments.eig("second")  # ascending
    lam, V = lam[..., -r:].flip(-1), vec[..., -r:].flip(-1)
    if span == "paper":
        span_rank = torch.full((Hs,), r, dtype=torch.long, device=dev)
    else:
        keep, span_rank = _numerical_span(lam, rtol, n)
        V = V * keep.unsqueeze(-2)

    # 2. the centred covariance in span coordinates, and the total variance
    Sigma = V.mT @ cov @ V
    total = cov.diagonal(dim1=-2, dim2=-1).sum(-1)

    # 3. the same greedy steps
    idx, W, explained, crit = _greedy(R, V, Sigma, n, text_tol)
    return TextSpanResult(indices=idx, directions=W @ V.mT, variance=_fraction(explained, total), mean=mean,
                          total_variance=total, criterion=crit, span_rank=span_rank)


def pca_from_moments(moments: HeadMoments, n: int) -> TextSpanResult:
    """:func:`pca_basis` of heads known by their :class:`HeadMoments`: the top ``n``
    eigenvectors of each head's centred covariance (float64; batched)."""
    if not isinstance(moments, HeadMoments):
        raise TypeError(f"moments must be HeadMoments, got {type(moments).__name__}")
    n = _check_int(n, "n")
    _, K, d = moments.shape
    if not 1 <= n <= min(K, d):
        raise ValueError(f"n = {n} must be in [1, min(K, d)] = [1, {min(K, d)}]")
    cov = moments.cov.to(torch.float64)
    lam, vec = moments.eig("cov")
    lam = lam[..., -n:].flip(-1).clamp_min(0)
    U = vec[..., -n:].flip(-1).mT  # [Hs, n, d]
    total = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    return TextSpanResult(indices=None, directions=U, variance=_fraction(lam, total),
                          mean=moments.mean.to(torch.float64), total_variance=total, criterion=lam, span_rank=None)


# ----------------------------------------------------------------------------------------------
# The two spans side by side, for one head
# ----------------------------------------------------------------------------------------------


@dataclass
class SpanComparison:
    """Where TextSpan's picks under ``span="paper"`` and ``span="numerical"`` part, and why.

    Attributes:
        paper, numerical: the ``n`` texts each variant picks (pool indices, in order).
        parted_at: the first step (0-based) at which the lists differ; ``None`` if they agree.
        overlap: the share of the ``n`` texts the two lists have in common (any order).
        rank: directions the paper's span keeps (``min(rank, K, d)``).
        numerical_rank: directions above ``rtol * sigma_max`` (the numerical span).
        singular_values: ``[rank]`` singular values of the uncentred outputs, descending; the
            ones from ``numerical_rank`` on are numerically null.
        text_null_share: for each of the paper's picks, the share of the text's projection
            ``|R_j V_r|^2`` that lies in the null directions ``|R_j V_null|^2``.
        direction_null_share: for each step of the paper's variant, the squared norm of the
            chosen (unit) direction's part in the null directions: what the step removes from
            every other text beyond the head's real span.
        numerical_text_null_share: the same share as ``text_null_share`` for the numerical
            variant's picks (they are ranked without it).
    """

    paper: list[int]
    numerical: list[int]
    parted_at: int | None
    overlap: float
    rank: int
    numerical_rank: int
    singular_values: Tensor
    text_null_share: list[float]
    direction_null_share: list[float]
    numerical_text_null_share: list[float]


def span_comparison(C: Any, R: Any, n: int = 10, rank: int = 80, *, rtol: float | None = None,
                    text_tol: float | None = None) -> SpanComparison:
    """TextSpan of one head ``C [K, d]`` on texts ``R [M, d]`` with both spans, compared.

    Runs :func:`textspan` with ``span="paper"`` and ``span="numerical"`` (same ``rtol`` and
    ``text_tol``) and reports where the two pick lists part and how much of each text's
    projection comes from numerically null directions. With a head narrower than ``rank``
    (64 < 80 for ViT-B-16 and L-14, 32 < 80 for the offline model) those directions enter the
    paper's projection; a text with a large part there has its variance unchanged (the data
    has none along them) but, once chosen, its direction removes them from the other texts,
    which changes later picks.
    """
    C = _as_tensor(C, "C")
    if C.ndim != 2:
        raise ValueError(f"span_comparison takes one head C [K, d], got shape {tuple(C.shape)}")
    paper = textspan(C, R, n, rank, rtol=rtol, text_tol=text_tol, span="paper")
    num = textspan(C, R, n, rank, rtol=rtol, text_tol=text_tol, span="numerical")
    Rt = _as_tensor(R, "R").to(device=C.device, dtype=torch.float64)
    r = int(paper.span_rank)
    k = int(num.span_rank)
    sv, V = _right_singular(C.unsqueeze(0), r)
    sv, V = sv[0], V[0]  # [r], [d, r]
    null = V[:, k:]
    coords = Rt @ V  # [M, r]
    total = coords.square().sum(-1)
    in_null = coords[:, k:].square().sum(-1)
    share = torch.where(total > 0, in_null / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))
    a, b = paper.indices.tolist(), num.indices.tolist()
    parted = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    dirs = paper.directions.to(torch.float64)
    return SpanComparison(
        paper=a, numerical=b, parted_at=parted, overlap=len(set(a) & set(b)) / n, rank=r,
        numerical_rank=k, singular_values=sv.cpu(), text_null_share=share[a].tolist(),
        direction_null_share=(dirs @ null).square().sum(-1).tolist(),
        numerical_text_null_share=share[b].tolist())


# ----------------------------------------------------------------------------------------------
# Plain one-head reference (NumPy)
# ----------------------------------------------------------------------------------------------


def textspan_reference(C: Any, R: Any, n: int, rank: int = 80, *, rtol: float | None = None,
                       text_tol: float | None = None) -> TextSpanResult:
    """Straightforward TextSpan for one head ``C [K, d]`` in NumPy (same rules as :func:`textspan`).

    SVD of ``C``, explicit projection of the texts, and at each step the full ``K x M``
    matrix ``C R'^T`` whose column variances pick the text. Slow; meant for checking.
    Always returns the reconstruction.
    """
    C = np.asarray(C.detach().cpu() if isinstance(C, Tensor) else C)
    R = np.asarray(R.detach().cpu() if isinstance(R, Tensor) else R)
    if C.ndim != 2:
        raise ValueError(f"C must be [K, d], got shape {C.shape}")
    _check_C(C)  # the inputs follow textspan's rules; what follows computes independently of it
    K, d = C.shape
    _, n, rank, M, r = _check_pool(R, n, rank, K, d)
    dt = np.float64 if np.float64 in (C.dtype, R.dtype) else np.float32
    C = C.astype(dt)
    R = R.astype(dt)
    if not (np.isfinite(C).all() and np.isfinite(R).all()):
        raise ValueError("C or R has NaN or inf values")
    rtol, text_tol = _default_tols(torch.float64 if dt == np.float64 else torch.float32, rtol, text_tol)

    _, sv, vh = np.linalg.svd(C, full_matrices=False)
    sv, vh = sv[:r], vh[:r]
    keep = sv > rtol * sv[0]
    if keep.sum() < n:
        raise ValueError(f"n = {n} exceeds the numerical rank of the head's outputs ({keep.sum()})")
    Vr = vh[keep]  # [r_eff, d]
    Rp = R @ Vr.T @ Vr  # texts projected on the head's span

    mean = C.mean(0)
    X = C - mean
    total = (X * X).sum() / K
    recon = np.tile(mean, (K, 1))
    chosen = np.zeros(M, dtype=bool)
    rnorm = np.linalg.norm(R, axis=1)
    idx, dirs, expl, crit = [], [], [], []
    for step in range(n):
        proj = X @ Rp.T  # [K, M]
        var = proj.var(axis=0)
        norms = np.linalg.norm(Rp, axis=1)
        ok = ~chosen & (norms > text_tol * rnorm)
        if not ok.any():
            raise ValueError(f"no text with a non-negligible component left after {step} steps")
        var = np.where(ok, var, -np.inf)
        j = int(np.argmax(var))
        u = Rp[j] / norms[j]
        coef = X @ u
        recon += np.outer(coef, u)
        X -= np.outer(coef, u)
        Rp -= np.outer(Rp @ u, u)
        chosen[j] = True
        idx.append(j)
        dirs.append(u)
        expl.append(coef.var())
        crit.append(var[j])
    expl = np.array(expl, dtype=dt)
    frac = expl / total if total > 0 else np.zeros_like(expl)
    f = torch.from_numpy
    return TextSpanResult(indices=torch.tensor(idx, dtype=torch.long), directions=f(np.stack(dirs)),
                          variance=f(frac), mean=f(mean), total_variance=torch.tensor(total),
                          criterion=f(np.array(crit, dtype=dt)),
                          span_rank=torch.tensor(int(keep.sum())), reconstruction=f(recon))


# ----------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------


def pca_basis(C: Any, n: int, *, reconstruction: bool = False) -> TextSpanResult:
    """Top-``n`` principal directions of the centred ``C`` (``[K, d]`` or ``[Hs, K, d]``).

    Same result type as :func:`textspan` (``indices`` is ``None``; ``criterion`` holds the
    eigenvalues). No ``n``-dimensional subspace captures more variance, so PCA's cumulative
    variance bounds TextSpan's from above. ``C`` may also be :class:`HeadMoments` (or have
    ``moments()``): then :func:`pca_from_moments`.
    """
    moments = _moments_of(C)
    if moments is not None:
        if reconstruction:
            raise ValueError("reconstruction=True needs the images' terms; moments hold none")
        return pca_from_moments(moments, n)
    C, single = _check_C(C)
    n = _check_int(n, "n")
    Hs, K, d = C.shape
    if not 1 <= n <= min(K, d):
        raise ValueError(f"n = {n} must be in [1, min(K, d)] = [1, {min(K, d)}]")
    dtype = _work_dtype(C)
    C = C.to(dtype)
    _check_finite(C, "C", "head,image")
    mean = C.mean(-2)
    X = C - mean.unsqueeze(-2)
    if K >= d:
        lam, vec = torch.linalg.eigh(X.mT @ X / K)
        lam = lam[..., -n:].flip(-1).clamp_min(0)
        U = vec[..., -n:].flip(-1).mT  # [Hs, n, d]
    else:  # fewer images than dimensions: the same axes from the K x d data (see _top_directions)
        _, sv, vh = torch.linalg.svd(X, full_matrices=False)
        lam, U = sv[..., :n].square() / K, vh[..., :n, :]
    total = C.var(dim=-2, correction=0).sum(-1)
    frac = _fraction(lam, total)
    rec = mean.unsqueeze(-2) + (X @ U.mT) @ U if reconstruction else None
    res = TextSpanResult(indices=None, directions=U, variance=frac, mean=mean, total_variance=total,
                         criterion=lam, span_rank=None, reconstruction=rec)
    return res.head(0) if single else res


def random_texts(M: int, d: int, seed: int = 0, *, device: Any = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """``[M, d]`` random unit vectors (isotropic), reproducible from ``seed``."""
    M = _check_int(M, "M")
    d = _check_int(d, "d")
    if M < 1 or d < 1:
        raise ValueError(f"need M >= 1 and d >= 1, got M = {M}, d = {d}")
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn(M, d, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    return x.to(device=device, dtype=dtype)


def random_baseline(C: Any, n: int, n_texts: int, rank: int = 80, seed: int = 0,
                    **kwargs: Any) -> TextSpanResult:
    """TextSpan on a pool of ``n_texts`` random unit vectors (the paper's random baseline).

    Use the size of the real pool for ``n_texts`` so that both pick from as many candidates;
    ``kwargs`` go to :func:`textspan` (e.g. ``reconstruction=True``).
    """
    moments = _moments_of(C)
    if moments is not None:
        R = random_texts(n_texts, moments.mean.shape[-1], seed, device=moments.mean.device,
                         dtype=torch.float64 if moments.data_dtype == torch.float64 else torch.float32)
        return textspan(moments, R, n, rank, **kwargs)
    C_t = _as_tensor(C, "C")
    dtype = torch.float64 if C_t.dtype == torch.float64 else torch.float32
    R = random_texts(n_texts, C_t.shape[-1], seed, device=C_t.device, dtype=dtype)
    return textspan(C_t, R, n, rank, **kwargs)
