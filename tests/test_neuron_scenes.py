"""The world as its own text-to-image model (helpers.data.world.compose) and notebook 7's world side
(helpers.data.neuron_scenes): words to factor values, scenes drawn from words, adversarial trials."""

import numpy as np
import pytest
import torch

from helpers.data import world
from helpers.data.neuron_scenes import CONDITIONS, adversarial_trials, concept_agreement, word_values
from helpers.data.world.compose import naming, plan_from_words, scenes_from_words, word_factors
from helpers.methods.second_order import NeuronDirections, SparseTexts


def test_word_factors_read_pool_tags_and_captions():
    assert word_factors("blades of grass") == {"background": "grass"}  # a tag the parser cannot read
    assert word_factors("a rhombus") == {"shape": "diamond"}
    assert word_factors("A Rhombus ") == {"shape": "diamond"}  # as the tokenizer sees it
    assert word_factors("a horse") == {}  # the pool's distractors name no factor
    assert word_factors("two red circles on a lake") == {"count": "two", "colour": "red", "shape": "circle",
                                                         "background": "water"}
    assert word_factors("red or blue") == {}  # two values of one factor: ambiguous
    assert word_factors("democracy") == {}
    with pytest.raises(TypeError):
        word_factors(3)
    # every tagged text of the pool names exactly its tag
    for text, prop, value in world.text_pool():
        assert word_factors(text) == ({} if prop == "other" else {prop: value}), text


def test_naming_finds_every_word_of_a_value():
    texts = [t for t, _, _ in world.text_pool()] + ["squares on sand", "a red square"]
    found = naming(texts, "shape", "square")
    tagged = [t for t, p, v in world.text_pool() if (p, v) == ("shape", "square")]
    assert found == tagged + ["squares on sand", "a red square"]
    assert naming(texts, "shape", 1) == found  # a value index works too
    with pytest.raises(ValueError):
        naming(texts, "shape", "blob")


def test_plan_keeps_the_class_and_says_why_a_word_is_not_drawn():
    plan = plan_from_words(["triangles", "something yellow", "a lake", "a horse", "painted red", "a big shape",
                            "two objects", "a circle", "a walker"], keep={"shape": "circle"})
    assert plan.overrides == {"shape": "circle", "colour": "yellow", "background": "water", "size": "large"}
    assert plan.drawn == (("something yellow", "colour", "yellow"), ("a lake", "background", "water"),
                          ("a big shape", "size", "large"))
    reasons = dict(plan.skipped)
    assert reasons["triangles"] == "would change the shape (kept: circle)"
    assert reasons["a horse"] == "names no factor of the world"
    assert "already yellow" in reasons["painted red"] and "cannot set the count" in reasons["two objects"]
    assert reasons["a circle"] == "names the kept shape circle" and "cannot set the family" in reasons["a walker"]
    assert "from the words: colour yellow" in plan.describe() and "kept: shape circle" in plan.describe()
    assert plan_from_words([]).overrides == {} and plan_from_words([], keep={"colour": 2}).overrides == {"colour": "blue"}
    with pytest.raises(ValueError, match="cannot keep"):
        plan_from_words([], keep={"count": "two"})
    with pytest.raises(TypeError):
        plan_from_words("a lake")


def test_scenes_from_words_draw_the_values_on_the_scenes_own_draws():
    words = ["something yellow", "a lake", "a striped object", "triangles"]
    scenes, plan = scenes_from_words(words, 6, keep={"shape": "circle"}, config="world-v3", seed=2, start=5)
    assert len(scenes) == 6 and scenes.indices.tolist() == list(range(5, 11))
    assert set(scenes.names("shape")) == {"circle"} and set(scenes.names("colour")) == {"yellow"}
    assert set(scenes.names("background")) == {"water"} and set(scenes.names("pattern")) == {"striped"}
    for caption in scenes.captions:  # regenerated to match: never another colour, shape or background
        named = world.parse_caption(caption)
        assert named.get("colour", {"yellow"}) == {"yellow"} and named.get("shape", {"circle"}) == {"circle"}
        assert named.get("background", {"water"}) == {"water"}, caption
    # the same draws as the plain scenes, only what the words set differs
    plain = world.World(2, "world-v3").sample(6, "test", start=5)
    assert np.array_equal(scenes.positions, plain.positions) and np.array_equal(scenes.factors["size"],
                                                                                plain.factors["size"])
    again, _ = scenes_from_words(plan, 6, config="world-v3", seed=2, start=5)
    assert np.array_equal(again.images, scenes.images)
    other, _ = scenes_from_words(["something green"], 6, keep={"shape": "circle"}, config="world-v3", seed=2, start=5)
    assert set(other.names("colour")) == {"green"} and np.array_equal(other.positions, scenes.positions)
    with pytest.raises(ValueError, match="keep belongs to the plan"):
        scenes_from_words(plan, 2, keep={"shape": "square"})


def test_word_values_and_concept_agreement():
    assert word_values(["something yellow", "a horse", None, "a lake"]) == [
        ("colour", world.COLOURS.index("yellow")), None, None, ("background", world.BACKGROUNDS.index("water"))]
    factors = {"colour": np.array([3, 0]), "background": np.array([0, 1]), "shape": np.array([0, 1])}
    concepts = [[("something yellow", 2.0), ("a lake", 1.0), ("a horse", 0.5), ("circles", 0.1)],
                [("something yellow", 1.0)]]
    # image 0: yellow and water hit, the horse misses (3 words); image 1: yellow misses
    assert concept_agreement(concepts, factors, n_words=3) == pytest.approx(2 / 4)
    assert concept_agreement(concepts, factors, n_words=3, scenes=[1, 0]) == pytest.approx(1 / 4)
    assert np.isnan(concept_agreement([[], []], factors))


def _toy_decomposition(words, seed=0):
    """Directions and sparse texts whose words are the given ones (random weights)."""
    g = torch.Generator().manual_seed(seed)
    K, d = 6, 5
    dirs = NeuronDirections(layer=torch.full((K,), 3), neuron=torch.arange(K),
                            vectors=torch.nn.functional.normalize(torch.randn(K, d, generator=g), dim=-1),
                            threshold=torch.ones(K), mean=torch.zeros(K, d), normalized=True)
    coef = torch.randn(K, len(words), generator=g, dtype=torch.float64)
    return dirs, SparseTexts(coef, list(words), dirs.labels())


def test_adversarial_trials_pair_the_draws_and_leave_out_the_target():
    words = ["a lake", "something yellow", "squares", "a square", "blades of grass", "a small object", "a horse",
             "something red", "snow", "stars"]
    dirs, texts = _toy_decomposition(words)
    classifier = torch.nn.functional.normalize(torch.randn(len(world.SHAPES), 5, generator=torch.Generator().manual_seed(1)),
                                               dim=-1)
    trials = adversarial_trials(dirs, texts, classifier, list(world.SHAPES), pairs=[("circle", "square"), ("star", "heart")],
                                n_scenes=3, n_neurons=4, n_words=5, seed=0, config="world-v3")
    assert len(trials) == 2 * len(CONDITIONS) * 3 and trials.images.shape[1:] == (64, 64, 3)
    for p, (a, b) in enumerate(trials.words):
        sel = trials.pair == p
        assert set(trials.source[sel]) == {world.SHAPES.index(a)} and set(trials.target[sel]) == {world.SHAPES.index(b)}
        lists = trials.words[(a, b)]
        assert lists["no words"] == [] and len(lists["random words"]) == len(lists["adversarial words"])
        for c in CONDITIONS[:2]:
            assert not naming(lists[c], "shape", b), (c, lists[c])  # the target is never named
            assert trials.plans[(a, b)][c].overrides["shape"] == a  # every scene shows A
        # the three conditions draw the same scenes
        drawn = [trials.scene[sel & (trials.condition == c)].tolist() for c in CONDITIONS]
        assert drawn == [[0, 1, 2]] * 3
    pred = trials.target.copy()
    pred[trials.condition == "random words"] = 0
    rates = trials.rates(pred)
    assert rates["adversarial words"] == 1.0 and rates["no words"] == 1.0
    assert rates["random words"] == pytest.approx(np.mean(trials.target[trials.condition == "random words"] == 0))
    comp = trials.compare(pred, seed=0)
    assert comp.n_clusters == 2 and comp.rate_a == 1.0 and comp.low <= comp.difference <= comp.high
    # circle -> square: a square is a walker, whose habitat is grass; star -> heart: a swimmer, water
    for c in CONDITIONS:
        n_bg, n_hab = trials.habitat_backgrounds(c)
        bgs = [trials.plans[p][c].overrides.get("background") for p in trials.plans]
        assert n_bg == sum(b is not None for b in bgs)
        assert n_hab == (bgs[0] == "grass") + (bgs[1] == "water")
    assert trials.habitat_backgrounds("no words") == (0, 0)
    sets, habitat = trials.habitat_pairs("adversarial words")
    assert sets.shape == habitat.shape == (2,) and not (habitat & ~sets).any()
    # the habitat shares of two word lists, paired over the class pairs
    d = trials.habitat_difference("adversarial words", "random words", seed=0)
    share = {c: (lambda s, h: h.sum() / s.sum() if s.sum() else float("nan"))(*trials.habitat_pairs(c))
             for c in CONDITIONS[:2]}
    assert d.n == 2 and "class pairs" in d.basis
    assert (np.isnan(d.a) and np.isnan(share["adversarial words"])) or d.a == pytest.approx(share["adversarial words"])
    assert (np.isnan(d.b) and np.isnan(share["random words"])) or d.b == pytest.approx(share["random words"])
    # and the rates' comparison in the course's terms: the same interval, the same verdict
    ev = comp.as_difference("class pairs")
    assert (ev.a, ev.b, ev.low, ev.high) == (comp.rate_a, comp.rate_b, comp.low, comp.high)
    assert (ev.side == 0) == comp.within_noise and ev.basis == "a paired bootstrap over 2 class pairs"
    with pytest.raises(ValueError):
        trials.fooled(pred[:-1])
    with pytest.raises(ValueError, match="conditions"):
        trials.compare(pred, "adversarial words", "fancy words")
    # every ordered pair, or a drawn number of them
    every = adversarial_trials(dirs, texts, classifier, list(world.SHAPES), n_scenes=1, n_neurons=4, n_words=3)
    assert len(every.words) == 8 * 7
    few = adversarial_trials(dirs, texts, classifier, list(world.SHAPES), pairs=3, n_scenes=1, n_neurons=4, n_words=3)
    assert len(few.words) == 3 and set(few.words) <= set(every.words)
    with pytest.raises(ValueError, match="values of 'shape'"):
        adversarial_trials(dirs, texts, classifier, ["a", "b"], n_scenes=1)
    with pytest.raises(ValueError, match="two different classes"):
        adversarial_trials(dirs, texts, classifier, list(world.SHAPES), pairs=[("circle", "circle")], n_scenes=1)
