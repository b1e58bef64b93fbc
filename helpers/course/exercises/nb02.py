"""Exercises of notebook 2 (mean ablation): reference solutions, test cases, typical mistakes, checks."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .check import Case, Exercise, Mistake, compare_scalar, compare_tensor, gen, make_check, rand, randn, register

__all__ = ["check_mean_ablate", "check_zero_shot_accuracy"]


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


check_mean_ablate = make_check("2.1")
check_zero_shot_accuracy = make_check("2.2")
