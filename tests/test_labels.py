"""The one label grammar (layers, heads, components), selections of indices, head records, and
selecting components by their labels."""

import numpy as np
import pytest
import torch

from helpers.engine.components import Components
from helpers.engine.labels import (
    Head,
    component_label,
    component_labels,
    head_label,
    head_labels,
    layer_label,
    parse_component,
    parse_head,
    parse_layer,
    resolve_indices,
    single_index,
)
from helpers.methods.heads import HeadRole
from helpers.methods.spurious import HeadScore


def test_formatting():
    assert layer_label(0) == "L0" and layer_label(np.int64(11)) == "L11"
    assert head_label(3, 1) == "L3.H1"
    assert head_labels([(0, 0), (23, 15)]) == ["L0.H0", "L23.H15"]
    assert component_label("embed") == "embed" and component_label("const") == "const"
    assert component_label("attn", 4) == "attn.4" and component_label("mlp", 0) == "mlp.0"
    assert component_labels(2) == ["embed", "attn.0", "mlp.0", "attn.1", "mlp.1", "const"]
    assert component_labels(0) == ["embed", "const"]
    for bad in (lambda: head_label(-1, 0), lambda: layer_label(-2)):
        with pytest.raises(ValueError, match="non-negative"):
            bad()
    with pytest.raises(TypeError):
        head_label(1.0, 2)
    with pytest.raises(ValueError, match="kinds are"):
        component_label("heads", 1)
    with pytest.raises(ValueError, match="needs a layer"):
        component_label("attn")
    with pytest.raises(ValueError, match="no layer"):
        component_label("embed", 2)


def test_parsing_round_trips():
    for layer in (0, 7, 31):
        assert parse_layer(layer_label(layer)) == layer
        for head in (0, 15):
            assert parse_head(head_label(layer, head)) == (layer, head)
    for name in component_labels(12):
        kind, layer = parse_component(name)
        assert component_label(kind, layer) == name
    assert parse_head(" L2.H3 ") == (2, 3)


@pytest.mark.parametrize("text", ["L3.h1", "l3.H1", "L3H1", "L-1.H0", "L3.H", "3.1", "", "L3.H1.H2"])
def test_bad_head_labels_say_the_grammar(text):
    with pytest.raises(ValueError, match=r"L<layer>\.H<head>"):
        parse_head(text)


def test_bad_layer_and_component_labels():
    for text in ("3", "L", "layer 3", "L3.H1"):
        with pytest.raises(ValueError, match="L<layer>"):
            parse_layer(text)
    for text in ("attn3", "attn.", "head.2", "mlp.-1", "embed.0"):
        with pytest.raises(ValueError, match="'embed', 'attn.<layer>'"):
            parse_component(text)
    with pytest.raises(TypeError):
        parse_head(("L1", "H2"))


def test_labels_checked_against_the_model_size():
    assert parse_head("L11.H11", n_layers=12, n_heads=12) == (11, 11)
    with pytest.raises(IndexError, match=r"12 layers \(0\.\.11\)"):
        parse_head("L12.H0", n_layers=12, n_heads=12)
    with pytest.raises(IndexError, match=r"4 heads \(0\.\.3\)"):
        parse_head("L1.H4", n_layers=8, n_heads=4)
    with pytest.raises(IndexError, match="layer"):
        parse_component("mlp.8", n_layers=8)
    with pytest.raises(IndexError):
        parse_layer("L8", n_layers=8)


def test_resolve_indices():
    assert resolve_indices(None, 4, "layer") == [0, 1, 2, 3]
    assert resolve_indices(-1, 4, "layer") == [3]
    assert resolve_indices([3, -4, 1], 4, "layer") == [0, 1, 3]
    assert resolve_indices([3, -4, 1], 4, "layer", sort=False) == [3, 0, 1]
    assert resolve_indices(slice(-2, None), 4, "layer") == [2, 3]
    assert resolve_indices(range(2), 4, "head") == [0, 1]
    assert resolve_indices(torch.tensor([[2], [0]]), 4, "head") == [0, 2]
    assert resolve_indices(np.array([1, 2]), 4, "head") == [1, 2]
    with pytest.raises(IndexError, match=r"4 heads, valid indices are 0\.\.3 \(or -4\.\.-1"):
        resolve_indices([0, 4], 4, "head")
    with pytest.raises(ValueError, match="duplicate"):
        resolve_indices([1, -3], 4, "layer")
    with pytest.raises(ValueError, match="empty layer"):
        resolve_indices([], 4, "layer")
    with pytest.raises(TypeError):
        resolve_indices([1.5], 4, "head")
    with pytest.raises(TypeError):
        resolve_indices("L1", 4, "layer")
    with pytest.raises(TypeError):
        resolve_indices(True, 4, "layer")
    assert single_index(np.int32(3), "layer") == 3
    with pytest.raises(TypeError, match="single int"):
        single_index([3], "layer")


def test_one_head_record():
    h = Head.parse("L3.H1")
    assert (h.layer, h.head, h.label, h.pair) == (3, 1, "L3.H1", (3, 1))
    role = HeadRole(3, 1, "colour", 0.8)
    score = HeadScore(layer=3, head=1, score=0.9, share=0.6, role="colour")
    for record in (role, score):
        assert isinstance(record, Head)
        assert record.label == "L3.H1" and record.pair == (3, 1)
    assert "label" not in HeadRole.__dict__ and "label" not in HeadScore.__dict__  # defined once, in Head


def test_components_select_by_label_needs_labels():
    c = Components(torch.zeros(2, 3, 4), ("image", "layer", "dim"))
    with pytest.raises(KeyError, match="no labels"):
        c.select(layer="L1")
