"""Tests of the synthetic world (helpers.data.world)."""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest

from helpers.data import world as W
from helpers.data.world.render import erode

N_BIG = 2000


@pytest.fixture(scope="module")
def train_batch() -> W.Scenes:
    return W.sample(N_BIG, "train", seed=11)


@pytest.fixture(scope="module")
def val_batch() -> W.Scenes:
    return W.sample(600, "val", seed=11)


@pytest.fixture(scope="module")
def tokenizer():
    open_clip = pytest.importorskip("open_clip")
    return open_clip.get_tokenizer("ViT-B-32", context_length=77)


def _token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    ids = tokenizer(texts)
    return (ids != 0).sum(dim=1).numpy()


# --- vocabularies -----------------------------------------------------------


def test_vocabularies():
    sizes = {k: len(v) for k, v in W.FACTORS.items()}
    assert sizes == {
        "shape": 8,
        "colour": 8,
        "position": 9,
        "size": 2,
        "background": 6,
        "count": 3,
        "pattern": 3,
        "family": 2,
    }
    assert {"water", "grass"} <= set(W.BACKGROUNDS)
    assert len(W.SHAPE_FAMILY) == len(W.SHAPES)
    assert collections.Counter(W.SHAPE_FAMILY) == {0: 4, 1: 4}
    assert dict(W.FAMILY_HABITAT) == {"walker": "grass", "swimmer": "water"}
    for vocab in W.FACTORS.values():
        assert len(set(vocab)) == len(vocab)
    assert len(W.CAPTION_FORMS) >= 20 and len(set(W.CAPTION_FORMS)) == len(W.CAPTION_FORMS)


# --- determinism --------------------------------------------------------------


def _assert_same(a: W.Scenes, b: W.Scenes) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.captions == b.captions
    for k in W.FACTOR_NAMES:
        np.testing.assert_array_equal(a.factors[k], b.factors[k])


def test_same_seed_same_scenes():
    _assert_same(W.sample(24, "train", seed=3), W.sample(24, "train", seed=3))
    _assert_same(W.sample(8, "test", seed=3, start=100), W.sample(8, "test", seed=3, start=100))


def test_different_seed_or_split_differs():
    a = W.sample(24, "train", seed=3)
    for other in (W.sample(24, "train", seed=4), W.sample(24, "val", seed=3), W.sample(24, "test", seed=3)):
        differing = [not np.array_equal(x, y) for x, y in zip(a.images, other.images)]
        assert sum(differing) >= 22
        assert sum(c != d for c, d in zip(a.captions, other.captions)) >= 20


def test_index_independence():
    world = W.World(5)
    alone = world.scene(7, "val")
    for batch in (world.sample(12, "val"), world.sample(4, "val", start=5)):
        inside = batch[7 - int(batch.indices[0])]
        assert inside.index == 7
        np.testing.assert_array_equal(alone.image, inside.image)
        np.testing.assert_array_equal(alone.masks, inside.masks)
        assert alone.caption == inside.caption
        assert alone.factors == inside.factors
        assert alone.positions == inside.positions
    assert W.make_scene(7, "val", seed=5).caption == alone.caption


def test_caption_variants_change_only_the_caption():
    world = W.World(2)
    base = world.sample(40, "train")
    other = world.sample(40, "train", caption_variant=1)
    np.testing.assert_array_equal(base.images, other.images)
    assert sum(a != b for a, b in zip(base.captions, other.captions)) >= 30
    assert world.caption(3, "train", variant=1) == other.captions[3]


# --- rendering and masks ------------------------------------------------------------


def test_image_and_mask_formats(val_batch):
    b = val_batch
    n = len(b)
    assert b.images.shape == (n, 64, 64, 3) and b.images.dtype == np.uint8
    assert b.masks.shape == (n, 3, 64, 64) and b.masks.dtype == bool
    assert b.foreground.shape == (n, 64, 64)
    sc = b[0]
    assert sc.masks.shape == (sc.count, 64, 64)
    pil = sc.pil()
    assert pil.size == (64, 64) and pil.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil), sc.image)


def test_masks_match_pixels():
    world = W.World(8)
    for split in ("train", "val", "waterbirds"):
        for i in range(60):
            sc = world.scene(i, split)
            bg = world.background(i, split)
            fg = sc.foreground
            # Outside the objects the image is exactly the background texture.
            np.testing.assert_array_equal(sc.image[~fg], bg[~fg])
            # Inside, (almost) every pixel was repainted.
            changed = (sc.image != bg).any(axis=-1)
            assert changed[fg].mean() > 0.95
            assert sc.masks.shape[0] == sc.count
            assert all(m.sum() > 40 for m in sc.masks)
            assert sc.masks.sum(axis=0).max() <= 1  # disjoint


def test_pairs_two_distinct_objects_on_one_background():
    world = W.World(3)
    pairs = world.sample_pairs(80, "test", start=5)
    again = W.sample_pairs(80, "test", seed=3, start=5)
    np.testing.assert_array_equal(pairs.images, again.images)  # deterministic
    np.testing.assert_array_equal(pairs.masks, again.masks)
    f = pairs.factors
    for k in ("shape", "colour", "position"):
        assert (f[k][:, 0] != f[k][:, 1]).all(), k  # the objects differ in shape, colour and cell
    assert (f["background"][:, 0] == f["background"][:, 1]).all() and (f["count"] == 0).all()
    assert not (pairs.masks[:, 0] & pairs.masks[:, 1]).any()  # disjoint
    for i in range(len(pairs)):
        sc = world.scene(5 + i, "test")
        assert f["shape"][i, 0] == sc.factors["shape"] and f["colour"][i, 0] == sc.factors["colour"]
        # object 0 is the scene's first object, pixel for pixel; outside both objects, the background
        np.testing.assert_array_equal(pairs.masks[i, 0], sc.masks[0])
        np.testing.assert_array_equal(pairs.images[i][sc.masks[0]], sc.image[sc.masks[0]])
        bg = world.background(5 + i, "test")
        out = ~pairs.masks[i].any(0)
        np.testing.assert_array_equal(pairs.images[i][out], bg[out])
        # object 1 was painted in its colour (plus pattern and outline) in its cell
        m1 = pairs.masks[i, 1]
        assert m1.sum() > 40 and (pairs.images[i][m1] != bg[m1]).any(-1).mean() > 0.95
        rgb = W.COLOUR_RGB[f["colour"][i, 1]]
        assert (np.abs(pairs.images[i][m1].astype(int) - rgb).max(-1) <= 12).sum() >= 5  # and outline, pattern
        ys, xs = np.nonzero(m1)
        row, col = divmod(int(f["position"][i, 1]), 3)
        assert int(col * 64 / 3) - 1 <= xs.mean() <= int((col + 1) * 64 / 3)
        assert int(row * 64 / 3) - 1 <= ys.mean() <= int((row + 1) * 64 / 3)
    assert pairs.names("colour", 1)[0] == W.COLOURS[f["colour"][0, 1]]
    with pytest.raises(ValueError):
        world.sample_pairs(-1)

def test_objects_in_distinct_cells(train_batch):
    for sc in list(train_batch)[:300]:
        assert len(set(sc.positions)) == sc.count
        assert sc.positions[0] == sc.factors["position"]
        for cell, mask, (cx, cy) in zip(sc.positions, sc.masks, sc.centres):
            row, col = divmod(cell, 3)
            ys, xs = np.nonzero(mask)
            # The whole object lies inside its grid cell.
            assert xs.min() >= int(col * 64 / 3) - 1 and xs.max() <= int((col + 1) * 64 / 3)
            assert ys.min() >= int(row * 64 / 3) - 1 and ys.max() <= int((row + 1) * 64 / 3)
            assert abs(xs.mean() + 0.5 - cx) < 3 and abs(ys.mean() + 0.5 - cy) < 3.5


def test_object_colours(train_batch):
    b = train_batch
    seen_patterns = set()
    for i in range(400):
        sc = b[i]
        rgb = np.array(sc.rgb)
        assert np.abs(rgb - W.COLOUR_RGB[sc.factors["colour"]]).max() <= 12
        for m in sc.masks:
            interior = erode(m)
            pix = sc.image[interior]
            exact = (pix == rgb).all(axis=1)
            if sc.names["pattern"] == "solid":
                assert exact.all()
            else:
                # Two colours: the object colour and its pattern shade.
                assert 0.2 < exact.mean() < 0.95
                assert len(np.unique(pix, axis=0)) == 2
            seen_patterns.add(sc.names["pattern"])
    assert seen_patterns == set(W.PATTERNS)


def test_sizes_differ(train_batch):
    b = train_batch
    area = b.masks[:, 0].sum(axis=(1, 2))
    small, large = area[b.factors["size"] == 0], area[b.factors["size"] == 1]
    assert large.mean() > 1.8 * small.mean()


# --- factor statistics ------------------------------------------------------------


def test_all_factor_values_occur(train_batch, val_batch):
    for batch in (train_batch, val_batch):
        for k, vocab in W.FACTORS.items():
            counts = np.bincount(batch.factors[k], minlength=len(vocab))
            assert len(counts) == len(vocab) and (counts > 0).all(), k
    fam = np.array(W.SHAPE_FAMILY)[train_batch.factors["shape"]]
    np.testing.assert_array_equal(fam, train_batch.factors["family"])


def test_spurious_correlation_in_train(train_batch):
    b = train_batch
    hab = b.habitat
    assert 0.45 < hab.mean() < 0.55
    bg = b.factors["background"][hab]
    assert set(np.unique(bg)) <= {W.BACKGROUNDS.index("water"), W.BACKGROUNDS.index("grass")}
    fam = b.factors["family"][hab]
    home = np.where(fam == W.FAMILIES.index("swimmer"), W.BACKGROUNDS.index("water"), W.BACKGROUNDS.index("grass"))
    assert abs((bg == home).mean() - 0.95) < 0.025
    # Non-habitat scenes have a uniform background.
    other = np.bincount(b.factors["background"][~hab], minlength=6) / (~hab).sum()
    assert np.abs(other - 1 / 6).max() < 0.05


def test_spurious_p_is_configurable():
    cfg = W.WorldConfig(habitat_fraction=1.0, spurious_p=0.7)
    b = W.sample(600, "train", seed=1, config=cfg)
    assert b.habitat.all()
    match = (b.groups == 0) | (b.groups == 3)
    assert abs(match.mean() - 0.7) < 0.06


def test_val_has_no_planted_correlation(val_batch):
    b = val_batch
    assert not b.habitat.any()
    water = b.factors["background"] == W.BACKGROUNDS.index("water")
    swim = b.factors["family"] == 1
    assert abs(water[swim].mean() - water[~swim].mean()) < 0.08


def test_waterbirds_test_set_is_balanced():
    b = W.waterbirds_test_set(25, seed=4)
    assert len(b) == 100
    assert np.bincount(b.groups, minlength=4).tolist() == [25, 25, 25, 25]
    water = b.factors["background"] == W.BACKGROUNDS.index("water")
    grass = b.factors["background"] == W.BACKGROUNDS.index("grass")
    assert (water | grass).all()
    np.testing.assert_array_equal(b.groups, 2 * b.factors["family"] + water)
    assert not b.habitat.any()
    assert len(W.GROUP_NAMES) == len(W.WATERBIRDS_GROUP_NAMES) == 4
    again = W.waterbirds_test_set(25, seed=4)
    np.testing.assert_array_equal(b.images, again.images)
    assert W.waterbirds_test_set(0).images.shape[0] == 0


# --- captions -----------------------------------------------------------------------


def test_captions_consistent_with_factors(train_batch):
    b = train_batch
    for i, cap in enumerate(b.captions):
        names = {k: W.FACTORS[k][b.factors[k][i]] for k in W.FACTOR_NAMES}
        count = int(b.factors["count"][i]) + 1
        parsed = W.parse_caption(cap)
        assert parsed.keys() - {"number"}, cap  # every caption names something
        for k in W.FACTOR_NAMES:
            assert parsed.get(k, {names[k]}) == {names[k]}, (cap, k, names)
        number = parsed.get("number", set())
        assert number <= ({"plural"} if count > 1 else {"singular"}), (cap, count)


def test_caption_mention_rates(train_batch):
    caps = train_batch.captions
    assert len(set(caps)) > 0.8 * len(caps)
    rate = collections.Counter()
    named = collections.defaultdict(set)
    for cap in caps:
        for k, vals in W.parse_caption(cap).items():
            rate[k] += 1
            named[k] |= vals
    n = len(caps)
    assert 0 < rate["pattern"] / n <= 0.05
    for k in ("shape", "colour", "background", "position", "size", "count"):
        assert 0.3 <= rate[k] / n <= 0.95, (k, rate[k] / n)
    assert rate["position"] / n >= 0.6
    assert 0.05 <= rate["family"] / n <= 0.3
    for k in ("shape", "colour", "background", "position", "size", "count", "family"):
        assert named[k] == set(W.FACTORS[k]), k


def test_caption_token_length(train_batch, tokenizer):
    caps = train_batch.captions + W.sample(300, "waterbirds", seed=2).captions
    lens = _token_lengths(tokenizer, caps)
    assert lens.max() <= 16
    np.testing.assert_array_equal(lens, [W.caption_token_count(c) for c in caps])


def test_parse_caption_examples():
    p = W.parse_caption("two large red stars on water, one in the top left")
    assert p == {
        "count": {"two"},
        "size": {"large"},
        "colour": {"red"},
        "shape": {"star"},
        "number": {"plural"},
        "background": {"water"},
        "position": {"top left"},
    }
    assert W.parse_caption("a swimmer at the top center")["position"] == {"top"}
    assert W.parse_caption("something striped on sand") == {"pattern": {"striped"}, "background": {"sand"}}


# --- prompts and text pool --------------------------------------------------------------


def test_class_prompts(tokenizer):
    for factor, vocab in W.FACTORS.items():
        prompts = W.class_prompts(factor)
        assert list(prompts) == list(vocab)
        n = {len(p) for p in prompts.values()}
        assert len(n) == 1 and n.pop() >= 3
        for value, texts in prompts.items():
            assert len(set(texts)) == len(texts)
            for t in texts:
                parsed = W.parse_caption(t)
                assert parsed.get(factor) == {value}, (factor, value, t)
                assert not (parsed.keys() - {factor, "number"}), t
            assert _token_lengths(tokenizer, texts).max() <= 16
    assert W.class_prompts("color") == W.class_prompts("colour")


def test_text_pool(tokenizer):
    pool = W.text_pool()
    assert 300 <= len(pool) <= 600
    assert len({t for t, _, _ in pool}) == len(pool)
    per_value = collections.Counter((p, v) for _, p, v in pool if p != "other")
    assert set(per_value) == {(k, v) for k, vocab in W.FACTORS.items() for v in vocab}
    assert 5 <= min(per_value.values()) and max(per_value.values()) <= 15
    assert sum(p == "other" for _, p, _ in pool) >= 50
    for text, prop, value in pool:
        assert "\t" not in text and "\n" not in text
        parsed = W.parse_caption(text)
        parsed.pop("number", None)
        if prop == "other":
            assert not parsed, text
        else:
            assert set(parsed) <= {prop}, text
            assert parsed.get(prop, {value}) == {value}, text
    assert _token_lengths(tokenizer, [t for t, _, _ in pool]).max() <= 16


def test_shipped_pool_file_matches_generator(tmp_path):
    from helpers.data import pools

    path = pools.pool_path("world")
    assert path.exists(), "run: python -m helpers.data.pools --write world"
    assert pools.load_pool(path, on_duplicate="keep").rows() == W.text_pool()
    fresh = pools.write_pool("world", tmp_path / "pool.tsv")
    assert fresh.read_bytes() == path.read_bytes()
    assert path.read_text(encoding="utf-8").splitlines()[0] == "text\tproperty\tvalue"


# --- counterfactuals ---------------------------------------------------------------


def test_overrides_change_only_the_named_factor():
    world = W.World(6)
    base = world.scene(3, "test")
    water = world.scene(3, "test", overrides={"background": "water"})
    grass = world.scene(3, "test", overrides={"background": "grass"})
    for sc in (water, grass):
        np.testing.assert_array_equal(sc.masks, base.masks)
        assert {k: v for k, v in sc.factors.items() if k != "background"} == {
            k: v for k, v in base.factors.items() if k != "background"
        }
    assert water.names["background"] == "water" and grass.names["background"] == "grass"
    fg = base.foreground
    np.testing.assert_array_equal(water.image[fg], grass.image[fg])
    moved = world.scene(3, "test", overrides={"position": 4, "colour": "blue"})
    assert moved.positions[0] == 4 and moved.names["colour"] == "blue"
    assert sorted(moved.positions) == sorted(set(moved.positions))
    assert W.parse_caption(moved.caption).get("colour", {"blue"}) == {"blue"}


# --- dataset -----------------------------------------------------------------------


def test_world_dataset():
    torch = pytest.importorskip("torch")
    ds = W.WorldDataset("val", 10, seed=3)
    assert len(ds) == 10
    img, cap, fac = ds[4]
    assert isinstance(img, torch.Tensor) and img.shape == (3, 64, 64) and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    sc = W.make_scene(4, "val", seed=3)
    assert cap == sc.caption
    np.testing.assert_allclose(img.permute(1, 2, 0).numpy() * 255, sc.image, atol=1e-3)
    assert fac["shape"] == sc.factors["shape"] and fac["group"] == sc.group
    loader = torch.utils.data.DataLoader(ds, batch_size=5)
    imgs, caps, facs = next(iter(loader))
    assert imgs.shape == (5, 3, 64, 64) and len(caps) == 5 and facs["colour"].shape == (5,)
    ds_t = W.WorldDataset("val", 10, seed=3, transform=lambda im: np.asarray(im.resize((32, 32))))
    assert ds_t[0][0].shape == (32, 32, 3)
    ds.set_epoch(1)
    assert ds[4][1] == W.World(3).caption(4, "val", variant=1)
    with pytest.raises(IndexError):
        ds[10]


# --- bad input -----------------------------------------------------------------------


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="unknown split"):
        W.sample(4, "training")
    with pytest.raises(ValueError, match="non-negative"):
        W.sample(-1)
    with pytest.raises(ValueError, match="non-negative"):
        W.sample(4, start=-2)
    with pytest.raises(ValueError, match="non-negative"):
        W.World(seed=-1)
    with pytest.raises(ValueError, match="non-negative"):
        W.waterbirds_test_set(-3)
    with pytest.raises(ValueError, match="unknown factor"):
        W.class_prompts("texture")
    with pytest.raises(ValueError, match="unknown factor"):
        W.World().scene(0, overrides={"material": "wood"})
    with pytest.raises(ValueError, match="cannot override"):
        W.World().scene(0, overrides={"count": 2})
    with pytest.raises(ValueError, match="unknown colour"):
        W.World().scene(0, overrides={"colour": "pink"})
    with pytest.raises(ValueError):
        W.value_index("shape", 8)
    with pytest.raises(ValueError, match="spurious_p"):
        W.WorldConfig(spurious_p=1.5)
    with pytest.raises(ValueError, match="unknown split"):
        W.WorldDataset("dev", 4)


# --- speed -------------------------------------------------------------------------------


def test_generation_speed():
    world = W.World(0)
    world.sample(4)
    best = min(_timed(lambda: world.sample(128, "train", start=200)) for _ in range(2))
    # Target is well under 0.2 s on one core; the bound is loose for busy machines.
    assert best < 1.0, best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
