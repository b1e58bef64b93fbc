"""Subprocess side of the kill-and-resume tests in test_cache.py.

Usage: python _cache_worker.py CACHE_DIR MODE K

MODE "compute": SIGKILL itself when compute is called for batch K (K shards are on disk).
MODE "replace": SIGKILL itself while moving shard K into place (its temp file is left over).
MODE "consolidate": SIGKILL itself while moving the first consolidated array into place.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

from helpers.engine.cache import slice_batches, stream_to_cache

N_ITEMS = 23
BATCH = 4
KEY = {"what": "kill-resume", "version": 1}


def make_arrays(start: int, stop: int) -> dict[str, np.ndarray]:
    idx = np.arange(start, stop)
    feat = idx[:, None, None] * 0.5 + np.arange(6, dtype=np.float64).reshape(1, 2, 3)
    return {"feat": feat.astype(np.float32), "label": idx.astype(np.int64) % 5}


def get_batch(start: int, stop: int) -> tuple[int, int]:
    return (start, stop)


def main() -> None:
    cache_dir, mode, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    done = 0

    def compute(batch: tuple[int, int]) -> dict[str, np.ndarray]:
        nonlocal done
        if mode == "compute" and done == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        done += 1
        return make_arrays(*batch)

    real_replace = os.replace
    target = {"replace": f"shard-{kill_at:06d}.0.npy", "consolidate": "feat.npy"}.get(mode)

    def replace(src, dst):  # type: ignore[no-untyped-def]
        if os.path.basename(os.fspath(dst)) == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

    os.replace = replace
    stream_to_cache(
        compute,
        slice_batches(get_batch, N_ITEMS, BATCH),
        n_items=N_ITEMS,
        key=KEY,
        cache_dir=cache_dir,
        progress=False,
    )
    sys.exit(3)


if __name__ == "__main__":
    main()
