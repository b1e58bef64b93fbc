# %% [markdown]
# [Open in Colab ↗](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb) (needs a Google account and network; offline, skip it: see `notebooks/OFFLINE.md`)
#
# # 4 · Where in the image? Spatial maps, heads × patches, topic and contrastive maps
#
# An attention head's output for the class token is a weighted sum over *source tokens*: the
# class token itself and one token per image patch. So the direct term of a head splits exactly
# into one vector per patch. Scoring each of them against a text embedding and summing over
# layers and heads gives a number per patch, a **map**, and
#
# $$\mathrm{sim}(\text{image}, t) \;=\; \underbrace{\textstyle\sum_{i\in\text{patches}} m_i(t)}_{\text{the map}}
#   \;+\; \underbrace{\text{CLS term}}_{\text{no location}}
#   \;+\; \underbrace{\text{embedding} + \text{MLPs} + \text{bias}}_{\text{rest}} .$$
#
# The identity is exact and linear in the text: the map of `a − b` is the map of `a` minus the
# map of `b`. The maps are computed by contracting with the texts *inside* the forward pass
# (`helpers.methods.spatial.heatmaps`), so no `[layers × tokens × heads × dim]` tensor is built.
# Offline, the scenes of the synthetic world come with **true object masks**, so we can measure
# how well the maps find the objects.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | split an image–text similarity exactly over image patches; score maps against true masks (object IoU, pixel accuracy, mAP, object AP) and against trivial maps; find which layers localise; compute one head's patch map from its attention weights and values |
# | **Time** | {{TIME}} |
# | **Assumes** | notebooks 1–3 (direct terms, heads, TextSpan directions); how attention weights mix value vectors; IoU of two masks |
#
# {{EXERCISE_NOTE}}

# %% tags=["parameters"]
preset = "offline"   # the one switch: "offline", "ViT-B-16 LAION", "ViT-L-14 LAION",
                     # "ViT-H-14 LAION", "ViT-B-16 OpenAI", "ViT-B-32 OpenAI",
                     # "ViT-L-14 OpenAI", "random ViT-B-32". The parameters below
                     # override it where set (None or "": the preset's value).
model_name = ""      # e.g. "ViT-B-16" (then name its weights in `pretrained`)
pretrained = ""      # an open_clip tag, a checkpoint path, or "random"
images = ""          # "world" (scenes with true masks), "photos" (scikit-image
                     # samples), or "auto"
n_images = None      # held-out scenes for the mask IoU
pool_size = None     # texts drawn from the pool for TextSpan (0: every text)
device = ""          # "cuda" or "cpu" (the papers' presets: cuda if there is a GPU)
protocol = ""        # "paper" for the papers' models (their presets set it)
seed = 0
scene = 3            # the scene shown first
span_layers = 4      # TextSpan runs on the heads of the last span_layers layers
record_to = ""

# %%
# {{SETUP}}

# %%
import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import display

from helpers.course.narrative import (
    baseline_comparison,
    comparative,
    compare,
    num,
    nums,
    pct,
    ranking,
    say,
    verdict,
    what_we_see,
)
from helpers.course.plots import maps_figure
from helpers.course.presets import begin
from helpers.course.ui import live
from helpers.data import world
from helpers.data.pools import load_pool
from helpers.engine.decompose_map import pooled_note
from helpers.engine.images import SAMPLE_PHOTOS, images_to_tensor, model_view, sample_photos
from helpers.engine.labels import head_label, layer_label
from helpers.engine.models import DEFAULT_MODEL, model_info, provenance, world_of
from helpers.engine.text import encode_texts, zero_shot_classifier
from helpers.methods.ablation import collect_terms
from helpers.methods.heads import head_roles, stack_heads
from helpers.methods.metrics import BASELINES, baseline_scores, iou, map_coverage, map_iou, map_scores, threshold_map
from helpers.methods.spatial import (
    contrastive_map,
    head_direction_map,
    heatmaps,
    own_class_maps,
    own_class_maps_by_layer,
    topic_segmentation,
    upsample,
)
from helpers.methods.stats import paired_bootstrap, region_difference
from helpers.methods.textspan import textspan

settings, figures, (model, preprocess, tokenizer) = begin(globals(), "04")  # the preset fills what was left unset
offline_model = model_name == DEFAULT_MODEL
use_world = images == "world" or (images == "auto" and offline_model)
if images not in ("world", "photos", "auto"):
    raise ValueError(f"images must be 'world', 'photos' or 'auto', got {images!r}")
info = model_info(model)
L, H = info.n_layers, info.n_heads
prov = provenance(model)
print(f"{model_name}: {L} layers x {H} heads, patch grid {info.grid_size}; images: "
      f"{'synthetic world' if use_world else 'sample photos'}")
figures["n_layers"] = L
pooled = info.pooling == "map"  # SigLIP: attention pooling instead of a class token
if pooled:
    say(pooled_note(model_name, "the maps of one backbone head (its TextSpan direction, topic segmentation, "
                                "exercises 4.1 and 4.2) follow the class token and are skipped; the layer maps "
                                "and the explorer's heads are the pooling's"))

# %% [markdown]
# ## One scene, three questions
#
# Every world scene has a colour, a shape and a background. For each factor we build a
# zero-shot classifier from prompts (as in notebook 2) and map the scene's **own class text
# minus the mean over the classes**, as the paper does for segmentation: subtracting the mean
# removes what all colour (or shape, or background) texts share, e.g. "there is an object".
# Red patches add to the similarity, blue ones take away.

# %% [markdown] tags=["predict"]
# For the scene below, where do you expect each of the three maps (colour, shape, background) to
# be red, and where blue?
# Answer:
# The colour and shape maps should be red on the object, the background map red on the
# background around it. Blue patches argue *against* the text: for an object text, background
# patches look less like that colour (or shape) than like the average class. Shape is the
# harder case: a shape is read from an outline, not from any single patch.

# %%
FACTORS = ("colour", "shape", "background")
test = world.sample(n_images, split="test", seed=seed + 1, config=world_of(model)) if use_world or offline_model else None
classifiers = ({f: zero_shot_classifier(model, tokenizer, world.class_prompts(f)) for f in FACTORS}
               if test is not None else {})  # the world's classes: only the scenes use them


def world_batch(scenes):
    return images_to_tensor(scenes.images, model)  # resized to a real model's input size if needed


def factor_maps(idx):
    """Own-class maps (upsampled to the scene) of each factor for scene ``idx`` of ``test``."""
    x = world_batch(test)[idx:idx + 1]
    out = {}
    for f in FACTORS:
        m = own_class_maps(model, x, classifiers[f], [int(test.factors[f][idx])])[0]
        out[f"{f}: {world.FACTORS[f][test.factors[f][idx]]}"] = m
    return out


if test is not None:
    s = int(scene) % len(test)
    fig = maps_figure(test.images[s], factor_maps(s), mask=test.foreground[s],
                      title=f"scene {s}: \"{test.captions[s]}\"")
    fig.show()

# %% [markdown]
# ## The identity, and the parts without a location
#
# For the same scene: each factor text's similarity, and how it splits into the sum of the
# map, the **CLS term** (what the heads read from the class token itself: it belongs to no
# patch, so no map can show it) and the **rest** (embedding, MLPs, `ln_post` bias). The last
# column is the rounding error of the identity.

# %%
if test is not None:
    x = world_batch(test)
    rows, parts = [], {}
    max_err = 0.0
    every = torch.arange(len(test))
    for f in FACTORS:
        res = heatmaps(model, x, classifiers[f])
        max_err = max(max_err, res.max_error())
        c = int(test.factors[f][s])
        rows.append({"text": f"{f}: {world.FACTORS[f][c]}", "similarity": float(res.similarity[s, c]),
                     "sum of map": float(res.patch_maps[s, c].sum()), "CLS term": float(res.cls[s, c]),
                     "rest": float(res.rest[s, c]), "error": float(res.total()[s, c] - res.similarity[s, c])})
        # the sum of each class's map, to separate what all texts of a factor share from what tells them apart
        sums = res.patch_maps.sum((-2, -1))                      # [scenes, classes]
        own_c = torch.as_tensor(test.factors[f])
        parts[f] = {"class": world.FACTORS[f][c], "map": float(sums[s, c]), "map mean": float(sums[s].mean()),
                    "rest": float(res.rest[s, c]), "rest mean": float(res.rest[s].mean()),
                    "favoured": float(((sums[every, own_c] - sums.mean(1)) > 0).double().mean())}
        if f == "colour":
            colour_res = res
    display(pd.DataFrame(rows).round(5))
    figures["identity_max_error"] = max_err
    own = colour_res.patch_maps[every, torch.as_tensor(test.factors["colour"])]
    neg = float(own.clamp_max(0).abs().sum() / own.abs().sum())
    figures["negative_share_colour"] = neg
    figures["map_sums_scene"] = {f: v["map"] for f, v in parts.items()}
    figures["own_map_above_mean_share"] = {f: v["favoured"] for f, v in parts.items()}

# %%
if test is not None:
    def sum_sentence(f, p):
        d, name = p["map"] - p["map mean"], p["class"]
        out = (f"The {f} map of '{name}' sums to {num(p['map'])}: "
               + verdict(p["map"] < 0, "taken together, the patches pull the image *away* from this text, and its "
                                       f"similarity comes from the rest ({num(p['rest'])}). ",
                         "the patches add to the similarity. ")
               + f"A single text's map also carries what every {f} text shares: on this scene the {f} texts' maps "
               f"sum to {num(p['map mean'])} on average, so '{name}' minus that mean sums to {num(d)}; "
               + verdict(d > 0, f"the patches favour the true {f} over the others.",
                         f"on this scene the patches favour *other* {f}s, and it is the rest that favours '{name}' "
                         f"({num(p['rest'])} against {num(p['rest mean'])} on average over the {f} texts)."))
        return out + (f" Over the {len(test)} scenes the own class's map sums to more than the mean over the "
                      f"classes in {pct(p['favoured'])} of them.")

    small_cls = all(abs(r["CLS term"]) < min(abs(r["sum of map"]), abs(r["rest"])) for r in rows)
    negative = [f for f in FACTORS if parts[f]["map"] < 0]
    what_we_see(
        f"Map + CLS term + rest equals the similarity to within {num(max_err, 2)} over {len(test)} scenes and every "
        "class of the three factors: float32 rounding, so the split is exact.",
        verdict(small_cls, "On this scene the CLS term is the smallest of the three parts in every row.",
                "On this scene the CLS term is not always the smallest part: the class token's own value carries "
                "part of the similarity, and no map can show it."),
        *[sum_sentence(f, parts[f]) for f in (negative or ["colour"])],
        f"Of the colour maps' total mass (own class, all scenes), {pct(neg)} is negative: patches that argue "
        "*against* the scene's own colour.",
    )

# %% [markdown]
# ## How well do the maps find the objects? (held-out scenes)
#
# The own-class map of each held-out scene against its true region: the object's mask for the
# colour and shape texts, its complement for the background text (that map should light up the
# background). Four scores, each averaged over the scenes (`helpers.methods.metrics.map_scores`):
#
# * **object IoU**: the map clipped at 0 and thresholded at its own mean (the paper's rule),
#   then the intersection over union with the region. (Notebook 6's **mIoU** is another
#   score: the mean of the foreground and the background IoU over a whole dataset's pixels.)
# * **pixel accuracy**: the share of pixels where the thresholded map and the region agree.
# * **mAP**: the paper's average precision (Chefer et al.'s protocol): the soft map,
#   normalised to $[0, 1]$, ranks pixels for the region while its complement ranks them for the
#   rest, in one list; a random map scores about 0.5.
# * **object AP**: the average precision of the soft map for the region's pixels alone; a
#   random map scores about the region's share of the pixels.
#
# Each score has a trivial map to beat (`helpers.methods.metrics.baseline_scores`, the rows marked
# *trivial*): for object IoU a mask of the **whole image**, for pixel accuracy the better of an
# **empty and a full mask** (all or nothing), for both APs a **random map**.

# %% [markdown] tags=["predict"]
# Which of the three texts will find its region best, and how will each compare with a map that
# marks the whole image?
# Answer:
# Colour is visible in every patch of the object, so colour maps have the easiest job; shape
# maps should still beat the whole-image map clearly. Look at the background row twice: the
# background covers most of every scene, so marking the whole image is already a strong answer
# there, and a map has to be very good to beat it.

# %%
if test is not None:
    x = world_batch(test)
    truth_fg = torch.as_tensor(test.foreground)
    table, trivial, coverage, scene_iou = {}, {}, {}, {}
    for f in FACTORS:
        maps = own_class_maps(model, x, classifiers[f], test.factors[f])
        truth = ~truth_fg if f == "background" else truth_fg
        table[f] = map_scores(maps, truth)
        trivial[f] = baseline_scores(truth, tuple(maps.shape[-2:]), seed=seed)
        coverage[f] = map_coverage(maps, truth)
        scene_iou[f] = map_iou(upsample(maps, truth.shape[-2:]), truth)  # per scene
    shown = {}
    for f in FACTORS:
        shown[f] = table[f]
        shown[f"{f}, trivial"] = trivial[f]
    display(pd.DataFrame(shown).T[list(BASELINES)].round(3))
    short = {"object IoU": "object_iou", "pixel accuracy": "pixel_accuracy", "mAP": "map", "object AP": "object_ap"}
    for f in FACTORS:
        for k, key in short.items():
            figures[f"{key}_{f}"] = table[f][k]
            figures[f"{key}_{f}_trivial"] = trivial[f][k]
        figures[f"coverage_{f}"] = coverage[f]
    figures["beats_trivial"] = {f: {k: table[f][k] > trivial[f][k] for k in BASELINES} for f in FACTORS}
    figures["object_iou_trivial"] = figures["object_iou_colour_trivial"]
    figures["n_scenes"] = len(test)

# %%
if test is not None:
    beats = figures["beats_trivial"]
    what_we_see(
        *[baseline_comparison(f, table[f], trivial[f], coverage[f]) for f in FACTORS],
        "Which rows beat their trivial map, score by score: "
        + "; ".join(f"{k}: {', '.join(f for f in FACTORS if beats[f][k]) or 'none'}" for k in BASELINES) + ".",
        "Object IoU gained over the whole-image mask, highest first: "
        + ranking({f: table[f]["object IoU"] - trivial[f]["object IoU"] for f in FACTORS}) + ".",
        verdict(prov.kind in ("shaped", "plain"),
                "The offline model's card (`data/models/MODEL_CARD.md`, measured figures) gives the object IoU of "
                "its shape and colour maps on its own held-out scenes; here " + compare(
                    table["shape"]["object IoU"], table["colour"]["object IoU"], "the shape map", "the colour map",
                    what="object IoU", evidence=paired_bootstrap(scene_iou["shape"], scene_iou["colour"],
                                                                 items="scenes")), ""),
    )

# %% [markdown]
# ## Which layers draw the map?
#
# The summed map adds up every attention layer's map. In the paper's large CLIPs, maps of early
# layers are noise: their direct terms are small, and what they compute reaches the output
# *indirectly*. But a layer with little mass can still *localise*: object IoU ignores a map's
# scale, so a faint map that points at the object scores well.
#
# ## Exercise 4.3: which single layer finds the objects best?
#
# Find the attention layer whose colour map *alone* has the best object IoU over the held-out
# scenes. The cell below computes every layer's own-class colour maps, `layer_maps[l]`
# (`own_class_maps(..., layers=[l])`); `map_scores(maps, truth_fg)["object IoU"]` scores maps
# against the objects' masks (the explorer under *Going further* restricts layers by hand). The
# chart after the check shows the answer.

# %%
from helpers.course.exercises.nb04 import check_best_layer

if test is not None:
    x = world_batch(test)
    # each layer's own-class maps, all from one forward pass: [scenes, gh, gw] for each layer
    layer_maps = list(own_class_maps_by_layer(model, x, classifiers["colour"], test.factors["colour"]))


# %% [markdown] tags=["hint"]
# Score each layer's maps with `map_scores(layer_maps[l], truth_fg)["object IoU"]` and return the
# index of the largest.

# %% [markdown] tags=["hint"]
# `max(range(L), key=lambda l: map_scores(layer_maps[l], truth_fg)["object IoU"])`. The layer with
# the most *mass* answers a different question.

# %% tags=["exercise"] kind="find" difficulty=1 importance=2 minutes=4 number="4.3"
def best_layer():
    """The index of the attention layer whose colour map alone has the best object IoU."""
    # --- solution ---
    return max(range(L), key=lambda layer: map_scores(layer_maps[layer], truth_fg)["object IoU"])
    # --- end ---


# %%
if test is not None:
    layer_iou = np.stack([map_iou(upsample(m, truth_fg.shape[-2:]), truth_fg) for m in layer_maps])  # [L, scenes]
    mass = [float(m.abs().sum()) for m in layer_maps]
    mass = [m / sum(mass) for m in mass]
    best_layer = check_best_layer(best_layer, layer_iou=layer_iou, mass=mass)
    figures["best_layer"] = best_layer()

# %%
if test is not None:
    per_layer = [float(v.mean()) for v in layer_iou]
    names = [layer_label(i) for i in range(L)]
    fig = go.Figure([go.Bar(x=names, y=per_layer, name="object IoU of the layer's map"),
                     go.Bar(x=names, y=mass, name="share of the map's mass")])
    fig.add_hline(y=figures["object_iou_colour"], line_dash="dot", annotation_text="object IoU, all layers")
    fig.add_hline(y=figures["object_iou_trivial"], line_dash="dot", line_color="grey", annotation_text="whole image")
    fig.update_layout(title="Colour maps from one attention layer", yaxis_range=[0, 1], height=360,
                      width=900, barmode="group", legend=dict(orientation="h", y=-0.15))
    fig.show()
    figures["map_mass_by_layer"] = mass
    half = L // 2
    figures["object_iou_colour_by_layer"] = per_layer
    halves = {}
    for part, rng in (("first", range(half)), ("second", range(half, L))):
        m = own_class_maps(model, x, classifiers["colour"], test.factors["colour"], layers=rng)
        halves[part] = map_iou(upsample(m, truth_fg.shape[-2:]), truth_fg)
    figures["object_iou_colour_first_half"] = float(halves["first"].mean())
    figures["object_iou_colour_second_half"] = float(halves["second"].mean())

# %%
if test is not None:
    first, second = figures["object_iou_colour_first_half"], figures["object_iou_colour_second_half"]
    top = int(np.argmax(per_layer))
    heavy = max(range(L), key=lambda i: mass[i])
    tied = [names[i] for i in range(L) if i != top
            and comparative(paired_bootstrap(layer_iou[top], layer_iou[i], items="scenes"), "ahead", "behind") != "ahead"]
    localise = [names[i] for i in range(L) if per_layer[i] > figures["object_iou_trivial"]]
    halves_evidence = paired_bootstrap(halves["second"], halves["first"], items="scenes")
    figures["halves_comparison"] = halves_evidence.side
    what_we_see(
        f"The last {L - half} layers supply {pct(sum(mass[half:]))} of the map's mass; the heaviest single layer is "
        f"{names[heavy]} ({pct(mass[heavy])}).",
        f"The highest object IoU of a single layer is {names[top]}'s ({num(per_layer[top])}, against "
        f"{num(figures['object_iou_colour'])} for all layers together)"
        + verdict(tied, f"; within noise of it: {', '.join(tied)}", "") + f". {len(localise)} of {L} layers alone "
        f"beat the whole-image mask ({num(figures['object_iou_trivial'])}).",
        "Maps of half the layers: " + compare(second, first, f"the map of the last {L - half} layers",
                                              f"that of the first {half}", what="object IoU",
                                              evidence=halves_evidence) + " "
        + verdict(sum(mass[:half]) < 0.5 and first > figures["object_iou_trivial"],
                  "The first layers localise colour, but their maps are faint: the full map is drawn by the last "
                  "layers.", ""),
        prov.note,
    )

# %% [markdown]
# ## One head along one direction (the joint head × patch view)
#
# TextSpan (notebook 3) gives every head a few text directions. For a head and one of its
# directions $u$, the map $\langle c_{l,h,i}, u\rangle$ over patches $i$ shows *which patches
# drive that head along that direction*. We run TextSpan on the heads of the last
# `span_layers` layers (the paper's choice is four), read each head's role off its first five
# texts (as in notebook 3), pick the purest colour head and the purest background head, and map
# their first direction.

# %%
pool = load_pool("world" if test is not None else "general").sample(pool_size, seed=seed)
pool_emb = encode_texts(model, tokenizer, pool.texts)
span_images = world_batch(test) if test is not None else None
if span_images is None:  # photos only: span the heads over the photos themselves
    span_images = torch.stack([preprocess(p) for p in sample_photos().values()]).to(device)
terms = collect_terms(model, span_images, heads=True)
stack, labels = stack_heads(terms, range(-min(span_layers, L), 0))
spans = textspan(stack, pool_emb, min(5, stack.shape[1] - 1))
roles = head_roles(spans, pool, labels, ignore=("other", "unknown"))
display(pd.DataFrame({r.label: {"layer": layer_label(r.layer), "head": f"H{r.head}",
                                 "role (purity)": f"{r.property} ({r.purity:.1f})"} for r in roles}.values())
        .pivot(index="layer", columns="head", values="role (purity)"))
figures["head_roles"] = {r.label: r.property for r in roles}


def best_head(prop):
    """Index (into ``roles``) of the purest head about ``prop``, or None."""
    cands = [(r.purity, -i) for i, r in enumerate(roles) if r.property == prop]
    return -max(cands)[1] if cands else None


picked_heads = {prop: best_head(prop) for prop in ("colour", "background")}
counts = {p: sum(r.property == p for r in roles) for p in sorted({r.property for r in roles if r.property})}

# %%
roles_text = what_we_see(
    f"Of the {len(roles)} heads of the last {min(span_layers, L)} layers, TextSpan's first texts make "
    + verdict(counts, ", ".join(f"{n} {p}" for p, n in sorted(counts.items(), key=lambda t: -t[1])) + " head(s).",
              "no head about a property of the world: their texts carry no tag."),
    *[verdict(i is not None,
              f"The purest {prop} head is {roles[i].label} (purity {num(roles[i].purity, 1)}); its first direction "
              f"is '{roles[i].texts[0]}'." if i is not None else "",
              f"No head of these layers is mostly about {prop}: its panel is left out below.")
      for prop, i in picked_heads.items()],
    prov.note,
)

# %% [markdown]
# ## Exercise 4.1: one head's patch map from its attention weights and values
#
# The class token's output of a head is a weighted sum over the tokens: each token contributes
# its value vector, mapped into the joint space by the head's slice of the output projection,
# `ln_post` and `proj` (`to_joint`), plus its share of the output bias (`bias`), weighted by how
# much the class token attends to it. Token 0 is the class token itself; the others are the
# patches, row by row. Score each patch token's contribution against a text and lay the patches
# out on the grid. `head_parts` reads the weights, values and maps of one head for one image;
# your map should equal `head_direction_map` of the section above.

# %% [markdown] tags=["hint"]
# Token `i` contributes `a_i (v_i W + b)`: its attention weight times (its value through `to_joint`
# plus the bias). The bias is shared by attention weight too: every token carries `a_i b`. Keep the
# weights as they are (they sum to 1 over *all* tokens, the class token included): the map plus
# the class token's own term add up to the head's score.

# %% [markdown] tags=["hint"]
# `per_token = attn * ((values @ to_joint + bias) @ text)` is `[T]`; drop token 0 and reshape:
# `per_token[1:].reshape(grid)` (row-major, `grid = (rows, columns)`).

# %% tags=["exercise"] kind="implement" difficulty=2 importance=3 minutes=7 number="4.1"
def head_patch_map(attn, values, to_joint, bias, text, grid):
    """One head's map of one text over the image patches.

    attn: [T] the class token's attention weights (token 0 is the class token)
    values: [T, dh] the head's value vectors;  to_joint: [dh, E];  bias: [E];  text: [E]
    grid: (rows, columns) of the patch grid, rows * columns = T - 1
    returns [rows, columns]
    """
    # --- solution ---
    per_token = attn * ((values @ to_joint + bias) @ text)  # [T]
    return per_token[1:].reshape(grid)  # drop the class token; patches are row-major
    # --- end ---


# %%
from helpers.course.exercises.nb04 import check_contrastive_head_map, check_head_patch_map, head_parts

head_patch_map = check_head_patch_map(head_patch_map)
ic = best_head("colour")
ic = len(roles) - 1 if ic is None else ic   # no colour head: the last head spanned
hl, hc = roles[ic].layer, roles[ic].head
x0 = world_batch(test)[s] if test is not None else span_images[0]
if not pooled:  # a class token's attention weights: not in an attention-pooled tower
    head_data = head_parts(model, x0, hl, hc)
    u = spans.directions[ic, 0]
    mine = head_patch_map(head_data.attn, head_data.values, head_data.to_joint, head_data.bias, u, head_data.grid)
    theirs = head_direction_map(model, x0[None], hl, hc, u)[0]
    say(f"{head_label(hl, hc)} along its first TextSpan direction, by {head_patch_map.yours}: largest difference "
          f"from head_direction_map {float((mine - theirs).abs().max()):.1e}")

# %% [markdown]
# ## What to take away (core)

# %%
def and_list(items):
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


lines = ["The maps are an exact split of the similarity over patches, plus a CLS term and a rest that have no "
         "location" + (f" (largest error {num(figures['identity_max_error'], 2)})." if test is not None else ".")]
if test is not None:
    beats = figures["beats_trivial"]
    found = [f for f in FACTORS if beats[f]["object IoU"] and beats[f]["mAP"]]
    missed = [f for f in FACTORS if f not in found]
    lines += [
        "Subtracting the mean over classes and clipping at 0 turns them into segmentations: "
        + verdict(found, f"the {and_list(found)} map{'s' if len(found) > 1 else ''} beat{'' if len(found) > 1 else 's'} "
                         "a whole-image mask on object IoU and a random map on mAP",
                  "no map beats both a whole-image mask on object IoU and a random map on mAP")
        + verdict(missed, f"; the {and_list(missed)} map{'s' if len(missed) > 1 else ''} do"
                          f"{'' if len(missed) > 1 else 'es'} **not** (reasons under the table). ", ". ")
        + "Notebook 6 compares such maps with attention-based baselines.",
        f"The last {L - L // 2} layers draw {pct(sum(figures['map_mass_by_layer'][L // 2:]))} of the colour map's "
        f"mass, yet layer {figures['best_layer']}'s map alone localises as well as any single layer (exercise 4.3): "
        "mass and localisation are different questions.",
    ]
if not pooled:
    lines.append("A single head along one of its TextSpan directions shows which patches drive *that* head"
                 + (f" (the purest colour head here: {roles[ic].label})." if best_head("colour") is not None else "."))
takeaway = what_we_see(*lines, title="What to take away (core)")

# %% [markdown] tags=["discuss"]
# Look at the background row of the mask table next to its baselines. What makes the background
# an unfair test for an "above the mean" threshold? And which part of the similarity can no map
# ever show?
# Answer:
# The background covers most of every scene (about nine pixels in ten here), while the mean
# threshold keeps roughly the pixels above the map's mean, often about half of them: the IoU
# cannot reach the whole-image mask's, which scores the region's share, and pixel accuracy rewards
# marking everything. A fair test for a large region would threshold at its expected size or use a
# threshold-free score (object AP). No map shows the CLS term (what heads read from the class
# token itself) or the rest (embedding term, MLPs, bias): they belong to no patch.

# %% [markdown]
# ## Going further
#
# Optional: which patches drive single heads, topic segmentation and contrastive maps, the
# contrastive exercise, an explorer for any text, and natural photos.
#
# %% [markdown]
# ### Negative contributions
#
# A patch can push the image *away* from a text: the background
# patches of a red square score below the mean over colours for "red" (they look like
# grass, not like red), and some heads write against a text on purpose. The map is signed;
# segmentation clips it at 0 before thresholding. Without subtracting the mean over classes, the
# unclipped map of a single text is dominated by what every text shares, and looks almost
# uniform.

# %%
if test is not None and not pooled:
    panels, head_cover, head_region = {}, {}, {}
    for prop, i in picked_heads.items():
        if i is None:
            continue
        r = roles[i]
        m = head_direction_map(model, world_batch(test)[s:s + 1], r.layer, r.head, spans.directions[i, 0])[0]
        panels[f"{r.label}, {prop} head"] = m
        head_cover[prop] = map_coverage(m[None], truth_fg[s:s + 1])
        # the patches the object touches (as mass_by_region counts them)
        on_patch = torch.nn.functional.adaptive_max_pool2d(truth_fg[s][None, None].float(), tuple(m.shape))[0, 0] > 0
        head_region[prop] = region_difference(m.cpu().numpy(), on_patch.numpy())
    if panels:
        maps_figure(test.images[s], panels, mask=test.foreground[s],
                    title="Which patches drive a head along its first TextSpan direction").show()
    figures["head_map_inside_vs_outside"] = {p: [c["mean inside"], c["mean outside"]] for p, c in head_cover.items()}
    figures["head_map_region_side"] = {p: e.side for p, e in head_region.items()}

# %%
if test is not None and not pooled and head_cover:
    said = []
    for prop, c in head_cover.items():
        inside, outside = nums(c["mean inside"], c["mean outside"], digits=2)
        ev = head_region[prop]
        word = comparative(ev, "higher on the object than off it", "lower on the object than off it",
                           "about as high on the object as off it (within noise)")
        said.append(f"Along '{roles[picked_heads[prop]].texts[0]}', the {prop} head's map is {word}: mean "
                    f"{inside} on the patches the objects touch, {outside} off them ({ev.basis}).")
    what_we_see(*said, f"The scene shows \"{test.captions[s]}\".")

# %% [markdown]
# ### Topic segmentation and contrastive maps (CLIP-InterpreT)
#
# **Topic segmentation**: one head, several texts, a map per text: where does this head find
# each topic? For the purest colour head we use four colour names, the scene's own among them.
#
# **Contrastive map**: where does the image look more like text A than text B? Because the
# maps are linear in the text, this is one map of `A − B` (computed in one pass, and equal to
# the difference of the two maps up to rounding).

# %%
if test is not None and not pooled:
    own_colour = world.COLOURS[test.factors["colour"][s]]
    colour_texts = [f"a {c} object" for c in [own_colour] + [c for c in world.COLOURS if c != own_colour][:3]]
    topic = topic_segmentation(model, world_batch(test)[s:s + 1], hl, hc, colour_texts,
                               tokenizer=tokenizer, subtract_mean=True)[0]
    maps_figure(test.images[s], {t: topic[k] for k, t in enumerate(colour_texts)}, mask=test.foreground[s],
                title=f"Topic segmentation by head {head_label(hl, hc)} (each text minus their mean)").show()
    on_object = {t: map_coverage(topic[k][None], truth_fg[s:s + 1])["mean inside"] for k, t in enumerate(colour_texts)}
    top_text = max(on_object, key=on_object.get)
    figures["topic_top_text_is_own_colour"] = top_text == colour_texts[0]

# %%
if test is not None and not pooled:
    what_we_see(
        "On the object, the texts' maps of this head rank, highest first: " + ranking(on_object) + " (mean over the object's pixels).",
        verdict(top_text == colour_texts[0],
                f"The head's map is highest on the object for the scene's own colour ('{colour_texts[0]}'): it "
                "tells which colour the object has, and where.",
                f"The head's map is highest on the object for '{top_text}', not the scene's own colour "
                f"('{colour_texts[0]}'): this head does not name the object's colour on this scene."),
    )

# %%
if test is not None:
    obj = f"a {world.COLOURS[test.factors['colour'][s]]} {world.SHAPES[test.factors['shape'][s]]}"
    ground = f"a photo of {world.BACKGROUNDS[test.factors['background'][s]]}"
    cmap = contrastive_map(model, world_batch(test), obj, ground, tokenizer=tokenizer)
    ta, tb = encode_texts(model, tokenizer, [obj, ground])
    both = heatmaps(model, world_batch(test), torch.stack([ta, tb]))
    gap = float((cmap - (both.patch_maps[:, 0] - both.patch_maps[:, 1])).abs().max())
    maps_figure(test.images[s], {"object − background": cmap[s]}, mask=test.foreground[s],
                title=f"Contrastive map: '{obj}' − '{ground}'").show()
    # held-out: the positive part of object-minus-background, thresholded, against the masks
    contrast_iou = iou(threshold_map(upsample(cmap, truth_fg.shape[-2:])), truth_fg, empty=0.0)
    fit_all, fit_one = map_coverage(cmap, truth_fg), map_coverage(cmap[s:s + 1], truth_fg[s:s + 1])
    figures["contrastive_linearity_error"] = gap
    figures["contrastive_iou"] = contrast_iou.mean().item()
    figures["contrastive_iou_scene"] = contrast_iou[s].item()
    figures["contrastive_coverage"] = {"all scenes": fit_all, "scene": fit_one}

# %%
if test is not None:
    ci, ci_s = figures["contrastive_iou"], figures["contrastive_iou_scene"]
    bg_on_object, bg_on_background = coverage["background"]["mean outside"], coverage["background"]["mean inside"]
    what_we_see(
        f"The contrastive map equals the difference of the two texts' maps up to {num(gap, 2)}: one pass, the "
        "same map.",
        f"As a segmentation it is poor: object IoU {num(ci)} over the {len(test)} scenes, against "
        f"{num(figures['object_iou_colour'])} for the own-class colour maps above. Two measured reasons:",
        f"*The pair belongs to one scene.* It names scene {s}'s object and background; on scene {s} alone its IoU "
        f"is {num(ci_s)}. On the other scenes the object has another colour or shape and the background another "
        f"texture, so neither text fits: the positive part of the map covers {pct(fit_all['kept'])} of the pixels "
        f"on average, while the objects cover {pct(fit_all['region'])}"
        + verdict(fit_all["mean inside"] <= fit_all["mean outside"],
                  ", and the map is higher off the objects than on them ("
                  + " vs ".join(nums(fit_all["mean outside"], fit_all["mean inside"])) + ").", "."),
        "*Subtracting a background text also subtracts on the object.* The background maps above are "
        + ("as high on the object as on the background" if bg_on_object >= bg_on_background else
           "nearly as high on the object as on the background" if bg_on_object > bg_on_background / 2 else
           "mostly on the background (so this reason is weak here)")
        + f" (mean {num(bg_on_object)} on the object, {num(bg_on_background)} on the background); on scene {s} the "
        f"threshold keeps {pct(fit_one['kept'])} of the pixels for an object covering {pct(fit_one['region'])}. The "
        "own-class maps subtract the mean over one factor's classes instead, which removes what every text of that "
        "factor shares.",
    )

# %% [markdown]
# ### Exercise 4.2: a contrastive map is a difference
#
# "Where does this head make the image look more like text A than text B?" Write it with your
# `head_patch_map`.

# %% [markdown] tags=["hint"]
# A head's map is linear in the text: the map of a sum of texts is the sum of their maps.

# %% [markdown] tags=["hint"]
# `head_patch_map(..., text_a, grid) - head_patch_map(..., text_b, grid)` (or one map of
# `text_a - text_b`; do not normalise the difference).

# %% tags=["exercise"] kind="implement" difficulty=1 importance=1 minutes=3 number="4.2"
def contrastive_head_map(attn, values, to_joint, bias, text_a, text_b, grid):
    """Where one head makes the image look more like text_a than text_b: [rows, columns]."""
    # --- solution ---
    return (head_patch_map(attn, values, to_joint, bias, text_a, grid)
            - head_patch_map(attn, values, to_joint, bias, text_b, grid))
    # --- end ---


# %%
contrastive_head_map = check_contrastive_head_map(contrastive_head_map)
text_a, text_b = (obj, ground) if test is not None else ("an object", "the background")
if not pooled:
    ta, tb = encode_texts(model, tokenizer, [text_a, text_b])
    mine = contrastive_head_map(head_data.attn, head_data.values, head_data.to_joint, head_data.bias, ta, tb,
                                head_data.grid)
    theirs = contrastive_map(model, x0[None], text_a, text_b, [hl], [hc], tokenizer=tokenizer)[0]
    say(f"'{text_a}' - '{text_b}' through {head_label(hl, hc)}, by {contrastive_head_map.yours}: largest "
          "difference from contrastive_map "
          f"{float((mine - theirs).abs().max()):.1e}")

# %% [markdown]
# ### Try it
#
# Pick a scene (or a photo), type any text, restrict the layers and heads, or compare two
# texts. The map is the text's own map (no mean subtracted: the colour scale centres on 0).

# %%
photos = sample_photos()
choices = ([f"scene {i}" for i in range(min(len(test), 24))] if test is not None else []) + list(photos)


def picked(name):
    if name.startswith("scene "):
        i = int(name.split()[1])
        return test.images[i], world_batch(test)[i:i + 1], test.foreground[i]
    img = model_view(model, photos[name], preprocess)
    return img, preprocess(photos[name])[None].to(device), None


def explore(image, text, text_b, layer_range, head):
    img, x, mask = picked(image)
    layers = list(range(layer_range[0], layer_range[1] + 1))
    heads = None if head == "all" else [int(head)]
    maps = {}
    if text.strip():
        res = heatmaps(model, x, [text], tokenizer=tokenizer, layers=layers, heads=heads)
        maps["text"] = res.patch_maps[0, 0]
        print(f"'{text}': similarity {res.similarity[0, 0]:.4f} = map {res.patch_maps[0, 0].sum():.4f} "
              f"+ CLS {res.cls[0, 0]:.4f} + rest {res.rest[0, 0]:.4f}")
    if text.strip() and text_b.strip():
        maps["text − minus"] = contrastive_map(model, x, text, text_b, layers, heads, tokenizer=tokenizer)[0]
    if not maps:
        print("type a text")
        return
    shown = f"'{text}'" + (f" − '{text_b}'" if text_b.strip() else "")
    maps_figure(img, maps, mask=mask, title=f"{shown}: layers {layers[0]}-{layers[-1]}, heads {head}").show()


default_text = (f"a {world.COLOURS[test.factors['colour'][s]]} object" if test is not None
                else SAMPLE_PHOTOS[list(photos)[0]][0])
live(explore,
     image=widgets.Dropdown(options=choices, value=choices[min(s, len(choices) - 1)] if test is not None
                            else choices[0], description="image"),
     text=widgets.Text(value=default_text, description="text"),
     text_b=widgets.Text(value="a photo of grass" if test is not None else "", description="minus"),
     layer_range=widgets.IntRangeSlider(value=(0, L - 1), min=0, max=L - 1, description="layers"),
     head=widgets.Dropdown(options=["all"] + [str(h) for h in range(info.pool_heads if pooled else H)], value="all",
                           description="pooling head" if pooled else "head"))

# %% [markdown]
# ### Natural photos
#
# scikit-image ships a few photos (no download). With a real CLIP each text lights up its
# object; every map is drawn on the centre crop the model sees (`model_view`), so non-square
# photos stay aligned. The offline model has only seen the synthetic world, so on photos its
# maps say little; switch `model_name` to a real model online.

# %%
for name in (list(photos) if not offline_model else list(photos)[:1]):
    texts = list(SAMPLE_PHOTOS[name])
    res = heatmaps(model, photos[name], texts, tokenizer=tokenizer, subtract_mean=True)
    maps_figure(model_view(model, photos[name], preprocess), {t: res.patch_maps[0, k] for k, t in enumerate(texts)},
                title=f"{name}: each text minus the mean of the texts").show()

# %% [markdown]
# ### What to take away (going further)

# %%
more = []
if test is not None:
    more.append("A contrast of two fixed texts answers a question about one scene "
                f"(object IoU {num(figures['contrastive_iou_scene'])} on scene {s}, {num(figures['contrastive_iou'])} "
                f"over all {len(test)}); to find objects across scenes, subtract the mean over one factor's classes.")
more.append(verdict(prov.shaped, "Where the mass sits is set by this model's training (a direct-path penalty on "
                                 "every attention layer but the last four), so it does not test the paper's claim.",
                    verdict(prov.tests_the_paper, "This is a web-trained CLIP, so where the mass sits tests the "
                                                  "paper's claim.", prov.note)))
what_we_see(*more, title="What to take away (going further)");

# %% [markdown] tags=["discuss"]
# Why subtract the mean over classes before mapping a class text? What does the map of a single
# text, unsubtracted, mostly show?
# Answer:
# Every colour text shares a large component ("there is an object", "a photo"), and its map
# lights up wherever the image looks like a photo of an object: mostly everywhere. Subtracting
# the mean over the factor's classes removes what all of them share and leaves what tells *this*
# colour apart from the others, which sits on the object. The unsubtracted map is dominated by the
# shared part and looks almost uniform; it still adds up to the similarity exactly, but it does not
# localise.

# %% [markdown] tags=["discuss"]
# Design a map that finds the *background* as well as the colour map finds the object, and say
# how you would score it fairly.
# Answer:
# A sample answer: map the own background text minus the mean over the background classes
# (as the table does), but threshold at the background's expected share of the pixels (or at
# the map's median rather than its mean) so that a large region can be kept whole; score it with
# object AP, which needs no threshold, and against the trivial maps of the same score. A
# contrastive map of background minus object texts would also subtract on the object's patches
# and push them down.
