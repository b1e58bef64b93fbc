"""Group metrics, head ranking with a planted background head, the ablation evaluator, and the
Waterbirds loader (offline failure, a fake extracted copy)."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data.pools import Pool
from helpers.data.waterbirds import waterbirds_task
from helpers.engine.download import OfflineError
from helpers.methods.ablation import DirectTerms
from helpers.methods.heads import head_roles
from helpers.methods.spurious import (
    PAPER_HEADS,
    WATERBIRDS_GROUPS,
    GroupEvaluator,
    choose_heads,
    group_metrics,
    random_heads,
    rank_heads,
)
from helpers.methods.textspan import textspan


def test_group_metrics_by_hand():
    labels = [0, 0, 0, 1, 1, 1, 0, 1]
    pred = [0, 0, 1, 1, 0, 1, 0, 0]
    groups = [0, 0, 0, 3, 3, 3, 1, 2]
    m = group_metrics(pred, labels, groups, WATERBIRDS_GROUPS)
    assert m.groups == {"landbird on land": pytest.approx(2 / 3), "landbird on water": 1.0,
                        "waterbird on land": 0.0, "waterbird on water": pytest.approx(2 / 3)}
    assert m.counts == {"landbird on land": 3, "landbird on water": 1, "waterbird on land": 1,
                        "waterbird on water": 3}
    assert m.average == pytest.approx(5 / 8)
    assert m.group_mean == pytest.approx((2 / 3 + 1 + 0 + 2 / 3) / 4)
    assert m.worst_group == 0.0 and m.worst_name == "waterbird on land"


def test_group_metrics_skips_empty_groups_and_checks_input():
    m = group_metrics(torch.tensor([1, 1]), torch.tensor([1, 0]), torch.tensor([2, 2]))
    assert list(m.groups) == ["group 2"] and m.worst_group == 0.5
    with pytest.raises(ValueError, match="length"):
        group_metrics([0], [0, 1], [0, 0])
    with pytest.raises(ValueError, match="only 2 names"):
        group_metrics([0], [0], [3], ["a", "b"])
    with pytest.raises(ValueError, match="non-negative"):
        group_metrics([0], [0], [-1])


def _planted(seed=0):
    """A tagged pool of random text directions, and 4 heads: head 2 writes along background
    texts only, the others along colour texts."""
    g = torch.Generator().manual_seed(seed)
    d, K = 32, 400
    R = torch.nn.functional.normalize(torch.randn(24, d, generator=g, dtype=torch.float64), dim=-1)
    tags = ["background"] * 8 + ["colour"] * 8 + ["shape"] * 8
    pool = Pool(name="planted", texts=[f"{t} {i}" for i, t in enumerate(tags)], properties=tags,
                values=[str(i) for i in range(24)])
    stack = []
    for h in range(4):
        block = slice(0, 8) if h == 2 else slice(8, 16)
        coef = torch.randn(K, 8, generator=g, dtype=torch.float64)
        stack.append(coef @ R[block] + 0.01 * torch.randn(K, d, generator=g, dtype=torch.float64))
    return torch.stack(stack), R, pool


def test_rank_heads_finds_the_planted_background_head():
    stack, R, pool = _planted()
    res = textspan(stack, R, 5)
    roles = head_roles(res, pool, [(3, h) for h in range(4)])
    ranking = rank_heads(roles, ["background"])
    assert (ranking[0].layer, ranking[0].head) == (3, 2)
    assert ranking[0].score > 0.9 and all(s.score < 0.1 for s in ranking[1:])
    assert choose_heads(ranking, min_score=0.5) == [(3, 2)]
    assert choose_heads(ranking, min_score=0.0, max_heads=2) == [(ranking[0].layer, ranking[0].head),
                                                                 (ranking[1].layer, ranking[1].head)]
    assert len(ranking[0].texts) == 5 and all(t.startswith("background") for t in ranking[0].texts)
    with pytest.raises(ValueError):
        rank_heads(roles, [])
    with pytest.raises(ValueError):
        choose_heads(ranking, min_score=1.5)


def test_random_heads_control():
    a = random_heads(3, [2, 3], 4, exclude=[(3, 2)], seed=1)
    assert len(set(a)) == 3 and (3, 2) not in a and all(l in (2, 3) for l, _ in a)
    assert a == random_heads(3, [2, 3], 4, exclude=[(3, 2)], seed=1)
    with pytest.raises(ValueError, match="cannot draw"):
        random_heads(9, [0], 4)


def test_group_evaluator_ablation_removes_a_planted_shortcut():
    # two classes along e0/e1; head (1, 1) writes the background strongly, head (1, 0) the label weakly
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 2, n)
    place = np.where(rng.random(n) < 0.5, labels, 1 - labels)  # balanced groups
    d = 4
    e = torch.eye(d, dtype=torch.float64)
    heads = torch.zeros(n, 2, 2, d, dtype=torch.float64)
    heads[:, 1, 0] = 0.5 * (e[torch.as_tensor(labels)] - 0.5 * (e[0] + e[1])) + 0.05 * e[2]
    heads[:, 1, 1] = 2.0 * (e[torch.as_tensor(place)] - 0.5 * (e[0] + e[1]))
    attn = heads.sum(2)
    terms = DirectTerms(embed=torch.zeros(n, d, dtype=torch.float64) + 0.1 * e[3], attn=attn,
                        mlp=torch.zeros(n, 2, d, dtype=torch.float64), const=torch.zeros(d, dtype=torch.float64),
                        heads=heads)
    ev = GroupEvaluator(terms, e[:2], labels, 2 * labels + place, WATERBIRDS_GROUPS)
    before, after, wrong = ev(), ev([(1, 1)]), ev([(1, 0)])
    assert before.worst_group == 0.0 and before.average == pytest.approx(0.5, abs=0.05)
    assert after.worst_group == 1.0 and after.average == 1.0
    assert wrong.worst_group == 0.0
    with pytest.raises(ValueError, match="heads=True"):
        GroupEvaluator(DirectTerms(terms.embed, terms.attn, terms.mlp, terms.const), e[:2], labels, labels)


def test_paper_heads_are_in_range():
    for name, (L, H) in {"ViT-L-14": (24, 16), "ViT-B-16": (12, 12)}.items():
        pairs = PAPER_HEADS[name]
        assert len(set(pairs)) == len(pairs)
        assert all(0 <= l < L and 0 <= h < H for l, h in pairs)


def test_waterbirds_offline_fails_fast_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_COURSE_CACHE", str(tmp_path))
    monkeypatch.setenv("CLIP_COURSE_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(OfflineError, match="Waterbirds"):
        waterbirds_task(lambda im: im)
    assert time.perf_counter() - t0 < 10
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_waterbirds_from_an_extracted_copy(tmp_path):
    rows = ["img_id,img_filename,y,split,place,place_filename"]
    k = 0
    for split in (0, 2):
        for y in (0, 1):
            for place in (0, 1):
                for _ in range(3 if split == 2 else 1):
                    name = f"{k:03d}.Bird/img_{k}.jpg"
                    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (40, 30), (k, 0, 0)).save(tmp_path / name)
                    rows.append(f"{k},{name},{y},{split},{place},/x/y.jpg")
                    k += 1
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    pre = lambda im: torch.as_tensor(np.array(im.resize((8, 8)))).permute(2, 0, 1).float()  # noqa: E731
    task = waterbirds_task(pre, "test", root=tmp_path)
    assert len(task) == 12
    assert task.groups.tolist() == (2 * task.labels + task.places).tolist()
    assert sorted(np.bincount(task.groups.numpy()).tolist()) == [3, 3, 3, 3]
    x, i = task.dataset[0]
    assert x.shape == (3, 8, 8) and i == 0
    assert set(task.prompts) == {"landbird", "waterbird"}
    sub = waterbirds_task(pre, "test", root=tmp_path, n=8, seed=0)
    assert np.bincount(sub.groups.numpy(), minlength=4).tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="split"):
        waterbirds_task(pre, "holdout", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        waterbirds_task(pre, "test", root=tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# The reference code's repair protocol


def test_repair_ablation_sets_equal_hand_built_masks():
    from helpers.methods.spurious import repair_ablation

    heads = PAPER_HEADS["ViT-B-16"]
    # by hand: ViT-B-16 has 12 layers of 12 heads; the paper's repair removes the 7 heads,
    # every head of layers 0-7 (all but the last four), every MLP and the embedding term
    want = torch.zeros(12, 12, dtype=torch.bool)
    want[:8] = True
    for l, h in [(11, 6), (11, 0), (11, 3), (10, 11), (10, 10), (9, 8), (9, 6)]:
        want[l, h] = True
    m = repair_ablation(heads, 12, "paper").mask(12, 12)
    assert torch.equal(m["heads"], want)
    assert m["mlps"].all() and m["mlps"].shape == (12,) and bool(m["embed"])
    only = repair_ablation(heads, 12).mask(12, 12)  # the course's: the heads alone
    assert int(only["heads"].sum()) == 7 and not only["mlps"].any() and not bool(only["embed"])
    assert repair_ablation(heads, 12, "paper").scale == "paper" and repair_ablation(heads, 12).scale == "raw"
    with pytest.raises(ValueError, match="protocol"):
        repair_ablation(heads, 12, "all")
    with pytest.raises(IndexError):
        repair_ablation([(12, 0)], 12, "paper")


def test_paper_repair_through_the_evaluator_equals_the_reference_arithmetic():
    from helpers.methods.spurious import repair_ablation

    rng = np.random.default_rng(1)
    n, L, H, d = 60, 6, 3, 5
    g = torch.Generator().manual_seed(2)
    heads = torch.randn(n, L, H, d, generator=g, dtype=torch.float64)
    terms = DirectTerms(embed=torch.randn(n, d, generator=g, dtype=torch.float64), attn=heads.sum(2),
                        mlp=torch.randn(n, L, d, generator=g, dtype=torch.float64),
                        const=torch.randn(d, generator=g, dtype=torch.float64), heads=heads)
    clf = torch.nn.functional.normalize(torch.randn(2, d, generator=g, dtype=torch.float64), dim=-1)
    labels = rng.integers(0, 2, n)
    groups = 2 * labels + rng.integers(0, 2, n)
    chosen = [(5, 1), (4, 2)]
    # the reference's arithmetic: terms over the embedding norm, ln_post bias shared over 2L + 1
    # summands; mean-ablate the heads, every head of layers 0-1, every MLP and the embedding
    e = terms.embeddings().numpy()
    nrm = np.linalg.norm(e, axis=1)[:, None]
    share = terms.const.numpy() / (2 * L + 1)
    a = (heads.numpy() + share / H) / nrm[:, :, None, None]
    mlps = np.concatenate([(terms.embed.numpy() + share)[:, None], terms.mlp.numpy() + share], 1) / nrm[:, :, None]
    for l, h in chosen:
        a[:, l, h] = a[:, l, h].mean(0)
    a[:, :L - 4] = a[:, :L - 4].mean(0)
    ablated = a.sum((1, 2)) + mlps.mean(0).sum(0)
    pred = np.argmax(ablated @ clf.numpy().T, 1)
    want = group_metrics(pred, labels, groups, WATERBIRDS_GROUPS)
    ev = GroupEvaluator(terms, clf, labels, groups, WATERBIRDS_GROUPS)
    got = ev(**repair_ablation(chosen, L, "paper"))
    assert got.as_dict() == want.as_dict()
    np.testing.assert_allclose(terms.ablated(**repair_ablation(chosen, L, "paper")).numpy(), ablated, rtol=1e-10)
    assert ev(**repair_ablation(chosen, L)).as_dict() == ev(chosen).as_dict()


def test_vit_h14_heads_and_paper_templates():
    import open_clip

    from helpers.data.waterbirds import waterbirds_prompts

    h14 = PAPER_HEADS["ViT-H-14"]
    assert set(h14) == {(31, 12), (30, 11), (29, 4), (31, 8), (30, 15), (30, 12), (30, 6), (29, 14), (29, 8)}
    assert len(h14) == 9 and all(0 <= l < 32 and 0 <= h < 16 for l, h in h14)
    paper = waterbirds_prompts("paper")
    templates = open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES
    assert len(templates) == 80 and set(paper) == {"landbird", "waterbird"}
    assert paper["waterbird"] == [t("waterbird") for t in templates]
    assert len(waterbirds_prompts()["landbird"]) == 8
    with pytest.raises(ValueError, match="templates"):
        waterbirds_prompts("all")


# ---------------------------------------------------------------------------------------------
# The planted correlation, counted


def test_world_planted_correlation_counts_the_rendered_scenes():
    from helpers.data import world
    from helpers.data.waterbirds import world_planted_correlation

    n = 120
    c = world_planted_correlation(n, seed=3)
    scenes = world.sample(n, split="train", seed=3)  # the same scenes, rendered
    fam = np.asarray(scenes.factors["family"])
    bg = np.asarray([world.BACKGROUNDS[b] for b in scenes.factors["background"]])
    home = np.where(fam == world.FAMILIES.index("swimmer"), "water", "grass")
    on = np.isin(bg, ["water", "grass"])
    assert c.n == n
    assert c.habitat_share == pytest.approx(scenes.habitat.mean())
    assert c.agree_in_habitat == pytest.approx((bg == home)[scenes.habitat].mean())
    assert c.on_habitats == pytest.approx(on.mean())
    assert c.agree_on_habitats == pytest.approx((bg == home)[on].mean())
    assert (c.spurious_p, c.habitat_fraction) == (0.95, 0.5)
    big = world_planted_correlation(4000, seed=0)
    assert abs(big.habitat_share - 0.5) < 0.03 and abs(big.agree_in_habitat - 0.95) < 0.02
    with pytest.raises(ValueError, match="positive"):
        world_planted_correlation(0)


def test_waterbirds_planted_correlation_from_metadata(tmp_path):
    from helpers.data.waterbirds import waterbirds_planted_correlation

    rows = ["img_id,img_filename,y,split,place,place_filename"]
    # training split: 19 birds on their habitat, 1 off it; other splits balanced
    for k in range(20):
        y = k % 2
        rows.append(f"{k},a/{k}.jpg,{y},0,{y if k else 1 - y},/x.jpg")
    for k in range(20, 28):
        rows.append(f"{k},a/{k}.jpg,{k % 2},2,{(k // 2) % 2},/x.jpg")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    c = waterbirds_planted_correlation(tmp_path)
    assert c.n == 20 and c.habitat_share == 1.0 and c.agree_in_habitat == pytest.approx(0.95)
    assert c.agree_on_habitats == c.agree_in_habitat and c.spurious_p is None


def test_habitat_gap_means_matched_and_mismatched_groups():
    from helpers.methods.spurious import habitat_gap

    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    places = [0, 0, 1, 1, 0, 0, 1, 1]
    pred = [0, 0, 1, 0, 0, 0, 1, 1]  # right: g0 2/2, g1 1/2, g2 0/2, g3 2/2
    m = group_metrics(pred, labels, [2 * y + p for y, p in zip(labels, places)], WATERBIRDS_GROUPS)
    assert habitat_gap(m) == (1.0, 0.25)
    one = group_metrics([0, 1], [0, 1], [0, 3], WATERBIRDS_GROUPS)  # no mismatched group
    matched, mismatched = habitat_gap(one)
    assert matched == 1.0 and np.isnan(mismatched)
    with pytest.raises(ValueError, match="four"):
        habitat_gap(m, ("a", "b"))
