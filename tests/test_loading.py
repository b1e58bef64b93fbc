"""Which weights ``load_model`` loads: named tags, ``"random"`` only when asked, the offline
default's tags in ``data/models/``, and checkpoint files of every supported architecture."""

import os
import time

import _early
import open_clip
import pytest
import torch
from _shapes import meta_model
from safetensors.torch import load_file, save_file

import helpers.engine.models as hm
from helpers.engine.models import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    OfflineError,
    default_weights_path,
    load_model,
    offline_tags,
)

# The architectures the course supports by name: the papers' models and the offline default.
SUPPORTED = ["world-clip", "ViT-B-32", "ViT-B-32-quickgelu", "ViT-B-16", "ViT-B-16-quickgelu",
             "ViT-L-14", "ViT-L-14-quickgelu", "ViT-H-14", "ViT-H-14-quickgelu"]


def _meta_state(name: str) -> dict[str, torch.Tensor]:
    """The state dict of ``name`` built on the meta device: keys and shapes, no memory."""
    return meta_model(name).state_dict()


def _random_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the keys and shapes of ``name`` (no model initialised): every
    tensor drawn from a seeded normal."""
    spec = _meta_state(name)
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=torch.float32) for k, v in spec.items()}


def _save(state: dict[str, torch.Tensor], folder, fmt: str) -> str:
    """Write ``state`` as open_clip's files are written: the hub's ``open_clip_model.safetensors``
    and ``open_clip_pytorch_model.bin`` (plain state dicts), or a training checkpoint
    ``epoch_N.pt`` (a dict with ``state_dict``, keys prefixed ``module.`` by DistributedDataParallel)."""
    if fmt == "safetensors":
        path = folder / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "bin":
        path = folder / "open_clip_pytorch_model.bin"
        torch.save(state, path)
    elif fmt == "pt":
        path = folder / "epoch_3.pt"
        torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": []}}, path)
    else:
        raise ValueError(fmt)
    return str(path)


def _uses_quick_gelu(model) -> bool:
    return any(isinstance(m, open_clip.transformer.QuickGELU) for m in model.modules())


def _assert_loaded(model, state, name):
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    assert _uses_quick_gelu(model) == name.endswith("-quickgelu"), "the architecture is the one named"
    assert not model.training


# ---------------------------------------------------------------------------------------------
# pretrained semantics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ViT-B-16", "ViT-L-14-quickgelu", "ViT-H-14"])
def test_a_model_without_named_weights_is_an_error(name, monkeypatch):
    built = []
    monkeypatch.setattr(open_clip, "create_model_and_transforms", lambda *a, **k: built.append(a))
    with pytest.raises(ValueError) as info:
        load_model(name)
    msg = str(info.value)
    for tag in open_clip.list_pretrained_tags_by_model(name):
        assert repr(tag) in msg or f"'{tag}'" in msg, tag
    assert "pretrained='random'" in msg and "checkpoint" in msg
    assert not built, "no model is built before the error"
    with pytest.raises(ValueError, match="No weights named"):
        load_model(name, "")  # the notebooks' empty parameter means the same


def test_random_weights_when_asked_by_name():
    torch.manual_seed(0)
    a = load_model(DEFAULT_MODEL, "random").model
    shipped = load_file(str(default_weights_path()))
    assert any(not torch.equal(a.state_dict()[k], v.float()) for k, v in shipped.items())
    torch.manual_seed(0)
    b = load_model(DEFAULT_MODEL, "random").model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_offline_default_loads_its_shipped_weights_without_a_tag():
    shipped = load_file(str(default_weights_path()))  # float16 on disk
    for args in [(), (DEFAULT_MODEL, DEFAULT_PRETRAINED), (DEFAULT_MODEL, "")]:
        model = load_model(*args).model
        state = model.state_dict()
        assert set(state) == set(shipped)
        assert all(torch.equal(state[k], v.float()) for k, v in shipped.items()), args
    assert DEFAULT_PRETRAINED in offline_tags()


def test_offline_tags_from_the_data_folder(tmp_path, monkeypatch):
    """Any data/models/world-clip-<tag>.safetensors loads by its tag (the plain-trained twin
    world-v2-plain will be one); the data folder follows CLIP_COURSE_DATA."""
    (tmp_path / "models").mkdir()
    state = {k: v.half() for k, v in _random_state(DEFAULT_MODEL, seed=5).items()}  # shipped as float16
    save_file(state, str(tmp_path / "models" / "world-clip-world-v2-plain.safetensors"))
    monkeypatch.setenv("CLIP_COURSE_DATA", str(tmp_path))
    assert offline_tags() == ["world-v2-plain"]
    model = load_model(DEFAULT_MODEL, "world-v2-plain").model
    assert all(torch.equal(model.state_dict()[k], v.float()) for k, v in state.items())
    with pytest.raises(ValueError, match=r"Unknown pretrained 'world-v9'.*\['world-v2-plain'\]"):
        load_model(DEFAULT_MODEL, "world-v9")
    # the default tag is missing here: a clear error, never random weights
    with pytest.raises(FileNotFoundError, match=rf"world-clip-{DEFAULT_PRETRAINED}\.safetensors.*world-v2-plain.*'random'"):
        load_model()


@pytest.mark.slow
def test_the_hub_download_path_is_taken_when_the_host_is_reachable(tmp_path, monkeypatch):
    """Weights not cached, hub reachable: open_clip downloads the tag's file and it is loaded
    (here the download is replaced by a local file: this machine has no network)."""
    state = _random_state("ViT-B-32", seed=1)
    path = _save(state, tmp_path, "safetensors")
    asked = []

    def fake_download(cfg, cache_dir=None, **kw):
        asked.append((cfg, cache_dir))
        return path

    monkeypatch.setattr(hm, "host_reachable", lambda host, **kw: True)
    monkeypatch.setattr(open_clip, "download_pretrained", fake_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = load_model("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path / "hub")).model
    assert len(asked) == 1 and asked[0][1] == str(tmp_path / "hub")
    assert asked[0][0] == open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    _assert_loaded(model, state, "ViT-B-32")


@pytest.mark.slow
def test_openai_tag_from_the_hugging_face_cache_runs_with_quick_gelu(tmp_path, monkeypatch):
    """A filled Hugging Face cache serves a tag with no network; OpenAI's weights were trained
    with QuickGELU, so the plain name with the "openai" tag gets it too."""
    state = _random_state("ViT-B-16", seed=2)
    repo = open_clip.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"].strip("/")
    snap = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0123abcd")
    _save(state, snap, "safetensors")
    monkeypatch.setattr(hm, "host_reachable", lambda host, **kw: pytest.fail("the cache needs no network"))
    model, preprocess, _ = load_model("ViT-B-16", "openai", cache_dir=str(tmp_path))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert _uses_quick_gelu(model)
    norm = [t for t in preprocess.transforms if type(t).__name__ == "Normalize"][0]
    assert tuple(norm.mean) == pytest.approx(open_clip.OPENAI_DATASET_MEAN)


def test_hub_weights_offline_fail_fast_naming_the_offline_preset(tmp_path, monkeypatch):
    from helpers.engine.download import host_reachable

    # the real probe, against a host that cannot resolve: as long as an offline machine takes
    monkeypatch.setattr(hm, "host_reachable",
                        lambda host, **kw: host_reachable("nonexistent.invalid", timeout=kw.get("timeout", 3.0)))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    built = []
    monkeypatch.setattr(open_clip, "create_model_and_transforms", lambda *a, **k: built.append(a))
    t0 = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        load_model("ViT-L-14-quickgelu", "openai", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 10
    assert "preset='offline'" in str(info.value) and "pretrained='/path/to" in str(info.value)
    assert not built and not any(tmp_path.rglob("*.safetensors"))


# ---------------------------------------------------------------------------------------------
# checkpoint files, every supported architecture
# ---------------------------------------------------------------------------------------------

# Each architecture once: ViT-B-32 and ViT-B-16 (safetensors) through the two hub tests above,
# the small ones here in the three formats; of the large ones, whose random state dicts take
# gigabytes, a couple in slow cases: one of each width and activation. A -quickgelu model and
# its plain twin differ only in the activation, which a state dict does not hold: the same
# files serve both (checked below).
HUB = [("ViT-B-32", "safetensors"), ("ViT-B-16", "safetensors")]
FAST = [("world-clip", "safetensors"), ("world-clip", "bin"), ("world-clip", "pt"),
        ("ViT-B-32-quickgelu", "pt"), ("ViT-B-16-quickgelu", "bin")]
SLOW = [("ViT-L-14-quickgelu", "bin"), ("ViT-H-14", "safetensors")]


def _spec(name):
    return {k: tuple(v.shape) for k, v in _meta_state(name).items()}


def test_every_supported_architecture_is_round_tripped():
    tested = {name for name, _ in HUB + FAST + SLOW}
    twins = {n.removesuffix("-quickgelu") if n.endswith("-quickgelu") else f"{n}-quickgelu" for n in tested}
    assert set(SUPPORTED) <= tested | (twins & set(SUPPORTED))
    assert {fmt for _, fmt in FAST} == {"safetensors", "bin", "pt"}
    for name in ("ViT-L-14", "ViT-H-14"):
        assert _spec(name) == _spec(f"{name}-quickgelu"), name


def _saved(path, fmt):
    """The tensors of a file written by :func:`_save`, read lazily (memory-mapped)."""
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            for k in f.keys():
                yield k, f.get_tensor(k)
        return
    obj = torch.load(path, mmap=True, weights_only=True)
    if fmt == "pt":
        obj = {k.removeprefix("module."): v for k, v in obj["state_dict"].items()}
    yield from obj.items()


def _round_trip(name, fmt, tmp_path):
    state = _random_state(name, seed=len(name))
    path = _save(state, tmp_path, fmt)
    keys = set(state)
    del state  # the large models: keep one copy of the weights in memory, the loaded one
    model = load_model(name, path).model
    loaded = model.state_dict()
    assert set(loaded) == keys
    for k, v in _saved(path, fmt):
        assert torch.equal(loaded[k], v), k
    assert _uses_quick_gelu(model) == name.endswith("-quickgelu"), "the architecture is the one named"
    assert not model.training


def _available_gib():
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 2**20


# the real architectures' files (a few hundred MB written and read) in the slow tier
@pytest.mark.parametrize("name,fmt", [pytest.param(n, f, id=f"{n}-{f}", marks=[pytest.mark.slow] * n.startswith("ViT"))
                                      for n, f in FAST])
def test_checkpoint_file_round_trip(name, fmt, tmp_path):
    _round_trip(name, fmt, tmp_path)


def _large_round_trip(name: str, fmt: str, tmp_path) -> tuple[str, str]:
    """:func:`_round_trip` of a large architecture in a process of its own: ``("passed", "")``,
    ``("skipped", why)`` or ``("failed", what it printed)``. Started at the session's start (the
    ``early`` mark): gigabytes written and read go on while the other tests use the processor."""
    import subprocess
    import sys

    code = ("import sys; sys.path[:0] = [sys.argv[1]]\n"
            "import test_loading as T\nfrom pathlib import Path\n"
            "name, fmt = sys.argv[2], sys.argv[3]\n"
            "# peak: the model plus the checkpoint open_clip reads whole, float32 (4 bytes a parameter)\n"
            "need = 2.5 * 4 * sum(v.numel() for v in T._meta_state(name).values()) / 2**30\n"
            "if T._available_gib() < need:\n"
            "    print(f'needs about {need:.0f} GiB of free memory'); sys.exit(77)\n"
            "T._round_trip(name, fmt, Path(sys.argv[4]))\n")
    done = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)), name, fmt,
                           str(tmp_path)], capture_output=True, text=True, env=_early.environ(), cwd=tmp_path)
    out = (done.stdout + done.stderr)[-6000:]
    return ("passed", "") if done.returncode == 0 else ("skipped", out.strip()) if done.returncode == 77 \
        else ("failed", out)


def _large_jobs(tmp_path_factory, asked=SLOW):
    """The large round trips asked for, one after the other (each needs gigabytes of memory),
    in one job: ``{(name, fmt): result}``."""
    def run_all(base):
        results = {}
        for n, f in asked:
            (base / f"{n}-{f}").mkdir()
            results[n, f] = _large_round_trip(n, f, base / f"{n}-{f}")
        return results

    return _early.job("large round trips", run_all, tmp_path_factory.mktemp("round-trips"))


def start_large_round_trips(tmp_path_factory, items=()) -> None:
    """The large round trips the session's tests ask for, started at the session's start."""
    _large_jobs(tmp_path_factory, [tuple(item.callspec.params["name_fmt"]) for item in items])


@pytest.mark.slow
@pytest.mark.early("start_large_round_trips")
@pytest.mark.parametrize("name_fmt", SLOW, ids=[f"{n}-{f}" for n, f in SLOW])
def test_checkpoint_file_round_trip_large(name_fmt, tmp_path_factory):
    status, said = _large_jobs(tmp_path_factory).result()[tuple(name_fmt)]
    if status == "skipped":
        pytest.skip(said)
    assert status == "passed", said


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = _save(_random_state(DEFAULT_MODEL), tmp_path, "safetensors")
    with pytest.raises(ValueError, match="Could not load the checkpoint .* into 'ViT-B-32'"):
        load_model("ViT-B-32", path)
    assert os.path.exists(path)


@pytest.mark.slow  # a real architecture's file, like the round trips above
def test_weights_read_from_a_file_are_not_drawn_first(tmp_path, monkeypatch):
    """A checkpoint's weights are not drawn at random before they are overwritten: the random
    fills of the parameters are skipped (counted), the buffers are made as usual, and the model
    is the one open_clip gives when it draws the weights and then loads the same file: every
    tensor, the buffers kept out of the state dict, and the image embeddings."""
    modes = []

    class Counted(hm._SkipParameterFills):
        def __init__(self):
            super().__init__()
            modes.append(self)

    monkeypatch.setattr(hm, "_SkipParameterFills", Counted)
    path = _save(_random_state("ViT-B-32", seed=3), tmp_path, "safetensors")
    fast = load_model("ViT-B-32", path).model
    assert len(modes) == 1 and modes[0].skipped >= 4 * 12  # at least the four matrices of each of the 12 blocks
    reference = open_clip.create_model("ViT-B-32", pretrained=None)
    open_clip.load_checkpoint(reference, path, strict=True)
    reference.eval()
    mine, theirs = fast.state_dict(), reference.state_dict()
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    mine, theirs = dict(fast.named_buffers()), dict(reference.named_buffers())
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)  # attn_mask included
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fast.encode_image(x), reference.encode_image(x))
    load_model()  # the offline default's small model loads as it always did (random weights: no file)
    assert len(modes) == 1
