"""Training the offline default (:data:`helpers.engine.models.DEFAULT_MODEL`) on the synthetic world.

    python -m helpers.data.training --steps 3000 --out data/models     # CPU, or the GPU if present
    bash scripts/train_offline_model.sh                           # the shipped model, in stages

Contrastive CLIP training on freshly generated scenes (every step sees new scenes; no scene
is seen twice). Options add image-tower pretraining on factor labels (``--pretrain-steps``),
shape groups, a class-caption term (``--class-weight``, ``--class-factors``) and a start from
earlier weights (``--init``), whose training log is kept inside the new one. The *direct-path
penalty* is described in
``data/models/MODEL_CARD.md``: it penalises the variance over the batch of the direct
contributions (in the joint space, through the linearised ``ln_post``) of every MLP and of
every attention layer except the last ``free_attn_layers``, relative to the variance of the
embedding. It leaves the indirect paths free, so those layers still compute features that the
last attention layers read. ``--logit-penalty`` adds the same share measured in the
class-caption directions, so factors of small variance cannot keep a direct path through the
MLPs. Setting ``--direct-penalty 0`` gives plain CLIP training.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from ..engine.decompose import Decomposer
from ..engine.hooks import run_tower
from ..engine.images import images_to_tensor  # noqa: F401  (its old home; training's scenes go through it)
from ..engine.models import DEFAULT_MODEL, DEFAULT_PRETRAINED, data_dir
from . import world

__all__ = ["TrainConfig", "train", "save_weights", "init_log", "training_stages"]


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_frac: float = 0.05
    seed: int = 0
    direct_penalty: float = 1.0
    penalty_start: float = 0.4
    penalty_full: float = 0.7
    free_attn_layers: int = 4
    shape_pairs: float = 0.25
    shape_group: int = 2
    init: str | None = None
    class_weight: float = 0.0
    class_factors: tuple[str, ...] = ("shape",)
    probe_weight: float = 0.0
    pretrain_steps: int = 0
    logit_penalty: float = 0.0
    world: str = "world-v2"
    device: str = "auto"
    threads: int | None = None
    workers: int = 0
    log_every: int = 50
    model_config: dict[str, Any] = field(default_factory=lambda: open_clip.get_model_config(DEFAULT_MODEL))


def _batch(w: world.World, step: int, cfg: TrainConfig) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """Fresh training scenes for ``step``; a fraction ``shape_pairs`` come in *shape groups*.

    A shape group is a scene and ``shape_group - 1`` counterfactual twins that differ from it
    only in the shape (other shapes of the same family, so the family/background statistics
    are unchanged), all with captions that name the shape: hard negatives that can only be
    told apart by the object's shape. Also returns the factor values of every scene.
    """
    g = max(2, int(cfg.shape_group))
    n_groups = int(cfg.shape_pairs * cfg.batch_size) // g
    scenes = w.sample(cfg.batch_size - n_groups * (g - 1), split="train", start=step * cfg.batch_size)
    images, captions = list(scenes.images), list(scenes.captions)
    factors = {k: list(v) for k, v in scenes.factors.items()}
    rng = np.random.default_rng([cfg.seed, step, 7])
    for i in range(n_groups):
        index = int(scenes.indices[i])
        shape = int(scenes.factors["shape"][i])
        fam = world.SHAPE_FAMILY[shape]
        others = [s for s in range(len(world.SHAPES)) if s != shape and world.SHAPE_FAMILY[s] == fam]
        if g == 2:  # one twin (the draw world-v1 was trained with, kept for exact reproduction)
            picks = [others[int(rng.integers(len(others)))]]
        else:
            picks = rng.permutation(others)[: g - 1].tolist()
        while len(picks) < g - 1:  # groups larger than a family: repeat shapes of the family
            picks.append(others[int(rng.integers(len(others)))])
        for variant in range(8):  # prefer a caption that names the shape, so the twins differ in text too
            if world.parse_caption(w.caption(index, "train", variant)).get("shape"):
                break
        if variant:
            captions[i] = w.caption(index, "train", variant)
        for new_shape in picks:
            twin = w.scene(index, "train", caption_variant=variant, overrides={"shape": int(new_shape)})
            images.append(twin.image)
            captions.append(twin.caption)
            for k, v in twin.factors.items():
                factors[k].append(v)
    return np.stack(images), captions, {k: np.asarray(v) for k, v in factors.items()}


_WORKER: dict[str, Any] = {}


def _worker_init(cfg: TrainConfig) -> None:
    _WORKER["world"] = world.World(seed=cfg.seed, config=cfg.world)
    _WORKER["cfg"] = cfg


def _worker_batch(step: int) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    return _batch(_WORKER["world"], step, _WORKER["cfg"])


def batches(cfg: TrainConfig, steps: range):
    """The training batches of ``steps``, in order: made here, or ahead of time by
    ``cfg.workers`` processes (the same batches either way: a batch depends only on its step)."""
    if cfg.workers <= 0:
        w = world.World(seed=cfg.seed, config=cfg.world)
        for step in steps:
            yield _batch(w, step, cfg)
        return
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(cfg.workers, initializer=_worker_init, initargs=(cfg,)) as pool:
        yield from pool.imap(_worker_batch, steps, chunksize=4)


def training_class_captions(factor: str) -> list[str]:
    """One caption per value of ``factor`` for the class-caption term of the loss.

    Worded unlike the zero-shot evaluation prompts of :func:`helpers.data.world.class_prompts`, so
    the evaluation does not reuse training sentences.
    """
    values = world.FACTORS[world.check_factor(factor)]
    if factor == "shape":
        return [f"an image showing {world.PLURALS[v]}" for v in values]
    return [f"an image showing something {v}" for v in values]


def _probe_loss(probes: torch.nn.ModuleDict | None, img: torch.Tensor, factors: dict[str, np.ndarray]) -> torch.Tensor:
    """Mean cross-entropy of the linear probes on the (unit) image embeddings."""
    if probes is None:
        raise ValueError("no probes: set probe_weight or pretrain_steps")
    return sum(F.cross_entropy(head(img), torch.as_tensor(factors[f], device=img.device).long())
               for f, head in probes.items()) / len(probes)


def _logit_penalty(d: Any, penalised_attn: list[int], class_texts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Share of the class logits' variance over the batch that the penalised direct terms carry
    (what mean-ablating them would remove), averaged over the class-caption factors.

    The embedding-variance penalty is dominated by the factors of large variance (colour,
    background); a factor carried by small directions (shape) can keep its direct path through
    the MLPs. Scoring the direct terms in each factor's class directions removes that escape.
    """
    direct = d.mlp.sum(1) + d.embed
    if penalised_attn:
        direct = direct + d.attn[:, penalised_attn].sum(1)
    shares = []
    for texts in class_texts.values():
        t = texts.detach().T
        shares.append((direct @ t).var(0).sum() / (d.embedding @ t).var(0).sum().detach().clamp_min(1e-6))
    return torch.stack(shares).mean()


def _ramp(step: int, cfg: TrainConfig) -> float:
    """Weight of the direct-path penalty: 0 until ``penalty_start`` of the run (features are
    learned freely first), then linear up to 1 at ``penalty_full``."""
    t = step / max(1, cfg.steps)
    if t < cfg.penalty_start:
        return 0.0
    return min(1.0, (t - cfg.penalty_start) / max(1e-9, cfg.penalty_full - cfg.penalty_start))


def _lr_at(step: int, cfg: TrainConfig) -> float:
    warm = max(1, int(cfg.warmup_frac * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    from open_clip.model import CLIP

    torch.manual_seed(cfg.seed)
    model = CLIP(**cfg.model_config)
    if cfg.init:
        from safetensors.torch import load_file

        state = load_file(str(cfg.init))
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        if missing or unexpected:
            raise ValueError(f"--init {cfg.init} does not match the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    return model


def train(cfg: TrainConfig, *, progress: bool = True, checkpoint_dir: Path | None = None,
          checkpoint_every: int = 0) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train from scratch; returns the model (eval mode, CPU) and the logged history.

    With ``checkpoint_dir`` and ``checkpoint_every``, the weights so far are saved there every
    that many steps (so a long run that is stopped still leaves a usable model).
    """
    if cfg.steps <= 0 or cfg.batch_size < 2:
        raise ValueError("steps must be positive and batch_size at least 2")
    if cfg.logit_penalty > 0 and cfg.class_weight <= 0:
        raise ValueError("logit_penalty is measured in the class-caption directions: set class_weight too")
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, progress=progress, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every)
    finally:
        torch.set_num_threads(before)  # the caller's process keeps its own thread count


def _train(cfg: TrainConfig, *, progress: bool, checkpoint_dir: Path | None,
           checkpoint_every: int) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    device = _device(cfg.device)
    model = build_model(cfg).to(device)
    model.train()
    tokenizer = open_clip.tokenize
    ctx = cfg.model_config["text_cfg"]["context_length"]
    dec = Decomposer(model)
    L = dec.n_layers
    penalised_attn = list(range(max(0, L - cfg.free_attn_layers)))
    # optional linear probes on the image embedding (training only, not saved): their random
    # initial directions break the symmetry that keeps image and text from separating a factor
    probes = torch.nn.ModuleDict({f: torch.nn.Linear(cfg.model_config["embed_dim"], len(world.FACTORS[f]))
                                  for f in cfg.class_factors}).to(device) \
        if cfg.probe_weight > 0 or cfg.pretrain_steps > 0 else None
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    if probes is not None:
        no_decay += list(probes.parameters())
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    class_tokens = {f: tokenizer(training_class_captions(f), context_length=ctx).to(device)
                    for f in (cfg.class_factors if cfg.class_weight > 0 else ())}
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    run_loss = run_pen = run_acc = 0.0
    for step, (arrays, captions, factors) in zip(range(cfg.steps), batches(cfg, range(cfg.steps))):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        images = images_to_tensor(arrays).to(device)
        text = tokenizer(captions, context_length=ctx).to(device)
        embedding, d = image_embeddings(model, dec, images, terms=cfg.direct_penalty > 0)
        class_texts: dict[str, torch.Tensor] = {}
        img = F.normalize(embedding, dim=-1)
        pretraining = step < cfg.pretrain_steps
        if pretraining:  # the image tower alone, on the factor labels (linear probes); no text yet
            loss = _probe_loss(probes, img, factors)
            logits = None
        else:
            txt = model.encode_text(text, normalize=True)
            scale = model.logit_scale.exp().clamp(max=100)
            logits = scale * img @ txt.T
            # identical captions in a batch are positives of each other
            same = torch.tensor([[a == b for b in captions] for a in captions], device=device)
            target = same.float() / same.float().sum(1, keepdim=True)
            loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                          + torch.sum(-target * logits.T.log_softmax(1), 1).mean())
            if probes is not None and cfg.probe_weight > 0:
                loss = loss + cfg.probe_weight * _probe_loss(probes, img, factors)
            if cfg.class_weight > 0:
                for factor in cfg.class_factors:
                    ctext = class_texts[factor] = model.encode_text(class_tokens[factor], normalize=True)
                    target_c = torch.as_tensor(factors[factor], device=device).long()
                    loss = loss + cfg.class_weight * F.cross_entropy(scale * img @ ctext.T, target_c) / len(cfg.class_factors)
        pen = torch.zeros((), device=device)
        weight = 0.0 if pretraining else cfg.direct_penalty * _ramp(step, cfg)
        if weight > 0:
            assert d is not None
            total = d.embedding.var(0).sum().detach().clamp_min(1e-6)
            direct = d.mlp.var(0).sum() + d.embed.var(0).sum()
            if penalised_attn:
                direct = direct + d.attn[:, penalised_attn].var(0).sum()
            pen = direct / total
            if cfg.logit_penalty > 0 and class_texts:
                pen = pen + cfg.logit_penalty * _logit_penalty(d, penalised_attn, class_texts)
        opt.zero_grad(set_to_none=True)
        (loss + weight * pen).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        run_loss += float(loss.detach())
        run_pen += float(pen.detach())
        if logits is not None:
            run_acc += float((logits.argmax(1) == torch.arange(len(img), device=device)).float().mean())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            n = (step % cfg.log_every) + 1
            rec = {"step": step + 1, "loss": run_loss / n, "direct_penalty": run_pen / n,
                   "batch_acc": run_acc / n, "lr": _lr_at(step, cfg), "elapsed_s": time.perf_counter() - t0}
            history.append(rec)
            run_loss = run_pen = run_acc = 0.0
            if progress:
                print(f"step {rec['step']:5d}  loss {rec['loss']:.3f}  direct {rec['direct_penalty']:.3f}  "
                      f"batch-acc {rec['batch_acc']:.2f}  {rec['elapsed_s']:.0f}s", flush=True)
        if checkpoint_dir is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save_weights(model, cfg, history, checkpoint_dir, steps_done=step + 1)
            model.train()
    model.eval().cpu()
    return model, history


def image_embeddings(model: torch.nn.Module, dec: Decomposer, images: torch.Tensor, *, terms: bool
                     ) -> tuple[torch.Tensor, Any]:
    """The image embeddings of a training step, and their decomposition when ``terms`` (the
    direct-path penalties read it; ``None`` otherwise). Without ``terms`` the image tower runs
    the same forward pass the decomposition runs (in eval mode) without computing the terms, so
    a run without penalties is the same run, only faster (``tests/test_training.py``)."""
    if terms:
        d = dec(images, heads=False, grad=True)
        return d.embedding, d
    return run_tower(model.visual, images.to(next(model.visual.parameters()).dtype), grad=True), None


def init_log(init: str | Path | None) -> dict[str, Any] | None:
    """The training log saved next to the weights a run started from (``<weights>.train.json``,
    itself possibly with its own ``init_log``), so that a model trained in stages records
    every stage; ``None`` when training started from scratch or the log is missing."""
    if not init:
        return None
    path = Path(init)
    log_path = path.with_name(path.name.removesuffix(".safetensors") + ".train.json")
    return json.loads(log_path.read_text()) if log_path.exists() else None


def training_stages(log: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages of a training log, first stage first (unrolls the nested ``init_log``)."""
    stages = [log]
    while stages[0].get("init_log"):
        stages.insert(0, stages[0]["init_log"])
    return stages


def save_weights(model: torch.nn.Module, cfg: TrainConfig, history: list[dict[str, float]], out_dir: Path,
                 *, dtype: torch.dtype = torch.float16, steps_done: int | None = None,
                 tag: str = DEFAULT_PRETRAINED) -> Path:
    """Write ``<DEFAULT_MODEL>-<tag>.safetensors`` (``dtype``), its config and training log."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{DEFAULT_MODEL}-{tag}.safetensors"
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"model": DEFAULT_MODEL, "tag": tag})
    (out_dir / f"{DEFAULT_MODEL}.json").write_text(json.dumps(cfg.model_config, indent=2) + "\n")
    train_cfg = {k: v for k, v in asdict(cfg).items() if k != "model_config"}
    log = {"config": train_cfg, "steps_done": cfg.steps if steps_done is None else steps_done,
           "history": history, "init_log": init_log(cfg.init),
           "hardware": {"device": str(_device(cfg.device)), "platform": platform.platform(),
                        "processor": platform.processor(), "torch_threads": cfg.threads or torch.get_num_threads(),
                        "torch": torch.__version__, "open_clip": open_clip.__version__}}
    (out_dir / f"{DEFAULT_MODEL}-{tag}.train.json").write_text(json.dumps(log, indent=1) + "\n")
    return weights


def _factor_list(text: str) -> list[str]:
    names = [f.strip() for f in text.split(",") if f.strip()]
    if not names:
        raise SystemExit("--class-factors needs at least one factor")
    for name in names:
        if name not in world.FACTORS:
            raise SystemExit(f"unknown factor {name!r}; known: {', '.join(world.FACTORS)}")
    return names


# The fields of TrainConfig the command line sets (``--batch-size`` sets ``batch_size``), in the
# order ``--help`` lists them, with what ``add_argument`` needs besides the field's default (the
# type is the default's own, where there is one).
_CONFIG_OPTIONS: dict[str, dict[str, Any]] = {
    "steps": {}, "batch_size": {}, "lr": {}, "seed": {}, "direct_penalty": {}, "free_attn_layers": {},
    "shape_pairs": {"help": "fraction of each batch made of shape groups"},
    "shape_group": {"help": "scenes per shape group (a scene and its shape twins)"},
    "class_weight": {"help": "weight of the class-caption term (each image against one caption per shape)"},
    "class_factors": {"help": "comma-separated factors for the class-caption term and the probes"},
    "probe_weight": {"help": "weight of a linear probe's loss on the image embedding (symmetry breaking)"},
    "pretrain_steps": {"help": "first train the image tower alone on the factor labels for this many steps"},
    "logit_penalty": {"help": "weight of the direct-path penalty measured in the class-caption directions"},
    "init": {"help": "start from these weights (safetensors) instead of from scratch"},
    "penalty_start": {}, "penalty_full": {},
    "world": {"choices": list(world.WORLDS), "help": "the world whose scenes the model trains on"},
    "device": {}, "threads": {"type": int},
    "workers": {"help": "processes that make the batches ahead of time (the same batches)"},
}


def parse_config(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """The command line of ``python -m helpers.data.training`` as a :class:`TrainConfig` (and the
    remaining options: ``out``, ``checkpoint_every``)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    for name, kw in _CONFIG_OPTIONS.items():
        default = getattr(d, name)
        if name == "class_factors":
            default = ",".join(default)
        elif default is not None:
            kw = {"type": type(default), **kw}
        ap.add_argument("--" + name.replace("_", "-"), default=default, **kw)
    ap.add_argument("--layers", type=int, default=d.model_config["vision_cfg"]["layers"])
    ap.add_argument("--width", type=int, default=d.model_config["vision_cfg"]["width"])
    ap.add_argument("--embed-dim", type=int, default=d.model_config["embed_dim"])
    ap.add_argument("--out", type=Path, default=data_dir() / "models")
    ap.add_argument("--checkpoint-every", type=int, default=0)
    ap.add_argument("--tag", default=DEFAULT_PRETRAINED,
                    help=f"name of the weights: <out>/{DEFAULT_MODEL}-<tag>.safetensors")
    args = ap.parse_args(argv)
    options = {name: getattr(args, name) for name in _CONFIG_OPTIONS}
    cfg = TrainConfig(**dict(options, class_factors=tuple(_factor_list(args.class_factors))))
    cfg.model_config["vision_cfg"]["layers"] = args.layers
    cfg.model_config["vision_cfg"]["width"] = args.width
    cfg.model_config["embed_dim"] = args.embed_dim
    return cfg, args


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_config(argv)
    model, history = train(cfg, checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every)
    path = save_weights(model, cfg, history, args.out, tag=args.tag)
    print(f"saved {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
