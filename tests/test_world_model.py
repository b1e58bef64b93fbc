"""The shipped offline default, re-measured on freshly generated held-out scenes.

The figures asserted here are the targets of the model card (they are not tuned to the
model): shape, colour and background zero-shot accuracy >= 90%; direct effects concentrated
in the last attention layers; specialised heads; localising spatial maps; a planted spurious
correlation that hurts the worst group.
"""

import warnings

import pytest
import torch

from helpers import world
from helpers.ablation import collect_terms
from helpers.models import DEFAULT_MODEL, default_weights_path, load_model
from helpers.text import zero_shot_classifier
from helpers.training import images_to_tensor
from helpers.world_eval import ablation_figures, factor_accuracies, group_accuracies, map_iou, object_maps

SEED = 7  # not the model card's seed: fresh scenes

# The shipped model has not learned shape (see data/models/MODEL_CARD.md): these targets stay
# asserted, and strict, so the marker must go once a model reaches them.
SHAPE_GAP = pytest.mark.xfail(strict=True, reason="world-v1 has barely learned shape (zero-shot 19%, "
                              "linear probe 17%, chance 12.5%); see MODEL_CARD.md")


@pytest.fixture(scope="module")
def trained():
    assert default_weights_path().exists(), "the trained weights must ship in data/models/"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'untrained stand-in' warning
        model, _, tokenizer = load_model(DEFAULT_MODEL)
    return model, tokenizer


@pytest.fixture(scope="module")
def scenes_and_terms(trained):
    model, _ = trained
    scenes = world.sample(400, split="test", seed=SEED)
    return scenes, collect_terms(model, images_to_tensor(scenes.images), heads=True)


def test_weights_small_and_offline(trained, monkeypatch):
    assert default_weights_path().stat().st_size <= 25 * 2**20
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import socket

    def no_network(*a, **k):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    model, _, _ = load_model()
    assert not model.training


@pytest.mark.parametrize("factor", ["colour", "background", pytest.param("shape", marks=SHAPE_GAP)])
def test_zero_shot_targets(trained, scenes_and_terms, factor):
    model, tokenizer = trained
    scenes, terms = scenes_and_terms
    acc = factor_accuracies(model, tokenizer, scenes, terms, factors=(factor,))
    assert acc[factor] >= 0.90, acc


@pytest.mark.parametrize("factor", ["colour", pytest.param("shape", marks=SHAPE_GAP)])
def test_direct_effects_concentrate_in_last_attention_layers(trained, scenes_and_terms, factor):
    model, tokenizer = trained
    scenes, terms = scenes_and_terms
    clf = zero_shot_classifier(model, tokenizer, world.class_prompts(factor))
    ab = ablation_figures(terms, clf, torch.as_tensor(scenes.factors[factor]))
    assert ab["baseline"] - ab["everything_except_last_k_attn"] <= 0.10, ab
    assert ab["baseline"] - ab["mlps"] <= 0.10, ab
    assert ab["baseline"] - ab["last_k_attn"] >= 0.40, ab


def test_heads_specialise_on_planted_factors(trained, scenes_and_terms):
    from helpers.pools import load_pool
    from helpers.text import encode_texts
    from helpers.world_eval import head_purity

    model, tokenizer = trained
    _, terms = scenes_and_terms
    pool = load_pool("world")
    rows = head_purity(terms, encode_texts(model, tokenizer, pool.texts), pool, n=5, layers=range(-4, 0))
    pure = [r for r in rows if r["purity"] >= 0.6]
    assert len(pure) >= 2, rows
    assert all(r["property"] in world.FACTORS for r in pure), pure


def test_spurious_correlation_hurts_worst_group(trained):
    model, tokenizer = trained
    wb = group_accuracies(model, tokenizer, n_per_group=80, seed=SEED)
    assert wb["worst_group"] <= wb["average"] - 0.10, wb


@pytest.mark.parametrize("factor", ["colour", pytest.param("shape", marks=SHAPE_GAP)])
def test_spatial_maps_localise(trained, factor):
    model, tokenizer = trained
    sub = world.sample(120, split="test", seed=SEED + 1)
    maps = object_maps(model, tokenizer, sub, factor)
    iou = map_iou(maps, sub.foreground).mean()
    # a map that ignores the image (every pixel above threshold) scores the foreground fraction
    trivial = sub.foreground.reshape(len(sub), -1).mean(1).mean()
    assert iou >= 0.35 and iou >= trivial + 0.15, (iou, trivial)
