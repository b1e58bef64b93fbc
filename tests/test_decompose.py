"""Exactness and behaviour of the decomposition on stock open_clip models."""

import warnings

import numpy as np
import open_clip
import pytest
import torch
from _shapes import meta_model
from PIL import Image

from helpers.engine.decompose import Decomposer
from helpers.engine.images import to_batch
from helpers.engine.models import DEFAULT_MODEL, UnsupportedModelError

F32_REL_TOL = 1e-5   # float32: relative to the largest embedding entry
F64_TOL = 1e-10      # float64: absolute


def _visual(name, dtype=torch.float32, seed=0, **kwargs):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(name, **kwargs)
    visual = model.visual.eval().to(dtype)
    return visual


def _images(visual, n=2, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *visual.image_size, generator=g).to(dtype)


SLOW = pytest.mark.slow  # float64 through a real ViT-B-16 or L-14 takes tens of seconds on a CPU
MODELS = [DEFAULT_MODEL, "ViT-B-32", pytest.param("ViT-B-16", marks=SLOW), pytest.param("ViT-L-14", marks=SLOW),
          "ViT-B-32-quickgelu"]
# ViT-L-14's 24 layers of width 1024 and 16 heads, on 112 px images: an 8 x 8 grid of patches (65 tokens)
# instead of 16 x 16 (257), a quarter of the float64 work. Exactness does not depend on the number of
# tokens; the full 224 px path is checked on ViT-B-16 (197 tokens) and ViT-B-32.
SIZES = {"ViT-L-14": 112}


@pytest.fixture(scope="module", params=MODELS)
def visual64(request):
    size = SIZES.get(request.param)
    return _visual(request.param, torch.float64, **({"force_image_size": size} if size else {}))


def test_float64_exact(visual64):
    # one image for the 24-layer ViT-L-14 (float64 on a CPU is slow); two elsewhere
    x = _images(visual64, 1 if len(visual64.transformer.resblocks) > 12 else 2, torch.float64)
    if len(visual64.transformer.resblocks) > 12:
        assert tuple(visual64.grid_size) == (8, 8)  # the 112 px ViT-L-14 of SIZES
    d = Decomposer(visual64)(x, heads=True, tokens=True)
    ref = visual64(x)
    # sum of all components == encode_image, unnormalised and normalised
    assert (d.reconstruct() - ref).abs().max() < F64_TOL
    dn = d.normalized()
    assert (dn.reconstruct() - torch.nn.functional.normalize(ref, dim=-1)).abs().max() < F64_TOL
    # per-head sums == per-layer attention terms
    assert (d.heads.sum(2) - d.attn).abs().max() < F64_TOL
    # per-token sums == per-layer attention terms (layer by layer)
    for layer in (0, d.n_layers - 1):
        assert (d.tokens(layers=[layer]).data.sum(1) - d.attn[:, layer]).abs().max() < F64_TOL
    # joint (layer, token, head) of the last two layers sums to their heads
    j = d.joint(layers=[-2, -1])
    assert (j.data.sum(2) - d.heads[:, -2:]).abs().max() < F64_TOL
    # the components table adds up too
    assert (d.components().data.sum(1) - ref).abs().max() < F64_TOL
    # one head's public parts recombine into its term, at the normalised scale too
    for dd in (d, dn):
        p = dd.head_inputs(-1, 1)
        term = torch.einsum("bt,btk,bkd->bd", p.attn, p.values, p.to_joint) + p.attn.sum(1, keepdim=True) * p.bias
        assert (term - dd.heads[:, -1, 1]).abs().max() < F64_TOL


@pytest.mark.parametrize("name", [DEFAULT_MODEL, pytest.param("ViT-B-16", marks=SLOW)])
def test_float32_within_stated_tolerance(name):
    visual = _visual(name)
    x = _images(visual, 3)
    d = Decomposer(visual)(x, heads=True)
    with torch.no_grad():
        ref = visual(x)
    scale = ref.abs().max()
    assert (d.reconstruct() - ref).abs().max() / scale < F32_REL_TOL
    assert (d.heads.sum(2) - d.attn).abs().max() / scale < F32_REL_TOL
    assert d.max_error() < F32_REL_TOL


def test_text_scores_contracted_in_forward_match_lazy():
    visual = _visual(DEFAULT_MODEL, torch.float64)
    x = _images(visual, 2, torch.float64)
    texts = torch.randn(7, visual.output_dim, dtype=torch.float64)
    dec = Decomposer(visual)
    lazy = dec(x, heads=True, tokens=True)
    for keep in [(), ("layer",), ("head",), ("layer", "head")]:
        eager = dec(x, heads=False, texts=texts, text_keep=keep)
        ref = lazy.token_scores(texts, keep=keep)
        assert eager.text_scores.axes == ref.axes
        assert torch.allclose(eager.text_scores.data, ref.data, atol=1e-12)
    # per text: token scores summed over tokens == attention terms scored against the text
    full = dec(x, heads=True, texts=texts, text_keep=("layer", "head"))
    total = full.text_scores.sum("token").data  # (image, layer, head, text)
    assert torch.allclose(total, full.head_terms().score(texts).data, atol=1e-12)
    # normalising rescales the eager scores consistently
    n = full.normalized()
    assert torch.allclose(n.text_scores.sum("token", "layer", "head").data,
                          n.attention().sum("layer").score(texts).data, atol=1e-12)


def test_hooks_removed_and_outputs_bit_identical():
    visual = _visual("ViT-B-32")
    x = _images(visual, 2)
    with torch.no_grad():
        before = visual(x)
    dec = Decomposer(visual)
    dec(x, heads=True, tokens=True, texts=torch.randn(3, visual.output_dim))
    with torch.no_grad():
        after = visual(x)
    assert torch.equal(before, after)
    for m in visual.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_hooks_removed_even_when_forward_fails():
    visual = _visual(DEFAULT_MODEL)
    dec = Decomposer(visual)

    def boom(*_):
        raise RuntimeError("planted failure")

    planted = visual.transformer.resblocks[2].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="planted"):
        dec(_images(visual, 1), heads=True, tokens=True)
    planted.remove()
    for m in visual.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_training_mode_restored():
    visual = _visual(DEFAULT_MODEL)
    visual.train()
    Decomposer(visual)(_images(visual, 1))
    assert visual.training


def test_grad_mode_keeps_graph():
    visual = _visual(DEFAULT_MODEL)
    d = Decomposer(visual)(_images(visual, 2), heads=False, grad=True)
    d.mlp.pow(2).sum().backward()
    assert visual.transformer.resblocks[0].mlp.c_fc.weight.grad is not None


def test_components_axes():
    visual = _visual(DEFAULT_MODEL, torch.float64)
    d = Decomposer(visual)(_images(visual, 2, torch.float64), heads=True)
    c = d.head_terms()
    assert c.axes == ("image", "layer", "head", "dim")
    last = c.select(layer=-1)
    assert last.axes == ("image", "head", "dim")
    assert torch.equal(last.data, d.heads[:, -1])
    two = c.select(layer=[0, 2], head=slice(0, 2))
    assert two.shape == {"image": 2, "layer": 2, "head": 2, "dim": visual.output_dim}
    texts = torch.nn.functional.normalize(torch.randn(4, visual.output_dim, dtype=torch.float64), dim=-1)
    s = c.score(texts)
    assert s.axes == ("image", "layer", "head", "text")
    assert torch.allclose(s.sum("layer", "head").data, d.attention().sum("layer").score(texts).data)
    comp = d.components()
    assert comp.labels["component"][0] == "embed" and comp.labels["component"][-1] == "const"
    assert comp.select(component=[1]).labels["component"] == ["attn.0"]
    with pytest.raises(KeyError):
        c.sum("token")
    with pytest.raises(IndexError):
        c.select(layer=99)
    with pytest.raises(ValueError):
        c.score(torch.randn(3, 5, dtype=torch.float64))
    grid = d.grid_size
    lazy = Decomposer(visual)(_images(visual, 2, torch.float64), tokens=True)
    m = lazy.spatial_map(lazy.token_scores(texts[:2]))
    assert m.shape == (2, grid[0], grid[1], 2)


def test_lazy_token_terms_need_tokens_flag():
    visual = _visual(DEFAULT_MODEL)
    d = Decomposer(visual)(_images(visual, 1), heads=True)
    with pytest.raises(AttributeError, match="tokens=True"):
        d.tokens()
    with pytest.raises(AttributeError, match="tokens=True"):
        d.head_inputs(0, 0)
    d = Decomposer(visual)(_images(visual, 1), heads=False)
    with pytest.raises(AttributeError, match="heads=True"):
        d.head_terms()


def test_bad_images():
    visual = _visual(DEFAULT_MODEL)
    dec = Decomposer(visual)
    with pytest.raises(ValueError, match="empty batch"):
        dec(torch.zeros(0, 3, *visual.image_size))
    with pytest.raises(ValueError, match="batch"):
        dec(torch.zeros(3, *visual.image_size))
    with pytest.raises(ValueError, match="expects"):
        dec(torch.zeros(1, 3, 32, 48))
    with pytest.raises(ValueError):
        dec(torch.zeros(1, 1, *visual.image_size))
    with pytest.raises(TypeError):
        dec(np.zeros((1, 3, *visual.image_size), np.float32))
    with pytest.raises(TypeError):
        dec(torch.zeros(1, 3, *visual.image_size, dtype=torch.uint8))
    d = Decomposer(visual)(_images(visual, 1), tokens=True)
    with pytest.raises(IndexError):
        d.tokens(layers=[100])
    with pytest.raises(ValueError):
        d.token_scores(torch.zeros(0, visual.output_dim))
    with pytest.raises(ValueError):
        d.token_scores(torch.zeros(2, 3))


def test_pil_modes_through_preprocessing(default_bundle):
    model, preprocess, _ = default_bundle
    imgs = [Image.new("L", (70, 50), 128), Image.new("RGBA", (40, 90), (255, 0, 0, 0)),
            Image.new("RGB", (64, 64), (0, 0, 255)), Image.new("P", (30, 30)),
            np.zeros((20, 30), np.uint8), np.full((20, 20, 4), 200, np.uint8)]
    batch = to_batch(imgs, preprocess)
    assert batch.shape == (len(imgs), 3, *model.visual.image_size)
    # transparent RGBA is composited on white, not black
    rgba = to_batch([imgs[1]], lambda im: torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    assert int(rgba.min()) == 255
    d = Decomposer(model)(batch)
    assert d.max_error() < F32_REL_TOL
    with pytest.raises(ValueError, match="empty"):
        to_batch([], preprocess)
    with pytest.raises(TypeError):
        to_batch(["not an image"], preprocess)
    with pytest.raises(ValueError):
        to_batch([np.zeros((5, 5, 2), np.uint8)], preprocess)


@pytest.mark.parametrize("name", ["RN50", "coca_ViT-B-32", "ViT-L-14-CLIPA"])
def test_unsupported_built_models(name):
    model = meta_model(name)  # open_clip's modules as built, without drawing their weights
    with pytest.raises(UnsupportedModelError, match="Supported"):
        Decomposer(model)


def test_layerscale_models_are_exact():
    # ViT-M-16-alt uses LayerScale; the decomposition folds the scale into each head's map
    visual = _visual("ViT-M-16-alt", torch.float64)
    for blk in visual.transformer.resblocks:  # make the scales non-trivial
        blk.ls_1.gamma.data.uniform_(0.5, 1.5)
        blk.ls_2.gamma.data.uniform_(0.5, 1.5)
    x = _images(visual, 1, torch.float64)
    d = Decomposer(visual)(x, heads=True)
    assert (d.reconstruct() - visual(x)).abs().max() < F64_TOL
    assert (d.heads.sum(2) - d.attn).abs().max() < F64_TOL


def test_maps_follow_weight_updates():
    visual = _visual(DEFAULT_MODEL, torch.float64)
    dec = Decomposer(visual)
    x = _images(visual, 2, torch.float64)
    dec(x, heads=True)
    with torch.no_grad():  # in-place updates, as an optimiser step does
        visual.proj.mul_(1.5)
        visual.transformer.resblocks[-1].attn.out_proj.weight.add_(0.1)
    d = dec(x, heads=True)
    assert (d.reconstruct() - visual(x)).abs().max() < F64_TOL
    assert (d.heads.sum(2) - d.attn).abs().max() < F64_TOL


def _perturbed_default64():
    visual = _visual(DEFAULT_MODEL, torch.float64, seed=3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # non-trivial layer-norm parameters and biases
        for name, p in visual.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return visual


def test_reference_convention_against_a_transcription():
    """Per (layer, token, head), the reference code's term is
    [gamma (a W_O^h v + b_O / (T H) - mu / (K T H)) / sigma + beta / (K T H)] proj; transcribed here
    from hooked activations, dotted with texts, and compared with token_scores(convention="reference")."""
    visual = _perturbed_default64()
    x = _images(visual, n=2, dtype=torch.float64, seed=2)
    d = Decomposer(visual)(x, heads=True, tokens=True)
    texts = torch.randn(3, d.embedding.shape[-1], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    inputs = {}
    hooks = [blk.ln_1.register_forward_hook(lambda m, a, out, i=i: inputs.__setitem__(i, out.detach()))
             for i, blk in enumerate(visual.transformer.resblocks)]
    seen = {}
    hooks.append(visual.ln_post.register_forward_pre_hook(lambda m, a: seen.__setitem__("z", a[0].detach())))
    try:
        with torch.no_grad():
            emb = visual(x)
    finally:
        for h in hooks:
            h.remove()
    z = seen["z"] if seen["z"].ndim == 2 else seen["z"][:, 0]
    mu, sigma = z.mean(-1), (z.var(-1, unbiased=False) + visual.ln_post.eps).sqrt()
    gamma, beta, proj = visual.ln_post.weight, visual.ln_post.bias, visual.proj
    L = len(visual.transformer.resblocks)
    K = 2 * L + 1
    want = []
    for layer, blk in enumerate(visual.transformer.resblocks):
        att = blk.attn
        H, D = att.num_heads, att.embed_dim
        dh = D // H
        xin = inputs[layer]
        T = xin.shape[1]
        qkv = xin @ att.in_proj_weight.T + att.in_proj_bias
        q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(2, T, H, dh) for i in range(3))
        a = torch.einsum("bhk,bthk->bht", q[:, 0] * dh ** -0.5, k).softmax(-1)  # the class token's row
        wo = att.out_proj.weight.T.reshape(H, dh, D).detach()
        r = torch.einsum("bht,bthk,hkd->bthd", a, v, wo) + att.out_proj.bias / (T * H)  # [B, T, H, D]
        c = gamma * (r - mu[:, None, None, None] / (K * T * H)) / sigma[:, None, None, None] + beta / (K * T * H)
        want.append((c @ proj) @ texts.T)  # [B, T, H, M]
    want = torch.stack(want, 1).detach()  # [B, L, T, H, M]
    got = d.token_scores(texts, keep=("layer", "head"), convention="reference").data
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    # the two conventions split the same embedding differently
    assert not torch.allclose(d.token_scores(texts, keep=("layer", "head")).data, got)
    # and the reference's terms follow the decomposition's scale like the course's
    torch.testing.assert_close(d.normalized().token_scores(texts, convention="reference").data,
                               d.token_scores(texts, convention="reference").data / emb.norm(dim=-1)[:, None, None])
    with pytest.raises(ValueError, match="convention"):
        d.token_scores(texts, convention="paper")
