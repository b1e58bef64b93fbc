"""Sentences generated from values: formats and comparisons that read right either way."""

import math

import pytest

from helpers.course.narrative import bullets, compare, num, pct, pts, ranking, ratio, verdict, what_we_see


def test_formats():
    assert pct(0.9301) == "93.0%"
    assert pct(0.5, digits=0) == "50%"
    assert pts(-0.031) == "\u22123.1 points"
    assert pts(0.1) == "+10.0 points"
    assert pts(0.0001) == "0.0 points"  # rounds to zero: no sign
    assert ratio(1.934) == "1.93\u00d7"
    assert num(0.8383333333333333) == "0.838"
    assert num(-0.25) == "\u22120.250"
    assert num(5.8e-16) == "5.80e\u221216"
    assert pct(float("nan")) == "n/a" and num(math.nan) == "n/a"
    with pytest.raises(TypeError, match="must be a number"):
        pct("high")


def test_compare_says_which_side_is_ahead():
    s = compare(0.62, 0.64, "the decomposition", "rollout", what="mIoU")
    assert s == "the decomposition does **not** beat rollout on mIoU (0.620 vs 0.640)."
    assert compare(0.64, 0.62, "A", "B").startswith("A beats B")
    # lower is better (e.g. an error or a cost)
    assert compare(0.1, 0.2, "A", "B", higher_is_better=False).startswith("A beats B")
    assert compare(0.5, 0.5004, "A", "B", tie=0.001).startswith("A and B are level")
    assert compare(0.93, 0.5, "A", "B", as_pct=True, digits=1).endswith("(93.0% vs 50.0%).")


def test_ranking_and_verdict():
    r = ranking({"decomposition": 0.62, "rollout": 0.64, "raw attention": 0.62})
    assert r.startswith("rollout (0.640) > ")
    assert "decomposition (0.620) = raw attention (0.620)" in r or "raw attention (0.620) = decomposition (0.620)" in r
    assert ranking({"a": 1.0, "b": 2.0}, higher_is_better=False) == "a (1.000) < b (2.000)"
    with pytest.raises(ValueError):
        ranking({})
    assert verdict(3 > 2, "held", "did not hold") == "held"
    assert verdict(False, "held", "did not hold") == "did not hold"


def test_what_we_see_builds_markdown(capsys):
    text = what_we_see("One.", "", "Two.")
    assert text == "**What we see**\n\n* One.\n* Two."
    assert "* Two." in capsys.readouterr().out  # outside IPython it prints
    with pytest.raises(ValueError):
        bullets(["", " "])


def test_provenance_reading_reads_right_for_every_kind():
    from types import SimpleNamespace

    from helpers.course.narrative import provenance_reading

    shaped = SimpleNamespace(kind="shaped", note="Trained with a penalty.")
    s = provenance_reading(shaped, True, pattern="the pattern")
    assert s.startswith("Trained with a penalty. ") and "confirms how the model was trained" in s
    assert "the pattern does **not** show here" in provenance_reading(shaped, False, pattern="the pattern")
    assert "it was learned" in provenance_reading("web", True)
    assert "does **not** show" in provenance_reading("web", False)
    for found in (True, False):
        assert "nothing can be concluded" in provenance_reading("random", found)
    assert "not known here" in provenance_reading("unknown", True)
    assert "without being pushed" in provenance_reading("plain", True)


def test_pm_writes_a_figure_with_its_standard_error():
    from helpers.course.narrative import pm

    assert pm(0.7, 0.0144, as_pct=True) == "70.0% \u00b1 1.4 points"
    assert pm(0.512, 0.031) == "0.512 \u00b1 0.031"
    assert pm(0.5, None) == "0.500" and pm(0.5, float("nan"), as_pct=True) == "50.0%"
    assert pm(0.51234, 0.0123, digits=2) == "0.51 \u00b1 0.01"


def test_rate_difference_says_level_within_noise_or_which_side():
    from types import SimpleNamespace

    from helpers.course.narrative import rate_difference

    def comp(a, b, low, high):
        return SimpleNamespace(rate_a=a, rate_b=b, difference=a - b, low=low, high=high, level=0.95, n_clusters=56,
                               within_noise=low <= 0 <= high)

    s = rate_difference(comp(0.076, 0.027, 0.011, 0.096), "Adversarial words", "random words", unit="class pairs")
    assert s.startswith("Adversarial words is higher than random words, beyond noise (7.6% vs 2.7%")
    assert "difference +4.9 points, 95% interval +1.1 points to +9.6 points, resampling 56 class pairs" in s
    s = rate_difference(comp(0.02, 0.05, -0.06, -0.01), "A", "B", what="on shapes")
    assert s.startswith("A is lower than B on shapes, beyond noise")
    s = rate_difference(comp(0.058, 0.033, -0.007, 0.063), "A", "B")
    assert s.startswith("A and B are level within noise (5.8% vs 3.3%") and "56 trials" in s
