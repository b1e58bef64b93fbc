"""The paired bootstrap (helpers.methods.stats): a batched statistic gives the same interval as
one draw at a time, and the segmentation scores bootstrap as they are accumulated."""

import numpy as np
import pytest
import torch

from helpers.methods.metrics import SegmentationScores
from helpers.methods.stats import SEGMENTATION_STATISTICS, batched, paired_bootstrap, segmentation_items


def _one_at_a_time(statistic):
    """The same statistic without the batched mark: paired_bootstrap calls it once per draw."""
    return lambda parts: float(statistic(parts))


def _parts(rng, n):
    d = {k: rng.integers(0, 400, n) for k in ("correct", "inter_fg", "inter_bg")}
    d["pixels"] = np.full(n, 1024)
    d["union_fg"] = d["inter_fg"] + rng.integers(1, 300, n)
    d["union_bg"] = d["inter_bg"] + rng.integers(1, 300, n)
    d["ap_object"] = rng.random(n)
    d["ap_paper"] = np.where(rng.random(n) < 0.2, np.nan, rng.random(n))  # images without an AP
    return d


@pytest.mark.parametrize("n", [2, 37, 200])
@pytest.mark.parametrize("name", sorted(SEGMENTATION_STATISTICS))
def test_batched_statistics_give_the_intervals_of_one_draw_at_a_time(name, n):
    rng = np.random.default_rng(n)
    a, b = _parts(rng, n), _parts(rng, n)
    stat = SEGMENTATION_STATISTICS[name]
    assert getattr(stat, "batched", False)
    fast = paired_bootstrap(a, b, stat, n_boot=300, seed=4)
    slow = paired_bootstrap(a, b, _one_at_a_time(stat), n_boot=300, seed=4)
    for field in ("a", "b", "low", "high"):
        assert getattr(fast, field) == pytest.approx(getattr(slow, field), abs=1e-12), field
    assert fast.basis == slow.basis and fast.n == slow.n == n


def test_the_default_mean_leaves_out_nans_and_infinities_in_every_draw():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=150), rng.normal(size=150)
    a[::5] = np.nan
    a[3] = np.inf  # left out too: not a finite value
    fast = paired_bootstrap(a + 0.2, b, n_boot=500)

    def plain_mean(x):
        x = np.asarray(x, dtype=np.float64)
        return float(x[np.isfinite(x)].mean())

    slow = paired_bootstrap(a + 0.2, b, plain_mean, n_boot=500)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high), abs=1e-12)
    assert fast.a == pytest.approx(np.mean((a + 0.2)[np.isfinite(a)]))


def test_many_items_are_drawn_in_blocks_with_the_same_draws():
    # 20,000 items: blocks of a dozen draws; the interval is that of one draw at a time
    rng = np.random.default_rng(1)
    a = rng.normal(size=20_000)
    b = a + rng.normal(scale=0.1, size=a.size)
    fast = paired_bootstrap(a, b, n_boot=100)
    slow = paired_bootstrap(a, b, lambda x: float(np.mean(x)), n_boot=100)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high), abs=1e-12)


def test_a_default_mean_over_several_values_per_item_takes_them_all():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    d = paired_bootstrap(a, b, n_boot=200)
    assert d.a == pytest.approx(a.mean()) and d.b == pytest.approx(b.mean())
    assert d.low <= d.diff <= d.high


def test_a_custom_batched_statistic_is_called_once_per_block():
    calls = []

    @batched
    def median_gap(parts):
        calls.append(np.shape(parts[0]))
        return np.median(parts[0] - parts[1], axis=-1)

    rng = np.random.default_rng(3)
    x = (rng.normal(size=60), rng.normal(size=60))
    y = (rng.normal(size=60), rng.normal(size=60))
    d = paired_bootstrap(x, y, median_gap, n_boot=400)
    assert calls[:2] == [(60,), (60,)] and calls[2] == (400, 60) and len(calls) == 4
    slow = paired_bootstrap(x, y, lambda p: float(np.median(p[0] - p[1])), n_boot=400)
    assert (d.low, d.high) == pytest.approx((slow.low, slow.high), abs=1e-12)


def test_segmentation_statistics_equal_the_accumulated_scores():
    g = torch.Generator().manual_seed(0)
    soft = torch.rand(6, 16, 16, generator=g)
    truth = torch.zeros(6, 16, 16, dtype=torch.bool)
    truth[:, 4:10, 3:12] = True
    pred = soft > 0.6
    scores = SegmentationScores()
    scores.update(soft, pred, truth)
    got = scores.summary()
    parts = segmentation_items(soft, pred, truth)
    assert set(got) == set(SEGMENTATION_STATISTICS)
    for name, stat in SEGMENTATION_STATISTICS.items():
        assert stat(parts) == pytest.approx(got[name], abs=1e-9), name
