# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb)
#
# # 7 · Second-order effects of neurons
#
# Notebooks 1–6 took the image embedding apart into *direct* effects: what each layer or head
# writes straight into the output. The paper found that MLP layers write little there (notebooks
# 1 and 2 measure it). The same
# authors' next paper (Gandelsman, Efros, Steinhardt, *Interpreting the Second-Order Effects of
# Neurons in CLIP*, 2024) follows MLP **neurons** one step further: what a neuron writes is read
# by the later attention heads, which carry it to the class token and on to the embedding.
#
# Neuron $k$ of MLP layer $l$ writes $a_{k,m}\,w_k$ into the residual stream at every token $m$
# ($a_{k,m}$ its activation, $w_k$ its column of the output projection). Hold every attention
# weight and layer-norm scale at the image's own values and each step of the path is linear:
# layer $L$'s `ln_1` (centring, then a division by its scale $\sigma^L_m$ at token $m$), head $h$'s
# value map, the class token's attention weight $A^{L,h}_{0m}$, the head's output map, then
# `ln_post` (scale $\sigma_{\text{post}}$) and the projection. Summed over tokens, later heads and
# later layers, the neuron's **second-order effect** is
#
# $$\phi_k(I) = \sum_{L>l,\,h} \underbrace{\frac{1}{\sigma_{\text{post}}} \sum_m \frac{A^{L,h}_{0m}\, a_{k,m}}{\sigma^L_m}}_{s^{L,h}_k(I)}\; u^{L,h}_k ,$$
#
# where $u^{L,h}_k$ (the centred write through `ln_1`'s scale, head $h$ and the final projection)
# holds no image: it is computed once. Per image only the numbers $s$ are new, so the effects of
# every neuron of a layer cost about as much as one forward pass, and a dataset's statistics
# stream through in bounded memory instead of the paper's `[images, neurons, d]` array (about
# 32 GB per layer for ViT-B-32 on 5,000 images). Paths through later MLPs, through two attention
# layers, and the neuron's own direct path are left out, as in the paper.
#
# What the notebook measures with them: how *sparse* the effects are (each neuron matters for a
# few images), what mean-ablating them does to zero-shot accuracy, what each neuron's main
# direction says in words (checked against the synthetic world's known factors), and what the
# words of the neurons that push one class toward another do when the world draws them into
# scenes (**adversarial scenes**). Going further: segmentation by neurons, concept discovery,
# and a neuron explorer.
#
# **How the offline model was made matters here.** Its training pushed the direct effects of
# its MLPs and early attention layers toward zero (a direct-path penalty; `data/models/MODEL_CARD.md`),
# so whatever its MLPs do reaches the output *indirectly*, much of it through the last four
# attention layers, the path this notebook measures. Layers 3–5 are the MLPs that feed those
# heads. The cells below say where a finding depends on this; a paper preset
# (`preset = "ViT-B-32 OpenAI"`, layers 8–10 as the paper) tests the claims on a CLIP nobody
# shaped.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | write a neuron's second-order effect from its activations, the later heads' attention and the frozen layer-norm scales; check it adds up exactly; stream per-neuron statistics over a dataset; measure how sparse the effects are and what ablating them costs; read a neuron's direction in words and check the words against ground truth; build adversarial scenes from a neuron's words and compare them with random words |
# | **Time** | core path about 30 min: 14 min reading, 2 min running, 16 min of exercises (7.1, 7.2); going further about 20 min more (7.3, segmentation, concepts, the explorer) |
# | **Assumes** | notebooks 1–2 (direct effects, mean ablation) and 3 (texts for directions); what an MLP neuron and a layer norm compute; a bootstrap interval |
#
# {{EXERCISE_NOTE}}

# %% tags=["parameters"]
preset = "offline"          # one switch (helpers.course.presets): "offline", "ViT-B-16 LAION", "ViT-L-14 LAION",
                            # "ViT-H-14 LAION", "ViT-B-16 OpenAI", "ViT-B-32 OpenAI", "ViT-L-14 OpenAI", "random ViT-B-32";
                            # the parameters below override it where set (None / "": the preset's value)
model_name = ""             # e.g. "ViT-B-32-quickgelu" (then name its weights in `pretrained`)
pretrained = ""             # an open_clip tag (e.g. "openai"), a checkpoint path, or "random"
dataset = ""                # images for the statistics and the held-out checks: "world[:factor]", "imagenette",
                            # or "imagenet:/path/to/val"
n_images = None             # images for the per-neuron statistics
eval_images = None          # other images: sparsity, ablations, concepts
layers = None               # MLP layers, e.g. [8, 9, 10] (not the last block)
top_k = None                # top images kept per neuron (the paper: 100 of 5,000, 2%)
vocabulary = ""             # texts for the directions: "world", "common_words", "general" or a file
pool_size = None            # texts drawn from the vocabulary (0: all of them)
n_words = None              # texts per direction (orthogonal matching pursuit)
seg_dataset = ""            # "world[:factor]", "imagenet-seg" or "imagenet-seg:/path/to/gtsegs_ijcv.mat"
seg_images = None
seg_neurons = None          # neurons per class for the segmenter (the paper: 200)
n_pairs = None              # class pairs for adversarial words (0: every ordered pair)
adv_scenes = None           # scenes per pair and word list (the world draws them)
batch_size = None
device = ""                 # "cuda" / "cpu" (the papers' presets: cuda when there is a GPU)
templates = "openai"        # ImageNet prompt templates for photos: "openai" (80, the paper's) or "simple" (7, faster)
protocol = ""               # set by the papers' presets; every step here follows the second-order paper's code
seed = 0
record_to = ""

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

from helpers.course.narrative import compare, num, pct, pts, rate_difference, ratio, say, verdict, what_we_see
from helpers.course.plots import image_panels, maps_figure
from helpers.course.presets import resolve
from helpers.course.record import Figures
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
    significance,
    sparse_text_decomposition,
    stream_neuron_stats,
    top_image_lift,
)
from helpers.methods.segmentation import evaluate_methods, segment

torch.manual_seed(seed)
figures = Figures(record_to)
settings = resolve(preset, "07", model_name=model_name, pretrained=pretrained, dataset=dataset, n_images=n_images,
                   eval_images=eval_images, layers=layers, top_k=top_k, vocabulary=vocabulary, pool_size=pool_size,
                   n_words=n_words, seg_dataset=seg_dataset, seg_images=seg_images, seg_neurons=seg_neurons,
                   n_pairs=n_pairs, adv_scenes=adv_scenes, batch_size=batch_size, device=device, protocol=protocol)
model_name, pretrained, dataset = settings.model_name, settings.pretrained, settings.dataset
n_images, eval_images, top_k = settings.n_images, settings.eval_images, settings.top_k
layers = [int(x) for x in settings.layers]
vocabulary, pool_size, n_words = settings.vocabulary, settings.pool_size, settings.n_words
seg_dataset, seg_images, seg_neurons = settings.seg_dataset, settings.seg_images, settings.seg_neurons
n_pairs, adv_scenes, batch_size, device = settings.n_pairs, settings.adv_scenes, settings.batch_size, settings.device
model, preprocess, tokenizer = settings.start(figures)  # prints the settings, records them, loads the model
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
# `SecondOrder(model, layer)` builds the $u$'s of a layer once; calling it on images runs one
# forward pass with read-only hooks and returns every neuron's coefficients $s$. Take one held-out
# image and the neuron of the middle layer with the largest effect on it. Its effect is a sum of
# one vector per later head; the bars show how much of it each head carries (each head's part
# projected on the neuron's whole effect: the bars add up to the effect's length).

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

# %%
what_we_see(
    f"Neuron L{layer0}.N{int(so.neurons[k_star])} has the largest second-order effect on this image: a vector of "
    f"length {num(float(phi.norm()))}, {pct(float(phi.norm()) / emb_norm)} of the embedding's length "
    f"({num(emb_norm)}). All {n_neurons[layer0]} neurons of layer {layer0} with its bias term add up to "
    f"{num(layer_total)} ({pct(layer_total / emb_norm)}).",
    f"Head {pair_names[top_j]} carries the largest part ({pct(float(along[top_j] / phi.norm()))} of its length); "
    f"the {len(pair_names)} parts add up to the whole "
    + verdict(figures["one_neuron"]["parts_sum_error"] < 1e-4, "(to rounding).", "(**not** to rounding)."),
)

# %% [markdown]
# ## Exercise 7.1: one neuron's effect from its pieces
#
# `so.parts(images, k)` reads what the formula needs for neuron $k$ on a batch: its activations
# `acts` $a_{k,m}$ at every token (the class token first), the class token's attention row of
# every later head `attention` $A^{L,h}_{0m}$, the scale of `ln_1` of each head's layer at every
# token `sigma` $\sigma^L_m$ (repeated for the heads of a layer), the final layer norm's scale
# `sigma_post`, and the vectors `u`. Put them together.

# %%
parts = so.parts(x_eval, k_star)
print(f"acts {tuple(parts.acts.shape)}, attention {tuple(parts.attention.shape)}, sigma {tuple(parts.sigma.shape)}, "
      f"sigma_post {tuple(parts.sigma_post.shape)}, u {tuple(parts.u.shape)} (heads {pair_names[0]} ... "
      f"{pair_names[-1]})")

# %% [markdown] tags=["hint"]
# First the coefficients $s_j$: for every image and later head $j$, a sum over the tokens of
# attention × activation / sigma. Then the effect is $\sum_j s_j u_j$, a matrix product.

# %% [markdown] tags=["hint"]
# `s = torch.einsum("bjt,bt->bj", attention / sigma, acts) / sigma_post[:, None]`, then `s @ u`.

# %% tags=["exercise"] kind="implement" difficulty=2 importance=3 minutes=10
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
from helpers.course.exercises.nb07 import check_neuron_effect, check_neurons_about, check_rank1_ablate

neuron_effect = check_neuron_effect(neuron_effect)
mine = neuron_effect(parts.acts, parts.attention, parts.sigma, parts.sigma_post, parts.u)
theirs = eff.effects([k_star])[:, 0]
print(f"your effects vs SecondOrder's: largest difference {float((mine - theirs).abs().max()):.1e}, "
      f"relative to the largest entry {float((mine - theirs).abs().max() / theirs.abs().max()):.1e}")

# %% [markdown]
# ## Exact: neurons plus bias term = the MLP's whole effect through the later heads
#
# Every neuron's effect plus the layer's bias term (the write of `c_proj`'s bias, the same path
# with $a = 1$) should equal the effect of the MLP's whole output through the later heads' direct
# paths. `exactness` computes that without the factored form, by forward-mode differentiation
# through one forward pass of the stock model (attention weights and layer-norm scales frozen,
# later MLPs and second attention layers cut), and reports the largest deviation relative to
# the largest entry, here in float64 on a copy of the image tower, for one image.

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
    + verdict(max(exact.values()) <= 1e-10, "rounding, so the factored form is exact.",
              "**more** than rounding explains."),
)

# %% [markdown]
# ## Every neuron over a dataset, streamed
#
# The paper stores every image's effect of every neuron, then keeps per neuron its mean effect
# and the `top_k` images whose effect differs most from that mean (about 2% of the images).
# `stream_neuron_stats` reads the images twice instead (the mean first, then a running top-k
# ranked by the centred norm, all from the coefficients $s$ and each neuron's Gram matrix
# $u u^\top$) and keeps only those statistics. From them, per neuron: its **direction** (the
# first singular vector of its top images' centred effects, signed so that most of them project
# positively) and its **threshold** (the smallest of the top-k norms: an image for which the
# neuron's centred effect is longer is one where the neuron is *significant*).

# %%
stats = stream_neuron_stats(model, stats_loader, layers, k=top_k, batch_size=batch_size, total=len(stats_idx))
dirs = {L: stats[L].directions() for L in layers}
all_dirs = NeuronDirections.cat([dirs[L] for L in layers])
top_all = torch.cat([stats[L].top_index for L in layers]).cpu()  # [neurons, k]: positions among the statistics images
kept = sum(t.numel() * t.element_size() for s in stats.values() for t in (s.mean, s.top_index, s.top_norm, s.top_coef))
full = len(stats_idx) * sum(n_neurons.values()) * info.embed_dim * 4
figures["bytes_kept"], figures["bytes_full"] = kept, full
say(f"{len(all_dirs)} neurons over {len(stats_idx)} images: the statistics take {kept / 2**20:.1f} MiB, where the "
    f"`[images, neurons, d']` array of these layers would take {full / 2**20:.0f} MiB (float32).")

# %% [markdown]
# ## Sparse: each neuron matters for a few images
#
# On the held-out images, `ablation_studies` computes every neuron's effect (one forward pass per
# batch for all layers), marks where it is significant, and scores the ablations of the next
# section. The threshold was set so that `top_k` of the statistics images pass it, so about that
# share should pass on new images too; that part is by construction. What is not: how much of a
# neuron's effect those few images hold. If effects were spread evenly over the images, the
# significant ones would hold about their own share of each neuron's squared centred effect;
# sparse effects put much more of it there.

# %% [markdown] tags=["predict"]
# Before the histogram: on about what share of the held-out images will a neuron be significant,
# and will those images hold about the same share of its effect?
# Answer:
# About `top_k / n_images` of them: the threshold was set so that this share of the statistics
# images passes it, and held-out images come from the same distribution. The share of the effect
# is the open question: if a neuron's effect were about the same size on every image, those
# images would hold about their own share of it; if it is sparse, much more.

# %%
results = ablation_studies(model, dirs, eval_loader, classifier, batch_size=batch_size)
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

# %%
mean_share = float(np.mean([s["mean_share"] for s in sparsity.values()]))
energy = float(np.mean([s["median_energy_share"] for s in sparsity.values()]))
what_we_see(
    f"A neuron is significant on {pct(mean_share)} of the held-out images on average (per layer: "
    + ", ".join(f"{L}: {pct(s['mean_share'])}, median {pct(s['median_share'])}" for L, s in sparsity.items())
    + f"), against the {pct(expected_share)} the threshold was set to on the statistics images; "
    + ", ".join(f"{pct(s['share_of_neurons_under_2pct'])} of layer {L}'s neurons" for L, s in sparsity.items())
    + " are significant on under 2% (the paper's figure).",
    f"Those few images hold {pct(energy)} of a neuron's squared effect (median over neurons, mean over layers): "
    + verdict(energy > 3 * mean_share, f"{ratio(energy / max(mean_share, 1e-12), 1)} their share of the images. "
                                        "Each neuron's effect is concentrated on a few images.",
              "not much more than their share of the images: these effects are **not** concentrated."),
)

# %% [markdown]
# ## Ablations
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
table = pd.DataFrame({f"layer {L}": {names[a]: results[L].accuracy[a] for a in ABLATIONS} for L in layers}).T
display(table.round(3))
intervals = {L: {a: compare_rates(results[L].correct[a], results[L].correct["baseline"], n_boot=1000, seed=seed)
                 for a in ABLATIONS[1:]} for L in layers}
figures["ablations"] = {L: results[L].accuracy for L in layers}
figures["ablation_intervals"] = {L: {a: [c.low, c.high] for a, c in v.items()} for L, v in intervals.items()}
figures["ablation_within_noise"] = {L: {a: c.within_noise for a, c in v.items()} for L, v in intervals.items()}

# %%
# how far mean ablation moves the embedding, against the size of the layer's whole second-order effect
x_shift = torch.stack([task.dataset[i][0] for i in eval_idx[:100]]).to(device)
effs = layer_effects(model, x_shift, layers, normalize=True)  # the cosine scale: unit embeddings
shift, whole = {}, {}
for L in layers:
    ab = ablated_embeddings(effs[L], dirs[L])
    shift[L] = float((ab["mean_ablated"] - ab["baseline"]).norm(dim=-1).median())
    whole[L] = float((effs[L].total() + effs[L].bias()).norm(dim=-1).median())
figures["mean_ablation_shift"], figures["second_order_length"] = shift, whole
worst = min(((L, a) for L in layers for a in ABLATIONS[1:]), key=lambda p: results[p[0]].accuracy[p[1]])
moved = [(L, a) for L in layers for a in ABLATIONS[1:] if not intervals[L][a].within_noise]
what_we_see(
    f"Baseline accuracy on {len(eval_idx)} held-out images: {pct(results[layers[0]].accuracy['baseline'])} "
    f"({len(task.classes)} classes).",
    "Mean-ablating every neuron's second-order effect moves it by "
    + ", ".join(f"{pts(results[L].accuracy['mean_ablated'] - results[L].accuracy['baseline'])} (layer {L})"
                for L in layers) + "; "
    + rate_difference(intervals[worst[0]][worst[1]], f"the largest drop ({names[worst[1]]}, layer {worst[0]})",
                      "the baseline", unit="images"),
    verdict(moved, "Beyond noise: " + ", ".join(f"{names[a]} in layer {L} ({pts(intervals[L][a].difference)})"
                                                 for L, a in moved) + ".",
            "Every ablation stays within noise of the baseline on these images."),
    "A layer's whole second-order effect is "
    + ", ".join(f"{pct(whole[L])} (layer {L})" for L in layers)
    + " of the unit embedding's length (median over images); mean ablation moves the embedding by "
    + ", ".join(f"{pct(shift[L])}" for L in layers)
    + verdict(max(shift.values()) < 0.5 * min(whole.values()),
              ": most of each neuron's effect is the same for every image (its mean), and mean ablation keeps it.",
              ": a large part of the effect varies from image to image."),
    verdict(prov.shaped, "This model's training pushed its output into the last attention layers' direct effects; "
                         "how much its MLPs matter through them is a property of that training, and a paper preset "
                         "measures it on a CLIP nobody shaped.", prov.note),
)

# %% [markdown]
# ## Directions in words
#
# Each neuron's direction is written as a sparse sum of text embeddings: orthogonal matching
# pursuit picks `n_words` texts of the vocabulary, one at a time, each the one that best explains
# what the earlier picks left (`sparse_text_decomposition`; the vocabulary's embeddings centred
# and each dimension scaled to unit norm, as the paper does). Offline the vocabulary is the world's
# own tagged texts; online a list of common English words.

# %%
pool = load_pool(vocabulary).sample(pool_size, seed=seed)
words = list(pool.texts)
vocab_emb = encode_texts(model, tokenizer, words)
n_words_used = min(n_words, len(words), info.embed_dim)
texts = sparse_text_decomposition(all_dirs, vocab_emb, words, n_words=n_words_used)
top_word = [next((w for w, c in texts.top(r) if c > 0), None) for r in range(len(texts))]
labels_all = all_dirs.labels()
figures["vocabulary"], figures["n_words"] = pool.name, n_words_used
print(f"{len(words)} texts ({pool.name}), {n_words_used} per direction")

# %% [markdown]
# Do the words fit what the neurons respond to? On the world we know every scene's factors. A
# first idea, "does a neuron's top word name a factor of the world?", tests nothing: most of the
# world's texts name one, so random directions pass it as often. The check used here: take the
# factor value a neuron's first positive word names (`"blades of grass"`: background *grass*), and
# count how often the neuron's top images have that value, divided by the value's share of all
# the statistics images (the **lift**: 1 means the word says nothing about the images). The
# control gives each neuron's word another neuron's top images, many times over.

# %%
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
    best = []  # the neuron with the highest lift among those whose word names each factor
    for f in world.FACTOR_NAMES:
        rows_f = [r for r, v in enumerate(values) if v is not None and v[0] == f and not torch.isnan(lift[r])]
        if rows_f:
            best.append(max(rows_f, key=lambda r: float(lift[r])))
    display(pd.DataFrame([{"neuron": labels_all[r], "first positive word": top_word[r],
                           "names": f"{values[r][0]} {world.FACTORS[values[r][0]][values[r][1]]}" if values[r] else "",
                           "lift": round(float(lift[r]), 2),
                           "words (weight)": ", ".join(f"{w} ({c:+.2f})" for w, c in texts.top(r, 5))} for r in best]))
else:
    strongest = torch.argsort(all_dirs.threshold, descending=True)[:8].tolist()
    display(pd.DataFrame([{"neuron": labels_all[r], "words (weight)": ", ".join(f"{w} ({c:+.2f})"
                                                                                 for w, c in texts.top(r, 6))}
                          for r in strongest]))

# %%
if on_world and figures["lift"]["n_checked"] > 0:
    lc = figures["lift_control"]
    what_we_see(
        f"The first positive word names a factor of the world for {pct(names_real)} of the neurons and for "
        f"{pct(names_random)} of random directions: "
        + verdict(abs(names_real - names_random) < 0.05, "no difference, so that count says nothing.",
                  "a difference, but mostly a property of the vocabulary."),
        f"Lift of the named value among a neuron's top images: {num(figures['lift']['mean'], 2)} on average "
        f"({figures['lift']['n_checked']} neurons; per layer "
        + ", ".join(f"{L}: {num(v, 2)}" for L, v in by_layer.items())
        + f"), against {num(lc['mean'], 2)} when each word is checked on another neuron's top images (95% of 50 "
          f"shuffles between {num(lc['low'], 2)} and {num(lc['high'], 2)}). "
        + verdict(figures["lift"]["mean"] > lc["high"],
                  "The words fit their own neurons' images, beyond the shuffles' range.",
                  "The words do **not** fit their own neurons' images better than shuffled ones."),
        f"{pct(figures['lift']['share_over_2'])} of the neurons have a lift above 2 (shuffled: "
        f"{pct(lc['share_over_2'])}).",
        verdict(prov.shaped, "Both the scenes and the texts come from the world the model was trained on: the "
                             "check says the decomposition reads what the model learned about that world.", prov.note),
    )
elif on_world:
    say(f"No neuron's first positive word names a factor of the world ({pool.name} vocabulary), so there is nothing "
        "to check against the scenes' factors; the world's own texts (`vocabulary='world'`) name them.")
else:
    say("These images have no ground-truth factors to check the words against; the table is what the paper shows "
        "(its vocabulary: 30,000 common words; here the course's common-words list).")

# %% [markdown]
# ## Exercise 7.2: find the neurons about a value
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

# %% tags=["exercise"] kind="find" difficulty=1 importance=2 minutes=6
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
print(f"{len(found)} neurons about {search_name} (lift >= 3); the first few and their words:")
for r in found[:5]:
    print(f"  {labels_all[r]}: {', '.join(w for w, _ in texts.top(r, 4))}")
figures["found_neurons"] = len(found)
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
# ## Adversarial scenes
#
# Which neurons push images of class A toward class B? Those whose direction has a large dot
# product with $t_B - t_A$ (the difference of the two classes' text embeddings). Pool their words,
# weighted by that push, and leave out every word that names B itself: the paper then writes
# captions with the remaining words, renders them with a text-to-image model, and checks how
# often CLIP takes the images of A for B. The synthetic world is its own text-to-image model:
# each word names a factor value (`helpers.data.world.compose`), and the world's renderer draws
# scenes of class A with those values. Two controls on the *same* scene draws: as many random
# words from the same vocabulary (the words naming B left out too), and no words. Offline every
# ordered pair of classes takes part; the comparison resamples whole pairs.

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
n_push = min(50, len(all_dirs))
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
    figures["adversarial"] = {"rates": rates, "n_pairs": n_pairs_run, "scenes_per_pair": adv_scenes,
                              "vs_random": [vs_random.difference, vs_random.low, vs_random.high],
                              "vs_random_within_noise": vs_random.within_noise,
                              "vs_none": [vs_none.difference, vs_none.low, vs_none.high],
                              "vs_none_within_noise": vs_none.within_noise}
    if trials.factor == "shape":
        figures["adversarial"]["habitat_backgrounds"] = {c: trials.habitat_backgrounds(c) for c in CONDITIONS[:2]}
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
        share = {c: h / b if b else float("nan") for c, (b, h) in hb.items()}
        habitat_sentence = (
            "Where a word list sets the background, it is the habitat of the target shape's family (grass for "
            "walkers, water for swimmers) in " + "; ".join(f"{h} of {b} pairs with {c}" for c, (b, h) in hb.items())
            + verdict(share["adversarial words"] > share["random words"],
                      ": the adversarial words pick it more often, the link between family and habitat that the "
                      "world's training captions plant.",
                      ": the adversarial words pick it **no** more often than random words."))
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
# ## Going further
#
# The core path ends here. The sections below use the same statistics: the rank-1 ablation by
# hand, neurons as a zero-shot segmenter, the concepts of single images, and an explorer.
#
# ## Exercise 7.3: the rank-1 ablation
#
# Replace every neuron's effect $\phi_k$ by its mean $\mu_k$ plus the projection of its centred
# effect on the neuron's direction $d_k$: the embedding becomes
# $e - \sum_k (\phi_k - \mu_k) + \sum_k \big((\phi_k - \mu_k)\cdot d_k\big)\, d_k$.

# %% [markdown] tags=["hint"]
# Centre the effects on their means first (`effects - mean`); the projection on each neuron's
# own direction is a sum over the last axis, one number per image and neuron.

# %% [markdown] tags=["hint"]
# `c = effects - mean`, `p = (c * directions).sum(-1)` (`[B, K]`), then
# `embedding - c.sum(1) + p @ directions`.

# %% tags=["exercise"] kind="implement" difficulty=2 importance=2 minutes=8
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
print(f"your rank-1 embeddings vs the helpers': largest difference {float((mine - theirs).abs().max()):.1e}")

# %% [markdown]
# ## Segmentation by neurons
#
# For the predicted class of an image, take the `seg_neurons` neurons (of all the chosen layers)
# whose directions have the largest |dot product| with the class text, and average their
# activations at each patch: a map of where those neurons fire. The paper upsamples it, min–max
# normalises it and keeps the pixels above 0.5. Beside it: the same map thresholded at its mean
# (the first paper's rule), the first-order decomposition's map of notebook 6, raw attention,
# and two trivial maps (random numbers per patch; everything foreground).

# %%
seg = load_segmentation_task(seg_dataset, preprocess, seg_images, seed=seed, templates=templates,
                             world_name=world_of(model))
seg_classifier = classifier if seg.prompts == task.prompts else zero_shot_classifier(model, tokenizer, seg.prompts)
size = tuple(seg.masks.shape[-2:])
n_seg = min(seg_neurons, len(all_dirs))
neuron_maps = torch.cat([neuron_segmentation_maps(model, seg.images[i:i + batch_size].to(device), seg_classifier,
                                                  all_dirs, n_neurons=n_seg).float().cpu()
                         for i in range(0, len(seg), batch_size)])
rows = {}
for name, thr in ((f"neurons ({n_seg}), threshold 0.5 (the paper's)", 0.5), (f"neurons ({n_seg}), mean", "mean")):
    soft, hard = segment(neuron_maps, size, thr)
    rows[name] = SegmentationScores().update(soft, hard, seg.masks).summary()
first_order, first_order_maps = evaluate_methods(model, seg, seg_classifier, ["decomposition", "raw_attention"],
                                                 batch_size=batch_size, warmup=0)
rows["first-order decomposition, mean"] = first_order["decomposition"]
rows["raw attention, mean"] = first_order["raw_attention"]
rnd = torch.rand(neuron_maps.shape, generator=torch.Generator().manual_seed(seed))
soft, hard = segment(rnd, size, "mean")
rows["random map, mean"] = SegmentationScores().update(soft, hard, seg.masks).summary()
everything = SegmentationScores().update(torch.ones(seg.masks.shape), torch.ones_like(seg.masks), seg.masks).summary()
rows["everything foreground"] = {**everything, "mAP": float("nan"), "object AP": float("nan")}
SEG = ["pixel accuracy", "mIoU", "mAP", "object AP"]
display(pd.DataFrame({k: {m: v[m] for m in SEG} for k, v in rows.items()}).T.round(3))
figures["segmentation"] = {k: {m: float(v[m]) for m in SEG} for k, v in zip(
    ["neurons_0.5", "neurons_mean", "decomposition", "raw_attention", "random", "all_foreground"], rows.values())}

# %%
sg = figures["segmentation"]
what_we_see(
    compare(sg["neurons_mean"]["mIoU"], sg["decomposition"]["mIoU"], "The neuron segmenter (mean threshold)",
            "the first-order decomposition", what="mIoU")
    + " " + compare(sg["neurons_0.5"]["mAP"], sg["decomposition"]["mAP"], "The neuron segmenter",
                    "the decomposition", what="mAP"),
    compare(sg["neurons_mean"]["mIoU"], sg["random"]["mIoU"], "The neuron segmenter", "a random map", what="mIoU")
    + " " + compare(sg["neurons_0.5"]["object AP"], sg["random"]["object AP"], "The neuron segmenter",
                    "a random map", what="object AP"),
    f"The paper's 0.5 threshold gives mIoU {num(sg['neurons_0.5']['mIoU'])}, the mean threshold "
    f"{num(sg['neurons_mean']['mIoU'])} (the soft map, and so mAP and object AP, is the same).",
    f"Raw attention reaches mIoU {num(sg['raw_attention']['mIoU'])}: "
    + verdict(sg["raw_attention"]["mIoU"] >= max(sg["neurons_mean"]["mIoU"], sg["decomposition"]["mIoU"]),
              "with one salient object per scene, where the class token looks is already a good mask (notebook 6).",
              "behind a class-specific map here."),
)

# %%
i_show = 0
maps_show = {"neurons": segment(neuron_maps[i_show:i_show + 1], size)[0][0],
             "first order": segment(first_order_maps["decomposition"][i_show:i_show + 1], size)[0][0]}
maps_figure(seg.views[i_show], maps_show, mask=seg.masks[i_show], symmetric=False, colorscale="Jet",
            title="One scene: the neuron map and the first-order map").show()

# %% [markdown]
# ## Concepts of single images
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
    figures["concepts"] = {"agreement": agree, "control": float(np.mean(ctrl)), "n_images": n_concept}

# %%
if on_world:
    what_we_see(
        f"Of the first three concept words of {n_concept} held-out scenes, {pct(agree)} name a value the scene has; "
        f"checked against other scenes, {pct(figures['concepts']['control'])}: "
        + verdict(agree > figures["concepts"]["control"] + 0.05, "the words describe their own scenes.",
                  "the words do **not** describe their own scenes better than other scenes."),
    )

# %% [markdown]
# ## Try it: a neuron explorer
#
# Pick a layer and a neuron: its words, its top images among the statistics images, and where it
# fires on each of them (its activation at every patch). Offline it starts at the neuron with the
# highest lift.

# %%
start = int(torch.nan_to_num(lift, nan=-1.0).argmax()) if on_world else int(all_dirs.threshold.argmax())
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

# %% [markdown]
# ## What to take away

# %%
take = [
    verdict(figures["exactness_f64"] <= 1e-10, "A neuron's effect through the later heads factors into a few numbers "
                                              "per image times fixed vectors, and the neurons with the bias term add "
                                              "up exactly to the MLP's whole second-order effect.",
            "The factored effects did **not** add up exactly here."),
    f"Each neuron is significant on {pct(mean_share)} of the held-out images, which hold {pct(energy)} of its "
    "squared effect (median).",
]
if on_world and figures["lift"]["n_checked"] > 0:
    take.append(f"A neuron's first word names a value its top images share: lift {num(figures['lift']['mean'], 2)} "
                f"against {num(figures['lift_control']['mean'], 2)} for shuffled words.")
if renderable:
    take.append(rate_difference(vs_random, "The share of scenes taken for the target with adversarial words",
                                "with random words", unit="class pairs"))
what_we_see(*take, prov.note, title="What to take away")
