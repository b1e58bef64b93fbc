"""Scenes drawn from words: the world as its own text-to-image model.

The second-order paper turns the words of a few neurons into captions and renders them with a
text-to-image model. The synthetic world needs neither: a word names a factor value (``"blades
of grass"`` the background *grass*, ``"a rhombus"`` the shape *diamond*), and the world's own
renderer draws any scene with given factor values (:meth:`World.scene` with ``overrides``).

* :func:`word_factors` -- the factor values one text names: the tag of a text of the world's
  tagged pool (:func:`helpers.data.world.text_pool`), else what :func:`parse_caption` reads in it;
* :func:`naming` -- the texts of a list that name a given value (to leave them out);
* :func:`plan_from_words` -- the factor values a list of words sets, in order, with ``keep``
  fixed (the class a scene must keep showing), and for every word that sets nothing, why;
* :func:`scenes_from_words` -- ``n`` scenes drawn with those values (every other draw the
  scene's own: placement, jitter, texture, clutter).

Example::

    plan = plan_from_words(["triangles", "something yellow", "a lake"], keep={"shape": "circle"})
    plan.overrides                # {'shape': 'circle', 'colour': 'yellow', 'background': 'water'}
    plan.skipped                  # (('triangles', 'would change the shape (kept: circle)'),)
    scenes, plan = scenes_from_words(["something yellow", "a lake"], 16, keep={"shape": "circle"})
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .captions import parse_caption
from .config import FACTORS, WorldConfig, check_factor, check_nonneg_int, check_split
from .dataset import Scenes, World
from .pool import text_pool
from .render import OVERRIDABLE, value_index

__all__ = ["WordPlan", "word_factors", "naming", "check_value", "plan_from_words", "scenes_from_words"]


@functools.lru_cache(maxsize=1)
def _pool_tags() -> dict[str, tuple[str, str]]:
    """Lower-cased text of the world's pool -> (property, value)."""
    return {t.strip().lower(): (p, v) for t, p, v in text_pool()}


def word_factors(text: str) -> dict[str, str]:
    """Factor name -> value name that ``text`` names.

    A text of the world's tagged pool names exactly its tag (none for the pool's ``"other"``
    texts: "a horse" is no factor of the world); any other text names what the world's caption
    parser reads in it, leaving out a factor it names with two values ("red or blue")."""
    if not isinstance(text, str):
        raise TypeError(f"a word must be a str, got {type(text).__name__}")
    tag = _pool_tags().get(text.strip().lower())
    if tag is not None:
        prop, value = tag
        return {prop: value} if prop != "other" else {}
    return {f: next(iter(vs)) for f, vs in parse_caption(text).items() if f != "number" and len(vs) == 1}


def naming(texts: Sequence[str], factor: str, value: str) -> list[str]:
    """The entries of ``texts`` that name ``value`` of ``factor`` (:func:`word_factors`), e.g.
    the words to leave out of adversarial words whose scenes must not show the target class."""
    factor = check_factor(factor)
    value = check_value(factor, value)
    return [t for t in texts if word_factors(t).get(factor) == value]


def check_value(factor: str, value: int | str) -> str:
    """The value name of ``value`` (a name or an index) of ``factor``."""
    return FACTORS[factor][value_index(factor, value)]


@dataclass(frozen=True)
class WordPlan:
    """What a list of words sets in a scene (:func:`plan_from_words`).

    Attributes:
        overrides: factor -> value name, what the scenes are drawn with (``keep`` included).
        drawn: ``(word, factor, value)`` for every word that set a factor, in the words' order.
        skipped: ``(word, reason)`` for every word that set nothing.
        keep: the factors held fixed.
    """

    overrides: dict[str, str]
    drawn: tuple[tuple[str, str, str], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    keep: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: the values the words set (with the word that set each)."""
        set_ = [f"{f} {v} ({w!r})" for w, f, v in self.drawn]
        kept = [f"{f} {v}" for f, v in self.keep.items()]
        parts = []
        if kept:
            parts.append("kept: " + ", ".join(kept))
        parts.append("from the words: " + (", ".join(set_) if set_ else "nothing"))
        return "; ".join(parts)


def plan_from_words(words: Sequence[str], keep: Mapping[str, int | str] | None = None) -> WordPlan:
    """The factor values ``words`` set, first word first.

    Each word sets the factors it names (:func:`word_factors`) that the renderer can set
    (:data:`~helpers.data.world.render.OVERRIDABLE`) and that no earlier word set. ``keep``
    (factor -> value) holds factors fixed: a word naming another value of a kept factor sets
    nothing (a scene of class A must keep showing A). A word that sets nothing is listed in
    :attr:`WordPlan.skipped` with the reason.
    """
    if isinstance(words, str):
        raise TypeError("words must be a sequence of texts, not one string")
    kept = {}
    for f, v in (keep or {}).items():
        f = check_factor(f)
        if f not in OVERRIDABLE:
            raise ValueError(f"cannot keep {f!r}: the renderer sets only {', '.join(OVERRIDABLE)}")
        kept[f] = check_value(f, v)
    overrides = dict(kept)
    set_by: dict[str, str] = {}
    drawn: list[tuple[str, str, str]] = []
    skipped: list[tuple[str, str]] = []
    for word in words:
        named = word_factors(word)
        if not named:
            skipped.append((word, "names no factor of the world"))
            continue
        reasons, hit = [], False
        for f, v in named.items():
            if f in kept:
                reasons.append(f"names the kept {f} {v}" if v == kept[f] else f"would change the {f} (kept: {kept[f]})")
            elif f not in OVERRIDABLE:
                reasons.append(f"the renderer cannot set the {f} ({v})")
            elif f in set_by:
                reasons.append(f"the {f} is already {overrides[f]} (from {set_by[f]!r})")
            else:
                overrides[f] = v
                set_by[f] = word
                drawn.append((word, f, v))
                hit = True
        if not hit:
            skipped.append((word, "; ".join(reasons)))
    return WordPlan(overrides, tuple(drawn), tuple(skipped), kept)


def scenes_from_words(words: Sequence[str] | WordPlan, n: int, *, keep: Mapping[str, int | str] | None = None,
                      split: str = "test", seed: int = 0, start: int = 0,
                      config: WorldConfig | str | None = None) -> tuple[Scenes, WordPlan]:
    """``n`` scenes drawn with the values ``words`` set (:func:`plan_from_words`; or a plan).

    Scene ``i`` is scene ``start + i`` of ``split`` with those values: its placement, colour
    jitter, texture and clutter are its own draws, so scenes from two word lists with the same
    ``start`` differ only in what the words set (a paired comparison). Captions are regenerated
    to match. Returns the scenes and the plan.
    """
    plan = words if isinstance(words, WordPlan) else plan_from_words(words, keep)
    if isinstance(words, WordPlan) and keep:
        raise ValueError("keep belongs to the plan: pass it to plan_from_words")
    n = check_nonneg_int(n, "n")
    start = check_nonneg_int(start, "start")
    check_split(split)
    world = World(seed, config)
    scenes = [world.scene(start + i, split, overrides=plan.overrides) for i in range(n)]
    return Scenes.from_scenes(scenes, split, world.seed, world.config.image_size), plan
