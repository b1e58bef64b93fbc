"""Exercises of notebook 2 (mean ablation): reference solutions, test cases, typical mistakes, checks."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .check import Case, Exercise, Mistake, compare_scalar, compare_tensor, make_check, register
from .seeds import gen, rand, randn, seeded_cases

__all__ = ["check_mean_ablate", "check_zero_shot_accuracy", "check_layers_to_keep", "keep_curve", "KEEP_WITHIN"]

KEEP_WITHIN = 0.05
"""Exercise 2.3's rule: the accuracy may fall at most this much (5 points) below the baseline."""


def _mean_ablate(components: Tensor, ablate: Sequence[int]) -> Tensor:
    """Embeddings ``[N, d]``: the components ``[N, C, d]`` added up, the ones in ``ablate``
    replaced by their mean over the ``N`` images."""
    idx = list(ablate)
    out = components.sum(1)
    if idx:
        chosen = components[:, idx]
        out = out + (chosen.mean(0, keepdim=True) - chosen).sum(1)
    return out


def _mean_ablate_cases() -> list[Case]:
    g = gen(201)

    def comps(N: int, C: int = 6, d: int = 4) -> Tensor:
        return randn(g, N, C, d) + 3.0 * randn(g, 1, C, d)  # every component has its own mean

    return [Case("5 images, ablate components 1 and 3", (comps(5), [1, 3])),
            Case("ablate nothing", (comps(4), [])),
            Case("ablate one component", (comps(4), [0])),
            Case("ablate everything", (comps(3), list(range(6)))),
            Case("one image", (comps(1), [2, 4]))]


def _all_but(c: Tensor, idx: Sequence[int]) -> list[int]:
    return [i for i in range(c.shape[1]) if i not in set(idx)]


def _ma_not_summed(c: Tensor, idx: Sequence[int]) -> Tensor:
    out = c.clone()
    idx = list(idx)
    if idx:
        out[:, idx] = c[:, idx].mean(0, keepdim=True)
    return out


register(Exercise(
    id="2.1", name="mean_ablate", task="embeddings with chosen components replaced by their dataset mean",
    reference=_mean_ablate, cases=_mean_ablate_cases, compare=compare_tensor("the embeddings"),
    error_hint="components are [N, C, d] (images, components, dimensions); ablate is a list of component "
               "indices; the mean is over images (axis 0, keepdim=True)",
    mistakes=(
        Mistake(lambda c, idx: c.sum(1) - c[:, list(idx)].sum(1),
                "you removed the chosen components (zero ablation); mean ablation replaces each one by its "
                "average over the images, so it still adds that average"),
        Mistake(lambda c, idx: _mean_ablate(c, _all_but(c, idx)),
                "you ablated every component except the chosen ones"),
        Mistake(lambda c, idx: c.sum(1) + (c[:, list(idx)].mean(1, keepdim=True) - c[:, list(idx)]).sum(1),
                "the mean is over the wrong axis (over the components); take it over the images (axis 0)"),
        Mistake(lambda c, idx: c.sum(1) + (c[:, list(idx)].mean(-1, keepdim=True) - c[:, list(idx)]).sum(1),
                "the mean is over the wrong axis (over the dimensions); take it over the images (axis 0)"),
        Mistake(_ma_not_summed,
                "you returned the components; add them up over axis 1 to get one embedding per image"),
        Mistake(lambda c, idx: _mean_ablate(c, range(c.shape[1])),
                "you mean-ablated every component, so every image gets the same embedding"),
    ),
))


def _zero_shot_accuracy(embeddings: Tensor, classifier: Tensor, labels: Tensor) -> float:
    """Top-1 zero-shot accuracy: the class of highest cosine similarity, against the labels."""
    from ...methods.ablation import accuracy

    return accuracy(embeddings, classifier, labels)


def _accuracy_cases() -> list[Case]:
    g = gen(202)

    def make(N: int, C: int = 4, d: int = 5, right: bool = False) -> tuple:
        cls = F.normalize(randn(g, C, d), dim=-1)
        labels = torch.randint(0, C, (N,), generator=g)
        emb = (0.5 + 3.0 * rand(g, N, 1)) * randn(g, N, d)
        if right:
            emb = (1 + rand(g, N, 1)) * cls[labels]
        return emb, cls, labels

    cases = []
    for seed in range(50):  # a first case whose accuracy is neither 0, 1/2 nor 1
        emb, cls, labels = make(9)
        acc = _zero_shot_accuracy(emb, cls, labels)
        if 0.1 < acc < 0.9 and abs(acc - 0.5) > 0.05:
            cases.append(Case("9 images, 4 classes", (emb, cls, labels)))
            break
    cases += [Case("every image right", make(6, right=True)), Case("one image", make(1)),
              Case("two classes", make(8, C=2))]
    return cases


register(Exercise(
    id="2.2", name="zero_shot_accuracy", task="top-1 zero-shot accuracy of embeddings against class embeddings",
    reference=_zero_shot_accuracy, cases=_accuracy_cases, compare=compare_scalar("the accuracy"),
    error_hint="embeddings are [N, d], classifier [C, d] (one row per class), labels [N]: the logits are "
               "[N, C] and the prediction is the argmax over classes (axis 1)",
    mistakes=(
        Mistake(lambda e, c, y: float(((F.normalize(e, dim=-1) @ c.T).argmax(1) == y).sum()),
                "you returned the number of correct images; the accuracy is that number divided by the "
                "number of images"),
        Mistake(lambda e, c, y: 1.0 - float(((e @ c.T).argmax(1) == y).double().mean()),
                "you returned the error rate (the share of wrong images)"),
        Mistake(lambda e, c, y: float(((e @ c.T).argmin(1) == y).double().mean()),
                "you picked the least similar class (argmin); the prediction is the most similar class"),
    ),
))


def keep_curve(terms, classifier: Tensor, labels: Tensor) -> dict:  # noqa: ANN001 - DirectTerms or StreamedTerms
    """What exercise 2.3 is judged on: the baseline accuracy and, for ``k = 1..L``, the accuracy
    when only the last ``k`` attention layers keep their direct terms (everything else that
    writes directly, the embedding term, every MLP and the earlier attention layers, is
    mean-ablated), and when only the earlier attention layers are ablated."""
    from ...methods.ablation import ablation_accuracies

    L = terms.n_layers
    specs = ([{}] + [dict(embed=True, mlps=range(L), attn=range(L - k)) for k in range(1, L + 1)]
             + [dict(attn=range(L - k)) for k in range(1, L + 1)])
    accs = ablation_accuracies(terms, specs, classifier, labels)  # one pass over terms streamed from disk
    return {"baseline": accs[0], "keep_last": accs[1:L + 1], "attn_only": accs[L + 1:]}


def _fewest(curve: list[float], baseline: float) -> int | None:
    return next((k for k, a in enumerate(curve, 1) if baseline - a <= KEEP_WITHIN + 1e-12), None)


def _keep_curve(ctx: dict) -> dict:
    if "_curve" not in ctx:  # computed once per check
        ctx["_curve"] = keep_curve(ctx["terms"], ctx["classifier"], ctx["labels"])
    return ctx["_curve"]


def _keep_reference(ctx: dict) -> int | None:
    c = _keep_curve(ctx)
    return _fewest(c["keep_last"], c["baseline"])


def _keep_assess(answer, ctx: dict) -> tuple[bool, str]:  # noqa: ANN001
    from ..narrative import pct, pts

    c = _keep_curve(ctx)
    base, curve = c["baseline"], c["keep_last"]
    L = len(curve)
    k = _fewest(curve, base)
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or int(answer) != answer:
        return False, f"answer with a whole number of attention layers (1 to {L}), got {answer!r}."
    a = int(answer)
    if not 1 <= a <= L:
        return False, f"the model has {L} attention layers: answer a number from 1 to {L}, got {a}."
    which = f"the last {a} attention layers" if a > 1 else "only the last attention layer"
    kept = (f"keeping {which} (everything else that writes directly mean-ablated) gives {pct(curve[a - 1])}, "
            f"{pts(curve[a - 1] - base)} from the baseline {pct(base)}")
    if a == k:
        fewer = (f"; keeping {k - 1} gives {pct(curve[k - 2])} ({pts(curve[k - 2] - base)})" if k > 1 else "")
        return True, (f"yes: {kept}{fewer}. The prediction reads its direct input from these layers alone; "
                      "everything before them works only through them.")
    if k is not None and a == L - k:
        return False, (f"{a} is how many attention layers are *ablated* ({L} − {k}); the question asks how many "
                       f"of the last layers to keep: {kept}.")
    ka = _fewest(c["attn_only"], base)
    if a == ka and ka != k:
        return False, (f"with only the earlier attention layers ablated, {a} would do; but the MLPs and the "
                       f"embedding term write directly too and must be mean-ablated as well: {kept}.")
    if a == 4 and k != 4:
        return False, (f"4 is the paper's number for its large CLIPs; this model's own figures decide: {kept}.")
    if k is None:
        return False, f"no number of kept layers stays within {pts(KEEP_WITHIN)} here: {kept}."
    if a > k:
        return False, f"fewer will do: {kept}, and keeping {k} gives {pct(curve[k - 1])}."
    return False, f"not enough: {kept}, more than {pts(KEEP_WITHIN).lstrip('+')} below the baseline."


def _keep_cases() -> list[Case]:
    from ...methods.ablation import DirectTerms

    def make(g: torch.Generator, seed: int) -> Case | None:
        N, L, C, d = 80, 6, 4, 6
        dirs = F.normalize(randn(g, C, d), dim=-1)
        labels = torch.randint(0, C, (N,), generator=g)
        s = torch.tensor([0.2, 0.2, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
        attn = s[None, :, None] * dirs[labels][:, None] + 0.45 * randn(g, N, L, d)
        mlp = 0.35 * dirs[labels][:, None].expand(N, L, d) + 0.3 * randn(g, N, L, d)
        terms = DirectTerms(embed=0.2 * randn(g, N, d), attn=attn, mlp=mlp, const=0.1 * randn(g, d))
        c = keep_curve(terms, dirs, labels)
        k = _fewest(c["keep_last"], c["baseline"])
        ka = _fewest(c["attn_only"], c["baseline"])
        if k is None or ka is None or k >= L or c["baseline"] < 0.8 or len({k, L - k, ka, 4}) < 4:
            return None
        return Case(f"{L} layers, {N} images (seed {seed})", ({"terms": terms, "classifier": dirs, "labels": labels},))

    return seeded_cases(2300, 300, make)  # each case tells the typical answers apart


register(Exercise(
    id="2.3", name="layers_to_keep", kind="find",
    task="the fewest last attention layers to keep, everything else mean-ablated, within 5 points of the baseline",
    reference=_keep_reference, assess=_keep_assess, cases=_keep_cases,
    mistakes=(
        Mistake(lambda ctx: ctx["terms"].n_layers - _keep_reference(ctx), "*ablated*"),
        Mistake(lambda ctx: _fewest(_keep_curve(ctx)["attn_only"], _keep_curve(ctx)["baseline"]),
                "the MLPs and the embedding term write directly too"),
        Mistake(lambda ctx: 4, "4 is the paper's number"),
    ),
))


check_mean_ablate = make_check("2.1")
check_zero_shot_accuracy = make_check("2.2")
check_layers_to_keep = make_check("2.3")
