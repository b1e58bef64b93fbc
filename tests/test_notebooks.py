"""Every notebook, executed headless with papermill on the offline default, and its figures
(and no stderr output: warnings or stray log lines).

Each notebook must have an entry in CHECKS: a new notebook without one makes
``test_every_notebook_is_checked`` fail.
"""

import math

import pytest

from helpers.main_job import execute_notebook, notebook_paths, stderr_outputs


def check_01(f):
    assert f["decomposition_max_rel_error_f32"] <= 1e-4
    assert f["decomposition_max_abs_error_f64"] <= 1e-10
    assert f["zero_shot_accuracy"] >= 2.5 / f["n_classes"]  # well above chance: the model reads the scenes
    # direct effects concentrate in the last attention layers
    assert f["variance_share_last4_attn"] > 0.5
    assert f["variance_share_last4_attn"] > 5 * f["variance_share_mlp"]
    assert all(t.startswith("attn.") for t in f["top_margin_terms"][:2])


def check_02(f):
    base = f["baseline_accuracy"]
    chance = 1 / f["n_classes"]
    assert base >= 2.5 * chance
    # the paper's pattern: MLPs and early attention layers matter little directly (<= 10 points)...
    assert base - f["mlps_ablated"] <= 0.10
    assert base - f["all_but_last_k_attn_ablated"] <= 0.10
    assert base - f["all_but_last_k_everything_ablated"] <= 0.10
    # ...while the last attention layers carry the prediction (the same 40-point bar as the model's tests)
    assert base - f["last_k_attn_ablated"] >= 0.40
    from_first = f["cumulative_from_first"]
    assert len(from_first) == f["n_layers"] and math.isclose(from_first[-1], f["cumulative_from_last"][-1])


CHECKS = {"01_residual_decomposition": check_01, "02_mean_ablation": check_02}


def test_every_notebook_is_checked():
    names = {p.stem for p in notebook_paths()}
    assert names, "no notebooks found"
    missing = names - set(CHECKS)
    assert not missing, f"notebooks without checks on their recorded figures: {sorted(missing)}"


@pytest.mark.slow
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs_and_records(path, tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_HEADLESS", raising=False)  # a plain papermill run finds it has no front end
    figures = execute_notebook(path, tmp_path, html=True)
    # no warnings or stray log lines in the executed notebook
    noisy = stderr_outputs(tmp_path / "notebooks" / path.name)
    assert not noisy, f"stderr output in cells {[i for i, _ in noisy]}: {noisy[0][1][:300]}"
    html = (tmp_path / "html" / f"{path.stem}.html").read_text()
    assert "Plotly.newPlot" in html, "plotly figures must survive the export to static HTML"
    assert figures, "the notebook recorded no figures"
    CHECKS[path.stem](figures)


def check_03(f):
    # some heads specialise, and every specialised head is about a factor the world really has
    assert f["heads_purity_ge_0.6"] >= 2, f["role_purities"]
    assert f["pure_roles_all_planted"] is True, f["pure_head_roles"]
    curves = f["accuracy_curves"]
    ts = curves["TextSpan (world)"]
    rnd = curves["random texts"]
    pca = curves["PCA"]
    small = min(ts, key=int)
    assert ts[small] >= rnd[small], (ts, rnd)
    big = max(ts, key=int)
    assert ts[big] >= f["baseline_accuracy"] - 0.10, (ts, f["baseline_accuracy"])
    assert pca[big] >= ts[big] - 0.05
    var = f["variance_explained_mean"]
    assert all(b >= a - 1e-9 for a, b in zip(var, var[1:]))
    assert 0 <= f["association"] <= 1 and 0 <= f["entanglement"] <= 1


CHECKS["03_textspan"] = check_03


def check_04(f):
    assert f["identity_max_error"] <= 1e-4  # maps + CLS + rest == similarity (float32)
    assert f["contrastive_linearity_error"] <= 1e-5  # map(a - b) == map(a) - map(b)
    # object maps find the objects: the same floor as the model's own test, and far above a whole-image map
    assert f["miou_colour"] >= 0.35 and f["miou_colour"] >= 3 * f["miou_colour_trivial"], f
    assert f["miou_shape"] >= 2 * f["miou_shape_trivial"], f
    assert f["map_colour"] >= f["map_colour_chance"] + 0.3, f  # soft maps rank object pixels first
    assert len(f["miou_colour_by_layer"]) == f["n_layers"]
    assert math.isclose(sum(f["map_mass_by_layer"]), 1.0, rel_tol=1e-6)


CHECKS["04_spatial_maps"] = check_04


def check_05(f):
    before, after = f["before"], f["after"]
    assert f["n_chosen"] >= 1 and len(f["chosen_heads"]) == f["n_chosen"]
    # the planted correlation hurts (the 10-point gap is asserted on fresh scenes in
    # tests/test_world_model.py; this notebook's 600 scenes show 8 points on world-v2)
    assert before["worst_group"] <= before["average"] - 0.05
    assert after["worst_group"] > f["random_worst_mean"]  # the chosen heads beat random ones
    assert math.isclose(f["worst_gain"], after["worst_group"] - before["worst_group"])
    assert math.isclose(f["average_change"], after["average"] - before["average"])
    assert sum(before["counts"].values()) == sum(after["counts"].values()) == 600
    assert f["random_worst_mean"] is not None and 0 <= f["random_worst_mean"] <= f["random_worst_max"] + 1e-9
    assert 0 <= f["shape_accuracy_on_groups"] <= 1 and 0 <= f["family_probe_after_ablation"] <= 1
    # the repair figures are asserted on the helpers directly, in
    # tests/test_world_model.py::test_ablating_background_heads_repairs_the_worst_group


CHECKS["05_waterbirds"] = check_05


def check_06(f):
    m = f["methods"]
    assert set(m) == {"decomposition", "raw_attention", "rollout", "gradcam", "chefer", "lrp", "partial_lrp"}
    for method, scores in m.items():
        assert all(0.0 <= scores[k] <= 1.0 for k in ("pixel accuracy", "mIoU", "mAP", "object AP")), (method, scores)
        assert math.isclose(scores["mIoU"], (scores["IoU foreground"] + scores["IoU background"]) / 2)
    assert f["provenance"] == "shaped"  # the takeaway says how the offline model was made
    assert m["decomposition"]["mIoU"] > m["rollout"]["mIoU"], m
    assert m["decomposition"]["mIoU"] >= f["all_foreground"]["mIoU"] + 0.2
    assert f["zero_shot_accuracy"] >= 0.9  # targets are the predictions: they should mostly be right
    assert math.isclose(f["miou_by_first_layer"][f"0-{len(f['miou_by_first_layer']) - 1}"],
                        f["miou_all_layers_subset"])
    # the per-layer maps summed over all layers are the segmenter's map (all 200 images: the same mIoU)
    assert abs(f["miou_all_layers_subset"] - m["decomposition"]["mIoU"]) < 2e-3, f["miou_all_layers_subset"]
    ranked = [m[k]["mIoU"] for k in f["miou_ranking"]]
    assert sorted(f["miou_ranking"]) == sorted(m) and ranked == sorted(ranked, reverse=True)
    # the generated sentences name the leaders: each is the best method on its metric
    leaders = f["leaders"]
    assert set(leaders) == {"one object", "two objects"}
    for where, source in (("one object", m), ("two objects", f["pairs"])):
        assert set(leaders[where]) == {"pixel accuracy", "mIoU", "mAP", "object AP"}
        for metric, best in leaders[where].items():
            assert source[best][metric] == max(v[metric] for v in source.values()), (where, metric)
    # timing: every method timed in both tables, after a warm-up; the decomposition (forward only)
    # outruns LRP (a relevance pass through every layer) by far
    rate = f["images_per_second_both"]
    for table in (f["images_per_second"], f["images_per_second_pairs"]):
        assert set(table) == set(m) and all(v > 0 for v in table.values())
    assert all(min(f["images_per_second"][k], f["images_per_second_pairs"][k]) - 1e-9 <= rate[k]
               <= max(f["images_per_second"][k], f["images_per_second_pairs"][k]) + 1e-9 for k in m)
    assert rate["decomposition"] > 2 * rate["lrp"], rate
    rel = f["speed_vs_decomposition"]  # within each table, so changes of load between the tables cancel
    assert set(rel) == set(m) and math.isclose(rel["decomposition"], 1.0) and rel["lrp"] < 0.5, rel
    assert f["timing_spread_between_tables"] >= 1.0
    pairs = f["pairs"]
    assert set(pairs) == set(m)
    # two objects, one mask: a class-agnostic map cannot pick the named object
    assert pairs["rollout"]["IoU foreground"] < m["rollout"]["IoU foreground"]
    assert pairs["decomposition"]["object AP"] > pairs["rollout"]["object AP"], pairs
    assert all(pairs["decomposition"]["mIoU"] > pairs[b]["mIoU"] for b in ("rollout", "raw_attention")), pairs
    # what the class direction buys (the takeaway): ahead of the better class-agnostic map on both
    gain = f["class_direction_gain_pairs"]
    for k in ("mIoU", "object AP"):
        assert math.isclose(gain[k], pairs["decomposition"][k] - max(pairs[b][k] for b in ("rollout", "raw_attention")))
        assert gain[k] > 0.02, gain
    # where the maps put their weight: the figures behind the notebook's explanation
    shares = f["mass_on_object"]
    assert set(shares) == {"one object", "two objects: the named one"}
    assert all(set(v) == set(m) and all(0.0 <= x <= 1.0 for x in v.values()) for v in shares.values()), shares
    two = shares["two objects: the named one"]
    assert two["decomposition"] > two["raw_attention"] + 0.05, two  # the class direction picks the named object
    assert shares["one object"]["raw_attention"] > 0.8, shares  # "looks almost only at the object"
    lm = f["layer_mass"]
    assert len(lm["on"]) == len(lm["off"]) == len(lm["against"]) == len(f["miou_by_first_layer"])
    assert all(x >= 0 for v in lm.values() for x in v)
    assert f["off_mass_share_before_last_layer"] > 0.5  # earlier layers read the class off the object
    assert f["against_over_on_last_layer"] > 0.05  # the last layer writes against the class on the object
    ratio = f["patch_norm_ratio"]
    assert len(ratio["mean"]) == len(ratio["max"]) == len(lm["on"])
    assert all(1.0 <= a <= b for a, b in zip(ratio["mean"], ratio["max"]))
    assert max(ratio["max"]) < 5  # the notebook's reading: no outsized background tokens offline
    # the same comparisons on fresh scenes, with the helpers: tests/test_world_model.py


CHECKS["06_zero_shot_segmentation"] = check_06
