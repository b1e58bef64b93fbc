"""Loading CLIP models: any open_clip ViT, and the course's own offline default.

``load_model`` is the one entry point the notebooks use::

    model, preprocess, tokenizer = load_model()                       # offline default
    model, preprocess, tokenizer = load_model("ViT-B-16")              # random weights
    model, preprocess, tokenizer = load_model("ViT-B-16", "laion2b_s34b_b88k")  # needs network once

The offline default (:data:`DEFAULT_MODEL`) is a small ViT CLIP whose architecture is
registered with open_clip, so ``open_clip.create_model(DEFAULT_MODEL)`` works too. Its trained
weights ship in ``data/models/``; when they are absent an untrained stand-in with the same
architecture is returned and a warning says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import urlparse

import open_clip
import torch

from .download import OfflineError, host_reachable

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "SUPPORTED_DESCRIPTION",
    "OfflineError",
    "UnsupportedModelError",
    "LoadedModel",
    "load_model",
    "check_config_supported",
    "data_dir",
    "default_weights_path",
    "register_default_model",
]

DEFAULT_MODEL = "world-clip"
"""open_clip name of the course's offline model (registered on import of this module)."""

DEFAULT_PRETRAINED = "world-v2"
"""Tag of the shipped weights of :data:`DEFAULT_MODEL`."""

SUPPORTED_DESCRIPTION = (
    "open_clip CLIP models with a plain ViT image tower that reads the image embedding from "
    "the class token (VisionTransformer, pool_type='tok', no attentional pool, default "
    "ResidualAttentionBlock with nn.MultiheadAttention), e.g. ViT-B-32, ViT-B-16, ViT-L-14, "
    "ViT-H-14, their -quickgelu variants, and the offline default "
    f"'{DEFAULT_MODEL}'"
)


class UnsupportedModelError(NotImplementedError, ValueError):
    """Raised for architectures the decomposition does not support (subclass of both
    ``NotImplementedError`` and ``ValueError`` so either ``except`` catches it)."""


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns; unpacks as ``model, preprocess, tokenizer``."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]


def data_dir() -> Path:
    """The repository's ``data/`` folder (overridable with ``CLIP_COURSE_DATA``)."""
    env = os.environ.get("CLIP_COURSE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data"


def _default_config_path() -> Path:
    return data_dir() / "models" / f"{DEFAULT_MODEL}.json"


def default_weights_path() -> Path:
    """Where the trained weights of the offline default live."""
    return data_dir() / "models" / f"{DEFAULT_MODEL}-{DEFAULT_PRETRAINED}.safetensors"


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
    vcfg = cfg.get("vision_cfg", {})
    reason = None
    if "timm_model_name" in vcfg:
        reason = f"its image tower is a timm model ({vcfg['timm_model_name']})"
    elif isinstance(vcfg.get("layers"), (list, tuple)):
        reason = "its image tower is a ResNet"
    elif vcfg.get("attentional_pool"):
        reason = "it pools image tokens with an attentional pooler"
    elif vcfg.get("pool_type", "tok") != "tok":
        reason = f"it pools image tokens with pool_type={vcfg.get('pool_type')!r}"
    elif any(vcfg.get(k) for k in ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn",
                                     "scale_attn_inner", "scale_fc")) or vcfg.get("block_type") == "custom":
        reason = "its blocks use a custom attention (qk-norm / scaled cosine / inner LN)"
    elif "multimodal_cfg" in cfg:
        reason = "it is a CoCa captioning model"
    if reason:
        raise UnsupportedModelError(f"{name!r} is not supported: {reason}. Supported: {SUPPORTED_DESCRIPTION}.")
    return cfg


def _resolve_pretrained(name: str, pretrained: str, cache_dir: str | None) -> tuple[str, dict[str, Any]]:
    """Map a pretrained tag to a local checkpoint path, without touching the network if cached.

    Returns the path and the preprocessing overrides of the tag. Raises :class:`OfflineError`
    quickly when the weights are not cached and the hub cannot be reached.
    """
    if os.path.isfile(pretrained):
        return pretrained, {}
    pcfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(f"Unknown pretrained tag {pretrained!r} for {name!r}; known tags: {tags}, "
                         "or pass the path of a checkpoint file.")
    overrides = {
        "image_mean": pcfg.get("mean"),
        "image_std": pcfg.get("std"),
        "image_interpolation": pcfg.get("interpolation"),
        "image_resize_mode": pcfg.get("resize_mode"),
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
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
            f"load_model({DEFAULT_MODEL!r}); (2) download the checkpoint elsewhere and pass its "
            f"path: load_model({name!r}, pretrained='/path/to/open_clip_model.safetensors'); "
            "(3) pre-fill the Hugging Face cache (HF_HOME) on a machine with network.")
    return pretrained, overrides


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init(active: bool):
    """Hide open_clip's "initialized randomly" notice when we load the weights right after."""
    if not active:
        yield
        return
    flt = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


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
        pretrained: ``None`` for random weights (for the offline default: its shipped weights),
            an open_clip tag such as ``"laion2b_s34b_b88k"`` / ``"openai"``, or a checkpoint path.
        device: torch device.
        precision: open_clip precision string (``"fp32"``, ``"fp16"``, ``"bf16"``).
        cache_dir: download cache for hub weights.
        check_supported: raise :class:`UnsupportedModelError` for image towers the decomposition
            does not support (set False to load them anyway).

    Raises:
        ValueError: unknown name or tag.
        UnsupportedModelError: unsupported image tower (when ``check_supported``).
        OfflineError: weights need a download and the network is unreachable.
    """
    if check_supported:
        check_config_supported(name)
    elif open_clip.get_model_config(name) is None:
        check_config_supported(name)  # raises the unknown-name error
    kwargs: dict[str, Any] = {}
    ckpt: str | None = None
    if name == DEFAULT_MODEL:
        if pretrained in (None, DEFAULT_PRETRAINED):
            path = default_weights_path()
            if path.exists():
                ckpt = str(path)
            else:
                warnings.warn(
                    f"Trained weights for {DEFAULT_MODEL!r} not found at {path}; using an UNTRAINED "
                    "stand-in with the same architecture (random weights: decompositions are exact, "
                    "but nothing is interpretable).", stacklevel=2)
        else:
            ckpt = pretrained if os.path.isfile(pretrained) else None
            if ckpt is None:
                raise ValueError(f"Unknown pretrained {pretrained!r} for {DEFAULT_MODEL!r}; use "
                                 f"{DEFAULT_PRETRAINED!r} or a checkpoint path.")
    elif pretrained:
        ckpt, kwargs = _resolve_pretrained(name, pretrained, cache_dir)
    with _quiet_random_init(ckpt is not None):
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None, device=device, precision=precision, **kwargs)
    if ckpt is not None:
        if ckpt.endswith(".safetensors") and name == DEFAULT_MODEL:
            from safetensors.torch import load_file

            state = {k: v.float() for k, v in load_file(ckpt).items()}
            model.load_state_dict(state, strict=True)
            model.to(device)
        else:
            open_clip.load_checkpoint(model, ckpt, strict=True)
            model.to(device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    return LoadedModel(model, preprocess, tokenizer)
