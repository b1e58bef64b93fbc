"""Named hook sites: every site's activation against a plain re-computation of the tower, one
layout whatever the tower's, nothing left attached, patches that change nothing, clear errors."""

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn

from helpers.engine.hooks import SITE_DOCS, UnknownSiteError, capture, hooked, site_names, sites
from helpers.engine.models import UnsupportedModelError

F64 = torch.float64
BLOCK_SITES = ("resid_pre", "ln_1", "attn", "attn_out", "ln_2", "mlp_out", "resid_post")


def _tower(ls_init_value=None, layers=3, seed=0):
    torch.manual_seed(seed)
    tower = VisionTransformer(image_size=32, patch_size=8, width=48, layers=layers, heads=4, mlp_ratio=2.0,
                              ls_init_value=ls_init_value, output_dim=24)
    if ls_init_value is not None:  # make the scales differ per channel
        for blk in tower.transformer.resblocks:
            blk.ls_1.gamma.data.uniform_(0.5, 1.5)
            blk.ls_2.gamma.data.uniform_(0.5, 1.5)
    return tower.to(F64).eval()


def _seq_first(tower):
    """The same tower computing in the [T, B, D] layout (open_clip's batch_first=False)."""
    t = copy.deepcopy(tower)
    t.transformer.batch_first = False
    for blk in t.transformer.resblocks:
        blk.attn.batch_first = False
    return t


def _images(n=2, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _ln(x, ln):
    return F.layer_norm(x, x.shape[-1:], ln.weight, ln.bias, ln.eps)


def _attention(x, attn):
    """Multi-head self-attention of a batch-first ``x``, written out."""
    B, T, D = x.shape
    H = attn.num_heads
    q, k, v = (x @ attn.in_proj_weight.T + attn.in_proj_bias).split(D, -1)
    q, k, v = (t.reshape(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) / (D // H) ** 0.5, -1)
    return (a @ v).transpose(1, 2).reshape(B, T, D) @ attn.out_proj.weight.T + attn.out_proj.bias


def _gamma(ls, width):
    return ls.gamma if hasattr(ls, "gamma") else torch.ones(width, dtype=F64)


def _reference(tower, x):
    """Every site's activation, computed without hooks from the tower's weights."""
    B, D = x.shape[0], tower.transformer.width
    patches = F.conv2d(x, tower.conv1.weight, stride=tower.conv1.stride).flatten(2).transpose(1, 2)
    z = torch.cat([tower.class_embedding.expand(B, 1, D), patches], 1) + tower.positional_embedding
    out = {"ln_pre": _ln(z, tower.ln_pre)}
    z = out["ln_pre"]
    for i, blk in enumerate(tower.transformer.resblocks):
        p = f"blocks.{i}."
        out[p + "resid_pre"] = z
        out[p + "ln_1"] = _ln(z, blk.ln_1)
        out[p + "attn"] = _attention(out[p + "ln_1"], blk.attn)
        out[p + "attn_out"] = out[p + "attn"] * _gamma(blk.ls_1, D)
        mid = z + out[p + "attn_out"]
        out[p + "ln_2"] = _ln(mid, blk.ln_2)
        hidden = F.gelu(out[p + "ln_2"] @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias)
        out[p + "mlp_out"] = (hidden @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias) * _gamma(blk.ls_2, D)
        z = mid + out[p + "mlp_out"]
        out[p + "resid_post"] = z
    out["ln_post.in"] = z
    out["ln_post"] = _ln(z, tower.ln_post)
    out["embedding"] = out["ln_post"][:, 0] @ tower.proj
    return out


def _no_hooks_left(module):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


@pytest.mark.parametrize("ls", [None, 0.5], ids=["plain", "layerscale"])
def test_every_site_matches_an_independent_computation(ls):
    tower = _tower(ls)
    x = _images()
    ref = _reference(tower, x)
    with torch.no_grad():
        assert (tower(x) - ref["embedding"]).abs().max() < 1e-10  # the re-computation is right
        with capture(tower, site_names(tower)) as cache:
            tower(x)
    assert set(cache) == set(site_names(tower)) == set(ref) - {"embedding"}
    for name, act in cache.items():
        assert act.shape == ref[name].shape, name
        assert (act - ref[name]).abs().max() < 1e-10, name
    # the residual stream is the sum of what the branches add
    for i in range(3):
        p = f"blocks.{i}."
        assert torch.allclose(cache[p + "resid_post"] - cache[p + "resid_pre"],
                              cache[p + "attn_out"] + cache[p + "mlp_out"], atol=1e-12)


def test_site_table_order_and_names():
    tower = _tower()
    names = site_names(tower)
    assert names[0] == "ln_pre" and names[-2:] == ["ln_post.in", "ln_post"]
    assert names[1:8] == [f"blocks.0.{s}" for s in BLOCK_SITES]
    assert len(names) == 3 + 3 * len(BLOCK_SITES)
    patterns = {re.sub(r"^blocks\.\d+\.", "blocks.{l}.", n) for n in names}
    assert patterns == set(SITE_DOCS)
    assert sites(tower)["blocks.2.attn_out"].module is tower.transformer.resblocks[2].ls_1


def test_a_full_model_and_its_tower_have_the_same_sites(default_bundle):
    model = default_bundle[0]
    assert site_names(model) == site_names(model.visual)


def test_seq_first_tower_gives_the_same_batch_first_activations():
    tower = _tower(0.5)
    other = _seq_first(tower)
    x = _images(3)
    with torch.no_grad():
        with capture(tower, ["*"]) as a:
            ea = tower(x)
        with capture(other, ["*"]) as b:
            eb = other(x)
    assert torch.allclose(ea, eb, atol=1e-12)
    assert sites(other)["blocks.0.ln_1"].seq_first and not sites(other)["ln_pre"].seq_first
    for name in a:
        assert b[name].shape == a[name].shape, name
        assert torch.allclose(a[name], b[name], atol=1e-12), name


def test_patching_changes_nothing_numerically():
    x = _images()
    for tower in (_tower(), _seq_first(_tower())):
        blocks = tower.transformer.resblocks
        with torch.no_grad():
            ref = tower(x)
            with hooked(tower, patch={"blocks.*.ln_1": lambda act, _inputs: act}):
                same = tower(x)

            def recompute(name, _act, inputs):  # the attention output, recomputed from its input
                return _attention(inputs[0], blocks[int(name.split(".")[1])].attn)

            with hooked(tower, patch={"blocks.*.attn": recompute}, with_name=True):
                patched = tower(x)
            after = tower(x)
        assert torch.equal(same, ref)
        assert torch.allclose(patched, ref, atol=1e-12)
        assert torch.equal(after, ref) and _no_hooks_left(tower)


def test_patched_activation_is_in_the_graph():
    tower = _tower()
    kept = {}

    def keep(act, _inputs):
        kept["act"] = act
        return act

    seq = _seq_first(tower)  # the activation handed out is a transposed view: it must still get a gradient
    with torch.enable_grad(), hooked(seq, patch={"blocks.1.ln_2": keep}):
        out = seq(_images()).sum()
        (grad,) = torch.autograd.grad(out, kept["act"])
    assert grad.shape == kept["act"].shape and kept["act"].shape[0] == 2  # batch first


def test_reading_hooks_cannot_change_the_output():
    tower = _tower()
    x = _images()
    with torch.no_grad():
        ref = tower(x)
        with hooked(tower, {"*": lambda act: torch.zeros_like(act)}):
            out = tower(x)
    assert torch.equal(out, ref)


def test_hooks_removed_after_an_exception():
    tower = _tower()
    with pytest.raises(RuntimeError, match="inside"):
        with capture(tower, ["blocks.*.attn_out"]):
            raise RuntimeError("inside the block")
    assert _no_hooks_left(tower)

    def boom(_act):
        raise ValueError("in a hook")

    with pytest.raises(ValueError, match="in a hook"), hooked(tower, {"blocks.1.mlp_out": boom, "ln_pre": print}):
        tower(_images())
    assert _no_hooks_left(tower)
    # a bad name after good ones: nothing stays attached either
    with pytest.raises(UnknownSiteError):
        with hooked(tower, {"ln_pre": print, "blocks.0.attn": print, "blocks.7.attn": print}):
            pass
    assert _no_hooks_left(tower)


def test_capture_keep_all_and_stack():
    tower = _tower()
    x = _images(4)
    with torch.no_grad(), capture(tower, "blocks.*.resid_post", keep_all=True) as cache:
        tower(x[:2])
        tower(x[2:])
    assert list(cache) == [f"blocks.{i}.resid_post" for i in range(3)]
    assert all(len(v) == 2 for v in cache.values())
    with torch.no_grad(), capture(tower, ["blocks.*.resid_post"]) as last:
        tower(x)
    stacked = last.stack("blocks.*.resid_post")
    assert stacked.shape == (3, 4, 17, 48)
    assert torch.equal(stacked[1], last["blocks.1.resid_post"])
    with pytest.raises(KeyError, match="nothing captured"):
        last.stack("ln_post")


def test_unknown_sites_and_bad_arguments_give_clear_errors():
    tower = _tower()
    with pytest.raises(UnknownSiteError, match=r"'blocks\.3\.attn'.*blocks\.\{l\}\.attn_out.*0\.\.2") as info:
        with capture(tower, ["blocks.3.attn"]):
            pass
    assert isinstance(info.value, KeyError) and not str(info.value).startswith("'")
    with pytest.raises(UnknownSiteError, match="ln_postt"):
        with hooked(tower, {"ln_postt": print}):
            pass
    with pytest.raises(ValueError, match="input site"):
        with hooked(tower, patch={"ln_post.in": lambda a, i: a}):
            pass
    with pytest.raises(TypeError, match="callable"):
        with hooked(tower, {"ln_pre": "not a function"}):
            pass
    assert _no_hooks_left(tower)

    class NoTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = nn.Linear(3, 3)

    with pytest.raises(UnsupportedModelError, match="Supported"):
        site_names(NoTower())


def test_run_tower_runs_in_eval_mode_and_restores_the_mode():
    from helpers.engine.hooks import run_tower

    tower = _tower()
    tower.train()
    x = _images()
    seen = []
    out = run_tower(tower, x, {"ln_post": lambda act: seen.append(tower.training)})
    assert seen == [False] and tower.training  # eval inside, the training mode back after
    with torch.no_grad():
        assert torch.equal(out, tower.eval()(x))
    assert not out.requires_grad and run_tower(tower, x, grad=True).requires_grad
    tower.train()

    def boom(_act):
        raise ValueError("in a hook")

    with pytest.raises(ValueError, match="in a hook"):
        run_tower(tower, x, {"blocks.0.mlp_out": boom})
    assert tower.training and _no_hooks_left(tower)
