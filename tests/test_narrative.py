"""Sentences generated from values: formats and comparisons that read right either way."""

import math

import numpy as np
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
    s = compare(0.62, 0.64, "the decomposition", "rollout", what="mIoU", tolerance=0.005)
    assert s.startswith("the decomposition does **not** beat rollout on mIoU (0.620 vs 0.640; difference "), s
    assert "a stated tolerance of 0.005" in s
    assert compare(0.64, 0.62, "A", "B", tolerance=0.005).startswith("A beats B")
    # lower is better (e.g. an error or a cost)
    assert compare(0.1, 0.2, "A", "B", higher_is_better=False, tolerance=0.01).startswith("A beats B")
    assert compare(0.5, 0.5004, "A", "B", tie=0.001).startswith("A and B are within noise of each other")
    assert compare(0.93, 0.5, "A", "B", as_pct=True, digits=1, tolerance=0.01).startswith("A beats B (93.0% vs 50.0%;")
    with pytest.raises(TypeError, match="needs its evidence"):
        compare(0.7, 0.6, "A", "B")


def test_comparative_words_weigh_the_noise():
    from helpers.course.narrative import WITHIN_NOISE, comparative, leader
    from helpers.methods.stats import paired_bootstrap, with_tolerance

    rng = np.random.default_rng(0)
    base = rng.normal(size=200)
    clear = paired_bootstrap(base + 0.5, base)  # the same items, one method clearly ahead
    noisy = paired_bootstrap(base + 0.01 + rng.normal(scale=0.5, size=200), base)  # a small gap in much noise
    assert clear.side == 1 and clear.n == 200 and "paired bootstrap over 200 images" in clear.basis
    assert noisy.side == 0 and noisy.low < 0 < noisy.high
    assert comparative(clear, "more tightly", "less tightly") == "more tightly"
    assert comparative(noisy, "more tightly", "less tightly") == WITHIN_NOISE
    assert comparative(paired_bootstrap(base, base + 0.5), "beats", "trails") == "trails"
    assert comparative(with_tolerance(0.1, 0.2, 0.01), "beats", "trails", higher_is_better=False) == "beats"
    # the sentence: 0.706 vs 0.689 on 200 images is not a win when the images disagree
    assert "within noise" in compare(noisy.a, noisy.b, "A", "B", evidence=noisy)
    assert "beats" in compare(clear.a, clear.b, "A", "B", evidence=clear)
    # leaders: alone when ahead of every other beyond the noise, together otherwise
    assert leader({"A": 0.9, "B": 0.5}, {"B": clear}) == "A (0.900) leads"
    assert leader({"A": 0.707, "B": 0.706, "C": 0.2}, {"B": noisy, "C": clear}) == \
        "A (0.707) and B (0.706) lead together, within noise"


def test_a_figure_against_its_shuffles():
    from helpers.course.narrative import WITHIN_NOISE, comparative, evidence_note
    from helpers.methods.stats import permutation_difference

    shuffles = np.linspace(0.9, 1.1, 41)  # the middle 95%: 0.905 to 1.095
    above = permutation_difference(1.5, shuffles)
    assert above.side == 1 and above.b == pytest.approx(1.0) and above.low == pytest.approx(1.5 - 1.095)
    assert "the middle 95% of 41 shuffles" in evidence_note(above)
    assert comparative(permutation_difference(1.05, shuffles), "fits", "misfits") == WITHIN_NOISE
    assert permutation_difference(0.5, shuffles).side == -1
    with pytest.raises(ValueError, match="at least two shuffles"):
        permutation_difference(1.0, [float("nan"), 1.0])


def test_a_claim_is_judged_once():
    from helpers.course.narrative import Claim
    from helpers.methods.stats import with_tolerance

    roles = Claim.share("the two spans name the same roles", 15, 16, at_least=0.9, unit="heads")
    assert roles.held and str(roles) == ("*the two spans name the same roles* **held** (15 of 16 heads; the claim "
                                         "asks for at least 90%)")
    assert not Claim.share("x", 15, 16, at_least=1.0).held and "did **not** hold" in str(Claim.share("x", 1, 2, 1.0))
    assert Claim("close", with_tolerance(0.5, 0.49, 0.02)).status == "within noise"
    assert "not settled (within noise)" in str(Claim("close", with_tolerance(0.5, 0.49, 0.02)))


def test_numbers_are_written_alike_and_add_up_as_shown():
    from helpers.course.narrative import nums, provenance_phrase, shown_sum

    assert nums(-2.23e-4, -0.002) == ["\u22122.23e\u221204", "\u22122.00e\u221203"]  # one notation for both
    assert nums(0.5, 0.25) == ["0.50", "0.25"]
    # 1 - attention - rest = covariance, as shown: the shown numbers add up
    attn, rest = 1.0649, 0.0251
    shown = shown_sum(1.0, [attn, rest, 1 - attn - rest])
    assert shown[:2] == ["1.06", "0.03"]
    assert float(shown[2].replace("\u2212", "-")) == pytest.approx(1 - 1.06 - 0.03)
    assert "penalty" in provenance_phrase("shaped") and "web" in provenance_phrase("web")


def test_ranking_and_verdict():
    assert ranking({"a": 0.7071, "b": 0.7068}) == "a (0.707) = b (0.707)"  # equal as shown
    r = ranking({"decomposition": 0.62, "rollout": 0.64, "raw attention": 0.62})
    assert r.startswith("rollout (0.640) > ")
    assert "decomposition (0.620) = raw attention (0.620)" in r or "raw attention (0.620) = decomposition (0.620)" in r
    assert ranking({"a": 1.0, "b": 2.0}, higher_is_better=False) == "a (1.000) < b (2.000)"
    with pytest.raises(ValueError):
        ranking({})
    assert verdict(3 > 2, "held", "did not hold") == "held"
    assert verdict(False, "held", "did not hold") == "did not hold"


def test_what_we_see_builds_markdown(capsys, monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # an IPython shell made by another test is not ours
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
