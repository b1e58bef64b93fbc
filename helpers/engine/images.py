"""Every path from an image to what the model sees: PIL images, arrays, tensors, masks.

* :func:`to_rgb` -- any PIL mode or ``uint8`` / float array -> an RGB PIL image;
* :func:`to_batch` -- images through a ``preprocess`` into a ``[B, 3, H, W]`` tensor;
* :func:`model_preprocess`, :func:`model_batch`, :func:`check_batch` -- the same with the
  model's own preprocessing, and the checks a preprocessed batch must pass;
* :func:`check_finite` -- a clear error naming the images with NaN or infinite pixels, before
  the model turns them into a decomposition full of NaN;
* :func:`model_view` -- the resized, centre-cropped picture the model actually sees (the
  background for maps of non-square photos);
* :func:`images_to_tensor` -- the synthetic world's ``uint8`` arrays straight to a batch;
* :func:`transform_pair` -- an image and its mask through the same geometry;
* :func:`sample_photos` -- natural photos bundled with scikit-image;
* :func:`image_from_bytes` -- an uploaded file checked and read as an RGB image.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

__all__ = [
    "to_rgb",
    "to_batch",
    "check_batch",
    "check_finite",
    "NonFinitePixelsError",
    "model_preprocess",
    "model_batch",
    "model_view",
    "images_to_tensor",
    "MASK_GEOMETRIES",
    "transform_pair",
    "SAMPLE_PHOTOS",
    "sample_photos",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS",
    "image_from_bytes",
]

ImagesLike = Any
"""A preprocessed tensor ``[B, 3, H, W]`` (or ``[3, H, W]``), a PIL image / array, or a list of them."""


class NonFinitePixelsError(ValueError):
    """Images with NaN or infinite pixels: the error names which images and how many pixels."""


def _describe_nonfinite(counts: Sequence[tuple[int, int, int, int]], what: str) -> str:
    """The message for ``(index, n_pixels, n_nan, n_inf)`` of each image with non-finite values."""
    def one(i: int, n: int, nan: int, inf: int) -> str:
        kinds = " and ".join(k for k, c in (("NaN", nan), ("infinite", inf)) if c)
        return f"{what} {i} ({n} pixel{'s' if n != 1 else ''}: {kinds})"

    shown = ", ".join(one(*c) for c in counts[:8])
    more = f" and {len(counts) - 8} more" if len(counts) > 8 else ""
    total = sum(c[1] for c in counts)
    return (f"{len(counts)} {what}{'s' if len(counts) != 1 else ''} with NaN or infinite pixel values "
            f"({total} pixel{'s' if total != 1 else ''} in all): {shown}{more}. The model would turn them into an "
            "embedding (and every term of its decomposition) full of NaN; fix or drop them first (a division by "
            "zero when normalising, or a corrupt file, are the usual causes).")


def _nonfinite_counts(values: np.ndarray, channel_axis: int | None) -> tuple[int, int, int] | None:
    """``(pixels, NaN values, infinite values)`` of one image's array, or None when all are finite
    (a pixel counts once however many of its channels are bad)."""
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.complexfloating)):
        return None
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    pixels = bad.any(channel_axis) if channel_axis is not None and values.ndim == 3 else bad
    return int(pixels.sum()), int(np.isnan(values).sum()), int(np.isinf(values).sum())


def check_finite(images: Tensor, what: str = "image", *, first: int = 0) -> Tensor:
    """``images`` (a batch ``[B, 3, H, W]``) if every value is finite, else a
    :class:`NonFinitePixelsError` that names each image with NaN or infinite pixels and how many.

    Runs before the model does: a single NaN pixel makes the whole embedding NaN. Images are
    numbered from ``first`` (a batch's position in its dataset, so the message names the items).
    """
    bad = ~torch.isfinite(images)
    if not bool(bad.any()):
        return images
    per_pixel = bad.any(1) if images.ndim == 4 else bad
    n_pixels = per_pixel.flatten(1).sum(1).tolist()
    n_nan = torch.isnan(images).flatten(1).sum(1).tolist()
    n_inf = torch.isinf(images).flatten(1).sum(1).tolist()
    counts = [(first + i, int(n), int(a), int(b)) for i, (n, a, b) in enumerate(zip(n_pixels, n_nan, n_inf)) if n]
    raise NonFinitePixelsError(_describe_nonfinite(counts, what))


def to_rgb(image: Any, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert a PIL image or an ``HxW`` / ``HxWxC`` uint8 array to an RGB PIL image.

    Grayscale and palette images are expanded; an alpha channel is composited on
    ``background`` (rather than dropped, which would turn transparent areas black).
    """
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            bad = _nonfinite_counts(arr, 2 if arr.ndim == 3 else None)
            if bad is not None:
                raise NonFinitePixelsError(_describe_nonfinite([(0, *bad)], "image"))
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

    A tensor is passed through (moved to ``device``) after a shape check. Images with NaN or
    infinite pixels (float arrays, float ``"F"`` PIL images, tensors) are named in a
    :class:`NonFinitePixelsError` before any is preprocessed.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensors must be [B, 3, H, W], got {tuple(images.shape)}")
        return check_finite(images).to(device)
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("empty list of images")
    bad = []
    for i, im in enumerate(images):
        if isinstance(im, Image.Image) and im.mode in ("F", "I;16F"):
            im = np.asarray(im)
        if isinstance(im, np.ndarray):
            counts = _nonfinite_counts(im, 2 if im.ndim == 3 else None)
            if counts is not None:
                bad.append((i, *counts))
    if bad:
        raise NonFinitePixelsError(_describe_nonfinite(bad, "image"))
    return torch.stack([preprocess(to_rgb(im)) for im in images]).to(device)


def check_batch(images: Any, size: tuple[int, int], *, allow_single: bool = False) -> Tensor:
    """``images`` if it is a preprocessed batch ``[B, 3, H, W]`` of ``size`` pixels, else a clear error.

    With ``allow_single`` one image ``[3, H, W]`` gets a batch axis; otherwise it is an error.
    Images with NaN or infinite pixels are named (:func:`check_finite`).
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a preprocessed tensor [B, 3, H, W]; got {type(images).__name__} "
                        "(helpers.engine.images.model_batch turns PIL images or arrays into one)")
    if images.ndim == 3:
        if not allow_single:
            raise ValueError(f"images must be a batch [B, 3, H, W]; got one image {tuple(images.shape)} "
                             "(add a batch axis with images[None])")
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"image tensors must be [B, 3, H, W] (preprocessed), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("empty batch: no images")
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[-2:]) != size:
        raise ValueError(f"images are {tuple(images.shape[-2:])} but the model expects {size}: run them "
                         "through the model's preprocess (helpers.engine.images.model_preprocess(model)), or pass "
                         "PIL images to helpers that take them, which resize and centre-crop for you")
    if not torch.is_floating_point(images):
        raise TypeError(f"image tensors must be floating point (preprocessed), got {images.dtype}")
    return check_finite(images)


def _tower(model: nn.Module) -> nn.Module:
    return getattr(model, "visual", model)


def model_preprocess(model: nn.Module) -> Callable[[Image.Image], Tensor]:
    """The model's evaluation preprocessing (resize the shorter side, centre crop, normalise).

    Built from the image tower's ``preprocess_cfg`` (open_clip's defaults when it has none),
    as ``open_clip.create_model_and_transforms`` would return it.
    """
    import open_clip

    from .models import model_info

    cfg = dict(getattr(_tower(model), "preprocess_cfg", None) or {})
    size = model_info(model).image_size
    return open_clip.image_transform(
        size if size[0] != size[1] else size[0], is_train=False,
        mean=cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), std=cfg.get("std", open_clip.OPENAI_DATASET_STD),
        resize_mode=cfg.get("resize_mode", "shortest"), interpolation=cfg.get("interpolation", "bicubic"),
        fill_color=cfg.get("fill_color", 0))


def model_batch(model: nn.Module, images: ImagesLike,
                preprocess: Callable[[Image.Image], Tensor] | None = None) -> Tensor:
    """``images`` as a batch for ``model``, on its device.

    A tensor must already be preprocessed (:func:`check_batch`; one ``[3, H, W]`` image is
    fine); PIL images and arrays (one or a list) go through ``preprocess`` (default: the
    model's own, :func:`model_preprocess`).
    """
    from .models import model_info

    device = next(_tower(model).parameters()).device
    if isinstance(images, Tensor):
        return check_batch(images, model_info(model).image_size, allow_single=True).to(device)
    if isinstance(images, (list, tuple)) and len(images) == 0:
        raise ValueError("empty list of images")
    return to_batch(images, preprocess or model_preprocess(model), device)


def _geometric_steps(preprocess: Callable[[Image.Image], Tensor]) -> list[Any]:
    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        raise TypeError("preprocess is not a torchvision Compose; crop and resize the image (and mask) yourself")
    out = []
    for step in steps:
        if "ToTensor" in type(step).__name__:
            break
        out.append(step)
    return out


def model_view(model: nn.Module | None, image: Any,
               preprocess: Callable[[Image.Image], Tensor] | None = None) -> Image.Image:
    """The part of ``image`` the model sees, as a PIL image (resized and centre-cropped).

    Use it as the background of :func:`helpers.course.plots.overlay` / :func:`helpers.course.plots.heatmap_figure`
    for non-square images, so the map lines up with the pixels it describes. Applies the
    geometric steps of ``preprocess`` (default :func:`model_preprocess`; ``model`` may be
    ``None`` when ``preprocess`` is given) up to its tensor conversion.
    """
    if preprocess is None:
        if model is None:
            raise ValueError("give a model or its preprocess")
        preprocess = model_preprocess(model)
    img = to_rgb(image)
    for step in _geometric_steps(preprocess):
        img = step(img)
    return to_rgb(img)


def images_to_tensor(images: np.ndarray, model: nn.Module | None = None) -> Tensor:
    """uint8 ``[N, H, W, 3]`` world images -> normalised float ``[N, 3, H, W]``.

    Equal to the offline model's ``preprocess`` on the same (already 64x64) PIL images,
    without the PIL round trip. With ``model``, the images are resized (bicubic) to its input
    size when it differs (a real CLIP looking at the synthetic world), normalised with the
    image tower's own mean and std, and moved to its device.
    """
    import open_clip

    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    check_finite(x)
    if model is not None:
        visual = _tower(model)
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        mean, std = cfg.get("mean", mean), cfg.get("std", std)
        size = visual.image_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        if tuple(x.shape[-2:]) != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    if model is not None:
        x = x.to(next(model.parameters()).device)
    return x


def _mask_step(step: Any) -> Callable[[Image.Image], Image.Image] | None:
    """The geometric part of one preprocessing step, for a mask (nearest neighbour), or None for
    a step that does not move pixels (colour conversion)."""
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode

    name = type(step).__name__
    if isinstance(step, T.Resize):
        return T.Resize(step.size, interpolation=InterpolationMode.NEAREST, max_size=step.max_size)
    if isinstance(step, T.CenterCrop):
        return step
    if name == "ResizeKeepRatio":  # open_clip's resize for resize_mode="longest"
        nearest = copy.copy(step)
        nearest.interpolation = InterpolationMode.NEAREST
        return nearest
    if name == "CenterCropOrPad":
        padded = copy.copy(step)
        padded.fill = 0
        return padded
    if "convert" in name.lower() or "convert" in getattr(step, "__name__", "").lower():
        return None  # colour-mode conversion: no geometry
    raise TypeError(f"do not know how to apply {name} to a mask; crop and resize image and mask yourself")


MASK_GEOMETRIES: tuple[str, ...] = ("aligned", "reference")
"""Values of :func:`transform_pair`'s ``geometry``: the mask through the image's own resize and
crop (the course's), or squeezed whole to the model's input size (the paper's reference code)."""


def transform_pair(image: Any, mask: Any, preprocess: Callable[[Image.Image], Tensor], *,
                   geometry: str = "aligned") -> tuple[Tensor, Tensor]:
    """Preprocess ``image`` and bring its ``mask`` to the model's input.

    ``geometry="aligned"`` (the course's): the *same* geometric steps as the image's --
    ``preprocess`` is the model's torchvision ``Compose`` (resize, centre crop, ...); the mask is
    resized with nearest-neighbour interpolation and cropped identically, so it stays aligned
    with the pixels the model sees, also for non-square images.

    ``geometry="reference"`` (the paper's reference code): the image goes through
    ``preprocess`` unchanged, and the whole mask is resized to the model's input size with
    nearest-neighbour interpolation, with no crop. On a non-square photo the ground truth is
    then squeezed along the long side (to 3/4 on a 4:3 photo, whose image is centre-cropped)
    and no longer lies on the object's pixels, except at the centre.

    Returns the image tensor ``[3, H, W]`` and the boolean mask ``[H, W]``.
    """
    if geometry not in MASK_GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(map(repr, MASK_GEOMETRIES))}, got {geometry!r}")
    img = to_rgb(image)
    m = mask if isinstance(mask, np.ndarray) else (mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask))
    if m.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {m.shape}")
    if m.shape != (img.height, img.width):
        raise ValueError(f"mask is {m.shape} but the image is {(img.height, img.width)}")
    mask_img = Image.fromarray(m.astype(bool).astype(np.uint8) * 255, "L")
    x = preprocess(img)
    if geometry == "reference":
        h, w = x.shape[-2:]
        mask_img = mask_img.resize((int(w), int(h)), Image.NEAREST)
    else:
        for step in _geometric_steps(preprocess):
            geo = _mask_step(step)
            if geo is not None:
                mask_img = geo(mask_img)
    return x, torch.from_numpy(np.asarray(mask_img) > 127)


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


MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Largest file :func:`image_from_bytes` reads (20 MiB)."""

MAX_UPLOAD_PIXELS = 40_000_000
"""Largest image :func:`image_from_bytes` decodes (width x height), well below a decompression bomb."""


def image_from_bytes(data: bytes | bytearray | memoryview, name: str = "the file", *,
                     max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """An uploaded file's bytes, checked and decoded into an RGB PIL image.

    Raises:
        ValueError: with a message naming ``name``: empty, too large, not an image PIL can read
            (a text file, a PDF, a truncated or corrupt image), an image with more than
            ``max_pixels`` pixels, or one smaller than 2 x 2 pixels.
    """
    import io

    raw = bytes(data)
    if not raw:
        raise ValueError(f"{name} is empty")
    if len(raw) > max_bytes:
        raise ValueError(f"{name} is {len(raw) / 2**20:.1f} MiB; images up to {max_bytes / 2**20:.0f} MiB are read")

    def unreadable(exc: Exception) -> ValueError:
        return ValueError(f"{name} is not an image this app can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...): "
                          f"{type(exc).__name__}: {exc}")

    try:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError, ... on bad input
        with Image.open(io.BytesIO(raw)) as probe:
            fmt, size = probe.format, probe.size
            probe.verify()  # checks the file's structure without decoding all of it
    except Exception as exc:
        raise unreadable(exc) from None
    if size[0] * size[1] > max_pixels:
        raise ValueError(f"{name} is {size[0]} x {size[1]} pixels; images up to {max_pixels:,} pixels are read")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            out = to_rgb(img)
    except Exception as exc:
        raise unreadable(exc) from None
    if min(out.size) < 2:
        raise ValueError(f"{name} ({fmt}) is {out.size[0]} x {out.size[1]} pixels: too small to show anything")
    return out
