"""The world's vocabularies, factors, splits and :class:`WorldConfig` (no randomness here)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

# ---------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "diamond",
    "heart",
    "hexagon",
)
COLOURS: tuple[str, ...] = (
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
)
#: Grid cells in row-major order: index = 3 * row + column.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: tuple[str, ...] = ("water", "grass", "sand", "brick", "sky", "snow")
#: Count values; index ``k`` means ``k + 1`` objects.
COUNTS: tuple[str, ...] = ("one", "two", "three")
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted")
#: Family 0 plays the landbirds of Waterbirds, family 1 the waterbirds.
FAMILIES: tuple[str, ...] = ("walker", "swimmer")

#: Ordered vocabulary of every factor, keyed by factor name.
FACTORS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "shape": SHAPES,
        "colour": COLOURS,
        "position": POSITIONS,
        "size": SIZES,
        "background": BACKGROUNDS,
        "count": COUNTS,
        "pattern": PATTERNS,
        "family": FAMILIES,
    }
)
FACTOR_NAMES: tuple[str, ...] = tuple(FACTORS)

#: Family index of every shape (aligned with :data:`SHAPES`).
#: Swimmers: circle, star, diamond, heart.  Walkers: square, triangle, cross, hexagon.
SHAPE_FAMILY: tuple[int, ...] = (1, 0, 0, 1, 0, 1, 1, 0)
#: Habitat background of each family: walkers live on grass, swimmers on water.
FAMILY_HABITAT: Mapping[str, str] = MappingProxyType({"walker": "grass", "swimmer": "water"})

#: Group ``g = 2 * family + (background == "water")`` for scenes on water or grass.
GROUP_NAMES: tuple[str, ...] = (
    "walker on grass",
    "walker on water",
    "swimmer on grass",
    "swimmer on water",
)
#: The same groups named as in Waterbirds (landbird = walker, land = grass).
WATERBIRDS_GROUP_NAMES: tuple[str, ...] = (
    "landbird on land",
    "landbird on water",
    "waterbird on land",
    "waterbird on water",
)

#: Splits; ``"waterbirds"`` is the balanced group test set of :func:`waterbirds_test_set`.
SPLITS: tuple[str, ...] = ("train", "val", "test", "waterbirds")
SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}

#: Reference RGB value of each colour (aligned with :data:`COLOURS`); scenes jitter it.
COLOUR_RGB = np.array(
    [
        (220, 30, 30),
        (40, 205, 55),
        (35, 70, 235),
        (250, 225, 25),
        (150, 45, 200),
        (255, 140, 10),
        (250, 250, 250),
        (15, 15, 15),
    ],
    dtype=np.int16,
)
COLOUR_RGB.setflags(write=False)

WATER = BACKGROUNDS.index("water")
GRASS = BACKGROUNDS.index("grass")
HABITAT_BACKGROUNDS = (GRASS, WATER)  # indexed by family
FAMILY_SHAPES = tuple(
    tuple(i for i, f in enumerate(SHAPE_FAMILY) if f == fam) for fam in range(len(FAMILIES))
)
_FACTOR_ALIASES = {"color": "colour"}


def check_factor(factor: str) -> str:
    name = _FACTOR_ALIASES.get(factor, factor)
    if name not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; expected one of {', '.join(FACTOR_NAMES)}")
    return name


def check_split(split: str) -> int:
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return SPLIT_IDS[split]


def check_nonneg_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value}")
    return int(value)


def group_of(family: int, background: int) -> int:
    """Waterbirds group of a (family, background) pair, or -1 off water and grass."""
    if background == WATER:
        return 2 * int(family) + 1
    if background == GRASS:
        return 2 * int(family)
    return -1


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


#: world-v2's object radius of each size (pixels at 64 px): the defaults of :class:`WorldConfig`
#: and of a layout drawn without world-v3's extra draws.
V2_RADII: tuple[tuple[float, float], tuple[float, float]] = ((6.2, 6.8), (9.2, 9.6))


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the world.  The defaults are the ones used in the course.

    Attributes:
        image_size: side of the square images in pixels.  Object and cell
            geometry scale with it; fill patterns, outlines and fine texture
            grain are pixel-sized and tuned for the default 64.
        habitat_fraction: fraction of ``"train"`` scenes that are habitat scenes.
        spurious_p: in a habitat scene, probability that the background is the
            family's habitat (water for swimmers, grass for walkers).
        colour_jitter: maximum absolute per-channel jitter of object colours.
        outline: draw a one-pixel contrasting outline around objects, so that
            every colour stays visible on every background.
        p_shape, p_colour, p_background, p_position, p_size, p_count, p_family,
        p_pattern: probability that a caption mentions each factor.
        max_caption_tokens: bound on the CLIP BPE length of captions, start and
            end tokens included.
        name: the world's version (``"world-v2"``, ``"world-v3"``; :data:`WORLDS`).
        small_radius, large_radius: range of the object radius of each size, in pixels at 64 px
            (scaled with ``image_size``); scenes of two or three objects keep below
            ``multi_radius_max`` so that objects in distinct cells never overlap.
        outline_p: probability that a scene's objects get the outline (when ``outline``).
        rotation: largest rotation of the objects, in degrees, either way.
        clutter_p: probability that a scene holds unnamed distractors: small objects of other
            kinds (:data:`DISTRACTORS`) and other colours, painted under the named objects and
            never named in captions.
        max_distractors: at most this many distractors in a cluttered scene (at least one).
        habitat_caption_p: in a habitat scene, probability that the caption names the family
            *and* the background ("a swimmer on a lake"), as web captions name the habitat with
            the bird; the evaluation splits are not affected.
        free_centre: the centre of a lone object lies anywhere in its cell (kept inside the
            image), instead of near the cell's middle.
    """

    image_size: int = 64
    habitat_fraction: float = 0.5
    spurious_p: float = 0.95
    colour_jitter: int = 12
    outline: bool = True
    p_shape: float = 0.75
    p_colour: float = 0.7
    p_background: float = 0.6
    p_position: float = 0.75
    p_size: float = 0.45
    p_count: float = 0.5
    p_family: float = 0.15
    p_pattern: float = 0.02
    max_caption_tokens: int = 16
    name: str = "world-v2"
    small_radius: tuple[float, float] = V2_RADII[0]
    large_radius: tuple[float, float] = V2_RADII[1]
    multi_radius_max: float = 9.6
    outline_p: float = 1.0
    rotation: float = 0.0
    clutter_p: float = 0.0
    max_distractors: int = 2
    habitat_caption_p: float = 0.0
    free_centre: bool = False

    @property
    def extended(self) -> bool:
        """Whether scenes draw anything beyond world-v2's draws (a stream of their own)."""
        return (self.outline_p < 1.0 or self.rotation > 0 or self.clutter_p > 0 or self.free_centre
                or (self.small_radius, self.large_radius) != V2_RADII)

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise ValueError(f"image_size must be an integer >= 32, got {self.image_size!r}")
        for f in fields(self):
            if f.name.startswith("p_") or f.name in ("habitat_fraction", "spurious_p"):
                v = getattr(self, f.name)
                if not 0.0 <= float(v) <= 1.0:
                    raise ValueError(f"{f.name} must lie in [0, 1], got {v!r}")
        if not 0 <= self.colour_jitter <= 60:
            raise ValueError(f"colour_jitter must lie in [0, 60], got {self.colour_jitter!r}")
        if self.max_caption_tokens < 8:
            raise ValueError(f"max_caption_tokens must be >= 8, got {self.max_caption_tokens!r}")
        for what in ("outline_p", "clutter_p", "habitat_caption_p"):
            if not 0.0 <= float(getattr(self, what)) <= 1.0:
                raise ValueError(f"{what} must lie in [0, 1], got {getattr(self, what)!r}")
        for what in ("small_radius", "large_radius"):
            lo, hi = getattr(self, what)
            if not 2.0 <= lo <= hi <= 30.0:
                raise ValueError(f"{what} must be (lo, hi) with 2 <= lo <= hi <= 30 px, got {(lo, hi)!r}")
        if not 2.0 <= self.multi_radius_max <= 10.0:
            raise ValueError(f"multi_radius_max must lie in [2, 10] px (objects in adjacent cells would "
                             f"overlap above 10), got {self.multi_radius_max!r}")
        if not 0.0 <= self.rotation <= 45.0:
            raise ValueError(f"rotation must lie in [0, 45] degrees, got {self.rotation!r}")
        if not 1 <= self.max_distractors <= 4:
            raise ValueError(f"max_distractors must lie in [1, 4], got {self.max_distractors!r}")


#: The world's versions. ``world-v2`` is what ``WorldConfig()`` gives (its scenes stay the same
#: draw for draw); ``world-v3`` adds what real photos have and world-v2 lacked (see the model card):
#: objects over a 4x range of sizes (radius 5.5 to 22 px at 64 px; small up to 8, large from 9.6),
#: with and without outlines and
#: turned by up to 20 degrees, lone objects anywhere in their cell, unnamed clutter in 40% of the
#: scenes, and habitat scenes whose captions name the family with its habitat half of the time.
WORLDS: Mapping[str, WorldConfig] = MappingProxyType({
    "world-v2": WorldConfig(),
    "world-v3": WorldConfig(name="world-v3", small_radius=(5.5, 8.0), large_radius=(10.0, 22.0),
                            multi_radius_max=9.6, outline_p=0.5, rotation=20.0, clutter_p=0.4,
                            max_distractors=2, habitat_caption_p=0.5, free_centre=True),
})


def world_config(name: "str | WorldConfig | None" = None) -> WorldConfig:
    """The configuration of a world version by name (``None``: world-v2, ``WorldConfig()``)."""
    if name is None:
        return WORLDS["world-v2"]
    if isinstance(name, WorldConfig):
        return name
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; expected one of {', '.join(WORLDS)}")
    return WORLDS[name]
