"""Exercises of notebook 7 (second-order effects of neurons): reference solutions, test cases,
typical mistakes, checks. 7.1 (one neuron's effect from its pieces) and 7.4 (find the neuron that
pushes class A toward class B) are on the core path; 7.2 (neurons about a value) and 7.3 (the
rank-1 ablation) go further."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .check import Case, Exercise, Mistake, compare_tensor, make_check, register
from .seeds import gen, rand, randn, seeded_cases

__all__ = ["check_neuron_effect", "check_neurons_about", "check_rank1_ablate", "check_push_neuron", "push_scores"]


# ----------------------------------------------------------------------------------------------
# 7.1 one neuron's second-order effect from its pieces
# ----------------------------------------------------------------------------------------------


def _neuron_effect(acts: Tensor, attention: Tensor, sigma: Tensor, sigma_post: Tensor, u: Tensor) -> Tensor:
    """``phi[b] = sum_j (sum_m attention[b, j, m] acts[b, m] / sigma[b, j, m]) / sigma_post[b] u[j]``."""
    s = torch.einsum("bjt,bt->bj", attention / sigma, acts) / sigma_post[:, None]  # [B, J]
    return s @ u


def _effect_cases() -> list[Case]:
    def case(seed: int, B: int, J: int, T: int, d: int) -> tuple:
        g = gen(seed)
        acts = randn(g, B, T)
        attention = torch.softmax(2 * randn(g, B, J, T), -1)  # each head's class-token row sums to 1
        sigma = 0.5 + 2 * rand(g, B, J, T)  # one scale per token, differing across tokens and layers
        sigma_post = 1 + 3 * rand(g, B)
        u = randn(g, J, d)
        return acts, attention, sigma, sigma_post, u

    return [Case("3 images, 6 later heads, 5 tokens", case(701, 3, 6, 5, 4)),
            Case("one image, 2 heads, 10 tokens", case(702, 1, 2, 10, 3)),
            Case("4 images, 12 heads, 50 tokens", case(703, 4, 12, 50, 8))]


def _eff_no_post(acts, attention, sigma, sigma_post, u):  # noqa: ANN001, ANN202
    return torch.einsum("bjt,bt->bj", attention / sigma, acts) @ u


def _eff_no_ln1(acts, attention, sigma, sigma_post, u):  # noqa: ANN001, ANN202
    return (torch.einsum("bjt,bt->bj", attention, acts) / sigma_post[:, None]) @ u


def _eff_mean_sigma(acts, attention, sigma, sigma_post, u):  # noqa: ANN001, ANN202
    return (torch.einsum("bjt,bt->bj", attention, acts) / sigma.mean(-1) / sigma_post[:, None]) @ u


def _eff_no_cls(acts, attention, sigma, sigma_post, u):  # noqa: ANN001, ANN202
    s = torch.einsum("bjt,bt->bj", (attention / sigma)[..., 1:], acts[:, 1:]) / sigma_post[:, None]
    return s @ u


register(Exercise(
    id="7.1", name="neuron_effect", task="one neuron's second-order effect from its activations, the later "
                                        "heads' attention and the frozen layer-norm scales",
    reference=_neuron_effect, cases=_effect_cases, compare=compare_tensor("the effect"),
    error_hint="acts is [B, T], attention and sigma [B, J, T], sigma_post [B], u [J, d']: sum over the tokens "
               "first (torch.einsum('bjt,bt->bj', ...)), then combine the J coefficients with u",
    mistakes=(
        Mistake(_eff_no_post, "ln_post's scale is missing: divide every image's coefficients by its sigma_post "
                              "(the final layer norm's scale, frozen like the others)"),
        Mistake(_eff_no_ln1, "ln_1's scale is missing: a later head reads the neuron's write only after that "
                             "layer's ln_1, which divides each token by its own sigma"),
        Mistake(_eff_mean_sigma, "you divided by the mean sigma over the tokens; ln_1 scales each token by its "
                                 "own sigma, so divide token by token before summing over the tokens"),
        Mistake(_eff_no_cls, "the sum runs over every token, the class token included: the neuron writes at "
                             "the class token too, and the class token attends to itself"),
    ),
))


# ----------------------------------------------------------------------------------------------
# 7.2 find the neurons about a value
# ----------------------------------------------------------------------------------------------


def _neurons_about(top_index: Tensor, labels: Tensor, value: int, min_lift: float) -> list[int]:
    """The neurons (rows of ``top_index``) whose top images carry ``value`` at least ``min_lift``
    times as often as the whole dataset does."""
    from ...methods.second_order import top_image_lift

    lift = top_image_lift(top_index, labels, [value] * len(top_index))
    return [k for k in range(len(lift)) if bool(lift[k] >= min_lift)]


def _about_cases() -> list[Case]:
    def t(x: Any) -> Tensor:
        return torch.as_tensor(np.asarray(x), dtype=torch.long)

    # eight images, a quarter of them with value 2; two top images for each of five neurons: lifts 4, 2, 0, 0, 2
    labels = t([0, 0, 1, 1, 0, 2, 2, 0])
    top = t([[5, 6], [5, 0], [2, 0], [0, 1], [6, 7]])
    g = np.random.default_rng(721)
    labels2 = t(g.integers(0, 4, size=60))
    top2 = t(np.stack([g.choice(60, size=6, replace=False) for _ in range(25)]))
    labels3 = t([2] * 30 + [0] * 10)  # a common value: base rate 3/4, so a lift is at most 4/3
    top3 = t(np.stack([g.choice(40, size=5, replace=False) for _ in range(12)]))
    return [Case("five neurons, two top images each", (top, labels, 2, 1.5)),
            Case("the same, two neurons exactly at min_lift", (top, labels, 2, 2.0)),
            Case("25 neurons, 60 images", (top2, labels2, 3, 1.5)),
            Case("a common value", (top3, labels3, 2, 1.05))]


def _about_share(top_index, labels, value, min_lift):  # noqa: ANN001, ANN202
    share = (labels[top_index] == value).double().mean(1)
    return [k for k in range(len(share)) if share[k] >= min_lift]


def _about_top_base(top_index, labels, value, min_lift):  # noqa: ANN001, ANN202
    hits = labels[top_index] == value
    lift = hits.double().mean(1) / hits.double().mean()
    return [k for k in range(len(lift)) if lift[k] >= min_lift]


def _about_strict(top_index, labels, value, min_lift):  # noqa: ANN001, ANN202
    lift = (labels[top_index] == value).double().mean(1) / (labels == value).double().mean()
    return [k for k in range(len(lift)) if lift[k] > min_lift]


def _about_positions(top_index, labels, value, min_lift):  # noqa: ANN001, ANN202
    lift = (top_index == value).double().mean(1) / (labels == value).double().mean()
    return [k for k in range(len(lift)) if lift[k] >= min_lift]


def _neuron_list_compare(got: Any, expected: list[int]) -> str | None:
    if isinstance(got, Tensor):
        got = got.reshape(-1).tolist()
    if isinstance(got, (str, bytes)) or not hasattr(got, "__iter__"):
        return f"return a list of neuron indices; got a {type(got).__name__}"
    items = list(got)
    if any(isinstance(x, (bool, np.bool_)) for x in items):
        return "return the indices of the neurons, not one True/False per neuron"
    try:
        found = [int(x) for x in items]
    except (TypeError, ValueError):
        return f"return neuron indices (ints); got {items[:3]!r}"
    if len(set(found)) != len(found):
        return "a neuron is listed twice"
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append("missing neurons " + ", ".join(map(str, missing)))
    if extra:
        parts.append("should not include neurons " + ", ".join(map(str, extra)))
    return "; ".join(parts)


register(Exercise(
    id="7.2", name="neurons_about", task="the neurons whose top images carry a value far more often than the "
                                        "dataset does",
    reference=_neurons_about, cases=_about_cases, compare=_neuron_list_compare,
    error_hint="top_index is [K, k] (positions of each neuron's top images in the dataset), labels [N]: "
               "labels[top_index] gives the labels of every neuron's top images",
    mistakes=(
        Mistake(_about_share, "you compared the share among the top images with min_lift directly; divide it by "
                              "the value's base rate (its share of all images) first, so that common values do "
                              "not count as found"),
        Mistake(_about_strict, "a neuron whose lift equals min_lift counts too (>=, not >)"),
        Mistake(_about_top_base, "the base rate is the value's share of *all* images (labels), not of the top "
                                 "images: the top images are what is being compared with it"),
        Mistake(_about_positions, "top_index holds the positions of the top images in the dataset; look up their "
                                  "labels (labels[top_index]) before comparing with the value"),
    ),
))


# ----------------------------------------------------------------------------------------------
# 7.3 the rank-1 ablation
# ----------------------------------------------------------------------------------------------


def _rank1_ablate(effects: Tensor, mean: Tensor, directions: Tensor, embedding: Tensor) -> Tensor:
    """``e - sum_k (phi_k - mu_k) + sum_k ((phi_k - mu_k) . d_k) d_k``."""
    centred = effects - mean[None]  # [B, K, d']
    proj = (centred * directions[None]).sum(-1)  # [B, K]
    return embedding - centred.sum(1) + torch.einsum("bk,kd->bd", proj, directions)


def _rank1_cases() -> list[Case]:
    def case(seed: int, B: int, K: int, d: int) -> tuple:
        g = gen(seed)
        mean = randn(g, K, d)
        effects = mean[None] + 0.5 * randn(g, B, K, d)
        directions = torch.nn.functional.normalize(randn(g, K, d), dim=-1)
        embedding = randn(g, B, d) + effects.sum(1)
        return effects, mean, directions, embedding

    return [Case("2 images, 3 neurons", case(711, 2, 3, 5)),
            Case("one image, 8 neurons", case(712, 1, 8, 6)),
            Case("5 images, 20 neurons", case(713, 5, 20, 12))]


def _r1_uncentred(effects, mean, directions, embedding):  # noqa: ANN001, ANN202
    centred = effects - mean[None]
    proj = (effects * directions[None]).sum(-1)
    return embedding - centred.sum(1) + torch.einsum("bk,kd->bd", proj, directions)


def _r1_zero(effects, mean, directions, embedding):  # noqa: ANN001, ANN202
    proj = ((effects - mean[None]) * directions[None]).sum(-1)
    return embedding - effects.sum(1) + torch.einsum("bk,kd->bd", proj, directions)


def _r1_not_removed(effects, mean, directions, embedding):  # noqa: ANN001, ANN202
    proj = ((effects - mean[None]) * directions[None]).sum(-1)
    return embedding + torch.einsum("bk,kd->bd", proj, directions)


def _r1_only_projection(effects, mean, directions, embedding):  # noqa: ANN001, ANN202
    proj = ((effects - mean[None]) * directions[None]).sum(-1)
    return embedding - effects.sum(1) + mean.sum(0) - torch.einsum("bk,kd->bd", proj, directions)


register(Exercise(
    id="7.3", name="rank1_ablate", task="the embedding with every neuron's effect replaced by its mean plus its "
                                       "projection on the neuron's direction",
    reference=_rank1_ablate, cases=_rank1_cases, compare=compare_tensor("the embedding"),
    error_hint="effects is [B, K, d'], mean and directions [K, d'], embedding [B, d']: the projection of each "
               "centred effect is a [B, K] tensor, and each one multiplies its own direction",
    mistakes=(
        Mistake(_r1_uncentred, "you projected the raw effect; project the centred effect phi - mu: the "
                               "direction describes how a neuron's effect varies around its mean"),
        Mistake(_r1_zero, "you removed the effects entirely (zero ablation); the rank-1 ablation starts from "
                          "the mean ablation, which keeps each neuron's mean effect mu"),
        Mistake(_r1_not_removed, "you added the projections without first removing the effects' deviations "
                                 "from their means: subtract sum_k (phi_k - mu_k), then add the projections back"),
        Mistake(_r1_only_projection, "you subtracted the projections; the rank-1 ablation keeps the part of "
                                     "each effect along its direction, so add it back"),
    ),
))


# ----------------------------------------------------------------------------------------------
# 7.4 find the neuron that pushes class A toward class B
# ----------------------------------------------------------------------------------------------


def push_scores(ctx: dict) -> dict[str, Tensor]:
    """What exercise 7.4 is judged on, one value per row of ``ctx["directions"]`` (a
    :class:`~helpers.methods.second_order.NeuronDirections`), with ``t_A = ctx["class_a"]`` and
    ``t_B = ctx["class_b"]``:

    * ``"push"``: ``d_k . (t_B - t_A)``, how far the neuron moves an image from A toward B per
      unit of its effect along its direction (positive on its top images, where the effect moves
      along ``+d_k``);
    * ``"toward_b"``: ``d_k . t_B`` (B's text alone);
    * ``"mean"``: ``mu_k . (t_B - t_A)``, the neuron's *mean* effect, the same on every image;
    * ``"spread"``: the neuron's significance threshold (how much its effect varies at all)."""
    d = ctx["directions"]
    a, b = (torch.as_tensor(ctx[k]).detach().reshape(-1).double().cpu() for k in ("class_a", "class_b"))
    vectors, mean = d.vectors.detach().double().cpu(), d.mean.detach().double().cpu()
    return {"push": vectors @ (b - a), "toward_b": vectors @ b, "mean": mean @ (b - a),
            "spread": d.threshold.detach().double().cpu()}


def _neuron_label(answer: Any) -> str | None:
    """``"L4.N12"`` from a label (``"L4.N12"``, ``"l4.n12"``, ``"L4 N12"``) or a ``(layer, neuron)`` pair."""
    import re

    if isinstance(answer, str):
        m = re.fullmatch(r"\s*L(\d+)\s*[.,: ]?\s*N(\d+)\s*", answer, re.I)
        return f"L{int(m.group(1))}.N{int(m.group(2))}" if m else None
    if isinstance(answer, (tuple, list)) and len(answer) == 2 and all(
            isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in answer):
        return f"L{int(answer[0])}.N{int(answer[1])}"
    return None


def _push_reference(ctx: dict) -> str:
    return ctx["directions"].labels()[int(push_scores(ctx)["push"].argmax())]


def _push_assess(answer: Any, ctx: dict) -> tuple[bool, str]:
    from ..narrative import num

    a_name, b_name = ctx.get("names", ("A", "B"))
    labels = ctx["directions"].labels()
    scores = push_scores(ctx)
    push = scores["push"]
    if isinstance(answer, (int, np.integer)) and not isinstance(answer, bool):
        return False, (f"answer with the neuron's name, such as {labels[0]!r} (the labels of the rows), not a row "
                       f"number: row {int(answer)} is " + (f"{labels[int(answer)]}." if 0 <= int(answer) < len(labels)
                                                          else "not a row of the directions."))
    label = _neuron_label(answer)
    if label is None:
        return False, f"answer with one neuron's name, such as {labels[0]!r}, or a (layer, neuron) pair; got {answer!r}."
    if label not in labels:
        return False, f"{label} is not among the {len(labels)} neurons whose directions were computed."
    r, best = labels.index(label), int(push.argmax())
    rank = 1 + int((push > push[r]).sum())
    words = ctx.get("words")
    said = f"{label} scores {num(float(push[r]))} on t_{b_name} − t_{a_name} (rank {rank} of {len(labels)})"
    best_said = f"the largest push is {labels[best]}'s, {num(float(push[best]))}"
    if float(push[r]) >= float(push[best]) - 1e-9:
        about = f"; its words: {words[r]}" if words else ""
        return True, (f"yes: {said}. On the images where it is significant its effect moves along its direction, so "
                      f"it moves an image of {a_name} toward {b_name} more than any other neuron{about}.")
    if r == int(scores["toward_b"].argmax()):
        return False, (f"you ranked by the alignment with {b_name}'s text alone; what moves an image from {a_name} to "
                       f"{b_name} is the difference t_{b_name} − t_{a_name} (a neuron aligned with both texts moves "
                       f"neither's score ahead): {said}; {best_said}.")
    if r == int(push.argmin()):
        return False, (f"that neuron pushes toward {a_name}: the push from {a_name} to {b_name} is along "
                       f"t_{b_name} − t_{a_name}, not t_{a_name} − t_{b_name}, and {said}; {best_said}.")
    if r == int(scores["mean"].argmax()):
        return False, (f"you scored the neuron's mean effect; the mean is the same for every image (mean ablation "
                       f"keeps it), so it moves no image toward {b_name} more than another: score the direction, how "
                       f"the effect varies. {said}; {best_said}.")
    if r == int(scores["spread"].argmax()):
        return False, (f"you picked the neuron whose effect varies most (its threshold); the question is which one "
                       f"pushes {a_name} toward {b_name}: {said}; {best_said}.")
    return False, f"not the largest push: {said}; {best_said}."


def _push_cases() -> list[Case]:
    from ...methods.second_order import NeuronDirections

    def make(g: torch.Generator, seed: int) -> Case | None:
        K, d = 24, 6
        vectors = torch.nn.functional.normalize(randn(g, K, d), dim=-1)
        t = torch.nn.functional.normalize(randn(g, 2, d), dim=-1)
        dirs = NeuronDirections(layer=torch.as_tensor([3 + k // 8 for k in range(K)]),
                                neuron=torch.as_tensor([(37 * k) % 101 for k in range(K)]), vectors=vectors,
                                threshold=0.1 + rand(g, K), mean=0.3 * randn(g, K, d), normalized=True)
        ctx = {"directions": dirs, "class_a": t[0], "class_b": t[1], "names": ("circle", "square"),
               "words": [f"word {k}" for k in range(K)]}
        sc = push_scores(ctx)
        rows = {int(sc["push"].argmax()), int(sc["toward_b"].argmax()), int(sc["push"].argmin()),
                int(sc["mean"].argmax()), int(sc["spread"].argmax())}
        return Case(f"{K} neurons (seed {seed})", (ctx,)) if len(rows) == 5 else None

    return seeded_cases(740, 200, make)  # each case tells the typical answers apart


def _push_by(key: str, pick: str = "argmax") -> Any:
    def answer(ctx: dict) -> str:
        return ctx["directions"].labels()[int(getattr(push_scores(ctx)[key], pick)())]

    return answer


register(Exercise(
    id="7.4", name="push_neuron", kind="find",
    task="the neuron that pushes an image of class A most toward class B",
    reference=_push_reference, assess=_push_assess, cases=_push_cases,
    mistakes=(
        Mistake(_push_by("toward_b"), "you ranked by the alignment with"),
        Mistake(_push_by("push", "argmin"), "that neuron pushes toward"),
        Mistake(_push_by("mean"), "you scored the neuron's mean effect"),
        Mistake(_push_by("spread"), "whose effect varies most"),
    ),
))


check_neuron_effect = make_check("7.1")
check_neurons_about = make_check("7.2")
check_rank1_ablate = make_check("7.3")
check_push_neuron = make_check("7.4")
