"""world-v3 (helpers.data.world.WORLDS): sizes over a 4x range, outlines on and off, rotation, unnamed
clutter and habitat captions -- and world-v2's scenes left exactly as they were."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from helpers.data import world as W
from helpers.data.world.render import DISTRACTOR_RADIUS

V3 = W.world_config("world-v3")


@pytest.fixture(scope="module")
def v3_train() -> W.Scenes:
    return W.sample(1500, "train", seed=5, config="world-v3")


def _digest(scenes) -> str:
    h = hashlib.sha256()
    h.update(scenes.images.tobytes())
    h.update(scenes.masks.tobytes())
    h.update("|".join(getattr(scenes, "captions", [])).encode())
    return h.hexdigest()[:16]


def test_world_v2_scenes_are_unchanged():
    """The digest of world-v2 scenes, pairs and counterfactuals as they were before world-v3 existed
    (the shipped world-v2 models were trained and measured on them)."""
    assert W.WorldConfig() == W.world_config("world-v2") == W.world_config(None)
    assert not W.WorldConfig().extended and V3.extended
    got = [_digest(W.sample(40, split, seed=3)) for split in ("train", "test", "waterbirds")]
    got.append(_digest(W.sample_pairs(20, seed=1)))
    sc = W.World(0).scene(5, "train", caption_variant=2, overrides={"shape": "star", "position": 4})
    got.append(hashlib.sha256(sc.image.tobytes() + sc.caption.encode()).hexdigest()[:16])
    assert got == ["b6b2df98890347fe", "2e8c4377dfa27d7a", "960eaf1b3873d919", "689f49b935028539",
                   "ae286599f889ea75"], got


def test_world_by_name():
    assert W.World(0, "world-v3").config is V3
    np.testing.assert_array_equal(W.sample(3, seed=2, config="world-v3").images,
                                  W.World(2, V3).sample(3).images)
    with pytest.raises(ValueError, match="unknown world 'world-v9'"):
        W.World(0, "world-v9")
    with pytest.raises(ValueError, match="rotation"):
        W.WorldConfig(rotation=90.0)
    with pytest.raises(ValueError, match="multi_radius_max"):
        W.WorldConfig(multi_radius_max=12.0)
    with pytest.raises(ValueError, match="small_radius"):
        W.WorldConfig(small_radius=(8.0, 5.0))


def test_sizes_span_four_times_and_the_classes_do_not_touch(v3_train):
    r, size, count = v3_train.radii, v3_train.factors["size"], v3_train.counts
    assert r.max() / r.min() >= 3.8  # the range is 5.5 .. 22 px
    assert r.max() / r.min() <= V3.large_radius[1] / V3.small_radius[0] + 1e-6
    assert r[size == 0].max() <= V3.small_radius[1] + 1e-4 < V3.multi_radius_max - 1e-4 <= r[size == 1].min()
    assert r[count > 1].max() <= V3.multi_radius_max + 1e-4  # several objects never overlap
    lone_large = (size == 1) & (count == 1)
    assert r[lone_large].max() > 18 and np.median(r[lone_large]) > 13
    # every object stays inside the picture, and its centre in its own cell (an object wider than
    # a cell, radius above 21.3 px, is pushed in by at most its excess over the cell)
    cw = 64 / 3
    for sc in list(v3_train)[:600]:
        slack = max(0.0, sc.radius - cw) + 1e-3
        for (x, y), cell in zip(sc.centres, sc.positions):
            assert sc.radius - 1e-3 <= x <= 64 - sc.radius + 1e-3 and sc.radius - 1e-3 <= y <= 64 - sc.radius + 1e-3
            assert (cell % 3) * cw - slack <= x <= (cell % 3 + 1) * cw + slack
            assert (cell // 3) * cw - slack <= y <= (cell // 3 + 1) * cw + slack


def test_outlines_rotation_and_clutter_rates(v3_train):
    n = len(v3_train)
    assert abs(v3_train.outlined.mean() - V3.outline_p) < 0.05
    cluttered = v3_train.clutter.any((1, 2))
    assert abs(cluttered.mean() - V3.clutter_p) < 0.05  # a distractor may rarely be hidden entirely
    assert not (v3_train.clutter & v3_train.foreground).any()  # painted under the named objects
    lay = [W.World(5, V3)._layout_and_texture(i, "train")[0] for i in range(300)]
    angles = np.degrees([abs(a.angle) for a in lay])
    assert angles.max() <= V3.rotation and angles.max() > 15 and np.median(angles) > 5
    kinds = {d.kind for a in lay for d in a.distractors}
    assert kinds == set(range(len(W.DISTRACTORS)))
    for a in lay:
        for d in a.distractors:
            assert d.colour != a.colour  # clutter has other colours than the named object
            assert DISTRACTOR_RADIUS[0] - 1e-6 <= d.radius <= DISTRACTOR_RADIUS[1] + 1e-6
    assert n == 1500


def test_clutter_is_never_named(v3_train):
    words = set()
    for cap in v3_train.captions:
        words |= set(cap.replace(",", " ").replace(":", " ").split())
    assert not words & {"ring", "rings", "crescent", "crescents", "bar", "bars", "arrow", "arrows"}


def test_v3_masks_match_pixels():
    w = W.World(8, "world-v3")
    for split in ("train", "test", "waterbirds"):
        for i in range(50):
            sc = w.scene(i, split)
            bg = w.background(i, split)
            fg = sc.foreground
            rest = ~(fg | sc.clutter)
            np.testing.assert_array_equal(sc.image[rest], bg[rest])  # elsewhere, the texture
            assert (sc.image != bg).any(-1)[fg].mean() > 0.9
            assert sc.masks.sum(0).max() <= 1 and all(m.sum() > 40 for m in sc.masks)


def test_outline_switches_the_border():
    w = W.World(1, "world-v3")
    seen = {True: 0, False: 0}
    for i in range(80):
        sc = w.scene(i, "test")
        if sc.factors["pattern"] != 0 or W.COLOURS[sc.factors["colour"]] == "black":
            continue
        from helpers.data.world.render import erode

        border = sc.masks[0] & ~erode(sc.masks[0])
        dark = (sc.image[border].astype(int).max(-1) <= 40).mean()
        seen[sc.outlined] += 1
        assert (dark > 0.9) if sc.outlined else (dark < 0.2), (i, sc.outlined, dark)
    assert seen[True] >= 5 and seen[False] >= 5


def test_v3_pairs_do_not_overlap():
    pairs = W.sample_pairs(120, "test", seed=4, config="world-v3")
    assert not (pairs.masks[:, 0] & pairs.masks[:, 1]).any()
    assert (pairs.masks.sum((2, 3)) > 30).all()
    for k in ("shape", "colour", "position"):
        assert (pairs.factors[k][:, 0] != pairs.factors[k][:, 1]).all(), k


def test_habitat_captions_link_family_and_habitat(v3_train):
    hab = v3_train.habitat
    parsed = [W.parse_caption(c) for c in v3_train.captions]
    both = np.array([("family" in p) and ("background" in p) for p in parsed])
    fam = np.array(["family" in p for p in parsed])
    # habitat scenes: the stated rate of linked captions, plus world-v2's own family mentions
    assert both[hab].mean() >= V3.habitat_caption_p - 0.05
    assert fam[~hab].mean() < 0.2 and both[~hab].mean() < 0.15
    # the named background is the scene's own: the link is in the data, not invented
    for p, bgi in zip(parsed, v3_train.factors["background"]):
        if "background" in p:
            assert p["background"] == {W.BACKGROUNDS[bgi]}
    # the evaluation splits have no habitat scenes, so nothing changes there
    for split in ("test", "val", "waterbirds"):
        assert not W.sample(200, split, seed=5, config="world-v3").habitat.any()


def test_v3_captions_fit_the_token_budget(v3_train):
    assert max(W.caption_token_count(c) for c in v3_train.captions) <= V3.max_caption_tokens


def test_v3_scenes_are_deterministic_and_independent():
    a = W.sample(20, "train", seed=9, start=30, config="world-v3")
    b = W.World(9, "world-v3")
    for i in (0, 7, 19):
        sc = b.scene(30 + i, "train")
        np.testing.assert_array_equal(a.images[i], sc.image)
        np.testing.assert_array_equal(a.clutter[i], sc.clutter)
        assert a.captions[i] == sc.caption
    # a counterfactual keeps the clutter, the rotation and the outline
    sc = b.scene(3, "train")
    twin = b.scene(3, "train", overrides={"shape": (sc.factors["shape"] + 1) % 8})
    np.testing.assert_array_equal(sc.clutter & twin.clutter, sc.clutter & ~twin.foreground)
    assert sc.outlined == twin.outlined and sc.radius == twin.radius


# --- the rest of the course reads a model's own world --------------------------------------------


def test_world_of_reads_the_training_log(tmp_path):
    import json
    import shutil

    from helpers.engine.models import DEFAULT_PRETRAINED, load_model, offline_weights_path, world_of

    model, _, _ = load_model("world-clip", DEFAULT_PRETRAINED)
    assert world_of(model) == "world-v3"  # the default's last stages ran on world-v3, and its log says so
    assert world_of(load_model("ViT-B-32", "random")[0]) is None
    # a log from before world-v3 names no world: world-v2's
    src = offline_weights_path(DEFAULT_PRETRAINED)
    dst = tmp_path / "world-clip-trial.safetensors"
    shutil.copy(src, dst)
    log = json.loads(src.with_name(f"world-clip-{DEFAULT_PRETRAINED}.train.json").read_text())
    del log["config"]["world"]
    (tmp_path / "world-clip-trial.train.json").write_text(json.dumps(log))
    assert world_of(load_model("world-clip", str(dst))[0]) == "world-v2"


def test_tasks_take_the_world_by_name():
    from helpers.data.datasets import load_task

    v2 = load_task("world:shape", n_images=6, seed=0)
    v3 = load_task("world:shape", n_images=6, seed=0, world_name="world-v3")
    assert v2.meta["scenes"].clutter.sum() == 0
    np.testing.assert_array_equal(v3.meta["scenes"].images, W.sample(6, "test", seed=1, config="world-v3").images)
    assert not np.array_equal(v2.meta["scenes"].images, v3.meta["scenes"].images)


def test_planted_correlation_counts_the_caption_link():
    from helpers.data.waterbirds import world_planted_correlation

    v2 = world_planted_correlation(4000, seed=0)
    v3 = world_planted_correlation(4000, seed=0, config="world-v3")
    # the same layouts: the same scenes on the same backgrounds
    assert (v2.habitat_share, v2.agree_in_habitat) == (v3.habitat_share, v3.agree_in_habitat)
    # world-v2's captions name family and background together by chance, as often everywhere
    assert v2.habitat_caption_p == 0 and abs(v2.linked_captions - v2.linked_elsewhere) < 0.03
    # world-v3 plants the link in the habitat scenes only, at its stated rate (plus the chance share)
    assert v3.linked_captions >= V3.habitat_caption_p and v3.linked_elsewhere == pytest.approx(v2.linked_elsewhere)


def test_shape_by_size_bins_the_scenes():
    from helpers.data.world_eval import SIZE_BINS, shape_by_size
    from helpers.engine.models import load_model

    model, _, tok = load_model()
    r = shape_by_size(model, tok, n=160, seed=3)
    assert r["world"] == "world-v3" and r["n"] == 160 and list(r["bins"]) == [b[0] for b in SIZE_BINS]
    assert sum(v["all"]["n"] for v in r["bins"].values()) == 160  # every radius falls in one bin
    for v in r["bins"].values():
        assert v["outline"]["n"] + v["no outline"]["n"] == v["all"]["n"]
    assert r["clutter"]["n"] + r["no clutter"]["n"] == 160
    assert r["worst_bin"] <= r["overall"] <= max(v["all"]["accuracy"] for v in r["bins"].values())
