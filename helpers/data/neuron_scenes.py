"""The world's side of notebook 7 (second-order effects of neurons): checking neurons' words
against the scenes' true factors, and adversarial scenes drawn from words.

The methods (:mod:`helpers.methods.second_order`) find words for neurons and rank neurons
between classes; they know nothing of the world. Here the world's ground truth and renderer
come in:

* :func:`word_values` -- the factor value each word names, as ``(factor, value index)``, to
  look for among a neuron's top scenes (:func:`helpers.methods.second_order.top_image_lift`);
* :func:`concept_agreement` -- how often an image's concept words name a value its scene has;
* :func:`adversarial_trials` -- for pairs of classes (A, B) of a factor, scenes of class A drawn
  with the words of the neurons that push A toward B (the words naming B left out), with two
  controls on the same scene draws: random words from the same vocabulary, and no words.
  :meth:`AdversarialTrials.compare` compares how often each set is taken for B.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from . import world
from .world.compose import WordPlan, naming, plan_from_words, scenes_from_words, word_factors

__all__ = ["word_values", "concept_agreement", "AdversarialTrials", "adversarial_trials", "CONDITIONS"]

CONDITIONS: tuple[str, ...] = ("adversarial words", "random words", "no words")
"""The word lists each adversarial trial draws its scenes with (:func:`adversarial_trials`)."""


def word_values(words: Sequence[str | None]) -> list[tuple[str, int] | None]:
    """``(factor, value index)`` of the factor each word names (the first, for a text naming
    several), or ``None`` for a word that names none (or a ``None`` entry)."""
    out: list[tuple[str, int] | None] = []
    for w in words:
        named = word_factors(w) if w is not None else {}
        if not named:
            out.append(None)
            continue
        f, v = next(iter(named.items()))
        out.append((f, world.FACTORS[f].index(v)))
    return out


def concept_agreement(concepts: Sequence[Sequence[tuple[str, float]]], factors: Mapping[str, Any], *,
                      n_words: int = 3, scenes: Sequence[int] | None = None) -> float:
    """The share of the images' first ``n_words`` concept words that name a value their scene has.

    ``concepts[i]`` are image ``i``'s words (:func:`helpers.methods.second_order.image_concepts`);
    ``factors`` the scenes' factor value indices (``Scenes.factors``). ``scenes[i]`` (default
    ``i``) is the scene image ``i``'s words are checked against: a permutation gives the
    control (the same words, another scene's factors). Words that name no factor count as
    misses; NaN when there are no words."""
    hits, total = 0, 0
    for i, words in enumerate(concepts):
        j = i if scenes is None else int(scenes[i])
        for w, _ in list(words)[:n_words]:
            total += 1
            v = word_values([w])[0]
            hits += v is not None and int(np.asarray(factors[v[0]])[j]) == v[1]
    return hits / total if total else float("nan")


@dataclass
class AdversarialTrials:
    """Scenes of class A drawn with words, for pairs of classes (A, B) (:func:`adversarial_trials`).

    Attributes:
        images: ``uint8`` ``[M, H, W, 3]``, every scene of every pair and condition.
        condition: ``[M]`` one of :data:`CONDITIONS` per scene.
        source, target: ``[M]`` class indices of A (what the scene shows) and B (the target).
        pair: ``[M]`` the pair's number.
        scene: ``[M]`` the index of each scene's draw in the world's split: a pair's conditions draw
            the same scenes (only what the words set differs).
        words: per pair ``(A, B)`` names, per condition, the word list the scenes were drawn with.
        plans: the same, the :class:`~helpers.data.world.compose.WordPlan` (what each list set).
        classes: the class names; factor: the factor they are values of.
    """

    images: np.ndarray
    condition: np.ndarray
    source: np.ndarray
    target: np.ndarray
    pair: np.ndarray
    scene: np.ndarray
    words: dict[tuple[str, str], dict[str, list[str]]] = field(repr=False)
    plans: dict[tuple[str, str], dict[str, WordPlan]] = field(repr=False)
    classes: list[str] = field(default_factory=list)
    factor: str = "shape"

    def __len__(self) -> int:
        return len(self.condition)

    def fooled(self, predictions: Any) -> np.ndarray:
        """``[M]`` bool: whether each scene was taken for its target B."""
        pred = np.asarray(predictions).reshape(-1)
        if len(pred) != len(self):
            raise ValueError(f"{len(pred)} predictions for {len(self)} scenes")
        return pred == self.target

    def rates(self, predictions: Any) -> dict[str, float]:
        """The share of each condition's scenes taken for their target."""
        hit = self.fooled(predictions)
        return {c: float(hit[self.condition == c].mean()) for c in CONDITIONS if (self.condition == c).any()}

    def habitat_pairs(self, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """For shape classes, per pair ``(A, B)``: whether the word list of ``condition`` set a
        background, and whether that background is the habitat of the target shape's family
        (grass for walkers, water for swimmers, the link the world plants in its training
        captions); two ``[P]`` bool arrays in the pairs' order."""
        if self.factor != "shape":
            raise ValueError("families and habitats belong to shapes; these classes are values of " + repr(self.factor))
        if condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
        sets, habitat = [], []
        for (_, b), plans in self.plans.items():
            bg = plans[condition].overrides.get("background")
            family = world.FAMILIES[world.SHAPE_FAMILY[world.SHAPES.index(b)]]
            sets.append(bg is not None)
            habitat.append(bg is not None and bg == world.FAMILY_HABITAT[family])
        return np.array(sets, dtype=bool), np.array(habitat, dtype=bool)

    def habitat_backgrounds(self, condition: str) -> tuple[int, int]:
        """For shape classes: ``(pairs whose word list set a background, of which the background
        is the habitat of the target shape's family)`` (:meth:`habitat_pairs`, counted)."""
        sets, habitat = self.habitat_pairs(condition)
        return int(sets.sum()), int(habitat.sum())

    def habitat_difference(self, a: str = "adversarial words", b: str = "random words", *, n_boot: int = 1000,
                           seed: int = 0) -> Any:
        """How much more often the word lists of ``a`` than those of ``b`` set the target family's
        habitat, among the pairs whose list sets a background: the shares ``habitat / set`` of
        both and a paired bootstrap over the class pairs (both lists of a pair resampled
        together), a :class:`helpers.methods.stats.Difference`."""
        from ..methods.stats import paired_bootstrap

        def share(parts: Any) -> float:
            sets, habitat = parts
            n = int(np.sum(sets))
            return float(np.sum(habitat)) / n if n else float("nan")

        return paired_bootstrap(self.habitat_pairs(a), self.habitat_pairs(b), share, n_boot=n_boot,
                                seed=seed, items="class pairs")

    def compare(self, predictions: Any, a: str = "adversarial words", b: str = "random words", **kw: Any) -> Any:
        """:func:`helpers.methods.second_order.compare_rates` of conditions ``a`` and ``b`` on
        the same scene draws, resampling whole pairs (scenes of a pair share their words)."""
        from ..methods.second_order import compare_rates

        hit = self.fooled(predictions)
        ia, ib = self.condition == a, self.condition == b
        if not ia.any() or not ib.any():
            raise ValueError(f"conditions must be two of {CONDITIONS}, got {a!r} and {b!r}")
        return compare_rates(hit[ia], hit[ib], clusters=self.pair[ia], **kw)


def _pairs(classes: Sequence[str], pairs: Any, seed: int) -> list[tuple[str, str]]:
    every = [(a, b) for a, b in itertools.permutations(classes, 2)]
    if pairs is None or (isinstance(pairs, (int, np.integer)) and not isinstance(pairs, bool) and pairs == 0):
        return every
    if isinstance(pairs, (int, np.integer)) and not isinstance(pairs, bool):
        if pairs < 0:
            raise ValueError(f"pairs must be >= 0 (0: every ordered pair), got {pairs}")
        order = np.random.default_rng(seed).permutation(len(every))[:int(pairs)]
        return [every[i] for i in sorted(order.tolist())]
    out = [(str(a), str(b)) for a, b in pairs]
    for a, b in out:
        if a not in classes or b not in classes or a == b:
            raise ValueError(f"a pair is two different classes of {list(classes)}, got {(a, b)}")
    return out


def adversarial_trials(directions: Any, texts: Any, classifier: Any, classes: Sequence[str], *, factor: str = "shape",
                       pairs: Any = None, n_scenes: int = 8, n_neurons: int = 50, n_words: int = 10, seed: int = 0,
                       split: str = "test", start: int = 0, config: Any = None) -> AdversarialTrials:
    """Scenes of class A drawn with the words that push A toward B, and their controls.

    For each pair (A, B) of ``classes`` (values of ``factor``; ``pairs``: ``None`` or 0 for every
    ordered pair, a number for that many drawn with ``seed``, or a list of name pairs):

    1. the adversarial words (:func:`helpers.methods.second_order.adversarial_words` over the
       rows of ``directions`` and ``texts``, ``classifier[A]`` to ``classifier[B]``), leaving out
       every word of the vocabulary that names B, as the paper leaves out the target class;
    2. as many random words of the same vocabulary (the words naming B left out too);
    3. no words;

    each drawn into the same ``n_scenes`` scene draws of class A (scenes ``start ...`` of
    ``split`` of the world ``config``; :func:`~helpers.data.world.compose.scenes_from_words`
    with ``keep={factor: A}``).
    """
    from ..methods.second_order import adversarial_words

    factor = world.check_factor(factor)
    classes = list(classes)
    if list(world.FACTORS[factor]) != classes:
        raise ValueError(f"classes must be the values of {factor!r} in order, {list(world.FACTORS[factor])}")
    if len(classifier) != len(classes):
        raise ValueError(f"the classifier has {len(classifier)} rows for {len(classes)} classes")
    vocab = list(texts.words)
    images, cond, src, tgt, pid, idx = [], [], [], [], [], []
    words: dict[tuple[str, str], dict[str, list[str]]] = {}
    plans: dict[tuple[str, str], dict[str, WordPlan]] = {}
    for p, (a, b) in enumerate(_pairs(classes, pairs, seed)):
        ia, ib = classes.index(a), classes.index(b)
        drop = set(naming(vocab, factor, b))
        adv = [w for w, _ in adversarial_words(directions, texts, classifier[ia], classifier[ib], n_neurons=n_neurons,
                                               n_words=n_words, exclude=drop)]
        pool = [w for w in vocab if w not in drop]
        rng = np.random.default_rng([seed, p])
        rnd = [pool[i] for i in rng.choice(len(pool), size=min(len(adv), len(pool)), replace=False)]
        words[(a, b)], plans[(a, b)] = {}, {}
        for c, wl in zip(CONDITIONS, (adv, rnd, [])):
            scenes, plan = scenes_from_words(plan_from_words(wl, keep={factor: a}), n_scenes, split=split, seed=seed,
                                             start=start, config=config)
            words[(a, b)][c], plans[(a, b)][c] = wl, plan
            images.append(scenes.images)
            cond += [c] * n_scenes
            src += [ia] * n_scenes
            tgt += [ib] * n_scenes
            pid += [p] * n_scenes
            idx += scenes.indices.tolist()
    if not images:
        raise ValueError("no pairs of classes")
    return AdversarialTrials(np.concatenate(images), np.array(cond), np.array(src), np.array(tgt), np.array(pid),
                             np.array(idx), words, plans, classes, factor)
