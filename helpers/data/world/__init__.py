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

The world has versions (:data:`WORLDS`, by name: ``World(seed, "world-v3")``). ``world-v2`` is
``WorldConfig()``; ``world-v3`` draws objects over a 4x range of sizes, with and without the
outline, turned by up to 20 degrees, adds unnamed clutter (:data:`DISTRACTORS`, never named in
captions; ``Scene.clutter`` is its mask) and habitat captions that name the family with its
habitat (``WorldConfig.habitat_caption_p``). world-v3's extra draws come from a random stream of
their own, so world-v2's scenes are the same draw for draw.

Scenes are generated independently of one another: scene ``i`` of a
``(seed, split)`` pair only depends on a numpy generator seeded with
``(seed, split_id, i)``, so datasets can produce scenes lazily in any order.

Typical use::

    from helpers.data import world
    batch = world.sample(128, split="train", seed=0)
    batch.images.shape            # (128, 64, 64, 3) uint8
    batch.captions[0]             # 'two large red stars on water, one in the top left'
    batch.factors["shape"][:4]    # indices into world.SHAPES
    scene = batch[0]              # a single Scene, with masks and names

The package's modules, one job each:

=================  ==========================================================================
``config``         vocabularies, factors, splits, :class:`WorldConfig`
``render``         shapes, textures, the random layout of a scene, painting it, pictures
``captions``       captions, their parser, the zero-shot prompts of every factor
``pool``           the texts of the tagged TextSpan pool (files: :mod:`helpers.data.pools`)
``compose``        scenes drawn from words (the world as its own text-to-image model)
``dataset``        :class:`World`, :class:`Scene`, :class:`Scenes`, :class:`Pairs`, ``WorldDataset``
``__main__``       ``python -m helpers.data.world --grid scenes.png`` / ``--benchmark``
=================  ==========================================================================

Regenerate ``data/pools/world_pool.tsv``, the tagged text pool used by TextSpan, with
``python -m helpers.data.pools --write world``.
"""

from __future__ import annotations

from typing import Any

from .captions import CAPTION_FORMS, PLURALS, caption_token_count, class_prompts, parse_caption, value_named
from .compose import WordPlan, naming, plan_from_words, scenes_from_words, word_factors
from .config import (
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    COUNTS,
    FACTOR_NAMES,
    FACTORS,
    FAMILIES,
    FAMILY_HABITAT,
    GROUP_NAMES,
    PATTERNS,
    POSITIONS,
    SHAPE_FAMILY,
    SHAPES,
    SIZES,
    SPLITS,
    WATERBIRDS_GROUP_NAMES,
    WORLDS,
    WorldConfig,
    check_factor,
    group_of,
    world_config,
)
from .dataset import Pairs, Scene, Scenes, World, make_scene, sample, sample_pairs, waterbirds_test_set
from .pool import text_pool
from .render import DISTRACTORS, OVERRIDABLE, make_grid, to_pil, value_index, widen

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
    "value_named",
    "WorldConfig",
    "WORLDS",
    "world_config",
    "DISTRACTORS",
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
    "check_factor",
    "PLURALS",
    "OVERRIDABLE",
    "parse_caption",
    "caption_token_count",
    "class_prompts",
    "text_pool",
    "WordPlan",
    "word_factors",
    "naming",
    "plan_from_words",
    "scenes_from_words",
    "to_pil",
    "make_grid",
    "widen",
]


def __getattr__(name: str) -> Any:
    if name == "WorldDataset":  # built on first use, so that importing the world needs no torch
        from .dataset import dataset_class

        return dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
