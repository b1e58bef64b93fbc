"""The head catalogue and what it rests on: head terms of the last layers (direct and cached),
TextSpan through the cache, catalogues, searches for an outside query, checked uploads and
galleries; on the offline default with a few world scenes."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data.gallery import load_gallery, pool_for
from helpers.data.pools import load_pool
from helpers.engine.cache import FeatureCache, weights_fingerprint
from helpers.engine.images import image_from_bytes
from helpers.engine.text import encode_texts
from helpers.methods.ablation import collect_terms
from helpers.methods.catalogue import (
    HeadTerms,
    build_catalogue,
    cached_head_terms,
    cached_textspan,
    head_terms,
    pool_digest,
)
from helpers.methods.heads import (
    head_image_neighbours,
    head_roles,
    interpretability_scores,
    property_neighbours,
    stack_heads,
    terms_neighbours,
)
from helpers.methods.textspan import textspan

N = 16
LAYERS = [4, 5, 6, 7]


@pytest.fixture(scope="module")
def gallery(default_bundle):
    from helpers.engine.models import world_of

    model, preprocess, _ = default_bundle
    return load_gallery("world:colour", n_images=N, preprocess=preprocess, world_name=world_of(model))


@pytest.fixture(scope="module")
def images(gallery):
    return torch.stack([gallery.task.dataset[i][0] for i in range(len(gallery))])


@pytest.fixture(scope="module")
def world_pool(default_bundle):
    model, _, tokenizer = default_bundle
    pool = load_pool("world")
    return pool, encode_texts(model, tokenizer, pool.texts)


def test_head_terms_match_the_full_decomposition(default_bundle, images):
    model = default_bundle[0]
    terms = collect_terms(model, images, heads=True)
    mine = head_terms(model, images, LAYERS, batch_size=5)  # several chunks
    assert mine.layers == LAYERS and len(mine) == N and mine.n_heads == 4
    assert mine.labels == stack_heads(terms, LAYERS)[1]
    assert mine.names[:2] == ["L4.H0", "L4.H1"]
    for scale in ("raw", "paper"):
        ref = stack_heads(terms, LAYERS, scale=scale)[0]
        assert torch.allclose(mine.stack(scale), ref, atol=1e-6), scale
    assert mine.stack().untyped_storage().data_ptr() == mine.heads.untyped_storage().data_ptr()  # a view, no copy
    # negative layers count from the end, in the given order
    assert head_terms(model, images[:2], [-1, -2]).layers == [7, 6]
    with pytest.raises(ValueError, match="scale"):
        mine.stack("unit")
    with pytest.raises(ValueError, match="images"):
        head_terms(model, images[0], LAYERS)
    with pytest.raises(IndexError):
        head_terms(model, images[:2], [8])
    with pytest.raises(ValueError, match="norms"):
        HeadTerms(mine.heads, mine.norms[:3], mine.share, LAYERS)


def test_cached_head_terms_are_read_back_and_keyed_by_the_weights(default_bundle, gallery, images, tmp_path):
    model = default_bundle[0]
    direct = head_terms(model, images, LAYERS)
    first, computed = cached_head_terms(model, gallery.task.dataset, layers=LAYERS, dataset_id=gallery.dataset_id,
                                        cache_dir=tmp_path, batch_size=6, progress=False)
    assert computed
    assert torch.allclose(first.heads, direct.heads, atol=1e-6) and torch.allclose(first.norms, direct.norms)
    again, computed = cached_head_terms(model, gallery.task.dataset, layers=LAYERS, dataset_id=gallery.dataset_id,
                                        cache_dir=tmp_path, batch_size=6, progress=False)
    assert not computed and torch.equal(again.heads, first.heads) and torch.equal(again.share, first.share)
    # other weights, another entry: nothing read from the first model's
    p = next(model.visual.parameters())
    saved = p.detach().clone()
    try:
        with torch.no_grad():
            p.add_(1e-3)
        _, computed = cached_head_terms(model, gallery.task.dataset, layers=LAYERS, dataset_id=gallery.dataset_id,
                                        cache_dir=tmp_path, batch_size=8, progress=False)
        assert computed
    finally:
        with torch.no_grad():
            p.copy_(saved)
    assert len(FeatureCache(tmp_path).entries()) == 2
    # other layers are another entry too
    _, computed = cached_head_terms(model, gallery.task.dataset, layers=[6, 7], dataset_id=gallery.dataset_id,
                                    cache_dir=tmp_path, progress=False, weights=weights_fingerprint(model))
    assert computed


def test_cached_textspan_equals_textspan(default_bundle, images, world_pool, tmp_path):
    model = default_bundle[0]
    pool, emb = world_pool
    stack = head_terms(model, images, LAYERS).stack()
    key = dict(model="offline", images="test", pool=pool_digest(pool))
    results, computed = cached_textspan(stack, emb, 5, key=key, cache_dir=tmp_path, heads_per_step=3,
                                        progress=False)
    assert computed and set(results) == {"numerical", "paper"}
    for span, r in results.items():
        ref = textspan(stack, emb, 5, span=span)
        assert torch.equal(r.indices, ref.indices), span
        assert torch.allclose(r.variance, ref.variance.to(r.variance.dtype), atol=1e-6)
        assert torch.allclose(r.directions, ref.directions.to(r.directions.dtype), atol=1e-5)
        assert r.batched and r.indices.shape == (16, 5)
    back, computed = cached_textspan(stack, emb, 5, key=key, cache_dir=tmp_path, heads_per_step=3, progress=False)
    assert not computed and torch.equal(back["paper"].indices, results["paper"].indices)
    _, computed = cached_textspan(stack, emb, 4, key=key, cache_dir=tmp_path, progress=False)
    assert computed  # another number of texts: another entry
    with pytest.raises(ValueError, match="span"):
        cached_textspan(stack, emb, 5, key=key, cache_dir=tmp_path, spans=["pca"])
    # the digest follows the tags as well as the texts
    retagged = load_pool("world")
    retagged.properties[0] = "other" if retagged.properties[0] != "other" else "shape"
    assert pool_digest(retagged) != pool_digest(pool) == pool_digest(load_pool("world"))


def test_build_catalogue(default_bundle, images, world_pool):
    model = default_bundle[0]
    pool, emb = world_pool
    terms = head_terms(model, images, LAYERS)
    result = textspan(terms.stack(), emb, 8)
    cat = build_catalogue(result, pool, terms.labels, n_role=5, ignore=("other", "unknown"))
    roles = head_roles(result, pool, terms.labels, 5, ignore=("other", "unknown"))
    assert [r.property for r in cat.roles] == [r.property for r in roles]
    assert [r.purity for r in cat.roles] == [r.purity for r in roles]
    scores = interpretability_scores(roles, properties=pool)
    assert cat.scores.association == scores.association
    assert cat.scores.across_heads_entanglement == scores.across_heads_entanglement
    rows = cat.rows()
    assert len(rows) == len(cat) == 16 and rows[0]["head"] == "L4.H0" and len(rows[0]["texts"]) == 8
    assert rows[0]["texts"][:5] == cat.roles[0].texts and rows[0]["tags"] == [pool.properties[j] for j in
                                                                               result.indices[0].tolist()]
    props = cat.properties()
    counts = [cat.scores.heads_per_property[p] for p in props]
    assert counts == sorted(counts, reverse=True) and all(counts)
    top = props[0]
    assert cat.heads_for(top) == [i for i, r in enumerate(cat.roles) if r.property == top]
    assert cat.index(cat.names[3]) == 3
    with pytest.raises(ValueError, match="no head"):
        cat.index("L0.H0")
    # the role reads at most the texts fitted
    assert build_catalogue(result, pool, terms.labels, n_role=50).roles[0].n == 8
    with pytest.raises(ValueError, match="batched"):
        build_catalogue(result.head(0), pool, terms.labels[:1])


def test_terms_neighbours_equal_property_neighbours(default_bundle, images):
    model = default_bundle[0]
    terms = head_terms(model, images, LAYERS)
    for score, scale in (("cosine", "raw"), ("dot", "paper")):
        S = terms.stack(scale)
        for heads in ([0, 5, 9], [3]):
            for centre in (False, True):
                q = 2
                ref_i, ref_v = property_neighbours(S, heads, q, 4, centre=centre, score=score)
                i, v = terms_neighbours(S, heads, S[:, q], 4, centre=centre, score=score, exclude=q)
                assert i.tolist() == ref_i.tolist() and torch.allclose(v, ref_v, atol=1e-6)
    S = terms.stack()
    i, _ = head_image_neighbours(S, 7, 1, 3)
    assert terms_neighbours(S, [7], S[:, 1], 3, exclude=1)[0].tolist() == i.tolist()


def test_terms_neighbours_of_an_outside_image(default_bundle, images):
    model = default_bundle[0]
    inside = head_terms(model, images[:-1], LAYERS).stack()
    outside = head_terms(model, images[-1:], LAYERS).stack()[:, 0]
    idx, val = terms_neighbours(inside, [0, 1], outside, N - 1)  # every image, none left out
    assert sorted(idx.tolist()) == list(range(N - 1)) and bool((val[:-1] >= val[1:]).all())
    # the same as searching with the outside image appended and left out
    joined = torch.cat([inside, outside[:, None]], 1)
    assert property_neighbours(joined, [0, 1], N - 1, 5)[0].tolist() == idx[:5].tolist()
    with pytest.raises(ValueError, match="query_terms"):
        terms_neighbours(inside, [0], outside[:3], 2)
    with pytest.raises(ValueError, match="k must be"):
        terms_neighbours(inside, [0], outside, N)
    with pytest.raises(ValueError, match="k must be"):
        terms_neighbours(inside, [0], inside[:, 0], N - 1, exclude=0)
    with pytest.raises(ValueError, match="score"):
        terms_neighbours(inside, [0], outside, 2, score="l2")


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_image_from_bytes_reads_images_and_refuses_the_rest():
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    img = image_from_bytes(_png(rgba), "a.png")
    assert img.mode == "RGB" and img.size == (40, 30) and img.getpixel((0, 0)) == (255, 255, 255)  # on white
    assert image_from_bytes(_png(Image.new("L", (9, 9)), "JPEG")).mode == "RGB"
    with pytest.raises(ValueError, match="'notes.txt' is not an image"):
        image_from_bytes(b"just some text\n", "'notes.txt'")
    with pytest.raises(ValueError, match="is empty"):
        image_from_bytes(b"", "x")
    with pytest.raises(ValueError, match="MiB"):
        image_from_bytes(b"\0" * 2048, "big", max_bytes=1024)
    data = _png(Image.new("RGB", (64, 64), (1, 2, 3)))
    with pytest.raises(ValueError, match="not an image"):
        image_from_bytes(data[: len(data) // 2], "cut.png")  # truncated
    with pytest.raises(ValueError, match="pixels"):
        image_from_bytes(data, "huge.png", max_pixels=100)
    with pytest.raises(ValueError, match="too small"):
        image_from_bytes(_png(Image.new("RGB", (1, 5))), "thin.png")


def test_gallery(gallery):
    assert len(gallery) == N and gallery.pool_name == "world"
    assert gallery.dataset_id.startswith("world:colour@") and gallery.dataset_id.endswith("/seed0/n16")
    assert gallery.caption(0) == gallery.scenes.captions[0]
    from helpers.data import world

    assert gallery.value(3, "colour") == world.COLOURS[gallery.factors["colour"][3]]
    assert gallery.value(0, "texture") is None
    assert gallery.mask(1).shape == gallery.image(1).size[::-1] and gallery.mask(1).any()
    with pytest.raises(IndexError):
        gallery.image(N)
    with pytest.raises(ValueError, match="at least 2"):
        load_gallery("world:colour", n_images=1, preprocess=None)
    assert pool_for("world") == pool_for("world:shape") == "world"
    assert pool_for("imagenette") == pool_for("imagenet:/x") == "general"


def test_gallery_of_real_images_has_class_captions(tmp_path):
    from helpers.data.datasets import imagenet_folder_task
    from helpers.data.gallery import Gallery

    for wnid in ("n01440764", "n15075141"):
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (30, 20), (1, 2, 3)).save(tmp_path / wnid / "a.JPEG")
    task = imagenet_folder_task(tmp_path, preprocess=lambda im: torch.zeros(3, 4, 4), templates="simple")
    g = Gallery(task, "imagenet-test", pool_for("imagenet:x"))
    assert g.caption(0) == "tench" and g.factors is None and g.mask(0) is None and g.value(0, "colour") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.asarray(g.image(1)).shape == (20, 30, 3)
