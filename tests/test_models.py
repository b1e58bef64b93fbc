import time

import open_clip
import pytest
import torch

from helpers.models import (DEFAULT_MODEL, OfflineError, UnsupportedModelError, check_config_supported,
                            load_model)


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
    model, preprocess, tokenizer = load_model(name)
    assert model.visual.transformer.layers == 12
    assert tokenizer(["x"]).shape[-1] == 77


@pytest.mark.parametrize("name,why", [
    ("RN50", "ResNet"), ("convnext_base", "timm"), ("ViT-B-16-SigLIP", "timm"),
    ("coca_ViT-B-32", "attentional"), ("ViT-L-14-CLIPA", "pool_type")])
def test_unsupported_architectures_named(name, why):
    with pytest.raises(UnsupportedModelError, match=why) as info:
        load_model(name)
    assert "ViT-B-16" in str(info.value)  # says what is supported
    assert isinstance(info.value, NotImplementedError) and isinstance(info.value, ValueError)


def test_unknown_names_and_tags():
    with pytest.raises(ValueError, match="Unknown open_clip model"):
        load_model("ViT-Q-99")
    with pytest.raises(ValueError, match="Unknown pretrained tag"):
        load_model("ViT-B-32", pretrained="no_such_tag")
    with pytest.raises(ValueError, match="Unknown pretrained"):
        load_model(DEFAULT_MODEL, pretrained="no_such_tag")


def test_pretrained_without_network_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import helpers.models as hm

    monkeypatch.setattr(hm, "host_reachable", lambda host, **kw: False)
    t0 = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        load_model("ViT-B-16", pretrained="laion2b_s34b_b88k", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert "load_model()" in msg and "pretrained='/path/to" in msg


def test_real_probe_is_bounded_in_time():
    from helpers.download import host_reachable

    t0 = time.perf_counter()
    assert not host_reachable("nonexistent.invalid", timeout=1.0)
    assert time.perf_counter() - t0 < 5


def test_checkpoint_path_round_trip(tmp_path):
    model, _, _ = load_model("ViT-B-32")
    path = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), path)
    again, _, _ = load_model("ViT-B-32", pretrained=str(path))
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_check_config_returns_config_for_supported():
    cfg = check_config_supported("ViT-L-14")
    assert cfg["vision_cfg"]["layers"] == 24
