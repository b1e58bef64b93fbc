"""Spatial maps: they add back up to the similarity, agree with the brute-force joint terms,
are linear in the text, and reject bad inputs with clear errors."""

import copy
import warnings

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import helpers.engine.models  # noqa: F401  (registers world-clip with open_clip)
from helpers.course.plots import colormap, heatmap_figure, overlay
from helpers.engine.decompose import Decomposer
from helpers.engine.images import model_preprocess, model_view
from helpers.methods import spatial
from helpers.methods.metrics import average_precision, iou, pixel_accuracy, threshold_map

F64 = torch.float64
TOL = 1e-10
SELECTIONS = [
    dict(),
    dict(layers=[1, -1]),
    dict(heads=[0, -1]),
    dict(layers=[2], heads=[1]),
    dict(layers=[0, -3], heads=[-1], strategy="lazy"),
    dict(heads=[1, 2], strategy="lazy"),
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = open_clip.create_model("world-clip")
    return m.eval().to(F64)


def _dims(model):
    """(layers, heads, grid, joint dimension, image size) of the model, read off its config."""
    v = model.visual
    return (len(v.transformer.resblocks), v.transformer.resblocks[0].attn.num_heads, tuple(v.grid_size),
            v.output_dim, tuple(v.image_size))


@pytest.fixture(scope="module")
def images(model):
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, *model.visual.image_size, generator=g, dtype=F64)


@pytest.fixture(scope="module")
def texts(model):
    g = torch.Generator().manual_seed(2)
    return torch.nn.functional.normalize(torch.randn(5, model.visual.output_dim, generator=g, dtype=F64), dim=-1)


# ----------------------------------------------------------------------------------------------
# Exactness
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("sel", SELECTIONS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "all")
def test_maps_sum_back_to_similarity(model, images, texts, sel, normalize):
    r = spatial.heatmaps(model, images, texts, normalize=normalize, **sel)
    assert isinstance(r, spatial.HeatmapResult)
    grid = _dims(model)[2]
    assert r.patch_maps.shape == (2, 5, *grid) and r.cls.shape == r.rest.shape == r.similarity.shape == (2, 5)
    assert r.grid == grid
    total = r.patch_maps.sum((-2, -1)) + r.cls + r.rest
    assert (total - r.similarity).abs().max() < TOL
    assert r.max_error() < TOL
    # the similarity is the model's own, not an internal reconstruction
    with torch.no_grad():
        emb = model.encode_image(images, normalize=normalize)
    assert (r.similarity - emb @ texts.T).abs().max() < TOL


@pytest.mark.parametrize("sel", SELECTIONS[1:4], ids=["layers", "heads", "one-head"])
def test_maps_match_brute_force_joint_terms(model, images, texts, sel):
    """Against the full (layer, token, head, dim) tensor scored afterwards."""
    r = spatial.heatmaps(model, images, texts, **sel)
    d = Decomposer(model)(images, heads=True, tokens=True, normalize=True)
    j = d.joint(sel.get("layers"), sel.get("heads")).data  # [B, l, T, h, d']
    per_token = torch.einsum("bltHd,md->bmt", j, texts)
    assert (r.cls - per_token[:, :, 0]).abs().max() < TOL
    assert (r.patch_maps.flatten(2) - per_token[:, :, 1:]).abs().max() < TOL


def test_strategies_agree(model, images, texts):
    for sel in (dict(layers=[1, 3]), dict(heads=[-1]), dict(layers=[-1], heads=[0, 1])):
        a = spatial.heatmaps(model, images, texts, strategy="forward", **sel)
        b = spatial.heatmaps(model, images, texts, strategy="lazy", **sel)
        for f in ("patch_maps", "cls", "rest", "similarity"):
            assert (getattr(a, f) - getattr(b, f)).abs().max() < TOL


def test_batches_in_chunks(model, images, texts):
    a = spatial.heatmaps(model, images, texts, heads=[1])
    b = spatial.heatmaps(model, images, texts, heads=[1], batch_size=1)
    assert (a.patch_maps - b.patch_maps).abs().max() < TOL and (a.rest - b.rest).abs().max() < TOL


def test_subtract_mean_is_difference_from_mean_map(model, images, texts):
    plain = spatial.heatmaps(model, images, texts)
    centred = spatial.heatmaps(model, images, texts, subtract_mean=True)
    expect = plain.patch_maps - plain.patch_maps.mean(1, keepdim=True)
    assert (centred.patch_maps - expect).abs().max() < TOL
    assert centred.max_error() < TOL
    # own-class maps: the paper's segmentation map of each image's label
    labels = torch.tensor([3, 0])
    own = spatial.own_class_maps(model, images, texts, labels)
    assert (own - expect[torch.arange(2), labels]).abs().max() < TOL
    assert spatial.own_class_maps(model, images, texts, labels, size=32).shape == (2, 32, 32)


def test_own_class_maps_by_layer_are_each_layers_own_map(model, images, texts):
    labels = torch.tensor([3, 0])
    L = _dims(model)[0]
    by_layer = spatial.own_class_maps_by_layer(model, images, texts, labels, batch_size=1)  # one image a pass
    assert by_layer.shape == (L, 2, *_dims(model)[2])
    for layer in range(L):
        alone = spatial.own_class_maps(model, images, texts, labels, layers=[layer])
        assert (by_layer[layer] - alone).abs().max() < TOL, layer
    # the layers add up to the all-layer map (a class-token tower: the maps are a sum over layers)
    assert (by_layer.sum(0) - spatial.own_class_maps(model, images, texts, labels)).abs().max() < TOL
    # and they are the decomposition segmenter's per-layer maps with these labels
    from helpers.methods.segmentation import layer_maps

    assert (by_layer - layer_maps(model, images, texts, labels=labels)).abs().max() < TOL
    with pytest.raises(IndexError, match="class indices"):
        spatial.own_class_maps_by_layer(model, images, texts, [3, 5])
    with pytest.raises(ValueError, match="2 images"):
        spatial.own_class_maps_by_layer(model, images, texts, [3])
    with pytest.raises(ValueError, match="at least two"):
        spatial.own_class_maps_by_layer(model, images, texts[:1], [0, 0])


def test_contrastive_map_is_difference_of_maps(model, images, texts):
    a, b = texts[0], texts[3]
    for sel in (dict(), dict(layers=[-2, -1]), dict(layers=[-2], heads=[1])):
        c = spatial.contrastive_map(model, images, a, b, **sel)
        ra = spatial.heatmaps(model, images, a, **sel).patch_maps[:, 0]
        rb = spatial.heatmaps(model, images, b, **sel).patch_maps[:, 0]
        assert c.shape == (2, *_dims(model)[2])
        assert (c - (ra - rb)).abs().max() < TOL


def test_topic_segmentation_is_one_head_heatmap(model, images, texts):
    seg = spatial.topic_segmentation(model, images, -2, 1, texts)
    assert seg.shape == (2, 5, *_dims(model)[2])
    for m in range(texts.shape[0]):
        ref = spatial.heatmaps(model, images, texts[m], layers=[-2], heads=[1]).patch_maps[:, 0]
        assert (seg[:, m] - ref).abs().max() < TOL
        assert (spatial.head_direction_map(model, images, -2, 1, texts[m]) - ref).abs().max() < TOL


@pytest.mark.parametrize("normalize", [True, False])
def test_head_direction_map_plus_cls_is_head_term(model, images, normalize):
    g = torch.Generator().manual_seed(5)
    direction = torch.randn(model.visual.output_dim, generator=g, dtype=F64)
    L, H = _dims(model)[:2]
    layer, head = L - 1, H - 1
    hmap = spatial.head_direction_map(model, images, layer, head, direction, normalize=normalize)
    cls = spatial.heatmaps(model, images, direction, layers=[layer], heads=[head], normalize=normalize).cls[:, 0]
    d = Decomposer(model)(images, heads=True, normalize=normalize)
    assert hmap.shape == (2, *_dims(model)[2])
    assert (hmap.sum((-2, -1)) + cls - d.heads[:, layer, head] @ direction).abs().max() < TOL


def test_cached_maps_follow_weight_changes(images, texts, model):
    m = copy.deepcopy(model)
    spatial.heatmaps(m, images, texts)
    with torch.no_grad():
        m.visual.proj.mul_(1.5)
        m.visual.transformer.resblocks[-1].attn.out_proj.weight.add_(0.01)
    r = spatial.heatmaps(m, images, texts, normalize=False)
    with torch.no_grad():
        emb = m.encode_image(images)
    assert (r.similarity - emb @ texts.T).abs().max() < TOL and r.max_error() < TOL


def test_string_texts_with_tokenizer(model, images):
    from helpers.engine.text import encode_texts

    tok = open_clip.get_tokenizer("world-clip")
    words = ["a red circle", "a blue square"]
    a = spatial.heatmaps(model, images, words, tokenizer=tok)
    b = spatial.heatmaps(model, images, encode_texts(model, tok, words))
    assert (a.patch_maps - b.patch_maps).abs().max() < TOL


# ----------------------------------------------------------------------------------------------
# Images through the model's preprocess
# ----------------------------------------------------------------------------------------------


def _photo(w=90, h=50):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_non_square_pil_image_via_preprocess(model, texts):
    img = _photo()
    _, _, grid, _, size = _dims(model)
    r = spatial.heatmaps(model, img, texts)
    assert r.patch_maps.shape == (1, 5, *grid) and r.max_error() < TOL
    x = model_preprocess(model)(img)[None]
    assert x.shape == (1, 3, *size)
    assert (spatial.heatmaps(model, x, texts).patch_maps - r.patch_maps).abs().max() < TOL
    view = model_view(model, img)
    assert view.size == size[::-1] and view.mode == "RGB"
    out = overlay(view, r.patch_maps[0, 0])
    assert out.size == size[::-1] and out.mode == "RGB"
    # a list of images of different sizes, and a grayscale one
    r2 = spatial.heatmaps(model, [img, _photo(40, 70).convert("L")], texts[:2])
    assert r2.patch_maps.shape == (2, 2, *grid)


# ----------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------


def test_bad_layer_and_head_indices(model, images, texts):
    L, H = _dims(model)[:2]
    with pytest.raises(IndexError, match=rf"{L} layers.*0\.\.{L - 1}"):
        spatial.heatmaps(model, images, texts, layers=[L])
    with pytest.raises(IndexError, match=rf"{H} heads.*0\.\.{H - 1}"):
        spatial.heatmaps(model, images, texts, heads=[0, H])
    with pytest.raises(IndexError, match=rf"0\.\.{L - 1}"):
        spatial.topic_segmentation(model, images, -L - 1, 0, texts)
    with pytest.raises(IndexError, match=rf"0\.\.{H - 1}"):
        spatial.head_direction_map(model, images, 0, H + 3, texts[0])
    with pytest.raises(ValueError, match="duplicate"):
        spatial.heatmaps(model, images, texts, layers=[1, 1 - L])
    with pytest.raises(ValueError, match="empty layer"):
        spatial.heatmaps(model, images, texts, layers=[])
    with pytest.raises(TypeError):
        spatial.heatmaps(model, images, texts, heads=[1.5])


def test_bad_texts(model, images, texts):
    D = _dims(model)[3]
    with pytest.raises(ValueError, match="empty"):
        spatial.heatmaps(model, images, [])
    with pytest.raises(ValueError, match="empty"):
        spatial.heatmaps(model, images, torch.empty(0, D, dtype=F64))
    with pytest.raises(ValueError, match="empty text"):
        spatial.heatmaps(model, images, ["a cat", "  "])
    with pytest.raises(ValueError, match="empty text"):
        spatial.heatmaps(model, images, "")
    with pytest.raises(ValueError, match="tokenizer"):
        spatial.heatmaps(model, images, ["a cat"])
    with pytest.raises(ValueError, match=rf"dimension {D + 1}.*dimension {D}"):
        spatial.heatmaps(model, images, torch.randn(3, D + 1, dtype=F64))
    with pytest.raises(ValueError, match="at least two"):
        spatial.heatmaps(model, images, texts[:1], subtract_mean=True)
    with pytest.raises(ValueError, match="single text"):
        spatial.contrastive_map(model, images, texts[:2], texts[2])
    with pytest.raises(ValueError, match="one vector"):
        spatial.head_direction_map(model, images, 0, 0, texts[:2])
    with pytest.raises(ValueError, match="NaN"):
        spatial.heatmaps(model, images, torch.full((1, D), float("nan"), dtype=F64))


def test_bad_images(model, texts):
    size = _dims(model)[4]
    with pytest.raises(ValueError, match="preprocess"):
        spatial.heatmaps(model, torch.randn(1, 3, size[0] - 14, size[1] + 26, dtype=F64), texts)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        spatial.heatmaps(model, torch.randn(1, 1, *size, dtype=F64), texts)
    with pytest.raises(ValueError, match="empty"):
        spatial.heatmaps(model, [], texts)


# ----------------------------------------------------------------------------------------------
# Display helpers
# ----------------------------------------------------------------------------------------------


def test_upsample_shapes_and_values():
    maps = torch.randn(2, 3, 8, 8)
    assert spatial.upsample(maps, 32).shape == (2, 3, 32, 32)
    assert spatial.upsample(maps, (20, 48)).shape == (2, 3, 20, 48)
    assert spatial.upsample(np.ones((4, 4)), (9, 7)).shape == (9, 7)
    assert torch.allclose(spatial.upsample(torch.full((2, 2), 3.0), 10), torch.full((10, 10), 3.0))
    # bilinear with half-pixel centres: [0, 1] -> [0, .25, .75, 1]
    row = spatial.upsample(torch.tensor([[0.0, 1.0]]), (1, 4))[0]
    assert torch.allclose(row, torch.tensor([0.0, 0.25, 0.75, 1.0]))
    with pytest.raises(ValueError):
        spatial.upsample(torch.zeros(5), 4)


def test_overlay_and_colormap():
    img = _photo(90, 50)
    m = torch.arange(12.0).reshape(3, 4)
    out = overlay(img, m, 0.4)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (90, 50)
    assert np.array_equal(np.asarray(overlay(img, m, 0.0)), np.asarray(img))
    full = np.asarray(overlay(img, m, 1.0))
    assert tuple(full[0, 0]) == tuple(colormap(0.0)) and tuple(full[-1, -1]) == tuple(colormap(1.0))
    assert colormap(np.array([0.0, 1.0]), "gray").tolist() == [[0, 0, 0], [255, 255, 255]]
    assert colormap([[0.5]], "coolwarm").shape == (1, 1, 3)
    with pytest.raises(ValueError):
        colormap(0.5, "nope")
    with pytest.raises(ValueError):
        overlay(img, m, 1.5)


def test_heatmap_figure():
    import plotly.graph_objects as go

    fig = heatmap_figure(_photo(90, 50), torch.randn(8, 8), "a map")
    assert isinstance(fig, go.Figure)
    assert [t.type for t in fig.data] == ["image", "heatmap"]
    assert fig.data[1].dx == pytest.approx(90 / 8) and fig.data[1].dy == pytest.approx(50 / 8)


def test_maps_figure_panels_and_mask():
    from helpers.course.plots import maps_figure

    img = _photo(64, 48)
    mask = np.zeros((48, 64), bool)
    mask[10:20, 5:15] = True
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    fig = maps_figure(img, {"a": a, "b": b}, mask=mask, title="t")
    # image; mask; then image + heat map per map
    assert [t.type for t in fig.data] == ["image", "image", "image", "heatmap", "image", "heatmap"]
    assert fig.data[3].zmid == 0.0 and fig.data[3].zmax == pytest.approx(float(a.abs().max()))
    assert fig.data[3].dx == pytest.approx(64 / 8) and fig.data[3].dy == pytest.approx(48 / 8)
    assert [a.text for a in fig.layout.annotations] == ["image", "true mask", "a", "b"]
    with pytest.raises(ValueError, match="mask is"):
        maps_figure(img, {"a": a}, mask=np.zeros((10, 10), bool))


def test_figures_store_images_as_png_and_maps_as_float32():
    """What keeps a notebook small: images as lossless PNG, map values as float32 (not float64)."""
    import base64
    import io
    import json

    from PIL import Image

    from helpers.course.plots import maps_figure

    img = _photo(64, 48)
    a = torch.randn(8, 8, dtype=torch.float64)
    fig = maps_figure(img, {"a": a}, mask=np.zeros((48, 64), bool))
    shown = fig.data[2]
    assert shown.type == "image" and shown.z is None and shown.source.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(shown.source.split(",", 1)[1])))
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(img.convert("RGB")))  # lossless
    heat = fig.data[3]
    assert np.asarray(heat.z).dtype == np.float32
    assert np.allclose(np.asarray(heat.z), a.numpy(), rtol=1e-6, atol=1e-7)
    stored = json.loads(fig.to_json())["data"][3]["z"]
    assert stored["dtype"] == "f4"  # travels as float32 typed array in the notebook


def test_sample_photos_are_bundled_and_align_through_preprocess(model):
    from helpers.engine.images import SAMPLE_PHOTOS, sample_photos

    photos = sample_photos()
    assert set(photos) == set(SAMPLE_PHOTOS)
    assert all(p.mode == "RGB" and p.width != p.height for n, p in photos.items() if n != "astronaut")
    view = model_view(model, photos["rocket"])
    assert view.size == tuple(model.visual.image_size)
    with pytest.raises(ValueError, match="unknown sample photo"):
        sample_photos(["nope"])


# ----------------------------------------------------------------------------------------------
# Metrics on hand-made masks
# ----------------------------------------------------------------------------------------------


def test_threshold_map_uses_clipped_mean():
    m = torch.tensor([[-1.0, 0.5], [2.0, 1.5]])  # clipped: 0, .5, 2, 1.5 -> mean 1
    assert threshold_map(m).tolist() == [[False, False], [True, True]]
    assert threshold_map(m, 0.4).tolist() == [[False, True], [True, True]]
    batch = torch.stack([m, -m])  # clipped: 1, 0, 0, 0 -> mean .25
    assert threshold_map(batch)[1].tolist() == [[True, False], [False, False]]
    with pytest.raises(ValueError):
        threshold_map(m, "median")


def test_iou_pixel_accuracy_average_precision():
    pred = torch.tensor([[False, False], [True, True]])
    true = torch.tensor([[False, True], [True, False]])
    assert iou(pred, true).item() == pytest.approx(1 / 3)  # 1 shared of 3 covered
    assert pixel_accuracy(pred, true).item() == pytest.approx(0.5)
    empty = torch.zeros(2, 2, dtype=torch.bool)
    both = iou(torch.stack([pred, empty]), torch.stack([true, empty]))
    assert both.tolist() == pytest.approx([1 / 3, 1.0])
    assert iou(empty, empty, empty=0.0).item() == 0.0
    assert iou(pred, ~pred).item() == 0.0 and iou(pred, pred).item() == 1.0
    s = torch.tensor([[0.9, 0.1], [0.5, 0.3]])  # ranking: F, T, F, T -> precisions 1/2 and 2/4
    assert average_precision(s, true).item() == pytest.approx(0.5)
    s2 = torch.tensor([[0.1, 0.4], [0.35, 0.8]])
    assert average_precision(s2, torch.tensor([[0, 1], [0, 1]])).item() == pytest.approx(1.0)
    assert np.isnan(average_precision(s, empty).item())
    with pytest.raises(ValueError, match="sizes differ"):
        iou(pred, torch.zeros(3, 3, dtype=torch.bool))


def test_own_class_maps_match_world_object_maps():
    """The world's object maps are the special case: own shape text minus the mean shape text."""
    from helpers.data import world
    from helpers.data.world_eval import object_maps
    from helpers.engine.images import images_to_tensor
    from helpers.engine.text import zero_shot_classifier

    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = open_clip.create_model("world-clip").eval()
    tok = open_clip.get_tokenizer("world-clip")
    scenes = world.sample(2, split="test", seed=5)
    ref = object_maps(m, tok, scenes, "shape")
    clf = zero_shot_classifier(m, tok, world.class_prompts("shape"))
    mine = spatial.own_class_maps(m, images_to_tensor(scenes.images), clf, scenes.factors["shape"],
                          size=tuple(scenes.images.shape[1:3]))
    assert mine.shape == ref.shape
    assert (mine - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_baseline_comparison_says_what_beats_and_why():
    from helpers.course.narrative import baseline_comparison
    from helpers.methods.metrics import BASELINES

    good = dict.fromkeys(BASELINES, 0.9)
    low = dict.fromkeys(BASELINES, 0.5)
    cov = {"kept": 0.4, "region": 0.9, "IoU bound": 0.44, "mean inside": -0.1, "mean outside": 0.2}
    text = baseline_comparison("colour", good, low, cov)
    assert text.startswith("**colour** beats every trivial map") and "not" not in text
    text = baseline_comparison("background", low, good, cov)
    assert "does **not** beat it on object IoU" in text and "beats its" not in text
    assert "keeps 40.0%" in text and "at most 0.440" in text                # the IoU bound
    assert "marking everything" in text                                       # the larger side
    assert "higher *outside* the region" in text                              # the ranking
    mixed = {**good, "pixel accuracy": 0.1}
    text = baseline_comparison("shape", mixed, low, {**cov, "region": 0.1, "mean inside": 0.3})
    assert "beats its trivial map on object IoU" in text and "marking nothing" in text
    assert "IoU can reach" not in text and "outside" not in text
