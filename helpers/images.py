"""Turning user images (PIL, numpy arrays, tensors) into a model-ready batch."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["to_rgb", "to_batch", "SAMPLE_PHOTOS", "sample_photos"]


def to_rgb(image: Any, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert a PIL image or an ``HxW`` / ``HxWxC`` uint8 array to an RGB PIL image.

    Grayscale and palette images are expanded; an alpha channel is composited on
    ``background`` (rather than dropped, which would turn transparent areas black).
    """
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and 0.0 <= arr.min() and arr.max() <= 1.0:
                arr = (arr * 255).round().astype(np.uint8)
            else:
                raise TypeError(f"array images must be uint8 (or floats in [0, 1]), got {arr.dtype}")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ValueError(f"array images must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
        image = Image.fromarray(arr)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise ValueError("image has zero size")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        base = Image.new("RGB", image.size, background)
        base.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return base
    return image.convert("RGB") if image.mode != "RGB" else image


def to_batch(images: Sequence[Any] | torch.Tensor, preprocess: Callable[[Image.Image], torch.Tensor],
             device: str | torch.device = "cpu") -> torch.Tensor:
    """Preprocess a list of images (any PIL mode, or arrays) into a ``[B, 3, H, W]`` tensor.

    A tensor is passed through (moved to ``device``) after a shape check.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensors must be [B, 3, H, W], got {tuple(images.shape)}")
        return images.to(device)
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("empty list of images")
    return torch.stack([preprocess(to_rgb(im)) for im in images]).to(device)


#: Natural photos bundled with scikit-image (no download), with texts worth mapping on each.
#: Licences: see scikit-image's ``skimage/data/README.txt`` (public domain or CC0 / CC BY).
SAMPLE_PHOTOS: dict[str, tuple[str, ...]] = {
    "astronaut": ("a woman", "an astronaut suit", "an American flag", "a space shuttle"),
    "chelsea": ("a cat", "a cat's ears", "whiskers", "a wooden floor"),
    "coffee": ("a cup of coffee", "a saucer", "a spoon", "a wooden table"),
    "rocket": ("a rocket", "a launch tower", "the sky", "trees"),
    "motorcycle": ("a motorcycle", "a helmet", "a wheel", "a garage wall"),
}


def sample_photos(names: Sequence[str] | None = None) -> dict[str, Image.Image]:
    """Natural photos shipped inside scikit-image's wheel, as RGB PIL images (non-square).

    ``names`` selects from :data:`SAMPLE_PHOTOS` (default: all). Works offline.
    """
    try:
        from skimage import data as skdata
    except ImportError as exc:  # pragma: no cover - a dependency; message for partial installs
        raise ImportError("sample photos need scikit-image: pip install scikit-image") from exc
    loaders = {
        "astronaut": skdata.astronaut,
        "chelsea": skdata.chelsea,
        "coffee": skdata.coffee,
        "rocket": skdata.rocket,
        "motorcycle": lambda: skdata.stereo_motorcycle()[0],
    }
    chosen = list(SAMPLE_PHOTOS) if names is None else list(names)
    unknown = [n for n in chosen if n not in loaders]
    if unknown:
        raise ValueError(f"unknown sample photo(s) {unknown}; available: {', '.join(SAMPLE_PHOTOS)}")
    return {n: to_rgb(np.asarray(loaders[n]())) for n in chosen}
