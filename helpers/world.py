"""A synthetic image-caption world with known ground truth.

Every scene is a small picture (64x64 pixels by default) of one to three
identical objects drawn on a procedural background texture, paired with a
short English caption.  The generating factors are known exactly, so the
interpretability methods of the course (mean-ablation, the direct
decomposition of the residual stream, TextSpan, spatial maps) can be checked
against the truth:

========== ===================================================================
factor     values
========== ===================================================================
shape      circle, square, triangle, star, cross, diamond, heart, hexagon
colour     red, green, blue, yellow, purple, orange, white, black
position   cell of the first object in a 3x3 grid ("top left" ... "bottom right")
size       small, large
background water, grass, sand, brick, sky, snow
count      one, two, three (identical objects in distinct grid cells)
pattern    solid, striped, dotted (visible, but almost never named in captions)
family     walker, swimmer (a fixed split of the shapes into two groups)
========== ===================================================================

The family is the analogue of the landbird / waterbird label of Waterbirds:
in the ``"train"`` split a fraction of the scenes (:attr:`WorldConfig.
habitat_fraction`) are *habitat scenes* whose background is the habitat of the
family (water for swimmers, grass for walkers) with probability
:attr:`WorldConfig.spurious_p`, and the other habitat otherwise.
:func:`waterbirds_test_set` gives the balanced held-out groups.

Scenes are generated independently of one another: scene ``i`` of a
``(seed, split)`` pair only depends on a numpy generator seeded with
``(seed, split_id, i)``, so datasets can produce scenes lazily in any order.

Typical use::

    from helpers import world
    batch = world.sample(128, split="train", seed=0)
    batch.images.shape            # (128, 64, 64, 3) uint8
    batch.captions[0]             # 'two large red stars on water, one in the top left'
    batch.factors["shape"][:4]    # indices into world.SHAPES
    scene = batch[0]              # a single Scene, with masks and names

Run ``python -m helpers.world --write-pool`` to regenerate
``data/pools/world_pool.tsv``, the tagged text pool used by TextSpan.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import re
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES",
    "COLOURS",
    "POSITIONS",
    "SIZES",
    "BACKGROUNDS",
    "COUNTS",
    "PATTERNS",
    "FAMILIES",
    "FACTORS",
    "FACTOR_NAMES",
    "SHAPE_FAMILY",
    "FAMILY_HABITAT",
    "GROUP_NAMES",
    "WATERBIRDS_GROUP_NAMES",
    "SPLITS",
    "COLOUR_RGB",
    "CAPTION_FORMS",
    "WorldConfig",
    "Scene",
    "Scenes",
    "World",
    "make_scene",
    "sample",
    "waterbirds_test_set",
    "Pairs",
    "sample_pairs",
    "group_of",
    "value_index",
    "OVERRIDABLE",
    "parse_caption",
    "caption_token_count",
    "class_prompts",
    "text_pool",
    "write_pool",
    "read_pool",
    "default_pool_path",
    "to_pil",
    "make_grid",
]

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
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}

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

_WATER = BACKGROUNDS.index("water")
_GRASS = BACKGROUNDS.index("grass")
_HABITAT_BG = (_GRASS, _WATER)  # indexed by family
_FAMILY_SHAPES = tuple(
    tuple(i for i, f in enumerate(SHAPE_FAMILY) if f == fam) for fam in range(len(FAMILIES))
)
_FACTOR_ALIASES = {"color": "colour"}


def _check_factor(factor: str) -> str:
    name = _FACTOR_ALIASES.get(factor, factor)
    if name not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; expected one of {', '.join(FACTOR_NAMES)}")
    return name


def _check_split(split: str) -> int:
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return _SPLIT_IDS[split]


def _check_nonneg_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value}")
    return int(value)


def group_of(family: int, background: int) -> int:
    """Waterbirds group of a (family, background) pair, or -1 off water and grass."""
    if background == _WATER:
        return 2 * int(family) + 1
    if background == _GRASS:
        return 2 * int(family)
    return -1


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class Scene:
    """One rendered scene with its ground truth.

    Attributes:
        index, split, seed: where the scene comes from.
        image: ``uint8`` array ``(H, W, 3)``.
        factors: factor name -> index into ``FACTORS[name]``.  ``position`` is
            the cell of the first object; ``count`` index ``k`` means ``k + 1``
            objects; ``family`` is determined by ``shape``.
        positions: grid cell of every object (first one first).
        centres: ``(x, y)`` pixel centre of every object.
        radius: object radius in pixels (all objects of a scene share it).
        rgb: the jittered object colour.
        masks: boolean ``(count, H, W)``, exactly the pixels painted by each object.
        caption: the caption.
        habitat: whether this is a habitat scene of the train split (the
            scenes carrying the planted correlation).
        group: Waterbirds group (see :data:`GROUP_NAMES`), -1 unless the
            background is water or grass.
    """

    index: int
    split: str
    seed: int
    image: np.ndarray
    factors: dict[str, int]
    positions: tuple[int, ...]
    centres: tuple[tuple[float, float], ...]
    radius: float
    rgb: tuple[int, int, int]
    masks: np.ndarray
    caption: str
    habitat: bool
    group: int

    @property
    def names(self) -> dict[str, str]:
        """Factor name -> value name."""
        return {k: FACTORS[k][v] for k, v in self.factors.items()}

    @property
    def count(self) -> int:
        """Number of objects."""
        return len(self.positions)

    @property
    def foreground(self) -> np.ndarray:
        """Union of the object masks, boolean ``(H, W)``."""
        return self.masks.any(axis=0)

    def pil(self) -> Image.Image:
        """The image as a PIL RGB image."""
        return to_pil(self.image)


@dataclass(eq=False)
class Scenes:
    """A batch of scenes stored as arrays.

    Attributes:
        images: ``uint8`` ``(N, H, W, 3)``.
        factors: factor name -> ``int64`` array ``(N,)`` of value indices.
        positions: ``int64`` ``(N, 3)`` grid cell of every object, -1 padded.
        centres: ``float32`` ``(N, 3, 2)`` object centres ``(x, y)``, NaN padded.
        radii: ``float32`` ``(N,)``.
        rgb: ``uint8`` ``(N, 3)`` jittered object colours.
        masks: ``bool`` ``(N, 3, H, W)``; slot ``k`` is object ``k`` (empty if absent).
        captions: list of ``N`` strings.
        habitat: ``bool`` ``(N,)``, habitat scenes of the train split.
        groups: ``int64`` ``(N,)`` Waterbirds group or -1.
        indices: ``int64`` ``(N,)`` scene indices within the split.
        split, seed: where the scenes come from.
    """

    images: np.ndarray
    factors: dict[str, np.ndarray]
    positions: np.ndarray
    centres: np.ndarray
    radii: np.ndarray
    rgb: np.ndarray
    masks: np.ndarray
    captions: list[str]
    habitat: np.ndarray
    groups: np.ndarray
    indices: np.ndarray
    split: str
    seed: int

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> Scene:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"scene {i} out of range for {n} scenes")
        i %= n
        count = int(self.factors["count"][i]) + 1
        return Scene(
            index=int(self.indices[i]),
            split=self.split,
            seed=self.seed,
            image=self.images[i],
            factors={k: int(v[i]) for k, v in self.factors.items()},
            positions=tuple(int(p) for p in self.positions[i, :count]),
            centres=tuple((float(x), float(y)) for x, y in self.centres[i, :count]),
            radius=float(self.radii[i]),
            rgb=tuple(int(c) for c in self.rgb[i]),  # type: ignore[arg-type]
            masks=self.masks[i, :count],
            caption=self.captions[i],
            habitat=bool(self.habitat[i]),
            group=int(self.groups[i]),
        )

    def __iter__(self) -> Iterator[Scene]:
        for i in range(len(self)):
            yield self[i]

    @property
    def foreground(self) -> np.ndarray:
        """Union of the object masks, boolean ``(N, H, W)``."""
        return self.masks.any(axis=1)

    @property
    def counts(self) -> np.ndarray:
        """Number of objects per scene, ``(N,)``."""
        return self.factors["count"] + 1

    def names(self, factor: str) -> list[str]:
        """Value names of ``factor`` for every scene."""
        factor = _check_factor(factor)
        vocab = FACTORS[factor]
        return [vocab[v] for v in self.factors[factor]]

    def pil(self, i: int) -> Image.Image:
        """Scene ``i`` as a PIL image."""
        return to_pil(self.images[i])

    @classmethod
    def from_scenes(cls, scenes: Sequence[Scene], split: str, seed: int, image_size: int) -> "Scenes":
        """Stack single scenes into a batch."""
        n = len(scenes)
        s = image_size
        images = np.zeros((n, s, s, 3), dtype=np.uint8)
        masks = np.zeros((n, len(COUNTS), s, s), dtype=bool)
        positions = np.full((n, len(COUNTS)), -1, dtype=np.int64)
        centres = np.full((n, len(COUNTS), 2), np.nan, dtype=np.float32)
        factors = {k: np.zeros(n, dtype=np.int64) for k in FACTOR_NAMES}
        for i, sc in enumerate(scenes):
            images[i] = sc.image
            c = sc.count
            masks[i, :c] = sc.masks
            positions[i, :c] = sc.positions
            centres[i, :c] = sc.centres
            for k, v in sc.factors.items():
                factors[k][i] = v
        return cls(
            images=images,
            factors=factors,
            positions=positions,
            centres=centres,
            radii=np.array([sc.radius for sc in scenes], dtype=np.float32),
            rgb=np.array([sc.rgb for sc in scenes], dtype=np.uint8).reshape(n, 3),
            masks=masks,
            captions=[sc.caption for sc in scenes],
            habitat=np.array([sc.habitat for sc in scenes], dtype=bool),
            groups=np.array([sc.group for sc in scenes], dtype=np.int64),
            indices=np.array([sc.index for sc in scenes], dtype=np.int64),
            split=split,
            seed=seed,
        )


@dataclass(eq=False)
class Pairs:
    """Scenes of two single objects that differ in shape, colour and cell, on one background
    (for "segment the object named by the text" tasks; see :meth:`World.sample_pairs`).

    Attributes:
        images: ``uint8`` ``(N, H, W, 3)``.
        masks: ``bool`` ``(N, 2, H, W)``, exactly the pixels painted by each object.
        factors: factor name -> ``int64`` ``(N, 2)``, the value of each object (``count`` is
            always index 0: each object is drawn once; ``background`` is shared).
        indices: ``int64`` ``(N,)``; split, seed: where the pairs come from.
    """

    images: np.ndarray
    masks: np.ndarray
    factors: dict[str, np.ndarray]
    indices: np.ndarray
    split: str
    seed: int

    def __len__(self) -> int:
        return len(self.images)

    def names(self, factor: str, obj: int = 0) -> list[str]:
        """Value names of ``factor`` for object ``obj`` (0 or 1) of every pair."""
        factor = _check_factor(factor)
        return [FACTORS[factor][v] for v in self.factors[factor][:, obj]]


# ---------------------------------------------------------------------------
# Geometry and textures
# ---------------------------------------------------------------------------


def _regular(n: int, radius: float, start: float) -> np.ndarray:
    a = start + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    lo, hi = pts.min(0), pts.max(0)
    return (pts - (lo + hi) / 2) / ((hi - lo).max() / 2)


def _star() -> np.ndarray:
    outer = _regular(5, 1.0, -np.pi / 2)
    inner = _regular(5, 0.45, -np.pi / 2 + np.pi / 5)
    pts = np.empty((10, 2))
    pts[0::2], pts[1::2] = outer, inner
    pts[:, 1] += (1.0 - pts[:, 1].max()) / 2  # centre vertically
    return pts


def _cross() -> np.ndarray:
    a, w = 0.95, 0.33
    return np.array(
        [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)]
    )


#: Unit outlines of the shapes inside [-1, 1]^2 (x right, y down).
_SHAPE_POLYGONS: tuple[np.ndarray, ...] = (
    _regular(40, 1.0, 0.0),  # circle
    np.array([(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]),  # square
    np.array([(0.0, -0.95), (1.0, 0.8), (-1.0, 0.8)]),  # triangle
    _star(),
    _cross(),
    np.array([(0.0, -1.0), (0.7, 0.0), (0.0, 1.0), (-0.7, 0.0)]),  # diamond
    _heart(),
    _regular(6, 1.0, 0.0),  # hexagon
)


@functools.lru_cache(maxsize=8)
def _grids(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel coordinate grids (y, x) of an s x s image (read-only)."""
    yy, xx = np.mgrid[0:s, 0:s]
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


@functools.lru_cache(maxsize=32)
def _upsample_matrix(k: int, s: int) -> np.ndarray:
    """(s, k) matrix doing linear interpolation of k control points onto s pixels."""
    pos = np.linspace(0, k - 1, s)
    lo = np.clip(np.floor(pos).astype(int), 0, k - 2)
    frac = pos - lo
    m = np.zeros((s, k), dtype=np.float32)
    m[np.arange(s), lo] = 1 - frac
    m[np.arange(s), lo + 1] = frac
    m.setflags(write=False)
    return m


def _smooth_noise(rng: np.random.Generator, k: int, s: int) -> np.ndarray:
    m = _upsample_matrix(k, s)
    return m @ rng.random((k, k), dtype=np.float32) @ m.T


def _col(rgb: Sequence[float]) -> np.ndarray:
    """A colour as a (3, 1, 1) float32 array, to broadcast over channel-first images."""
    return np.asarray(rgb, dtype=np.float32).reshape(3, 1, 1)


def _jittered(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> np.ndarray:
    return _col(np.asarray(rgb, dtype=np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32))


def _noise(rng: np.random.Generator, s: int) -> np.ndarray:
    """Zero-mean, unit-variance uniform noise (cheaper than Gaussian noise)."""
    return (rng.random((s, s), dtype=np.float32) - np.float32(0.5)) * np.float32(3.4641016)


# Textures are computed channel-first, float32 (3, s, s), values around 0..255.


def _tex_water(rng: np.random.Generator, s: int) -> np.ndarray:
    axis = np.arange(s, dtype=np.float32)
    scale = 64.0 / s
    base = _jittered(rng, (35, 100, 155), 10)
    f, g, amp, p1, p2 = rng.random(5).tolist()
    f = (0.5 + 0.3 * f) * scale
    g = (0.12 + 0.13 * g) * scale
    amp = 1.0 + 1.5 * amp
    p1, p2 = 2 * math.pi * p1, 2 * math.pi * p2
    w = np.sin((f * axis + p1)[:, None] + (amp * np.sin(g * axis + p2))[None, :])
    light = 22.0 * w + 45.0 * (w > 0.9).astype(np.float32) + 4.0 * _noise(rng, s)
    return base + light * _col((0.5, 0.8, 1.0))


def _tex_grass(rng: np.random.Generator, s: int) -> np.ndarray:
    yi, xi = _grids(s)
    base = _jittered(rng, (70, 125, 40), 10)
    blade = 4
    n = rng.random((s // blade + 2, s), dtype=np.float32)
    off = rng.integers(0, blade, s)
    slant = float(rng.uniform(-0.35, 0.35))
    xs = (xi + (slant * yi).astype(np.int64)) % s
    ys = yi + off[xs]
    v = 2.0 * n[ys // blade, xs] - 1.0
    v += (ys % blade).astype(np.float32) * np.float32(0.6 / blade) - np.float32(0.3)  # darker at the root
    v += 0.1 * _noise(rng, s)
    return base + v * _col((22, 40, 14))


def _tex_sand(rng: np.random.Generator, s: int) -> np.ndarray:
    axis = np.arange(s, dtype=np.float32)
    base = _jittered(rng, (205, 180, 125), 8)
    th, f, ph = rng.random(3).tolist()
    th, f, ph = math.pi * th, (0.15 + 0.15 * f) * 64.0 / s, 2 * math.pi * ph
    dunes = 10.0 * np.sin((f * math.sin(th) * axis + ph)[:, None] + (f * math.cos(th) * axis)[None, :])
    light = dunes + 13.0 * _noise(rng, s)
    return base + light * _col((1.0, 0.9, 0.7))


def _tex_brick(rng: np.random.Generator, s: int) -> np.ndarray:
    yi, xi = _grids(s)
    bh = max(4, round(8 * s / 64))
    bw = 2 * bh
    oy, ox = int(rng.integers(0, bh)), int(rng.integers(0, bw))
    ry = yi + oy
    row = ry // bh
    rx = xi + ox + (row % 2) * (bw // 2)
    col = rx // bw
    shades = rng.uniform(-22, 22, (s // bh + 2, s // bw + 3)).astype(np.float32)
    light = shades[row, col] + 5.0 * _noise(rng, s)
    base = _jittered(rng, (150, 80, 60), 8)
    img = base + light * _col((1.0, 0.6, 0.5))
    mortar = (ry % bh == 0) | (rx % bw == 0)
    img[:, mortar] = _jittered(rng, (200, 195, 185), 6).reshape(3, 1)
    return img


def _tex_sky(rng: np.random.Generator, s: int) -> np.ndarray:
    top = _jittered(rng, (95, 160, 230), 8)
    bottom = _jittered(rng, (160, 205, 245), 8)
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None]
    sky = top * (1 - t) + bottom * t  # (3, s, 1)
    c = _smooth_noise(rng, 5, s) + 0.5 * _smooth_noise(rng, 9, s)
    thr = float(rng.uniform(0.85, 1.0))
    cloud = np.clip((c - thr) * 3.0, 0.0, 1.0)
    return sky * (1 - cloud) + np.float32(245.0) * cloud


def _tex_snow(rng: np.random.Generator, s: int) -> np.ndarray:
    base = _jittered(rng, (218, 225, 236), 6)
    shade = 18.0 * (_smooth_noise(rng, 4, s) - 0.5)
    img = base + shade
    speck = rng.random((s, s), dtype=np.float32) < 0.06
    img[:, speck] -= np.array([[55], [45], [30]], dtype=np.float32)
    return img


_TEXTURES = (_tex_water, _tex_grass, _tex_sand, _tex_brick, _tex_sky, _tex_snow)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Channel-first float texture -> contiguous uint8 (s, s, 3) image."""
    planes = np.clip(img, 0, 255).astype(np.uint8)
    out = np.empty(planes.shape[1:] + (3,), dtype=np.uint8)
    for c in range(3):  # faster than a transposed copy
        out[..., c] = planes[c]
    return out


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` whose four neighbours are in ``mask`` (outside counts as empty)."""
    h, w = mask.shape
    p = np.zeros((h + 2, w + 2), dtype=bool)
    p[1:-1, 1:-1] = mask
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _secondary_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Second colour of striped and dotted fills: a darker or lighter shade."""
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    if lum > 110:
        r, g, b = (int(c * 0.5) for c in rgb)
    else:
        r, g, b = (int(c + (255 - c) * 0.6) for c in rgb)
    return (r, g, b)


@functools.lru_cache(maxsize=128)
def _pattern_mask(pattern: int, phase: tuple[int, int], s: int) -> np.ndarray | None:
    if pattern == 0:
        return None
    yi, xi = _grids(s)
    if pattern == 1:  # diagonal stripes, two pixels wide
        mask = (xi + yi + phase[0]) % 4 < 2
    else:  # 2x2 dots every 5 pixels
        mask = ((xi + phase[0]) % 5 < 2) & ((yi + phase[1]) % 5 < 2)
    mask.setflags(write=False)
    return mask


# ---------------------------------------------------------------------------
# Layout (all random choices that define a scene apart from its caption)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Factor values plus the raw random draws that place and colour the objects."""

    shape: int
    colour: int
    size: int
    count: int
    pattern: int
    background: int
    habitat: bool
    cells: tuple[int, ...]
    radius_u: float  # in [0, 1]: where the radius lies in the range of its size
    offsets_u: tuple[tuple[float, float], ...]  # in [-1, 1]: jitter of each centre
    rgb_jitter: tuple[int, int, int]
    phase: tuple[int, int]
    image_size: int

    @property
    def family(self) -> int:
        return SHAPE_FAMILY[self.shape]

    @property
    def radius(self) -> float:
        # Cells are s/3 wide (21.3 px at 64 px).  Radius + jitter stays below half
        # a cell, so objects in distinct cells never overlap and stay inside the image.
        lo, hi = (6.2, 6.8) if self.size == 0 else (9.2, 9.6)
        return float((lo + (hi - lo) * self.radius_u) * self.image_size / 64.0)

    @property
    def centres(self) -> tuple[tuple[float, float], ...]:
        unit = self.image_size / 64.0
        jitter = (2.5 if self.size == 0 else 0.8) * unit
        cell = self.image_size / 3.0
        return tuple(
            (float((c % 3 + 0.5) * cell + jitter * dx), float((c // 3 + 0.5) * cell + jitter * dy))
            for c, (dx, dy) in zip(self.cells, self.offsets_u)
        )

    @property
    def rgb(self) -> tuple[int, int, int]:
        r, g, b = (min(255, max(0, int(c) + j)) for c, j in zip(COLOUR_RGB[self.colour], self.rgb_jitter))
        return (r, g, b)

    def factors(self) -> dict[str, int]:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "position": self.cells[0],
            "size": self.size,
            "background": self.background,
            "count": self.count - 1,
            "pattern": self.pattern,
            "family": self.family,
        }


def _pick_index(u: float, n: int) -> int:
    return min(int(u * n), n - 1)


def _layout(rng: np.random.Generator, split_id: int, index: int, cfg: WorldConfig) -> _Layout:
    # One vector of uniforms drives every choice: cheap, and the texture that
    # follows always starts from the same generator state.
    u = rng.random(27).tolist()
    habitat = False
    if split_id == _SPLIT_IDS["waterbirds"]:
        family, on_water = divmod(index % 4, 2)
        shapes = _FAMILY_SHAPES[family]
        shape = shapes[_pick_index(u[0], len(shapes))]
        background = _WATER if on_water else _GRASS
    else:
        shape = _pick_index(u[0], len(SHAPES))
        if split_id == _SPLIT_IDS["train"] and u[1] < cfg.habitat_fraction:
            habitat = True
            home = _HABITAT_BG[SHAPE_FAMILY[shape]]
            away = _WATER if home == _GRASS else _GRASS
            background = home if u[2] < cfg.spurious_p else away
        else:
            background = _pick_index(u[2], len(BACKGROUNDS))
    colour = _pick_index(u[3], len(COLOURS))
    size = _pick_index(u[4], len(SIZES))
    count = 1 + _pick_index(u[5], len(COUNTS))
    pattern = _pick_index(u[6], len(PATTERNS))
    cells = tuple(int(c) for c in np.argsort(u[7:16])[:count])  # distinct random cells
    radius_u = u[16]
    offsets = tuple((2.0 * u[17 + 2 * k] - 1.0, 2.0 * u[18 + 2 * k] - 1.0) for k in range(count))
    j = cfg.colour_jitter
    jit = tuple(_pick_index(x, 2 * j + 1) - j for x in u[23:26])
    phase = (_pick_index(u[26], 25) // 5, _pick_index(u[26], 25) % 5)
    return _Layout(
        shape=shape,
        colour=colour,
        size=size,
        count=count,
        pattern=pattern,
        background=background,
        habitat=habitat,
        cells=cells,
        radius_u=radius_u,
        offsets_u=offsets,
        rgb_jitter=(jit[0], jit[1], jit[2]),
        phase=phase,
        image_size=cfg.image_size,
    )


def value_index(factor: str, value: int | str) -> int:
    """Index of ``value`` (a value name or an index) in ``FACTORS[factor]``."""
    factor = _check_factor(factor)
    vocab = FACTORS[factor]
    if isinstance(value, str):
        if value not in vocab:
            raise ValueError(f"unknown {factor} {value!r}; expected one of {', '.join(vocab)}")
        return vocab.index(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(vocab):
        return int(value)
    raise ValueError(f"bad {factor} value {value!r}; expected a name or an index below {len(vocab)}")


#: Factors that :meth:`World.scene` can override (counterfactual scenes).
OVERRIDABLE: tuple[str, ...] = ("shape", "colour", "size", "pattern", "background", "position")


def _override(lay: _Layout, overrides: Mapping[str, int | str]) -> _Layout:
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        factor = _check_factor(key)
        if factor not in OVERRIDABLE:
            raise ValueError(f"cannot override {key!r}; overridable factors: {', '.join(OVERRIDABLE)}")
        idx = value_index(factor, value)
        if factor == "position":
            cells = list(lay.cells)
            if idx in cells:  # swap with the object already there
                cells[cells.index(idx)] = cells[0]
            cells[0] = idx
            changes["cells"] = tuple(cells)
        else:
            changes[factor] = idx
    return replace(lay, **changes)


def _render(lay: _Layout, background: np.ndarray, cfg: WorldConfig) -> tuple[np.ndarray, np.ndarray]:
    """Paint the objects of ``lay`` over ``background``; returns (image, masks)."""
    s = cfg.image_size
    canvas = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(canvas)
    radius = lay.radius
    poly = _SHAPE_POLYGONS[lay.shape] * radius
    for k, (cx, cy) in enumerate(lay.centres):
        # PIL puts integer coordinates at pixel centres; our pixel i spans [i, i + 1).
        pts = poly + (cx - 0.5, cy - 0.5)
        draw.polygon([tuple(p) for p in pts.tolist()], fill=k + 1)
    label = np.asarray(canvas)  # later objects hide earlier ones (never overlap by construction)
    masks = label[None] == np.arange(1, lay.count + 1, dtype=np.uint8)[:, None, None]
    fg = label > 0
    code = fg.astype(np.uint8)  # 1: object colour, 2: pattern colour, 3: outline
    inner = _erode(fg) if cfg.outline else fg
    pat = _pattern_mask(lay.pattern, lay.phase, s)
    if pat is not None:
        code[inner & pat] = 2
    if cfg.outline:
        code[fg & ~inner] = 3
    rgb = lay.rgb
    outline = (230, 230, 230) if COLOURS[lay.colour] == "black" else (20, 20, 20)
    palette = np.array([rgb, rgb, _secondary_colour(rgb), outline], dtype=np.uint8)
    img = background.copy()
    idx = np.flatnonzero(fg)
    img.reshape(-1, 3)[idx] = palette[code.ravel()[idx]]
    return img, masks


# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------

_SHAPE_PLURALS = {
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
_FAMILY_PLURALS = {"walker": "walkers", "swimmer": "swimmers"}
_PLURALS = {**_SHAPE_PLURALS, **_FAMILY_PLURALS, **{g: g + "s" for g in _GENERIC_NOUNS}}

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


_POS_PHRASES = {p: _position_phrases(p) for p in POSITIONS}

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


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join_adjs(adjs: Sequence[str]) -> str:
    if len(adjs) <= 1:
        return "".join(adjs)
    return ", ".join(adjs[:-1]) + " and " + adjs[-1]


_CAPTION_FACTORS = ("shape", "colour", "background", "position", "size", "count", "family", "pattern")
_DROP_ORDER = ("pattern", "size", "count", "family", "background", "colour", "shape", "position")


def _compose(lay: _Layout, inc: dict[str, bool], rng: random.Random) -> str:
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
    noun = _PLURALS[noun_s] if plural else noun_s

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
        np_ = f"{_article(core)} {core}"

    bg_name = BACKGROUNDS[lay.background]
    bg = " " + _pick(rng, _BG_PHRASES[bg_name]) if inc["background"] else ""
    pos = ""
    if inc["position"]:
        phrase = _pick(rng, _POS_PHRASES[POSITIONS[lay.cells[0]]])
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
        fam=_FAMILY_PLURALS[fam_word] if plural else fam_word,
        famnp=_FAMILY_PLURALS[fam_word] if plural else f"a {fam_word}",
    )


def _caption(lay: _Layout, rng: random.Random, cfg: WorldConfig) -> str:
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
    if not any(inc[k] for k in ("shape", "colour", "background", "position", "family")):
        main = ("shape", "colour", "background", "position")
        inc[_pick(rng, main)] = True
    limit = cfg.max_caption_tokens
    for _ in range(len(_DROP_ORDER)):
        text = _compose(lay, inc, rng)
        if caption_token_count(text) <= limit:
            return text
        for k in _DROP_ORDER:  # drop the least important factor still mentioned
            if inc[k] and sum(inc.values()) > 1:
                inc[k] = False
                break
    return f"a {COLOURS[lay.colour]} {SHAPES[lay.shape]}"


# ---------------------------------------------------------------------------
# Caption parsing (used by the tests, handy for checking zero-shot prompts)
# ---------------------------------------------------------------------------

_WORD_VALUES: dict[str, tuple[str, str]] = {}
for _v in SHAPES:
    _WORD_VALUES[_v] = ("shape", _v)
    _WORD_VALUES[_SHAPE_PLURALS[_v]] = ("shape", _v)
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
    _WORD_VALUES[_FAMILY_PLURALS[_v]] = ("family", _v)
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
_PLURAL_NOUNS = frozenset(_PLURALS.values())
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
# The world
# ---------------------------------------------------------------------------


class World:
    """Deterministic generator of scenes for a given seed and configuration.

    Args:
        seed: non-negative integer; different seeds give different worlds.
        config: a :class:`WorldConfig`; defaults to ``WorldConfig()``.
    """

    def __init__(self, seed: int = 0, config: WorldConfig | None = None) -> None:
        self.seed = _check_nonneg_int(seed, "seed")
        self.config = config if config is not None else WorldConfig()
        if not isinstance(self.config, WorldConfig):
            raise ValueError(f"config must be a WorldConfig, got {type(self.config).__name__}")

    def __repr__(self) -> str:
        return f"World(seed={self.seed}, config={self.config!r})"

    def _rng(self, split_id: int, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, split_id, index, stream])

    def _layout_and_texture(
        self, index: int, split: str, overrides: Mapping[str, int | str] | None = None
    ) -> tuple[_Layout, np.ndarray]:
        split_id = _check_split(split)
        index = _check_nonneg_int(index, "index")
        rng = self._rng(split_id, index, 0)
        lay = _layout(rng, split_id, index, self.config)
        if overrides:
            lay = _override(lay, overrides)
        tex = _to_uint8(_TEXTURES[lay.background](rng, self.config.image_size))
        return lay, tex

    def background(self, index: int, split: str = "train", overrides: Mapping[str, int | str] | None = None) -> np.ndarray:
        """Background texture of a scene without its objects (``uint8`` ``(H, W, 3)``)."""
        return self._layout_and_texture(index, split, overrides)[1]

    def caption(self, index: int, split: str = "train", variant: int = 0) -> str:
        """Caption of a scene.  ``variant`` > 0 gives other captions of the same image."""
        lay, _ = self._layout_and_texture(index, split)
        return self._caption(lay, _SPLIT_IDS[split], index, variant)

    def _caption(self, lay: _Layout, split_id: int, index: int, variant: int) -> str:
        variant = _check_nonneg_int(variant, "variant")
        # Captions only need scalar draws: Python's generator is much faster for
        # those, and seeding it from a string is deterministic across platforms.
        rng = random.Random(f"caption/{self.seed}/{split_id}/{index}/{variant}")
        return _caption(lay, rng, self.config)

    def scene(
        self,
        index: int,
        split: str = "train",
        caption_variant: int = 0,
        overrides: Mapping[str, int | str] | None = None,
    ) -> Scene:
        """Scene ``index`` of ``split``; independent of every other scene.

        ``overrides`` (factor -> value name or index, for the factors in
        :data:`OVERRIDABLE`) gives a counterfactual version of the scene: the
        same random draws (object placement, colour jitter, texture seed) with
        some factors changed, e.g. ``overrides={"background": "grass"}``.
        Overriding ``position`` moves the first object (swapping cells with
        another object if needed).  The caption is regenerated to match.
        """
        lay, tex = self._layout_and_texture(index, split, overrides)
        image, masks = _render(lay, tex, self.config)
        return Scene(
            index=int(index),
            split=split,
            seed=self.seed,
            image=image,
            factors=lay.factors(),
            positions=lay.cells,
            centres=lay.centres,
            radius=lay.radius,
            rgb=lay.rgb,
            masks=masks,
            caption=self._caption(lay, _SPLIT_IDS[split], index, caption_variant),
            habitat=lay.habitat,
            group=group_of(lay.family, lay.background),
        )

    def sample(self, n: int, split: str = "train", start: int = 0, caption_variant: int = 0) -> Scenes:
        """Scenes ``start, ..., start + n - 1`` of ``split`` as a :class:`Scenes` batch."""
        n = _check_nonneg_int(n, "n")
        start = _check_nonneg_int(start, "start")
        _check_split(split)
        scenes = [self.scene(start + i, split, caption_variant) for i in range(n)]
        return Scenes.from_scenes(scenes, split, self.seed, self.config.image_size)

    def pair(self, index: int, split: str = "test") -> tuple[np.ndarray, np.ndarray, list[dict[str, int]]]:
        """Pair scene ``index``: the first object of scene ``index`` (drawn once) and a second
        object with another shape, another colour and another cell, on the same background.
        Returns ``(image, masks (2, H, W), [factors of object 0, factors of object 1])``."""
        split_id = _check_split(split)
        index = _check_nonneg_int(index, "index")
        first, tex = self._layout_and_texture(index, split)
        rng = self._rng(split_id, index, 7)  # a stream of its own: scene ``index`` is unchanged
        other = _layout(rng, split_id, index, self.config)
        u = rng.random(3).tolist()
        free = [c for c in range(len(POSITIONS)) if c != first.cells[0]]
        a = replace(first, count=1, cells=first.cells[:1], offsets_u=first.offsets_u[:1])
        b = replace(other, count=1, cells=(free[_pick_index(u[0], len(free))],), offsets_u=other.offsets_u[:1],
                    colour=(first.colour + 1 + _pick_index(u[1], len(COLOURS) - 1)) % len(COLOURS),
                    shape=(first.shape + 1 + _pick_index(u[2], len(SHAPES) - 1)) % len(SHAPES),
                    background=first.background)
        image, mask_a = _render(a, tex, self.config)
        image, mask_b = _render(b, image, self.config)  # distinct cells never overlap
        return image, np.concatenate([mask_a, mask_b]), [a.factors(), b.factors()]

    def sample_pairs(self, n: int, split: str = "test", start: int = 0) -> Pairs:
        """Pair scenes ``start, ..., start + n - 1`` of ``split`` (see :meth:`pair`)."""
        n = _check_nonneg_int(n, "n")
        start = _check_nonneg_int(start, "start")
        s = self.config.image_size
        images = np.zeros((n, s, s, 3), dtype=np.uint8)
        masks = np.zeros((n, 2, s, s), dtype=bool)
        factors = {k: np.zeros((n, 2), dtype=np.int64) for k in FACTOR_NAMES}
        for i in range(n):
            images[i], masks[i], objs = self.pair(start + i, split)
            for k in FACTOR_NAMES:
                factors[k][i] = [objs[0][k], objs[1][k]]
        return Pairs(images, masks, factors, np.arange(start, start + n, dtype=np.int64), split, self.seed)

    def waterbirds_test_set(self, n_per_group: int) -> Scenes:
        """Balanced groups family x {grass, water}: ``4 * n_per_group`` scenes.

        Scene ``i`` belongs to group ``i % 4`` (see :data:`GROUP_NAMES`); the
        other factors are independent.  ``Scenes.groups`` holds the labels.
        """
        n_per_group = _check_nonneg_int(n_per_group, "n_per_group")
        return self.sample(4 * n_per_group, split="waterbirds")


def make_scene(index: int, split: str = "train", seed: int = 0, config: WorldConfig | None = None) -> Scene:
    """Scene ``index`` of ``split`` for ``seed`` (see :meth:`World.scene`)."""
    return World(seed, config).scene(index, split)


def sample(
    n: int, split: str = "train", seed: int = 0, start: int = 0, config: WorldConfig | None = None
) -> Scenes:
    """A batch of ``n`` consecutive scenes (see :meth:`World.sample`)."""
    return World(seed, config).sample(n, split, start)


def sample_pairs(n: int, split: str = "test", seed: int = 0, start: int = 0,
                 config: WorldConfig | None = None) -> Pairs:
    """``n`` two-object scenes (see :meth:`World.sample_pairs`)."""
    return World(seed, config).sample_pairs(n, split, start)


def waterbirds_test_set(n_per_group: int, seed: int = 0, config: WorldConfig | None = None) -> Scenes:
    """The balanced Waterbirds-style test set (see :meth:`World.waterbirds_test_set`)."""
    return World(seed, config).waterbirds_test_set(n_per_group)


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------


def to_pil(image: np.ndarray) -> Image.Image:
    """``uint8`` ``(H, W, 3)`` array -> PIL RGB image."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) array, got {arr.dtype} {arr.shape}")
    return Image.fromarray(np.ascontiguousarray(arr))


def make_grid(images: np.ndarray | Sequence[np.ndarray], ncol: int = 4, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile ``uint8`` images ``(N, H, W, 3)`` into one PIL image."""
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {imgs.shape}")
    if ncol < 1 or scale < 1 or pad < 0:
        raise ValueError("ncol and scale must be >= 1 and pad >= 0")
    n, h, w, _ = imgs.shape
    nrow = max(1, math.ceil(n / ncol))
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = imgs[i]
    out = Image.fromarray(grid)
    if scale > 1:
        out = out.resize((out.width * scale, out.height * scale), Image.NEAREST)
    return out


# ---------------------------------------------------------------------------
# Zero-shot prompts and the TextSpan pool
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
    factor = _check_factor(factor)
    out: dict[str, list[str]] = {}
    for v in FACTORS[factor]:
        if factor == "shape":
            p = [f"a photo of a {v}", f"a {v}", f"a drawing of a {v}", f"a {v} shape", f"there is a {v}"]
        elif factor == "colour":
            p = [f"a photo of a {v} object", f"something {v}", f"a {v} shape", f"a {v} thing", f"{_article(v)} {v} object"]
        elif factor == "background":
            a, b = _BG_PROMPT_PHRASES[v]
            p = [f"a photo of something {a}", f"an object {a}", f"a {v} scene", f"a shape {b}", f"something {b}"]
        elif factor == "position":
            a, b, c = _POS_PHRASES[v]
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
            pl = _FAMILY_PLURALS[v]
            p = [f"a photo of a {v}", f"a {v}", f"the {v}", f"a picture of a {v}", f"{pl}"]
        out[v] = p
    return out


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
        pl = _SHAPE_PLURALS[v]
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
            f"{_article(v)} {v} object",
            f"something {v}",
            f"the colour {v}",
            f"{_article(v)} {v} shape",
            f"a photo of something {v}",
            f"painted {v}",
            v,
            f"{_article(v)} {v} thing",
        )
        rows += [(t, "colour", v) for t in texts]
    for v in POSITIONS:
        a, b, c = _POS_PHRASES[v]
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


def default_pool_path() -> Path:
    """``data/pools/world_pool.tsv`` in the repository."""
    return Path(__file__).resolve().parent.parent / "data" / "pools" / "world_pool.tsv"


def _pool_tsv() -> str:
    lines = ["text\tproperty\tvalue"] + ["\t".join(r) for r in text_pool()]
    return "\n".join(lines) + "\n"


def write_pool(path: str | Path | None = None) -> Path:
    """Write :func:`text_pool` as a TSV file (header ``text, property, value``)."""
    out = Path(path) if path is not None else default_pool_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_pool_tsv(), encoding="utf-8", newline="\n")
    return out


def read_pool(path: str | Path | None = None) -> list[tuple[str, str, str]]:
    """Read a pool TSV written by :func:`write_pool`."""
    src = Path(path) if path is not None else default_pool_path()
    lines = src.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "text\tproperty\tvalue":
        raise ValueError(f"{src} is not a pool file (bad header)")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{src}:{n}: expected 3 tab-separated fields")
        rows.append((parts[0], parts[1], parts[2]))
    return rows


# ---------------------------------------------------------------------------
# Torch dataset (torch is imported only when the class is first requested)
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _dataset_class() -> type:
    import torch
    from torch.utils.data import Dataset

    class WorldDataset(Dataset):
        """Scenes of one split, generated on the fly.

        Item ``i`` is scene ``start + i``: ``(image, caption, factors)`` where
        ``image`` is a float tensor ``(3, H, W)`` in [0, 1] (or
        ``transform(pil_image)`` when a transform is given), and ``factors``
        maps every factor name to its value index, plus ``"group"`` and
        ``"habitat"``.  Call :meth:`set_epoch` to draw other captions of the
        same images (caption variant = epoch).

        Args:
            split: one of :data:`SPLITS`.
            size: number of scenes.
            seed: world seed.
            transform: optional callable applied to the PIL image.
            config: optional :class:`WorldConfig`.
            start: index of the first scene.
        """

        def __init__(
            self,
            split: str = "train",
            size: int = 10_000,
            seed: int = 0,
            transform: Any = None,
            config: WorldConfig | None = None,
            start: int = 0,
        ) -> None:
            _check_split(split)
            self.split = split
            self.size = _check_nonneg_int(size, "size")
            self.start = _check_nonneg_int(start, "start")
            self.world = World(seed, config)
            self.transform = transform
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = _check_nonneg_int(epoch, "epoch")

        def __len__(self) -> int:
            return self.size

        def scene(self, i: int) -> Scene:
            if not 0 <= i < self.size:
                raise IndexError(f"index {i} out of range for {self.size} scenes")
            return self.world.scene(self.start + i, self.split, caption_variant=self.epoch)

        def __getitem__(self, i: int) -> tuple[Any, str, dict[str, int]]:
            if i < 0:
                i += self.size
            sc = self.scene(i)
            if self.transform is not None:
                image = self.transform(sc.pil())
            else:
                image = torch.from_numpy(sc.image).permute(2, 0, 1).float().div_(255.0)
            factors = dict(sc.factors)
            factors["group"] = sc.group
            factors["habitat"] = int(sc.habitat)
            return image, sc.caption, factors

    WorldDataset.__module__ = __name__
    return WorldDataset


def __getattr__(name: str) -> Any:
    if name == "WorldDataset":
        return _dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _benchmark(n: int = 128, repeats: int = 5) -> tuple[float, float]:
    """Best wall-clock and CPU seconds to generate ``n`` scenes with captions."""
    w = World(0)
    w.sample(8)  # warm caches
    best_wall = best_cpu = float("inf")
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        w.sample(n, "train", start=1000 + r * n)
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.world", description=__doc__.splitlines()[0])
    parser.add_argument("--write-pool", action="store_true", help="write data/pools/world_pool.tsv")
    parser.add_argument("--pool-path", type=Path, default=None, help="where to write the pool")
    parser.add_argument("--grid", type=Path, default=None, help="save a PNG grid of sample scenes")
    parser.add_argument("--grid-n", type=int, default=16, help="number of scenes in the grid")
    parser.add_argument("--split", default="train", choices=SPLITS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--benchmark", action="store_true", help="time the generation of 128 scenes")
    args = parser.parse_args(argv)
    if not (args.write_pool or args.grid or args.benchmark):
        parser.print_help()
        return 1
    if args.write_pool:
        path = write_pool(args.pool_path)
        print(f"wrote {len(text_pool())} entries to {path}")
    if args.grid:
        batch = sample(args.grid_n, args.split, args.seed)
        make_grid(batch.images, ncol=4, scale=4).save(args.grid)
        for i, c in enumerate(batch.captions):
            print(f"{i:3d} {c}")
        print(f"saved {args.grid}")
    if args.benchmark:
        wall, cpu = _benchmark()
        print(f"128 scenes + captions: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU (best of 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
