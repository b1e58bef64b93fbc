"""TextSpan: recovery of planted texts, agreement with the plain reference, and its invariants."""

import numpy as np
import pytest
import torch

from helpers.methods.textspan import (
    TextSpanResult,
    pca_basis,
    random_baseline,
    random_texts,
    textspan,
    textspan_reference,
)

F64 = torch.float64


def _heads(Hs, K, d, head_rank, seed=0, offset=0.3, decay=1.0):
    """Head-like data: rank ``head_rank`` outputs with a decaying spectrum plus a mean offset."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(Hs, d, head_rank, generator=g, dtype=F64))[0]
    scale = torch.logspace(0, -decay, head_rank, dtype=F64)
    Z = torch.randn(Hs, K, head_rank, generator=g, dtype=F64) * scale
    return Z @ Q.mT + offset * torch.randn(Hs, 1, d, generator=g, dtype=F64)


def _planted(seed=0, K=2000, d=48, M=300, noise=0.01):
    g = torch.Generator().manual_seed(seed)
    R = random_texts(M, d, seed=seed + 1, dtype=F64)
    true = torch.randperm(M, generator=g)[:5]
    var = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=F64)
    Z = torch.randn(K, 5, generator=g, dtype=F64) * var.sqrt()
    C = Z @ R[true] + noise * torch.randn(K, d, generator=g, dtype=F64) + 0.5 * R[0]
    return C, R, true


# ---------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_planted_texts_in_order(seed):
    C, R, true = _planted(seed)
    res = textspan(C, R, 5)
    assert res.indices.tolist() == true.tolist()
    assert res.cumulative[-1] > 0.99
    # float32 and NumPy input give the same choice
    assert textspan(C.float().numpy(), R.float().numpy(), 5).indices.tolist() == true.tolist()


@pytest.mark.parametrize("head_rank", [40, 12])  # 12 < rank: numerically null directions dropped
def test_batched_equals_loop_equals_reference(head_rank):
    C = _heads(4, 300, 40, head_rank, seed=head_rank)
    R = random_texts(250, 40, seed=3, dtype=F64)
    n = 10  # more than the refresh interval of the incremental variances
    res = textspan(C, R, n, rank=30, reconstruction=True)
    assert res.indices.shape == (4, n) and res.directions.shape == (4, n, 40)
    assert res.span_rank.tolist() == [min(30, head_rank + 1)] * 4  # +1: the mean offset
    for h in range(4):
        one = textspan(C[h], R, n, rank=30, reconstruction=True)
        ref = textspan_reference(C[h].numpy(), R.numpy(), n, rank=30)
        assert res.indices[h].tolist() == one.indices.tolist() == ref.indices.tolist()
        torch.testing.assert_close(res.variance[h], ref.variance, rtol=0, atol=1e-10)
        torch.testing.assert_close(res.criterion[h], ref.criterion, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(res.reconstruction[h], ref.reconstruction, rtol=0, atol=1e-9)
        # directions agree up to sign
        dots = (res.directions[h] * ref.directions).sum(-1).abs()
        torch.testing.assert_close(dots, torch.ones(n, dtype=F64), rtol=0, atol=1e-9)
    # chosen directions lie in the head's output span
    proj = res.directions @ torch.linalg.pinv(C) @ C
    torch.testing.assert_close(proj, res.directions, rtol=0, atol=1e-8)


def test_float32_keeps_weak_directions():
    # a large mean and a spectrum falling to 1e-3: a float32 Gram matrix would lose the weak
    # directions in its rounding; the float64 span computation keeps them
    C = _heads(2, 400, 48, 20, seed=19, offset=3.0, decay=3.0)
    R = random_texts(200, 48, seed=20, dtype=F64)
    r64 = textspan(C, R, 15)
    r32 = textspan(C.float(), R.float(), 15)
    assert r64.span_rank.tolist() == r32.span_rank.tolist() == [21, 21]
    assert torch.equal(r32.indices, r64.indices)
    torch.testing.assert_close(r32.cumulative, r64.cumulative.float(), rtol=0, atol=1e-5)


def test_invariants_and_pca_bound():
    C = _heads(3, 200, 24, 24, seed=5, decay=1.5)
    R = random_texts(150, 24, seed=6, dtype=F64)
    n = 12
    res = textspan(C, R, n)
    eye = torch.eye(n, dtype=F64)
    torch.testing.assert_close(res.directions @ res.directions.mT, eye.expand(3, n, n), rtol=0, atol=1e-10)
    assert (res.variance >= -1e-12).all()
    assert (res.cumulative.diff(dim=-1) >= -1e-12).all()
    # each step's fraction is the variance along its direction over the total
    X = C - C.mean(1, keepdim=True)
    total = (X**2).sum((1, 2)) / C.shape[1]
    along = ((X @ res.directions.mT) ** 2).mean(1) / total.unsqueeze(-1)
    torch.testing.assert_close(res.variance, along, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.total_variance, total)
    # prefixes: n = k gives the first k choices, and the error never increases with k
    errs = []
    for k in range(1, n + 1):
        part = res.truncate(k)
        assert textspan(C, R, k).indices.tolist() == part.indices.tolist()
        errs.append(((part.reconstruct(C) - C) ** 2).sum((1, 2)))
        torch.testing.assert_close(errs[-1] / (X**2).sum((1, 2)), 1 - res.cumulative[:, k - 1],
                                   rtol=0, atol=1e-10)
    errs = torch.stack(errs, -1)
    assert (errs.diff(dim=-1) <= 1e-9).all()
    # PCA is an upper bound at every n
    pca = pca_basis(C, n)
    assert pca.indices is None
    assert (pca.cumulative >= res.cumulative - 1e-10).all()
    torch.testing.assert_close(pca.directions @ pca.directions.mT, eye.expand(3, n, n), rtol=0, atol=1e-10)


def test_full_rank_reconstruction_is_exact():
    C = _heads(2, 60, 8, 8, seed=7)  # K > d: the centred data has rank d = 8
    R = random_texts(40, 8, seed=8, dtype=F64)
    res = textspan(C, R, 8, reconstruction=True)
    torch.testing.assert_close(res.reconstruction, C, rtol=0, atol=1e-8)
    torch.testing.assert_close(res.reconstruct(C), C, rtol=0, atol=1e-8)
    torch.testing.assert_close(res.cumulative[:, -1], torch.ones(2, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(pca_basis(C, 8, reconstruction=True).reconstruction, C, rtol=0, atol=1e-8)


def test_held_out_reconstruction_uses_stored_mean():
    C = _heads(2, 120, 16, 6, seed=9)
    R = random_texts(80, 16, seed=10, dtype=F64)
    res = textspan(C[:, :100], R, 4)
    new = C[:, 100:]
    U, mu = res.directions, res.mean.unsqueeze(1)
    torch.testing.assert_close(res.reconstruct(new), mu + (new - mu) @ U.mT @ U)
    one = res.head(1)
    torch.testing.assert_close(one.reconstruct(new[1]), res.reconstruct(new)[1])
    pool = [f"text {i}" for i in range(80)]
    assert one.texts(pool) == [f"text {i}" for i in res.indices[1].tolist()]
    assert len(res.texts(pool)) == 2
    with pytest.raises(ValueError):
        res.reconstruct()
    with pytest.raises(ValueError):
        res.reconstruct(new[0])  # a batched result needs every head


def test_chosen_text_is_never_picked_again():
    # duplicate texts: once one copy is chosen the other has no component left
    C = _heads(1, 200, 12, 12, seed=11)[0]
    R = random_texts(30, 12, seed=12, dtype=F64)
    R = torch.cat([R, R])
    res = textspan(C, R, 12)
    picked = set(res.indices.tolist())
    assert len(picked) == 12
    assert not any((i + 30) in picked for i in picked if i < 30)
    # a pool spanning fewer directions than n runs out of admissible texts
    flat = torch.zeros(20, 12, dtype=F64)
    flat[:10, 0] = 1
    flat[10:, 1] = 1
    with pytest.raises(ValueError, match="no text"):
        textspan(C, flat, 3)


def test_random_baseline():
    C = _heads(2, 100, 16, 16, seed=13).float()
    a = random_baseline(C, 5, n_texts=64, seed=1)
    b = textspan(C, random_texts(64, 16, seed=1), 5)
    assert isinstance(a, TextSpanResult) and a.directions.dtype == torch.float32
    assert torch.equal(a.indices, b.indices)
    R = random_texts(10, 7, seed=2)
    torch.testing.assert_close(R.norm(dim=-1), torch.ones(10))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_inputs():
    C = _heads(1, 50, 10, 10, seed=14)[0]
    R = random_texts(20, 10, seed=15, dtype=F64)
    with pytest.raises(ValueError, match="empty"):
        textspan(C, R[:0], 3)
    bad = C.clone()
    bad[7, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf.*image=7"):
        textspan(bad, R, 3)
    badR = R.clone()
    badR[4, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf.*text=4"):
        textspan(C, badR, 3)
    with pytest.raises(ValueError, match="larger than the text pool"):
        textspan(C, R[:3], 4)
    with pytest.raises(ValueError, match="larger than the span"):
        textspan(C, R, 11)  # d = 10
    with pytest.raises(ValueError, match="larger than the span"):
        textspan(C, R, 6, rank=5)
    with pytest.raises(ValueError, match="numerical rank"):
        textspan(_heads(1, 50, 10, 2, seed=16, offset=0.0)[0], R, 3)
    with pytest.raises(ValueError, match="dimension"):
        textspan(C, R[:, :9], 3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        textspan(C, R, 0)
    with pytest.raises(ValueError, match="K >= 2"):
        textspan(C[:1], R, 1)
    with pytest.raises(ValueError, match="integer"):
        textspan(C, R, 2.0)
    with pytest.raises(ValueError, match=r"\[K, d\] or \[Hs, K, d\]"):
        textspan(C[0], R, 1)
    with pytest.raises(ValueError):
        pca_basis(C, 11)
    with pytest.raises(ValueError):
        textspan_reference(C.numpy(), R[:0].numpy(), 3)
    with pytest.raises(ValueError):
        textspan_reference(C.numpy(), R.numpy(), 11)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    C = _heads(3, 400, 64, 32, seed=17)
    R = random_texts(500, 64, seed=18, dtype=F64)
    cpu = textspan(C, R, 10, reconstruction=True)
    gpu = textspan(C.cuda(), R, 10, reconstruction=True)  # R follows C's device
    assert gpu.directions.is_cuda and gpu.indices.is_cuda
    assert torch.equal(gpu.indices.cpu(), cpu.indices)
    torch.testing.assert_close(gpu.reconstruction.cpu(), cpu.reconstruction)
    g32 = textspan(C.float().cuda(), R.float().cuda(), 10)
    assert torch.equal(g32.indices.cpu(), cpu.indices)


# ---------------------------------------------------------------------------------------------
# The reference code's span (span="paper")
# ---------------------------------------------------------------------------------------------


def _narrow_head(seed, K=300, d=128, width=64, floor=1e-9):
    """A head of width 64 read in a 128-dimensional joint space: rank-64 outputs with a
    decaying spectrum, a mean offset (65 real directions) and a tiny isotropic noise floor
    that fixes the numerically null directions (far below rtol, far above rounding)."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(d, width, generator=g, dtype=F64))[0]
    Z = torch.randn(K, width, generator=g, dtype=F64) * torch.logspace(0, -1.5, width, dtype=F64)
    C = Z @ Q.T + 0.3 * torch.randn(1, d, generator=g, dtype=F64)
    return C + floor * torch.randn(K, d, generator=g, dtype=F64)


def _reference_picks(C, R, n, rank):
    """The reference's TextSpan, written from its description: project the texts on the top
    ``rank`` right singular vectors of the uncentred data, centre the data, then ``n`` times
    pick the text whose projection varies most over images and remove its direction from the
    data and from every text (no renormalisation)."""
    C, R = np.asarray(C, dtype=np.float64), np.asarray(R, dtype=np.float64)
    vh = np.linalg.svd(C, full_matrices=False)[2][:rank]
    texts = (vh.T @ np.linalg.inv(vh @ vh.T) @ vh @ R.T).T
    data = C - C.mean(0, keepdims=True)
    picks = []
    for _ in range(n):
        j = int(np.argmax((data @ texts.T).std(axis=0)))
        picks.append(j)
        t = texts[j]
        tt = t @ t
        data = data - np.outer(data @ t / tt, t)
        texts = texts - np.outer(texts @ t / tt, t)
    return picks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_span_reproduces_the_reference_picks(seed):
    C = _narrow_head(seed)
    R = random_texts(400, 128, seed=seed + 10, dtype=F64)
    want = _reference_picks(C.numpy(), R.numpy(), 10, 80)
    paper = textspan(C, R, 10, 80, span="paper")
    assert paper.indices.tolist() == want
    assert int(paper.span_rank) == 80
    # the numerical span keeps the 65 real directions only: same first pick, a different list
    num = textspan(C, R, 10, 80)
    assert int(num.span_rank) == 65
    assert num.indices[0] == paper.indices[0]
    assert num.indices.tolist() != want
    # given the numerical rank, the reference's picks are the numerical variant's
    assert _reference_picks(C.numpy(), R.numpy(), 10, 65) == num.indices.tolist()
    assert textspan(C, R, 10, 65, span="paper").indices.tolist() == num.indices.tolist()
    # batched over heads and float32 input give the same picks
    both = textspan(torch.stack([C, _narrow_head(seed + 5)]), R, 10, 80, span="paper")
    assert both.indices[0].tolist() == want
    assert both.indices[1].tolist() == _reference_picks(_narrow_head(seed + 5).numpy(), R.numpy(), 10, 80)


def test_span_comparison_reports_where_the_lists_part():
    from helpers.methods.textspan import span_comparison

    C = _narrow_head(0)
    R = random_texts(400, 128, seed=10, dtype=F64)
    cmp = span_comparison(C, R, 10, 80)
    paper, num = _reference_picks(C.numpy(), R.numpy(), 10, 80), _reference_picks(C.numpy(), R.numpy(), 10, 65)
    assert cmp.paper == paper and cmp.numerical == num
    assert cmp.parted_at == next(i for i in range(10) if paper[i] != num[i])
    assert cmp.overlap == len(set(paper) & set(num)) / 10
    assert (cmp.rank, cmp.numerical_rank) == (80, 65)
    # the null share of each text's projection, from an independent SVD
    vh = np.linalg.svd(C.numpy(), full_matrices=False)[2]
    coords = R.numpy() @ vh[:80].T
    share = (coords[:, 65:] ** 2).sum(1) / (coords ** 2).sum(1)
    np.testing.assert_allclose(cmp.text_null_share, share[paper], rtol=1e-5)
    np.testing.assert_allclose(cmp.numerical_text_null_share, share[num], rtol=1e-5)
    assert 0.05 < float(np.mean(share)) < 0.3  # 15 of 80 random directions: about 0.19
    assert all(0 <= x <= 1 for x in cmp.direction_null_share)
    assert cmp.singular_values.shape == (80,) and float(cmp.singular_values[65] / cmp.singular_values[0]) < 1e-8
    with pytest.raises(ValueError, match="one head"):
        span_comparison(C[None], R, 10)
    with pytest.raises(ValueError, match="span must be"):
        textspan(C, R, 3, span="full")
