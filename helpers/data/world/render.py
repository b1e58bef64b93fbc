"""Drawing a scene: shapes, background textures, the random layout of a scene, and pictures.

:func:`draw_layout` makes every random choice that defines a scene apart from its caption
(a :class:`Layout`); :func:`render_layout` paints it on a background texture (:data:`TEXTURES`)
and returns the image and the exact mask of every object. :func:`to_pil` and
:func:`make_grid` turn images into PIL pictures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .config import (
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    COUNTS,
    FACTORS,
    FAMILY_SHAPES,
    GRASS,
    HABITAT_BACKGROUNDS,
    PATTERNS,
    POSITIONS,
    SHAPE_FAMILY,
    SHAPES,
    SIZES,
    SPLIT_IDS,
    V2_RADII,
    WATER,
    WorldConfig,
    check_factor,
)

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


def _ring() -> tuple[np.ndarray, np.ndarray]:
    return _regular(32, 1.0, 0.0), _regular(32, 0.55, 0.0)


def _crescent() -> tuple[np.ndarray, np.ndarray]:
    return _regular(32, 1.0, 0.0), _regular(32, 0.85, 0.0) + (0.45, -0.2)


#: Unnamed clutter (world-v3): kinds of object that no caption or prompt names. Each is an outer
#: polygon and a hole cut out of it (or ``None``), inside [-1, 1]^2.
DISTRACTORS: tuple[str, ...] = ("ring", "crescent", "bar", "arrow")
_DISTRACTOR_POLYGONS: tuple[tuple[np.ndarray, np.ndarray | None], ...] = (
    _ring(),
    _crescent(),
    (np.array([(-1.0, -0.28), (1.0, -0.28), (1.0, 0.28), (-1.0, 0.28)]), None),
    (np.array([(-1.0, -0.2), (0.25, -0.2), (0.25, -0.6), (1.0, 0.0), (0.25, 0.6), (0.25, 0.2), (-1.0, 0.2)]), None),
)
#: Radius of a distractor, in pixels at 64 px.
DISTRACTOR_RADIUS = (3.5, 6.0)


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    if angle == 0.0:
        return pts
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


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


TEXTURES = (_tex_water, _tex_grass, _tex_sand, _tex_brick, _tex_sky, _tex_snow)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Channel-first float texture -> contiguous uint8 (s, s, 3) image."""
    planes = np.clip(img, 0, 255).astype(np.uint8)
    out = np.empty(planes.shape[1:] + (3,), dtype=np.uint8)
    for c in range(3):  # faster than a transposed copy
        out[..., c] = planes[c]
    return out


def erode(mask: np.ndarray) -> np.ndarray:
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
class Layout:
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
    # world-v3's draws (their defaults are world-v2's scenes)
    radius_ranges: tuple[tuple[float, float], tuple[float, float]] = V2_RADII
    multi_radius_max: float = 9.6
    free_centre: bool = False
    angle: float = 0.0  # radians, the rotation of the named objects
    outlined: bool = True
    distractors: tuple["Distractor", ...] = ()
    multi: bool = False  # placed as one of several objects (the two objects of a pair scene)

    @property
    def family(self) -> int:
        return SHAPE_FAMILY[self.shape]

    @property
    def radius(self) -> float:
        # Cells are s/3 wide (21.3 px at 64 px).  With several objects, radius + jitter stays
        # below half a cell, so objects in distinct cells never overlap and stay inside the image.
        lo, hi = self.radius_ranges[self.size]
        r = lo + (hi - lo) * self.radius_u
        if self.count > 1 or self.multi:
            r = min(r, self.multi_radius_max)
        return float(r * self.image_size / 64.0)

    @property
    def centres(self) -> tuple[tuple[float, float], ...]:
        unit = self.image_size / 64.0
        cell = self.image_size / 3.0
        if not self.free_centre:
            jitter = (2.5 if self.size == 0 else 0.8) * unit
            return tuple(
                (float((c % 3 + 0.5) * cell + jitter * dx), float((c // 3 + 0.5) * cell + jitter * dy))
                for c, (dx, dy) in zip(self.cells, self.offsets_u)
            )
        r = self.radius
        if self.count == 1 and not self.multi:  # anywhere in its cell, kept inside the picture (an object
            # wider than a cell, radius above s / 3, is pushed towards the middle by its excess)
            jitter = 0.5 * cell - 1e-3
        else:  # neighbours' centres stay more than 2 r apart
            jitter = max(0.0, min(2.5 * unit, 0.5 * cell - r - 0.2 * unit))
        out = []
        for c, (dx, dy) in zip(self.cells, self.offsets_u):
            x = min(max((c % 3 + 0.5) * cell + jitter * dx, r), self.image_size - r)
            y = min(max((c // 3 + 0.5) * cell + jitter * dy, r), self.image_size - r)
            out.append((float(x), float(y)))
        return tuple(out)

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


def pick_index(u: float, n: int) -> int:
    return min(int(u * n), n - 1)


def draw_layout(rng: np.random.Generator, split_id: int, index: int, cfg: WorldConfig) -> Layout:
    # One vector of uniforms drives every choice: cheap, and the texture that
    # follows always starts from the same generator state.
    u = rng.random(27).tolist()
    habitat = False
    if split_id == SPLIT_IDS["waterbirds"]:
        family, on_water = divmod(index % 4, 2)
        shapes = FAMILY_SHAPES[family]
        shape = shapes[pick_index(u[0], len(shapes))]
        background = WATER if on_water else GRASS
    else:
        shape = pick_index(u[0], len(SHAPES))
        if split_id == SPLIT_IDS["train"] and u[1] < cfg.habitat_fraction:
            habitat = True
            home = HABITAT_BACKGROUNDS[SHAPE_FAMILY[shape]]
            away = WATER if home == GRASS else GRASS
            background = home if u[2] < cfg.spurious_p else away
        else:
            background = pick_index(u[2], len(BACKGROUNDS))
    colour = pick_index(u[3], len(COLOURS))
    size = pick_index(u[4], len(SIZES))
    count = 1 + pick_index(u[5], len(COUNTS))
    pattern = pick_index(u[6], len(PATTERNS))
    cells = tuple(int(c) for c in np.argsort(u[7:16])[:count])  # distinct random cells
    radius_u = u[16]
    offsets = tuple((2.0 * u[17 + 2 * k] - 1.0, 2.0 * u[18 + 2 * k] - 1.0) for k in range(count))
    j = cfg.colour_jitter
    jit = tuple(pick_index(x, 2 * j + 1) - j for x in u[23:26])
    phase = (pick_index(u[26], 25) // 5, pick_index(u[26], 25) % 5)
    return Layout(
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


@dataclass(frozen=True)
class Distractor:
    """An unnamed object of the clutter (world-v3): its kind (:data:`DISTRACTORS`), centre,
    radius (pixels at this image size), colour index and rotation."""

    kind: int
    centre: tuple[float, float]
    radius: float
    colour: int
    rgb: tuple[int, int, int]
    angle: float


def draw_extras(lay: Layout, rng: np.random.Generator, cfg: WorldConfig) -> Layout:
    """world-v3's draws for a layout: outline or not, rotation, the radius ranges, the free
    centre and the clutter. They come from a generator of their own, so that a world-v2 layout
    and texture are the same draw for draw."""
    if not cfg.extended:
        return lay
    s = cfg.image_size
    unit = s / 64.0
    cell = s / 3.0
    u = rng.random(4).tolist()
    n = 0 if u[2] >= cfg.clutter_p else 1 + pick_index(u[3], cfg.max_distractors)
    free = [c for c in np.argsort(rng.random(len(POSITIONS))).tolist() if c not in lay.cells]
    items = []
    for k in range(min(n, len(free))):
        v = rng.random(9).tolist()
        r = (DISTRACTOR_RADIUS[0] + (DISTRACTOR_RADIUS[1] - DISTRACTOR_RADIUS[0]) * v[0]) * unit
        c = free[k]
        j = max(0.0, 0.5 * cell - r)
        centre = (float((c % 3 + 0.5) * cell + j * (2 * v[1] - 1)), float((c // 3 + 0.5) * cell + j * (2 * v[2] - 1)))
        colour = (lay.colour + 1 + pick_index(v[3], len(COLOURS) - 1)) % len(COLOURS)
        jit = [pick_index(x, 2 * cfg.colour_jitter + 1) - cfg.colour_jitter for x in v[4:7]]
        rgb = tuple(min(255, max(0, int(ch) + d)) for ch, d in zip(COLOUR_RGB[colour], jit))
        items.append(Distractor(kind=pick_index(v[7], len(DISTRACTORS)), centre=centre, radius=float(r),
                                colour=colour, rgb=(rgb[0], rgb[1], rgb[2]), angle=float(2 * math.pi * v[8])))
    return replace(lay, radius_ranges=(cfg.small_radius, cfg.large_radius), multi_radius_max=cfg.multi_radius_max,
                   free_centre=cfg.free_centre, angle=math.radians(cfg.rotation) * (2 * u[1] - 1),
                   outlined=u[0] < cfg.outline_p, distractors=tuple(items))


def value_index(factor: str, value: int | str) -> int:
    """Index of ``value`` (a value name or an index) in ``FACTORS[factor]``."""
    factor = check_factor(factor)
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


def override_layout(lay: Layout, overrides: Mapping[str, int | str]) -> Layout:
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        factor = check_factor(key)
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


def _polygon(draw: ImageDraw.ImageDraw, pts: np.ndarray, centre: tuple[float, float], fill: int) -> None:
    # PIL puts integer coordinates at pixel centres; our pixel i spans [i, i + 1).
    draw.polygon([tuple(p) for p in (pts + (centre[0] - 0.5, centre[1] - 0.5)).tolist()], fill=fill)


def _outline_colour(colour: int) -> tuple[int, int, int]:
    return (230, 230, 230) if COLOURS[colour] == "black" else (20, 20, 20)


def _paint_distractors(lay: Layout, img: np.ndarray, outline: bool) -> np.ndarray:
    """Paint the clutter of ``lay`` into ``img`` (in place); returns its mask."""
    s = img.shape[0]
    canvas = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(canvas)
    for k, d in enumerate(lay.distractors):
        outer, hole = _DISTRACTOR_POLYGONS[d.kind]
        _polygon(draw, _rotate(outer, d.angle) * d.radius, d.centre, k + 1)
        if hole is not None:
            _polygon(draw, _rotate(hole, d.angle) * d.radius, d.centre, 0)
    label = np.asarray(canvas)
    for k, d in enumerate(lay.distractors):
        m = label == k + 1
        img[m] = d.rgb
        if outline:
            img[m & ~erode(m)] = _outline_colour(d.colour)
    return label > 0


def render_layout(lay: Layout, background: np.ndarray, cfg: WorldConfig,
                  clutter: bool = False) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint the objects of ``lay`` over ``background``; returns (image, masks), and with
    ``clutter`` also the mask of the distractors' visible pixels (painted under the objects)."""
    s = cfg.image_size
    outlined = cfg.outline and lay.outlined
    img = background.copy()
    under = _paint_distractors(lay, img, outlined) if lay.distractors else np.zeros((s, s), dtype=bool)
    canvas = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(canvas)
    poly = _rotate(_SHAPE_POLYGONS[lay.shape], lay.angle) * lay.radius
    for k, centre in enumerate(lay.centres):
        _polygon(draw, poly, centre, k + 1)
    label = np.asarray(canvas)  # later objects hide earlier ones (never overlap by construction)
    masks = label[None] == np.arange(1, lay.count + 1, dtype=np.uint8)[:, None, None]
    fg = label > 0
    code = fg.astype(np.uint8)  # 1: object colour, 2: pattern colour, 3: outline
    inner = erode(fg) if outlined else fg
    pat = _pattern_mask(lay.pattern, lay.phase, s)
    if pat is not None:
        code[inner & pat] = 2
    if outlined:
        code[fg & ~inner] = 3
    rgb = lay.rgb
    palette = np.array([rgb, rgb, _secondary_colour(rgb), _outline_colour(lay.colour)], dtype=np.uint8)
    idx = np.flatnonzero(fg)
    img.reshape(-1, 3)[idx] = palette[code.ravel()[idx]]
    if clutter:
        return img, masks, under & ~fg
    return img, masks



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


def widen(images: np.ndarray, masks: Sequence[np.ndarray], backgrounds: np.ndarray, *, aspect: float = 4 / 3,
          seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Square scenes widened to a landscape picture, the scene in the middle.

    ``images`` ``(N, s, s, 3)`` uint8; each of ``masks`` ``(N, s, s)`` (bool) is zero-padded the
    same way; ``backgrounds`` ``(N,)`` the scenes' background indices. The width is
    ``W = s + 2 m`` with ``m = round(s (aspect - 1) / 2)``: an even margin on both sides, so that
    a centre crop of the short side takes exactly the original scene back (a model whose input
    is ``s`` sees the same pixels). The side bands are the scene's own background texture,
    rendered at width ``W`` with ``seed`` (a model that crops to the centre never sees them).
    Returns ``(images (N, s, W, 3), masks, m)``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(f"images must be square (N, s, s, 3), got {images.shape}")
    if not aspect >= 1:
        raise ValueError(f"aspect must be >= 1 (landscape), got {aspect}")
    n, s = images.shape[:2]
    m = int(round(s * (aspect - 1) / 2))
    w = s + 2 * m
    out = np.empty((n, s, w, 3), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    for i in range(n):
        band = to_uint8(TEXTURES[int(backgrounds[i])](rng, w))[:s]
        out[i] = band
        out[i, :, m:m + s] = images[i]
    padded = []
    for mk in masks:
        mk = np.asarray(mk, dtype=bool)
        if mk.shape != (n, s, s):
            raise ValueError(f"masks must be (N, s, s) = {(n, s, s)}, got {mk.shape}")
        p = np.zeros((n, s, w), dtype=bool)
        p[:, :, m:m + s] = mk
        padded.append(p)
    return out, padded, m
