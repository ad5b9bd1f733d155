"""The per-slide QC picture: thumbnail, tissue outline and kept tiles, with a title and a legend.

``render_qc`` draws on the thumbnail's own pixels (so a tile border is one exact pixel); ``qc_figure``
puts that picture under a header that says which slide, at which mpp and tile size, how many tiles
were kept and what the colours mean; ``qc_png`` returns it as a small palette PNG.
"""

from __future__ import annotations

import numpy as np

from wsi_hcc.records import SlideInfo, TileSpec
from wsi_hcc.viz.figures import figure_png, palette_png

__all__ = ["render_qc", "qc_title", "qc_figure", "qc_png"]

_OUTLINE_RGB = (0, 160, 0)
_TILE_RGB = (30, 60, 220)
_TILE_TINT = 0.22  # share of the tile colour laid over a kept tile: dense grids still read as "kept"
_MIN_BORDER_PX = 6  # below this tile edge (thumbnail px) the borders would hide the tissue: tint only
_HEADER_PX = 58
_MIN_WIDTH_PX = 640  # room for the header's text beside a narrow slide


def render_qc(thumbnail: np.ndarray, tissue_mask: np.ndarray, coords: np.ndarray, tile_size_level0: float,
              downsample: float) -> np.ndarray:
    """Tint the kept tiles and draw their borders (blue) and the tissue outline (green) on a thumbnail.

    Borders are drawn where a tile spans at least 6 thumbnail pixels; smaller tiles are tinted only.

    Parameters
    ----------
    thumbnail : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.
    tissue_mask : numpy.ndarray
        ``(H, W)`` bool, on the same grid as the thumbnail.
    coords : numpy.ndarray
        ``(N, 2)`` level-0 ``(x, y)`` of kept tiles.
    tile_size_level0 : float
        Tile edge in level-0 pixels.
    downsample : float
        Level-0 pixels per thumbnail pixel.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.
    """
    from skimage.segmentation import find_boundaries

    height, width = thumbnail.shape[:2]
    edge = max(1, int(round(tile_size_level0 / downsample)))
    kept = np.zeros((height, width), dtype=bool)
    borders = np.zeros((height, width), dtype=bool)
    for x, y in np.floor(np.asarray(coords).reshape(-1, 2) / downsample).astype(np.int64).tolist():
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + edge, width) - 1, min(y + edge, height) - 1
        if x0 > x1 or y0 > y1:
            continue
        kept[y0:y1 + 1, x0:x1 + 1] = True
        if edge >= _MIN_BORDER_PX:
            borders[y0, x0:x1 + 1] = borders[y1, x0:x1 + 1] = True
            borders[y0:y1 + 1, x0] = borders[y0:y1 + 1, x1] = True
    picture = thumbnail.astype(np.float32)
    picture[kept] = (1 - _TILE_TINT) * picture[kept] + _TILE_TINT * np.asarray(_TILE_RGB, np.float32)
    picture = np.round(picture).astype(np.uint8)
    picture[borders] = _TILE_RGB
    if tissue_mask.any():
        picture[find_boundaries(tissue_mask, mode="inner")] = _OUTLINE_RGB
    return picture


def qc_title(name: str, slide: SlideInfo, spec: TileSpec, n_tiles: int) -> tuple[str, str]:
    """The header's two lines: the slide's name, then its mpp (and where it came from), the tiling and the count."""
    tiles = f"{n_tiles} tile{'' if n_tiles == 1 else 's'} kept"
    return name, (f"slide {slide.slide_mpp:.3f} µm/px ({slide.mpp_source}) · tiles {spec.tile_px} px at "
                  f"{spec.target_mpp:g} µm/px · {tiles}")


def qc_figure(picture: np.ndarray, title: tuple[str, str], n_tiles: int, dpi: int = 100):
    """A matplotlib ``Figure``: ``picture`` (from ``render_qc``) at one figure pixel per picture pixel,
    under a header with the two ``title`` lines and a legend of the outline and tile colours."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    height, width = picture.shape[:2]
    figure_w, figure_h = max(width, _MIN_WIDTH_PX), height + _HEADER_PX
    figure = Figure(figsize=(figure_w / dpi, figure_h / dpi), dpi=dpi)
    ax = figure.add_axes(((figure_w - width) / 2 / figure_w, 0, width / figure_w, height / figure_h))
    ax.imshow(picture, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    top = 1 - 6 / figure_h
    figure.text(8 / figure_w, top, title[0], fontsize=10, weight="bold", va="top")
    figure.text(8 / figure_w, top - 18 / figure_h, title[1], fontsize=8, va="top")
    rgb = [np.asarray(_OUTLINE_RGB) / 255, np.asarray(_TILE_RGB) / 255]
    handles = [Line2D([], [], color=rgb[0], lw=2, label="tissue outline"),
               Patch(facecolor=(*rgb[1], _TILE_TINT), edgecolor=rgb[1], label=f"kept tile ({n_tiles})")]
    figure.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, top - 32 / figure_h), ncols=2, fontsize=8,
                  frameon=False, handlelength=1.6, borderaxespad=0.2)
    return figure


def qc_png(thumbnail: np.ndarray, tissue_mask: np.ndarray, coords: np.ndarray, downsample: float, name: str,
           slide: SlideInfo, spec: TileSpec) -> bytes:
    """The QC picture of one tiled slide as palette PNG bytes (a 1024 px slide picture stays well under 500 kB)."""
    coords = np.asarray(coords).reshape(-1, 2)
    picture = render_qc(thumbnail, tissue_mask, coords, spec.tile_size_level0, downsample)
    figure = qc_figure(picture, qc_title(name, slide, spec, len(coords)), len(coords))
    return palette_png(figure_png(figure))
