"""helpers.engine.text: the text tower runs on the positions its pooling reads, and nothing changes."""

import open_clip
import pytest
import torch

from helpers.engine.models import load_model
from helpers.engine.text import encode_texts, used_positions_only

TEXTS = ["a photo of a red object", "a hexagon", "something in the sky, far away and rather small", "sky"]


def _tiny(custom: bool, pool: str = "argmax", causal: bool = True):
    """A small CLIP (``custom``: a CustomTextCLIP, whose text tower is its own module) with random weights."""
    vision = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32}
    text = {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2, "pool_type": pool,
            "no_causal_mask": not causal}
    torch.manual_seed(0)
    cls = open_clip.model.CustomTextCLIP if custom else open_clip.model.CLIP
    return cls(embed_dim=32, vision_cfg=vision, text_cfg=text).eval(), open_clip.get_tokenizer("ViT-B-32", context_length=24)


def _positions_run(model, texts, tokenizer):
    """How many positions the text blocks saw in ``encode_texts``."""
    tower = model.text.transformer if hasattr(model, "text") else model.transformer
    seen = []
    handle = tower.register_forward_hook(lambda m, args, out: seen.append(out.shape[1]))
    try:
        encode_texts(model, tokenizer, texts)
    finally:
        handle.remove()
    return seen


def _last_end(tokens):
    return int(tokens.argmax(-1).max()) + 1  # CLIP's end-of-text token has the largest id


@pytest.mark.parametrize("custom", [False, True], ids=["CLIP", "CustomTextCLIP"])
def test_causal_towers_run_on_the_used_positions_and_give_the_same_embeddings(custom):
    model, tokenizer = _tiny(custom)
    model = model.double()
    tokens = tokenizer(TEXTS)
    with torch.no_grad():
        whole = model.encode_text(tokens, normalize=True)
    got = encode_texts(model, tokenizer, TEXTS)
    assert (got - whole).abs().max() <= 1e-12  # float64: the same arithmetic on the positions that count
    assert _positions_run(model, TEXTS, tokenizer) == [_last_end(tokens)] < [tokens.shape[1]]
    # the hook is gone: a plain call runs on every position again
    tower = model.text.transformer if custom else model.transformer
    assert not tower._forward_pre_hooks


def test_eos_pooling_cuts_after_the_last_end_of_text_token():
    model, tokenizer = _tiny(True, pool="eos")
    model.text.eos_id = tokenizer.eot_token_id
    tokens = tokenizer(TEXTS)
    with used_positions_only(model, tokens) as used:
        assert used == int((tokens == tokenizer.eot_token_id).int().argmax(-1).max()) + 1 < tokens.shape[1]
    with torch.no_grad():
        assert torch.allclose(encode_texts(model, tokenizer, TEXTS), model.encode_text(tokens, normalize=True),
                              atol=1e-6)


@pytest.mark.parametrize("case", ["two-way attention", "pools the last position", "fills the context"])
def test_nothing_is_cut_where_a_later_position_could_matter(case):
    if case == "two-way attention":
        model, tokenizer = _tiny(True, causal=False)
        texts = TEXTS
    elif case == "pools the last position":
        model, tokenizer = _tiny(True, pool="last")
        texts = TEXTS
    else:
        model, tokenizer = _tiny(False)
        texts = [" ".join(["red"] * 40)]  # truncated to the whole context, its end-of-text token last
    tokens = tokenizer(texts)
    with used_positions_only(model, tokens) as used:
        assert used == tokens.shape[1]
    assert _positions_run(model, texts, tokenizer) == [tokens.shape[1]]


@pytest.mark.parametrize("name,pretrained", [(None, None), ("ViT-B-32", "random"), ("ViT-B-16-SigLIP", "random")],
                         ids=["world-clip", "ViT-B-32", "SigLIP"])
def test_the_course_models(name, pretrained):
    """The default and ViT-B-32 are cut (float32: the last bits may differ); SigLIP's text tower
    attends both ways and pools its last position: it runs on the whole context."""
    bundle = load_model() if name is None else load_model(name, pretrained)
    model, tokenizer = bundle.model, bundle.tokenizer
    tokens = tokenizer(TEXTS)
    with torch.no_grad():
        whole = model.encode_text(tokens, normalize=True)
    got = encode_texts(model, tokenizer, TEXTS)
    assert (got - whole).abs().max() <= 1e-5
    cut = name != "ViT-B-16-SigLIP"
    assert _positions_run(model, TEXTS, tokenizer) == [_last_end(tokens) if cut else tokens.shape[1]]


def test_zero_shot_prediction_picks_the_largest_dot_product():
    from helpers.engine.text import zero_shot_prediction

    unit = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.0, 1.0], [-1.0, 0.2]]), dim=-1)
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)  # cast to the images' dtype
    assert zero_shot_prediction(unit, classes).tolist() == [0, 1, 2]
