"""The model card's measured sections: one per shipped offline model, each rewritten alone."""

import pytest

from helpers.data.world_eval import TWIN_INTRO, model_card, write_card_section


def _figs(acc):
    groups = {"swimmer on water": acc, "swimmer on grass": acc - 0.2, "walker on grass": acc, "walker on water": acc}
    return {
        "n_test_scenes": 10, "seed": 1,
        "zero_shot": {"shape": acc, "colour": acc},
        "linear_probe": {"shape": 0.5, "colour": 0.5},
        "ablation": {f: {"baseline": acc, "mlps": acc, "attn_except_last_k": acc,
                         "everything_except_last_k_attn": acc, "last_k_attn": 0.1} for f in ("colour", "shape")},
        "waterbirds": {"groups": groups, "average": acc - 0.05, "worst_group": acc - 0.2},
        "map_miou": {"colour": 0.4, "shape": 0.3}, "map_miou_trivial": 0.2,
        "purity_texts": 5, "heads_purity_ge_0.6": 3,
        "head_roles": [{"layer": 7, "head": 0, "property": "colour", "purity": 0.8}],
    }


def _log(penalty):
    cfg = {"batch_size": 8, "pretrain_steps": 0, "class_factors": ["shape"], "lr": 1e-3, "warmup_frac": 0.05,
           "weight_decay": 0.1, "seed": 0, "shape_group": 4, "shape_pairs": 0.5, "class_weight": 1.0,
           "probe_weight": 0.5, "init": None, "direct_penalty": penalty, "free_attn_layers": 4,
           "penalty_start": 0.1, "penalty_full": 0.4, "logit_penalty": 0.0}
    return {"config": cfg, "steps_done": 3, "init_log": None,
            "history": [{"step": 3, "loss": 1.5, "elapsed_s": 60.0}],
            "hardware": {"device": "cpu", "torch_threads": 2, "platform": "x", "torch": "t", "open_clip": "o"}}


def test_a_twin_section_compares_and_names_its_training():
    text = model_card(_figs(0.7), _log(0.0), 2**20, 3.0, tag="world-v2-plain", compare=("world-v2", _figs(0.9)))
    assert "## Measured figures (`world-v2-plain`)" in text and "--pretrained world-v2-plain" in text
    assert "| shape | 70.0% | 50.0% | 12.5% | 90.0% |" in text  # the default's zero-shot in the last column
    assert "shape (`world-v2`)" in text and "**no direct-path penalty**" in text
    assert "object IoU" in text and "mIoU" not in text
    default = model_card(_figs(0.9), _log(1.0), 2**20, 3.0)
    assert "## Measured figures\n" in default and "direct-path penalty 1.0" in default and "`world-v2`" not in default


def test_sections_are_rewritten_one_at_a_time():
    head = "# Model card\n\nwritten by hand\n\n"
    card = write_card_section(head + "## Measured figures\nold default\n", "world-v2", "## Measured figures\nD1\n",
                              default="world-v2")
    assert card == head + "## Measured figures\nD1\n"
    card = write_card_section(card, "world-v2-plain", "## Measured figures (`world-v2-plain`)\nT1\n",
                              default="world-v2")
    assert card.startswith(head + "## Measured figures\nD1\n")
    assert TWIN_INTRO.format(tag="world-v2-plain", world="world-v2") in card and card.endswith("T1\n")
    # the twin's introduction may be edited by hand: rewriting its figures keeps it
    card = card.replace("Where its direct effects sit", "Edited: where its direct effects sit")
    card = write_card_section(card, "world-v2-plain", "## Measured figures (`world-v2-plain`)\nT2\n",
                              default="world-v2")
    assert "Edited: where" in card and "T1" not in card and card.endswith("T2\n")
    # rewriting the default keeps the twin's section, after it
    card = write_card_section(card, "world-v2", "## Measured figures\nD2\n", default="world-v2")
    assert card.index("D2") < card.index("<!-- model card: world-v2-plain -->") < card.index("T2")
    assert "D1" not in card and card.count("## Measured figures") == 2


@pytest.mark.parametrize("bad", ["", "# Model card\n"])
def test_a_card_without_measured_part_gets_one(bad):
    card = write_card_section(bad, "world-v2", "## Measured figures\nD\n", default="world-v2")
    assert card.endswith("## Measured figures\nD\n") and card.startswith("# Model card")


def test_the_card_names_the_world_and_renders_shape_by_size():
    def by_size(acc):
        cell = {"accuracy": acc, "n": 5}
        bins = {name: {"all": cell, "outline": cell, "no outline": {"accuracy": acc / 2, "n": 0}}
                for name in ("5.5-6.8 px", "6.8-8 px", "9.6-14 px", "14-22 px")}
        return {"world": "world-v3", "n": 20, "overall": acc, "bins": bins, "clutter": cell, "no clutter": cell,
                "worst_bin": acc}

    figs = {**_figs(0.9), "world": "world-v3", "shape_by_size": by_size(0.8)}
    text = model_card(figs, _log(1.0), 2**20, 3.0)
    assert "Held-out `test` scenes of world-v3 (seed 1, 10 scenes)" in text
    assert "Shape on world-v3's scenes (20 held-out" in text and "| 14-22 px | 5 | 80.0% | 80.0% | 40.0% |" in text
    twin = model_card({**_figs(0.7), "shape_by_size": by_size(0.6)}, _log(0.0), 2**20, 3.0, tag="world-v3-plain",
                      compare=("world-v3", figs))
    assert "| 6.8-8 px | 5 | 60.0% (80.0%) | 60.0% (80.0%) | 30.0% (40.0%) |" in twin
    assert "Held-out `test` scenes of world-v2" in twin  # figures without a world name are world-v2's
    assert "Shape on" not in model_card(_figs(0.9), _log(1.0), 2**20, 3.0)


def test_each_stage_names_its_world_and_threads():
    first = _log(1.0)  # a log from before world-v3 names no world: world-v2's
    last = _log(1.0)
    last["config"] = {**last["config"], "world": "world-v3", "init": "x"}
    last["hardware"] = {**last["hardware"], "torch_threads": 1}
    last["init_log"] = first
    text = model_card(_figs(0.9), last, 2**20, 3.0)
    assert "Stage 1 of 2: 3 steps of batch 8 on world-v2's scenes (fresh scenes every step; 1 min on 2 CPU threads)" in text
    assert "Stage 2 of 2: 3 steps of batch 8 on world-v3's scenes (fresh scenes every step; 1 min on 1 CPU thread)" in text
    assert "wall time 2 min in all; the last stage on cpu (1 CPU thread, x)" in text


def test_the_defaults_section_checks_its_targets():
    from helpers.data.world_eval import targets

    zs = {"shape": 0.95, "colour": 0.85, "background": 1.0, "position": 0.2}
    figs = {**_figs(0.95), "zero_shot": zs, "linear_probe": dict.fromkeys(zs, 0.5)}
    cell = lambda acc: {"accuracy": acc, "n": 5}  # noqa: E731
    figs["shape_by_size"] = {"bins": {"5.5-6.8 px": {"all": cell(0.9), "outline": cell(0.95), "no outline": cell(0.7)},
                                      "14-22 px": {"all": cell(0.9), "outline": cell(0.85), "no outline": cell(0.9)}},
                           "world": "world-v3", "n": 10, "overall": 0.9, "clutter": cell(0.9), "no clutter": cell(0.9)}
    rows = {t: (m, ok) for t, m, ok in targets(figs)}
    assert rows["shape zero-shot ≥ 90%"] == ("95.0%", True) and rows["colour zero-shot ≥ 90%"] == ("85.0%", False)
    size = next(v for t, v in rows.items() if t.startswith("shape ≥ 80% at every object size"))
    assert size == ("lowest 70.0% (5.5-6.8 px, no outline)", False)
    # _figs: every group at the average but one, 20 points below; the average 5 points below acc
    assert rows["family: worst group ≥ 20 points below the average"] == ("15.0 points", False)
    assert rows["colour: ablating the last 4 attention layers costs ≥ 40 points"] == ("85.0 points", True)
    assert rows["position zero-shot ≥ 50% (a stretch goal; chance 11%)"] == ("20.0%", False)
    text = model_card(figs, _log(1.0), 2**20, 3.0)
    assert "| colour zero-shot ≥ 90% | 85.0% | **no** |" in text and "| shape zero-shot ≥ 90% | 95.0% | yes |" in text
    assert "Targets" not in model_card(figs, _log(0.0), 2**20, 3.0, tag="world-v3-plain")
