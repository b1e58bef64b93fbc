"""Cost of the per-head decomposition of a SigLIP image tower against its plain forward pass.

Random-init ``ViT-B-16-SigLIP`` image tower (a timm ViT with attention pooling) on CPU at batch
8 (by default). Prints, measured in this one run, the time ratio (per-head decomposition of all
layers, per-layer and per-pooling-head terms) / (plain forward pass), medians of interleaved
repeats.

    python benchmarks/bench_decompose_siglip.py [--model ViT-B-16-SigLIP] [--batch 8] [--repeats 7]
"""

from __future__ import annotations

import warnings

import torch
from _bench import interleaved, medians, parser


def build(model_name: str) -> torch.nn.Module:
    """The image tower alone (SigLIP 2 text towers have a 256k vocabulary)."""
    import open_clip
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(model_name)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"]).eval()


def main() -> None:
    ap = parser(__doc__, model="ViT-B-16-SigLIP")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from helpers.engine.decompose import Decomposer

    tower = build(args.model).to(args.device)
    dec = Decomposer(tower)
    size = tower.trunk.patch_embed.img_size
    x = torch.randn(args.batch, 3, *size, device=args.device)
    times, last = interleaved(args.repeats, {"plain": lambda: tower(x), "decompose": lambda: dec(x, heads=True)},
                              sync=torch.cuda.synchronize if x.is_cuda else (lambda: None))
    tp, td = medians(times).values()
    d = last["decompose"]
    print(f"model {args.model} (image tower), batch {args.batch}, device {args.device}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"plain forward               : {tp * 1000:8.1f} ms")
    print(f"per-head decomposition      : {td * 1000:8.1f} ms  (heads {tuple(d.heads.shape)}, "
          f"pool heads {tuple(d.pool_heads.shape)})")
    print(f"max relative error (float32): {d.max_error():8.1e}")
    print(f"time ratio decompose/plain  : {td / tp:8.2f}   (target <= 1.5)")


if __name__ == "__main__":
    main()
