"""The images an explorer searches, with what is known about each, and the pool its heads are read with.

A :class:`Gallery` wraps a zero-shot task (:func:`~helpers.data.datasets.load_task`): its images,
a caption for each (the world's scene captions, or a dataset's class names), the world's factors
and object masks where the images have them, an id that names exactly these images (for the
on-disk cache), and the tagged text pool whose tags name the heads' roles: the world's own pool
for world scenes, the course's general pool (descriptions tagged with their property) for real photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image

from .datasets import ZeroShotTask, load_task

__all__ = ["Gallery", "load_gallery", "pool_for"]


def pool_for(dataset: str) -> str:
    """The tagged pool a dataset's heads are read with: ``"world"`` for the world's scenes,
    ``"general"`` for anything else (real photos have no pool of their own)."""
    return "world" if dataset == "world" or dataset.startswith("world:") else "general"


@dataclass
class Gallery:
    """A set of images to search, each with a caption; the world's ground truth where known.

    Attributes:
        task: the zero-shot task behind it (``task.dataset[i]`` is the preprocessed image).
        dataset_id: names these images exactly (dataset, world, seed, count), for cache keys.
        pool_name: the tagged pool the heads' roles are read from (:func:`pool_for`).
    """

    task: ZeroShotTask
    dataset_id: str
    pool_name: str

    def __len__(self) -> int:
        return len(self.task)

    @property
    def scenes(self) -> Any:
        """The world's scenes (factors, masks, captions), or ``None`` for other images."""
        return self.task.meta.get("scenes")

    @property
    def factors(self) -> dict[str, np.ndarray] | None:
        """Factor name -> value index per image (world scenes only)."""
        return None if self.scenes is None else self.scenes.factors

    def _check(self, i: int) -> int:
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(f"image {i!r} out of range for a gallery of {n} images")
        return int(i) % n

    def image(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image (as stored, before the model's preprocessing)."""
        return self.task.show(self._check(i))

    def caption(self, i: int) -> str:
        """The scene's caption (world), else the class name of the image."""
        i = self._check(i)
        if self.scenes is not None:
            return str(self.scenes.captions[i])
        return str(self.task.classes[int(self.task.labels[i])])

    def mask(self, i: int) -> np.ndarray | None:
        """The union of the objects' masks ``[H, W]`` (world scenes), else ``None``."""
        i = self._check(i)
        return None if self.scenes is None else self.scenes.masks[i].any(0)

    def value(self, i: int, factor: str) -> str | None:
        """The name of image ``i``'s value of ``factor`` (world scenes with that factor), else ``None``."""
        from . import world

        i = self._check(i)
        if self.factors is None or factor not in self.factors:
            return None
        return world.FACTORS[factor][int(self.factors[factor][i])]


def load_gallery(dataset: str, *, n_images: int, preprocess: Callable[[Image.Image], Any], seed: int = 0,
                 world_name: str | None = None) -> Gallery:
    """The gallery of a notebook-style ``dataset`` parameter (``"world:colour"``, ``"imagenette"``,
    ``"imagenet:/path/to/val"``), ``n_images`` of them drawn with ``seed``, as
    :func:`~helpers.data.datasets.load_task` draws them."""
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 2:
        raise ValueError(f"n_images must be a whole number of at least 2 (a search needs other images), "
                         f"got {n_images!r}")
    task = load_task(dataset, n_images=int(n_images), preprocess=preprocess, seed=seed, world_name=world_name)
    world_part = f"@{world_name}" if world_name and dataset.startswith("world") else ""
    dataset_id = f"{dataset}{world_part}/seed{seed}/n{len(task)}"
    return Gallery(task=task, dataset_id=dataset_id, pool_name=pool_for(dataset))
