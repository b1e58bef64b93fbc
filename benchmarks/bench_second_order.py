"""Cost of the second-order effects of neurons (helpers.methods.second_order), measured in one run.

1. Time: the effects of every neuron of one MLP layer per image, as a ratio to a plain forward
   pass (random-init ViT-B-32 on CPU, layer 9, batch 8 by default; goal <= 3x). Three figures,
   medians of interleaved repeats:
     * factored effects materialised: one forward pass with the recording hooks, the
       coefficients, and the [B, neurons, d'] effects formed;
     * streaming step: the same pass, coefficients and the centred norms of every neuron
       (what a dataset pass does per batch; the [B, neurons, d'] effects are not formed);
   and, once, the building of u (image-independent, once per model and layer).
2. Memory: the peak resident set size of a 5,000-image streaming run (two passes: means, then
   the centred top k) in a fresh subprocess, sampled every 0.5 ms from /proc (glibc told to
   return freed blocks at once); images are synthetic (random tensors made batch by batch,
   never all held), the model the offline default (float32), layers 4-6 and k = 100 by
   default. Printed: the run's peak, i.e. the rise of the peak RSS above the process before
   the run (goal <= 1 GB), and the whole process's peak, most of which is importing torch and
   open_clip (about 0.9 GiB of resident libraries with the CUDA build of torch). With --b32-memory, the
   same measurement for ViT-B-32 layer 9 at two dataset sizes, to show that the peak does not
   grow with the number of images.

    python benchmarks/bench_second_order.py [--model ViT-B-32] [--layer 9] [--batch 8] [--repeats 7]
        [--n-images 5000] [--b32-memory]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch
from _bench import PeakRSS, in_fresh_process, interleaved, parser, random_model


def memory_worker(model_name: str, layers: list[int], n_images: int, batch: int, k: int) -> None:
    """One streaming run in a fresh process; prints its peak RSS as JSON."""
    from helpers.methods.second_order import stream_neuron_stats

    if model_name == "offline":
        from helpers.engine.models import load_model

        model = load_model().model
    else:
        model = random_model(model_name)
    size = tuple(model.visual.image_size)

    def batches():  # synthetic images, made batch by batch (the same each pass)
        for start in range(0, n_images, batch):
            g = torch.Generator().manual_seed(start)
            yield torch.randn(min(batch, n_images - start), 3, *size, generator=g)

    stream_neuron_stats(model, lambda: iter([next(batches())]), layers, k=1)  # warm-up: u, Gram, kernels
    gc.collect()
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        stats = stream_neuron_stats(model, batches, layers, k=k)
    wall = time.perf_counter() - t0
    kept = sum(s.top_coef.numel() * s.top_coef.element_size() + s.top_norm.numel() * 8 + s.top_index.numel() * 8
               + s.mean.numel() * s.mean.element_size() for s in stats.values())
    so = next(iter(stats.values())).source
    print(json.dumps({"start_mib": mem.start / 2**20, "peak_mib": mem.peak / 2**20, "wall_s": wall,
                      "kept_mib": kept / 2**20, "neurons": int(so.u.shape[0]), "J": int(so.u.shape[1]),
                      "d": int(so.u.shape[2]), "n_images": stats[layers[0]].n_images}))


def run_memory(model_name: str, layers: list[int], n_images: int, batch: int, k: int, threads: int) -> dict:
    return in_fresh_process(__file__, "--memory-worker", model_name, "--layers", ",".join(map(str, layers)),
                            "--n-images", str(n_images), "--batch", str(batch), "--k", str(k), "--threads", str(threads))


def main() -> None:
    ap = parser(__doc__, model="ViT-B-32")
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-images", type=int, default=5000)
    ap.add_argument("--memory-batch", type=int, default=100)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--layers", default="4,5,6", help="offline model layers for the memory run")
    ap.add_argument("--b32-memory", action="store_true", help="also the ViT-B-32 memory at two dataset sizes")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(args.memory_worker, [int(i) for i in args.layers.split(",")], args.n_images, args.batch, args.k)
        return

    from helpers.methods.second_order import SecondOrder

    model = random_model(args.model)
    x = torch.randn(args.batch, 3, *model.visual.image_size)
    t0 = time.perf_counter()
    so = SecondOrder(model, args.layer)
    _ = so.u
    t_u = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ = so.gram
    t_gram = time.perf_counter() - t0
    mean = torch.zeros(so.u.shape[0], so.u.shape[2])
    centre = so.centre_terms(mean)
    times, last = interleaved(args.repeats, {
        "plain": lambda: model.encode_image(x),
        "full": lambda: so(x).effects(),
        "stream": lambda: so(x).norms(centre=centre)})
    (tp, tf, ts), (mp, mf, ms) = ([f(times[k]) for k in ("plain", "full", "stream")]
                                  for f in (statistics.median, min))
    phi = last["full"]
    K, J, d = so.u.shape
    print(f"model {args.model} (random weights), MLP layer {args.layer}: {K} neurons x {J} later heads, d' = {d}; "
          f"batch {args.batch}, {torch.get_num_threads()} threads, {args.repeats} repeats (median / fastest)")
    print(f"plain encode_image                 : {tp * 1000:8.1f} / {mp * 1000:8.1f} ms  "
          f"({tp / args.batch * 1000:.1f} ms / image)")
    print(f"effects, materialised [B, K, d']   : {tf * 1000:8.1f} / {mf * 1000:8.1f} ms  (effects {tuple(phi.shape)})")
    print(f"streaming step (coefficients+norms): {ts * 1000:8.1f} / {ms * 1000:8.1f} ms")
    print(f"time ratio effects / plain         : {tf / tp:8.2f} / {mf / mp:8.2f}   (goal <= 3)")
    print(f"time ratio streaming step / plain  : {ts / tp:8.2f} / {ms / mp:8.2f}")
    print(f"u built once per model and layer   : {t_u:8.2f} s  ({so.u.numel() * so.u.element_size() / 2**20:.0f} MiB),"
          f" Gram matrices {t_gram:.2f} s")
    if args.skip_memory:
        return
    layers = [int(i) for i in args.layers.split(",")]
    m = run_memory("offline", layers, args.n_images, args.memory_batch, args.k, args.threads)
    print(f"streaming run, offline default, layers {layers}, {m['n_images']} synthetic images, k={args.k}, "
          f"batch {args.memory_batch}, two passes: {m['wall_s']:.1f} s")
    print(f"  peak memory of the run           : {m['peak_mib'] - m['start_mib']:8.1f} MiB   (goal <= 1024 MiB; "
          f"rise of the peak RSS above the process before the run; statistics kept: {m['kept_mib']:.1f} MiB)")
    print(f"  peak RSS of the whole process    : {m['peak_mib']:8.1f} MiB   (of which {m['start_mib']:.0f} MiB before "
          "the run: importing torch and open_clip, the model, u)")
    full_mib = m["n_images"] * m["neurons"] * m["d"] * 4 * len(layers) / 2**20
    print(f"  (the [images, neurons, d'] float32 arrays of these layers would be {full_mib:.0f} MiB)")
    if args.b32_memory:
        for n in (64, 256):
            r = run_memory(args.model, [args.layer], n, args.batch, 32, args.threads)
            print(f"{args.model} layer {args.layer}, {n} images, k=32: peak RSS {r['peak_mib']:.1f} MiB, rise "
                  f"{r['peak_mib'] - r['start_mib']:.1f} MiB, {r['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
