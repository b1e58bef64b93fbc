"""Words about scenes: captions, their parser, and the zero-shot prompts of every factor.

:func:`make_caption` describes a :class:`~helpers.data.world.render.Layout` in one of
:data:`CAPTION_FORMS`, naming each factor with the probability set in the
:class:`~helpers.data.world.config.WorldConfig` and within the token budget;
:func:`parse_caption` reads the factor values back from any text of this world;
:func:`class_prompts` gives the zero-shot prompts of a factor.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from .config import (
    BACKGROUNDS,
    COLOURS,
    COUNTS,
    FACTORS,
    FAMILIES,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZES,
    WorldConfig,
    check_factor,
)
from .render import Layout

# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------

SHAPE_PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
    "diamond": "diamonds",
    "heart": "hearts",
    "hexagon": "hexagons",
}
_GENERIC_NOUNS = ("object", "shape", "thing", "item")
FAMILY_PLURALS = {"walker": "walkers", "swimmer": "swimmers"}
PLURALS = {**SHAPE_PLURALS, **FAMILY_PLURALS, **{g: g + "s" for g in _GENERIC_NOUNS}}

_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_PATTERN_ADJS = {"solid": ("solid", "plain"), "striped": ("striped",), "dotted": ("dotted", "spotted")}
_PATTERN_WITH = {"striped": "with stripes", "dotted": "with dots"}
_COUNT_WORDS = {1: ("one", "a single"), 2: ("two",), 3: ("three",)}

_BG_PHRASES = {
    "water": ("on water", "on the water", "over water", "on a lake", "on the sea", "in the water"),
    "grass": ("on grass", "on the grass", "over grass", "on a lawn", "in a meadow"),
    "sand": ("on sand", "on the sand", "on a beach", "in the desert", "on sandy ground"),
    "brick": ("on a brick wall", "against a brick wall", "on bricks", "in front of bricks"),
    "sky": ("in the sky", "against the sky", "among clouds", "in a cloudy sky"),
    "snow": ("on snow", "in the snow", "over snow", "on snowy ground"),
}
_BG_NOUNS = {
    "water": ("water", "a lake", "the sea"),
    "grass": ("grass", "a lawn", "a meadow"),
    "sand": ("sand", "a beach", "the desert"),
    "brick": ("a brick wall", "bricks"),
    "sky": ("the sky", "a cloudy sky"),
    "snow": ("snow", "snowy ground"),
}


def _position_phrases(pos: str) -> tuple[str, ...]:
    if pos == "center":
        return ("in the center", "in the middle", "at the center")
    if pos in ("top", "bottom"):
        return (f"at the {pos}", f"at the {pos} center", f"in the {pos} middle")
    if pos in ("left", "right"):
        return (f"on the {pos}", f"at the {pos}", f"on the {pos} side")
    return (f"in the {pos}", f"at the {pos}", f"in the {pos} corner")


POSITION_PHRASES = {p: _position_phrases(p) for p in POSITIONS}

# Sentence forms.  Fields: np (noun phrase), tail (position and background
# phrases, each with a leading space), be (is/are), pos, bg, bgnp, bgword,
# noun (bare noun with count word), adjs (predicative adjectives), fam.
_GENERAL_FORMS = (
    "{np}{tail}",
    "a photo of {np}{tail}",
    "a picture of {np}{tail}",
    "an image of {np}{tail}",
    "a drawing of {np}{tail}",
    "an illustration of {np}{tail}",
    "a render of {np}{tail}",
    "there {be} {np}{tail}",
    "here {be} {np}{tail}",
    "you can see {np}{tail}",
    "this image shows {np}{tail}",
    "look at {np}{tail}",
    "a photo with {np}{tail}",
    "a scene showing {np}{tail}",
    "a snapshot of {np}{tail}",
)
_TAIL_FORMS = ("{np} drawn{tail}",)
_BG_FORMS = ("{bgnp} with {np}{pos}", "a {bgword} scene with {np}{pos}")
_POS_FORMS = ("{np} {be}{pos}{bg}", "{posbare}, {np}{bg}")
_ATTR_FORMS = ("the {noun} {be} {adjs}{tail}",)
_SOMETHING_FORMS = ("something {adjs}{tail}",)
_FAMILY_FORMS = ("the {fam} {be} {np}{tail}", "{famnp}: {np}{tail}")
#: Every sentence form used by the caption generator.
CAPTION_FORMS: tuple[str, ...] = (
    _GENERAL_FORMS + _TAIL_FORMS + _BG_FORMS + _POS_FORMS + _ATTR_FORMS + _SOMETHING_FORMS + _FAMILY_FORMS
)

# BPE token counts of the caption words that are longer than one token in
# CLIP's tokenizer (every other word and punctuation mark is a single token).
_MULTI_TOKEN_WORDS = {"hexagons": 3, "hexagon": 2, "triangles": 2}
_TOKEN_RE = re.compile(r"[a-z]+|[^\sa-z]")


def caption_token_count(text: str) -> int:
    """Length of ``text`` in CLIP BPE tokens including start and end tokens.

    Exact for the vocabulary of this module (checked in the tests against
    ``open_clip``'s tokenizer); an estimate for arbitrary text.
    """
    return 2 + sum(_MULTI_TOKEN_WORDS.get(w, 1) for w in _TOKEN_RE.findall(text.lower()))


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[min(int(rng.random() * len(options)), len(options) - 1)]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join_adjs(adjs: Sequence[str]) -> str:
    if len(adjs) <= 1:
        return "".join(adjs)
    return ", ".join(adjs[:-1]) + " and " + adjs[-1]


_CAPTION_FACTORS = ("shape", "colour", "background", "position", "size", "count", "family", "pattern")
_DROP_ORDER = ("pattern", "size", "count", "family", "background", "colour", "shape", "position")


def _compose(lay: Layout, inc: dict[str, bool], rng: random.Random) -> str:
    plural = lay.count > 1
    fam_word = FAMILIES[lay.family]
    fam_mode = None
    if inc["family"]:
        fam_mode = "noun" if rng.random() < 0.6 else "along"
    if fam_mode == "noun":
        noun_s = fam_word
    elif inc["shape"]:
        noun_s = SHAPES[lay.shape]
    else:
        noun_s = _pick(rng, _GENERIC_NOUNS)
    noun = PLURALS[noun_s] if plural else noun_s

    adjs: list[str] = []
    after = ""
    if inc["size"]:
        adjs.append(_pick(rng, _SIZE_WORDS[SIZES[lay.size]]))
    if inc["pattern"]:
        pname = PATTERNS[lay.pattern]
        if pname in _PATTERN_WITH and rng.random() < 0.3:
            after = " " + _PATTERN_WITH[pname]
        else:
            adjs.append(_pick(rng, _PATTERN_ADJS[pname]))
    if inc["colour"]:
        adjs.append(COLOURS[lay.colour])

    core = " ".join(adjs + [noun]) + after
    count_word = _pick(rng, _COUNT_WORDS[lay.count]) if inc["count"] else None
    if count_word is not None:
        np_ = f"{count_word} {core}"
    elif plural:
        np_ = core if rng.random() < 0.6 else f"some {core}"
    else:
        np_ = f"{article(core)} {core}"

    bg_name = BACKGROUNDS[lay.background]
    bg = " " + _pick(rng, _BG_PHRASES[bg_name]) if inc["background"] else ""
    pos = ""
    if inc["position"]:
        phrase = _pick(rng, POSITION_PHRASES[POSITIONS[lay.cells[0]]])
        pos = f", one {phrase}" if plural else f" {phrase}"
    tail = bg + pos if (plural or rng.random() < 0.5) else pos + bg

    if fam_mode == "along":
        forms: Sequence[str] = _FAMILY_FORMS
    else:
        forms = list(_GENERAL_FORMS)
        if tail:
            forms += _TAIL_FORMS
        if bg:
            forms += _BG_FORMS
        if pos and not plural:
            forms += _POS_FORMS
        if adjs:
            forms += _ATTR_FORMS
            if not plural and count_word is None and noun_s in _GENERIC_NOUNS:
                forms += _SOMETHING_FORMS
    form = _pick(rng, forms)
    the_noun = noun if (count_word is None or not plural) else f"{count_word} {noun}"
    return form.format(
        np=np_,
        tail=tail,
        be="are" if plural else "is",
        pos=pos,
        bg=bg,
        posbare=pos.strip(),
        bgnp=_pick(rng, _BG_NOUNS[bg_name]) if bg else "",
        bgword=bg_name,
        noun=the_noun,
        adjs=_join_adjs(adjs),
        fam=FAMILY_PLURALS[fam_word] if plural else fam_word,
        famnp=FAMILY_PLURALS[fam_word] if plural else f"a {fam_word}",
    )


def make_caption(lay: Layout, rng: random.Random, cfg: WorldConfig) -> str:
    probs = {
        "shape": cfg.p_shape,
        "colour": cfg.p_colour,
        "background": cfg.p_background,
        "position": cfg.p_position,
        "size": cfg.p_size,
        "count": cfg.p_count,
        "family": cfg.p_family,
        "pattern": cfg.p_pattern,
    }
    draws = [rng.random() for _ in _CAPTION_FACTORS]
    inc = {k: bool(d < probs[k]) for k, d in zip(_CAPTION_FACTORS, draws)}
    kept: tuple[str, ...] = ()
    # world-v3: a habitat scene's caption names the family with its habitat at a stated rate,
    # the way web captions say "a duck on a lake" (no draw at all in world-v2)
    if cfg.habitat_caption_p > 0 and lay.habitat and rng.random() < cfg.habitat_caption_p:
        inc["family"] = inc["background"] = True
        kept = ("family", "background")
    if not any(inc[k] for k in ("shape", "colour", "background", "position", "family")):
        main = ("shape", "colour", "background", "position")
        inc[_pick(rng, main)] = True
    limit = cfg.max_caption_tokens
    for _ in range(len(_DROP_ORDER)):
        text = _compose(lay, inc, rng)
        if caption_token_count(text) <= limit:
            return text
        for k in _DROP_ORDER:  # drop the least important factor still mentioned
            if inc[k] and k not in kept and sum(inc.values()) > 1:
                inc[k] = False
                break
    return f"a {COLOURS[lay.colour]} {SHAPES[lay.shape]}"


# ---------------------------------------------------------------------------
# Caption parsing (used by the tests, handy for checking zero-shot prompts)
# ---------------------------------------------------------------------------

_WORD_VALUES: dict[str, tuple[str, str]] = {}
for _v in SHAPES:
    _WORD_VALUES[_v] = ("shape", _v)
    _WORD_VALUES[SHAPE_PLURALS[_v]] = ("shape", _v)
for _v in COLOURS:
    _WORD_VALUES[_v] = ("colour", _v)
for _v, _ws in _SIZE_WORDS.items():
    for _w in _ws:
        _WORD_VALUES[_w] = ("size", _v)
for _v, _ws in {
    "solid": ("solid", "plain"),
    "striped": ("striped", "stripes", "stripe"),
    "dotted": ("dotted", "spotted", "dots", "dot", "spots"),
}.items():
    for _w in _ws:
        _WORD_VALUES[_w] = ("pattern", _v)
for _v in FAMILIES:
    _WORD_VALUES[_v] = ("family", _v)
    _WORD_VALUES[FAMILY_PLURALS[_v]] = ("family", _v)
for _v, _ws in {
    "water": ("water", "lake", "sea"),
    "grass": ("grass", "lawn", "meadow"),
    "sand": ("sand", "sandy", "beach", "desert"),
    "brick": ("brick", "bricks", "wall"),
    "sky": ("sky", "cloudy", "clouds"),
    "snow": ("snow", "snowy"),
}.items():
    for _w in _ws:
        _WORD_VALUES[_w] = ("background", _v)
for _w, _v in (("single", "one"), ("two", "two"), ("three", "three")):
    _WORD_VALUES[_w] = ("count", _v)

_SINGULAR_NOUNS = frozenset(SHAPES + FAMILIES + _GENERIC_NOUNS)
_PLURAL_NOUNS = frozenset(PLURALS.values())
_POSITION_RE = re.compile(r"\b(top|bottom)(?:\s+(left|right|center|middle))?\b|\b(left|right|center|middle)\b")


def parse_caption(text: str) -> dict[str, set[str]]:
    """Factor values named in a caption of this world.

    Returns factor name -> set of value names mentioned, for the factors that
    are mentioned.  The extra key ``"number"`` holds ``"singular"`` and/or
    ``"plural"`` according to the nouns used.  ``"one"`` directly followed by
    a preposition ("two stars, one in the top left") is not read as a count.
    """
    low = text.lower()
    words = re.findall(r"[a-z]+", low)
    found: dict[str, set[str]] = {}
    for i, w in enumerate(words):
        if w in _WORD_VALUES:
            f, v = _WORD_VALUES[w]
            found.setdefault(f, set()).add(v)
        elif w == "one" and (i + 1 == len(words) or words[i + 1] not in ("in", "at", "on")):
            found.setdefault("count", set()).add("one")
        if w in _SINGULAR_NOUNS:
            found.setdefault("number", set()).add("singular")
        elif w in _PLURAL_NOUNS:
            found.setdefault("number", set()).add("plural")
    for m in _POSITION_RE.finditer(low):
        row, col, alone = m.groups()
        if row is not None:
            name = row if col in (None, "center", "middle") else f"{row} {col}"
        else:
            name = "center" if alone in ("center", "middle") else alone
        found.setdefault("position", set()).add(name)
    return found



# ---------------------------------------------------------------------------
# Zero-shot prompts
# ---------------------------------------------------------------------------

_BG_PROMPT_PHRASES = {
    "water": ("on water", "on a lake"),
    "grass": ("on grass", "on a lawn"),
    "sand": ("on sand", "on a beach"),
    "brick": ("on a brick wall", "in front of bricks"),
    "sky": ("in the sky", "among clouds"),
    "snow": ("on snow", "on snowy ground"),
}


def class_prompts(factor: str) -> dict[str, list[str]]:
    """Zero-shot prompts for every value of ``factor`` (value name -> prompts).

    All prompts of a factor have the same number of templates, in the same
    order, so their embeddings can be averaged per template index.
    """
    factor = check_factor(factor)
    out: dict[str, list[str]] = {}
    for v in FACTORS[factor]:
        if factor == "shape":
            p = [f"a photo of a {v}", f"a {v}", f"a drawing of a {v}", f"a {v} shape", f"there is a {v}"]
        elif factor == "colour":
            p = [f"a photo of a {v} object", f"something {v}", f"a {v} shape", f"a {v} thing", f"{article(v)} {v} object"]
        elif factor == "background":
            a, b = _BG_PROMPT_PHRASES[v]
            p = [f"a photo of something {a}", f"an object {a}", f"a {v} scene", f"a shape {b}", f"something {b}"]
        elif factor == "position":
            a, b, c = POSITION_PHRASES[v]
            p = [f"a photo of an object {a}", f"an object {a}", f"a shape {b}", f"something {c}", f"a thing {a}"]
        elif factor == "size":
            w = _SIZE_WORDS[v]
            p = [f"a photo of a {v} object", f"a {v} shape", f"something {w[1]}", f"a {w[-1]} thing", f"a {v} object"]
        elif factor == "count":
            k = COUNTS.index(v) + 1
            if k == 1:
                p = ["a photo of one object", "one shape", "a single thing", "a single object", "one object"]
            else:
                p = [f"a photo of {v} objects", f"{v} shapes", f"{v} things", f"{v} identical objects", f"{v} objects"]
        elif factor == "pattern":
            if v == "solid":
                p = ["a photo of a solid object", "a plain shape", "something plain", "a solid thing", "a solid object"]
            elif v == "striped":
                p = ["a photo of a striped object", "a striped shape", "something striped", "a shape with stripes", "a striped object"]
            else:
                p = ["a photo of a dotted object", "a dotted shape", "something spotted", "a shape with dots", "a dotted object"]
        else:  # family
            pl = FAMILY_PLURALS[v]
            p = [f"a photo of a {v}", f"a {v}", f"the {v}", f"a picture of a {v}", f"{pl}"]
        out[v] = p
    return out


def value_named(text: str, factor: str) -> int | None:
    """The index of the one value of ``factor`` that ``text`` names (``"a star"``, ``"stars"`` ->
    ``SHAPES.index("star")``), or ``None`` when it names none or several (``"a round disc"``)."""
    factor = check_factor(factor)
    words = re.findall(r"[a-z]+", text.lower())
    hits = {i for i, v in enumerate(FACTORS[factor]) for w in words if w in (v, v + "s", v + "es")}
    return hits.pop() if len(hits) == 1 else None
