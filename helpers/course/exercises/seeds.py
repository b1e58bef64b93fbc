"""Seeded random inputs for the exercises' test cases: the same cases on every run.

:func:`gen` makes a generator from a seed; :func:`randn` and :func:`rand` draw float64 tensors
from it; :func:`seeded_cases` searches seeds, in order, for the contexts of a *find* exercise
that tell the typical answers apart.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import Tensor

__all__ = ["gen", "randn", "rand", "seeded_cases"]

T = TypeVar("T")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def rand(g: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def seeded_cases(first_seed: int, tries: int, make: Callable[[torch.Generator, int], T | None], n: int = 3) -> list[T]:
    """The first ``n`` cases ``make(gen(first_seed + seed), seed)`` returns for ``seed`` in
    ``0 .. tries - 1``, in order: ``make`` returns ``None`` for a context that does not tell the
    typical answers apart. Seeded, so the same contexts every time."""
    out: list[T] = []
    for seed in range(tries):
        case = make(gen(first_seed + seed), seed)
        if case is not None:
            out.append(case)
        if len(out) == n:
            break
    return out
