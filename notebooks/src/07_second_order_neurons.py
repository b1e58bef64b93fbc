# %% [markdown]
# [Open in Colab ↗](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb) (needs a Google account and network; offline, skip it: see `notebooks/OFFLINE.md`)
#
# # 7 · Second-order effects of neurons
#
# MLP layers write little into the embedding directly (notebooks 1–2). The same authors' next
# paper (Gandelsman, Efros, Steinhardt, *Interpreting the Second-Order Effects of Neurons in CLIP*,
# 2024) follows MLP **neurons** one step further: what a neuron writes into the residual stream is
# read by the later attention heads, which carry it to the class token and the embedding.
#
# Neuron $k$ of MLP layer $l$ writes its activation times a fixed vector at every token. Hold every
# attention weight and layer-norm scale at the image's own values and each step of the path is
# linear: a later layer's `ln_1` (centring, then a division by its scale at each token), a head's
# value map, the class token's attention to each token, the head's output map, then `ln_post` (one
# scale per image) and the projection. So the neuron's **second-order effect**, summed over every
# later head $h$ of every later layer $L$, is
#
# $$\phi_k(I) = \sum_{L>l,\,h} s^{L,h}_k(I)\; u^{L,h}_k ,$$
#
# one number per image and head, $s$, times a vector $u$ that holds no image. A layer's neurons
# cost about one forward pass, and a dataset's statistics stream in bounded memory instead of the
# paper's `[images, neurons, d]` array (32 GB per layer for ViT-B-32 on 5,000 images). Paths
# through later MLPs or two attention layers are left out, as in the paper.
#
# **How the offline model was made matters here.** Its training pushed the direct effects of its
# MLPs and early attention layers toward zero (`data/models/MODEL_CARD.md`), so its MLPs act
# *indirectly*, much of it through the last four attention layers, fed by the MLPs of layers 3–5.
# A paper preset (`preset = "ViT-B-32 OpenAI"`, layers 8–10) tests the claims on a CLIP nobody
# shaped.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | write a neuron's second-order effect from its activations, the later heads' attention and the frozen layer-norm scales; measure how sparse the effects are; read a neuron's direction in words and check them against ground truth; find the neurons that push one class toward another and test their words in drawn scenes |
# | **Time** | {{TIME}} |
# | **Assumes** | notebooks 1–3 (direct effects, mean ablation, texts for directions); what an MLP neuron and a layer norm compute; a bootstrap interval |
#
# {{EXERCISE_NOTE}}

# %% tags=["parameters"]
preset = "offline"   # the one switch: "offline", "ViT-B-16 LAION", "ViT-L-14 LAION",
                     # "ViT-H-14 LAION", "ViT-B-16 OpenAI", "ViT-B-32 OpenAI",
                     # "ViT-L-14 OpenAI", "random ViT-B-32". The parameters below
                     # override it where set (None or "": the preset's value).
model_name = ""      # e.g. "ViT-B-32-quickgelu" (then name its weights in `pretrained`)
pretrained = ""      # an open_clip tag (e.g. "openai"), a checkpoint path, or "random"
dataset = ""         # images for the statistics and the held-out checks:
                     # "world[:factor]", "imagenette", or "imagenet:/path/to/val"
n_images = None      # images for the per-neuron statistics
eval_images = None   # other images: sparsity, ablations, concepts
layers = None        # MLP layers, e.g. [8, 9, 10] (not the last block)
top_k = None         # top images kept per neuron (the paper: 100 of 5,000, 2%)
vocabulary = ""      # texts for the directions: "world", "common_words",
                     # "general" or a file
pool_size = None     # texts drawn from the vocabulary (0: all of them)
n_words = None       # texts per direction (orthogonal matching pursuit)
seg_dataset = ""     # "world[:factor]", "imagenet-seg" or
                     # "imagenet-seg:/path/to/gtsegs_ijcv.mat"
seg_images = None
seg_neurons = None   # neurons per class for the segmenter (the paper: 200)
n_pairs = None       # class pairs for adversarial words (0: every ordered pair)
adv_scenes = None    # scenes per pair and word list (the world draws them)
batch_size = None
device = ""          # "cuda" or "cpu" (the papers' presets: cuda if there is a GPU)
templates = "openai" # ImageNet prompt templates for photos: "openai" (80, the
                     # paper's) or "simple" (7, faster)
protocol = ""        # set by the papers' presets; every step here follows the
                     # second-order paper's code
seed = 0
record_to = ""       # JSON file for the key figures (set by the test harness)

# %%
# {{SETUP}}

# %%
import copy

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import display

from helpers.course.narrative import (
    Claim,
    comparative,
    compare,
    evidence_note,
    leader,
    num,
    pct,
    pts,
    rate_difference,
    ratio,
    say,
    verdict,
    what_we_see,
)
from helpers.course.plots import image_panels, maps_figure
from helpers.course.presets import begin
from helpers.course.ui import live
from helpers.data import world
from helpers.data.datasets import load_task
from helpers.data.neuron_scenes import CONDITIONS, adversarial_trials, concept_agreement, word_values
from helpers.data.pools import load_pool
from helpers.data.segmentation_tasks import load_segmentation_task
from helpers.engine.images import images_to_tensor, model_view
from helpers.engine.labels import head_labels
from helpers.engine.models import model_info, provenance, world_of
from helpers.engine.text import encode_texts, zero_shot_classifier
from helpers.methods.metrics import SegmentationScores
from helpers.methods.second_order import (
    ABLATIONS,
    NeuronDirections,
    SecondOrder,
    ablated_embeddings,
    ablation_studies,
    adversarial_words,
    check_supported,
    compare_rates,
    exactness,
    image_concepts,
    layer_effects,
    neuron_segmentation_maps,
    rank_neurons_between,
    significance,
    sparse_text_decomposition,
    stream_neuron_stats,
    top_image_lift,
)
from helpers.methods.segmentation import evaluate_methods, segment
from helpers.methods.stats import (
    SEGMENTATION_STATISTICS,
    accuracy_tolerance,
    paired_bootstrap,
    permutation_difference,
    segmentation_items,
    with_tolerance,
)

settings, figures, (model, preprocess, tokenizer) = begin(globals(), "07")  # the preset fills what was left unset
layers = [int(x) for x in layers]
check_supported(model)  # a class-token ViT (SigLIP's pooled towers have no class token to carry these effects)
info = model_info(model)
prov = provenance(model)
task = load_task(dataset, n_images=n_images + eval_images, preprocess=preprocess, seed=seed, templates=templates,
                 world_name=world_of(model))
if top_k > n_images:
    raise ValueError(f"top_k={top_k} images per neuron needs at least as many statistics images (n_images={n_images})")
order = torch.randperm(len(task), generator=torch.Generator().manual_seed(seed))
stats_idx, eval_idx = order[:n_images].tolist(), order[n_images:].tolist()
stats_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(task.dataset, stats_idx), batch_size=batch_size)
eval_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(task.dataset, eval_idx), batch_size=batch_size)
classifier = zero_shot_classifier(model, tokenizer, task.prompts)
scenes = task.meta.get("scenes")  # the world's scenes with every factor (None for photos)
on_world = scenes is not None
n_neurons = {L: SecondOrder(model, L).mlp_width for L in layers}  # (builds nothing yet)
print(f"{model_name}: {info.n_layers} layers x {info.n_heads} heads; MLP layers {layers} with "
      f"{', '.join(str(n) for n in n_neurons.values())} neurons; {task.name}: {len(stats_idx)} images for the "
      f"statistics, {len(eval_idx)} held out, {len(task.classes)} classes")
figures["layers"] = layers
figures["n_images"], figures["eval_images"], figures["top_k"] = len(stats_idx), len(eval_idx), top_k
figures["provenance"] = prov.kind
say(prov.note)

# %% [markdown]
# ## One image, one neuron
#
# `SecondOrder(model, layer)` builds a layer's $u$'s once; called on images, it runs one forward
# pass with read-only hooks and returns every neuron's $s$. Take one held-out image and the neuron
# of the middle layer with the largest effect on it: the bars show each later head's part of that
# effect (projected on the whole, so the bars add up to its length).

# %%
layer0 = layers[len(layers) // 2]
so = SecondOrder(model, layer0)
x_eval = torch.stack([task.dataset[i][0] for i in eval_idx[:4]]).to(device)
eff = so(x_eval)  # joint-space units, as the terms of notebook 1
k_star = int(eff.norms()[0].argmax())
phi = eff.effects([k_star])[0, 0]  # [d']
parts_j = eff.coef[0, k_star][:, None] * eff.u[k_star]  # [J, d']: what each later head carries
along = (parts_j @ phi / phi.norm()).detach().cpu()
pair_names = head_labels(so.pairs)
fig = go.Figure(go.Bar(x=pair_names, y=along.tolist(),
                       marker_color=[f"hsl({40 * (L - layer0)}, 60%, 50%)" for L, _ in so.pairs]))
fig.update_layout(title=f"Neuron L{layer0}.N{int(so.neurons[k_star])} on one image: what each later head carries",
                  yaxis_title="part of the effect (along it)", height=340)
fig.show()
layer_total = float((eff.total()[0] + eff.bias()[0]).norm())
emb_norm = float(eff.embedding[0].norm())
top_j = int(along.argmax())
figures["one_neuron"] = {"layer": layer0, "neuron": int(so.neurons[k_star]), "effect_norm": float(phi.norm()),
                         "layer_effect_norm": layer_total, "embedding_norm": emb_norm,
                         "top_head": pair_names[top_j], "top_head_share": float(along[top_j] / phi.norm()),
                         "parts_sum_error": float((along.sum() - phi.norm()).abs() / phi.norm())}
parts = so.parts(x_eval, k_star)  # the pieces of this neuron's effect on the four images (exercise 7.1)

# %%
what_we_see(
    f"Neuron L{layer0}.N{int(so.neurons[k_star])} has the largest second-order effect on this image: a vector of "
    f"length {num(float(phi.norm()))}, {pct(float(phi.norm()) / emb_norm)} of the embedding's length "
    f"({num(emb_norm)}). All {n_neurons[layer0]} neurons of layer {layer0} with its bias term add up to "
    f"{num(layer_total)} ({pct(layer_total / emb_norm)}).",
    f"Head {pair_names[top_j]} carries the largest part ({pct(float(along[top_j] / phi.norm()))} of its length); "
    f"the {len(pair_names)} parts add up to the whole "
    + verdict(figures["one_neuron"]["parts_sum_error"] < 1e-4, "(to rounding: a relative error under 1e-4).",
              "(**not** to rounding: a relative error of 1e-4 or more)."),
)

# %% [markdown]
# ## Exercise 7.1: one neuron's effect from its pieces
#
# `parts` holds what the path needs for that neuron on four images: its activation at every
# token, `acts` (the class token first); the class token's attention row of every later head,
# `attention`; the scale of each head's layer's `ln_1` at every token, `sigma`; the final layer
# norm's scale, `sigma_post`; and the vectors `u`. Follow the neuron's write along the path of the
# introduction and put the pieces together: which act token by token, which once per image?

# %% [markdown] tags=["hint"]
# Per image and later head $j$ the coefficient is
# $s_j = \frac{1}{\sigma_{\text{post}}} \sum_m A_{j,m}\, a_m / \sigma_{j,m}$: each token's
# activation divided by its own `ln_1` scale, weighted by the class token's attention to it, summed
# over the tokens (the class token too). The effect is $\sum_j s_j u_j$.

# %% [markdown] tags=["hint"]
# `s = torch.einsum("bjt,bt->bj", attention / sigma, acts) / sigma_post[:, None]`, then `s @ u`.

# %% tags=["exercise"] kind="implement" difficulty=2 importance=3 minutes=8 number="7.1"
def neuron_effect(acts, attention, sigma, sigma_post, u):
    """One neuron's second-order effect on each image of a batch.

    acts:       [B, T]     the neuron's activation at every token
    attention:  [B, J, T]  the class token's attention row of each later head j
    sigma:      [B, J, T]  the ln_1 scale of head j's layer at every token
    sigma_post: [B]        ln_post's scale at the class token
    u:          [J, d']    the neuron's write carried by head j to the joint space (per unit of s)
    returns     [B, d']
    """
    # --- solution ---
    s = torch.einsum("bjt,bt->bj", attention / sigma, acts) / sigma_post[:, None]  # [B, J]
    return s @ u
    # --- end ---


# %%
from helpers.course.exercises.nb07 import (
    check_neuron_effect,
    check_neurons_about,
    check_push_neuron,
    check_rank1_ablate,
)

neuron_effect = check_neuron_effect(neuron_effect)
mine = neuron_effect(parts.acts, parts.attention, parts.sigma, parts.sigma_post, parts.u)
theirs = eff.effects([k_star])[:, 0]
gap = float((mine - theirs).abs().max())
say(f"{neuron_effect.yours} vs SecondOrder's effects: largest difference {gap:.1e}, relative to the largest entry "
    f"{gap / float(theirs.abs().max()):.1e}")

# %% [markdown]
# ## Every neuron over a dataset: sparse effects
#
# Per neuron the paper keeps its mean effect and the `top_k` images whose effect differs most from
# it (2% of the images); `stream_neuron_stats` streams them. From them: the neuron's **direction**
# (the first singular vector of its top images' centred effects, signed so that most project
# positively) and its **threshold** (the smallest top-k norm: where the centred effect is longer,
# the neuron is *significant*). `ablation_studies` then marks, on held-out images, where each
# neuron is significant, and how much of its squared effect those images hold.

# %% [markdown] tags=["predict"]
# On about what share of the held-out images will a neuron be significant, and will those images
# hold about the same share of its effect?
# Answer:
# About `top_k / n_images` of them: the threshold was set so that this share of the statistics
# images passes it, and held-out images come from the same distribution. The share of the effect
# is the open question: if a neuron's effect were about the same size on every image, those
# images would hold about their own share of it; if it is sparse, much more.

# %%
stats = stream_neuron_stats(model, stats_loader, layers, k=top_k, batch_size=batch_size, total=len(stats_idx))
dirs = {L: stats[L].directions() for L in layers}
all_dirs = NeuronDirections.cat([dirs[L] for L in layers])
labels_all = all_dirs.labels()  # "L4.N123", one per row of all_dirs
top_all = torch.cat([stats[L].top_index for L in layers]).cpu()  # [neurons, k]: positions among the statistics images
kept = sum(t.numel() * t.element_size() for s in stats.values() for t in (s.mean, s.top_index, s.top_norm, s.top_coef))
full = len(stats_idx) * sum(n_neurons.values()) * info.embed_dim * 4
figures["bytes_kept"], figures["bytes_full"] = kept, full
say(f"{len(all_dirs)} neurons over {len(stats_idx)} images: the statistics take {kept / 2**20:.1f} MiB, where the "
    f"`[images, neurons, d']` array of these layers would take {full / 2**20:.0f} MiB (float32).")

results = ablation_studies(model, dirs, eval_loader, classifier, batch_size=batch_size)  # every neuron, held out
expected_share = top_k / len(stats_idx)
fig = go.Figure()
sparsity = {}
for L in layers:
    share, energy = results[L].significant_share, results[L].significant_energy
    fig.add_histogram(x=(100 * share).tolist(), name=f"layer {L}", opacity=0.6, nbinsx=40)
    sparsity[L] = {"mean_share": float(share.mean()), "median_share": float(share.median()),
                   "share_of_neurons_under_2pct": float((share < 0.02).double().mean()),
                   "median_energy_share": float(energy.nanmedian()),
                   "energy_over_share": float(energy.nanmedian() / max(float(share.median()), 1e-12))}
fig.add_vline(x=100 * expected_share, line_dash="dash", annotation_text="top_k / images")
fig.update_layout(barmode="overlay", title="On how many held-out images is each neuron significant?",
                  xaxis_title="share of the held-out images (%)", yaxis_title="neurons", height=340)
fig.show()
figures["sparsity"] = sparsity
figures["expected_share"] = expected_share
mean_share = float(np.mean([s["mean_share"] for s in sparsity.values()]))
energy = float(np.mean([s["median_energy_share"] for s in sparsity.values()]))
CONCENTRATION = 3  # the claim below asks the significant images to hold at least this many times their share
concentrated = Claim("Each neuron's effect is concentrated on a few images",
                     bool(energy >= CONCENTRATION * mean_share),
                     f"(the images where a neuron is significant, {pct(mean_share)} of them, hold {pct(energy)} of "
                     f"its squared effect, {ratio(energy / max(mean_share, 1e-12), 1)} their share; medians over "
                     f"neurons, means over layers; the claim asks for at least {CONCENTRATION}×)")
figures["claims"] = {"concentrated": concentrated.status}

# %%
what_we_see(
    f"A neuron is significant on {pct(mean_share)} of the held-out images on average (per layer: "
    + ", ".join(f"{L}: {pct(s['mean_share'])}, median {pct(s['median_share'])}" for L, s in sparsity.items())
    + f"), against the {pct(expected_share)} the threshold was set to on the statistics images; "
    + ", ".join(f"{pct(s['share_of_neurons_under_2pct'])} of layer {L}'s neurons" for L, s in sparsity.items())
    + " are significant on under 2% (the paper's figure).",
    f"{concentrated}.",
)

# %% [markdown]
# ## Directions in words
#
# Each direction is written as a sparse sum of text embeddings: orthogonal matching pursuit picks
# `n_words` texts, each the one that best explains what the earlier picks left
# (`sparse_text_decomposition`). Offline the texts are the world's own; online, common words.
#
# Do the words fit what the neurons respond to? Take the factor value a neuron's first positive
# word names (`"blades of grass"`: background *grass*): how often its top images have it, divided
# by its share of all the images, is the **lift** (1: the word says nothing about them). The
# control gives each neuron's word another neuron's top images, many times over.

# %%
pool = load_pool(vocabulary).sample(pool_size, seed=seed)
words = list(pool.texts)
vocab_emb = encode_texts(model, tokenizer, words)
n_words_used = min(n_words, len(words), info.embed_dim)
texts = sparse_text_decomposition(all_dirs, vocab_emb, words, n_words=n_words_used)
top_word = [next((w for w, c in texts.top(r) if c > 0), None) for r in range(len(texts))]
figures["vocabulary"], figures["n_words"] = pool.name, n_words_used
lift = lift_ev = lift_claim = None
if on_world:
    stats_factors = {f: scenes.factors[f][stats_idx] for f in world.FACTOR_NAMES}
    values = word_values(top_word)
    lift = top_image_lift(top_all, stats_factors, values)
    rng = np.random.default_rng(seed)
    checked = ~torch.isnan(lift)
    control, ctrl_over2 = [], []
    for _ in range(50):  # each neuron's word on another neuron's top images
        shuffled = top_image_lift(top_all[torch.as_tensor(rng.permutation(len(top_all)))], stats_factors, values)
        control.append(float(torch.nanmean(shuffled)))
        ctrl_over2.append(float((shuffled[checked] > 2).double().mean()))
    g = torch.Generator().manual_seed(seed)
    random_dirs = torch.nn.functional.normalize(torch.randn(len(all_dirs), info.embed_dim, generator=g), dim=-1)
    random_texts = sparse_text_decomposition(random_dirs, vocab_emb, words, n_words=n_words_used)
    random_top = [next((w for w, c in random_texts.top(r) if c > 0), None) for r in range(len(random_texts))]
    names_real = float(np.mean([v is not None for v in values]))
    names_random = float(np.mean([v is not None for v in word_values(random_top)]))
    by_layer = {L: float(torch.nanmean(lift[all_dirs.layer == L])) for L in layers}
    figures["top_word_names_factor"] = {"neurons": names_real, "random directions": names_random}
    figures["lift"] = {"mean": float(torch.nanmean(lift)), "by_layer": by_layer,
                       "share_over_2": float((lift[checked] > 2).double().mean()), "n_checked": int(checked.sum())}
    figures["lift_control"] = {"mean": float(np.mean(control)), "low": float(np.percentile(control, 2.5)),
                               "high": float(np.percentile(control, 97.5)), "share_over_2": float(np.mean(ctrl_over2))}
    if figures["lift"]["n_checked"] > 0:  # judged once: here and in the takeaway
        names_ev = with_tolerance(names_real, names_random,
                                  accuracy_tolerance((names_real + names_random) / 2, len(all_dirs)),
                                  f"two standard errors of a share of {len(all_dirs)} directions")
        lift_ev = permutation_difference(figures["lift"]["mean"], control)
        lift_claim = Claim("A neuron's first word names a value its top images share", lift_ev,
                           f"(lift {num(figures['lift']['mean'], 2)} against {num(np.mean(control), 2)} for shuffled "
                           "words)")
        figures["lift_side"], figures["names_factor_side"] = lift_ev.side, names_ev.side
    best = []  # the neuron with the highest lift among those whose word names each factor
    for f in world.FACTOR_NAMES:
        rows_f = [r for r, v in enumerate(values) if v is not None and v[0] == f and not torch.isnan(lift[r])]
        if rows_f:
            best.append(max(rows_f, key=lambda r: float(lift[r])))
    display(pd.DataFrame([{"neuron": labels_all[r], "first positive word": top_word[r],
                           "names": f"{values[r][0]} {world.FACTORS[values[r][0]][values[r][1]]}" if values[r] else "",
                           "lift": num(float(lift[r]), 2),
                           "words (weight)": ", ".join(f"{w} ({c:+.2f})" for w, c in texts.top(r, 5))} for r in best]))
else:
    strongest = torch.argsort(all_dirs.threshold, descending=True)[:8].tolist()
    display(pd.DataFrame([{"neuron": labels_all[r], "words (weight)": ", ".join(f"{w} ({c:+.2f})"
                                                                                 for w, c in texts.top(r, 6))}
                          for r in strongest]))
# exercise 7.4's pair: the first two classes on the world, the two most common held-out classes on photos
ia, ib = (0, 1) if on_world else (int(c) for c in torch.bincount(task.labels[eval_idx]).argsort(descending=True)[:2])
print(f"exercise 7.4's pair: A = {task.classes[ia]}, B = {task.classes[ib]}")

# %%
if lift_ev is not None:
    lc = figures["lift_control"]
    what_we_see(
        f"{len(words)} texts ({pool.name}), {n_words_used} per direction. The first positive word names a factor of "
        f"the world for {pct(names_real)} of the neurons and for {pct(names_random)} of random directions: "
        + comparative(names_ev, "more often for the neurons, but nearly every direction's word names one, so the "
                                "count says little",
                      "less often for the neurons than for random directions, so the count says nothing in the "
                      "neurons' favour",
                      "within noise of each other, so that count cannot tell neurons from random directions")
        + f" ({evidence_note(names_ev, as_pct=True, digits=1)}).",
        f"Lift of the named value among a neuron's top images: {num(figures['lift']['mean'], 2)} on average "
        f"({figures['lift']['n_checked']} neurons; per layer "
        + ", ".join(f"{L}: {num(v, 2)}" for L, v in by_layer.items())
        + f"), against {num(lc['mean'], 2)} when each word is checked on another neuron's top images (95% of 50 "
          f"shuffles between {num(lc['low'], 2)} and {num(lc['high'], 2)}): "
        + comparative(lift_ev, "the words fit their own neurons' images, beyond the shuffles' range.",
                      "the words fit their own neurons' images *worse* than shuffled ones.",
                      "the words fit their own neurons' images no better than shuffled ones (within noise)."),
        f"{pct(figures['lift']['share_over_2'])} of the neurons have a lift above 2 (shuffled: "
        f"{pct(lc['share_over_2'])}).",
        verdict(prov.shaped, "Both the scenes and the texts come from the world the model was trained on: the "
                             "check says the decomposition reads what the model learned about that world.", prov.note),
    )
elif on_world:
    say(f"No neuron's first positive word names a factor of the world ({pool.name} vocabulary), so there is nothing "
        "to check against the scenes' factors; the world's own texts (`vocabulary='world'`) name them.")
else:
    say(f"{len(words)} texts ({pool.name}), {n_words_used} per direction. These images have no ground-truth factors "
        "to check the words against; the table is what the paper shows (its vocabulary: 30,000 common words; here "
        "the course's common-words list).")

# %% [markdown]
# ## Adversarial scenes
#
# Where a neuron is significant, its effect moves the embedding along its direction. Can that
# move an image of class A toward class B in the zero-shot classifier?
#
# ## Exercise 7.4: which neuron pushes A toward B?
#
# For the pair printed above, find the neuron that, where it is significant, moves an image of A
# most toward B. You have each neuron's unit direction (`all_dirs.vectors`, rows named by
# `labels_all`), mean effect (`all_dirs.mean`) and threshold (`all_dirs.threshold`), and the
# classes' text embeddings (`classifier[ia]`, `classifier[ib]`). Answer with the neuron's name.

# %% [markdown] tags=["hint"]
# An image's score for a class is its embedding's dot product with the class's text embedding.
# On a neuron's top images its effect moves along its direction $d$. What does a step along $d$
# do to B's score *minus* A's? (A neuron's mean effect is the same on every image.)

# %% [markdown] tags=["hint"]
# `push = all_dirs.vectors @ (classifier[ib] - classifier[ia]).to(all_dirs.vectors)`, then
# `labels_all[int(push.argmax())]`.

# %% tags=["exercise"] kind="find" difficulty=2 importance=2 minutes=5 number="7.4"
def push_neuron():
    """The neuron that, where it is significant, moves an image of class A (classifier row ia) most toward
    class B (row ib): its name, e.g. "L4.N123"."""
    # --- solution ---
    push = all_dirs.vectors @ (classifier[ib] - classifier[ia]).to(all_dirs.vectors)
    return labels_all[int(push.argmax())]
    # --- end ---


# %%
push_neuron = check_push_neuron(push_neuron, directions=all_dirs, class_a=classifier[ia], class_b=classifier[ib],
                                names=(task.classes[ia], task.classes[ib]),
                                words=[", ".join(w for w, _ in texts.top(r, 3)) for r in range(len(texts))])
n_push = min(50, len(all_dirs))  # the neurons whose words the attack below pools (the paper's 50)
_, by_size = rank_neurons_between(all_dirs, classifier[ia], classifier[ib])  # rows by the size of their push
push_rank = 1 + [labels_all[int(r)] for r in by_size].index(push_neuron())
figures["push_neuron"], figures["push_neuron_rank"] = push_neuron(), push_rank
say(f"{push_neuron.yours} names {push_neuron()}: by the size of its push (either sign) it ranks {push_rank} of "
    f"{len(all_dirs)}, so its words are " + verdict(push_rank <= n_push, "among", "**not** among")
    + f" those the attack below pools for {task.classes[ia]} → {task.classes[ib]} (the first {n_push}).")

# %% [markdown]
# The paper turns this into an attack: pool the words of the 50 neurons with the largest push
# (either sign, each weighted by its signed push), leave out every word naming B, render captions
# with them by a text-to-image model, and count how often CLIP takes the images of A for B. The
# world is its own text-to-image model: each word names a factor value, and its renderer draws
# scenes of A with those values. Controls on the *same* scene draws: as many random words (those
# naming B left out too), and no words. The comparison resamples whole class pairs.

# %% [markdown] tags=["predict"]
# The model answers "which shape?" (offline). The words may set a scene's colour, size, pattern,
# position or background, never its shape. Can words like these make the model name another
# shape, more often than random words do?
# Answer:
# Only through what the model has tied to the shapes. A colour or background that co-occurred
# with the target shape in training, or that the target's neurons respond to, can push toward
# it; random words set the same kinds of factors at random. The next cell measures it, and the
# interval says whether the difference is more than the noise between class pairs.

# %%
renderable = on_world and task.meta.get("factor") in world.OVERRIDABLE and adv_scenes > 0
adv_claim = None
if renderable:
    trials = adversarial_trials(all_dirs, texts, classifier, task.classes, factor=task.meta["factor"], pairs=n_pairs,
                                n_scenes=adv_scenes, n_neurons=n_push, n_words=10, seed=seed,
                                config=world_of(model))
    x_adv = images_to_tensor(trials.images, model)
    with torch.no_grad():
        emb = torch.cat([model.encode_image(x_adv[i:i + batch_size].to(device)) for i in range(0, len(x_adv), batch_size)])
    pred = (torch.nn.functional.normalize(emb, dim=-1) @ classifier.T).argmax(-1).cpu().numpy()
    rates = trials.rates(pred)
    vs_random = trials.compare(pred, "adversarial words", "random words", seed=seed)
    vs_none = trials.compare(pred, "adversarial words", "no words", seed=seed)
    n_pairs_run = len(trials.words)
    adv_claim = Claim("Words of the neurons that push A toward B fool the model more often than random words",
                      vs_random.as_difference("class pairs"),
                      f"({pct(vs_random.rate_a)} vs {pct(vs_random.rate_b)} of the scenes taken for the target)")
    figures["adversarial"] = {"rates": rates, "n_pairs": n_pairs_run, "scenes_per_pair": adv_scenes,
                              "vs_random": [vs_random.difference, vs_random.low, vs_random.high],
                              "vs_random_within_noise": vs_random.within_noise,
                              "vs_none": [vs_none.difference, vs_none.low, vs_none.high],
                              "vs_none_within_noise": vs_none.within_noise, "claim": adv_claim.status}
    if trials.factor == "shape":
        figures["adversarial"]["habitat_backgrounds"] = {c: trials.habitat_backgrounds(c) for c in CONDITIONS[:2]}
        habitat_ev = trials.habitat_difference("adversarial words", "random words", seed=seed)
        figures["adversarial"]["habitat_side"] = habitat_ev.side
    fooled = trials.fooled(pred)
    by_pair = {p: fooled[(trials.pair == i) & (trials.condition == CONDITIONS[0])].mean()
               for i, p in enumerate(trials.words)}
    show_pair = max(by_pair, key=by_pair.get)
    i_pair = list(trials.words).index(show_pair)
    panels, titles = [], []
    for c in CONDITIONS:
        idx = np.flatnonzero((trials.pair == i_pair) & (trials.condition == c))[:4]
        panels += [trials.images[i] for i in idx]
        titles += [f"{c}: {task.classes[pred[i]]}" for i in idx]
    for c in CONDITIONS[:2]:
        print(f"{show_pair[0]} -> {show_pair[1]}, {c}: {', '.join(trials.words[show_pair][c])}")
        print(f"    drawn: {trials.plans[show_pair][c].describe()}")
    image_panels(panels, titles, per_row=len(panels) // len(CONDITIONS), panel_size=130,
                 title=f"Scenes of a {show_pair[0]}, target {show_pair[1]} (titles: the model's answer)").show()
else:
    pairs_shown = []
    common = [int(c) for c in torch.bincount(task.labels[eval_idx]).argsort(descending=True)[:max(2, 2 * n_pairs)]]
    for i in range(0, len(common) - 1, 2):
        pairs_shown += [(common[i], common[i + 1]), (common[i + 1], common[i])]
    rows = []
    for a, b in pairs_shown[:max(1, n_pairs)]:
        drop = [w for w in words if task.classes[b].lower() in w.lower()]
        rows.append({"A": task.classes[a], "B": task.classes[b],
                     "words that push A toward B": ", ".join(w for w, _ in adversarial_words(
                         all_dirs, texts, classifier[a], classifier[b], n_neurons=n_push, n_words=10, exclude=drop))})
    display(pd.DataFrame(rows))
    figures["adversarial"] = None

# %%
if renderable:
    habitat_sentence = ""
    if "habitat_backgrounds" in figures["adversarial"]:
        hb = figures["adversarial"]["habitat_backgrounds"]
        habitat_sentence = (
            "Where a word list sets the background, it is the habitat of the target shape's family (grass for "
            "walkers, water for swimmers) in " + "; ".join(f"{h} of {b} pairs with {c}" for c, (b, h) in hb.items())
            + (": " + comparative(habitat_ev, "the adversarial words pick it more often, the link between family and "
                                              "habitat that the world's training captions plant",
                                  "the adversarial words pick it *less* often than random words",
                                  "the two are within noise of each other")
               + f" ({evidence_note(habitat_ev, as_pct=True, digits=1)})." if all(b for b, _ in hb.values())
               else ": too few background words to compare."))
    what_we_see(
        f"Over {n_pairs_run} class pairs and {adv_scenes} scenes each, the scenes are taken for the target class "
        + ", ".join(f"{pct(r)} of the time with {c}" for c, r in rates.items()) + ".",
        rate_difference(vs_random, "The adversarial words' rate", "the random words'", unit="class pairs"),
        rate_difference(vs_none, "The adversarial words' rate", "the rate with no words", unit="class pairs"),
        f"The pair shown ({show_pair[0]} → {show_pair[1]}) is the one where the adversarial words fool the model "
        f"most, on {pct(by_pair[show_pair])} of its scenes; words that name another value of the class factor are "
        "left undrawn (a scene of A must keep showing A).",
        habitat_sentence,
        verdict(prov.shaped, "What the model confuses comes from the world it was trained on: on this model the "
                             "words can only use what that training put there.", prov.note),
    )
else:
    say("These images are photos: drawing the words into new images takes a text-to-image model, which the course "
        "does not ship (the paper used one). The table lists the words; the world's scenes (`dataset='world:shape'`) "
        "run the whole experiment.")

# %% [markdown]
# ## What to take away

# %%
take = [
    "A neuron's effect through the later heads is a few numbers per image times fixed vectors (exercise 7.1), so "
    f"the statistics of {len(all_dirs)} neurons over {len(stats_idx)} images take {kept / 2**20:.1f} MiB instead of "
    f"{full / 2**20:.0f} MiB.",
    f"{concentrated}.",
]
if lift_claim is not None:
    take.append(f"{lift_claim}.")
if adv_claim is not None:
    take.append(f"{adv_claim}.")
what_we_see(*take, prov.note, title="What to take away")

# %% [markdown] tags=["discuss"]
# The significance threshold is set so that `top_k` of the statistics images pass it. Which of the
# sparsity figures is then true by construction, and which is a finding?
# Answer:
# By construction: on the statistics images exactly `top_k / n_images` of the images pass each
# neuron's threshold, and on held-out images of the same distribution about as many do (the
# histogram sits at the dashed line). That says nothing about sparsity; any effect would give it.
# The finding is how much of each neuron's squared effect those few images hold: for an effect
# of about the same size on every image it would be about their share of the images; the
# takeaway above gives both figures as this run measured them. The per-layer spread of the
# shares (the histogram's width) and the share of
# neurons significant on under 2% of the images are measured too, but both follow mostly from
# the threshold.
# %% [markdown]
# ## Going further
#
# The core path ends here. Below, with the same statistics: the exactness of the factored form in
# float64, the ablation table and the rank-1 ablation by hand (exercise 7.3), a search for the
# neurons about a value (exercise 7.2), neurons as a zero-shot segmenter, the concepts of single
# images, and a neuron explorer.
#
# ### Exact: neurons plus bias term = the MLP's whole effect through the later heads
#
# Every neuron's effect plus the layer's bias term (the write of `c_proj`'s bias, the same path
# with $a = 1$) should equal the effect of the MLP's whole output through the later heads' direct
# paths. `exactness` computes that without the factored form, by forward-mode differentiation
# through one forward pass of the stock model (attention weights and layer-norm scales frozen,
# later MLPs and second attention layers cut), and reports the largest deviation relative to the
# largest entry, here in float64 on a copy of the image tower, for one image.

# %%
visual64 = copy.deepcopy(model.visual).double().requires_grad_(False)
x64 = x_eval[:1].double()  # one image: a check of the identity, not a statistic
exact = {L: exactness(visual64, L, x64) for L in layers}
del visual64
figures["exactness_f64"] = max(exact.values())
print("max relative deviation per layer (float64): " + ", ".join(f"layer {L} {e:.1e}" for L, e in exact.items()))

# %%
what_we_see(
    f"The factored effects of layers {', '.join(map(str, layers))} and their bias terms match the model's own path to "
    f"a relative {num(max(exact.values()), 2)} at most (float64): "
    + verdict(max(exact.values()) <= 1e-10, "rounding (under 1e-10), so the factored form is exact.",
              "**more** than rounding explains (1e-10 or more)."),
)

# %% [markdown]
# ### Ablations
#
# Five embeddings per image, for one layer at a time: the model's own (*baseline*); every
# neuron's second-order effect replaced by its mean over the statistics images (*mean-ablated*);
# only the significant neurons' effects kept (*significant only*); only the insignificant ones
# kept (*insignificant only*); every effect replaced by its mean plus its projection on the
# neuron's direction (*rank 1*). The paper finds that mean-ablating all of them costs accuracy,
# and that the significant few, or one direction per neuron, recover most of it. Each change is
# compared with the baseline on the same images (a paired bootstrap over the images).

# %%
names = {"baseline": "baseline", "mean_ablated": "mean-ablated", "significant_only": "significant only",
         "insignificant_only": "insignificant only", "rank1": "rank 1"}
display(pd.DataFrame({f"layer {L}": {names[a]: pct(results[L].accuracy[a]) for a in ABLATIONS} for L in layers}).T)
intervals = {L: {a: compare_rates(results[L].correct[a], results[L].correct["baseline"], n_boot=1000, seed=seed)
                 for a in ABLATIONS[1:]} for L in layers}
figures["ablations"] = {L: results[L].accuracy for L in layers}
figures["ablation_intervals"] = {L: {a: [c.low, c.high] for a, c in v.items()} for L, v in intervals.items()}
figures["ablation_within_noise"] = {L: {a: c.within_noise for a, c in v.items()} for L, v in intervals.items()}
# how far mean ablation moves the embedding, against the size of the layer's whole second-order effect
x_shift = torch.stack([task.dataset[i][0] for i in eval_idx[:100]]).to(device)
effs = layer_effects(model, x_shift, layers, normalize=True)  # the cosine scale: unit embeddings
shift, whole = {}, {}
for L in layers:
    ab = ablated_embeddings(effs[L], dirs[L])
    shift[L] = float((ab["mean_ablated"] - ab["baseline"]).norm(dim=-1).median())
    whole[L] = float((effs[L].total() + effs[L].bias()).norm(dim=-1).median())
figures["mean_ablation_shift"], figures["second_order_length"] = shift, whole

# %%
against = {(L, a): comparative(intervals[L][a].as_difference("images"), "above the baseline", "below the baseline",
                               "within noise of the baseline") for L in layers for a in ABLATIONS[1:]}
figures["ablation_said"] = {L: {a: against[(L, a)] for a in ABLATIONS[1:]} for L in layers}
grouped = {}
for (L, a), word in against.items():
    grouped.setdefault(word, []).append(f"{names[a]} in layer {L} ({pts(intervals[L][a].difference)})")
constant = Claim("Most of each layer's second-order effect is the same for every image (its mean, which mean "
                 "ablation keeps)", bool(max(shift.values()) < 0.5 * min(whole.values())),
                 "(mean ablation moves the unit embedding by " + ", ".join(f"{pct(shift[L])} (layer {L})" for L in layers)
                 + "; the layers' whole second-order effects are " + ", ".join(pct(whole[L]) for L in layers)
                 + " of its length; medians over images; the claim asks for a move under half the whole)")
what_we_see(
    f"Baseline accuracy on {len(eval_idx)} held-out images: {pct(results[layers[0]].accuracy['baseline'])} "
    f"({len(task.classes)} classes).",
    f"Each ablation against the baseline on the same images (a paired bootstrap over {len(eval_idx)} images): "
    + "; ".join(f"{word}: {', '.join(items)}" for word, items in grouped.items()) + ".",
    f"{constant}.",
    verdict(prov.shaped, "This model's training pushed its output into the last attention layers' direct effects; "
                         "how much its MLPs matter through them is a property of that training, and a paper preset "
                         "measures it on a CLIP nobody shaped.", prov.note),
)

# %% [markdown]
# ### Exercise 7.3: the rank-1 ablation
#
# Keep, of every neuron's effect, only its mean and the part of its deviation from the mean that
# lies along the neuron's direction, and rebuild the embeddings: the other parts of the effects go.

# %% [markdown] tags=["hint"]
# The embedding becomes
# $e - \sum_k (\phi_k - \mu_k) + \sum_k \big((\phi_k - \mu_k)\cdot d_k\big)\, d_k$. Centre the
# effects on their means first; the projection on each neuron's own direction is a sum over the
# last axis, one number per image and neuron.

# %% [markdown] tags=["hint"]
# `c = effects - mean`, `p = (c * directions).sum(-1)` (`[B, K]`), then
# `embedding - c.sum(1) + p @ directions`.

# %% tags=["exercise"] kind="implement" difficulty=2 importance=2 minutes=8 number="7.3"
def rank1_ablate(effects, mean, directions, embedding):
    """The embeddings with every neuron's effect replaced by its mean plus its rank-1 part.

    effects:    [B, K, d']  each neuron's second-order effect on each image
    mean:       [K, d']     each neuron's mean effect;  directions: [K, d'] unit directions
    embedding:  [B, d']     the images' embeddings (at the effects' scale)
    returns     [B, d']
    """
    # --- solution ---
    centred = effects - mean[None]
    proj = (centred * directions[None]).sum(-1)  # [B, K]
    return embedding - centred.sum(1) + proj @ directions
    # --- end ---


# %%
rank1_ablate = check_rank1_ablate(rank1_ablate)
eff_n = layer_effects(model, x_eval, [layer0], normalize=dirs[layer0].normalized)[layer0]
mine = rank1_ablate(eff_n.effects(), dirs[layer0].mean, dirs[layer0].vectors, eff_n.embedding)
theirs = ablated_embeddings(eff_n, dirs[layer0])["rank1"]
say(f"{rank1_ablate.yours} vs the helpers' rank-1 embeddings: largest difference "
    f"{float((mine - theirs).abs().max()):.1e}")

# %% [markdown]
# ### Exercise 7.2: a search for the neurons about a value
#
# Turn the lift into a search: given the top images of every neuron (`top_index`, positions in
# the statistics images), a label per statistics image and a value, return the neurons whose top
# images carry the value at least `min_lift` times as often as all the images do. Below it
# searches the world for neurons about water backgrounds (online: the most common class).

# %% [markdown] tags=["hint"]
# `labels[top_index]` is a `[K, k]` tensor of the top images' labels. A neuron's share of the
# value among them, divided by the value's share of all labels, is its lift.

# %% [markdown] tags=["hint"]
# `lift = (labels[top_index] == value).double().mean(1) / (labels == value).double().mean()`, then
# the indices where `lift >= min_lift`.

# %% tags=["exercise"] kind="implement" difficulty=1 importance=2 minutes=6 number="7.2"
def neurons_about(top_index, labels, value, min_lift):
    """The neurons whose top images carry `value` at least `min_lift` times as often as the dataset.

    top_index: [K, k] dataset positions of each neuron's top images
    labels:    [N]    one label per dataset image;  value: the label to look for
    returns a list of neuron indices (rows of top_index)
    """
    # --- solution ---
    lift = (labels[top_index] == value).double().mean(1) / (labels == value).double().mean()
    return [k for k in range(len(lift)) if lift[k] >= min_lift]
    # --- end ---


# %%
neurons_about = check_neurons_about(neurons_about)
if on_world:
    search_labels = torch.as_tensor(scenes.factors["background"][stats_idx])
    search_value, search_name = world.BACKGROUNDS.index("water"), "background water"
else:
    search_labels = torch.as_tensor(task.labels[stats_idx])
    search_value = int(torch.mode(search_labels).values)
    search_name = f"class {task.classes[search_value]}"
found = neurons_about(top_all, search_labels, search_value, 3.0)
print(f"{neurons_about.yours}: {len(found)} neurons about {search_name} (lift >= 3); the first few and their words:")
for r in found[:5]:
    print(f"  {labels_all[r]}: {', '.join(w for w, _ in texts.top(r, 4))}")
figures["found_neurons"] = len(found)

# %%
if on_world and found:
    own = [r for r in found if values[r] == ("background", search_value)]
    named = [values[r][0] for r in found if values[r] is not None]
    common = max(set(named), key=named.count) if named else None
    figures["found_named_by_own_word"] = len(own) / len(found)
    what_we_see(
        f"{len(found)} neurons respond to water scenes (their top images are on water at least three times as often "
        f"as all scenes); the first positive word of {len(own)} of them names water"
        + verdict(common is not None, f", and the factor their words name most often is *{common}*.", "."),
        "Whether a neuron fires on some images and what its effect writes into the embedding are two questions: the "
        "top images answer the first, the words of its direction the second.",
    )

# %% [markdown]
# ### Segmentation by neurons
#
# For the predicted class of an image, take the `seg_neurons` neurons (of all the chosen layers)
# whose directions have the largest |dot product| with the class text, and average their
# activations at each patch: a map of where those neurons fire. The paper upsamples it, min–max
# normalises it and keeps the pixels above 0.5. Beside it: the same map thresholded at its mean
# (the first paper's rule), the first-order decomposition's map of notebook 6, raw attention,
# and two trivial maps (random numbers per patch; everything foreground). Every comparison is a
# paired bootstrap over the images.

# %%
seg = load_segmentation_task(seg_dataset, preprocess, seg_images, seed=seed, templates=templates,
                             world_name=world_of(model))
seg_classifier = classifier if seg.prompts == task.prompts else zero_shot_classifier(model, tokenizer, seg.prompts)
size = tuple(seg.masks.shape[-2:])
n_seg = min(seg_neurons, len(all_dirs))
neuron_maps = torch.cat([neuron_segmentation_maps(model, seg.images[i:i + batch_size].to(device), seg_classifier,
                                                  all_dirs, n_neurons=n_seg).float().cpu()
                         for i in range(0, len(seg), batch_size)])
_, first_order_maps = evaluate_methods(model, seg, seg_classifier, ["decomposition", "raw_attention"],
                                       batch_size=batch_size, warmup=0)
rnd = torch.rand(neuron_maps.shape, generator=torch.Generator().manual_seed(seed))
# per-image parts of every score, so that each comparison is weighed by a paired bootstrap over the images
seg_items = {"neurons_0.5": segmentation_items(*segment(neuron_maps, size, 0.5), seg.masks),
             "neurons_mean": segmentation_items(*segment(neuron_maps, size, "mean"), seg.masks),
             "decomposition": segmentation_items(*segment(first_order_maps["decomposition"], size), seg.masks),
             "raw_attention": segmentation_items(*segment(first_order_maps["raw_attention"], size), seg.masks),
             "random": segmentation_items(*segment(rnd, size), seg.masks)}
SEG = ["pixel accuracy", "mIoU", "mAP", "object AP"]
sg = {k: {m: float(SEGMENTATION_STATISTICS[m](v)) for m in SEG} for k, v in seg_items.items()}
everything = SegmentationScores().update(torch.ones(seg.masks.shape), torch.ones_like(seg.masks), seg.masks).summary()
sg["all_foreground"] = {"pixel accuracy": float(everything["pixel accuracy"]), "mIoU": float(everything["mIoU"]),
                        "mAP": float("nan"), "object AP": float("nan")}
row_names = {"neurons_0.5": f"neurons ({n_seg}), threshold 0.5 (the paper's)", "neurons_mean": f"neurons ({n_seg}), mean",
             "decomposition": "first-order decomposition, mean", "raw_attention": "raw attention, mean",
             "random": "random map, mean", "all_foreground": "everything foreground"}
display(pd.DataFrame({row_names[k]: {m: num(v[m]) for m in SEG} for k, v in sg.items()}).T)
figures["segmentation"] = sg


def seg_evidence(a, b, metric):
    return paired_bootstrap(seg_items[a], seg_items[b], SEGMENTATION_STATISTICS[metric], seed=seed)


seg_vs = {("neurons_mean", "decomposition", "mIoU"): seg_evidence("neurons_mean", "decomposition", "mIoU"),
          ("neurons_0.5", "decomposition", "mAP"): seg_evidence("neurons_0.5", "decomposition", "mAP"),
          ("neurons_mean", "random", "mIoU"): seg_evidence("neurons_mean", "random", "mIoU"),
          ("neurons_0.5", "random", "object AP"): seg_evidence("neurons_0.5", "random", "object AP")}
figures["segmentation_sides"] = {" ".join(k): d.side for k, d in seg_vs.items()}
mask_rows = {"neurons (mean)": "neurons_mean", "decomposition": "decomposition", "raw attention": "raw_attention"}
best_row = max(mask_rows, key=lambda k: sg[mask_rows[k]]["mIoU"])
miou_gaps = {k: seg_evidence(mask_rows[best_row], v, "mIoU") for k, v in mask_rows.items() if k != best_row}
miou_lead = leader({k: sg[v]["mIoU"] for k, v in mask_rows.items()}, miou_gaps)
leading = [best_row] + [k for k, d in miou_gaps.items() if comparative(d, "ahead", "behind") != "ahead"]
figures["segmentation_leader"] = miou_lead

# %%
what_we_see(
    compare(sg["neurons_mean"]["mIoU"], sg["decomposition"]["mIoU"], "The neuron segmenter (mean threshold)",
            "the first-order decomposition", what="mIoU", evidence=seg_vs[("neurons_mean", "decomposition", "mIoU")])
    + " " + compare(sg["neurons_0.5"]["mAP"], sg["decomposition"]["mAP"], "The neuron segmenter",
                    "the decomposition", what="mAP", evidence=seg_vs[("neurons_0.5", "decomposition", "mAP")]),
    compare(sg["neurons_mean"]["mIoU"], sg["random"]["mIoU"], "The neuron segmenter", "a random map", what="mIoU",
            evidence=seg_vs[("neurons_mean", "random", "mIoU")])
    + " " + compare(sg["neurons_0.5"]["object AP"], sg["random"]["object AP"], "The neuron segmenter",
                    "a random map", what="object AP", evidence=seg_vs[("neurons_0.5", "random", "object AP")]),
    f"The paper's 0.5 threshold gives mIoU {num(sg['neurons_0.5']['mIoU'])}, the mean threshold "
    f"{num(sg['neurons_mean']['mIoU'])} (the soft map, and so mAP and object AP, is the same).",
    f"On mIoU, weighed against the noise of {len(seg)} images: {miou_lead}; "
    + verdict("raw attention" in leading,
              "with one salient object per scene, where the class token looks is already a good mask (notebook 6).",
              "a class-specific map is ahead of where the class token looks."),
)

# %%
i_show = 0
maps_show = {"neurons": segment(neuron_maps[i_show:i_show + 1], size)[0][0],
             "first order": segment(first_order_maps["decomposition"][i_show:i_show + 1], size)[0][0]}
maps_figure(seg.views[i_show], maps_show, mask=seg.masks[i_show], symmetric=False, colorscale="Jet",
            title="One scene: the neuron map and the first-order map").show()

# %% [markdown]
# ### Concepts of single images
#
# Which words describe one image? Pool the words of the neurons that are significant for it,
# each weighted by how far its effect is from its mean (`image_concepts`). On the world the
# first words can be checked against the scene's own factors, with the same words checked
# against other scenes as the control.

# %%
n_concept = min(64, len(eval_idx))
x_concept = torch.stack([task.dataset[i][0] for i in eval_idx[:n_concept]])
norms = []
for i in range(0, n_concept, batch_size):
    effs = layer_effects(model, x_concept[i:i + batch_size].to(device), layers, normalize=all_dirs.normalized)
    norms.append(torch.cat([significance(effs[L], dirs[L])[0] for L in layers], 1).cpu())
concepts = image_concepts(torch.cat(norms), all_dirs, texts, n_words=6)
shown = list(range(min(4, n_concept)))
image_panels([model_view(None, task.show(eval_idx[i]), preprocess) for i in shown],
             [", ".join(w for w, _ in concepts[i][:3]) or "(no significant neuron)" for i in shown],
             per_row=4, panel_size=170, title="Held-out images and the first words of their significant neurons").show()
if on_world:
    eval_factors = {f: scenes.factors[f][eval_idx[:n_concept]] for f in world.FACTOR_NAMES}
    agree = concept_agreement(concepts, eval_factors, n_words=3)
    rng = np.random.default_rng(seed + 1)
    ctrl = [concept_agreement(concepts, eval_factors, n_words=3, scenes=rng.permutation(n_concept)) for _ in range(20)]
    concept_ev = permutation_difference(agree, ctrl)
    figures["concepts"] = {"agreement": agree, "control": float(np.mean(ctrl)), "n_images": n_concept,
                           "side": concept_ev.side}

# %%
if on_world:
    what_we_see(
        f"Of the first three concept words of {n_concept} held-out scenes, {pct(agree)} name a value the scene has; "
        f"checked against other scenes, {pct(figures['concepts']['control'])} (mean of {len(ctrl)} shuffles): "
        + comparative(concept_ev, "the words describe their own scenes, beyond the shuffles' range",
                      "the words describe other scenes *better* than their own",
                      "the words describe their own scenes no better than other scenes (within noise)")
        + f" ({evidence_note(concept_ev, as_pct=True, digits=1)}).",
    )

# %% [markdown]
# ### Try it: a neuron explorer
#
# Pick a layer and a neuron: its words, its top images among the statistics images, and where it
# fires on each of them (its activation at every patch). Offline it starts at the neuron with the
# highest lift.

# %%
start = int(torch.nan_to_num(lift, nan=-1.0).argmax()) if lift is not None else int(all_dirs.threshold.argmax())
row_of = {(int(L), int(n)): r for r, (L, n) in enumerate(zip(all_dirs.layer, all_dirs.neuron))}


def explore(layer, neuron):
    r = row_of[(layer, neuron)]
    print(f"{labels_all[r]}: " + ", ".join(f"{w} ({c:+.2f})" for w, c in texts.top(r, 8)))
    picks = [stats_idx[int(i)] for i in top_all[r, :6]]
    x = torch.stack([task.dataset[i][0] for i in picks]).to(device)
    maps = neuron_segmentation_maps(model, x, classifier, all_dirs.select([r]), n_neurons=1,
                                    labels=torch.zeros(len(picks), dtype=torch.long))
    views = [model_view(None, task.show(i), preprocess) for i in picks]
    image_panels(views, [f"top {j + 1}" for j in range(len(picks))], maps=list(maps.cpu()), per_row=6,
                 panel_size=140, title=f"{labels_all[r]}: its top images and its activation at each patch").show()


live(explore,
     layer=widgets.Dropdown(options=layers, value=int(all_dirs.layer[start]), description="layer"),
     neuron=widgets.BoundedIntText(value=int(all_dirs.neuron[start]), min=0, max=max(n_neurons.values()) - 1,
                                   description="neuron"))

# %% [markdown] tags=["discuss"]
# A neuron's effect through the later heads is exact only with the attention weights and
# layer-norm scales frozen at the image's values. What does that leave out, and does it matter
# for the questions this notebook asks?
# Answer:
# It leaves out what the neuron's write does to the attention pattern and to the layer norms'
# scales (a neuron that changes where the class token looks, or how loud the stream is, moves
# every other term too), as well as the paths through later MLPs and through two attention
# layers, and the neuron's own direct path. The exactness check confirms the identity on the
# path it defines, not that the path is all there is. For *which images a neuron matters on* and
# *what direction it writes*, a linear reading at the image's own operating point is what is
# wanted; for *what removing the neuron would do*, it is a first-order estimate, and only an
# intervention inside the forward pass (ablating the neuron's activation and recomputing
# everything after it) measures the whole effect.

# %% [markdown] tags=["discuss"]
# A neuron's top images are on water, its words are about shapes. Is that a contradiction?
# Answer:
# No. The top images say where the neuron's effect is far from its mean (when it fires); the words
# describe the direction its effect writes into the embedding (what it does to the output). A
# neuron can fire on water scenes and write toward the texts of the shapes that live there (the
# world's swimmers), the link its training captions plant. Exercise 7.2's search and the lift
# read the first question, the words the second; a neuron about water by its images and about a
# shape by its words is a small piece of the model's habitat cue.

# %% [markdown] tags=["discuss"]
# The adversarial words move the fooling rate by a few points, with an interval over class pairs.
# What would make you trust the difference, and what would a text-to-image model add?
# Answer:
# A sample answer: an interval that excludes 0 on fresh scene draws and another seed (the words
# are chosen on the statistics images, the scenes are new), the same words failing on other
# models, and a dose-response: more of the pushing neurons' words, more fooling. A control with
# the words of the neurons that push *away* from B would show the sign matters. A text-to-image
# model, as in the paper, renders free captions on natural images, so the attack is about photos
# rather than the world's factors; but it brings its own biases (it may draw features of B when
# asked for words tied to B), which the world's renderer rules out by construction.
