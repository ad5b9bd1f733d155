"""The overlays of one slide, drawn per Deep Zoom tile from the tile table and the store's grid.

Layers: ``p_<class>`` (and ``p_<grade>``) on a fixed 0-1 scale, ``attention`` on the slide's own
range, ``top_class`` (one colour per class, as in the heatmaps and QuPath), ``tissue`` (the tiler's
mask, computed again from the slide with the store's tissue settings) and ``regions`` (the tumour
regions of the GeoJSON, sent as polygons and drawn by the page). Each raster layer is an RGBA PNG
per tile, transparent where it says nothing; the page sets its opacity.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wsi_hcc.view.tile_index import TileIndex

__all__ = ["Layer", "SlideOverlays", "rgba_png", "colour_table"]

TISSUE_RGB = (0, 170, 0)  # the QC picture's tissue outline


@dataclass(frozen=True)
class Layer:
    """A per-tile map: ``values`` ``(N,)`` coloured through ``colours`` (``(256, 3)`` uint8 from
    ``vmin`` to ``vmax``), or ``classes`` indices coloured one by one."""

    name: str
    label: str
    values: np.ndarray
    colours: np.ndarray
    vmin: float = 0.0
    vmax: float = 1.0
    classes: Sequence[str] = ()

    def legend(self) -> dict:
        if self.classes:
            return {"kind": "classes", "items": [{"name": n, "colour": _hex(c)}
                                                 for n, c in zip(self.classes, self.colours)]}
        stops = self.colours[np.linspace(0, 255, 11).round().astype(int)]
        return {"kind": "scale", "vmin": self.vmin, "vmax": self.vmax, "stops": [_hex(c) for c in stops]}

    def rgba(self, index: np.ndarray) -> np.ndarray:
        covered = index >= 0
        values = self.values[np.where(covered, index, 0)]
        covered &= np.isfinite(values)
        if self.classes:
            lut_index = np.clip(np.nan_to_num(values), 0, len(self.colours) - 1).astype(np.int64)
        else:
            span = self.vmax - self.vmin if self.vmax > self.vmin else 1.0
            scaled = np.clip((np.nan_to_num(values) - self.vmin) / span, 0.0, 1.0)
            lut_index = np.round(scaled * 255).astype(np.int64)
        out = np.zeros(index.shape + (4,), dtype=np.uint8)
        out[..., :3] = self.colours[lut_index]
        out[..., 3] = np.where(covered, 255, 0)
        return out


def colour_table(cmap: str) -> np.ndarray:
    """``(256, 3)`` uint8 RGB of a matplotlib colormap."""
    import matplotlib

    return np.round(matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


class _Once:
    """A value computed on first use (by one thread; the others wait for it)."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self._lock, self._done, self._value = make, threading.Lock(), False, None

    def __call__(self) -> Any:
        with self._lock:
            if not self._done:
                self._value, self._done = self._make(), True
            return self._value


@dataclass
class SlideOverlays:
    """Everything drawn over one slide; ``layers`` by name, in menu order.

    The tissue mask (``tissue``: ``(mask, level-0 px per mask pixel)``) and the region polygons
    (``regions``: ``[{"class", "colour", "polygons": [[ring, ...], ...]}]``) cost seconds on a big
    slide, so they are made on first use; ``region_legend`` says beforehand what ``regions`` holds.
    """

    index: TileIndex
    layers: dict[str, Layer] = field(default_factory=dict)
    tissue: Callable[[], tuple[np.ndarray, float]] | None = None
    regions: Callable[[], list[dict]] = lambda: []
    region_legend: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.tissue = _Once(self.tissue) if self.tissue is not None else None
        self.regions = _Once(self.regions)

    def names(self) -> list[str]:
        return list(self.layers) + (["tissue"] if self.tissue is not None else [])

    def render(self, name: str, x0: float, y0: float, scale: float, width: int, height: int) -> np.ndarray:
        """RGBA ``(height, width, 4)`` of layer ``name`` for pixels ``scale`` level-0 px wide whose
        grid starts at level-0 ``(x0, y0)``; KeyError for an unknown layer."""
        xs = x0 + (np.arange(width) + 0.5) * scale
        ys = y0 + (np.arange(height) + 0.5) * scale
        if name == "tissue" and self.tissue is not None:
            return self._tissue(xs, ys)
        return self.layers[name].rgba(self.index.index_image(xs, ys))

    def values_at(self, x: float, y: float) -> dict:
        """The tile under level-0 ``(x, y)`` and every layer's value there."""
        i = self.index.at(x, y)
        out: dict = {"tile": None, "values": {}}
        if self.tissue is not None:
            out["tissue"] = bool(self._tissue_at(np.array([x]), np.array([y]))[0, 0])
        if i < 0:
            return out
        x0, y0, x1, y1 = self.index.boxes[i].tolist()
        out["tile"] = {"index": i, "x0": x0, "y0": y0, "x1": x1, "y1": y1}
        for layer in self.layers.values():
            value = float(layer.values[i])
            if not np.isfinite(value):  # an empty cell of the table: JSON has no NaN
                out["values"][layer.name] = None
            else:
                out["values"][layer.name] = layer.classes[int(value)] if layer.classes else value
        return out

    def _tissue_at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        mask, downsample = self.tissue()
        # clipped to one cell beyond the mask first: a far-off point (x=1e99) must not overflow the cast
        cols = np.clip(np.floor(xs / downsample), -1, mask.shape[1]).astype(np.int64)
        rows = np.clip(np.floor(ys / downsample), -1, mask.shape[0]).astype(np.int64)
        inside = ((rows >= 0) & (rows < mask.shape[0]))[:, None] & ((cols >= 0) & (cols < mask.shape[1]))[None, :]
        picked = mask[np.clip(rows, 0, mask.shape[0] - 1)[:, None], np.clip(cols, 0, mask.shape[1] - 1)[None, :]]
        return picked & inside

    def _tissue(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        covered = self._tissue_at(xs, ys)
        out = np.zeros(covered.shape + (4,), dtype=np.uint8)
        out[..., :3] = TISSUE_RGB
        out[..., 3] = np.where(covered, 255, 0)
        return out


def rgba_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an RGBA image (fast compression: overlays are mostly flat colour)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _hex(rgb) -> str:
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"
