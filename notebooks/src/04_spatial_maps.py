# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb)
#
# # 4 · Where in the image? Spatial maps, heads × patches, topic and contrastive maps
#
# An attention head's output for the class token is a weighted sum over *source tokens*: the
# class token itself and one token per image patch. So the direct term of head $h$ in layer
# $l$ splits exactly into one vector per patch $i$, $c_{l,h,i}$ (the attention weight times
# the value, through the output projection, `ln_post` and `proj`). Scoring each of them
# against a text embedding $t$ and summing over layers and heads gives a number per patch:
#
# $$\mathrm{sim}(\text{image}, t) \;=\; \underbrace{\textstyle\sum_{i\in\text{patches}} m_i(t)}_{\text{the map}}
#   \;+\; \underbrace{\textstyle\sum_{l,h}\langle c_{l,h,\text{CLS}}, t\rangle}_{\text{CLS term}}
#   \;+\; \underbrace{\text{embedding} + \text{MLPs} + \text{bias}}_{\text{rest}}\cdot t .$$
#
# The identity is exact, and it is linear in $t$: the map of `a − b` is the map of `a` minus
# the map of `b`. The maps are computed by contracting with the texts *inside* the forward
# pass (`helpers.spatial.heatmaps`), so a `[layers × tokens × heads × dim]` tensor is never
# built; `benchmarks/bench_heatmaps.py` measures the cost.
#
# Offline, the scenes of the synthetic world come with **true object masks**, so we can measure
# how well the maps find the objects. With a real model (`model_name="ViT-B-16"`,
# `pretrained="laion2b_s34b_b88k"`) the notebook maps natural photos bundled with
# scikit-image.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | split an image–text similarity exactly over image patches; compute one head's patch map from its attention weights and values; build contrastive maps; score maps against true masks |
# | **Time** | about 15 min reading, 2–3 min running, 20 min of exercises (4.1–4.2) |
# | **Assumes** | notebooks 1–3 (direct terms, heads, TextSpan directions); how attention weights mix value vectors; IoU of two masks |
#
# {{EXERCISE_NOTE}}

# %% [parameters]
preset = "offline"          # one switch (helpers.presets): "offline", "ViT-B-16 LAION", "ViT-L-14 LAION",
                            # "ViT-H-14 LAION", "ViT-B-16 OpenAI", "ViT-B-32 OpenAI", "ViT-L-14 OpenAI", "random ViT-B-32";
                            # the parameters below override it where set (None / "": the preset's value)
model_name = ""             # e.g. "ViT-B-16" (then name its weights in `pretrained`)
pretrained = ""             # an open_clip tag (e.g. "laion2b_s34b_b88k"), a checkpoint path, or "random"
images = ""                 # "world" (scenes with true masks), "photos" (scikit-image samples), "auto"
n_images = None             # held-out scenes for the mask IoU
pool_size = None            # texts drawn from the pool for TextSpan (0: every text)
device = ""                 # "cuda" / "cpu" (the papers' presets: cuda when there is a GPU)
protocol = ""               # "paper" for the papers' models (their presets set it)
seed = 0
scene = 3                   # the scene shown first
head_layer = -1             # layer whose heads get the joint and topic maps (-1: the last)
record_to = ""

# %%
# {{SETUP}}

# %%
import pandas as pd
import plotly.graph_objects as go
import torch
import ipywidgets as widgets
from IPython.display import display

from helpers import world
from helpers.ablation import collect_terms
from helpers.heads import head_roles, stack_heads
from helpers.images import SAMPLE_PHOTOS, images_to_tensor, model_view, sample_photos
from helpers.labels import head_label, layer_label
from helpers.metrics import iou, map_scores, threshold_map
from helpers.decompose_map import pooled_note
from helpers.models import DEFAULT_MODEL, load_model, model_info
from helpers.narrative import say
from helpers.plots import maps_figure
from helpers.pools import load_pool
from helpers.presets import resolve
from helpers.record import Figures
from helpers.spatial import contrastive_map, head_direction_map, heatmaps, own_class_maps, topic_segmentation, upsample
from helpers.text import encode_texts, zero_shot_classifier
from helpers.textspan import textspan
from helpers.ui import live

torch.manual_seed(seed)
figures = Figures(record_to)
settings = resolve(preset, "04", model_name=model_name, pretrained=pretrained, images=images,
                   n_images=n_images, device=device, protocol=protocol, pool_size=pool_size)
model_name, pretrained, images = settings.model_name, settings.pretrained, settings.images
n_images, device, protocol = settings.n_images, settings.device, settings.protocol
pool_size = settings.pool_size
print(settings)
figures["preset"] = preset
figures["trained_weights"] = settings.trained_weights
model, preprocess, tokenizer = load_model(model_name, pretrained or None, device=device)
offline_model = model_name == DEFAULT_MODEL
use_world = images == "world" or (images == "auto" and offline_model)
if images not in ("world", "photos", "auto"):
    raise ValueError(f"images must be 'world', 'photos' or 'auto', got {images!r}")
info = model_info(model)
L, H = info.n_layers, info.n_heads
head_layer = head_layer % L
pooled = info.pooling == "map"  # SigLIP: attention pooling instead of a class token
print(f"{model_name}: {L} layers x {H} heads, patch grid {info.grid_size}; images: "
      f"{'synthetic world' if use_world else 'sample photos'}")
figures["n_layers"] = L
if pooled:
    say(pooled_note(model_name, "its maps are the tokens' terms through the pooling, and the maps of one "
                                "backbone head (direction maps, topic segmentation, exercises 4.1 and 4.2) "
                                "are skipped"))

# %% [markdown]
# ## One scene, three questions
#
# Every world scene has a colour, a shape and a background. For each factor we build a
# zero-shot classifier from prompts (as in notebook 2) and map the scene's **own class text
# minus the mean over the classes**, as the paper does for segmentation: subtracting the mean
# removes what all colour (or shape, or background) texts share, e.g. "there is an object".
# Red patches add to the similarity, blue ones take away.

# %% [predict]
# For the scene below, where do you expect each of the three maps (colour, shape, background) to
# be red, and where blue?
# Answer:
# The colour and shape maps should be red on the object, the background map red on the
# background around it. Blue patches argue *against* the text: for an object text, background
# patches look less like that colour (or shape) than like the average class. Shape is the
# harder case: a shape is read from an outline, not from any single patch.

# %%
FACTORS = ("colour", "shape", "background")
test = world.sample(n_images, split="test", seed=seed + 1) if use_world or offline_model else None
classifiers = {f: zero_shot_classifier(model, tokenizer, world.class_prompts(f)) for f in FACTORS}


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
    rows = []
    max_err = 0.0
    for f in FACTORS:
        res = heatmaps(model, x, classifiers[f])
        max_err = max(max_err, res.max_error())
        c = int(test.factors[f][s])
        rows.append({"text": f"{f}: {world.FACTORS[f][c]}", "similarity": float(res.similarity[s, c]),
                     "sum of map": float(res.patch_maps[s, c].sum()), "CLS term": float(res.cls[s, c]),
                     "rest": float(res.rest[s, c]), "error": float(res.total()[s, c] - res.similarity[s, c])})
        if f == "colour":
            colour_res = res
    display(pd.DataFrame(rows).round(5))
    print(f"largest identity error over {len(test)} scenes x all classes of 3 factors: {max_err:.2e}")
    figures["identity_max_error"] = max_err
    own = colour_res.patch_maps[torch.arange(len(test)), torch.as_tensor(test.factors["colour"])]
    neg = float(own.clamp_max(0).abs().sum() / own.abs().sum())
    figures["negative_share_colour"] = neg
    print(f"share of the colour maps' mass that is negative: {neg:.2f}")

# %% [markdown]
# **Negative contributions.** A patch can push the image *away* from a text: the background
# patches of a red square score below the mean over colours for "red" (they look like
# grass, not like red), and some heads write against a text on purpose. The map is signed;
# segmentation clips it at 0 before thresholding. Without subtracting the mean over classes, the
# unclipped map of a single text is dominated by what every text shares, and looks almost
# uniform.

# %% [markdown]
# ## How well do the maps find the objects? (held-out scenes)
#
# The own-class map of each held-out scene, clipped at 0 and thresholded at its mean (the
# paper's rule), against the true object mask: IoU, pixel accuracy, and the average precision
# of the soft map. For the background text we score the complement of the mask (the map
# should light up the background). Baselines: the IoU of a map covering the whole image, and
# the average precision of a random map (the share of positive pixels).

# %% [predict]
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
    table = {}
    for f in FACTORS:
        maps = own_class_maps(model, x, classifiers[f], test.factors[f])
        truth = ~truth_fg if f == "background" else truth_fg
        table[f] = map_scores(maps, truth)
    for f in FACTORS:  # baselines: a map covering the whole image; a map that ranks pixels randomly
        truth = ~truth_fg if f == "background" else truth_fg
        table[f]["mIoU, whole image"] = iou(torch.ones_like(truth), truth).mean().item()
        table[f]["mAP, random map"] = truth.float().mean().item()
    display(pd.DataFrame(table).T.round(3))
    for f in FACTORS:
        figures[f"miou_{f}"] = table[f]["object IoU"]
        figures[f"map_{f}"] = table[f]["mAP"]
        figures[f"miou_{f}_trivial"] = table[f]["mIoU, whole image"]
        figures[f"map_{f}_chance"] = table[f]["mAP, random map"]
    figures["miou_trivial"] = figures["miou_colour_trivial"]
    figures["n_scenes"] = len(test)

# %% [markdown]
# ## Which layers draw the map?
#
# The same colour maps restricted to one attention layer at a time, with two measures per
# layer: how well its map alone finds the objects (mIoU; thresholding ignores the map's
# scale), and its share of the map's total mass (how much of the summed map it supplies).
#
# In the paper's large CLIPs, maps of early layers are noise: their direct terms are small
# (ablating them barely changes accuracy, notebook 2), and what they compute reaches the
# output *indirectly*, through later layers, which a direct-term map does not follow. So the
# summed map is drawn by the last layers. Check both measures on a real model online. On the
# small offline model, early layers can still localise colour (colour is visible in a single
# patch, so a layer that averages nearby patches already points at the object), but their
# share of the mass is small: what you see in the full map comes from the late layers.

# %%
if test is not None:
    x = world_batch(test)
    per_layer, mass = [], []
    for layer in range(L):
        maps = own_class_maps(model, x, classifiers["colour"], test.factors["colour"], layers=[layer])
        per_layer.append(map_scores(maps, truth_fg)["object IoU"])
        mass.append(float(maps.abs().sum()))
    mass = [m / sum(mass) for m in mass]
    names = [layer_label(i) for i in range(L)]
    fig = go.Figure([go.Bar(x=names, y=per_layer, name="mIoU of the layer's map"),
                     go.Bar(x=names, y=mass, name="share of the map's mass")])
    fig.add_hline(y=figures["miou_colour"], line_dash="dot", annotation_text="mIoU, all layers")
    fig.add_hline(y=figures["miou_trivial"], line_dash="dot", line_color="grey", annotation_text="whole image")
    fig.update_layout(title="Colour maps from one attention layer", yaxis_range=[0, 1], height=360,
                      barmode="group")
    fig.show()
    figures["map_mass_by_layer"] = mass
    half = L // 2
    figures["miou_colour_by_layer"] = per_layer
    figures["miou_colour_first_half"] = map_scores(
        own_class_maps(model, x, classifiers["colour"], test.factors["colour"], layers=range(half)), truth_fg)["object IoU"]
    figures["miou_colour_second_half"] = map_scores(
        own_class_maps(model, x, classifiers["colour"], test.factors["colour"], layers=range(half, L)), truth_fg)["object IoU"]
    print(f"first {half} layers: {figures['miou_colour_first_half']:.3f}, "
          f"last {L - half}: {figures['miou_colour_second_half']:.3f}")

# %% [markdown]
# ## One head along one direction (the joint head × patch view)
#
# TextSpan (notebook 3) gives every head a few text directions. For a head and one of its
# directions $u$, the map $\langle c_{l,h,i}, u\rangle$ over patches $i$ shows *which patches
# drive that head along that direction*. We run TextSpan on the heads of one layer, pick the
# purest colour head and the purest background head, and map their first direction.

# %%
pool = load_pool("world" if test is not None else "general").sample(pool_size, seed=seed)
pool_emb = encode_texts(model, tokenizer, pool.texts)
span_images = world_batch(test) if test is not None else None
if span_images is None:  # photos only: span the heads over the photos themselves
    span_images = torch.stack([preprocess(p) for p in sample_photos().values()]).to(device)
terms = collect_terms(model, span_images, heads=True)
stack, labels = stack_heads(terms, [head_layer])
spans = textspan(stack, pool_emb, min(5, stack.shape[1] - 1))
roles = head_roles(spans, pool, labels, ignore=("other", "unknown"))
display(pd.DataFrame([{"head": r.label, "role": r.property, "purity": r.purity, "texts": " | ".join(r.texts)}
                      for r in roles]))


def best_head(prop):
    cands = [(r.purity, h) for h, r in enumerate(roles) if r.property == prop]
    return max(cands)[1] if cands else None


if test is not None and not pooled:
    panels = {}
    for prop in ("colour", "background"):
        h = best_head(prop)
        if h is None:
            continue
        u = spans.directions[h, 0]
        m = head_direction_map(model, world_batch(test)[s:s + 1], head_layer, h, u)[0]
        panels[f"{head_label(head_layer, h)} along '{roles[h].texts[0]}'"] = m
    maps_figure(test.images[s], panels, mask=test.foreground[s],
                title="Which patches drive a head along its first TextSpan direction").show()

# %% [markdown]
# ## Exercise 4.1: one head's patch map from its attention weights and values
#
# The class token's output of head $h$ is a weighted sum over the tokens: token $i$ (token 0 is
# the class token itself) contributes $a_i\,(v_i W + b)$, where $a_i$ is its attention weight,
# $v_i$ its value vector, $W$ the head's map into the joint space (its slice of the output
# projection, `ln_post` and `proj`) and $b$ its share of the output bias. Score every patch
# token's term against a text and lay the patches out on the grid (row by row).
# `head_parts` reads $a$, $v$, $W$ and $b$ of one head for one image; the map you compute should
# equal `head_direction_map` of the section above.

# %% [exercise]
def head_patch_map(attn, values, to_joint, bias, text, grid):
    """One head's map of one text over the image patches.

    attn: [T] the class token's attention weights (token 0 is the class token)
    values: [T, dh] the head's value vectors;  to_joint: [dh, E];  bias: [E];  text: [E]
    grid: (rows, columns) of the patch grid, rows * columns = T - 1
    returns [rows, columns]: patch i's term a_i (v_i W + b), scored against the text
    """
    # --- solution ---
    per_token = attn * ((values @ to_joint + bias) @ text)  # [T]
    return per_token[1:].reshape(grid)  # drop the class token; patches are row-major
    # --- end ---


# %%
from helpers.exercises import check_contrastive_head_map, check_head_patch_map, head_parts

head_patch_map = check_head_patch_map(head_patch_map)
hc = best_head("colour")
hc = 0 if hc is None else hc
x0 = world_batch(test)[s] if test is not None else span_images[0]
if not pooled:
    parts = head_parts(model, x0, head_layer, hc)
    u = spans.directions[hc, 0]
    mine = head_patch_map(parts.attn, parts.values, parts.to_joint, parts.bias, u, parts.grid)
    theirs = head_direction_map(model, x0[None], head_layer, hc, u)[0]
    print(f"L{head_layer}.H{hc} along its first TextSpan direction: largest difference from head_direction_map "
          f"{float((mine - theirs).abs().max()):.1e}")

# %% [markdown]
# ## Topic segmentation and contrastive maps (CLIP-InterpreT)
#
# **Topic segmentation**: one head, several texts, a map per text: where does this head find
# each topic? For a colour head we use the colour names.
#
# **Contrastive map**: where does the image look more like text A than text B? Because the
# maps are linear in the text, this is one map of `A − B` (computed in one pass, and equal to
# the difference of the two maps up to rounding).

# %%
if test is not None and not pooled:
    h = best_head("colour")
    h = 0 if h is None else h
    colour_texts = [f"a {c} object" for c in world.COLOURS[:4]]
    topic = topic_segmentation(model, world_batch(test)[s:s + 1], head_layer, h, colour_texts,
                               tokenizer=tokenizer, subtract_mean=True)[0]
    maps_figure(test.images[s], {t: topic[k] for k, t in enumerate(colour_texts)},
                title=f"Topic segmentation by head {head_label(head_layer, h)} (each text minus their mean)").show()

if test is not None:
    obj = f"a {world.COLOURS[test.factors['colour'][s]]} {world.SHAPES[test.factors['shape'][s]]}"
    ground = f"a photo of {world.BACKGROUNDS[test.factors['background'][s]]}"
    cmap = contrastive_map(model, world_batch(test), obj, ground, tokenizer=tokenizer)
    ta, tb = encode_texts(model, tokenizer, [obj, ground])
    both = heatmaps(model, world_batch(test), torch.stack([ta, tb]))
    gap = float((cmap - (both.patch_maps[:, 0] - both.patch_maps[:, 1])).abs().max())
    maps_figure(test.images[s], {f"'{obj}' − '{ground}'": cmap[s]}, mask=test.foreground[s],
                title="Contrastive map: object text minus background text").show()
    # held-out: the positive part of object-minus-background, thresholded, against the masks
    contrast_iou = iou(threshold_map(upsample(cmap, truth_fg.shape[-2:])), truth_fg, empty=0.0).mean().item()
    print(f"contrastive map = difference of the two maps up to {gap:.1e}; "
          f"a fixed pair, IoU with the masks over {len(test)} scenes: {contrast_iou:.3f}")
    figures["contrastive_linearity_error"] = gap

# %% [markdown]
# ## Exercise 4.2: a contrastive map is a difference
#
# The map is linear in the text, so "where does this head make the image look more like A than
# B?" is the map of A minus the map of B. Write it with your `head_patch_map`.

# %% [exercise]
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
    mine = contrastive_head_map(parts.attn, parts.values, parts.to_joint, parts.bias, ta, tb, parts.grid)
    theirs = contrastive_map(model, x0[None], text_a, text_b, [head_layer], [hc], tokenizer=tokenizer)[0]
    print(f"'{text_a}' - '{text_b}' through L{head_layer}.H{hc}: largest difference from contrastive_map "
          f"{float((mine - theirs).abs().max()):.1e}")

# %% [markdown]
# ## Try it
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
        maps[f"'{text}'"] = res.patch_maps[0, 0]
        print(f"'{text}': similarity {res.similarity[0, 0]:.4f} = map {res.patch_maps[0, 0].sum():.4f} "
              f"+ CLS {res.cls[0, 0]:.4f} + rest {res.rest[0, 0]:.4f}")
    if text.strip() and text_b.strip():
        maps[f"'{text}' − '{text_b}'"] = contrastive_map(model, x, text, text_b, layers, heads,
                                                         tokenizer=tokenizer)[0]
    if not maps:
        print("type a text")
        return
    maps_figure(img, maps, mask=mask, title=f"layers {layers[0]}-{layers[-1]}, heads {head}").show()


default_text = (f"a {world.COLOURS[test.factors['colour'][s]]} object" if test is not None
                else SAMPLE_PHOTOS[list(photos)[0]][0])
live(explore,
     image=widgets.Dropdown(options=choices, value=choices[min(s, len(choices) - 1)] if test is not None
                            else choices[0], description="image"),
     text=widgets.Text(value=default_text, description="text"),
     text_b=widgets.Text(value="a photo of grass" if test is not None else "", description="minus"),
     layer_range=widgets.IntRangeSlider(value=(0, L - 1), min=0, max=L - 1, description="layers"),
     head=widgets.Dropdown(options=["all"] + [str(h) for h in range(H)], value="all", description="head"))

# %% [markdown]
# ## Natural photos
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
# ## What to take away
#
# * The maps are an exact split of the similarity over patches, plus a CLS term and a rest
#   that have no location.
# * Subtracting the mean over classes and clipping at 0 turns them into segmentations; on the
#   synthetic world they overlap the true objects (table above; notebook 6 compares them with
#   attention-based baselines).
# * The location comes from the last layers' direct terms; a single head along one of its
#   TextSpan directions shows what *that* head looks at.
