# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb)
#
# # 3 · TextSpan: naming what each attention head does
#
# Notebook 2 showed that the last attention layers carry the embedding's direct effects. Each
# of their heads writes a vector $c_{h,i}$ into the joint space for image $i$. **TextSpan**
# explains a head by choosing, from a pool of descriptions, a few texts whose directions span
# what the head writes:
#
# 1. project the pool's text embeddings onto the span of the head's outputs (top singular
#    directions of the $K\times d$ matrix $C$ of its outputs over $K$ images);
# 2. centre $C$ over the images;
# 3. repeat $n$ times: pick the text $j$ whose projection $C r_j$ varies most over the images,
#    add the part of $C$ along $r_j$ to the reconstruction, and remove that direction from $C$
#    and from every remaining text (Gram–Schmidt).
#
# The chosen texts are the head's *text basis*. Because every text in our pools carries a
# **property tag** (colour, shape, background, …), a head's role is read off exactly: the most
# common tag among its texts, with its share as *purity*. On the offline world we know which
# factors exist, so we can check that the roles found are real ones.

# %% [parameters]
model_name = "world-clip"   # offline default; or e.g. "ViT-B-16"
pretrained = ""             # e.g. "laion2b_s34b_b88k" online
dataset = "world:colour"    # images: "world[:factor]", "imagenette", "imagenet:/path/to/val"
pool = ""                   # empty: the world's tagged pool offline, the general pool otherwise; or a file path
baseline_pool = "common_words"
n_images = 1000
batch_size = 100
device = "cpu"
seed = 0
last_layers = 4             # heads of the last layers to explain
n_texts = 5                 # texts per head for the roles
record_to = ""

# %%
# {{SETUP}}

# %%
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
import ipywidgets as widgets
from IPython.display import display

from helpers.ablation import accuracy, collect_terms
from helpers.datasets import load_task
from helpers.heads import (head_image_neighbours, head_roles, head_text_neighbours, heads_for_property,
                           interpretability_scores, property_neighbours, reconstruction_accuracy, stack_heads)
from helpers.models import DEFAULT_MODEL, load_model
from helpers.pools import load_pool
from helpers.record import Figures
from helpers.text import cached_text_embeddings, encode_texts, zero_shot_classifier
from helpers.textspan import textspan
from helpers.ui import live

torch.manual_seed(seed)
figures = Figures(record_to)
model, preprocess, tokenizer = load_model(model_name, pretrained or None, device=device)
task = load_task(dataset, n_images=n_images, preprocess=preprocess, seed=seed)
loader = torch.utils.data.DataLoader(task.dataset, batch_size=batch_size)
terms = collect_terms(model, loader, heads=True, progress=True, total=len(task))
text_pool = load_pool(pool or ("world" if model_name == DEFAULT_MODEL else "general"))
model_id = f"{model_name}/{pretrained or 'default'}"
pool_emb = cached_text_embeddings(model, tokenizer, text_pool.texts, model_id=model_id)
L, H = terms.heads.shape[1], terms.heads.shape[2]
layers = list(range(max(0, L - last_layers), L))
stack, labels = stack_heads(terms, layers)
print(f"{len(task)} images; pool '{text_pool.name}' of {len(text_pool)} texts; "
      f"{len(labels)} heads (layers {layers[0]}-{layers[-1]}, {H} heads each), output dim {stack.shape[-1]}")

# %% [markdown]
# ## A text basis for every head of the last layers
#
# All heads are processed together (one batched computation, no loop over heads).

# %%
result = textspan(stack, pool_emb, n_texts)
roles = head_roles(result, text_pool, labels, ignore=("other", "unknown"))
table = pd.DataFrame([{"head": r.label, "role": r.property, "purity": round(r.purity, 2),
                       "variance explained": round(r.variance, 2), "first texts": " | ".join(r.texts[:4])}
                      for r in roles])
display(table)
pure = [r for r in roles if r.purity >= 0.6]
print(f"{len(pure)} of {len(roles)} heads have purity >= 0.6:", ", ".join(f"{r.label} {r.property}" for r in pure))
figures["n_heads"] = len(roles)
figures["heads_purity_ge_0.6"] = len(pure)
figures["pure_head_roles"] = {r.label: r.property for r in pure}
figures["role_purities"] = {r.label: r.purity for r in roles}
planted = {"shape", "colour", "background", "position", "size", "count", "pattern", "family"}
figures["pure_roles_all_planted"] = all(r.property in planted for r in pure) if model_name == DEFAULT_MODEL else None

# %% [markdown]
# ## How much do a few texts per head keep?
#
# Replace every head of the last layers by its reconstruction from its first $n$ texts
# (earlier attention layers mean-ablated, as in the paper's table) and measure zero-shot
# accuracy. Baselines: the same number of directions from random unit vectors ("random"),
# TextSpan on a pool of common words, and the head's principal axes ("PCA", the best any
# rank-$n$ basis can do for variance).

# %%
classifier = zero_shot_classifier(model, tokenizer, task.prompts)
head_dim = model.visual.transformer.width // H  # a head's outputs span at most this many directions
n_values = [n for n in (1, 2, 3, 5, 10, 20, 40, 60) if n <= min(head_dim, len(task))]
baseline_acc = accuracy(terms.embeddings(), classifier, task.labels)
words = load_pool(baseline_pool)
words_emb = cached_text_embeddings(model, tokenizer, words.texts, model_id=model_id)
curves = {
    f"TextSpan ({text_pool.name})": reconstruction_accuracy(terms, classifier, task.labels, layers, "textspan",
                                                            n_values, pool_embeddings=pool_emb),
    f"TextSpan ({words.name})": reconstruction_accuracy(terms, classifier, task.labels, layers, "textspan",
                                                        n_values, pool_embeddings=words_emb),
    "random texts": reconstruction_accuracy(terms, classifier, task.labels, layers, "random", n_values,
                                            n_random_texts=len(text_pool), seed=seed),
    "PCA": reconstruction_accuracy(terms, classifier, task.labels, layers, "pca", n_values),
}
fig = go.Figure()
for name, curve in curves.items():
    fig.add_scatter(x=list(curve), y=list(curve.values()), mode="lines+markers", name=name)
fig.add_hline(y=baseline_acc, line_dash="dot", annotation_text="no replacement")
fig.update_layout(title=f"Accuracy with the last {len(layers)} layers' heads replaced ({task.name})",
                  xaxis_title="texts (directions) per head", yaxis_title="accuracy", xaxis_type="log")
fig.show()
figures["baseline_accuracy"] = baseline_acc
figures["accuracy_curves"] = {name: {str(k): v for k, v in c.items()} for name, c in curves.items()}

var_curve = result.cumulative.mean(0).cpu().numpy()
fig = px.line(x=np.arange(1, len(var_curve) + 1), y=var_curve, markers=True,
              labels={"x": "texts per head", "y": "variance explained"},
              title="Mean fraction of a head's variance explained by its first n texts")
fig.show()
figures["variance_explained_mean"] = var_curve.tolist()

# %% [markdown]
# ## Interpretability scores
#
# Following the follow-up paper (CLIP-InterpreT), two numbers summarise how interpretable the
# heads are. With $T_h$ the first $n$ texts of head $h$, $p(h)$ its role and
# $P$ the set of properties:
#
# * **association** of a head: $\frac{1}{n}\,\big|\{t \in T_h : \mathrm{tag}(t) = p(h)\}\big|$
#   (its purity); of the model: the mean over heads that have a role. Higher means a head's
#   texts consistently share one property.
# * **entanglement** of the model: $\frac{1}{|H|}\sum_h \frac{\max(k(h)-1,\,0)}{|P|-1}$ where
#   $k(h)$ counts the properties occurring at least twice in $T_h$. 0 means every head is
#   about a single property; 1 means every head mixes all of them.
#
# The paper has a language model tag the texts; our pools carry tags, so both scores are exact.

# %%
scores = interpretability_scores(roles, ignore=("other", "unknown"))
print(f"association {scores.association:.3f}, entanglement {scores.entanglement:.3f}")
print("heads per property:", {k: v for k, v in scores.heads_per_property.items() if v})
figures["association"] = scores.association
figures["entanglement"] = scores.entanglement

# %% [markdown]
# ## Browse the heads
#
# Pick a head: its texts with the variance each adds, and the images that head alone finds
# most similar to a query image (per-head nearest neighbours), and those it scores highest for
# its first text (per-head nearest neighbours of a text).

# %%
thumb = 72


def strip(indices, title):
    ims = [np.asarray(task.show(int(i)).convert("RGB").resize((thumb, thumb))) for i in indices]
    fig = px.imshow(np.concatenate(ims, axis=1), title=title)
    fig.update_layout(height=170, margin=dict(l=0, r=0, t=30, b=0), coloraxis_showscale=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.show()


def browse(head_label: str, query: int):
    h = [r.label for r in roles].index(head_label)
    r = roles[h]
    steps = result.variance[h].cpu().numpy()
    fig = go.Figure(go.Bar(x=steps, y=[f"{i + 1}. {t}" for i, t in enumerate(r.texts)], orientation="h",
                           marker_color=["#2ca02c" if p == r.property else "#999" for p in r.text_properties]))
    fig.update_layout(title=f"{r.label}: role {r.property} (purity {r.purity:.1f})", xaxis_title="variance added",
                      yaxis_autorange="reversed", height=330, margin=dict(l=320))
    fig.show()
    idx, _ = head_image_neighbours(stack, h, query, k=6)
    strip([query] + idx.tolist(), f"query image {query}, then its nearest neighbours for {r.label}")
    t = encode_texts(model, tokenizer, [r.texts[0]])[0]
    idx, _ = head_text_neighbours(stack, h, t, k=7)
    strip(idx.tolist(), f"images {r.label} writes most like '{r.texts[0]}'")


best = max(roles, key=lambda r: (r.purity, r.variance))
live(browse,
     head_label=widgets.Dropdown(options=[r.label for r in roles], value=best.label, description="head"),
     query=widgets.IntSlider(value=0, min=0, max=len(task) - 1, description="query image"))

# %% [markdown]
# ## Property-based image search
#
# Represent each image only by the summed contributions of the heads of one property and
# search nearest neighbours: the same query retrieves different neighbours depending on the
# property asked for (CLIP-InterpreT's first analysis).

# %%
query = 0
found = {}
for prop in [p for p, k in scores.heads_per_property.items() if k][:3]:
    group = heads_for_property(roles, prop, min_purity=0.5)
    if not group:
        continue
    idx, _ = property_neighbours(stack, group, query, k=6, centre=True)
    strip([query] + idx.tolist(), f"neighbours of image {query} through the {prop} heads")
    found[prop] = idx.tolist()
if model_name == DEFAULT_MODEL and "scenes" in task.meta:
    scenes = task.meta["scenes"]
    agree = {p: float(np.mean([scenes.factors[p][i] == scenes.factors[p][query] for i in idx]))
             for p, idx in found.items() if p in scenes.factors}
    print("share of neighbours with the query's own value of that factor:", agree)
    figures["property_search_agreement"] = agree
