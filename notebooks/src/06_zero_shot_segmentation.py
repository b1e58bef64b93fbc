# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb)
#
# # 6 · Zero-shot segmentation: the decomposition against the usual baselines
#
# Notebook 4 showed that the spatial maps sum exactly to the image–text similarity. The paper
# turns them into a **zero-shot segmenter**: for the *predicted* class, take the patch map of
# the class text minus the mean over all class texts (all layers and heads, class token
# excluded), upsample it to the image, clip at 0, min-max normalise, and keep the pixels above
# the map's mean. No training, no labels, no backward pass.
#
# We compare it with the explainability baselines of the paper's table, computed on the same
# images with the same post-processing and metric code:
#
# | method | what it reads | class-specific | backward pass |
# |---|---|---|---|
# | raw attention | last layer, class token → patches, mean over heads | no | no |
# | attention rollout (Abnar & Zuidema, 2020) | product over layers of `½·A + ½·I` | no | no |
# | GradCAM | tokens entering the last block's attention × their gradient | yes | yes |
# | Chefer et al. 2021 | `R += mean_heads((∇A ⊙ A)⁺)·R` over layers | yes | yes |
# | **decomposition** (the paper) | direct per-patch terms · (class − mean class) | yes | no |
#
# Metrics (as in Chefer et al.): **pixel accuracy** and **mIoU** (mean of the foreground and
# background IoU, each accumulated over the whole dataset) of the thresholded masks, and
# **mAP** (per-image average precision of the soft map, averaged). Image and mask go through
# the *same* resize and crop, so they stay aligned on non-square photos.
#
# Offline, the synthetic world's objects have exact masks. Online, `dataset="imagenet-seg"`
# downloads ImageNet-Segmentation (4,276 images, about 1.4 GB) and reproduces the paper's table
# layout with a real model.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | turn the decomposition's patch maps into a zero-shot segmenter with the paper's post-processing; score it with pixel accuracy, mIoU and mAP against attention, rollout, GradCAM and Chefer et al.; explain where each map puts its weight |
# | **Time** | about 15 min reading, 2 min running, 25 min of exercises (6.1–6.3) |
# | **Assumes** | notebook 4 (patch maps, class text minus the mean class text); IoU; what a gradient-based saliency map is |
#
# {{EXERCISE_NOTE}}

# %% [parameters]
preset = "offline"          # one switch (helpers.presets): "offline", "ViT-B-16 LAION", "ViT-L-14 LAION",
                            # "ViT-H-14 LAION", "ViT-B-16 OpenAI", "ViT-B-32 OpenAI", "ViT-L-14 OpenAI", "random ViT-B-32";
                            # the parameters below override it where set (None / "": the preset's value)
model_name = ""             # e.g. "ViT-B-16" (then name its weights in `pretrained`)
pretrained = ""             # an open_clip tag (e.g. "laion2b_s34b_b88k"), a checkpoint path, or "random"
dataset = ""                # "world[:factor]", "imagenet-seg", or "imagenet-seg:/path/to/gtsegs_ijcv.mat"
pairs_factor = "colour"     # two-object scenes, segment the one the text names: "colour", "shape", "position" or ""
n_images = None
batch_size = None
device = ""                 # "cuda" / "cpu" (the papers' presets: cuda when there is a GPU)
protocol = ""               # "paper" for the papers' models (their presets set it)
seed = 0
record_to = ""

# %%
# {{SETUP}}

# %%
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
import ipywidgets as widgets
from IPython.display import display

from helpers.labels import layer_label
from helpers.metrics import SegmentationScores, mass_by_region
from helpers.models import load_model, model_info
from helpers.plots import maps_figure
from helpers.presets import resolve
from helpers.record import Figures
from helpers.segmentation import (METHODS, evaluate_methods, layer_maps, load_segmentation_task, patch_norm_ratio,
                                  predicted_classes, segment)
from helpers.text import zero_shot_classifier
from helpers.ui import live

torch.manual_seed(seed)
figures = Figures(record_to)
settings = resolve(preset, "06", model_name=model_name, pretrained=pretrained, dataset=dataset,
                   n_images=n_images, batch_size=batch_size, device=device, protocol=protocol)
model_name, pretrained, dataset = settings.model_name, settings.pretrained, settings.dataset
n_images, batch_size, device = settings.n_images, settings.batch_size, settings.device
protocol = settings.protocol
print(settings)
figures["preset"] = preset
figures["trained_weights"] = settings.trained_weights
model, preprocess, tokenizer = load_model(model_name, pretrained or None, device=device)
task = load_segmentation_task(dataset, preprocess, n_images, seed=seed)
classifier = zero_shot_classifier(model, tokenizer, task.prompts)
print(f"{task.name}: {len(task)} images at {tuple(task.images.shape[-2:])}, {len(task.prompts)} classes; "
      f"foreground covers {task.masks.float().mean():.1%} of the pixels")
figures["task"] = task.name
figures["n_images"] = len(task)
figures["foreground_fraction"] = float(task.masks.float().mean())

# %% [markdown]
# ## The table
#
# Every method on every image, target class = the zero-shot prediction (the paper's protocol).
# The last column is each method's throughput on this machine (the decomposition and the
# attention baselines need only a forward pass; GradCAM and Chefer et al. also a backward one).

# %% [predict]
# With one object per scene, which kind of map do you expect to segment best: the
# class-agnostic ones (raw attention, rollout) or the class-specific ones (GradCAM, Chefer et
# al., the decomposition)?
# Answer:
# There is no built-in winner. With a single salient object, "where is the object?" and "where
# is the object of this class?" have the same answer, so a class-agnostic map loses nothing; what
# decides is how cleanly each map concentrates on the object. The two-object scenes further down
# are where class-specific maps must earn their keep.

# %%
results, soft_maps = evaluate_methods(model, task, classifier, METHODS, batch_size=batch_size)
table = pd.DataFrame(results).T[["pixel accuracy", "mIoU", "mAP", "IoU foreground", "IoU background", "images/s"]]
display(table.round(3))
if task.labels is not None:
    pred = torch.cat([predicted_classes(model, task.images[i:i + batch_size].to(device), classifier).cpu()
                      for i in range(0, len(task), batch_size)])
    figures["zero_shot_accuracy"] = float((pred == task.labels).float().mean())
    print(f"zero-shot accuracy of the predicted classes: {figures['zero_shot_accuracy']:.3f}")
figures["methods"] = {m: {k: float(v) for k, v in r.items() if k != "images/s"} for m, r in results.items()}
figures["images_per_second"] = {m: float(r["images/s"]) for m, r in results.items()}
# a map that marks every pixel as foreground, for scale
everything = SegmentationScores().update(task.masks.float(), torch.ones_like(task.masks), task.masks)
figures["all_foreground"] = everything.summary()
print(f"marking every pixel foreground: pixel accuracy {everything.pixel_accuracy:.3f}, mIoU {everything.miou:.3f}")

fig = go.Figure()
for metric in ("pixel accuracy", "mIoU", "mAP"):
    fig.add_bar(name=metric, x=list(results), y=[results[m][metric] for m in results])
fig.update_layout(title=f"Zero-shot segmentation on {task.name}", barmode="group", yaxis_range=[0, 1], height=380)
fig.show()

# %% [markdown]
# ## Exercises 6.1–6.3: the post-processing and the metric, by hand
#
# Every method's soft map went through the same steps. **6.1**: upsample the patch maps
# bilinearly to the mask size (`align_corners=False`), clip at 0, and min-max normalise each
# map to [0, 1] (a constant map becomes 0). **6.2**: keep the pixels strictly above their
# map's mean. **6.3**: the dataset-level scores: the foreground IoU adds up intersections and
# unions over *all* images before dividing, the background IoU does the same for the
# complements, and this table's mIoU is their mean.

# %% [exercise]
def postprocess(maps, size):
    """maps: [B, gh, gw] patch maps; size: (H, W). Returns [B, H, W] soft maps in [0, 1]."""
    # --- solution ---
    up = torch.nn.functional.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    up = up.clamp_min(0)
    lo = up.amin((-2, -1), keepdim=True)
    hi = up.amax((-2, -1), keepdim=True)
    return torch.where(hi > lo, (up - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(up))
    # --- end ---


# %%
from helpers.exercises import check_dataset_miou, check_postprocess, check_threshold_at_mean

postprocess = check_postprocess(postprocess)


# %% [exercise]
def threshold_at_mean(soft):
    """soft: [B, H, W]. Returns boolean masks [B, H, W]: the pixels above their own map's mean."""
    # --- solution ---
    return soft > soft.mean((-2, -1), keepdim=True)
    # --- end ---


# %%
threshold_at_mean = check_threshold_at_mean(threshold_at_mean)


# %% [exercise]
def dataset_miou(pred, truth):
    """pred, truth: boolean [N, H, W]. Returns (foreground IoU, background IoU, their mean),
    each accumulated over the whole dataset."""
    # --- solution ---
    iou_fg = float((pred & truth).sum() / (pred | truth).sum())
    iou_bg = float((~pred & ~truth).sum() / (~pred | ~truth).sum())
    return iou_fg, iou_bg, (iou_fg + iou_bg) / 2
    # --- end ---


# %%
dataset_miou = check_dataset_miou(dataset_miou)
soft = postprocess(soft_maps["decomposition"].double(), size=tuple(task.masks.shape[-2:]))
fg, bg, miou = dataset_miou(threshold_at_mean(soft), task.masks.bool())
print(f"decomposition, by your hand: IoU foreground {fg:.3f}, background {bg:.3f}, mIoU {miou:.3f}; "
      f"the table's mIoU {results['decomposition']['mIoU']:.3f}")

# %% [markdown]
# ## What the maps look like
#
# The same images through every method (soft maps after the shared post-processing, before the
# threshold). The attention baselines are class-agnostic: they show where the class token
# looks, whatever the question.

# %%
size = tuple(task.masks.shape[-2:])
for i in range(3):
    panels = {m: segment(soft_maps[m][i:i + 1], size)[0][0] for m in METHODS}
    maps_figure(task.views[i], panels, mask=task.masks[i], symmetric=False, colorscale="Jet",
                title=f"image {i}").show()

# %% [markdown]
# ## Two objects: segment the one the text names
#
# With one object per image, "where is the object?" and "where is the *red* object?" have the
# same answer, so a class-agnostic map loses nothing. Scenes with two objects that differ in
# shape, colour and place tell the methods apart: the mask is one object, the target class is
# its label ("segment the red one"), and a map that lights up both objects scores at most
# about half the foreground IoU. Same methods, same post-processing, same metric code.

# %% [predict]
# Two objects, and the text names one of them. How will the class-agnostic maps (raw attention,
# rollout) do now, compared with one object per scene?
# Answer:
# Worse: they show where the class token looks, whatever the question, so they spread over both
# objects and keep at most about half of the named object's foreground IoU. The class-specific
# maps can pick the named object; whether they do is what the table measures.

# %%
if pairs_factor:
    pairs = load_segmentation_task(f"world-pairs:{pairs_factor}", preprocess, n_images, seed=seed)
    pair_classifier = zero_shot_classifier(model, tokenizer, pairs.prompts)
    pair_results, pair_maps = evaluate_methods(model, pairs, pair_classifier, METHODS, batch_size=batch_size)
    display(pd.DataFrame(pair_results).T[["pixel accuracy", "mIoU", "mAP", "IoU foreground", "IoU background",
                                          "images/s"]].round(3))
    figures["pairs"] = {m: {k: float(v) for k, v in r.items() if k != "images/s"} for m, r in pair_results.items()}
    names = list(pairs.prompts)
    for i in range(2):
        panels = {m: segment(pair_maps[m][i:i + 1], tuple(pairs.masks.shape[-2:]))[0][0] for m in METHODS}
        maps_figure(pairs.views[i], panels, mask=pairs.masks[i], symmetric=False, colorscale="Jet",
                    title=f"segment the {names[int(pairs.labels[i])]} object").show()
    order = sorted(pair_results, key=lambda m: -pair_results[m]["mAP"])
    print("mAP ranking (two objects): " + " > ".join(f"{m} {pair_results[m]['mAP']:.3f}" for m in order))

# %% [markdown]
# ## Where each map puts its weight
#
# The tables say *which* map wins; this says *why*. For each map (before post-processing),
# the share of its positive mass on the patches the object touches: what the threshold can
# keep at best. Then the decomposition's map split by layer (the maps are a sum over layers):
# its positive mass on the object, off it, and the mass written *against* the class on the
# object's own patches, which dents the map where the object is.

# %%
L = model_info(model).n_layers
sub = min(len(task), 200)
per_layer = layer_maps(model, task.images[:sub].to(device), classifier).cpu()  # [L, N, gh, gw], one pass


def share_on_object(maps, masks):
    r = mass_by_region(maps, masks)
    return float((r["on"] / (r["on"] + r["off"])).nanmean())  # images with no positive mass are skipped


shares = {"one object": {m: share_on_object(soft_maps[m], task.masks) for m in METHODS}}
if pairs_factor:
    shares["two objects: the named one"] = {m: share_on_object(pair_maps[m], pairs.masks) for m in METHODS}
display(pd.DataFrame(shares).round(3))
figures["mass_on_object"] = shares

mass = {k: v.mean(-1) for k, v in mass_by_region(per_layer, task.masks[:sub]).items()}  # mean over images, [L]
fig = go.Figure()
fig.add_bar(name="positive, on the object", x=list(range(L)), y=mass["on"].tolist())
fig.add_bar(name="positive, off the object", x=list(range(L)), y=mass["off"].tolist())
fig.add_bar(name="against the class, on the object", x=list(range(L)), y=(-mass["against"]).tolist())
fig.update_layout(title=f"Decomposition map by layer on {task.name}: where the mass goes (mean per image)",
                  barmode="relative", xaxis_title="layer", yaxis_title="mass (cosine-similarity units)", height=360)
fig.show()
figures["layer_mass"] = {k: v.tolist() for k, v in mass.items()}
off_share_before_last = float(mass["off"][:-1].sum() / mass["off"].sum())
against_share_last = float(mass["against"][-1] / mass["on"][-1])
figures["off_mass_share_before_last_layer"] = off_share_before_last
figures["against_over_on_last_layer"] = against_share_last
print(f"of the positive mass off the object, {off_share_before_last:.0%} comes from layers before the last; "
      f"in the last layer the mass written against the class on the object is {against_share_last:.0%} "
      f"of the mass for it")

# %% [markdown]
# Read the two tables together. With one object, the last layer's attention already looks
# almost only at the object. The decomposition also sums earlier layers, whose heads take the
# class from patches *off* the object (their values already carry it: earlier layers moved it
# there), and its last layer has heads that write against the class on the object itself:
# both blur the map. With two objects the attention baselines split their weight between the
# objects, and the decomposition's class direction picks the named one.
#
# Large ViTs trained on photos are reported to store global information in a few background
# tokens with outsized norms, which the class token's attention then points at (Darcet et al.,
# "Vision Transformers Need Registers", ICLR 2024): raw attention then lights up background.
# The cell below measures, after every block, how far the largest patch token's norm stands
# above the median one. Ratios near 1 mean no such tokens, and a clean raw-attention map; run
# it online to see a real model's.

# %%
ratio = patch_norm_ratio(model, task.images[:sub].to(device)).cpu()  # [L, N]
figures["patch_norm_ratio"] = {"mean": ratio.mean(1).tolist(), "max": ratio.amax(1).tolist()}
print("largest / median patch-token norm after each block (mean over images, worst image):")
print("  " + "  ".join(f"{layer_label(i)} {m:.2f} ({w:.2f})" for i, (m, w) in enumerate(zip(ratio.mean(1), ratio.amax(1)))))

# %% [markdown]
# ## Try it: threshold and layers
#
# The decomposition's map is a sum over layers, so the map of a layer range is the sum of its
# per-layer maps: we compute the per-layer maps once and the metrics update at once. The
# threshold is either each map's mean (the paper's rule, slider at 0) or a fixed value.

# %%
def layer_range_scores(first, last, threshold):
    maps = per_layer[first:last + 1].sum(0)
    soft, hard = segment(maps, size, "mean" if threshold == 0 else threshold)
    return SegmentationScores().update(soft, hard, task.masks[:sub])


def explore(layers, threshold):
    s = layer_range_scores(layers[0], layers[1], threshold)
    print(f"layers {layers[0]}-{layers[1]}, threshold {'mean' if threshold == 0 else threshold}: "
          + ", ".join(f"{k} {v:.3f}" for k, v in s.summary().items()))


live(explore,
     layers=widgets.IntRangeSlider(value=(0, L - 1), min=0, max=L - 1, description="layers"),
     threshold=widgets.FloatSlider(value=0.0, min=0.0, max=0.95, step=0.05, description="threshold"))

curve = {f"{a}-{L - 1}": layer_range_scores(a, L - 1, 0).miou for a in range(L)}
fig = go.Figure(go.Scatter(x=list(curve), y=list(curve.values()), mode="lines+markers"))
fig.update_layout(title="Decomposition segmenter: mIoU when summing layers a..last", xaxis_title="layers",
                  yaxis_title="mIoU", yaxis_range=[0, 1], height=330)
fig.show()
figures["miou_by_first_layer"] = curve
figures["miou_all_layers_subset"] = layer_range_scores(0, L - 1, 0).miou

# %% [markdown]
# ## Reading the table
#
# * Raw attention of the last layer shows where the class token gathers its summary, which
#   need not be the object; rollout smooths attention over all layers and is class-agnostic;
#   the gradient methods depend on how sharp the gradient of one logit is; the decomposition
#   reads which patches *write* the class direction.
# * On a world with a single salient object per scene a class-agnostic map can do well:
#   compare the decomposition with the attention baselines in the printout below, and see
#   "Where each map puts its weight" for why. With two objects the class-agnostic maps cannot
#   choose, and the class-specific ones are tested on what they claim. On photos with clutter
#   (online) the class-specific methods have more to gain.
# * The paper reports (ImageNet-Segmentation, ViT-H-14) pixel accuracy 75.2, mIoU 54.5,
#   mAP 81.6 for the decomposition against 69.2 / 47.5 / 78.3 for Chefer et al. Those figures
#   are **not** reproduced here (no network on the machines this course is tested on); run
#   this notebook with `dataset="imagenet-seg"` and `model_name="ViT-H-14"`,
#   `pretrained="laion2b_s32b_b79k"` to reproduce them. The table above is the offline
#   measurement, on the synthetic world.

# %%
order = sorted(results, key=lambda m: -results[m]["mIoU"])
print("mIoU ranking: " + " > ".join(f"{m} {results[m]['mIoU']:.3f}" for m in order))
figures["miou_ranking"] = order
