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
from helpers.models import DEFAULT_MODEL, default_weights_path, load_model, world_of
from helpers.text import zero_shot_classifier
from helpers.images import images_to_tensor
from helpers.metrics import map_iou
from helpers.world_eval import ablation_figures, factor_accuracies, group_accuracies, object_maps

SEED = 7  # not the model card's seed: fresh scenes

# Shape maps: the shipped model names shapes (zero-shot >= 90%), but its maps of the shape
# texts localise less well than its colour maps; the target stays asserted, strict, so the
# marker must go once a model reaches it.
SHAPE_MAP_GAP = pytest.mark.xfail(strict=True, reason="world-v2's shape maps reach mIoU 0.30 against the "
                                  "masks (colour 0.39); see MODEL_CARD.md")


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
    scenes = world.sample(400, split="test", seed=SEED, config=world_of(model))
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


@pytest.mark.parametrize("factor", ["colour", "background", "shape"])
def test_zero_shot_targets(trained, scenes_and_terms, factor):
    model, tokenizer = trained
    scenes, terms = scenes_and_terms
    acc = factor_accuracies(model, tokenizer, scenes, terms, factors=(factor,))
    assert acc[factor] >= 0.90, acc


@pytest.mark.parametrize("factor", ["colour", "shape"])
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
    wb = group_accuracies(model, tokenizer, n_per_group=80, seed=SEED, config=world_of(model))
    assert wb["worst_group"] <= wb["average"] - 0.10, wb


@pytest.mark.parametrize("factor", ["colour", pytest.param("shape", marks=SHAPE_MAP_GAP)])
def test_spatial_maps_localise(trained, factor):
    model, tokenizer = trained
    sub = world.sample(120, split="test", seed=SEED + 1, config=world_of(model))
    maps = object_maps(model, tokenizer, sub, factor)
    iou = map_iou(maps, sub.foreground).mean()
    # a map that ignores the image (every pixel above threshold) scores the foreground fraction
    trivial = sub.foreground.reshape(len(sub), -1).mean(1).mean()
    assert iou >= 0.35 and iou >= trivial + 0.15, (iou, trivial)


# Notebook 5's and 6's targets, measured directly with the helpers on fresh scenes.
RAW_ATTENTION_GAP = pytest.mark.xfail(strict=True, reason="with one object per scene, world-v2's last-layer "
                                      "class-token attention finds the object slightly better than the "
                                      "decomposition (notebook 6: mIoU 0.669 vs 0.656; 94% vs 83% of the "
                                      "maps' positive mass on the object, the rest of the decomposition's "
                                      "from layers before the last); with two objects it does not")
REPAIR_GAP = pytest.mark.xfail(strict=True, reason="world-v2 leans on the background less than the paper's "
                               "CLIPs (worst group 80% before): removing its background heads gains about "
                               "7 points here and 3 in notebook 5, not 10")


@pytest.fixture(scope="module")
def repair(trained):
    """Group metrics before / after ablating the automatically chosen background heads, and
    the mean over random-head controls (notebook 5's procedure)."""
    from helpers.heads import head_roles, stack_heads
    from helpers.pools import load_pool
    from helpers.spurious import GroupEvaluator, choose_heads, rank_heads, random_heads
    from helpers.text import encode_texts
    from helpers.textspan import textspan

    model, tokenizer = trained
    groups = world.waterbirds_test_set(250, seed=SEED, config=world_of(model))  # 1,000 scenes: a gain of 10 points is not noise
    terms = collect_terms(model, images_to_tensor(groups.images), heads=True)
    clf = zero_shot_classifier(model, tokenizer, world.class_prompts("family"))
    ev = GroupEvaluator(terms, clf, groups.factors["family"], groups.groups, world.WATERBIRDS_GROUP_NAMES)
    span = collect_terms(model, images_to_tensor(world.sample(600, split="test", seed=SEED + 3,
                                                             config=world_of(model)).images), heads=True)
    L, H = terms.heads.shape[1], terms.heads.shape[2]
    layers = list(range(L - 4, L))
    stack, labels = stack_heads(span, layers)
    pool = load_pool("world")
    roles = head_roles(textspan(stack, encode_texts(model, tokenizer, pool.texts), 5), pool, labels,
                       ignore=("other",))
    chosen = choose_heads(rank_heads(roles, ["background"]), min_score=0.5)
    randoms = [ev(random_heads(len(chosen), layers, H, exclude=chosen, seed=s)) for s in range(10)]
    return ev(), ev(chosen), randoms, chosen


def test_background_heads_are_found(repair):
    before, _, _, chosen = repair
    assert chosen, "no head's TextSpan texts are mostly about the background"
    assert before.worst_group <= before.average - 0.10


def test_ablating_background_heads_beats_random_heads(repair):
    before, after, randoms, _ = repair
    gain = after.worst_group - before.worst_group
    assert gain >= 0.03, (before, after)
    assert after.average >= before.average - 0.03
    gain_random = sum(r.worst_group for r in randoms) / len(randoms) - before.worst_group
    assert gain_random <= 0.5 * gain, (gain_random, gain)


@REPAIR_GAP
def test_ablating_background_heads_repairs_the_worst_group(repair):
    before, after, _, _ = repair
    assert after.worst_group - before.worst_group >= 0.10, (before, after)


@pytest.fixture(scope="module", params=["world:colour", "world-pairs:colour"])
def segmentation_table(trained, request):
    """Notebook 6's table on fresh scenes: one object per scene (target: the prediction), and
    two objects per scene (target: the labelled one)."""
    from helpers.segmentation import evaluate_methods, load_segmentation_task
    from helpers.images import model_preprocess

    model, tokenizer = trained
    task = load_segmentation_task(request.param, model_preprocess(model), 200, seed=SEED, world_name=world_of(model))
    clf = zero_shot_classifier(model, tokenizer, task.prompts)
    results, _ = evaluate_methods(model, task, clf, ("decomposition", "raw_attention", "rollout"))
    return request.param, results


@pytest.mark.parametrize("baseline", ["rollout", "raw_attention"])
def test_decomposition_segments_better_than_attention_baselines(segmentation_table, baseline, request):
    task, r = segmentation_table
    if task == "world:colour" and baseline == "raw_attention":
        request.applymarker(RAW_ATTENTION_GAP)
    assert r["decomposition"]["mIoU"] > r[baseline]["mIoU"], r
