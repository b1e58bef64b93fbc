"""The metrics module is the one home of mask metrics: its measures on hand-made maps, and the
old import paths pointing at the same functions."""

import numpy as np
import pytest
import torch

from helpers.methods import metrics


def test_one_home_for_every_metric():
    from helpers.data import world_eval
    from helpers.methods import maps, segmentation, spatial

    # maps: upsampling, post-processing and thresholds; metrics: scores; both used, never copied
    assert spatial.upsample is maps.upsample and metrics.upsample is maps.upsample
    assert segmentation.postprocess is maps.postprocess and metrics.postprocess is maps.postprocess
    assert metrics.threshold_map is maps.threshold_map and spatial.threshold_map is maps.threshold_map
    assert segmentation.SegmentationScores is metrics.SegmentationScores
    assert segmentation.mass_by_region is metrics.mass_by_region
    assert world_eval.map_iou is metrics.map_iou


def test_map_iou_by_hand():
    maps = torch.tensor([[[-1.0, 3.0], [1.0, 0.0]],    # clipped mean 1: keeps the 3 only
                         [[0.0, 0.0], [0.0, 0.0]],     # keeps nothing
                         [[2.0, 2.0], [0.0, 0.0]]])    # clipped mean 1: keeps the top row
    masks = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[0, 1], [1, 0]]], dtype=bool)
    # 1 shared of 2 covered; both empty counts 0 here; 1 shared of 3 covered
    assert metrics.map_iou(maps, masks).tolist() == pytest.approx([1 / 2, 0.0, 1 / 3])


def test_map_scores_by_hand():
    maps = torch.tensor([[[0.875, 0.125], [0.5, 0.25]]])  # clipped mean 0.4375: keeps 0.875 and 0.5
    truth = torch.tensor([[[False, True], [True, False]]])
    s = metrics.map_scores(maps, truth)
    assert s["object IoU"] == pytest.approx(1 / 3)       # {0.875, 0.5} vs {0.125, 0.5}
    assert s["pixel accuracy"] == pytest.approx(0.5)
    assert s["object AP"] == pytest.approx(0.5)           # ranking F, T, F, T: precisions 1/2, 2/4
    # the paper's AP ranks the map (object) and 1 - map (background) together, ties as one step:
    # (values exact in binary, so 1 - map ties where it should)
    # 0.875 F F | 0.75 T | 0.5 F T | 0.25 F | 0.125 T T -> precisions 1/3, 2/5, 4/8, 4/8
    assert s["mAP"] == pytest.approx((1 / 3 + 2 / 5 + 1 / 2 + 1 / 2) / 4)
    # at a coarser grid the maps are upsampled to the masks first: a constant map stays constant
    coarse = metrics.map_scores(torch.ones(1, 1, 1), truth)
    assert coarse["pixel accuracy"] == pytest.approx(0.5) and coarse["object IoU"] == 0.0


def test_threshold_in_the_maps_own_precision():
    soft = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    own = metrics.threshold_map(soft, dtype=None)
    assert torch.equal(own, soft > soft.mean((-2, -1), keepdim=True))
    assert torch.equal(metrics.threshold_map(soft, 0.4, dtype=None), soft > 0.4)
    from helpers.methods.segmentation import segment

    s, hard = segment(soft, (5, 5))
    assert torch.equal(hard, metrics.threshold_map(s, dtype=None))


def test_map_scores_map_is_scale_free():
    # the paper's AP is taken after the paper's post-processing: scaling a map changes nothing
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(4, 4, 4, generator=g)
    truth = torch.rand(4, 8, 8, generator=g) > 0.7
    a, b = metrics.map_scores(maps, truth), metrics.map_scores(1e-3 * maps, truth)
    assert a == pytest.approx(b)
    from helpers.methods.maps import postprocess

    soft = postprocess(maps, (8, 8))
    assert a["mAP"] == pytest.approx(float(metrics.average_precision(soft, truth, protocol="paper").mean()))


def test_baseline_scores_by_hand():
    truth = torch.zeros(2, 4, 4, dtype=torch.bool)
    truth[0, :1] = True            # a quarter of the image
    truth[1, :3] = True            # three quarters
    b = metrics.baseline_scores(truth, (2, 2))
    assert set(b) == set(metrics.BASELINES)
    assert b["object IoU"] == pytest.approx((0.25 + 0.75) / 2)   # a full mask: IoU = the region's share
    assert b["pixel accuracy"] == pytest.approx(0.75)            # empty for the first, full for the second
    assert 0 <= b["mAP"] <= 1 and 0 <= b["object AP"] <= 1
    assert b == metrics.baseline_scores(truth, (2, 2))           # seeded


def test_map_coverage_by_hand():
    maps = torch.tensor([[[4.0, 0.0], [0.0, 0.0]],    # keeps the top-left patch: a quarter
                         [[1.0, 1.0], [1.0, -1.0]]])  # clipped mean 0.75: keeps three patches
    truth = torch.zeros(2, 2, 2, dtype=torch.bool)   # at the grid's size: no upsampling
    truth[:, :1] = True                               # the top half
    c = metrics.map_coverage(maps, truth)
    assert c["kept"] == pytest.approx((0.25 + 0.75) / 2)
    assert c["region"] == pytest.approx(0.5)
    assert c["IoU bound"] == pytest.approx((0.25 / 0.5 + 0.5 / 0.75) / 2)
    assert c["mean inside"] == pytest.approx((2.0 + 1.0) / 2)
    assert c["mean outside"] == pytest.approx((0.0 + 0.0) / 2)


# ---------------------------------------------------------------------------------------------
# Sampling errors of figures measured on a subset


def test_proportion_se_by_hand():
    from helpers.methods.metrics import proportion_se

    assert proportion_se(0.7, 2000, 50000) == pytest.approx(0.0100, abs=5e-5)
    assert proportion_se(0.7, 1000, 50000) == pytest.approx(0.01435, abs=5e-5)
    # Waterbirds' small groups: about 110 of 642 images each
    assert proportion_se(0.5, 110, 642) == pytest.approx(0.0434, abs=5e-5)
    assert proportion_se(0.73, 110, 642) == pytest.approx(0.0386, abs=5e-5)
    assert proportion_se(0.5, 222, 642) == pytest.approx(0.0272, abs=5e-5)
    assert proportion_se(0.5, 100) == pytest.approx(0.05)  # no population: the binomial error
    assert proportion_se(0.3, 642, 642) == 0.0  # the whole population: no sampling error
    with pytest.raises(ValueError, match="smaller than the sample"):
        proportion_se(0.5, 10, 5)
    with pytest.raises(ValueError, match="proportion"):
        proportion_se(1.5, 10)


def test_bootstrap_se():
    from helpers.methods.metrics import bootstrap_se

    x = np.random.default_rng(3).normal(size=400)
    se = bootstrap_se(np.mean, x, B=2000, seed=0)
    assert se == pytest.approx(x.std(ddof=1) / np.sqrt(400), rel=0.1)
    assert bootstrap_se(lambda v: 1.0, x, B=50) == 0.0
    assert bootstrap_se(np.mean, x, B=2000, seed=0, population=1600) == pytest.approx(se * np.sqrt(0.75))
    assert bootstrap_se(np.mean, x, B=200, seed=1) == bootstrap_se(np.mean, x, B=200, seed=1)  # seeded
    with pytest.raises(ValueError, match="2 items"):
        bootstrap_se(np.mean, x[:1])


def test_segmentation_scores_keep_per_image_counts_and_errors():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(12, 8, 8, generator=g) > 0.6
    soft = torch.rand(12, 8, 8, generator=g, dtype=torch.float64)
    pred = soft > 0.5
    s = metrics.SegmentationScores().update(soft[:5], pred[:5], truth[:5]).update(soft[5:], pred[5:], truth[5:])
    c = s.counts()
    assert c.shape == (12, 6) and c[:, 1].tolist() == [64] * 12
    assert c[:, 0].sum() == s.correct and (c[:, 2:4].sum(0) == s.inter).all() and (c[:, 4:6].sum(0) == s.union).all()
    assert c[3, 3] == int((pred[3] & truth[3]).sum()) and c[3, 4] == int((~pred[3] | ~truth[3]).sum())
    se = s.standard_errors(B=200)
    assert set(se) == {"pixel accuracy", "mIoU", "mAP", "object AP"} and all(v > 0 for v in se.values())
    whole = s.standard_errors(population=12, B=200)  # every image of the population: no sampling error
    assert all(v == 0 for v in whole.values())
    ap = np.array(s.ap_paper)
    assert se["mAP"] == pytest.approx(ap.std(ddof=1) / np.sqrt(12))
