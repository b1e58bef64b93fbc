"""One switch for the notebooks: a ``preset`` names a model, its weights, the data of every
notebook, the device, the number of images and the batch size together.

Every notebook's ``parameters`` cell starts with ``preset = "offline"``; its other parameters
default to ``None`` / ``""`` and :func:`resolve` fills those from the preset, so a value set
explicitly wins::

    settings = resolve("ViT-B-16 LAION", "03", model_name="", pretrained="", dataset="",
                       n_images=None, batch_size=None, device="")
    settings.model_name, settings.pretrained, settings.n_images   # "ViT-B-16", "laion2b_s34b_b88k", 2000

A notebook does it in one call, :func:`begin`, from the names its parameters cell defines::

    settings, figures, (model, preprocess, tokenizer) = begin(globals(), "03")

Presets (:data:`PRESETS`):

* ``"offline"`` -- the course's own small CLIP on the synthetic world, on the CPU (the
  notebooks' figures and tests are taken with it);
* the papers' models (``"ViT-B-16 LAION"``, ``"ViT-L-14 LAION"``,
  ``"ViT-H-14 LAION"``, ``"ViT-B-16 OpenAI"``, ``"ViT-B-32 OpenAI"``, ``"ViT-L-14 OpenAI"``) with
  the papers' protocol and the papers' data: the whole Waterbirds test split (5), all 4,276
  ImageNet-Segmentation images (6) and all 50,000 images of ImageNet validation from your local
  copy (notebooks 2-3, ``$CLIP_COURSE_IMAGENET``, see :data:`helpers.data.datasets.IMAGENET_INSTRUCTIONS`;
  their terms are streamed through the on-disk cache, :mod:`helpers.methods.streamed`, about
  11-26 GB of disk for the larger models), Imagenette (notebook 1, no paper figure) and
  scikit-image's photos (4); on a GPU when there is one (:func:`estimate_gpu_memory`);
* their ``" quick"`` variants (``"ViT-L-14 LAION quick"``, ...): today's subsets, sized for a
  free Colab GPU (NVIDIA T4, 15 GB), Imagenette for notebooks 1-3; each notebook names itself
  an approximation of the paper's protocol (``Settings.notes``) and prints its figures with
  their sampling error;
* ``"random ViT-B-32"`` -- a real architecture with random weights on the world data, a
  handful of images on the CPU: the tests run every notebook with it, so a shape or indexing
  bug of the real-model path shows without a download.

OpenAI's weights were trained with QuickGELU: open_clip 3 names those models ``*-quickgelu``
with the tag ``"openai"`` (``load_model`` also switches QuickGELU on for a plain name with the
``"openai"`` tag).

What a preset downloads (approximate sizes) is data here too: :func:`downloads`,
:func:`presets_table`, and ``python -m helpers.course.presets`` prints the table in Markdown.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, MutableMapping

__all__ = [
    "Preset",
    "Settings",
    "PRESETS",
    "NOTEBOOKS",
    "DATASET_DOWNLOADS",
    "T4_MEMORY_GIB",
    "POPULATIONS",
    "get_preset",
    "resolve",
    "begin",
    "notebook_parameters",
    "approximation_note",
    "downloads",
    "estimate_gpu_memory",
    "presets_table",
    "markdown_table",
    "T4_FP32_TFLOPS",
    "COLAB_IMAGES_PER_SECOND",
    "estimate_minutes",
    "colab_table",
]

NOTEBOOKS = ("01", "02", "03", "04", "05", "06", "07")
"""The notebooks a preset covers, by number."""

T4_MEMORY_GIB = 14.7
"""Memory of a free Colab GPU (NVIDIA T4, 15 GB = 14.7 GiB as torch reports it)."""

#: The size of each of the papers' datasets (the population a subset is drawn from).
POPULATIONS: Mapping[str, int] = MappingProxyType({"imagenet": 50_000, "imagenette": 3_925, "waterbirds": 5_794,
                                                   "imagenet-seg": 4_276})



#: Approximate download of each online dataset, in MB, and what it is.
DATASET_DOWNLOADS: Mapping[str, tuple[int, str]] = MappingProxyType({
    "imagenette": (330, "Imagenette validation (3,925 photos of 10 ImageNet classes, 320 px)"),
    "waterbirds": (480, "Waterbirds (CUB birds on Places backgrounds; test split 5,794 images)"),
    "imagenet-seg": (1400, "ImageNet-Segmentation (gtsegs_ijcv.mat, 4,276 images with masks)"),
    "imagenet": (0, "ImageNet validation (50,000 photos): a local copy, not downloaded "
                    "(helpers.data.datasets.IMAGENET_INSTRUCTIONS)"),
})


@dataclass(frozen=True)
class Preset:
    """One setting of every notebook.

    Attributes:
        name: the value of the notebooks' ``preset`` parameter.
        model_name, pretrained: what :func:`helpers.engine.models.load_model` loads.
        device: ``"auto"`` (``"cuda"`` when available, else ``"cpu"``) or a torch device.
        protocol: carried to the notebooks' ``protocol`` parameter (``"paper"`` for the papers'
            models; ``""`` leaves each notebook's own default).
        notebooks: notebook number -> its parameter values (data, image counts, batch sizes).
        description: one line for tables.
        quick: a ``" quick"`` variant: subsets of the papers' data throughout, an approximation
            of their protocol that each notebook names.
    """

    name: str
    model_name: str
    pretrained: str
    device: str
    protocol: str
    notebooks: Mapping[str, Mapping[str, Any]]
    description: str = ""
    quick: bool = False

    @property
    def trained_weights(self) -> bool:
        return self.pretrained != "random"

    def datasets(self) -> dict[str, str]:
        """Notebook number -> the data it reads (notebook 4: ``images``)."""
        return {nb: str(v.get("dataset", v.get("images", ""))) for nb, v in self.notebooks.items()}


def _real(name: str, model_name: str, pretrained: str, description: str, *, n: Mapping[str, int],
          batch: Mapping[str, int], n_per_group: int, span_images: int, layers: tuple[int, ...],
          quick: bool = False) -> Preset:
    """A preset for one of the papers' models on the real datasets: the papers' data where the
    course holds it (``quick``: today's subsets throughout)."""
    imagenet = "imagenette" if quick else "imagenet"
    nbs = {
        "01": {"dataset": "imagenette", "n_images": n["01"], "batch_size": batch["01"]},
        # the full presets: every image of ImageNet validation, its terms streamed from disk
        "02": {"dataset": imagenet, "n_images": n["02"] if quick else None, "batch_size": batch["02"]},
        "03": {"dataset": imagenet, "n_images": n["03"] if quick else None, "batch_size": batch["03"],
               "pool_size": 0},
        "04": {"images": "photos", "n_images": n["04"], "pool_size": 0},
        "05": {"dataset": "waterbirds", "n_per_group": n_per_group if quick else 0, "span_images": span_images,
               "batch_size": batch["05"], "pool_size": 0},
        "06": {"dataset": "imagenet-seg", "n_images": n["06"] if quick else None, "batch_size": batch["06"]},
        # second-order effects: the three MLPs before the last block (ViT-B-32's 8-10, the
        # paper's), statistics on ImageNet photos with 2% of them kept per neuron (the paper: 100
        # of 5,000 ImageNet images), words from the common-words list
        "07": {"dataset": imagenet, "n_images": n["07"], "eval_images": n["07e"], "layers": tuple(layers),
               "top_k": n["07"] // 50, "vocabulary": "common_words", "pool_size": 0, "n_words": 32,
               "seg_dataset": "imagenet-seg", "seg_images": n["06"], "seg_neurons": 200, "n_pairs": 4,
               "adv_scenes": 0, "batch_size": batch["07"]},
    }
    return Preset(name + (" quick" if quick else ""), model_name, pretrained, "auto", "paper", _frozen(nbs),
                  description + (" on subsets (an approximation)" if quick else ""), quick=quick)


def _frozen(nbs: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in nbs.items()})


_OFFLINE = {
    "01": {"dataset": "world:colour", "n_images": 300, "batch_size": 100},
    "02": {"dataset": "world:colour", "n_images": 600, "batch_size": 100},
    "03": {"dataset": "world:colour", "n_images": 1000, "batch_size": 100, "pool_size": 0},
    "04": {"images": "auto", "n_images": 200, "pool_size": 0},
    "05": {"dataset": "world", "n_per_group": 150, "span_images": 1000, "batch_size": 100, "pool_size": 0},
    "06": {"dataset": "world:colour", "n_images": 200, "batch_size": 50},
    # the MLPs that feed the attention layers holding the model's direct effects (4-7); 2% of
    # the statistics' scenes kept per neuron, as the paper's 100 of 5,000
    "07": {"dataset": "world:shape", "n_images": 500, "eval_images": 300, "layers": (3, 4, 5), "top_k": 10,
           "vocabulary": "world", "pool_size": 0, "n_words": 8, "seg_dataset": "world:shape", "seg_images": 100,
           "seg_neurons": 200, "n_pairs": 0, "adv_scenes": 8, "batch_size": 100},
}

# A handful of images in two batches (so batch boundaries are crossed) and a few dozen texts:
# ViT-B-32's text tower embeds only a few texts a second on two CPU cores, so every pool is
# sampled down (helpers.data.pools.Pool.sample).
_RANDOM_B32 = {
    "01": {"dataset": "world:colour", "n_images": 8, "batch_size": 4},
    "02": {"dataset": "world:colour", "n_images": 8, "batch_size": 4},
    "03": {"dataset": "world:colour", "n_images": 8, "batch_size": 4, "pool_size": 24},
    "04": {"images": "world", "n_images": 3, "pool_size": 24},
    "05": {"dataset": "world", "n_per_group": 2, "span_images": 8, "batch_size": 4, "pool_size": 24},
    "06": {"dataset": "world:colour", "n_images": 4, "batch_size": 2},
    # the paper's layers and the online path's vocabulary (sampled down), world scenes
    "07": {"dataset": "world:shape", "n_images": 8, "eval_images": 4, "layers": (8, 9, 10), "top_k": 2,
           "vocabulary": "common_words", "pool_size": 24, "n_words": 4, "seg_dataset": "world:shape",
           "seg_images": 2, "seg_neurons": 20, "n_pairs": 2, "adv_scenes": 2, "batch_size": 4},
}

# Image counts and batch sizes per notebook for the papers' models (see estimate_gpu_memory):
# forward-only notebooks batch generously; notebook 6's GradCAM and Chefer et al. keep every
# layer's activations for the backward pass, so its batch is what fits a T4.
_B = dict(n={"01": 1000, "02": 2000, "03": 2000, "04": 200, "06": 1000, "07": 3000, "07e": 900},
          batch={"01": 100, "02": 100, "03": 100, "05": 100, "06": 32, "07": 64}, n_per_group=0, span_images=1000,
          layers=(8, 9, 10))
_L = dict(n={"01": 1000, "02": 2000, "03": 2000, "04": 200, "06": 1000, "07": 3000, "07e": 900},
          batch={"01": 64, "02": 64, "03": 64, "05": 64, "06": 8, "07": 32}, n_per_group=500, span_images=1000,
          layers=(20, 21, 22))
_H = dict(n={"01": 500, "02": 1000, "03": 1000, "04": 200, "06": 500, "07": 2000, "07e": 600},
          batch={"01": 32, "02": 32, "03": 32, "05": 32, "06": 4, "07": 16}, n_per_group=250, span_images=1000,
          layers=(28, 29, 30))

_PAPERS = (
    ("ViT-B-16 LAION", "ViT-B-16", "laion2b_s34b_b88k", "the paper's ViT-B-16 (LAION-2B)", _B),
    ("ViT-L-14 LAION", "ViT-L-14", "laion2b_s32b_b82k", "the paper's main model, ViT-L-14 (LAION-2B)", _L),
    ("ViT-H-14 LAION", "ViT-H-14", "laion2b_s32b_b79k", "the paper's ViT-H-14 (LAION-2B)", _H),
    ("ViT-B-16 OpenAI", "ViT-B-16-quickgelu", "openai", "OpenAI's ViT-B-16 (CLIP-InterpreT)", _B),
    ("ViT-B-32 OpenAI", "ViT-B-32-quickgelu", "openai", "OpenAI's ViT-B-32 (CLIP-InterpreT)", _B),
    ("ViT-L-14 OpenAI", "ViT-L-14-quickgelu", "openai", "OpenAI's ViT-L-14 (CLIP-InterpreT)", _L),
)

PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in (
    Preset("offline", "world-clip", "world-v3", "cpu", "", _frozen(_OFFLINE),
           "the course's own small CLIP on the synthetic world (no download, CPU)"),
    *(_real(name, model, tag, what, **sizes) for name, model, tag, what, sizes in _PAPERS),
    *(_real(name, model, tag, what, **sizes, quick=True) for name, model, tag, what, sizes in _PAPERS),
    Preset("random ViT-B-32", "ViT-B-32", "random", "cpu", "", _frozen(_RANDOM_B32),
           "ViT-B-32 with random weights on the world data, a handful of images (tests; no download)"),
)})


def _sampled(values: Mapping[str, Any]) -> tuple[str, int | None, int] | None:
    """``(dataset, n, N)`` when a notebook's values draw ``n`` of a paper dataset's ``N`` images
    (``n`` is ``None`` for Waterbirds, whose groups are sampled), else ``None``."""
    data = str(values.get("dataset", "")).partition(":")[0]
    if data not in POPULATIONS:
        return None
    N = POPULATIONS[data]
    if data == "waterbirds":
        per_group = int(values.get("n_per_group") or 0)
        return None if not per_group else (data, None, N)
    n = values.get("n_images")
    return None if n is None or int(n) >= N else (data, int(n), N)


def approximation_note(values: Mapping[str, Any], protocol: str, *, quick: bool = False) -> str | None:
    """The banner of a notebook that runs the papers' protocol on a subset of their data, or
    ``None`` when it runs the whole set (or is not the papers' protocol). Imagenette is named
    as other data: it is not a sample of ImageNet validation."""
    if protocol != "paper":
        return None
    got = _sampled(values)
    if got is None:
        return None
    data, n, N = got
    if data == "waterbirds":
        what = f"{int(values['n_per_group'])} images per group of Waterbirds' {N:,}"
    else:
        what = f"{n:,} of {data}'s {N:,} images"
    note = (f"{'quick' if quick else 'approximation'}: the paper's protocol on {what}, so its figures have a "
            "sampling error (an accuracy p: sqrt(p (1 - p) / n * (N - n) / (N - 1)), "
            "helpers.methods.metrics.proportion_se)")
    if data == "imagenette":
        note += ("; other data: Imagenette (10 classes) is not a sample of ImageNet validation, so its figures are "
                 "not the paper's")
    return note


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (a clear error listing the known ones otherwise)."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(repr(k) for k in PRESETS)}") from None


def _notebook_key(notebook: str | int) -> str:
    m = re.match(r"0?([0-9])(?:_|$)", str(notebook))
    key = f"0{m.group(1)}" if m else ""
    if key not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; use one of {', '.join(NOTEBOOKS)}")
    return key


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "")


@dataclass
class Settings:
    """What :func:`resolve` gives a notebook: every parameter it passed, filled from the preset
    where it was left unset (attributes, or ``values``), and where each came from."""

    preset: str
    notebook: str
    values: dict[str, Any]
    from_preset: tuple[str, ...] = ()
    overridden: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"no parameter {name!r} was resolved (have: {', '.join(values)})")

    @property
    def sampled(self) -> tuple[str, int | None, int] | None:
        """``(dataset, n, N)`` when the notebook runs the papers' protocol on ``n`` of a paper
        dataset's ``N`` images (``n`` is ``None`` for Waterbirds' per-group sample), else ``None``:
        what a figure's sampling error (:func:`helpers.methods.metrics.proportion_se`) needs."""
        if self.values.get("protocol") != "paper":
            return None
        return _sampled(self.values)

    @property
    def trained_weights(self) -> bool:
        """False when the model runs with random weights: checks that need a trained model are
        skipped (the notebooks record this as ``figures["trained_weights"]``)."""
        return self.values.get("pretrained") != "random"

    def unpack(self) -> tuple[Any, ...]:
        """The parameters' values in the order the notebook passed them to :func:`resolve`, for
        ``a, b = settings.unpack()`` with the same names on both sides."""
        return tuple(self.values.values())

    def start(self, figures: MutableMapping[str, Any] | None = None, *, seed: int | None = None
              ) -> tuple[Any, Any, Any]:
        """A notebook's first step with its settings: seed torch's generator (when ``seed`` is
        given), print the settings, record ``preset`` and ``trained_weights`` into ``figures``
        (when given) and load the model on the settings' device. Returns ``(model, preprocess,
        tokenizer)`` as :func:`helpers.engine.models.load_model`."""
        from ..engine.models import load_model

        if seed is not None:
            import torch

            torch.manual_seed(seed)
        print(self)
        if figures is not None:
            figures["preset"] = self.preset
            figures["trained_weights"] = self.trained_weights
        return load_model(self.model_name, self.values.get("pretrained") or None, device=self.values.get("device"))

    def __str__(self) -> str:
        v = self.values
        weights = v.get("pretrained") or "(none named)"
        parts = [f"preset {self.preset!r}: {v.get('model_name')} / {weights}"]
        data = v.get("dataset", v.get("images"))
        if data:
            parts.append(f"data {data}")
        for k in ("n_images", "n_per_group", "span_images", "batch_size", "pool_size", "device", "protocol"):
            if k in v and not _unset(v[k]):
                parts.append(f"{k} {v[k]}")
        line = ", ".join(parts)
        if self.overridden:
            line += f" (set here: {', '.join(self.overridden)})"
        return "\n".join([line] + self.notes)


def resolve(preset: str, notebook: str | int, **params: Any) -> Settings:
    """Fill a notebook's parameters from ``preset``.

    Every keyword is one of the notebook's parameters with its current value. A value left at
    ``None`` or ``""`` is taken from the preset (when the preset sets it; otherwise it stays
    unset and the notebook's own rule applies); any other value wins over the preset. Weights
    belong to a model: when ``model_name`` is set to another model than the preset's, an unset
    ``pretrained`` is not taken from the preset (``load_model`` then asks for a tag). A device
    of ``"auto"`` becomes ``"cuda"`` when a GPU is available, else ``"cpu"``.

    Raises:
        ValueError: unknown preset or notebook.
    """
    p = get_preset(preset)
    nb = _notebook_key(notebook)
    defaults: dict[str, Any] = {"model_name": p.model_name, "pretrained": p.pretrained, "device": p.device,
                                "protocol": p.protocol, **p.notebooks.get(nb, {})}
    other_model = not _unset(params.get("model_name")) and params["model_name"] != p.model_name
    values: dict[str, Any] = {}
    taken, kept = [], []
    for key, value in params.items():
        if _unset(value):
            if key == "pretrained" and other_model:
                value = ""
            elif key in defaults:
                value = defaults[key]
                taken.append(key)
        elif key in defaults and value != defaults[key]:
            kept.append(key)
        values[key] = value
    notes = []
    banner = approximation_note({**p.notebooks.get(nb, {}), **{k: v for k, v in values.items() if not _unset(v)}},
                                str(values.get("protocol", p.protocol)), quick=p.quick)
    if banner:
        notes.append(banner)
    if values.get("device") == "auto":
        import torch

        values["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        if values["device"] == "cpu" and p.device == "auto":
            notes.append(f"note: no GPU found; preset {p.name!r} is sized for one (in Colab: Runtime > "
                         "Change runtime type > T4 GPU), and on a CPU it takes much longer")
    return Settings(p.name, nb, values, tuple(taken), tuple(kept), notes)


_MODEL_PARAMETERS = ("model_name", "pretrained", "device", "protocol")
"""The parameters every notebook takes from a preset, beside its own (:func:`notebook_parameters`)."""


def notebook_parameters(notebook: str | int) -> frozenset[str]:
    """The parameters a preset can fill for ``notebook``: the model's (:data:`_MODEL_PARAMETERS`)
    and every one that some preset sets for that notebook (its data, image counts, batch size...)."""
    nb = _notebook_key(notebook)
    return frozenset(_MODEL_PARAMETERS).union(*(p.notebooks.get(nb, {}) for p in PRESETS.values()))


def begin(namespace: MutableMapping[str, Any], notebook: str | int) -> tuple[Settings, Any, tuple[Any, Any, Any]]:
    """A notebook's first step, from its parameters as the parameters cell left them in
    ``namespace`` (the notebook's ``globals()``).

    Every parameter a preset can fill (:func:`notebook_parameters`) that the namespace defines
    goes to :func:`resolve` with the preset named by ``namespace["preset"]``; the filled values
    are written back under the same names, so the rest of the notebook reads them as it reads
    any parameter. Then :meth:`Settings.start` with ``namespace["seed"]``: torch seeded, the
    settings printed (which came from the preset, which were set here), ``preset`` and
    ``trained_weights`` recorded into a new :class:`~helpers.course.record.Figures` at
    ``namespace["record_to"]``, the model loaded.

    Returns ``(settings, figures, (model, preprocess, tokenizer))``.

    Raises:
        KeyError: the namespace lacks ``preset``, ``seed`` or ``record_to``.
    """
    from .record import Figures

    missing = [k for k in ("preset", "seed", "record_to") if k not in namespace]
    if missing:
        raise KeyError(f"a notebook's parameters cell defines {', '.join(missing)}; this namespace does not")
    known = notebook_parameters(notebook)
    settings = resolve(namespace["preset"], notebook, **{k: v for k, v in namespace.items() if k in known})
    namespace.update(settings.values)
    figures = Figures(namespace["record_to"])
    return settings, figures, settings.start(figures, seed=namespace["seed"])


# ----------------------------------------------------------------------------------------------
# What a preset costs: downloads and GPU memory
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _parameter_count(model_name: str) -> int:
    """Parameters of ``model_name``, counted on a model built on the ``meta`` device (no memory)."""
    import logging

    import open_clip
    import torch

    from ..engine import models  # noqa: F401  (registers the offline default with open_clip)

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # open_clip's "initialized randomly" notice
    try:
        with torch.device("meta"):
            model = open_clip.create_model(model_name, device="meta")
    finally:
        logger.setLevel(level)
    return sum(t.numel() for t in model.parameters())


def downloads(preset: str) -> dict[str, float]:
    """What ``preset`` downloads on first use, in MB: ``"weights"`` (the float32 checkpoint,
    4 bytes a parameter) and each dataset its notebooks read (once, shared between them)."""
    p = get_preset(preset)
    out: dict[str, float] = {}
    if p.pretrained not in ("random",) and p.model_name != "world-clip":
        out["weights"] = round(4 * _parameter_count(p.model_name) / 1e6)
    for data in p.datasets().values():
        key = data.partition(":")[0]
        if key in DATASET_DOWNLOADS and DATASET_DOWNLOADS[key][0]:  # a local copy is no download
            out[key] = DATASET_DOWNLOADS[key][0]
    return out


# Per notebook: what it keeps on the device per image of its data ("heads": every head's direct
# term, "layers": per-layer terms only), and whether a method needs a backward pass.
_NOTEBOOK_COST = {"01": ("heads", False), "02": ("layers", False), "03": ("heads", False),
                  "04": ("heads", False), "05": ("heads", False), "06": ("none", True), "07": ("none", False)}


def estimate_gpu_memory(model_name: str, notebook: str, *, batch_size: int, stored_images: int = 0,
                        mlp_layers: Any = ()) -> float:
    """Rough peak GPU memory, in GiB, of one notebook with ``model_name`` in float32.

    The estimate adds: the weights (4 bytes a parameter); per image of a batch, either one
    layer's activations of a forward pass (tokens x 8 widths for attention and MLP, plus two
    heads x tokens x tokens attention maps) or, for notebook 6 whose GradCAM and Chefer et al.
    run a backward pass, what every layer keeps for it (tokens x 15 widths and four attention
    maps per layer); the direct terms stored for ``stored_images`` images (layers x heads x
    output dimension floats each for notebooks that keep per-head terms); for notebook 7, the
    image-independent tensors of the second-order effects of the MLP layers ``mlp_layers`` (neurons x later
    heads x output dimension floats per layer); and 0.5 GiB for the CUDA context. It ignores the allocator's fragmentation, which is why the presets stay well
    below a T4's 14.7 GiB.
    """
    import open_clip

    from ..engine import models  # noqa: F401

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {model_name!r}")
    v = cfg["vision_cfg"]
    width, layers = v["width"], v["layers"]
    heads = width // v.get("head_width", 64)
    grid = v["image_size"] // v["patch_size"]
    tokens = grid * grid + 1
    out_dim = cfg["embed_dim"]
    kind, backward = _NOTEBOOK_COST[_notebook_key(notebook)]
    if backward:
        per_image = layers * (15 * tokens * width + 4 * heads * tokens * tokens)
    else:
        per_image = 8 * tokens * width + 2 * heads * tokens * tokens
    per_stored = {"heads": layers * heads * out_dim, "layers": 3 * layers * out_dim, "none": 0}[kind]
    mlp_width = int(width * v.get("mlp_ratio", 4.0))
    second_order = sum(mlp_width * (layers - 1 - int(i)) * heads * out_dim for i in mlp_layers or ())
    floats = _parameter_count(model_name) + batch_size * per_image + stored_images * per_stored + second_order
    return 4 * floats / 2**30 + 0.5


def _stored_images(values: Mapping[str, Any], notebook: str) -> int:
    if notebook == "05":
        per_group = int(values.get("n_per_group") or 0)
        evaluated = 4 * per_group if per_group else 5794  # the whole Waterbirds test split
        return evaluated + int(values.get("span_images") or 0)
    if notebook in ("06", "07"):  # notebook 7 keeps each neuron's top images only
        return 0
    return int(values.get("n_images") or 0)


def presets_table() -> list[dict[str, Any]]:
    """One row per preset: model, tag, data and sizes per notebook, the largest estimated GPU
    memory over the notebooks (GiB) and the downloads (MB)."""
    rows = []
    for p in PRESETS.values():
        memory = {nb: estimate_gpu_memory(p.model_name, nb, batch_size=int(v.get("batch_size") or 1),
                                          stored_images=_stored_images(v, nb), mlp_layers=v.get("layers") or ())
                  for nb, v in p.notebooks.items()}
        rows.append({
            "preset": p.name,
            "model": p.model_name,
            "weights": p.pretrained,
            "data": p.datasets(),
            "images": {nb: (v.get("n_images") if nb not in ("04", "05") else
                            (v.get("n_per_group"), v.get("span_images")) if nb == "05" else v.get("n_images"))
                       for nb, v in p.notebooks.items()},
            "batch_size": {nb: v.get("batch_size") for nb, v in p.notebooks.items() if "batch_size" in v},
            "device": p.device,
            "protocol": p.protocol,
            "gpu_memory_gib": round(max(memory.values()), 1),
            "gpu_memory_by_notebook": {nb: round(m, 1) for nb, m in memory.items()},
            "downloads_mb": downloads(p.name),
        })
    return rows


def markdown_table() -> str:
    """The presets as a Markdown table (the README's)."""
    head = ("| preset | model / weights | data (notebooks 1 · 2-3 · 4 · 5 · 6) | images (1 · 2 · 3 · 6) | "
            "batch (1-3 · 5 · 6) | est. GPU memory | downloads |")
    lines = [head, "|" + "---|" * 7]
    for r in presets_table():
        d, n, b = r["data"], r["images"], r["batch_size"]
        data = f"{d['01']} · {d['02']} · {d['04']} · {d['05']} · {d['06']}"
        images = " · ".join("all" if n[k] is None else str(n[k]) for k in ("01", "02", "03", "06"))
        batch = f"{b['01']} · {b['05']} · {b['06']}"
        dl = r["downloads_mb"]
        total = sum(dl.values())
        dl_text = ("none" if not dl else f"{total / 1000:.1f} GB (" +
                   ", ".join(f"{k} {v / 1000:.2f}" for k, v in dl.items()) + ")")
        mem = f"{r['gpu_memory_gib']:.1f} GiB" if r["device"] == "auto" else "CPU"
        lines.append(f"| `{r['preset']}` | `{r['model']}` / `{r['weights']}` | {data} | {images} | {batch} | "
                     f"{mem} | {dl_text} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())


# ----------------------------------------------------------------------------------------------
# What a preset costs: time on a free Colab GPU (a rough estimate)
# ----------------------------------------------------------------------------------------------

T4_FP32_TFLOPS = 4.0
"""Float32 throughput assumed for a free Colab GPU (NVIDIA T4) in :func:`estimate_minutes`, in
TFLOP/s: about half its 8.1 TFLOP/s peak, what large float32 matrix products sustain on it."""

COLAB_IMAGES_PER_SECOND = 50
"""Images a Colab runtime's two CPU cores read and preprocess per second (JPEG decode, resize)."""

# Per notebook: image-tower passes per image (notebook 6: the decomposition, raw attention and
# rollout once each; GradCAM, Chefer et al., LRP and partial LRP a forward and a backward pass,
# about three passes each, on its own images and on the two-object pairs) and the texts it
# encodes besides the classifier (text pools, in texts).
_NOTEBOOK_WORK = {"01": (1, 0), "02": (1, 0), "03": (1, 3521 + 3498), "04": (2, 3521), "05": (1, 3521),
                  "06": (30, 0), "07": (1, 3498)}


def _tower_flops(width: int, layers: int, tokens: int) -> float:
    """Multiply-adds x 2 of one transformer tower on one input: per layer, 24 T w^2 for the
    projections and the MLP (ratio 4) and 4 T^2 w for the attention."""
    return 2.0 * layers * (12 * tokens * width**2 + 2 * tokens**2 * width)


def estimate_minutes(preset: str, notebook: str, *, tflops: float = T4_FP32_TFLOPS) -> float:
    """Rough minutes one notebook takes with a paper preset on a free Colab GPU, downloads
    excluded (they happen once; :func:`downloads`).

    The estimate adds: the floating-point work of the image tower on the notebook's images
    (several passes for notebook 6's methods with a backward pass; notebook 7's two passes over its
    statistics images, one over its held-out images and three segmenters), of the text tower on the
    zero-shot classifier's prompts (1,000 ImageNet classes x 80 templates for Imagenette and
    ImageNet-Segmentation, 2 x 80 for Waterbirds) and on the text pools, at ``tflops``; reading
    the images at :data:`COLAB_IMAGES_PER_SECOND`; and one minute for loading the model. It
    ignores everything else (plots, TextSpan's own arithmetic), so take it as an order of
    magnitude, not a measurement.

    Raises:
        ValueError: for a preset that does not run on a GPU (``"offline"``, ``"random ViT-B-32"``).
    """
    import open_clip

    from ..engine import models  # noqa: F401

    p = get_preset(preset)
    nb = _notebook_key(notebook)
    if p.device != "auto":
        raise ValueError(f"preset {preset!r} runs on the CPU; the estimate is for a GPU preset")
    values = p.notebooks[nb]
    cfg = open_clip.get_model_config(p.model_name)
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    tokens = (v["image_size"] // v["patch_size"]) ** 2 + 1
    image = _tower_flops(v["width"], v["layers"], tokens)
    text = _tower_flops(t["width"], t["layers"], t.get("context_length", 77))
    passes, pool_texts = _NOTEBOOK_WORK[nb]
    data = str(values.get("dataset", values.get("images", "")))
    if nb == "05":
        images = _stored_images(values, nb)
    elif values.get("n_images") is None and data in POPULATIONS:
        images = POPULATIONS[data]  # the whole set
    else:
        images = int(values.get("n_images") or 0)
    if nb == "07":  # two passes for the statistics, one over the held-out images, three segmenters
        images = 2 * images + int(values.get("eval_images") or 0) + 3 * int(values.get("seg_images") or 0)
    prompts = {"imagenette": 1000 * 80, "imagenet": 1000 * 80, "imagenet-seg": 1000 * 80,
               "waterbirds": 2 * 80}.get(data, 0)
    flops = passes * images * image + (prompts + pool_texts) * text
    seconds = flops / (tflops * 1e12) + images / COLAB_IMAGES_PER_SECOND + 60
    return seconds / 60


def colab_table(notebooks: tuple[str, ...] = NOTEBOOKS) -> str:
    """The papers' presets as a Markdown table for Colab: model and weights, what they download
    and the estimated minutes of each notebook on a free GPU (:func:`estimate_minutes`)."""
    head = "| preset | model / weights | downloads (once) | " + " | ".join(f"notebook {int(nb)}" for nb in notebooks) + " |"
    lines = [head, "|" + "---|" * (3 + len(notebooks))]
    for p in PRESETS.values():
        if p.device != "auto":
            continue
        dl = downloads(p.name)
        dl_text = f"{sum(dl.values()) / 1000:.1f} GB (" + ", ".join(f"{k} {v / 1000:.2f}" for k, v in dl.items()) + ")"
        mins = " | ".join(f"~{max(1, round(estimate_minutes(p.name, nb)))} min" for nb in notebooks)
        lines.append(f"| `{p.name}` | `{p.model_name}` / `{p.pretrained}` | {dl_text} | {mins} |")
    return "\n".join(lines)
