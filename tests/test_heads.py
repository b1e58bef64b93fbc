"""Head roles, interpretability scores, replacement by reconstructions and neighbour searches,
on planted synthetic heads (small tensors, no model)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers.data.pools import Pool
from helpers.methods import heads as head_methods
from helpers.methods.ablation import DirectTerms, accuracy
from helpers.methods.textspan import pca_basis, textspan

F64 = torch.float64
torch.set_num_threads(1)


def _orthonormal(m, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))[0].T[:m]


# ---------------------------------------------------------------------------------------------
# A tagged pool and heads planted on its texts
# ---------------------------------------------------------------------------------------------

# texts 0-4 colour, 5-9 shape, 10-11 other, 12-13 texture (never planted in a head)
TAGS = ["colour"] * 5 + ["shape"] * 5 + ["other"] * 2 + ["texture"] * 2
POOL = Pool([f"text {i} ({t})" for i, t in enumerate(TAGS)], TAGS, [str(i) for i in range(len(TAGS))],
            name="planted")
D = 24

# Each head varies along four pool texts with decreasing variance, so TextSpan picks them in
# this order.
PLANTED = {
    "A": [0, 1, 2, 3],  # colour only
    "B": [5, 6, 7, 8],  # shape only
    "C": [0, 5, 1, 6],  # colour and shape, two each: tie -> colour (chosen first)
    "D": [2, 3, 10, 4],  # three colour, one other
    "E": [10, 7, 11, 1],  # other, shape, other, colour
}


def _planted_heads(K=300, seed=0, noise=1e-4):
    R = _orthonormal(len(TAGS), D, seed)
    g = torch.Generator().manual_seed(seed + 1)
    sd = torch.tensor([2.0, 1.6, 1.3, 1.0], dtype=F64)
    C = []
    for texts in PLANTED.values():
        Z = torch.randn(K, 4, generator=g, dtype=F64)
        Z = torch.linalg.qr(Z - Z.mean(0))[0] * math.sqrt(K)  # exactly uncorrelated, unit variance
        offset = 0.4 * torch.randn(D, generator=g, dtype=F64)
        C.append((Z * sd) @ R[texts] + offset + noise * torch.randn(K, D, generator=g, dtype=F64))
    return torch.stack(C), R


LABELS = [(11, h) for h in range(len(PLANTED))]


@pytest.fixture(scope="module")
def planted():
    C, R = _planted_heads()
    res = textspan(C, R, 4)
    return C, R, res


def test_textspan_recovers_planted_texts(planted):
    _, _, res = planted
    assert res.indices.tolist() == list(PLANTED.values())


def test_roles_and_purity(planted):
    _, _, res = planted
    roles = head_methods.head_roles(res, POOL, LABELS)
    assert [r.property for r in roles] == ["colour", "shape", "colour", "colour", "other"]
    assert [r.purity for r in roles] == [1.0, 1.0, 0.5, 0.75, 0.5]
    assert roles[0].texts == [POOL.texts[i] for i in PLANTED["A"]]
    assert roles[4].text_properties == ["other", "shape", "other", "colour"]
    assert (roles[2].layer, roles[2].head, roles[2].label) == (11, 2, "L11.H2")
    assert all(r.variance == pytest.approx(1.0, abs=1e-6) for r in roles)

    # ignored tags cannot be the role, but still count in the purity's denominator
    ign = head_methods.head_roles(res, POOL, LABELS, ignore=("other", "unknown"))
    assert [r.property for r in ign] == ["colour", "shape", "colour", "colour", "shape"]
    assert [r.purity for r in ign] == [1.0, 1.0, 0.5, 0.75, 0.25]

    # fewer texts: the first two of each head
    two = head_methods.head_roles(res, POOL, LABELS, n=2, ignore=("other",))
    assert [r.property for r in two] == ["colour", "shape", "colour", "colour", "shape"]
    assert [r.purity for r in two] == [1.0, 1.0, 0.5, 1.0, 0.5]
    assert two[0].variance == pytest.approx((4 + 2.56) / (4 + 2.56 + 1.69 + 1), abs=1e-6)
    assert head_methods.heads_for_property(ign, "colour") == [0, 2, 3]
    assert head_methods.heads_for_property(ign, "colour", min_purity=0.75) == [0, 3]
    assert head_methods.heads_for_property(ign, "texture") == []


def test_dominant_property_ties_and_ignore():
    assert head_methods.dominant_property(["a", "b", "b", "a"]) == ("a", 0.5)
    assert head_methods.dominant_property(["b", "a", "a", "b", "c"]) == ("b", 0.4)
    assert head_methods.dominant_property(["x", "x", "a"], ignore=["x"]) == ("a", 1 / 3)
    assert head_methods.dominant_property(["x", "x"], ignore=["x"]) == (None, 0.0)
    with pytest.raises(ValueError):
        head_methods.dominant_property([])


def test_interpretability_scores_by_hand(planted):
    _, _, res = planted
    roles = head_methods.head_roles(res, POOL, LABELS)  # made without ignore: scores recompute the roles
    s = head_methods.interpretability_scores(roles)  # ignores "other" and "unknown" by default
    assert isinstance(s, head_methods.InterpretabilityScores)
    assert s.properties == ["colour", "shape"]
    # purities of the roles colour, shape, colour, colour, shape
    assert s.association == pytest.approx((1 + 1 + 0.5 + 0.75 + 0.25) / 5)
    assert s.association_per_property == pytest.approx({"colour": 0.75, "shape": 0.625})
    assert s.heads_per_property == {"colour": 3, "shape": 2}
    # properties with >= 2 texts: A 1, B 1, C 2, D 1, E 0 -> (0 + 0 + 1 + 0 + 0) / 5 / (2 - 1)
    assert s.properties_per_head == [1, 1, 2, 1, 0]
    assert s.entanglement == pytest.approx(0.2)
    assert (s.n_heads, s.n_assigned, s.min_count) == (5, 5, 2)

    # min_count=1: E covers colour and shape too
    s1 = head_methods.interpretability_scores(roles, min_count=1)
    assert s1.properties_per_head == [1, 1, 2, 1, 2]
    assert s1.entanglement == pytest.approx(0.4)

    # the pool's property set: texture enlarges |P|, so entanglement halves
    sp = head_methods.interpretability_scores(roles, properties=POOL)
    assert sp.properties == ["colour", "shape", "texture"]
    assert sp.entanglement == pytest.approx(0.1)
    assert sp.heads_per_property == {"colour": 3, "shape": 2, "texture": 0}
    assert sp.association == pytest.approx(s.association)

    # nothing ignored: E's role is "other" (purity 0.5), and "other" is a property
    s0 = head_methods.interpretability_scores(roles, ignore=())
    assert s0.association == pytest.approx((1 + 1 + 0.5 + 0.75 + 0.5) / 5)
    assert s0.heads_per_property == {"colour": 3, "shape": 1, "other": 1}
    assert s0.properties_per_head == [1, 1, 2, 1, 1]
    assert s0.entanglement == pytest.approx(1 / 5 / 2)


def test_scores_extremes():
    pure = [head_methods.HeadRole(0, h, None, 0.0, text_properties=[p] * 4) for h, p in enumerate("abc")]
    s = head_methods.interpretability_scores(pure)
    assert s.association == 1.0 and s.entanglement == 0.0
    mixed = [head_methods.HeadRole(0, h, None, 0.0, text_properties=list("aabbcc")) for h in range(3)]
    s = head_methods.interpretability_scores(mixed)
    assert s.entanglement == 1.0 and s.association == pytest.approx(1 / 3)
    none = [head_methods.HeadRole(0, 0, None, 0.0, text_properties=["other"] * 3)]
    s = head_methods.interpretability_scores(none)
    assert math.isnan(s.association) and s.entanglement == 0.0 and s.n_assigned == 0
    with pytest.raises(ValueError):
        head_methods.interpretability_scores([])
    with pytest.raises(ValueError):
        head_methods.interpretability_scores(pure, min_count=0)


def test_variance_curve(planted):
    C, R, res = planted
    curve = head_methods.variance_explained_curve(res)
    assert curve.shape == (5, 4)
    expect = torch.tensor([4, 2.56, 1.69, 1.0], dtype=F64).cumsum(0) / 9.25
    assert torch.allclose(curve, expect.expand(5, 4), atol=1e-6)
    assert head_methods.variance_explained_curve(res.head(0)).shape == (1, 4)


def test_role_errors(planted):
    C, R, res = planted
    with pytest.raises(ValueError, match="labels"):
        head_methods.head_roles(res, POOL, LABELS[:3])
    with pytest.raises(ValueError, match="n must be"):
        head_methods.head_roles(res, POOL, LABELS, n=5)
    with pytest.raises(ValueError, match="n must be"):
        head_methods.head_roles(res, POOL, LABELS, n=0)
    with pytest.raises(ValueError, match="PCA"):
        head_methods.head_roles(pca_basis(C, 2), POOL, LABELS)
    with pytest.raises(IndexError):
        head_methods.head_roles(res, POOL.subset(range(5)), LABELS)
    with pytest.raises(ValueError):
        head_methods.heads_for_property([], "colour", min_purity=2)


# ---------------------------------------------------------------------------------------------
# Stacking heads and replacing them by reconstructions
# ---------------------------------------------------------------------------------------------


def _planted_terms(seed=1, N=400, L=3, H=2, d=32, M=16):
    """Two classes = sign of a planted coordinate along pool text 0 in head (L-1, 0).

    That head varies along texts 0..3 (text 0 the strongest); an earlier layer adds noise along
    text 0 (removed by mean ablation); everything else is orthogonal to it, and the classifier
    is ``[-u, u]``, so only the component along ``u`` = text 0 decides.
    """
    g = torch.Generator().manual_seed(seed)
    R = _orthonormal(M, d, seed)
    u = R[0]
    heads = 0.3 * torch.randn(N, L, H, d, generator=g, dtype=F64)
    heads -= (heads @ u)[..., None] * u
    Z = torch.randn(N, 4, generator=g, dtype=F64)
    Z = torch.linalg.qr(Z - Z.mean(0))[0] * math.sqrt(N)
    heads[:, L - 1, 0] = (Z * torch.tensor([1.0, 0.8, 0.7, 0.6], dtype=F64)) @ R[:4] + 0.5 * R[5]
    heads[:, 0, 1] += 0.8 * torch.randn(N, 1, generator=g, dtype=F64) * u
    mlp = 0.3 * torch.randn(N, L, d, generator=g, dtype=F64)
    mlp -= (mlp @ u)[..., None] * u
    terms = DirectTerms(embed=0.2 * R[7].expand(N, d).clone(),
                        attn=heads.sum(2), mlp=mlp, const=0.1 * R[8], heads=heads)
    return terms, torch.stack([-u, u]), (Z[:, 0] > 0).long(), R


@pytest.fixture(scope="module")
def terms_case():
    return _planted_terms()


def test_stack_heads(terms_case):
    terms = terms_case[0]
    stack, labels = head_methods.stack_heads(terms, [-1, 0])
    assert labels == [(2, 0), (2, 1), (0, 0), (0, 1)]
    assert stack.shape == (4, 400, 32)
    for i, (li, h) in enumerate(labels):
        assert torch.equal(stack[i], terms.heads[:, li, h])
    s1, l1 = head_methods.stack_heads(terms, 1)
    assert l1 == [(1, 0), (1, 1)] and torch.equal(s1[1], terms.heads[:, 1, 1])
    with pytest.raises(IndexError):
        head_methods.stack_heads(terms, [3])
    with pytest.raises(IndexError):
        head_methods.stack_heads(terms, [-4])
    with pytest.raises(ValueError):
        head_methods.stack_heads(terms, [])
    with pytest.raises(ValueError):
        head_methods.stack_heads(terms, [2, -1])
    with pytest.raises(ValueError):
        head_methods.stack_heads(DirectTerms(terms.embed, terms.attn, terms.mlp, terms.const), [0])
    # the reference's scale, for the chosen layers only: the same as stacking normalized terms
    ref, ref_labels = head_methods.stack_heads(terms, [-1, 0], scale="paper")
    assert ref_labels == labels and torch.allclose(ref, head_methods.stack_heads(terms.normalized(), [-1, 0])[0])
    assert not torch.allclose(ref, stack)
    with pytest.raises(ValueError, match="scale must be"):
        head_methods.stack_heads(terms, [0], scale="cosine")


def test_reconstructed_embeddings_match_loop(terms_case):
    terms, clf, y, R = terms_case
    stack, labels = head_methods.stack_heads(terms, [-2, -1])
    res = textspan(stack, R, 3)
    emb = head_methods.reconstructed_embeddings(terms, [-2, -1], res)
    expect = terms.ablated(attn=[0]).clone()
    for i, (li, h) in enumerate(labels):
        rec = res.head(i).reconstruct(terms.heads[:, li, h])
        expect += rec - terms.heads[:, li, h]
    assert torch.allclose(emb, expect, atol=1e-10)
    # truncation inside equals a result fitted with fewer directions
    assert torch.allclose(head_methods.reconstructed_embeddings(terms, [-2, -1], res, 2),
                          head_methods.reconstructed_embeddings(terms, [-2, -1], textspan(stack, R, 2)), atol=1e-10)
    # full-rank PCA reconstructs exactly: only the mean ablation of earlier layers remains
    full = pca_basis(stack, 32)
    assert torch.allclose(head_methods.reconstructed_embeddings(terms, [-2, -1], full), terms.ablated(attn=[0]),
                          atol=1e-9)
    assert torch.allclose(head_methods.reconstructed_embeddings(terms, [-2, -1], full, ablate_earlier=False),
                          terms.embeddings(), atol=1e-9)
    with pytest.raises(ValueError):
        head_methods.reconstructed_embeddings(terms, [-1], res)  # 4 heads fitted, 2 given
    with pytest.raises(ValueError):
        head_methods.reconstructed_embeddings(terms, [-2, -1], res, n=4)


def test_reconstruction_accuracy_textspan_beats_random(terms_case):
    terms, clf, y, R = terms_case
    ns = [1, 2, 4]
    ablated = accuracy(terms.ablated(attn=[0, 1]), clf, y)
    assert accuracy(terms.embeddings(), clf, y) < ablated - 0.1  # the noise the ablation removes
    ts = head_methods.reconstruction_accuracy(terms, clf, y, [-1], "textspan", ns, R)
    pca = head_methods.reconstruction_accuracy(terms, clf, y, [-1], "pca", ns, R)
    assert list(ts) == ns
    # text 0 is the head's strongest direction and a pool text: one text is enough
    assert ts == pytest.approx({n: ablated for n in ns})
    assert all(pca[n] >= ts[n] - 1e-12 for n in ns)
    rand = [head_methods.reconstruction_accuracy(terms, clf, y, [-1], "random", ns, R, seed=s) for s in range(4)]
    mean_rand = {n: sum(r[n] for r in rand) / len(rand) for n in ns}
    assert ts[1] > mean_rand[1] + 0.1
    assert ts[2] > mean_rand[2] + 0.05
    assert all(r[n] <= ts[n] + 1e-12 for r in rand for n in ns)
    # the random pool has the real pool's size unless told otherwise; seeds matter
    assert rand[0] != rand[1]
    r_small = head_methods.reconstruction_accuracy(terms, clf, y, [-1], "random", [1], n_random_texts=3)
    assert set(r_small) == {1}
    # a prefitted basis gives the same numbers
    stack, _ = head_methods.stack_heads(terms, [-1])
    assert head_methods.reconstruction_accuracy(terms, clf, y, [-1], "textspan", ns,
                                   result=textspan(stack, R, 4)) == ts


def test_reconstruction_accuracy_errors(terms_case):
    terms, clf, y, R = terms_case
    call = lambda **kw: head_methods.reconstruction_accuracy(**{**dict(  # noqa: E731
        terms=terms, classifier=clf, labels=y, layers=[-1], method="textspan", n_values=[1],
        pool_embeddings=R), **kw})
    with pytest.raises(ValueError, match="empty"):
        call(n_values=[])
    with pytest.raises(ValueError):
        call(n_values=[0, 1])
    with pytest.raises(ValueError, match="larger"):
        call(n_values=[33])
    with pytest.raises(ValueError):
        call(n_values=[17])  # more texts than the pool has
    with pytest.raises(IndexError):
        call(layers=[5])
    with pytest.raises(ValueError):
        call(method="ica")
    with pytest.raises(ValueError):
        call(pool_embeddings=None)
    with pytest.raises(ValueError):
        call(method="random", pool_embeddings=None)
    with pytest.raises(ValueError):
        call(pool_embeddings=R[:, :10])
    with pytest.raises(ValueError):
        call(classifier=clf[:, :10])
    with pytest.raises(ValueError):
        call(labels=y[:10])
    stack, _ = head_methods.stack_heads(terms, [-1])
    with pytest.raises(ValueError):
        call(n_values=[3], result=textspan(stack, R, 2))
    with pytest.raises(ValueError):
        head_methods.fit_basis(stack, "textspan", 2)


# ---------------------------------------------------------------------------------------------
# Neighbours
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def neighbour_stack():
    g = torch.Generator().manual_seed(5)
    S = torch.randn(3, 40, 16, generator=g)
    S[0, 7] = 2 * S[0, 3]  # same direction as image 3 in head 0 only
    S[1, 11] = S[1, 3] + 0.01 * torch.randn(16, generator=g)  # image 3's twin in head 1 only
    S[0, 12], S[1, 12] = S[0, 3], S[1, 3]  # image 3's twin in heads 0 and 1
    t = torch.randn(16, generator=g)
    S[2, 5] = 3 * t
    S[2, 9] = t + 0.05 * torch.randn(16, generator=g)
    return S, t


def test_property_and_head_neighbours(neighbour_stack):
    S, _ = neighbour_stack
    idx, sc = head_methods.property_neighbours(S, [0, 1], 3, k=3)
    assert idx[0] == 12 and sc[0] == pytest.approx(1.0, abs=1e-5)
    assert 3 not in idx.tolist() and bool((sc[:-1] >= sc[1:]).all())
    # a boolean mask selects the same heads
    idx_m, sc_m = head_methods.property_neighbours(S, torch.tensor([True, True, False]), 3, k=3)
    assert torch.equal(idx_m, idx) and torch.allclose(sc_m, sc)
    idx0, sc0 = head_methods.head_image_neighbours(S, 0, 3, k=2)
    assert set(idx0.tolist()) == {7, 12} and torch.allclose(sc0, torch.ones(2), atol=1e-5)
    idx1, _ = head_methods.head_image_neighbours(S, 1, -37, k=2)  # -37 is image 3
    assert set(idx1.tolist()) == {11, 12}
    # one head through head_methods.property_neighbours equals head_methods.head_image_neighbours
    assert torch.equal(head_methods.property_neighbours(S, 1, 3, k=2)[0], idx1)
    # the summed contributions decide: image 7 matches in head 0 only, so it ranks below 12
    scores_all = head_methods.property_neighbours(S, [0, 1], 3, k=39)
    assert scores_all[0].tolist().index(7) > 0
    assert len(set(scores_all[0].tolist())) == 39
    # numpy input and centring
    idx_np, _ = head_methods.property_neighbours(S.numpy(), [0, 1], 3, k=1, centre=True)
    assert idx_np.tolist() == [12]


def test_head_text_neighbours(neighbour_stack):
    S, t = neighbour_stack
    idx, sc = head_methods.head_text_neighbours(S, 2, t, k=2)
    assert idx.tolist() == [5, 9] and sc[0] == pytest.approx(1.0, abs=1e-5) and sc[1] > 0.99
    idx_all, _ = head_methods.head_text_neighbours(S, -1, t[None], k=40)
    assert sorted(idx_all.tolist()) == list(range(40))
    assert head_methods.head_text_neighbours(S, 0, t, k=2)[0].tolist() != [5, 9]


def test_neighbour_errors(neighbour_stack):
    S, t = neighbour_stack
    with pytest.raises(ValueError):
        head_methods.property_neighbours(S, [0], 3, k=40)  # k >= N
    with pytest.raises(ValueError):
        head_methods.property_neighbours(S, [0], 3, k=0)
    with pytest.raises(IndexError):
        head_methods.property_neighbours(S, [0], 40, k=2)
    with pytest.raises(IndexError):
        head_methods.property_neighbours(S, [3], 0, k=2)
    with pytest.raises(ValueError):
        head_methods.property_neighbours(S, [], 0, k=2)
    with pytest.raises(ValueError):
        head_methods.property_neighbours(S, torch.tensor([True, False]), 0, k=2)
    with pytest.raises(ValueError):
        head_methods.property_neighbours(S, torch.zeros(3, dtype=torch.bool), 0, k=2)
    with pytest.raises(ValueError):
        head_methods.property_neighbours(S[0], [0], 0, k=2)
    with pytest.raises(IndexError):
        head_methods.head_image_neighbours(S, -4, 0, k=2)
    with pytest.raises(ValueError):
        head_methods.head_text_neighbours(S, 0, t[:8], k=2)
    with pytest.raises(ValueError):
        head_methods.head_text_neighbours(S, 0, t, k=41)
    with pytest.raises(IndexError):
        head_methods.head_text_neighbours(S, 3, t, k=2)


# ---------------------------------------------------------------------------------------------
# The reference code's and the follow-up study's variants
# ---------------------------------------------------------------------------------------------


def test_neighbours_by_dot_product():
    g = torch.Generator().manual_seed(8)
    S = torch.randn(2, 30, 8, generator=g, dtype=F64)
    S[0, 4] = 0.1 * S[0, 2]  # same direction as image 2, small: first by cosine, far down by dot
    S[0, 9] = 5 * S[0, 2] + 0.5 * torch.randn(8, generator=g, dtype=F64)  # long, nearly aligned
    s = S[0]
    dots = s @ s[2]
    dots[2] = -math.inf
    want = torch.argsort(dots, descending=True)[:4]
    idx, sc = head_methods.head_image_neighbours(S, 0, 2, k=4, score="dot")
    assert idx.tolist() == want.tolist() and idx[0] == 9
    torch.testing.assert_close(sc, (s @ s[2])[want])
    assert head_methods.head_image_neighbours(S, 0, 2, k=1)[0].tolist() == [4]  # cosine: the short twin
    # several heads: the dot product of the summed contributions, centred if asked
    summed = S.sum(0) - S.sum(0).mean(0)
    d = summed @ summed[5]
    d[5] = -math.inf
    idx, _ = head_methods.property_neighbours(S, [0, 1], 5, k=3, score="dot", centre=True)
    assert idx.tolist() == torch.argsort(d, descending=True)[:3].tolist()
    # texts: the text as given, not normalised (the ranking is the same either way)
    t = torch.randn(8, generator=g, dtype=F64)
    idx, sc = head_methods.head_text_neighbours(S, 1, 3 * t, k=5, score="dot")
    assert idx.tolist() == torch.argsort(S[1] @ t, descending=True)[:5].tolist()
    torch.testing.assert_close(sc, (S[1] @ (3 * t))[idx])
    with pytest.raises(ValueError, match="score must be"):
        head_methods.property_neighbours(S, [0], 2, k=2, score="euclid")
    with pytest.raises(ValueError, match="score must be"):
        head_methods.head_text_neighbours(S, 0, t, k=2, score="euclid")


def _roles(table):
    """Head roles from a hand-made table: one row of text tags per head."""
    return [head_methods.HeadRole(11, h, None, 0.0, text_properties=list(tags)) for h, tags in enumerate(table)]


def test_entanglement_across_heads_by_hand():
    # roles: colour, colour, shape, colour, texture, and one head with no property
    table = [["colour"] * 3 + ["shape"], ["colour", "colour", "shape", "shape"], ["shape"] * 4,
             ["colour", "texture", "colour", "other"], ["texture", "texture", "shape", "shape"], ["other"] * 4]
    s = head_methods.interpretability_scores(_roles(table), entanglement="across_heads")
    # three colour heads share their property with two others; of the 5 heads with a role,
    # sum_p n_p (n_p - 1) = 3 * 2 = 6 ordered pairs of the 5 * 4 share a property
    assert s.heads_per_property == {"colour": 3, "shape": 1, "texture": 1}
    assert s.heads_sharing == [2, 2, 0, 2, 0, 0]
    assert s.across_heads_entanglement == pytest.approx(6 / 20)
    assert s.entanglement == s.across_heads_entanglement and s.entanglement_kind == "across_heads"
    # the within-head count is kept under its own name and stays the default
    within = head_methods.interpretability_scores(_roles(table))
    assert within.entanglement == within.within_head_entanglement == s.within_head_entanglement
    # properties covered twice or more: 1, 2, 1, 1, 2, 0 -> (0 + 1 + 0 + 0 + 1 + 0) / 6 / (3 - 1)
    assert within.within_head_entanglement == pytest.approx(2 / 6 / 2)
    assert within.across_heads_entanglement == pytest.approx(0.3)
    # one head per property: disentangled across heads, however mixed each head is
    own = head_methods.interpretability_scores(_roles([["colour", "shape"] * 2, ["shape", "colour", "shape", "colour"],
                                          ["texture"] * 4]), entanglement="across_heads")
    assert own.entanglement == 0.0 and own.within_head_entanglement > 0
    # every head on one property: fully entangled across heads, each head pure
    same = head_methods.interpretability_scores(_roles([["colour"] * 4] * 4), entanglement="across_heads")
    assert same.entanglement == 1.0 and same.within_head_entanglement == 0.0 and same.association == 1.0
    assert head_methods.interpretability_scores(_roles([["colour"] * 2]), entanglement="across_heads").entanglement == 0.0
    # the old name claimed the study's formula, which could not be checked: a clear error, no alias
    with pytest.raises(ValueError, match="renamed 'across_heads'"):
        head_methods.interpretability_scores(_roles(table), entanglement="paper")
    with pytest.raises(ValueError, match="entanglement must be"):
        head_methods.interpretability_scores(_roles(table), entanglement="both")


def test_fit_basis_passes_the_span_through(terms_case):
    terms, clf, y, R = terms_case
    stack, _ = head_methods.stack_heads(terms, [-1])
    a = head_methods.fit_basis(stack, "textspan", 3, pool_embeddings=R, rank=20, span="paper")
    b = textspan(stack, R, 3, 20, span="paper")
    assert torch.equal(a.indices, b.indices) and int(a.span_rank[0]) == 20
    got = head_methods.reconstruction_accuracy(terms, clf, y, [-1], "textspan", [1, 3], R, rank=20, span="paper")
    assert got == head_methods.reconstruction_accuracy(terms, clf, y, [-1], "textspan", [1, 3], result=b)


# ---------------------------------------------------------------------------------------------
# Search scored on known factors; agreement of two neighbour scores
# ---------------------------------------------------------------------------------------------


def test_search_agreement_by_hand():
    g = torch.Generator().manual_seed(3)
    N, d = 40, 6
    colour = torch.arange(N) % 4  # four colours, ten images each
    shape = torch.arange(N) // 20  # two shapes
    centres = 10 * torch.randn(4, d, generator=g, dtype=F64)
    S = torch.stack([centres[colour] + 0.01 * torch.randn(N, d, generator=g, dtype=F64),  # a colour head
                     torch.randn(N, d, generator=g, dtype=F64)])  # a noise head
    res = head_methods.search_agreement(S, {"colour": [0], "noise": [1]}, {"colour": colour, "shape": shape.numpy()}, k=5)
    # the colour head's neighbours all share the query's colour
    assert res.agreement["colour"]["colour"] == 1.0
    assert res.best_factor("colour") == "colour"
    # chance: 9 of the 39 other images share a colour, 19 of 39 a shape
    assert math.isclose(res.chance["colour"], 9 / 39) and math.isclose(res.chance["shape"], 19 / 39)
    assert math.isclose(res.lift("colour", "colour"), 39 / 9)
    # equal, query by query, to head_methods.property_neighbours
    for q in (0, 7, 33):
        one = head_methods.search_agreement(S, {"noise": [1]}, {"shape": shape}, k=5, queries=[q])
        idx, _ = head_methods.property_neighbours(S, [1], q, k=5, centre=True)
        assert math.isclose(one.agreement["noise"]["shape"], float((shape[idx] == shape[q]).double().mean()))
    with pytest.raises(ValueError, match="values for"):
        head_methods.search_agreement(S, {"c": [0]}, {"colour": colour[:-1]})
    with pytest.raises(ValueError):
        head_methods.search_agreement(S, {}, {"colour": colour})
    with pytest.raises(ValueError):
        head_methods.search_agreement(S, {"c": [0]}, {"colour": colour}, k=N)


def test_neighbour_overlap():
    g = torch.Generator().manual_seed(4)
    S = torch.randn(2, 30, 8, generator=g, dtype=F64)
    # unit-norm contributions: dot product and cosine rank alike
    U = torch.nn.functional.normalize(S, dim=-1)
    assert head_methods.neighbour_overlap(U, 0, k=4) == 1.0
    # a score with itself agrees fully; by hand against head_methods.property_neighbours for a few queries
    assert head_methods.neighbour_overlap(S, [0, 1], k=3, scores=("dot", "dot")) == 1.0
    qs = [1, 5, 9]
    want = sum(len(set(head_methods.property_neighbours(S, 0, q, 4, score="dot")[0].tolist())
                   & set(head_methods.property_neighbours(S, 0, q, 4)[0].tolist())) / 4 for q in qs) / 3
    assert math.isclose(head_methods.neighbour_overlap(S, 0, k=4, queries=qs), want)
    with pytest.raises(ValueError, match="score must be"):
        head_methods.neighbour_overlap(S, 0, scores=("dot", "euclid"))
    # the first score on other terms: each image's terms scaled by its own factor (the reference's
    # cosine scale) change the dot product's neighbours, never the cosine's
    scale = torch.rand(30, generator=g, dtype=F64)[None, :, None] + 0.5
    want = sum(len(set(head_methods.property_neighbours(S * scale, 0, q, 4, score="dot")[0].tolist())
                   & set(head_methods.property_neighbours(S, 0, q, 4)[0].tolist())) / 4 for q in qs) / 3
    assert math.isclose(head_methods.neighbour_overlap(S, 0, k=4, queries=qs, first_stack=S * scale), want)
    assert head_methods.neighbour_overlap(S, 0, k=4, scores=("cosine", "cosine"), first_stack=S * scale) == 1.0
    with pytest.raises(ValueError, match="must have the shape"):
        head_methods.neighbour_overlap(S, 0, first_stack=S[:, :10])


# ---------------------------------------------------------------------------------------------
# TextSpan on the reference code's scale (fitted and scored on terms / |embedding|)


def _reference_completeness(t, classifier, texts, last, iters, rank):
    """The reference code's completeness run, transcribed from its behaviour in plain NumPy:
    every term divided by its image's embedding norm with the ln_post bias shared over the
    2L + 1 summands (a layer's share split over its heads), attention heads of the earlier
    layers mean-ablated, each head of the last layers replaced in-sample by its iterative
    removal (uncentred SVD, top-``rank`` rows, text projection, centring, greedy std argmax,
    Gram-Schmidt), everything summed. Returns the predictions and the picks per head."""
    heads, embed, mlp, const = (x.numpy() for x in (t.heads, t.embed, t.mlp, t.const))
    N, L, H, d = heads.shape
    e = embed + heads.sum((1, 2)) + mlp.sum(1) + const
    nrm = np.linalg.norm(e, axis=-1)
    share = const / (2 * L + 1)
    attns = (heads + share / H) / nrm[:, None, None, None]
    mlps = np.concatenate([(embed + share)[:, None], mlp + share], 1) / nrm[:, None, None]
    for li in range(L - last):
        attns[:, li] = attns[:, li].mean(0, keepdims=True)
    picks = []
    for li in range(L - last, L):
        for h in range(H):
            data = attns[:, li, h]
            vh = np.linalg.svd(data, full_matrices=False)[2][:rank]
            T = (vh.T @ np.linalg.inv(vh @ vh.T) @ vh @ texts.T).T
            mean = data.mean(0, keepdims=True)
            X = data - mean
            rec = np.repeat(mean, N, 0)
            chosen = []
            for _ in range(iters):
                j = int(np.argmax((X @ T.T).std(0, ddof=1)))
                u = T[j]
                coef = X @ u / (u @ u)
                rec = rec + coef[:, None] * u
                X = X - coef[:, None] * u
                T = T - (T @ u / (u @ u))[:, None] * u
                chosen.append(j)
            attns[:, li, h] = rec
            picks.append(chosen)
    emb = mlps.sum(1) + attns.sum((1, 2))
    return (emb @ classifier.T).argmax(-1), picks


@pytest.mark.parametrize("rank", [80, 4])
def test_reconstruction_accuracy_on_the_reference_scale_matches_a_transcription(rank):
    g = torch.Generator().manual_seed(11)
    N, L, H, d, M, C = 40, 3, 2, 6, 12, 4
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    heads = r(N, L, H, d)
    embed = r(N, d)
    scale = torch.linspace(1, 10, N, dtype=F64)[:, None]  # embeddings of very different norms
    embed = embed / embed.norm(dim=-1, keepdim=True) * scale * 3
    t = DirectTerms(embed=embed, attn=heads.sum(2), mlp=0.5 * r(N, L, d), const=r(d), heads=heads)
    texts = torch.nn.functional.normalize(r(M, d), dim=-1)
    clf = torch.nn.functional.normalize(r(C, d), dim=-1)
    y = torch.randint(0, C, (N,), generator=g)
    layers = [1, 2]
    stack = head_methods.stack_heads(t, layers, scale="paper")[0]
    fitted = textspan(stack, texts, 3, rank, span="paper")
    for n in (1, 2, 3):
        pred, picks = _reference_completeness(t, clf.numpy(), texts.numpy(), len(layers), n, rank)
        assert fitted.indices[:, :n].tolist() == picks
        want = float((torch.from_numpy(pred) == y).double().mean())
        got = head_methods.reconstruction_accuracy(t, clf, y, layers, "textspan", [n], texts, rank=rank, span="paper",
                                      scale="paper")
        assert got[n] == pytest.approx(want, abs=1e-6)  # accuracy() averages in float32
        emb = head_methods.reconstructed_embeddings(t, layers, replace(fitted, scale="paper"), n, scale="paper")
        assert (emb @ clf.T).argmax(-1).tolist() == pred.tolist()
    # the raw scale is another fit: its picks differ somewhere on these images of unequal norms
    raw = textspan(head_methods.stack_heads(t, layers)[0], texts, 3, rank, span="paper")
    assert raw.indices.tolist() != fitted.indices.tolist()


def _two_scales_case():
    """One head (d = 3, const = 0): images 0, 1 with |e| = 10 write +1 / -1 along e0, images 2, 3
    with |e| = 1 write +0.5 / -0.5 along e1; the embed term along e2 sets the norms."""
    head = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 0.5, 0], [0, -0.5, 0]], dtype=F64)
    norms = torch.tensor([10.0, 10.0, 1.0, 1.0], dtype=F64)
    embed = torch.zeros(4, 3, dtype=F64)
    embed[:, 2] = (norms ** 2 - head.square().sum(-1)).sqrt()
    t = DirectTerms(embed=embed, attn=head[:, None].clone(), mlp=torch.zeros(4, 1, 3, dtype=F64),
                    const=torch.zeros(3, dtype=F64), heads=head[:, None, None].clone())
    return t, torch.eye(3, dtype=F64)


def test_the_scale_changes_the_first_pick(monkeypatch):
    import helpers.methods.heads as heads_module

    t, R = _two_scales_case()
    for span in ("numerical", "paper"):
        # raw: variance 0.5 along e0 against 0.125 along e1; reference scale: 0.005 against 0.125
        assert textspan(head_methods.stack_heads(t, [0])[0], R, 1, span=span).indices.tolist() == [[0]]
        assert textspan(head_methods.stack_heads(t, [0], scale="paper")[0], R, 1, span=span).indices.tolist() == [[1]]
    fits = []
    real = heads_module.fit_basis

    def spy(*args, **kwargs):
        fits.append(real(*args, **kwargs))
        return fits[-1]

    monkeypatch.setattr(heads_module, "fit_basis", spy)
    clf, y = torch.eye(3, dtype=F64)[:2], torch.tensor([0, 0, 1, 1])
    for scale, pick in (("raw", 0), ("paper", 1)):
        head_methods.reconstruction_accuracy(t, clf, y, [0], "textspan", [1], R, scale=scale)
        assert fits[-1].indices.tolist() == [[pick]]
    # a basis records its scale, and one fitted on the other scale is refused
    on_paper = replace(fits[-1], scale="paper")
    acc = head_methods.reconstruction_accuracy(t, clf, y, [0], "textspan", [1], result=on_paper, scale="paper")
    assert set(acc) == {1}
    with pytest.raises(ValueError, match="fitted on the 'paper' scale"):
        head_methods.reconstruction_accuracy(t, clf, y, [0], "textspan", [1], result=on_paper, scale="raw")
    with pytest.raises(ValueError, match="fitted on the 'paper' scale"):
        head_methods.reconstructed_embeddings(t, [0], on_paper, scale="raw")
    with pytest.raises(ValueError, match="'raw', 'paper'"):
        head_methods.reconstruction_accuracy(t, clf, y, [0], "textspan", [1], R, scale="cosine")
    with pytest.raises(ValueError, match="'raw', 'paper'"):
        head_methods.reconstructed_embeddings(t, [0], fits[-1], scale="unit")


# ---------------------------------------------------------------------------------------------
# Pooling-head TextSpan (attention-pooled towers): full width, raw scale


def test_pool_head_textspan_at_full_width():
    from helpers.methods.heads import pool_head_textspan

    g = torch.Generator().manual_seed(9)
    N, Hp, d, M = 12, 3, 5, 9
    P = torch.randn(N, Hp, d, generator=g, dtype=F64) + torch.randn(1, Hp, d, generator=g, dtype=F64)
    R = torch.nn.functional.normalize(torch.randn(M, d, generator=g, dtype=F64), dim=-1)
    res = pool_head_textspan(P, R)
    assert res.indices.shape == (Hp, d) and res.scale == "raw"
    # d texts rebuild every head exactly
    torch.testing.assert_close(res.reconstruct(P.transpose(0, 1)), P.transpose(0, 1), rtol=0, atol=1e-10)
    # with N >= d the projection is the identity: the first direction is the chosen text itself
    first = R[res.indices[:, 0]]
    torch.testing.assert_close(res.directions[:, 0], first, rtol=0, atol=1e-10)
    # the first pick is the text whose scores vary most over the images (the reference's rule)
    for h in range(Hp):
        X = P[:, h] - P[:, h].mean(0)
        assert int(res.indices[h, 0]) == int((X @ R.T).std(0).argmax())
    # fewer images than dimensions: at most N texts, which still rebuild the (N-dimensional) data
    few = pool_head_textspan(P[:3], R)
    assert few.indices.shape == (Hp, 3)
    torch.testing.assert_close(few.reconstruct(P[:3].transpose(0, 1)), P[:3].transpose(0, 1), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="n must be"):
        pool_head_textspan(P[:3], R, n=4)
    with pytest.raises(ValueError, match="pool_heads=True"):
        pool_head_textspan(_planted_terms()[0], R)
