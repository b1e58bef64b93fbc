# %% [markdown]
# [Open in Colab ↗](https://colab.research.google.com/github/{{REPO}}/blob/main/notebooks/{{NOTEBOOK}}.ipynb) (needs a Google account and network; offline, skip it: see `notebooks/OFFLINE.md`)
#
# # 5 · Removing a spurious cue (Waterbirds)
#
# **Waterbirds** pastes land birds and water birds onto land and water backgrounds. A zero-shot
# classifier ("a photo of a landbird" vs "… waterbird") leans on the background: it is more
# accurate when bird and background agree than when they disagree. The metric that exposes this
# is the **worst-group accuracy** over the four (bird, background) groups.
#
# The paper's fix uses what TextSpan (notebook 3) says about the heads: find the heads whose
# texts are about *places* (geography, setting, background), mean-ablate them, and classify
# again. The direct terms are stored once, so every ablation is arithmetic: no forward pass.
# Offline, the synthetic world plants the same structure in its training scenes: *walker*
# shapes mostly sit on grass and *swimmer* shapes on water. The evaluation groups are balanced.

# %% [markdown]
# ### Before you start
#
# | | |
# |---|---|
# | **You will be able to** | measure worst-group accuracy; decide which heads carry a spurious cue from their TextSpan texts alone, and turn that reading into a rule; mean-ablate the heads on stored terms and compare with random heads; tell whether a model has another cue to fall back on |
# | **Time** | {{TIME}} |
# | **Assumes** | notebooks 2–3 (mean ablation; TextSpan texts and head roles) |
#
# {{EXERCISE_NOTE}}

# %% tags=["parameters"]
preset = "offline"   # the one switch: "offline", "ViT-B-16 LAION", "ViT-L-14 LAION",
                     # "ViT-H-14 LAION", "ViT-B-16 OpenAI", "ViT-B-32 OpenAI",
                     # "ViT-L-14 OpenAI", "random ViT-B-32". The parameters below
                     # override it where set (None or "": the preset's value).
model_name = ""      # e.g. "ViT-B-16" (then name its weights in `pretrained`)
pretrained = ""      # an open_clip tag, a checkpoint path, or "random"
dataset = ""         # "world", "waterbirds", or "waterbirds:/path/to/the/dataset"
n_per_group = None   # world: scenes per group; waterbirds: images per group at
                     # most (0: the whole split)
span_images = None   # images for TextSpan (not the evaluation images)
pool_size = None     # texts drawn from the pool for TextSpan (0: every text)
last_layers = 4      # heads of the last layers are candidates
n_texts = 5          # TextSpan texts per head
min_score = 0.5      # ablate heads whose texts are at least this much about the
                     # spurious property
random_trials = 20   # random-head controls
batch_size = None
device = ""          # "cuda" or "cpu" (the papers' presets: cuda if there is a GPU)
protocol = ""        # the repair: "heads" (the course's: the chosen heads alone)
                     # or "paper" (the reference code's: heads + early attention +
                     # MLPs + embedding term, 80 OpenAI templates); "": the preset's
seed = 0
record_to = ""

# %%
# {{SETUP}}

# %%
import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import display

from helpers.course.narrative import (
    comparative,
    compare,
    pct,
    provenance_phrase,
    pts,
    ratio,
    say,
    verdict,
    what_we_see,
)
from helpers.course.presets import begin
from helpers.course.ui import live
from helpers.data import world
from helpers.data.pools import load_pool
from helpers.data.waterbirds import waterbirds_planted_correlation, waterbirds_task, world_planted_correlation
from helpers.engine.images import images_to_tensor
from helpers.engine.labels import head_labels, parse_head
from helpers.engine.models import DEFAULT_MODEL, model_info, provenance, world_of
from helpers.engine.text import encode_texts, zero_shot_classifier
from helpers.methods.ablation import collect_terms
from helpers.methods.heads import head_roles, stack_heads
from helpers.methods.spurious import (
    PAPER_HEADS,
    REPAIR_PROTOCOLS,
    SPURIOUS_PROPERTIES,
    GroupEvaluator,
    choose_heads,
    habitat_gap,
    random_heads,
    rank_heads,
    repair_ablation,
)
from helpers.methods.stats import accuracy_tolerance, paired_bootstrap, with_tolerance
from helpers.methods.textspan import textspan

if protocol and protocol not in REPAIR_PROTOCOLS:  # before the model loads
    raise ValueError(f"protocol must be one of {REPAIR_PROTOCOLS} (or '' for the preset's), got {protocol!r}")
settings, figures, (model, preprocess, tokenizer) = begin(globals(), "05")  # the preset fills what was left unset
repair_protocol = protocol or "heads"
PROTOCOL_NAMES = {"heads": "heads only", "paper": "the paper's"}
figures["repair_protocol"] = repair_protocol
if dataset == "world":
    scenes = world.waterbirds_test_set(n_per_group, seed=seed + 1, config=world_of(model))
    eval_images = images_to_tensor(scenes.images, model)  # resized for a real model
    labels, groups = torch.as_tensor(scenes.factors["family"]), torch.as_tensor(scenes.groups)
    names = world.WATERBIRDS_GROUP_NAMES
    prompts = world.class_prompts("family")
    # TextSpan runs on other scenes (independent factors), never on the evaluation groups
    span_x = images_to_tensor(world.sample(span_images, split="test", seed=seed + 2, config=world_of(model)).images, model)
    pool = load_pool("world").sample(pool_size, seed=seed)  # the world's own descriptions
elif dataset.startswith("waterbirds"):
    root = dataset.partition(":")[2] or None
    wb = waterbirds_task(preprocess, "test", root=root, n=4 * n_per_group if n_per_group else None, seed=seed,
                         templates="paper" if repair_protocol == "paper" else "eight")
    eval_images = torch.utils.data.DataLoader(wb.dataset, batch_size=batch_size)
    labels, groups, names, prompts = wb.labels, wb.groups, wb.names, wb.prompts
    val = waterbirds_task(preprocess, "val", root=wb.root, n=span_images, seed=seed)
    span_x = torch.utils.data.DataLoader(val.dataset, batch_size=batch_size)
    pool = load_pool("general").sample(pool_size, seed=seed)
else:
    raise ValueError(f"dataset must be 'world' or 'waterbirds[:/path]', got {dataset!r}")
spurious = SPURIOUS_PROPERTIES["world" if pool.name == "world" else "general"]
classifier = zero_shot_classifier(model, tokenizer, prompts)
terms = collect_terms(model, eval_images, heads=True, progress=True, total=len(labels))
evaluate = GroupEvaluator(terms, classifier, labels, groups, names)
info = model_info(model)
L, H = info.n_layers, info.n_heads
prov = provenance(model)


def repair(heads, which=None):
    """What to mean-ablate for ``heads`` under a repair protocol (default: the notebook's)."""
    return repair_ablation(heads, L, which or repair_protocol)

before = evaluate()
print(f"{len(labels)} images; spurious properties {spurious}; pool '{pool.name}' ({len(pool)} texts)")
figures["before"] = before.as_dict()

# %% [markdown]
# How strong is the correlation in the training split (the split the offline model was trained
# on; never the evaluation groups)?

# %%
if dataset == "world":
    planted = world_planted_correlation(seed=0, config=world_of(model))  # the training world is World(seed=0)
    say(f"Of the first {planted.n:,} training scenes, {pct(planted.habitat_share)} are habitat scenes, and in "
        f"{pct(planted.agree_in_habitat)} of those the background is the family's habitat (the world's "
        f"`spurious_p` is {planted.spurious_p:g}); the other scenes draw any of the "
        f"{len(world.BACKGROUNDS)} backgrounds. Of all training scenes on grass or water, "
        f"{pct(planted.agree_on_habitats)} show the family on its own habitat. Through the text: "
        f"{pct(planted.linked_captions)} of the habitat scenes' captions name the family together with the "
        f"background (\"a swimmer on a lake\"), against {pct(planted.linked_elsewhere)} of the other scenes' "
        + (f"(the world's `habitat_caption_p` is {planted.habitat_caption_p:g}, as web captions name the "
           "habitat with the bird)." if planted.habitat_caption_p else "(no link planted in the captions)."))
else:
    planted = waterbirds_planted_correlation(wb.root)
    say(f"Of Waterbirds' {planted.n:,} training images, {pct(planted.agree_in_habitat)} show the bird on its own "
        "habitat (waterbirds on water, landbirds on land). A zero-shot CLIP never saw this split: its lean on the "
        "background comes from its web training data.")
figures["planted"] = {"habitat_share": planted.habitat_share, "agree_in_habitat": planted.agree_in_habitat,
                      "agree_on_habitats": planted.agree_on_habitats, "linked_captions": planted.linked_captions}

# %% [markdown]
# ## Accuracy per group, before any repair

# %%
display(pd.DataFrame({"accuracy": before.groups, "images": before.counts}).round(3))
matched, mismatched = habitat_gap(before, names)
figures["before_matched"], figures["before_mismatched"] = matched, mismatched
n_half = sum(before.counts[g] for g in (names[1], names[2]))  # images on the other class's habitat
habitat_evidence = with_tolerance(matched, mismatched, accuracy_tolerance((matched + mismatched) / 2, n_half),
                                  f"two standard errors of an accuracy on {n_half} images")

# %%
what_we_see(
    f"Average accuracy {pct(before.average)}; the worst group is *{before.worst_name}* at {pct(before.worst_group)}, "
    f"{100 * (before.average - before.worst_group):.1f} points below the average.",
    f"The groups whose background is the other class's habitat ({names[1]}, {names[2]}) average "
    f"{pct(mismatched)}, those on their own habitat ({names[0]}, {names[3]}) {pct(matched)}: "
    + comparative(habitat_evidence,
                  f"accuracy is {pts(matched - mismatched).lstrip('+')} lower where background and class disagree, the "
                  "mark of a classifier that leans on the background.",
                  "the model is **not** less accurate where background and class disagree, so there is little here for "
                  "a repair to fix.",
                  f"the two are within noise of each other ({habitat_evidence.basis}), so there is little here for a "
                  "repair to fix."),
    verdict(prov.kind in ("shaped", "plain") and dataset == "world",
            "This model is the course's own small CLIP, trained on the world's scenes counted above, so its lean on "
            f"the background is the planted one (`data/models/MODEL_CARD.md` lists these groups for `{pretrained}`). "
            "Here the repair shows the method on a cue we planted; the Waterbirds run with a real CLIP (a paper "
            "preset) is the test of the paper's claim.",
            verdict(prov.tests_the_paper, "This model is a CLIP trained on web image-text pairs: its lean on the "
                                          "background comes from that data, and the repair below tests the paper's "
                                          "claim.", prov.note)),
);

# %% [markdown]
# ## Which heads are about the background?
#
# TextSpan on every head of the last layers, over images that are *not* the evaluation
# images. A head's score is the share of the variance explained by its texts that comes from
# texts tagged with a spurious property.

# %%
span_terms = collect_terms(model, span_x, heads=True)
layers = list(range(max(0, L - last_layers), L))
stack, stacked_heads = stack_heads(span_terms, layers)
pool_emb = encode_texts(model, tokenizer, pool.texts)
spans = textspan(stack, pool_emb, n_texts)
roles = head_roles(spans, pool, stacked_heads, ignore=("other", "unknown"))
display(pd.DataFrame([{"head": r.label, "role": r.property,
                       "texts [tag, share of the variance they explain]": " | ".join(
                           f"{t} [{tag}, {v / max(sum(r.variances), 1e-12):.2f}]"
                           for t, tag, v in zip(r.texts, r.text_properties, r.variances))} for r in roles]))

# %% [markdown]
# ## Exercise 5.3: decide which heads to ablate
#
# Read the table above, the heads' texts and tags only: which heads carry the background? Decide
# on a set of heads to mean-ablate, before any rule or measurement. The check then measures your
# set on the evaluation groups (which played no part in your choice): the worst group should
# rise beyond its noise, above what as many random heads from the same layers give, at a cost
# to the average of at most 5 points.

# %% [markdown] tags=["hint"]
# Look for heads whose texts are tagged `background` (or another place-like tag), especially in
# their first texts, which explain the most variance. A head with one background text among
# colour texts carries little of the cue.

# %% [markdown] tags=["hint"]
# A reasonable decision: every head whose *role* is background, e.g.
# `[r.label for r in roles if r.property == "background"]`. Removing heads about colour or shape
# takes away what the model needs to name the family.

# %% tags=["exercise"] kind="decide" difficulty=2 importance=3 minutes=5 number="5.3"
def heads_to_ablate():
    """The heads to mean-ablate, decided from their texts: labels such as "L7.H2" or (layer, head) pairs."""
    # --- solution ---
    return [r.label for r in roles if r.property in spurious]
    # --- end ---


# %%
from helpers.course.exercises.nb05 import check_choose_spurious_heads, check_heads_to_ablate, check_worst_group_accuracy

n_worst = int(before.counts[before.worst_name])
in_worst = torch.as_tensor(groups) == list(names).index(before.worst_name)  # the images of the worst group


def worst_gain(heads):
    """The worst group's accuracy after ablating `heads` minus before, paired over its images."""
    right_after = (evaluate.predict(**repair(heads)) == labels)[in_worst].numpy()
    right_before = (evaluate.predict() == labels)[in_worst].numpy()
    return paired_bootstrap(right_after, right_before, items=f"images of the worst group ({before.worst_name})")


def random_worst(heads):
    """The worst group after ablating as many random heads from the same layers, mean over draws."""
    draws = [evaluate(**repair(random_heads(len(heads), layers, H, seed=seed + 100 + t))).worst_group
             for t in range(random_trials)]
    return float(np.mean(draws))


heads_to_ablate = check_heads_to_ablate(heads_to_ablate, roles=roles, measure=lambda heads: evaluate(**repair(heads)),
                                        before=before, auto=choose_heads(rank_heads(roles, spurious), min_score=min_score),
                                        gain=worst_gain, random_worst=random_worst, spurious=spurious)
figures["decided_heads"] = [list(parse_head(h)) if isinstance(h, str) else list(h) for h in heads_to_ablate()]

# %% [markdown]
# ## Exercise 5.1: turn the reading into a rule
#
# A decision by eye does not scale to a model with hundreds of heads. Write a rule: score each
# head by how much of what its texts explain is about the spurious properties, and choose the
# heads whose score is at least `min_score`. The cell after the check shows the automatic choice
# and compares it with your decision.

# %% [markdown] tags=["hint"]
# Each text explains a share of the head's variance (`r.variances`, one per text, in the order
# chosen; clip negative ones at 0). The score is the part of the total that comes from texts
# whose tag (`r.text_properties`) is spurious. Counting texts instead of weighing them misses
# that a head's first texts explain most of its variance.

# %% [markdown] tags=["hint"]
# `var = [max(v, 0.0) for v in r.variances]`, `hit = sum(v for v, t in zip(var, r.text_properties) if t in properties)`;
# choose `(r.layer, r.head)` when `sum(var) > 0 and hit / sum(var) >= min_score` (a score equal
# to `min_score` counts).

# %% tags=["exercise"] kind="implement" difficulty=2 importance=3 minutes=6 number="5.1"
def choose_spurious_heads(roles, properties, min_score):
    """The heads whose TextSpan texts are about the spurious properties.

    roles: a list of HeadRole (.layer, .head, .text_properties: one tag per text,
           .variances: the variance each text explains)
    properties: the spurious tags;  min_score: the smallest score chosen
    returns a list of (layer, head) pairs
    """
    # --- solution ---
    out = []
    for r in roles:
        var = [max(v, 0.0) for v in r.variances]
        hit = sum(v for v, tag in zip(var, r.text_properties) if tag in properties)
        if sum(var) > 0 and hit / sum(var) >= min_score:
            out.append((r.layer, r.head))
    return out
    # --- end ---


# %%
choose_spurious_heads = check_choose_spurious_heads(choose_spurious_heads)
my_heads = choose_spurious_heads(roles, spurious, min_score)
say(f"{choose_spurious_heads.yours} chooses: {', '.join(head_labels(my_heads)) or 'no head'}")

# %%
ranking = rank_heads(roles, spurious)
chosen = choose_heads(ranking, min_score=min_score)
display(pd.DataFrame([{"head": s.label, "score": round(s.score, 2), "share of texts": s.share, "role": s.role,
                       "spurious texts": " | ".join(s.texts)} for s in ranking]))
print(f"chosen automatically (score >= {min_score}): {head_labels(chosen)}")
figures["chosen_heads"] = [list(p) for p in chosen]
figures["n_chosen"] = len(chosen)
figures["head_scores"] = {s.label: s.score for s in ranking}
decided = {tuple(h) for h in figures["decided_heads"]}
say(f"{choose_spurious_heads.yours}: " + ("the same heads as the automatic choice" if set(chosen) == set(my_heads)
                                            else "other heads than the automatic choice: compare the rule with the scores"))
say(f"{heads_to_ablate.yours} (exercise 5.3): " + ("the same heads" if decided == set(chosen) else
                                                     f"{', '.join(head_labels(sorted(decided))) or 'no head'}"))
rest = [s for s in ranking if s.pair not in set(chosen)]
next_score = rest[0].score if rest else float("nan")
figures["next_score"] = next_score

# %%
what_we_see(
    verdict(chosen, f"{len(chosen)} of the {len(ranking)} heads of layers {layers[0]}–{layers[-1]} score at least "
                    f"{min_score}: " + ", ".join(f"{s.label} ({s.score:.2f}, role: {s.role})" for s in ranking
                                                 if s.pair in set(chosen)) + ".",
            f"No head of layers {layers[0]}–{layers[-1]} scores {min_score} or more: there is nothing to ablate."),
    verdict(not rest, "", f"The next head, {rest[0].label if rest else ''}, scores {next_score:.2f}: "
            + verdict(next_score < min_score - 0.1, "well below the threshold, so the choice does not hinge on "
                                                      "`min_score`.",
                      "close to the threshold, so the choice depends on `min_score`.")),
    "The groups played no part in the choice: only the heads' texts and their tags did.",
);

# %% [markdown]
# ## Ablate them, and compare with random heads
#
# The chosen heads are replaced by their mean over the evaluation images, under the
# notebook's repair protocol (`protocol`: the course's *heads only* offline, the paper's with a
# paper preset; the next section puts the two side by side). The control draws the same number
# of heads at random from the same layers (excluding the chosen ones), `random_trials` times,
# under the same protocol.

# %% [markdown] tags=["predict"]
# Ablating the chosen heads: will the worst group go up, and what will it cost the average? And
# what will ablating as many *random* heads from the same layers do?
# Answer:
# If the chosen heads carry the background and the model also reads the object, removing them
# should raise the worst group (the scenes where background and object disagree) at little or
# no cost to the average. Random heads are as likely to remove object information as background
# information, so they should not raise the worst group reliably. How large each change is
# depends on how much the model leans on the background, which the table measures.

# %%
after = evaluate(**repair(chosen))
controls = [evaluate(**repair(random_heads(len(chosen), layers, H, exclude=chosen, seed=seed + t)))
            for t in range(random_trials)] if chosen else []
say(f"Repair protocol of this table: **{PROTOCOL_NAMES[repair_protocol]}**" + verdict(
    repair_protocol == "paper", " (the chosen heads plus the extra terms).", " (the chosen heads alone)."))
rows = {"no ablation": before, "chosen heads": after}
if controls:
    rows["random heads (mean)"] = None
paper_key = model_name.replace("-quickgelu", "")
if paper_key in PAPER_HEADS and model_name != DEFAULT_MODEL:
    rows["paper's heads"] = evaluate(**repair(PAPER_HEADS[paper_key]))
table = {}
for name, m in rows.items():
    if m is None:
        table[name] = {**{g: float(np.mean([c.groups[g] for c in controls])) for g in before.groups},
                       "average": float(np.mean([c.average for c in controls])),
                       "worst group": float(np.mean([c.worst_group for c in controls]))}
    else:
        table[name] = {**m.groups, "average": m.average, "worst group": m.worst_group}
display(pd.DataFrame(table).T.round(3))

fig = go.Figure()
for name, row in table.items():
    fig.add_bar(name=name, x=list(before.groups) + ["average", "worst group"],
                y=[row[g] for g in before.groups] + [row["average"], row["worst group"]])
fig.update_layout(title=f"Group accuracy before and after ablating heads ({PROTOCOL_NAMES[repair_protocol]})",
                  barmode="group", yaxis_range=[0, 1],
                  height=400)
fig.show()
figures["after"] = after.as_dict()
figures["random_worst_mean"] = table["random heads (mean)"]["worst group"] if controls else None
figures["random_average_mean"] = table["random heads (mean)"]["average"] if controls else None
figures["random_worst_max"] = max(c.worst_group for c in controls) if controls else None
figures["worst_gain"] = after.worst_group - before.worst_group
figures["average_change"] = after.average - before.average
reach = sum(c.worst_group >= after.worst_group for c in controls)
figures["random_reaching_chosen"] = reach

# %%
what_we_see(
    verdict(chosen, f"Ablating the {len(chosen)} chosen heads moves the worst group from {pct(before.worst_group)} to "
                    f"{pct(after.worst_group)} ({pts(after.worst_group - before.worst_group)}) and the average from "
                    f"{pct(before.average)} to {pct(after.average)} ({pts(after.average - before.average)}).", ""),
    verdict(controls, compare(after.worst_group, figures["random_worst_mean"] or 0.0, "Ablating the chosen heads",
                              f"ablating as many random heads (mean of {len(controls)} draws)", what="the worst group",
                              as_pct=True, digits=1,
                              tolerance=accuracy_tolerance(after.worst_group, int(after.counts[after.worst_name])),
                              basis="two standard errors of the worst group's accuracy")
            + f" {reach} of the {len(controls)} random draws reach the chosen heads' worst group.",
            "No head was chosen, so there is no repair and no random control."),
);

# %% [markdown]
# ## What to take away (core)

# %%
gain = after.worst_group - before.worst_group
repair_evidence = with_tolerance(after.worst_group, figures["random_worst_mean"] if controls else before.worst_group,
                                 accuracy_tolerance(after.worst_group, int(after.counts[after.worst_name])),
                                 "two standard errors of the worst group's accuracy")
what_we_see(
    verdict(chosen, f"On this run the chosen heads (protocol: {PROTOCOL_NAMES[repair_protocol]}) took the worst group "
                    f"from {pct(before.worst_group)} to {pct(after.worst_group)} ({pts(gain)}) and the average from "
                    f"{pct(before.average)} to {pct(after.average)} ({pts(after.average - before.average)}).", ""),
    verdict(not chosen, "No head was chosen, so there was no repair.",
            comparative(repair_evidence, "The repair raised the worst group, and more than as many random heads "
                                         "did: the heads TextSpan calls *background* carry the cue.",
                        "The repair did **not** raise the worst group beyond what random heads do here.",
                        "The repair's worst group is within noise of what as many random heads give here.")),
    verdict(figures.get("decided_heads") is not None,
            f"The heads decided from their texts (exercise 5.3, {heads_to_ablate.yours}): "
            f"{', '.join(head_labels([tuple(h) for h in figures['decided_heads']])) or 'none'}.", ""),
    verdict(prov.tests_the_paper, f"`{model_name}` is a web-trained CLIP: lay these numbers beside the paper's.",
            verdict(prov.kind == "random", f"`{model_name}` has random weights: this run only shows that the code "
                                           "runs on this architecture.",
                    f"`{model_name}` is not a web-trained CLIP (it was {provenance_phrase(prov)}): the run shows "
                    "the method at work on a known cue; a paper preset on Waterbirds tests the paper's claim.")),
    title="What to take away (core)",
);

# %% [markdown] tags=["discuss"]
# The heads are chosen from their texts alone; the groups are used only to measure. Why does that
# separation matter? And when can removing a cue *not* repair a classifier?
# Answer:
# Choosing heads by their effect on the test groups would fit the repair to those groups: any
# set of heads that happens to help them would look like a discovery, and the worst-group gain
# would be an overestimate. Choosing from the texts makes the repair a prediction the groups can
# confirm or refute. Removing a cue cannot repair a model that has no other way to decide: if it
# reads the family only from the background, ablating the background moves the groups towards
# chance, not towards the right answers (*Going further* checks whether the model reads shape).

# %% [markdown]
# ## Going further
#
# Optional: the paper's repair protocol beside the course's, the worst-group exercise, a widget
# to toggle heads, and whether the model has another cue to fall back on.
#
# %% [markdown]
# ### Two repair protocols, side by side
#
# **Heads only** (the course's) mean-ablates the chosen heads and nothing else, so any change
# is what those heads carried. **The paper's** protocol (its reference code) mean-ablates the
# chosen heads *plus* every attention layer before the last four, every MLP and the class-token
# embedding term, with the means taken on its cosine scale (each image's terms divided by the
# norm of its embedding); on Waterbirds its classifier averages the 80 OpenAI templates. In a
# web-trained CLIP those extra terms carry little of the direct effect (the paper's finding;
# notebook 2 measures it), so the paper removes them as noise. A third row ablates the extra terms alone, to show what they do by themselves.
# With a paper preset the paper's protocol is the notebook's default; offline, the course's is
# (set `protocol` to choose).

# %%
proto = {"no ablation": before,
         "heads only (the course's)": evaluate(**repair(chosen, "heads")),
         "extra terms alone (no head)": evaluate(**repair((), "paper")),
         "the paper's protocol (heads + extra terms)": evaluate(**repair(chosen, "paper"))}
display(pd.DataFrame({k: {"worst group": pct(m.worst_group), "average": pct(m.average), "worst group is": m.worst_name}
                      for k, m in proto.items()}).T)
by_heads, extra, by_paper = (proto[k] for k in list(proto)[1:])
figures["protocols"] = {key: {"worst_group": m.worst_group, "average": m.average}
                        for key, m in zip(("heads", "paper_extra_only", "paper"), (by_heads, extra, by_paper))}
openai_templates = dataset.startswith("waterbirds") and repair_protocol == "paper"

# %%
what_we_see(
    "Classifier: " + verdict(openai_templates, "the 80 OpenAI templates", "the notebook's class prompts")
    + f", the same for every row; the notebook's own protocol is *{PROTOCOL_NAMES[repair_protocol]}*.",
    compare(by_paper.worst_group, by_heads.worst_group, "The paper's protocol", "heads only", what="the worst group",
            as_pct=True, digits=1, tolerance=accuracy_tolerance(by_heads.worst_group, n_worst),
            basis="two standard errors of the worst group's accuracy")
    + " " + compare(by_paper.average, by_heads.average, "The paper's protocol", "heads only", what="the average",
                    as_pct=True, digits=1, tolerance=accuracy_tolerance(by_heads.average, len(labels)),
                    basis=f"two standard errors of an accuracy on {len(labels)} images"),
    f"The extra terms alone move the worst group by {pts(extra.worst_group - before.worst_group)} and the average by "
    f"{pts(extra.average - before.average)}"
    + verdict(chosen, f"; adding the chosen heads to them moves the worst group by a further "
                      f"{pts(by_paper.worst_group - extra.worst_group)}.", "."),
    verdict(prov.shaped, "This model was trained with a direct-path penalty on exactly those extra terms "
                         "(`data/models/MODEL_CARD.md`), which keeps their share of the embedding's variance small; "
                         + verdict(abs(extra.worst_group - before.worst_group) > 0.02,
                                   "they still move the worst group, since the penalty bounds their variance, not "
                                   "their effect on this classifier.",
                                   "that they barely move the groups is built in, not found.")
                         + " A real CLIP with a paper preset is the test of the paper's protocol.",
            verdict(prov.tests_the_paper, "This is a web-trained CLIP: the comparison says whether the paper's extra "
                                          "ablations matter on a model nobody shaped.", prov.note)),
);

# %% [markdown]
# ### Exercise 5.2: worst-group accuracy
#
# Each image has a group (bird × background). Write the worst-group accuracy of a set of
# predictions: the accuracy of the group the classifier serves worst.

# %% [markdown] tags=["hint"]
# A group's accuracy is the share of *its own* images classified right (divide by the group's
# size, not by all images); skip groups with no image; the worst is the minimum over groups.

# %% [markdown] tags=["hint"]
# `min(float((pred[groups == g] == labels[groups == g]).float().mean()) for g in torch.unique(groups))`.

# %% tags=["exercise"] kind="implement" difficulty=1 importance=2 minutes=4 number="5.2"
def worst_group_accuracy(pred, labels, groups):
    """The lowest per-group accuracy.

    pred, labels, groups: [N] integer tensors (prediction, true class, group of each image)
    returns a float
    """
    # --- solution ---
    accs = [float((pred[groups == g] == labels[groups == g]).float().mean()) for g in torch.unique(groups)]
    return min(accs)
    # --- end ---


# %%
worst_group_accuracy = check_worst_group_accuracy(worst_group_accuracy)
say(f"worst group before: {worst_group_accuracy.yours} gives "
      f"{worst_group_accuracy(evaluate.predict(), labels, groups):.3f}, helpers.methods.spurious "
      f"{before.worst_group:.3f}; after ablating the chosen heads: "
      f"{worst_group_accuracy(evaluate.predict(**repair(chosen)), labels, groups):.3f} and {after.worst_group:.3f}")

# %% [markdown]
# ### Try it: toggle heads
#
# Tick heads to mean-ablate (start: the chosen ones; under the notebook's repair protocol) and
# watch the group accuracies move.

# %%
all_labels = head_labels((l, h) for l in layers for h in range(H))


def toggle(heads):
    pairs = [parse_head(s) for s in heads]
    m = evaluate(**repair(pairs))
    fig = go.Figure(go.Bar(x=list(m.groups), y=list(m.groups.values()),
                           text=[f"{v:.2f}" for v in m.groups.values()], textposition="auto"))
    fig.update_layout(title=f"{len(pairs)} heads ablated, {PROTOCOL_NAMES[repair_protocol]}: average {pct(m.average)}, "
                            f"worst {pct(m.worst_group)}",
                      yaxis_range=[0, 1], height=330)
    fig.show()


live(toggle, heads=widgets.SelectMultiple(options=all_labels, value=tuple(head_labels(chosen)),
                                          description="ablate", rows=min(12, len(all_labels))))

# %% [markdown]
# ### Can the model tell the classes apart without the background?
#
# Removing a cue only helps if the model has another way to decide. In Waterbirds the bird
# itself is that way; in the synthetic world it is the object's *shape* (the family is a set
# of shapes). So we check how well the model reads the shape of the same scenes (zero-shot),
# and how well a linear probe reads the family from the embedding after the repair. If both sit
# near chance, the model decides the family from the background alone, and ablation can only
# move it towards chance, never repair it.

# %%
if dataset == "world":
    from sklearn.linear_model import LogisticRegression

    from helpers.methods.ablation import accuracy

    shape_clf = zero_shot_classifier(model, tokenizer, world.class_prompts("shape"))
    shape_labels = torch.as_tensor(scenes.factors["shape"])
    shape_acc = accuracy(terms.embeddings(), shape_clf, shape_labels)
    emb = torch.nn.functional.normalize(terms.ablated(**repair(chosen)), dim=-1).cpu().numpy()
    half = len(emb) // 2
    fam = scenes.factors["family"]
    probe = LogisticRegression(max_iter=2000).fit(emb[:half], fam[:half]).score(emb[half:], fam[half:])
    figures["shape_accuracy_on_groups"] = shape_acc
    figures["family_probe_after_ablation"] = probe
    shape_chance = 1 / len(world.SHAPES)
    knows_objects = shape_acc >= 0.5
    what_we_see(
        f"Zero-shot shape accuracy on these scenes is {pct(shape_acc)} (chance {pct(shape_chance)}, "
        f"{ratio(shape_acc / shape_chance, 1)} chance).",
        f"A linear probe for the family on the embedding after the repair (protocol: {PROTOCOL_NAMES[repair_protocol]}) "
        f"reaches {pct(probe)} on held-out scenes (chance 50.0%).",
        verdict(knows_objects, "The model reads the objects, not only the background: a repair is possible.",
                verdict(mismatched < matched,
                        "The model barely reads shape and leans on the background: removing the background can move "
                        "the groups towards chance but not repair them.",
                        "The model barely reads shape, and it showed no lean on the background above: there is "
                        "neither a cue to remove nor another to fall back on.")),
    );

# %% [markdown]
# * Heads that TextSpan labels "about the background" are found from their texts and tags
#   alone; the groups are used only to *measure* the repair.
# * A repair can only work when the model also encodes the object (real CLIPs encode the bird);
#   it should then raise the worst group, while as many random heads from the same layers do
#   not. When a model has no other cue, the probe cell says so: that diagnosis is itself a use
#   of the decomposition.
# * With a paper preset, compare the automatic choice with the paper's hand-picked heads
#   (`helpers.methods.spurious.PAPER_HEADS`), and lay the protocol table beside the paper's Waterbirds
#   results (Gandelsman et al., 2024), which were measured with the paper's protocol.

# %% [markdown] tags=["discuss"]
# How would you choose a threshold on the head score (`min_score`) without looking at the test
# groups?
# Answer:
# On data that is not the test set: a validation split's groups (the paper's Waterbirds has one),
# or scenes drawn for the purpose, choosing the threshold that maximises the validation worst group;
# or without any groups, from the scores' own distribution (a gap between the heads that are
# clearly about the background and the rest, as the "next head" line above reports). Either way
# the test groups measure the result once, after the choice.

# %% [markdown] tags=["discuss"]
# The world plants the cue in the captions too (a habitat named with the family). Propose an
# experiment that tells whether the model's lean on the background comes from the images or from
# the captions.
# Answer:
# A sample answer: train two models on the same images, one with the habitat named in the captions
# and one without (the world's `habitat_caption_p` controls it), and compare their worst groups and
# which heads carry the background. With a fixed model: score the family texts against pure
# background images with no object (a lean learned from captions ties the family words to the
# habitat even with nothing else in the picture), and compare ablating background heads with
# ablating the class texts' background component (projecting it out of the classifier).
