"""Memory of the streamed terms (helpers.methods.streamed), the way notebooks 2 and 3 read all of
ImageNet validation on the full presets: the terms go to the on-disk cache once, then every pass
(the means, the ablation accuracies, the heads' moments for TextSpan) reads them a chunk at a
time.

The terms are synthetic, with ViT-L-14's shapes (24 layers, width 768, 16 heads in each of the
last four layers): what is measured is how memory grows with the number of images, not what a
model computes. Printed: the size of the terms on disk, the rise of the process's peak resident
memory during the streamed passes over what it held before them, and their ratio.

    python benchmarks/bench_streamed.py [--images 2000] [--chunk-mb 64]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.engine.cache import slice_batches, stream_to_cache  # noqa: E402
from helpers.methods.ablation import ablation_accuracies  # noqa: E402
from helpers.methods.streamed import StreamedTerms  # noqa: E402

LAYERS, WIDTH, HEADS, HEAD_LAYERS, CLASSES = 24, 768, 16, (20, 21, 22, 23), 1000


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--chunk-mb", type=int, default=64)
    args = ap.parse_args()
    n = args.images

    def compute(rows):  # one batch of terms, drawn from a seed per batch: nothing held across batches
        a, b = rows
        g = torch.Generator().manual_seed(a)
        k = b - a
        return {"embed": torch.randn(k, WIDTH, generator=g), "attn": torch.randn(k, LAYERS, WIDTH, generator=g),
                "mlp": torch.randn(k, LAYERS, WIDTH, generator=g), "cls_self": torch.randn(k, LAYERS, WIDTH, generator=g),
                "heads": torch.randn(k, len(HEAD_LAYERS), HEADS, WIDTH, generator=g)}

    with tempfile.TemporaryDirectory(prefix="bench-streamed-") as tmp:
        t0 = time.perf_counter()
        arrays = stream_to_cache(compute, slice_batches(lambda a, b: (a, b), n, 50), n_items=n, key={"bench": n},
                                 cache_dir=tmp, progress=False)
        written = time.perf_counter() - t0
        on_disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
        terms = StreamedTerms(arrays, torch.zeros(WIDTH), head_layers=list(HEAD_LAYERS),
                              chunk_bytes=args.chunk_mb << 20)
        classifier = torch.nn.functional.normalize(torch.randn(CLASSES, WIDTH), dim=-1)
        labels = torch.randint(0, CLASSES, (n,))
        before = peak_rss_mib()
        t0 = time.perf_counter()
        terms.means()
        specs = [dict(attn=range(j)) for j in range(0, LAYERS, 4)] + [dict(mlps=range(LAYERS), scale="paper")]
        ablation_accuracies(terms, specs, classifier, labels)
        terms.head_moments(list(HEAD_LAYERS))
        passes = time.perf_counter() - t0
        rise = peak_rss_mib() - before
    print(f"{n} images, ViT-L-14 shapes: terms on disk {on_disk:,.0f} MiB (written in {written:.1f} s); "
          f"chunks of {terms.chunk_size} images ({args.chunk_mb} MiB)")
    print(f"streamed passes (means, {len(specs)} ablations, the heads' moments) in {passes:.1f} s: peak memory "
          f"rose by {rise:,.0f} MiB over the {before:,.0f} MiB held before them; "
          f"rise / terms on disk = {rise / on_disk:.3f}")


if __name__ == "__main__":
    main()
