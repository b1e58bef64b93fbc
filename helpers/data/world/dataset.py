"""Scenes and batches of scenes: :class:`World` (deterministic sampling), :class:`Scene`,
:class:`Scenes`, :class:`Pairs`, and the torch ``WorldDataset``."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from .captions import make_caption
from .config import (
    COLOURS,
    COUNTS,
    FACTOR_NAMES,
    FACTORS,
    POSITIONS,
    SHAPES,
    SPLIT_IDS,
    WorldConfig,
    check_factor,
    check_nonneg_int,
    check_split,
    group_of,
    world_config,
)
from .render import (
    TEXTURES,
    Layout,
    draw_extras,
    draw_layout,
    override_layout,
    pick_index,
    render_layout,
    to_pil,
    to_uint8,
)

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
        outlined: whether the objects have the contrasting outline.
        clutter: boolean ``(H, W)``, the visible pixels of the unnamed distractors (world-v3;
            empty in world-v2).
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
    outlined: bool = True
    clutter: np.ndarray | None = None

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
        outlined: ``bool`` ``(N,)``, objects with the outline.
        clutter: ``bool`` ``(N, H, W)``, the visible pixels of the unnamed distractors.
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
    outlined: np.ndarray | None = None
    clutter: np.ndarray | None = None

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
            outlined=True if self.outlined is None else bool(self.outlined[i]),
            clutter=None if self.clutter is None else self.clutter[i],
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
        factor = check_factor(factor)
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
            outlined=np.array([sc.outlined for sc in scenes], dtype=bool),
            clutter=np.stack([sc.clutter if sc.clutter is not None else np.zeros((s, s), dtype=bool)
                              for sc in scenes]) if n else np.zeros((0, s, s), dtype=bool),
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
        factor = check_factor(factor)
        return [FACTORS[factor][v] for v in self.factors[factor][:, obj]]



# ---------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------


class World:
    """Deterministic generator of scenes for a given seed and configuration.

    Args:
        seed: non-negative integer; different seeds give different worlds.
        config: a :class:`WorldConfig` or a world's name (:data:`WORLDS`); defaults to
            ``WorldConfig()``, world-v2.
    """

    def __init__(self, seed: int = 0, config: WorldConfig | str | None = None) -> None:
        self.seed = check_nonneg_int(seed, "seed")
        self.config = world_config(config) if isinstance(config, str) or config is None else config
        if not isinstance(self.config, WorldConfig):
            raise ValueError(f"config must be a WorldConfig, got {type(self.config).__name__}")

    def __repr__(self) -> str:
        return f"World(seed={self.seed}, config={self.config!r})"

    def _rng(self, split_id: int, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, split_id, index, stream])

    def _layout_and_texture(
        self, index: int, split: str, overrides: Mapping[str, int | str] | None = None
    ) -> tuple[Layout, np.ndarray]:
        split_id = check_split(split)
        index = check_nonneg_int(index, "index")
        rng = self._rng(split_id, index, 0)
        lay = draw_layout(rng, split_id, index, self.config)
        if self.config.extended:  # world-v3's draws, from a stream of their own
            lay = draw_extras(lay, self._rng(split_id, index, 3), self.config)
        if overrides:
            lay = override_layout(lay, overrides)
        tex = to_uint8(TEXTURES[lay.background](rng, self.config.image_size))
        return lay, tex

    def background(self, index: int, split: str = "train", overrides: Mapping[str, int | str] | None = None) -> np.ndarray:
        """Background texture of a scene without its objects (``uint8`` ``(H, W, 3)``)."""
        return self._layout_and_texture(index, split, overrides)[1]

    def caption(self, index: int, split: str = "train", variant: int = 0) -> str:
        """Caption of a scene.  ``variant`` > 0 gives other captions of the same image."""
        lay, _ = self._layout_and_texture(index, split)
        return self._caption(lay, SPLIT_IDS[split], index, variant)

    def _caption(self, lay: Layout, split_id: int, index: int, variant: int) -> str:
        variant = check_nonneg_int(variant, "variant")
        # Captions only need scalar draws: Python's generator is much faster for
        # those, and seeding it from a string is deterministic across platforms.
        rng = random.Random(f"caption/{self.seed}/{split_id}/{index}/{variant}")
        return make_caption(lay, rng, self.config)

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
        image, masks, clutter = render_layout(lay, tex, self.config, clutter=True)
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
            caption=self._caption(lay, SPLIT_IDS[split], index, caption_variant),
            habitat=lay.habitat,
            group=group_of(lay.family, lay.background),
            outlined=self.config.outline and lay.outlined,
            clutter=clutter,
        )

    def sample(self, n: int, split: str = "train", start: int = 0, caption_variant: int = 0) -> Scenes:
        """Scenes ``start, ..., start + n - 1`` of ``split`` as a :class:`Scenes` batch."""
        n = check_nonneg_int(n, "n")
        start = check_nonneg_int(start, "start")
        check_split(split)
        scenes = [self.scene(start + i, split, caption_variant) for i in range(n)]
        return Scenes.from_scenes(scenes, split, self.seed, self.config.image_size)

    def pair(self, index: int, split: str = "test") -> tuple[np.ndarray, np.ndarray, list[dict[str, int]]]:
        """Pair scene ``index``: the first object of scene ``index`` (drawn once) and a second
        object with another shape, another colour and another cell, on the same background.
        Returns ``(image, masks (2, H, W), [factors of object 0, factors of object 1])``."""
        split_id = check_split(split)
        index = check_nonneg_int(index, "index")
        first, tex = self._layout_and_texture(index, split)
        rng = self._rng(split_id, index, 7)  # a stream of its own: scene ``index`` is unchanged
        other = draw_layout(rng, split_id, index, self.config)
        u = rng.random(3).tolist()
        free = [c for c in range(len(POSITIONS)) if c != first.cells[0]]
        # world-v3: both objects keep the scene's outline, rotation and size ranges, placed as
        # one of two (they never overlap); the clutter is the first scene's
        other = replace(other, radius_ranges=first.radius_ranges, multi_radius_max=first.multi_radius_max,
                        free_centre=first.free_centre, angle=first.angle, outlined=first.outlined)
        multi = self.config.extended
        a = replace(first, count=1, cells=first.cells[:1], offsets_u=first.offsets_u[:1], multi=multi)
        b = replace(other, count=1, cells=(free[pick_index(u[0], len(free))],), offsets_u=other.offsets_u[:1], multi=multi,
                    colour=(first.colour + 1 + pick_index(u[1], len(COLOURS) - 1)) % len(COLOURS),
                    shape=(first.shape + 1 + pick_index(u[2], len(SHAPES) - 1)) % len(SHAPES),
                    background=first.background)
        image, mask_a = render_layout(a, tex, self.config)
        image, mask_b = render_layout(b, image, self.config)  # distinct cells never overlap
        return image, np.concatenate([mask_a, mask_b]), [a.factors(), b.factors()]

    def sample_pairs(self, n: int, split: str = "test", start: int = 0) -> Pairs:
        """Pair scenes ``start, ..., start + n - 1`` of ``split`` (see :meth:`pair`)."""
        n = check_nonneg_int(n, "n")
        start = check_nonneg_int(start, "start")
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
        n_per_group = check_nonneg_int(n_per_group, "n_per_group")
        return self.sample(4 * n_per_group, split="waterbirds")


def make_scene(index: int, split: str = "train", seed: int = 0, config: WorldConfig | str | None = None) -> Scene:
    """Scene ``index`` of ``split`` for ``seed`` (see :meth:`World.scene`)."""
    return World(seed, config).scene(index, split)


def sample(
    n: int, split: str = "train", seed: int = 0, start: int = 0, config: WorldConfig | str | None = None
) -> Scenes:
    """A batch of ``n`` consecutive scenes (see :meth:`World.sample`)."""
    return World(seed, config).sample(n, split, start)


def sample_pairs(n: int, split: str = "test", seed: int = 0, start: int = 0,
                 config: WorldConfig | str | None = None) -> Pairs:
    """``n`` two-object scenes (see :meth:`World.sample_pairs`)."""
    return World(seed, config).sample_pairs(n, split, start)


def waterbirds_test_set(n_per_group: int, seed: int = 0, config: WorldConfig | str | None = None) -> Scenes:
    """The balanced Waterbirds-style test set (see :meth:`World.waterbirds_test_set`)."""
    return World(seed, config).waterbirds_test_set(n_per_group)



# ---------------------------------------------------------------------------
# Torch dataset (torch is imported only when the class is first requested)
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def dataset_class() -> type:
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
            config: WorldConfig | str | None = None,
            start: int = 0,
        ) -> None:
            check_split(split)
            self.split = split
            self.size = check_nonneg_int(size, "size")
            self.start = check_nonneg_int(start, "start")
            self.world = World(seed, config)
            self.transform = transform
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = check_nonneg_int(epoch, "epoch")

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

    WorldDataset.__module__ = __package__  # found (and pickled) as helpers.data.world.WorldDataset
    WorldDataset.__qualname__ = "WorldDataset"
    return WorldDataset


def __getattr__(name: str) -> Any:
    if name == "WorldDataset":
        return dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
