"""The data of zero-shot segmentation: the world's scenes with their true masks, and
ImageNet-Segmentation online (methods and metrics: :mod:`helpers.methods.segmentation`).

:func:`load_segmentation_task` is what notebook 6 calls with its ``dataset`` parameter; it
returns a :class:`~helpers.methods.segmentation.SegmentationTask` (images and masks through the
same geometry, :func:`~helpers.engine.images.transform_pair`, and the class prompts).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..engine.download import fetch
from ..engine.images import model_view, transform_pair
from ..methods.segmentation import SegmentationTask
from . import world
from .datasets import imagenet_metadata

__all__ = ["IMAGENET_SEG_URL", "IMAGENET_SEG_SIZE", "ImageNetSeg", "imagenet_seg", "load_segmentation_task"]


# ----------------------------------------------------------------------------------------------
# ImageNet-Segmentation (online path)
# ----------------------------------------------------------------------------------------------

#: ImageNet-Segmentation (Guillaumin et al.): 4,276 ImageNet validation images with foreground
#: masks, as used by Chefer et al. and the paper. MATLAB v7.3 (HDF5), about 1.4 GB.
IMAGENET_SEG_URL = "http://calvin-vision.net/bigstuff/proj-imagenet/data/gtsegs_ijcv.mat"
IMAGENET_SEG_SIZE = 4276


class ImageNetSeg:
    """The images and masks of ``gtsegs_ijcv.mat`` (read lazily with h5py).

    ``image(i)`` is an RGB PIL image, ``mask(i)`` a boolean ``[H, W]`` array of the same size;
    ``pair(i, preprocess)`` gives both after the model's preprocessing (:func:`transform_pair`).
    """

    def __init__(self, path: str | Any, n: int | None = None) -> None:
        import h5py

        self.path = str(path)
        self._file = h5py.File(self.path, "r")
        try:
            self._img = self._file["value/img"]
            self._gt = self._file["value/gt"]
        except KeyError as exc:
            self._file.close()
            raise ValueError(f"{self.path} is not ImageNet-Segmentation's gtsegs_ijcv.mat "
                             "(no value/img and value/gt)") from exc
        total = int(self._img.shape[0])
        if n is not None and not 0 < n:
            raise ValueError(f"n must be positive, got {n}")
        self.n = total if n is None else min(int(n), total)

    def __len__(self) -> int:
        return self.n

    def _check(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError(f"image {i} out of range for {self.n}")
        return i % self.n

    def image(self, i: int) -> Image.Image:
        arr = np.asarray(self._file[self._img[self._check(i), 0]])
        return Image.fromarray(np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(np.uint8), "RGB")

    def mask(self, i: int) -> np.ndarray:
        import h5py

        node = self._file[self._gt[self._check(i), 0]]
        # in gtsegs_ijcv.mat each entry of value/gt is a MATLAB cell: a 1x1 array holding one more
        # reference, to the mask itself (the references read it as f[f[f["/value/gt"][i, 0]][0, 0]])
        if h5py.check_dtype(ref=node.dtype) is not None:
            node = self._file[node[0, 0]]
        arr = np.asarray(node)
        return np.ascontiguousarray(arr.transpose(1, 0)) > 0

    def pair(self, i: int, preprocess: Callable[[Image.Image], Tensor]) -> tuple[Tensor, Tensor]:
        return transform_pair(self.image(i), self.mask(i), preprocess)

    def close(self) -> None:
        self._file.close()


def imagenet_seg(n: int | None = None, path: str | None = None) -> ImageNetSeg:
    """ImageNet-Segmentation from ``path``, or downloaded once into the course cache.

    The publishers give no checksum: the first download records the file's SHA-256 and later
    uses verify it (see :func:`helpers.engine.download.fetch`). Offline, fails within seconds with
    :class:`helpers.engine.download.OfflineError`.
    """
    if path is None:
        path = fetch(IMAGENET_SEG_URL, None, what="ImageNet-Segmentation (gtsegs_ijcv.mat, about 1.4 GB)",
                     folder="imagenet-seg",
                     hint="Use the offline world (dataset='world'; in the notebooks: preset='offline'), or pass "
                          "path= to a local copy of gtsegs_ijcv.mat.")
    return ImageNetSeg(path, n)


def _aligned(items: Any, preprocess: Callable[[Image.Image], Tensor]) -> tuple[Tensor, Tensor, list[Image.Image]]:
    """``(image, mask)`` pairs through the same geometry: stacked images ``[N, 3, H, W]``,
    masks ``[N, H, W]`` and the views the model sees."""
    xs, ms, views = [], [], []
    for image, mask in items:
        x, m = transform_pair(image, mask, preprocess)
        xs.append(x)
        ms.append(m)
        views.append(model_view(None, image, preprocess))
    return torch.stack(xs), torch.stack(ms), views


def load_segmentation_task(name: str, preprocess: Callable[[Image.Image], Tensor], n: int = 200, *,
                           seed: int = 0, templates: str = "openai", world_name: str | None = None
                           ) -> SegmentationTask:
    """``"world"`` / ``"world:<factor>"`` (held-out synthetic scenes and their true masks; the
    classes are the factor's values, default ``shape``), ``"world-pairs:<factor>"`` (two
    objects that differ in shape, colour and cell; the mask is the first object's, and methods
    segment the class of its label: "find the red one"), or ``"imagenet-seg"`` /
    ``"imagenet-seg:/path/to/gtsegs_ijcv.mat"`` (downloaded once; classified 1000-way with
    ImageNet's class names). Images and masks go through the same geometry
    (:func:`transform_pair`). The world's scenes are those of ``world_name`` (``None``:
    world-v2; :func:`helpers.engine.models.world_of` names an offline model's own)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if name == "world" or name.startswith("world:"):
        factor = world.check_factor(name.partition(":")[2] or "shape")
        scenes = world.sample(n, split="test", seed=seed + 1, config=world_name)
        xs, ms, views = _aligned(zip(scenes.images, scenes.foreground), preprocess)
        clutter = None
        if scenes.clutter is not None and scenes.clutter.any():  # the same geometry as the masks
            clutter = _aligned(zip(scenes.images, scenes.clutter), preprocess)[1]
        return SegmentationTask(f"world:{factor}", xs, ms, views,
                                world.class_prompts(factor), torch.as_tensor(scenes.factors[factor]),
                                clutter=clutter)
    if name == "world-pairs" or name.startswith("world-pairs:"):
        factor = world.check_factor(name.partition(":")[2] or "colour")
        if factor not in ("shape", "colour", "position"):
            raise ValueError(f"pairs differ in their objects, not in {factor!r}: use shape, colour or position")
        pairs = world.sample_pairs(n, split="test", seed=seed + 1, config=world_name)
        xs, ms, views = _aligned(zip(pairs.images, pairs.masks[:, 0]), preprocess)
        return SegmentationTask(f"world-pairs:{factor}", xs, ms, views,
                                world.class_prompts(factor), torch.as_tensor(pairs.factors[factor][:, 0]),
                                target="label")
    if name == "imagenet-seg" or name.startswith("imagenet-seg:"):
        path = name.partition(":")[2] or None
        ds = imagenet_seg(path=path)
        try:
            pick = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
            xs, ms, views = _aligned(((ds.image(i), ds.mask(i)) for i in pick.tolist()), preprocess)
        finally:
            ds.close()
        names, tmpl = imagenet_metadata(templates)
        return SegmentationTask("imagenet-seg", xs, ms, views,
                                {c: [t(c) for t in tmpl] for c in names}, None)
    raise ValueError(f"unknown segmentation dataset {name!r}: use 'world', 'world:<factor>', "
                     "'world-pairs:<factor>', 'imagenet-seg' "
                     "or 'imagenet-seg:/path/to/gtsegs_ijcv.mat'")
