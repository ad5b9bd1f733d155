"""Slide heatmaps: per-tile values rasterised at thumbnail scale and drawn over the thumbnail.

Pure functions: ``value_grid`` and ``blend_heatmap`` work on arrays; ``heatmap_figure`` builds a
matplotlib ``Figure`` (no pyplot, so no global state or GUI backend) and ``wsi_hcc.viz.figures.figure_png`` returns its
PNG bytes for the caller to write atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsi_hcc.records import as_boxes
from wsi_hcc.viz.figures import figure_png

__all__ = ["HeatmapPanel", "value_grid", "blend_heatmap", "heatmap_figure", "render_heatmaps_png", "resize_labels"]

_OUTLINE_COLOUR = "#00e5ff"  # cyan: apart from magma's and viridis's colours and from H&E pink and purple


@dataclass(frozen=True)
class HeatmapPanel:
    """One map to draw: a ``(H, W)`` float grid (NaN where there is no tile) and how to colour it.

    ``vmin``/``vmax`` None take the grid's finite range (attention has no fixed scale).
    """

    grid: np.ndarray
    label: str
    cmap: Any = "viridis"  # a matplotlib colormap name, or a Colormap (a categorical one for classes)
    vmin: float | None = 0.0
    vmax: float | None = 1.0
    ticks: dict[float, str] | None = None  # colour-bar labels by value: a legend for categorical maps
    caption: str = ""  # a smaller line under the title: what a value means
    bar_label: str = ""  # the colour bar's label when it differs from ``label`` (a unit, a scale)


def value_grid(coords: np.ndarray, values: np.ndarray, tile_size_level0: float | None, downsample: float,
               shape_hw: tuple[int, int]) -> np.ndarray:
    """Per-tile values painted on a thumbnail-sized grid.

    A thumbnail pixel belongs to a tile when the tile covers the pixel's centre, so tiles that share
    an edge share no pixel and leave no gap; a tile smaller than a pixel still paints the pixel
    holding its centre. Where tiles overlap the pixel takes their mean.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(N, 2)`` level-0 ``(x, y)`` of tile top-left corners, or ``(N, 4)`` boxes
        ``(x0, y0, x1, y1)``. Give a store's tiles as ``TileSpec.tile_boxes(coords)``: at a non-round
        mpp, squares at the rounded stored corners leave seams between neighbours.
    values : numpy.ndarray
        ``(N,)`` per-tile values; non-finite values count as no tile.
    tile_size_level0 : float or None
        Tile edge in level-0 pixels (for corners; None with boxes).
    downsample : float
        Level-0 pixels per thumbnail pixel.
    shape_hw : tuple[int, int]
        ``(height, width)`` of the thumbnail.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32, NaN where no tile lies.
    """
    boxes = as_boxes(coords, tile_size_level0)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (len(boxes),):
        raise ValueError(f"{values.size} values for {len(boxes)} tiles")
    height, width = shape_hw
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.int32)
    finite = np.isfinite(values)
    start = np.ceil(boxes[finite, :2] / downsample - 0.5).astype(np.int64)
    stop = np.ceil(boxes[finite, 2:] / downsample - 0.5).astype(np.int64)
    stop = np.maximum(stop, start + 1)  # a sub-pixel tile still shows
    for (x0, y0), (x1, y1), value in zip(start.tolist(), stop.tolist(), values[finite].tolist()):
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x0 < x1 and y0 < y1:
            total[y0:y1, x0:x1] += value
            count[y0:y1, x0:x1] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def blend_heatmap(thumbnail: np.ndarray, grid: np.ndarray, cmap: str = "viridis", alpha: float = 0.5,
                  vmin: float | None = 0.0, vmax: float | None = 1.0) -> np.ndarray:
    """``thumbnail`` with ``grid`` coloured by ``cmap`` laid over it at ``alpha``; NaN pixels untouched.

    Returns ``(H, W, 3)`` uint8 RGB.
    """
    import matplotlib

    thumbnail = np.asarray(thumbnail)
    if thumbnail.shape[:2] != grid.shape or thumbnail.ndim != 3 or thumbnail.shape[2] != 3:
        raise ValueError(f"thumbnail {thumbnail.shape} and grid {grid.shape} differ; need (H, W, 3) and (H, W)")
    lo, hi = _limits(grid, vmin, vmax)
    covered = np.isfinite(grid)
    scaled = np.clip((np.where(covered, grid, lo) - lo) / (hi - lo), 0.0, 1.0)
    colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    colours = colormap(scaled)[..., :3] * 255.0
    out = thumbnail.astype(np.float64)
    out[covered] = (1.0 - alpha) * out[covered] + alpha * colours[covered]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def heatmap_figure(thumbnail: np.ndarray, panels: Sequence[HeatmapPanel], alpha: float = 0.5,
                   title: str | None = None, panel_width_in: float = 5.0, dpi: int = 100,
                   outline: np.ndarray | None = None, outline_label: str = ""):
    """A matplotlib ``Figure`` with the panels side by side, each over the thumbnail with its colour bar.

    Every panel has the thumbnail's size and extent, so a pixel means the same place in each.
    ``outline`` (``(H, W)`` bool, e.g. a ground-truth region) is drawn as a contour on every panel and
    named ``outline_label`` in a legend.

    Typical use: ``[HeatmapPanel(p_grid, "p(HCC)", "magma"), HeatmapPanel(att_grid, "attention",
    "viridis", None, None)]`` for one slide.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    height, width = np.asarray(thumbnail).shape[:2]
    if outline is not None and np.shape(outline) != (height, width):
        raise ValueError(f"outline {np.shape(outline)} and thumbnail {(height, width)} differ")
    captions = any(panel.caption for panel in panels)
    panel_height_in = panel_width_in * height / max(width, 1) + 0.6 + 0.25 * captions + 0.3 * (outline is not None)
    figure = Figure(figsize=(panel_width_in * 1.25 * len(panels), panel_height_in), dpi=dpi, layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        lo, hi = _limits(panel.grid, panel.vmin, panel.vmax)
        ax.imshow(blend_heatmap(thumbnail, panel.grid, panel.cmap, alpha, lo, hi), interpolation="nearest")
        second_line = f"\n{panel.caption or ' '}" if captions else ""  # titles of one height: panels of one size
        ax.set_title(panel.label + second_line, fontsize=10)
        ax.set_axis_off()
        if outline is not None and np.any(outline) and not np.all(outline):
            ax.contour(np.asarray(outline, dtype=np.float32), levels=[0.5], colors=[_OUTLINE_COLOUR], linewidths=1.2)
        colorbar = figure.colorbar(ScalarMappable(Normalize(lo, hi), panel.cmap), ax=ax, shrink=0.8)
        if panel.ticks:
            colorbar.set_ticks(list(panel.ticks), labels=list(panel.ticks.values()))
        else:
            colorbar.set_label(panel.bar_label or panel.label)
    if outline is not None:
        figure.legend(handles=[Line2D([], [], color=_OUTLINE_COLOUR, lw=1.5, label=outline_label or "outline")],
                      loc="outside lower center", frameon=False, fontsize=9)
    if title:
        figure.suptitle(title)
    return figure


def render_heatmaps_png(thumbnail: np.ndarray, panels: Sequence[HeatmapPanel], alpha: float = 0.5,
                        title: str | None = None, outline: np.ndarray | None = None, outline_label: str = "") -> bytes:
    """``heatmap_figure`` as PNG bytes: one call for the slide's probability/attention picture."""
    return figure_png(heatmap_figure(thumbnail, panels, alpha, title, outline=outline, outline_label=outline_label))


def _limits(grid: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    finite = grid[np.isfinite(grid)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:  # a constant map still needs a scale
        hi = lo + 1.0
    return lo, hi


def resize_labels(labels: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """A label image (``(h, w)`` integers, e.g. a ground-truth mask) resampled by nearest neighbour to
    ``shape_hw`` ``(height, width)``: the same labels, on the heatmap's pixels."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (h, w), got {labels.shape}")
    height, width = shape_hw
    resized = Image.fromarray(labels.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(resized).astype(labels.dtype)
