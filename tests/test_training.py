import json

import torch

from helpers.training import TrainConfig, images_to_tensor, save_weights, train


def _tiny(steps=30, batch_size=32, **kw):
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=2e-3, log_every=10, threads=2, **kw)
    cfg.model_config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    return cfg


def test_training_smoke_loss_decreases(tmp_path):
    cfg = _tiny(free_attn_layers=1)
    model, history = train(cfg, progress=False)
    assert len(history) == 3
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < first - 0.05, history
    assert all(h["direct_penalty"] >= 0 for h in history)
    path = save_weights(model, cfg, history, tmp_path)
    from safetensors.torch import load_file
    from open_clip.model import CLIP

    again = CLIP(**json.loads((tmp_path / "world-clip.json").read_text()))
    again.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    log = json.loads((tmp_path / "world-clip-world-v1.train.json").read_text())
    assert log["config"]["steps"] == 30 and log["history"][-1]["step"] == 30


def test_training_is_deterministic():
    a, ha = train(_tiny(steps=4, batch_size=8), progress=False)
    b, hb = train(_tiny(steps=4, batch_size=8), progress=False)
    assert ha[-1]["loss"] == hb[-1]["loss"]
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_images_to_tensor_shape():
    x = images_to_tensor(torch.zeros(2, 64, 64, 3, dtype=torch.uint8).numpy())
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
