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

import torch
from _bench import interleaved, medians, parse_or_work, peaks, print_peak, random_model


def worker(model_name: str, batch: int, mode: str) -> None:
    """Run one kind of work once (after a small warm-up) in a fresh process; print its peak."""
    from helpers.engine.decompose import Decomposer

    model = random_model(model_name)
    x = torch.randn(batch, 3, *model.visual.image_size)
    dec = Decomposer(model)
    with torch.no_grad():
        model.encode_image(x[:1])
        dec(x[:1], heads=True)
    print_peak(lambda: model.encode_image(x) if mode == "plain" else dec(x, heads=True).heads)


def main() -> None:
    args = parse_or_work(__doc__, model="ViT-B-16", size=("--batch", 8), mode="decompose", worker=worker)
    if args is None:
        return

    from helpers.engine.decompose import Decomposer

    model = random_model(args.model)
    dec = Decomposer(model)
    x = torch.randn(args.batch, 3, *model.visual.image_size)
    times, last = interleaved(args.repeats, {"plain": lambda: model.encode_image(x),
                                             "decompose": lambda: dec(x, heads=True)})
    tp, td = medians(times).values()
    d = last["decompose"]
    print(f"model {args.model}, batch {args.batch}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"plain encode_image          : {tp * 1000:8.1f} ms")
    print(f"per-head decomposition      : {td * 1000:8.1f} ms  (heads tensor {tuple(d.heads.shape)})")
    print(f"time ratio decompose/plain  : {td / tp:8.2f}   (target <= 1.5)")

    mem = peaks(__file__, args, "--batch", "decompose")
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
