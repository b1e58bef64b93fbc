"""Zero-shot segmentation: metrics against hand-computed values, image/mask alignment, every
method's maps, the attention hooks, and the ImageNet-Segmentation reader and download."""

import math
import time
import warnings

import numpy as np
import open_clip
import pytest
import torch

import helpers.engine.models  # noqa: F401  (registers world-clip with open_clip)
from helpers.data import world
from helpers.data.segmentation_tasks import ImageNetSeg, imagenet_seg
from helpers.engine import download
from helpers.engine.download import OfflineError
from helpers.engine.images import images_to_tensor, transform_pair
from helpers.engine.text import zero_shot_classifier
from helpers.methods.metrics import SegmentationScores, mass_by_region
from helpers.methods.segmentation import (
    METHODS,
    _capture_attention,
    patch_norm_ratio,
    postprocess,
    predicted_classes,
    segment,
    segmentation_maps,
)
from helpers.methods.spatial import own_class_maps


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model("world-clip").eval()


@pytest.fixture(scope="module")
def scenes():
    return world.sample(6, split="test", seed=5)


# ---------------------------------------------------------------------------------------------
# Metrics


def test_scores_match_hand_computed_values():
    truth = torch.tensor([[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 1]]], dtype=torch.bool)
    pred = torch.tensor([[[1, 0, 0], [0, 0, 1]], [[0, 0, 0], [0, 1, 1]]], dtype=torch.bool)
    soft = torch.tensor([[[0.9, 0.2, 0.1], [0.0, 0.3, 0.8]], [[0.1, 0.2, 0.0], [0.3, 0.7, 0.6]]])
    s = SegmentationScores(protocol="foreground").update(soft, pred, truth)
    # image 1: 4 of 6 pixels right; image 2: all 6 right
    assert s.pixel_accuracy == pytest.approx(10 / 12)
    # foreground: inter 1 + 2, union 3 + 2; background: inter 3 + 4, union 5 + 4
    assert s.iou_foreground == pytest.approx(3 / 5)
    assert s.iou_background == pytest.approx(7 / 9)
    assert s.miou == pytest.approx((3 / 5 + 7 / 9) / 2)
    # AP image 1: ranking 0.9 (hit), 0.8, 0.3, 0.2 (hit) -> (1/1 + 2/4) / 2; image 2: both on top -> 1
    assert s.map == pytest.approx(((1 + 0.5) / 2 + 1) / 2)
    # accumulating in two batches gives the same as one
    t = SegmentationScores(protocol="foreground").update(soft[:1], pred[:1], truth[:1]).update(soft[1:], pred[1:], truth[1:])
    assert t.summary() == pytest.approx(s.summary())


def test_scores_skip_empty_masks_for_map_and_reject_misaligned():
    s = SegmentationScores(protocol="foreground").update(torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool),
                                    torch.zeros(1, 4, 4, dtype=torch.bool))
    assert s.ap == [] and np.isnan(s.map) and s.pixel_accuracy == 1.0
    with pytest.raises(ValueError, match="transform image and mask together"):
        SegmentationScores().update(torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool),
                                    torch.zeros(1, 4, 5, dtype=torch.bool))


def test_postprocess_and_threshold():
    maps = torch.tensor([[[-1.0, 0.0], [1.0, 3.0]], [[2.0, 2.0], [2.0, 2.0]]])
    soft = postprocess(maps, 2)
    assert torch.allclose(soft[0], torch.tensor([[0.0, 0.0], [1 / 3, 1.0]]))
    assert torch.equal(soft[1], torch.zeros(2, 2))  # a constant map carries no location
    soft, hard = segment(maps, 2)
    assert hard[0].tolist() == [[False, False], [False, True]]  # mean of [0, 0, 1/3, 1] is 1/3
    _, hard = segment(maps, 2, threshold=0.2)
    assert hard[0].tolist() == [[False, False], [True, True]]
    assert segment(maps, (4, 6))[0].shape == (2, 4, 6)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        segment(maps, 2, threshold=2.0)
    with pytest.raises(ValueError, match="'mean'"):
        segment(maps, 2, threshold="median")


def test_mass_by_region_against_hand_computed_values():
    # a 2 x 2 patch grid on a 4 x 4 mask; the object touches the top-left patch (one pixel)
    # and the bottom-right patch (all four pixels)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 1] = True
    mask[0, 2:, 2:] = True
    maps = torch.tensor([[[[2.0, 1.0], [-3.0, -0.5]]], [[[0.0, 0.0], [0.0, 0.0]]]])  # [2 layers, 1 image, 2, 2]
    r = mass_by_region(maps, mask)
    assert r["on"].shape == (2, 1)
    assert r["on"].tolist() == [[2.0], [0.0]]  # positive mass on touched patches
    assert r["off"].tolist() == [[1.0], [0.0]]  # positive mass elsewhere; the -3 is off and negative
    assert r["against"].tolist() == [[0.5], [0.0]]  # negative mass on touched patches
    assert mass_by_region(maps[0], mask.numpy())["on"].tolist() == [2.0]  # arrays are accepted
    with pytest.raises(ValueError, match="\\[N, H, W\\]"):
        mass_by_region(maps, mask[0])
    with pytest.raises(ValueError, match="N = 2"):
        mass_by_region(maps, torch.cat([mask, mask]))
    with pytest.raises(ValueError, match="whole number"):
        mass_by_region(maps, torch.zeros(1, 5, 4, dtype=torch.bool))
    # clutter touching the top-right and bottom-right patches, the object excluded: only the
    # top-right patch counts as on the clutter
    clutter = torch.zeros(1, 4, 4, dtype=torch.bool)
    clutter[0, 0, 3] = clutter[0, 3, 3] = True
    r = mass_by_region(maps[0], clutter, exclude=mask)
    assert r["on"].tolist() == [1.0] and r["off"].tolist() == [2.0] and r["against"].tolist() == [0.0]
    assert mass_by_region(maps[0], clutter)["on"].tolist() == [1.0]  # the bottom-right patch is negative
    with pytest.raises(ValueError, match="exclude must have"):
        mass_by_region(maps[0], clutter, exclude=mask[:, :2])


def test_world_v3_tasks_carry_the_clutter_masks(default_bundle):
    from helpers.data.segmentation_tasks import load_segmentation_task

    _, preprocess, _ = default_bundle
    v3 = load_segmentation_task("world:colour", preprocess, 12, seed=4, world_name="world-v3")
    scenes = world.sample(12, "test", seed=5, config="world-v3")
    assert scenes.clutter.any() and torch.equal(v3.clutter, torch.as_tensor(scenes.clutter))  # 64 px: same geometry
    assert not (v3.clutter & v3.masks).any()  # painted under the named objects, never counted as them
    assert load_segmentation_task("world:colour", preprocess, 12, seed=4, world_name="world-v2").clutter is None


def test_patch_norm_ratio_finds_a_planted_outlier_token(random_model, scenes):
    x = images_to_tensor(scenes.images)
    base = patch_norm_ratio(random_model, x)
    n_layers = len(random_model.visual.transformer.resblocks)
    assert base.shape == (n_layers, len(x)) and bool((base >= 1).all())
    many = patch_norm_ratio(random_model, torch.cat([x] * 4))  # more images than one forward pass takes
    assert many.shape == (n_layers, 4 * len(x)) and torch.allclose(many[:, -len(x):], base, atol=1e-5)
    last = random_model.visual.transformer.resblocks[-1]

    def plant(_m, _i, out):  # one patch token of every image gets a norm far above the rest
        out = out.clone()
        out[:, 5] = out[:, 5] * 0 + 1e3
        return out

    handle = last.register_forward_hook(plant)
    try:
        planted = patch_norm_ratio(random_model, x)
    finally:
        handle.remove()
    assert torch.equal(planted[:-1], base[:-1])  # earlier blocks unchanged
    assert bool((planted[-1] > 10 * base[-1]).all())
    assert torch.equal(patch_norm_ratio(random_model, x), base)  # the hooks are gone


# ---------------------------------------------------------------------------------------------
# Alignment


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_mask_stays_aligned_on_non_square_images(mode):
    img = np.zeros((60, 100, 3), np.uint8)
    img[10:30, 55:80] = 255  # a white box, and its mask
    mask = np.zeros((60, 100), bool)
    mask[10:30, 55:80] = True
    pre = open_clip.image_transform(64, is_train=False, resize_mode=mode)
    x, m = transform_pair(img, mask, pre)
    assert x.shape == (3, 64, 64) and m.shape == (64, 64) and m.dtype == torch.bool
    assert m.any()
    white = x.mean(0) > 0.5
    # the interpolated image edge may differ from the nearest-neighbour mask by one pixel row
    assert (white == m).float().mean() >= 0.995


def test_transform_pair_rejects_mismatched_mask():
    pre = open_clip.image_transform(64, is_train=False)
    with pytest.raises(ValueError, match="mask is"):
        transform_pair(np.zeros((60, 100, 3), np.uint8), np.zeros((100, 60), bool), pre)
    with pytest.raises(TypeError, match="Compose"):
        transform_pair(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool), lambda im: im)


# ---------------------------------------------------------------------------------------------
# Methods


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_finite_maps_of_the_grid(random_model, scenes, method):
    x = images_to_tensor(scenes.images)
    emb = torch.nn.functional.normalize(torch.randn(4, random_model.visual.output_dim), dim=-1)
    maps = segmentation_maps(random_model, x, emb, method)
    assert maps.shape == (len(scenes), *random_model.visual.grid_size)
    assert torch.isfinite(maps).all()
    assert not any(p.grad is not None for p in random_model.parameters())  # no stray gradients


@pytest.mark.slow
def test_every_method_on_a_real_architecture():
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32").eval()
    x = torch.randn(1, 3, 224, 224)
    emb = torch.nn.functional.normalize(torch.randn(3, 512), dim=-1)
    for method in METHODS:
        maps = segmentation_maps(model, x, emb, method)
        assert maps.shape == (1, 7, 7) and torch.isfinite(maps).all(), method
        paper = segmentation_maps(model, x, emb, method, variant="paper")
        assert paper.shape == ((1, 224, 224) if method == "lrp" else (1, 7, 7)), method
        assert torch.isfinite(paper).all(), method


def test_captured_attention_matches_torch(random_model, scenes):
    x = images_to_tensor(scenes.images[:2])
    blk = random_model.visual.transformer.resblocks[1]
    seen = {}

    def grab(_m, args, _out):
        seen["x"] = args[0]

    h = blk.attn.register_forward_hook(grab)
    try:
        with _capture_attention(random_model.visual, in_graph=False) as store, torch.no_grad():
            random_model.visual(x)
    finally:
        h.remove()
    with torch.no_grad():
        _, ref = blk.attn(seen["x"], seen["x"], seen["x"], need_weights=True, average_attn_weights=False)
    assert torch.allclose(store[1], ref, atol=1e-6)
    assert torch.allclose(store[1].sum(-1), torch.ones(()), atol=1e-5)


def test_in_graph_hooks_leave_the_embedding_unchanged(random_model, scenes):
    x = images_to_tensor(scenes.images[:2])
    with torch.no_grad():
        ref = random_model.encode_image(x)
        with _capture_attention(random_model.visual, in_graph=True):
            out = random_model.encode_image(x)
        after = random_model.encode_image(x)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    assert torch.equal(after, ref)  # hooks removed


def test_rollout_and_raw_attention_rows_are_distributions(random_model, scenes):
    from helpers.methods.segmentation import _raw_attention, _rollout

    x = images_to_tensor(scenes.images[:2])
    for fn in (_raw_attention, _rollout):
        rows = fn(random_model.visual, x)
        assert torch.allclose(rows.sum(-1), torch.ones(2), atol=1e-5)
        assert (rows >= 0).all()


def test_decomposition_method_is_the_own_class_map_of_the_prediction(default_bundle):
    model, _, tok = default_bundle
    sc = world.sample(8, split="test", seed=9)
    x = images_to_tensor(sc.images)
    clf = zero_shot_classifier(model, tok, world.class_prompts("colour"))
    pred = predicted_classes(model, x, clf)
    assert torch.allclose(segmentation_maps(model, x, clf, "decomposition"),
                          own_class_maps(model, x, clf, pred), atol=1e-6)
    truth = torch.as_tensor(sc.factors["colour"])
    assert torch.allclose(segmentation_maps(model, x, clf, "decomposition", labels=truth),
                          own_class_maps(model, x, clf, truth), atol=1e-6)


def test_pairs_task_segments_the_labelled_object(default_bundle):
    from helpers.data.segmentation_tasks import load_segmentation_task
    from helpers.methods.segmentation import SegmentationTask, evaluate_methods

    model, preprocess, tok = default_bundle
    task = load_segmentation_task("world-pairs:colour", preprocess, 6, seed=2)
    pairs = world.sample_pairs(6, "test", seed=3)
    assert task.target == "label" and torch.equal(task.labels, torch.as_tensor(pairs.factors["colour"][:, 0]))
    # the mask is the first object only, aligned with the image (64 px scenes: same geometry)
    assert torch.equal(task.masks, torch.as_tensor(pairs.masks[:, 0]))
    clf = zero_shot_classifier(model, tok, task.prompts)
    _, maps = evaluate_methods(model, task, clf, ("decomposition",))
    want = own_class_maps(model, task.images, clf, task.labels)  # the label's map, not the prediction's
    assert torch.allclose(maps["decomposition"], want, atol=1e-5)
    with pytest.raises(ValueError, match="not in 'size'"):
        load_segmentation_task("world-pairs:size", preprocess, 2)
    with pytest.raises(ValueError, match="needs labels"):
        SegmentationTask("x", task.images, task.masks, task.views, task.prompts, None, target="label")
    with pytest.raises(ValueError, match="'prediction' or 'label'"):
        SegmentationTask("x", task.images, task.masks, task.views, task.prompts, task.labels, target="truth")


@pytest.mark.parametrize("variant", ["course", "paper"])
def test_methods_read_the_prediction_off_their_own_pass(default_bundle, variant):
    """Without labels, every method that needs a target class reads the zero-shot prediction off
    the forward pass it runs anyway: its maps are those of the predicted labels, and it runs the
    tower as often as with the labels given."""
    model, _, tok = default_bundle
    sc = world.sample(6, split="test", seed=13)
    x = images_to_tensor(sc.images)
    clf = zero_shot_classifier(model, tok, world.class_prompts("colour"))
    pred = predicted_classes(model, x, clf)
    assert len(set(pred.tolist())) > 1
    calls = []
    hook = model.visual.register_forward_hook(lambda *_: calls.append(1))
    try:
        for method in METHODS:
            calls.clear()
            got = segmentation_maps(model, x, clf, method, variant=variant)
            passes = len(calls)
            calls.clear()
            want = segmentation_maps(model, x, clf, method, labels=pred, variant=variant)
            assert passes == len(calls), method
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=method)
    finally:
        hook.remove()


def test_gradcam_uses_the_target_class(default_bundle):
    model, _, tok = default_bundle
    sc = world.sample(4, split="test", seed=11)
    x = images_to_tensor(sc.images)
    clf = zero_shot_classifier(model, tok, world.class_prompts("colour"))
    a = segmentation_maps(model, x, clf, "gradcam", labels=[0] * 4)
    b = segmentation_maps(model, x, clf, "gradcam", labels=[1] * 4)
    assert not torch.allclose(a, b)


def test_bad_inputs(random_model, scenes):
    x = images_to_tensor(scenes.images[:2])
    emb = torch.nn.functional.normalize(torch.randn(3, random_model.visual.output_dim), dim=-1)
    with pytest.raises(ValueError, match="unknown method"):
        segmentation_maps(random_model, x, emb, "lrp-magic")
    with pytest.raises(ValueError, match="layers/heads apply"):
        segmentation_maps(random_model, x, emb, "rollout", layers=[1])
    with pytest.raises(ValueError, match="takes no layer"):
        segmentation_maps(random_model, x, emb, "gradcam", heads=[0])
    with pytest.raises(IndexError, match="class indices"):
        segmentation_maps(random_model, x, emb, "chefer", labels=[0, 3])
    with pytest.raises(ValueError, match="2 images"):
        segmentation_maps(random_model, x, emb, "gradcam", labels=[0])
    with pytest.raises(ValueError, match="at least two"):
        segmentation_maps(random_model, x, emb[:1], "decomposition")
    with pytest.raises(IndexError):
        segmentation_maps(random_model, x, emb, "decomposition", layers=[99])


# ---------------------------------------------------------------------------------------------
# ImageNet-Segmentation reader and download


def _fake_mat(path, images, masks, *, nested=True):
    """A file with gtsegs_ijcv.mat's layout: value/img holds object references to MATLAB-ordered
    (transposed) images; value/gt holds references to MATLAB cells, 1x1 arrays of references to
    the transposed uint8 masks (the real file's two levels; ``nested=False``: one level)."""
    import h5py

    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        ref_dt = h5py.special_dtype(ref=h5py.Reference)
        img = f.create_dataset("value/img", (len(images), 1), dtype=ref_dt)
        gt = f.create_dataset("value/gt", (len(images), 1), dtype=ref_dt)
        for i, (im, m) in enumerate(zip(images, masks)):
            img[i, 0] = refs.create_dataset(f"i{i}", data=im.transpose(2, 1, 0)).ref
            target = refs.create_dataset(f"g{i}", data=m.astype(np.uint8).transpose(1, 0)).ref
            if nested:
                cell = refs.create_dataset(f"c{i}", (1, 1), dtype=ref_dt)
                cell[0, 0] = target
                target = cell.ref
            gt[i, 0] = target


@pytest.mark.parametrize("nested", [True, False], ids=["cell of references (the real file)", "one reference"])
def test_imagenet_seg_reader(tmp_path, nested):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (30, 50, 3), dtype=np.uint8), rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)]
    masks = [rng.random((30, 50)) > 0.5, rng.random((40, 20)) > 0.5]
    path = tmp_path / "gtsegs_ijcv.mat"
    _fake_mat(path, images, masks, nested=nested)
    ds = imagenet_seg(path=str(path))
    assert len(ds) == 2
    for i in range(2):
        assert np.array_equal(np.asarray(ds.image(i)), images[i])
        assert np.array_equal(ds.mask(i), masks[i])
    x, m = ds.pair(1, open_clip.image_transform(64, is_train=False))
    assert x.shape == (3, 64, 64) and m.shape == (64, 64)
    assert len(ImageNetSeg(path, n=1)) == 1
    with pytest.raises(IndexError):
        ds.image(2)
    ds.close()


def test_imagenet_seg_rejects_other_files(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.mat", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not ImageNet-Segmentation"):
        ImageNetSeg(tmp_path / "other.mat")


def test_imagenet_seg_offline_fails_fast_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_COURSE_CACHE", str(tmp_path))
    monkeypatch.setenv("CLIP_COURSE_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(OfflineError, match="ImageNet-Segmentation"):
        imagenet_seg()
    assert time.perf_counter() - t0 < 10
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_fetch_records_a_checksum_when_none_is_published(tmp_path, monkeypatch):
    import pooch

    monkeypatch.setenv("CLIP_COURSE_CACHE", str(tmp_path))
    monkeypatch.setattr(download, "require_host", lambda *a, **k: None)
    calls = []

    def fake_retrieve(url, known_hash, fname, path, **kw):
        calls.append(known_hash)
        target = path / fname
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"payload")
        return str(target)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    download.fetch("https://example.org/data.bin", None, what="test data", folder="t")
    digest = pooch.file_hash(str(tmp_path / "t" / "data.bin"))
    assert (tmp_path / "t" / "data.bin.sha256").read_text().split()[0] == digest
    hashes = []
    real_hash = pooch.file_hash
    monkeypatch.setattr(pooch, "file_hash", lambda p, *a, **k: hashes.append(p) or real_hash(p, *a, **k))
    out = download.fetch("https://example.org/data.bin", None, what="test data", folder="t")
    assert out == str(tmp_path / "t" / "data.bin") and calls == [None]  # verified against the record, no download
    assert len(hashes) == 1  # the cached file is hashed once, not again by pooch
    seen = []
    download.fetch("https://example.org/data.bin", None, what="test data", folder="t",
                   processor=lambda fname, action, _p: seen.append((fname, action)) or "processed")
    assert seen == [(str(tmp_path / "t" / "data.bin"), "fetch")]  # a processor still sees the cached file
    (tmp_path / "t" / "data.bin").write_bytes(b"tampered")
    download.fetch("https://example.org/data.bin", None, what="test data", folder="t")
    assert calls == [None, f"sha256:{digest}"]  # a file that fails its record goes back to pooch, hash pinned


def test_layer_maps_sum_to_the_segmenter_map(default_bundle):
    from helpers.methods.segmentation import layer_maps

    model, _, tok = default_bundle
    sc = world.sample(20, split="test", seed=13)  # more than one chunk of 16
    x = images_to_tensor(sc.images)
    clf = zero_shot_classifier(model, tok, world.class_prompts("colour"))
    per = layer_maps(model, x, clf)
    assert per.shape == (model.visual.transformer.layers, 20, *model.visual.grid_size)
    assert torch.allclose(per.sum(0), segmentation_maps(model, x, clf), atol=1e-6)
    assert torch.allclose(per[2:5].sum(0), segmentation_maps(model, x, clf, layers=[2, 3, 4]), atol=1e-6)
    truth = torch.as_tensor(sc.factors["colour"])
    assert torch.allclose(layer_maps(model, x, clf, labels=truth).sum(0),
                          segmentation_maps(model, x, clf, labels=truth), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Average precision, the paper's (Chefer et al.'s) protocol


def test_paper_average_precision_by_hand():
    from helpers.methods.metrics import average_precision

    soft = torch.tensor([[0.8, 0.4], [0.4, 0.0]])
    mask = torch.tensor([[True, False], [False, True]])
    # scores of both channels with their targets: map vs foreground, 1 - map vs background
    #   1.0 (bg, miss) | 0.8 (fg, hit) | 0.6, 0.6 (bg, hits) | 0.4, 0.4 (fg, misses) | 0.2 (bg, miss) | 0.0 (fg, hit)
    # precision at the end of each tied group holding hits: 1/2, 3/4, 4/8; recall steps 1/4, 2/4, 1/4
    want = 0.25 * 0.5 + 0.5 * 0.75 + 0.25 * 0.5
    assert float(average_precision(soft, mask, protocol="paper")) == pytest.approx(want)
    # the foreground-only AP of the same map: hits at ranks 1 and 4
    assert float(average_precision(soft, mask)) == pytest.approx((1 + 2 / 4) / 2)
    # an empty mask still has positives (the background channel)
    empty = torch.zeros(2, 2, dtype=torch.bool)
    assert float(average_precision(soft, empty, protocol="paper")) == pytest.approx(0.25 + 0.5 * 0.75 + 0.25 * 4 / 7)
    assert np.isnan(float(average_precision(soft, empty)))
    # a blank map (constant before normalisation) scores every pixel of both channels alike
    assert float(average_precision(torch.zeros(2, 2), mask, protocol="paper")) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'foreground' or 'paper'"):
        average_precision(soft, mask, protocol="both")


def test_paper_average_precision_matches_sklearn():
    from sklearn.metrics import average_precision_score

    from helpers.methods.metrics import average_precision

    g = torch.Generator().manual_seed(3)
    soft = (torch.rand(5, 6, 7, generator=g) * 4).round() / 4  # quantised: many ties
    truth = torch.rand(5, 6, 7, generator=g) > 0.6
    got = average_precision(soft, truth, protocol="paper")
    for i in range(5):
        s, t = soft[i].numpy().ravel(), truth[i].numpy().ravel()
        want = average_precision_score(np.concatenate([~t, t]), np.concatenate([1 - s, s]))
        assert float(got[i]) == pytest.approx(want, abs=1e-12)


def test_scores_report_both_average_precisions():
    truth = torch.tensor([[[1, 0], [0, 1]], [[0, 0], [0, 0]]], dtype=torch.bool)
    soft = torch.tensor([[[0.8, 0.4], [0.4, 0.0]], [[0.8, 0.4], [0.4, 0.0]]])
    pred = soft > 0.5
    fg = SegmentationScores(protocol="foreground").update(soft, pred, truth)
    paper = SegmentationScores().update(soft, pred, truth)
    ap1 = 0.25 * 0.5 + 0.5 * 0.75 + 0.25 * 0.5
    ap2 = 0.25 + 0.5 * 0.75 + 0.25 * 4 / 7
    assert fg.map == fg.map_foreground == pytest.approx(0.75)  # the empty mask is skipped
    assert paper.map == paper.map_paper == pytest.approx((ap1 + ap2) / 2)  # every image counts
    # one name per score, whichever protocol .map follows
    assert fg.summary() == paper.summary()
    assert paper.summary()["mAP"] == pytest.approx(paper.map_paper)
    assert paper.summary()["object AP"] == pytest.approx(fg.map)
    assert paper.miou == fg.miou and paper.pixel_accuracy == fg.pixel_accuracy
    with pytest.raises(ValueError, match="protocol"):
        SegmentationScores(protocol="both")


def test_evaluate_methods_times_the_maps_after_a_warm_up(monkeypatch):
    """images/s counts the maps alone, after one untimed call on the first images: a slow first
    call and slow post-processing do not reach the rate, a slow batch does not set it (median
    over batches), and the scores do not change. A warm-up that covers the first batch is that
    batch: it is not computed again."""
    from helpers.methods import segmentation as seg

    n, grid = 5, (2, 2)
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, 8, 8, dtype=torch.bool)
    masks[:, :4, :4] = True
    task = seg.SegmentationTask("toy", torch.rand(n, 3, 8, 8, generator=g), masks, [None] * n,
                                {"a": ["a"], "b": ["b"]}, torch.zeros(n, dtype=torch.long))
    calls = []

    def fake_maps(model, x, class_emb, method, *, labels=None, variant="course"):
        calls.append(x.shape[0])
        if len(calls) == 1:
            time.sleep(0.3)  # a slow first call
        m = torch.zeros(x.shape[0], *grid)
        m[:, 0, 0] = 1.0
        return m

    real_segment = seg.segment

    def slow_segment(maps, size, threshold="mean", **kw):
        time.sleep(0.05 * maps.shape[0])  # post-processing is not timed
        return real_segment(maps, size, threshold, **kw)

    monkeypatch.setattr(seg, "segmentation_maps", fake_maps)
    monkeypatch.setattr(seg, "segment", slow_segment)
    model = torch.nn.Linear(1, 1)
    res, maps = seg.evaluate_methods(model, task, torch.eye(2), ("decomposition",), batch_size=2)
    assert calls == [2, 2, 1]  # the warm-up on the first two images (the first batch, kept), then the others
    assert res["decomposition"]["images/s"] > n / 0.2  # neither the first call nor segment() counted
    assert maps["decomposition"].shape == (n, *grid)
    calls.clear()
    cold, _ = seg.evaluate_methods(model, task, torch.eye(2), ("decomposition",), batch_size=5, warmup=0)
    assert calls == [5] and cold["decomposition"]["images/s"] < n / 0.3  # the slow call is timed
    calls.clear()
    spike, _ = seg.evaluate_methods(model, task, torch.eye(2), ("decomposition",), batch_size=2, warmup=0)
    assert calls == [2, 2, 1] and spike["decomposition"]["images/s"] > n / 0.2  # one slow batch of three
    assert {k: v for k, v in cold["decomposition"].items() if k != "images/s"} == \
        {k: v for k, v in res["decomposition"].items() if k != "images/s"}
    with pytest.raises(ValueError, match="warmup"):
        seg.evaluate_methods(model, task, torch.eye(2), ("decomposition",), warmup=-1)
    # several methods take turns on each batch, after all the warm-ups
    order = []
    monkeypatch.setattr(seg, "segmentation_maps",
                        lambda model, x, class_emb, method, *, labels=None, variant="course":
                        order.append((method, x.shape[0]))
                        or torch.zeros(x.shape[0], *grid))
    both, _ = seg.evaluate_methods(model, task, torch.eye(2), ("rollout", "gradcam"), batch_size=3, warmup=1)
    assert order == [("rollout", 1), ("gradcam", 1), ("rollout", 3), ("gradcam", 3), ("rollout", 2), ("gradcam", 2)]
    assert set(both) == {"rollout", "gradcam"}
    order.clear()  # the warm-up is no larger than the batches it warms up for
    seg.evaluate_methods(model, task, torch.eye(2), ("rollout",), batch_size=1)
    assert order == [("rollout", 1)] * n  # the first image's warm-up is its batch
    order.clear()  # a warm-up smaller than the first batch is computed again within it
    seg.evaluate_methods(model, task, torch.eye(2), ("rollout",), batch_size=3, warmup=2)
    assert order == [("rollout", 2), ("rollout", 3), ("rollout", 2)]
    order.clear()  # one batch in all: timed on a call of its own after the warm-up
    seg.evaluate_methods(model, task, torch.eye(2), ("rollout",), batch_size=n, warmup=n)
    assert order == [("rollout", n)] * 2


def test_method_names_and_backward_methods_cover_the_methods():
    from helpers.methods.segmentation import BACKWARD_METHODS, METHOD_NAMES, METHODS

    assert set(METHOD_NAMES) == set(METHODS) and set(BACKWARD_METHODS) < set(METHODS)
    assert "decomposition" not in BACKWARD_METHODS and {"gradcam", "chefer", "lrp"} <= set(BACKWARD_METHODS)


# ---------------------------------------------------------------------------------------------
# Chefer et al.'s baselines (variant="paper") against hand-computed values and the course's


def _f64(x):
    return torch.tensor(x, dtype=torch.float64)


def test_rollout_from_block_one_by_hand():
    from helpers.methods.segmentation import _rollout_product

    a = [_f64([[.5, .25, .25], [.2, .6, .2], [.1, .1, .8]]), _f64([[.2, .5, .3], [.3, .3, .4], [.25, .25, .5]]),
         _f64([[.1, .3, .6], [.5, .25, .25], [.4, .4, .2]])]
    a = [m[None] for m in a]
    torch.testing.assert_close(_rollout_product(a)[0, 0, 1:], _f64([0.283625, 0.37975]), rtol=0, atol=1e-12)
    torch.testing.assert_close(_rollout_product(a, 1)[0, 0, 1:], _f64([0.2725, 0.3375]), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="no block"):
        _rollout_product(a, 3)


def test_transformer_attribution_product_by_hand():
    from helpers.methods.segmentation import _attribution_product

    c = [_f64([[0, .1, .2], [0, 0, .1], [.3, 0, 0]]), _f64([[.05, .2, 0], [.1, 0, 0], [0, .1, .2]]),
         _f64([[0, 0, .4], [.2, .1, 0], [0, 0, .1]])]
    c = [m[None] for m in c]
    torch.testing.assert_close(_attribution_product(c, 1)[0, 0, 1:], _f64([0.24, 0.48]), rtol=0, atol=1e-12)
    # from block 0 it is the generic rule R <- R + C R started at R = I
    r = torch.eye(3, dtype=torch.float64)[None]
    for m in c:
        r = r + m @ r
    torch.testing.assert_close(_attribution_product(c, 0), r)
    torch.testing.assert_close(r[0, 0, 1:], _f64([0.345, 0.714]), rtol=0, atol=1e-12)


def test_attention_gradcam_by_hand():
    from helpers.methods.segmentation import _head_gradcam

    a = _f64([[[.1, .4, .2, .3], [.25, .25, .35, .15]]])
    g = _f64([[[.5, -.1, .2, 0], [-.3, -.1, .1, -.1]]])  # head weights 0.15 and -0.1
    rows = _head_gradcam(a, g)
    torch.testing.assert_close(rows, _f64([[0, 0.0175, 0, 0.015]]), rtol=0, atol=1e-12)
    soft = postprocess(rows.reshape(1, 2, 2), (2, 2), clip=False)  # min-max at the map's own size
    torch.testing.assert_close(soft, _f64([[[0, 1], [0, 0.857142857]]]), rtol=0, atol=1e-9)


def test_postprocess_without_the_clip_and_at_the_mask_size():
    maps = _f64([[[-1.0, 0.0], [1.0, 3.0]]])
    torch.testing.assert_close(postprocess(maps, (2, 2), clip=False), _f64([[[0, 0.25], [0.5, 1]]]))
    torch.testing.assert_close(postprocess(maps, (2, 2)), _f64([[[0, 0], [1 / 3, 1]]]))
    big = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lo, hi = big.amin((1, 2), keepdim=True), big.amax((1, 2), keepdim=True)
    torch.testing.assert_close(postprocess(big, (16, 16), clip=False), (big - lo) / (hi - lo), rtol=0, atol=1e-15)


def test_paper_variants_reduce_to_the_course_where_they_should(random_model, scenes):
    from helpers.methods.segmentation import (
        _attribution_product,
        _chefer,
        _class_score,
        _rollout,
        _rollout_product,
    )

    visual = random_model.visual.double()
    try:
        x = images_to_tensor(scenes.images[:2]).double()
        t = torch.nn.functional.normalize(torch.randn(2, visual.output_dim, dtype=torch.float64), dim=-1)
        own = torch.arange(2)  # each image's target: its own row of t
        # rollout from block 0 is the course's rollout (the old formula written out)
        with torch.no_grad(), _capture_attention(visual, in_graph=False) as store:
            visual(x)
        old = None
        for a in store:
            m = 0.5 * a.mean(1) + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype)
            m = m / m.sum(-1, keepdim=True)
            old = m if old is None else m @ old
        torch.testing.assert_close(_rollout(visual, x, 0), old[:, 0])
        torch.testing.assert_close(_rollout(visual, x, 1), _rollout_product([a.mean(1) for a in store], 1)[:, 0])
        # the course's Chefer et al. (generic rule) is the attribution product from block 0 on A itself
        with torch.enable_grad(), _capture_attention(visual, in_graph=True) as store:
            grads = torch.autograd.grad(_class_score(visual, x, t, own)[0], store)
        cams = [(g * a.detach()).clamp_min(0).mean(1) for g, a in zip(grads, store)]
        torch.testing.assert_close(_attribution_product(cams, 0)[:, 0], _chefer(visual, x, t, own))
    finally:
        visual.float()


@pytest.mark.parametrize("method", METHODS)
def test_every_paper_variant_gives_finite_maps(random_model, scenes, method):
    x = images_to_tensor(scenes.images[:3])
    emb = torch.nn.functional.normalize(torch.randn(4, random_model.visual.output_dim), dim=-1)
    maps = segmentation_maps(random_model, x, emb, method, variant="paper")
    size = tuple(random_model.visual.image_size) if method == "lrp" else tuple(random_model.visual.grid_size)
    assert maps.shape == (3, *size) and torch.isfinite(maps).all()  # full LRP: the pixel map
    assert not any(p.grad is not None for p in random_model.parameters())
    if method in ("decomposition", "raw_attention"):  # no paper variant of their own
        torch.testing.assert_close(maps, segmentation_maps(random_model, x, emb, method))
    with pytest.raises(ValueError, match="variant"):
        segmentation_maps(random_model, x, emb, method, variant="chefer")


def test_method_labels_and_clips():
    from helpers.methods.segmentation import PAPER_VARIANTS, clips, method_label

    assert set(PAPER_VARIANTS) == {"rollout", "gradcam", "chefer", "lrp", "partial_lrp"}
    assert method_label("lrp", "paper") == "LRP (Chefer\u2019s)" and method_label("lrp") == "LRP (course)"
    assert method_label("decomposition", "paper") == "the decomposition"
    assert clips("lrp") and not clips("lrp", "paper") and clips("decomposition", "paper")
    with pytest.raises(ValueError, match="unknown method"):
        method_label("lime")


# ---------------------------------------------------------------------------------------------
# Mask geometry: the course's aligned masks and the reference code's squeezed ones


def test_reference_geometry_squeezes_the_mask_by_hand():
    pre = open_clip.image_transform(4, is_train=False)  # 8x6 -> 5x4 (columns 0, 2, 4, 5, 7), crop from 0
    mask = np.zeros((6, 8), bool)
    mask[:, 5:7] = True
    img = np.zeros((6, 8, 3), np.uint8)
    xa, aligned = transform_pair(img, mask, pre)
    xr, squeezed = transform_pair(img, mask, pre, geometry="reference")  # 8 -> 4: columns 1, 3, 5, 7
    assert torch.equal(xa, xr)  # the image is the same: only the mask's geometry differs
    assert aligned.int().tolist() == [[0, 0, 0, 1]] * 4
    assert squeezed.int().tolist() == [[0, 0, 1, 0]] * 4
    with pytest.raises(ValueError, match="geometry must be"):
        transform_pair(img, mask, pre, geometry="squeezed")


@pytest.mark.parametrize("cols, fg_aligned, agree, iou", [((300, 450), 0.194475, 0.928850, 0.666667),
                                                         ((175, 325), 0.213449, 0.947824, 0.755556)])
def test_reference_geometry_on_a_4_to_3_photo(cols, fg_aligned, agree, iou):
    pre = open_clip.image_transform(224, is_train=False)  # 500x375 -> 298x224, crop from column 37
    mask = np.zeros((375, 500), bool)
    mask[100:300, cols[0]:cols[1]] = True
    img = np.zeros((375, 500, 3), np.uint8)
    _, a = transform_pair(img, mask, pre)
    _, r = transform_pair(img, mask, pre, geometry="reference")
    assert float(a.float().mean()) == pytest.approx(fg_aligned, abs=1e-6)
    assert float(r.float().mean()) == pytest.approx(0.161272, abs=1e-6)  # 150 of 500 columns, squeezed
    assert float((a == r).float().mean()) == pytest.approx(agree, abs=1e-6)
    assert float((a & r).sum() / (a | r).sum()) == pytest.approx(iou, abs=1e-6)


def test_widened_world_shows_the_model_the_same_scene(default_bundle):
    from helpers.data.segmentation_tasks import load_segmentation_task

    model, preprocess, _ = default_bundle  # a 64-pixel model: the 64x86 picture's centre crop is the scene
    square = load_segmentation_task("world:colour", preprocess, 12, seed=3, world_name="world-v3")
    wide = load_segmentation_task("world-wide:colour", preprocess, 12, seed=3, world_name="world-v3",
                                  mask_geometry="reference")
    assert wide.name == "world-wide:colour" and wide.mask_geometry == "reference"
    assert float((wide.images - square.images).abs().max()) == 0.0
    assert torch.equal(wide.masks_for("aligned"), square.masks)
    assert torch.equal(wide.masks, wide.masks_for("reference"))
    assert not torch.equal(wide.masks, square.masks)  # the squeezed ground truth moves
    assert wide.clutter is not None and wide.clutter.shape == wide.masks.shape
    # a square picture has one geometry: both mask sets agree
    assert torch.equal(square.masks_for("reference"), square.masks)
    with pytest.raises(ValueError, match="mask_geometry"):
        load_segmentation_task("world:colour", preprocess, 2, mask_geometry="cropped")
    with pytest.raises(ValueError, match="needs a number"):
        load_segmentation_task("world:colour", preprocess, None)


def test_widen_pads_the_masks_and_keeps_the_scene():
    scenes = world.sample(3, split="test", seed=1)
    images, (fg,), m = world.widen(scenes.images, [scenes.foreground], scenes.factors["background"])
    assert m == 11 and images.shape == (3, 64, 86, 3) and fg.shape == (3, 64, 86)
    assert np.array_equal(images[:, :, 11:75], scenes.images) and np.array_equal(fg[:, :, 11:75], scenes.foreground)
    assert not fg[:, :, :11].any() and not fg[:, :, 75:].any()
    with pytest.raises(ValueError, match="square"):
        world.widen(images, [fg], scenes.factors["background"])


def test_evaluate_methods_scores_the_same_maps_under_each_geometry(random_model):
    from helpers.methods import segmentation as seg

    n = 4
    g = torch.Generator().manual_seed(1)
    aligned = torch.zeros(n, 64, 64, dtype=torch.bool)
    aligned[:, 8:40, 8:40] = True
    squeezed = torch.zeros_like(aligned)
    squeezed[:, 8:40, 14:38] = True
    task = seg.SegmentationTask("toy", torch.randn(n, 3, 64, 64, generator=g), aligned, [None] * n,
                                {"a": ["a"], "b": ["b"]}, masks_by_geometry={"aligned": aligned, "reference": squeezed})
    emb = torch.nn.functional.normalize(torch.randn(2, random_model.visual.output_dim, generator=g), dim=-1)
    both, maps = seg.evaluate_methods(random_model, task, emb, ("raw_attention", "lrp"), batch_size=3, warmup=0,
                                      geometries=("aligned", "reference"), variant="paper")
    plain, _ = seg.evaluate_methods(random_model, task, emb, ("raw_attention", "lrp"), batch_size=3, warmup=0,
                                    variant="paper")
    assert set(both) == {"aligned", "reference"} and set(both["aligned"]) == {"raw_attention", "lrp"}
    for m in ("raw_attention", "lrp"):
        assert {k: v for k, v in both["aligned"][m].items() if k != "images/s"} == \
            {k: v for k, v in plain[m].items() if k != "images/s"}
        assert both["reference"][m]["mIoU"] != both["aligned"][m]["mIoU"]
    assert maps["lrp"].shape == (n, 8, 8)  # the pixel map is kept per patch, for display
    with pytest.raises(ValueError, match="has masks for"):
        seg.evaluate_methods(random_model, task, emb, ("raw_attention",), geometries=("cropped",))

    # the same maps scored again from an earlier call: the patch maps are reused (not timed), the
    # pixel map (full LRP, Chefer et al.'s variant) is computed again, and the scores are the same
    calls = []
    real = seg.segmentation_maps
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(seg, "segmentation_maps", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
        again, maps_again = seg.evaluate_methods(random_model, task, emb, ("raw_attention", "lrp"), batch_size=3,
                                                 warmup=0, geometries=("aligned", "reference"), variant="paper",
                                                 reuse=(task.images.clone(), maps))
    assert calls == ["lrp", "lrp"]  # two batches of LRP, no raw attention
    for g in both:
        for m in ("raw_attention", "lrp"):
            assert {k: v for k, v in again[g][m].items() if k != "images/s"} == \
                {k: v for k, v in both[g][m].items() if k != "images/s"}, (g, m)
    assert math.isnan(again["aligned"]["raw_attention"]["images/s"]) and again["aligned"]["lrp"]["images/s"] > 0
    assert torch.equal(maps_again["raw_attention"], maps["raw_attention"])
    other = task.images.clone()
    other[0, 0, 0, 0] += 1
    with pytest.raises(ValueError, match="other images"):
        seg.evaluate_methods(random_model, task, emb, ("raw_attention",), reuse=(other, maps))


def test_imagenet_seg_task_takes_every_image_under_both_geometries(tmp_path):
    from helpers.data.segmentation_tasks import load_segmentation_task

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (30, 40, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.zeros((30, 40), bool) for _ in range(3)]
    for m in masks:
        m[5:25, 28:38] = True  # off-centre: the squeezed mask moves
    path = tmp_path / "gtsegs_ijcv.mat"
    _fake_mat(path, images, masks)
    pre = open_clip.image_transform(16, is_train=False)
    task = load_segmentation_task(f"imagenet-seg:{path}", pre, None, mask_geometry="reference")
    assert len(task) == 3 and task.mask_geometry == "reference" and len(task.prompts) > 900
    for i in range(3):
        x, m = transform_pair(images[i], masks[i], pre, geometry="reference")
        assert torch.equal(task.images[i], x) and torch.equal(task.masks[i], m)
        assert torch.equal(task.masks_for("aligned")[i], transform_pair(images[i], masks[i], pre)[1])
    assert not torch.equal(task.masks_for("aligned"), task.masks)
    assert len(load_segmentation_task(f"imagenet-seg:{path}", pre, 2)) == 2


def test_evaluate_methods_adds_sampling_errors_for_a_subset(monkeypatch):
    from helpers.methods import segmentation as seg

    n = 6
    g = torch.Generator().manual_seed(2)
    masks = torch.rand(n, 8, 8, generator=g) > 0.5
    task = seg.SegmentationTask("toy", torch.rand(n, 3, 8, 8, generator=g), masks, [None] * n, {"a": ["a"], "b": ["b"]})
    monkeypatch.setattr(seg, "segmentation_maps", lambda model, x, emb, method, **kw: torch.rand(x.shape[0], 2, 2,
                                                                                               generator=g))
    res, _ = seg.evaluate_methods(torch.nn.Linear(1, 1), task, torch.eye(2), ("rollout",), warmup=0, population=60)
    r = res["rollout"]
    assert {"pixel accuracy SE", "mIoU SE", "mAP SE", "object AP SE"} <= set(r) and r["mIoU SE"] > 0
    whole, _ = seg.evaluate_methods(torch.nn.Linear(1, 1), task, torch.eye(2), ("rollout",), warmup=0, population=6)
    assert whole["rollout"]["mIoU SE"] == 0.0
