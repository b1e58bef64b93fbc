"""Exercises of notebook 1 (the embedding as a sum): reference solutions, test cases, typical mistakes, checks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .check import Case, Exercise, Mistake, compare_scalar, compare_tensor, make_check, register
from .seeds import gen, rand, randn, seeded_cases

__all__ = ["ResidualPieces", "residual_pieces", "check_linearise", "check_reassemble", "check_variance_share",
           "check_last_layers_for_half", "last_layer_shares"]


def _linearise(pieces: Tensor, sigma: Tensor, gamma: Tensor, proj: Tensor) -> Tensor:
    """Direct contributions ``[B, K, E]`` of residual pieces ``[B, K, D]`` through ``ln_post``
    (centring over the ``D`` features, ``gamma``, ``1/sigma`` per image) and ``proj``."""
    centred = pieces - pieces.mean(-1, keepdim=True)
    return (centred * gamma / sigma[:, None, None]) @ proj


def _linearise_cases() -> list[Case]:
    g = gen(101)

    def make(B: int, K: int, D: int = 6, E: int = 5) -> tuple:
        pieces = randn(g, B, K, D) + 2.0 * randn(g, B, K, 1)  # each piece has its own mean
        sigma = 0.5 + 2.0 * rand(g, B)
        gamma = 0.5 + rand(g, D)
        proj = randn(g, D, E)
        return pieces, sigma, gamma, proj

    return [Case("3 images, 4 pieces", make(3, 4)), Case("one image", make(1, 4)),
            Case("one piece", make(2, 1)), Case("one image, one piece", make(1, 1))]


register(Exercise(
    id="1.1", name="linearise", task="the direct contribution of each residual piece through ln_post and proj",
    reference=_linearise, cases=_linearise_cases, compare=compare_tensor("the result"),
    error_hint="pieces are [B, K, D], sigma [B] (one per image: use sigma[:, None, None]), gamma [D], "
               "proj [D, E]; the mean is over the last axis (keepdim=True)",
    mistakes=(
        Mistake(lambda c, s, gm, p: (c * gm / s[:, None, None]) @ p,
                "the pieces are not centred: ln_post subtracts each vector's mean over its D features "
                "before scaling, so every piece must be centred on its own (the result is off by the mean)"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(1, keepdim=True)) * gm / s[:, None, None]) @ p,
                "centred over the wrong axis (over the pieces): the mean ln_post subtracts is over the "
                "features of each vector, the last axis"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(0, keepdim=True)) * gm / s[:, None, None]) @ p,
                "centred over the wrong axis (over the images): the mean ln_post subtracts is over the "
                "features of each vector, the last axis"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(-1, keepdim=True)) / c.std(-1, unbiased=False, keepdim=True)
                                     * gm) @ p,
                "each piece divided by its own σ: ln_post divides the whole sum by one σ per image (the σ of "
                "the residual stream z = the sum of the pieces, given as sigma), so every piece of an image is "
                "divided by that same σ; a piece's own spread is not what the layer norm sees"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(-1, keepdim=True)) / c.std(-1, keepdim=True) * gm) @ p,
                "each piece divided by its own σ (here its unbiased standard deviation): ln_post divides the whole "
                "sum by one σ per image (the σ of the residual stream z = the sum of the pieces, given as sigma), "
                "so every piece of an image is divided by that same σ"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(-1, keepdim=True)) * gm) @ p,
                "you forgot to divide by sigma: the layer norm's standard deviation, held fixed per image"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(-1, keepdim=True)) * gm * s[:, None, None]) @ p,
                "you multiplied by sigma; divide by it"),
        Mistake(lambda c, s, gm, p: ((c - c.mean(-1, keepdim=True)) / s[:, None, None]) @ p,
                "gamma (ln_post's scale, one weight per feature) is missing"),
        Mistake(lambda c, s, gm, p: (c - c.mean(-1, keepdim=True)) * gm / s[:, None, None],
                "the projection is missing: multiply by proj to go from the residual stream [D] to the "
                "joint space [E]"),
    ),
))


def _reassemble(contributions: Tensor, beta: Tensor, proj: Tensor) -> Tensor:
    """The embedding ``[B, E]``: the direct contributions ``[B, K, E]`` added up, plus the
    constant term ``beta @ proj`` (``ln_post``'s bias through the projection)."""
    return contributions.sum(1) + beta @ proj


def _reassemble_cases() -> list[Case]:
    g = gen(102)

    def make(B: int, K: int, D: int = 6, E: int = 5) -> tuple:
        return randn(g, B, K, E), randn(g, D), randn(g, D, E)

    return [Case("3 images, 4 pieces", make(3, 4)), Case("one image", make(1, 3)),
            Case("one piece", make(2, 1)), Case("E = D", make(2, 3, 5, 5))]


register(Exercise(
    id="1.2", name="reassemble", task="the embedding from the direct contributions and the constant term",
    reference=_reassemble, cases=_reassemble_cases, compare=compare_tensor("the embedding"),
    error_hint="contributions are [B, K, E], beta [D] and proj [D, E]: beta @ proj is one [E] vector",
    mistakes=(
        Mistake(lambda c, b, p: c.sum(1),
                "the constant term is missing: ln_post's bias beta, through proj (beta @ proj), is added "
                "once to every embedding"),
        Mistake(lambda c, b, p: c.sum(1) + c.shape[1] * (b @ p),
                "you added the constant term once per piece; it enters the embedding once"),
        Mistake(lambda c, b, p: c.mean(1) + b @ p,
                "you averaged the pieces; the embedding is their sum"),
        Mistake(lambda c, b, p: c.sum(0) + b @ p,
                "you added up over the images (axis 0); add up the pieces of each image (axis 1)"),
        Mistake(lambda c, b, p: c.sum(1) - b @ p,
                "the constant term has the wrong sign: add beta @ proj"),
    ),
))


def _variance_share(group: Tensor, embeddings: Tensor) -> float:
    """The variance over images of the group's summed terms, summed over dimensions, as a share
    of the embeddings' total variance."""
    total = group.sum(1)
    return float(total.var(0).sum() / embeddings.var(0).sum())


def _variance_share_cases() -> list[Case]:
    g = gen(103)

    def make(N: int, K: int, E: int = 4, cancel: bool = False) -> tuple:
        common = randn(g, N, 1, E)  # terms that write along a shared direction are correlated
        signs = torch.tensor([(-1.0) ** k if cancel else 1.0 for k in range(K)], dtype=torch.float64)
        group = 0.5 * randn(g, N, K, E) + signs[None, :, None] * common
        emb = group.sum(1) + randn(g, N, E)
        return group, emb

    return [Case("6 images, 3 correlated terms", make(6, 3)), Case("two images", make(2, 2)),
            Case("one term", make(5, 1)), Case("two terms that cancel", make(6, 2, cancel=True))]


register(Exercise(
    id="1.3", name="variance_share", task="the variance share of a group of terms",
    reference=_variance_share, cases=_variance_share_cases, compare=compare_scalar("the share"),
    error_hint="group is [N, K, E], embeddings [N, E]; the variance is over images (axis 0)",
    mistakes=(
        Mistake(lambda grp, emb: float(grp.var(0).sum() / emb.var(0).sum()),
                "you added up the shares of the single terms; the group's share is the variance of their "
                "*sum*, which counts the covariances between the terms (correlated terms add more, terms "
                "that cancel add less)"),
        Mistake(lambda grp, emb: float(grp.sum(1).std(0).sum() / emb.std(0).sum()),
                "you compared standard deviations; a variance share compares variances"),
        Mistake(lambda grp, emb: float(grp.sum(1).var(1).sum() / emb.var(1).sum()),
                "you took the variance over the embedding dimensions; take it over the images (axis 0), "
                "then add it up over the dimensions"),
        Mistake(lambda grp, emb: float(grp.sum(1).var(0).sum()),
                "not normalised: divide by the embeddings' total variance to get a share"),
        Mistake(lambda grp, emb: float((grp.sum(1).var(0) / emb.var(0)).mean()),
                "you averaged per-dimension ratios; divide the total variance (summed over dimensions) "
                "of the group by that of the embeddings"),
    ),
))


@dataclass
class ResidualPieces:
    """What exercise 1.1 needs from a real model, for a batch of ``B`` images.

    Attributes:
        pieces: ``[B, K, D]`` what each piece adds to the residual stream at the class token:
            the embedding term (``ln_pre``'s output), then attention and MLP of every block.
        names: the ``K`` piece names (``embed``, ``attn.0``, ``mlp.0``, ...).
        sigma: ``[B]`` the standard deviation ``ln_post`` divides by (its ``eps`` included).
        gamma, beta: ``[D]`` ``ln_post``'s scale and bias; proj: ``[D, E]`` the projection.
    """

    pieces: Tensor
    names: list[str]
    sigma: Tensor
    gamma: Tensor
    beta: Tensor
    proj: Tensor


@torch.no_grad()
def residual_pieces(model: nn.Module, images: Tensor) -> ResidualPieces:
    """The raw residual-stream pieces at the class token, read with the named hook sites
    (``ln_pre``, ``blocks.*.attn_out``, ``blocks.*.mlp_out``, ``ln_post.in``)."""
    from ...engine.decompose import check_model_supported
    from ...engine.hooks import capture

    visual = check_model_supported(model)
    L = len(visual.transformer.resblocks)
    with capture(model, ["ln_pre", "blocks.*.attn_out", "blocks.*.mlp_out", "ln_post.in"]) as cache:
        visual(images)
    parts, names = [cache["ln_pre"][:, 0]], ["embed"]
    for layer in range(L):
        parts += [cache[f"blocks.{layer}.attn_out"][:, 0], cache[f"blocks.{layer}.mlp_out"][:, 0]]
        names += [f"attn.{layer}", f"mlp.{layer}"]
    z = cache["ln_post.in"]
    z = z if z.ndim == 2 else z[:, 0]
    ln = visual.ln_post
    width = z.shape[-1]
    sigma = (z.var(-1, unbiased=False) + ln.eps).sqrt()
    gamma = ln.weight if ln.weight is not None else torch.ones(width, dtype=z.dtype, device=z.device)
    beta = ln.bias if ln.bias is not None else torch.zeros(width, dtype=z.dtype, device=z.device)
    return ResidualPieces(torch.stack(parts, 1), names, sigma, gamma.detach().clone(), beta.detach().clone(),
                          visual.proj.detach().clone())


def last_layer_shares(terms) -> dict[str, list[float]]:  # noqa: ANN001 - a DirectTerms
    """What exercise 1.4 is judged on: for ``k = 1..L``, the variance share of the sum of the last
    ``k`` attention layers, of the first ``k``, and the sum of the last ``k`` single shares."""
    from ...methods.ablation import group_variance_share

    L = terms.n_layers
    single = [group_variance_share(terms, attn=[i]) for i in range(L)]
    return {"last": [group_variance_share(terms, attn=range(L - k, L)) for k in range(1, L + 1)],
            "first": [group_variance_share(terms, attn=range(k)) for k in range(1, L + 1)],
            "single_sum": [float(sum(single[L - k:])) for k in range(1, L + 1)]}


def _first_reaching(values: list[float], level: float = 0.5) -> int | None:
    return next((k for k, v in enumerate(values, 1) if v >= level), None)


def _half_reference(ctx: dict) -> int | None:
    return _first_reaching(last_layer_shares(ctx["terms"])["last"])


def _half_assess(answer, ctx: dict) -> tuple[bool, str]:  # noqa: ANN001
    from ..narrative import num

    sh = last_layer_shares(ctx["terms"])
    L = len(sh["last"])
    k = _first_reaching(sh["last"])
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or int(answer) != answer:
        return False, f"answer with a whole number of layers (1 to {L}), got {answer!r}."
    a = int(answer)
    if not 1 <= a <= L:
        return False, f"the model has {L} attention layers: answer a number from 1 to {L}, got {a}."
    have = (f"the last {a} layers together carry a share of {num(sh['last'][a - 1], 2)}" if a > 1 else
            f"the last layer alone carries a share of {num(sh['last'][0], 2)}")
    if k is None:
        return False, f"no number of last layers reaches half the variance here ({have})."
    if a == k:
        before = (f", the last {k - 1} only {num(sh['last'][k - 2], 2)}" if k > 1 else "")
        return True, (f"yes: {have} of the embedding's variance{before}. A group's share is the variance of the "
                      "layers' *sum*, so it counts their covariances.")
    if a == _first_reaching(sh["first"]) and a != k:
        return False, (f"{a} is how many layers *from the first* it takes (the first {a} carry "
                       f"{num(sh['first'][a - 1], 2)}); the question is about the last layers: {have}.")
    if a == _first_reaching(sh["single_sum"]) and a != k:
        return False, (f"you added up the single layers' shares (the last {a} add up to "
                       f"{num(sh['single_sum'][a - 1], 2)}); a group's share is the variance of the layers' *sum*, "
                       f"which counts their covariances (exercise 1.3): {have}.")
    if a == L - k:
        return False, (f"{a} is how many layers are left *out* ({L} − {k}); the answer counts the last layers kept: "
                       f"{have}.")
    if a > k:
        return False, f"fewer will do: {have}, and the last {k} already carry {num(sh['last'][k - 1], 2)}."
    return False, f"not enough: {have}, less than half."


def _half_cases() -> list[Case]:
    from ...methods.ablation import DirectTerms

    def make(g: torch.Generator, seed: int) -> Case | None:
        N, L, d = 40, 6, 5
        shared = randn(g, N, d)  # the first two layers write along a shared direction
        w = torch.tensor([0.5, 0.5, 0.6, 0.8, 1.0, 1.0], dtype=torch.float64)
        attn = randn(g, N, L, d) * w[None, :, None]
        attn[:, :2] += 0.9 * shared[:, None]
        terms = DirectTerms(embed=0.3 * randn(g, N, d), attn=attn, mlp=0.1 * randn(g, N, L, d), const=randn(g, d))
        sh = last_layer_shares(terms)
        k = _first_reaching(sh["last"])
        answers = {k, _first_reaching(sh["first"]), _first_reaching(sh["single_sum"]), L - k if k else None}
        if k and None not in answers and len(answers) == 4:
            return Case(f"{L} layers (seed {seed})", ({"terms": terms},))
        return None

    return seeded_cases(1040, 200, make)  # each case tells the typical answers apart


register(Exercise(
    id="1.4", name="last_layers_for_half", kind="find",
    task="how many of the last attention layers carry half of the embedding's variance",
    reference=_half_reference, assess=_half_assess, cases=_half_cases,
    mistakes=(
        Mistake(lambda ctx: _first_reaching(last_layer_shares(ctx["terms"])["first"]), "*from the first*"),
        Mistake(lambda ctx: _first_reaching(last_layer_shares(ctx["terms"])["single_sum"]),
                "you added up the single layers' shares"),
        Mistake(lambda ctx: ctx["terms"].n_layers - _half_reference(ctx), "left *out*"),
    ),
))


check_linearise = make_check("1.1")
check_reassemble = make_check("1.2")
check_variance_share = make_check("1.3")
check_last_layers_for_half = make_check("1.4")
