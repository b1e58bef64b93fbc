"""Text pools for TextSpan: loading, writing and regenerating every pool, and the course's
general pool of image descriptions.

TextSpan (paper, section 4.1) explains an attention head by choosing, from a *pool* of texts,
a few whose embeddings span the head's output. This module gives every pool the same shape,
a :class:`Pool` (parallel lists of texts, property tags and values), and loads them in one
call::

    pool = load_pool("general")          # 3,520 tagged descriptions shipped with the course
    pool = load_pool("common_words")     # 3,498 common English words (the paper's baseline)
    pool = load_pool("world")            # the synthetic world's tagged pool
    pool = load_pool("reference_general")      # the paper's own descriptions (fetched once, untagged)
    pool = load_pool("reference_common_words") # the paper's own common words (fetched once)
    pool = load_pool("my_descriptions.txt")   # any file: one description per line
    pool = load_pool("my_pool.tsv")           # a TSV with a ``text`` column

The general pool
----------------
:func:`general_pool` builds the general pool deterministically, in memory, from curated
vocabularies (:data:`PROPERTIES`): for each property (colour, pattern, material, shape,
location, count, animal, person, activity, object, scene, landscape, weather, time,
art_style, photo_style, emotion, food, vehicle, text, lighting, clothing) a list of values
and a set of sentence templates. Values take turns over their templates, so every value of a
property appears about equally often and in varied sentence forms, and every property gets
:data:`PER_PROPERTY` descriptions. ``data/pools/general.tsv`` is exactly its output.

Each description is tagged with exactly one property and value, and the tag is exact at the
word level: a description uses only words of its own property's vocabulary
(:func:`vocabularies`: the words of its values and templates) and property-neutral words
(:data:`NEUTRAL_WORDS`: articles, prepositions, "photo", "image", "background", ...), and the
vocabularies of different properties share no word. So "A photo of a red car" is not in the
pool (it mixes colour and vehicle), while "A photo of something red" and "A parked jeep" are.

Regenerating the shipped files
------------------------------
Every file in ``data/pools/`` is the output of one generator (:data:`POOL_MAKERS`):
:func:`general_pool`, :func:`common_words` (the paper's baseline of common English words,
from the ``wordfreq`` package, needed for this step only) and the world's
:func:`helpers.data.world.text_pool`. One command writes or checks them::

    python -m helpers.data.pools --write                 # general.tsv and world_pool.tsv
    python -m helpers.data.pools --write common_words    # needs: pip install wordfreq==3.1.1
    python -m helpers.data.pools --check                 # exit 1 if a file differs from its generator

(:func:`write_pool`, :func:`pool_file_text` and :func:`check_pool` from Python.)

Duplicates
----------
Two texts that differ only in case or spacing give the same CLIP embedding (the tokenizer
lower-cases and splits on whitespace), so they are duplicates. :func:`load_pool` keeps the
first and drops the rest with a :class:`UserWarning` (``on_duplicate="warn"``, the default);
``"error"`` raises a ``ValueError`` instead, and ``"keep"`` keeps them all.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from ..engine.paths import data_dir
from ..engine.pool import TSV_HEADER, Pool

__all__ = [
    "Pool",
    "PoolProperty",
    "PoolValue",
    "PROPERTIES",
    "NEUTRAL_WORDS",
    "PER_PROPERTY",
    "MAX_WORDS",
    "MAX_CHARS",
    "POOL_NAMES",
    "REFERENCE_POOL_NAMES",
    "REFERENCE_POOLS",
    "REFERENCE_COMMIT",
    "REFERENCE_REPOSITORY",
    "reference_pool",
    "reference_pool_url",
    "TSV_HEADER",
    "general_pool",
    "write_general_pool",
    "world_pool",
    "common_words",
    "N_WORDS",
    "WORDFREQ_VERSION",
    "POOL_MAKERS",
    "pool_file_text",
    "write_pool",
    "check_pool",
    "load_pool",
    "vocabularies",
    "words_of",
    "pool_path",
]

UNKNOWN = "unknown"
"""Property and value of texts read from a file that carries no tags."""

PER_PROPERTY = 160
"""Number of descriptions of every property in :func:`general_pool`."""

MAX_WORDS = 12
"""Longest description of the general pool, in words."""

MAX_CHARS = 70
"""Longest description of the general pool, in characters."""

POOL_NAMES = ("general", "common_words", "world")
"""The pools shipped with the course, by name (:func:`load_pool` also takes
:data:`REFERENCE_POOL_NAMES` and paths)."""

REFERENCE_REPOSITORY = "yossigandelsman/clip_text_span"
"""The paper's reference code, whose text sets :func:`reference_pool` fetches."""

REFERENCE_COMMIT = "49f70f31bb13437a870ff8de340626b225500a22"
"""The pinned commit of :data:`REFERENCE_REPOSITORY` (MIT-licensed since 2024-05-21; the text
files are byte-identical at every commit)."""

#: The paper's own text sets, fetched on first use: name -> (path in the repository, sha256,
#: size in bytes, what it is). Untagged: their property and value are ``"unknown"``.
REFERENCE_POOLS: dict[str, tuple[str, str, int, str]] = {
    "reference_general": ("text_descriptions/image_descriptions_general.txt",
                          "39c6bf3e788684d9e0e8afa902c13aae1ee8eafefdbab94ba923fd05b9038630", 88419,
                          "the paper's general image descriptions (3,498 lines)"),
    "reference_common_words": ("text_descriptions/google_3498_english.txt",
                               "d9502487f471d07e44b8ae79e01fd03527ab032be2c7d721c1346f97efdaf2c5", 25078,
                               "the paper's common English words (3,498 lines)"),
}

REFERENCE_POOL_NAMES = tuple(REFERENCE_POOLS)
"""Names of the paper's own text sets that :func:`load_pool` fetches (:func:`reference_pool`)."""

_FILES = {
    "general": "general.tsv",
    "common_words": "common_words.txt",
    "world": "world_pool.tsv",
}


# ---------------------------------------------------------------------------
# Vocabularies of the general pool
# ---------------------------------------------------------------------------

_WORD_RE = re.compile(r"[a-z]+")


def words_of(text: str) -> list[str]:
    """The lower-case alphabetic words of ``text`` (hyphens, digits, punctuation split)."""
    return _WORD_RE.findall(text.lower())


NEUTRAL_WORDS: frozenset[str] = frozenset("""
a an the of in on at with and to from for by into its is it this that some just very
something someone photo photograph picture image snapshot shot view close up as surface
background foreground showing seen taken scene object objects thing things looking like
""".split())
"""Words any description may use whatever its property: they carry no property."""


@dataclass(frozen=True)
class PoolValue:
    """One value of a property: its tag and the phrases templates insert.

    ``forms`` maps a template field name to the phrase for this value, e.g. ``x`` (bare
    word), ``a`` (with its article), ``pl`` (plural). ``kind`` restricts which templates apply.
    """

    tag: str
    forms: dict[str, str]
    kind: str = ""


@dataclass(frozen=True)
class PoolProperty:
    """A property of the general pool: values, templates and the template words.

    A template is a format string whose fields are value forms (``"A photo of {a}"``); an
    optional ``kinds`` set limits it to values of those kinds. ``fillers`` are the words the
    templates add beyond :data:`NEUTRAL_WORDS`; they belong to this property's vocabulary.
    """

    name: str
    values: tuple[PoolValue, ...]
    templates: tuple[tuple[str, frozenset[str] | None], ...]
    fillers: frozenset[str] = field(default_factory=frozenset)

    def vocabulary(self) -> frozenset[str]:
        """Words of the values and fillers, less the neutral words."""
        words = set(self.fillers)
        for v in self.values:
            for phrase in v.forms.values():
                words.update(words_of(phrase))
        return frozenset(words - NEUTRAL_WORDS)


_AN_EXCEPTIONS = ("uni", "use", "usu", "eu", "one", "ukulele")
_AN_ALWAYS = ("hour", "honest", "heir", "hdr")
_IRREGULAR = {
    "mouse": "mice", "goose": "geese", "sheep": "sheep", "deer": "deer", "moose": "moose",
    "wolf": "wolves", "fish": "fish", "octopus": "octopuses", "jellyfish": "jellyfish",
    "knife": "knives", "scissors": "scissors", "person": "people", "child": "children",
    "leaf": "leaves", "bison": "bison", "salmon": "salmon",
}


def _article(phrase: str) -> str:
    low = phrase.lower()
    if low.startswith(_AN_ALWAYS):
        return "an " + phrase
    if low[0] in "aeiou" and not low.startswith(_AN_EXCEPTIONS):
        return "an " + phrase
    return "a " + phrase


def _plural(phrase: str) -> str:
    head, _, last = phrase.rpartition(" ")
    prefix = head + " " if head else ""
    if last in _IRREGULAR:
        return prefix + _IRREGULAR[last]
    if last.endswith(("s", "x", "z", "ch", "sh")):
        return prefix + last + "es"
    if last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        return prefix + last[:-1] + "ies"
    return prefix + last + "s"


def _nouns(spec: str, kind: str = "") -> list[PoolValue]:
    """Count nouns from ``"cat, mouse, ..."``; ``"x/plural"`` overrides the plural."""
    out = []
    for item in spec.split(","):
        item = " ".join(item.split())
        if not item:
            continue
        word, _, pl = item.partition("/")
        out.append(PoolValue(word, {"x": word, "a": _article(word),
                                    "pl": pl or _plural(word)}, kind))
    return out


def _words(spec: str, slot: str = "x", kind: str = "", untag_article: bool = False
           ) -> list[PoolValue]:
    """Values used as they are (adjectives, names, phrases) in the field ``slot``; with
    ``untag_article`` the tag leaves out a leading "a"/"an" ("a hat" is tagged "hat")."""
    out = []
    for item in spec.split(","):
        item = " ".join(item.split())
        if item:
            tag = re.sub(r"^an? ", "", item) if untag_article else item
            out.append(PoolValue(tag, {slot: item}, kind))
    return out


def _t(*templates: str, kinds: str | None = None) -> list[tuple[str, frozenset[str] | None]]:
    ks = frozenset(kinds.split()) if kinds else None
    return [(t, ks) for t in templates]


def _prop(name: str, values: list[PoolValue], templates: list[tuple[str, frozenset[str] | None]],
          fillers: str = "") -> PoolProperty:
    return PoolProperty(name, tuple(values), tuple(templates), frozenset(fillers.split()))


_NOUN_TEMPLATES = _t(
    "A photo of {a}", "Image of {a}", "Close-up of {a}", "{a} in the background",
    "A picture showing {a}", "{a} in the foreground", "A snapshot of {a}", "A photo of {pl}",
    "An image with {a}",
)
"""Templates shared by the properties whose values are count nouns (all words neutral)."""


def _colour() -> PoolProperty:
    values = _words("""red, blue, green, yellow, orange, purple, pink, brown, black, white, grey,
        beige, turquoise, teal, navy, maroon, crimson, scarlet, magenta, violet, lavender,
        indigo, cyan, amber, ivory, khaki, ochre, burgundy, emerald, lilac, mauve, tan, azure,
        vermilion, fuchsia, chartreuse""")
    templates = _t(
        "A photo of something {x}", "A {x} image", "The colour {x}", "Shades of {x}",
        "A {x} colour swatch", "An image in {x} tones", "A picture dominated by {x}",
        "Image with a {x} tint", "Something {x} in the background", "A plain {x} background",
        "A {x} hue", "Mostly {x}", "A splash of {x}",
    )
    return _prop("colour", values, templates,
                 "colour swatch tones dominated tint plain hue mostly splash shades")


def _pattern() -> PoolProperty:
    pat = _words("""striped, checkered, polka-dot, plaid, tartan, floral, paisley, zigzag,
        chevron, herringbone, houndstooth, argyle, camouflage, pinstriped, tessellated, fractal,
        swirly, honeycomb, lattice, dotted, harlequin""", kind="pattern")
    tex = _words("""marbled, speckled, spotted, mottled, wavy, rippled, wrinkled, crumpled,
        cracked, scaly, ribbed, corrugated, perforated, embossed, woven, braided, bumpy, fuzzy,
        glossy, rough, smooth, grooved, pitted""", kind="texture")
    templates = _t("A {x} pattern", "A {x} print", "A seamless {x} pattern", "A {x} motif",
                   "A repeating {x} pattern", "A {x} design", kinds="pattern")
    templates += _t("A {x} texture", "Close-up of a {x} surface", "Texture of a {x} surface",
                    "A surface with a {x} finish", "Detail of a {x} texture",
                    "A {x} textured surface", kinds="texture")
    templates += _t("A {x} surface pattern", "Detail of a {x} design", kinds="pattern")
    return _prop("pattern", pat + tex, templates,
                 "pattern print seamless motif repeating design texture finish detail "
                 "textured")


def _material() -> PoolProperty:
    hard = _words("""wood, metal, steel, iron, copper, brass, bronze, gold, silver, aluminium,
        glass, plastic, stone, marble, granite, slate, sandstone, concrete, brick, ceramic,
        porcelain, clay, terracotta, cork, bamboo, plaster, wax, resin, crystal, quartz, jade,
        obsidian, titanium, chrome""", kind="hard")
    soft = _words("""paper, cardboard, leather, cotton, wool, silk, denim, velvet, linen, felt,
        rubber, foam, burlap, suede, wicker""", kind="soft")
    templates = _t("Something made of {x}", "A piece of {x}", "A {x} surface", "Close-up of {x}",
                   "An object made of {x}", "A thing made from {x}", "Raw {x}",
                   "A sample of {x}", "Scraps of {x}", "The material is {x}")
    templates += _t("A block of {x}", "A slab of {x}", "Polished {x}", kinds="hard")
    templates += _t("A sheet of {x}", "A roll of {x}", kinds="soft")
    return _prop("material", hard + soft, templates,
                 "made piece raw sample scraps material block slab polished sheet roll")


def _shape() -> PoolProperty:
    values = _nouns("""circle, square, triangle, rectangle, oval, star, heart, diamond, hexagon,
        pentagon, octagon, crescent, cross, arrow, spiral, cube, sphere, cylinder, cone,
        pyramid, prism, arch, ellipse, trapezoid, rhombus, parallelogram, semicircle, torus,
        polygon, ring""")
    templates = _t("A {x} shape", "An outline of {a}", "Something shaped like {a}",
                   "A {x} symbol", "A simple {x} icon", "The shape of {a}", "A hollow {x}",
                   "A {x} silhouette", "A diagram of {a}", "A basic {x} shape", "{pl}")
    return _prop("shape", values, templates,
                 "shape shaped outline symbol simple icon hollow silhouette diagram basic")


def _location() -> PoolProperty:
    countries = _words("""France, Italy, Spain, Germany, Japan, China, India, Brazil, Mexico,
        Canada, Egypt, Kenya, Morocco, Peru, Argentina, Australia, Norway, Iceland, Greece,
        Ireland, Scotland, Vietnam, Thailand, Indonesia, Nepal, Russia, Sweden, Portugal,
        the Netherlands, Switzerland, Nigeria, Ethiopia, Cuba, South Korea, Poland, Turkey,
        New Zealand, Colombia, Mongolia, Tanzania""", kind="country")
    continents = _words("Africa, Asia, Europe, Antarctica, South America, North America",
                        kind="country")
    cities = _words("""Paris, London, Tokyo, New York, Rome, Venice, Istanbul, Cairo, Mumbai,
        Beijing, Shanghai, Sydney, Rio de Janeiro, Moscow, Berlin, Amsterdam, Barcelona, Dubai,
        Singapore, Hong Kong, Bangkok, Seoul, Los Angeles, San Francisco, Chicago, Toronto,
        Buenos Aires, Lagos, Nairobi, Marrakesh, Prague, Vienna, Lisbon, Havana, Kyoto,
        Jerusalem, Athens, Stockholm, Delhi, Hanoi, Lima, Cape Town""", kind="city")
    templates = _t("A photo taken in {x}", "A postcard from {x}", "A view of {x}",
                   "Somewhere in {x}", "A travel photo from {x}", "A tourist snapshot in {x}",
                   "A souvenir from {x}", "Image from {x}", "Memories of a trip to {x}",
                   "Famous landmarks of {x}")
    templates += _t("A map of {x}", "A city in {x}", kinds="country")
    templates += _t("The skyline of {x}", "The city of {x}", kinds="city")
    return _prop("location", countries + continents + cities, templates,
                 "postcard travel tourist souvenir somewhere memories trip famous landmarks map "
                 "city skyline")


def _count() -> PoolProperty:
    num = _words("""two, three, four, five, six, seven, eight, nine, ten, eleven, twelve,
        twenty, thirty, fifty, a hundred, a dozen""", kind="num")
    vague = _words("""a few, several, many, countless, dozens of, hundreds of, thousands of,
        a handful of, a pair of, a couple of""", kind="vague")
    single = _words("one, a single", kind="single")
    templates = _t("{x} objects", "{x} identical items", "{x} things in a row",
                   "A photo of {x} objects", "An image with {x} things",
                   "{x} items arranged neatly", kinds="num vague")
    templates += _t("Exactly {x} objects", "A group of {x} things", "A set of {x} items",
                    "Counting {x} objects", kinds="num")
    templates += _t("{x} object", "Only {x} object", "{x} object and nothing else",
                    "Exactly {x} item", "Just {x} object", "{x} item by itself",
                    "{x} thing on its own", kinds="single")
    return _prop("count", num + vague + single, templates,
                 "identical items item row arranged neatly exactly group set counting only "
                 "nothing else itself own")


def _animal() -> PoolProperty:
    values = _nouns("""cat, dog, horse, cow, sheep, pig, goat, duck, goose, rabbit, mouse,
        squirrel, fox, wolf, bear, deer, moose, elephant, giraffe, zebra, lion, tiger, leopard,
        cheetah, monkey, gorilla, kangaroo, koala, panda, camel, hippo, rhino, crocodile, snake,
        lizard, tortoise, frog, owl, eagle, parrot, penguin, flamingo, swan, pigeon, peacock,
        dolphin, whale, shark, octopus, jellyfish, crab, butterfly, bee, spider, ladybird,
        hedgehog, raccoon, otter, hamster, bison""")
    templates = _NOUN_TEMPLATES + _t("A wild {x}", "{a} at the zoo", "{a} in its habitat",
                                     "A wildlife photo of {a}", "{a} resting", "A cute {x}",
                                     "An animal: {a}")
    return _prop("animal", values, templates,
                 "wild zoo habitat wildlife resting cute animal")


def _person() -> PoolProperty:
    values = _nouns("""baby, toddler, child, little girl, little boy, teenager, young woman,
        young man, middle-aged man, middle-aged woman, elderly woman, elderly man, old man,
        old woman, doctor, nurse, teacher, student, chef, police officer, firefighter, soldier,
        farmer, construction worker, scientist, pilot, mechanic, musician, businessman,
        businesswoman, waiter, judge, priest, monk, nun, astronaut, lifeguard, clown, surgeon,
        fisherman, cowboy, photographer, shopkeeper, librarian, postman, tailor, plumber,
        athlete, bride, groom""")
    templates = _NOUN_TEMPLATES[:7] + _t(
        "A portrait of {a}", "{a} at work", "A candid photo of {a}", "{a} standing",
        "{a} posing", "{a} walking", "A headshot of {a}", "A person: {a}")
    return _prop("person", values, templates,
                 "portrait work candid standing posing walking headshot person")


def _activity() -> PoolProperty:
    values = _words("""swimming, surfing, skiing, snowboarding, skateboarding, cycling, running,
        hiking, climbing, playing tennis, playing football, playing basketball, playing golf,
        playing chess, playing cards, playing the guitar, playing the piano, playing the violin,
        playing drums, dancing, singing, reading, gardening, fishing, sailing, rowing, boxing,
        wrestling, fencing, doing archery, doing yoga, meditating, juggling, sewing, camping,
        scuba diving, skydiving, bowling, skating, lifting weights,
        playing video games, jumping rope, doing karate, playing frisbee""")
    templates = _t("Someone {x}", "A photo of someone {x}", "Action shot of someone {x}",
                   "Someone {x} alone", "Someone {x} as a hobby", "A lesson in {x}",
                   "A weekend spent {x}", "Someone taking a break from {x}",
                   "Someone {x} competitively")
    return _prop("activity", values, templates,
                 "action alone hobby lesson weekend spent taking break competitively")


def _object() -> PoolProperty:
    values = _nouns("""chair, lamp, clock, book, umbrella, key, bottle, phone, laptop,
        hairbrush, candle, mirror, vase, pillow, backpack, sofa, bed, television, watch,
        wallet, hammer, screwdriver, wrench, ladder, broom, bucket, basket, suitcase,
        remote control, keyboard, toothbrush, towel, blanket, fan, spoon, fork, knife, pen,
        notebook, envelope, stapler, calculator, globe, trophy, crown, necklace, doorknob,
        padlock, teddy""")
    templates = _NOUN_TEMPLATES + _t(
        "{a} on a table", "{a} on a shelf", "A product photo of {a}", "{a} lying on the floor",
        "{a} on a desk", "An everyday {x}", "An ordinary {x}", "A household {x}")
    return _prop("object", values, templates,
                 "table shelf product lying floor desk everyday ordinary household")


def _scene() -> PoolProperty:
    indoor = _nouns("""kitchen, bedroom, bathroom, living room, office, classroom, library,
        hospital, supermarket, restaurant, cafe, gym, museum, church, mosque, warehouse,
        factory, corridor, hallway, staircase, lobby, elevator, laundromat, courtroom, cinema,
        concert hall, bar, attic, basement, garage, prison cell, waiting room, shopping mall,
        airport terminal""", kind="indoor")
    outdoor = _nouns("""street, alley, parking lot, playground, park, stadium, marketplace,
        plaza, rooftop, balcony, backyard, farmyard, campsite, building site, bridge,
        harbour, pier, petrol station, cemetery, schoolyard, courtyard, patio, sidewalk""",
                     kind="outdoor")
    templates = _t("An empty {x}", "A busy {x}", "A crowded {x}", "A {x} scene",
                   "A quiet {x}", "A deserted {x}")
    templates += _t("Inside {a}", "The interior of {a}", "{a}, indoors", "A messy {x}",
                    "A tidy {x}", "An indoor view of {a}", kinds="indoor")
    templates += _t("{a}, outdoors", "An outdoor view of {a}", "Outside {a}", kinds="outdoor")
    return _prop("scene", indoor + outdoor, templates,
                 "empty busy crowded quiet deserted inside interior indoors indoor messy tidy "
                 "outdoors outdoor outside")


def _landscape() -> PoolProperty:
    values = _nouns("""mountain, desert, forest, jungle, beach, lake, river, waterfall, canyon,
        valley, glacier, volcano, island, meadow, prairie, savanna, swamp, cliff, cave,
        grassland, coastline, tundra, sand dune, coral reef, lagoon, fjord, plateau, marsh,
        rainforest, countryside, farmland, pine forest, mountain range, river delta, salt flat,
        badlands/badlands, steppe, gorge, oasis, iceberg""")
    templates = _t("A {x} landscape", "A view of {a}", "A vast {x}", "An isolated {x}",
                   "A scenic {x}", "A distant {x}", "{a} in the wilderness", "The edge of {a}",
                   "{a} seen from above", "An untouched {x}", "Nature: {a}")
    return _prop("landscape", values, templates,
                 "landscape vast isolated scenic distant wilderness edge above untouched nature")


def _weather() -> PoolProperty:
    pairs = [("sunny", "sunshine"), ("rainy", "rain"), ("snowy", "snow"), ("foggy", "fog"),
             ("cloudy", "clouds"), ("stormy", "a storm"), ("windy", "wind"), ("misty", "mist"),
             ("hazy", "haze"), ("frosty", "frost"), ("drizzly", "drizzle"), ("icy", "ice"),
             ("humid", "humidity"), ("overcast", "grey clouds")]
    pairs = [(a, "frozen puddles" if a == "icy" else n) for a, n in pairs]
    values = [PoolValue(adj, {"adj": adj, "n": n}) for adj, n in pairs
              if adj != "overcast"]
    values.append(PoolValue("overcast", {"adj": "overcast", "n": "an overcast sky"}))
    values += [PoolValue(n.split(" ", 1)[-1] if n.startswith(("a ", "an ")) else n, {"n": n})
               for n in ("lightning", "a rainbow", "hail", "a blizzard", "a tornado",
                         "a hurricane", "sleet", "a heatwave", "a downpour", "a monsoon",
                         "a snowstorm", "a hailstorm", "a thunderstorm", "a gale",
                         "freezing rain", "thunder")]
    templates = _t("A {adj} day", "{adj} weather", "A photo taken on a {adj} day",
                   "A {adj} sky", "The weather is {adj}", "It is {adj} today",
                   "A typical {adj} day", "{adj} conditions")
    templates += _t("A photo of {n}", "A forecast of {n}", "Extreme weather with {n}",
                    "Watching {n} through the window", "{n} in the weather report",
                    "Bad weather: {n}", "Image of {n}")
    return _prop("weather", values, templates,
                 "day weather sky typical today conditions forecast extreme watching through "
                 "window report bad")


def _time() -> PoolProperty:
    def v(tag: str, p: str, n: str, kind: str) -> PoolValue:
        return PoolValue(tag, {"p": p, "n": n, "m": tag}, kind)

    values = [
        v("dawn", "at dawn", "dawn", "edge"), v("sunrise", "at sunrise", "sunrise", "edge"),
        v("morning", "in the morning", "the morning", "part"),
        v("noon", "at noon", "noon", "point"), v("midday", "at midday", "midday", "point"),
        v("afternoon", "in the afternoon", "the afternoon", "part"),
        v("sunset", "at sunset", "sunset", "edge"), v("dusk", "at dusk", "dusk", "edge"),
        v("twilight", "at twilight", "twilight", "edge"),
        v("evening", "in the evening", "the evening", "part"),
        v("night", "at night", "the night", "part"),
        v("midnight", "at midnight", "midnight", "point"),
        v("daybreak", "at daybreak", "daybreak", "edge"),
        v("nightfall", "at nightfall", "nightfall", "edge"),
        v("golden hour", "during the golden hour", "the golden hour", "point"),
        v("spring", "in spring", "spring", "season"), v("summer", "in summer", "summer", "season"),
        v("autumn", "in autumn", "autumn", "season"), v("winter", "in winter", "winter", "season"),
    ]
    templates = _t("A photo taken {p}", "{p}", "Image captured {p}", "Seen {p}",
                   "The world {p}", "During {n}", "A {m} photo", "Taken {p}",
                   "Everything {p}", "A glimpse {p}")
    templates += _t("Early {m}", "Late {m}", "Every {m}", kinds="part season")
    templates += _t("Around {n}", kinds="edge part point")
    templates += _t("Time of year: {n}", "Season: {n}", "A {m} season", "The height of {n}",
                    "The first weeks of {n}", "The last days of {n}", kinds="season")
    return _prop("time", values, templates,
                 "captured world during early late every around time year season height first "
                 "weeks last days everything glimpse")


def _art_style() -> PoolProperty:
    media = [PoolValue(m, {"n": _article(m), "x": m}, "medium") for m in (
        "oil painting", "watercolour painting", "pencil sketch", "charcoal drawing",
        "ink drawing", "pastel drawing", "mosaic", "fresco", "woodcut", "linocut", "etching",
        "engraving", "lithograph", "mural", "collage", "tapestry", "stencil", "caricature", "doodle",
        "storyboard", "comic strip", "digital painting",
        "vector illustration", "computer render", "miniature painting", "still life",
        "gouache painting")]
    media += [PoolValue(m, {"n": _article(m), "x": m}, "solid") for m in (
        "sculpture", "statue", "relief carving", "bust", "figurine", "carved mask")]
    styles = _words("""cubist, impressionist, surrealist, expressionist, baroque, art nouveau,
        art deco, minimalist, abstract, renaissance, gothic, rococo, pointillist, futurist,
        dadaist, folk, medieval, byzantine, constructivist, fauvist, pixel art, isometric,
        steampunk, cyberpunk, anime, manga, cartoon, graphic novel, graffiti, psychedelic""",
                    slot="s", kind="style")
    templates = _t("{n}", "Close-up of {n}", "A photo of {n}", kinds="medium solid")
    templates += _t("{n} hanging in a gallery", "A framed {x}", "{n} on an easel",
                    "A gallery wall with {n}", "{n} by an unknown artist", kinds="medium")
    templates += _t("{n} on a plinth", "{n} in a gallery", "{n} by an unknown sculptor",
                    "A small {x}", kinds="solid")
    templates += _t("An artwork in the {s} style", "A {s} artwork", "A painting in {s} style",
                    "A {s} illustration", "Art in the {s} style", "A {s} drawing",
                    "Something drawn in {s} style", kinds="style")
    return _prop("art_style", media + styles, templates,
                 "hanging gallery framed easel wall unknown artist artwork style painting "
                 "illustration art drawing drawn plinth sculptor small")


def _photo_style() -> PoolProperty:
    lens = _words("fisheye, wide-angle, macro, telephoto, tilt-shift, anamorphic", kind="lens")
    other = _words("""long-exposure, motion-blurred, bokeh, HDR, sepia, monochrome, greyscale,
        overexposed, underexposed, double-exposure, grainy, Polaroid, vintage, out-of-focus,
        blurry, pixelated, low-resolution, selfie, panoramic, aerial, drone, infrared, thermal,
        CCTV, webcam, high-contrast, lens-flare, vignetted,
        noisy, glitchy, low-angle, high-angle, analogue, retouched, professional, amateur,
        solarised, hand-tinted""")
    templates = _t("A {x} photo", "A {x} photograph", "A {x} shot", "A {x} image",
                   "A {x} picture", "A {x} snapshot", "{x} photography",
                   "An example of {x} photography", "A {x} camera shot", "A {x} look")
    templates += _t("Shot with a {x} lens", "Taken with a {x} lens", kinds="lens")
    return _prop("photo_style", lens + other, templates,
                 "photography example camera look lens")


def _emotion() -> PoolProperty:
    feelings = _words("""happy, sad, angry, scared, surprised, bored, excited, proud, disgusted,
        confused, nervous, furious, embarrassed, jealous, frightened, lonely, anxious, relaxed,
        content, hopeful, shy, worried""", kind="feeling")
    moods = _words("""peaceful, gloomy, eerie, mysterious, chaotic, cosy, tranquil, spooky,
        festive, whimsical, sombre, ominous, dreamy, serene, nostalgic, romantic, tense,
        melancholic, cheerful, playful, joyful, hostile, solemn, triumphant, tender""",
                   kind="mood")
    templates = _t("A {x} feeling")
    templates += _t("Feeling {x}", "A {x} facial expression", "A {x} face",
                    "Someone looking {x}", "An emotion: {x}", kinds="feeling")
    templates += _t("Something {x}", "A {x} moment", "A {x} mood", "A {x} atmosphere",
                    "A {x} vibe", "An image that feels {x}", "The mood is {x}", kinds="mood")
    return _prop("emotion", feelings + moods, templates,
                 "feeling moment facial expression face emotion mood atmosphere vibe feels")


def _food() -> PoolProperty:
    plate = _words("""pizza, burgers, sushi, pasta, steak, tacos, dumplings, croissants,
        doughnuts, pancakes, sandwiches, fries, waffles, pie, cupcakes, lasagna, omelettes,
        bagels, burritos, paella, bread, cake, cheese, eggs, pretzels, roast potatoes""",
                   kind="plate")
    bowl = _words("salad, soup, rice, noodles, curry, ramen, oatmeal, popcorn, stew",
                  kind="bowl")
    produce = _words("""cherries, grapes, strawberries, blueberries, apples, bananas, peaches,
        lemons, avocados, tomatoes, mushrooms, carrots, broccoli, watermelon, pineapple,
        olives, plums, pears""", kind="produce")
    drink = _words("coffee, tea, lemonade, milk, wine, beer, cocoa, juice", kind="drink")
    templates = _t("Fresh {x}", "Close-up of {x}", "{x} for breakfast")
    templates += _t("Homemade {x}", "Delicious {x}", "A recipe for {x}",
                    kinds="plate bowl drink")
    templates += _t("{x} served for dinner", "A serving of {x}", kinds="plate bowl")
    templates += _t("A plate of {x}", "{x} on a plate", kinds="plate")
    templates += _t("A bowl of {x}", "{x} in a bowl", kinds="bowl produce")
    templates += _t("Ripe {x}", "A pile of {x}", "Freshly picked {x}", kinds="produce")
    templates += _t("A cup of {x}", "A mug of {x}", "Freshly poured {x}", kinds="drink")
    return _prop("food", plate + bowl + produce + drink, templates,
                 "fresh homemade delicious recipe served dinner breakfast serving plate bowl cup "
                 "mug freshly poured ripe pile picked")


def _vehicle() -> PoolProperty:
    land = _nouns("""car, bus, truck, bicycle, motorcycle, tractor, ambulance, fire engine,
        taxi, van, scooter, limousine, jeep, minivan, forklift, bulldozer, excavator, rickshaw,
        snowmobile, tank, school bus, pickup truck, racing car, sports car,
        convertible, camper van, unicycle, tricycle""", kind="land")
    water = _nouns("""boat, ship, sailboat, canoe, kayak, submarine, yacht, ferry, tugboat,
        cargo ship, gondola, jet ski""", kind="water")
    air = _nouns("""airplane, helicopter, hot-air balloon, rocket, fighter jet, glider, blimp,
        seaplane""", kind="air")
    rail = _nouns("train, tram, steam locomotive, cable car, freight train", kind="rail")
    templates = _NOUN_TEMPLATES + _t("A toy {x}", "A speeding {x}", "A shiny {x}",
                                     "A rusty {x}", "A model of {a}")
    templates += _t("A parked {x}", "{a} on the road", "{a} driving down a highway",
                    kinds="land")
    templates += _t("{a} on the water", "{a} moving across the water", kinds="water")
    templates += _t("{a} in flight", "{a} in mid-air", kinds="air")
    templates += _t("{a} on the tracks", "{a} on the railway", kinds="rail")
    return _prop("vehicle", land + water + air + rail, templates,
                 "toy speeding shiny rusty model parked road driving down highway water "
                 "moving across flight mid air tracks railway")


def _text() -> PoolProperty:
    letters = [PoolValue(c, {"L": c, "l": c.lower()}, "letter") for c in string.ascii_uppercase]
    words = _words("""HELLO, WELCOME, SALE, EXIT, OPEN, CLOSED, STOP, DANGER, CAUTION, PUSH,
        PULL, PRIVATE, SILENCE, HELP, FREE, HOTEL, TOILETS, NEWS, PHARMACY, BAKERY, THANKS,
        VOTE, FRAGILE, RESERVED, BEWARE""", slot="w", kind="word")
    scripts = _words("""Chinese characters, Arabic script, Cyrillic letters, Greek letters,
        Hebrew text, Japanese writing, Korean hangul, Devanagari script, Braille, Morse code,
        handwriting, calligraphy, typewritten text, printed text, a barcode, a QR code,
        a crossword puzzle, a maths equation, a handwritten note, a newspaper page""",
                     slot="s", kind="script", untag_article=True)
    templates = _t("The letter {L}", "A capital letter {L}", "A lowercase letter {l}",
                   "Handwritten letter {L}", "A sign with the letter {L}",
                   "The letter {L} in bold type", kinds="letter")
    templates += _t("A sign that says {w}", "The word {w}", "Text that reads {w}",
                    "A label with the text {w}", "A poster with the word {w}",
                    "{w} written in large letters", "A handwritten note saying {w}",
                    "A banner with the word {w}", kinds="word")
    templates += _t("Text written in {s}", "A page of {s}", "A sign covered in {s}",
                    "A close-up of {s}", "{s} on a sign", "A poster with {s}",
                    "A document with {s}", kinds="script")
    return _prop("text", letters + words + scripts, templates,
                 "letter capital lowercase handwritten sign bold type says word text "
                 "label poster written large letters note saying banner page covered document "
                 "reads")


def _lighting() -> PoolProperty:
    glow = _words("""candlelight, moonlight, firelight, lamplight, torchlight, lantern light,
        neon light, fluorescent light, starlight""", slot="n", kind="glow")
    sources = _words("""a spotlight, fairy lights, a flashlight, stage lights, studio lights,
        a bare bulb, lanterns, laser beams, sunbeams, a chandelier, a streetlamp, a lighthouse,
        a bonfire""", slot="n", kind="source", untag_article=True)
    quality = _words("""dim, bright, dark, backlit, harsh, soft, warm, cool, dramatic,
        diffused, dappled, shadowy, glowing, natural, artificial,
        overhead, directional, flickering, even, strong, faint""", slot="adj")
    templates = _t("Lit by {n}", "Illuminated by {n}", "The glow of {n}", "Under {n}",
                   "Shadows cast by {n}", "A space lit by {n}", "Lit up by {n}")
    templates += _t("Bathed in {n}", "A space bathed in {n}",
                    kinds="glow")
    templates += _t("Light from {n}", "Light coming from {n}", kinds="source")
    templates += _t("{adj} lighting", "{adj} light", "A {adj} lighting setup",
                    "A space in {adj} light", "Very {adj} lighting", "Lighting that is {adj}",
                    "Shadows under {adj} light")
    return _prop("lighting", glow + sources + quality, templates,
                 "lit illuminated glow under shadows cast light bathed space lighting setup "
                 "coming")


def _clothing() -> PoolProperty:
    values = _words("""a shirt, a dress, a suit, a jacket, a coat, a sweater, a hoodie, jeans,
        shorts, a skirt, a scarf, gloves, boots, sneakers, sandals, a hat, a cap, a uniform,
        a tuxedo, a gown, a kimono, a sari, a raincoat, a swimsuit, pyjamas, overalls,
        an apron, a tie, a bow tie, a vest, a cardigan, a blazer, leggings, a poncho,
        a trench coat, a beanie, a helmet, socks, a belt, mittens""", slot="a",
                    untag_article=True)
    templates = _t("Someone wearing {a}", "{a} on a hanger", "A fashion photo of {a}",
                   "{a} on display", "A photo of {a}", "Close-up of {a}", "{a} in a wardrobe",
                   "A catalogue photo of {a}", "An outfit with {a}")
    return _prop("clothing", values, templates,
                 "wearing hanger fashion display wardrobe catalogue outfit")


PROPERTIES: tuple[PoolProperty, ...] = (
    _colour(), _pattern(), _material(), _shape(), _location(), _count(), _animal(), _person(),
    _activity(), _object(), _scene(), _landscape(), _weather(), _time(), _art_style(),
    _photo_style(), _emotion(), _food(), _vehicle(), _text(), _lighting(), _clothing(),
)
"""The properties of the general pool, in the order of ``general.tsv``."""


def vocabularies() -> dict[str, frozenset[str]]:
    """Each property's vocabulary: words of its values and templates, less neutral words."""
    return {p.name: p.vocabulary() for p in PROPERTIES}


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------

_FORMATTER = string.Formatter()


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in _FORMATTER.parse(template) if f}


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


_TRAILING_A = re.compile(r"(^|\s)([Aa]) $")


def _fill(template: str, forms: dict[str, str]) -> str:
    """``template`` with its fields replaced by ``forms``; a literal "a" just before a field
    becomes "an" when the inserted phrase needs it ("A {x} mood" -> "An eerie mood")."""
    parts = []
    for literal, name, spec, conv in _FORMATTER.parse(template):
        if name is None:
            parts.append(literal)
            continue
        phrase = _FORMATTER.format_field(forms[name], spec or "")
        m = _TRAILING_A.search(literal)
        if m and _article(phrase).startswith("an "):
            literal = literal[:m.start(2)] + m.group(2) + "n "
        parts.append(literal + phrase)
    return "".join(parts)


def _candidates(prop: PoolProperty, value: PoolValue) -> list[str]:
    out = []
    for template, kinds in prop.templates:
        if kinds is not None and value.kind not in kinds:
            continue
        if not _fields(template) <= value.forms.keys():
            continue
        out.append(_capitalise(_fill(template, value.forms)))
    return out


def _fits(text: str) -> bool:
    return len(text) <= MAX_CHARS and len(text.split()) <= MAX_WORDS


def _property_rows(prop: PoolProperty, n: int, seen: set[str]) -> list[tuple[str, str, str]]:
    """``n`` descriptions of ``prop``: values take turns, each moving through its templates
    from a different starting point, so values and sentence forms are both balanced."""
    per_value = []
    for i, value in enumerate(prop.values):
        cands = [c for c in _candidates(prop, value) if _fits(c)]
        if cands:
            k = i % len(cands)
            per_value.append((value, cands[k:] + cands[:k]))
    rows: list[tuple[str, str, str]] = []
    depth = 0
    while len(rows) < n:
        progressed = False
        for value, cands in per_value:
            if depth >= len(cands):
                continue
            progressed = True
            text = cands[depth]
            key = " ".join(text.lower().split())
            if key in seen:
                continue
            seen.add(key)
            rows.append((text, prop.name, value.tag))
            if len(rows) == n:
                break
        if not progressed:
            raise ValueError(f"property {prop.name!r} can give only {len(rows)} descriptions, "
                             f"fewer than {n}")
        depth += 1
    return rows


def general_pool(per_property: int = PER_PROPERTY) -> Pool:
    """The course's general pool, built deterministically from :data:`PROPERTIES`.

    Every property gets ``per_property`` descriptions (each at most :data:`MAX_WORDS` words
    and :data:`MAX_CHARS` characters, no two equal ignoring case). ``data/pools/general.tsv``
    holds the output for the default ``per_property``.
    """
    seen: set[str] = set()
    rows: list[tuple[str, str, str]] = []
    for prop in PROPERTIES:
        rows += _property_rows(prop, per_property, seen)
    texts, props, values = (list(c) for c in zip(*rows))
    return Pool(texts, props, values, "general")


def write_general_pool(path: str | os.PathLike[str] | None = None) -> Path:
    """Write :func:`general_pool` as TSV (default ``data/pools/general.tsv``)."""
    return write_pool("general", path)


# ---------------------------------------------------------------------------
# The other shipped pools
# ---------------------------------------------------------------------------


def world_pool() -> Pool:
    """The synthetic world's tagged pool (:func:`helpers.data.world.text_pool`): every factor value
    described several ways, plus distractors tagged ``"other"``."""
    from .world import text_pool

    texts, props, values = (list(c) for c in zip(*text_pool()))
    return Pool(texts, props, values, "world")


N_WORDS = 3498
"""Size of the common-words pool (the paper's baseline pool has 3,498 words)."""

WORDFREQ_VERSION = "3.1.1"
"""The ``wordfreq`` release ``common_words.txt`` was made with (other releases may differ)."""

_DROPPED_WORDS = frozenset("""
shit shitty fuck fucking fucked fucker bitch bitches dick bullshit porn crap ass asshole damn
sexy rape pussy cock piss pissed bastard whore slut
ll ve re im dont thats didnt doesnt isnt cant ive youre theyre wasnt
http https www
""".split())  # profanity, and contraction fragments and web address parts that are not words

_COMMON_WORD = re.compile(r"[a-z]{2,}")


def common_words(n: int = N_WORDS) -> list[str]:
    """The ``n`` most frequent English words of ``wordfreq`` (its ``"best"`` list), in order.

    Kept are lower-case alphabetic words of at least two letters, less profanity and
    fragments that are not words; function words are kept (this is a baseline pool). Needs
    the ``wordfreq`` package (``pip install wordfreq==3.1.1``), for this step only.
    """
    try:
        import wordfreq
    except ImportError:
        raise ImportError(
            "making the common-words pool needs wordfreq; install it for this run only, e.g.\n"
            f"  pip install --target /tmp/wordfreq wordfreq=={WORDFREQ_VERSION}\n"
            "  PYTHONPATH=/tmp/wordfreq python -m helpers.data.pools --write common_words") from None
    from importlib.metadata import version as _version

    found = getattr(wordfreq, "__version__", None) or _version("wordfreq")
    if found != WORDFREQ_VERSION:
        warnings.warn(f"wordfreq {found} is installed; data/pools/common_words.txt was made "
                      f"with {WORDFREQ_VERSION} and may come out different", stacklevel=2)
    out: list[str] = []
    seen: set[str] = set()
    for w in wordfreq.top_n_list("en", 4 * n, wordlist="best"):
        if not _COMMON_WORD.fullmatch(w) or w in _DROPPED_WORDS or w in seen:
            continue
        seen.add(w)
        out.append(w)
        if len(out) == n:
            break
    if len(out) < n:
        raise ValueError(f"only {len(out)} words passed the filters, fewer than {n}")
    return out


# ---------------------------------------------------------------------------
# Writing and checking the shipped files
# ---------------------------------------------------------------------------

POOL_MAKERS: dict[str, str] = {
    "general": "general_pool() (this module)",
    "common_words": "common_words() (this module; needs wordfreq)",
    "world": "helpers.data.world.text_pool()",
}
"""The generator of every named pool's file."""

_NEEDS_NOTHING = ("general", "world")  # pools whose generators need no extra package


def pool_file_text(name: str) -> str:
    """The exact content of a named pool's file, freshly generated (``\n`` line ends)."""
    if name == "general":
        return general_pool().tsv_text()
    if name == "world":
        return world_pool().tsv_text()
    if name == "common_words":
        return "\n".join(common_words()) + "\n"
    raise ValueError(f"unknown pool name {name!r}; known names: {', '.join(POOL_NAMES)}")


def write_pool(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Regenerate a named pool's file (default: its place under ``data/pools/``); returns the path."""
    text = pool_file_text(name)
    out = Path(path) if path is not None else pool_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8", newline="\n")
    return out


def check_pool(name: str, path: str | os.PathLike[str] | None = None) -> bool:
    """Whether a named pool's file (default: the shipped one) equals its generator's output."""
    file = Path(path) if path is not None else pool_path(name)
    return file.exists() and file.read_text(encoding="utf-8") == pool_file_text(name)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def pool_path(name: str) -> Path:
    """Path of a named pool's file under ``data/pools/`` (see :data:`POOL_NAMES`)."""
    if name not in _FILES:
        raise ValueError(f"unknown pool name {name!r}; known names: {', '.join(POOL_NAMES)}")
    return data_dir() / "pools" / _FILES[name]


def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"pool file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"pool path is a folder, not a file: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None


def _read_tsv(path: Path, name: str) -> Pool:
    text = _read_text(path)
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    while rows and not any(c.strip() for c in rows[0]):
        rows.pop(0)
    if not rows:
        raise ValueError(f"{path}: empty file, expected a header line with a 'text' column")
    header = [c.strip().lower() for c in rows[0]]
    if "text" not in header or len(set(header)) != len(header):
        raise ValueError(f"{path}: bad TSV header {rows[0]!r}; expected tab-separated column "
                         "names including 'text' (optionally 'property' and 'value')")
    it, ip, iv = (header.index(c) if c in header else None for c in TSV_HEADER)
    texts, props, values = [], [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{lineno}: {len(row)} fields, expected {len(header)} "
                             f"({', '.join(header)})")
        t = " ".join(row[it].split())
        if not t:
            raise ValueError(f"{path}:{lineno}: empty text")
        texts.append(t)
        props.append((row[ip].strip() or UNKNOWN) if ip is not None else UNKNOWN)
        values.append((row[iv].strip() or UNKNOWN) if iv is not None else UNKNOWN)
    return Pool(texts, props, values, name)


def _read_lines(path: Path, name: str, prop: str = UNKNOWN, value_is_text: bool = False) -> Pool:
    texts = []
    for line in _read_text(path).splitlines():
        t = " ".join(line.split())
        if t and not t.startswith("#"):
            texts.append(t)
    values = list(texts) if value_is_text else [UNKNOWN] * len(texts)
    return Pool(texts, [prop] * len(texts), values, name)


def _dedupe(pool: Pool, on_duplicate: str, source: object) -> Pool:
    if on_duplicate == "keep":
        return pool
    seen: dict[str, int] = {}
    keep, dropped = [], []
    for i, t in enumerate(pool.texts):
        key = " ".join(t.lower().split())
        if key in seen:
            dropped.append(t)
        else:
            seen[key] = i
            keep.append(i)
    if not dropped:
        return pool
    shown = ", ".join(repr(t) for t in dropped[:5]) + (" ..." if len(dropped) > 5 else "")
    msg = (f"{source}: {len(dropped)} duplicate text(s) (ignoring case and spacing): {shown}")
    if on_duplicate == "error":
        raise ValueError(msg)
    warnings.warn(msg + "; kept the first of each", UserWarning, stacklevel=3)
    return pool.subset(keep)


def reference_pool_url(name: str, commit: str = REFERENCE_COMMIT) -> str:
    """Where :func:`reference_pool` fetches ``name`` from: the raw file at ``commit``."""
    if name not in REFERENCE_POOLS:
        raise ValueError(f"unknown reference pool {name!r}; known: {', '.join(REFERENCE_POOL_NAMES)}")
    return f"https://raw.githubusercontent.com/{REFERENCE_REPOSITORY}/{commit}/{REFERENCE_POOLS[name][0]}"


def reference_pool(name: str) -> Pool:
    """One of the paper's own text sets (:data:`REFERENCE_POOLS`), fetched once from the authors'
    repository at :data:`REFERENCE_COMMIT` into the course cache and checked against its pinned
    SHA-256 (pooch; a file with another hash is refused). One text per line, as the reference
    reads them; whitespace is collapsed (the tokenizer does the same), and every line is kept,
    duplicates included, as the reference embeds all of them. Offline it fails within seconds
    with :class:`helpers.engine.download.OfflineError`.
    """
    from ..engine.download import fetch

    path, sha256, _size, what = REFERENCE_POOLS.get(name) or (None, None, None, None)
    if path is None:
        raise ValueError(f"unknown reference pool {name!r}; known: {', '.join(REFERENCE_POOL_NAMES)}")
    local = fetch(reference_pool_url(name), sha256, what=f"{what} from {REFERENCE_REPOSITORY}",
                  folder=f"clip_text_span-{REFERENCE_COMMIT[:7]}",
                  hint="The offline world uses its own pools (preset='offline'); or pass pool= a local copy of "
                       "the file (any text file, one description per line).")
    return _read_lines(Path(local), name)


def load_pool(name_or_path: str | os.PathLike[str],
              on_duplicate: Literal["warn", "error", "keep"] | None = None) -> Pool:
    """Load a text pool by name or from a file.

    Args:
        name_or_path: ``"general"`` (the shipped ``data/pools/general.tsv``, or
            :func:`general_pool` when the file is absent), ``"common_words"``
            (``data/pools/common_words.txt``; property ``"word"``, value the word),
            ``"world"`` (``data/pools/world_pool.tsv``), one of the paper's own text sets
            (``"reference_general"``, ``"reference_common_words"``: :func:`reference_pool`,
            fetched on first use), or a path: a ``.tsv`` file whose
            header has a ``text`` column (``property`` and ``value`` columns are optional,
            ``"unknown"`` when missing), or any other text file with one description per line
            (blank lines and lines starting with ``#`` are skipped; property and value
            ``"unknown"``). Whitespace inside texts is collapsed.
        on_duplicate: what to do with texts equal ignoring case and spacing: ``"warn"`` drops
            all but the first with a ``UserWarning``, ``"error"`` raises ``ValueError``,
            ``"keep"`` keeps them. Default: ``"keep"`` for the paper's text sets (the
            reference embeds every line), ``"warn"`` otherwise.

    Raises:
        FileNotFoundError: the file (or a named pool's file) does not exist.
        ValueError: unknown name, bad TSV header or row, empty pool, duplicates with
            ``on_duplicate="error"``.
    """
    key = os.fspath(name_or_path)
    reference = isinstance(name_or_path, str) and key in REFERENCE_POOLS
    if on_duplicate is None:
        on_duplicate = "keep" if reference else "warn"
    if on_duplicate not in ("warn", "error", "keep"):
        raise ValueError(f"on_duplicate must be 'warn', 'error' or 'keep', not {on_duplicate!r}")
    if reference:
        pool = reference_pool(key)
        source: object = reference_pool_url(key)
    elif isinstance(name_or_path, str) and key in _FILES:
        path = pool_path(key)
        if key == "general" and not path.exists():
            pool = general_pool()
        elif key == "common_words":
            if not path.exists():
                raise FileNotFoundError(f"pool file not found: {path} (regenerate it with "
                                        "'python -m helpers.data.pools --write common_words', which needs wordfreq)")
            pool = _read_lines(path, key, prop="word", value_is_text=True)
        else:
            if not path.exists():
                raise FileNotFoundError(f"pool file not found: {path}")
            pool = _read_tsv(path, key)
        source = path
    else:
        path = Path(key)
        if not path.exists() and not path.suffix and os.sep not in key and "/" not in key:
            raise ValueError(f"unknown pool {key!r}: not a known name "
                             f"({', '.join(POOL_NAMES + REFERENCE_POOL_NAMES)}) nor an existing file")
        if path.suffix.lower() == ".tsv":
            pool = _read_tsv(path, path.stem)
        else:
            pool = _read_lines(path, path.stem)
        source = path
    if len(pool) == 0:
        raise ValueError(f"{source}: the pool is empty (no texts)")
    return _dedupe(pool, on_duplicate, source)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.data.pools [--write [NAME ...]] [--check [NAME ...]] [--counts]``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.data.pools", description=(
        "Regenerate or check the pools in data/pools/ from their generators. Without names: "
        f"{' and '.join(_NEEDS_NOTHING)} (common_words needs wordfreq: name it)."))
    parser.add_argument("--write", nargs="*", metavar="NAME", choices=POOL_NAMES,
                        help="regenerate these pools' files")
    parser.add_argument("--check", nargs="*", metavar="NAME", choices=POOL_NAMES,
                        help="exit 1 if a shipped file differs from its generator")
    parser.add_argument("--counts", action="store_true", help="print the general pool's descriptions per property")
    parser.add_argument("--path", default=None, help="file to use instead of the default (one pool only)")
    args = parser.parse_args(argv)
    if args.write is None and args.check is None and not args.counts:
        parser.print_help()
        return 0
    written = list(args.write or _NEEDS_NOTHING) if args.write is not None else []
    checked = list(args.check or _NEEDS_NOTHING) if args.check is not None else []
    if args.path and len(written + checked) != 1:
        parser.error("--path goes with exactly one pool name")
    for name in written:
        out = write_pool(name, args.path)
        print(f"wrote {len(load_pool(out, on_duplicate='keep'))} {name} texts to {out}")
    ok = True
    for name in checked:
        path = Path(args.path) if args.path else pool_path(name)
        same = check_pool(name, path)
        ok &= same
        print(f"{path}: {'up to date' if same else 'differs from its generator (python -m helpers.data.pools --write ' + name + ')'}")
    if args.counts:
        for p, n in general_pool().counts().items():
            print(f"{p}\t{n}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
