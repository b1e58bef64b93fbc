"""LRP and partial LRP: the relevance rules on hand-computed cases, conservation of the score
through a random-init ViT-B-32 (float64), the segmentation maps, and bad input."""

import warnings

import numpy as np
import open_clip
import pytest
import torch

import helpers.engine.models  # noqa: F401  (registers world-clip with open_clip)
from helpers.methods.lrp import _linear, _product, _split, lrp, lrp_maps
from helpers.methods.segmentation import segmentation_maps

F64 = torch.float64


@pytest.fixture(scope="module")
def b32():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model("ViT-B-32").eval().double()


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return open_clip.create_model("world-clip").eval().double()  # 64 px, 8 x 8 patches of 8 px


def test_rules_by_hand():
    # y = x W^T with x = (1, -2), W = [[3, 1], [-1, 2]]: contributions of output 0 are 3 and -2,
    # of output 1 are -1 and -4; only positive products share: output 0 gives all to input 0,
    # output 1 has none positive (its relevance is lost)
    x = torch.tensor([[1.0, -2.0]], dtype=F64)
    w = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], dtype=F64)
    r = _linear(x, w, torch.tensor([[0.6, 0.5]], dtype=F64), 0.0)
    torch.testing.assert_close(r, torch.tensor([[0.6, 0.0]], dtype=F64))
    # with W = [[3, -1], [1, 2]]: output 0 contributions 3 and 2 (both positive) share 0.5 as 3:2
    w = torch.tensor([[3.0, -1.0], [1.0, 2.0]], dtype=F64)
    r = _linear(x, w, torch.tensor([[0.5, 0.0]], dtype=F64), 0.0)
    torch.testing.assert_close(r, torch.tensor([[0.3, 0.2]], dtype=F64))
    # a residual sum 2 + (-1) = 1 with relevance 3: shares 2/1 and -1/1
    a, b = _split(torch.tensor([2.0], dtype=F64), torch.tensor([-1.0], dtype=F64), torch.tensor([3.0], dtype=F64), 0.0)
    assert (float(a), float(b)) == (6.0, -3.0)
    # o = a @ b for 1x2 @ 2x1: o = 1*3 + 2*4 = 11; each factor gets half of R shared 3:8
    ra, rb = _product(torch.tensor([[1.0, 2.0]], dtype=F64), torch.tensor([[3.0], [4.0]], dtype=F64),
                      torch.tensor([[11.0]], dtype=F64), 0.0)
    torch.testing.assert_close(ra, torch.tensor([[1.5, 4.0]], dtype=F64))
    torch.testing.assert_close(rb, torch.tensor([[1.5], [4.0]], dtype=F64))


@pytest.mark.slow
def test_relevance_is_conserved_through_vit_b32(b32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 224, 224, generator=g, dtype=F64)
    t = torch.nn.functional.normalize(torch.randn(1, 512, generator=g, dtype=F64), dim=-1)
    with torch.no_grad():
        before = b32.encode_image(x)
    res = lrp(b32, x, t)
    cos = (torch.nn.functional.normalize(before, dim=-1) * t).sum(-1)
    torch.testing.assert_close(res.score, cos, rtol=0, atol=1e-12)
    # tolerance: 1e-9 of the score (float64, denominators guarded by eps = 1e-12)
    tol = 1e-9 * float(cos.abs().max())
    torch.testing.assert_close(res.tokens.sum(-1), cos, rtol=0, atol=tol)
    torch.testing.assert_close(res.pixels.sum((1, 2)) + res.absorbed, cos, rtol=0, atol=tol)
    assert res.pixels.shape == (1, 224, 224) and res.tokens.shape == (1, 50)
    assert res.attention.shape == (1, 12, 50) and torch.isfinite(res.pixels).all()
    # partial LRP is the last block of the same pass
    part = lrp(b32, x, t, partial=True)
    torch.testing.assert_close(part.attention, res.attention, rtol=1e-10, atol=1e-15)
    assert part.pixels is None and part.tokens is None
    # the hooks are gone and nothing kept a gradient
    with torch.no_grad():
        assert torch.equal(b32.encode_image(x), before)
    assert all(p.grad is None for p in b32.parameters())


def test_maps_of_the_grid(small):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(10, 3, 64, 64, generator=g, dtype=F64)  # more than one chunk of 8
    d = small.visual.output_dim
    t = torch.nn.functional.normalize(torch.randn(10, d, generator=g, dtype=F64), dim=-1)
    full = lrp(small, x, t)
    torch.testing.assert_close(full.pixels.sum((1, 2)) + full.absorbed, full.score, rtol=0, atol=1e-10)
    maps = lrp_maps(small, x, t)
    assert maps.shape == (10, 8, 8) and torch.isfinite(maps).all()
    # each patch's value is the relevance of its 8 x 8 pixels
    torch.testing.assert_close(maps[9, 3, 5], full.pixels[9, 24:32, 40:48].sum())
    part = lrp_maps(small, x, t, partial=True)
    assert part.shape == (10, 8, 8) and (part >= 0).all()
    torch.testing.assert_close(part, full.attention.clamp_min(0).mean(1)[:, 1:].reshape(10, 8, 8))
    # through segmentation_maps, with the class texts and labels
    emb = torch.nn.functional.normalize(torch.randn(3, d, generator=g, dtype=F64), dim=-1)
    via = segmentation_maps(small, x[:2], emb, "lrp", labels=[2, 0])
    torch.testing.assert_close(via, lrp_maps(small, x[:2], emb[[2, 0]]))
    assert segmentation_maps(small, x[:2], emb, "partial_lrp").shape == (2, 8, 8)


def test_targets_predicted_from_the_same_pass(small):
    """With ``classes`` and no targets, each image's target is its zero-shot prediction, read off
    the propagation's own forward pass: the same relevance as the predicted class's text given
    as the target, with one forward pass of the tower per chunk (not two)."""
    from helpers.methods.segmentation import predicted_classes

    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 3, 64, 64, generator=g, dtype=F64)  # two chunks of lrp_maps (8 and 1)
    with torch.no_grad():  # five of the images' own directions (so they do not all pick one), not unit length
        e = small.encode_image(x)
    E = (e[[0, 3, 6, 8, 2]] - e.mean(0)) * torch.linspace(1.0, 1.2, 5, dtype=F64)[:, None]
    pred = predicted_classes(small, x, E)
    assert len(set(pred[:4].tolist())) > 1  # the images do not all pick one class
    unit = torch.nn.functional.normalize(E[pred], dim=-1)
    for rules in ("course", "lrp", "ours"):
        got, want = lrp(small, x[:4], None, classes=E, rules=rules), lrp(small, x[:4], unit[:4], rules=rules)
        assert torch.equal(got.labels, pred[:4]) and want.labels is None
        for field in ("score", "pixels", "attention", "absorbed"):
            torch.testing.assert_close(getattr(got, field), getattr(want, field), rtol=0, atol=1e-12)
    calls = []
    hook = small.visual.register_forward_hook(lambda *_: calls.append(1))
    try:
        for partial in (False, True):
            calls.clear()
            got = lrp_maps(small, x, None, partial=partial, classes=E)
            assert len(calls) == 2  # one pass per chunk of 8
            torch.testing.assert_close(got, lrp_maps(small, x, unit, partial=partial), rtol=0, atol=1e-12)
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="not both"):
        lrp(small, x, unit, classes=E)
    with pytest.raises(ValueError, match="not both"):
        lrp(small, x, None)
    with pytest.raises(ValueError, match=r"classes must be finite \[C, "):
        lrp(small, x, None, classes=E[:, :3])
    with pytest.raises(ValueError, match="classes must be finite"):
        lrp(small, x, None, classes=E * float("nan"))


def test_bad_input(small):
    d = small.visual.output_dim
    x = torch.zeros(1, 3, 64, 64, dtype=F64)
    t = torch.ones(1, d, dtype=F64)
    with pytest.raises(ValueError, match="expects"):
        lrp(small, torch.zeros(1, 3, 32, 32, dtype=F64), t)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        lrp(small, torch.zeros(3, 64, 64, dtype=F64), t)
    with pytest.raises(ValueError, match="one text embedding per image"):
        lrp(small, x, torch.ones(2, d, dtype=F64))
    with pytest.raises(ValueError, match="non-zero"):
        lrp(small, x, torch.zeros(1, d, dtype=F64))
    with pytest.raises(ValueError, match="no images"):
        lrp(small, x[:0], t)
    with pytest.raises(helpers.engine.models.UnsupportedModelError):
        lrp(torch.nn.Linear(3, 3), x, t)


# ---------------------------------------------------------------------------------------------
# Chefer et al.'s rule sets (layers_lrp, layers_ours): hand-computed cases and a transcription


def _t(x):
    return torch.tensor(x, dtype=F64)


def test_chefer_linear_rules_by_hand():
    from helpers.methods.lrp import _rules

    separate, joint = _rules("lrp", 0.0), _rules("ours", 0.0)
    x, w, r = _t([1, -2, 0.5]), _t([[1, -1, 2], [-0.5, 1, 1]]), _t([1, 0.5])
    # Z1 = x+ W+ = (2, 0.5), Z2 = x- W- = (2, 0): output 1's negative part passes nothing
    torch.testing.assert_close(_linear(x, w, r, separate), _t([0.5, 1.0, 1.0]), rtol=0, atol=1e-8)
    torch.testing.assert_close(_linear(x, w, r, joint), _t([0.25, 0.5, 0.75]), rtol=0, atol=1e-8)
    torch.testing.assert_close(_linear(x, w, r, 0.0), _linear(x, w, r, joint))  # the course's rule is the joint one
    x, w, r = _t([2, -1, 1, -0.5]), _t([[0.5, -1, -0.25, 2], [-1, 0.5, 1.5, -2]]), _t([3, -1])
    sep = _linear(x, w, r, separate)
    torch.testing.assert_close(sep, _t([3, 3, -1, -1]), rtol=0, atol=1e-8)
    assert float(sep.sum()) == pytest.approx(2 * float(r.sum()), abs=1e-8)  # not conserved: twice the input
    torch.testing.assert_close(_linear(x, w, r, joint), _t([1.5, 1.5, -0.6, -0.4]), rtol=0, atol=1e-8)


def test_a_denominator_that_cannot_be_negative_gets_the_guards_value():
    """The linear rule's denominators ``x+ W+ + x- W-`` (and each part) are sums of products of
    like signs: never below 0. There ``z + eps`` is what the sign-aware guard gives, bit for bit,
    -0.0 included; Chefer's stabiliser and ``eps = 0`` keep their own division."""
    from helpers.methods.lrp import _rules

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 6, 5, generator=g, dtype=F64), torch.randn(3, 5, generator=g, dtype=F64)
    x[0, 0] = 0.0
    x[0, 1] = -0.0
    z = x.clamp_min(0) @ w.clamp_min(0).T + x.clamp_max(0) @ w.clamp_max(0).T
    z = torch.cat([z.flatten(), _t([0.0, -0.0, 1e-300])])
    assert bool((z >= 0).all())
    r = torch.randn(z.shape, generator=g, dtype=F64)
    for rules in (_rules("course", 1e-6), _rules("course", 0.0), _rules("lrp", 0.0), _rules("ours", 0.0)):
        assert torch.equal(rules.div_nonnegative(r, z), rules.div(r, z)), rules


def test_chefer_add_and_product_by_hand():
    from helpers.methods.lrp import _rules

    a, b, r = _t([[[1, -2], [0.5, 3]]]), _t([[[2, 1], [-0.5, 1]]]), _t([[[1, 1], [2, -1]]])
    ra, rb = _split(a, b, r, _rules("lrp", 0.0))  # z-rule; the a + b = 0 entry passes nothing
    torch.testing.assert_close(ra, _t([[[1 / 3, 2], [0, -0.75]]]), rtol=0, atol=1e-8)
    torch.testing.assert_close(rb, _t([[[2 / 3, -1], [0, -0.25]]]), rtol=0, atol=1e-8)
    ra, rb = _split(a, b, r, _rules("ours", 0.0))  # rescaled to |sum a| : |sum b| of sum R
    torch.testing.assert_close(ra, _t([[[0.461538461, 2.769230765], [0, -1.038461536]]]), rtol=0, atol=1e-8)
    torch.testing.assert_close(rb, _t([[[-0.923076923, 1.384615386], [0, 0.346153846]]]), rtol=0, atol=1e-8)
    assert float(ra.sum() + rb.sum()) == pytest.approx(3.0, abs=1e-8)
    ra, rv = _product(_t([[0.7, 0.3], [0.2, 0.8]]), _t([[1, -1], [2, 0.5]]), _t([[1, 0], [0.5, 0.5]]),
                      _rules("lrp", 0.0))
    torch.testing.assert_close(ra, _t([[0.269230769, 0.230769231], [-0.222222221, 0.722222220]]), rtol=0, atol=1e-8)
    torch.testing.assert_close(rv, _t([[0.297008547, -0.249999999], [0.452991453, 0.499999998]]), rtol=0, atol=1e-8)


def test_chefer_patch_embedding_rule_by_hand():
    from types import SimpleNamespace

    from helpers.methods.lrp import _patch_pixels, _rules

    conv = torch.nn.Conv2d(3, 2, 2, stride=2, bias=False).double().requires_grad_(False)
    with torch.no_grad():
        conv.weight.copy_(_t([[[[1, -0.5], [0, 0.5]], [[-1, 0.25], [0.5, 0]], [[0.5, 0.5], [-0.25, 1]]],
                              [[[-0.5, 1], [0.25, -1]], [[0, 0.5], [-0.5, 1]], [[1, -1], [0.5, 0.5]]]]))
    x = _t([[[[0.5, -1], [0.25, 1]], [[-0.5, 0], [1, -0.25]], [[0.75, 0.5], [-1, 0]]]])
    pix = _patch_pixels(SimpleNamespace(conv1=conv), x, _t([[[1, 0.5]]]), _rules("lrp", 0.0))
    # lo = -1, hi = 1, Za = (9.375, 4.5625): the z^B rule's shares, channels summed
    torch.testing.assert_close(pix, _t([[[0.632511415, 0.322922374], [0.194246575, 0.350319635]]]),
                               rtol=0, atol=1e-8)
    assert float(pix.sum()) == pytest.approx(1.5, abs=1e-8)


def _np_chefer_lrp(visual, x, t, scale):
    """Chefer et al.'s LRP (layers_lrp) through an open_clip tower, transcribed in NumPy for one
    image ``x [3, H, W]``: a forward pass from the weights, then every layer's rule in turn.
    Returns the pixel relevance ``[H, W]``, the last block's attention relevance ``[H, T, T]``
    and the relevance reaching the first block's input."""
    from math import erf

    P = lambda p: p.detach().numpy().astype(np.float64)  # noqa: E731

    def ln(z, mod):
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + mod.eps) * P(mod.weight) + P(mod.bias)

    def sdiv(a, b):
        den = np.clip(b, 1e-9, None) + np.clip(b, None, 1e-9)
        den = den + (den == 0) * 1e-9
        return a / den * (b != 0)

    def lin(xx, w, r):
        wp, wn, xp, xn = np.clip(w, 0, None), np.clip(w, None, 0), np.clip(xx, 0, None), np.clip(xx, None, 0)
        return xp * (sdiv(r, xp @ wp.T) @ wp) + xn * (sdiv(r, xn @ wn.T) @ wn)

    def add(a, b, r):
        s = sdiv(r, a + b)
        return a * s, b * s

    def mm(a, b, r):
        s = sdiv(r, a @ b)
        return a * (s @ b.T) / 2, b * (a.T @ s) / 2

    xi = x.numpy()
    conv = P(visual.conv1.weight)
    D, C, p, _ = conv.shape
    g = xi.shape[-1] // p
    cols = np.stack([xi[:, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1) for i in range(g) for j in range(g)])
    wc = conv.reshape(D, -1)
    tok = np.concatenate([P(visual.class_embedding)[None], cols @ wc.T])
    pos = P(visual.positional_embedding)
    h = ln(tok + pos, visual.ln_pre)
    T = h.shape[0]
    saved = []
    for blk in visual.transformer.resblocks:
        at, H = blk.attn, blk.attn.num_heads
        dh = D // H
        x1 = ln(h, blk.ln_1)
        qkv = x1 @ P(at.in_proj_weight).T + P(at.in_proj_bias)
        q, k, v = (qkv[:, i * D:(i + 1) * D].reshape(T, H, dh).transpose(1, 0, 2) for i in range(3))
        logits = q @ k.transpose(0, 2, 1) * dh ** -0.5
        a = np.exp(logits - logits.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        o = (a @ v).transpose(1, 0, 2).reshape(T, D)
        att = o @ P(at.out_proj.weight).T + P(at.out_proj.bias)
        mid = h + att
        x2 = ln(mid, blk.ln_2)
        pre = x2 @ P(blk.mlp.c_fc.weight).T + P(blk.mlp.c_fc.bias)
        hid = 0.5 * pre * (1 + np.vectorize(erf)(pre / np.sqrt(2)))
        mlp = hid @ P(blk.mlp.c_proj.weight).T + P(blk.mlp.c_proj.bias)
        saved.append((blk, h, x1, q, k, v, a, o, att, mid, x2, hid, mlp))
        h = mid + mlp
    post = ln(h[0], visual.ln_post)
    e = post @ P(visual.proj)
    u = e / np.linalg.norm(e)
    w_text = scale * t.numpy()
    # the head: the text classifier, then the projection, from 1 at the target logit
    r_u = lin(u[None], w_text[None], np.ones((1, 1)))[0]
    r_post = lin(post[None], P(visual.proj).T, r_u[None])[0]
    r = np.zeros((T, D))
    r[0] = post * sdiv(r_post, post)  # the class token's selection
    last_attention = None
    for blk, h, x1, q, k, v, a, o, att, mid, x2, hid, mlp in reversed(saved):
        H = blk.attn.num_heads
        dh = D // H
        r_mid, r_mlp = add(mid, mlp, r)
        r_x2 = lin(x2, P(blk.mlp.c_fc.weight), lin(hid, P(blk.mlp.c_proj.weight), r_mlp))
        r_mid = mid * (sdiv(r_mid, mid) + sdiv(r_x2, mid))  # the residual stream's copy
        r_h, r_att = add(h, att, r_mid)
        r_o = lin(o, P(blk.attn.out_proj.weight), r_att).reshape(T, H, dh).transpose(1, 0, 2)
        parts = [mm(a[i], v[i], r_o[i]) for i in range(H)]
        r_a = np.stack([pa for pa, _ in parts])
        r_v = np.stack([pv for _, pv in parts])
        if last_attention is None:
            last_attention = r_a
        qk = [mm(q[i], k[i].T, r_a[i]) for i in range(H)]
        r_q = np.stack([rq for rq, _ in qk])
        r_k = np.stack([rk.T for _, rk in qk])
        r_qkv = np.concatenate([z.transpose(1, 0, 2).reshape(T, D) for z in (r_q, r_k, r_v)], -1)
        r_x1 = lin(x1, P(blk.attn.in_proj_weight), r_qkv)
        r = h * (sdiv(r_h, h) + sdiv(r_x1, h))
    first = r.copy()
    r_tok, _ = add(tok, pos, r)  # ln_pre passes relevance through
    lo, hi = xi.min(), xi.max()
    wp, wn = np.clip(wc, 0, None), np.clip(wc, None, 0)
    za = cols @ wc.T - lo * wp.sum(1) - hi * wn.sum(1) + 1e-9
    s = r_tok[1:] / za
    r_cols = cols * (s @ wc) - lo * (s @ wp) - hi * (s @ wn)
    pix = np.zeros(xi.shape)
    for n, (i, j) in enumerate((i, j) for i in range(g) for j in range(g)):
        pix[:, i * p:(i + 1) * p, j * p:(j + 1) * p] = r_cols[n].reshape(C, p, p)
    return pix.sum(0), last_attention, first


@pytest.fixture(scope="module")
def two_blocks(small):
    import copy

    model = copy.deepcopy(small)
    model.visual.transformer.resblocks = torch.nn.ModuleList(list(model.visual.transformer.resblocks)[:2])
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # non-trivial layer-norm and bias parameters
        for name, prm in model.visual.named_parameters():
            if "ln" in name or name.endswith("bias"):
                prm.add_(0.1 * torch.randn(prm.shape, generator=g, dtype=prm.dtype))
    return model


def test_chefer_lrp_matches_a_numpy_transcription(two_blocks):
    g = torch.Generator().manual_seed(6)
    d = two_blocks.visual.output_dim
    x = torch.randn(2, 3, 64, 64, generator=g, dtype=F64)
    t = torch.nn.functional.normalize(torch.randn(2, d, generator=g, dtype=F64), dim=-1)
    res = lrp(two_blocks, x, t, rules="lrp")
    scale = float(two_blocks.logit_scale.detach().exp())
    with torch.no_grad():
        e = torch.nn.functional.normalize(two_blocks.encode_image(x), dim=-1)
    torch.testing.assert_close(res.score, scale * (e * t).sum(-1), rtol=0, atol=1e-10)
    assert torch.equal(res.start, torch.ones(2, dtype=F64))
    for i in range(2):
        pix, att, first = _np_chefer_lrp(two_blocks.visual, x[i], t[i], scale)
        top = float(np.abs(pix).max())
        np.testing.assert_allclose(res.pixels[i].numpy(), pix, rtol=1e-8, atol=1e-8 * top)
        np.testing.assert_allclose(res.attention[i].numpy(), att[:, 0], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(res.tokens[i].numpy(), first.sum(-1), rtol=1e-8, atol=1e-10)
    # the separate normalisation does not conserve relevance: the tokens carry far more than the start
    assert (res.tokens.sum(-1) - res.start).abs().min() > 0.5
    # the course's rules on the same tower still conserve it
    course = lrp(two_blocks, x, t)
    torch.testing.assert_close(course.pixels.sum((1, 2)) + course.absorbed, course.score, rtol=0, atol=1e-10)


def test_ours_rules_keep_every_blocks_attention_relevance(two_blocks):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 64, 64, generator=g, dtype=F64)
    t = torch.nn.functional.normalize(torch.randn(2, two_blocks.visual.output_dim, generator=g, dtype=F64), dim=-1)
    res = lrp(two_blocks, x, t, rules="ours", pixels=False, all_attention=True)
    assert len(res.attention_maps) == 2 and res.attention_maps[0].shape == (2, 4, 65, 65)
    torch.testing.assert_close(res.attention_maps[-1][:, :, 0], res.attention)
    with pytest.raises(ValueError, match="rules must be"):
        lrp(two_blocks, x, t, rules="alpha2beta1")
    with pytest.raises(ValueError, match="all_attention"):
        lrp(two_blocks, x, t, partial=True, all_attention=True)
