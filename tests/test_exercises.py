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


def test_notebook_exercises_match_the_registry():
    found = {ex.number: ex.function for src in SOURCES for ex in build_nb.exercises(src)}
    assert found == {k: v.name for k, v in EXERCISES.items()}
    assert len(found) >= 15
    per_notebook = {}
    for number in found:
        per_notebook.setdefault(number.split(".")[0], []).append(number)
    assert set(per_notebook) == {str(int(s.stem[:2])) for s in SOURCES}
    assert all(2 <= len(v) <= 3 for v in per_notebook.values()), per_notebook


def test_every_check_function_is_exported():
    for ex in EXERCISES.values():
        fn = check_function(ex.id)
        assert f"check_{ex.name}" in exm.MODULES[int(ex.id.split(".")[0])].__all__
        assert fn.__name__ == f"check_{ex.name}" and ex.id in fn.__doc__


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem[:2])
def test_every_solution_passes_its_check(src, capsys):
    ns = _namespace(src, "solution")
    for ex in build_nb.exercises(src):
        checked = exm.run_check(ex.number, ns[ex.function])
        assert checked.passed, checked.message
        assert checked.function is ns[ex.function]  # the learner's function is kept
        assert checked.status == "passed" and "correct on all" in checked.message
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == len(build_nb.exercises(src)) and all("correct" in line for line in printed)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem[:2])
def test_a_stub_is_not_done_and_falls_back_to_the_reference(src):
    ns = _namespace(src, "stub")
    for ex in build_nb.exercises(src):
        with pytest.raises(NotImplementedError, match=rf"Exercise {re.escape(ex.number)} not done yet"):
            ns[ex.function](*EXERCISES[ex.number].cases()[0].args)
        checked = run_check(ex.number, ns[ex.function], quiet=True)
        assert checked.status == "not done" and not checked.passed
        assert "not done yet" in checked.message and "reference solution" in checked.message
        assert checked.function is EXERCISES[ex.number].reference
        case = EXERCISES[ex.number].cases()[0]
        assert EXERCISES[ex.number].compare(checked(*case.args), EXERCISES[ex.number].reference(*case.args)) is None


def test_every_named_mistake_is_caught_by_some_case():
    """Each typical mistake differs from the reference on at least one case, and a learner who
    makes it gets its message (the cases really tell the mistakes apart)."""
    for ex in EXERCISES.values():
        for mistake in ex.mistakes:
            checked = run_check(ex.id, mistake.fn, quiet=True)
            assert checked.status == "wrong", (ex.id, mistake.message)
            assert mistake.message in checked.message, (ex.id, checked.message)


# ----------------------------------------------------------------------------------------------
# Typical wrong answers, written here, and the words they get
# ----------------------------------------------------------------------------------------------


def _lin_no_centre(pieces, sigma, gamma, proj):
    return (pieces * gamma / sigma[:, None, None]) @ proj


def _lin_no_sigma(pieces, sigma, gamma, proj):
    return ((pieces - pieces.mean(-1, keepdim=True)) * gamma) @ proj


def _lin_broadcast(pieces, sigma, gamma, proj):
    return ((pieces - pieces.mean(-1, keepdim=True)) * gamma / sigma) @ proj


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
    ("3.3", _role_kept_denominator, ["denominator is all n texts"]),
    ("3.3", _role_any_tag, ["ignored tag"]),
    ("3.3", _role_last_wins, ["chosen first"]),
    ("4.1", _hm_values_only, ["attention weights are missing"]),
    ("4.1", _hm_keep_cls, ["class token"]),
    ("4.1", _hm_transposed, ["row-major"]),
    ("4.1", _hm_no_bias, ["bias term is missing"]),
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


@pytest.mark.parametrize("exercise,fn,words", WRONG, ids=[f"{e}-{f.__name__}" for e, f, _ in WRONG])
def test_a_typical_wrong_answer_gets_plain_words(exercise, fn, words):
    checked = run_check(exercise, fn, quiet=True)
    assert not checked.passed and checked.status in ("wrong", "error")
    assert checked.function is EXERCISES[exercise].reference  # later cells get the reference
    assert "reference solution" in checked.message
    for w in words:
        assert w in checked.message, checked.message
    assert "\n" not in checked.message and "Traceback" not in checked.message


def test_at_least_two_wrong_answers_per_exercise():
    counts = {}
    for exercise, _, _ in WRONG:
        counts[exercise] = counts.get(exercise, 0) + 1
    assert set(counts) == set(EXERCISES) and min(counts.values()) >= 2, counts


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
    assert "constant factor: it is about 2 times" in check.tensor_diff(2 * e, e)
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
        assert [c.name for c in a] == [c.name for c in b] and len(a) >= 3, ex.id
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
    for ex in build_nb.exercises(src):
        assert f"Exercise {ex.number} ({ex.function}): not done yet" in text
        assert "correct on all" not in text
