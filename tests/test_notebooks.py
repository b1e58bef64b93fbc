"""Every notebook, executed headless with papermill on the offline default, and its figures.

Each notebook must have an entry in CHECKS: a new notebook without one makes
``test_every_notebook_is_checked`` fail.
"""

import math

import pytest

from helpers.main_job import execute_notebook, notebook_paths


def check_01(f):
    assert f["decomposition_max_rel_error_f32"] <= 1e-4
    assert f["decomposition_max_abs_error_f64"] <= 1e-10
    assert f["zero_shot_accuracy"] >= 0.9
    # direct effects concentrate in the last attention layers
    assert f["variance_share_last4_attn"] > 0.5
    assert f["variance_share_last4_attn"] > 5 * f["variance_share_mlp"]
    assert all(t.startswith("attn.") for t in f["top_margin_terms"][:2])


def check_02(f):
    base = f["baseline_accuracy"]
    assert base >= 0.9
    # the paper's pattern: MLPs and early attention layers matter little directly...
    assert base - f["mlps_ablated"] <= 0.10
    assert base - f["all_but_last_k_attn_ablated"] <= 0.10
    assert base - f["all_but_last_k_everything_ablated"] <= 0.10
    # ...while the last attention layers carry the prediction
    assert f["last_k_attn_ablated"] <= base - 0.4
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
    monkeypatch.setenv("COURSE_HEADLESS", "1")
    figures = execute_notebook(path, tmp_path, html=True)
    assert (tmp_path / "html" / f"{path.stem}.html").stat().st_size > 10_000
    assert figures, "the notebook recorded no figures"
    CHECKS[path.stem](figures)
