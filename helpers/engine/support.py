"""Which image towers the helpers support: one rule set, checked on configs and on built models.

Each :class:`Rule` is one architectural feature the decomposition cannot handle, with two
ways to spot it: in an open_clip model *config* (before anything is built or downloaded,
:func:`helpers.engine.models.check_config_supported`) and in a *built* image tower
(:func:`helpers.engine.decompose.check_model_supported`). Both checks walk the same :data:`RULES`
in order and report the first that applies, in the same words::

    config_problem(open_clip.get_model_config("RN50"))   # 'its image tower is a ResNet'
    tower_problem(open_clip.create_model("RN50"))         # 'its image tower is a ResNet'

A rule whose feature cannot be seen on one side (a missing output projection is only visible
on the built tower) leaves that side ``None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

__all__ = ["SUPPORTED_DESCRIPTION", "UnsupportedModelError", "Rule", "RULES", "config_problem", "tower_problem",
           "image_tower", "check_tower", "timm_map_problem", "is_timm_tower"]


SUPPORTED_DESCRIPTION = (
    "open_clip CLIP models with a plain ViT image tower that reads the image embedding from "
    "the class token (VisionTransformer, pool_type='tok', no attentional pool, default "
    "ResidualAttentionBlock with nn.MultiheadAttention), e.g. ViT-B-32, ViT-B-16, ViT-L-14, "
    "ViT-H-14, their -quickgelu variants, and the course's offline default (world-clip); and "
    "timm ViT towers with attention pooling (timm_pool='map'): the SigLIP / SigLIP 2 models, e.g. "
    "ViT-B-16-SigLIP, ViT-B-16-SigLIP2, ViT-SO400M-14-SigLIP"
)


class UnsupportedModelError(NotImplementedError, ValueError):
    """Raised for architectures the decomposition does not support (subclass of both
    ``NotImplementedError`` and ``ValueError`` so either ``except`` catches it)."""


_CUSTOM_ATTENTION_KEYS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn", "scale_attn_inner",
                          "scale_fc")
_CUSTOM_ATTENTION = "a custom attention (qk-norm / scaled cosine / inner layer norms)"


@dataclass(frozen=True)
class Rule:
    """One unsupported feature.

    Attributes:
        name: a short name.
        in_config: ``(config) -> reason or None`` on an open_clip model config (the whole
            config; ``config["vision_cfg"]`` is the image tower's part).
        in_tower: ``(model, tower) -> reason or None`` on a built model and its image tower.
    """

    name: str
    in_config: Callable[[Mapping[str, Any]], str | None] | None
    in_tower: Callable[[nn.Module, nn.Module], str | None] | None


def _vision(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    return cfg.get("vision_cfg", {}) or {}


def _is_vit(tower: nn.Module) -> bool:
    from open_clip.transformer import VisionTransformer

    return isinstance(tower, VisionTransformer)


_TIMM_SUPPORTED = ("timm ViT towers with attention pooling (timm_pool='map', as in open_clip's SigLIP / "
                   "SigLIP 2 models)")


def _is_timm(tower: nn.Module) -> bool:
    return type(tower).__name__ == "TimmModel"


def is_timm_tower(model: nn.Module) -> bool:
    """Whether ``model``'s image tower (or ``model`` itself) is an open_clip ``TimmModel``."""
    return _is_timm(image_tower(model))


def _timm_config(cfg: Mapping[str, Any]) -> str | None:
    v = _vision(cfg)
    name = v.get("timm_model_name")
    if name is None:
        return None
    name = str(name)
    what = f"its image tower is a timm model ({name})"
    if name.startswith("eva") or name.startswith("vit_pe_"):
        return f"{what} with rotary position embeddings (an EVA-style tower); of timm towers only {_TIMM_SUPPORTED}"
    if not re.match(r"^vit_.*siglip", name):
        return f"{what}; of timm towers only {_TIMM_SUPPORTED}"
    if v.get("timm_pool") != "map":
        return f"{what} with pooling {v.get('timm_pool')!r}; of timm towers only {_TIMM_SUPPORTED}"
    if v.get("timm_proj") not in (None, "", "none", "linear"):
        return f"{what} with a {v.get('timm_proj')!r} projection head (nonlinear); of timm towers only {_TIMM_SUPPORTED}"
    return None


def _timm_tower(_model: nn.Module, tower: nn.Module) -> str | None:
    if not _is_timm(tower):
        return None
    trunk = getattr(tower, "trunk", None)
    cfg = getattr(trunk, "default_cfg", None) or getattr(trunk, "pretrained_cfg", None)
    name = cfg.get("architecture") if isinstance(cfg, dict) else None
    what = f"its image tower is a timm model ({name or type(trunk).__name__})"
    problem = timm_map_problem(tower)
    return f"{what}: {problem}; of timm towers only {_TIMM_SUPPORTED}" if problem else None


def timm_map_problem(tower: nn.Module) -> str | None:
    """What in a timm image tower (open_clip ``TimmModel``) the attention-pooling decomposition
    cannot handle, or ``None`` when it is a plain timm ViT with a MAP head."""
    from torch.nn import Dropout, Identity, LayerNorm, Linear, Sequential

    trunk = getattr(tower, "trunk", None)
    if type(trunk).__name__ != "VisionTransformer" or not hasattr(trunk, "blocks"):
        kind = "an EVA-style tower" if type(trunk).__name__ == "Eva" else f"a {type(trunk).__name__}"
        return f"it is {kind}, not a timm VisionTransformer"
    if getattr(trunk, "global_pool", None) != "map" or getattr(trunk, "attn_pool", None) is None:
        return f"it pools with global_pool={getattr(trunk, 'global_pool', None)!r}, not attention pooling ('map')"
    if getattr(trunk, "num_prefix_tokens", 0) or getattr(trunk, "cls_token", None) is not None:
        return "it has class or register tokens"
    if getattr(trunk, "dynamic_img_size", False):
        return "it resizes position embeddings on the fly (dynamic_img_size)"
    pool = trunk.attn_pool
    if type(pool).__name__ != "AttentionPoolLatent":
        return f"its pooling is a {type(pool).__name__}, not timm's AttentionPoolLatent"
    if pool.latent_len != 1 or getattr(pool, "pos_embed", None) is not None:
        return "its attention pooling has several latent queries or its own position embedding"
    if not isinstance(pool.q_norm, Identity) or not isinstance(pool.k_norm, Identity):
        return "its attention pooling normalises queries / keys"
    if getattr(pool, "mlp", None) is not None and not isinstance(pool.norm, LayerNorm):
        return "its attention pooling's MLP is not preceded by a LayerNorm"
    if not isinstance(trunk.norm, LayerNorm) or not isinstance(trunk.fc_norm, Identity):
        return "its final norm is not one LayerNorm over the tokens (or it has an fc_norm)"
    if not isinstance(trunk.norm_pre, (Identity, LayerNorm)) or not isinstance(trunk.patch_drop, Identity):
        return "it has an unusual norm_pre / patch_drop"
    if not isinstance(trunk.head, (Identity, Linear)):
        return f"its classifier head is a {type(trunk.head).__name__}"
    head = getattr(tower, "head", None)
    if head is not None and not (isinstance(head, Sequential) and all(isinstance(m, (Linear, Dropout)) for m in head)):
        return "its projection head is nonlinear (an MLP)"
    for i, blk in enumerate(trunk.blocks):
        if type(blk).__name__ != "Block":
            return f"block {i} is a {type(blk).__name__}, not timm's plain pre-norm Block"
        attn = getattr(blk, "attn", None)
        if type(attn).__name__ != "Attention" or not hasattr(attn, "qkv"):
            return f"block {i} uses a {type(attn).__name__} attention"
        if not isinstance(attn.q_norm, Identity) or not isinstance(attn.k_norm, Identity) \
                or not isinstance(getattr(attn, "norm", Identity()), Identity) or getattr(attn, "gate", None) is not None:
            return f"block {i} uses {_CUSTOM_ATTENTION}"
        for ls in (blk.ls1, blk.ls2):
            if not isinstance(ls, Identity) and not (type(ls).__name__ == "LayerScale" and hasattr(ls, "gamma")):
                return f"block {i} scales its branches with a {type(ls).__name__}"
        if not isinstance(blk.norm1, LayerNorm) or not isinstance(blk.norm2, LayerNorm):
            return f"block {i} does not use LayerNorms"
    return None


def _resnet_tower(_model: nn.Module, tower: nn.Module) -> str | None:
    from open_clip.modified_resnet import ModifiedResNet

    return "its image tower is a ResNet" if isinstance(tower, ModifiedResNet) else None


def _other_tower(_model: nn.Module, tower: nn.Module) -> str | None:
    if _is_vit(tower) or _is_timm(tower):
        return None
    return f"its image tower {type(tower).__name__} is not an open_clip VisionTransformer"


def _attn_pool_config(cfg: Mapping[str, Any]) -> str | None:
    return "it pools image tokens with an attentional pooler" if _vision(cfg).get("attentional_pool") else None


def _attn_pool_tower(_model: nn.Module, tower: nn.Module) -> str | None:
    if _is_timm(tower):
        return None
    return "it pools image tokens with an attentional pooler" if tower.attn_pool is not None else None


def _pool_reason(pool_type: Any) -> str | None:
    if pool_type == "tok":
        return None
    return f"it pools image tokens with pool_type={pool_type!r} rather than reading the class token"


def _custom_blocks_config(cfg: Mapping[str, Any]) -> str | None:
    v = _vision(cfg)
    if any(v.get(k) for k in _CUSTOM_ATTENTION_KEYS) or v.get("block_type") == "custom":
        return f"its blocks use {_CUSTOM_ATTENTION}"
    return None


def _first_odd_block(tower: nn.Module, problem: Callable[[int, nn.Module], str | None]) -> str | None:
    """What ``problem(i, block)`` says of the first block of a stock ViT tower it finds wrong;
    ``None`` when every block is fine, or for a timm trunk (its own rules judge it)."""
    if _is_timm(tower):
        return None
    for i, blk in enumerate(tower.transformer.resblocks):
        reason = problem(i, blk)
        if reason is not None:
            return reason
    return None


def _custom_block(i: int, blk: nn.Module) -> str | None:
    from open_clip.transformer import ResidualAttentionBlock

    if not isinstance(blk, ResidualAttentionBlock) or not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention):
        return f"its blocks use {_CUSTOM_ATTENTION}: block {i} is a {type(blk).__name__}"
    return None


def _odd_attention(i: int, blk: nn.Module) -> str | None:
    attn = blk.attn
    if not attn._qkv_same_embed_dim or attn.in_proj_weight is None or attn.bias_k is not None or attn.add_zero_attn:
        return f"block {i} uses a non-standard MultiheadAttention (separate q/k/v weights or extra keys)"
    return None


RULES: tuple[Rule, ...] = (
    Rule("timm tower", _timm_config, _timm_tower),
    Rule("ResNet tower",
         lambda cfg: "its image tower is a ResNet" if isinstance(_vision(cfg).get("layers"), (list, tuple)) else None,
         _resnet_tower),
    Rule("other tower", None, _other_tower),
    Rule("attentional pooler", _attn_pool_config, _attn_pool_tower),
    Rule("pooling", lambda cfg: _pool_reason(_vision(cfg).get("pool_type", "tok")),
         lambda _m, tower: None if _is_timm(tower) else _pool_reason(tower.pool_type)),
    Rule("custom attention", _custom_blocks_config, lambda _m, tower: _first_odd_block(tower, _custom_block)),
    Rule("non-standard MultiheadAttention", None, lambda _m, tower: _first_odd_block(tower, _odd_attention)),
    Rule("no projection", None,
         lambda _m, tower: "it has no output projection" if not _is_timm(tower) and tower.proj is None else None),
    Rule("captioning model",
         lambda cfg: "it is a CoCa captioning model" if "multimodal_cfg" in cfg else None,
         lambda model, _t: "it is a CoCa captioning model" if type(model).__name__ == "CoCa" else None),
)
"""The unsupported features, checked in this order (the first that applies is reported)."""


def config_problem(cfg: Mapping[str, Any]) -> str | None:
    """Why a model with open_clip config ``cfg`` is not supported, or ``None``."""
    for rule in RULES:
        reason = rule.in_config(cfg) if rule.in_config is not None else None
        if reason:
            return reason
    return None


def image_tower(model: nn.Module) -> nn.Module:
    """The image tower of an open_clip model (``model.visual``); a module without one is taken
    to be a tower itself."""
    tower = getattr(model, "visual", None)
    return model if _is_vit(model) or not isinstance(tower, nn.Module) else tower


def tower_problem(model: nn.Module) -> str | None:
    """Why the built ``model`` (or image tower) is not supported, or ``None``."""
    tower = image_tower(model)
    for rule in RULES:
        reason = rule.in_tower(model, tower) if rule.in_tower is not None else None
        if reason:
            return reason
    return None


def check_tower(model: nn.Module) -> nn.Module:
    """The model's ViT image tower, or :class:`~helpers.engine.models.UnsupportedModelError` saying why."""
    reason = tower_problem(model)
    if reason:
        raise UnsupportedModelError(f"image tower not supported: {reason}. Supported: {SUPPORTED_DESCRIPTION}.")
    return image_tower(model)
