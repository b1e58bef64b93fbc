# %% [markdown]
# [Open in Colab ↗](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb) (needs a Google account and network; offline, skip it: see `notebooks/OFFLINE.md`)
#
# # 1 · The image embedding is a sum
#
# A CLIP vision transformer turns an image into one vector, the *image embedding*, in the same
# space as the text embeddings. This notebook takes that vector apart.
#
# Every block of a ViT *adds* its output to a running vector, the **residual stream**. At the
# class token, after the last block, the stream is the embedding layer's output plus what every
# attention layer and MLP added. The image embedding is that stream through a final layer norm,
# `ln_post`, and a projection, `proj`. Layer norm is *almost* linear: it subtracts the vector's
# mean, divides by its standard deviation $\sigma$ (one number per image), scales by $\gamma$ and
# shifts by $\beta$. Hold $\sigma$ fixed and it is linear, so every summand of the stream gets its
# own vector in the joint space, and these plus one constant add up **exactly** to the
# embedding: each is a *direct contribution*, what a layer writes straight into the output.
#
# ![The residual decomposition: the image goes through ln_pre and L blocks that each add their outputs to the residual stream; ln_post with its σ held fixed and the projection map every summand to its own direct term.](figures/residual_decomposition.png)
#
# The default model is the course's own small CLIP, trained on a synthetic world of shapes whose
# ground truth we know (`data/models/MODEL_CARD.md`); the task is naming the objects' colour.
# How it was trained matters for what it can show: the notebook says how after its first
# measurement. A real CLIP (`preset = "ViT-B-16 LAION"`, see *Going further*) is the actual test
# of the paper's claim.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | write CLIP's image embedding as an exact sum of per-layer and per-head terms by linearising the final layer norm; check the sum against `encode_image`; measure which terms write into the embedding directly |
# | **Time** | {{TIME}} |
# | **Assumes** | PyTorch tensors (broadcasting, `@`, axes); what a transformer block and layer norm compute; CLIP compares image and text embeddings by cosine similarity |
#
# {{EXERCISE_NOTE}}

# %% tags=["parameters"]
preset = "offline"   # the one switch: "offline", "ViT-B-16 LAION", "ViT-L-14 LAION",
                     # "ViT-H-14 LAION", "ViT-B-16 OpenAI", "ViT-B-32 OpenAI",
                     # "ViT-L-14 OpenAI", "random ViT-B-32". The parameters below
                     # override it where set (None or "": the preset's value).
model_name = ""      # e.g. "ViT-B-16" (then name its weights in `pretrained`)
pretrained = ""      # an open_clip tag, a checkpoint path, or "random"
dataset = ""         # "world[:factor]", "imagenette", or "imagenet:/path/to/val"
n_images = None      # images to analyse
batch_size = None
device = ""          # "cuda" or "cpu" (the papers' presets: cuda if there is a GPU)
protocol = ""        # "paper" for the papers' models (their presets set it)
seed = 0
record_to = ""       # JSON file for the key figures (set by the test harness)

# %%
# {{SETUP}}

# %%
import copy

import ipywidgets as widgets
import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import torch

from helpers.course.narrative import num, pct, provenance_reading, ranking, say, shown_sum, verdict, what_we_see
from helpers.course.presets import begin
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

settings, figures, (model, preprocess, tokenizer) = begin(globals(), "01")  # the preset fills what was left unset
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

# the same in float64, on a copy of the image tower (two images suffice: each image adds up on its own)
visual64 = copy.deepcopy(model.visual).double().requires_grad_(False)
x64 = images[:2].double()
d64 = Decomposer(visual64)(x64, heads=True)
err64 = float((d64.reconstruct() - visual64(x64)).abs().max())
heads_vs_layers = float((d64.heads.sum(2) - d64.attn).abs().max())
print(f"float64: max abs error {err64:.1e}; per-head sums vs layer terms {heads_vs_layers:.1e}")
figures["decomposition_max_abs_error_f64"] = err64
del visual64, d64, x64

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
# image's $\sigma$ and `ln_post`'s $\gamma$, $\beta$ and the projection. Work out what each piece
# contributes to the embedding when `ln_post`'s $\sigma$ is held fixed: follow the layer norm's
# steps one by one and ask which of them act on a piece on its own, and which belong to the
# whole image. (The bias $\beta$ is not part of any piece: exercise 1.2 adds it.)

# %%
from helpers.course.exercises.nb01 import (
    check_last_layers_for_half,
    check_linearise,
    check_reassemble,
    check_variance_share,
    residual_pieces,
)

if not pooled:
    parts = residual_pieces(model, images)
    print(f"pieces {tuple(parts.pieces.shape)} ({parts.names[0]}, {parts.names[1]}, {parts.names[2]}, ...), "
          f"sigma {tuple(parts.sigma.shape)}, gamma {tuple(parts.gamma.shape)}, proj {tuple(parts.proj.shape)}")


# %% [markdown] tags=["hint"]
# Layer norm of the whole stream $z = \sum_k c_k$ is $\gamma \odot (z - \bar z)/\sigma + \beta$.
# Subtracting the mean is linear ($\overline{\sum_k c_k} = \sum_k \bar c_k$), so it can be done
# piece by piece, each piece over its own `D` features. The division is by the image's $\sigma$,
# the same number for every piece of that image: it is the spread of the *sum*, not of a piece.

# %% [markdown] tags=["hint"]
# For a piece $c$: $P^\top\big(\gamma \odot (c - \bar c)/\sigma\big)$, in code
# `((pieces - pieces.mean(-1, keepdim=True)) * gamma / sigma[:, None, None]) @ proj`. `sigma` is
# `[B]`, so it needs two new axes to broadcast over the pieces and the features.

# %% tags=["exercise"] kind="implement" difficulty=2 importance=3 minutes=7
def linearise(pieces, sigma, gamma, proj):
    """The direct contribution of every residual piece to the image embedding.

    pieces: [B, K, D]  what each of the K pieces adds to the residual stream at the class token
    sigma:  [B]        ln_post's standard deviation of each image's stream, held fixed
    gamma:  [D]        ln_post's scale
    proj:   [D, E]     the projection into the joint space
    returns [B, K, E]
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
    say(f"{linearise.yours} vs the Decomposer's terms: largest difference {float((mine - theirs).abs().max()):.1e}")

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
# Late attention layers: the paper finds that in large CLIPs, and the offline model was trained
# toward it (see below). Early layers and MLPs still compute a lot, but mostly *indirectly*,
# through later layers. The single shares need not add up to 1: several layers write along the
# same directions, and a group's share counts those covariances (exercise 1.3).

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
shown = shown_sum(1.0, [attn_share, rest_share, cov_share])  # as shown, the three add up to 1
figures["variance_shares_shown"] = shown
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
            f"All attention layers together have a share of {shown[0]}: more than the whole embedding. "
            "The shares of the parts of a sum do not add up to 1, because the variance of A + B is "
            "var(A) + var(B) + 2 cov(A, B). Here the rest of the embedding (the MLPs and the embedding term, "
            f"share {shown[1]}) covaries negatively with the attention layers: the covariance term is "
            f"1 − {shown[0]} − {shown[1]} = {shown[2]} of the total. The rest partly cancels the attention layers, "
            "so the whole embedding varies less than its attention part alone.", ""),
    "The terms that add most to the correct class's margin: "
    + ranking({k: v for v, k in top}) + "; "
    + verdict(all(k.startswith("attn.") for _, k in top), "all of them attention layers.",
              "**not** all of them attention layers."),
    provenance_reading(provenance(model), held,
                       pattern="the paper's pattern (direct effects in the last four attention layers)"),
);

# %% [markdown]
# **How the offline model was made.** It was trained *toward* the paper's finding: a penalty
# on the direct paths of all MLPs, the embedding term and every attention layer but the last
# four. Its twin (the tag with `-plain`), trained without the penalty, keeps a large direct path
# through its MLPs and early layers (notebook 2 measures both). So here the pattern is there by
# construction; a real CLIP is the test.
#
# ## Exercise 1.3: the variance share of a group of terms
#
# How much of the embedding's variation across images comes from a *group* of terms (all
# attention layers, say)? Not the sum of the single terms' shares: when terms are correlated
# their group varies more than that, when they cancel it varies less. Write the share of a
# group so that it counts both.

# %% [markdown] tags=["hint"]
# Add the group's terms up first (one `[N, E]` tensor), then measure how much that sum varies
# over the images. "How much a vector varies" is its variance over the images in each of the
# `E` dimensions, added up over the dimensions. Do the same for the embeddings and divide.

# %% [markdown] tags=["hint"]
# `float(group.sum(1).var(0).sum() / embeddings.var(0).sum())`: `sum(1)` adds the terms, `var(0)`
# is over the images, the last `sum()` over the dimensions.

# %% tags=["exercise"] kind="implement" difficulty=1 importance=2 minutes=5 number="1.3"
def variance_share(group, embeddings):
    """The share of the embeddings' variance that comes from a group of terms.

    group: [N, K, E]  the direct terms of the group's K components for N images
    embeddings: [N, E]
    returns a float
    """
    # --- solution ---
    return float(group.sum(1).var(0).sum() / embeddings.var(0).sum())
    # --- end ---


# %%
variance_share = check_variance_share(variance_share)
single = sum(shares[f"attn.{i}"] for i in range(L))
say(f"all attention layers: {variance_share.yours} gives {variance_share(terms.attn, terms.embeddings()):.2f}, "
      f"helpers.methods.ablation {attn_share:.2f}; the single layers' shares add up to {single:.2f}")
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
# ## Exercise 1.4: how many layers carry half of it?
#
# Find, with your `variance_share` (or `group_variance_share` from `helpers.methods.ablation`),
# the smallest number $k$ such that the **last** $k$ attention layers together carry at least
# half of the embedding's variance. `terms.attn` is `[N, L, E]`: the attention layers' terms.

# %% [markdown] tags=["hint"]
# Try $k = 1, 2, \dots$ in a loop: the group is `terms.attn[:, L - k:]`, the embeddings
# `terms.embeddings()`. Stop at the first $k$ whose share is at least 0.5.

# %% [markdown] tags=["hint"]
# `next(k for k in range(1, L + 1) if variance_share(terms.attn[:, L - k:], terms.embeddings()) >= 0.5)`.
# Adding up the single layers' shares gives another (wrong) answer: covariances count.

# %% tags=["exercise"] kind="find" difficulty=1 importance=2 minutes=4 number="1.4"
def last_layers_for_half():
    """The smallest k such that the last k attention layers carry at least half of the variance."""
    # --- solution ---
    emb = terms.embeddings()
    return next((k for k in range(1, L + 1) if variance_share(terms.attn[:, L - k:], emb) >= 0.5), None)
    # --- end ---


# %%
last_layers_for_half = check_last_layers_for_half(last_layers_for_half, terms=terms)
figures["last_layers_for_half"] = k_half = last_layers_for_half()

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
    (f"The last {k_half} attention layer{'s' if k_half > 1 else ''} already carry half of the embedding's "
     "variance (exercise 1.4)." if k_half is not None else
     f"Even all {L} attention layers together carry less than half of the embedding's variance (exercise 1.4): "
     "here the MLPs and the rest hold most of it."),
    "Notebook 2 tests the same claim causally, by replacing terms with their dataset mean.",
    title="What to take away",
);

# %% [markdown] tags=["discuss"]
# The decomposition holds `ln_post`'s σ fixed per image. Is that a cheat? What would change if two
# images were decomposed with each other's σ?
# Answer:
# Not a cheat: σ is a property of the image's whole stream, and for that image the embedding
# really is the sum of the terms divided by that σ; holding it fixed is what makes the split
# exact, and nothing is approximated. What the terms do *not* say is how the embedding would
# change if one term changed, since σ would change too (a term that inflates the stream also
# shrinks every other term's share). With each other's σ, every term of an image would be
# scaled by the ratio of the two σ's: the terms would no longer add up to the embedding, and
# comparing terms across images would mix in how loud each image's stream is.

# %% [markdown]
# ## Going further
#
# The rest of the notebook is optional: the exercise that puts the embedding back together,
# the heads of the last layers, a widget to explain one image against any text, and how to run
# a real CLIP.
#
# ### Exercise 1.2: put the embedding back together
#
# Your terms from exercise 1.1 are centred and scaled; what is left of `ln_post` is its bias
# $\beta$, which does not depend on the image. Put the embedding back together from the terms and
# whatever constant is missing.

# %% [markdown] tags=["hint"]
# The bias is added after the division by σ, once per image, and then goes through the
# projection like everything else: one constant vector in the joint space.

# %% [markdown] tags=["hint"]
# `contributions.sum(1) + beta @ proj`.

# %% tags=["exercise"] kind="implement" difficulty=1 importance=2 minutes=3 number="1.2"
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
    gap = float((rebuilt - reference).abs().max())
    say(f"{reassemble.yours} (on the terms of {linearise.yours}) vs encode_image: largest difference {gap:.1e}, "
          f"relative to the largest entry {gap / float(reference.abs().max()):.1e}")

# %% [markdown]
# ### Heads of the last layers
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
# ### Try it: one image, one text
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
# ### Running on real models (Colab)
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

# %% [markdown] tags=["discuss"]
# "Direct effect" means what a layer writes straight into the output. Name something an early
# layer could do that matters a lot but has almost no direct effect.
# Answer:
# Anything another layer reads: an early attention layer that moves the object's colour from its
# patches onto the class token's stream, or an MLP that builds a feature a later head attends
# with, can be essential to the prediction while writing almost nothing along the directions the
# embedding keeps. Its effect is *indirect*, through later layers, and the direct term misses it;
# notebook 2's mean ablation removes only the direct path for the same reason.

# %% [markdown] tags=["discuss"]
# A group's variance share can exceed 1, and single shares need not add up to the group's. When,
# and what does it say about the terms?
# Answer:
# The variance of a sum is the sum of the variances plus twice every covariance. Terms that
# write along shared directions (positively correlated) make the group vary more than their
# single shares add up to; terms that cancel make it vary less. A group's share exceeds 1 when
# the rest of the embedding covaries negatively with it: the rest partly cancels the group, so
# the whole varies less than the group alone. Here the attention layers are positively
# correlated among themselves and the MLPs partly cancel them.

# %% [markdown] tags=["discuss"]
# The offline model's direct effects sit in its last layers because it was
# trained that way. Design a measurement that would tell a model that *learned* this pattern
# from one that was pushed into it, using only the tools of this notebook and notebook 2.
# Answer:
# A sample answer: compare the model with a twin trained the same way without the push (this
# course ships one: notebook 2 runs it), or, for a web-trained CLIP, compare checkpoints along
# training: a learned pattern grows with training. Within one model, the variance shares alone
# cannot tell the two apart; what can is whether the pattern survives on data the push never
# saw (the penalty acted on training images), and whether the indirect paths of early layers
# still matter (ablate them *with* their downstream effects, e.g. by zeroing the block's
# output inside the forward pass, and compare with the mean ablation of the direct term).
