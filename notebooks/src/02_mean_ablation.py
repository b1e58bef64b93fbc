# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb)
#
# # 2 · Mean ablation: which terms does zero-shot classification need?
#
# Notebook 1 measured how much each layer's direct term *varies*. Here we test what the model
# *needs*: replace a term by its mean over the dataset (so it still adds its average, but no
# longer carries anything about the particular image) and measure zero-shot accuracy again.
# Because the embedding is an exact sum, an ablation is just arithmetic on the stored terms:
# the model runs once.
#
# Zero-shot classification follows CLIP: every class name is put into prompt templates, each
# prompt embedding is normalised, the class's prompts are averaged and renormalised, and an
# image goes to the class with the highest cosine similarity. For real models the class names
# and the 80 templates come from `open_clip.zero_shot_metadata`; the offline world has its own.
#
# The paper (ImageNet validation, 50,000 images, ViT-L-14 / ViT-H-14) finds that mean-ablating
# all MLPs, or every attention layer but the last four, costs little, while ablating the last
# four attention layers destroys the accuracy. With `dataset="imagenette"` (or your own
# ImageNet folder) the numbers come from a few thousand images of 10 classes classified
# 1000-way, so they differ from the paper's table; the *pattern* is what to compare.

# %% [parameters]
model_name = "world-clip"   # offline default; or e.g. "ViT-B-16"
pretrained = ""             # e.g. "laion2b_s34b_b88k" online
dataset = "world:colour"    # "world[:factor]", "imagenette", or "imagenet:/path/to/val"
n_images = 600
batch_size = 100
device = "cpu"
seed = 0
last_k = 4                  # "the last k attention layers"
record_to = ""

# %%
# {{SETUP}}

# %%
import plotly.express as px
import plotly.graph_objects as go
import torch
import ipywidgets as widgets

from helpers.ablation import accuracy, collect_terms
from helpers.datasets import load_task
from helpers.models import load_model
from helpers.record import Figures
from helpers.text import zero_shot_classifier
from helpers.ui import live

torch.manual_seed(seed)
figures = Figures(record_to)
model, preprocess, tokenizer = load_model(model_name, pretrained or None, device=device)
task = load_task(dataset, n_images=n_images, preprocess=preprocess, seed=seed)
classifier = zero_shot_classifier(model, tokenizer, task.prompts)
loader = torch.utils.data.DataLoader(task.dataset, batch_size=batch_size)
terms = collect_terms(model, loader, cls_self=True, progress=True, total=len(task))
L = terms.n_layers
k = min(last_k, L)
acc = lambda emb: accuracy(emb, classifier, task.labels)  # noqa: E731
baseline = acc(terms.embeddings())
print(f"{task.name}: {len(task)} images, {len(task.classes)} classes; baseline zero-shot accuracy {baseline:.3f}")
figures["baseline_accuracy"] = baseline
figures["n_layers"] = L
figures["n_classes"] = len(task.classes)
figures["task"] = task.name

# %% [markdown]
# ## The paper's ablations
#
# * **all MLPs** mean-ablated;
# * the **class token's attention to itself** (the `i = CLS` summand of every attention layer);
# * **attention layers cumulatively from the first**: layers `0..j` mean-ablated;
# * **everything but the last k attention layers**: attention layers `0..L-k-1`, alone and
#   together with all MLPs and the embedding term;
# * the **last k attention layers** themselves, for contrast.

# %%
early = list(range(L - k))
rows = {
    "baseline": baseline,
    "all MLPs": acc(terms.ablated(mlps=range(L))),
    "CLS-to-itself attention": acc(terms.ablated(cls_self=range(L))),
    f"attention except last {k}": acc(terms.ablated(attn=early)),
    f"MLPs + embedding + attention except last {k}": acc(terms.ablated(mlps=range(L), attn=early, embed=True)),
    f"last {k} attention layers": acc(terms.ablated(attn=range(L - k, L))),
}
fig = go.Figure(go.Bar(x=list(rows.values()), y=list(rows.keys()), orientation="h",
                       text=[f"{v:.3f}" for v in rows.values()], textposition="auto"))
fig.update_layout(title=f"Zero-shot accuracy after mean ablation ({task.name})", xaxis_title="accuracy",
                  xaxis_range=[0, 1], height=360, yaxis_autorange="reversed")
fig.show()
for name, value in rows.items():
    print(f"{name:48s} {value:.3f}")
figures["mlps_ablated"] = rows["all MLPs"]
figures["cls_self_ablated"] = rows["CLS-to-itself attention"]
figures["all_but_last_k_attn_ablated"] = rows[f"attention except last {k}"]
figures["all_but_last_k_everything_ablated"] = rows[f"MLPs + embedding + attention except last {k}"]
figures["last_k_attn_ablated"] = rows[f"last {k} attention layers"]
figures["last_k"] = k

# %% [markdown]
# ## Attention layers ablated cumulatively
#
# From the first layer up (blue), and from the last layer down (orange). The paper's figure
# shows a flat curve until only the last few layers remain.

# %%
from_first = [acc(terms.ablated(attn=range(j + 1))) for j in range(L)]
from_last = [acc(terms.ablated(attn=range(L - j - 1, L))) for j in range(L)]
fig = go.Figure()
fig.add_scatter(x=list(range(1, L + 1)), y=from_first, mode="lines+markers", name="layers 0..j ablated")
fig.add_scatter(x=list(range(1, L + 1)), y=from_last, mode="lines+markers", name="last j layers ablated")
fig.add_hline(y=baseline, line_dash="dot", annotation_text="baseline")
fig.add_hline(y=1 / len(task.classes), line_dash="dot", line_color="grey", annotation_text="chance")
fig.update_layout(title="Accuracy vs number of attention layers mean-ablated", xaxis_title="layers ablated",
                  yaxis_title="accuracy", yaxis_range=[0, 1])
fig.show()
figures["cumulative_from_first"] = from_first
figures["cumulative_from_last"] = from_last

# %% [markdown]
# ## Try it: ablate your own selection
#
# Tick the layers whose terms to mean-ablate; the accuracy updates (it is recomputed from the
# stored terms, no forward pass).

# %%
def ablate(attn_layers, mlp_layers):
    a = acc(terms.ablated(attn=list(attn_layers), mlps=list(mlp_layers)))
    print(f"attention ablated {list(attn_layers)}, MLPs ablated {list(mlp_layers)}: accuracy {a:.3f} "
          f"(baseline {baseline:.3f})")


options = list(range(L))
live(ablate,
     attn_layers=widgets.SelectMultiple(options=options, value=tuple(early), description="attention"),
     mlp_layers=widgets.SelectMultiple(options=options, value=tuple(options), description="MLPs"))

# %% [markdown]
# ## What to take away
#
# Mean-ablating a term removes its *direct* path only: the term's computation still feeds
# later layers. So a small drop says the output does not read that term directly, not that the
# layer is useless. When the pattern holds, the direct story of the embedding is told by a few
# late attention layers, which is why the next notebooks look at their heads.
