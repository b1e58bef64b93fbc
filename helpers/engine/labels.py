"""The one grammar for naming layers, heads and direct-effect components, and for picking them.

Every helper, table and notebook names things the same way (all indices 0-based)::

    L3          layer 3                         layer_label(3)        parse_layer("L3") == 3
    L3.H1       head 1 of layer 3               head_label(3, 1)      parse_head("L3.H1") == (3, 1)
    embed       the class-token embedding term  component_labels(n_layers) ==
    attn.3      attention layer 3's direct term     ["embed", "attn.0", "mlp.0", ..., "const"]
    mlp.3       MLP 3's direct term             parse_component("attn.3") == ("attn", 3)
    const       the ``ln_post`` bias term       parse_component("const") == ("const", None)

Parsing is strict (``"L3.h1"``, ``"attn3"`` or ``"L-1"`` are errors that say what the grammar
is) and optionally checks the indices against a model's size. :class:`Head` is the one record
of a head's identity that every per-head result (roles, spurious scores) extends.

:func:`resolve_indices` turns a user's selection of layers or heads (an int, a list, a slice,
a tensor, ``None`` for all; negative indices count from the end) into checked indices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence as _Sequence
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from torch import Tensor

__all__ = [
    "Selection",
    "COMPONENT_KINDS",
    "layer_label",
    "head_label",
    "component_label",
    "component_labels",
    "head_labels",
    "parse_layer",
    "parse_head",
    "parse_component",
    "Head",
    "resolve_indices",
    "single_index",
]

Selection = int | Sequence[int] | slice | Tensor | None
"""A choice of layers or heads: one index, several, a slice, an index tensor, or ``None`` (all)."""

COMPONENT_KINDS: tuple[str, ...] = ("embed", "attn", "mlp", "const")
"""The kinds of direct-effect components, in the order :func:`component_labels` lists them."""

_LAYER_RE = re.compile(r"L(\d+)")
_HEAD_RE = re.compile(r"L(\d+)\.H(\d+)")
_COMPONENT_RE = re.compile(r"(attn|mlp)\.(\d+)")


def _nonneg(i: Any, what: str) -> int:
    i = single_index(i, what)
    if i < 0:
        raise ValueError(f"{what} must be non-negative in a label, got {i} (resolve negative indices first)")
    return i


def _check_bound(i: int, n: int | None, what: str, text: str) -> int:
    if n is not None and i >= n:
        raise IndexError(f"{text!r} names {what} {i}, but the model has {n} {what}s (0..{n - 1})")
    return i


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------


def layer_label(layer: int) -> str:
    """``"L{layer}"``."""
    return f"L{_nonneg(layer, 'layer')}"


def head_label(layer: int, head: int) -> str:
    """``"L{layer}.H{head}"``."""
    return f"L{_nonneg(layer, 'layer')}.H{_nonneg(head, 'head')}"


def head_labels(heads: Iterable[tuple[int, int]]) -> list[str]:
    """:func:`head_label` of every ``(layer, head)`` pair."""
    return [head_label(layer, head) for layer, head in heads]


def component_label(kind: str, layer: int | None = None) -> str:
    """``"embed"``, ``"attn.{layer}"``, ``"mlp.{layer}"`` or ``"const"``."""
    if kind in ("embed", "const"):
        if layer is not None:
            raise ValueError(f"the {kind!r} component has no layer, got layer={layer}")
        return kind
    if kind in ("attn", "mlp"):
        if layer is None:
            raise ValueError(f"an {kind!r} component needs a layer")
        return f"{kind}.{_nonneg(layer, 'layer')}"
    raise ValueError(f"unknown component kind {kind!r}; kinds are {', '.join(COMPONENT_KINDS)}")


def component_labels(n_layers: int) -> list[str]:
    """The direct-effect components of an ``n_layers`` model, in their one order:
    ``embed, attn.0, mlp.0, attn.1, mlp.1, ..., const``."""
    n = _nonneg(n_layers, "n_layers")
    return ["embed"] + [f"{kind}.{layer}" for layer in range(n) for kind in ("attn", "mlp")] + ["const"]


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def _text(label: Any, what: str) -> str:
    if not isinstance(label, str):
        raise TypeError(f"a {what} label must be a string, got {type(label).__name__}")
    return label.strip()


def parse_layer(label: str, n_layers: int | None = None) -> int:
    """``"L3"`` -> ``3`` (checked against ``n_layers`` when given)."""
    text = _text(label, "layer")
    m = _LAYER_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a layer label: {label!r}; layers are written L<layer>, e.g. 'L3' (0-based)")
    return _check_bound(int(m.group(1)), n_layers, "layer", text)


def parse_head(label: str, n_layers: int | None = None, n_heads: int | None = None) -> tuple[int, int]:
    """``"L3.H1"`` -> ``(3, 1)`` (checked against the model's size when given)."""
    text = _text(label, "head")
    m = _HEAD_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a head label: {label!r}; heads are written L<layer>.H<head>, e.g. 'L3.H1' "
                         "(0-based)")
    layer, head = int(m.group(1)), int(m.group(2))
    return _check_bound(layer, n_layers, "layer", text), _check_bound(head, n_heads, "head", text)


def parse_component(label: str, n_layers: int | None = None) -> tuple[str, int | None]:
    """``"attn.3"`` -> ``("attn", 3)``, ``"embed"`` -> ``("embed", None)``."""
    text = _text(label, "component")
    if text in ("embed", "const"):
        return text, None
    m = _COMPONENT_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a component label: {label!r}; components are 'embed', 'attn.<layer>', "
                         "'mlp.<layer>' and 'const', e.g. 'attn.3' (0-based)")
    return m.group(1), _check_bound(int(m.group(2)), n_layers, "layer", text)


# ----------------------------------------------------------------------------------------------
# A head's identity
# ----------------------------------------------------------------------------------------------


@dataclass
class Head:
    """One attention head: ``layer`` and ``head`` (0-based, non-negative).

    The base of every per-head record (:class:`helpers.methods.heads.HeadRole`,
    :class:`helpers.methods.spurious.HeadScore`), so they share one identity and one :attr:`label`.
    """

    layer: int
    head: int

    @property
    def label(self) -> str:
        """``"L{layer}.H{head}"``."""
        return head_label(self.layer, self.head)

    @property
    def pair(self) -> tuple[int, int]:
        """``(layer, head)``, as the ablation helpers take it."""
        return self.layer, self.head

    @classmethod
    def parse(cls, label: str) -> "Head":
        """The head named by a label such as ``"L3.H1"``."""
        return cls(*parse_head(label))


# ----------------------------------------------------------------------------------------------
# Selections
# ----------------------------------------------------------------------------------------------


def resolve_indices(which: Selection, n: int, what: str, *, sort: bool = True) -> list[int]:
    """Indices into ``n`` layers (or heads, ...) chosen by ``which``: non-negative, checked.

    ``None`` means all; an int one; a sequence, slice, range, array or tensor several.
    Negative indices count from the end. With ``sort`` (default) the result is sorted;
    otherwise it keeps the given order. An index given twice (also as ``i`` and ``i - n``) is
    an error: it would be counted twice.

    Raises:
        TypeError: not an int / sequence of ints.
        IndexError: an index out of range (the message gives the valid range).
        ValueError: an empty selection or a duplicate.
    """
    if which is None:
        return list(range(n))
    if isinstance(which, Tensor):
        which = which.reshape(-1).tolist()
    elif isinstance(which, (int, np.integer)) and not isinstance(which, bool):
        which = [int(which)]
    elif isinstance(which, slice):
        which = list(range(n))[which]
    if isinstance(which, (str, bytes)) or not isinstance(which, (_Sequence, range, np.ndarray)):
        raise TypeError(f"{what}s must be an int, a sequence of ints or None, got {type(which).__name__}")
    items = list(which)
    if not items:
        raise ValueError(f"empty {what} selection")
    out = []
    for i in items:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"{what} indices must be ints, got {i!r}")
        if not -n <= i < n:
            raise IndexError(f"{what} index {int(i)} out of range: the model has {n} {what}s, "
                             f"valid indices are 0..{n - 1} (or -{n}..-1 from the end)")
        out.append(int(i) % n)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate {what} indices {items} (each would be counted twice)")
    return sorted(out) if sort else out


def single_index(i: Any, what: str) -> int:
    """``i`` as one int index (not a bool, list or float); range checks come later."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{what} must be a single int index, got {i!r}")
    return int(i)
