import numpy as np
import pytest
import torch

from helpers.engine.decompose import Decomposer
from helpers.engine.labels import component_labels
from helpers.methods.ablation import (
    DirectTerms,
    accuracy,
    cached_terms,
    collect_terms,
    component_table,
    margin_contributions,
    variance_shares,
)


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
    from helpers.engine.text import cached_text_embeddings, encode_texts

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
    from helpers.methods.ablation import group_variance_share

    t = _terms()
    every = group_variance_share(t, attn=range(3), mlps=range(3), embed=True)
    assert every == pytest.approx(1.0)
    one = group_variance_share(t, mlps=[1])
    assert one == pytest.approx(variance_shares(t)["mlp.1"])
    both = group_variance_share(t, attn=[0, 2])
    s = t.attn[:, 0] + t.attn[:, 2]
    assert both == pytest.approx(float(s.var(0).sum() / t.embeddings().var(0).sum()))


def test_direct_terms_speak_components():
    t = _terms()
    c = t.components()
    assert c.axes == ("image", "component", "dim") and c.labels["component"] == component_labels(3)
    # written out by hand: embed, then attention and MLP of each layer, then the bias term
    manual = [t.embed]
    for i in range(3):
        manual += [t.attn[:, i], t.mlp[:, i]]
    manual.append(t.const.expand(len(t), -1))
    assert torch.equal(c.data, torch.stack(manual, 1))
    assert torch.allclose(c.data.sum(1), t.embeddings(), atol=1e-12)
    assert torch.equal(c.select(component="mlp.1").data, t.mlp[:, 1])
    assert torch.equal(c.select(component=["attn.2", "embed"]).data, torch.stack([t.attn[:, 2], t.embed], 1))
    assert c.select(component=["attn.2", "embed"]).labels["component"] == ["attn.2", "embed"]
    with pytest.raises(KeyError, match="no component named"):
        c.select(component="attn.3")
    assert t.attention().axes == ("image", "layer", "dim") and torch.equal(t.attention().data, t.attn)
    assert torch.equal(t.mlps().data, t.mlp)
    heads = t.head_terms()
    assert heads.axes == ("image", "layer", "head", "dim") and torch.equal(heads.data, t.heads)
    assert torch.equal(heads.sum("head").data, t.attn)
    assert torch.equal(t.cls_self_terms().data, t.cls_self)
    labels, table = component_table(t)
    assert labels == c.labels["component"] and torch.equal(table, c.data)
    bare = DirectTerms(t.embed, t.attn, t.mlp, t.const)
    with pytest.raises(AttributeError, match="heads=True"):
        bare.head_terms()
    with pytest.raises(AttributeError, match="cls_self=True"):
        bare.cls_self_terms()


# ---------------------------------------------------------------------------------------------
# The reference code's scale and rows


def _reference_arrays(t):
    """The reference code's stored terms, rebuilt by hand: every term divided by its image's
    embedding norm, the ln_post bias shared evenly among the 2L + 1 summands (a layer's share
    split over its heads); the MLP array holds the embedding term first."""
    e = (t.embed + t.attn.sum(1) + t.mlp.sum(1) + t.const).numpy()
    nrm = np.linalg.norm(e, axis=-1)
    N, L, H, d = t.heads.shape
    share = t.const.numpy() / (2 * L + 1)
    attns = (t.heads.numpy() + share / H) / nrm[:, None, None, None]
    mlps = np.concatenate([(t.embed.numpy() + share)[:, None], t.mlp.numpy() + share], 1) / nrm[:, None, None]
    return attns, mlps


def test_normalized_terms_follow_the_reference_scale():
    t = _terms(n=7, L=4, H=3, d=5, seed=2)
    attns, mlps = _reference_arrays(t)
    u = t.normalized()
    np.testing.assert_allclose(u.heads.numpy(), attns, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(u.embed.numpy(), mlps[:, 0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(u.mlp.numpy(), mlps[:, 1:], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(u.attn.numpy(), attns.sum(2), rtol=1e-12, atol=1e-14)
    assert not u.const.any()
    e = t.embeddings()
    torch.testing.assert_close(u.embeddings(), e / e.norm(dim=-1, keepdim=True), rtol=0, atol=1e-12)
    torch.testing.assert_close(u.cls_self, t.cls_self / e.norm(dim=-1, keepdim=True)[:, None])


def test_paper_scale_ablation_against_a_plain_reimplementation():
    t = _terms(n=9, L=5, H=3, d=6, seed=3)
    attns, mlps = _reference_arrays(t)
    # mean-ablate heads (4, 1) and (3, 0), attention layers 0-1, the MLPs of layers 2 and 4, the embedding
    a, m = attns.copy(), mlps.copy()
    for l, h in [(4, 1), (3, 0)]:
        a[:, l, h] = a[:, l, h].mean(0)
    a[:, :2] = a[:, :2].mean(0)
    for j in (0, 3, 5):  # embedding, MLP 2, MLP 4 in the reference's layout
        m[:, j] = m[:, j].mean(0)
    want = a.sum((1, 2)) + m.sum(1)
    got = t.ablated(heads=[(4, 1), (-2, 0)], attn=[0, 1], mlps=[2, -1], embed=True, scale="paper")
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    # the raw scale is unchanged, and the two differ
    assert torch.equal(t.ablated(mlps=[2], scale="raw"), t.ablated(mlps=[2]))
    assert not np.allclose(t.ablated(mlps=[2]).numpy() / np.linalg.norm(t.embeddings().numpy(), axis=-1)[:, None],
                           t.ablated(mlps=[2], scale="paper").numpy())
    # means from another set are taken on that set's own scale
    other = _terms(n=9, L=5, H=3, d=6, seed=4)
    oa, om = _reference_arrays(other)
    want = attns.sum((1, 2)) + mlps.sum(1) - mlps[:, 1] + om[:, 1].mean(0)
    np.testing.assert_allclose(t.ablated(mlps=[0], means=other, scale="paper").numpy(), want, rtol=1e-10)
    with pytest.raises(ValueError, match="scale must be"):
        t.ablated(scale="cosine")


def test_mean_ablation_rows_both_protocols():
    from helpers.methods.ablation import mean_ablation_rows

    t = _terms(n=40, L=6, H=2, d=5, seed=5)
    g = torch.Generator().manual_seed(6)
    clf = torch.nn.functional.normalize(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=-1)
    y = torch.randint(0, 3, (40,), generator=g)
    attns, mlps = _reference_arrays(t)
    acc = lambda x: float((np.argmax(x @ clf.numpy().T, 1) == y.numpy()).mean())  # noqa: E731
    paper = mean_ablation_rows(t, clf, y, protocol="paper")
    # the reference's "MLPs" row: every entry of its MLP array (the embedding term included)
    assert paper["MLPs"] == pytest.approx(acc(attns.sum((1, 2)) + mlps.mean(0).sum(0)))
    early = attns.copy()
    early[:, :2] = early[:, :2].mean(0)
    assert paper["attention except last 4"] == pytest.approx(acc(early.sum((1, 2)) + mlps.sum(1)))
    raw = mean_ablation_rows(t, clf, y)
    e = t.embeddings().numpy()
    mlp_raw = e - t.mlp.numpy().sum(1) + t.mlp.numpy().mean(0).sum(0)
    assert raw["MLPs"] == pytest.approx(acc(mlp_raw)) and raw["baseline"] == paper["baseline"] == pytest.approx(acc(e))
    assert list(raw) == list(paper) == ["baseline", "MLPs", "CLS-to-itself attention",
                                        "MLPs + CLS-to-itself attention", "attention except last 4",
                                        "MLPs + embedding + attention except last 4", "last 4 attention layers"]
    with pytest.raises(ValueError, match="protocol"):
        mean_ablation_rows(t, clf, y, protocol="cosine")
    with pytest.raises(ValueError, match="last"):
        mean_ablation_rows(t, clf, y, last=0)


def test_ablation_set_is_keyword_arguments_and_a_mask():
    from helpers.methods.ablation import AblationSet

    t = _terms(n=6, L=3, H=2, d=4)
    s = AblationSet(heads=[(2, 1)], attn=[0], mlps=[-1], embed=True, scale="paper")
    assert torch.equal(t.ablated(**s), t.ablated(heads=[(2, 1)], attn=[0], mlps=[2], embed=True, scale="paper"))
    m = s.mask(3, 2)
    assert m["heads"].tolist() == [[True, True], [False, False], [False, True]]
    assert m["mlps"].tolist() == [False, False, True] and bool(m["embed"])
    with pytest.raises(IndexError):
        AblationSet(heads=[(3, 0)]).mask(3, 2)
    with pytest.raises(ValueError, match="scale"):
        AblationSet(scale="cosine")


def test_pattern_held_reads_the_rows():
    from helpers.methods.ablation import pattern_held, variance_pattern_held

    rows = {"baseline": 0.9, "MLPs": 0.88, "CLS-to-itself attention": 0.9, "attention except last 4": 0.85,
            "MLPs + embedding + attention except last 4": 0.81, "last 4 attention layers": 0.2}
    assert pattern_held(rows)
    assert not pattern_held({**rows, "MLPs": 0.7})  # the MLPs matter directly
    assert not pattern_held({**rows, "MLPs + embedding + attention except last 4": 0.79})
    assert not pattern_held({**rows, "last 4 attention layers": 0.6})  # the last layers are not needed
    assert pattern_held({**rows, "last 4 attention layers": 0.6}, large=0.3)
    with pytest.raises(KeyError, match="mean_ablation_rows"):
        pattern_held({"baseline": 0.9, "MLPs": 0.9})
    assert variance_pattern_held(0.86, 0.04)
    assert not variance_pattern_held(0.4, 0.01)  # not the majority
    assert not variance_pattern_held(0.6, 0.2)  # the MLPs carry a third as much


# ---------------------------------------------------------------------------------------------
# Attention-pooled towers (SigLIP): the pooling MLP's term is per image, kept apart from const


def _siglip_hand_terms():
    f = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    attn = f([[[1, 1]], [[2, 0]]])
    return DirectTerms(embed=f([[1, 0], [0, 1]]), attn=attn, mlp=f([[[0, 1]], [[1, 1]]]), const=f([0.5, 0.5]),
                       heads=attn[:, :, None].clone(), pool_mlp=f([[3, 0], [0, 3]]))


def test_pool_mlp_is_its_own_term_on_the_reference_scale():
    from helpers.methods.heads import stack_heads

    t = _siglip_hand_terms()
    e = t.embeddings()
    torch.testing.assert_close(e, torch.tensor([[5.5, 2.5], [3.5, 5.5]], dtype=torch.float64), rtol=0, atol=1e-15)
    share, nrm = t.reference_scale()
    assert share.shape == (2,)  # image-independent: only const is shared over the 2L + 1 summands
    torch.testing.assert_close(nrm[:, 0], torch.tensor([6.041522987, 6.519202405], dtype=torch.float64),
                               rtol=0, atol=1e-9)
    u = t.normalized()
    torch.testing.assert_close(u.embeddings(), e / e.norm(dim=-1, keepdim=True), rtol=0, atol=1e-14)
    torch.testing.assert_close(u.pool_mlp, t.pool_mlp / nrm, rtol=0, atol=1e-15)
    assert not u.const.any()
    want = torch.tensor([[0.979988205, 0.330031674], [0.467253765, 0.927432758]], dtype=torch.float64)
    torch.testing.assert_close(t.ablated(attn=[0], scale="paper"), want, rtol=0, atol=1e-9)
    stack = stack_heads(t, [0], scale="paper")[0]
    want = torch.tensor([[[0.193108041, 0.193108041], [0.332351495, 0.025565500]]], dtype=torch.float64)
    torch.testing.assert_close(stack, want, rtol=0, atol=1e-9)
    # the pooling MLP appears among the components (before const) and can be mean-ablated
    comps = t.components()
    assert comps.labels["component"][-2:] == ["pool.mlp", "const"]
    torch.testing.assert_close(comps.data.sum(1), e)
    torch.testing.assert_close(t.ablated(pool_mlp=True), e - t.pool_mlp + t.pool_mlp.mean(0))
    with pytest.raises(ValueError, match="attention-pooled"):
        _terms().ablated(pool_mlp=True)


def test_a_per_image_const_is_refused():
    t = _siglip_hand_terms()
    with pytest.raises(ValueError, match="pool_mlp"):
        DirectTerms(t.embed, t.attn, t.mlp, t.const + t.pool_mlp)
    with pytest.raises(ValueError, match="pool_mlp must be"):
        DirectTerms(t.embed, t.attn, t.mlp, t.const, pool_mlp=t.pool_mlp[:1])


@pytest.mark.parametrize("n, L, heads", [(3, 3, False), (5, 2, True)])
def test_reference_scale_with_a_pooling_term_sums_to_the_unit_embedding(n, L, heads):
    """Regressions: with N == L (no heads) the per-image share used to broadcast silently over the
    layers; with heads, or N != L, it raised."""
    from helpers.methods.heads import stack_heads

    g = torch.Generator().manual_seed(7)
    H, d = 2, 4
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    hd = r(n, L, H, d)
    t = DirectTerms(embed=r(n, d), attn=hd.sum(2), mlp=r(n, L, d), const=r(d), heads=hd if heads else None,
                    pool_mlp=r(n, d))
    e = t.embeddings()
    u = t.normalized()
    torch.testing.assert_close(u.embeddings(), e / e.norm(dim=-1, keepdim=True), rtol=0, atol=1e-13)
    share = t.const / (2 * L + 1)
    nrm = e.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(u.attn, (t.attn + share) / nrm[:, None])
    if heads:
        stack, _ = stack_heads(t, range(L), scale="paper")
        torch.testing.assert_close(stack.sum(0), (t.attn + share).sum(1) / nrm)
