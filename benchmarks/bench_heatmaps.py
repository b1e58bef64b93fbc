"""Cost of spatial heat maps (all layers and heads, many texts) against a plain forward pass.

Random-init ViT-B-16 on CPU, one image and 100 random unit texts (by default). Prints,
measured in this one run:
  * time ratio  ``helpers.methods.spatial.heatmaps`` / plain ``encode_image`` of the same image,
    medians of interleaved repeats (target <= 3);
  * peak extra memory of the heat maps over the plain forward (target <= 200 MB): each is the
    rise of the resident set size above its starting value, sampled every 0.5 ms in a fresh
    subprocess doing only that work (glibc told to return freed blocks at once), with
    ``PeakRSS`` from ``_bench.py``;
  * what the naive approach would hold: the full per-token, per-head joint tensor
    ``[L, T, H, d']`` of one image, and its scores ``[L, T, H, M]`` against the texts.

    python benchmarks/bench_heatmaps.py [--model ViT-B-16] [--texts 100] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import time

import torch
from _bench import interleaved, medians, parse_or_work, peaks, print_peak, random_model


def inputs(model, n_texts: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, *model.visual.image_size, generator=g)
    texts = torch.nn.functional.normalize(torch.randn(n_texts, model.visual.output_dim, generator=g), dim=-1)
    return x, texts


def worker(model_name: str, n_texts: int, mode: str) -> None:
    """Run one kind of work once (after a warm-up of both) in a fresh process; print its peak."""
    from helpers.methods.spatial import heatmaps

    model = random_model(model_name)
    x, texts = inputs(model, n_texts)
    with torch.no_grad():
        model.encode_image(x)
    heatmaps(model, x, texts)  # also builds the per-model joint-space maps (cached)
    print_peak(lambda: model.encode_image(x) if mode == "plain" else heatmaps(model, x, texts).patch_maps)


def main() -> None:
    args = parse_or_work(__doc__, model="ViT-B-16", size=("--texts", 100), mode="heatmaps", worker=worker)
    if args is None:
        return

    from helpers.methods.spatial import heatmaps

    model = random_model(args.model)
    x, texts = inputs(model, args.texts)
    times, last = interleaved(args.repeats, {"plain": lambda: model.encode_image(x),
                                             "heatmaps": lambda: heatmaps(model, x, texts)})
    tp, th = medians(times).values()
    r = last["heatmaps"]

    visual = model.visual
    L = len(visual.transformer.resblocks)
    H = visual.transformer.resblocks[0].attn.num_heads
    T = 1 + r.grid[0] * r.grid[1]
    d, M = visual.output_dim, args.texts
    print(f"model {args.model}, 1 image x {M} texts, all {L} layers x {H} heads, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats "
          f"({time.strftime('%Y-%m-%d %H:%M:%S %Z')})")
    print(f"plain encode_image           : {tp * 1000:8.1f} ms")
    print(f"heatmaps                     : {th * 1000:8.1f} ms  (maps {tuple(r.patch_maps.shape)}, "
          f"sum-back error {r.max_error():.1e})")
    print(f"time ratio heatmaps/plain    : {th / tp:8.2f}   (target <= 3)")

    mem = peaks(__file__, args, "--texts", "heatmaps")
    extra = mem["heatmaps"]["extra_mib"] - mem["plain"]["extra_mib"]
    print(f"peak RSS rise, plain forward : {mem['plain']['extra_mib']:8.1f} MiB")
    print(f"peak RSS rise, heatmaps      : {mem['heatmaps']['extra_mib']:8.1f} MiB")
    print(f"peak extra memory            : {extra:8.1f} MiB = {extra * 2**20 / 1e6:.1f} MB   (target <= 200 MB)")
    cached = (L * H * (visual.transformer.width // H) * d + L * H * d + visual.transformer.width * d) * 4
    print(f"(joint-space maps cached once per model, not counted above: {cached / 2**20:.1f} MiB)")
    full = L * T * H * d * 4
    scored = L * T * H * M * 4
    print(f"naive: full [L, T, H, d'] = [{L}, {T}, {H}, {d}] float32 for one image: "
          f"{full:,} bytes ({full / 2**20:.1f} MiB)")
    print(f"       scored [L, T, H, M] = [{L}, {T}, {H}, {M}] float32: {scored:,} bytes ({scored / 2**20:.1f} MiB); "
          f"together {(full + scored) / 2**20:.1f} MiB per image")


if __name__ == "__main__":
    main()
