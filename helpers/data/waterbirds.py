"""Waterbirds, and its offline analogue: the data of notebook 5 (methods: :mod:`helpers.methods.spurious`).

* :func:`waterbirds_task` -- the Waterbirds test split (4 groups) for real models, downloaded
  once; offline it fails fast and leaves nothing behind; :func:`waterbirds_prompts` its class
  prompts (the course's eight templates, or the paper's 80);
* :class:`PlantedCorrelation` -- how often a training set shows each class on its own habitat:
  :func:`world_planted_correlation` counts it on the synthetic world's training scenes,
  :func:`waterbirds_planted_correlation` on Waterbirds' training split.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..methods.spurious import WATERBIRDS_GROUPS
from .world.captions import parse_caption
from .world.config import HABITAT_BACKGROUNDS, SPLIT_IDS
from .world.dataset import World
from .world.render import draw_layout

__all__ = [
    "WATERBIRDS_URL",
    "WATERBIRDS_TEMPLATES",
    "WaterbirdsTask",
    "waterbirds_task",
    "waterbirds_prompts",
    "read_waterbirds_metadata",
    "PlantedCorrelation",
    "world_planted_correlation",
    "waterbirds_planted_correlation",
]


# ----------------------------------------------------------------------------------------------
# Waterbirds (online path)
# ----------------------------------------------------------------------------------------------

#: The Waterbirds archive of Sagawa et al. (2020): CUB birds on Places backgrounds, 95%
#: correlated in training; test split 5,794 images in four groups. About 480 MB.
WATERBIRDS_URL = "https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz"
WATERBIRDS_DIR = "waterbird_complete95_forest2water2"
_SPLITS = {"train": 0, "val": 1, "test": 2}


class _Images(Dataset):
    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Image.Image], Tensor]) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        from ..engine.images import to_rgb

        with Image.open(self.paths[i]) as im:
            im.load()  # read the pixels before the file closes
            return to_rgb(im)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.preprocess(self.load(i)), i


@dataclass
class WaterbirdsTask:
    """One split of Waterbirds: ``dataset[i] = (image tensor, i)``, per-image ``labels``
    (0 landbird, 1 waterbird), ``places`` (0 land, 1 water), ``groups`` (``2 * label + place``),
    group ``names`` and the class ``prompts``."""

    dataset: _Images
    labels: Tensor
    places: Tensor
    groups: Tensor
    names: tuple[str, ...]
    prompts: dict[str, list[str]]
    root: Path

    def __len__(self) -> int:
        return len(self.dataset)


def _waterbirds_prompts() -> dict[str, list[str]]:
    templates = ("a photo of a {}.", "a bad photo of a {}.", "a close-up photo of a {}.", "a photo of the {}.",
                 "a good photo of a {}.", "a photo of a small {}.", "a photo of a large {}.", "a cropped photo of a {}.")
    return {c: [t.format(c) for t in templates] for c in ("landbird", "waterbird")}


WATERBIRDS_TEMPLATES: tuple[str, ...] = ("eight", "paper")
"""Values of :func:`waterbirds_prompts`' ``templates``."""


def waterbirds_prompts(templates: str = "eight") -> dict[str, list[str]]:
    """Prompts for the classes ``"landbird"`` and ``"waterbird"``.

    ``templates="eight"`` (the course's): eight short photo templates. ``"paper"``: the 80
    OpenAI ImageNet templates, as the reference code's classifier uses them (taken from
    ``open_clip.zero_shot_metadata``).
    """
    if templates not in WATERBIRDS_TEMPLATES:
        raise ValueError(f"templates must be one of {', '.join(map(repr, WATERBIRDS_TEMPLATES))}, "
                         f"got {templates!r}")
    if templates == "eight":
        return _waterbirds_prompts()
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return {c: [t(c) for t in OPENAI_IMAGENET_TEMPLATES] for c in ("landbird", "waterbird")}


def read_waterbirds_metadata(root: str | Path) -> list[dict[str, str]]:
    """Rows of Waterbirds' ``metadata.csv`` (``img_filename``, ``y``, ``split``, ``place``, ...)."""
    path = Path(root) / "metadata.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {root} the extracted Waterbirds folder?")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"img_filename", "y", "split", "place"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{path} lacks the columns {sorted(need)}")
    return rows


def waterbirds_task(preprocess: Callable[[Image.Image], Tensor], split: str = "test", *, n: int | None = None,
                    root: str | Path | None = None, seed: int = 0, templates: str = "eight") -> WaterbirdsTask:
    """The Waterbirds ``split`` (``"test"`` by default: 5,794 images in four groups).

    With ``root`` reads an extracted copy; otherwise downloads the archive once into the course
    cache (pooch, progress bar; its publishers give no checksum, so the first download records
    its SHA-256 and later uses are checked against it). Offline, fails within seconds with
    :class:`helpers.engine.download.OfflineError`. ``n`` draws a random subset, stratified by group.
    ``templates`` chooses the class prompts (:func:`waterbirds_prompts`).
    """
    waterbirds_prompts(templates)  # checks the name before any download
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    if root is None:
        import pooch

        from ..engine.download import cache_root, fetch

        fetch(WATERBIRDS_URL, None, what="Waterbirds (about 480 MB)", folder="waterbirds",
              processor=pooch.Untar(extract_dir="."),
              hint="Use the synthetic world's planted correlation offline (dataset='world'; in the notebooks: "
                   "preset='offline'), or pass root= to an extracted copy.")
        root = cache_root() / "waterbirds" / WATERBIRDS_DIR
    root = Path(root)
    rows = [r for r in read_waterbirds_metadata(root) if int(r["split"]) == _SPLITS[split]]
    labels = np.array([int(r["y"]) for r in rows])
    places = np.array([int(r["place"]) for r in rows])
    groups = 2 * labels + places
    keep = np.arange(len(rows))
    if n is not None and n < len(rows):
        rng = np.random.default_rng(seed)
        per = [np.flatnonzero(groups == g) for g in range(4)]
        quota = [int(round(n * len(p) / len(rows))) for p in per]
        keep = np.sort(np.concatenate([rng.choice(p, size=min(q, len(p)), replace=False) for p, q in zip(per, quota)]))
    paths = [root / rows[i]["img_filename"] for i in keep]
    missing = [p for p in paths[:5] if not p.exists()]
    if missing:
        raise FileNotFoundError(f"images listed in metadata.csv are missing, e.g. {missing[0]}")
    t = lambda a: torch.as_tensor(a[keep], dtype=torch.long)  # noqa: E731
    return WaterbirdsTask(dataset=_Images(paths, preprocess), labels=t(labels), places=t(places), groups=t(groups),
                          names=WATERBIRDS_GROUPS, prompts=waterbirds_prompts(templates), root=root)


# ----------------------------------------------------------------------------------------------
# The planted correlation
# ----------------------------------------------------------------------------------------------


@dataclass
class PlantedCorrelation:
    """How often a training set shows each class on its own habitat, counted on its scenes.

    ``n``: scenes (images) counted; ``habitat_share``: the share of them drawn with the
    correlation (the world's *habitat scenes*; every Waterbirds training image);
    ``agree_in_habitat``: among those, the share whose background is the class's own habitat
    (water for swimmers / waterbirds, grass or land for walkers / landbirds);
    ``on_habitats``: the share of all scenes on one of the two habitat backgrounds;
    ``agree_on_habitats``: among those, the share on the class's own habitat. ``spurious_p``
    and ``habitat_fraction``: the world's parameters that planted it (``None`` for Waterbirds).
    ``linked_captions`` / ``linked_elsewhere``: the share of the habitat scenes' / the other
    scenes' captions that name the family *and* the background, the link through the text
    that web captions carry ("a duck on a lake"; world-v3 plants it at the rate
    ``habitat_caption_p``; ``None`` for Waterbirds, whose captions are not part of it).
    """

    n: int
    habitat_share: float
    agree_in_habitat: float
    on_habitats: float
    agree_on_habitats: float
    spurious_p: float | None = None
    habitat_fraction: float | None = None
    linked_captions: float | None = None
    linked_elsewhere: float | None = None
    habitat_caption_p: float | None = None


def world_planted_correlation(n: int = 20000, *, seed: int = 0, config: Any = None) -> PlantedCorrelation:
    """The correlation in the first ``n`` ``"train"`` scenes of ``World(seed, config)``.

    Counts each scene's layout (family, background, whether it is a habitat scene) and reads
    its caption without rendering it, so 20,000 scenes take a few seconds.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    w = World(seed, config)
    split = SPLIT_IDS["train"]
    hab = np.zeros(n, dtype=bool)
    on = np.zeros(n, dtype=bool)
    agree = np.zeros(n, dtype=bool)
    linked = np.zeros(n, dtype=bool)
    for i in range(n):
        lay = draw_layout(w._rng(split, i, 0), split, i, w.config)
        hab[i] = lay.habitat
        on[i] = lay.background in HABITAT_BACKGROUNDS
        agree[i] = lay.background == HABITAT_BACKGROUNDS[lay.family]
        named = parse_caption(w._caption(lay, split, i, 0))
        linked[i] = "family" in named and "background" in named
    share = lambda a, sel: float(a[sel].mean()) if sel.any() else float("nan")  # noqa: E731
    return PlantedCorrelation(n=n, habitat_share=float(hab.mean()), agree_in_habitat=share(agree, hab),
                              on_habitats=float(on.mean()), agree_on_habitats=share(agree, on),
                              spurious_p=float(w.config.spurious_p), habitat_fraction=float(w.config.habitat_fraction),
                              linked_captions=share(linked, hab), linked_elsewhere=share(linked, ~hab),
                              habitat_caption_p=float(w.config.habitat_caption_p))


def waterbirds_planted_correlation(root: str | Path) -> PlantedCorrelation:
    """The correlation in Waterbirds' training split (``metadata.csv`` of an extracted copy):
    the share of training birds on their own habitat (waterbirds on water, landbirds on land)."""
    rows = [r for r in read_waterbirds_metadata(root) if int(r["split"]) == _SPLITS["train"]]
    if not rows:
        raise ValueError(f"{root}: metadata.csv lists no training images")
    agree = float(np.mean([int(r["y"]) == int(r["place"]) for r in rows]))
    return PlantedCorrelation(n=len(rows), habitat_share=1.0, agree_in_habitat=agree, on_habitats=1.0,
                              agree_on_habitats=agree)
