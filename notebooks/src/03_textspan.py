# %% [markdown]
# [Open in Colab ↗](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb) (needs a Google account and network; offline, skip it: see `notebooks/OFFLINE.md`)
#
# # 3 · TextSpan: naming what each attention head does
#
# Notebook 2 showed that the last attention layers carry the embedding's direct effects. Each
# of their heads writes a vector into the joint space for every image. **TextSpan** explains a
# head by choosing, from a pool of descriptions, a few texts whose directions span what the head
# writes: it projects the pool's text embeddings onto the span of the head's outputs, centres
# the outputs over the images, then repeatedly picks the text along which the outputs vary most
# and removes that direction from the outputs and from every remaining text.
#
# The chosen texts are the head's *text basis*. Every text in our pools carries a **property
# tag** (colour, shape, background, …), so a head's role is read off exactly: the most common
# tag among its texts, with its share as *purity*. On the offline world we know which factors
# exist, so we can check that the roles found are real ones.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | explain an attention head by a few texts with TextSpan (project the pool on the head's span, then pick and deflate greedily); read head roles and purities off tagged texts; check a head's role against the world's ground truth with its nearest neighbours; judge a text basis against random directions and PCA |
# | **Time** | {{TIME}} |
# | **Assumes** | notebooks 1–2 (direct terms of heads; the last attention layers matter); SVD and orthogonal projection |
#
# {{EXERCISE_NOTE}}

# %% tags=["parameters"]
preset = "offline"   # the one switch: "offline", "ViT-B-16 LAION", "ViT-L-14 LAION",
                     # "ViT-H-14 LAION", "ViT-B-16 OpenAI", "ViT-B-32 OpenAI",
                     # "ViT-L-14 OpenAI", "random ViT-B-32". The parameters below
                     # override it where set (None or "": the preset's value).
model_name = ""      # e.g. "ViT-B-16" (then name its weights in `pretrained`)
pretrained = ""      # an open_clip tag, a checkpoint path, or "random"
dataset = ""         # images: "world[:factor]", "imagenette", "imagenet:/path/to/val"
pool = ""            # "": the world's tagged pool for world scenes, else the general
                     # pool; or a file path
baseline_pool = "common_words"
pool_size = None     # texts drawn from each pool, each property keeping its share
                     # (0: every text)
n_images = None
batch_size = None
device = ""          # "cuda" or "cpu" (the papers' presets: cuda if there is a GPU)
protocol = ""        # "paper" for the papers' models (their presets set it)
stream = None        # keep the terms on disk and read them in chunks: True, False, or
                     # None (when they would take more than 4 GiB of memory)
browse_images = 2000 # with the terms on disk: the images (evenly spaced) the browser, the
                     # exercises 3.1-3.2 and the neighbour searches read into memory
seed = 0
last_layers = 4      # heads of the last layers to explain
n_texts = 5          # texts per head for the roles
record_to = ""

# %%
# {{SETUP}}

# %%
from collections import Counter

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from IPython.display import display

from helpers.course.narrative import Claim, compare, num, pct, pm, ranking, say, verdict, what_we_see
from helpers.course.presets import begin
from helpers.course.ui import live
from helpers.data import world
from helpers.data.datasets import load_task
from helpers.data.pools import load_pool
from helpers.engine.models import DEFAULT_MODEL, model_info, provenance, world_of
from helpers.engine.text import cached_text_embeddings, encode_texts, zero_shot_classifier
from helpers.methods.ablation import accuracy, collect_terms, sample_index
from helpers.methods.heads import (
    dominant_property,
    head_image_neighbours,
    head_roles,
    head_text_neighbours,
    heads_for_property,
    interpretability_scores,
    neighbour_overlap,
    property_neighbours,
    reconstruction_accuracy,
    search_agreement,
    stack_heads,
)
from helpers.methods.metrics import proportion_se
from helpers.methods.stats import accuracy_tolerance, with_tolerance
from helpers.methods.streamed import StreamedTerms, terms_of
from helpers.methods.textspan import pca_basis, span_comparison, textspan

settings, figures, (model, preprocess, tokenizer) = begin(globals(), "03")  # the preset fills what was left unset
task = load_task(dataset, n_images=n_images, preprocess=preprocess, seed=seed, world_name=world_of(model))
info = model_info(model)
L, H = info.n_layers, info.n_heads
layers = list(range(max(0, L - last_layers), L))
# the terms of every image: in memory, or (a large set) on disk with the heads of `layers`, read a chunk at a time
terms = terms_of(model, task.dataset, stream=stream, dataset_id=task.key, preprocess_id=repr(preprocess),
                 head_layers=layers, batch_size=batch_size, model_name=f"{model_name}/{pretrained}")
streamed = isinstance(terms, StreamedTerms)
text_pool = load_pool(pool or ("world" if dataset.startswith("world") else "general")).sample(pool_size, seed=seed)
model_id = f"{model_name}/{pretrained or 'default'}"
pool_emb = cached_text_embeddings(model, tokenizer, text_pool.texts, model_id=model_id)
stack, labels = stack_heads(terms, layers)
print(f"{len(task)} images; pool '{text_pool.name}' of {len(text_pool)} texts; "
      f"{len(labels)} heads (layers {layers[0]}-{layers[-1]}, {H} heads each), output dim {stack.shape[-1]}")

# the paper's protocol (the papers' presets) or the course's variants, where the two differ
paper = protocol == "paper"
span = "paper" if paper else "numerical"  # TextSpan's text projection: top-80 directions, or the numerical span
neighbour_score = "dot" if paper else "cosine"  # per-head nearest neighbours
# the authors' code fits TextSpan on, and ranks dot products of, the terms on the cosine scale
# (each image's terms divided by its embedding's norm); the course fits on the raw terms
ref_stack = stack_heads(terms, layers, scale="paper")[0]
fit_scale = "paper" if paper else "raw"
fit_stack = ref_stack if paper else stack  # what TextSpan, PCA and the accuracy curves are fitted on
scale_note = verdict(paper, "on the reference's cosine scale (each image's terms / |embedding|)", "on raw terms")
# what the browser, the exercises 3.1-3.2 and the neighbour searches read: every image, or with the terms on
# disk an evenly spaced sample of them (`view`, and its stacks), read into memory
shown = sample_index(len(task), browse_images if streamed else None)
view = task.subset(shown)
v_stack, v_ref = (stack.rows(shown), ref_stack.rows(shown)) if streamed else (stack, ref_stack)
neighbour_stack = v_ref if paper else v_stack
figures["protocol_options"] = {"span": span, "scale": fit_scale, "neighbours": neighbour_score}
say(f"**Protocol: {'the paper' if paper else 'the course'}'s.** TextSpan projects the texts on "
    + verdict(paper, "the top 80 singular directions of each head (`span=\"paper\"`, as the authors' code)",
              "each head's numerical span (`span=\"numerical\"`)")
    + f" and is fitted and scored {scale_note} (`scale=\"{fit_scale}\"`)"
    + "; nearest neighbours are ranked by "
    + verdict(paper, "dot product (`score=\"dot\"`, as the authors' code)", "cosine (`score=\"cosine\"`)")
    + ". The other option of each is shown beside it where it changes a result"
    + verdict(paper, ".", "; `protocol = \"paper\"` (or a paper preset) makes the paper's the default."))
if streamed:
    say(f"The terms of the {len(task):,} images stay on disk ({terms.arrays.path}) and are read "
        f"{terms.chunk_size:,} images at a time: TextSpan and PCA are fitted on each head's mean and covariance "
        "(one pass), and every accuracy is one more pass. The browser, exercises 3.1-3.2 and the neighbour "
        f"searches read {len(view):,} of the images, evenly spaced, into memory.")
# a figure measured on a subset of the paper's data carries a sampling error (one standard error, ±)
sampled = settings.sampled
se = (lambda p: proportion_se(p, len(task), sampled[2])) if sampled else (lambda p: None)  # noqa: E731

# %% [markdown]
# ## A text basis for every head of the last layers
#
# All heads are processed together (one batched computation, no loop over heads).

# %%
results = {sp: textspan(fit_stack, pool_emb, n_texts, span=sp) for sp in ("numerical", "paper")}  # both are cheap
roles_by_span = {sp: head_roles(r, text_pool, labels, ignore=("other", "unknown")) for sp, r in results.items()}
result, roles = results[span], roles_by_span[span]
say(f"*TextSpan with `span=\"{span}\"`, fitted {scale_note}, texts from the pool `{text_pool.name}`:*")
table = pd.DataFrame([{"head": r.label, "role": r.property, "purity": round(r.purity, 2),
                       "variance explained": round(r.variance, 2), "first texts": " | ".join(r.texts[:4])}
                      for r in roles])
display(table)
pure = [r for r in roles if r.purity >= 0.6]
print(f"{len(pure)} of {len(roles)} heads have purity >= 0.6:", ", ".join(f"{r.label} {r.property}" for r in pure))
figures["n_heads"] = len(roles)
figures["n_images"] = len(task)
figures["head_dim"] = info.head_dim
figures["heads_purity_ge_0.6"] = len(pure)
figures["pure_head_roles"] = {r.label: r.property for r in pure}
figures["role_purities"] = {r.label: r.purity for r in roles}
planted = {"shape", "colour", "background", "position", "size", "count", "pattern", "family"}
figures["pure_roles_all_planted"] = all(r.property in planted for r in pure) if model_name == DEFAULT_MODEL else None

# %%
prov = provenance(model)
# what the heads' roles can tell, given how the model was made (both takeaways end with it)
model_reading = {
    "shaped": "The offline model was trained to put its direct effects in these layers: that they can be named by "
              "text is what this notebook shows; a paper preset (a real CLIP) tests it on the paper's models.",
    "random": "With random weights none of this says anything about CLIP: it shows that the code runs on this "
              "architecture.",
}.get(prov.kind, prov.note)
role_counts = Counter(r.property for r in pure)
task_factor = task.meta.get("factor")  # the factor the images are labelled by (world data)
other_roles = sorted(set(role_counts) - {task_factor})
on_world = "scenes" in task.meta
what_we_see(
    f"{len(pure)} of {len(roles)} heads "
    + verdict(len(pure) == 1, "has a role that at least 60% of its", "have a role that at least 60% of their")
    + f" {n_texts} texts share"
    + (": " + ", ".join(f"{p} ({k} head{'s' if k > 1 else ''})" for p, k in role_counts.most_common()) + "."
       if pure else "."),
    verdict(not on_world, "",
            verdict(pure and all(r.property in planted for r in pure),
                    "Every one of these roles is a factor the world really has (the pool also holds texts "
                    "about no factor, tagged `other`).",
                    "**Not** every role is one of the world's factors.")),
    verdict(task_factor and other_roles,
            f"The images are labelled by {task_factor}, yet heads about {', '.join(other_roles)} show up: TextSpan "
            "explains what a head *writes* (its variance), whatever the task asks.", ""),
    {"shaped": f"{prov.note} The penalty names no property, so *which* property each head took up was left "
               "to training.",
     "random": prov.note}.get(prov.kind, prov.note),
);

# %% [markdown]
# ## Exercises 3.1 and 3.2: TextSpan for one head, by hand
#
# Take the head with the purest role in the table and redo its TextSpan yourself, in float64.
#
# **3.1.** The texts live in the whole joint space; the head writes only into part of it. Keep
# of every text just the part that lies in the space the head's (uncentred) outputs span, using
# the top `rank` directions of that space. The head's outputs span fewer directions than `d`
# (its value space is small), so we use the numerical rank the batched TextSpan found: a larger
# `rank` would let numerically null directions into the texts (the authors' code does use a
# larger one: *Going further* shows what changes).

# %%
from helpers.course.exercises.nb03 import (
    check_project_texts,
    check_role_and_purity,
    check_shape_head,
    check_textspan_step,
    head_agreement,
)

h = max(range(len(roles)), key=lambda i: (roles[i].purity, roles[i].variance))
C_head = (v_ref if paper else v_stack)[h].double()  # every image, or the view's sample
result_num = results["numerical"]  # the exercises use the numerical span (see 3.1)
rank = int(result_num.span_rank[h])
print(f"head {roles[h].label} ({roles[h].property}): outputs {tuple(C_head.shape)}, numerical rank {rank}; "
      f"pool {tuple(pool_emb.shape)}")


# %% [markdown] tags=["hint"]
# The directions the outputs span are the right singular vectors of `C` (its SVD, `C = U S Vᵀ`),
# in order of their singular values. Projecting a text onto the span of the first `rank` of them
# keeps its coordinates along those directions and maps them back into the joint space.

# %% [markdown] tags=["hint"]
# `_, _, vh = torch.linalg.svd(C, full_matrices=False)`; the right singular vectors are the *rows*
# of `vh`, so `V = vh[:rank]` and the projection is `R @ V.T @ V`. Do not centre `C`: the mean the
# head writes is part of what it writes.

# %% tags=["exercise"] kind="implement" difficulty=2 importance=2 minutes=6
def project_texts(C, R, rank):
    """Texts projected onto the span of a head's outputs.

    C: [K, d] the head's outputs for K images (not centred);  R: [M, d] texts;  rank: r
    returns [M, d]
    """
    # --- solution ---
    _, _, vh = torch.linalg.svd(C, full_matrices=False)  # the rows of vh are the right singular vectors
    V = vh[:rank]
    return R @ V.T @ V
    # --- end ---


# %%
project_texts = check_project_texts(project_texts)

# %% [markdown]
# **3.2.** One greedy step on the *centred* data: choose the text along which the head's
# outputs vary most over the images (the texts as they are after projection and earlier steps,
# *not* renormalised), then remove that text's direction from the data and from every text, so
# the next step looks for something new.

# %% [markdown] tags=["hint"]
# The head's output for image `i` "along" text `j` is the score `C[i] @ R[j]`; all scores at once
# are `C @ R.T`, `[K, M]`. "Varies most" is the largest variance over the images (axis 0) — not
# the largest mean |score|, which weighs a few extreme images less. Removing a direction `u` (a
# unit vector) from a row vector `x` is `x - (x @ u) u`.

# %% [markdown] tags=["hint"]
# `j = int((C @ R.T).var(0).argmax())`, `u = R[j] / R[j].norm()`, then
# `C - torch.outer(C @ u, u)` and `R - torch.outer(R @ u, u)`. Keep all `M` texts (the chosen one
# becomes zero), so the indices stay those of the pool.

# %% tags=["exercise"] kind="implement" difficulty=2 importance=3 minutes=6
def textspan_step(C, R):
    """One greedy TextSpan step.

    C: [K, d] the centred residual data;  R: [M, d] the residual texts (projected, not normalised)
    returns (j, C_new, R_new): the chosen text's index, and the data and texts with its
    direction removed
    """
    # --- solution ---
    j = int((C @ R.T).var(0).argmax())
    u = R[j] / R[j].norm()
    return j, C - torch.outer(C @ u, u), R - torch.outer(R @ u, u)
    # --- end ---


# %%
textspan_step = check_textspan_step(textspan_step)
R_left = project_texts(C_head, pool_emb.double(), rank)
C_left = C_head - C_head.mean(0)
picked = []
for _ in range(n_texts):
    j, C_left, R_left = textspan_step(C_left, R_left)
    picked.append(j)
say(f"{n_texts} steps of {textspan_step.yours} (on the texts of {project_texts.yours}) picked {picked}"
    + verdict(streamed, f" on the {len(view):,} images read into memory", "")
    + f"; helpers.methods.textspan picked {result_num.indices[h].tolist()}"
    + verdict(streamed, f" on all {len(task):,}", ""))
print("first texts:", " | ".join(text_pool.texts[j] for j in picked))

# %% [markdown]
# ## Browse the heads
#
# Pick a head: its texts with the variance each adds, the images that head alone finds most
# similar to a query image (per-head nearest neighbours, ranked by this protocol's score:
# cosine; the dot product under the paper's), and the images where the head writes most along
# its first text (the largest component along it, the head's mean over the images removed). On
# world scenes the second strip's title says how many of them really show what the text names.

# %%
thumb = 72


def strip(indices, title):
    ims = [np.asarray(view.show(int(i)).convert("RGB").resize((thumb, thumb))) for i in indices]
    fig = px.imshow(np.concatenate(ims, axis=1), title=title)
    fig.update_layout(height=170, margin=dict(l=0, r=0, t=30, b=0), coloraxis_showscale=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.show()


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def shows(indices, text, prop):
    """How many of the images show the value `text` names (world scenes only), in words."""
    if not on_world or prop not in view.meta["scenes"].factors or world.value_named(text, prop) is None:
        return ""
    value = world.value_named(text, prop)
    hits = int((np.asarray(view.meta["scenes"].factors[prop])[np.asarray(indices)] == value).sum())
    return f" ({hits} of {len(indices)} show {article(world.FACTORS[prop][value])} {world.FACTORS[prop][value]})"


def browse(head_label: str, query: int):
    h = [r.label for r in roles].index(head_label)
    r = roles[h]
    steps = result.variance[h].cpu().numpy()
    fig = go.Figure(go.Bar(x=steps, y=[f"{i + 1}. {t}" for i, t in enumerate(r.texts)], orientation="h",
                           marker_color=["#2ca02c" if p == r.property else "#999" for p in r.text_properties]))
    fig.update_layout(title=f"{r.label}: role {r.property} (purity {r.purity:.1f})", xaxis_title="variance added",
                      yaxis_autorange="reversed", height=330, margin=dict(l=320))
    fig.show()
    idx, _ = head_image_neighbours(neighbour_stack, h, query, k=6, score=neighbour_score)
    strip([query] + idx.tolist(), f"query image {query}, then its nearest neighbours for {r.label} "
                                  f"({neighbour_score})")
    t = encode_texts(model, tokenizer, [r.texts[0]])[0]
    t = t / t.norm()  # the dot product with a unit text is the term's component along it
    idx, _ = head_text_neighbours(v_stack, h, t, k=7, centre=True, score="dot")
    strip(idx.tolist(), f"images where {r.label} writes most along '{r.texts[0]}'"
                        f"{shows(idx.tolist(), r.texts[0], r.text_properties[0])}")


best = max(roles, key=lambda r: (r.purity, r.variance))
live(browse,
     head_label=widgets.Dropdown(options=[r.label for r in roles], value=best.label, description="head"),
     query=widgets.IntSlider(value=0, min=0, max=len(view) - 1, description="query image"))

# %% [markdown]
# ## Exercise 3.4: which head carries shape?
#
# The images are labelled by colour, yet some heads' texts are about shape. Use the browser to
# find the head that carries the objects' **shape** best: its texts should be about shape, and
# its nearest neighbours should share the query's shape (try a few query images). Return its
# label, e.g. `"L5.H1"`. The check measures every head's neighbours against the world's true
# shapes.

# %% [markdown] tags=["hint"]
# Pick a head whose role is shape in the table above, then look at its neighbour strip for two or
# three query images: do the neighbours have the query's shape? A head with pure shape texts can
# still have neighbours that share colour instead.

# %% [markdown] tags=["hint"]
# Measure it instead of eyeballing strips: `search_agreement(neighbour_stack, {"h": [i]},
# {"shape": task.meta["scenes"].factors["shape"]}, k=6, centre=False, score=neighbour_score)`
# gives, for head `i`, the share of neighbours that share the query's shape over every query
# (`.agreement["h"]["shape"]`). Take the shape head where it is highest.

# %% tags=["exercise"] kind="find" difficulty=1 importance=3 minutes=4 number="3.4"
def shape_head():
    """The label of the head (e.g. "L5.H1") whose outputs carry the objects' shape best."""
    # --- solution ---
    shapes = {"shape": view.meta["scenes"].factors["shape"]}
    share = {r.label: search_agreement(neighbour_stack, {"h": [i]}, shapes, k=6, centre=False,
                                       score=neighbour_score).agreement["h"]["shape"]
             for i, r in enumerate(roles) if r.property == "shape"}
    return max(share, key=share.get)
    # --- end ---


# %%
if on_world and "shape" in view.meta["scenes"].factors:
    agreement, shape_chance, n_queries = head_agreement(neighbour_stack, [r.label for r in roles],
                                                        view.meta["scenes"].factors, "shape", score=neighbour_score)
    shape_head = check_shape_head(shape_head, roles=roles, agreement=agreement, chance=shape_chance,
                                  n_queries=n_queries, prop="shape")
    figures["shape_head"] = shape_head()
    figures["shape_agreement"] = agreement
    figures["shape_chance"] = shape_chance
else:
    say("Exercise 3.4 needs the world's true shapes: it is checked on world scenes only.")

# %% [markdown]
# ## How much do a few texts per head keep?
#
# Replace every head of the last layers by its reconstruction from its first $n$ texts
# (earlier attention layers mean-ablated, as in the paper's table) and measure zero-shot
# accuracy. Baselines: the same number of directions from random unit vectors ("random texts"),
# TextSpan on a pool of common words, and the head's principal axes ("PCA", the best any
# rank-$n$ basis can do for variance).

# %% [markdown] tags=["predict"]
# Every head of the last layers is replaced by its projection on its first $n$ directions. How
# will accuracy grow with $n$, and how will TextSpan's texts compare with random directions and
# with PCA?
# Answer:
# Accuracy climbs towards the "no replacement" line as $n$ grows: more directions keep more of
# each head. PCA keeps the most variance any $n$ directions can, an upper bound no text basis
# reaches: a text must come from the pool, and its direction is rarely a head's principal axis,
# so with a single text per head TextSpan can lag far behind PCA while still beating random
# directions. With a few texts per head the texts span most of what a head writes and the curves
# meet. Which pool wins at small $n$ depends on which texts happen to lie near the heads' axes.

# %%
classifier = zero_shot_classifier(model, tokenizer, task.prompts)
# a head's centred outputs span at most head_dim directions (its value space); the sizes tried stop there
n_values = [n for n in (1, 2, 3, 5, 10, 20, 40, 60) if n <= min(info.head_dim, len(task))]
baseline_acc = accuracy(terms.embeddings(), classifier, task.labels)
# the paper's protocol on real data: the reference's own (untagged) text sets for the curves; the roles
# above need tags, so they stay on the course's tagged pool
reference_sets = paper and not on_world
curve_pool = load_pool("reference_general").sample(pool_size, seed=seed) if reference_sets and not pool else text_pool
curve_emb = pool_emb if curve_pool is text_pool else cached_text_embeddings(model, tokenizer, curve_pool.texts,
                                                                               model_id=model_id)
words = load_pool("reference_common_words" if reference_sets and baseline_pool == "common_words"
                  else baseline_pool).sample(pool_size, seed=seed)
words_emb = cached_text_embeddings(model, tokenizer, words.texts, model_id=model_id)
fit = dict(span=span, scale=fit_scale)
curves = {
    f"TextSpan ({curve_pool.name})": reconstruction_accuracy(terms, classifier, task.labels, layers, "textspan",
                                                             n_values, pool_embeddings=curve_emb, **fit),
    f"TextSpan ({words.name})": reconstruction_accuracy(terms, classifier, task.labels, layers, "textspan",
                                                        n_values, pool_embeddings=words_emb, **fit),
    "random texts": reconstruction_accuracy(terms, classifier, task.labels, layers, "random", n_values,
                                            n_random_texts=len(curve_pool), seed=seed, **fit),
    "PCA": reconstruction_accuracy(terms, classifier, task.labels, layers, "pca", n_values, scale=fit_scale),
}
fig = go.Figure()
for name, curve in curves.items():
    fig.add_scatter(x=list(curve), y=list(curve.values()), mode="lines+markers", name=name,
                    error_y=dict(array=[se(a) for a in curve.values()]) if sampled else None)
fig.add_hline(y=baseline_acc, line_dash="dot", annotation_text="no replacement")
fig.update_layout(title=f"Accuracy with the last {len(layers)} layers' heads replaced ({task.name}; "
                        f"TextSpan span={span!r}, fitted and scored {scale_note})",
                  xaxis_title="texts (directions) per head", yaxis_title="accuracy")
fig.update_xaxes(type="log", tickvals=n_values, ticktext=[str(n) for n in n_values], minor=dict(showgrid=False))
fig.show()
figures["baseline_accuracy"] = baseline_acc
figures["accuracy_curves"] = {name: {str(k): v for k, v in c.items()} for name, c in curves.items()}
figures["accuracy_curve_ticks"] = n_values
if sampled:  # a subset of the paper's data: each accuracy with its sampling error
    display(pd.DataFrame({name: {n: pm(a, se(a), as_pct=True) for n, a in c.items()} for name, c in curves.items()})
            .rename_axis("texts per head").style.set_caption(
                f"{task.name}: {len(task):,} of {sampled[2]:,} images, no replacement {pm(baseline_acc, se(baseline_acc), as_pct=True)}; "
                "± one standard error (images drawn without replacement; each basis taken as fixed, its own "
                "sampling variability not included)"))

var_curve = result.cumulative.mean(0).cpu().numpy()
pca_var = pca_basis(fit_stack, n_texts).cumulative.mean(0).cpu().numpy()  # no n directions explain more
steps = np.arange(1, len(var_curve) + 1)
fig = go.Figure()
fig.add_scatter(x=steps, y=var_curve, mode="lines+markers", name="TextSpan texts")
fig.add_scatter(x=steps, y=pca_var, mode="lines+markers", name="PCA axes (upper bound)", line_dash="dash")
fig.update_layout(title=f"Mean fraction of a head's variance explained by its first n directions ({scale_note})",
                  xaxis_title="texts (directions) per head", yaxis_title="variance explained")
fig.show()
figures["variance_explained_mean"] = var_curve.tolist()
figures["variance_explained_pca_mean"] = pca_var.tolist()

# %%
ts_name, words_name = f"TextSpan ({curve_pool.name})", f"TextSpan ({words.name})"
n1 = n_values[0]
n2 = n_values[min(1, len(n_values) - 1)]
reach = {name: next((n for n, a in c.items() if a >= baseline_acc - 0.01), None) for name, c in curves.items()}
figures["n_within_1pt"] = reach
informative = baseline_acc >= 2 / len(task.classes)  # the whole model must be well above chance to lose anything


def acc_compare(a, b, n, name_a, name_b):
    """Two curves at n texts per head, weighed against two standard errors of an accuracy."""
    va, vb = curves[a][n], curves[b][n]
    return compare(va, vb, name_a, name_b, what=f"accuracy with {n} per head", as_pct=True, digits=1,
                   evidence=with_tolerance(va, vb, accuracy_tolerance((va + vb) / 2, len(task)),
                                           f"two standard errors of an accuracy on {len(task)} images"))


beats_random = with_tolerance(curves[ts_name][n1], curves["random texts"][n1],
                              accuracy_tolerance((curves[ts_name][n1] + curves["random texts"][n1]) / 2, len(task)),
                              f"two standard errors of an accuracy on {len(task)} images")
claims = {
    "few texts": Claim("A few texts per head keep what the heads do", bool(informative and reach[ts_name] is not None
                                                                          and reach[ts_name] <= n_texts),
                       verdict(reach[ts_name] is not None,
                               f"(the {curve_pool.name} pool's texts come within 1 point of the whole model's accuracy "
                               f"from {reach[ts_name]} per head; the roles read {n_texts})",
                               f"(no size tried comes within 1 point; the roles read {n_texts})")),
    "beat random": Claim("The texts beat random directions", beats_random,
                         f"with {n1} per head ({pct(curves[ts_name][n1])} vs {pct(curves['random texts'][n1])})"),
}
figures["claims"] = {k: c.status for k, c in claims.items()}
what_we_see(
    verdict(informative, "", f"The whole model is not well above chance here ({pct(baseline_acc)}, chance "
                             f"{pct(1 / len(task.classes))}), so these curves cannot show what the texts keep."),
    f"Left whole, the model classifies {pm(baseline_acc, se(baseline_acc), as_pct=True)} of the images ({task.name}) "
    "correctly. With "
    f"{n1} direction{'s' if n1 > 1 else ''} per head, highest first: "
    f"{ranking({k: c[n1] for k, c in curves.items()}, as_pct=True, digits=1)}.",
    acc_compare(ts_name, "random texts", n1, ts_name, "random directions"),
    "The two pools: " + acc_compare(ts_name, words_name, n1, f"the {curve_pool.name} pool", f"the {words.name} pool")
    + " " + acc_compare(ts_name, words_name, n2, f"The {curve_pool.name} pool", f"the {words.name} pool"),
    "Against the upper bound: " + acc_compare("PCA", ts_name, n1, "PCA", ts_name)
    + " " + acc_compare("PCA", ts_name, n2, "PCA", ts_name)
    + " A single text is rarely a head's principal axis; a few texts span most of what the head writes.",
    "Within 1 point of the whole model: " + "; ".join(
        f"{name} from {n} per head" if n is not None else f"{name} at none of the sizes tried"
        for name, n in sorted(reach.items(), key=lambda t: (t[1] is None, t[1] or 0))) + ".",
    f"A head's first text explains {pct(var_curve[0])} of its variance on average, its {len(var_curve)} texts "
    f"{pct(var_curve[-1])}; the first {len(var_curve)} principal axes explain {pct(pca_var[-1])}, so the texts "
    f"keep {pct(var_curve[-1] / pca_var[-1] if pca_var[-1] > 0 else float('nan'))} of what the best "
    f"{len(var_curve)} directions could.",
);

# %% [markdown]
# ## What to take away (core)

# %%
claims["specialise"] = Claim.share("Heads specialise", len(pure), len(roles), at_least=0.5,
                                   unit="heads with a role shared by at least 60% of their texts")
figures["claims"] = {k: c.status for k, c in claims.items()}
what_we_see(
    *[f"{claims[k]}." for k in ("few texts", "beat random", "specialise") if informative or k == "specialise"],
    verdict("shape_head" in figures,
            f"The head that carries shape best is {figures.get('shape_head')}: through it alone, the nearest images "
            f"share the query's shape {pct(figures.get('shape_agreement', {}).get(figures.get('shape_head'), 0), 0)} "
            f"of the time, against {pct(figures.get('shape_chance', 0), 0)} for random images (exercise 3.4).", ""),
    model_reading,
    title="What to take away (core)",
);

# %% [markdown] tags=["discuss"]
# A head with purity 0.6 has three of its five texts about one property. Is that head "about" the
# property? What would convince you?
# Answer:
# Not yet: three of five texts can come from a head that mixes two properties, or from a pool
# that holds many texts of one kind. What convinces is evidence beyond the texts: the share of
# the head's *variance* those texts explain (a first text that explains most of it counts more
# than three small ones), its nearest neighbours sharing the property far above chance (exercise
# 3.4 measures exactly that against the world's ground truth), and ablating the head hurting
# that property's classification more than others (notebook 5 does this for the background).

# %% [markdown]
# ## Going further
#
# Optional: the paper's span and what it changes, the role exercise, interpretability scores,
# how a head's neighbours are ranked, and a property-based image search scored on the world.
#
# ### The paper's rank: where null directions enter
#
# The authors' code projects the texts onto the top **80** right singular vectors of $C$, however
# wide the head is. A head writes through its value space, so its outputs span few directions
# (here about the head's width); when that is fewer than 80, the other singular vectors have
# singular values at rounding level: arbitrary directions of the null space, and the texts
# pick up components along them. Such a component changes no text's *variance* (the data has
# none there), so the first pick is the same either way. But the chosen direction
# $u = r_j/\lVert r_j\rVert$ now carries a null part. Removing $u$ from every other text takes
# out only part of their component along the direction the data really varies in, and moves
# them by however much their own null parts line up with $u$'s; and the step is credited only
# with the variance along $u$, which the null part dilutes. From there on the picks can part.
#
# `textspan(..., span="paper")` keeps the top `rank` directions as the reference does, to
# reproduce its picks; `span="numerical"` (the course's) keeps only those above a tolerance.
# `span_comparison` runs both on one head, the head of the exercises:

# %%
n_cmp = min(10, int(result_num.span_rank[h]), len(text_pool))
cmp = span_comparison(C_head, pool_emb, n_cmp)
sv = cmp.singular_values.numpy()
fig = go.Figure(go.Scatter(x=np.arange(1, len(sv) + 1), y=np.maximum(sv / sv[0], 1e-17), mode="markers"))
fig.add_vline(x=cmp.numerical_rank + 0.5, line_dash="dot", annotation_text="numerical rank")
fig.update_layout(title=f"{roles[h].label}: singular values of its outputs (the paper's span keeps all {cmp.rank})",
                  xaxis_title="singular direction", yaxis_title="σ / σ_max", yaxis_type="log", height=320)
fig.show()
tag = lambda j: f"{text_pool.texts[j]} ({text_pool.properties[j]})"
display(pd.DataFrame({"paper (top-rank span)": [tag(j) for j in cmp.paper],
                      "null share of its projection": [f"{x:.0%}" for x in cmp.text_null_share],
                      "numerical span": [tag(j) for j in cmp.numerical],
                      "same pick": ["yes" if a == b else "" for a, b in zip(cmp.paper, cmp.numerical)]},
                     index=pd.RangeIndex(1, n_cmp + 1, name="pick")))

# the same for every head of the last layers (both spans were fitted above)
shared = [len(set(a) & set(b)) / n_texts
          for a, b in zip(results["numerical"].indices.tolist(), results["paper"].indices.tolist())]
same_role = sum(a.property == b.property for a, b in zip(roles_by_span["numerical"], roles_by_span["paper"]))
figures["span_head"] = roles[h].label
figures["span_numerical_rank"] = cmp.numerical_rank
figures["span_rank"] = cmp.rank
figures["span_parted_at"] = cmp.parted_at
figures["span_overlap"] = cmp.overlap
figures["span_overlap_all_heads"] = float(np.mean(shared))
figures["span_same_role"] = same_role
span_var = {sp: float(r.cumulative[:, -1].mean()) for sp, r in results.items()}
figures["span_variance"] = span_var

# %%
n_null = cmp.rank - cmp.numerical_rank
# judged once, stated here and in the takeaway: the claim allows one head in ten to change its role
claims["same roles"] = Claim.share("The paper's span and the numerical span name the same roles", same_role,
                                   len(roles), at_least=0.9, unit="heads keep their role")
figures["claims"] = {k: c.status for k, c in claims.items()}
role_p = dominant_property([text_pool.properties[j] for j in cmp.paper[:n_texts]], ("other", "unknown"))[0]
role_n = dominant_property([text_pool.properties[j] for j in cmp.numerical[:n_texts]], ("other", "unknown"))[0]
what_we_see(
    f"{roles[h].label}'s outputs span {cmp.numerical_rank} directions: a head writes through its "
    f"{info.head_dim}-wide value space plus a constant (its share of the output bias), so its uncentred outputs can "
    f"span up to {info.head_dim + 1}; "
    + verdict(n_null > 0, f"the paper's span keeps {cmp.rank}, so {n_null} null directions enter the projection, "
              f"and they hold {pct(np.mean(cmp.text_null_share), 0)} of a picked text's projected length "
              "(squared) on average.",
              f"the paper's span keeps {cmp.rank}, no more than that: no null direction enters."),
    verdict(cmp.parted_at is None, f"The two lists agree on all {n_cmp} picks.",
            "The lists agree on the first " + verdict(cmp.parted_at == 1, "pick", f"{cmp.parted_at} picks")
            + " and part at "
            f"pick {(cmp.parted_at or 0) + 1}; they share {pct(cmp.overlap, 0)} of their {n_cmp} texts."
            + verdict(cmp.parted_at and n_null > 0,
                      f" The first pick's direction has {pct(cmp.direction_null_share[0], 0)} of its length "
                      "(squared) in the null directions: removing it is what moves the later picks.", "")),
    f"Read from the first {n_texts} picks, the head's role is "
    + verdict(role_p == role_n, f"{role_p} under both.", f"{role_p} under the paper's span, {role_n} under the "
              "numerical one."),
    f"With {n_texts} texts a head's variance is explained {pct(span_var['paper'])} under the paper's span and "
    f"{pct(span_var['numerical'])} under the numerical one (mean over heads)"
    + verdict(span_var["paper"] < span_var["numerical"] - 0.005,
              ": a direction with a null part is credited only with what it keeps of the real one.", "."),
    f"Over all {len(roles)} heads, the two spans share {pct(np.mean(shared), 0)} of their first {n_texts} texts. "
    f"{claims['same roles']}.",
);

# %% [markdown]
# ### Exercise 3.3: a head's role and purity
#
# Write how a head's role and purity are read off its texts' tags (listed in the order the texts
# were chosen): tags that are no property (`other`, `unknown`) cannot be a role, and a head with
# many such texts is less pure.

# %% [markdown] tags=["hint"]
# The role is the most common tag among the texts whose tag is not ignored; when two tags are
# equally common, the one whose first text was chosen earlier wins. The purity is the role's
# count divided by *all* the head's texts, ignored ones included. No role at all: `(None, 0.0)`.

# %% [markdown] tags=["hint"]
# `kept = [t for t in tags if t not in ignore]`; `role = max(kept, key=lambda t: (kept.count(t), -tags.index(t)))`;
# purity `kept.count(role) / len(tags)`.

# %% tags=["exercise"] kind="implement" difficulty=1 importance=1 minutes=4 number="3.3"
def role_and_purity(tags, ignore):
    """A head's role and purity from its texts' tags (in the order the texts were chosen).

    tags: a list of property tags;  ignore: tags that cannot be a role
    returns (role or None, purity)
    """
    # --- solution ---
    kept = [t for t in tags if t not in ignore]
    if not kept:
        return None, 0.0
    role = max(kept, key=lambda t: (kept.count(t), -tags.index(t)))
    return role, kept.count(role) / len(tags)
    # --- end ---


# %%
role_and_purity = check_role_and_purity(role_and_purity)
n_agree = sum(role_and_purity(r.text_properties, ("other", "unknown")) == (r.property, r.purity) for r in roles)
say(f"{role_and_purity.yours} agrees with helpers.methods.heads.head_roles for {n_agree} of {len(roles)} heads")

# %% [markdown]
# ### Interpretability scores
#
# The follow-up study (CLIP-InterpreT) summarises how interpretable the heads are with two
# kinds of score. With $T_h$ the first $n$ texts of head $h$, $p(h)$ its role and $P$ the set
# of properties:
#
# * **association** of a head: $\frac{1}{n}\,\big|\{t \in T_h : \mathrm{tag}(t) = p(h)\}\big|$
#   (its purity); of the model: the mean over heads that have a role. Higher means a head's
#   texts consistently share one property.
# * **entanglement**, two scores under their own names, because they ask different questions:
#   * **across-heads entanglement** (the course's, written after CLIP-InterpreT's description,
#     "property disentanglement across heads"; the study's own formula could not be checked
#     here): is a property *shared across heads*?
#     With $A$ the heads that have a role and $n_p$ those whose role is $p$,
#     $\sum_p n_p(n_p-1)\,/\,\big(|A|(|A|-1)\big)$: the chance that two different heads drawn at
#     random have the same property. 0 when every head has a property of its own (fully
#     disentangled), 1 when all share one. By its scores, the study finds larger models more
#     interpretable.
#   * **within-head entanglement** (the course's): does one head *mix* properties?
#     $\frac{1}{|H|}\sum_h \frac{\max(k(h)-1,\,0)}{|P|-1}$ where $k(h)$ counts the properties
#     occurring at least twice in $T_h$. 0 when every head is about a single property, 1 when
#     every head mixes all of them. (How consistently a head keeps to one property is also
#     what association measures, from the other side.)
#
# The study has a language model tag the texts; our pools carry tags, so the scores are exact.

# %%
scores = interpretability_scores(roles, ignore=("other", "unknown"))  # both entanglements are in the result
n_a, n_p = scores.n_assigned, len(scores.properties)
q, extra = divmod(n_a, max(n_p, 1))  # the lowest across-heads score: roles spread as evenly as possible
across_floor = (extra * (q + 1) * q + (n_p - extra) * q * (q - 1)) / (n_a * (n_a - 1)) if n_a > 1 else 0.0
display(pd.DataFrame([
    ("association", scores.association, "share of a head's texts about its role (higher: purer heads)"),
    ("across-heads entanglement (course, after CLIP-InterpreT's description)", scores.across_heads_entanglement,
     "chance two heads share their role (lower: each property has its own heads)"),
    ("within-head entanglement (course)", scores.within_head_entanglement,
     "how many properties one head mixes (lower: single-property heads)"),
], columns=["score", "value", "what it measures"]).style.format({"value": "{:.2f}"}).hide(axis="index"))
print("heads per property:", {k: v for k, v in scores.heads_per_property.items() if v})
figures["association"] = scores.association
figures["entanglement"] = scores.entanglement
figures["entanglement_within_head"] = scores.within_head_entanglement
figures["entanglement_across_heads"] = scores.across_heads_entanglement
figures["entanglement_across_heads_floor"] = across_floor

# %%
top_prop, top_n = max(scores.heads_per_property.items(), key=lambda t: t[1])
mixing = sum(k >= 2 for k in scores.properties_per_head)
what_we_see(
    f"Association {num(scores.association, 2)}: on average {num(scores.association, 2)} of a head's {n_texts} texts "
    f"share its role, over the {n_a} heads that have a role.",
    f"Across-heads entanglement (the course's, after CLIP-InterpreT) {num(scores.across_heads_entanglement, 2)}: "
    f"two heads drawn at "
    f"random share their property with probability {num(scores.across_heads_entanglement, 2)}; {top_prop} alone has "
    f"{top_n} of the {n_a} heads. With the {n_p} properties found among the texts, no assignment of {n_a} heads "
    f"goes below {num(across_floor, 2)}, "
    + verdict(scores.across_heads_entanglement <= across_floor + 0.05,
              "and the roles come close to that floor: the properties are spread about as evenly as they can be.",
              "and the roles stay above it: some properties are taken up by more heads than an even spread gives."),
    f"Within-head entanglement (course) {num(scores.within_head_entanglement, 2)}: {mixing} of {len(roles)} heads "
    f"have two or more properties that each occur at least twice among their texts. "
    + verdict(2 * mixing > len(roles), "Most heads mix properties, even where one of them wins the role.",
              "Most heads keep to one property."),
    "The two entanglements answer different questions (is a property shared by many heads? does a head "
    "mix properties?), so a model can score low on one and high on the other.",
);

# %% [markdown]
# ### One head's neighbours: dot product or cosine?
#
# The authors' code ranks a head's nearest neighbours by the **dot product** of its
# contributions, $c_{h,q}\cdot c_{h,i}$; the course's variant uses the **cosine**. The dot product
# also rewards images for which the head writes a *long* vector, whatever its direction; the
# cosine looks at the direction only. The reference ranks its terms on the cosine scale: each
# image's terms divided by its embedding's norm (`DirectTerms.normalized`), so an image whose
# whole embedding is long does not win by length alone; the dot product below ranks those terms,
# as the authors' code does. The browser's head, image 0 as the query:

# %%
hb = [r.label for r in roles].index(best.label)
by_score = {}
ranked = {"dot": v_ref, "cosine": v_stack}  # what each score ranks
for sc in ("dot", "cosine"):
    idx, _ = head_image_neighbours(ranked[sc], hb, 0, k=6, score=sc)
    strip([0] + idx.tolist(), f"{best.label} by {'dot product (the reference)' if sc == 'dot' else 'cosine'}: "
                              "image 0, then its nearest neighbours")
    by_score[sc] = idx.tolist()
overlap_query = len(set(by_score["dot"]) & set(by_score["cosine"])) / 6
overlap_all = neighbour_overlap(v_stack, hb, k=6, first_stack=v_ref)
norms = v_ref[hb].float().norm(dim=-1)
norm_spread = float(norms.std() / norms.mean())
role_agree = {}
if "scenes" in view.meta and best.property in view.meta["scenes"].factors:
    fac = {best.property: view.meta["scenes"].factors[best.property]}
    role_agree = {sc: search_agreement(ranked[sc], {"head": [hb]}, fac, k=6, centre=False, score=sc) for sc in by_score}
figures["neighbours_head"] = best.label
figures["neighbours_overlap_query"] = overlap_query
figures["neighbours_overlap_all"] = overlap_all
figures["neighbours_role_agreement"] = {sc: a.agreement["head"][best.property] for sc, a in role_agree.items()}

# %%
what_we_see(
    f"For image 0 the two scores share {round(overlap_query * 6)} of their 6 neighbours; over all "
    f"{len(view)} images as queries they share {pct(overlap_all, 0)}. "
    + verdict(overlap_all >= 0.8, "They mostly agree.", "They mostly **disagree**."),
    f"The length of {best.label}'s contribution varies by {pct(norm_spread, 0)} (standard deviation over mean) "
    "from image to image: "
    + verdict(norm_spread >= 0.2, "enough for the dot product to rank by how much the head writes as well as "
                                  "by what.", "little, so the dot product mostly ranks by direction too."),
    verdict(role_agree, (compare(role_agree["cosine"].agreement["head"][best.property],
                                 role_agree["dot"].agreement["head"][best.property], "The cosine", "the dot product",
                                 what=f"neighbours that share the query's {best.property} (the head's role), over "
                                      "all queries", as_pct=True, digits=0,
                                 tolerance=accuracy_tolerance(role_agree["dot"].agreement["head"][best.property],
                                                              len(view)),
                                 basis=f"two standard errors of a share over {len(view)} queries")
                         + f" Random images would share it {pct(role_agree['dot'].chance[best.property], 0)} of "
                         "the time.") if role_agree else "", ""),
);

# %% [markdown]
# ### Property-based image search
#
# Represent each image only by the summed contributions of the heads of one property and
# search nearest neighbours: the same query retrieves different neighbours depending on the
# property asked for (CLIP-InterpreT's first analysis). On world scenes every factor of every
# image is known, so the search can be scored: how often do the neighbours share the query's
# value, for one query and over every image as a query, against random images?

# %%
query = 0
found = {}
for prop in [p for p, k in scores.heads_per_property.items() if k][:3]:
    group = heads_for_property(roles, prop, min_purity=0.5)
    if not group:
        continue
    idx, _ = property_neighbours(neighbour_stack, group, query, k=6, centre=True, score=neighbour_score)
    strip([query] + idx.tolist(), f"neighbours of image {query} through the {prop} heads")
    found[prop] = idx.tolist()
if on_world:
    scenes = view.meta["scenes"]
    groups = {p: heads_for_property(roles, p, min_purity=0.5) for p in found if p in scenes.factors}
    one = every = None
    if groups:
        one = search_agreement(neighbour_stack, groups, scenes.factors, queries=[query], k=6, score=neighbour_score)
        every = search_agreement(neighbour_stack, groups, scenes.factors, k=6, score=neighbour_score)
    if groups:
        display(pd.DataFrame({**{f"{g} heads": every.agreement[g] for g in groups}, "random images": every.chance})
                .T.style.format("{:.0%}").set_caption(f"Share of the 6 neighbours with the query's value, "
                                                      f"over all {len(view)} queries ({neighbour_score})"))
    if model_name == DEFAULT_MODEL:
        figures["property_search_agreement"] = {g: one.agreement[g][g] for g in groups} if groups else {}
        figures["property_search_agreement_all"] = {g: every.agreement[g][g] for g in groups} if groups else {}
        figures["property_search_chance"] = {g: every.chance[g] for g in groups} if groups else {}
        figures["property_search_best_factor"] = {g: every.best_factor(g) for g in groups} if groups else {}

# %%
if on_world and groups:
    what_we_see(
        f"For image {query} alone: " + "; ".join(
            f"{one.agreement[g][g] * 6:.0f} of the 6 neighbours found through the {g} heads share its {g}"
            for g in groups) + ".",
        "One query is a small sample. Over all the images as queries: " + "; ".join(
            f"through the {g} heads, {pct(every.agreement[g][g], 0)} of the neighbours share the query's {g}, "
            f"against {pct(every.chance[g], 0)} for random images" for g in groups) + ".",
        verdict(all(every.best_factor(g) == g for g in groups),
                "Relative to chance, each group's neighbours agree most on the property the group is named "
                "after: the search finds what it is asked for.",
                "**Not** every group's neighbours agree most on their own property (relative to chance): "
                + "; ".join(f"the {g} heads' on {every.best_factor(g)}" for g in groups
                            if every.best_factor(g) != g) + "."),
        verdict(any(abs(one.agreement[g][g] - every.agreement[g][g]) >= 0.25 for g in groups),
                "The single query is not typical for "
                + ", ".join(g for g in groups if abs(one.agreement[g][g] - every.agreement[g][g]) >= 0.25)
                + ": judge a search by many queries, not by one strip of pictures.",
                "The single query is typical of the average."),
    );
elif on_world:
    what_we_see("No property has heads with a role purity of at least 0.5, so there is no property search to score.");

# %% [markdown]
# ### The paper's protocol, side by side: the scale TextSpan is fitted on
#
# The authors' code divides every term of an image by the norm of that image's embedding
# before it fits anything (the terms then add up to the unit embedding, and the `ln_post` bias is
# shared over the summands): TextSpan's span, its centring and the variance it ranks texts by
# are all taken on that *cosine scale*. The course fits on the raw terms. The zero-shot argmax
# does not care about a per-image scale, but the fit does: an image with a long embedding
# weighs more in the raw variance than in the reference's. Here both are fitted with this
# protocol's span, on every head of the last layers, and compared: how many heads change their
# first text, how much of their first texts the two lists share, and what the accuracy curves
# (TextSpan on the same pool) become.

# %%
k_side = min(10, len(task) - 1, info.head_dim, len(text_pool))
by_scale = {"raw": textspan(stack, pool_emb, k_side, span=span), "paper": textspan(ref_stack, pool_emb, k_side, span=span)}
first_differs = int((by_scale["raw"].indices[:, 0] != by_scale["paper"].indices[:, 0]).sum())
scale_overlap = float(np.mean([len(set(a) & set(b)) / k_side for a, b in
                               zip(by_scale["raw"].indices.tolist(), by_scale["paper"].indices.tolist())]))
curves_by_scale = {fit_scale: curves[ts_name]}  # the curve above is one of the two
other_scale = "raw" if paper else "paper"
curves_by_scale[other_scale] = reconstruction_accuracy(terms, classifier, task.labels, layers, "textspan", n_values,
                                                       pool_embeddings=curve_emb, span=span, scale=other_scale)
scale_names = {"raw": "raw terms (the course's)", "paper": "cosine scale (the reference's)"}
display(pd.DataFrame({scale_names[sc]: {n: pm(a, se(a), as_pct=True) for n, a in curves_by_scale[sc].items()}
                      for sc in ("raw", "paper")})
        .rename_axis(f"texts per head ({curve_pool.name})").style
        .set_caption(f"Accuracy with the last {len(layers)} layers' heads replaced, TextSpan fitted and scored on "
                     f"each scale (this protocol fits {scale_note})" + ("; ± one standard error" if sampled else "")))
emb_norms = terms.embedding_norms()
figures["scale_heads"] = len(labels)
figures["scale_k"] = k_side
figures["scale_first_pick_differs"] = first_differs
figures["scale_overlap"] = scale_overlap
figures["scale_accuracy"] = {sc: {str(n): a for n, a in c.items()} for sc, c in curves_by_scale.items()}
figures["embedding_norm_spread"] = float(emb_norms.std() / emb_norms.mean())

# %%
gap = {n: curves_by_scale["paper"][n] - curves_by_scale["raw"][n] for n in n_values}
widest = max(gap, key=lambda n: abs(gap[n]))
what_we_see(
    f"Fitted on the reference's cosine scale instead of the raw terms, {first_differs} of {len(labels)} heads "
    + verdict(first_differs == 1, "changes its", "change their")
    + f" first text, and over the first {k_side} texts the two lists share {pct(scale_overlap, 0)} on average: "
    + verdict(scale_overlap >= 0.9, "the scale barely matters to the picks.",
              "the scale is part of the protocol, not a detail."),
    f"The accuracy curves differ by at most {num(100 * abs(gap[widest]), 1)} points (at {widest} per head: "
    f"{pct(curves_by_scale['raw'][widest])} on raw terms, {pct(curves_by_scale['paper'][widest])} on the cosine "
    f"scale); with {n1} per head they read {pct(curves_by_scale['raw'][n1])} and "
    f"{pct(curves_by_scale['paper'][n1])}.",
    f"The norms of the embeddings vary by {pct(figures['embedding_norm_spread'], 0)} (standard deviation over "
    "mean) over these images: the wider they spread, the more the two fits can differ.",
);

# %%
if info.pool_heads:  # an attention-pooled tower (SigLIP): the reference also explains each pooling head
    from helpers.methods.heads import pool_head_textspan

    loader = torch.utils.data.DataLoader(task.dataset, batch_size=batch_size)
    pooled_terms = collect_terms(model, loader, pool_heads=True, total=len(task))
    pooled = pool_head_textspan(pooled_terms, pool_emb, n=min(n_texts, len(task), pool_emb.shape[-1]))
    display(pd.DataFrame({f"pooling head {h}": texts for h, texts in enumerate(pooled.texts(text_pool.texts))}))
    say(f"Each of the {info.pool_heads} pooling heads explained by TextSpan at full width (rank = width, raw "
        "terms, as the reference runs it): its first texts.")

# %% [markdown]
# ### Takeaway (every section)

# %%
claims["same neighbours"] = Claim("Dot product and cosine find the same neighbours of a head", bool(overlap_all >= 0.8),
                                  f"({pct(overlap_all, 0)} shared for {best.label}; the claim asks for 80%)")
figures["claims"] = {k: c.status for k, c in claims.items()}
what_we_see(
    *[f"{claims[k]}." for k in ("few texts", "beat random") if informative],
    f"The texts keep {pct(var_curve[-1] / pca_var[-1] if pca_var[-1] > 0 else float('nan'))} of the variance "
    f"the best {len(var_curve)} directions (PCA) keep.",
    f"{claims['specialise']}.",
    f"{claims['same roles']}, though the text lists share only {pct(np.mean(shared), 0)} of their {n_texts} texts."
    if np.mean(shared) < 1 else f"{claims['same roles']}, and the text lists are the same.",
    f"{claims['same neighbours']}.",
    verdict(on_world and groups, str(Claim("A search through a property's heads finds that property",
                                           bool(on_world and groups and all(every.best_factor(g) == g for g in groups)),
                                           "over all queries"))
            + verdict(on_world and groups and any(abs(one.agreement[g][g] - every.agreement[g][g]) >= 0.25
                                                   for g in groups),
                      ", though one query can be far from the average.", "."), ""),
    model_reading,
    title="Takeaway (every section)",
);

# %% [markdown] tags=["discuss"]
# Why are the texts projected on the head's span before the greedy search, and why is the data
# centred only afterwards? And TextSpan does not renormalise the residual texts: which texts does
# that favour, and is that what we want?
# Answer:
# The projection keeps of each text only what the head can write: a text's component outside the
# head's span would add nothing to its scores but would still be removed with it, so without the
# projection the deflation would chase directions the head never uses. The span is taken on the
# *uncentred* outputs because the head's mean output is part of what it writes; the greedy search
# then works on the centred data, because it explains *variation* across images, and a constant
# shift says nothing about which image is which. Not renormalising favours texts with much of
# their length left in the head's span after earlier steps: a text mostly explained already has
# little left and is not picked again. That is what we want: a short residual text is one whose
# direction the head no longer varies along.

# %% [markdown] tags=["discuss"]
# PCA keeps more variance than any text basis of the same size. Why look at texts at all? Then
# propose a way to grow a better pool for a head whose texts explain little of its variance.
# Answer:
# PCA's axes are directions without names: they say how much a head varies, not what it varies
# along. Texts trade a little variance for a description a person can check, compare across heads
# and models, and use (notebook 5 ablates heads because of what their texts say). A sample answer
# for a better pool: take the head's top principal axes, find the pool texts nearest each one,
# and ask for paraphrases and neighbours of those texts (other colours, shapes, places); or score
# candidate texts by the variance they would explain and keep the best, as TextSpan does, over a
# much larger generated pool. Check the result on held-out images, or the head's texts fit noise.
