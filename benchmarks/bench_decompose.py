"""Cost of the per-head decomposition against a plain forward pass.

Random-init ViT-B-16 on CPU at batch 8 (by default). Prints, measured in this one run:
  * time ratio  (per-head class-token decomposition of all layers) / (plain encode_image),
    medians of interleaved repeats;
  * peak extra memory of the decomposition over the plain forward: each is the rise of the
    resident set size above its starting value, sampled every 0.5 ms in a fresh subprocess
    doing only that work (glibc told to return freed blocks at once).

    python benchmarks/bench_decompose.py [--model ViT-B-16] [--batch 8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch


def build(model_name: str):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(model_name)
    return model.eval()


class PeakRSS:
    """Samples this process's resident set size (Linux /proc) in a thread; peak above start."""

    def __init__(self, interval: float = 0.0005) -> None:
        import os
        import threading

        self._page = os.sysconf("SC_PAGE_SIZE")
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start = self.peak = self._rss()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def worker(model_name: str, batch: int, mode: str) -> None:
    """Run one kind of work once (after a small warm-up) in a fresh process; print its peak."""
    import gc

    from helpers.engine.decompose import Decomposer

    model = build(model_name)
    x = torch.randn(batch, 3, *model.visual.image_size)
    dec = Decomposer(model)
    with torch.no_grad():
        model.encode_image(x[:1])
        dec(x[:1], heads=True)
    gc.collect()
    with PeakRSS() as mem, torch.no_grad():
        out = model.encode_image(x) if mode == "plain" else dec(x, heads=True).heads
    print(json.dumps({"extra_mib": mem.extra_mib, "shape": list(out.shape)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", choices=["plain", "decompose"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args.model, args.batch, args.worker)
        return

    from helpers.engine.decompose import Decomposer

    model = build(args.model)
    dec = Decomposer(model)
    x = torch.randn(args.batch, 3, *model.visual.image_size)
    with torch.no_grad():
        model.encode_image(x)
        dec(x, heads=True)
    plain, decomp = [], []
    for _ in range(args.repeats):  # interleaved so drifts in machine load hit both alike
        t0 = time.perf_counter()
        with torch.no_grad():
            model.encode_image(x)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        d = dec(x, heads=True)
        decomp.append(time.perf_counter() - t0)
    tp, td = statistics.median(plain), statistics.median(decomp)
    print(f"model {args.model}, batch {args.batch}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"plain encode_image          : {tp * 1000:8.1f} ms")
    print(f"per-head decomposition      : {td * 1000:8.1f} ms  (heads tensor {tuple(d.heads.shape)})")
    print(f"time ratio decompose/plain  : {td / tp:8.2f}   (target <= 1.5)")

    mem = {}
    # Large blocks straight from mmap and no trimming delay: RSS then follows live memory
    # instead of what glibc keeps cached, so the two workers are compared fairly.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    for mode in ("plain", "decompose"):
        out = subprocess.run([sys.executable, __file__, "--worker", mode, "--model", args.model,
                              "--batch", str(args.batch), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True, env=env)
        mem[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    extra = mem["decompose"]["extra_mib"] - mem["plain"]["extra_mib"]
    L, H = d.heads.shape[1], d.heads.shape[2]
    T = 1 + d.grid_size[0] * d.grid_size[1]
    full = args.batch * L * T * H * d.heads.shape[-1] * 4 / 2**20
    print(f"peak RSS rise, plain forward: {mem['plain']['extra_mib']:8.1f} MiB")
    print(f"peak RSS rise, decomposition: {mem['decompose']['extra_mib']:8.1f} MiB")
    print(f"peak extra memory           : {extra:8.1f} MiB")
    print(f"(a full [B, L, T, H, d'] float32 tensor would be {full:.0f} MiB)")


if __name__ == "__main__":
    main()
