"""Key figures of a notebook run, written as JSON next to the executed notebook.

In a notebook::

    figures = Figures(record_to)        # record_to: a papermill parameter ('' = keep in memory)
    figures["baseline_accuracy"] = 0.93  # written to disk at once

Tests and the main job read the file back with :func:`load_figures`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, MutableMapping

__all__ = ["Figures", "load_figures"]


def _plain(value: Any) -> Any:
    """Convert numpy / torch scalars and arrays to JSON-ready Python values."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a {type(value).__name__}")


class Figures(MutableMapping[str, Any]):
    """A dict that rewrites its JSON file (atomically) whenever it changes."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else None
        self._data: dict[str, Any] = {}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[str(key)] = _plain(value)
        self._write()

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._write()

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Figures({self._data!r})"


def load_figures(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
