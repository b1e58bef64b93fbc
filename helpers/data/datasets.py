"""Zero-shot classification tasks: the offline world, and real image datasets online.

``load_task(name, ...)`` is what the notebooks call with their ``dataset`` parameter:

* ``"world"`` / ``"world:<factor>"`` — held-out synthetic scenes labelled by one factor
  (default ``shape``); generated on the spot, no files; through the model's ``preprocess``
  when given (a real CLIP sees them resized to its input size).
* ``"imagenette"`` — the 3,925 validation images of Imagenette (10 ImageNet classes, 320 px),
  downloaded once (about 330 MB, sha256-checked), classified 1000-way with ImageNet's class
  names and prompt templates from ``open_clip.zero_shot_metadata``.
* ``"imagenet:/path/to/val"`` — your own copy of ImageNet validation in class folders
  (``n01440764/…``), 1000-way; ``"imagenet"`` reads the folder from ``$CLIP_COURSE_IMAGENET``
  (:data:`IMAGENET_INSTRUCTIONS` says how to make it). A subset is class-stratified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from ..engine.download import fetch
from ..engine.paths import data_dir
from . import world

__all__ = ["ZeroShotTask", "load_task", "world_task", "imagenet_folder_task", "imagenette_task",
           "imagenet_metadata", "IMAGENETTE_URL", "IMAGENETTE_SHA256", "IMAGENET_INSTRUCTIONS"]

IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz"
IMAGENETTE_SHA256 = "569b4497c98db6dd29f335d1f109cf315fe127053cedf69010d047f0188e158c"


@dataclass
class ZeroShotTask:
    """Images with labels and, for every class, its prompts.

    ``dataset[i]`` is ``(preprocessed image [3, H, W], label)``; ``show(i)`` gives a PIL image
    for display; ``meta`` carries extras (for the world: the scenes with all factors and masks).
    ``key`` names the images (their source and selection) for the on-disk cache of their terms
    (:func:`helpers.methods.streamed.terms_of`); the loaders set it.
    """

    name: str
    classes: list[str]
    prompts: dict[str, list[str]]
    dataset: Dataset
    labels: torch.Tensor
    show: Callable[[int], Image.Image]
    meta: dict[str, Any] = field(default_factory=dict)
    key: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int] | torch.Tensor) -> "ZeroShotTask":
        """The task on the images at ``index`` (in that order): the task itself when ``index``
        is every image in order. A world task's scenes are taken along."""
        idx = [int(i) for i in torch.as_tensor(index).reshape(-1).tolist()]
        if idx == list(range(len(self))):
            return self
        meta = dict(self.meta)
        if "scenes" in meta:
            meta["scenes"] = _take_scenes(meta["scenes"], idx)
        show = self.show
        return ZeroShotTask(name=self.name, classes=self.classes, prompts=self.prompts,
                            dataset=torch.utils.data.Subset(self.dataset, idx), labels=self.labels[idx],
                            show=lambda i: show(idx[i]), meta=meta, key=f"{self.key}|subset={_digest(idx)}")

    def images(self) -> torch.Tensor:
        """All images as one tensor (fine for small tasks; stream large ones instead)."""
        if isinstance(self.dataset, TensorDataset):
            return self.dataset.tensors[0]
        return torch.stack([self.dataset[i][0] for i in range(len(self))])


def _digest(items: Sequence[Any]) -> str:
    """A short hash of a list (of paths, of indices)."""
    import hashlib

    h = hashlib.sha256()
    for x in items:
        h.update(str(x).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _take_scenes(scenes: Any, idx: list[int]) -> Any:
    """World scenes at ``idx``: every per-scene field taken along its first axis."""
    import dataclasses

    n = len(scenes)
    out = {}
    for f in dataclasses.fields(scenes):
        v = getattr(scenes, f.name)
        if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n:
            v = v[idx]
        elif isinstance(v, dict):
            v = {k: (a[idx] if isinstance(a, np.ndarray) and a.ndim and a.shape[0] == n else a) for k, a in v.items()}
        elif isinstance(v, list) and len(v) == n:
            v = [v[i] for i in idx]
        out[f.name] = v
    return dataclasses.replace(scenes, **out)


def world_task(factor: str = "shape", n: int = 600, *, split: str = "test", seed: int = 1,
               start: int = 0, preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
               world_name: str | None = None) -> ZeroShotTask:
    """Held-out world scenes labelled by ``factor`` (prompts from :func:`world.class_prompts`),
    of the world ``world_name`` (:data:`helpers.data.world.WORLDS`; ``None``: world-v2 --
    :func:`helpers.engine.models.world_of` names an offline model's own).

    With ``preprocess`` (a model's own, as :func:`load_task` passes it) every scene goes through
    it when read, so a real CLIP sees the 64-px scenes resized to its input; without, the scenes
    are normalised at their own size, as the offline model's preprocess does.
    """
    from ..engine.images import images_to_tensor

    if n <= 0:
        raise ValueError("n must be positive")
    scenes = world.sample(n, split=split, seed=seed, start=start, config=world_name)
    prompts = world.class_prompts(factor)
    labels = torch.as_tensor(scenes.factors[factor], dtype=torch.long)
    dataset: Dataset
    if preprocess is None:
        dataset = TensorDataset(images_to_tensor(scenes.images), labels)
    else:
        dataset = _Preprocessed(scenes.pil, preprocess, labels)
    key = (f"world:{world_name or 'default'}|{split}|seed={seed}|start={start}|n={n}|"
           f"{'model preprocess' if preprocess is not None else 'own size'}")
    return ZeroShotTask(name=f"world:{factor}", classes=list(prompts), prompts=prompts,
                        dataset=dataset, labels=labels, show=scenes.pil,
                        meta={"scenes": scenes, "factor": factor}, key=key)


class _Preprocessed(Dataset):
    """``(preprocess(image(i)), labels[i])``, computed when read."""

    def __init__(self, image: Callable[[int], Image.Image], preprocess: Callable[[Image.Image], torch.Tensor],
                 labels: torch.Tensor):
        self.image, self.preprocess, self.labels = image, preprocess, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return self.preprocess(self.image(i % len(self))), self.labels[i]


class _Folder(Dataset):
    def __init__(self, items: Sequence[tuple[str, int]], preprocess: Callable[[Image.Image], torch.Tensor]):
        self.items, self.preprocess = list(items), preprocess

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> Image.Image:
        from ..engine.images import to_rgb

        with Image.open(self.items[i][0]) as im:
            im.load()  # read the pixels before the file closes
            return to_rgb(im)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.preprocess(self.load(i)), self.items[i][1]


def imagenet_metadata(templates: str) -> tuple[list[str], list[Callable[[str], str]]]:
    """ImageNet's 1,000 class names and prompt templates (``"openai"``: the 80 of CLIP's paper,
    ``"simple"``), as open_clip ships them."""
    from open_clip import zero_shot_metadata as z

    names = list(z.IMAGENET_CLASSNAMES)
    tmpl = {"openai": z.OPENAI_IMAGENET_TEMPLATES, "simple": z.SIMPLE_IMAGENET_TEMPLATES}
    if templates not in tmpl:
        raise ValueError(f"templates must be one of {sorted(tmpl)}")
    return names, list(tmpl[templates])


def _folder_task(name: str, root: Path, wnid_to_index: dict[str, int], preprocess, n: int | None,
                 seed: int, templates: str, stratified: bool = False) -> ZeroShotTask:
    names, tmpl = imagenet_metadata(templates)
    items = []
    for wnid, idx in sorted(wnid_to_index.items()):
        d = root / wnid
        if d.is_dir():
            items += [(str(p), idx) for p in sorted(d.iterdir())
                      if p.suffix.lower() in (".jpeg", ".jpg", ".png")]
    if not items:
        raise FileNotFoundError(f"no images in class folders under {root}")
    if n is not None and n < len(items):
        rng = np.random.default_rng(seed)
        if stratified:  # n // C images of every class, the remainder from the rest, in file order
            by_class: dict[int, list[int]] = {}
            for i, (_, lab) in enumerate(items):
                by_class.setdefault(lab, []).append(i)
            k = n // len(by_class)
            pick = [int(i) for ix in by_class.values() for i in rng.choice(ix, size=min(k, len(ix)), replace=False)]
            rest = np.setdiff1d(np.arange(len(items)), pick)
            pick += rng.choice(rest, size=n - len(pick), replace=False).tolist()
        else:
            pick = rng.choice(len(items), size=n, replace=False).tolist()
        items = [items[i] for i in sorted(pick)]
    ds = _Folder(items, preprocess)
    prompts = {c: [t(c) for t in tmpl] for c in names}
    labels = torch.as_tensor([lab for _, lab in items])
    return ZeroShotTask(name=name, classes=names, prompts=prompts, dataset=ds, labels=labels, show=ds.load,
                        meta={"root": str(root)}, key=f"{name}|{len(items)} images|{_digest(p for p, _ in items)}")


def _imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet class folder names in index order (sorted synset ids)."""
    path = data_dir() / "imagenet_wnids.txt"
    wnids = path.read_text().split()
    if len(wnids) != 1000:
        raise RuntimeError(f"{path} should list 1000 synsets")
    return wnids


IMAGENET_INSTRUCTIONS = (
    "ImageNet's validation set is not downloaded by the course. Register at https://image-net.org and accept "
    "its terms of access (non-commercial research and educational use), download ILSVRC2012_img_val.tar "
    "(6,744,924,160 bytes, 6.3 GiB) and ILSVRC2012_devkit_t12.tar.gz into one folder R, run "
    "torchvision.datasets.ImageNet(R, split='val') once (it builds R/val/<wnid>/), and set "
    "CLIP_COURSE_IMAGENET=R/val (or pass dataset='imagenet:R/val'); or use a preset's ' quick' variant "
    "(preset='offline' needs no data at all).")
"""What to do to give the course ImageNet validation (the papers' ablations and TextSpan)."""


def imagenet_folder_task(root: str | Path | None, preprocess, n: int | None = None, *, seed: int = 0,
                         templates: str = "openai", stratified: bool = True) -> ZeroShotTask:
    """Your ImageNet validation images in ``root/<wnid>/*.JPEG`` (torchvision's ``ImageNet(R,
    split="val")`` builds ``R/val`` so), classified 1000-way, in the reference's order (sorted
    class folders, sorted files; label = class index). ``root=None`` reads the folder from
    ``$CLIP_COURSE_IMAGENET``. ``n`` images (default: all 50,000) are drawn class-stratified
    (``n // 1000`` per class, the rest at random) unless ``stratified=False``."""
    if root is None:
        env = os.environ.get("CLIP_COURSE_IMAGENET", "")
        if not env:
            raise FileNotFoundError("dataset 'imagenet' reads a local copy of ImageNet validation, and "
                                    "CLIP_COURSE_IMAGENET is not set. " + IMAGENET_INSTRUCTIONS)
        root = env
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet validation folder {root} not found (expected class folders "
                                "such as n01440764/)")
    wnids = _imagenet_wnids()
    return _folder_task(f"imagenet:{root}", root, {w: i for i, w in enumerate(wnids)}, preprocess, n, seed,
                        templates, stratified=stratified)


def imagenette_task(preprocess, n: int | None = None, *, seed: int = 0, templates: str = "openai") -> ZeroShotTask:
    """Imagenette's validation split (10 ImageNet classes), classified 1000-way."""
    import pooch

    fetch(IMAGENETTE_URL, IMAGENETTE_SHA256, what="Imagenette (about 330 MB)", folder="imagenette",
          processor=pooch.Untar(extract_dir="."),
          hint="Use dataset='world' offline (in the notebooks: preset='offline'), or point "
               "dataset='imagenet:/path/to/val' at a local copy.")
    from ..engine.download import cache_root

    root = cache_root() / "imagenette" / "imagenette2-320" / "val"
    wnids = _imagenet_wnids()
    present = {p.name for p in root.iterdir() if p.is_dir()}
    return _folder_task("imagenette", root, {w: i for i, w in enumerate(wnids) if w in present}, preprocess,
                        n, seed, templates)


def load_task(name: str, *, n_images: int | None = None, preprocess=None, seed: int = 0,
              templates: str = "openai", world_name: str | None = None) -> ZeroShotTask:
    """Dispatch on a notebook's ``dataset`` parameter (see the module docstring); the world's
    scenes are those of ``world_name`` (``None``: world-v2)."""
    if name == "world" or name.startswith("world:"):
        factor = name.partition(":")[2] or "shape"
        return world_task(factor, n_images or 600, seed=seed + 1, preprocess=preprocess, world_name=world_name)
    if preprocess is None:
        raise ValueError(f"dataset {name!r} needs the model's preprocess")
    if name == "imagenette":
        return imagenette_task(preprocess, n_images, seed=seed, templates=templates)
    if name == "imagenet" or name.startswith("imagenet:"):
        return imagenet_folder_task(name.partition(":")[2] or None, preprocess, n_images, seed=seed,
                                    templates=templates)
    raise ValueError(f"unknown dataset {name!r}: use 'world', 'world:<factor>', 'imagenette', 'imagenet' "
                     "($CLIP_COURSE_IMAGENET) or 'imagenet:/path/to/val'")
