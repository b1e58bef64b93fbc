"""Second-order effects of neurons: exactness, the factored form, streaming statistics, uses."""

import warnings

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from helpers.engine.models import UnsupportedModelError
from helpers.methods.second_order import (
    ABLATIONS,
    NeuronDirections,
    SecondOrder,
    SparseTexts,
    ablated_embeddings,
    ablation_studies,
    ablation_study,
    adversarial_words,
    compare_rates,
    direct_path_reference,
    exactness,
    image_concepts,
    layer_effects,
    neuron_segmentation_maps,
    prepare_vocabulary,
    rank_neurons_between,
    significance,
    sparse_text_decomposition,
    stream_neuron_stats,
    top_image_lift,
)

F64_REL = 1e-10


def _model(name, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(name, **kw)
    return model.eval().to(dtype)


def _images(model, n, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *model.visual.image_size, generator=g).to(dtype)


@pytest.fixture(scope="module")
def world64(default_bundle):
    import copy

    return copy.deepcopy(default_bundle.model).double()


def _tiny_layerscale(seed=0):
    """A small random CLIP whose blocks scale their branches (LayerScale, random gammas) and whose
    final layer norm runs after pooling: the factors a plain ViT does not exercise."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=24, vision_cfg=dict(image_size=32, patch_size=8, width=48, layers=4, head_width=12,
                                                         ls_init_value=0.5, final_ln_after_pool=True),
                           text_cfg=dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1))
    with torch.no_grad():
        for blk in model.visual.transformer.resblocks:
            for ls in (blk.ls_1, blk.ls_2):
                ls.gamma.copy_(0.5 + torch.rand_like(ls.gamma))
            blk.ln_1.weight.copy_(0.5 + torch.rand_like(blk.ln_1.weight))
    return model.eval().double()


# ----------------------------------------------------------------------------------------------
# Exactness: neurons + bias term == the whole MLP output through the later heads' direct paths
# ----------------------------------------------------------------------------------------------


def _check_exact(model, layer, x):
    eff = SecondOrder(model, layer)(x)
    ours = eff.total() + eff.bias()
    ref = direct_path_reference(model, layer, x)
    scale = ref.abs().max()
    assert scale > 0
    err = float((ours - ref).abs().max() / scale)
    assert err <= F64_REL, err
    # the neurons alone are not the whole: the bias term is a real part of the sum
    assert float((eff.total() - ref).abs().max() / scale) > 1e3 * F64_REL or float(eff.bias().abs().max()) == 0.0
    return err


def test_exact_on_offline_default(world64):
    x = _images(world64, 3)
    for layer in (0, 3, 6):
        _check_exact(world64, layer, x)
    assert exactness(world64, 5, x) <= F64_REL


def test_exact_with_layerscale_and_final_ln_after_pool():
    model = _tiny_layerscale()
    x = _images(model, 2)
    for layer in (0, 2):
        _check_exact(model, layer, x)


def test_exact_on_random_vit_b32():
    model = _model("ViT-B-32")
    _check_exact(model, 9, _images(model, 2))


@pytest.mark.slow
def test_exact_on_random_vit_b16():
    model = _model("ViT-B-16")
    _check_exact(model, 10, _images(model, 1))


def test_reference_leaves_out_the_first_order_path(world64):
    """The reference leaves out the MLP's own direct path (the first-order term), which the run
    with every later attention closed carries and which is subtracted."""
    from helpers.engine.decompose import Decomposer

    x = _images(world64, 2)
    ref = direct_path_reference(world64, 4, x)
    first = Decomposer(world64)(x, heads=False).mlp[:, 4]
    assert float((ref - first).abs().max()) > 1e-3 * float(first.abs().max())


# ----------------------------------------------------------------------------------------------
# The factored form equals the per-token computation
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _per_token_effects(model, layer, x, neurons):
    """[B, K, d'] for the chosen neurons, by materialising each neuron's write at every token
    through every later head ([neurons, tokens, width] per head), summing over tokens; from the
    raw weights (no precomputed u, no hook helpers)."""
    visual = model.visual
    blocks = list(visual.transformer.resblocks)
    acts, resid, post_in = {}, {}, {}
    handles = [blocks[layer].mlp.c_proj.register_forward_pre_hook(lambda m, a: acts.__setitem__("a", a[0]))]
    for L in range(layer + 1, len(blocks)):
        handles.append(blocks[L].register_forward_pre_hook(lambda m, a, L=L: resid.__setitem__(L, a[0])))
    handles.append(visual.ln_post.register_forward_pre_hook(lambda m, a: post_in.__setitem__("z", a[0])))
    with torch.no_grad():
        emb = visual(x)
    for h in handles:
        h.remove()
    a = acts["a"][..., neurons]  # [B, T, K]
    Wc = blocks[layer].mlp.c_proj.weight[:, neurons]  # [D, K]
    ls2 = getattr(blocks[layer].ls_2, "gamma", torch.ones(Wc.shape[0], dtype=x.dtype))
    z = post_in["z"]
    z = z[:, 0] if z.ndim == 3 else z
    s_post = (z.var(-1, unbiased=False) + visual.ln_post.eps).sqrt()
    out = torch.zeros(x.shape[0], Wc.shape[1], visual.proj.shape[1], dtype=x.dtype)
    for b in range(x.shape[0]):
        write = a[b][:, :, None] * (Wc * ls2[:, None]).T[None]  # [T, K, D]
        write = write - write.mean(-1, keepdim=True)
        for L in range(layer + 1, len(blocks)):
            blk = blocks[L]
            r = resid[L][b]  # [T, D]
            sigma = (r.var(-1, unbiased=False) + blk.ln_1.eps).sqrt()
            y = blk.ln_1(r)
            attn = blk.attn
            D, H = r.shape[-1], attn.num_heads
            dh = D // H
            Wq, Wk, Wv = attn.in_proj_weight.split(D)
            bq, bk, _ = attn.in_proj_bias.split(D)
            ln_in = write * blk.ln_1.weight / sigma[:, None, None]  # [T, K, D]
            ls1 = getattr(blk.ls_1, "gamma", torch.ones(D, dtype=x.dtype))
            for h in range(H):
                sl = slice(h * dh, (h + 1) * dh)
                q = (y[0] @ Wq[sl].T + bq[sl]) / dh ** 0.5
                k = y @ Wk[sl].T + bk[sl]
                A = (k @ q).softmax(0)  # [T]
                v = ln_in @ Wv[sl].T  # [T, K, dh]
                o = (v @ attn.out_proj.weight[:, sl].T) * ls1  # [T, K, D]
                o = A[:, None, None] * o
                o = (o - o.mean(-1, keepdim=True)) * visual.ln_post.weight / s_post[b]
                out[b] += o.sum(0) @ visual.proj  # summed over tokens
    return out, emb


@pytest.mark.parametrize("which", ["default", "layerscale"])
def test_factored_equals_per_token(which, world64):
    model = world64 if which == "default" else _tiny_layerscale(1)
    layer = 4 if which == "default" else 1
    x = _images(model, 2)
    K = model.visual.transformer.resblocks[layer].mlp.c_proj.in_features
    every = list(range(0, K, 8)) if which == "default" else list(range(K))
    ref, emb = _per_token_effects(model, layer, x, every)
    eff = SecondOrder(model, layer)(x)
    got = eff.effects(every)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max() / ref.abs().max()) < F64_REL
    assert torch.equal(eff.embedding, emb)
    # a subset of neurons, in the order given: the same rows
    sub = SecondOrder(model, layer, neurons=[every[5], every[1], every[7]])(x).effects()
    assert float((sub - ref[:, [5, 1, 7]]).abs().max() / ref.abs().max()) < F64_REL
    ref = eff.effects() if which == "default" else ref
    # norms from the Gram matrices, plain and centred
    mu = ref.mean(0)
    assert torch.allclose(eff.norms(), ref.norm(dim=-1), rtol=1e-9, atol=1e-14)
    assert torch.allclose(eff.norms(mu), (ref - mu).norm(dim=-1), rtol=1e-9, atol=1e-14)
    # the cosine scale divides each image's effects by its embedding's norm
    n = SecondOrder(model, layer)(x, normalize=True)
    assert torch.allclose(n.effects(), ref / emb.norm(dim=-1)[:, None, None], rtol=1e-9, atol=1e-15)


def test_float32_close_to_float64(default_bundle):
    model = default_bundle.model
    x = _images(model, 4, torch.float32)
    e32 = SecondOrder(model, 4)(x).effects()
    import copy

    m64 = copy.deepcopy(model).double()
    e64 = SecondOrder(m64, 4)(x.double()).effects()
    assert float((e32.double() - e64).abs().max() / e64.abs().max()) < 1e-4


def test_hooks_removed_and_model_unchanged(world64):
    x = _images(world64, 2)
    with torch.no_grad():
        before = world64.encode_image(x)
    SecondOrder(world64, 2)(x)
    direct_path_reference(world64, 2, x)
    with torch.no_grad():
        after = world64.encode_image(x)
    assert torch.equal(before, after)
    for m in world64.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_u_follows_weight_changes(world64):
    import copy

    from helpers.methods.second_order import second_order

    model = copy.deepcopy(world64)
    x = _images(model, 1)
    so = SecondOrder(model, 5)
    assert second_order(model, 5).u is so.u  # built once per tower, layer and neurons
    assert SecondOrder(model, 5, neurons=[0, 1]).u.shape[0] == 2
    first = so(x).total()
    with torch.no_grad():
        model.visual.transformer.resblocks[6].attn.out_proj.weight.mul_(2.0)
    second = so(x)
    assert not torch.allclose(first, second.total())
    assert float(((second.total() + second.bias()) - direct_path_reference(model, 5, x)).abs().max()) < 1e-10


def test_centring_terms_are_kept_for_the_last_mean(world64):
    """The centring terms of a mean are computed once and given again for an equal mean (every
    batch and every test of significance asks with the same one); another mean, or changed
    weights, computes them again."""
    import copy

    model = copy.deepcopy(world64)
    x = _images(model, 3)
    so = SecondOrder(model, 5)
    eff = so(x)
    mu = eff.effects().mean(0)

    def fresh(source, mean):  # the terms written out, nothing kept
        m = mean.double()
        return torch.einsum("kjd,kd->kj", source.u.double(), m), (m * m).sum(-1)

    first = so.centre_terms(mu)
    assert all(torch.equal(a, b) for a, b in zip(first, fresh(so, mu)))
    assert so.centre_terms(mu.clone()) is first  # an equal mean: the kept terms
    other = so.centre_terms(2 * mu)
    assert other is not first and all(torch.equal(a, b) for a, b in zip(other, fresh(so, 2 * mu)))
    assert torch.allclose(eff.norms(2 * mu), (eff.effects() - 2 * mu).norm(dim=-1), rtol=1e-9, atol=1e-14)
    with torch.no_grad():
        model.visual.transformer.resblocks[6].attn.out_proj.weight.mul_(2.0)
    again = so.centre_terms(2 * mu)  # new weights, a new u: the terms of the new u
    assert again is not other and all(torch.equal(a, b) for a, b in zip(again, fresh(so, 2 * mu)))


def test_errors():
    model = _tiny_layerscale()
    with pytest.raises(ValueError, match="last block"):
        SecondOrder(model, 3)
    with pytest.raises(ValueError, match="last block"):
        SecondOrder(model, -1)
    with pytest.raises(IndexError, match="out of range"):
        SecondOrder(model, 9)
    with pytest.raises(TypeError):
        SecondOrder(model, [1])
    with pytest.raises(IndexError, match="neuron index"):
        SecondOrder(model, 1, neurons=[10_000])
    with pytest.raises(MemoryError, match="neurons=..."):
        SecondOrder(model, 0, max_bytes=100)
    with pytest.raises(ValueError, match="expects"):
        SecondOrder(model, 1)(torch.zeros(1, 3, 16, 16, dtype=torch.float64))
    custom = open_clip.CLIP(embed_dim=16, vision_cfg=dict(image_size=16, patch_size=8, width=32, layers=2,
                                                          head_width=16, qk_norm=True),
                            text_cfg=dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1))
    with pytest.raises(UnsupportedModelError, match="custom attention"):
        SecondOrder(custom, 0)


# ----------------------------------------------------------------------------------------------
# Streaming statistics
# ----------------------------------------------------------------------------------------------


def _full_stats(model, layer, x, normalize, centered):
    eff = SecondOrder(model, layer)(x, normalize=normalize).effects()  # [N, K, d']
    mean = eff.mean(0)
    norms = ((eff - mean) if centered else eff).norm(dim=-1)  # [N, K]
    order = np.argsort(-norms.numpy(), axis=0, kind="stable")  # [N, K]
    return eff, mean, norms, torch.from_numpy(order.T.copy())


@pytest.mark.parametrize("centered", [True, False])
def test_streaming_topk_equals_full_sort(world64, centered):
    x = _images(world64, 13, seed=3)
    k = 4
    stats = stream_neuron_stats(world64, x, [2, 5], k=k, batch_size=4, centered=centered)
    for layer in (2, 5):
        eff, mean, norms, order = _full_stats(world64, layer, x, True, centered)
        s = stats[layer]
        assert s.n_images == 13 and s.k == k and s.layer == layer
        assert torch.allclose(s.mean, mean, rtol=1e-10, atol=1e-15)
        assert torch.equal(s.top_index, order[:, :k])
        ref_norm = norms.T.gather(1, order[:, :k])
        assert torch.allclose(s.top_norm, ref_norm, rtol=1e-9)
        ref_eff = eff.transpose(0, 1).gather(1, order[:, :k, None].expand(-1, -1, eff.shape[-1]))
        assert torch.allclose(s.top_effects(), ref_eff, rtol=1e-9, atol=1e-14)
        assert torch.equal(s.threshold, s.top_norm[:, -1])


def test_streaming_sources_and_errors(world64):
    x = _images(world64, 7, seed=4)
    ref = stream_neuron_stats(world64, x, 4, k=3, batch_size=4)[4]
    as_list = stream_neuron_stats(world64, [(b, None) for b in x.split(2)], 4, k=3)[4]
    as_fn = stream_neuron_stats(world64, lambda: iter(x.split(5)), 4, k=3)[4]
    for s in (as_list, as_fn):
        assert torch.equal(s.top_index, ref.top_index)
        assert torch.allclose(s.mean, ref.mean, rtol=1e-12, atol=1e-16)
    # given means: one pass, same result
    given = stream_neuron_stats(world64, iter(x.split(3)), 4, k=3, means={4: ref.mean})[4]
    assert torch.equal(given.top_index, ref.top_index)
    with pytest.raises(ValueError, match="one-shot"):
        stream_neuron_stats(world64, iter(x.split(3)), 4, k=3)
    with pytest.raises(ValueError, match="only 7"):
        stream_neuron_stats(world64, x, 4, k=10)
    with pytest.raises(ValueError, match="k must be"):
        stream_neuron_stats(world64, x, 4, k=0)
    with pytest.raises(ValueError, match="not among the layers"):
        stream_neuron_stats(world64, x, 4, k=3, means={5: ref.mean})

    calls = {"n": 0}

    def shrinking():
        calls["n"] += 1
        return iter(x.split(3)[: 3 if calls["n"] == 1 else 2])

    with pytest.raises(ValueError, match="same each time"):
        stream_neuron_stats(world64, shrinking, 4, k=3)


# ----------------------------------------------------------------------------------------------
# Directions, significance, ablations
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_stats(world64):
    x = _images(world64, 16, seed=5)
    return x, stream_neuron_stats(world64, x, [3, 5], k=6, batch_size=8)


def test_directions_follow_the_reference_rule(world_stats):
    _, stats = world_stats
    s = stats[5]
    d = s.directions(chunk=100)
    X = (s.top_effects() - s.mean[:, None]).numpy()
    for n in (0, 17, 200, 511):
        _, _, vh = np.linalg.svd(X[n], full_matrices=False)
        p = X[n] @ vh[0]
        pos, neg = (p > 0).sum(), (p < 0).sum()
        v = vh[0] if pos > neg or (pos == neg and p.sum() >= 0) else -vh[0]
        assert np.allclose(d.vectors[n].numpy(), v, atol=1e-10)
        q = X[n] @ d.vectors[n].numpy()
        assert (q > 0).sum() >= (q < 0).sum()
    assert torch.allclose(d.vectors.norm(dim=-1), torch.ones(len(d), dtype=torch.float64))
    assert torch.equal(d.threshold, s.threshold)
    assert d.labels()[3] == "L5.N3"
    both = NeuronDirections.cat([stats[3].directions(), d])
    assert len(both) == 2 * len(d) and both.labels()[len(d)] == "L5.N0"
    # on the images it was measured on, a neuron is significant for its top images but the last
    assert torch.allclose(s.significant_share() * s.n_images, torch.full((len(d),), s.k - 1.0, dtype=torch.float64))


def test_significance_and_ablation_identities(world64, world_stats):
    x, stats = world_stats
    s = stats[3]
    d = s.directions()
    eff = SecondOrder(world64, 3)(x[:7], normalize=True)
    norms, sig = significance(eff, d)
    full = eff.effects()
    assert torch.allclose(norms, (full - d.mean).norm(dim=-1), rtol=1e-9, atol=1e-14)
    assert torch.equal(sig, norms > d.threshold)
    out = ablated_embeddings(eff, d)
    assert list(out) == list(ABLATIONS)
    e = eff.embedding
    assert torch.equal(out["baseline"], e)
    mean_ab = e - (full - d.mean).sum(1)
    assert torch.allclose(out["mean_ablated"], mean_ab, rtol=1e-10, atol=1e-14)
    w = sig.double()[..., None]
    assert torch.allclose(out["significant_only"], mean_ab + (w * (full - d.mean)).sum(1), atol=1e-13)
    assert torch.allclose(out["significant_only"] + out["insignificant_only"], e + mean_ab, atol=1e-13)
    proj = ((full - d.mean) * d.vectors).sum(-1, keepdim=True) * d.vectors
    assert torch.allclose(out["rank1"], mean_ab + proj.sum(1), atol=1e-13)

    # ablating with the image's own effects as the means changes nothing
    one = SecondOrder(world64, 3)(x[:1], normalize=True)
    own = NeuronDirections(d.layer, d.neuron, d.vectors, d.threshold, one.effects()[0], True)
    for name in ("mean_ablated", "significant_only", "insignificant_only", "rank1"):
        assert torch.allclose(ablated_embeddings(one, own)[name], one.embedding, atol=1e-13), name
    # every neuron significant: keeping the significant ones changes nothing
    everything = NeuronDirections(d.layer, d.neuron, d.vectors, torch.full_like(d.threshold, -1.0), d.mean, True)
    assert torch.allclose(ablated_embeddings(eff, everything)["significant_only"], e, atol=1e-13)
    # no neuron significant: keeping the significant ones is the mean ablation
    nothing = NeuronDirections(d.layer, d.neuron, d.vectors, torch.full_like(d.threshold, float("inf")), d.mean, True)
    assert torch.allclose(ablated_embeddings(eff, nothing)["significant_only"], out["mean_ablated"], atol=1e-13)
    # directions along each image's own centred effect: the rank-1 projection is the effect
    one_d = NeuronDirections(d.layer, d.neuron, F.normalize(one.effects()[0] - d.mean, dim=-1), d.threshold, d.mean,
                             True)
    assert torch.allclose(ablated_embeddings(one, one_d)["rank1"], one.embedding, atol=1e-13)
    # mismatches are errors
    with pytest.raises(ValueError, match="same layer"):
        ablated_embeddings(eff, stats[5].directions())
    with pytest.raises(ValueError, match="scale"):
        ablated_embeddings(SecondOrder(world64, 3)(x[:2]), d)


def test_ablation_study_counts(world64, world_stats):
    x, stats = world_stats
    d = stats[3].directions()
    C = F.normalize(torch.randn(3, world64.visual.proj.shape[1], dtype=torch.float64,
                                generator=torch.Generator().manual_seed(0)), dim=-1)
    eff = SecondOrder(world64, 3)(x, normalize=True)
    embs = ablated_embeddings(eff, d)
    labels = (F.normalize(embs["baseline"], dim=-1) @ C.T).argmax(-1)
    res = ablation_study(world64, d, x, C, labels=labels, batch_size=16)
    assert res.n_images == 16 and res.accuracy["baseline"] == 1.0
    for name, emb in embs.items():
        acc = float(((F.normalize(emb, dim=-1) @ C.T).argmax(-1) == labels).double().mean())
        assert res.accuracy[name] == pytest.approx(acc)
    _, sig = significance(eff, d)
    assert torch.allclose(res.significant_share, sig.double().mean(0))
    # on the images the thresholds come from: k - 1 images above each neuron's threshold, and the
    # one at it, whose norm computed in another batch may round to either side
    count = res.significant_share * 16
    assert bool(((count - (stats[3].k - 1)).abs() < 1e-9).all())
    pairs = [(a, b) for a, b in zip(x.split(5), labels.split(5))]
    other = ablation_study(world64, d, pairs, C)
    assert other.accuracy == res.accuracy and other.n_images == 16
    assert bool((((other.significant_share * 16) - (stats[3].k - 1)).abs() < 1 + 1e-9).all())
    with pytest.raises(ValueError, match="labels"):
        ablation_study(world64, d, x, C)


def test_ablation_studies_share_one_pass_and_keep_per_image_results(world64, world_stats):
    x, stats = world_stats
    d3, d5 = stats[3].directions(), stats[5].directions()
    C = F.normalize(torch.randn(3, world64.visual.proj.shape[1], dtype=torch.float64,
                                generator=torch.Generator().manual_seed(1)), dim=-1)
    labels = torch.arange(16) % 3
    both = ablation_studies(world64, NeuronDirections.cat([d3, d5]), x, C, labels=labels, batch_size=16)
    assert set(both) == {3, 5}
    for L, d in ((3, d3), (5, d5)):
        one = ablation_study(world64, d, x, C, labels=labels, batch_size=16)
        assert both[L].accuracy == one.accuracy and torch.allclose(both[L].significant_share, one.significant_share)
        eff = SecondOrder(world64, L)(x, normalize=True)
        for name, emb in ablated_embeddings(eff, d).items():
            hits = (F.normalize(emb, dim=-1) @ C.T).argmax(-1) == labels
            assert torch.equal(both[L].correct[name], hits) and both[L].accuracy[name] == pytest.approx(
                float(hits.double().mean()))
        # the share of each neuron's squared centred effect on the images where it is significant
        norms, sig = significance(eff, d)
        energy = (norms ** 2 * sig).sum(0) / (norms ** 2).sum(0)
        assert torch.allclose(both[L].significant_energy, energy)
        assert bool(((both[L].significant_energy >= 0) & (both[L].significant_energy <= 1)).all())
    assert set(ablation_studies(world64, {5: d5}, x, C, labels=labels)) == {5}
    with pytest.raises(ValueError, match="not all of layer"):
        ablation_studies(world64, {3: d5}, x, C, labels=labels)
    with pytest.raises(ValueError, match="ablation_studies"):
        ablation_study(world64, NeuronDirections.cat([d3, d5]), x, C, labels=labels)


def test_layer_effects_and_a_neurons_parts_match_the_effects(world64):
    x = _images(world64, 3, seed=4)
    effs = layer_effects(world64, x, [3, 5], normalize=True)
    for L in (3, 5):
        ref = SecondOrder(world64, L)(x, normalize=True)
        assert torch.allclose(effs[L].coef, ref.coef, rtol=1e-12, atol=1e-14)
        assert torch.allclose(effs[L].embedding, ref.embedding, rtol=1e-12, atol=1e-14)
    so = SecondOrder(world64, 4)
    eff = so(x)
    for k in (0, 17, -1):
        parts = so.parts(x, k)
        assert parts.neuron == int(so.neurons[k]) and parts.pairs == so.pairs and parts.layer == 4
        assert torch.allclose(parts.coefficients(), eff.coef[:, k], rtol=1e-10, atol=1e-14)
        assert torch.allclose(parts.effect(), eff.effects([k % len(so.neurons)])[:, 0], rtol=1e-10, atol=1e-14)
        # the pieces are what the model computed: softmax rows and layer-norm scales
        assert torch.allclose(parts.attention.sum(-1), torch.ones_like(parts.attention[..., 0]))
        assert bool((parts.sigma > 0).all()) and bool((parts.sigma_post > 0).all())
    with pytest.raises(ValueError, match="position"):
        so.parts(x, len(so.neurons))


def test_top_image_lift_against_counting():
    labels = np.array([0, 1, 1, 2, 0, 1, 2, 2, 2, 0])  # value 1: base 3/10; value 2: 4/10
    top = torch.tensor([[1, 2, 5], [0, 3, 4], [6, 7, 8]])
    lift = top_image_lift(top, labels, [1, None, 2])
    assert lift[0] == pytest.approx(1 / 0.3) and torch.isnan(lift[1]) and lift[2] == pytest.approx(1 / 0.4)
    assert torch.isnan(top_image_lift(top, labels, [5, 5, 5])).all()  # a value that never occurs
    named = top_image_lift(top, {"a": labels, "b": (labels == 0).astype(int)}, [("a", 1), ("b", 1), None])
    assert named[0] == pytest.approx(1 / 0.3) and named[1] == pytest.approx((2 / 3) / 0.3) and torch.isnan(named[2])
    with pytest.raises(ValueError, match="name, value"):
        top_image_lift(top, {"a": labels}, [1, None, None])
    with pytest.raises(IndexError):
        top_image_lift(top + 10, labels, [1, 1, 1])
    with pytest.raises(ValueError, match="values for"):
        top_image_lift(top, labels, [1])


def test_compare_rates_resamples_pairs_and_clusters():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.6, rng.random(200) < 0.3
    c = compare_rates(a, b, n_boot=4000, seed=1)
    assert c.rate_a == pytest.approx(a.mean()) and c.difference == pytest.approx(a.mean() - b.mean())
    assert c.low < c.difference < c.high and not c.within_noise and c.n_clusters == 200
    # a paired bootstrap's spread: near the normal approximation's for the mean of the differences
    se = (a.astype(float) - b).std() / np.sqrt(200)
    assert (c.high - c.low) == pytest.approx(2 * 1.96 * se, rel=0.15)
    same = compare_rates(a, a.copy())
    assert same.difference == 0 and same.low == same.high == 0 and same.within_noise
    # clusters: whole groups resampled, so a difference carried by one group is within noise
    hits_a = np.r_[np.ones(10), np.zeros(30)]
    hits_b = np.zeros(40)
    groups = np.repeat(np.arange(4), 10)
    assert not compare_rates(hits_a, hits_b, seed=0).within_noise
    clustered = compare_rates(hits_a, hits_b, clusters=groups, seed=0)
    assert clustered.within_noise and clustered.n_clusters == 4 and clustered.n_trials == 40
    with pytest.raises(ValueError, match="paired"):
        compare_rates([1, 0], [1])
    with pytest.raises(ValueError, match="cluster ids"):
        compare_rates([1, 0], [1, 1], clusters=[0])
    with pytest.raises(ValueError, match="level"):
        compare_rates([1, 0], [1, 1], level=1.5)


# ----------------------------------------------------------------------------------------------
# Text decompositions, concepts, adversarial words
# ----------------------------------------------------------------------------------------------


def test_sparse_text_decomposition_recovers_planted_words():
    g = torch.Generator().manual_seed(0)
    vocab = torch.randn(40, 16, dtype=torch.float64, generator=g)
    words = [f"w{i}" for i in range(40)]
    D = prepare_vocabulary(vocab)
    assert torch.allclose(D.mean(0), torch.zeros(16, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(D.norm(dim=0), torch.ones(16, dtype=torch.float64))
    target = torch.stack([2.0 * D[3] - 1.0 * D[17] + 0.5 * D[29], D[8] + D[9]])
    dirs = NeuronDirections(torch.tensor([4, 4]), torch.tensor([0, 1]), target, torch.zeros(2), torch.zeros(2, 16), True)
    st = sparse_text_decomposition(dirs, vocab, words, n_words=3)
    assert st.labels == ["L4.N0", "L4.N1"]
    assert [w for w, _ in st.top(0)] == ["w3", "w17", "w29"]
    assert np.allclose([c for _, c in st.top(0)], [2.0, -1.0, 0.5])
    assert {w for w, _ in st.top(1)} == {"w8", "w9"}
    assert (st.coef != 0).sum(1).tolist() == [3, 2]
    assert st.top(0, n=1) == [("w3", pytest.approx(2.0))]
    with pytest.raises(ValueError, match="n_words"):
        sparse_text_decomposition(target, vocab, words, n_words=17)
    with pytest.raises(ValueError, match="words"):
        sparse_text_decomposition(target, vocab, words[:-1])
    with pytest.raises(ValueError, match="dimension"):
        sparse_text_decomposition(target, vocab[:, :8], words)
    with pytest.raises(ValueError, match="NaN"):
        sparse_text_decomposition(target, vocab.clone().fill_(float("nan")), words)
    with pytest.raises(ValueError, match="normalize"):
        prepare_vocabulary(vocab, "rows")
    assert torch.allclose(prepare_vocabulary(vocab, "text").norm(dim=1), torch.ones(40, dtype=torch.float64))


def _toy_directions():
    vec = torch.eye(4, dtype=torch.float64)
    return NeuronDirections(torch.tensor([1, 1, 2, 2]), torch.tensor([0, 1, 0, 1]), vec,
                            torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64), torch.zeros(4, 4), True)


def _toy_texts():
    coef = torch.tensor([[1.0, 0.0, 0.5, 0.0],
                         [0.0, 2.0, 0.0, 0.0],
                         [0.0, 0.0, 1.0, -1.0],
                         [0.3, 0.0, 0.0, 1.0]], dtype=torch.float64)
    return SparseTexts(coef, ["red", "disc", "grass", "star"], ["a", "b", "c", "d"])


def test_image_concepts_pool_significant_neurons_by_norm():
    d, t = _toy_directions(), _toy_texts()
    norms = torch.tensor([[2.0, 0.5, 3.0, 0.9],     # significant: rows 0 and 2
                          [0.0, 4.0, 0.0, 1.5]], dtype=torch.float64)  # rows 1 and 3
    out = image_concepts(norms, d, t, n_words=10)
    # image 0: red 2*1, grass 2*0.5 + 3*1 = 4, star 3*(-1) -> dropped (negative)
    assert out[0] == [("grass", pytest.approx(4.0)), ("red", pytest.approx(2.0))]
    # image 1: disc 4*2 = 8, star 1.5, red 1.5*0.3
    assert out[1] == [("disc", pytest.approx(8.0)), ("star", pytest.approx(1.5)), ("red", pytest.approx(0.45))]
    assert image_concepts(norms, d, t, n_words=1)[1] == [("disc", pytest.approx(8.0))]
    with pytest.raises(ValueError, match="one per"):
        image_concepts(norms[:, :3], d, t)


def test_adversarial_words_rank_neurons_between_classes():
    d, t = _toy_directions(), _toy_texts()
    a = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 0.0, 0.6, 0.8], dtype=torch.float64)
    scores, order = rank_neurons_between(d, a, b)
    assert torch.allclose(scores, torch.tensor([-1.0, 0.0, 0.6, 0.8], dtype=torch.float64))
    assert order[:3].tolist() == [0, 3, 2]
    # top 2 neurons: row 0 (score -1) and row 3 (0.8): red -1 + 0.24 -> negative; grass -0.5; star 0.8
    assert adversarial_words(d, t, a, b, n_neurons=2) == [("star", pytest.approx(0.8))]
    # all neurons: grass -0.5 + 0.6 = 0.1, star -0.6 + 0.8 = 0.2
    words = adversarial_words(d, t, a, b, n_neurons=4)
    assert words == [("star", pytest.approx(0.2)), ("grass", pytest.approx(0.1))]
    assert adversarial_words(d, t, a, b, n_neurons=4, exclude=["Star "]) == [("grass", pytest.approx(0.1))]
    with pytest.raises(ValueError, match="n_neurons"):
        adversarial_words(d, t, a, b, n_neurons=5)


# ----------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------


def test_neuron_segmentation_maps_average_the_chosen_activations(world64, world_stats):
    x, stats = world_stats
    d = NeuronDirections.cat([stats[3].directions(), stats[5].directions()])
    C = F.normalize(torch.randn(4, world64.visual.proj.shape[1], dtype=torch.float64,
                                generator=torch.Generator().manual_seed(1)), dim=-1)
    imgs = x[:3]
    maps = neuron_segmentation_maps(world64, imgs, C, d, n_neurons=25)
    gh, gw = world64.visual.grid_size
    assert maps.shape == (3, gh, gw)
    # independently: activations from raw hooks on c_proj, prediction from encode_image
    acts = {}
    blocks = world64.visual.transformer.resblocks
    hs = [blocks[L].mlp.c_proj.register_forward_pre_hook(lambda m, a, L=L: acts.__setitem__(L, a[0]))
          for L in (3, 5)]
    with torch.no_grad():
        emb = world64.encode_image(imgs)
    for h in hs:
        h.remove()
    pred = (F.normalize(emb, dim=-1) @ C.T).argmax(-1)
    for b in range(3):
        score = (d.vectors @ C[pred[b]]).abs()
        top = torch.argsort(score, descending=True)[:25]
        cols = [acts[int(d.layer[r])][b, 1:, int(d.neuron[r])] for r in top]
        ref = torch.stack(cols, -1).mean(-1).reshape(gh, gw)
        assert torch.allclose(maps[b], ref, atol=1e-12)
    # given labels: the class named, not the prediction
    other = (pred + 1) % 4
    m2 = neuron_segmentation_maps(world64, imgs, C, d, n_neurons=25, labels=other)
    score = (d.vectors @ C[other[0]]).abs()
    top = torch.argsort(score, descending=True)[:25]
    ref = torch.stack([acts[int(d.layer[r])][0, 1:, int(d.neuron[r])] for r in top], -1).mean(-1).reshape(gh, gw)
    assert torch.allclose(m2[0], ref, atol=1e-12)
    with pytest.raises(ValueError, match="n_neurons"):
        neuron_segmentation_maps(world64, imgs, C, d, n_neurons=len(d) + 1)
