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
from ..engine.images import MASK_GEOMETRIES, model_view, transform_pair
from ..methods.segmentation import SegmentationTask
from . import world
from .datasets import imagenet_metadata

__all__ = ["IMAGENET_SEG_URL", "IMAGENET_SEG_SIZE", "ImageNetSeg", "imagenet_seg", "WIDE_ASPECT", "load_segmentation_task"]


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

    def pair(self, i: int, preprocess: Callable[[Image.Image], Tensor], *,
             geometry: str = "aligned") -> tuple[Tensor, Tensor]:
        return transform_pair(self.image(i), self.mask(i), preprocess, geometry=geometry)

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


def _aligned(items: Any, preprocess: Callable[[Image.Image], Tensor]
             ) -> tuple[Tensor, dict[str, Tensor], list[Image.Image]]:
    """``(image, mask)`` pairs brought to the model's input: stacked images ``[N, 3, H, W]``,
    the masks ``[N, H, W]`` under every geometry (:data:`MASK_GEOMETRIES`) and the views the
    model sees."""
    xs, views = [], []
    ms: dict[str, list[Tensor]] = {g: [] for g in MASK_GEOMETRIES}
    for image, mask in items:
        for g in MASK_GEOMETRIES:
            x, m = transform_pair(image, mask, preprocess, geometry=g)
            ms[g].append(m)
        xs.append(x)
        views.append(model_view(None, image, preprocess))
    return torch.stack(xs), {g: torch.stack(v) for g, v in ms.items()}, views


WIDE_ASPECT = 4 / 3
"""The aspect of ``"world-wide"`` scenes: ImageNet's usual landscape photo (500 x 375)."""


def load_segmentation_task(name: str, preprocess: Callable[[Image.Image], Tensor], n: int | None = 200, *,
                           seed: int = 0, templates: str = "openai", world_name: str | None = None,
                           mask_geometry: str = "aligned") -> SegmentationTask:
    """``"world"`` / ``"world:<factor>"`` (held-out synthetic scenes and their true masks; the
    classes are the factor's values, default ``shape``), ``"world-wide:<factor>"`` (the same
    scenes widened to a 4:3 picture with their background on both sides, :func:`world.widen`:
    the model sees exactly the square scene, and only a mask geometry that does not follow the
    crop moves the ground truth), ``"world-pairs:<factor>"`` (two objects that differ in shape,
    colour and cell; the mask is the first object's, and methods segment the class of its
    label: "find the red one"), or ``"imagenet-seg"`` / ``"imagenet-seg:/path/to/gtsegs_ijcv.mat"``
    (downloaded once; classified 1000-way with ImageNet's class names; ``n=None`` takes all
    4,276 images, in file order, as the reference does). The world's scenes are those of
    ``world_name`` (``None``: world-v2; :func:`helpers.engine.models.world_of` names an offline
    model's own).

    ``mask_geometry`` says how the masks reach the model's input (:func:`transform_pair`):
    ``"aligned"`` (the course's: the image's own resize and crop) or ``"reference"`` (the paper's
    reference code: the whole mask squeezed to the input size); the task keeps the masks under
    both (:attr:`SegmentationTask.masks_by_geometry`) and ``masks`` is the chosen one (the
    clutter masks follow it)."""
    if mask_geometry not in MASK_GEOMETRIES:
        raise ValueError(f"mask_geometry must be one of {', '.join(map(repr, MASK_GEOMETRIES))}, "
                         f"got {mask_geometry!r}")
    imagenet = name == "imagenet-seg" or name.startswith("imagenet-seg:")
    if n is None and not imagenet:
        raise ValueError(f"{name!r} needs a number of images (n=None, every image, is for imagenet-seg)")
    if n is not None and n <= 0:
        raise ValueError(f"n must be positive, got {n}")

    def task(title: str, xs: Tensor, ms: dict[str, Tensor], views: list[Image.Image], prompts: dict[str, list[str]],
             labels: Tensor | None, **kw: Any) -> SegmentationTask:
        return SegmentationTask(title, xs, ms[mask_geometry], views, prompts, labels, mask_geometry=mask_geometry,
                                masks_by_geometry=ms, **kw)

    wide = name == "world-wide" or name.startswith("world-wide:")
    if name == "world" or name.startswith("world:") or wide:
        factor = world.check_factor(name.partition(":")[2] or "shape")
        scenes = world.sample(n, split="test", seed=seed + 1, config=world_name)
        images, fg = scenes.images, scenes.foreground
        has_clutter = scenes.clutter is not None and scenes.clutter.any()
        clut = scenes.clutter if has_clutter else None
        if wide:
            extra = [clut] if clut is not None else []
            images, padded, _ = world.widen(images, [fg] + extra, scenes.factors["background"],
                                            aspect=WIDE_ASPECT, seed=seed)
            fg, clut = padded[0], (padded[1] if extra else None)
        xs, ms, views = _aligned(zip(images, fg), preprocess)
        clutter = None
        if clut is not None:  # the same geometry as the masks
            clutter = _aligned(zip(images, clut), preprocess)[1][mask_geometry]
        return task(f"{'world-wide' if wide else 'world'}:{factor}", xs, ms, views, world.class_prompts(factor),
                    torch.as_tensor(scenes.factors[factor]), clutter=clutter)
    if name == "world-pairs" or name.startswith("world-pairs:"):
        factor = world.check_factor(name.partition(":")[2] or "colour")
        if factor not in ("shape", "colour", "position"):
            raise ValueError(f"pairs differ in their objects, not in {factor!r}: use shape, colour or position")
        pairs = world.sample_pairs(n, split="test", seed=seed + 1, config=world_name)
        xs, ms, views = _aligned(zip(pairs.images, pairs.masks[:, 0]), preprocess)
        return task(f"world-pairs:{factor}", xs, ms, views, world.class_prompts(factor),
                    torch.as_tensor(pairs.factors[factor][:, 0]), target="label")
    if imagenet:
        path = name.partition(":")[2] or None
        ds = imagenet_seg(path=path)
        try:
            if n is None or n >= len(ds):
                pick = np.arange(len(ds))
            else:
                pick = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
            xs, ms, views = _aligned(((ds.image(i), ds.mask(i)) for i in pick.tolist()), preprocess)
        finally:
            ds.close()
        names, tmpl = imagenet_metadata(templates)
        return task("imagenet-seg", xs, ms, views, {c: [t(c) for t in tmpl] for c in names}, None)
    raise ValueError(f"unknown segmentation dataset {name!r}: use 'world', 'world:<factor>', 'world-wide:<factor>', "
                     "'world-pairs:<factor>', 'imagenet-seg' "
                     "or 'imagenet-seg:/path/to/gtsegs_ijcv.mat'")
