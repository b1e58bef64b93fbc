"""The shipped offline default, re-measured on freshly generated held-out scenes.

The figures asserted here are the targets of the model card (they are not tuned to the
model): shape, colour and background zero-shot accuracy >= 90%, shape >= 80% at every object
size with and without the outline; direct effects concentrated in the last attention layers;
specialised heads; localising spatial maps; a planted spurious correlation that puts the worst
group >= 20 points below the average, and a repair by the background heads.
"""

import warnings

import pytest
import torch

from helpers.data import world
from helpers.data.world_eval import ablation_figures, factor_accuracies, group_accuracies, object_maps
from helpers.engine.images import images_to_tensor
from helpers.engine.models import DEFAULT_MODEL, default_weights_path, load_model, world_of
from helpers.engine.text import zero_shot_classifier
from helpers.methods.ablation import collect_terms
from helpers.methods.metrics import map_iou

pytestmark = pytest.mark.slow  # hundreds of fresh scenes through the model: the slow tier

SEED = 7  # not the model card's seed: fresh scenes

# Targets stated before training that the shipped model does not reach: asserted, strict, so a
# marker must go once a model reaches its target (MODEL_CARD.md's targets table gives the figures).
SHAPE_GAP = pytest.mark.xfail(strict=True, reason="world-v3's default names 81.5% of the shapes on the card's "
                              "scenes (81% here): world-v3's objects over a 4x range of sizes, half without "
                              "outline, are harder than world-v2's, where it named 93%; see MODEL_CARD.md")
POSITION_GAP = pytest.mark.xfail(strict=True, reason="position (a stretch goal) stays near chance: 12.2% on the "
                                 "card's scenes, chance 11.1%; no world-v2 or world-v3 model learned it")
SHAPE_BY_SIZE_GAP = pytest.mark.xfail(strict=True, reason="shape is below 80% for the smallest objects (about "
                                      "70%, 67% without the outline) and the largest (about 75%); see "
                                      "MODEL_CARD.md")


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
    import threading

    # Only this test's thread loses the network: the session's early work (JupyterLab
    # driven from another thread) keeps talking to its local server meanwhile.
    here, real = threading.get_ident(), socket.create_connection

    def no_network(*a, **k):
        if threading.get_ident() != here:
            return real(*a, **k)
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


@POSITION_GAP
def test_position_stretch_goal(trained, scenes_and_terms):
    model, tokenizer = trained
    scenes, terms = scenes_and_terms
    acc = factor_accuracies(model, tokenizer, scenes, terms, factors=("position",))
    assert acc["position"] >= 0.50, acc


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
    from helpers.data.pools import load_pool
    from helpers.data.world_eval import head_purity
    from helpers.engine.text import encode_texts

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
    assert wb["worst_group"] <= wb["average"] - 0.20, wb  # issue 18's figure (world-v2's: 10 points)


@SHAPE_BY_SIZE_GAP
def test_shape_at_every_size_with_and_without_outline(trained):
    """Issue 18's scale target: >= 80% in every radius bin of world-v3's scenes, with and
    without the outline (fresh scenes, not the card's)."""
    from helpers.data.world_eval import shape_by_size

    model, tokenizer = trained
    r = shape_by_size(model, tokenizer, n=600, seed=SEED)
    cells = {(name, kind): v[kind]["accuracy"] for name, v in r["bins"].items() for kind in ("outline", "no outline")}
    assert min(cells.values()) >= 0.8, cells


@pytest.mark.parametrize("factor", ["colour", "shape"])
def test_spatial_maps_localise(trained, factor):
    model, tokenizer = trained
    sub = world.sample(120, split="test", seed=SEED + 1, config=world_of(model))
    maps = object_maps(model, tokenizer, sub, factor)
    iou = map_iou(maps, sub.foreground).mean()
    # a map that ignores the image (every pixel above threshold) scores the foreground fraction
    trivial = sub.foreground.reshape(len(sub), -1).mean(1).mean()
    assert iou >= 0.35 and iou >= trivial + 0.15, (iou, trivial)


# Notebook 5's and 6's targets, measured directly with the helpers on fresh scenes.
PAPER_REPAIR_GAP = pytest.mark.xfail(strict=True, reason="the paper's protocol also mean-ablates every MLP, the "
                                     "embedding term and the early attention layers, which alone take world-v3's "
                                     "worst group from 62.0% to 55.6% here; with the chosen heads it ends at 67.2% "
                                     "(+5.2 points), where the chosen heads alone reach 76.4% (+14.4)")


@pytest.fixture(scope="module")
def repair(trained):
    """Group metrics before / after ablating the automatically chosen background heads, and
    the mean over random-head controls (notebook 5's procedure)."""
    from helpers.data.pools import load_pool
    from helpers.engine.text import encode_texts
    from helpers.methods.heads import head_roles, stack_heads
    from helpers.methods.spurious import GroupEvaluator, choose_heads, random_heads, rank_heads, repair_ablation
    from helpers.methods.textspan import textspan

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
    draws = [random_heads(len(chosen), layers, H, exclude=chosen, seed=s) for s in range(10)]
    randoms = [ev(heads) for heads in draws]
    # the paper's protocol: the chosen heads plus every term but the last 4 attention layers,
    # means on the reference's scale; random heads under the same protocol
    paper = {"chosen": ev(**repair_ablation(chosen, L, "paper")),
             "random": [ev(**repair_ablation(heads, L, "paper")) for heads in draws]}
    return ev(), ev(chosen), randoms, chosen, paper


def test_background_heads_are_found(repair):
    before, _, _, chosen, _ = repair
    assert chosen, "no head's TextSpan texts are mostly about the background"
    assert before.worst_group <= before.average - 0.10


def test_ablating_background_heads_beats_random_heads(repair):
    before, after, randoms, _, _ = repair
    gain = after.worst_group - before.worst_group
    assert gain >= 0.03, (before, after)
    assert after.average >= before.average - 0.03
    gain_random = sum(r.worst_group for r in randoms) / len(randoms) - before.worst_group
    assert gain_random <= 0.5 * gain, (gain_random, gain)


def test_ablating_background_heads_repairs_the_worst_group(repair):
    before, after, _, _, _ = repair
    assert after.worst_group - before.worst_group >= 0.10, (before, after)


@PAPER_REPAIR_GAP
def test_the_papers_repair_protocol_raises_the_worst_group_by_10_points(repair):
    """Issue 18's figure: the paper's protocol raises the worst group by >= 10 points at <= 3
    points of average accuracy, with random heads (same protocol) far behind."""
    before, _, _, _, paper = repair
    gain = paper["chosen"].worst_group - before.worst_group
    random_gain = sum(r.worst_group for r in paper["random"]) / len(paper["random"]) - before.worst_group
    assert gain >= 0.10 and paper["chosen"].average >= before.average - 0.03, (before, paper["chosen"])
    assert random_gain <= 0.5 * gain, (random_gain, gain)


@pytest.fixture(scope="module", params=["world:colour", "world-pairs:colour"])
def segmentation_table(trained, request):
    """Notebook 6's table on fresh scenes: one object per scene (target: the prediction), and
    two objects per scene (target: the labelled one)."""
    from helpers.data.segmentation_tasks import load_segmentation_task
    from helpers.engine.images import model_preprocess
    from helpers.methods.segmentation import evaluate_methods

    model, tokenizer = trained
    task = load_segmentation_task(request.param, model_preprocess(model), 200, seed=SEED, world_name=world_of(model))
    clf = zero_shot_classifier(model, tokenizer, task.prompts)
    results, _ = evaluate_methods(model, task, clf, ("decomposition", "raw_attention", "rollout"))
    return request.param, results


@pytest.mark.parametrize("baseline", ["rollout", "raw_attention"])
def test_decomposition_segments_better_than_attention_baselines(segmentation_table, baseline, request):
    task, r = segmentation_table
    assert r["decomposition"]["mIoU"] > r[baseline]["mIoU"], r
