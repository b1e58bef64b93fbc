"""The texts of the world's tagged TextSpan pool (``data/pools/world_pool.tsv``).

:func:`text_pool` lists them; reading, writing and regenerating pool files is
:mod:`helpers.data.pools`' job (``python -m helpers.data.pools --write world``; in code
``pools.pool_path("world")``, ``pools.write_pool("world")``, ``pools.load_pool("world")``).
"""

from __future__ import annotations

from .captions import POSITION_PHRASES, SHAPE_PLURALS, article
from .config import COLOURS, FACTORS, POSITIONS, SHAPES

_POOL_SHAPE_EXTRA = {
    "circle": ("a round disc", "a ring shaped outline"),
    "square": ("a square block", "a box with four equal sides"),
    "triangle": ("a triangular sign", "a pointed wedge"),
    "star": ("a five pointed star", "a starfish outline"),
    "cross": ("a plus sign", "a medical cross symbol"),
    "diamond": ("a rhombus", "a lozenge"),
    "heart": ("a love heart", "a valentine symbol"),
    "hexagon": ("a six sided shape", "a honeycomb cell"),
}
_POOL_BACKGROUND = {
    "water": (
        "water",
        "a photo taken on water",
        "ripples on water",
        "a lake",
        "the sea",
        "waves",
        "an object floating on water",
        "a water scene",
        "the surface of a lake",
    ),
    "grass": (
        "grass",
        "a photo taken on grass",
        "blades of grass",
        "a lawn",
        "a meadow",
        "a field of grass",
        "an object lying on grass",
        "a grass scene",
        "a garden lawn",
    ),
    "sand": (
        "sand",
        "a photo taken on sand",
        "grains of sand",
        "a beach",
        "the desert",
        "sand dunes",
        "an object lying on sand",
        "a sand scene",
        "sandy ground",
    ),
    "brick": (
        "a brick wall",
        "a photo taken in front of bricks",
        "rows of bricks",
        "bricks and mortar",
        "a masonry wall",
        "a wall made of bricks",
        "an object on a brick wall",
        "a brick scene",
        "brickwork",
    ),
    "sky": (
        "the sky",
        "a photo of the sky",
        "clouds",
        "a cloudy sky",
        "fluffy clouds",
        "the open air",
        "an object flying in the sky",
        "a sky scene",
        "the sky with clouds",
    ),
    "snow": (
        "snow",
        "a photo taken on snow",
        "fresh snow",
        "snowy ground",
        "a snowfield",
        "a winter scene",
        "an object lying in the snow",
        "a snow scene",
        "frost and snow",
    ),
}
_POOL_SIZE = {
    "small": (
        "a small object",
        "a tiny shape",
        "something little",
        "a small thing",
        "a miniature shape",
        "a photo of a small object",
        "small",
        "a little item",
    ),
    "large": (
        "a large object",
        "a big shape",
        "something big",
        "a large thing",
        "a huge shape",
        "a photo of a large object",
        "large",
        "a big item",
    ),
}
_POOL_COUNT = {
    "one": (
        "one object",
        "a single object",
        "a single shape",
        "only one thing",
        "a photo of one object",
        "one item",
        "a lone shape",
        "exactly one object",
    ),
    "two": (
        "two objects",
        "a pair of shapes",
        "two things",
        "a photo of two objects",
        "two items",
        "a couple of shapes",
        "two identical shapes",
        "exactly two objects",
    ),
    "three": (
        "three objects",
        "a trio of shapes",
        "three things",
        "a photo of three objects",
        "three items",
        "a group of three shapes",
        "three identical shapes",
        "exactly three objects",
    ),
}
_POOL_PATTERN = {
    "solid": (
        "a solid object",
        "a plain shape",
        "a solid fill",
        "a uniform fill",
        "something plain",
        "a shape without a pattern",
        "a photo of a plain object",
        "a flat fill",
    ),
    "striped": (
        "a striped object",
        "stripes",
        "a shape with stripes",
        "a striped pattern",
        "diagonal stripes",
        "something striped",
        "a photo of a striped object",
        "a zebra pattern",
    ),
    "dotted": (
        "a dotted object",
        "dots",
        "a shape with dots",
        "a polka dot pattern",
        "spots",
        "something spotted",
        "a photo of a dotted object",
        "a dotted pattern",
    ),
}
_POOL_FAMILY = {
    "walker": (
        "a walker",
        "a photo of a walker",
        "walkers",
        "a walking creature",
        "a land animal",
        "a creature that walks",
        "a walking bird",
        "a terrestrial creature",
    ),
    "swimmer": (
        "a swimmer",
        "a photo of a swimmer",
        "swimmers",
        "a swimming creature",
        "an aquatic animal",
        "a creature that swims",
        "a swimming bird",
        "an aquatic creature",
    ),
}
_POOL_OTHER = {
    "animal": (
        "a photo of a dog",
        "a cat sleeping",
        "a horse",
        "an elephant",
        "a lion",
        "a cow in a field",
        "a rabbit",
        "a butterfly",
        "a parrot",
        "a tiger",
        "a monkey",
        "a spider",
    ),
    "place": (
        "a city at night",
        "a busy street",
        "a mountain landscape",
        "a forest",
        "a kitchen",
        "an office",
        "a living room",
        "a bridge",
        "a highway",
        "a train station",
        "a library",
        "a classroom",
    ),
    "object": (
        "a car",
        "a bicycle",
        "a chair",
        "a laptop",
        "a cup of coffee",
        "a book",
        "a phone",
        "a clock",
        "a guitar",
        "a pair of shoes",
        "a lamp",
        "an umbrella",
    ),
    "person": (
        "a person smiling",
        "a crowd of people",
        "a child playing",
        "a man in a suit",
        "a woman reading",
        "a portrait of a face",
        "a football player",
        "a chef cooking",
        "a dancer",
        "a soldier",
    ),
    "style": (
        "a blurry photo",
        "an oil painting",
        "a pencil sketch",
        "a cartoon",
        "a pixelated image",
        "a low resolution photo",
        "a vintage photograph",
        "a screenshot",
        "a dark photo",
        "a mosaic",
    ),
    "food": (
        "a pizza",
        "a bowl of soup",
        "a sandwich",
        "an apple",
        "a cake",
        "a plate of pasta",
        "a basket of fruit",
        "a loaf of bread",
    ),
    "text": (
        "a page of text",
        "a handwritten note",
        "a sign with letters",
        "a barcode",
        "a map",
        "a chart",
        "a calendar",
        "a newspaper",
    ),
    "nature": (
        "a sunset",
        "a rainy day",
        "a thunderstorm",
        "a volcano",
        "a rocky cliff",
        "a tree",
        "flowers",
        "autumn leaves",
        "a cave",
        "a rainbow",
    ),
    "vehicle": (
        "an airplane",
        "a bus",
        "a truck",
        "a motorcycle",
        "a rocket",
        "a tractor",
        "a helicopter",
        "a subway train",
    ),
    "abstract": (
        "a number",
        "a letter of the alphabet",
        "music",
        "happiness",
        "a question",
        "an idea",
        "silence",
        "a memory",
    ),
}


def text_pool() -> list[tuple[str, str, str]]:
    """Tagged descriptions for TextSpan: ``(text, property, value)`` triples.

    ``property`` is a factor name (value one of its value names) or
    ``"other"`` for distractors, whose value is a coarse topic ("animal",
    "place", ...).  Texts are unique; the order is fixed.
    """
    rows: list[tuple[str, str, str]] = []
    for v in SHAPES:
        pl = SHAPE_PLURALS[v]
        texts = (
            f"a {v}",
            f"a photo of a {v}",
            f"a {v} shape",
            f"a drawing of a {v}",
            f"an image with a {v}",
            f"a {v} symbol",
            pl,
            f"a simple {v}",
            *_POOL_SHAPE_EXTRA[v],
        )
        rows += [(t, "shape", v) for t in texts]
    for v in COLOURS:
        texts = (
            f"{article(v)} {v} object",
            f"something {v}",
            f"the colour {v}",
            f"{article(v)} {v} shape",
            f"a photo of something {v}",
            f"painted {v}",
            v,
            f"{article(v)} {v} thing",
        )
        rows += [(t, "colour", v) for t in texts]
    for v in POSITIONS:
        a, b, c = POSITION_PHRASES[v]
        where = "the center of the image" if v == "center" else f"the {v} of the image"
        texts = (
            f"an object {a}",
            f"something {b}",
            f"a shape {c}",
            v,
            where,
            f"a photo with an object {a}",
            f"a thing {b}",
            f"an item {c}",
        )
        rows += [(t, "position", v) for t in texts]
    for table, prop in (
        (_POOL_SIZE, "size"),
        (_POOL_BACKGROUND, "background"),
        (_POOL_COUNT, "count"),
        (_POOL_PATTERN, "pattern"),
        (_POOL_FAMILY, "family"),
    ):
        for v in FACTORS[prop]:
            rows += [(t, prop, v) for t in table[v]]
    for topic, texts in _POOL_OTHER.items():
        rows += [(t, "other", topic) for t in texts]
    seen: set[str] = set()
    for t, _, _ in rows:
        if t in seen:
            raise AssertionError(f"duplicate pool text {t!r}")
        seen.add(t)
    return rows
