"""A pool of tagged texts: the type every TextSpan pool comes in.

A :class:`Pool` holds parallel lists of texts, property tags and values. TextSpan's indices
refer to its order; head roles (:mod:`helpers.methods.heads`) read its tags. Which pools exist,
how they are generated, loaded and checked is :mod:`helpers.data.pools`' job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["Pool", "TSV_HEADER"]

TSV_HEADER = ("text", "property", "value")
"""Columns of a pool TSV file, in the order :meth:`Pool.to_tsv` writes them."""


@dataclass
class Pool:
    """A pool of texts, each tagged with a property and a value (parallel lists).

    Attributes:
        texts: the texts, in order; TextSpan's indices refer to this order.
        properties: the property of each text (``"unknown"`` for untagged files).
        values: the value of each text within its property.
        name: a short label (the pool's name or file stem).
    """

    texts: list[str]
    properties: list[str]
    values: list[str]
    name: str = "pool"

    def __post_init__(self) -> None:
        self.texts = list(self.texts)
        self.properties = list(self.properties)
        self.values = list(self.values)
        n = len(self.texts)
        if len(self.properties) != n or len(self.values) != n:
            raise ValueError(
                f"pool {self.name!r}: {n} texts but {len(self.properties)} properties and "
                f"{len(self.values)} values")

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return (f"Pool(name={self.name!r}, {len(self)} texts, "
                f"{len(self.by_property())} properties)")

    def by_property(self) -> dict[str, list[int]]:
        """Indices of the texts of each property, properties in order of first appearance."""
        out: dict[str, list[int]] = {}
        for i, p in enumerate(self.properties):
            out.setdefault(p, []).append(i)
        return out

    def counts(self) -> dict[str, int]:
        """Number of texts of each property."""
        return {p: len(ix) for p, ix in self.by_property().items()}

    def subset(self, indices: Iterable[int]) -> "Pool":
        """A new pool with the texts at ``indices`` (in that order; any integer iterable)."""
        ix = [int(i) for i in indices]
        n = len(self)
        for i in ix:
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for a pool of {n} texts")
        return Pool([self.texts[i] for i in ix], [self.properties[i] for i in ix],
                    [self.values[i] for i in ix], self.name)

    def rows(self) -> list[tuple[str, str, str]]:
        """The pool as ``(text, property, value)`` rows."""
        return list(zip(self.texts, self.properties, self.values))

    def sample(self, n: int, *, seed: int = 0) -> "Pool":
        """``n`` texts drawn at random, each property keeping its share of the pool (largest
        remainders), in the pool's order; ``n = 0`` or ``n >= len(self)`` keeps every text.

        For models whose text tower is slow on the machine at hand (a large CLIP on a CPU).
        """
        import numpy as np

        if n < 0:
            raise ValueError(f"n must be >= 0 (0 keeps every text), got {n}")
        if n == 0 or n >= len(self):
            return self.subset(range(len(self)))
        groups = list(self.by_property().values())
        exact = [n * len(g) / len(self) for g in groups]
        quota = [int(q) for q in exact]
        for k in sorted(range(len(groups)), key=lambda k: quota[k] - exact[k])[:n - sum(quota)]:
            quota[k] += 1
        rng = np.random.default_rng(seed)
        keep = [int(i) for g, q in zip(groups, quota) for i in rng.permutation(g)[:q]]
        return self.subset(sorted(keep))

    def tsv_text(self) -> str:
        """The pool as TSV text (header ``text, property, value``; ``\\n`` line ends)."""
        lines = ["\t".join(TSV_HEADER)]
        for row in zip(self.texts, self.properties, self.values):
            for cell in row:
                if "\t" in cell or "\n" in cell or "\r" in cell:
                    raise ValueError(f"pool {self.name!r}: {cell!r} contains a tab or a line "
                                     "break and cannot be written as TSV")
            lines.append("\t".join(row))
        return "\n".join(lines) + "\n"

    def to_tsv(self, path: str | os.PathLike[str]) -> Path:
        """Write the pool as a UTF-8 TSV file (see :meth:`tsv_text`); returns the path."""
        out = Path(path)
        text = self.tsv_text()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8", newline="\n")
        return out
