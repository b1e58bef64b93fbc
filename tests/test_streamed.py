"""Terms streamed from disk (helpers.methods.streamed) against the same computations in memory,
and TextSpan / PCA from per-head moments against TextSpan / PCA on the data (float64)."""

import pytest
import torch
import torch.nn.functional as F

from helpers.engine.cache import slice_batches, stream_to_cache
from helpers.methods.ablation import DirectTerms, ablation_accuracies, accuracy, mean_ablation_rows, sample_index
from helpers.methods.heads import reconstruction_accuracy, stack_heads
from helpers.methods.streamed import StreamedStack, StreamedTerms, should_stream, terms_bytes
from helpers.methods.textspan import (
    HeadMoments,
    MomentSums,
    pca_basis,
    pca_from_moments,
    random_baseline,
    span_comparison,
    textspan,
    textspan_from_moments,
)

F64 = torch.float64


def _heads(g, Hs, K, d, ranks, offset=4.0):
    """Head outputs ``[Hs, K, d]``: head h spans ``ranks[h]`` directions (``None``: all) plus a
    constant, as a head's value space plus its share of the bias does."""
    out = []
    for r in ranks:
        if r is None:
            x = torch.randn(K, d, generator=g, dtype=F64) * torch.linspace(3, 0.2, d, dtype=F64)
        else:
            x = torch.randn(K, r, generator=g, dtype=F64) @ torch.randn(r, d, generator=g, dtype=F64)
        out.append(x + offset * torch.randn(d, generator=g, dtype=F64))
    return torch.stack(out)


def _texts(g, M, d):
    return F.normalize(torch.randn(M, d, generator=g, dtype=F64), dim=-1)


def _streamed_moments(C, step):
    sums = MomentSums()
    for i in range(0, C.shape[1], step):
        sums.add(C[:, i:i + step])
    return sums.result()


# ---------------------------------------------------------------------------------------------
# TextSpan from moments


@pytest.mark.parametrize("span", ["numerical", "paper"])
def test_textspan_from_moments_equals_textspan_on_the_data(span):
    g = torch.Generator().manual_seed(0)
    C = _heads(g, 4, 500, 32, [None, 12, 20, None])  # rank-deficient heads exercise the numerical span
    R = _texts(g, 90, 32)
    mom = _streamed_moments(C, 37)  # summed over uneven chunks, as a stream is
    assert mom.n == 500 and mom.shape == (4, 500, 32)
    for n in (1, 6, 12):
        a, b = textspan(C, R, n, span=span), textspan_from_moments(mom, R, n, span=span)
        assert torch.equal(a.indices, b.indices), (n, a.indices, b.indices)
        assert torch.equal(a.span_rank, b.span_rank)
        for name in ("directions", "variance", "mean", "total_variance", "criterion"):
            x, y = getattr(a, name), getattr(b, name)
            assert torch.allclose(x, y, rtol=1e-9, atol=1e-11), (name, float((x - y).abs().max()))
    # the dispatch: textspan of the moments themselves, and of anything with moments()
    assert torch.equal(textspan(mom, R, 6, span=span).indices, textspan(C, R, 6, span=span).indices)


def test_paper_span_with_null_directions_agrees_on_the_first_pick():
    """Wider than 80 dimensions, a head of rank 30 lets 50 null directions into the paper's
    span; which ones is up to the solver (SVD or eigendecomposition), so only the first pick
    and its criterion (a text's variance, which the null part does not change) must agree; the
    variance credited to the step is diluted by the null part, which differs."""
    g = torch.Generator().manual_seed(1)
    C = _heads(g, 2, 300, 96, [30, 30])
    R = _texts(g, 120, 96)
    a, b = textspan(C, R, 5, span="paper"), textspan_from_moments(HeadMoments.of(C), R, 5, span="paper")
    assert torch.equal(a.indices[:, 0], b.indices[:, 0])
    assert int(b.span_rank[0]) == 80 and torch.allclose(a.criterion[:, 0], b.criterion[:, 0], rtol=1e-9)
    cmp = span_comparison(C[0], R, 5)
    assert cmp.numerical == textspan_from_moments(HeadMoments.of(C[:1]), R, 5).indices[0].tolist()


def test_pca_and_random_baseline_from_moments():
    g = torch.Generator().manual_seed(2)
    C = _heads(g, 3, 400, 24, [None, 8, None])
    mom = _streamed_moments(C, 50)
    a, b = pca_basis(C, 6), pca_from_moments(mom, 6)
    proj = lambda U: U.mT @ U  # noqa: E731  (the axes' signs are the solver's)
    assert torch.allclose(proj(a.directions), proj(b.directions), atol=1e-9)
    assert torch.allclose(a.variance, b.variance, rtol=1e-9, atol=1e-12)
    assert torch.allclose(pca_basis(mom, 6).variance, b.variance)
    r1, r2 = random_baseline(C, 5, 60, seed=3), random_baseline(mom, 5, 60, seed=3)
    assert torch.equal(r1.indices, r2.indices)


def test_moments_refuse_what_they_cannot_do():
    g = torch.Generator().manual_seed(3)
    C = _heads(g, 2, 50, 8, [None, None])
    mom = HeadMoments.of(C)
    with pytest.raises(ValueError, match="reconstruction"):
        textspan(mom, _texts(g, 20, 8), 3, reconstruction=True)
    with pytest.raises(ValueError, match="numerical rank"):
        textspan_from_moments(HeadMoments.of(_heads(g, 1, 50, 8, [2])), _texts(g, 20, 8), 4)
    sums = MomentSums()
    with pytest.raises(ValueError, match="no images"):
        sums.result()
    sums.add(C[:, :5])
    with pytest.raises(ValueError, match="does not continue"):
        sums.add(C[:1, 5:])
    with pytest.raises(ValueError, match="NaN"):
        sums.add(torch.full((2, 3, 8), float("nan"), dtype=F64))


# ---------------------------------------------------------------------------------------------
# Streamed terms against terms in memory


def _terms(seed=4, N=150, L=5, H=3, d=12, C=6):
    """Terms of ``N`` images whose last layers carry the class (so that ablations matter), a
    classifier and labels."""
    g = torch.Generator().manual_seed(seed)
    cls = F.normalize(torch.randn(C, d, generator=g, dtype=F64), dim=-1)
    labels = torch.randint(0, C, (N,), generator=g)
    strength = torch.linspace(0.1, 1.2, L, dtype=F64)
    heads = 0.6 * torch.randn(N, L, H, d, generator=g, dtype=F64) + 0.3 * torch.randn(L, H, d, generator=g, dtype=F64)
    heads = heads + (strength[None, :, None, None] / H) * cls[labels][:, None, None]
    terms = DirectTerms(embed=0.3 * torch.randn(N, d, generator=g, dtype=F64) + 1.0,
                        attn=heads.sum(2), mlp=0.4 * torch.randn(N, L, d, generator=g, dtype=F64) + 0.2,
                        const=0.5 * torch.randn(d, generator=g, dtype=F64), heads=heads,
                        cls_self=0.2 * torch.randn(N, L, d, generator=g, dtype=F64))
    return terms, cls, labels


def _stream(terms, tmp_path, head_layers, chunk_bytes):
    """The terms written to the on-disk cache as the model's would be, read back streamed."""
    def compute(rows):
        a, b = rows
        return {"embed": terms.embed[a:b], "attn": terms.attn[a:b], "mlp": terms.mlp[a:b],
                "cls_self": terms.cls_self[a:b], "heads": terms.heads[a:b, head_layers]}

    N = len(terms)
    arrays = stream_to_cache(compute, slice_batches(lambda a, b: (a, b), N, 32), n_items=N, key={"t": 1},
                             cache_dir=tmp_path, progress=False)
    return StreamedTerms(arrays, terms.const, head_layers=head_layers, dtype=F64, chunk_bytes=chunk_bytes)


@pytest.fixture
def pair(tmp_path):
    terms, cls, labels = _terms()
    streamed = _stream(terms, tmp_path, [3, 4], chunk_bytes=20_000)  # chunks of 8 images
    assert streamed.chunk_size < len(terms) // 10
    return terms, streamed, cls, labels


def test_streamed_mean_ablation_equals_the_one_in_memory(pair):
    terms, streamed, cls, labels = pair
    means = streamed.means()
    for name in ("embed", "attn", "mlp", "cls_self"):
        assert torch.allclose(getattr(means.raw, name)[0], getattr(terms, name).mean(0), atol=1e-12)
        assert torch.allclose(getattr(means.paper, name)[0], getattr(terms.normalized(), name).mean(0), atol=1e-12)
    assert torch.allclose(streamed.embedding_norms(), terms.embedding_norms())
    for protocol in ("raw", "paper"):
        a = mean_ablation_rows(terms, cls, labels, last=2, protocol=protocol)
        b = mean_ablation_rows(streamed, cls, labels, last=2, protocol=protocol)
        assert a == b and len(set(a.values())) > 2, (a, b)  # the ablations do change the accuracy
    specs = [dict(attn=range(j + 1), scale=s) for j in range(5) for s in ("raw", "paper")]
    assert ablation_accuracies(streamed, specs, cls, labels) == ablation_accuracies(terms, specs, cls, labels)
    for spec in ({}, dict(mlps=[0, 2], embed=True), dict(cls_self=[1], attn=[-1], scale="paper")):
        lazy = streamed.ablated(**spec)
        assert torch.allclose(lazy.tensor(), terms.ablated(**spec), atol=1e-12)
        assert accuracy(lazy, cls, labels) == accuracy(terms.ablated(**spec), cls, labels)
    assert accuracy(streamed.embeddings(), cls, labels) == accuracy(terms.embeddings(), cls, labels)


def test_streamed_heads_give_the_same_textspan_and_reconstruction(pair):
    terms, streamed, cls, labels = pair
    g = torch.Generator().manual_seed(5)
    R = _texts(g, 40, 12)
    for scale in ("raw", "paper"):
        stack, labs = stack_heads(terms, [3, 4], scale=scale)
        lazy, lazy_labs = stack_heads(streamed, [-2, -1], scale=scale)
        assert isinstance(lazy, StreamedStack) and labs == lazy_labs and lazy.shape == tuple(stack.shape)
        mom = lazy.moments()
        assert torch.allclose(mom.cov, HeadMoments.of(stack).cov, atol=1e-12)
        assert torch.equal(textspan(lazy, R, 4).indices, textspan(stack, R, 4).indices)
        idx = torch.tensor([0, 7, 8, 149])
        assert torch.allclose(lazy.rows(idx), stack[:, idx], atol=1e-12)
        for method in ("textspan", "pca", "random"):
            kw = dict(pool_embeddings=R, span="numerical", scale=scale, seed=1)
            a = reconstruction_accuracy(terms, cls, labels, [3, 4], method, [1, 2, 5], **kw)
            b = reconstruction_accuracy(streamed, cls, labels, [3, 4], method, [1, 2, 5], **kw)
            assert a == b, (scale, method, a, b)
    with pytest.raises(ValueError, match="were not stored"):
        stack_heads(streamed, [2, 3])


def test_streamed_sample_and_errors(pair):
    terms, streamed, cls, labels = pair
    sample, index = streamed.sample(10)
    assert index.tolist() == sample_index(len(terms), 10).tolist() and index[0] == 0 and index[-1] == len(terms) - 1
    assert torch.equal(sample.attn, terms.attn[index]) and sample.heads is None
    same, every = terms.sample(1000)
    assert same is terms and every.tolist() == list(range(len(terms)))
    with pytest.raises(ValueError, match="single heads"):
        streamed.ablated(heads=[(4, 0)])
    with pytest.raises(IndexError):
        streamed.ablated(attn=[9])
    with pytest.raises(TypeError, match="own means"):
        streamed.ablated(means=terms)
    with pytest.raises(ValueError, match="labels"):
        accuracy(streamed.embeddings(), cls, labels[:5])


def test_when_to_stream():
    # ViT-L-14's terms for notebook 2 (per layer, class-token terms too) on all of ImageNet's 50,000
    # images take 11 GB: streamed; the quick variant's 2,000 stay in memory; so does the offline model
    assert terms_bytes(50_000, 24, 768, cls_self=True) == 50_000 * 73 * 768 * 4
    assert should_stream(50_000, 24, 768, cls_self=True)
    assert not should_stream(2_000, 24, 768, n_heads=16, head_layers=24)
    assert not should_stream(1_000, 8, 128, n_heads=4, head_layers=8)
