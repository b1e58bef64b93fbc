"""Dataset-scale streaming of per-item arrays into a resumable on-disk cache.

Typical use: compute, batch by batch, arrays such as per-head contributions
``[N, layers, heads, d]`` for ``N`` images with bounded memory, keep them on disk and reuse
them across notebook runs::

    key = dict(model="ViT-B-16", weights=weights_fingerprint(model), dataset="imagenet-val",
               preprocess="clip-224", what="per-head", version=1)
    source = lambda start: DataLoader(Subset(ds, range(start, len(ds))), batch_size=64)
    cached = stream_to_cache(lambda b: {"heads": heads_of(b[0])}, source,
                             n_items=len(ds), key=key, cache_dir="cache/")
    cached["heads"]            # read-only np.memmap of shape [N, layers, heads, d]

The batch source
----------------
``batches`` is one of

* a callable ``batches(start) -> iterable of batches`` yielding, in order, the batches for
  items ``start, start + 1, ..., n_items - 1``. This is the recommended form: a resumed run
  asks for data from the first missing item only, so finished batches are neither recomputed
  nor re-read. A ``DataLoader`` over ``Subset(dataset, range(start, n))`` fits directly, and
  :func:`slice_batches` turns a ``get_batch(start, stop)`` function into such a callable.
* a plain iterable of batches (list, DataLoader, generator). A resumed run iterates it again
  from the beginning and skips, without calling ``compute``, as many batches as there are
  stored shards. The iterable must therefore be deterministic (same order, same batch
  boundaries) across runs.

``compute(batch)`` returns a dict ``name -> array`` (numpy array or torch tensor) whose first
axis is the batch; the batch size is taken from it. Every call must return the same names,
dtypes and trailing shapes. Torch ``bfloat16`` tensors are stored as ``float32`` (numpy has no
bfloat16).

Storage
-------
One directory per ``(key, n_items)`` under ``cache_dir``, named ``<cache_key(**key)>-n<N>``:

* while running: one ``.npy`` file per array per batch (``shard-000012.0.npy``), each written
  to a temporary file in the same directory, fsynced and moved into place with
  ``os.replace``; then ``manifest.json`` (also atomic) records the shard's item range, size
  and sha256. A shard exists only once the manifest lists it.
* when every item is done: one ``<name>.npy`` per array, written shard by shard with plain file
  writes (memory stays bounded by a read buffer; no memory map, so the resident set does not
  grow with the array either), verified (shard
  checksums, and the consolidated data hashed against the shards' data), moved into place,
  recorded in the manifest with its own sha256; the shards are then deleted. Consolidation
  briefly needs twice the final size on disk.

Reading uses ``np.load(mmap_mode="r")``. A complete cache is checked on every load: the file
size and ``.npy`` header always, the full sha256 when the file's ``(mtime, inode)`` differs
from the stamp taken at its last verification or when that stamp is too close to the file's
mtime to be trusted (same idea as git's "racily clean" entries); ``verify="full"`` always
re-hashes. Anything that fails a check produces a :class:`CacheIntegrityWarning` naming the
file and is recomputed, never used.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "CacheIntegrityWarning",
    "CachedArrays",
    "FeatureCache",
    "cache_key",
    "slice_batches",
    "stream_to_cache",
    "weights_fingerprint",
]

FORMAT = "helpers.engine.cache/1"
MANIFEST = "manifest.json"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
KEY_HEX_CHARS = 16
_SHARD_RE = re.compile(r"^shard-\d{6,}\.\d+\.npy$")
_CHUNK = 1 << 20
_RACY_NS = 2_000_000_000
_MAX_ATTEMPTS = 3

Verify = Literal["fast", "full"]
BatchSource = Callable[[int], Iterable[Any]] | Iterable[Any]


class CacheIntegrityWarning(UserWarning):
    """A cached file or manifest failed a check and is being discarded and recomputed."""


# ----------------------------------------------------------------------------------------------
# Keys and fingerprints
# ----------------------------------------------------------------------------------------------


def _plain_json(value: Any, where: str) -> Any:
    """Validate a key description and convert it to plain JSON types (dict, list, ...)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"key part {where} is {value!r}; only finite floats are allowed")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"key part {where} has a non-string dict key {k!r} "
                    f"({type(k).__name__}); JSON objects need string keys"
                )
            out[k] = _plain_json(item, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"key part {where} of type {type(value).__name__} is not JSON-serialisable; "
        "convert it to str/int/float/bool/None/list/dict first (e.g. str(path), x.item())"
    )


def _canonical_json(parts: Any) -> str:
    """Canonical JSON text of a key description (sorted keys, no whitespace)."""
    if not isinstance(parts, Mapping):
        raise TypeError(f"a cache key must be a dict of JSON values, got {type(parts).__name__}")
    return json.dumps(
        _plain_json(parts, "key"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def cache_key(**parts: Any) -> str:
    """Stable short hash of a JSON-serialisable description.

    The description is serialised as canonical JSON (sorted keys, tuples as lists) and hashed
    with sha256; the first 16 hex characters are returned. Use it for everything the cached
    values depend on: model name, :func:`weights_fingerprint`, dataset id, preprocessing,
    options, a version number of the computation.

    Raises:
        TypeError: a part (at any depth) is not JSON-serialisable or a dict key is not a str.
        ValueError: a float is NaN or infinite.
    """
    text = _canonical_json(parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_HEX_CHARS]


def _tensor_bytes(value: Any, name: str) -> tuple[str, tuple[int, ...], memoryview]:
    """Dtype name, shape and raw little-endian bytes of a tensor or array."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_sparse or t.device.type == "meta":
            raise TypeError(f"state entry {name!r} is a sparse or meta tensor; cannot hash it")
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        raw = t.reshape(-1).view(torch.uint8).numpy()
        return dtype, tuple(t.shape), memoryview(raw).cast("B")
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        if a.dtype.hasobject:
            raise TypeError(f"state entry {name!r} is an object array; cannot hash it")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        a = np.ascontiguousarray(a)
        return a.dtype.name, tuple(a.shape), memoryview(a.reshape(-1).view(np.uint8))
    raise TypeError(
        f"state entry {name!r} has type {type(value).__name__}; expected a tensor or ndarray"
    )


def weights_fingerprint(module_or_state_dict: Any) -> str:
    """Stable hash of a model's weights: parameter names, shapes, dtypes and values.

    Accepts an ``nn.Module`` (its ``state_dict()``, i.e. parameters and buffers) or a mapping
    ``name -> tensor/ndarray``. Each tensor's raw bytes are hashed (sha256), one tensor at a
    time, so GPU weights are copied to the CPU one tensor at a time. Torch tensors and numpy
    arrays holding the same values give the same fingerprint.

    Returns:
        32 hex characters.
    """
    obj = module_or_state_dict
    if isinstance(obj, Mapping):
        state = obj
    elif callable(getattr(obj, "state_dict", None)):
        state = obj.state_dict()
    else:
        raise TypeError(f"expected an nn.Module or a mapping of tensors, got {type(obj).__name__}")
    names = list(state.keys())
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"state dict keys must be str, got {name!r}")
    h = hashlib.sha256(b"helpers.engine.cache.weights/1\0")
    for name in sorted(names):
        dtype, shape, raw = _tensor_bytes(state[name], name)
        header = json.dumps([name, dtype, list(shape)], separators=(",", ":")).encode()
        h.update(len(header).to_bytes(8, "little"))
        h.update(header)
        h.update(raw.nbytes.to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()[:32]


# ----------------------------------------------------------------------------------------------
# Batch sources
# ----------------------------------------------------------------------------------------------


def slice_batches(
    get_batch: Callable[[int, int], Any], n_items: int, batch_size: int
) -> Callable[[int], Iterator[Any]]:
    """Turn ``get_batch(start, stop)`` into a resumable batch source ``source(start)``.

    ``source(start)`` yields ``get_batch(s, min(s + batch_size, n_items))`` for
    ``s = start, start + batch_size, ...`` up to ``n_items``.
    """
    if not callable(get_batch):
        raise TypeError("get_batch must be callable as get_batch(start, stop)")
    n_items = _check_positive_int(n_items, "n_items")
    batch_size = _check_positive_int(batch_size, "batch_size")

    def source(start: int) -> Iterator[Any]:
        for s in range(start, n_items, batch_size):
            yield get_batch(s, min(s + batch_size, n_items))

    return source


def _check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {value}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# Low-level file helpers
# ----------------------------------------------------------------------------------------------


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _HashingWriter:
    """File-like wrapper that hashes and counts what is written through it."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self._f.write(view)
        self.size += view.nbytes
        return view.nbytes


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` via a temp file in the same directory, fsync, ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _write_npy(path: Path, array: np.ndarray) -> tuple[int, str]:
    """Atomically write ``array`` as .npy; return (size in bytes, sha256 of the file)."""
    result: list[_HashingWriter] = []

    def write(f: Any) -> None:
        w = _HashingWriter(f)
        np.lib.format.write_array(w, array, allow_pickle=False)
        result.append(w)

    _atomic_write(path, write)
    return result[0].size, result[0].hash.hexdigest()


def _write_manifest(d: Path, manifest: dict[str, Any]) -> None:
    data = json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8")
    _atomic_write(d / MANIFEST, lambda f: f.write(data))


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file; ValueError if it is not a plain C array."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        offset = f.tell()
    if fortran:
        raise ValueError("Fortran-ordered array")
    return tuple(int(s) for s in shape), np.dtype(dtype), offset


def _hash_file(path: Path, data_offset: int | None = None, data_hash: Any = None) -> str:
    """sha256 of a whole file, read in 1 MiB chunks.

    If ``data_hash`` is given, the bytes from ``data_offset`` on are also fed to it.
    """
    h = hashlib.sha256()
    for pos, chunk in _chunks(path):
        h.update(chunk)
        if data_hash is not None and data_offset is not None and pos + len(chunk) > data_offset:
            data_hash.update(chunk[max(0, data_offset - pos) :])
    return h.hexdigest()


def _chunks(path: Path) -> Iterator[tuple[int, memoryview]]:
    """The bytes of ``path`` in 1 MiB chunks, each with its offset (one buffer, reused: a chunk is
    valid until the next one is read)."""
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    pos = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return
            yield pos, view[:n]
            pos += n


def _copy_shard_data(path: Path, out: Any, content: Any, sha256: str, shape: tuple[int, ...],
                     dtype: np.dtype) -> str | None:
    """Append the data of shard ``path`` to the open file ``out`` (and feed them to ``content``)
    while hashing the whole shard; the problem in words when the shard is not the expected
    array or its sha256 differs from ``sha256`` (then some bytes may have been written)."""
    got_shape, got_dtype, offset = _npy_header(path)
    if got_shape != shape or got_dtype != dtype:
        return f"holds {got_dtype}{list(got_shape)}, expected {dtype}{list(shape)}"
    h = hashlib.sha256()
    for pos, chunk in _chunks(path):
        h.update(chunk)
        if pos + len(chunk) > offset:
            data = chunk[max(0, offset - pos):]
            content.update(data)
            out.write(data)
    return None if h.hexdigest() == sha256 else "sha256 checksum mismatch (corrupted)"


@contextlib.contextmanager
def _dir_lock(d: Path) -> Iterator[None]:
    """Exclusive advisory lock on a cache entry (no-op where unsupported or read-only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    try:
        fd = os.open(d / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _warn(message: str) -> None:
    warnings.warn(message, CacheIntegrityWarning, stacklevel=4)


# ----------------------------------------------------------------------------------------------
# Compute output handling
# ----------------------------------------------------------------------------------------------


def _to_numpy(value: Any, name: str) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception as exc:
        raise TypeError(f"compute output {name!r} cannot be converted to an array") from exc


def _normalise_output(out: Any) -> tuple[dict[str, np.ndarray], int]:
    """Validate a compute result; return native-endian C-contiguous arrays and batch size."""
    if not isinstance(out, Mapping):
        raise TypeError(f"compute must return a dict of name -> array, got {type(out).__name__}")
    if not out:
        raise ValueError("compute returned an empty dict")
    arrays: dict[str, np.ndarray] = {}
    for name, value in out.items():
        if not isinstance(name, str):
            raise TypeError(f"compute output names must be str, got {name!r}")
        if not name:
            raise ValueError("compute output names must be non-empty")
        a = _to_numpy(value, name)
        if a.dtype.kind not in "biufc":
            raise TypeError(
                f"compute output {name!r} has dtype {a.dtype}; only bool and numeric "
                "dtypes can be cached"
            )
        if a.ndim == 0:
            raise ValueError(
                f"compute output {name!r} is a scalar; its first axis must be the batch"
            )
        if a.size == 0 and a.shape[0] > 0:
            raise ValueError(f"compute output {name!r} has zero-size items (shape {a.shape})")
        if a.dtype.byteorder not in "=|":
            a = a.astype(a.dtype.newbyteorder("="))
        arrays[name] = np.ascontiguousarray(a)
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"compute outputs disagree on the batch size: {sizes}")
    batch = next(iter(sizes.values()))
    if batch == 0:
        raise ValueError("compute returned an empty batch")
    return arrays, batch


def _file_stems(names: list[str]) -> list[str]:
    stems: list[str] = []
    used = {Path(MANIFEST).stem}
    for i, name in enumerate(names):
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:80] or "array"
        if stem.lower() in used or stem.startswith("shard-"):
            stem = f"{stem}-{i}"
        used.add(stem.lower())
        stems.append(stem)
    return stems


def _make_spec(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    names = list(arrays)
    return [
        {
            "name": name,
            "dtype": arrays[name].dtype.str,
            "item_shape": list(arrays[name].shape[1:]),
            "file": f"{stem}.npy",
        }
        for name, stem in zip(names, _file_stems(names), strict=True)
    ]


def _spec_mismatch(spec: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> str | None:
    expected = {a["name"]: a for a in spec}
    if set(expected) != set(arrays):
        return f"names {sorted(arrays)} instead of {sorted(expected)}"
    for name, a in arrays.items():
        e = expected[name]
        if a.dtype != np.dtype(e["dtype"]):
            return f"{name!r} has dtype {a.dtype} instead of {np.dtype(e['dtype'])}"
        if list(a.shape[1:]) != list(e["item_shape"]):
            return (
                f"{name!r} has item shape {tuple(a.shape[1:])} instead of {tuple(e['item_shape'])}"
            )
    return None


# ----------------------------------------------------------------------------------------------
# Manifest validation
# ----------------------------------------------------------------------------------------------


def _require(condition: bool) -> None:
    if not condition:
        raise ValueError("malformed manifest")


def _manifest_problem(m: Any, key_json: str, n_items: int) -> str | None:
    """Why a parsed manifest cannot be used for this key, or None."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        return f"unknown manifest format (expected {FORMAT!r})"
    try:
        stored = _canonical_json(m.get("key"))
    except (TypeError, ValueError):
        stored = None
    if stored != key_json:
        return "the stored key description differs from the requested one"
    if m.get("n_items") != n_items:
        return f"it holds n_items={m.get('n_items')!r}, not {n_items}"
    try:
        spec = m["arrays"]
        if spec is not None:
            _require(isinstance(spec, list) and len(spec) > 0)
            for a in spec:
                _require(isinstance(a["name"], str) and isinstance(a["file"], str))
                _require(a["file"] == Path(a["file"]).name and a["file"].endswith(".npy"))
                _require(not _SHARD_RE.match(a["file"]) and not a["file"].startswith("."))
                np.dtype(a["dtype"])
                _require(all(type(x) is int and x > 0 for x in a["item_shape"]))
            _require(len({a["file"] for a in spec}) == len({a["name"] for a in spec}) == len(spec))
        _require(isinstance(m["shards"], list) and isinstance(m["complete"], bool))
        _require(isinstance(m["key_hash"], str))
        for s in m["shards"]:
            _require(type(s["start"]) is int and type(s["stop"]) is int)
            _require(isinstance(s["files"], list))
            for f in s["files"]:
                _require(bool(_SHARD_RE.match(f["file"])) and type(f["size"]) is int)
                _require(isinstance(f["sha256"], str))
        if m["complete"]:
            _require(spec is not None and len(m["final"]) == len(spec))
            for f, a in zip(m["final"], spec, strict=True):
                _require(f["file"] == a["file"] and type(f["size"]) is int)
                _require(isinstance(f["sha256"], str))
    except (KeyError, TypeError, ValueError, AttributeError):
        return "the manifest is malformed"
    return None


# ----------------------------------------------------------------------------------------------
# Public classes
# ----------------------------------------------------------------------------------------------


class CachedArrays(Mapping[str, np.ndarray]):
    """Read-only view of a complete cache entry: ``name -> np.memmap`` (opened lazily).

    Attributes:
        path: the entry's directory.
        key: the key description (a copy).
        n_items: number of items (first axis of every array).
        meta: the full manifest (a copy).
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self._manifest = copy.deepcopy(manifest)
        self._files = {a["name"]: a["file"] for a in manifest["arrays"]}
        self._opened: dict[str, np.ndarray] = {}
        self._offsets: dict[str, int] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._files:
            raise KeyError(name)
        arr = self._opened.get(name)
        if arr is None:
            arr = np.load(self.path / self._files[name], mmap_mode="r", allow_pickle=False)
            self._opened[name] = arr
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    @property
    def key(self) -> dict[str, Any]:
        return copy.deepcopy(self._manifest["key"])

    @property
    def n_items(self) -> int:
        return int(self._manifest["n_items"])

    @property
    def meta(self) -> dict[str, Any]:
        return copy.deepcopy(self._manifest)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {a["name"]: (self.n_items, *a["item_shape"]) for a in self._manifest["arrays"]}

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        return {a["name"]: np.dtype(a["dtype"]) for a in self._manifest["arrays"]}

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Items ``start .. stop - 1`` of array ``name`` as a new in-memory array, read from the
        file (no memory map: reading a dataset chunk by chunk leaves the resident set as it was)."""
        if name not in self._files:
            raise KeyError(name)
        n = self.n_items
        if not 0 <= start <= stop <= n:
            raise IndexError(f"rows [{start}, {stop}) out of range for {n} items")
        shape, dtype = self.shapes[name], self.dtypes[name]
        path = self.path / self._files[name]
        offset = self._offsets.get(name)
        if offset is None:
            offset = self._offsets[name] = _npy_header(path)[2]
        out = np.empty((stop - start, *shape[1:]), dtype=dtype)
        row = dtype.itemsize * math.prod(shape[1:])
        buf = memoryview(out.reshape(-1).view(np.uint8))
        with open(path, "rb", buffering=0) as f:
            f.seek(offset + start * row)
            got = 0
            while got < len(buf):
                k = f.readinto(buf[got:])
                if not k:
                    raise ValueError(f"{path}: ended after {start + got // max(row, 1)} of {n} items")
                got += k
        return out

    def read_index(self, name: str, index: Any) -> np.ndarray:
        """The items at ``index`` (a sequence of item numbers) of array ``name``, read from the
        file as :meth:`read_rows` does (runs of consecutive items in one read)."""
        idx = [int(i) for i in np.asarray(index).reshape(-1)]
        shape = self.shapes[name]
        if not idx:
            return np.empty((0, *shape[1:]), dtype=self.dtypes[name])
        parts, first, last = [], idx[0], idx[0]
        for i in idx[1:] + [None]:
            if i is not None and i == last + 1:
                last = i
                continue
            parts.append(self.read_rows(name, first, last + 1))
            if i is not None:
                first = last = i
        return np.concatenate(parts)

    def __repr__(self) -> str:
        arrays = ", ".join(f"{n}: {self.dtypes[n]}{list(s)}" for n, s in self.shapes.items())
        return f"CachedArrays({str(self.path)!r}, {{{arrays}}})"


@dataclass(frozen=True)
class _Job:
    """What one call of :meth:`FeatureCache.stream` computes, and how it shows its progress."""

    compute: Callable[[Any], Mapping[str, Any]]
    batches: BatchSource
    progress: bool
    desc: str | None


class FeatureCache:
    """A directory of cache entries, one sub-directory per ``(key, n_items)``.

    Entries with different keys never touch each other's files. Within one entry an advisory
    file lock (POSIX) serialises concurrent runs.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.root = Path(cache_dir)

    # -- paths and inspection ------------------------------------------------------------------

    def entry_dir(self, key: Mapping[str, Any], n_items: int) -> Path:
        """Directory used for ``key`` and ``n_items``."""
        n_items = _check_positive_int(n_items, "n_items")
        return self.root / f"{cache_key(**_check_key_mapping(key))}-n{n_items}"

    def load(
        self, key: Mapping[str, Any], n_items: int, *, verify: Verify = "fast"
    ) -> CachedArrays | None:
        """The complete, verified entry for ``key``, or None (with a warning if it is bad).

        Nothing is deleted; a bad entry is only reported.
        """
        _check_verify(verify)
        key_json = _canonical_json(_check_key_mapping(key))
        d = self.entry_dir(key, n_items)
        if not d.is_dir():
            return None
        with _dir_lock(d):
            manifest = self._read_manifest(d, key_json, int(n_items))
            if manifest is None or not manifest["complete"]:
                return None
            if not self._check_final(d, manifest, verify):
                return None
            return CachedArrays(d, manifest)

    def entries(self) -> list[dict[str, Any]]:
        """Summary of every entry under the cache directory (path, key, n_items, complete)."""
        out = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.iterdir()):
            p = d / MANIFEST
            try:
                m = json.loads(p.read_text(encoding="utf-8"))
                out.append(
                    {
                        "path": d,
                        "key": m["key"],
                        "n_items": m["n_items"],
                        "complete": bool(m["complete"]),
                        "items_done": m["n_items"]
                        if m["complete"]
                        else (m["shards"][-1]["stop"] if m["shards"] else 0),
                    }
                )
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                continue
        return out

    def remove(self, key: Mapping[str, Any], n_items: int) -> bool:
        """Delete the entry for ``key`` and ``n_items``; True if something was deleted."""
        d = self.entry_dir(key, n_items)
        if not d.is_dir():
            return False
        with _dir_lock(d):
            _reset(d)
        with contextlib.suppress(OSError):
            (d / LOCK).unlink()
            d.rmdir()
        return True

    # -- main entry point ----------------------------------------------------------------------

    def stream(
        self,
        compute: Callable[[Any], Mapping[str, Any]],
        batches: BatchSource,
        *,
        n_items: int,
        key: Mapping[str, Any],
        progress: bool = True,
        desc: str | None = None,
        verify: Verify = "fast",
    ) -> CachedArrays:
        """Compute (or resume, or load) the cached arrays; see :func:`stream_to_cache`."""
        n_items = _check_positive_int(n_items, "n_items")
        key = _check_key_mapping(key)
        key_json = _canonical_json(key)
        if not callable(compute):
            raise TypeError("compute must be callable as compute(batch) -> dict of arrays")
        if not callable(batches) and not isinstance(batches, Iterable):
            raise TypeError(
                "batches must be an iterable of batches or a callable start -> iterable"
            )
        _check_verify(verify)
        d = self.entry_dir(key, n_items)
        d.mkdir(parents=True, exist_ok=True)
        with _dir_lock(d):
            _remove_temp_files(d)
            manifest = self._read_manifest(d, key_json, n_items)
            if manifest is not None and manifest["complete"]:
                if self._check_final(d, manifest, verify):
                    _remove_unreferenced(d, manifest)
                    return CachedArrays(d, manifest)
                manifest = None
            if manifest is None:
                _reset(d)
                manifest = {
                    "format": FORMAT,
                    "key": json.loads(key_json),
                    "key_hash": cache_key(**key),
                    "n_items": n_items,
                    "arrays": None,
                    "shards": [],
                    "complete": False,
                }
            return self._fill(d, manifest, _Job(compute, batches, progress, desc))

    # -- internals -----------------------------------------------------------------------------

    def _read_manifest(self, d: Path, key_json: str, n_items: int) -> dict[str, Any] | None:
        p = d / MANIFEST
        if not p.exists():
            return None
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _warn(f"{p}: unreadable manifest ({exc}); the cache entry is recomputed")
            return None
        problem = _manifest_problem(m, key_json, n_items)
        if problem is not None:
            _warn(f"{p}: cache entry rejected and recomputed: {problem}")
            return None
        return m

    def _check_final(self, d: Path, manifest: dict[str, Any], verify: Verify) -> bool:
        n = manifest["n_items"]
        restamp = False
        for a, e in zip(manifest["arrays"], manifest["final"], strict=True):
            p = d / e["file"]
            try:
                st = p.stat()
            except OSError:
                _warn(f"{p}: cached array file is missing; the cache entry is recomputed")
                return False
            if st.st_size != e["size"]:
                _warn(
                    f"{p}: size {st.st_size} bytes, expected {e['size']} "
                    "(truncated or corrupted); the cache entry is recomputed"
                )
                return False
            try:
                shape, dtype, _ = _npy_header(p)
            except (OSError, ValueError) as exc:
                _warn(f"{p}: bad .npy header ({exc}); the cache entry is recomputed")
                return False
            if shape != (n, *a["item_shape"]) or dtype != np.dtype(a["dtype"]):
                _warn(
                    f"{p}: holds {dtype}{list(shape)}, expected "
                    f"{np.dtype(a['dtype'])}{[n, *a['item_shape']]}; the cache entry is recomputed"
                )
                return False
            trusted = (
                verify == "fast"
                and e.get("mtime_ns") == st.st_mtime_ns
                and e.get("ino") == st.st_ino
                and isinstance(e.get("stamped_ns"), int)
                and e["stamped_ns"] - st.st_mtime_ns > _RACY_NS
            )
            if trusted:
                continue
            if _hash_file(p) != e["sha256"]:
                _warn(f"{p}: sha256 checksum mismatch (corrupted); the cache entry is recomputed")
                return False
            e.update(mtime_ns=st.st_mtime_ns, ino=st.st_ino, stamped_ns=time.time_ns())
            restamp = True
        if restamp:
            with contextlib.suppress(OSError):
                _write_manifest(d, manifest)
        return True

    def _valid_prefix(self, d: Path, manifest: dict[str, Any]) -> None:
        """Keep the longest run of intact shards from item 0; drop the rest (with warnings)."""
        spec = manifest["arrays"]
        shards = manifest["shards"]
        n = manifest["n_items"]
        keep = 0
        cursor = 0
        for s in shards:
            problem = None
            if spec is None or len(s["files"]) != len(spec):
                problem = "manifest entry does not match the array list"
                where = d / MANIFEST
            elif s["start"] != cursor or not cursor < s["stop"] <= n:
                problem = f"item range [{s['start']}, {s['stop']}) does not continue at {cursor}"
                where = d / MANIFEST
            else:
                for a, f in zip(spec, s["files"], strict=True):
                    where = d / f["file"]
                    problem = _check_shard_file(
                        where, f, (s["stop"] - s["start"], *a["item_shape"]), np.dtype(a["dtype"])
                    )
                    if problem:
                        break
            if problem:
                _warn(f"{where}: {problem}; recomputing from item {cursor}")
                break
            keep += 1
            cursor = s["stop"]
        if keep < len(shards):
            _keep_shards(d, manifest, keep)
        _remove_unreferenced(d, manifest)

    def _open_source(self, batches: BatchSource, cursor: int, n_skip: int) -> Iterator[Any]:
        if callable(batches):
            return iter(batches(cursor))
        it = iter(batches)
        for i in range(n_skip):
            try:
                next(it)
            except StopIteration:
                raise ValueError(
                    f"batches ended after {i} batches while skipping the {n_skip} batches "
                    "already cached; the iterable must yield the same batches on every run"
                ) from None
        return it

    def _fill(self, d: Path, manifest: dict[str, Any], job: _Job) -> CachedArrays:
        for _ in range(_MAX_ATTEMPTS):
            self._valid_prefix(d, manifest)
            shards = manifest["shards"]
            if not shards or shards[-1]["stop"] < manifest["n_items"]:
                self._compute_missing(d, manifest, job)
            bad = self._consolidate(d, manifest)
            if bad is None:
                return CachedArrays(d, manifest)
            _keep_shards(d, manifest, bad)
        raise RuntimeError(
            f"{d}: shards kept failing verification during consolidation; is the disk healthy?"
        )

    def _compute_missing(self, d: Path, manifest: dict[str, Any], job: _Job) -> None:
        from tqdm.auto import tqdm

        compute, batches = job.compute, job.batches

        n = manifest["n_items"]
        shards: list[dict[str, Any]] = manifest["shards"]
        cursor = shards[-1]["stop"] if shards else 0
        computed = 0
        bar = tqdm(
            total=n,
            initial=cursor,
            desc=job.desc or f"cache {manifest['key_hash'][:8]}",
            unit="item",
            disable=not job.progress,
            dynamic_ncols=True,
        )
        if cursor:
            bar.set_postfix_str(f"resumed at {cursor}/{n}")
        try:
            restart = True
            while restart:
                restart = False
                for batch in self._open_source(batches, cursor, len(shards)):
                    if cursor >= n:
                        raise ValueError(
                            f"batches yielded more than n_items={n} items; pass the right "
                            "n_items or limit the batch source"
                        )
                    arrays, size = _normalise_output(compute(batch))
                    spec = manifest["arrays"]
                    if spec is None:
                        spec = manifest["arrays"] = _make_spec(arrays)
                    else:
                        problem = _spec_mismatch(spec, arrays)
                        if problem and computed == 0 and shards:
                            _warn(
                                f"{d / MANIFEST}: stored arrays do not match what compute "
                                f"returns ({problem}); discarding {len(shards)} shards and "
                                "recomputing from item 0"
                            )
                            shards.clear()
                            manifest["arrays"] = None
                            _write_manifest(d, manifest)
                            _remove_unreferenced(d, manifest)
                            if not callable(batches) and iter(batches) is batches:
                                raise RuntimeError(
                                    "the cached shards were discarded but a one-shot iterator "
                                    "cannot be restarted; call again with a fresh iterator"
                                )
                            cursor = 0
                            bar.reset(total=n)
                            bar.set_postfix_str("restarted")
                            restart = True
                            break
                        if problem:
                            raise ValueError(
                                f"inconsistent output of compute for items starting at "
                                f"{cursor}: {problem}"
                            )
                    if cursor + size > n:
                        raise ValueError(
                            f"batches yielded more than n_items={n} items "
                            f"({cursor} + {size}); pass the right n_items or limit the source"
                        )
                    shards.append(_write_shard(d, len(shards), cursor, arrays, spec))
                    _write_manifest(d, manifest)
                    cursor += size
                    computed += 1
                    bar.update(size)
            if cursor < n:
                raise ValueError(f"batches ended after {cursor} items; expected n_items={n}")
        finally:
            bar.close()

    def _consolidate(self, d: Path, manifest: dict[str, Any]) -> int | None:
        """Merge shards into one .npy per array; None on success, else the first bad shard."""
        n = manifest["n_items"]
        shards = manifest["shards"]
        finals: list[dict[str, Any]] = []
        for ai, a in enumerate(manifest["arrays"]):
            dtype = np.dtype(a["dtype"])
            shape = (n, *a["item_shape"])
            target = d / a["file"]
            fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".npy", dir=d)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                # written with plain file writes (no memory map), so neither the process's memory
                # nor its resident set grows with the size of the array
                with open(tmp, "wb") as out:
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": shape}
                    np.lib.format.write_array_header_1_0(out, header)
                    offset = out.tell()
                    content = hashlib.sha256()
                    for si, s in enumerate(shards):
                        f = s["files"][ai]
                        p = d / f["file"]
                        want = (s["stop"] - s["start"], *a["item_shape"])
                        try:
                            problem = _copy_shard_data(p, out, content, f["sha256"], want, dtype)
                        except (OSError, ValueError) as exc:
                            problem = f"unreadable ({exc})"
                        if problem:
                            out.close()
                            tmp.unlink()
                            _warn(f"{p}: {problem}; recomputing from item {s['start']}")
                            return si
                    out.flush()
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                written = hashlib.sha256()
                sha = _hash_file(tmp, offset, written)
                size = tmp.stat().st_size
                if (
                    written.digest() != content.digest()
                    or size != offset + dtype.itemsize * math.prod(shape)
                ):
                    raise RuntimeError(
                        f"{target}: consolidated data do not match the shards; "
                        "the shards are kept, call again"
                    )
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            st = target.stat()
            finals.append(
                {
                    "file": a["file"],
                    "size": size,
                    "sha256": sha,
                    "mtime_ns": st.st_mtime_ns,
                    "ino": st.st_ino,
                    "stamped_ns": time.time_ns(),
                }
            )
        _fsync_dir(d)
        manifest["final"] = finals
        manifest["complete"] = True
        manifest["shards"] = []
        _write_manifest(d, manifest)
        _remove_unreferenced(d, manifest)
        _fsync_dir(d)
        return None


def _check_shard_file(
    p: Path, f: dict[str, Any], shape: tuple[int, ...], dtype: np.dtype
) -> str | None:
    try:
        size = p.stat().st_size
    except OSError:
        return "shard file is missing"
    if size != f["size"]:
        return f"size {size} bytes, expected {f['size']} (truncated or corrupted)"
    try:
        got_shape, got_dtype, _ = _npy_header(p)
    except (OSError, ValueError) as exc:
        return f"bad .npy header ({exc})"
    if got_shape != shape or got_dtype != dtype:
        return f"holds {got_dtype}{list(got_shape)}, expected {dtype}{list(shape)}"
    if _hash_file(p) != f["sha256"]:
        return "sha256 checksum mismatch (corrupted)"
    return None


def _write_shard(
    d: Path, index: int, start: int, arrays: dict[str, np.ndarray], spec: list[dict[str, Any]]
) -> dict[str, Any]:
    files = []
    for ai, a in enumerate(spec):
        name = f"shard-{index:06d}.{ai}.npy"
        size, sha = _write_npy(d / name, arrays[a["name"]])
        files.append({"file": name, "size": size, "sha256": sha})
    stop = start + next(iter(arrays.values())).shape[0]
    return {"start": start, "stop": stop, "files": files}


def _keep_shards(d: Path, manifest: dict[str, Any], keep: int) -> None:
    """Drop every shard after the first ``keep`` from the manifest (and the array list with the
    last shard) and write it."""
    del manifest["shards"][keep:]
    if not manifest["shards"]:
        manifest["arrays"] = None
    _write_manifest(d, manifest)


def _remove_temp_files(d: Path) -> None:
    for p in d.iterdir():
        if p.name.startswith(TMP_PREFIX):
            with contextlib.suppress(OSError):
                p.unlink()


def _remove_unreferenced(d: Path, manifest: dict[str, Any]) -> None:
    """Delete temp files, unlisted shards and unlisted .npy files of an entry."""
    keep = {MANIFEST, LOCK}
    for s in manifest.get("shards") or []:
        keep.update(f["file"] for f in s["files"])
    if manifest.get("complete"):
        keep.update(f["file"] for f in manifest["final"])
    for p in d.iterdir():
        if p.name in keep:
            continue
        if p.name.startswith(TMP_PREFIX) or p.name.endswith(".npy"):
            with contextlib.suppress(OSError):
                p.unlink()


def _reset(d: Path) -> None:
    """Delete everything an entry holds except its lock file."""
    for p in d.iterdir():
        if p.name == LOCK:
            continue
        if p.name == MANIFEST or p.name.startswith(TMP_PREFIX) or p.name.endswith(".npy"):
            with contextlib.suppress(OSError):
                p.unlink()
    _fsync_dir(d)


def _check_key_mapping(key: Any) -> dict[str, Any]:
    if not isinstance(key, Mapping):
        raise TypeError(f"key must be a dict describing the computation, got {type(key).__name__}")
    for k in key:
        if not isinstance(k, str):
            raise TypeError(f"key names must be str, got {k!r}")
    return dict(key)


def _check_verify(verify: Any) -> None:
    if verify not in ("fast", "full"):
        raise ValueError(f"verify must be 'fast' or 'full', got {verify!r}")


def stream_to_cache(
    compute: Callable[[Any], Mapping[str, Any]],
    batches: BatchSource,
    *,
    n_items: int,
    key: Mapping[str, Any],
    cache_dir: str | os.PathLike[str],
    progress: bool = True,
    desc: str | None = None,
    verify: Verify = "fast",
) -> CachedArrays:
    """Compute per-item arrays batch by batch into an on-disk cache, or reuse it.

    Args:
        compute: ``compute(batch) -> {name: array}``; numpy arrays or torch tensors whose
            first axis is the batch. Same names, dtypes and trailing shapes on every call.
        batches: a callable ``start -> iterable of batches`` covering items
            ``start .. n_items - 1`` (resumes without re-reading finished data), or an
            iterable of batches (re-iterated and skipped on resume; must be deterministic).
            See :func:`slice_batches`.
        n_items: total number of items; the batches must cover exactly this many.
        key: JSON-serialisable description of everything the values depend on (model,
            :func:`weights_fingerprint`, dataset id, preprocessing, options, version).
        cache_dir: root directory; the entry lives in ``cache_dir/<cache_key(**key)>-n<N>``.
        progress: show a tqdm bar over items (starting at the resumed position).
        desc: label of the progress bar.
        verify: ``"fast"`` (size, header, and sha256 unless the file's stamp is trusted) or
            ``"full"`` (always re-hash final arrays) when an existing complete entry is loaded.

    Returns:
        :class:`CachedArrays` mapping each name to a read-only memory-mapped array
        ``[n_items, ...]``, with ``.key`` and ``.meta``.

    Raises:
        ValueError: ``n_items <= 0``; compute outputs inconsistent within a batch or between
            batches; the batches cover more or fewer than ``n_items`` items; non-finite float
            in the key.
        TypeError: key not JSON-serialisable; compute not returning a dict of arrays.

    A failed call leaves every shard already written intact, so the next call resumes.
    """
    return FeatureCache(cache_dir).stream(
        compute,
        batches,
        n_items=n_items,
        key=key,
        progress=progress,
        desc=desc,
        verify=verify,
    )
