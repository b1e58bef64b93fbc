# %% [markdown]
# [Open in Colab ↗](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb) (needs a Google account and network; offline, skip it: see `notebooks/OFFLINE.md`)
#
# # 2 · Mean ablation: which terms does zero-shot classification need?
#
# Notebook 1 measured how much each layer's direct term *varies*. Here we test what the model
# *needs*: replace a term by its mean over the dataset (so it still adds its average, but no
# longer carries anything about the particular image) and measure zero-shot accuracy again.
# Because the embedding is an exact sum, an ablation is arithmetic on the stored terms: the
# model runs once.
#
# Zero-shot classification follows CLIP: each class name is put into prompt templates, the
# normalised prompt embeddings are averaged and renormalised, and an image goes to the class of
# highest cosine similarity. The paper (ImageNet, ViT-L-14 / ViT-H-14) finds that mean-ablating
# all MLPs, or every attention layer but the last four, costs little, while ablating the last
# four attention layers destroys the accuracy. The offline model was trained *toward* this
# pattern (notebook 1), so on it the pattern is there by construction; a paper preset is the
# test, and *Going further* runs the offline model's twin, trained without the push.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | mean-ablate any set of direct terms with one line of arithmetic on stored terms; measure zero-shot accuracy through the decomposition; tell which terms the prediction reads directly; tell the course's mean-ablation protocol from the paper's |
# | **Time** | {{TIME}} |
# | **Assumes** | notebook 1 (the embedding as a sum of direct terms); zero-shot classification with prompt templates |
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
n_images = None
batch_size = None
device = ""          # "cuda" or "cpu" (the papers' presets: cuda if there is a GPU)
protocol = ""        # "paper" for the papers' models (their presets set it)
stream = None        # keep the terms on disk and read them in chunks: True, False, or
                     # None (when they would take more than 4 GiB of memory)
seed = 0
last_k = 4           # "the last k attention layers"
record_to = ""

# %%
# {{SETUP}}

# %%
import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
import torch

from helpers.course.narrative import Claim, num, pct, pm, provenance_reading, pts, say, verdict, what_we_see
from helpers.course.presets import begin
from helpers.course.ui import live
from helpers.data.datasets import load_task
from helpers.engine.models import load_model, model_info, provenance, twin_tag, world_of
from helpers.engine.text import zero_shot_classifier
from helpers.methods.ablation import (
    PATTERN_LARGE_DROP,
    PATTERN_SMALL_DROP,
    ablation_accuracies,
    accuracy,
    mean_ablation_rows,
    pattern_held,
)
from helpers.methods.metrics import proportion_se
from helpers.methods.stats import accuracy_tolerance, with_tolerance
from helpers.methods.streamed import StreamedTerms, terms_of

settings, figures, (model, preprocess, tokenizer) = begin(globals(), "02")  # the preset fills what was left unset
task = load_task(dataset, n_images=n_images, preprocess=preprocess, seed=seed, world_name=world_of(model))
classifier = zero_shot_classifier(model, tokenizer, task.prompts)
# the terms of every image: in memory, or (a large set) on disk, read a chunk at a time
terms_options = dict(stream=stream, dataset_id=task.key, preprocess_id=repr(preprocess), cls_self=True,
                     batch_size=batch_size)
terms = terms_of(model, task.dataset, model_name=f"{model_name}/{pretrained}", **terms_options)
streamed = isinstance(terms, StreamedTerms)
L = model_info(model).n_layers
k = min(last_k, L)
acc = lambda emb: accuracy(emb, classifier, task.labels)  # noqa: E731
baseline = acc(terms.embeddings())
print(f"{task.name}: {len(task)} images, {len(task.classes)} classes; baseline zero-shot accuracy {baseline:.3f}")
if streamed:
    say(f"The terms of the {len(task):,} images stay on disk ({terms.arrays.path}) and are read {terms.chunk_size:,} "
        "images at a time: the means are running sums of one pass, and each set of accuracies below one more pass.")
# a figure measured on a subset of the paper's data carries a sampling error (one standard error, ±)
sampled = settings.sampled
se = (lambda p: proportion_se(p, len(task), sampled[2])) if sampled else (lambda p: None)  # noqa: E731
main = "paper" if protocol == "paper" else "raw"  # the protocol of the chart and the curves below
PROTOCOL_NAMES = {"raw": "course's", "paper": "paper's"}
size = lambda d: f"{num(100 * abs(d), 1)} points"  # noqa: E731  (the size of an accuracy change)
figures["baseline_accuracy"] = baseline
figures["n_layers"] = L
figures["n_classes"] = len(task.classes)
figures["task"] = task.name

# %% [markdown]
# ## Exercise 2.1: mean ablation is one line of arithmetic
#
# `component_table` lays the stored terms out as one tensor `[N, C, d]`: `N` images, the `C`
# components (`embed`, `attn.0`, `mlp.0`, …, `const`) and the joint-space dimension; an image's
# embedding is the sum of its components. (Terms streamed from disk are too many for one tensor:
# the exercises then take an evenly spaced sample of them.) Write the embeddings a model would
# produce if the chosen components stopped carrying anything about the particular image but kept
# adding what they add on average.

# %%
from helpers.course.exercises.nb02 import check_layers_to_keep, check_mean_ablate, check_zero_shot_accuracy
from helpers.methods.ablation import component_table

ex_terms, ex_index = terms.sample(2000)  # every image when they are in memory
ex_labels = task.labels[ex_index]
names, comps = component_table(ex_terms)
print(f"components {tuple(comps.shape)}: {', '.join(names[:4])}, ..., {names[-1]}")


# %% [markdown] tags=["hint"]
# "What a component adds on average" is its mean over the `N` images (axis 0), one vector per
# component. The ablated embedding is the sum of all components with each chosen one swapped for
# that mean; the other components stay as they are.

# %% [markdown] tags=["hint"]
# Start from `components.sum(1)`; for each chosen `i`, subtract `components[:, i]` and add
# `components[:, i].mean(0)`. (Zeroing a component instead would be *zero* ablation.)

# %% tags=["exercise"] kind="implement" difficulty=1 importance=3 minutes=5
def mean_ablate(components, ablate):
    """Embeddings with the chosen components mean-ablated.

    components: [N, C, d]  the direct terms of N images (C components)
    ablate: a list of component indices (distinct)
    returns [N, d]
    """
    # --- solution ---
    out = components.sum(1)
    for i in ablate:
        out = out - components[:, i] + components[:, i].mean(0)
    return out
    # --- end ---


# %%
mean_ablate = check_mean_ablate(mean_ablate)
mlp_ids = [names.index(f"mlp.{i}") for i in range(L)]
mine = mean_ablate(comps, mlp_ids)
say(f"all MLPs mean-ablated by {mean_ablate.yours}: largest difference from DirectTerms.ablated "
      f"{float((mine - ex_terms.ablated(mlps=range(L))).abs().max()):.1e}")

# %% [markdown]
# ## The paper's ablations
#
# * **all MLPs** mean-ablated;
# * the **class token's attention to itself** (the `i = CLS` summand of every attention layer),
#   alone and with all MLPs;
# * **attention layers cumulatively from the first**: layers `0..j` mean-ablated;
# * **everything but the last k attention layers**: attention layers `0..L-k-1`, alone and
#   together with all MLPs and the embedding term;
# * the **last k attention layers** themselves, for contrast.
#
# **Two protocols for the mean.** The *course's* replaces a term by its mean over the images as
# it is (what exercise 2.1 computes). The *paper's*, as the authors' code does it, first divides
# each image's terms by the length of that image's embedding (so the terms sum to a unit vector,
# on the cosine scale of the classifier) and then takes the mean; and its "MLPs" row also
# removes the class-token embedding term, which that code stores with the MLP terms. A
# prediction does not depend on the length of an embedding, so only the means differ. The chart
# and the curves use the protocol in the `protocol` parameter (the paper's with a paper preset,
# the course's otherwise); the table after the chart shows both.

# %% [markdown] tags=["predict"]
# Which of these ablations will cost the most accuracy, and which almost nothing? Commit to an
# order before you run the cell.
# Answer:
# If the direct story is told by the last attention layers (notebook 1), removing *them* is what
# hurts; the MLPs, the class token's attention to itself and the early attention layers can be
# replaced by their means at little cost, even all together. A mean-ablated term still feeds
# every later layer: what these ablations remove is only its direct path to the embedding.

# %%
early = list(range(L - k))
tables = {p: mean_ablation_rows(terms, classifier, task.labels, last=k, protocol=p) for p in ("raw", "paper")}
held = {p: pattern_held(t) for p, t in tables.items()}
rows = tables[main]
fig = go.Figure(go.Bar(x=list(rows.values()), y=list(rows.keys()), orientation="h",
                       text=[f"{v:.3f}" for v in rows.values()], textposition="auto",
                       error_x=dict(array=[se(v) for v in rows.values()]) if sampled else None))
fig.update_layout(title=f"Zero-shot accuracy after mean ablation ({task.name}, the {PROTOCOL_NAMES[main]} protocol)",
                  xaxis_title="accuracy", xaxis_range=[0, 1], height=380, yaxis_autorange="reversed")
fig.show()
table = pd.DataFrame({f"{PROTOCOL_NAMES[p]} protocol": {name: pm(v, se(v), as_pct=True) for name, v in t.items()}
                      for p, t in tables.items()}).rename_axis("mean-ablated")
display(table.style.set_caption(f"{task.name}: {len(task):,} of {sampled[2]:,} images; ± one standard error (images "
                                "drawn without replacement)") if sampled else table)
figures["protocol"] = main
figures["mlps_ablated"] = rows["MLPs"]
figures["cls_self_ablated"] = rows["CLS-to-itself attention"]
figures["all_but_last_k_attn_ablated"] = rows[f"attention except last {k}"]
figures["all_but_last_k_everything_ablated"] = rows[f"MLPs + embedding + attention except last {k}"]
figures["last_k_attn_ablated"] = rows[f"last {k} attention layers"]
figures["last_k"] = k
figures["rows_course"] = tables["raw"]
figures["rows_paper"] = tables["paper"]
figures["pattern_held"] = held[main]
figures["pattern_held_course"] = held["raw"]
figures["pattern_held_paper"] = held["paper"]
figures["provenance"] = provenance(model).kind

# %%
drop = {name: v - baseline for name, v in rows.items() if name != "baseline"}
largest_gap = max(abs(tables["raw"][name] - tables["paper"][name]) for name in rows)
cheap_rows = ["MLPs", f"attention except last {k}", f"MLPs + embedding + attention except last {k}"]
last_row = f"last {k} attention layers"
tol = accuracy_tolerance(baseline, len(task))  # two standard errors of a difference of two accuracies


def pattern_claim(rows_, model_tag=""):
    """The paper's pattern on one table of rows, judged once: the measured figures with the rule
    beside them; within noise when the closest figure sits within `tol` of its rule."""
    base = rows_["baseline"]
    worst_cheap = max(base - rows_[r] for r in cheap_rows)
    last_cost = base - rows_[last_row]
    margin = min(PATTERN_SMALL_DROP - worst_cheap, last_cost - PATTERN_LARGE_DROP)
    evidence = with_tolerance(margin, 0.0, tol, f"two standard errors of an accuracy on {len(task)} images")
    on = f" on {model_tag}" if model_tag else ""
    return Claim(f"The paper's pattern{on}", evidence,
                 f"(measured: removing the MLPs, the attention layers before the last {k}, or both with the embedding "
                 f"term costs at most {size(worst_cheap)}, where the pattern allows up to {size(PATTERN_SMALL_DROP)}; "
                 f"removing the last {k} attention layers costs {size(last_cost)}, where it asks for at least "
                 f"{size(PATTERN_LARGE_DROP)})")


def pattern_words(rows_):
    base = rows_["baseline"]
    return (f"the paper's pattern (only the last {k} attention layers carry the prediction; here removing them "
            f"costs {size(base - rows_[last_row])}, removing everything else that writes directly "
            f"{size(base - rows_[cheap_rows[-1]])})")


claim = pattern_claim(rows)
figures["pattern_claim"] = claim.status
what_we_see(
    f"Under the {PROTOCOL_NAMES[main]} protocol the baseline is {pct(baseline)} (chance "
    f"{pct(1 / len(task.classes))}), and mean-ablating changes it by: all MLPs {pts(drop['MLPs'])}; the class "
    f"token's attention to itself {pts(drop['CLS-to-itself attention'])}; attention except the last {k} "
    f"{pts(drop[f'attention except last {k}'])}; MLPs, embedding and attention except the last {k} together "
    f"{pts(drop[cheap_rows[-1]])}; the last {k} attention layers {pts(drop[last_row])}.",
    f"{claim}.",
    verdict(held["raw"] == held["paper"],
            "The two protocols agree on this conclusion; their rows differ by at most "
            f"{size(largest_gap)}.",
            "The two protocols **disagree** on this conclusion: the pattern holds under the "
            f"{PROTOCOL_NAMES['raw' if held['raw'] else 'paper']} protocol only (rows differ by up to "
            f"{size(largest_gap)})."),
    provenance_reading(provenance(model), claim.held, pattern=pattern_words(rows)),
);

# %% [markdown]
# ## Attention layers ablated cumulatively
#
# From the first layer up (blue), and from the last layer down (orange). The paper's figure
# shows a flat curve until only the last few layers remain.

# %% [markdown] tags=["predict"]
# Sketch the two curves before you run the cell: accuracy as attention layers are ablated from
# the first layer up, and from the last layer down.
# Answer:
# From the first layer up, the curve should stay near the baseline until the ablation reaches
# the last few layers, then fall to chance. From the last layer down it should fall within the
# first few layers removed: they are the ones that carry the prediction.

# %%
scale = "paper" if main == "paper" else "raw"
curves = ablation_accuracies(terms, [dict(attn=range(j + 1), scale=scale) for j in range(L)]
                             + [dict(attn=range(L - j - 1, L), scale=scale) for j in range(L)], classifier, task.labels)
from_first, from_last = curves[:L], curves[L:]
bars = lambda ys: dict(array=[se(y) for y in ys]) if sampled else None  # noqa: E731  (± one standard error)
fig = go.Figure()
fig.add_scatter(x=list(range(1, L + 1)), y=from_first, mode="lines+markers", name="layers 0..j ablated",
                error_y=bars(from_first))
fig.add_scatter(x=list(range(1, L + 1)), y=from_last, mode="lines+markers", name="last j layers ablated",
                error_y=bars(from_last))
fig.add_hline(y=baseline, line_dash="dot", annotation_text="baseline")
fig.add_hline(y=1 / len(task.classes), line_dash="dot", line_color="grey", annotation_text="chance")
fig.update_layout(title="Accuracy vs number of attention layers mean-ablated", xaxis_title="layers ablated",
                  yaxis_title="accuracy", yaxis_range=[0, 1])
fig.show()
figures["cumulative_from_first"] = from_first
figures["cumulative_from_last"] = from_last

# %%
flat = next((j for j, a in enumerate(from_first) if baseline - a > PATTERN_SMALL_DROP), L)  # layers ablated at no cost
figures["cumulative_flat_layers"] = flat
what_we_see(
    f"From the first layer up, the accuracy stays within {size(PATTERN_SMALL_DROP)} of the "
    f"baseline while the first {flat} of the {L} attention layers are ablated; "
    + ("it never drops by more than that, unlike the paper's curve, which falls once the last layers go." if flat == L else
       verdict(flat >= L - k, "as in the paper's figure, the curve is flat until only the last few layers remain.",
               f"unlike the paper's figure, it drops before the ablation reaches the last {k} layers.")),
    f"From the last layer down, removing the last layer alone moves the accuracy by {pts(from_last[0] - baseline)}, "
    f"the last {k} by {pts(from_last[k - 1] - baseline)}.",
);

# %% [markdown]
# ## Exercise 2.3: how few layers can the prediction live on?
#
# The paper keeps the last four attention layers. How many does *this* model need? Find the
# fewest last attention layers $k$ that, kept while *everything else that writes directly* is
# mean-ablated (the embedding term, every MLP, the attention layers before them), leave the
# accuracy within 5 points of the baseline. `terms.ablated(embed=True, mlps=..., attn=...)`
# returns the ablated embeddings and `acc(...)` their accuracy (the widget under *Going further*
# does the same by hand).

# %% [markdown] tags=["hint"]
# Loop over $k = 1, 2, \dots, L$: keep attention layers `L - k .. L - 1`, so ablate
# `attn=range(L - k)`, every MLP (`mlps=range(L)`) and the embedding term (`embed=True`).

# %% [markdown] tags=["hint"]
# `next(k for k in range(1, L + 1) if baseline - acc(terms.ablated(embed=True, mlps=range(L), attn=range(L - k))) <= 0.05)`

# %% tags=["exercise"] kind="find" difficulty=2 importance=2 minutes=5 number="2.3"
def layers_to_keep():
    """The fewest last attention layers that keep the accuracy within 5 points, all else ablated."""
    # --- solution ---
    for n in range(1, L + 1):
        if baseline - acc(terms.ablated(embed=True, mlps=range(L), attn=range(L - n))) <= 0.05:
            return n
    return L
    # --- end ---


# %%
layers_to_keep = check_layers_to_keep(layers_to_keep, terms=terms, classifier=classifier, labels=task.labels)
figures["layers_to_keep"] = layers_to_keep()

# %% [markdown]
# ## What to take away
#
# Mean-ablating a term removes its *direct* path only: the term's computation still feeds
# later layers. So a small drop says the output does not read that term directly, not that the
# layer is useless.

# %%
kept = layers_to_keep()
what_we_see(
    verdict(claim.held,
            f"Here the pattern held: the embedding's direct story is told by the last {k} attention layers "
            f"(removing them costs {size(drop[last_row])}; removing everything else that writes directly moves the "
            f"accuracy by {pts(drop[cheap_rows[-1]])}), which is why the next notebooks look at their heads.",
            verdict(baseline >= 2 / len(task.classes),
                    f"Here the pattern {claim.word}: the last {k} attention layers do not carry the embedding's "
                    "direct story alone, so their heads (the next notebooks) tell only part of it.",
                    f"Here the model classifies at chance level or below ({pct(baseline)}; chance "
                    f"{pct(1 / len(task.classes))}): with no accuracy to lose, the ablations cannot show which terms "
                    "the prediction reads.")),
    f"Keeping {f'the last {kept} attention layers' if kept > 1 else 'only the last attention layer'}, with "
    "everything else that writes directly mean-ablated, keeps the accuracy within 5 points (exercise 2.3).",
    provenance_reading(provenance(model), claim.held, pattern=pattern_words(rows)),
    title="What to take away",
);

# %% [markdown] tags=["discuss"]
# Why replace a term by its *mean* rather than by zero? What would zero-ablating the embedding
# term do to every image?
# Answer:
# A term's mean is what it adds whatever the image: removing that too shifts every embedding by
# the same vector, which can move every image toward one class and cost accuracy for a reason
# that has nothing to do with the image. Mean ablation removes only what is specific to the
# image. Zero-ablating the embedding term removes a large constant: every embedding moves, the
# cosine similarities change everywhere, and the accuracy can fall although the term carries
# little information about any image.

# %% [markdown]
# ## Going further
#
# Optional: the exercise behind every accuracy above, the same ablations on a model trained
# without the push, and a widget to ablate any selection.
#
# ### Exercise 2.2: zero-shot accuracy
#
# The classifier has one unit-length row per class. Write the accuracy of zero-shot
# classification: the share of images whose most similar class is their own.

# %% [markdown] tags=["hint"]
# Similarity is cosine similarity: normalise the embeddings (the rows of the classifier are
# already unit length), then one matrix product gives every image's similarity to every class.

# %% [markdown] tags=["hint"]
# `logits = F.normalize(embeddings, dim=-1) @ classifier.T`; the prediction is `logits.argmax(1)`;
# the accuracy is the mean of `(prediction == labels)` as floats.

# %% tags=["exercise"] kind="implement" difficulty=1 importance=2 minutes=4 number="2.2"
def zero_shot_accuracy(embeddings, classifier, labels):
    """Top-1 zero-shot accuracy.

    embeddings: [N, d] (not normalised);  classifier: [C, d] unit rows;  labels: [N] class indices
    returns a float in [0, 1]
    """
    # --- solution ---
    logits = torch.nn.functional.normalize(embeddings, dim=-1) @ classifier.T
    return float((logits.argmax(1) == labels).float().mean())
    # --- end ---


# %%
zero_shot_accuracy = check_zero_shot_accuracy(zero_shot_accuracy)
say(f"baseline: {zero_shot_accuracy.yours} gives {zero_shot_accuracy(ex_terms.embeddings(), classifier, ex_labels):.3f}, "
      f"helpers.methods.ablation {accuracy(ex_terms.embeddings(), classifier, ex_labels):.3f}"
      + verdict(streamed, f" (on the exercises' {len(ex_index):,} images)", "")
      + f"; all MLPs mean-ablated (by {mean_ablate.yours}): {zero_shot_accuracy(mine, classifier, ex_labels):.3f}")

# %% [markdown] tags=["discuss"]
# The offline default and its twin differ only in a training penalty. Before the next cells run,
# say which rows you expect to differ between them, and which not. If the two models had come out
# the same, what would that have said about the penalty, and about the method?
# Answer:
# The penalty acted on the direct paths of the MLPs, the embedding term and the early attention
# layers, so the rows that ablate those should differ: the twin should lose accuracy when they go,
# the default should not; and removing the last layers should hurt the default much more than the
# twin. The baselines should be alike (both models classify colour well). Had the two come out
# the same, the penalty would have changed nothing measurable here (training alone puts the
# direct effects in the last layers on this world), and the method would still be fine: it
# would have measured the same thing twice.

# %% [markdown]
# ### The same ablations on a model trained without the push
#
# The offline default was trained **with a direct-path penalty** that pushed its direct effects
# into the last attention layers (see the note above and `data/models/MODEL_CARD.md`). Its twin
# (the same tag with `-plain`) saw the same world in the same training stages, with the penalty
# switched off. Running the same ablations on the same images shows what the method does: it
# *measures* where a model's direct effects sit, it does not put them there. With a real CLIP
# (a paper preset) there is no twin: the model's own training is the test.

# %%
twin = twin_tag(model)
if twin is None:
    say(f"`{model_name}` has no twin trained without the penalty: this section runs on the offline default only.")
else:
    twin_model, _, twin_tokenizer = load_model(model_name, twin, device=device)
    twin_classifier = zero_shot_classifier(twin_model, twin_tokenizer, task.prompts)
    twin_terms = terms_of(twin_model, task.dataset, model_name=f"{model_name}/{twin}", progress=False, **terms_options)
    twin_rows = mean_ablation_rows(twin_terms, twin_classifier, task.labels, last=k, protocol=main)
    twin_from_first = ablation_accuracies(twin_terms, [dict(attn=range(j + 1), scale=scale) for j in range(L)],
                                          twin_classifier, task.labels)
    pair = {pretrained: rows, twin: twin_rows}
    fig = go.Figure([go.Bar(y=list(r), x=list(r.values()), name=tag, orientation="h",
                            text=[f"{v:.3f}" for v in r.values()], textposition="auto") for tag, r in pair.items()])
    fig.update_layout(title=f"The same ablations on both models ({task.name}, the {PROTOCOL_NAMES[main]} protocol)",
                      xaxis_title="accuracy", xaxis_range=[0, 1], height=460, width=900, barmode="group",
                      yaxis_autorange="reversed", legend=dict(orientation="h", y=-0.15))
    fig.show()
    fig = go.Figure()
    for tag, curve in ((pretrained, from_first), (twin, twin_from_first)):
        fig.add_scatter(x=list(range(1, L + 1)), y=curve, mode="lines+markers", name=f"{tag}: layers 0..j ablated")
    fig.add_hline(y=1 / len(task.classes), line_dash="dot", line_color="grey", annotation_text="chance")
    fig.update_layout(title="Attention layers ablated from the first up, both models", xaxis_title="layers ablated",
                      yaxis_title="accuracy", yaxis_range=[0, 1], height=360, width=900)
    fig.show()
    twin_flat = next((j for j, a in enumerate(twin_from_first) if twin_rows["baseline"] - a > PATTERN_SMALL_DROP), L)
    figures["twin"] = {"tag": twin, "rows": twin_rows, "pattern_held": pattern_held(twin_rows),
                       "cumulative_from_first": twin_from_first, "cumulative_flat_layers": twin_flat,
                       "provenance": provenance(twin_model).kind}

# %%
if twin is not None:
    twin_claim = pattern_claim(twin_rows, twin)
    claim_here = pattern_claim(rows, pretrained)
    figures["twin"] = {**figures["twin"], "pattern_claim": twin_claim.status}
    rest_name, last_name = f"MLPs + embedding + attention except last {k}", f"last {k} attention layers"
    twin_drop = {name: v - twin_rows["baseline"] for name, v in twin_rows.items() if name != "baseline"}
    what_we_see(
        f"Baselines: {pretrained} {pct(baseline)}, {twin} {pct(twin_rows['baseline'])} (chance "
        f"{pct(1 / len(task.classes))}).",
        f"Removing the MLPs, the embedding and the attention layers before the last {k} together: {pretrained} "
        f"{pts(drop[rest_name])}, {twin} {pts(twin_drop[rest_name])}. Removing the last {k} attention layers: "
        f"{pretrained} {pts(drop[last_name])}, {twin} {pts(twin_drop[last_name])}.",
        f"From the first layer up, {pretrained} stays within {size(PATTERN_SMALL_DROP)} of its baseline for {flat} "
        f"of {L} layers, {twin} for {twin_flat}.",
        f"{claim_here}.",
        f"{twin_claim}.",
        verdict(claim_here.status != twin_claim.status,
                "The same ablations, on the same images, tell the two models apart: the method reads a property "
                "the models differ in; it does not create it.",
                "The two models get the same verdict; the rows above show how far apart they are all the same."),
        provenance_reading(provenance(twin_model), twin_claim.held, pattern=pattern_words(twin_rows)),
    )

# %% [markdown]
# ### Try it: ablate your own selection
#
# Tick the layers whose terms to mean-ablate; the accuracy updates (it is recomputed from the
# stored terms, no forward pass).

# %%
def ablate(attn_layers, mlp_layers):
    a = acc(terms.ablated(attn=list(attn_layers), mlps=list(mlp_layers), scale=scale))
    print(f"attention ablated {list(attn_layers)}, MLPs ablated {list(mlp_layers)}: accuracy {a:.3f} "
          f"(baseline {baseline:.3f})")


options = list(range(L))
live(ablate,
     attn_layers=widgets.SelectMultiple(options=options, value=tuple(early), description="attention"),
     mlp_layers=widgets.SelectMultiple(options=options, value=tuple(options), description="MLPs"))

# %% [markdown] tags=["discuss"]
# A mean-ablated term still feeds the later layers. What exactly does a small accuracy drop rule
# out, and what does it not? And the means are taken over the very images being evaluated (as in
# the paper): when could that matter?
# Answer:
# A small drop rules out that the prediction *reads* the term directly: replacing its
# image-specific part changes nothing the classifier sees. It does not rule out that the layer
# matters through later layers (its indirect effect), nor that it carries information another
# readout could use. Taking the means on the evaluated images uses those images twice; on a
# class-balanced set the mean is a fair average, but on a small or class-skewed set it leans
# toward the majority class. With few images, take the means on held-out images.

# %% [markdown] tags=["discuss"]
# Design an ablation that measures a layer's *total* effect (direct and through later layers),
# and say what you expect it to show for this model's early attention layers.
# Answer:
# A sample answer: replace the layer's output *inside the forward pass* by its dataset mean (a
# forward hook on the block's attention branch that returns the mean instead of the output), so
# every later layer sees the ablated stream, then measure accuracy. For this model the early
# layers' direct terms cost nothing to remove, but their total effect should be large: the last
# layers read what the early ones computed. The gap between total and direct effect is the
# indirect effect the decomposition does not show.
