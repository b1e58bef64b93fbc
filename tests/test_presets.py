"""Presets: one switch per notebook, explicit parameters winning; what each costs; every
download a preset needs failing fast offline; world scenes at a real model's input size."""

import ast
import re
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from helpers.course import presets
from helpers.course.presets import (
    PRESETS,
    begin,
    downloads,
    estimate_gpu_memory,
    get_preset,
    notebook_parameters,
    presets_table,
    resolve,
)
from helpers.course.record import load_figures
from helpers.engine.models import DEFAULT_PRETRAINED

ROOT = Path(__file__).resolve().parent.parent

# The papers' models, as /work/shared's notes give them (open_clip names): the original paper's
# LAION-2B checkpoints and CLIP-InterpreT's OpenAI ones (trained with QuickGELU).
PAPER_MODELS = {
    "ViT-B-16 LAION": ("ViT-B-16", "laion2b_s34b_b88k"),
    "ViT-L-14 LAION": ("ViT-L-14", "laion2b_s32b_b82k"),
    "ViT-H-14 LAION": ("ViT-H-14", "laion2b_s32b_b79k"),
    "ViT-B-16 OpenAI": ("ViT-B-16-quickgelu", "openai"),
    "ViT-B-32 OpenAI": ("ViT-B-32-quickgelu", "openai"),
    "ViT-L-14 OpenAI": ("ViT-L-14-quickgelu", "openai"),
}

# Parameter counts open_clip publishes for these towers together (its model profile table),
# in millions: the checkpoints on the hub are float32, 4 bytes a parameter.
PUBLISHED_PARAMS_M = {"ViT-B-32": 151.28, "ViT-B-16": 149.62, "ViT-L-14": 427.62, "ViT-H-14": 986.11}


def _parameters_cell(nb: str) -> list[tuple[str, object]]:
    src = next((ROOT / "notebooks" / "src").glob(f"{nb}_*.py")).read_text()
    cell = src.split('# %% tags=["parameters"]\n', 1)[1].split("\n# %%", 1)[0]
    out = []
    for node in ast.parse(cell).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1
        out.append((node.targets[0].id, ast.literal_eval(node.value)))
    return out


def test_the_presets_and_their_models():
    assert list(PRESETS)[0] == "offline" and "random ViT-B-32" in PRESETS
    assert set(PAPER_MODELS) <= set(PRESETS)
    for name, (model, tag) in PAPER_MODELS.items():
        p = get_preset(name)
        assert (p.model_name, p.pretrained, p.protocol, p.device) == (model, tag, "paper", "auto")
        cfg = open_clip.get_pretrained_cfg(model, tag)
        assert cfg, (model, tag)  # a tag open_clip knows for that model name
        assert bool(open_clip.get_model_config(model).get("quick_gelu")) == bool(cfg.get("quick_gelu"))
        assert p.trained_weights
    off, rnd = get_preset("offline"), get_preset("random ViT-B-32")
    assert (off.model_name, off.pretrained, off.device) == ("world-clip", DEFAULT_PRETRAINED, "cpu")
    assert (rnd.model_name, rnd.pretrained, rnd.device) == ("ViT-B-32", "random", "cpu") and not rnd.trained_weights
    for p in (off, rnd):
        assert all(d.startswith("world") or d == "auto" for d in p.datasets().values()), p.datasets()
    for name in PAPER_MODELS:
        # the papers' data where the course holds it; the quick variants keep today's subsets
        full, quick = get_preset(name), get_preset(name + " quick")
        assert full.datasets() == {"01": "imagenette", "02": "imagenet", "03": "imagenet",
                                   "04": "photos", "05": "waterbirds", "06": "imagenet-seg", "07": "imagenet"}
        assert quick.datasets() == {"01": "imagenette", "02": "imagenette", "03": "imagenette",
                                    "04": "photos", "05": "waterbirds", "06": "imagenet-seg", "07": "imagenette"}
        assert full.notebooks["05"]["n_per_group"] == 0 and full.notebooks["06"]["n_images"] is None
        assert quick.quick and not full.quick and (quick.model_name, quick.pretrained) == (full.model_name,
                                                                                            full.pretrained)


@pytest.mark.parametrize("nb", presets.NOTEBOOKS)
def test_every_notebook_takes_its_parameters_from_a_preset(nb):
    params = _parameters_cell(nb)
    names = [n for n, _ in params]
    assert params[0] == ("preset", "offline"), "the preset is the parameters cell's first line"
    defaults = dict(params)
    src = next((ROOT / "notebooks" / "src").glob(f"{nb}_*.py")).read_text()
    assert re.search(r"\n\w+, figures, \(model, preprocess, tokenizer\) = begin\(globals\(\), \"" + nb + r"\"\)", src), \
        "the notebook starts from its parameters with begin()"
    passed = notebook_parameters(nb) & set(names)  # what begin hands to resolve
    for p in PRESETS.values():
        keys = {"model_name", "pretrained", "device", "protocol"} | set(p.notebooks[nb])
        assert keys <= set(names), (p.name, keys - set(names))  # no preset sets a parameter the notebook lacks
        assert keys <= passed, (p.name, keys - passed)  # and begin hands each one to resolve
        for k in keys:
            assert defaults[k] in (None, ""), f"{nb}: {k} must default to None / '' so the preset applies"
    # what the offline preset gives is what the notebook gave before presets existed
    before = {"01": dict(dataset="world:colour", n_images=300, batch_size=100),
              "02": dict(dataset="world:colour", n_images=600, batch_size=100),
              "03": dict(dataset="world:colour", n_images=1000, batch_size=100),
              "04": dict(images="auto", n_images=200),
              "05": dict(dataset="world", n_per_group=150, span_images=1000, batch_size=100),
              "06": dict(dataset="world:colour", n_images=200, batch_size=50),
              "07": dict(dataset="world:shape", n_images=500, eval_images=300, layers=(3, 4, 5), top_k=10)}[nb]
    s = resolve("offline", nb, **{k: defaults[k] for k in passed})
    assert {k: s.values[k] for k in before} == before
    assert (s.model_name, s.pretrained, s.device) == ("world-clip", DEFAULT_PRETRAINED, "cpu") and s.trained_weights


def test_resolve_fills_what_is_unset_and_keeps_what_is_set():
    s = resolve("ViT-L-14 LAION", "03", model_name="", pretrained="", dataset="", n_images=None, batch_size=7,
                device="cpu", protocol="", pool_size=None, pool="")
    assert (s.model_name, s.pretrained, s.dataset) == ("ViT-L-14", "laion2b_s32b_b82k", "imagenet")
    assert s.n_images == get_preset("ViT-L-14 LAION").notebooks["03"]["n_images"]
    assert (s.batch_size, s.device, s.protocol, s.pool_size) == (7, "cpu", "paper", 0)
    assert s.pool == ""  # the preset does not set it: the notebook's own rule applies
    assert set(s.from_preset) == {"model_name", "pretrained", "dataset", "n_images", "protocol", "pool_size"}
    assert set(s.overridden) == {"batch_size", "device"}
    assert "set here: batch_size, device" in str(s) and "ViT-L-14 / laion2b_s32b_b82k" in str(s)
    assert resolve("offline", "06_zero_shot_segmentation", n_images=0).n_images == 0  # 0 is a value, not unset
    assert resolve("offline", 6, n_images=None).n_images == 200
    with pytest.raises(AttributeError, match="no parameter 'seed'"):
        _ = s.seed


def test_a_subset_of_the_papers_data_names_itself_an_approximation():
    from helpers.course.presets import approximation_note

    full = resolve("ViT-L-14 LAION", "06", dataset="", n_images=None, protocol="")
    assert full.n_images is None and full.sampled is None and not full.notes  # all 4,276 images
    quick = resolve("ViT-L-14 LAION quick", "06", dataset="", n_images=None, protocol="")
    assert quick.sampled == ("imagenet-seg", 1000, 4276)
    assert quick.notes[0].startswith("quick: the paper's protocol on 1,000 of imagenet-seg's 4,276 images")
    nb3 = resolve("ViT-L-14 LAION quick", "03", dataset="", n_images=None, protocol="")
    assert "other data: Imagenette" in str(nb3)  # not a sample of ImageNet validation
    for nb in ("02", "03"):  # all of ImageNet validation (its terms streamed from disk): no sampling error
        full_nb = resolve("ViT-L-14 LAION", nb, dataset="", n_images=None, protocol="")
        assert full_nb.n_images is None and full_nb.sampled is None and not full_nb.notes
    # a subset of ImageNet validation named by hand is an approximation, and says so
    nb2 = resolve("ViT-L-14 LAION", "02", dataset="", n_images=2000, protocol="")
    assert nb2.sampled == ("imagenet", 2000, 50000) and nb2.notes[0].startswith("approximation: ")
    wb = resolve("ViT-H-14 LAION quick", "05", dataset="", n_per_group=None, protocol="")
    assert wb.sampled == ("waterbirds", None, 5794) and "250 images per group" in wb.notes[0]
    assert resolve("ViT-H-14 LAION", "05", dataset="", n_per_group=None, protocol="").sampled is None
    # the course's protocol, or the offline world: no banner
    assert resolve("ViT-L-14 LAION quick", "06", dataset="", n_images=None, protocol="course").sampled is None
    assert not resolve("offline", "06", dataset="", n_images=None, protocol="").notes
    assert approximation_note({"dataset": "imagenet-seg", "n_images": 4276}, "paper") is None


def test_imagenet_from_a_local_folder(tmp_path, monkeypatch):
    from PIL import Image

    from helpers.data.datasets import IMAGENET_INSTRUCTIONS, load_task

    monkeypatch.delenv("CLIP_COURSE_IMAGENET", raising=False)
    with pytest.raises(FileNotFoundError, match="CLIP_COURSE_IMAGENET is not set") as info:
        load_task("imagenet", preprocess=_preprocess(32), n_images=4)
    assert IMAGENET_INSTRUCTIONS in str(info.value) and "ILSVRC2012_img_val.tar" in str(info.value)
    wnids = (ROOT / "data" / "imagenet_wnids.txt").read_text().split()
    for c in (0, 1, 2, 999):  # four classes of five images each
        d = tmp_path / "val" / wnids[c]
        d.mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (40, 30), (c % 256, i * 40, 0)).save(d / f"ILSVRC2012_val_{c:04d}{i}.JPEG")
    monkeypatch.setenv("CLIP_COURSE_IMAGENET", str(tmp_path / "val"))
    task = load_task("imagenet", preprocess=_preprocess(32))
    assert len(task) == 20 and task.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [999] * 5  # the reference's order
    sub = load_task("imagenet", preprocess=_preprocess(32), n_images=9, seed=1)
    counts = torch.bincount(sub.labels, minlength=1000)[[0, 1, 2, 999]]
    assert len(sub) == 9 and counts.min() >= 2  # class-stratified: 9 // 4 per class, one more at random
    assert load_task(f"imagenet:{tmp_path / 'val'}", preprocess=_preprocess(32), n_images=3).name.startswith("imagenet:")


def test_another_model_never_takes_the_presets_weights():
    s = resolve("offline", "01", model_name="ViT-B-16", pretrained="", dataset="", n_images=None)
    assert (s.model_name, s.pretrained, s.dataset) == ("ViT-B-16", "", "world:colour")
    from helpers.engine.models import load_model

    with pytest.raises(ValueError, match="laion2b_s34b_b88k.*pretrained='random'"):
        load_model(s.model_name, s.pretrained or None)
    # the preset's own model by name keeps the preset's weights
    s = resolve("ViT-B-16 LAION", "02", model_name="ViT-B-16", pretrained="")
    assert s.pretrained == "laion2b_s34b_b88k"
    assert resolve("ViT-B-16 LAION", "02", model_name="ViT-B-16", pretrained="random").pretrained == "random"


def test_unknown_presets_and_notebooks():
    with pytest.raises(ValueError) as info:
        resolve("ViT-B-16", "01")
    assert all(repr(name) in str(info.value) for name in PRESETS)
    with pytest.raises(ValueError, match="unknown notebook"):
        resolve("offline", "08")
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset(None)


def test_auto_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve("ViT-H-14 LAION", "01", device="").device == "cuda"
    assert resolve("ViT-H-14 LAION", "01", device="cpu").device == "cpu"
    assert resolve("offline", "01", device="").device == "cpu"  # the offline figures are CPU figures
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s = resolve("ViT-H-14 LAION", "01", device="")
    assert s.device == "cpu" and "no GPU" in str(s) and "T4" in str(s)


def test_download_sizes():
    for name, (model, _) in PAPER_MODELS.items():
        d = downloads(name)
        published = PUBLISHED_PARAMS_M[model.removesuffix("-quickgelu")] * 4
        assert d["weights"] == pytest.approx(published, rel=0.01), name
        assert set(d) == {"weights", "imagenette", "waterbirds", "imagenet-seg"}
    assert downloads("offline") == {} and downloads("random ViT-B-32") == {}
    # the sizes the download messages name
    assert "about 330 MB" in (ROOT / "helpers" / "data" / "datasets.py").read_text()
    assert "about 480 MB" in (ROOT / "helpers" / "data" / "waterbirds.py").read_text()
    assert "about 1.4 GB" in (ROOT / "helpers" / "data" / "segmentation_tasks.py").read_text()
    assert downloads("ViT-B-16 LAION")["imagenette"] == 330 and downloads("ViT-B-16 LAION")["imagenet-seg"] == 1400


def test_gpu_estimates_fit_a_free_colab_gpu():
    for row in presets_table():
        p = get_preset(row["preset"])
        if p.device == "auto":
            # the quick variants leave a third of a T4 free for what the estimate ignores (allocator,
            # fragmentation); the papers' whole sets (Waterbirds' 5,794 images' heads) need a 40 GB GPU
            assert row["gpu_memory_gib"] <= 2 / 3 * (presets.T4_MEMORY_GIB if p.quick else 40), row
    # the estimate grows with what it counts: weights, the batch, stored terms, a backward pass
    b16 = estimate_gpu_memory("ViT-B-16", "01", batch_size=1)
    assert b16 == pytest.approx(PUBLISHED_PARAMS_M["ViT-B-16"] * 4e6 / 2**30 + 0.5, abs=0.05)
    assert estimate_gpu_memory("ViT-B-16", "01", batch_size=64) > b16
    assert estimate_gpu_memory("ViT-B-16", "01", batch_size=1, stored_images=1000) > b16
    assert estimate_gpu_memory("ViT-B-16", "06", batch_size=8) > estimate_gpu_memory("ViT-B-16", "01", batch_size=8)
    assert estimate_gpu_memory("ViT-H-14", "06", batch_size=4) > estimate_gpu_memory("ViT-L-14", "06", batch_size=4)


def test_readme_lists_the_presets():
    readme = (ROOT / "README.md").read_text()
    assert presets.markdown_table() in readme, "regenerate the table: python -m helpers.course.presets"


# ---------------------------------------------------------------------------------------------
# offline: every download a preset needs fails within seconds, naming the offline preset
# ---------------------------------------------------------------------------------------------


def _preprocess(size=224):
    return open_clip.image_transform(size, is_train=False)


def _loaders(tmp_path):
    from helpers.data.datasets import load_task
    from helpers.data.segmentation_tasks import load_segmentation_task
    from helpers.data.waterbirds import waterbirds_task

    pp = _preprocess()
    return {
        "imagenette": lambda: load_task("imagenette", preprocess=pp, n_images=8),
        "waterbirds": lambda: waterbirds_task(pp, n=8),
        "imagenet-seg": lambda: load_segmentation_task("imagenet-seg", pp, 8),
    }


@pytest.mark.parametrize("preset", list(PAPER_MODELS))
def test_every_download_of_a_preset_fails_fast_offline(preset, tmp_path, monkeypatch):
    import helpers.engine.models as hm
    from helpers.engine import download
    from helpers.engine.download import OfflineError

    real_probe = download.host_reachable

    def offline_probe(host, port=443, timeout=3.0):  # a real probe that cannot succeed
        return real_probe("nonexistent.invalid", port, timeout)

    monkeypatch.setenv("CLIP_COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIP_COURSE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(download, "host_reachable", offline_probe)
    monkeypatch.setattr(hm, "host_reachable", offline_probe)
    p = get_preset(preset)
    loaders = _loaders(tmp_path)
    calls = {"weights": lambda: hm.load_model(p.model_name, p.pretrained, cache_dir=str(tmp_path / "hub"))}
    for data in p.datasets().values():
        if data in loaders:
            calls[data] = loaders[data]
    assert set(calls) == {"weights", "imagenette", "waterbirds", "imagenet-seg"}
    for what, call in calls.items():
        t0 = time.perf_counter()
        with pytest.raises(OfflineError) as info:
            call()
        assert time.perf_counter() - t0 < 10, what
        assert "preset='offline'" in str(info.value), (what, str(info.value))
    assert not [f for f in tmp_path.rglob("*") if f.is_file()], "an offline failure leaves nothing behind"


# ---------------------------------------------------------------------------------------------
# world scenes for a real model; pools sampled for slow text towers
# ---------------------------------------------------------------------------------------------


def test_world_tasks_reach_a_real_models_input_size():
    from PIL import Image

    from helpers.data import world
    from helpers.data.datasets import load_task, world_task

    pp = _preprocess(224)
    task = load_task("world:colour", n_images=5, preprocess=pp, seed=0)
    scenes = world.sample(5, split="test", seed=1)
    x, y = task.dataset[3]
    assert x.shape == (3, 224, 224) and int(y) == int(scenes.factors["colour"][3])
    assert torch.equal(x, pp(Image.fromarray(scenes.images[3])))  # the model's own preprocess, scene by scene
    assert task.images().shape == (5, 3, 224, 224)
    batch, labels = next(iter(torch.utils.data.DataLoader(task.dataset, batch_size=4)))
    assert batch.shape == (4, 3, 224, 224) and labels.tolist() == scenes.factors["colour"][:4].tolist()
    with pytest.raises(IndexError):
        task.dataset[5]
    # without a preprocess: the scenes at their own 64 px, as before
    assert world_task("colour", 2).dataset[0][0].shape == (3, 64, 64)


def test_segmentation_tasks_reach_a_real_models_input_size():
    from helpers.data.segmentation_tasks import load_segmentation_task

    pp = _preprocess(224)
    for name in ("world:colour", "world-pairs:colour"):
        task = load_segmentation_task(name, pp, 3)
        assert task.images.shape == (3, 3, 224, 224) and task.masks.shape == (3, 224, 224)
        assert task.masks.any() and not task.masks.all()


def test_pool_sample_keeps_each_property_share():
    from helpers.data.pools import load_pool

    pool = load_pool("world")
    small = pool.sample(24, seed=3)
    assert len(small) == 24 and small.name == pool.name
    assert set(small.texts) <= set(pool.texts) and len(set(small.texts)) == 24
    order = [pool.texts.index(t) for t in small.texts]
    assert order == sorted(order)
    counts, full = small.counts(), pool.counts()
    for prop, n in full.items():  # largest remainders: within one of the exact share
        assert abs(counts.get(prop, 0) - 24 * n / len(pool)) < 1, prop
    for i, t in enumerate(small.texts):
        j = pool.texts.index(t)
        assert (small.properties[i], small.values[i]) == (pool.properties[j], pool.values[j])
    assert small.texts == pool.sample(24, seed=3).texts and small.texts != pool.sample(24, seed=4).texts
    assert pool.sample(0).texts == pool.texts and pool.sample(10_000).texts == pool.texts
    with pytest.raises(ValueError):
        pool.sample(-1)
    assert np.isclose(sum(pool.sample(100).counts().values()), 100)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_textspan_on_fewer_images_than_dimensions(dtype):
    """The random ViT-B-32 preset spans heads of width 512 over 8 images: TextSpan then takes the
    span from the images' side; its picks match the plain NumPy reference."""
    from helpers.methods.textspan import random_texts, textspan, textspan_reference

    g = torch.Generator().manual_seed(0)
    C = (torch.randn(6, 12, 64, generator=g, dtype=torch.float64) @ torch.randn(64, 64, generator=g,
                                                                                dtype=torch.float64)).to(dtype)
    R = random_texts(40, 64, seed=1, dtype=dtype)
    res = textspan(C, R, 6)
    assert res.span_rank.tolist() == [12] * 6  # as many directions as images
    for h in range(6):
        ref = textspan_reference(C[h].numpy(), R.numpy(), 6)
        assert res.indices[h].tolist() == ref.indices.tolist()
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(res.variance[h], ref.variance.to(res.variance), rtol=0, atol=tol)


def test_pca_on_fewer_images_than_dimensions():
    from helpers.methods.textspan import pca_basis

    g = torch.Generator().manual_seed(2)
    C = torch.randn(3, 10, 48, generator=g, dtype=torch.float64)
    res = pca_basis(C, 5)
    for h in range(3):  # against NumPy's eigendecomposition of the covariance
        X = (C[h] - C[h].mean(0)).numpy()
        lam, vec = np.linalg.eigh(X.T @ X / 10)
        assert np.allclose(res.criterion[h].numpy(), lam[::-1][:5], atol=1e-10)
        dots = np.abs((res.directions[h].numpy() * vec[:, ::-1][:, :5].T).sum(-1))
        assert np.allclose(dots, 1, atol=1e-8)


def test_colab_time_estimates():
    from helpers.course.presets import _tower_flops, colab_table, estimate_minutes

    # one layer of width 2 on 3 tokens: 2 x (12 * 3 * 4 + 2 * 9 * 2) multiply-adds x 2
    assert _tower_flops(2, 1, 3) == 2 * (12 * 3 * 4 + 2 * 9 * 2)
    for nb in ("01", "02", "06"):
        b, l, h = (estimate_minutes(p, nb) for p in ("ViT-B-16 LAION", "ViT-L-14 LAION", "ViT-H-14 LAION"))
        assert 1 <= b < l and 1 <= h
    # a GPU twice as fast takes less time (the fixed minute for loading stays)
    assert estimate_minutes("ViT-L-14 LAION", "01", tflops=8.0) < estimate_minutes("ViT-L-14 LAION", "01")
    with pytest.raises(ValueError, match="CPU"):
        estimate_minutes("offline", "01")
    table = colab_table()
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == sum(p.device == "auto" for p in PRESETS.values()) and all(r.count("~") == len(presets.NOTEBOOKS) for r in rows)


def test_readme_lists_the_colab_estimates():
    readme = (ROOT / "README.md").read_text()
    assert presets.colab_table() in readme, "regenerate the Colab table: helpers.course.presets.colab_table()"


def test_settings_start_prints_records_and_loads(capsys):
    s = resolve("offline", "01", model_name=None, pretrained=None, device="")
    assert s.unpack() == ("world-clip", DEFAULT_PRETRAINED, "cpu")  # the values, in the order passed
    figures: dict = {}
    draws = []
    for before in (123, 456):  # whatever was drawn before, start(seed=7) leaves the same state
        torch.manual_seed(before)
        model, preprocess, tokenizer = s.start(figures, seed=7)
        draws.append(torch.rand(3))
    assert torch.equal(*draws), "start seeds torch's generator"
    assert figures == {"preset": "offline", "trained_weights": True}
    assert str(s) in capsys.readouterr().out
    assert callable(preprocess) and callable(tokenizer)
    assert next(model.parameters()).device.type == "cpu"


def test_begin_fills_the_namespace_from_the_preset(tmp_path, capsys):
    """begin() is resolve() on the names a parameters cell left in a namespace: unset ones are
    filled from the preset and written back, set ones win, others are left alone; then start()."""
    ns = {"preset": "offline", "model_name": "", "pretrained": "", "dataset": "", "n_images": 12, "batch_size": None,
          "device": "", "protocol": "", "stream": "auto", "seed": 3, "record_to": str(tmp_path / "f.json")}
    settings, figures, (model, preprocess, tokenizer) = begin(ns, "02")
    assert ns["model_name"] == "world-clip" and ns["dataset"] == "world:colour" and ns["batch_size"] == 100
    assert ns["n_images"] == 12 and settings.overridden == ("n_images",) and ns["stream"] == "auto"
    assert "stream" not in settings.values and set(settings.values) == notebook_parameters("02") & set(ns)
    assert load_figures(tmp_path / "f.json") == {"preset": "offline", "trained_weights": True}
    assert "set here: n_images" in capsys.readouterr().out and callable(preprocess)
    with pytest.raises(KeyError, match="record_to"):
        begin({"preset": "offline", "seed": 0}, "01")
    with pytest.raises(ValueError, match="unknown preset"):
        begin({**ns, "preset": "nope"}, "02")


def test_second_order_layers_fit_every_preset():
    """Notebook 7's MLP layers exist, are followed by an attention layer, and each layer's
    image-independent tensor (neurons x later heads x output dimension) fits what
    helpers.methods.second_order builds without being asked."""
    from helpers.methods.second_order import DEFAULT_MAX_BYTES

    for p in PRESETS.values():
        layers = p.notebooks["07"]["layers"]
        if p.model_name == "world-clip":
            from helpers.engine import models  # noqa: F401  (registers the offline model's config)
        cfg = open_clip.get_model_config(p.model_name)
        v = cfg["vision_cfg"]
        n, heads = v["layers"], v["width"] // v.get("head_width", 64)
        mlp = int(v["width"] * v.get("mlp_ratio", 4.0))
        assert all(0 <= L < n - 1 for L in layers), (p.name, layers)
        for L in layers:
            assert 4 * mlp * (n - 1 - L) * heads * cfg["embed_dim"] <= DEFAULT_MAX_BYTES, (p.name, L)
        assert p.notebooks["07"]["top_k"] <= p.notebooks["07"]["n_images"]
    assert get_preset("ViT-B-32 OpenAI").notebooks["07"]["layers"] == (8, 9, 10)  # the paper's
