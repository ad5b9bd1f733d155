"""Pictures of single tiles: a Grad-CAM explanation beside its tile, and a grid of augmented samples.

Pure builders on arrays returning matplotlib ``Figure`` objects (``figure_png`` gives the bytes).
Tiles are drawn at one figure pixel per tile pixel where the figure allows it, so nothing is resampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["heat_overlay", "explanation_title", "explanation_figure", "augmentation_layout", "augmentation_figure"]

CAM_CMAP = "jet"


def heat_overlay(tile: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``tile`` (H, W, 3) uint8 blended with the jet colour map of ``cam`` (H, W) in [0, 1]."""
    from matplotlib import colormaps

    colour = colormaps[CAM_CMAP](np.clip(cam, 0, 1))[..., :3] * 255.0
    return np.clip((1 - alpha) * tile.astype(np.float64) + alpha * colour, 0, 255).round().astype(np.uint8)


def explanation_title(explained: str, score: float, predicted: str, where: str = "") -> str:
    """``"<where>: Grad-CAM for <class>, P = 0.93 (predicted: <class>)"``: what the map explains and how sure."""
    prefix = f"{where}: " if where else ""
    return f"{prefix}Grad-CAM for {explained}, P = {score:.2f} (predicted: {predicted})"


def explanation_figure(tile: np.ndarray, cam: np.ndarray, title: str, alpha: float = 0.45, dpi: int = 100):
    """The tile, then the tile under its Grad-CAM (``cam`` (H, W) in [0, 1]) with a colour bar
    from "no evidence" (0) to "strongest evidence" (1) for the explained class; ``title`` on top."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    height, width = tile.shape[:2]
    side_in = max(width, 160) / dpi
    figure = Figure(figsize=(2 * side_in + 1.3, side_in * height / width + 0.75), dpi=dpi, layout="constrained")
    plain, overlay = figure.subplots(1, 2)
    plain.imshow(tile, interpolation="nearest")
    plain.set_title("tile", fontsize=8)
    overlay.imshow(heat_overlay(tile, cam, alpha), interpolation="nearest")
    overlay.set_title("Grad-CAM over the tile", fontsize=8)
    for ax in (plain, overlay):
        ax.set_axis_off()
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), CAM_CMAP), ax=overlay, shrink=0.9)
    bar.set_ticks([0, 0.5, 1], labels=["0 none", "0.5", "1 strongest"])
    bar.set_label("evidence for the class", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=8, wrap=True)
    return figure


_GAP_PX, _LABEL_PX, _TITLE_PX = 8, 18, 26
_ORIGINAL_COLOUR = "#c81e28"


def augmentation_layout(n_tiles: int, tile_hw: tuple[int, int], columns: int = 4,
                        title: bool = False) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Where ``augmentation_figure`` puts each tile: the figure's ``(width, height)`` in pixels and the
    ``(x, y)`` pixel of each tile's top-left corner (cells separated by gaps, a label strip above each)."""
    height, width = tile_hw
    columns = max(1, min(columns, n_tiles))
    rows = -(-n_tiles // columns)
    top = _TITLE_PX if title else 0
    size = (columns * width + (columns + 1) * _GAP_PX, top + rows * (_LABEL_PX + height) + (rows + 1) * _GAP_PX)
    corners = [(_GAP_PX + c * (width + _GAP_PX), top + _GAP_PX + r * (_LABEL_PX + height + _GAP_PX) + _LABEL_PX)
               for r, c in (divmod(k, columns) for k in range(n_tiles))]
    return size, corners


def augmentation_figure(original: np.ndarray, samples: Sequence[np.ndarray], columns: int = 4, title: str = "",
                        dpi: int = 100):
    """The original tile, framed in red and labelled "original", then the augmented samples numbered
    1..n, each in its own cell with white gaps between cells. Every tile is drawn at one figure pixel
    per tile pixel (nothing resampled), at the places ``augmentation_layout`` gives."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    tiles = [original, *samples]
    height, width = original.shape[:2]
    (figure_w, figure_h), corners = augmentation_layout(len(tiles), (height, width), columns, bool(title))
    figure = Figure(figsize=(figure_w / dpi, figure_h / dpi), dpi=dpi)
    for k, (tile, (x, y)) in enumerate(zip(tiles, corners)):
        ax = figure.add_axes((x / figure_w, 1 - (y + height) / figure_h, width / figure_w, height / figure_h))
        ax.imshow(tile, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        label = "original" if k == 0 else f"sample {k}"
        figure.text(x / figure_w, 1 - (y - 6) / figure_h, label, fontsize=8, va="bottom",
                    weight="bold" if k == 0 else "normal", color=_ORIGINAL_COLOUR if k == 0 else "black")
    x, y = corners[0]
    pad = _GAP_PX / 2  # the frame lies in the gap, around the original's pixels, never on them
    figure.patches.append(Rectangle(((x - pad) / figure_w, 1 - (y + height + pad) / figure_h), (width + 2 * pad) /
                                    figure_w, (height + 2 * pad) / figure_h, transform=figure.transFigure,
                                    fill=False, edgecolor=_ORIGINAL_COLOUR, linewidth=2))
    if title:
        figure.text(_GAP_PX / figure_w, 1 - 6 / figure_h, title, fontsize=9, va="top")
    return figure
