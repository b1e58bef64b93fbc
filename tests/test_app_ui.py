"""The explorer app without a browser: its settings, every analysis's data on the offline default
(a few world scenes), the page's widgets (each tab draws, a control redraws, uploads are checked),
the caches read back, the command line and the app's notebook."""

import datetime
import io
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers.course import app as A
from helpers.course.app import ENV_N_IMAGES, ENV_PRESET, Explorer, app_config, build_app

ROOT = Path(__file__).resolve().parent.parent
N = 24


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("app-cache")


@pytest.fixture(scope="module")
def ex(cache):
    import plotly.io as pio

    config = app_config(n_images=N, cache_dir=cache, n_texts=6, n_choices=5, threads=torch.get_num_threads())
    renderer = pio.renderers.default
    A.setup_process(config)  # plotly's renderer for a page (the threads stay the tests')
    yield Explorer(config, progress=False)
    pio.renderers.default = renderer


def _errors(outputs):
    return [o for o in outputs if o["output_type"] == "error"]


def _text(outputs):
    parts = []
    for o in outputs:
        if o["output_type"] == "stream":
            parts.append(o["text"])
        elif "data" in o:
            parts.append(o["data"].get("text/html", "") + json.dumps(o["data"].get("application/vnd.plotly.v1+json", "")))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


def test_config_precedence():
    env = {ENV_PRESET: "random ViT-B-32", ENV_N_IMAGES: "30", "QUERY_STRING": ""}
    c = app_config(environ=env)
    assert c.preset == "random ViT-B-32" and c.n_images == 30 and c.model_name == "ViT-B-32"
    assert c.sources == {"preset": f"${ENV_PRESET}", "n_images": f"${ENV_N_IMAGES}"} and c.threads is None
    q = app_config(environ=dict(env, QUERY_STRING="preset=offline&n_images=12"))
    assert (q.preset, q.n_images, q.sources["preset"]) == ("offline", 12, "query string")
    assert q.threads == 1 and q.dataset == "world:colour" and not q.paper
    p = app_config("ViT-B-16 LAION", 40, "/tmp/x", environ=dict(env, QUERY_STRING="preset=offline"))
    assert (p.preset, p.n_images, p.model_name, p.pretrained) == ("ViT-B-16 LAION", 40, "ViT-B-16",
                                                                  "laion2b_s34b_b88k")
    assert p.paper and p.dataset == "imagenette" and str(p.cache_dir) == "/tmp/x"  # no local ImageNet named
    named = app_config("ViT-B-16 LAION", 40, environ={"CLIP_COURSE_IMAGENET": "/data/imagenet/val"})
    assert named.dataset == "imagenet"  # the paper preset's own data when a copy is there
    from helpers.course.app import GALLERY_IMAGES

    whole = app_config("ViT-L-14 LAION", environ={})  # its notebooks take all of ImageNet validation
    assert whole.n_images == GALLERY_IMAGES and whole.sources["n_images"] == "preset"
    d = app_config(environ={})
    assert d.preset == "offline" and d.n_images == 1000 and d.sources["n_images"] == "preset"
    assert app_config(environ={"QUERY_STRING": "preset=ViT-L-14+LAION"}).model_name == "ViT-L-14"
    with pytest.raises(ValueError, match="unknown preset 'nope'.*offline"):
        app_config(environ={ENV_PRESET: "nope"})
    with pytest.raises(ValueError, match="whole number"):
        app_config(environ={"QUERY_STRING": "n_images=many"})
    with pytest.raises(ValueError, match="at least 2"):
        app_config(n_images=1, environ={})


# ---------------------------------------------------------------------------------------------
# the analyses, as data
# ---------------------------------------------------------------------------------------------


def test_explorer_loads_the_catalogue_and_reads_it_back(ex, cache):
    assert ex.computed == {"head terms": True, "catalogue": True}
    assert ex.layers == [4, 5, 6, 7] and ex.n_heads == 16 and len(ex.gallery) == N
    assert ex.pool.name == "world" and ex.span == "numerical" and ex.score == "cosine"
    assert set(ex.catalogues) == {"numerical", "paper"} and ex.catalogue.span == "numerical"
    assert all(r.n == 5 for r in ex.catalogue.roles) and len(ex.catalogue.texts[0]) == 6
    again = Explorer(app_config(n_images=N, cache_dir=cache, n_texts=6), progress=False)
    assert again.computed == {"head terms": False, "catalogue": False}
    assert [r.property for r in again.catalogue.roles] == [r.property for r in ex.catalogue.roles]
    assert torch.equal(again.terms.heads, ex.terms.heads)
    assert "read from the cache" in A._header(again) and "computed in" in A._header(ex)


def test_choices(ex):
    images = ex.image_choices()
    assert [k for _, k in images[:5]] == [f"g{i}" for i in range(5)] and images[5][1] == "photo:astronaut"
    assert images[0][0] == f"0: {ex.gallery.caption(0)}"
    heads = ex.head_choices()
    assert len(heads) == 16 and heads[0][0].startswith("L4.H0 · ")
    best = ex.best_head()
    assert ex.catalogue.roles[best].purity == max(r.purity for r in ex.catalogue.roles)
    props = [p for _, p in ex.property_choices()]
    assert props == ex.catalogue.properties() and props
    with pytest.raises(ValueError, match="no head has the role"):
        ex.best_head("texture")


def test_property_search(ex):
    prop = ex.catalogue.properties()[0]
    found = ex.property_search(prop, "g3", k=5, min_purity=0.0, score="cosine")
    assert len(found.indices) == 5 and 3 not in found.indices and len(found.other) == 5
    assert found.heads == ex.catalogue.heads_for(prop) and 0 <= found.shared <= 5
    assert found.scores == sorted(found.scores, reverse=True)
    if prop in ex.gallery.factors:  # the world's own factor: scored against the truth
        v = ex.gallery.factors[prop]
        assert found.agreement == pytest.approx(sum(v[i] == v[3] for i in found.indices) / 5)
        assert found.chance == pytest.approx(((v == v[3]).sum() - 1) / (N - 1))
    dot = ex.property_search(prop, "g3", k=5, min_purity=0.0, score="dot")
    assert dot.indices == found.other and dot.other == found.indices and dot.shared == found.shared
    photo = ex.property_search(prop, "photo:coffee", k=5, min_purity=0.0)
    assert photo.agreement is None and len(set(photo.indices)) == 5
    with pytest.raises(ValueError, match="no head has the role 'texture'"):
        ex.property_search("texture", "g0")
    weakest = min(ex.catalogue.properties(), key=lambda p: max(r.purity for r in ex.catalogue.roles if r.property == p))
    top = max(r.purity for r in ex.catalogue.roles if r.property == weakest)
    if top < 1.0:
        with pytest.raises(ValueError, match=f"the purest has {top:.1f}\\): lower the purity"):
            ex.property_search(weakest, "g0", min_purity=top + 0.05)


def test_head_neighbours(ex):
    h = ex.best_head()
    img = ex.head_image_neighbours(h, "g1", k=4)
    assert len(img.indices) == 4 and 1 not in img.indices and img.heads == [h]
    up = ex.head_image_neighbours(h, "photo:rocket", k=4, score="dot")
    assert up.score == "dot" and len(up.indices) == 4
    text = ex.head_texts(h, 1)[0]
    txt = ex.head_text_neighbours(h, text, k=N)
    assert sorted(txt.indices) == list(range(N)) and sorted(txt.other) == list(range(N))
    with pytest.raises(ValueError, match="type a text"):
        ex.head_text_neighbours(h, "  ")


def test_maps_add_up_and_contrast_is_a_difference(ex):
    res = ex.maps("g2", ["a red object"])
    assert res.patch_maps.shape == (1, 1, 8, 8) and res.max_error() < 1e-5
    c = ex.maps("g2", ["a red square", "a photo of grass"], layers=[5, 6, 7], heads=[1], contrast=True)
    m = c.patch_maps[0]
    assert m.shape == (3, 8, 8) and torch.allclose(m[2], m[0] - m[1], atol=1e-6) and c.max_error() < 1e-5
    with pytest.raises(ValueError, match="two texts"):
        ex.maps("g2", ["a"], contrast=True)
    topic = ex.topic_maps(ex.best_head(), "photo:chelsea", ["a cat", "a dog", "a red object"])
    assert topic.shape == (3, 8, 8) and torch.allclose(topic.sum(0), torch.zeros(8, 8), atol=1e-6)  # minus the mean
    with pytest.raises(ValueError, match="two texts"):
        ex.topic_maps(0, "g0", ["a cat"])


def test_layer_view_adds_up_to_the_cosine(ex):
    names, vals, cos = ex.layer_view("g0", "a blue object")
    assert names[0] == "embed" and names[-1] == "const" and len(names) == 2 * 8 + 2
    assert sum(vals) == pytest.approx(cos, abs=1e-5)
    heads, hvals, cos2 = ex.layer_view("g0", "a blue object", layer=7)
    assert heads == ["L7.H0", "L7.H1", "L7.H2", "L7.H3"] and cos2 == pytest.approx(cos)
    assert sum(hvals) == pytest.approx(vals[names.index("attn.7")], abs=1e-5)


def _png_bytes(size=(50, 40), colour=(0, 200, 0)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads(ex):
    key = ex.add_upload("green.png", _png_bytes())
    assert key in [k for _, k in ex.image_choices()] and ex.pil(key).size == (50, 40)
    assert ex.view(key).size == (64, 64) and ex.mask(key) is None and ex.batch(key).shape == (1, 3, 64, 64)
    assert len(ex.head_image_neighbours(0, key, k=3).indices) == 3
    with pytest.raises(ValueError, match="'notes.txt' is not an image"):
        ex.add_upload("notes.txt", b"hello")
    with pytest.raises(KeyError):
        ex.pil("upload:99:nothing.png")
    with pytest.raises(KeyError, match="gallery has"):
        ex.pil(f"g{N}")


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------


def test_every_tab_draws_and_a_control_redraws(ex):
    import ipywidgets as widgets

    page = build_app(ex)
    assert list(page.panels) == list(A.TABS) and page.tabs.titles == A.TABS
    assert [p.drawn for p in page.panels.values()] == [True] + [False] * (len(A.TABS) - 1)  # drawn when shown
    for k, (name, panel) in enumerate(page.panels.items()):
        page.tabs.selected_index = k
        assert panel.drawn
        out = panel.children[1]
        assert out.outputs and not _errors(out.outputs), (name, _errors(out.outputs))
        before = _text(out.outputs)
        # change the first control as a person would
        w = next(iter(panel.controls.values()))
        if isinstance(w, (widgets.Dropdown, widgets.ToggleButtons)):
            values = [v for _, v in w.options] if isinstance(w.options[0], tuple) else list(w.options)
            w.value = next(v for v in values if v != w.value)
        else:
            raise AssertionError(f"{name}: unexpected first control {type(w).__name__}")
        assert not _errors(out.outputs), (name, _errors(out.outputs))
        assert _text(out.outputs) != before, f"{name}: the output did not change"
    # the figures are plotly's and the tables HTML
    assert "application/vnd.plotly.v1+json" in page.panels["Exact map"].children[1].outputs[0]["data"]
    assert "Sum check" in _text(page.panels["Exact map"].children[1].outputs)
    assert "<table" in _text(page.panels["Head catalogue"].children[1].outputs)


def test_bad_input_gets_a_message_not_a_traceback(ex):
    page = build_app(ex)
    panel = page.panels["Contrastive"]
    panel.controls["text_b"].value = "   "
    outs = panel.children[1].outputs
    assert not _errors(outs) and "type two texts" in _text(outs)
    prop = page.panels["Property search"]
    prop.controls["min_purity"].value = 1.0
    if not ex.catalogue.heads_for(prop.controls["property"].value, 1.0):
        assert "lower the purity" in _text(prop.children[1].outputs)


def test_upload_box(ex):
    page = build_app(ex)
    page.tabs.selected_index = A.TABS.index("Exact map")
    page.upload.value = ({"name": "notes.txt", "type": "text/plain", "size": 5, "content": memoryview(b"hello"),
                          "last_modified": datetime.datetime(2024, 1, 1)},)
    assert "not an image" in page.status.value and "notes.txt" in page.status.value
    page.upload.value = ({"name": "leaf.png", "type": "image/png", "size": 10, "content": memoryview(_png_bytes()),
                          "last_modified": datetime.datetime(2024, 1, 1)},)
    assert "Added <b>leaf.png</b> (50 × 40 px)" in page.status.value
    exact = page.panels["Exact map"].controls["image"]
    assert exact.value.endswith(":leaf.png")  # the tab on show switched to it and redrew
    other = page.panels["Topic segmentation"].controls["image"]
    assert other.value == "g0" and exact.value in [k for _, k in other.options]  # offered, not forced
    assert not _errors(page.panels["Exact map"].children[1].outputs)


# ---------------------------------------------------------------------------------------------
# command line, notebook, README
# ---------------------------------------------------------------------------------------------


def test_prepare_only_from_the_command_line(cache, capsys):
    assert A.main(["--prepare-only", "--n-images", str(N), "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "preparing world-clip/world-v3: 24 images of world:colour" in out and "ready in" in out


def test_the_command_line_serves_the_notebook_with_voila(cache, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(A.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
    monkeypatch.delenv(ENV_PRESET, raising=False)
    assert A.main(["--n-images", str(N), "--cache-dir", str(cache), "--port", "9999", "--no-browser"]) == 0
    (cmd, env), = calls
    assert cmd[1:4] == ["-m", "voila", str(A.NOTEBOOK)] and cmd[4:4 + len(A.VOILA_ARGS)] == list(A.VOILA_ARGS)
    assert cmd[-3:] == ["--port", "9999", "--no-browser"]  # the rest goes to voila
    assert env[ENV_N_IMAGES] == str(N) and env[A.ENV_CACHE] == str(cache.resolve()) and ENV_PRESET not in env
    with pytest.raises(SystemExit):
        A.main(["--preset"])  # a value is needed
    script = (ROOT / "scripts" / "app.sh").read_text()
    assert 'exec python -m helpers.course.app "$@"' in script and "bash scripts/setup.sh" in script


def test_app_notebook_is_thin_and_parametrised():
    import jupytext

    nb = json.loads(A.NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert any("parameters" in c["metadata"].get("tags", []) for c in code)
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert sum(len("".join(c["source"]).splitlines()) for c in code) <= 8
    src = ROOT / "notebooks" / "src" / "app_explorer.py"
    text = src.read_text()
    assert jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent") == text


def test_readme_launches_the_app():
    readme = (ROOT / "README.md").read_text()
    repo = (ROOT / "notebooks" / "src" / "REPO").read_text().strip()
    assert "bash scripts/app.sh" in readme and "python -m helpers.course.app" in readme
    badge = re.search(r"https://mybinder\.org/v2/gh/([^/]+/[^/]+)/HEAD\?urlpath=voila%2Frender%2F([^)\s]+)", readme)
    assert badge and badge.group(1) == repo
    assert badge.group(2).replace("%2F", "/") == "notebooks/app/explorer.ipynb" and A.NOTEBOOK.exists()
