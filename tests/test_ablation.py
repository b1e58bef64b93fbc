import pytest
import torch

from helpers.ablation import (DirectTerms, accuracy, cached_terms, collect_terms, component_table,
                              margin_contributions, variance_shares)
from helpers.decompose import Decomposer


def _terms(n=6, L=3, H=2, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    heads = torch.randn(n, L, H, d, generator=g, dtype=torch.float64)
    return DirectTerms(embed=torch.randn(n, d, generator=g, dtype=torch.float64), attn=heads.sum(2),
                       mlp=torch.randn(n, L, d, generator=g, dtype=torch.float64),
                       const=torch.randn(d, generator=g, dtype=torch.float64), heads=heads,
                       cls_self=torch.randn(n, L, d, generator=g, dtype=torch.float64))


def test_ablation_arithmetic_by_hand():
    t = _terms()
    full = t.embed + t.attn.sum(1) + t.mlp.sum(1) + t.const
    assert torch.allclose(t.embeddings(), full)
    out = t.ablated(mlps=[0, -1], attn=[1], embed=True)
    expect = (t.embed.mean(0) + t.attn[:, 0] + t.attn[:, 1].mean(0) + t.attn[:, 2] + t.mlp[:, 0].mean(0)
              + t.mlp[:, 1] + t.mlp[:, 2].mean(0) + t.const)
    assert torch.allclose(out, expect)
    # ablating every term leaves the same vector for all images
    every = t.ablated(mlps=range(3), attn=range(3), embed=True)
    assert torch.allclose(every, every[:1].expand_as(every))
    # head ablation == replacing that head by its mean
    h = t.ablated(heads=[(2, 1)])
    assert torch.allclose(h, full - t.heads[:, 2, 1] + t.heads[:, 2, 1].mean(0))
    # a head inside an ablated layer is not ablated twice
    assert torch.allclose(t.ablated(attn=[2], heads=[(2, 1)]), t.ablated(attn=[2]))
    s = t.ablated(cls_self=[0])
    assert torch.allclose(s, full - t.cls_self[:, 0] + t.cls_self[:, 0].mean(0))
    # means from a reference set
    other = _terms(seed=1)
    r = t.ablated(mlps=[0], means=other)
    assert torch.allclose(r, full - t.mlp[:, 0] + other.mlp[:, 0].mean(0))


def test_ablation_errors():
    t = _terms()
    with pytest.raises(IndexError):
        t.ablated(mlps=[5])
    with pytest.raises(IndexError):
        t.ablated(heads=[(0, 7)])
    no_heads = DirectTerms(t.embed, t.attn, t.mlp, t.const)
    with pytest.raises(ValueError, match="heads=True"):
        no_heads.ablated(heads=[(0, 0)])
    with pytest.raises(ValueError, match="cls_self=True"):
        no_heads.ablated(cls_self=[0])


def test_accuracy_and_scores_by_hand():
    classifier = torch.eye(3, dtype=torch.float64)
    emb = torch.tensor([[2.0, 0, 0], [0, 0.5, 0.1], [0, 3, 1], [0.2, 0, 0.1]], dtype=torch.float64)
    assert accuracy(emb, classifier, [0, 1, 2, 2]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        accuracy(emb, classifier, [0, 1])
    t = _terms(d=3)
    labels, comps = component_table(t)
    assert labels[0] == "embed" and labels[-1] == "const" and comps.shape[1] == 2 + 2 * 3
    assert torch.allclose(comps.sum(1), t.embeddings())
    shares = variance_shares(t)
    assert shares["const"] == pytest.approx(0.0)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    margins = margin_contributions(t, classifier, y)
    e = t.embeddings()
    direct = (classifier[y] - classifier.mean(0))
    total = ((e / e.norm(dim=-1, keepdim=True)) * direct).sum(-1).mean()
    assert sum(margins.values()) == pytest.approx(float(total))


def test_collect_and_cache_match_direct(tmp_path):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("world-clip").eval()
    x = torch.randn(10, 3, 64, 64)
    direct = collect_terms(model, x, heads=True, cls_self=True, batch_size=4)
    d = Decomposer(model)(x, heads=True, tokens=True)
    assert torch.allclose(direct.attn, d.attn, atol=1e-6)
    assert torch.allclose(direct.embeddings(), d.embedding, atol=1e-5)
    # the class-token self terms are the token-0 part of each layer's attention term
    assert torch.allclose(direct.cls_self[:, 2], d.tokens(layers=[2]).data[:, 0], atol=1e-6)
    ds = torch.utils.data.TensorDataset(x, torch.zeros(10))
    cached = cached_terms(model, ds, dataset_id="random-10", cache_dir=tmp_path, heads=True, batch_size=4,
                          progress=False)
    assert torch.allclose(cached.heads, direct.heads, atol=1e-6)
    assert torch.allclose(cached.embeddings(), direct.embeddings(), atol=1e-5)
    calls = []
    orig = Decomposer.__call__

    def counting(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    Decomposer.__call__ = counting
    try:
        again = cached_terms(model, ds, dataset_id="random-10", cache_dir=tmp_path, heads=True, batch_size=4,
                             progress=False)
    finally:
        Decomposer.__call__ = orig
    assert not calls and torch.equal(again.heads, cached.heads)
    with pytest.raises(ValueError):
        collect_terms(model, torch.zeros(0, 3, 64, 64))


def test_cached_text_embeddings(tmp_path, default_bundle):
    from helpers.text import cached_text_embeddings, encode_texts

    model, _, tokenizer = default_bundle
    texts = [f"a red star number {i}" for i in range(7)]
    a = cached_text_embeddings(model, tokenizer, texts, model_id="world-clip", cache_dir=str(tmp_path),
                               batch_size=3, progress=False)
    assert torch.allclose(a, encode_texts(model, tokenizer, texts), atol=1e-6)
    b = cached_text_embeddings(model, tokenizer, texts, model_id="world-clip", cache_dir=str(tmp_path),
                               batch_size=3, progress=False)
    assert torch.equal(a, b)
    assert len(list(tmp_path.iterdir())) == 1


def test_group_variance_share_by_hand():
    from helpers.ablation import group_variance_share

    t = _terms()
    every = group_variance_share(t, attn=range(3), mlps=range(3), embed=True)
    assert every == pytest.approx(1.0)
    one = group_variance_share(t, mlps=[1])
    assert one == pytest.approx(variance_shares(t)["mlp.1"])
    both = group_variance_share(t, attn=[0, 2])
    s = t.attn[:, 0] + t.attn[:, 2]
    assert both == pytest.approx(float(s.var(0).sum() / t.embeddings().var(0).sum()))
