"""Loading CLIP models: any open_clip ViT, and the course's own offline default.

``load_model`` is the one entry point the notebooks use::

    model, preprocess, tokenizer = load_model()                       # offline default, shipped weights
    model, preprocess, tokenizer = load_model("ViT-B-16", "laion2b_s34b_b88k")  # needs network once
    model, preprocess, tokenizer = load_model("ViT-B-16", "/path/to/open_clip_model.safetensors")
    model, preprocess, tokenizer = load_model("ViT-B-16", "random")    # untrained, asked for by name

Weights are always named: an open_clip model without a tag is an error that lists the model's
tags, so changing only the model's name never gives random weights silently.

The offline default (:data:`DEFAULT_MODEL`) is a small ViT CLIP whose architecture is
registered with open_clip, so ``open_clip.create_model(DEFAULT_MODEL)`` works too. Its weights
ship in ``data/models/`` as ``world-clip-<tag>.safetensors`` (:func:`offline_tags`); with no tag
it loads :data:`DEFAULT_PRETRAINED`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import urlparse

import open_clip
import torch

from .download import OfflineError, host_reachable
from .paths import data_dir
from .support import SUPPORTED_DESCRIPTION, UnsupportedModelError, config_problem

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "SUPPORTED_DESCRIPTION",
    "OfflineError",
    "CheckpointError",
    "checkpoint_error",
    "UnsupportedModelError",
    "LoadedModel",
    "ModelInfo",
    "model_info",
    "Provenance",
    "provenance",
    "TWINS",
    "twin_tag",
    "world_of",
    "load_model",
    "check_config_supported",
    "data_dir",
    "default_weights_path",
    "offline_tags",
    "offline_weights_path",
    "register_default_model",
    "RANDOM_WEIGHTS",
]

DEFAULT_MODEL = "world-clip"
"""open_clip name of the course's offline model (registered on import of this module)."""

DEFAULT_PRETRAINED = "world-v3"
"""Tag of the shipped weights of :data:`DEFAULT_MODEL` loaded when no tag is given."""

RANDOM_WEIGHTS = "random"
"""The ``pretrained`` value that asks :func:`load_model` for untrained (random) weights."""

@dataclass(frozen=True)
class ModelInfo:
    """The sizes of a CLIP model's image tower, read once from the model itself.

    Attributes:
        name, pretrained: the model name and weights (tag or checkpoint path) :func:`load_model`
            loaded (``None`` for a model built some other way; ``pretrained`` is ``None`` for
            random weights).
        n_layers, n_heads: residual blocks, and attention heads per block.
        width: width of the residual stream; ``head_dim = width // n_heads``.
        embed_dim: dimension of the joint image-text space.
        image_size, patch_size, grid_size: input pixels, pixels per patch, patches ``(rows, cols)``.
        n_tokens: tokens per image in the residual stream (patches, plus the class token).
        class_token: whether the tower has a class token.
        pooling: how the embedding is read off the tokens: ``"tok"`` (the class token),
            ``"avg"``, ``"none"``, ``"attn"`` (open_clip's attentional pooler) or ``"map"``
            (a timm tower's attention pooling with one learned query: SigLIP / SigLIP 2).
        pool_heads: heads of that attention pooling (``"map"``); 0 for every other pooling.
    """

    name: str | None
    pretrained: str | None
    n_layers: int
    n_heads: int
    width: int
    head_dim: int
    embed_dim: int
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    grid_size: tuple[int, int]
    n_tokens: int
    class_token: bool
    pooling: str
    pool_heads: int = 0


# what load_model was asked for, per model object (entries die with the model)
_LOADED_AS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[str, str | None]]" = weakref.WeakKeyDictionary()


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def model_info(model: torch.nn.Module) -> ModelInfo:
    """The :class:`ModelInfo` of an open_clip ViT CLIP (or of its image tower).

    Raises:
        UnsupportedModelError: the image tower is not a transformer with residual blocks.
    """
    from open_clip.transformer import VisionTransformer

    tower = model if isinstance(model, VisionTransformer) else getattr(model, "visual", None)
    if type(model).__name__ == "TimmModel":
        tower = model
    if type(tower).__name__ == "TimmModel":
        return _timm_info(model, tower)
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
    if tower is None or blocks is None or len(blocks) == 0:
        raise UnsupportedModelError(f"cannot read the sizes of a {type(model).__name__}: no transformer image "
                                    f"tower. Supported: {SUPPORTED_DESCRIPTION}.")
    name, pretrained = _LOADED_AS.get(model, (None, None))
    width = int(tower.transformer.width)
    n_heads = int(getattr(blocks[0].attn, "num_heads"))
    grid = _pair(tower.grid_size)
    class_token = getattr(tower, "class_embedding", None) is not None
    proj = getattr(tower, "proj", None)
    return ModelInfo(
        name=name, pretrained=pretrained, n_layers=len(blocks), n_heads=n_heads, width=width,
        head_dim=width // n_heads, embed_dim=int(proj.shape[1]) if proj is not None else int(tower.output_dim),
        image_size=_pair(tower.image_size), patch_size=_pair(tower.patch_size), grid_size=grid,
        n_tokens=grid[0] * grid[1] + int(class_token), class_token=class_token,
        pooling="attn" if getattr(tower, "attn_pool", None) is not None else str(getattr(tower, "pool_type", "tok")))


def _timm_info(model: torch.nn.Module, tower: torch.nn.Module) -> ModelInfo:
    """:class:`ModelInfo` of an open_clip ``TimmModel`` image tower (a timm VisionTransformer)."""
    trunk = getattr(tower, "trunk", None)
    blocks = getattr(trunk, "blocks", None)
    pe = getattr(trunk, "patch_embed", None)
    if blocks is None or len(blocks) == 0 or pe is None:
        raise UnsupportedModelError(f"cannot read the sizes of a timm {type(trunk).__name__} image tower: no ViT "
                                    f"blocks. Supported: {SUPPORTED_DESCRIPTION}.")
    name, pretrained = _LOADED_AS.get(model, (None, None))
    width = int(trunk.embed_dim)
    n_heads = int(blocks[0].attn.num_heads)
    grid = _pair(pe.grid_size)
    n_prefix = int(getattr(trunk, "num_prefix_tokens", 0))
    embed_dim = width
    for m in [getattr(trunk, "head", None)] + list(getattr(tower, "head", None) or []):
        if isinstance(m, torch.nn.Linear):
            embed_dim = int(m.out_features)
    pool = getattr(trunk, "global_pool", "")
    return ModelInfo(
        name=name, pretrained=pretrained, n_layers=len(blocks), n_heads=n_heads, width=width,
        head_dim=width // n_heads, embed_dim=embed_dim, image_size=_pair(pe.img_size),
        patch_size=_pair(pe.patch_size), grid_size=grid, n_tokens=grid[0] * grid[1] + n_prefix,
        class_token=getattr(trunk, "cls_token", None) is not None, pooling=str(pool) if pool else "none",
        pool_heads=int(getattr(getattr(trunk, "attn_pool", None), "num_heads", 0) or 0) if pool == "map" else 0)


@dataclass(frozen=True)
class Provenance:
    """How a model's weights were made, as far as it matters for reading a finding.

    Attributes:
        kind: ``"shaped"`` (the offline default, trained toward the paper's pattern),
            ``"plain"`` (offline, trained without that push), ``"web"`` (a CLIP trained on web
            image-text pairs, e.g. the papers' models), ``"random"`` (untrained), or
            ``"unknown"`` (built some other way).
        note: one sentence for a notebook to show where a finding depends on it.
    """

    kind: str
    note: str

    @property
    def shaped(self) -> bool:
        """Whether training pushed the direct effects into the last attention layers, so that
        finding them there confirms the training rather than the paper's claim."""
        return self.kind == "shaped"

    @property
    def tests_the_paper(self) -> bool:
        """Whether the model's findings are a test of the paper's claims (a web-trained CLIP)."""
        return self.kind == "web"


def _offline_provenance(world_name: str) -> dict[str, Provenance]:
    """The provenance of the default and its twin trained on ``world_name``."""
    return {
        world_name: Provenance(
            "shaped",
            f"`world-clip` / `{world_name}` is the course's own small CLIP, trained on the synthetic world "
            "**with a direct-path penalty** on the MLPs, the class-token embedding term and every "
            "attention layer but the last four (a small model on a small world does not grow the "
            "paper's pattern by itself; `data/models/MODEL_CARD.md`). So its direct effects sit in the "
            "last attention layers *by construction*: a paper preset (a real CLIP) is the test of the "
            "paper's claim."),
        f"{world_name}-plain": Provenance(
            "plain",
            f"`world-clip` / `{world_name}-plain` is the default's twin: the same world and training stages "
            "**without the direct-path penalty**, so where its direct effects sit is whatever "
            "training found."),
    }


_OFFLINE_PROVENANCE: dict[str, Provenance] = {**_offline_provenance("world-v2"), **_offline_provenance("world-v3")}


# an offline model -> its twin: the same world and training stages without the direct-path penalty
# (a twin is offered only where its weights are present: see twin_tag)
TWINS: dict[str, str] = {"world-v2": "world-v2-plain", "world-v3": "world-v3-plain"}


def twin_tag(model: torch.nn.Module) -> str | None:
    """The tag of the shipped twin of an offline model loaded with :func:`load_model` (the same
    world and stages, trained **without** the direct-path penalty: ``load_model(DEFAULT_MODEL,
    twin_tag(model))``), or ``None`` for any other model or when the twin's weights are absent."""
    name, pretrained = _LOADED_AS.get(model, (None, None))
    tag = TWINS.get(str(pretrained)) if name == DEFAULT_MODEL else None
    return tag if tag is not None and offline_weights_path(tag).is_file() else None


def world_of(model: torch.nn.Module) -> str | None:
    """The world (:data:`helpers.data.world.WORLDS`) whose scenes an offline model loaded with
    :func:`load_model` was trained on, from its training log (logs from before world-v3 name
    none: world-v2); ``None`` for any other model (the notebooks then show world-v2's scenes)."""
    name, pretrained = _LOADED_AS.get(model, (None, None))
    if name != DEFAULT_MODEL or pretrained in (None, RANDOM_WEIGHTS):
        return None
    weights = Path(str(pretrained)) if str(pretrained).endswith(".safetensors") else offline_weights_path(str(pretrained))
    log = weights.with_name(weights.name.removesuffix(".safetensors") + ".train.json")
    if not log.is_file():
        return None
    return json.loads(log.read_text())["config"].get("world", "world-v2")


def provenance(model: torch.nn.Module) -> Provenance:
    """How ``model``'s weights were made (:class:`Provenance`), from what :func:`load_model`
    loaded."""
    name, pretrained = _LOADED_AS.get(model, (None, None))
    if name is None:
        return Provenance("unknown", "This model was not loaded with `load_model`: its training is not known here.")
    if pretrained in (None, RANDOM_WEIGHTS):
        return Provenance("random", f"`{name}` has **random weights**: the numbers below only show that the "
                                    "code runs on this architecture; they say nothing about CLIP.")
    if name == DEFAULT_MODEL:
        known = _OFFLINE_PROVENANCE.get(str(pretrained))
        if known is not None:
            return known
        return Provenance("unknown", f"`{name}` with weights `{pretrained}`: trained by the course's training "
                                     "script; its training log says with which penalties.")
    if os.path.isfile(str(pretrained)):
        return Provenance("unknown", f"`{name}` with weights from `{pretrained}`: their training is not known here.")
    return Provenance("web", f"`{name}` / `{pretrained}` is a CLIP trained on web image-text pairs with nothing "
                             "that favours any layer: what it shows tests the paper's claims.")


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns; unpacks as ``model, preprocess, tokenizer``, and
    :attr:`info` gives the model's sizes (:class:`ModelInfo`)."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]

    @property
    def info(self) -> ModelInfo:
        return model_info(self.model)


def _default_config_path() -> Path:
    return data_dir() / "models" / f"{DEFAULT_MODEL}.json"


def default_weights_path() -> Path:
    """Where the trained weights of the offline default live."""
    return offline_weights_path(DEFAULT_PRETRAINED)


def offline_weights_path(tag: str) -> Path:
    """Where the weights of :data:`DEFAULT_MODEL` with ``tag`` live:
    ``data/models/world-clip-<tag>.safetensors`` (``data/`` is :func:`data_dir`)."""
    return data_dir() / "models" / f"{DEFAULT_MODEL}-{tag}.safetensors"


def offline_tags() -> list[str]:
    """Tags of the :data:`DEFAULT_MODEL` weights present in ``data/models/``, sorted."""
    prefix, suffix = f"{DEFAULT_MODEL}-", ".safetensors"
    folder = data_dir() / "models"
    if not folder.is_dir():
        return []
    return sorted(p.name[len(prefix):-len(suffix)] for p in folder.glob(f"{prefix}*{suffix}"))


# Architecture of the offline default. The file in data/models/ wins when present, so the
# trained weights and their config always travel together.
_FALLBACK_CONFIG: dict[str, Any] = {
    "embed_dim": 96,
    "vision_cfg": {"image_size": 64, "layers": 8, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}


def register_default_model() -> None:
    """Register :data:`DEFAULT_MODEL` with open_clip (idempotent)."""
    path = _default_config_path()
    cfg = json.loads(path.read_text()) if path.exists() else _FALLBACK_CONFIG
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    open_clip.factory._MODEL_CONFIGS[DEFAULT_MODEL] = cfg  # the registry open_clip reads


register_default_model()


def check_config_supported(name: str) -> dict[str, Any]:
    """Return the open_clip config of ``name`` or raise if its image tower is unsupported.

    Raises:
        ValueError: unknown model name.
        UnsupportedModelError: a known model whose image tower the decomposition cannot handle.
    """
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        vit = [m for m in open_clip.list_models() if m.startswith("ViT-")][:12]
        raise ValueError(f"Unknown open_clip model {name!r}. Try {DEFAULT_MODEL!r} or one of {vit} ...")
    reason = config_problem(cfg)
    if reason:
        raise UnsupportedModelError(f"{name!r} is not supported: {reason}. Supported: {SUPPORTED_DESCRIPTION}.")
    return cfg


def _resolve_pretrained(name: str, pretrained: str, cache_dir: str | None) -> tuple[str, dict[str, Any]]:
    """Map an open_clip tag to a local checkpoint path, downloading it once when needed.

    Returns the path and the model options the tag implies (its preprocessing, and QuickGELU
    for weights trained with it, such as OpenAI's). Raises :class:`OfflineError` within seconds
    when the weights are not cached and the hub cannot be reached.
    """
    pcfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(f"Unknown pretrained tag {pretrained!r} for {name!r}; known tags: {tags}, "
                         f"or pretrained={RANDOM_WEIGHTS!r} for an untrained model, or the path of a "
                         "checkpoint file.")
    overrides: dict[str, Any] = {
        "image_mean": pcfg.get("mean"),
        "image_std": pcfg.get("std"),
        "image_interpolation": pcfg.get("interpolation"),
        "image_resize_mode": pcfg.get("resize_mode"),
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if pcfg.get("quick_gelu") and not open_clip.get_model_config(name).get("quick_gelu"):
        # e.g. ("ViT-B-16", "openai"): the weights were trained with QuickGELU
        overrides["force_quick_gelu"] = True
    hub = pcfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id = "/".join(hub.rstrip("/").split("/")[:2])
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo_id, fname, cache_dir=cache_dir)
            if isinstance(hit, str):
                return hit, overrides
        host = "huggingface.co"
    else:
        host = urlparse(pcfg.get("url", "")).hostname or "huggingface.co"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not host_reachable(host):
        raise OfflineError(
            f"Pretrained weights {name}/{pretrained} are not cached and {host} cannot be reached "
            "(no network?). Options: (1) use the offline default: load_model() or "
            f"load_model({DEFAULT_MODEL!r}), in the notebooks preset='offline'; (2) download the "
            f"checkpoint elsewhere and pass its path: load_model({name!r}, "
            "pretrained='/path/to/open_clip_model.safetensors'); "
            "(3) pre-fill the Hugging Face cache (HF_HOME) on a machine with network.")
    path = open_clip.download_pretrained(pcfg, cache_dir=cache_dir)
    if not path:
        raise RuntimeError(f"open_clip gave no file for {name}/{pretrained}")
    return path, overrides


CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy")
"""File endings of checkpoints: a ``pretrained`` value with one of them (or a folder in it) is a path."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (damaged, truncated, not a checkpoint) or that does
    not fit the architecture; the message names the file and what was expected."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def _looks_like_path(pretrained: str) -> bool:
    """Whether ``pretrained`` names a file rather than a tag (open_clip's tags hold no ``/``, ``.``
    or ``~``)."""
    seps = [s for s in (os.sep, os.altsep, "/") if s]
    return (any(s in pretrained for s in seps) or pretrained.startswith(("~", "."))
            or Path(pretrained).suffix.lower() in CHECKPOINT_SUFFIXES)


def _checkpoint_file(pretrained: str) -> str:
    """The checkpoint file ``pretrained`` names (``~`` expanded), or a ``FileNotFoundError`` that
    says what is at that path instead."""
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in CHECKPOINT_SUFFIXES)
        hint = f"; checkpoints in it: {found}" if found else "; it holds no checkpoint file"
        raise FileNotFoundError(f"The checkpoint {pretrained!r} is a folder, not a file{hint}.")
    parent = path.parent
    where = (f"no such file in {parent}" if parent.is_dir()
             else f"its folder {parent} does not exist either")
    raise FileNotFoundError(f"The checkpoint file {pretrained!r} does not exist ({where}). Pass the path of a "
                            f"checkpoint file ({', '.join(CHECKPOINT_SUFFIXES[:4])}), an open_clip tag, or "
                            f"pretrained={RANDOM_WEIGHTS!r} for an untrained model.")


def _shape(shape: Any) -> str:
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _read_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the tensors in a checkpoint file, reading as little as possible
    (a safetensors header; a torch file memory-mapped). Raises ``ValueError`` saying why the
    file cannot be read as a checkpoint."""
    size = os.path.getsize(path)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as exc:
            raise ValueError(f"the file ({size:,} bytes) cannot be read as safetensors ({type(exc).__name__}: "
                             f"{exc}); it may be truncated (an interrupted download or copy) or not a "
                             "safetensors file: download or save it again") from exc
    obj: Any = None
    errors = []
    for mmap in (True, False):  # a file saved by an old torch cannot be memory-mapped
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            break
        except Exception as exc:
            errors.append(exc)
    else:
        exc = errors[-1]
        raise ValueError(f"the file ({size:,} bytes) cannot be read by torch.load ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); it may be truncated or damaged, "
                         "or not a torch checkpoint: download or save it again") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = (f"a dict whose entries are not all tensors ({_examples([repr(k) for k in obj])})"
                if isinstance(obj, dict) and obj else f"a {type(obj).__name__}")
        raise ValueError(f"the file holds {what}, not a state dict (a dict of tensors, or open_clip's training "
                         "checkpoint with a 'state_dict' entry)")
    return {k.removeprefix("module."): tuple(v.shape) for k, v in obj.items()}


def _examples(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def checkpoint_error(path: str, name: str, model: torch.nn.Module, exc: BaseException) -> CheckpointError:
    """Why the checkpoint at ``path`` did not load into ``model`` (open_clip model ``name``): the
    file cannot be read, or its tensors differ from what the model expects (which ones, and the
    shapes on both sides)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    head = f"Could not load the checkpoint {path} into {name!r}"
    want = (f"{name!r} expects a state dict of {_plural(len(expected), 'tensor')} "
            f"(e.g. {_examples([f'{k} {_shape(v)}' for k, v in expected.items()], 2)})")
    try:
        found = _read_shapes(path)
    except ValueError as err:
        return CheckpointError(f"{head}: {err}. {want}.", path)
    missing = [f"{k} {_shape(v)}" for k, v in expected.items() if k not in found]
    extra = [f"{k} {_shape(v)}" for k, v in found.items() if k not in expected]
    other = [f"{k} (the file has {_shape(found[k])}, {name!r} expects {_shape(v)})"
             for k, v in expected.items() if k in found and found[k] != v]
    problems = []
    if other:
        problems.append(f"{_plural(len(other), 'tensor')} with other shapes: {_examples(other)}")
    if missing:
        problems.append(f"{_plural(len(missing), 'tensor')} {name!r} needs missing from the file: "
                        f"{_examples(missing)}")
    if extra:
        problems.append(f"{_plural(len(extra), 'tensor')} in the file that {name!r} does not have: "
                        f"{_examples(extra)}")
    if not problems:  # the tensors fit; something else went wrong
        problems.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    return CheckpointError(
        f"{head}; is it a checkpoint of this architecture? The file holds {_plural(len(found), 'tensor')}, "
        f"{name!r} expects {len(expected)}: " + "; ".join(problems) + ".", path)


def _offline_checkpoint(pretrained: str | None) -> str:
    """The shipped weights of :data:`DEFAULT_MODEL` for ``pretrained`` (a tag; ``None``: the
    default tag), or a checkpoint path."""
    tag = pretrained or DEFAULT_PRETRAINED
    if pretrained and _looks_like_path(pretrained):
        return _checkpoint_file(pretrained)
    path = offline_weights_path(tag)
    if path.is_file():
        return str(path)
    if pretrained and os.path.isfile(pretrained):
        return pretrained
    present = offline_tags()
    options = (f"the tags present in {path.parent}: {present}" if present
               else f"no weights are present in {path.parent}")
    if pretrained is None:
        raise FileNotFoundError(
            f"The shipped weights of {DEFAULT_MODEL!r} ({path.name}) are missing; {options}. Pass one "
            f"of them, pretrained={RANDOM_WEIGHTS!r} for an untrained model, or a checkpoint path.")
    raise ValueError(f"Unknown pretrained {pretrained!r} for {DEFAULT_MODEL!r}: {options}; or "
                     f"pretrained={RANDOM_WEIGHTS!r} for an untrained model, or a checkpoint path.")


class FoldedTokenizer:
    """open_clip's byte-pair tokenizer with token ids folded into a smaller vocabulary.

    The stand-in tokenizer of an untrained model whose own tokenizer lives on the Hugging Face
    hub (SigLIP's) and cannot be loaded here: the text tower is untrained, so any fixed map from
    text to ids in range serves to run the code."""

    def __init__(self, vocab_size: int, context_length: int) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.vocab_size = int(vocab_size)
        self.context_length = int(context_length)
        self._inner = SimpleTokenizer(context_length=self.context_length)

    def __call__(self, texts: Any, context_length: int | None = None) -> torch.Tensor:
        return self._inner(texts, context_length or self.context_length) % self.vocab_size


def _tokenizer(name: str, *, random_weights: bool) -> Callable[..., torch.Tensor]:
    """open_clip's tokenizer of ``name``; for random weights, :class:`FoldedTokenizer` when the
    model's own tokenizer (a Hugging Face one) cannot be loaded here."""
    try:
        return open_clip.get_tokenizer(name)
    except (ImportError, OSError, ValueError) as exc:
        text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg", {})
        if not random_weights or "hf_tokenizer_name" not in text_cfg:
            raise
        logging.getLogger(__name__).debug("stand-in tokenizer for %s: %s", name, exc)
        return FoldedTokenizer(text_cfg.get("vocab_size", 49408), text_cfg.get("context_length", 77))


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init():
    """Hide open_clip's "initialized randomly" notice: the weights are loaded right after, or
    random weights were asked for by name."""
    flt = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


class _SkipParameterFills(torch.overrides.TorchFunctionMode):
    """Within this mode (it holds in the thread that enters it), the random initialisers leave
    every ``nn.Parameter`` as it is: the weights a checkpoint is about to overwrite are not drawn
    first. Buffers are filled as usual; a strict load then writes every parameter, so nothing
    drawn is missing. ``skipped`` counts the fills left out."""

    FILLS = frozenset({"uniform_", "normal_", "erfinv_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                       "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_", "random_", "bernoulli_",
                       "exponential_", "geometric_", "log_normal_", "cauchy_"})

    def __init__(self) -> None:
        super().__init__()
        self.skipped = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self.FILLS:
            target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(target, torch.nn.Parameter):
                self.skipped += 1
                return target
        return func(*args, **kwargs)


def load_model(
    name: str = DEFAULT_MODEL,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    *,
    precision: str = "fp32",
    cache_dir: str | None = None,
    check_supported: bool = True,
) -> LoadedModel:
    """Load an open_clip model with its preprocessing and tokenizer, in eval mode.

    Args:
        name: open_clip model name (``"ViT-B-16"``, ``"ViT-L-14-quickgelu"``, ...) or
            :data:`DEFAULT_MODEL`.
        pretrained: which weights, always named: an open_clip tag such as
            ``"laion2b_s34b_b88k"`` / ``"openai"`` (downloaded once), the path of a checkpoint
            file (``.safetensors``, ``.bin``, ``.pt``: a state dict, or open_clip's training
            checkpoint with a ``state_dict`` entry), or :data:`RANDOM_WEIGHTS` (``"random"``)
            for untrained weights. Weights read from a file are not drawn at random first
            (the parameters' random fills are skipped, then a strict load writes every one).
            For :data:`DEFAULT_MODEL`, a tag of :func:`offline_tags`; ``None`` loads
            :data:`DEFAULT_PRETRAINED`. ``None`` for any other model is an error
            that lists its tags.
        device: torch device.
        precision: open_clip precision string (``"fp32"``, ``"fp16"``, ``"bf16"``).
        cache_dir: download cache for hub weights.
        check_supported: raise :class:`UnsupportedModelError` for image towers the decomposition
            does not support (set False to load them anyway).

    Raises:
        ValueError: unknown name or tag; no weights named for an open_clip model.
        CheckpointError: (a ``ValueError``) a checkpoint file that cannot be read or does not fit
            the architecture; the message names the file and the tensors expected.
        FileNotFoundError: a checkpoint path that does not exist; the offline default's shipped
            weights are missing.
        UnsupportedModelError: unsupported image tower (when ``check_supported``).
        OfflineError: weights need a download and the network is unreachable.
    """
    if check_supported:
        check_config_supported(name)
    elif open_clip.get_model_config(name) is None:
        check_config_supported(name)  # raises the unknown-name error
    if pretrained == "":
        pretrained = None
    kwargs: dict[str, Any] = {}
    ckpt: str | None = None
    if pretrained == RANDOM_WEIGHTS:
        pass
    elif name == DEFAULT_MODEL:
        ckpt = _offline_checkpoint(pretrained)
    elif pretrained is None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        known = (f"its open_clip tags are {tags}, e.g. pretrained={tags[0]!r}" if tags
                 else "open_clip knows no pretrained tags for it")
        raise ValueError(f"No weights named for {name!r}: {known}. Pass pretrained={RANDOM_WEIGHTS!r} "
                         "for an untrained model, or the path of a checkpoint file.")
    elif os.path.isfile(pretrained) or _looks_like_path(pretrained):
        ckpt = _checkpoint_file(pretrained)
    else:
        ckpt, kwargs = _resolve_pretrained(name, pretrained, cache_dir)
    # weights a strict load overwrites are not drawn at random first (ViT-H-14: a billion numbers);
    # big_vision's .npz files are read by a converter of their own, and the offline default is small
    # (its notebooks' later draws from torch's generator stay as they were)
    skip_fills = ckpt is not None and name != DEFAULT_MODEL and Path(ckpt).suffix not in (".npz", ".npy")
    with _quiet_random_init(), (_SkipParameterFills() if skip_fills else contextlib.nullcontext()):
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None, device=device, precision=precision, **kwargs)
    if ckpt is not None:
        try:
            open_clip.load_checkpoint(model, ckpt, strict=True)
        except Exception as exc:  # damaged, not a checkpoint, or another architecture's: say which
            raise checkpoint_error(ckpt, name, model, exc) from exc
        model.to(device)
    model.eval()
    tokenizer = _tokenizer(name, random_weights=pretrained == RANDOM_WEIGHTS)
    _LOADED_AS[model] = (name, DEFAULT_PRETRAINED if name == DEFAULT_MODEL and ckpt is not None
                         and pretrained in (None, DEFAULT_PRETRAINED) else (pretrained or None))
    return LoadedModel(model, preprocess, tokenizer)
