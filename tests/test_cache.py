"""Tests for helpers.engine.cache: streaming per-item arrays into a resumable on-disk cache."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

import helpers.engine.cache as hc
from helpers.engine.cache import (
    CachedArrays,
    CacheIntegrityWarning,
    FeatureCache,
    cache_key,
    slice_batches,
    stream_to_cache,
    weights_fingerprint,
)

_spec = importlib.util.spec_from_file_location(
    "_cache_worker", Path(__file__).with_name("_cache_worker.py")
)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

N = 23
BS = 4
N_BATCHES = -(-N // BS)
KEY = {"model": "toy", "weights": "abc", "dataset": "ints", "preprocess": None, "v": 1}


def make_arrays(start: int, stop: int) -> dict[str, np.ndarray]:
    idx = np.arange(start, stop)
    return {
        "heads": (idx[:, None, None] * 10 + np.arange(6).reshape(1, 2, 3)).astype(np.float32),
        "half": (idx * 0.25).astype(np.float16),
        "label": idx.astype(np.int64),
        "even": idx % 2 == 0,
    }


class Counter:
    """compute(batch) over (start, stop) batches, recording the starts it was called for."""

    def __init__(self, fn=make_arrays, fail_at: int | None = None) -> None:
        self.fn = fn
        self.starts: list[int] = []
        self.fail_at = fail_at

    def __call__(self, batch):
        start, stop = batch
        if self.fail_at is not None and len(self.starts) == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.starts.append(start)
        return self.fn(start, stop)


def source(n: int = N, bs: int = BS):
    return slice_batches(lambda s, e: (s, e), n, bs)


def run(cache_dir, compute, *, key=KEY, n=N, bs=BS, **kw) -> CachedArrays:
    kw.setdefault("progress", False)
    return stream_to_cache(compute, source(n, bs), n_items=n, key=key, cache_dir=cache_dir, **kw)


def interrupted(cache_dir, after: int, key=KEY, fn=make_arrays) -> Path:
    """Leave a partial cache with `after` shards written; return the entry directory."""
    with pytest.raises(KeyboardInterrupt):
        run(cache_dir, Counter(fn, fail_at=after), key=key)
    d = FeatureCache(cache_dir).entry_dir(key, N)
    assert len(read_manifest(d)["shards"]) == after
    return d


def read_manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def assert_matches_direct(cached, fn=make_arrays, n=N) -> None:
    expected = fn(0, n)
    assert set(cached) == set(expected)
    for name, value in expected.items():
        got = cached[name]
        assert got.dtype == value.dtype and got.shape == value.shape, name
        np.testing.assert_array_equal(np.asarray(got), value)


def starts_from(first_batch: int) -> list[int]:
    return list(range(first_batch * BS, N, BS))


def flip_bits(path: Path, index: int, mask: int) -> None:
    """Corrupt ``path`` in place, keeping its size: byte ``index`` XOR ``mask``."""
    data = bytearray(path.read_bytes())
    data[index] ^= mask
    path.write_bytes(bytes(data))


def rerun_recomputes(cache_dir, warning: str, starts: list[int]) -> CachedArrays:
    """Run again: the cache warns (``warning`` matches), computes the batches that start at
    ``starts`` and ends equal to the direct computation."""
    compute = Counter()
    with pytest.warns(CacheIntegrityWarning, match=warning):
        cached = run(cache_dir, compute)
    assert compute.starts == starts
    assert_matches_direct(cached)
    return cached


# ----------------------------------------------------------------------------------------------
# keys and fingerprints
# ----------------------------------------------------------------------------------------------


def test_cache_key_is_stable_and_sensitive():
    a = cache_key(model="ViT-B-16", opts={"x": 1, "y": [1, 2]}, n=3)
    assert a == cache_key(n=3, opts={"y": (1, 2), "x": 1}, model="ViT-B-16")
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != cache_key(model="ViT-B-16", opts={"x": 1, "y": [1, 2]}, n=4)
    assert cache_key(v=1) != cache_key(v=True) != cache_key(v="1")
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        cache_key(path=Path("/x"))
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        cache_key(opts={"deep": [object()]})
    with pytest.raises(TypeError, match="string dict key"):
        cache_key(opts={1: "a"})
    with pytest.raises(ValueError, match="finite"):
        cache_key(lr=float("nan"))


def test_weights_fingerprint():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    fp = weights_fingerprint(m)
    assert len(fp) == 32
    sd = m.state_dict()
    assert weights_fingerprint(dict(reversed(list(sd.items())))) == fp
    assert weights_fingerprint({k: v.numpy() for k, v in sd.items()}) == fp
    with torch.no_grad():
        m[0].weight[1, 2] += 1e-3
    assert weights_fingerprint(m) != fp
    with torch.no_grad():
        m[0].weight[1, 2] -= 1e-3
    assert weights_fingerprint(m) == fp
    assert weights_fingerprint(m.half()) != fp
    renamed = {("x." + k): v for k, v in sd.items()}
    assert weights_fingerprint(renamed) != fp
    reshaped = dict(sd, **{"0.weight": sd["0.weight"].reshape(3, 4).t().contiguous()})
    assert weights_fingerprint(reshaped) != fp
    with pytest.raises(TypeError):
        weights_fingerprint([1, 2])


# ----------------------------------------------------------------------------------------------
# round trip and reuse
# ----------------------------------------------------------------------------------------------


def test_round_trip_equals_direct_computation(tmp_path):
    compute = Counter()
    cached = run(tmp_path, compute)
    assert compute.starts == starts_from(0)
    assert_matches_direct(cached)
    assert cached.key == KEY and cached.n_items == N
    assert cached.shapes["heads"] == (N, 2, 3)
    for name in cached:
        arr = cached[name]
        assert isinstance(arr, np.memmap) and not arr.flags.writeable
    files = sorted(p.name for p in cached.path.iterdir())
    assert files == sorted(
        [".lock", "manifest.json", "heads.npy", "half.npy", "label.npy", "even.npy"]
    )
    meta = cached.meta
    assert meta["complete"] and meta["shards"] == []
    assert cached.path == FeatureCache(tmp_path).entry_dir(KEY, N)
    assert cached.path.name == f"{cache_key(**KEY)}-n{N}"


def test_second_call_does_not_compute(tmp_path):
    run(tmp_path, Counter())
    again = Counter()
    cached = run(tmp_path, again)
    assert again.starts == []
    assert_matches_direct(cached)
    loaded = FeatureCache(tmp_path).load(KEY, N)
    assert loaded is not None
    assert_matches_direct(loaded)
    assert FeatureCache(tmp_path).load(dict(KEY, v=2), N) is None
    entries = FeatureCache(tmp_path).entries()
    assert [(e["key"], e["n_items"], e["complete"]) for e in entries] == [(KEY, N, True)]


def test_iterable_sources_resume_by_skipping_batches(tmp_path):
    batch_list = [(s, min(s + BS, N)) for s in range(0, N, BS)]
    with pytest.raises(KeyboardInterrupt):
        stream_to_cache(
            Counter(fail_at=3), batch_list, n_items=N, key=KEY, cache_dir=tmp_path, progress=False
        )
    compute = Counter()
    cached = stream_to_cache(
        compute, iter(batch_list), n_items=N, key=KEY, cache_dir=tmp_path, progress=False
    )
    assert compute.starts == starts_from(3)
    assert_matches_direct(cached)


def test_torch_outputs(tmp_path):
    torch = pytest.importorskip("torch")

    def compute(batch):
        s, e = batch
        x = torch.arange(s, e, dtype=torch.float32)[:, None].repeat(1, 3)
        return {"f16": x.half(), "bf16": x.bfloat16(), "grad": x.requires_grad_()}

    cached = run(tmp_path, compute)
    assert cached.dtypes == {"f16": np.float16, "bf16": np.float32, "grad": np.float32}
    expected = np.repeat(np.arange(N, dtype=np.float32)[:, None], 3, axis=1)
    for name in cached:
        np.testing.assert_array_equal(cached[name], expected)


def test_progress_bar_shows_resumed_items(tmp_path, capsys):
    interrupted(tmp_path, 2)
    capsys.readouterr()
    run(tmp_path, Counter(), progress=True, desc="toy")
    err = capsys.readouterr().err
    assert "toy" in err and f"resumed at {2 * BS}/{N}" in err and f"{N}/{N}" in err
    run(tmp_path, Counter(), progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------------
# kill and resume (real SIGKILL in a subprocess)
# ----------------------------------------------------------------------------------------------


def _kill_worker(cache_dir: Path, mode: str, k: int) -> Path:
    proc = subprocess.run(
        [sys.executable, str(Path(worker.__file__)), str(cache_dir), mode, str(k)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return FeatureCache(cache_dir).entry_dir(worker.KEY, worker.N_ITEMS)


def _worker_compute():
    starts: list[int] = []

    def compute(batch):
        starts.append(batch[0])
        return worker.make_arrays(*batch)

    return compute, starts


def _resume_worker_cache(cache_dir: Path):
    compute, starts = _worker_compute()
    cached = stream_to_cache(
        compute,
        slice_batches(worker.get_batch, worker.N_ITEMS, worker.BATCH),
        n_items=worker.N_ITEMS,
        key=worker.KEY,
        cache_dir=cache_dir,
        progress=False,
    )
    return cached, starts


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cached, starts = _resume_worker_cache(tmp_path_factory.mktemp("reference"))
    assert starts == list(range(0, worker.N_ITEMS, worker.BATCH))
    return cached


needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def _assert_identical(cached, reference) -> None:
    assert_matches_direct(cached, worker.make_arrays, worker.N_ITEMS)
    for name in reference:
        assert np.array_equal(cached[name], reference[name])
    # byte-identical final files
    assert [f["sha256"] for f in cached.meta["final"]] == [
        f["sha256"] for f in reference.meta["final"]
    ]


@needs_sigkill
def test_killed_run_resumes_at_first_missing_shard(tmp_path, uninterrupted):
    k = 3
    d = _kill_worker(tmp_path, "compute", k)
    manifest = read_manifest(d)
    assert not manifest["complete"]
    assert [(s["start"], s["stop"]) for s in manifest["shards"]] == [(0, 4), (4, 8), (8, 12)]
    cached, starts = _resume_worker_cache(tmp_path)
    assert starts == list(range(k * worker.BATCH, worker.N_ITEMS, worker.BATCH))
    _assert_identical(cached, uninterrupted)


@needs_sigkill
def test_killed_during_shard_write_leaves_temp_file_that_is_cleaned(tmp_path, uninterrupted):
    k = 2
    d = _kill_worker(tmp_path, "replace", k)
    leftovers = [p.name for p in d.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1
    assert len(read_manifest(d)["shards"]) == k
    cached, starts = _resume_worker_cache(tmp_path)
    assert starts == list(range(k * worker.BATCH, worker.N_ITEMS, worker.BATCH))
    assert not [p for p in d.iterdir() if p.name.startswith(".tmp-")]
    _assert_identical(cached, uninterrupted)


@needs_sigkill
def test_killed_during_consolidation_does_not_recompute(tmp_path, uninterrupted):
    d = _kill_worker(tmp_path, "consolidate", 0)
    assert any(p.name.startswith(".tmp-") for p in d.iterdir())
    assert read_manifest(d)["shards"][-1]["stop"] == worker.N_ITEMS
    cached, starts = _resume_worker_cache(tmp_path)
    assert starts == []
    assert not any(p.name.startswith(("shard-", ".tmp-")) for p in d.iterdir())
    _assert_identical(cached, uninterrupted)


# ----------------------------------------------------------------------------------------------
# integrity
# ----------------------------------------------------------------------------------------------


def test_truncated_shard_is_detected_and_recomputed(tmp_path):
    d = interrupted(tmp_path, 4)
    victim = d / "shard-000001.2.npy"
    data = victim.read_bytes()
    victim.write_bytes(data[:-5])
    rerun_recomputes(tmp_path, r"shard-000001\.2\.npy.*truncated", starts_from(1))


def test_corrupted_shard_same_size_is_detected(tmp_path):
    d = interrupted(tmp_path, 3)
    victim = d / "shard-000002.0.npy"
    flip_bits(victim, -3, 0xFF)
    rerun_recomputes(tmp_path, r"shard-000002\.0\.npy.*checksum", starts_from(2))


def test_shard_corrupted_before_consolidation_is_recomputed(tmp_path, monkeypatch):
    """A shard that goes bad after it was written is caught by the consolidation check."""
    real = hc.FeatureCache._consolidate
    hit = []

    def corrupt_then_consolidate(self, d, manifest):
        if not hit:
            hit.append(1)
            victim = d / "shard-000003.1.npy"
            flip_bits(victim, -1, 0x01)
        return real(self, d, manifest)

    monkeypatch.setattr(hc.FeatureCache, "_consolidate", corrupt_then_consolidate)
    rerun_recomputes(tmp_path, r"shard-000003\.1\.npy.*checksum", starts_from(0) + starts_from(3))


def test_truncated_final_array_is_detected_and_recomputed(tmp_path):
    first = run(tmp_path, Counter())
    victim = first.path / "label.npy"
    del first
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size - 8)
    with pytest.warns(CacheIntegrityWarning, match=r"label\.npy.*truncated"):
        assert FeatureCache(tmp_path).load(KEY, N) is None
    rerun_recomputes(tmp_path, r"label\.npy.*truncated", starts_from(0))


def test_corrupted_final_array_is_detected(tmp_path):
    cached = run(tmp_path, Counter())
    victim = cached.path / "heads.npy"
    stamp = next(f for f in cached.meta["final"] if f["file"] == "heads.npy")
    flip_bits(victim, -1, 0x10)
    # an edit within the same coarse clock tick keeps the mtime: the stamp, taken right
    # after writing, is too recent to be trusted, so the file is hashed anyway
    os.utime(victim, ns=(stamp["mtime_ns"], stamp["mtime_ns"]))
    assert victim.stat().st_ino == stamp["ino"]
    with pytest.warns(CacheIntegrityWarning, match=r"heads\.npy.*checksum"):
        assert FeatureCache(tmp_path).load(KEY, N) is None
    rerun_recomputes(tmp_path, r"heads\.npy.*checksum", starts_from(0))


def test_consolidated_file_is_verified_against_shards(tmp_path, monkeypatch):
    real_hash = hc._hash_file

    def flip_then_hash(path, *args):
        path = Path(path)
        if path.name.startswith(".tmp-"):  # the consolidated file, before it is moved in place
            with open(path, "r+b") as f:
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
                f.seek(-1, os.SEEK_END)
                f.write(bytes([last[0] ^ 1]))
        return real_hash(path, *args)

    monkeypatch.setattr(hc, "_hash_file", flip_then_hash)
    with pytest.raises(RuntimeError, match="do not match the shards"):
        run(tmp_path, Counter())
    monkeypatch.undo()
    d = FeatureCache(tmp_path).entry_dir(KEY, N)
    assert not any(p.name.startswith(".tmp-") for p in d.iterdir())
    compute = Counter()
    assert_matches_direct(run(tmp_path, compute))
    assert compute.starts == []


def test_trusted_stamp_skips_rehash_and_full_verify_still_checks(tmp_path, monkeypatch):
    cached = run(tmp_path, Counter())
    d = cached.path
    old = time.time_ns() - 100 * 10**9
    for name in ("heads", "half", "label", "even"):
        os.utime(d / f"{name}.npy", ns=(old, old))
    assert FeatureCache(tmp_path).load(KEY, N) is not None  # re-hashes once and re-stamps

    hashed = []
    real_hash = hc._hash_file
    monkeypatch.setattr(hc, "_hash_file", lambda p, *a: hashed.append(p) or real_hash(p, *a))
    assert FeatureCache(tmp_path).load(KEY, N) is not None
    assert hashed == []

    victim = d / "heads.npy"
    flip_bits(victim, -1, 0x10)
    os.utime(victim, ns=(old, old))  # hide the edit from the stamp (same size, same mtime)
    with pytest.warns(CacheIntegrityWarning, match=r"heads\.npy.*checksum"):
        assert FeatureCache(tmp_path).load(KEY, N, verify="full") is None


def test_key_mismatch_in_manifest_is_rejected(tmp_path):
    cached = run(tmp_path, Counter())
    manifest = read_manifest(cached.path)
    manifest["key"]["model"] = "something-else"
    (cached.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(CacheIntegrityWarning, match="key description differs"):
        assert FeatureCache(tmp_path).load(KEY, N) is None
    again = rerun_recomputes(tmp_path, "key description differs", starts_from(0))
    assert again.key == KEY


def test_garbage_manifest_is_rejected(tmp_path):
    d = interrupted(tmp_path, 2)
    (d / "manifest.json").write_text("{not json")
    rerun_recomputes(tmp_path, "unreadable manifest", starts_from(0))


def test_shape_or_dtype_change_of_compute_rejects_partial_cache(tmp_path):
    interrupted(tmp_path, 3)

    def wider(start, stop):
        out = make_arrays(start, stop)
        out["heads"] = np.concatenate([out["heads"], out["heads"]], axis=2)
        return out

    compute = Counter(wider)
    with pytest.warns(CacheIntegrityWarning, match="do not match what compute returns"):
        cached = run(tmp_path, compute)
    # the first batch of the resumed call reveals the mismatch; everything is then redone
    assert compute.starts == [3 * BS] + starts_from(0)
    assert_matches_direct(cached, wider)


def test_different_keys_do_not_interfere(tmp_path):
    key_b = dict(KEY, model="other")

    def other(start, stop):
        return {"x": np.arange(start, stop, dtype=np.float64) ** 2}

    interrupted(tmp_path, 2)
    b = run(tmp_path, Counter(other), key=key_b)
    resumed = Counter()
    a = run(tmp_path, resumed)
    assert resumed.starts == starts_from(2)
    assert a.path != b.path
    assert_matches_direct(a)
    again = Counter(other)
    assert_matches_direct(run(tmp_path, again, key=key_b), other)
    assert again.starts == []


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_bad_arguments_raise_before_touching_disk(tmp_path):
    run(tmp_path, Counter())
    before = _snapshot(tmp_path)
    for bad_n, exc in [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)]:
        with pytest.raises(exc, match="n_items"):
            stream_to_cache(Counter(), source(), n_items=bad_n, key=KEY, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        run(tmp_path, Counter(), key=dict(KEY, weights=object()))
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        run(tmp_path, Counter(), key=dict(KEY, v=np.float32(1)))
    with pytest.raises(ValueError, match="finite"):
        run(tmp_path, Counter(), key=dict(KEY, v=float("inf")))
    with pytest.raises(TypeError, match="key must be a dict"):
        run(tmp_path, Counter(), key=["model"])
    with pytest.raises(TypeError, match="batches must be"):
        stream_to_cache(Counter(), 12, n_items=N, key=KEY, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="verify"):
        run(tmp_path, Counter(), verify="sometimes")
    assert _snapshot(tmp_path) == before
    untouched = Counter()
    assert_matches_direct(run(tmp_path, untouched))
    assert untouched.starts == []


@pytest.mark.parametrize(
    "fn, exc, match",
    [
        (lambda s, e: {"a": np.zeros(e - s), "b": np.zeros(e - s + 1)}, ValueError, "batch size"),
        (
            lambda s, e: {"a": np.zeros(e - s)} if s == 0 else {"b": np.zeros(e - s)},
            ValueError,
            "names",
        ),
        (
            lambda s, e: {"a": np.zeros(e - s, np.float32 if s == 0 else np.float64)},
            ValueError,
            "dtype",
        ),
        (lambda s, e: {"a": np.zeros((e - s, 2 if s == 0 else 3))}, ValueError, "item shape"),
        (lambda s, e: [np.zeros(e - s)], TypeError, "dict"),
        (lambda s, e: {}, ValueError, "empty"),
        (lambda s, e: {"a": np.float32(1.0)}, ValueError, "scalar"),
        (lambda s, e: {"a": np.array(["x"] * (e - s))}, TypeError, "dtype"),
        (lambda s, e: {3: np.zeros(e - s)}, TypeError, "names must be str"),
        (lambda s, e: {"a": np.zeros((e - s, 0))}, ValueError, "zero-size"),
    ],
)
def test_inconsistent_compute_output_raises(tmp_path, fn, exc, match):
    with pytest.raises(exc, match=match):
        run(tmp_path, lambda b: fn(*b))


def test_wrong_item_count_raises_and_keeps_shards(tmp_path):
    with pytest.raises(ValueError, match="more than n_items=20"):
        stream_to_cache(
            Counter(), source(N), n_items=20, key=KEY, cache_dir=tmp_path, progress=False
        )
    # all 20 items were written before the extra batch arrived: nothing left to compute
    compute = Counter()
    assert_matches_direct(run(tmp_path, compute, n=20), n=20)
    assert compute.starts == []

    with pytest.raises(ValueError, match=r"more than n_items=22 items \(20 \+ 3\)"):
        stream_to_cache(
            Counter(), source(N), n_items=22, key=KEY, cache_dir=tmp_path, progress=False
        )

    other = tmp_path / "short"
    with pytest.raises(ValueError, match="ended after 20 items"):
        stream_to_cache(Counter(), source(20), n_items=N, key=KEY, cache_dir=other, progress=False)
    compute = Counter()
    assert_matches_direct(run(other, compute))
    assert compute.starts == [20]


def test_inconsistent_output_midway_keeps_earlier_shards(tmp_path):
    def flaky(start, stop):
        out = make_arrays(start, stop)
        if start == 3 * BS:
            out["label"] = out["label"].astype(np.int32)
        return out

    with pytest.raises(ValueError, match="inconsistent output"):
        run(tmp_path, Counter(flaky))
    compute = Counter()
    cached = run(tmp_path, compute)
    assert compute.starts == starts_from(3)
    assert_matches_direct(cached)


def test_leftover_temp_files_are_removed(tmp_path):
    d = interrupted(tmp_path, 2)
    (d / ".tmp-abc123.part").write_bytes(b"half a shard")
    (d / "shard-000009.0.npy").write_bytes(b"orphan shard not in the manifest")
    compute = Counter()
    cached = run(tmp_path, compute)
    assert compute.starts == starts_from(2)
    names = {p.name for p in d.iterdir()}
    assert not any(n.startswith((".tmp-", "shard-")) for n in names)
    (d / ".tmp-zzz.npy").write_bytes(b"x")
    run(tmp_path, Counter())
    assert not (d / ".tmp-zzz.npy").exists()
    assert_matches_direct(cached)


# ----------------------------------------------------------------------------------------------
# memory bound
# ----------------------------------------------------------------------------------------------


def _measure_consolidation(tmp: str) -> dict:
    """The cache of 52 MB of float32 in 16 shards of 3.3 MB, made with tracemalloc on: the peak of
    the consolidation and of the whole run (bytes), and a few values read back. Run in a process
    of its own (tracemalloc counts every thread's allocations, and the test session has others)."""
    n, width, bs = 1600, 8192, 100
    real = hc.FeatureCache._consolidate
    peaks = []

    def measured(self, d, manifest):
        assert len(manifest["shards"]) == n // bs
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        try:
            return real(self, d, manifest)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1] - before)

    def compute(batch):
        s, e = batch
        return {"x": np.arange(s * width, e * width, dtype=np.float32).reshape(e - s, width)}

    hc.FeatureCache._consolidate = measured
    tracemalloc.start()
    try:
        cached = stream_to_cache(compute, source(n, bs), n_items=n, key={"big": 1}, cache_dir=tmp, progress=False)
        run_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        hc.FeatureCache._consolidate = real
    x = cached["x"]
    return {"peaks": peaks, "run_peak": run_peak, "total": n * width * 4, "shape": list(x.shape),
            "first": float(x[0, 0]), "last": float(x[-1, -1]),
            "row_777": bool(np.array_equal(x[777], np.arange(777 * width, 778 * width, dtype=np.float32)))}


def test_consolidation_memory_is_bounded(tmp_path):
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_cache; "
            "print(json.dumps(test_cache._measure_consolidation(sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    n, width, total = 1600, 8192, r["total"]
    assert r["peaks"] and r["peaks"][0] < total / 10, (r["peaks"], total)
    assert r["run_peak"] < total / 4, (r["run_peak"], total)
    assert r["shape"] == [n, width] and r["first"] == 0 and r["last"] == float(np.float32(n * width - 1))
    assert r["row_777"]


def test_slice_batches():
    src = slice_batches(lambda s, e: (s, e), 10, 4)
    assert list(src(0)) == [(0, 4), (4, 8), (8, 10)]
    assert list(src(6)) == [(6, 10)]
    with pytest.raises(ValueError):
        slice_batches(lambda s, e: None, 10, 0)


def test_remove(tmp_path):
    run(tmp_path, Counter())
    fc = FeatureCache(tmp_path)
    assert fc.remove(KEY, N)
    assert not fc.entry_dir(KEY, N).exists()
    assert fc.load(KEY, N) is None
    assert not fc.remove(KEY, N)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute = Counter()
        run(tmp_path, compute)
        assert compute.starts == starts_from(0)
