"""LRP and partial LRP: the relevance rules on hand-computed cases, conservation of the score
through a random-init ViT-B-32 (float64), the segmentation maps, and bad input."""

import warnings

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
