"""The explorer app: CLIP-InterpreT's five analyses and the course's own views, on one page.

``bash scripts/app.sh`` (or ``python -m helpers.course.app``) builds the caches in the
terminal, then serves ``notebooks/app/explorer.ipynb`` with Voilà: the notebook's outputs as a
page, no code shown. The notebook is three lines; everything is here:

* :func:`app_config` -- which model and images: the ``preset`` switch of the notebooks, taken
  from the notebook's parameters, else the page's query string (``?preset=ViT-B-16+LAION``,
  which Voilà hands the kernel as ``QUERY_STRING``), else ``$CLIP_APP_PRESET`` (what
  ``scripts/app.sh --preset ...`` sets), else the offline default;
* :class:`Explorer` -- loads the model, the gallery of images (:mod:`helpers.data.gallery`),
  the last layers' head terms and the generated head catalogue (:mod:`helpers.methods.catalogue`,
  cached on disk under the model's weights fingerprint: the first run computes them with
  progress bars, later runs read them back), and answers every analysis with data;
* ``show_*`` functions -- draw one analysis (plotly figures, HTML tables and thumbnails);
* :func:`build_app` -- the page: a header, an upload box and one tab per analysis, each a
  :func:`helpers.course.ui.live_widget` (controls above an output redrawn on every change).

The analyses: CLIP-InterpreT's five (property-based image search, per-head topic segmentation,
contrastive segmentation of two texts, per-head nearest neighbours of an image and of a text),
the head catalogue that replaces its hand-written table, and what the course adds: the exact
per-patch map with its sum check (map + CLS term + rest = similarity), the decomposition's layer
view, and the paper's protocol beside the course's where it changes an answer (neighbours by the
reference code's dot product on its cosine scale, or by cosine; TextSpan's two spans).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "ENV_PRESET",
    "ENV_N_IMAGES",
    "ENV_CACHE",
    "NOTEBOOK",
    "VOILA_ARGS",
    "TABS",
    "AppConfig",
    "app_config",
    "Neighbours",
    "Explorer",
    "build_app",
    "setup_process",
    "start_app",
    "main",
]

ENV_PRESET = "CLIP_APP_PRESET"
"""Environment variable naming the preset the app serves (``scripts/app.sh --preset`` sets it)."""
ENV_N_IMAGES = "CLIP_APP_N_IMAGES"
"""Environment variable: how many images the searches run over (default: the preset's notebook 3 count)."""
ENV_CACHE = "CLIP_APP_CACHE"
"""Environment variable: where the head terms and the catalogue are cached (default: the course's cache)."""

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "app" / "explorer.ipynb"
"""The app's notebook, which Voilà serves."""

VOILA_ARGS = ("--VoilaConfiguration.show_tracebacks=True",
              '--VoilaConfiguration.extension_denylist=["jupyterlab-jupytext"]')
"""Options :func:`main` gives ``voila``: a failed start shows its reason on the page; JupyterLab's
jupytext extension (installed for the notebooks' sources) is not loaded into the page, where it
cannot start."""

SCORES = {"cosine": "cosine (course)", "dot": "dot product, reference scale (paper)"}
SPAN_NAMES = {"numerical": "numerical span (course)", "paper": "top-80 span (paper)"}


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppConfig:
    """What the app serves (see :func:`app_config`).

    Attributes:
        preset: the notebooks' preset (:data:`helpers.course.presets.PRESETS`).
        model_name, pretrained, dataset, device, batch_size: as the preset sets them for
            notebook 3 (the images the searches run over and the head catalogue is built on).
        n_images: images in the gallery.
        pool_size: texts drawn from the tagged pool, each property keeping its share (0: every
            text; the preset's value for notebook 3).
        paper: the paper's protocol by default (the papers' presets) rather than the course's.
        last_layers: heads of the last layers in the catalogue (the paper's four).
        n_texts: TextSpan texts per head; ``n_role``: how many of them name its role.
        n_choices: gallery images offered in the image lists (every image is searched).
        cache_dir: where head terms, text embeddings and the catalogue are cached.
        threads: torch threads of the app's process (``None``: torch's default).
        sources: where ``preset`` and ``n_images`` came from.
    """

    preset: str
    model_name: str
    pretrained: str
    dataset: str
    n_images: int
    device: str
    batch_size: int
    paper: bool
    cache_dir: Path
    pool_size: int = 0
    last_layers: int = 4
    n_texts: int = 10
    n_role: int = 5
    n_choices: int = 48
    seed: int = 0
    threads: int | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return f"{self.model_name}/{self.pretrained or 'default'}"


def _query(environ: Mapping[str, str]) -> dict[str, str]:
    """The page's query string (Voilà passes it to the kernel as ``QUERY_STRING``)."""
    parsed = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=False)
    return {k: v[-1] for k, v in parsed.items()}


def _count(value: Any, where: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(f"n_images must be a whole number, got {value!r} ({where})") from None
    if n < 2:
        raise ValueError(f"n_images must be at least 2 (a search needs other images), got {n} ({where})")
    return n


GALLERY_IMAGES = 1000
"""The gallery's size when the preset's notebooks take a whole dataset (the full presets stream all
of ImageNet validation through notebooks 2-3; the explorer searches a sample of it)."""


def app_config(preset: str = "", n_images: int | None = None, cache_dir: str | os.PathLike[str] = "", *,
               environ: Mapping[str, str] | None = None, threads: int | None = None, **fields: Any) -> AppConfig:
    """The app's settings: ``preset`` and ``n_images`` from the first of the arguments, the
    page's query string (``?preset=...&n_images=...``), ``$CLIP_APP_PRESET`` /
    ``$CLIP_APP_N_IMAGES``, and the preset's own values (notebook 3's), in that order.

    The offline default runs on one torch thread unless ``threads`` says otherwise: its
    tensors are so small that a second thread only adds waiting. Other keywords set
    :class:`AppConfig` fields (``last_layers``, ``n_texts``, ``n_choices``, ...).

    Raises:
        ValueError: an unknown preset (the message lists the known ones), a bad ``n_images``.
    """
    from ..engine.download import cache_root
    from .presets import get_preset, resolve

    env = os.environ if environ is None else environ
    query = _query(env)
    sources = {}
    if preset:
        sources["preset"] = "parameter"
    elif query.get("preset"):
        preset, sources["preset"] = query["preset"], "query string"
    elif env.get(ENV_PRESET):
        preset, sources["preset"] = env[ENV_PRESET], f"${ENV_PRESET}"
    else:
        preset, sources["preset"] = "offline", "default"
    get_preset(preset)  # a clear error for an unknown name
    if n_images is not None:
        n, sources["n_images"] = _count(n_images, "parameter"), "parameter"
    elif query.get("n_images"):
        n, sources["n_images"] = _count(query["n_images"], "query string"), "query string"
    elif env.get(ENV_N_IMAGES):
        n, sources["n_images"] = _count(env[ENV_N_IMAGES], f"${ENV_N_IMAGES}"), f"${ENV_N_IMAGES}"
    else:
        n, sources["n_images"] = None, "preset"
    s = resolve(preset, "03", model_name="", pretrained="", dataset="", n_images=n, batch_size=None, device="",
                protocol="", pool_size=None)
    dataset = s.dataset
    if dataset == "imagenet" and not env.get("CLIP_COURSE_IMAGENET"):
        dataset = "imagenette"  # a gallery to explore, downloaded on demand; ImageNet val only when a copy is named
    cache = Path(cache_dir or env.get(ENV_CACHE) or cache_root() / "features")
    if threads is None and preset == "offline":
        threads = 1
    return AppConfig(preset=preset, model_name=s.model_name, pretrained=s.pretrained or "", dataset=dataset,
                     n_images=int(s.n_images if s.n_images is not None else GALLERY_IMAGES), device=s.device, batch_size=int(s.batch_size),
                     paper=s.protocol == "paper", cache_dir=cache, pool_size=int(s.pool_size or 0), threads=threads,
                     sources=sources, **fields)


# ----------------------------------------------------------------------------------------------
# The explorer: data for every analysis
# ----------------------------------------------------------------------------------------------


@dataclass
class Neighbours:
    """Images found by a search, with the other protocol's answer beside them.

    Attributes:
        indices, scores: the gallery images found, most similar first, and their scores.
        score: ``"cosine"`` or ``"dot"`` (the ranking used).
        other: what the other score finds (same ``k``).
        heads: the heads searched through (stack indices).
        agreement: the share of the found images that share the query's value of the searched
            property, and ``chance``: the share among the other images (world scenes whose
            factors include the property; ``None`` otherwise).
    """

    indices: list[int]
    scores: list[float]
    score: str
    other: list[int]
    heads: list[int]
    agreement: float | None = None
    chance: float | None = None

    @property
    def shared(self) -> int:
        """How many of the found images the other score finds too."""
        return len(set(self.indices) & set(self.other))


class Stopwatch:
    """Wall-clock seconds of named stages."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = time.perf_counter() - t0
        return out


class Explorer:
    """Everything the app shows, as data: the model, the gallery, the head terms of the last
    layers, the head catalogue, the sample photos and the uploads.

    Images are named by keys: ``"g12"`` (gallery image 12), ``"photo:chelsea"`` (a
    scikit-image sample photo), ``"upload:1:name.png"`` (an uploaded image).
    """

    def __init__(self, config: AppConfig, *, progress: bool = True) -> None:
        from ..data.gallery import load_gallery
        from ..data.pools import load_pool
        from ..engine.cache import weights_fingerprint
        from ..engine.images import sample_photos
        from ..engine.models import load_model, model_info, world_of
        from ..engine.text import cached_text_embeddings
        from ..methods.catalogue import build_catalogue, cached_head_terms, cached_textspan, pool_digest

        self.config = config
        self.watch = watch = Stopwatch()
        self.computed: dict[str, bool] = {}
        self.model, self.preprocess, self.tokenizer = watch("model", lambda: load_model(
            config.model_name, config.pretrained or None, device=config.device))
        self.info = info = model_info(self.model)
        if info.pooling != "tok":
            from ..engine.support import UnsupportedModelError

            raise UnsupportedModelError(
                f"{config.model_id}: the explorer follows heads through the class token; this tower pools "
                f"with {info.pooling!r} (notebooks 1, 4 and 6 handle SigLIP towers)")
        self.device = next(self.model.parameters()).device
        self.gallery = watch("gallery", lambda: load_gallery(
            config.dataset, n_images=config.n_images, preprocess=self.preprocess, seed=config.seed,
            world_name=world_of(self.model)))
        weights = watch("fingerprint", lambda: weights_fingerprint(self.model))
        self.layers = list(range(max(0, info.n_layers - config.last_layers), info.n_layers))
        self.terms, self.computed["head terms"] = watch("head terms", lambda: cached_head_terms(
            self.model, self.gallery.task.dataset, layers=self.layers, dataset_id=self.gallery.dataset_id,
            cache_dir=config.cache_dir, batch_size=config.batch_size, progress=progress,
            model_name=config.model_id, weights=weights))
        self.pool = load_pool(self.gallery.pool_name).sample(config.pool_size, seed=config.seed)
        self.pool_emb = watch("text pool", lambda: cached_text_embeddings(
            self.model, self.tokenizer, self.pool.texts, model_id=config.model_id, cache_dir=str(config.cache_dir),
            progress=progress))
        self.stacks = {"cosine": self.terms.stack("raw")}  # what each neighbour score ranks
        key = dict(model=config.model_id, weights=weights, dataset=self.gallery.dataset_id, layers=self.layers,
                   pool=self.pool.name, pool_digest=pool_digest(self.pool))
        n_fit = min(config.n_texts, len(self.pool), len(self.gallery))
        results, self.computed["catalogue"] = watch("catalogue", lambda: cached_textspan(
            self.stacks["cosine"], self.pool_emb, n_fit, key=key, cache_dir=config.cache_dir, progress=progress))
        entanglement = "paper" if config.paper else "within_head"
        self.catalogues = {sp: build_catalogue(r, self.pool, self.terms.labels, n_role=config.n_role, span=sp,
                                               entanglement=entanglement) for sp, r in results.items()}
        self.span = "paper" if config.paper else "numerical"
        self.score = "dot" if config.paper else "cosine"
        self.photos = watch("photos", sample_photos)
        self.uploads: dict[str, Image.Image] = {}
        self._query_terms: dict[str, Any] = {}
        self._texts: dict[str, torch.Tensor] = {}

    # -- what is loaded --------------------------------------------------------------------------

    @property
    def catalogue(self) -> Any:
        """The head catalogue of the protocol's span."""
        return self.catalogues[self.span]

    @property
    def n_heads(self) -> int:
        return len(self.terms.labels)

    def head_choices(self) -> list[tuple[str, int]]:
        """``(label, stack index)`` of every catalogued head, with its role and purity."""
        return [(f"{r.label} · {r.property or 'no role'} ({r.purity:.1f})", i)
                for i, r in enumerate(self.catalogue.roles)]

    def best_head(self, property: str | None = None) -> int:
        """The stack index of the purest head (of ``property``, when given); ties: most variance."""
        roles = self.catalogue.roles
        cands = [i for i, r in enumerate(roles) if property is None or r.property == property]
        if not cands:
            raise ValueError(f"no head has the role {property!r}")
        return max(cands, key=lambda i: (roles[i].purity, roles[i].variance))

    def property_choices(self) -> list[tuple[str, str]]:
        counts = self.catalogue.scores.heads_per_property
        return [(f"{p} ({counts[p]} head{'s' if counts[p] > 1 else ''})", p) for p in self.catalogue.properties()]

    def image_choices(self) -> list[tuple[str, str]]:
        """``(label, key)`` of the images offered in the image lists."""
        g = self.gallery
        out = [(f"{i}: {g.caption(i)}", f"g{i}") for i in range(min(self.config.n_choices, len(g)))]
        out += [(f"photo: {name}", f"photo:{name}") for name in self.photos]
        out += [(f"upload: {key.split(':', 2)[2]}", key) for key in self.uploads]
        return out

    # -- images ------------------------------------------------------------------------------------

    def gallery_index(self, key: str) -> int | None:
        """The gallery index of an image key (``None`` for photos and uploads)."""
        if key.startswith("g") and key[1:].isdigit():
            i = int(key[1:])
            if i >= len(self.gallery):
                raise KeyError(f"image {key!r}: the gallery has {len(self.gallery)} images")
            return i
        return None

    def pil(self, key: str) -> Image.Image:
        """The image as stored (before the model's preprocessing)."""
        i = self.gallery_index(key)
        if i is not None:
            return self.gallery.image(i)
        kind, _, name = key.partition(":")
        if kind == "photo" and name in self.photos:
            return self.photos[name]
        if kind == "upload" and key in self.uploads:
            return self.uploads[key]
        raise KeyError(f"no image {key!r}")

    def view(self, key: str) -> Image.Image:
        """The picture the model sees (resized, centre-cropped): what maps are drawn over."""
        from ..engine.images import model_view

        return model_view(self.model, self.pil(key), self.preprocess)

    def mask(self, key: str) -> np.ndarray | None:
        """The true object mask (world scenes), when it lines up with :meth:`view`."""
        i = self.gallery_index(key)
        if i is None:
            return None
        m = self.gallery.mask(i)
        return m if m is not None and m.shape == self.view(key).size[::-1] else None

    def batch(self, key: str) -> torch.Tensor:
        """The preprocessed image ``[1, 3, H, W]`` on the model's device."""
        i = self.gallery_index(key)
        x = self.gallery.task.dataset[i][0] if i is not None else self.preprocess(self.pil(key))
        return x[None].to(self.device)

    def add_upload(self, name: str, data: bytes) -> str:
        """Check and keep an uploaded file; returns its image key.

        Raises:
            ValueError: the file is not an image (the message says why, naming the file).
        """
        from ..engine.images import image_from_bytes

        img = image_from_bytes(data, name=f"'{name}'")
        key = f"upload:{len(self.uploads) + 1}:{name}"
        self.uploads[key] = img
        return key

    # -- terms and texts -----------------------------------------------------------------------------

    def stack(self, score: str) -> torch.Tensor:
        """The head stack a score ranks: raw terms for the cosine, the reference code's cosine
        scale for its dot product."""
        if score not in self.stacks:
            if score != "dot":
                raise ValueError(f"score must be 'cosine' or 'dot', got {score!r}")
            self.stacks["dot"] = self.terms.stack("paper")
        return self.stacks[score]

    def query(self, key: str, score: str) -> tuple[torch.Tensor, int | None]:
        """The image's per-head terms ``[Hs, d]`` on the score's scale, and the gallery index to
        leave out of its search (itself), if it is a gallery image."""
        from ..methods.catalogue import head_terms

        self.stack(score)
        i = self.gallery_index(key)
        if i is not None:
            return self.stacks[score][:, i], i
        if key not in self._query_terms:
            self._query_terms[key] = head_terms(self.model, self.batch(key), self.layers)
        scale = "paper" if score == "dot" else "raw"
        return self._query_terms[key].stack(scale)[:, 0], None

    def text(self, text: str) -> torch.Tensor:
        """A text's embedding ``[d]`` (remembered)."""
        from ..engine.text import encode_texts

        text = text.strip()
        if not text:
            raise ValueError("type a text")
        if text not in self._texts:
            self._texts[text] = encode_texts(self.model, self.tokenizer, [text])[0]
        return self._texts[text]

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.stack([self.text(t) for t in texts])

    # -- the analyses ------------------------------------------------------------------------------------

    def _other(self, score: str) -> str:
        return "dot" if score == "cosine" else "cosine"

    def _search(self, heads: list[int], key: str, k: int, score: str, centre: bool) -> dict[str, Any]:
        from ..methods.heads import terms_neighbours

        found = {}
        for sc in (score, self._other(score)):
            q, skip = self.query(key, sc)
            idx, val = terms_neighbours(self.stacks[sc], heads, q, k, centre=centre, score=sc, exclude=skip)
            found[sc] = (idx.tolist(), val.tolist())
        return found

    def property_search(self, property: str, key: str, *, k: int = 6, min_purity: float = 0.5,
                        score: str = "cosine") -> Neighbours:
        """CLIP-InterpreT's property-based image search: the gallery images nearest to the query
        through the summed terms of the heads whose role is ``property`` (with at least
        ``min_purity``), centred over the gallery as in notebook 3."""
        heads = self.catalogue.heads_for(property, min_purity)
        if not heads:
            best = max((r.purity for r in self.catalogue.roles if r.property == property), default=None)
            if best is None:
                raise ValueError(f"no head has the role {property!r}")
            raise ValueError(f"no {property} head has a purity of at least {min_purity:.1f} (the purest has "
                             f"{best:.1f}): lower the purity")
        found = self._search(heads, key, k, score, centre=True)
        idx, val = found[score]
        out = Neighbours(idx, val, score, found[self._other(score)][0], heads)
        i, factors = self.gallery_index(key), self.gallery.factors
        if i is not None and factors is not None and property in factors:
            v = factors[property]
            out.agreement = float(np.mean(v[idx] == v[i]))
            out.chance = float((np.sum(v == v[i]) - 1) / (len(v) - 1))
        return out

    def head_image_neighbours(self, head: int, key: str, *, k: int = 6, score: str = "cosine") -> Neighbours:
        """CLIP-InterpreT's per-head nearest neighbours of an image: ranked by one head's terms."""
        found = self._search([head], key, k, score, centre=False)
        idx, val = found[score]
        return Neighbours(idx, val, score, found[self._other(score)][0], [head])

    def head_text_neighbours(self, head: int, text: str, *, k: int = 6, score: str = "cosine") -> Neighbours:
        """CLIP-InterpreT's per-head nearest neighbours of a text: the images whose term of one
        head is nearest to the text's embedding."""
        from ..methods.heads import head_text_neighbours

        t = self.text(text)
        found = {}
        for sc in (score, self._other(score)):
            idx, val = head_text_neighbours(self.stack(sc), head, t, k, score=sc)
            found[sc] = (idx.tolist(), val.tolist())
        idx, val = found[score]
        return Neighbours(idx, val, score, found[self._other(score)][0], [head])

    def head_texts(self, head: int, n: int = 4) -> list[str]:
        """The head's first ``n`` TextSpan texts (of the protocol's span)."""
        return self.catalogue.texts[head][:n]

    def topic_maps(self, head: int, key: str, texts: Sequence[str], *, subtract_mean: bool = True) -> torch.Tensor:
        """CLIP-InterpreT's topic segmentation: one head's map of each text ``[M, gh, gw]``."""
        from ..methods.spatial import topic_segmentation

        texts = list(texts)
        if subtract_mean and len(texts) < 2:
            raise ValueError("subtracting the mean needs at least two texts (with one, the map is 0)")
        layer, h = self.terms.labels[head]
        return topic_segmentation(self.model, self.batch(key), layer, h, self.texts(texts),
                                  subtract_mean=subtract_mean)[0]

    def maps(self, key: str, texts: Sequence[str], *, layers: Sequence[int] | None = None,
             heads: Sequence[int] | None = None, contrast: bool = False) -> Any:
        """The exact per-patch maps of the texts (:func:`~helpers.methods.spatial.heatmaps`): a
        :class:`~helpers.methods.spatial.HeatmapResult` whose maps + CLS term + rest add up to
        the similarities. With ``contrast`` (two texts ``a``, ``b``) a third text ``a - b`` is
        scored in the same pass: the contrastive map, exactly ``map(a) - map(b)``."""
        from ..methods.spatial import heatmaps

        E = self.texts(texts)
        if contrast:
            if E.shape[0] != 2:
                raise ValueError("a contrast takes two texts")
            E = torch.cat([E, (E[0] - E[1])[None]])
        return heatmaps(self.model, self.batch(key), E, layers=None if layers is None else list(layers),
                        heads=None if heads is None else list(heads))

    def layer_view(self, key: str, text: str, *, layer: int | None = None) -> tuple[list[str], list[float], float]:
        """The decomposition's layer view: each component's (embedding, every attention layer
        and MLP, the constant) contribution to the image-text cosine, or with ``layer`` each head
        of that layer. Returns ``(names, contributions, cosine)``; with every component they add
        up to the cosine."""
        from ..engine.decompose import Decomposer
        from ..engine.labels import head_label

        t = self.text(text)
        with torch.no_grad():
            d = Decomposer(self.model)(self.batch(key), heads=layer is not None).normalized()
        cosine = float(d.embedding[0] @ t)
        if layer is None:
            comps = d.components()
            return list(comps.labels["component"]), comps.score(t).data[0, :, 0].tolist(), cosine
        vals = d.head_terms().select(image=0, layer=layer).score(t).data[:, 0].tolist()
        return [head_label(layer, h) for h in range(len(vals))], vals, cosine


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


def _png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _thumb(img: Image.Image, px: int = 104) -> Image.Image:
    w, h = img.size
    f = px / max(w, h)
    small = max(w, h) <= 128  # pixel art (the world's scenes): keep the pixels sharp
    return img.resize((max(1, round(w * f)), max(1, round(h * f))),
                      Image.Resampling.NEAREST if small else Image.Resampling.BICUBIC)


def _strip(items: Sequence[tuple[Image.Image, str, bool]], px: int = 104) -> str:
    """Thumbnails in a row, each with a caption; ``True`` marks a thumbnail with an orange frame."""
    cells = []
    for img, caption, marked in items:
        frame = "3px solid #e67e22" if marked else "3px solid transparent"
        cells.append(f'<figure style="margin:0 6px 6px 0;width:{px + 6}px">'
                     f'<img src="data:image/png;base64,{_png(_thumb(img, px))}" alt="" '
                     f'style="border:{frame};image-rendering:pixelated;max-width:{px}px"/>'
                     f'<figcaption style="font-size:11px;line-height:1.2">{caption}</figcaption></figure>')
    return '<div style="display:flex;flex-wrap:wrap;align-items:flex-start">' + "".join(cells) + "</div>"


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _show_html(text: str) -> None:
    from IPython.display import HTML, display

    display(HTML(text))


def _other_line(found: Neighbours) -> str:
    other = "dot" if found.score == "cosine" else "cosine"
    k = len(found.indices)
    if found.shared == k:
        return f"The other protocol ({SCORES[other]}) finds the same {k} images."
    return (f"<b>The protocol changes the answer:</b> the other protocol ({SCORES[other]}) finds only "
            f"{found.shared} of these {k}; the images it does not find are framed in orange.")


def _neighbour_strip(ex: Explorer, found: Neighbours, query: str | None = None) -> str:
    items = []
    if query is not None:
        items.append((ex.view(query) if ex.gallery_index(query) is None else ex.pil(query),
                      "<b>query</b>", False))
    other = set(found.other)
    for i, s in zip(found.indices, found.scores):
        items.append((ex.gallery.image(i), f"{i}: {_esc(ex.gallery.caption(i))}<br>{found.score} {s:.3f}",
                      i not in other))
    return _strip(items)


def show_property_search(ex: Explorer, property: str, image: str, min_purity: float, k: int, score: str) -> None:
    """Property-based image search (CLIP-InterpreT), drawn."""
    found = ex.property_search(property, image, k=k, min_purity=min_purity, score=score)
    names = ", ".join(ex.catalogue.roles[h].label for h in found.heads)
    lines = [f"Through the {len(found.heads)} {_esc(property)} head{'s' if len(found.heads) > 1 else ''} "
             f"({names}; purity at least {min_purity:.1f}), ranked by {SCORES[score]}:",
             _neighbour_strip(ex, found, image), _other_line(found)]
    if found.agreement is not None:
        value = ex.gallery.value(ex.gallery_index(image), property)
        lines.append(f"{round(found.agreement * k)} of the {k} images share the query's {_esc(property)} "
                     f"(<i>{_esc(value)}</i>); among all the other images, {found.chance:.0%} do.")
    _show_html("<br>".join(lines))


def show_head_image_neighbours(ex: Explorer, head: int, image: str, k: int, score: str) -> None:
    """Per-head nearest neighbours of an image (CLIP-InterpreT), drawn."""
    r = ex.catalogue.roles[head]
    found = ex.head_image_neighbours(head, image, k=k, score=score)
    _show_html(f"Nearest images through <b>{r.label}</b> alone (role {_esc(r.property)}, purity {r.purity:.1f}; "
               f"its first texts: <i>{_esc(' | '.join(ex.head_texts(head, 3)))}</i>), ranked by {SCORES[score]}:"
               + _neighbour_strip(ex, found, image) + _other_line(found))


def show_head_text_neighbours(ex: Explorer, head: int, text: str, k: int, score: str) -> None:
    """Per-head nearest neighbours of a text (CLIP-InterpreT), drawn."""
    r = ex.catalogue.roles[head]
    text = text.strip() or ex.head_texts(head, 1)[0]
    found = ex.head_text_neighbours(head, text, k=k, score=score)
    _show_html(f"The images <b>{r.label}</b> (role {_esc(r.property)}) writes most like <i>'{_esc(text)}'</i>, "
               f"ranked by {SCORES[score]}:" + _neighbour_strip(ex, found) + _other_line(found))


def _split_texts(texts: str) -> list[str]:
    return [t.strip() for t in texts.split(",") if t.strip()]


def show_topic(ex: Explorer, head: int, image: str, texts: str, subtract_mean: bool) -> None:
    """Per-head topic segmentation (CLIP-InterpreT), drawn."""
    from .plots import maps_figure

    r = ex.catalogue.roles[head]
    chosen = _split_texts(texts) or ex.head_texts(head, 4)
    maps = ex.topic_maps(head, image, chosen, subtract_mean=subtract_mean)
    how = "each text minus the texts' mean" if subtract_mean else "each text as it is"
    fig = maps_figure(ex.view(image), {t: maps[i] for i, t in enumerate(chosen)}, mask=ex.mask(image),
                      title=f"{r.label} ({r.property}): where this head finds each text ({how})")
    fig.show()
    sums = maps.sum((-2, -1))
    top = int(sums.argmax())
    own = "" if texts.strip() else "The texts are the head's own TextSpan texts; type others, separated by commas."
    _show_html(f"Summed over the patches, {r.label}'s map is largest for <i>'{_esc(chosen[top])}'</i> "
               f"({float(sums[top]):+.4f}). {own}")


def _layer_heads(ex: Explorer, layers: Sequence[int], head: str) -> tuple[list[int], list[int] | None, str]:
    chosen = list(range(layers[0], layers[1] + 1))
    heads = None if head == "all" else [int(head)]
    what = f"layers {chosen[0]}–{chosen[-1]}, " + ("every head" if heads is None else f"head {heads[0]}")
    return chosen, heads, what


def show_contrastive(ex: Explorer, image: str, text_a: str, text_b: str, layers: Sequence[int], head: str) -> None:
    """Contrastive segmentation of two texts (CLIP-InterpreT), drawn: map(a) - map(b) in one pass."""
    from .plots import maps_figure

    a, b = text_a.strip(), text_b.strip()
    if not a or not b:
        raise ValueError("type two texts")
    chosen, heads, what = _layer_heads(ex, layers, head)
    res = ex.maps(image, [a, b], layers=chosen, heads=heads, contrast=True)
    m = res.patch_maps[0]
    gap = float((m[2] - (m[0] - m[1])).abs().max())
    fig = maps_figure(ex.view(image), {f"'{a}' − '{b}'": m[2], f"'{a}'": m[0], f"'{b}'": m[1]},
                      mask=ex.mask(image), title=f"Where the image looks more like '{a}' than '{b}' ({what})")
    fig.show()
    _show_html(f"Red: the patches that make the image look more like <i>'{_esc(a)}'</i>; blue: more like "
               f"<i>'{_esc(b)}'</i>. The contrast is one map, scored against the difference of the two texts; it "
               f"equals the difference of their maps to within {gap:.1e}. Cosines: '{_esc(a)}' "
               f"{float(res.similarity[0, 0]):.4f}, '{_esc(b)}' {float(res.similarity[0, 1]):.4f}.")


def show_exact_map(ex: Explorer, image: str, text: str, layers: Sequence[int], head: str) -> None:
    """The course's exact per-patch map with its sum check, drawn."""
    from .plots import maps_figure

    if not text.strip():
        raise ValueError("type a text")
    chosen, heads, what = _layer_heads(ex, layers, head)
    res = ex.maps(image, [text.strip()], layers=chosen, heads=heads)
    m, cls, rest, sim = res.patch_maps[0, 0], float(res.cls[0, 0]), float(res.rest[0, 0]), float(res.similarity[0, 0])
    total = float(m.sum()) + cls + rest
    fig = maps_figure(ex.view(image), {f"'{text.strip()}'": m}, mask=ex.mask(image),
                      title=f"Per-patch contributions to the cosine with '{text.strip()}' ({what})", panel_size=260)
    fig.show()
    _show_html(
        f"<b>Sum check:</b> map {float(m.sum()):+.4f} + CLS term {cls:+.4f} + rest {rest:+.4f} = {total:.4f}; "
        f"the cosine is {sim:.4f} (difference {abs(total - sim):.1e}). The map holds what the chosen heads read from "
        "the image's patches; the CLS term what they read from the class token itself (no patch, so no place on "
        "the map); the rest is everything else (embedding, MLPs, the other heads, the bias).")


def show_layer_view(ex: Explorer, image: str, text: str, by_head: bool, layer: int) -> None:
    """The decomposition's layer view, drawn: every component's share of the cosine."""
    import plotly.graph_objects as go

    if not text.strip():
        raise ValueError("type a text")
    names, vals, cosine = ex.layer_view(image, text, layer=layer if by_head else None)
    colours = ["#1f77b4" if n.startswith(("attn", "L")) else "#ff7f0e" for n in names]
    fig = go.Figure(go.Bar(x=names, y=vals, marker_color=colours))
    if by_head:
        title = f"Heads of layer {layer}: contributions to the cosine with '{text.strip()}' ({cosine:.4f} in all)"
    else:
        title = f"Every component's contribution to the cosine with '{text.strip()}': they add up to {cosine:.4f}"
    fig.update_layout(title=title, yaxis_title="contribution to the cosine", height=360, width=900,
                      margin=dict(l=60, r=20, t=50, b=40))
    fig.show()
    total = sum(vals)
    _show_html(f"Sum of the bars: {total:.4f}; " + (
        f"the cosine: {cosine:.4f} (difference {abs(total - cosine):.1e}). Attention layers in blue, "
        "the embedding, MLPs and the constant in orange." if not by_head else
        f"layer {layer}'s attention term in the component view; the cosine of the whole image is {cosine:.4f}."))


def show_catalogue(ex: Explorer, role: str, span: str, order: str) -> None:
    """The generated head catalogue, as a table with its scores."""
    cat = ex.catalogues[span]
    other = ex.catalogues["paper" if span == "numerical" else "numerical"]
    s = cat.scores
    changed = sum(a.property != b.property for a, b in zip(cat.roles, other.roles))
    rows = [r for r in cat.rows() if role == "all" or r["role"] == role]
    key = {"layer and head": lambda r: r["index"], "purity": lambda r: (-r["purity"], -r["variance"]),
           "variance explained": lambda r: -r["variance"]}[order]
    rows.sort(key=key)
    n_role = ex.config.n_role
    cells = []
    for r in rows:
        texts = " · ".join(
            f'<span style="color:{"#1a7f37" if t == r["role"] else "#666"};'
            f'{"font-weight:600" if j < n_role else "opacity:0.75"}" title="{_esc(t)}">{_esc(x)}</span>'
            for j, (x, t) in enumerate(zip(r["texts"], r["tags"])))
        cells.append(f"<tr><td><b>{r['head']}</b></td><td style='text-align:left'>{_esc(r['role'])}</td>"
                     f"<td>{r['purity']:.1f}</td><td>{r['variance']:.2f}</td><td>{r['properties_covered']}</td><td>{r['heads_sharing']}</td>"
                     f"<td style='text-align:left'>{texts}</td></tr>")
    head = ("<tr><th>head</th><th style='text-align:left'>role</th><th>purity</th><th>variance explained</th>"
            "<th>properties covered</th><th>other heads with this role</th><th style='text-align:left'>TextSpan texts (first "
            f"{n_role} in bold name the role; green: about the role)</th></tr>")
    summary = (f"<b>{cat.pool_name}</b> pool, {SPAN_NAMES[span]}: association {s.association:.2f} (share of a "
               f"head's texts about its role); entanglement across heads (CLIP-InterpreT's) "
               f"{s.across_heads_entanglement:.2f} (chance that two heads share their role), within heads (the "
               f"course's) {s.within_head_entanglement:.2f} (how many properties one head mixes). With the "
               f"{SPAN_NAMES['paper' if span == 'numerical' else 'numerical']}, "
               + (f"<b>{changed} of {len(cat)} heads change role</b>." if changed else
                  f"every one of the {len(cat)} heads keeps its role."))
    _show_html(summary)
    _roles_figure(cat, role).show()
    _show_html('<table style="border-collapse:collapse;font-size:12px;margin-top:6px">' + head
               + "".join(cells) + "</table>" + ("" if rows else f"<p>No head has the role {_esc(role)}.</p>"))


def _roles_figure(cat: Any, role: str) -> Any:
    """Heads per role and layer, the chosen role highlighted."""
    import plotly.graph_objects as go

    layers = sorted({r.layer for r in cat.roles})
    props = cat.properties() + (["(none)"] if any(r.property is None for r in cat.roles) else [])
    fig = go.Figure()
    for layer in layers:
        counts = [sum(1 for r in cat.roles if r.layer == layer and (r.property or "(none)") == p) for p in props]
        fig.add_trace(go.Bar(x=props, y=counts, name=f"layer {layer}",
                             marker_line_width=[3 if p == role else 0 for p in props], marker_line_color="#e67e22"))
    fig.update_layout(barmode="stack", height=230, width=620, margin=dict(l=50, r=10, t=40, b=30),
                      title="Heads per role, by layer", yaxis_title="heads", legend=dict(orientation="v"))
    return fig


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------


TABS = ("Head catalogue", "Property search", "Topic segmentation", "Contrastive", "Image neighbours",
        "Text neighbours", "Exact map", "Layer view")
"""The app's tabs, in order."""

INTROS = {
    "Head catalogue": "Every head of the last layers, named by its TextSpan texts from a tagged pool (computed for "
                      "this model, in place of CLIP-InterpreT's hand-written table).",
    "Property search": "Nearest images to the query as seen only by the heads of one property (CLIP-InterpreT's "
                       "property-based image search).",
    "Topic segmentation": "Where one head finds each of several texts (CLIP-InterpreT's topic segmentation).",
    "Contrastive": "Where the image looks more like one text than another (CLIP-InterpreT's contrastive "
                   "segmentation).",
    "Image neighbours": "Nearest images to the query through one head alone (CLIP-InterpreT's per-head nearest "
                        "neighbours of an image).",
    "Text neighbours": "The images one head writes most like a text (CLIP-InterpreT's per-head nearest neighbours "
                       "of a text); empty: the head's first TextSpan text.",
    "Exact map": "The per-patch split of an image-text cosine, exact: map + CLS term + rest = cosine.",
    "Layer view": "The cosine split over the embedding, every attention layer and MLP, and the constant; or over "
                  "the heads of one layer.",
}


def _default_texts(ex: Explorer) -> tuple[str, str]:
    """Two texts about the first gallery image: its object and its background (world scenes), or
    its class and a generic background."""
    g = ex.gallery
    if g.factors is not None:
        return (f"a {g.value(0, 'colour')} {g.value(0, 'shape')}", f"a photo of {g.value(0, 'background')}")
    return f"a photo of a {g.caption(0)}", "the background"


def build_app(ex: Explorer) -> Any:
    """The page: a header, an upload box and one tab per analysis (each a
    :func:`~helpers.course.ui.live_widget`; a tab draws when it is first shown, so the page comes
    up after one). Returns the ``VBox``; its ``.panels`` maps each tab name to its live widget,
    ``.tabs`` is the ``Tab``, ``.upload`` and ``.status`` the upload box and its message."""
    import ipywidgets as widgets

    from .ui import live_widget

    L, H = ex.info.n_layers, ex.info.n_heads
    images = ex.image_choices()
    first = images[0][1]
    text_a, text_b = _default_texts(ex)
    best = ex.best_head()
    props = ex.property_choices()

    def image_list() -> Any:
        return widgets.Dropdown(options=images, value=first, description="image")

    def heads_list(value: int = best) -> Any:
        return widgets.Dropdown(options=ex.head_choices(), value=value, description="head")

    def score_switch() -> Any:
        return widgets.ToggleButtons(options=[(v, k) for k, v in SCORES.items()], value=ex.score,
                                     description="protocol", style={"button_width": "auto"})

    def k_slider() -> Any:
        return widgets.IntSlider(value=6, min=2, max=min(12, len(ex.gallery) - 1), description="images")

    def layer_range() -> Any:
        return widgets.IntRangeSlider(value=(0, L - 1), min=0, max=L - 1, description="layers")

    def head_pick() -> Any:
        return widgets.Dropdown(options=["all"] + [str(h) for h in range(H)], value="all", description="head")

    def bind(fn: Callable[..., None]) -> Callable[..., None]:
        def call(**values: Any) -> None:
            try:
                fn(ex, **values)
            except (ValueError, KeyError) as exc:  # bad input: say what is wrong, keep the page
                _show_html(f'<p style="color:#b00020">{_esc(exc.args[0] if exc.args else exc)}</p>')

        return call

    specs: dict[str, tuple[Callable[..., None], dict[str, Any]]] = {
        "Head catalogue": (show_catalogue, dict(
            role=widgets.Dropdown(options=[("every role", "all")] + props, value="all", description="role"),
            span=widgets.ToggleButtons(options=[(v, k) for k, v in SPAN_NAMES.items()], value=ex.span,
                                       description="TextSpan", style={"button_width": "auto"}),
            order=widgets.Dropdown(options=["layer and head", "purity", "variance explained"],
                                   value="layer and head", description="order"))),
        "Property search": (show_property_search, dict(
            property=widgets.Dropdown(options=props, value=props[0][1] if props else None, description="property"),
            image=image_list(),
            min_purity=widgets.FloatSlider(value=0.4, min=0.0, max=1.0, step=0.1, description="min purity"),
            k=k_slider(), score=score_switch())),
        "Topic segmentation": (show_topic, dict(
            head=heads_list(), image=image_list(),
            texts=widgets.Text(value="", placeholder="texts, separated by commas (empty: the head's own)",
                               description="texts", layout=widgets.Layout(width="420px")),
            subtract_mean=widgets.Checkbox(value=True, description="minus their mean"))),
        "Contrastive": (show_contrastive, dict(
            image=image_list(), text_a=widgets.Text(value=text_a, description="text"),
            text_b=widgets.Text(value=text_b, description="minus"), layers=layer_range(), head=head_pick())),
        "Image neighbours": (show_head_image_neighbours, dict(
            head=heads_list(), image=image_list(), k=k_slider(), score=score_switch())),
        "Text neighbours": (show_head_text_neighbours, dict(
            head=heads_list(), text=widgets.Text(value="", placeholder="empty: the head's first TextSpan text",
                                                 description="text"), k=k_slider(), score=score_switch())),
        "Exact map": (show_exact_map, dict(
            image=image_list(), text=widgets.Text(value=text_a, description="text"), layers=layer_range(),
            head=head_pick())),
        "Layer view": (show_layer_view, dict(
            image=image_list(), text=widgets.Text(value=text_a, description="text"),
            by_head=widgets.Checkbox(value=False, description="by head"),
            layer=widgets.IntSlider(value=L - 1, min=0, max=L - 1, description="layer"))),
    }
    _warm_up_plotly()  # plotly's first figure in a process costs a second of imports: pay it with the page
    panels = {}
    for k, name in enumerate(TABS):  # the first tab draws now, each other one when it is first shown
        fn, controls = specs[name]
        panels[name] = live_widget(bind(fn), draw_now=k == 0, **controls)
    tabs = widgets.Tab(children=[widgets.VBox([widgets.HTML(f"<p>{INTROS[n]}</p>"), panels[n]]) for n in TABS],
                       titles=list(TABS), selected_index=0)

    def on_tab(change: Any) -> None:
        panel = panels[TABS[change["new"] or 0]]
        if not panel.drawn:
            panel.redraw()

    tabs.observe(on_tab, names="selected_index")

    upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload an image",
                                layout=widgets.Layout(width="auto"))
    status = widgets.HTML("Or pick one of the world's scenes or scikit-image's sample photos in any image list.")

    def on_upload(change: Any) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        try:
            key = ex.add_upload(f["name"], f["content"])
        except ValueError as exc:
            status.value = f'<span style="color:#b00020">{_esc(exc)}</span>'
            return
        choices = ex.image_choices()
        current = TABS[tabs.selected_index or 0]
        for name, panel in panels.items():
            dd = panel.controls.get("image")
            if dd is None:
                continue
            keep = key if name == current else dd.value
            dd.unobserve(panel.redraw, names="value")
            dd.options = choices
            dd.value = keep
            dd.observe(panel.redraw, names="value")
            if name == current:
                panel.redraw()
        w, h = ex.uploads[key].size
        status.value = (f"Added <b>{_esc(f['name'])}</b> ({w} × {h} px) to every image list as "
                        f"<i>upload: {_esc(f['name'])}</i>.")

    upload.observe(on_upload, names="value")
    header = widgets.HTML(_header(ex))
    page = widgets.VBox([header, widgets.HBox([upload, status]), tabs])
    page.panels, page.tabs, page.upload, page.status = panels, tabs, upload, status
    return page


def _warm_up_plotly() -> None:
    """Build (and drop) one small figure of each kind the tabs draw, so that the first tab to
    draw one does not also pay for importing and setting up plotly's figure classes."""
    import plotly.graph_objects as go

    from .plots import maps_figure

    maps_figure(np.zeros((8, 8, 3), np.uint8), {"map": np.zeros((2, 2))}, mask=np.zeros((8, 8), bool)).to_dict()
    go.Figure(go.Bar(x=["a"], y=[0.0])).update_layout(title="warm-up").to_dict()


def _header(ex: Explorer) -> str:
    c, w = ex.config, ex.watch.seconds

    def built(stage: str, seconds: float) -> str:
        return (f"computed in {seconds:.1f} s and cached" if ex.computed.get(stage)
                else f"read from the cache in {seconds:.1f} s")

    return (f"<h2 style='margin:4px 0'>CLIP explorer: {_esc(c.model_id)}</h2>"
            f"<p style='margin:2px 0'>Preset <b>{_esc(c.preset)}</b> ({_esc(c.sources.get('preset', ''))}); "
            f"{len(ex.gallery)} images ({_esc(c.dataset)}); the {ex.n_heads} heads of layers "
            f"{ex.layers[0]}–{ex.layers[-1]}; texts from the {_esc(ex.pool.name)} pool ({len(ex.pool)} tagged "
            f"texts). Protocol by default: {'the paper' if c.paper else 'the course'}'s (each neighbour tab has "
            f"the switch). Head terms {built('head terms', w.get('head terms', 0.0))}; catalogue "
            f"{built('catalogue', w.get('catalogue', 0.0))}.</p>")


def start_app(preset: str = "", n_images: int | None = None, cache_dir: str = "", *, progress: bool = True) -> None:
    """What the app's notebook runs: settings (:func:`app_config`), plotly's renderer for a
    served page, the explorer (progress bars on a first run) and the page, displayed."""
    from IPython.display import display

    config = app_config(preset, n_images, cache_dir)
    setup_process(config)
    ex = Explorer(config, progress=progress)
    display(build_app(ex))


def setup_process(config: AppConfig) -> None:
    """What the app's process needs before the explorer loads: the torch threads of
    ``config`` and plotly's renderer for a served page (the figure as JSON only; the page's
    plotly extension draws it, so no copy of plotly.js travels with each figure)."""
    import plotly.io as pio

    if config.threads:
        torch.set_num_threads(config.threads)
    pio.renderers.default = "plotly_mimetype"


# ----------------------------------------------------------------------------------------------
# Command line: python -m helpers.course.app
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Build the caches in the terminal (progress bars), then serve the app with Voilà.

    ``--preset NAME`` and ``--n-images N`` choose what is served (passed to the page as
    ``$CLIP_APP_PRESET`` / ``$CLIP_APP_N_IMAGES``); ``--prepare-only`` stops after the caches;
    every other argument goes to ``voila`` (e.g. ``--port 8866 --no-browser``).
    """
    ap = argparse.ArgumentParser(prog="python -m helpers.course.app", description=main.__doc__.splitlines()[0],
                                 allow_abbrev=False)
    ap.add_argument("--preset", default="", help="a notebook preset (default: offline)")
    ap.add_argument("--n-images", type=int, default=None, help="images to search (default: the preset's)")
    ap.add_argument("--cache-dir", default="", help=f"cache folder (default: ${ENV_CACHE} or the course's cache)")
    ap.add_argument("--prepare-only", action="store_true", help="build the caches and stop")
    args, voila_args = ap.parse_known_args(argv)
    env = dict(os.environ)
    if args.preset:
        env[ENV_PRESET] = args.preset
    if args.n_images is not None:
        env[ENV_N_IMAGES] = str(args.n_images)
    if args.cache_dir:
        env[ENV_CACHE] = str(Path(args.cache_dir).resolve())
    config = app_config(environ=env)
    setup_process(config)
    print(f"preparing {config.model_id}: {config.n_images} images of {config.dataset}, cache {config.cache_dir}")
    t0 = time.perf_counter()
    ex = Explorer(config, progress=True)
    print(f"ready in {time.perf_counter() - t0:.1f} s ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in ex.watch.seconds.items()) + ")")
    if args.prepare_only:
        return 0
    cmd = [sys.executable, "-m", "voila", str(NOTEBOOK), *VOILA_ARGS, *voila_args]
    print(" ".join(cmd))
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
