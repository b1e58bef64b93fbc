"""The exercises: every solution passes its check, typical wrong answers get the right words,
stubs fall back to the reference, the references agree with the helpers, and both builds of
the notebooks are consistent (the learner build is executed with its stubs in place)."""

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _small import SMALL_RUNS

from helpers.course import exercises as exm
from helpers.course.exercises import EXERCISES, Checked, check, check_function, nb01, nb04, run_check

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


build_nb = _builder()


def _namespace(src, version):
    """Run every exercise cell of one notebook (``"solution"`` or ``"stub"``) in one namespace,
    as the notebook would (4.2's solution calls 4.1's function)."""
    ns = {"torch": torch}
    for ex in build_nb.exercises(src):
        exec(compile(getattr(ex, version), f"<exercise {ex.number}>", "exec"), ns)
    return ns


# ----------------------------------------------------------------------------------------------
# The notebooks' exercises and the registry agree
# ----------------------------------------------------------------------------------------------


def _implement(number):
    return EXERCISES[number].kind == "implement"


def test_notebook_exercises_match_the_registry():
    found = {ex.number: ex.function for src in SOURCES for ex in build_nb.exercises(src)}
    mine = {k: v.name for k, v in EXERCISES.items() if int(k.split(".")[0]) in {int(s.stem[:2]) for s in SOURCES}}
    assert found == mine
    assert len(found) >= 21
    per_notebook = {}
    for number in found:
        per_notebook.setdefault(number.split(".")[0], []).append(number)
    assert set(per_notebook) == {str(int(s.stem[:2])) for s in SOURCES}
    assert all(3 <= len(v) <= 4 for v in per_notebook.values()), per_notebook
    for src in SOURCES:  # the kind in the notebook is the kind in the registry
        for ex in build_nb.exercises(src):
            assert ex.kind == EXERCISES[ex.number].kind, ex.number
            assert None not in (ex.difficulty, ex.importance, ex.minutes) and len(ex.hints) == 2, ex.number


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem[:2])
def test_every_core_path_implements_and_finds(src):
    """Each notebook's core path has an exercise that implements a step from the idea in words (its
    formula only in the hints, not above the cell) and one that finds or decides something."""
    t = build_nb.notebook_timing(src)
    kinds = {EXERCISES[n].kind for n in t.core.exercises}
    assert "implement" in kinds and kinds & {"find", "decide"}, (src.stem, kinds)
    nb = build_nb.build(src, "o/r", "learner")
    for i, cell in enumerate(nb.cells):
        if "exercise" not in cell.metadata.get("tags", []):
            continue
        number = re.search(r"Exercise (\d+\.\d+)", cell.source).group(1)
        if not _implement(number):
            continue
        above = [c.source for c in nb.cells[max(0, i - 6):i] if c.cell_type == "markdown"
                 and not set(c.metadata.get("tags", [])) & {"hint", "exercise-badge"}]
        sol = next(ex for ex in build_nb.exercises(src) if ex.number == number)
        body = [ln.strip() for ln in sol.solution.splitlines()[1:] if ln.strip() and not ln.strip().startswith(("#", '"""'))]
        code = [ln for ln in body if not ln.startswith(("return", "out", "for", "if", "def"))] or body
        for text in above:  # no solution line is given away above the exercise
            assert not any(ln in text for ln in code if len(ln) > 12), (number, text[:200])


def test_every_check_function_is_exported():
    for ex in EXERCISES.values():
        fn = check_function(ex.id)
        assert f"check_{ex.name}" in exm.MODULES[int(ex.id.split(".")[0])].__all__
        assert fn.__name__ == f"check_{ex.name}" and ex.id in fn.__doc__


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem[:2])
def test_every_solution_passes_its_check(src, capsys):
    """Implement exercises: the notebook's solution passes on the test cases. (A find or decide
    exercise's solution reads the notebook's data: it is checked when the notebook runs.)"""
    ns = _namespace(src, "solution")
    implement = [ex for ex in build_nb.exercises(src) if _implement(ex.number)]
    for ex in implement:
        checked = exm.run_check(ex.number, ns[ex.function])
        assert checked.passed, checked.message
        assert checked.function is ns[ex.function]  # the learner's function is kept
        assert checked.status == "passed" and "correct on all" in checked.message
        assert checked.yours == f"your {ex.function}"
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == len(implement) and all(line.startswith("\u2714 PASSED") for line in printed)


def test_every_reference_answer_is_accepted_on_its_contexts():
    for ex in EXERCISES.values():
        if ex.kind == "implement":
            continue
        for case in ex.cases():
            ctx = dict(case.args[0])
            checked = run_check(ex.id, lambda ctx=ctx: ex.reference(ctx), quiet=True, **ctx)
            assert checked.passed, (ex.id, case.name, checked.message)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem[:2])
def test_a_stub_is_not_done_and_falls_back_to_the_reference(src):
    ns = _namespace(src, "stub")
    for ex in build_nb.exercises(src):
        reg = EXERCISES[ex.number]
        if reg.kind == "implement":
            with pytest.raises(NotImplementedError, match=rf"Exercise {re.escape(ex.number)} not done yet"):
                ns[ex.function](*reg.cases()[0].args)
            checked = run_check(ex.number, ns[ex.function], quiet=True)
            assert "not done yet" in checked.message and "reference solution" in checked.message
            assert checked.function is reg.reference
            case = reg.cases()[0]
            assert reg.compare(checked(*case.args), reg.reference(*case.args)) is None
        else:
            with pytest.raises(NotImplementedError, match=rf"Exercise {re.escape(ex.number)} not done yet"):
                ns[ex.function]()
            ctx = dict(reg.cases()[0].args[0])
            checked = run_check(ex.number, ns[ex.function], quiet=True, **ctx)
            assert "not done yet" in checked.message and "answer the data supports" in checked.message
            assert checked() == reg.reference(ctx)  # later cells get the supported answer
        assert checked.status == "not done" and not checked.passed
        assert checked.yours.startswith(f"the reference {ex.function} (standing in for yours")


def _diagnoses(ex, mistake):
    """The verdicts a learner making ``mistake`` gets: one for an implement exercise, one per
    context for a find or decide exercise (where the mistake's answer differs from the reference)."""
    if ex.kind == "implement":
        return [run_check(ex.id, mistake.fn, quiet=True)]
    out = []
    for case in ex.cases():
        ctx = dict(case.args[0])
        answer = mistake.fn(ctx)
        if answer != ex.reference(ctx):
            out.append(run_check(ex.id, lambda a=answer: a, quiet=True, **ctx))
    return out


def test_every_exercise_has_a_catalogue_of_at_least_three_mistakes():
    for ex in EXERCISES.values():
        assert len(ex.mistakes) >= 3, (ex.id, len(ex.mistakes))


def test_every_catalogued_mistake_fails_with_its_own_words():
    """Each catalogued mistake differs from the reference on at least one case, and a learner who
    makes it gets its message, which names the concept (the cases really tell the mistakes apart)."""
    for ex in EXERCISES.values():
        for mistake in ex.mistakes:
            verdicts = _diagnoses(ex, mistake)
            assert verdicts, (ex.id, mistake.message)
            assert any(v.status == "wrong" and mistake.message in v.message for v in verdicts), \
                (ex.id, mistake.message, [v.message for v in verdicts])


def test_the_cases_tell_the_catalogued_mistakes_apart():
    """No two mistakes of an implement exercise give the same result on every case (else one of
    them could never be diagnosed)."""
    for ex in EXERCISES.values():
        if ex.kind != "implement":
            continue
        cases = ex.cases()
        for i, a in enumerate(ex.mistakes):
            for b in ex.mistakes[i + 1:]:
                differ = False
                for case in cases:
                    try:
                        ra, rb = a.fn(*check._copy(case.args)), b.fn(*check._copy(case.args))
                    except Exception:  # noqa: BLE001 - a mistake that cannot run on a case differs there
                        differ = True
                        break
                    if ex.compare(ra, rb) is not None:
                        differ = True
                        break
                assert differ, (ex.id, a.message[:50], b.message[:50])


# ----------------------------------------------------------------------------------------------
# Typical wrong answers, written here, and the words they get
# ----------------------------------------------------------------------------------------------


def _lin_no_centre(pieces, sigma, gamma, proj):
    return (pieces * gamma / sigma[:, None, None]) @ proj


def _lin_no_sigma(pieces, sigma, gamma, proj):
    return ((pieces - pieces.mean(-1, keepdim=True)) * gamma) @ proj


def _lin_broadcast(pieces, sigma, gamma, proj):
    return ((pieces - pieces.mean(-1, keepdim=True)) * gamma / sigma) @ proj


def _lin_own_sigma(pieces, sigma, gamma, proj):
    c = pieces - pieces.mean(dim=-1, keepdim=True)
    own = c.pow(2).mean(dim=-1, keepdim=True).sqrt()  # each piece's own spread
    return (c / own * gamma) @ proj


def _lin_layer_norm_each(pieces, sigma, gamma, proj):
    return F.layer_norm(pieces, pieces.shape[-1:], weight=gamma, eps=0.0) @ proj


def _reas_no_const(contributions, beta, proj):
    return contributions.sum(dim=1)


def _reas_mean(contributions, beta, proj):
    return contributions.mean(dim=1) + beta @ proj


def _vs_single(group, embeddings):
    total = embeddings.var(dim=0).sum()
    return sum(float(group[:, k].var(dim=0).sum() / total) for k in range(group.shape[1]))


def _vs_std(group, embeddings):
    return float(group.sum(1).std(0).sum() / embeddings.std(0).sum())


def _vs_raw(group, embeddings):
    return float(group.sum(1).var(0).sum())


def _ma_zero(components, ablate):
    keep = [i for i in range(components.shape[1]) if i not in ablate]
    return components[:, keep].sum(1)


def _ma_complement(components, ablate):
    out = components.sum(1)
    for i in range(components.shape[1]):
        if i not in ablate:
            out = out - components[:, i] + components[:, i].mean(0)
    return out


def _ma_unsummed(components, ablate):
    out = components.clone()
    for i in ablate:
        out[:, i] = components[:, i].mean(0)
    return out


def _acc_count(embeddings, classifier, labels):
    return int(((embeddings @ classifier.T).argmax(-1) == labels).sum())


def _acc_argmin(embeddings, classifier, labels):
    return float(((embeddings @ classifier.T).argmin(-1) == labels).float().mean())


def _acc_per_image(embeddings, classifier, labels):
    return ((embeddings @ classifier.T).argmax(-1) == labels).float()


def _proj_centred(C, R, rank):
    Cc = C - C.mean(0)
    V = torch.linalg.svd(Cc, full_matrices=False).Vh[:rank]
    return R @ V.T @ V


def _proj_coords(C, R, rank):
    V = torch.linalg.svd(C, full_matrices=False).Vh[:rank]
    return R @ V.T


def _proj_smallest(C, R, rank):
    V = torch.linalg.svd(C, full_matrices=False).Vh
    V = V[V.shape[0] - rank:]
    return R @ V.T @ V


def _step_unit_texts(C, R):
    Rn = R / R.norm(dim=1, keepdim=True)
    j = int(torch.argmax(torch.var(C @ Rn.T, dim=0)))
    u = R[j] / R[j].norm()
    return j, C - (C @ u)[:, None] * u, R - (R @ u)[:, None] * u


def _step_mean_abs(C, R):
    scores = C @ R.T
    j = int(scores.abs().mean(0).argmax())  # mean |score| instead of the variance
    u = R[j] / R[j].norm()
    return j, C - (C @ u)[:, None] * u, R - (R @ u)[:, None] * u


def _step_keep_texts(C, R):
    j = int(torch.argmax(torch.var(C @ R.T, dim=0)))
    u = R[j] / R[j].norm()
    return j, C - (C @ u)[:, None] * u, R


def _step_raw_direction(C, R):
    j = int(torch.argmax(torch.var(C @ R.T, dim=0)))
    r = R[j]
    return j, C - (C @ r)[:, None] * r, R - (R @ r)[:, None] * r


def _role_kept_denominator(tags, ignore):
    kept = [t for t in tags if t not in ignore]
    if not kept:
        return None, 0.0
    best = max(kept, key=lambda t: (kept.count(t), -kept.index(t)))
    return best, kept.count(best) / len(kept)


def _role_any_tag(tags, ignore):
    best = max(tags, key=lambda t: (tags.count(t), -tags.index(t)))
    return best, tags.count(best) / len(tags)


def _role_last_wins(tags, ignore):
    kept = [t for t in tags if t not in ignore]
    if not kept:
        return None, 0.0
    best = max(kept, key=lambda t: (kept.count(t), max(i for i, x in enumerate(tags) if x == t)))
    return best, kept.count(best) / len(tags)


def _hm_values_only(attn, values, to_joint, bias, text, grid):
    return ((values @ to_joint + bias) @ text)[1:].reshape(grid)


def _hm_keep_cls(attn, values, to_joint, bias, text, grid):
    scores = attn * ((values @ to_joint + bias) @ text)
    return scores[:-1].reshape(grid)


def _hm_transposed(attn, values, to_joint, bias, text, grid):
    scores = attn * ((values @ to_joint + bias) @ text)
    return scores[1:].reshape(grid[1], grid[0]).T


def _hm_renormalised(attn, values, to_joint, bias, text, grid):
    patches = attn[1:] / attn[1:].sum()  # attention over the patches only, summing to 1
    return (patches * ((values[1:] @ to_joint + bias) @ text)).reshape(grid)


def _hm_no_bias(attn, values, to_joint, bias, text, grid):
    return (attn * (values @ to_joint @ text))[1:].reshape(grid)


def _reference_map(attn, values, to_joint, bias, text, grid):
    return (attn * ((values @ to_joint + bias) @ text))[1:].reshape(grid)


def _con_reversed(attn, values, to_joint, bias, text_a, text_b, grid):
    return _reference_map(attn, values, to_joint, bias, text_b, grid) - \
        _reference_map(attn, values, to_joint, bias, text_a, grid)


def _con_sum(attn, values, to_joint, bias, text_a, text_b, grid):
    return _reference_map(attn, values, to_joint, bias, text_a, grid) + \
        _reference_map(attn, values, to_joint, bias, text_b, grid)


def _spur_by_count(roles, properties, min_score):
    return [(r.layer, r.head) for r in roles
            if sum(t in properties for t in r.text_properties) / len(r.text_properties) >= min_score]


def _spur_strict(roles, properties, min_score):
    out = []
    for r in roles:
        var = np.clip(r.variances, 0, None)
        score = sum(v for v, t in zip(var, r.text_properties) if t in properties) / var.sum()
        if score > min_score:
            out.append((r.layer, r.head))
    return out


def _spur_labels(roles, properties, min_score):
    out = []
    for r in roles:
        var = np.clip(r.variances, 0, None)
        if sum(v for v, t in zip(var, r.text_properties) if t in properties) / var.sum() >= min_score:
            out.append(f"L{r.layer}.H{r.head}")
    return out


def _wg_average(pred, labels, groups):
    return float((pred == labels).float().mean())


def _wg_over_all(pred, labels, groups):
    return min(float((pred[groups == g] == labels[groups == g]).sum()) / len(pred) for g in groups.unique())


def _wg_best(pred, labels, groups):
    return max(float((pred[groups == g] == labels[groups == g]).float().mean()) for g in groups.unique())


def _pp_normalise_first(maps, size):
    up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    return ((up - lo) / (hi - lo)).clamp(min=0)


def _pp_no_norm(maps, size):
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp(min=0)


def _pp_nearest(maps, size):
    up = F.interpolate(maps[:, None], size=size, mode="nearest")[:, 0].clamp(min=0)
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    return torch.where(hi > lo, (up - lo) / (hi - lo), torch.zeros_like(up))


def _pp_unguarded(maps, size):
    up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp(min=0)
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    return (up - lo) / (hi - lo)


def _thr_batch(soft):
    return soft > soft.mean()


def _thr_geq(soft):
    return soft >= soft.mean(dim=(1, 2), keepdim=True)


def _thr_scores(soft):
    return soft * (soft > soft.mean(dim=(1, 2), keepdim=True))


def _miou_per_image(pred, truth):
    fg = torch.stack([(p & t).sum() / (p | t).sum().clamp(min=1) for p, t in zip(pred, truth)]).float().mean()
    bg = torch.stack([(~p & ~t).sum() / (~p | ~t).sum().clamp(min=1) for p, t in zip(pred, truth)]).float().mean()
    return float(fg), float(bg), float(fg + bg) / 2


def _miou_foreground(pred, truth):
    fg = float((pred & truth).sum() / (pred | truth).sum())
    bg = float((~pred & ~truth).sum() / (~pred | ~truth).sum())
    return fg, bg, fg


def _miou_double_union(pred, truth):
    fg = float((pred & truth).sum() / (pred.sum() + truth.sum()))
    bg = float((~pred & ~truth).sum() / ((~pred).sum() + (~truth).sum()))
    return fg, bg, (fg + bg) / 2


WRONG = [
    ("1.1", _lin_no_centre, ["not centred", "off by the mean"]),
    ("1.1", _lin_no_sigma, ["divide by sigma"]),
    ("1.1", _lin_broadcast, ["your linearise raised RuntimeError", "sigma[:, None, None]", "test case"]),
    ("1.1", _lin_own_sigma, ["each piece divided by its own σ", "one σ per image"]),
    ("1.1", _lin_layer_norm_each, ["each piece divided by its own σ", "one σ per image"]),
    ("1.2", _reas_no_const, ["constant term is missing"]),
    ("1.2", _reas_mean, ["averaged the pieces"]),
    ("1.3", _vs_single, ["shares of the single terms", "covariances"]),
    ("1.3", _vs_std, ["standard deviations"]),
    ("1.3", _vs_raw, ["not normalised"]),
    ("2.1", _ma_zero, ["zero ablation"]),
    ("2.1", _ma_complement, ["except the chosen ones"]),
    ("2.1", _ma_unsummed, ["add them up"]),
    ("2.2", _acc_count, ["number of correct images"]),
    ("2.2", _acc_argmin, ["least similar class"]),
    ("2.2", _acc_per_image, ["expected a single number"]),
    ("3.1", _proj_centred, ["centred C before the SVD"]),
    ("3.1", _proj_coords, ["coordinates in the span"]),
    ("3.1", _proj_smallest, ["smallest singular directions"]),
    ("3.2", _step_unit_texts, ["normalised the texts before scoring"]),
    ("3.2", _step_keep_texts, ["texts were not deflated"]),
    ("3.2", _step_raw_direction, ["without normalising it"]),
    ("3.2", _step_mean_abs, ["mean |score|", "*variance*", "heavy tails"]),
    ("3.3", _role_kept_denominator, ["denominator is all n texts"]),
    ("3.3", _role_any_tag, ["ignored tag"]),
    ("3.3", _role_last_wins, ["chosen first"]),
    ("4.1", _hm_values_only, ["attention weights are missing"]),
    ("4.1", _hm_keep_cls, ["class token"]),
    ("4.1", _hm_transposed, ["row-major"]),
    ("4.1", _hm_no_bias, ["bias term is missing"]),
    ("4.1", _hm_renormalised, ["renormalised the attention over the patches", "class token included"]),
    ("4.2", _con_reversed, ["sign is flipped"]),
    ("4.2", _con_sum, ["added the two maps"]),
    ("5.1", _spur_by_count, ["counted texts"]),
    ("5.1", _spur_strict, ["(>=, not >)"]),
    ("5.1", _spur_labels, ["pairs of ints, not labels"]),
    ("5.2", _wg_average, ["average accuracy over all images"]),
    ("5.2", _wg_over_all, ["*in that group*"]),
    ("5.2", _wg_best, ["best group"]),
    ("6.1", _pp_normalise_first, ["normalised before clipping"]),
    ("6.1", _pp_no_norm, ["not normalised"]),
    ("6.1", _pp_nearest, ["nearest neighbours"]),
    ("6.1", _pp_unguarded, ["NaN", "division by zero", "a constant map"]),
    ("6.2", _thr_batch, ["whole batch"]),
    ("6.2", _thr_geq, ["strictly above"]),
    ("6.2", _thr_scores, ["True/False"]),
    ("6.3", _miou_per_image, ["averaged per-image IoUs"]),
    ("6.3", _miou_foreground, ["mean of the foreground IoU and the background IoU"]),
    ("6.3", _miou_double_union, ["counts the intersection twice"]),
]


# notebook 7: a neuron's effect from its pieces, the rank-1 ablation, neurons about a value


def _eff_no_sigma_post(acts, attention, sigma, sigma_post, u):
    return torch.einsum("bjt,bt->bj", attention / sigma, acts) @ u


def _eff_times_sigma(acts, attention, sigma, sigma_post, u):
    return (torch.einsum("bjt,bt->bj", attention * sigma, acts) / sigma_post[:, None]) @ u


def _eff_patches_only(acts, attention, sigma, sigma_post, u):
    return (torch.einsum("bjt,bt->bj", (attention / sigma)[:, :, 1:], acts[:, 1:]) / sigma_post[:, None]) @ u


def _eff_sum_heads_first(acts, attention, sigma, sigma_post, u):
    return (torch.einsum("bjt,bt->b", attention / sigma, acts) / sigma_post)[:, None] * u.sum(0)


def _r1_raw_projection(effects, mean, directions, embedding):
    proj = (effects * directions).sum(-1)
    return embedding - (effects - mean).sum(1) + proj @ directions


def _r1_zero_ablation(effects, mean, directions, embedding):
    proj = ((effects - mean) * directions).sum(-1)
    return embedding - effects.sum(1) + proj @ directions


def _r1_projection_without_direction(effects, mean, directions, embedding):
    proj = ((effects - mean) * directions).sum(-1)
    return embedding - (effects - mean).sum(1) + (proj * directions).sum(0)


def _about_no_base_rate(top_index, labels, value, min_lift):
    share = (labels[top_index] == value).double().mean(1)
    return [k for k in range(len(share)) if share[k] >= min_lift]


def _about_strictly(top_index, labels, value, min_lift):
    lift = (labels[top_index] == value).double().mean(1) / (labels == value).double().mean()
    return [k for k in range(len(lift)) if lift[k] > min_lift]


def _about_indices(top_index, labels, value, min_lift):
    lift = (top_index == value).double().mean(1) / (labels == value).double().mean()
    return [k for k in range(len(lift)) if lift[k] >= min_lift]


def _about_mask(top_index, labels, value, min_lift):
    lift = (labels[top_index] == value).double().mean(1) / (labels == value).double().mean()
    return (lift >= min_lift).tolist()


WRONG += [
    ("7.1", _eff_no_sigma_post, ["ln_post's scale is missing"]),
    ("7.1", _eff_times_sigma, ["differs from the expected one"]),
    ("7.1", _eff_patches_only, ["class token included"]),
    ("7.1", _eff_sum_heads_first, ["differs from the expected one"]),
    ("7.3", _r1_raw_projection, ["project the centred effect"]),
    ("7.3", _r1_zero_ablation, ["zero ablation"]),
    ("7.3", _r1_projection_without_direction, ["raised", "Hint", "its own direction"]),
    ("7.2", _about_no_base_rate, ["base rate"]),
    ("7.2", _about_strictly, [">=, not >"]),
    ("7.2", _about_indices, ["look up their labels"]),
    ("7.2", _about_mask, ["not one True/False per neuron"]),
]


@pytest.mark.parametrize("exercise,fn,words", WRONG, ids=[f"{e}-{f.__name__}" for e, f, _ in WRONG])
def test_a_typical_wrong_answer_gets_plain_words(exercise, fn, words):
    checked = run_check(exercise, fn, quiet=True)
    assert not checked.passed and checked.status in ("wrong", "error")
    assert checked.function is EXERCISES[exercise].reference  # later cells get the reference
    assert "reference solution" in checked.message
    for w in words:
        assert w in checked.message, checked.message
    assert "\n" not in checked.message and "Traceback" not in checked.message


# find and decide exercises: wrong answers written here, on each exercise's own contexts
WRONG_ANSWERS = [
    ("1.4", lambda ctx: ctx["terms"].n_layers, ["fewer will do"]),
    ("1.4", lambda ctx: "three", ["whole number"]),
    ("2.3", lambda ctx: 0, ["from 1 to"]),
    ("2.3", lambda ctx: ctx["terms"].n_layers - 1 if ctx["terms"].n_layers - 1 != EXERCISES["2.3"].reference(ctx)
     else 1, ["keeping"]),
    ("3.4", lambda ctx: "L9.H9", ["name one head"]),
    ("3.4", lambda ctx: ("L4", "H1"), ["name one head"]),
    ("4.3", lambda ctx: "layer five", ["layer index"]),
    ("4.3", lambda ctx: 5, ["supplies the most *mass*"]),
    ("5.3", lambda ctx: "L6.H0", ["list of heads"]),
    ("5.3", lambda ctx: [(9, 9)], ["not among the heads"]),
    ("6.4", lambda ctx: 3, ["pair (first, last)"]),
    ("6.4", lambda ctx: (0, 9), ["must lie in"]),
    ("7.4", lambda ctx: 3, ["not a row number"]),
    ("7.4", lambda ctx: "L99.N1", ["not among the"]),
    ("7.4", lambda ctx: "neuron five", ["one neuron's name"]),
]


@pytest.mark.parametrize("exercise,answer,words", WRONG_ANSWERS, ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(WRONG_ANSWERS)])
def test_a_wrong_answer_is_explained(exercise, answer, words):
    ex = EXERCISES[exercise]
    ctx = dict(ex.cases()[0].args[0])
    checked = run_check(exercise, lambda: answer(ctx), quiet=True, **ctx)
    assert checked.status == "wrong" and "answer the data supports" in checked.message
    for w in words:
        assert w in checked.message, checked.message
    assert checked() == ex.reference(ctx)


def test_at_least_two_wrong_answers_per_exercise():
    counts = {}
    for exercise, _, _ in WRONG + WRONG_ANSWERS:
        counts[exercise] = counts.get(exercise, 0) + 1
    assert set(counts) == set(EXERCISES) and min(counts.values()) >= 2, counts


def test_a_verdict_is_marked_and_wraps_at_word_boundaries(capsys):
    from helpers.course.exercises.check import MARKS, show_verdict

    ok = run_check("1.2", EXERCISES["1.2"].reference, quiet=True).result
    bad = run_check("1.2", lambda c, b, p: c.sum(1), quiet=True).result
    todo = run_check("1.2", _stub_reassemble, quiet=True).result
    assert {ok.status, bad.status, todo.status} == {"passed", "wrong", "not done"}
    assert ok.plain.startswith(f"{MARKS['passed']} PASSED · Exercise 1.2") and bad.plain.startswith("\u2718 NOT YET")
    assert todo.plain.startswith("\u2026 NOT DONE")
    for r in (ok, bad, todo):
        html = r.html()
        assert r.mark in html and "white-space:normal" in html and "word-break:normal" in html
        assert "overflow-wrap:break-word" in html and "<" not in r.message.replace("<", "")  # escaped text
    assert "#2e7d32" in ok.html() and "#c62828" in bad.html() and ok.html() != bad.html()
    show_verdict(bad)  # outside IPython: one plain line with its mark
    assert capsys.readouterr().out == bad.plain + "\n"


def _stub_reassemble(contributions, beta, proj):
    raise NotImplementedError("Exercise 1.2 not done yet")


def test_yours_names_the_learners_work_or_the_reference_plainly():
    good = run_check("1.2", lambda c, b, p: c.sum(1) + b @ p, quiet=True)
    wrong = run_check("1.2", lambda c, b, p: c.sum(1), quiet=True)
    todo = run_check("1.2", _stub_reassemble, quiet=True)
    assert good.yours == "your reassemble"
    assert wrong.yours == "the reference reassemble (standing in for yours: exercise 1.2 is not right yet)"
    assert todo.yours == "the reference reassemble (standing in for yours: exercise 1.2 is not done yet)"


def test_notebook_lines_about_your_work_say_whose_it_is():
    """Outside the exercise cells, a notebook never writes "your ..." itself: every such line names
    the learner's work with a check's ``.yours``, which says when the reference stands in."""
    for src in SOURCES:
        for cell in build_nb.read_cells(build_nb.source_text(src, "o/r", "full")):
            if cell.cell_type != "code" or build_nb.role(cell) == "exercise":
                continue
            for m in re.finditer(r"([\"'])(?:(?!\1).)*\byours?\b(?:(?!\1).)*\1", cell.source.replace(".yours", "")):
                pytest.fail(f"{src.name}: a string speaks of the learner's work without .yours: {m.group(0)[:80]}")


# ----------------------------------------------------------------------------------------------
# The messages themselves
# ----------------------------------------------------------------------------------------------


def test_an_error_is_one_line_naming_the_function_and_its_line(capsys):
    def mean_ablate(components, ablate):
        chosen = components[:, ablate, :, 0]  # one axis too many
        return chosen

    checked = run_check("2.1", mean_ablate)
    out = capsys.readouterr().out
    assert checked.status == "error" and out.count("\n") == 1
    assert "your mean_ablate raised IndexError" in checked.message
    assert "at `chosen = components[:, ablate, :, 0]" in checked.message
    assert "Hint:" in checked.message and "axis 0" in checked.message  # the exercise's hint on shapes


def test_a_not_implemented_error_from_elsewhere_is_an_error_not_a_stub():
    def helper():
        raise NotImplementedError("something else")

    def reassemble(contributions, beta, proj):
        return helper()

    checked = run_check("1.2", reassemble, quiet=True)
    assert checked.status == "error" and "something else" in checked.message


def test_generic_diagnoses():
    e = torch.arange(12.0).reshape(3, 4) + 1
    assert check.tensor_diff(e.clone(), e) is None
    assert "wrong shape: expected [3, 4], got [4, 4]" in check.tensor_diff(torch.zeros(4, 4), e)
    assert "transposed" in check.tensor_diff(e.T.clone(), e)
    assert "sign is flipped" in check.tensor_diff(-e, e)
    assert "constant factor: every entry is 2 times" in check.tensor_diff(2 * e, e)
    assert "same amount for every row" in check.tensor_diff(e + torch.tensor([1.0, -2.0, 0.5, 3.0]), e)
    assert "NaN" in check.tensor_diff(torch.full((3, 4), float("nan")), e)
    assert "expected a tensor of shape [3, 4]" in check.tensor_diff("no", e)
    assert "right numbers in the wrong shape" in check.tensor_diff(e.reshape(2, 6), e)
    assert "0.5" in check.scalar_diff(0.5, 0.25) and "single number" in check.scalar_diff(torch.ones(2), 1.0)
    assert check.scalar_diff(torch.tensor(0.25), 0.25) is None and check.scalar_diff(np.float32(0.5), 0.5) is None


def test_not_a_function():
    checked = run_check("1.1", None, quiet=True)
    assert checked.status == "error" and "expected a function" in checked.message


def test_running_a_check_again_checks_the_learners_function_again():
    def linearise(pieces, sigma, gamma, proj):
        return (pieces * gamma / sigma[:, None, None]) @ proj  # not centred

    first = nb01.check_linearise(linearise, quiet=True)
    assert not first.passed and first.function is EXERCISES["1.1"].reference
    again = nb01.check_linearise(first, quiet=True)  # the check cell run twice
    assert not again.passed and again.learner is linearise
    assert isinstance(again, Checked) and "1.1" in repr(again) and "reference" in repr(again)


def test_a_function_that_changes_its_inputs_in_place_does_not_change_the_reference():
    def mean_ablate(components, ablate):
        for i in ablate:
            components[:, i] = components[:, i].mean(0)
        return components.sum(1)

    assert run_check("2.1", mean_ablate, quiet=True).passed


def test_cases_are_fresh_and_deterministic():
    for ex in EXERCISES.values():
        a, b = ex.cases(), ex.cases()
        assert [c.name for c in a] == [c.name for c in b] and len(a) >= (3 if ex.kind == "implement" else 1), ex.id
        for ca, cb in zip(a, b):
            assert ca.args is not cb.args
            assert ex.compare(ex.reference(*ca.args), ex.reference(*cb.args)) is None


# ----------------------------------------------------------------------------------------------
# The references agree with the helpers
# ----------------------------------------------------------------------------------------------


def test_linearise_and_reassemble_match_the_decomposition_in_float64(default_bundle):
    from helpers.data import world
    from helpers.data.training import images_to_tensor
    from helpers.engine.decompose import Decomposer

    model = default_bundle[0]
    visual = copy.deepcopy(model.visual).double().requires_grad_(False)
    x = images_to_tensor(world.sample(3, split="test", seed=5).images, model).double()
    parts = nb01.residual_pieces(visual, x)
    assert parts.names[:3] == ["embed", "attn.0", "mlp.0"] and parts.pieces.shape[1] == 1 + 2 * len(
        visual.transformer.resblocks)
    mine = EXERCISES["1.1"].reference(parts.pieces, parts.sigma, parts.gamma, parts.proj)
    comps = Decomposer(visual)(x, heads=False).components()
    assert comps.labels["component"][:-1] == parts.names
    assert torch.allclose(mine, comps.data[:, :-1], atol=1e-12)
    with torch.no_grad():
        emb = visual(x)
    rebuilt = EXERCISES["1.2"].reference(mine, parts.beta, parts.proj)
    assert float((rebuilt - emb).abs().max()) < 1e-10


def test_variance_share_and_mean_ablate_match_direct_terms():
    from helpers.methods.ablation import DirectTerms, component_table, group_variance_share

    g = torch.Generator().manual_seed(0)
    N, L, d = 7, 3, 4
    terms = DirectTerms(embed=torch.randn(N, d, generator=g, dtype=torch.float64),
                        attn=torch.randn(N, L, d, generator=g, dtype=torch.float64) + 1,
                        mlp=torch.randn(N, L, d, generator=g, dtype=torch.float64) - 2,
                        const=torch.randn(d, generator=g, dtype=torch.float64))
    share = EXERCISES["1.3"].reference(terms.attn[:, [0, 2]], terms.embeddings())
    assert share == pytest.approx(group_variance_share(terms, attn=[0, 2]), rel=1e-12)
    names, comps = component_table(terms)
    idx = [names.index("embed"), names.index("mlp.1"), names.index("attn.2")]
    mine = EXERCISES["2.1"].reference(comps, idx)
    assert torch.allclose(mine, terms.ablated(embed=True, mlps=[1], attn=[2]), atol=1e-12)


def test_notebook_7_references_match_the_second_order_helpers(default_bundle):
    from helpers.data import world
    from helpers.engine.images import images_to_tensor
    from helpers.methods.second_order import SecondOrder, ablated_embeddings, stream_neuron_stats, top_image_lift

    model = copy.deepcopy(default_bundle[0]).double()
    x = images_to_tensor(world.sample(12, split="test", seed=7, config="world-v3").images, model).double()
    so = SecondOrder(model, 4)
    eff = so(x[:3])
    for k in (5, 300):
        parts = so.parts(x[:3], k)
        mine = EXERCISES["7.1"].reference(parts.acts, parts.attention, parts.sigma, parts.sigma_post, parts.u)
        assert torch.allclose(mine, eff.effects([k])[:, 0], rtol=1e-10, atol=1e-14)
    stats = stream_neuron_stats(model, x, [4], k=3, batch_size=6)
    d = stats[4].directions()
    effn = so(x[:4], normalize=True)
    mine = EXERCISES["7.3"].reference(effn.effects(), d.mean, d.vectors, effn.embedding)
    assert torch.allclose(mine, ablated_embeddings(effn, d)["rank1"], rtol=1e-10, atol=1e-12)
    labels = torch.as_tensor(world.sample(12, split="test", seed=7, config="world-v3").factors["colour"])
    lift = top_image_lift(stats[4].top_index, labels, [int(labels[0])] * 512)
    found = EXERCISES["7.2"].reference(stats[4].top_index, labels, int(labels[0]), 1.5)
    assert found == [k for k in range(512) if lift[k] >= 1.5] and found


def test_project_and_step_reproduce_textspan():
    from helpers.methods.textspan import textspan, textspan_reference

    g = torch.Generator().manual_seed(3)
    K, d, rank, M, n = 40, 8, 5, 30, 4
    C = torch.randn(K, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, d, generator=g,
                                                                             dtype=torch.float64)
    C = C + torch.randn(1, d, generator=g, dtype=torch.float64)  # a low-rank head with a mean
    R = F.normalize(torch.randn(M, d, generator=g, dtype=torch.float64), dim=-1)
    fit = textspan(C, R, n)
    assert int(fit.span_rank) == rank + 1  # the mean adds one direction to the uncentred span
    Rp = EXERCISES["3.1"].reference(C, R, int(fit.span_rank))
    Cc = C - C.mean(0)
    picked, dirs = [], []
    for _ in range(n):
        before = Rp.clone()
        j, Cc, Rp = EXERCISES["3.2"].reference(Cc, Rp)
        picked.append(j)
        dirs.append(before[j] / before[j].norm())
    assert picked == fit.indices.tolist() == textspan_reference(C, R, n).indices.tolist()
    assert torch.allclose(torch.stack(dirs), fit.directions, atol=1e-8)


def test_head_maps_match_the_spatial_helpers(default_bundle):
    from helpers.data import world
    from helpers.data.training import images_to_tensor
    from helpers.engine.text import encode_texts
    from helpers.methods.spatial import contrastive_map, head_direction_map

    model, _, tokenizer = default_bundle
    x = images_to_tensor(world.sample(2, split="test", seed=7).images, model)
    ta, tb = encode_texts(model, tokenizer, ["a red object", "a photo of grass"])
    for layer, head in ((-1, 2), (3, 0)):
        parts = nb04.head_parts(model, x[1], layer, head)
        T = 1 + parts.grid[0] * parts.grid[1]
        assert parts.attn.shape == (T,) and bool(torch.isclose(parts.attn.sum(), torch.tensor(1.0)))
        mine = EXERCISES["4.1"].reference(parts.attn, parts.values, parts.to_joint, parts.bias, ta, parts.grid)
        theirs = head_direction_map(model, x[1:2], layer, head, ta)[0]
        assert torch.allclose(mine, theirs, atol=1e-6)
        con = EXERCISES["4.2"].reference(parts.attn, parts.values, parts.to_joint, parts.bias, ta, tb, parts.grid)
        assert torch.allclose(con, contrastive_map(model, x[1:2], ta, tb, [layer], [head])[0], atol=1e-6)
    with pytest.raises(ValueError, match="one preprocessed image"):
        nb04.head_parts(model, x, 0, 0)


# ----------------------------------------------------------------------------------------------
# The two builds
# ----------------------------------------------------------------------------------------------

TOY = '''# %% [markdown]
# # Toy
# {{EXERCISE_NOTE}}

# %% tags=["exercise"]
def double(x):
    """Twice x."""
    y = 0
    # --- solution ---
    y = 2 * x
    # --- end ---
    return y


# %%
double = check(double)

# %% [markdown] tags=["predict"]
# What will it print?
# Answer:
# Something even.
'''


def test_builder_splits_an_exercise_and_renders_a_prediction(tmp_path):
    src = tmp_path / "07_toy.py"
    src.write_text(TOY)
    (tmp_path / "_setup.py").write_text("pass\n")
    full, learner = build_nb.build(src, "o/r", "full"), build_nb.build(src, "o/r", "learner")
    assert [c["id"] for c in full.cells] == ["c07-00", "c07-01", "c07-02", "c07-03"]
    assert [c["id"] for c in learner.cells] == ["c07-00", "c07-01", "c07-01-solution", "c07-02", "c07-03"]
    assert "full** version" in full.cells[0].source and "learner** version" in learner.cells[0].source
    code = full.cells[1].source
    assert "y = 2 * x" in code and full.cells[1].metadata["tags"] == ["exercise"]
    stub = learner.cells[1].source
    assert "y = 2 * x" not in stub and "    y = 0" in stub and "    return y" in stub
    assert '    raise NotImplementedError("Exercise 7.1 not done yet: write the body of double")' in stub
    ns = {}
    exec(stub, ns)
    with pytest.raises(NotImplementedError, match="Exercise 7.1"):
        ns["double"](3)
    sol = learner.cells[2]
    assert sol.cell_type == "markdown" and sol.source.startswith("<details><summary>Solution to exercise 7.1")
    assert "y = 2 * x" in sol.source and "# --- solution ---" not in sol.source and sol.source.endswith("</details>")
    pred = full.cells[3].source
    assert pred.startswith("**Predict, then run.** What will it print?")
    assert "<details><summary>Answer" in pred and "Something even." in pred
    assert learner.cells[4].source == pred


@pytest.mark.parametrize("bad", [TOY.replace("    # --- end ---\n", ""), TOY.replace("# Answer:\n", ""),
                                 TOY.replace('tags=["predict"]', 'tags=["quiz"]'),
                                 TOY.replace('# %% tags=["exercise"]', "# %% [exercise]")])
def test_builder_rejects_broken_markup(tmp_path, bad):
    src = tmp_path / "07_toy.py"
    src.write_text(bad)
    (tmp_path / "_setup.py").write_text("pass\n")
    with pytest.raises(ValueError):
        build_nb.build(src, "o/r", "learner")


TOY_HINTED = TOY.replace('''# %% tags=["exercise"]
def double(x):''', '''# %% [markdown] tags=["hint"]
# What does "twice" mean?

# %% [markdown] tags=["hint"]
# Multiply by two.

# %% tags=["exercise"] kind="implement" difficulty=1 importance=2 minutes=3
def double(x):''')


def test_builder_renders_exercise_metadata_and_hints(tmp_path):
    src = tmp_path / "07_toy.py"
    src.write_text(TOY_HINTED)
    (tmp_path / "_setup.py").write_text("pass\n")
    (ex,) = build_nb.exercises(src)
    assert (ex.kind, ex.difficulty, ex.importance, ex.minutes) == ("implement", 1, 2, 3)
    assert ex.hints == ('What does "twice" mean?', "Multiply by two.")
    for variant in ("full", "learner"):
        nb = build_nb.build(src, "o/r", variant)
        tags = [(c.metadata.get("tags") or [""])[0] for c in nb.cells]
        i = tags.index("exercise-badge")
        assert tags[i:i + 4] == ["exercise-badge", "hint", "hint", "exercise"], tags
        assert nb.cells[i].source == "**Exercise 7.1** · *implement* · difficulty ●○○ · importance ●●○ · about 3 min"
        assert nb.cells[i + 1].source.startswith("<details><summary>Hint 1 to exercise 7.1</summary>")
        assert "Multiply by two." in nb.cells[i + 2].source and "Hint 2" in nb.cells[i + 2].source
        assert len({c["id"] for c in nb.cells}) == len(nb.cells)


@pytest.mark.parametrize("bad", [
    TOY_HINTED.replace('kind="implement"', 'kind="copy"'),
    TOY_HINTED.replace("difficulty=1", "difficulty=4"),
    TOY_HINTED.replace("minutes=3", 'minutes="soon"'),
    TOY_HINTED.replace('# %% [markdown] tags=["hint"]\n# Multiply by two.\n',
                       '# %% [markdown] tags=["hint"]\n# Multiply by two.\n\n# %% [markdown] tags=["hint"]\n# 2x\n'),
    TOY_HINTED.replace('# %% [markdown] tags=["hint"]\n# Multiply by two.\n', '# %% [markdown] tags=["hint"]\n# Multiply by two.\n\n# %%\nx = 1\n'),
    TOY_HINTED.replace('# %% [markdown] tags=["hint"]\n# Multiply', '# %% tags=["hint"]\n# Multiply'),
])
def test_builder_rejects_broken_exercise_metadata(tmp_path, bad):
    src = tmp_path / "07_toy.py"
    src.write_text(bad)
    (tmp_path / "_setup.py").write_text("pass\n")
    with pytest.raises(ValueError):
        build_nb.build(src, "o/r", "full")


def test_learner_notebooks_hide_every_solution():
    repo = build_nb.REPO_URL_FILE.read_text().strip()
    for src in SOURCES:
        path = ROOT / "notebooks" / "learner" / f"{src.stem}.ipynb"
        nb = json.loads(path.read_text())
        full = json.loads((ROOT / "notebooks" / f"{src.stem}.ipynb").read_text())
        exs = build_nb.exercises(src)
        cells = {c["id"]: c for c in nb["cells"]}
        assert [c["id"] for c in full["cells"]] == [c["id"] for c in nb["cells"] if not c["id"].endswith("-solution")]
        stubs = [c for c in nb["cells"] if "exercise" in c.get("metadata", {}).get("tags", [])]
        assert len(stubs) == len(exs) >= 2
        for cell, ex in zip(stubs, exs):
            body = "".join(cell["source"])
            assert f"Exercise {ex.number} not done yet" in body and build_nb.SOLUTION_START not in body
            sol = "".join(cells[cell["id"] + "-solution"]["source"])
            assert sol.startswith("<details>") and ex.solution in sol
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and not cell.get("execution_count")
        first = "".join(nb["cells"][0]["source"])
        assert f"github/{repo}/blob/main/notebooks/learner/{src.stem}.ipynb" in first
        assert any("### Before you start" in "".join(c["source"]) for c in nb["cells"][:3])
        assert sum("predict" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]) >= 1


# smaller runs (tests/_small.py): stubs in place, everything after them must still run
LEARNER_RUNS = [pytest.param(src, id=src.stem, marks=pytest.mark.notebook(
    ROOT / "notebooks" / "learner" / f"{src.stem}.ipynb", SMALL_RUNS[src.stem[:2]], env={"COURSE_HEADLESS": "1"}))
    for src in SOURCES]


@pytest.mark.slow
@pytest.mark.parametrize("src", LEARNER_RUNS)
def test_learner_notebook_runs_with_its_stubs(src, notebook_run):
    from helpers.course.main_job import stderr_outputs

    run = notebook_run
    executed = run.executed
    nb = run.notebook()
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert stderr_outputs(executed) == []
    text = "".join("".join(o.get("text", "")) for o in outputs if o["output_type"] == "stream")
    text += "".join("".join(o.get("data", {}).get("text/plain", "")) for o in outputs
                    if o["output_type"] == "display_data")
    for ex in build_nb.exercises(src):
        assert f"\u2026 NOT DONE · Exercise {ex.number} ({ex.function}): not done yet" in text
        assert "correct on all" not in text and "your " not in text.replace("yours", "")


TOY_COURSE = '''# %% [markdown]
# # 7 · Toy
# ![a diagram](figures/residual_decomposition.png)
#
# {{EXERCISE_NOTE}}

# %% [markdown]
# ### Before you start
# | **Time** | {{TIME}} |

# %%
what_we_see(f"The value is {num(1.0)}.")

# %%
display(table)
what_we_see("Shown with a table.")

# %% [markdown] tags=["hint"]
# Think.

# %% [markdown] tags=["hint"]
# Double it.

# %% tags=["exercise"] kind="implement" difficulty=1 importance=2 minutes=3 number="7.2"
def double(x):
    """Twice x."""
    # --- solution ---
    return 2 * x
    # --- end ---


# %%
double = check(double)

# %% [markdown] tags=["predict"]
# What will it print?
# Answer:
# Something even.

# %% [markdown] tags=["discuss"]
# Why double?
# Answer:
# Because two is the smallest number that makes a point.

# %% [markdown]
# ## Going further

# %% [markdown] tags=["hint"]
# Add one.

# %% [markdown] tags=["hint"]
# x + 1.

# %% tags=["exercise"] kind="find" difficulty=2 importance=1 minutes=4 number="7.1"
def more(x):
    """x plus one."""
    # --- solution ---
    return x + 1
    # --- end ---


# %% [markdown] tags=["discuss"]
# What else?
# Answer:
# A sample answer.
'''


def _toy(tmp_path, text=TOY_COURSE):
    src = tmp_path / "07_toy.py"
    src.write_text(text)
    (tmp_path / "_setup.py").write_text("pass\n")
    return src


def test_builder_hides_generated_prose_and_keeps_shown_code(tmp_path):
    src = _toy(tmp_path)
    for variant in build_nb.VARIANTS:
        nb = build_nb.build(src, "o/r", variant)
        prose = next(c for c in nb.cells if c.cell_type == "code" and "The value is" in c.source)
        assert prose.metadata["jupyter"] == {"source_hidden": True} and prose.metadata["cellView"] == "form"
        assert prose.source.startswith("#@title ")
        shown = next(c for c in nb.cells if c.cell_type == "code" and "display(table)" in c.source)
        assert "jupyter" not in shown.metadata and not shown.source.startswith("#@title")


def test_builder_numbers_times_and_renders_three_builds(tmp_path):
    src = _toy(tmp_path)
    exs = build_nb.exercises(src)
    assert [e.number for e in exs] == ["7.2", "7.1"]  # explicit numbers survive a move
    t = build_nb.notebook_timing(src)
    assert t.core.exercises == {"7.2": 3} and t.further.exercises == {"7.1": 4}
    full, learner, instr = (build_nb.build(src, "o/r", v) for v in build_nb.VARIANTS)
    assert build_nb.timing.header_line(t) in full.cells[1].source
    text = {v: "\n".join(c.source for c in nb.cells) for v, nb in zip(build_nb.VARIANTS, (full, learner, instr))}
    # discussion prompts: the question everywhere, the sample answer only for the instructor
    assert "**Discuss.** Why double?" in text["learner"] and "smallest number" not in text["learner"]
    assert "**Going further.** What else?" in text["full"] and "A sample answer" not in text["full"]
    assert "**Sample answer.** Because two" in text["instructor"] and "**Sample answer.** A sample answer" in text["instructor"]
    # predictions: collapsed for learners, an answer key for the instructor; hints open for the instructor
    assert "<details><summary>Answer" in text["learner"] and "**Answer key.** Something even." in text["instructor"]
    assert "<details open><summary>Hint 1 to exercise 7.2" in text["instructor"]
    assert "<details><summary>Hint 1 to exercise 7.2" in text["learner"]
    plan = next(c for c in instr.cells if "timing" in c.metadata.get("tags", []))
    assert plan.source.startswith("**Timing plan**") and "| **Going further**" in plan.source
    assert not any("timing" in c.metadata.get("tags", []) for c in full.cells + learner.cells)
    # the diagram travels with the notebook, as an attachment
    head = full.cells[0]
    assert "](attachment:residual_decomposition.png)" in head.source
    assert head.attachments["residual_decomposition.png"]["image/png"]
    assert len({c["id"] for c in instr.cells}) == len(instr.cells)


def test_builder_rejects_a_duplicate_or_foreign_exercise_number(tmp_path):
    for bad in (TOY_COURSE.replace('number="7.1"', 'number="7.2"'), TOY_COURSE.replace('number="7.1"', 'number="6.1"')):
        with pytest.raises(ValueError, match="exercise number"):
            build_nb.build(_toy(tmp_path, bad), "o/r", "full")


def test_guide_blocks_are_rewritten_in_place():
    text = "intro\n<!-- BEGIN agenda (generated) -->\nold\n<!-- END agenda -->\nrest\n"
    out = build_nb.render_guide(text, {"agenda": "new table"})
    assert out == "intro\n<!-- BEGIN agenda (generated) -->\nnew table\n<!-- END agenda -->\nrest\n"
    with pytest.raises(ValueError, match="no '<!-- BEGIN discussion"):
        build_nb.render_guide(text, {"discussion": "x"})


def test_built_notebooks_hide_every_generated_prose_cell():
    """In every build, a code cell that only writes generated text shows as prose: JupyterLab hides
    its source, Colab shows it as a form; every what_we_see cell is such a cell (a sentence never
    shares a cell with a figure, a table, a widget or a printed line, whose code would show it)."""
    for src in SOURCES:
        for target in build_nb.targets(src).values():
            nb = json.loads(target.read_text())
            for cell in nb["cells"]:
                source = "".join(cell["source"])
                if cell["cell_type"] != "code":
                    continue
                if build_nb.prose_cell(source.removeprefix(build_nb.PROSE_TITLE + "\n")):
                    assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, target.name
                    assert cell["metadata"].get("cellView") == "form" and source.startswith("#@title"), target.name
                if "what_we_see(" in source:
                    assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, (
                        f"{target.name}: generated prose in a cell that shows its code: {source[:80]!r}")
