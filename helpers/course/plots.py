"""Drawing maps over images: colour maps, blended overlays and plotly figures (no matplotlib).

* :func:`colormap` -- values in ``[0, 1]`` -> RGB colours (jet, viridis, coolwarm, gray);
* :func:`overlay` -- an image with a patch map blended on top (a PIL image);
* :func:`heatmap_figure` -- one image and one map, with the patch value on hover (plotly);
* :func:`maps_figure` -- a row of panels: the image, its true mask, then one map per panel;
* :func:`image_panels` -- several images side by side, each with a title and optionally its map.

Maps are patch grids ``[gh, gw]`` (tensors or arrays); each cell is drawn over its patch of
the image. Figures stay small in a notebook and draw fast in a page: images travel as PNG
(lossless, a fraction of their raw pixels) and map values as float32 (more digits than the
hover's four). For non-square photos draw over :func:`helpers.engine.images.model_view` of the
photo, the centre crop the model sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..engine.images import to_rgb

__all__ = ["colormap", "overlay", "heatmap_figure", "maps_figure", "image_panels"]

_COLORMAPS: dict[str, list[tuple[float, tuple[int, int, int]]]] = {
    "viridis": [(0.0, (68, 1, 84)), (0.125, (72, 40, 120)), (0.25, (62, 74, 137)), (0.375, (49, 104, 142)),
                (0.5, (38, 130, 142)), (0.625, (31, 158, 137)), (0.75, (53, 183, 121)),
                (0.875, (109, 205, 89)), (1.0, (253, 231, 37))],
    "jet": [(0.0, (0, 0, 128)), (0.125, (0, 0, 255)), (0.375, (0, 255, 255)), (0.625, (255, 255, 0)),
            (0.875, (255, 0, 0)), (1.0, (128, 0, 0))],
    "coolwarm": [(0.0, (59, 76, 192)), (0.25, (141, 176, 254)), (0.5, (221, 221, 221)),
                 (0.75, (244, 154, 123)), (1.0, (180, 4, 38))],
    "gray": [(0.0, (0, 0, 0)), (1.0, (255, 255, 255))],
}


def colormap(values: Any, name: str = "jet") -> np.ndarray:
    """Map values in ``[0, 1]`` (clipped) to RGB ``uint8`` colours ``[..., 3]``.

    ``name``: ``"jet"``, ``"viridis"``, ``"coolwarm"`` (diverging: 0.5 is grey) or ``"gray"``,
    each a piecewise-linear table.
    """
    if name not in _COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; choose from {sorted(_COLORMAPS)}")
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, 1.0)
    stops = np.array([s for s, _ in _COLORMAPS[name]])
    colours = np.array([c for _, c in _COLORMAPS[name]], dtype=np.float64)
    out = np.stack([np.interp(v, stops, colours[:, k]) for k in range(3)], -1)
    return np.round(out).astype(np.uint8)


def _as_2d(m: Any) -> np.ndarray:
    a = m.detach().cpu().double().numpy() if isinstance(m, Tensor) else np.asarray(m, dtype=np.float64)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ValueError(f"expected one map [gh, gw], got shape {np.shape(m)}")
    return a


def _scale(a: np.ndarray, vmin: float | None, vmax: float | None, symmetric: bool) -> np.ndarray:
    if symmetric:
        lim = float(np.abs(a).max()) if vmax is None else float(vmax)
        lo, hi = -lim, lim
    else:
        lo = float(a.min()) if vmin is None else float(vmin)
        hi = float(a.max()) if vmax is None else float(vmax)
    if hi <= lo:
        return np.full_like(a, 0.5)
    return (a - lo) / (hi - lo)


def overlay(image: Any, map: Any, alpha: float = 0.5, *, cmap: str = "jet", vmin: float | None = None,
            vmax: float | None = None, symmetric: bool = False) -> Image.Image:
    """``image`` with ``map`` (``[gh, gw]``, upsampled bilinearly to the image) blended on top.

    The map is scaled to ``[vmin, vmax]`` (its own range by default; ``symmetric`` centres the
    range on 0, for signed maps with ``cmap="coolwarm"``). Returns an RGB image of the input
    size. For non-square photos pass :func:`helpers.engine.images.model_view` of the image so the map
    lines up.
    """
    from ..methods.maps import upsample

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = to_rgb(image)
    a = _as_2d(map)
    up = upsample(torch.from_numpy(a), (img.height, img.width)).numpy()
    colour = colormap(_scale(up, vmin, vmax, symmetric), cmap).astype(np.float64)
    base = np.asarray(img, dtype=np.float64)
    out = (1.0 - alpha) * base + alpha * colour
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")


def _image(pixels: np.ndarray) -> Any:
    """A plotly image trace of ``uint8`` RGB ``pixels`` ``[H, W, 3]``, stored as a PNG (a data URL):
    lossless, and a fraction of the size of the pixel values themselves."""
    import base64
    import io

    import plotly.graph_objects as go

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buf, format="PNG", optimize=True)
    return go.Image(source="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
                    hoverinfo="skip")


def _heat(a: np.ndarray, width: int, height: int, symmetric: bool, **style: Any) -> Any:
    """A plotly heat map of the patch map ``a`` whose cells cover their patches of a
    ``width x height`` image (centred on 0 when ``symmetric``); values stored as float32."""
    import plotly.graph_objects as go

    gh, gw = a.shape
    dx, dy = width / gw, height / gh
    heat = go.Heatmap(z=a.astype(np.float32), x0=dx / 2 - 0.5, dx=dx, y0=dy / 2 - 0.5, dy=dy, **style)
    if symmetric:
        lim = float(np.abs(a).max()) or 1.0
        heat.update(zmin=-lim, zmax=lim, zmid=0.0)
    return heat


def heatmap_figure(image: Any, map: Any, title: str | None = None, *, opacity: float = 0.5,
                   colorscale: str = "Jet", symmetric: bool = False) -> Any:
    """A plotly figure: ``image`` with the patch ``map`` drawn semi-transparently on top.

    Each heat-map cell covers its patch of the image; hovering shows the patch's value.
    ``symmetric`` centres the colour scale on 0 (use a diverging ``colorscale`` like ``"RdBu_r"``).
    """
    import plotly.graph_objects as go

    img = to_rgb(image)
    a = _as_2d(map)
    W, H = img.width, img.height
    rows, cols = np.meshgrid(np.arange(a.shape[0]), np.arange(a.shape[1]), indexing="ij")
    heat = _heat(a, W, H, symmetric, opacity=opacity, colorscale=colorscale,
                 customdata=np.stack([rows, cols], -1),
                 hovertemplate="patch row %{customdata[0]}, col %{customdata[1]}<br>value %{z:.4g}<extra></extra>",
                 colorbar=dict(title="contribution"))
    fig = go.Figure([_image(np.asarray(img)), heat])
    fig.update_layout(title=title, width=520, height=480, margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    fig.update_xaxes(visible=False, range=[-0.5, W - 0.5])
    fig.update_yaxes(visible=False, range=[H - 0.5, -0.5], scaleanchor="x")
    return fig


def maps_figure(image: Any, maps: dict[str, Any], *, mask: Any = None, title: str | None = None,
                opacity: float = 0.55, symmetric: bool = True, colorscale: str = "RdBu_r",
                panel_size: int = 220, per_row: int = 4) -> Any:
    """Plotly panels: the image, optionally its true ``mask``, then each named map.

    ``maps`` maps a panel title to a ``[gh, gw]`` map, drawn over the image with its own colour
    range (centred on 0 when ``symmetric``: red adds to the similarity, blue takes away).
    Hover shows each patch's value. Panels wrap into rows of at most ``per_row``, so the
    figure fits a notebook column (4 x 220 px by default).
    """
    from plotly.subplots import make_subplots

    img = np.asarray(to_rgb(image))
    H, W = img.shape[:2]
    panels = [("image", None)]
    if mask is not None:
        m = np.asarray(mask.detach().cpu() if isinstance(mask, Tensor) else mask).astype(bool)
        if m.shape != (H, W):
            raise ValueError(f"mask is {m.shape}, the image {(H, W)}")
        panels.append(("true mask", m))
    panels += [(name, _as_2d(a)) for name, a in maps.items()]
    if per_row < 1:
        raise ValueError(f"per_row must be at least 1, got {per_row}")
    cols = min(len(panels), per_row)
    rows = -(-len(panels) // cols)
    gap = 40  # px between rows: room for the panel titles
    grid_height = rows * panel_size + (rows - 1) * gap
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in panels],
                        horizontal_spacing=0.02, vertical_spacing=gap / grid_height if rows > 1 else 0.0)
    picture = _image(img)
    for k, (name, a) in enumerate(panels):
        row, col = k // cols + 1, k % cols + 1
        if name == "true mask" and a is not None:
            shown = (img * 0.35 + np.where(a[..., None], 255.0, 0.0) * 0.65).astype(np.uint8)
            fig.add_trace(_image(shown), row, col)
            continue
        fig.add_trace(picture, row, col)
        if a is None:
            continue
        fig.add_trace(_heat(a, W, H, symmetric, opacity=opacity, colorscale=colorscale, showscale=False, name=name,
                            hovertemplate=f"{name}<br>row %{{y:.0f}} px, col %{{x:.0f}} px<br>"
                                          "value %{z:.4g}<extra></extra>"), row, col)
    fig.update_xaxes(visible=False, range=[-0.5, W - 0.5])
    fig.update_yaxes(visible=False, range=[H - 0.5, -0.5])
    for k in range(rows * cols):
        fig.update_yaxes(scaleanchor=f"x{'' if k == 0 else k + 1}", row=k // cols + 1, col=k % cols + 1)
    fig.update_layout(title=title, width=panel_size * cols + 40, height=grid_height + (70 if title else 40),
                      margin=dict(l=10, r=10, t=60 if title else 30, b=10))
    return fig


def image_panels(images: list[Any], titles: list[str] | None = None, *, maps: list[Any] | None = None,
                 title: str | None = None, opacity: float = 0.5, colorscale: str = "Jet", panel_size: int = 150,
                 per_row: int = 6) -> Any:
    """Plotly panels of several images (PIL images or ``uint8`` arrays), each with its title and,
    with ``maps``, its own patch map ``[gh, gw]`` drawn over it (own colour range; hover shows
    the patch's value). Panels wrap into rows of at most ``per_row``."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not images:
        raise ValueError("no images to show")
    titles = list(titles) if titles is not None else [""] * len(images)
    if len(titles) != len(images) or (maps is not None and len(maps) != len(images)):
        raise ValueError(f"{len(images)} images need as many titles and maps; got {len(titles)} titles and "
                         f"{'no' if maps is None else len(maps)} maps")
    if per_row < 1:
        raise ValueError(f"per_row must be at least 1, got {per_row}")
    cols = min(len(images), per_row)
    rows = -(-len(images) // cols)
    gap = 40
    grid_height = rows * panel_size + (rows - 1) * gap
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=gap / grid_height if rows > 1 else 0.0)
    for k, image in enumerate(images):
        img = np.asarray(to_rgb(image if not isinstance(image, np.ndarray) else Image.fromarray(image)))
        H, W = img.shape[:2]
        row, col = k // cols + 1, k % cols + 1
        fig.add_trace(go.Image(z=img, hoverinfo="skip"), row, col)
        if maps is not None and maps[k] is not None:
            fig.add_trace(_heat(_as_2d(maps[k]), W, H, False, opacity=opacity, colorscale=colorscale, showscale=False,
                                hovertemplate="value %{z:.4g}<extra></extra>"), row, col)
        fig.update_xaxes(visible=False, range=[-0.5, W - 0.5], row=row, col=col)
        fig.update_yaxes(visible=False, range=[H - 0.5, -0.5], scaleanchor=f"x{'' if k == 0 else k + 1}",
                         row=row, col=col)
    fig.update_annotations(font_size=11)
    fig.update_layout(title=title, width=panel_size * cols + 40, height=grid_height + (70 if title else 40),
                      margin=dict(l=10, r=10, t=60 if title else 30, b=10))
    return fig
