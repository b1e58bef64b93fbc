"""Exact decomposition of attention-pooled timm ViT towers (open_clip's SigLIP / SigLIP 2),
random weights, float64 on CPU."""

import warnings

import open_clip
import pytest
import torch

from helpers.engine.decompose import Decomposer
from helpers.engine.decompose_map import MapDecomposer, MapDecomposition
from helpers.engine.models import UnsupportedModelError, model_info

F64_TOL = 1e-10


def _quiet_create(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(name, pretrained=None).eval()


def _tower_only(name):
    """The image tower of ``name`` alone (SigLIP 2's text tower has a 256k vocabulary)."""
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(name)
    torch.manual_seed(0)
    return _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"]).eval()


def _images(size, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *size, generator=g, dtype=torch.float64)


def _perturb(tower):
    """Random weights with non-trivial norms and biases (timm initialises many to 0 / 1)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if name.endswith("bias") or ".norm" in name or "norm1" in name or "norm2" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return tower


@pytest.fixture(scope="module")
def siglip():
    model = _quiet_create("ViT-B-16-SigLIP")
    _perturb(model.visual.double())
    return model


@pytest.fixture(scope="module")
def siglip2_tower():
    return _perturb(_tower_only("ViT-B-32-SigLIP2-256").double())


def _check_exact(d: MapDecomposition, ref: torch.Tensor) -> dict:
    errs = {
        "layers": float((d.reconstruct() - ref).abs().max()),
        "pool heads": float((d.reconstruct_pool() - ref).abs().max()),
        "components": float((d.components().data.sum(1) - ref).abs().max()),
        "heads->attn": float((d.heads.sum(2) - d.attn).abs().max()),
        "tokens->pool heads": float((d.tokens().data.sum(1) - d.pool_heads.sum(1)).abs().max()),
    }
    for h in (0, d.n_pool_heads - 1):
        errs[f"tokens->pool head {h}"] = float((d.tokens(heads=[h]).data.sum(1) - d.pool_heads[:, h]).abs().max())
    streams = d.token_streams()
    errs["streams->tokens"] = float((streams.data.sum(2) - d.tokens().data).abs().max())
    for layer in (0, d.n_layers - 1):
        t = d.tokens(layers=[layer]).data
        errs[f"layer {layer} tokens"] = float((t.sum(1) - d.attn[:, layer] - d.mlp[:, layer]).abs().max())
        pair = streams.data[:, :, 1 + 2 * layer] + streams.data[:, :, 2 + 2 * layer]
        errs[f"layer {layer} streams"] = float((pair - t).abs().max())
    return errs


@pytest.mark.slow
def test_siglip_exact_against_encode_image(siglip):
    x = _images(siglip.visual.image_size)
    dec = Decomposer(siglip)
    assert isinstance(dec, MapDecomposer)
    d = dec(x, heads=True, tokens=True)
    with torch.no_grad():
        ref = siglip.encode_image(x)
    assert torch.equal(d.embedding, ref)
    errs = _check_exact(d, ref)
    assert max(errs.values()) < F64_TOL, errs
    assert d.max_error(relative=False) < F64_TOL
    n = d.normalized()
    assert (n.reconstruct() - torch.nn.functional.normalize(ref, dim=-1)).abs().max() < F64_TOL
    assert (n.tokens().data.sum(1) - n.pool_heads.sum(1)).abs().max() < F64_TOL
    # shapes of the shared interface
    L, H = d.n_layers, d.n_heads
    assert d.attn.shape == (2, L, 768) and d.heads.shape == (2, L, H, 768) and d.pool_heads.shape == (2, 12, 768)
    assert d.head_terms().axes == ("image", "layer", "head", "dim")
    assert d.components().labels["component"][-2:] == ["pool.mlp", "const"]


def test_siglip2_tower_exact(siglip2_tower):
    x = _images(siglip2_tower.trunk.patch_embed.img_size)
    d = Decomposer(siglip2_tower)(x, heads=True, tokens=True)
    with torch.no_grad():
        ref = siglip2_tower(x)
    errs = _check_exact(d, ref)
    assert max(errs.values()) < F64_TOL, errs
    assert d.grid_size == (8, 8) and d.tokens().shape["token"] == 64


def test_text_scores_and_spatial_maps(siglip2_tower):
    x = _images(siglip2_tower.trunk.patch_embed.img_size)
    texts = torch.randn(3, 768, dtype=torch.float64)
    dec = Decomposer(siglip2_tower)
    d = dec(x, heads=False, tokens=True, texts=texts)
    s = d.token_scores(texts, keep=["head"])
    assert s.axes == ("image", "token", "head", "text")
    assert (d.text_scores.data - s.data).abs().max() < F64_TOL
    assert (s.data.sum((1, 2)) - d.pool_heads.sum(1) @ texts.T).abs().max() < F64_TOL
    m = d.spatial_map(d.token_scores(texts, layers=[-1]))
    assert m.shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="pooling heads"):
        d.token_scores(texts, keep=["layer"])
    with pytest.raises(AttributeError, match="tokens=True"):
        dec(x, heads=False).tokens()


def test_hooks_removed_after_success_and_failure(siglip2_tower):
    x = _images(siglip2_tower.trunk.patch_embed.img_size, 1)
    with torch.no_grad():
        before = siglip2_tower(x)
    dec = Decomposer(siglip2_tower)
    dec(x, heads=True, tokens=True, texts=torch.randn(2, 768, dtype=torch.float64))
    with torch.no_grad():
        assert torch.equal(siglip2_tower(x), before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in siglip2_tower.modules())

    def boom(*_):
        raise RuntimeError("planted failure")

    planted = siglip2_tower.trunk.blocks[3].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="planted"):
            dec(x, heads=True, tokens=True)
    finally:
        planted.remove()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in siglip2_tower.modules())


def test_nan_pixels_are_named_before_the_tower_runs(siglip2_tower):
    from helpers.engine.images import NonFinitePixelsError

    x = _images(siglip2_tower.trunk.patch_embed.img_size, 3)
    x[2, :, 4, 4] = float("nan")
    calls = []
    handle = siglip2_tower.trunk.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(NonFinitePixelsError, match=r"1 image .*: image 2 \(1 pixel: NaN\)"):
            Decomposer(siglip2_tower)(x)
    finally:
        handle.remove()
    assert not calls


def test_model_info_of_a_siglip_tower(siglip2_tower):
    info = model_info(siglip2_tower)
    assert info.class_token is False and info.pooling == "map"
    assert (info.n_layers, info.n_heads, info.width, info.embed_dim) == (12, 12, 768, 768)
    assert info.grid_size == (8, 8) and info.n_tokens == 64 and info.image_size == (256, 256)
    # the pooling's heads, as the heat maps count them
    assert info.pool_heads == siglip2_tower.trunk.attn_pool.num_heads == Decomposer(siglip2_tower).maps().q.shape[0]


@pytest.mark.parametrize("name,why", [("EVA02-B-16", "EVA"), ("PE-Core-B-16", "EVA"), ("convnext_base", "timm")])
def test_unsupported_timm_configs_named(name, why):
    from helpers.engine.models import check_config_supported

    with pytest.raises(UnsupportedModelError, match=why) as info:
        check_config_supported(name)
    assert "timm_pool='map'" in str(info.value) and "SigLIP" in str(info.value)


def test_unsupported_built_timm_towers_named():
    import timm
    from open_clip.timm_model import TimmModel

    # the same ViT with average pooling instead of attention pooling
    with torch.device("meta"):  # the modules as built, without drawing their weights
        tower = TimmModel("vit_base_patch32_siglip_256", embed_dim=768, image_size=256, pool="avg", proj="none")
    with pytest.raises(UnsupportedModelError, match="global_pool='avg'.*SigLIP"):
        Decomposer(tower)
    assert timm.__version__


def test_scoring_uses_the_models_own_scale_and_bias(siglip):
    from helpers.engine.text import Scoring, probabilities, scoring

    s = scoring(siglip)
    assert s.kind == "sigmoid" and s.bias == pytest.approx(float(siglip.logit_bias.detach()))
    assert s.scale == pytest.approx(float(siglip.logit_scale.detach().exp()))
    img, txt = torch.randn(4, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    p = probabilities(s, img, txt)
    cos = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    assert torch.allclose(p, torch.sigmoid(s.scale * cos + s.bias))
    soft = probabilities(Scoring("softmax", 100.0, 0.0), img, txt)
    assert torch.allclose(soft.sum(-1), torch.ones(4, dtype=torch.float64))


def test_timm_hook_sites(siglip2_tower):
    from helpers.engine.hooks import POOL_SITE_DOCS, UnknownSiteError, capture, site_names

    names = site_names(siglip2_tower)
    assert names[0] == "ln_pre" and names[-1] == "pool.mlp_out" and "blocks.11.attn_heads" in names
    x = _images(siglip2_tower.trunk.patch_embed.img_size, 1)
    with capture(siglip2_tower, ["pool.attn_out", "pool.mlp_out", "ln_post"]) as cache, torch.no_grad():
        out = siglip2_tower(x)
    assert torch.allclose(cache["pool.attn_out"][:, 0] + cache["pool.mlp_out"][:, 0], out)
    assert cache["ln_post"].shape == (1, 64, 768)
    assert set(POOL_SITE_DOCS) <= {n if not n.startswith("blocks.") else "blocks.{l}." + n.split(".", 2)[2]
                                   for n in names}
    with pytest.raises(UnknownSiteError, match="pool.mlp_out"):
        with capture(siglip2_tower, ["pool.nothing"]):
            pass


@pytest.mark.slow
def test_heatmaps_of_an_attention_pooled_tower(siglip2_tower):
    from helpers.methods.spatial import (
        contrastive_map,
        heatmaps,
        own_class_maps,
        own_class_maps_by_layer,
        topic_segmentation,
    )

    # one image: a dozen float64 passes of the tower (batches of several are the other tests')
    x = _images(siglip2_tower.trunk.patch_embed.img_size, 1)
    texts = torch.randn(3, 768, dtype=torch.float64)
    for kw in ({}, {"layers": [-2, -1]}, {"heads": [0, 5]}, {"layers": [3], "heads": [1]}):
        res = heatmaps(siglip2_tower, x, texts, **kw)
        assert res.patch_maps.shape == (1, 3, 8, 8) and res.max_error() < F64_TOL, kw
        assert torch.equal(res.cls, torch.zeros_like(res.cls))
    a, b = texts[:1], texts[1:2]
    gap = contrastive_map(siglip2_tower, x, a, b) - (heatmaps(siglip2_tower, x, a).patch_maps[:, 0]
                                                    - heatmaps(siglip2_tower, x, b).patch_maps[:, 0])
    assert gap.abs().max() < F64_TOL
    with pytest.raises(UnsupportedModelError, match="class token"):
        topic_segmentation(siglip2_tower, x, 11, 0, texts)
    # each backbone layer's own-class map, from one pass: as one pass per layer gives it
    labels = [2]
    by_layer = own_class_maps_by_layer(siglip2_tower, x, texts, labels)
    assert by_layer.shape == (len(siglip2_tower.trunk.blocks), 1, 8, 8)
    for layer in (0, 5, len(siglip2_tower.trunk.blocks) - 1):
        assert (by_layer[layer] - own_class_maps(siglip2_tower, x, texts, labels, layers=[layer])).abs().max() < F64_TOL


def test_collected_terms_keep_the_pooling_mlp_apart(siglip2_tower):
    from helpers.methods.ablation import collect_terms

    x = _images(siglip2_tower.trunk.patch_embed.img_size, 3)
    terms = collect_terms(siglip2_tower, x, heads=True, batch_size=2)
    d = Decomposer(siglip2_tower)(x, heads=True)
    assert terms.const.shape == d.const.shape  # image-independent
    torch.testing.assert_close(terms.pool_mlp, d.pool_mlp, rtol=0, atol=1e-12)
    with torch.no_grad():
        e = siglip2_tower(x)
    assert (terms.embeddings() - e).abs().max() < F64_TOL
    u = terms.normalized()
    nrm = e.norm(dim=-1, keepdim=True)
    assert (u.embeddings() - e / nrm).abs().max() < 1e-12
    assert (u.pool_mlp - d.pool_mlp / nrm).abs().max() < 1e-12


def test_pooling_head_terms_and_their_textspan(siglip2_tower):
    from helpers.methods.ablation import collect_terms
    from helpers.methods.heads import pool_head_textspan

    x = _images(siglip2_tower.trunk.patch_embed.img_size, 3)
    terms = collect_terms(siglip2_tower, x, pool_heads=True)
    d = Decomposer(siglip2_tower)(x)
    share = d._maps.bias_share  # each head's share of the pooling's out-projection bias, left out
    torch.testing.assert_close(terms.pool_heads + share, d.pool_heads, rtol=0, atol=1e-12)
    Hp = d.n_pool_heads
    rebuilt = terms.pool_heads.sum(1) + Hp * share + terms.pool_mlp + d.head_bias
    assert (rebuilt - d.embedding).abs().max() < F64_TOL
    texts = torch.nn.functional.normalize(torch.randn(7, d.embedding.shape[-1], dtype=torch.float64), dim=-1)
    res = pool_head_textspan(terms, texts)
    assert res.indices.shape == (Hp, 3)  # capped at the 3 images
    P = terms.pool_heads.transpose(0, 1)
    assert (res.reconstruct(P) - P).abs().max() < 1e-10
