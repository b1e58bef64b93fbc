"""Throughput of the zero-shot segmenters: the decomposition (no backward pass) against GradCAM
and the other baselines, on the same images, in one run.

Random-init ViT-B-16 on CPU, a batch of random images and 1,000 random unit class texts (as
for ImageNet). Every method produces its patch maps for the predicted class; the zero-shot
prediction is included in the decomposition's time (it comes out of the same forward pass)
and in the gradient and relevance methods' time (they need it for their target). LRP and
partial LRP (relevance propagation, :mod:`helpers.methods.lrp`) are timed beside the others. Prints images per second
of each method (medians of interleaved repeats) and the ratio decomposition / GradCAM
(target >= 1: at least as fast).

    python benchmarks/bench_segmentation.py [--model ViT-B-16] [--batch 4] [--classes 1000] [--repeats 5]
                                            [--device cuda]
"""

from __future__ import annotations

import statistics

import torch
from _bench import interleaved, parser, random_model


def main() -> None:
    ap = parser(__doc__, model="ViT-B-16", repeats=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--methods", default="decomposition,gradcam,chefer,rollout,raw_attention,lrp,partial_lrp")
    ap.add_argument("--device", default="cpu", help="e.g. cuda (timed with synchronisation)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from helpers.methods.segmentation import METHODS, segmentation_maps

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {METHODS}")
    dev = torch.device(args.device)
    model = random_model(args.model).to(dev)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, *model.visual.image_size, generator=g).to(dev)
    texts = torch.nn.functional.normalize(torch.randn(args.classes, model.visual.output_dim, generator=g),
                                          dim=-1).to(dev)

    # every method in turn (the decomposition builds its cached joint-space maps in the warm-up)
    times, last = interleaved(args.repeats, {m: (lambda m=m: segmentation_maps(model, x, texts, m)) for m in methods},
                              sync=(lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None),
                              grad=True)  # the gradient methods need autograd
    assert all(maps.shape[0] == args.batch for maps in last.values())
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}, {where}, batch {args.batch}, {args.classes} classes, "
          f"{args.repeats} interleaved repeats")
    ips = {m: args.batch / statistics.median(t) for m, t in times.items()}
    for m in methods:
        print(f"  {m:14s} {ips[m]:7.2f} images/s   (median {statistics.median(times[m]) * 1000:8.1f} ms per batch)")
    if "decomposition" in ips and "gradcam" in ips:
        print(f"decomposition / GradCAM throughput ratio: {ips['decomposition'] / ips['gradcam']:.2f} (target >= 1)")


if __name__ == "__main__":
    main()
