# %% [markdown]
# **The course's explorer.** Every tab answers one question about the model's attention heads:
# the head catalogue names each head of the last layers by texts, CLIP-InterpreT's five analyses
# search and segment through single heads or groups of them, and the last two tabs show the exact
# decomposition the others rest on. Change any control and its output is redrawn.

# %% tags=["parameters"]
preset = ""     # empty: the page's ?preset=..., else $CLIP_APP_PRESET (scripts/app.sh --preset ...), else "offline"
n_images = None  # images to search; None: ?n_images=..., else $CLIP_APP_N_IMAGES, else the preset's
cache_dir = ""  # empty: $CLIP_APP_CACHE, else the course's cache (~/.cache/clip-course/features)

# %%
from helpers.course.app import start_app

start_app(preset=preset, n_images=n_images, cache_dir=cache_dir)
