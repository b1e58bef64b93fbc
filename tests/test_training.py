import json

import numpy as np
import pytest
import torch

from helpers.data.training import TrainConfig, save_weights, train
from helpers.engine.images import images_to_tensor


def _tiny(steps=30, batch_size=32, **kw):
    # the process's own threads (the suite's: one; two threads each on two busy cores spin against each other)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, **{"lr": 2e-3, "log_every": 10, **kw})
    cfg.model_config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    return cfg


@pytest.mark.slow
def test_training_smoke_loss_decreases(tmp_path):
    cfg = _tiny(free_attn_layers=1)
    model, history = train(cfg, progress=False)
    assert len(history) == 3
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < first - 0.05, history
    assert all(h["direct_penalty"] >= 0 for h in history)
    path = save_weights(model, cfg, history, tmp_path)
    from open_clip.model import CLIP
    from safetensors.torch import load_file

    again = CLIP(**json.loads((tmp_path / "world-clip.json").read_text()))
    again.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    from helpers.engine.models import DEFAULT_PRETRAINED

    log = json.loads((tmp_path / f"world-clip-{DEFAULT_PRETRAINED}.train.json").read_text())
    assert log["config"]["steps"] == 30 and log["history"][-1]["step"] == 30


def test_training_runs_on_its_threads_and_gives_the_process_its_count_back(monkeypatch):
    import helpers.data.training as T

    before = torch.get_num_threads()
    threads = 2 if before != 2 else 1
    inner, seen = T._train, []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return inner(*args, **kwargs)

    monkeypatch.setattr(T, "_train", spy)
    _, history = train(_tiny(steps=2, batch_size=8, threads=threads, log_every=1), progress=False)
    assert seen == [threads] and len(history) == 2
    assert torch.get_num_threads() == before, "training gives the process its thread count back"


def test_training_is_deterministic():
    a, ha = train(_tiny(steps=4, batch_size=8), progress=False)
    b, hb = train(_tiny(steps=4, batch_size=8), progress=False)
    assert ha[-1]["loss"] == hb[-1]["loss"]
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_images_to_tensor_shape():
    x = images_to_tensor(torch.zeros(2, 64, 64, 3, dtype=torch.uint8).numpy())
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32


def test_shape_groups_differ_only_in_shape():
    from helpers.data import world
    from helpers.data.training import _batch

    cfg = _tiny(batch_size=32, shape_pairs=0.5, shape_group=4)
    images, captions, factors = _batch(world.World(seed=0), 3, cfg)
    n_groups = 4  # int(0.5 * 32) // 4
    base = 32 - 3 * n_groups
    assert images.shape[0] == len(captions) == len(factors["shape"]) == 32
    for g in range(n_groups):
        members = [g] + list(range(base + 3 * g, base + 3 * g + 3))
        shapes = [int(factors["shape"][i]) for i in members]
        assert len(set(shapes)) == 4  # a family's four shapes
        assert len({world.SHAPE_FAMILY[s] for s in shapes}) == 1
        for f in ("colour", "background", "size", "count", "position"):
            assert len({int(factors[f][i]) for i in members}) == 1, f
        named = [world.parse_caption(captions[i]).get("shape") for i in members]
        assert [{world.SHAPES[s]} for s in shapes] == named
        # the images differ (the shapes are drawn), the backgrounds do not
        assert all((images[members[0]] != images[i]).any() for i in members[1:])


def test_class_caption_term_and_init(tmp_path):
    from helpers.data import world
    from helpers.data.training import training_class_captions

    caps = training_class_captions("shape")
    assert len(caps) == len(world.SHAPES) and len(set(caps)) == len(caps)
    evaluation = {p for ps in world.class_prompts("shape").values() for p in ps}
    assert not evaluation & set(caps)  # the evaluation prompts are not training sentences
    cfg = _tiny(steps=3, batch_size=8, class_weight=1.0, probe_weight=1.0)
    model, history = train(cfg, progress=False)
    assert all(k.startswith(("visual.", "transformer.", "token_embedding", "positional_embedding", "ln_final",
                             "text_projection", "logit_scale")) for k in model.state_dict())  # probes not saved
    path = save_weights(model, cfg, history, tmp_path)
    again, _ = train(_tiny(steps=1, batch_size=8, init=str(path), lr=0.0), progress=False)
    for (k, x), (_, y) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-3), k  # started from the saved (float16) weights; lr 0


def test_images_to_tensor_for_a_model():
    import warnings

    import numpy as np
    import open_clip

    from helpers.data import world
    from helpers.engine.models import load_model

    imgs = world.sample(2, split="test", seed=0).images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, preprocess, _ = load_model()
        big = open_clip.create_model("ViT-B-32").eval()
    x = images_to_tensor(imgs, model)
    assert torch.equal(x, images_to_tensor(imgs))
    from PIL import Image

    assert torch.allclose(x[0], preprocess(Image.fromarray(imgs[0])), atol=1e-5)  # the model's own preprocess
    y = images_to_tensor(imgs, big)
    assert y.shape == (2, 3, 224, 224) and torch.isfinite(y).all()
    assert np.isclose(float(y.mean()), float(x.mean()), atol=0.1)  # same content, resized


def test_pretraining_phase_trains_the_image_tower_alone():
    cfg = _tiny(steps=4, batch_size=8, pretrain_steps=2, log_every=1)
    torch.manual_seed(0)
    model, history = train(cfg, progress=False)
    ref, _ = train(_tiny(steps=2, batch_size=8, pretrain_steps=2, log_every=1), progress=False)
    from helpers.data.training import build_model

    init = build_model(_tiny(steps=1))
    # after two pretraining steps the text tower is untouched, the image tower has moved
    for k, v in ref.state_dict().items():
        same = torch.equal(v, init.state_dict()[k])
        assert same if not k.startswith("visual.") and k != "logit_scale" else True, k
    assert any(not torch.equal(v, init.state_dict()[k]) for k, v in ref.state_dict().items() if k.startswith("visual."))
    assert len(history) == 4 and all(h["direct_penalty"] == 0 for h in history[:2])


def test_class_factors_option(tmp_path, capsys):
    import pytest

    from helpers.data.training import _factor_list, main

    assert _factor_list(" shape, colour ") == ["shape", "colour"]
    with pytest.raises(SystemExit, match="unknown factor 'shapes'"):
        main(["--class-factors", "shapes", "--steps", "1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="at least one"):
        main(["--class-factors", ",", "--steps", "1", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # refused before any training or writing
    # two factors: one class-caption term and one probe per factor
    cfg = _tiny(steps=2, batch_size=8, class_weight=1.0, probe_weight=1.0, class_factors=("shape", "colour"))
    _, history = train(cfg, progress=False)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)


def test_staged_training_records_every_stage(tmp_path):
    from helpers.data.training import training_stages
    from helpers.data.world_eval import _stage_text
    from helpers.engine.models import DEFAULT_MODEL, DEFAULT_PRETRAINED

    name = f"{DEFAULT_MODEL}-{DEFAULT_PRETRAINED}"
    cfg1 = _tiny(steps=2, batch_size=8, pretrain_steps=1, log_every=1)
    m1, h1 = train(cfg1, progress=False)
    first = save_weights(m1, cfg1, h1, tmp_path / "stage1")
    cfg2 = _tiny(steps=2, batch_size=8, init=str(first), class_weight=1.0, log_every=1, logit_penalty=0.5)
    m2, h2 = train(cfg2, progress=False)
    save_weights(m2, cfg2, h2, tmp_path / "stage2")
    log1 = json.loads((tmp_path / "stage1" / f"{name}.train.json").read_text())
    log2 = json.loads((tmp_path / "stage2" / f"{name}.train.json").read_text())
    assert log1["init_log"] is None and log2["init_log"] == log1  # the first stage travels with the second
    assert training_stages(log2) == [log1, log2] and training_stages(log1) == [log1]
    one, two = _stage_text(log1), _stage_text(log2)
    assert "from scratch" in one and "the first 1 of them training the image tower alone" in one
    assert "initialised from the previous stage" in two and "class-caption term weight 1.0" in two
    assert "class-caption directions (weight 0.5)" in two and "class-caption directions" not in one


def test_logit_penalty_is_the_direct_share_of_class_logit_variance():
    from helpers.data.training import _logit_penalty, build_model
    from helpers.engine.decompose import Decomposer

    cfg = _tiny(steps=1)
    model = build_model(cfg).eval()
    x = images_to_tensor(__import__("helpers.data.world", fromlist=["sample"]).sample(16, split="test", seed=4).images)
    d = Decomposer(model)(x, heads=False)
    texts = {"shape": torch.nn.functional.normalize(torch.randn(8, 32), dim=-1)}
    share = _logit_penalty(d, [0], texts)
    direct = d.mlp.sum(1) + d.embed + d.attn[:, [0]].sum(1)
    want = (direct @ texts["shape"].T).var(0).sum() / (d.embedding @ texts["shape"].T).var(0).sum()
    assert torch.allclose(share, want)
    # with every attention layer free, only the MLPs and the embedding term count
    free = ((d.mlp.sum(1) + d.embed) @ texts["shape"].T).var(0).sum() / (d.embedding @ texts["shape"].T).var(0).sum()
    assert torch.allclose(_logit_penalty(d, [], texts), free) and not torch.allclose(free, share)
    # in training: runs, and the logged penalty includes it once the ramp is on
    _, h0 = train(_tiny(steps=4, batch_size=8, class_weight=1.0, penalty_start=0.0, penalty_full=0.01,
                        log_every=4), progress=False)
    _, h1 = train(_tiny(steps=4, batch_size=8, class_weight=1.0, penalty_start=0.0, penalty_full=0.01,
                        log_every=4, logit_penalty=1.0), progress=False)
    assert h1[-1]["direct_penalty"] > h0[-1]["direct_penalty"] > 0
    import pytest

    with pytest.raises(ValueError, match="set class_weight"):
        train(_tiny(steps=1, batch_size=8, logit_penalty=1.0), progress=False)


def _script_stages(world_name: str) -> list:
    """The configurations scripts/train_offline_model.sh runs for ``--world world_name``, in
    order: world-v2's four stages, and for world-v3 its two more (``v3stage``)."""
    import re
    import shlex
    from pathlib import Path

    from helpers.data.training import parse_config

    root = Path(__file__).resolve().parents[1]
    text = (root / "scripts" / "train_offline_model.sh").read_text().replace("\\\n", " ")

    def common(name: str, world: str) -> list[str]:
        body = re.search(rf"^ *{name}=\((.*?)\)$", text, re.M | re.S).group(1).replace("\n", " ")
        return shlex.split(body.replace("$threads", "2").replace('"$tag"', "x").replace('"$base"', "x")
                           .replace('"$first"', world).replace("${TRAIN_WORKERS:-0}", "0"))

    stages = []
    for line in text.splitlines():
        words = shlex.split(line) if line.strip().startswith(("stage stage", "v3stage stage")) else []
        if words and words[0] == "stage":  # stage <dir> <options>
            argv = [a for a in words[2:] if a != "${extra[@]}"]  # shlex drops the quotes
            stages.append(parse_config(common("common", "world-v2") + argv)[0])
        elif words and world_name == "world-v3":  # v3stage <dir> <init> <options>
            argv = ["--init", "x"] + [a for a in words[3:] if a != "${extra[@]}"]
            stages.append(parse_config(common("v3common", "world-v3") + argv)[0])
    return stages


def test_retraining_script_matches_the_shipped_training_log():
    """scripts/train_offline_model.sh must give, stage by stage, the configurations recorded in
    the shipped weights' training log (which carries every earlier stage's log)."""
    import re
    from pathlib import Path

    from helpers.data.training import training_stages
    from helpers.engine.models import default_weights_path

    text = (Path(__file__).resolve().parents[1] / "scripts" / "train_offline_model.sh").read_text()
    log = json.loads(default_weights_path().with_name(
        default_weights_path().name.removesuffix(".safetensors") + ".train.json").read_text())
    logs = training_stages(log)
    shipped_world = log["config"].get("world", "world-v2")  # logs from before world-v3 name none
    # the script's default world is the shipped default's
    assert re.search(r'^plain=""; world=(\S+)$', text, re.M).group(1) == shipped_world
    stages = _script_stages(shipped_world)
    assert len(stages) == len(logs) >= 1
    skip = {"init", "device", "threads", "log_every", "workers"}
    for k, (cfg, rec) in enumerate(zip(stages, logs)):
        want = {key: v for key, v in rec["config"].items() if key not in skip}
        got = {key: (list(v) if isinstance(v, tuple) else v) for key, v in cfg.__dict__.items()
               if key in want}
        assert got == want, f"stage {k + 1}"
        assert (cfg.init is None) == (k == 0)
    # world-v3's script adds two stages on world-v3's scenes after world-v2's four
    v3 = _script_stages("world-v3")
    assert len(v3) == 6 and [c.world for c in v3] == ["world-v2"] * 4 + ["world-v3"] * 2
    assert [c.steps for c in v3[4:]] == [3200, 800] and all(c.init for c in v3[1:])


def test_a_run_without_penalties_skips_the_terms_and_trains_the_same_weights(monkeypatch):
    """Without a direct-path penalty the decomposition's terms are never read; the faster path
    (the embedding alone) must train bit for bit the same model."""
    from helpers.data import training

    cfg = _tiny(steps=3, batch_size=8, direct_penalty=0.0, class_weight=1.0, pretrain_steps=1)
    calls = []
    fast = training.image_embeddings

    def spy(*args, terms):
        calls.append(terms)
        return fast(*args, terms=terms)

    monkeypatch.setattr(training, "image_embeddings", spy)
    a, _ = train(cfg, progress=False)
    assert calls == [False] * 3
    monkeypatch.setattr(training, "image_embeddings", lambda *args, terms: fast(*args, terms=True))
    b, _ = train(cfg, progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # and the decomposition is computed where a penalty reads it
    calls.clear()
    monkeypatch.setattr(training, "image_embeddings", spy)
    train(_tiny(steps=1, batch_size=8, direct_penalty=1.0), progress=False)
    assert calls == [True]


def test_batches_made_by_worker_processes_are_the_same_batches():
    """``--workers`` makes the scenes ahead of time in other processes: the same batches, in order."""
    from helpers.data.training import batches

    cfg = _tiny(steps=3, batch_size=12, world="world-v3", shape_pairs=0.5, shape_group=4)
    here = list(batches(cfg, range(1, 4)))
    cfg.workers = 2
    there = list(batches(cfg, range(1, 4)))
    assert len(here) == len(there) == 3
    for (ia, ca, fa), (ib, cb, fb) in zip(here, there):
        np.testing.assert_array_equal(ia, ib)
        assert ca == cb and all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_the_world_is_an_option_and_recorded(tmp_path):
    from helpers.data.training import parse_config, save_weights

    cfg, _ = parse_config(["--world", "world-v3", "--steps", "2"])
    assert cfg.world == "world-v3" and parse_config([])[0].world == "world-v2"
    with pytest.raises(SystemExit):
        parse_config(["--world", "world-v9"])
    model, hist = train(_tiny(steps=1, batch_size=8, world="world-v3", direct_penalty=0.0), progress=False)
    cfg = _tiny(steps=1, batch_size=8, world="world-v3")
    log = json.loads(save_weights(model, cfg, hist, tmp_path, tag="t").with_name("world-clip-t.train.json").read_text())
    assert log["config"]["world"] == "world-v3"
