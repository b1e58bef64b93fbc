# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb)
#
# # 1 · The image embedding is a sum
#
# A CLIP vision transformer turns an image into one vector, the *image embedding*, that lives in
# the same space as the text embeddings. This notebook takes that vector apart.
#
# Every block of a ViT *adds* its output to a running vector, the **residual stream**. At the
# class token, after the last of the `L` blocks,
#
# $$z^{L} = z^{0} + \sum_{l=1}^{L} \mathrm{MSA}_l + \sum_{l=1}^{L} \mathrm{MLP}_l ,$$
#
# and the image embedding is $M = P^\top\,\mathrm{LN}(z^{L})$ with the final layer norm `ln_post`
# and the projection `proj` $=P$. Layer norm is *almost* linear: it subtracts the mean of the
# vector (a linear map), divides by its standard deviation $\sigma$ (one number per image) and
# applies a scale $\gamma$ and a bias $\beta$. Holding $\sigma$ fixed for the image makes it
# linear, so every summand $c$ gets its own vector in the joint space,
#
# $$c \;\mapsto\; P^\top\big(\gamma \odot (c - \bar c)/\sigma\big),$$
#
# and these vectors plus the constant $P^\top\beta$ add up **exactly** to the embedding. We call
# each one a *direct contribution*: what that layer writes straight into the output, not what it
# does through later layers.
#
# The default model is the course's own small CLIP trained on a synthetic world of shapes whose
# ground truth we know (see `data/models/MODEL_CARD.md`); the default task is naming the
# objects' colour (`dataset = "world:colour"`; the other factors are `shape`, `background`,
# `size`, `count`, `position`, `pattern`, `family`, and the model card says which of them the
# shipped model has learned).
#
# **How the offline model was made matters for this notebook.** It was trained *toward* the
# paper's finding: a direct-path penalty on all MLPs, the embedding term and every attention
# layer but the last four pushed its direct effects into its last four attention layers. A
# small model on a small world does not grow that pattern by itself: its twin (the same tag with
# `-plain`), trained in the same stages without the penalty, ships beside it and keeps a large direct path
# through its MLPs and early layers (notebook 2 measures both models side by side; the model
# card records their figures). So on the offline model the pattern is there by construction,
# and the cells below say so where it shows. Running a real CLIP (`preset = "ViT-B-16 LAION"`
# and the others, see the last section) is the actual test of the paper's claim.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | write CLIP's image embedding as an exact sum of per-layer and per-head terms by linearising the final layer norm; check the sum against `encode_image`; measure which terms write into the embedding directly |
# | **Time** | about 20 min reading, under a minute running (offline, on a laptop CPU), 25 min of exercises (1.1–1.3) |
# | **Assumes** | PyTorch tensors (broadcasting, `@`, axes); what a transformer block and layer norm compute; CLIP compares image and text embeddings by cosine similarity |
#
# {{EXERCISE_NOTE}}

# %% tags=["parameters"]
preset = "offline"          # one switch (helpers.course.presets): "offline", "ViT-B-16 LAION", "ViT-L-14 LAION",
                            # "ViT-H-14 LAION", "ViT-B-16 OpenAI", "ViT-B-32 OpenAI", "ViT-L-14 OpenAI", "random ViT-B-32";
                            # the parameters below override it where set (None / "": the preset's value)
model_name = ""             # e.g. "ViT-B-16" (then name its weights in `pretrained`)
pretrained = ""             # an open_clip tag (e.g. "laion2b_s34b_b88k"), a checkpoint path, or "random"
dataset = ""                # "world[:factor]", "imagenette", or "imagenet:/path/to/val"
n_images = None             # images to analyse
batch_size = None
device = ""                 # "cuda" / "cpu" (the papers' presets: cuda when there is a GPU)
protocol = ""               # "paper" for the papers' models (their presets set it)
seed = 0
record_to = ""              # JSON file for the key figures (set by the test harness)

# %%
# {{SETUP}}

# %%
import copy

import ipywidgets as widgets
import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import torch

from helpers.course.narrative import num, pct, provenance_reading, ranking, say, verdict, what_we_see
from helpers.course.presets import resolve
from helpers.course.record import Figures
from helpers.course.ui import live
from helpers.data.datasets import load_task
from helpers.engine.decompose import Decomposer
from helpers.engine.decompose_map import pooled_note
from helpers.engine.labels import component_label, head_labels, layer_label
from helpers.engine.models import model_info, provenance, world_of
from helpers.engine.text import encode_texts, probabilities, scoring, zero_shot_classifier
from helpers.methods.ablation import (
    accuracy,
    collect_terms,
    group_variance_share,
    margin_contributions,
    variance_pattern_held,
    variance_shares,
)

torch.manual_seed(seed)
figures = Figures(record_to)
settings = resolve(preset, "01", model_name=model_name, pretrained=pretrained, dataset=dataset,
                   n_images=n_images, batch_size=batch_size, device=device, protocol=protocol)
model_name, pretrained, dataset = settings.model_name, settings.pretrained, settings.dataset
n_images, batch_size, device = settings.n_images, settings.batch_size, settings.device
protocol = settings.protocol
model, preprocess, tokenizer = settings.start(figures)  # prints the settings, records them, loads the model
task = load_task(dataset, n_images=n_images, preprocess=preprocess, seed=seed, world_name=world_of(model))
info = model_info(model)
L = info.n_layers
pooled = info.pooling == "map"  # SigLIP: attention pooling instead of a class token
print(f"{model_name}: {info.n_layers} layers x {info.n_heads} heads;",
      f"task {task.name}: {len(task)} images, {len(task.classes)} classes")
if pooled:
    say(pooled_note(model_name, "exercises 1.1 and 1.2 (the class token through `ln_post`) are skipped"))

# %% [markdown]
# ## Taking one batch apart
#
# `Decomposer` hooks into the stock open_clip modules (`ln_pre`, each block's `ln_1`, the two
# residual branches, `ln_post`) with read-only forward hooks, runs the model once, and removes
# the hooks. The live check below adds every piece back up and compares with `encode_image`.

# %%
loader = torch.utils.data.DataLoader(task.dataset, batch_size=batch_size)
images, labels = next(iter(loader))
images = images.to(device)
dec = Decomposer(model)
d = dec(images, heads=True)
with torch.no_grad():
    reference = model.encode_image(images)
rel_err = float((d.reconstruct() - reference).abs().max() / reference.abs().max())
print(f"float32: max |sum of pieces - encode_image| / max |encode_image| = {rel_err:.2e}")
figures["decomposition_max_rel_error_f32"] = rel_err

# the same in float64, on a copy of the image tower (a few images suffice)
visual64 = copy.deepcopy(model.visual).double().requires_grad_(False)
d64 = Decomposer(visual64)(images[:4].double(), heads=True)
err64 = float((d64.reconstruct() - visual64(images[:4].double())).abs().max())
heads_vs_layers = float((d64.heads.sum(2) - d64.attn).abs().max())
print(f"float64: max abs error {err64:.1e}; per-head sums vs layer terms {heads_vs_layers:.1e}")
figures["decomposition_max_abs_error_f64"] = err64
del visual64, d64

# %%
what_we_see(
    f"Adding the pieces back up gives `encode_image` to a relative error of {num(rel_err, 2)} in float32, "
    f"and to an absolute error of {num(err64, 2)} in float64. "
    + verdict(rel_err <= 1e-4 and err64 <= 1e-10,
              "Both are rounding errors of their precision (float64 carries about nine more digits): "
              "the sum is exact.",
              "That is **more** than rounding explains: the pieces do not add up to the embedding."),
    f"The heads of each layer add up to that layer's attention term to {num(heads_vs_layers, 2)} (float64).",
);

# %% [markdown]
# ## Exercise 1.1: linearise `ln_post` yourself
#
# The `Decomposer` did the linearisation for you. Now write it. `residual_pieces` reads the raw
# pieces of the residual stream at the class token with hooks: the embedding term, then what
# every attention and MLP branch adds (`K = 1 + 2L` pieces of width `D`), together with the
# image's $\sigma$ and `ln_post`'s $\gamma$, $\beta$ and the projection $P$. Map every piece
# $c$ to $P^\top\big(\gamma \odot (c - \bar c)/\sigma\big)$, where $\bar c$ is the mean of
# $c$'s own `D` features. Mind the shapes: $\sigma$ has one value per image.

# %%
from helpers.course.exercises.nb01 import check_linearise, check_reassemble, check_variance_share, residual_pieces

if not pooled:
    parts = residual_pieces(model, images)
    print(f"pieces {tuple(parts.pieces.shape)} ({parts.names[0]}, {parts.names[1]}, {parts.names[2]}, ...), "
          f"sigma {tuple(parts.sigma.shape)}, gamma {tuple(parts.gamma.shape)}, proj {tuple(parts.proj.shape)}")


# %% tags=["exercise"]
def linearise(pieces, sigma, gamma, proj):
    """The direct contribution of every residual piece, through ln_post (sigma held fixed) and proj.

    pieces: [B, K, D]  what each of the K pieces adds to the residual stream at the class token
    sigma:  [B]        ln_post's standard deviation of each image, held fixed
    gamma:  [D]        ln_post's scale
    proj:   [D, E]     the projection into the joint space
    returns [B, K, E]: proj^T (gamma * (c - mean(c)) / sigma) for every piece c
    """
    # --- solution ---
    centred = pieces - pieces.mean(-1, keepdim=True)  # ln_post's mean subtraction, piece by piece
    return (centred * gamma / sigma[:, None, None]) @ proj
    # --- end ---


# %%
linearise = check_linearise(linearise)
if not pooled:
    mine = linearise(parts.pieces, parts.sigma, parts.gamma, parts.proj)
    theirs = d.components().data[:, :-1]  # embed, attn.0, mlp.0, ... (the last component is const)
    print(f"your terms vs the Decomposer's: largest difference {float((mine - theirs).abs().max()):.1e}")

# %% [markdown]
# ## Exercise 1.2: put the embedding back together
#
# The pieces are centred and scaled; what is left of `ln_post` is its bias $\beta$, which does not
# depend on the image: through the projection it is one constant vector $P^\top\beta$ (the
# `const` component). Add everything up.

# %% tags=["exercise"]
def reassemble(contributions, beta, proj):
    """The image embedding from its direct contributions.

    contributions: [B, K, E]  the direct contribution of every piece (exercise 1.1)
    beta: [D]  ln_post's bias;  proj: [D, E]
    returns [B, E]
    """
    # --- solution ---
    return contributions.sum(1) + beta @ proj
    # --- end ---


# %%
reassemble = check_reassemble(reassemble)
if not pooled:
    rebuilt = reassemble(mine, parts.beta, parts.proj)
    print(f"your embedding vs encode_image: largest difference {float((rebuilt - reference).abs().max()):.1e}, "
          f"relative to the largest entry {float((rebuilt - reference).abs().max() / reference.abs().max()):.1e}")

# %% [markdown]
# ## Which layers write into the embedding directly?
#
# Two measures over all images:
# * the **variance share** of a term: how much the embedding moves across images because of
#   that term (equivalently, the mean squared change when the term alone is replaced by its
#   mean over the dataset, relative to the embedding's total variance);
# * its mean contribution to the **zero-shot margin**: the cosine logit of the correct class
#   minus the average class's logit splits exactly over the terms.

# %% [markdown] tags=["predict"]
# Before the bars appear: which layers will write most into the embedding directly, early or late
# ones, attention or MLP? And will the variance shares of the single layers add up to 1?
# Answer:
# Late attention layers. The offline model was trained with a penalty that pushes its direct
# effects into its last four attention layers (`data/models/MODEL_CARD.md`), and the paper finds
# the same pattern in large CLIPs trained without any such penalty. MLPs and early layers still
# compute a lot, but mostly *indirectly*, through later layers. The single shares need not add
# up to 1: the terms are correlated (several layers write along the same directions), and a
# group's share counts those covariances, which exercise 1.3 makes you compute.

# %%
terms = collect_terms(model, loader, heads=True, progress=True, total=len(task))
classifier = zero_shot_classifier(model, tokenizer, task.prompts)
base_acc = accuracy(terms.embeddings(), classifier, task.labels)
figures["zero_shot_accuracy"] = base_acc
figures["n_classes"] = len(task.classes)
figures["task"] = task.name

shares = variance_shares(terms)
margins = margin_contributions(terms, classifier, task.labels)
rows = [{"layer": i, "kind": kind, "variance share": shares[component_label(kind, i)],
         "margin": margins[component_label(kind, i)]}
        for i in range(L) for kind in ("attn", "mlp")]
fig = px.bar(rows, x="layer", y="variance share", color="kind", barmode="group",
             title="Direct effect of each layer: share of the embedding's variance")
fig.show()
fig = px.bar(rows, x="layer", y="margin", color="kind", barmode="group",
             title="Mean contribution to the correct-class margin (cosine logits)")
fig.show()

# shares of whole groups: the variance of the group's summed terms (covariances included)
n_last = min(4, L)
attn_share = group_variance_share(terms, attn=range(L))
mlp_share = group_variance_share(terms, mlps=range(L))
rest_share = group_variance_share(terms, mlps=range(L), embed=True)  # everything that varies but attention
last4 = group_variance_share(terms, attn=range(L - n_last, L))
top = sorted(((v, k) for k, v in margins.items() if k != "const"), reverse=True)[:3]
held = variance_pattern_held(last4, mlp_share)
figures["variance_share_attn"] = attn_share
figures["variance_share_mlp"] = mlp_share
figures["variance_share_rest"] = rest_share
figures["variance_share_last4_attn"] = last4
figures["variance_pattern_held"] = held
figures["top_margin_terms"] = [k for _, k in top]
figures["provenance"] = provenance(model).kind

# %%
cov_share = 1 - attn_share - rest_share  # 2 cov(attention, rest) / var(embedding)
what_we_see(
    f"Zero-shot accuracy on {task.name} is {pct(base_acc)} ({len(task.classes)} classes; chance "
    f"{pct(1 / len(task.classes))}).",
    f"The last {n_last} attention layers together carry a share of {num(last4, 2)} of the embedding's "
    f"variance, all MLPs together {num(mlp_share, 2)}: "
    + verdict(held, "the direct effects sit in the last attention layers, the paper's pattern",
              "**not** the paper's pattern")
    + " (at least half of the variance in the last four attention layers, and more than five times the "
      "MLPs' share).",
    verdict(attn_share > 1,
            f"All attention layers together have a share of {num(attn_share, 2)}: more than the whole embedding. "
            "The shares of the parts of a sum do not add up to 1, because the variance of A + B is "
            "var(A) + var(B) + 2 cov(A, B). Here the rest of the embedding (the MLPs and the embedding term, "
            f"share {num(rest_share, 2)}) covaries negatively with the attention layers (the covariance term "
            f"is {num(cov_share, 2)} of the total): it partly cancels them, so the whole embedding varies "
            "less than its attention part alone.", ""),
    "The terms that add most to the correct class's margin: "
    + ranking({k: v for v, k in top}) + "; "
    + verdict(all(k.startswith("attn.") for _, k in top), "all of them attention layers.",
              "**not** all of them attention layers."),
    provenance_reading(provenance(model), held,
                       pattern="the paper's pattern (direct effects in the last four attention layers)"),
);

# %% [markdown]
# ## Exercise 1.3: the variance share of a group of terms
#
# The share of a group (all attention layers, say) is the variance over images of the group's
# *summed* terms, added up over the embedding dimensions, divided by the same for the
# embeddings. It is not the sum of the single terms' shares: correlated terms add their
# covariances, terms that cancel take them away. It can even exceed 1 when the rest of the
# embedding partly cancels the group, so that the group alone varies more than the whole.

# %% tags=["exercise"]
def variance_share(group, embeddings):
    """The share of the embeddings' variance that comes from a group of terms.

    group: [N, K, E]  the direct terms of the group's K components for N images
    embeddings: [N, E]
    returns a float: var over images of the group's sum (summed over E) / the same for the embeddings
    """
    # --- solution ---
    return float(group.sum(1).var(0).sum() / embeddings.var(0).sum())
    # --- end ---


# %%
variance_share = check_variance_share(variance_share)
single = sum(shares[f"attn.{i}"] for i in range(L))
print(f"all attention layers: your share {variance_share(terms.attn, terms.embeddings()):.2f}, "
      f"helpers {attn_share:.2f}; the single layers' shares add up to {single:.2f}")
figures["variance_share_attn_single_sum"] = single

# %%
what_we_see(
    f"The single attention layers' shares add up to {num(single, 2)}; the share of their sum is "
    f"{num(attn_share, 2)}: "
    + verdict(attn_share > single,
              "the layers' terms are positively correlated (they write along shared directions), so together "
              "they vary more than their single shares add up to.",
              "the layers' terms partly cancel, so together they vary less than their single shares add up to."),
);

# %% [markdown]
# A group's share is the variance of the group's *sum*, which is what mean-ablating the whole
# group changes (notebook 2 does exactly that).
#
# ## Heads of the last layers
#
# Each attention layer's term splits further over its heads. The heat map shows each head's
# variance share for the last layers.

# %%
last = list(range(max(0, L - 4), L))
total_var = terms.embeddings().var(0).sum()
head_share = (terms.head_terms().select(layer=last).data.var(0).sum(-1) / total_var).cpu().numpy()
fig = px.imshow(head_share, x=[f"head {h}" for h in range(info.n_heads)], y=[layer_label(i) for i in last],
                color_continuous_scale="Blues", title="Variance share of each head (last layers)", text_auto=".2f")
fig.show()
best = np.unravel_index(head_share.argmax(), head_share.shape)
figures["largest_head"] = [int(last[best[0]]), int(best[1])]
figures["largest_head_share"] = float(head_share.max())

# %%
order = np.argsort(head_share, axis=None)[::-1][:3]
top_heads = {head_labels([(last[i // info.n_heads], i % info.n_heads)])[0]: float(head_share.flat[i]) for i in order}
what_we_see(
    "The heads with the largest shares: " + ranking(top_heads)
    + f"; the median head of these layers has {num(float(np.median(head_share)))}.",
    f"The single heads' shares add up to {num(float(head_share.sum()), 2)}, against {num(last4, 2)} for the sum "
    "of these layers: "
    + verdict(last4 > head_share.sum(), "the heads of the last layers write partly along shared directions.",
              "the heads of the last layers partly cancel each other."),
);

# %% [markdown]
# ## Try it: one image, one text
#
# Pick an image and type any text. The bars show how much each term (the embedding term, every
# attention layer and MLP, and the constant) adds to the cosine similarity between the image and
# the text; they add up to the similarity printed above the plot. With *by head*, the bars are
# the heads of the chosen layer instead, and they add up to that layer's attention bar.
#
# The line above the plot turns the similarity into the model's own probability, with its
# learned temperature (`logit_scale`): for CLIP a softmax of your text against one prompt per
# class, for a sigmoid-loss model (SigLIP) a probability of the pair on its own, with its
# `logit_bias` (`helpers.engine.text.probabilities`).

# %%
how = scoring(model)
class_prompts = [task.prompts[c][0] for c in task.classes]
rivals = encode_texts(model, tokenizer, class_prompts)


def explain(index: int, text: str, layer: int, by_head: bool):
    x = task.dataset[index][0][None].to(device)
    t = encode_texts(model, tokenizer, [text])
    dn = dec(x, heads=True).normalized()
    sim = float(dn.reconstruct() @ t[0])
    others = rivals[[i for i, prompt in enumerate(class_prompts) if prompt != text]]  # the text once
    p = float(probabilities(how, dn.reconstruct(), torch.cat([t, others]))[0, 0])
    if how.kind == "sigmoid":
        print(f"'{text}': cosine {sim:.3f}; probability that it fits, sigmoid({how.scale:.1f} x cosine "
              f"{how.bias:+.1f}) = {p:.3f}")
    else:
        print(f"'{text}': cosine {sim:.3f}; probability against the other class prompts ({len(others)}), softmax "
              f"of {how.scale:.1f} x cosine = {p:.3f}")
    display(task.show(index).resize((160, 160)))
    if by_head:
        vals = dn.head_terms().select(image=0, layer=layer).score(t).data[:, 0].tolist()
        names = head_labels((layer, h) for h in range(info.n_heads))
        title = f"layer {layer}, per head: similarity to '{text}' = {sim:.3f}"
    else:
        comps = dn.components()
        vals = comps.score(t).data[0, :, 0].tolist()
        names = comps.labels["component"]
        title = f"per layer: similarity to '{text}' = {sim:.3f}"
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=["#1f77b4" if n.startswith(("attn", "L")) else "#ff7f0e" for n in names]))
    fig.update_layout(title=title, yaxis_title="contribution to cosine similarity", height=350)
    fig.show()


default_text = task.prompts[task.classes[int(task.labels[0])]][0]
live(explain,
     index=widgets.IntSlider(value=0, min=0, max=len(task) - 1, description="image"),
     text=widgets.Text(value=default_text, description="text", continuous_update=False),
     layer=widgets.IntSlider(value=L - 1, min=0, max=L - 1, description="layer"),
     by_head=widgets.Checkbox(value=False, description="by head"))

# %% [markdown]
# ## What to take away

# %%
what_we_see(
    "The embedding is a sum of per-layer, per-head terms once the final layer norm's scale is frozen per image: "
    + verdict(rel_err <= 1e-4 and err64 <= 1e-10, "exactly, up to floating-point rounding.",
              "**not** exactly here (see the error above)."),
    verdict(held,
            f"The direct effects are not spread evenly: the last {n_last} attention layers carry most of them "
            f"({num(last4, 2)} of the variance).",
            f"The direct effects do **not** concentrate in the last {n_last} attention layers here "
            f"({num(last4, 2)} of the variance; all MLPs {num(mlp_share, 2)})."),
    provenance_reading(provenance(model), held,
                       pattern="the paper's pattern (direct effects in the last four attention layers)"),
    "Notebook 2 tests the same claim causally, by replacing terms with their dataset mean.",
    title="What to take away",
);

# %% [markdown]
# ## Running on real models (Colab)
#
# Everything above ran on the offline model, where the paper's pattern was trained in. The
# actual test of the claim is a CLIP trained on web data, and every notebook runs one with a
# single switch, `preset`, in its parameters cell.
#
# 1. Open the notebook in Colab with the badge at the top; its set-up cell installs the course.
# 2. Pick a GPU runtime: *Runtime → Change runtime type → T4 GPU → Save* (the free tier's GPU).
#    Without one the papers' presets still run, on the CPU, many times slower.
# 3. In the parameters cell set, e.g., `preset = "ViT-B-16 LAION"` (the smallest of the paper's
#    models) and run all cells. The preset sets the model, its weights, the data, the device,
#    the image counts and batch sizes, and the paper's protocol (`protocol = "paper"`); any
#    parameter you set below it wins.
#
# The first run of a preset downloads its weights and data (into the Hugging Face cache and
# `~/.cache/clip-course`); a Colab runtime keeps them until it is recycled, so the other
# notebooks of the same session reuse them. The table below is computed from `helpers.course.presets`:
# the downloads, and the **estimated** minutes of each notebook on a T4 (from the floating-point
# work of its images and texts at a T4's sustained float32 speed, plus reading the images and
# loading the model; downloads not included). They are estimates, not measurements: expect the
# real times to differ.

# %%
from helpers.course.narrative import say
from helpers.course.presets import T4_MEMORY_GIB, colab_table, presets_table

say(colab_table())
gpu = {r["preset"]: r["gpu_memory_gib"] for r in presets_table() if r["device"] == "auto"}
say(f"Estimated peak GPU memory: from {num(min(gpu.values()), 1)} GiB (`{min(gpu, key=gpu.get)}`) to "
    f"{num(max(gpu.values()), 1)} GiB (`{max(gpu, key=gpu.get)}`), against the T4's {num(T4_MEMORY_GIB, 1)} GiB: "
    + verdict(max(gpu.values()) < T4_MEMORY_GIB, "every preset fits a free Colab GPU.",
              "**not** every preset fits a free Colab GPU; lower `n_images` or `batch_size`."))

# %% [markdown]
# What to lay each notebook's results beside (the paper is Gandelsman et al., ICLR 2024;
# CLIP-InterpreT is Madasu et al., 2024, whose models are the OpenAI presets):
#
# | notebook | compare with |
# |---|---|
# | 1 · the embedding as a sum | the paper's direct-effect analysis of layers: which layers write into the embedding directly |
# | 2 · mean ablation | the paper's mean-ablation results on ImageNet: its table of the MLPs ablated and its figure of attention layers ablated cumulatively |
# | 3 · TextSpan | the paper's accuracy as a function of the number of TextSpan texts per head, its pools and baselines, and its heads' text lists (e.g. ViT-L-14's (23, 8) colour and (20, 4) counting heads); CLIP-InterpreT's property labels and scores |
# | 4 · spatial maps | the paper's per-image and per-head heat maps; CLIP-InterpreT's topic and contrastive segmentation |
# | 5 · Waterbirds | the paper's worst-group accuracy before and after removing the location and setting heads |
# | 6 · zero-shot segmentation | the paper's ImageNet-Segmentation table: pixel accuracy, mIoU and mAP against LRP, partial LRP, rollout, raw attention, GradCAM and Chefer et al. |
#
# Image counts are smaller than the paper's (a few thousand Imagenette photos of 10 classes,
# classified 1000-way, instead of ImageNet's 50,000), so compare the patterns, not the third
# digit.
