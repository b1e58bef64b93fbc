import time

import open_clip
import pytest
import torch
from _shapes import meta_model

from helpers.engine.models import (
    DEFAULT_MODEL,
    OfflineError,
    UnsupportedModelError,
    check_config_supported,
    load_model,
    model_info,
)


def test_default_model_is_registered_with_open_clip():
    assert DEFAULT_MODEL in open_clip.list_models()
    model = open_clip.create_model(DEFAULT_MODEL)
    assert model.visual.grid_size[0] >= 8


def test_default_model_loads_offline(default_bundle):
    model, preprocess, tokenizer = default_bundle
    assert not model.training
    from PIL import Image

    x = preprocess(Image.new("RGB", (100, 80), (10, 200, 30)))[None]
    emb = model.encode_image(x)
    txt = model.encode_text(tokenizer(["a red circle"]))
    assert emb.shape == txt.shape and torch.isfinite(emb).all()


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16-quickgelu"])
def test_random_vit_loads(name):
    model, preprocess, tokenizer = load_model(name, "random")
    assert model.visual.transformer.layers == 12
    assert tokenizer(["x"]).shape[-1] == 77


@pytest.mark.parametrize("name,why", [
    ("RN50", "ResNet"), ("convnext_base", "timm"), ("EVA02-B-16", "EVA"),
    ("coca_ViT-B-32", "attentional"), ("ViT-L-14-CLIPA", "pool_type")])
def test_unsupported_architectures_named(name, why):
    with pytest.raises(UnsupportedModelError, match=why) as info:
        load_model(name)
    assert "ViT-B-16" in str(info.value)  # says what is supported
    assert isinstance(info.value, NotImplementedError) and isinstance(info.value, ValueError)


def test_random_siglip_loads():
    model, _, tokenizer = load_model("ViT-B-16-SigLIP", "random")
    info = model_info(model)
    assert info.class_token is False and info.pooling == "map" and info.n_tokens == 196
    tokens = tokenizer(["a photo of a dog"])
    assert tokens.shape == (1, 64) and int(tokens.max()) < 32000
    assert model.encode_text(tokens).shape == (1, 768)


def test_unknown_names_and_tags():
    with pytest.raises(ValueError, match="Unknown open_clip model"):
        load_model("ViT-Q-99")
    with pytest.raises(ValueError, match="Unknown pretrained tag"):
        load_model("ViT-B-32", pretrained="no_such_tag")
    with pytest.raises(ValueError, match="Unknown pretrained"):
        load_model(DEFAULT_MODEL, pretrained="no_such_tag")


def test_pretrained_without_network_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import helpers.engine.models as hm

    monkeypatch.setattr(hm, "host_reachable", lambda host, **kw: False)
    t0 = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        load_model("ViT-B-16", pretrained="laion2b_s34b_b88k", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert "load_model()" in msg and "pretrained='/path/to" in msg


def test_real_probe_is_bounded_in_time():
    from helpers.engine.download import host_reachable

    t0 = time.perf_counter()
    assert not host_reachable("nonexistent.invalid", timeout=1.0)
    assert time.perf_counter() - t0 < 5


def test_checkpoint_path_round_trip(tmp_path):
    model, _, _ = load_model("ViT-B-32", "random")
    path = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), path)
    again, _, _ = load_model("ViT-B-32", pretrained=str(path))
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_check_config_returns_config_for_supported():
    cfg = check_config_supported("ViT-L-14")
    assert cfg["vision_cfg"]["layers"] == 24


# ----------------------------------------------------------------------------------------------
# Model sizes
# ----------------------------------------------------------------------------------------------


def test_loaded_model_unpacks_and_carries_its_info(default_bundle):
    import dataclasses

    from helpers.engine.models import DEFAULT_PRETRAINED, LoadedModel, ModelInfo, model_info

    assert isinstance(default_bundle, LoadedModel)
    model, preprocess, tokenizer = default_bundle
    assert default_bundle.model is model and default_bundle.preprocess is preprocess
    assert default_bundle.tokenizer is tokenizer
    info = default_bundle.info
    assert isinstance(info, ModelInfo) and info == model_info(model)
    # the offline default's architecture (data/models/world-clip.json): 8 layers of width 128,
    # heads of width 32, 64 px images in 8 px patches, a 96-dimensional joint space
    assert (info.name, info.pretrained) == (DEFAULT_MODEL, DEFAULT_PRETRAINED)
    assert (info.n_layers, info.n_heads, info.width, info.head_dim, info.embed_dim) == (8, 4, 128, 32, 96)
    assert (info.image_size, info.patch_size, info.grid_size) == ((64, 64), (8, 8), (8, 8))
    assert (info.n_tokens, info.class_token, info.pooling) == (65, True, "tok")
    assert info.pool_heads == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.n_layers = 3
    assert model_info(model.visual) == dataclasses.replace(info, name=None, pretrained=None)


def test_model_info_of_a_built_model():
    from helpers.engine.models import model_info

    info = model_info(meta_model("ViT-B-16"))  # read off the modules: no weights drawn
    assert (info.name, info.pretrained) == (None, None)
    assert (info.n_layers, info.n_heads, info.width, info.head_dim, info.embed_dim) == (12, 12, 768, 64, 512)
    assert (info.image_size, info.patch_size, info.grid_size, info.n_tokens) == ((224, 224), (16, 16), (14, 14), 197)
    with pytest.raises(UnsupportedModelError, match="Supported"):
        model_info(torch.nn.Linear(2, 2))


def test_random_weights_are_named_random():
    from helpers.engine.models import model_info

    bundle = load_model("ViT-B-32", "random")
    assert (bundle.info.name, bundle.info.pretrained) == ("ViT-B-32", "random")
    assert model_info(bundle.model).grid_size == (7, 7)


# ----------------------------------------------------------------------------------------------
# One rule set for configs and built towers
# ----------------------------------------------------------------------------------------------


def _tiny_vit(**kw):
    from open_clip.transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2.0,
                             output_dim=16, **kw)


@pytest.mark.parametrize("vision_cfg,tower_kw", [
    ({"pool_type": "avg"}, {"pool_type": "avg"}),
    ({"attentional_pool": True}, {"attentional_pool": True}),
    ({"qk_norm": True}, {"qk_norm": True}),
    ({}, {}),
], ids=["avg-pool", "attentional-pool", "qk-norm", "supported"])
def test_config_and_tower_checks_give_the_same_reason(vision_cfg, tower_kw):
    from helpers.engine.decompose import check_model_supported
    from helpers.engine.support import config_problem, tower_problem

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                           **vision_cfg}}
    tower = _tiny_vit(**tower_kw)
    from_config, from_tower = config_problem(cfg), tower_problem(tower)
    if not vision_cfg:
        assert from_config is None and from_tower is None
        assert check_model_supported(tower) is tower
        return
    assert from_config and from_tower and from_tower.startswith(from_config)
    with pytest.raises(UnsupportedModelError, match="Supported") as info:
        check_model_supported(tower)
    assert from_config in str(info.value)


def test_resnet_reason_is_shared():
    from open_clip.modified_resnet import ModifiedResNet

    from helpers.engine.support import config_problem, tower_problem

    resnet = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=16, heads=2, image_size=64, width=8)
    reason = config_problem({"vision_cfg": {"layers": [1, 1, 1, 1], "width": 8}})
    assert reason == tower_problem(resnet) == "its image tower is a ResNet"


def test_provenance_says_how_the_weights_were_made(tmp_path, monkeypatch):
    from helpers.engine.models import provenance

    default = load_model().model
    p = provenance(default)
    assert p.kind == "shaped" and p.shaped and not p.tests_the_paper
    assert "direct-path penalty" in p.note and "by construction" in p.note
    rnd = provenance(load_model("ViT-B-32", "random").model)
    assert rnd.kind == "random" and "random weights" in rnd.note
    assert provenance(meta_model("ViT-B-32")).kind == "unknown"  # not loaded by load_model
