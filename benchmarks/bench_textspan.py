"""Batched TextSpan against the plain per-head NumPy loop, on identical random data.

Head-like data (each head's outputs span ``--head-rank`` directions with a decaying spectrum,
plus a mean offset; ``--head-rank 0`` for full-rank heads) and random unit texts. Runs
``helpers.methods.textspan.textspan`` on all heads at once and ``textspan_reference`` head by head,
asserts that both choose identical texts, and prints the times and the speed ratio.

With ``--ref-heads H`` the reference loop runs on the first ``H`` heads only and its time
for all heads is extrapolated linearly (labelled as such): the loop costs the same for every
head, and at the default sizes it takes many minutes on one thread.

    python benchmarks/bench_textspan.py [--heads 48] [--images 5000] [--texts 3500]
        [--dim 512] [--n 20] [--rank 80] [--head-rank 64] [--threads 1] [--ref-heads H]
        [--dtype float64] [--seed 0] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--heads", type=int, default=48)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--texts", type=int, default=3500)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--rank", type=int, default=80)
    p.add_argument("--head-rank", type=int, default=64, help="0: full rank")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ref-heads", type=int, default=None,
                   help="run the reference on this many heads and extrapolate (default: all)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="device of the batched run (the reference is NumPy)")
    return p.parse_args()


def main() -> None:
    args = parse()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy  # noqa: F401  (imported only once the BLAS thread count is set)
    import torch

    from helpers.methods.textspan import random_texts, textspan, textspan_reference

    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass
    torch.set_num_threads(args.threads)

    Hs, K, d, M, n = args.heads, args.images, args.dim, args.texts, args.n
    q = args.head_rank or d
    if not 1 <= q <= d:
        raise SystemExit(f"--head-rank must be in [0, {d}]")
    ref_heads = Hs if args.ref_heads is None else max(1, min(args.ref_heads, Hs))
    dt = torch.float64 if args.dtype == "float64" else torch.float32

    g = torch.Generator().manual_seed(args.seed)
    Q = torch.linalg.qr(torch.randn(Hs, d, q, generator=g, dtype=torch.float64))[0]
    Z = torch.randn(Hs, K, q, generator=g, dtype=torch.float64) * torch.logspace(0, -1.5, q, dtype=torch.float64)
    C = (Z @ Q.mT + 0.3 * torch.randn(Hs, 1, d, generator=g, dtype=torch.float64)).to(dt)
    del Z, Q
    R = random_texts(M, d, seed=args.seed + 1, dtype=dt)
    C_np, R_np = C.numpy(), R.numpy()

    dev = torch.device(args.device)
    Cd = C.to(dev)
    textspan(Cd[:1, :64], R[:64], 2, rank=8)  # warm-up (lazy initialisation, kernels)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = textspan(Cd, R, n, rank=args.rank)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_batched = time.perf_counter() - t0
    idx = res.indices.cpu()

    t0 = time.perf_counter()
    ref_idx = []
    for h in range(ref_heads):
        ref_idx.append(textspan_reference(C_np[h], R_np, n, rank=args.rank).indices)
    t_ref_measured = time.perf_counter() - t0
    ref_idx = torch.stack(ref_idx)
    same = torch.equal(ref_idx, idx[:ref_heads])
    t_ref = t_ref_measured * Hs / ref_heads

    out = {
        "sizes": {"heads": Hs, "images": K, "texts": M, "dim": d, "n": n, "rank": args.rank,
                  "head_rank": q, "dtype": args.dtype, "threads": args.threads,
                  "device": str(dev)},
        "span_rank": sorted(set(res.span_rank.tolist())),
        "batched_s": round(t_batched, 3),
        "reference_heads_run": ref_heads,
        "reference_measured_s": round(t_ref_measured, 3),
        "reference_all_heads_s": round(t_ref, 3),
        "reference_extrapolated": ref_heads < Hs,
        "speedup": round(t_ref / t_batched, 1),
        "identical_texts": same,
        "cumulative_variance_mean": round(float(res.cumulative[:, -1].mean()), 4),
    }
    print(json.dumps(out, indent=1))
    if not same:
        diff = (ref_idx != idx[:ref_heads]).any(-1).nonzero().flatten().tolist()
        print(f"heads whose choices differ: {diff}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
