"""Slides opened for viewing: their pyramid, resolution and overlays, and an LRU cache of encoded
tiles shared by all of them. Opened lazily on first request; at most a few stay open."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.view.catalog import Catalog, SlideEntry
from wsi_hcc.view.overlays import Layer, SlideOverlays, colour_table
from wsi_hcc.view.pyramid import DeepZoomPyramid
from wsi_hcc.view.tile_index import TileIndex

__all__ = ["OpenedSlide", "SlideShelf", "ByteCache", "encode_tile"]


class ByteCache:
    """Thread-safe LRU of encoded tiles, bounded by their total bytes."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_or_make(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make()  # outside the lock: other tiles are made meanwhile
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)
        return data

    def __len__(self) -> int:
        return len(self._items)


def encode_tile(rgb: np.ndarray, image_format: str) -> bytes:
    """``jpeg`` (quality 90, 4:4:4, what the viewer loads) or ``png`` (lossless)."""
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if image_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=90, subsampling=0)
    return buffer.getvalue()


@dataclass
class OpenedSlide:
    entry: SlideEntry
    pyramid: DeepZoomPyramid
    mpp: float | None
    overlays: SlideOverlays

    def info(self) -> dict:
        grid = self.pyramid.grid
        layers = [{"name": layer.name, "label": layer.label, "legend": layer.legend()}
                  for layer in self.overlays.layers.values()]
        if self.overlays.tissue is not None:
            layers.append({"name": "tissue", "label": "tissue mask", "legend": {
                "kind": "classes", "items": [{"name": "tissue", "colour": "#00aa00"}]}})
        return {"id": self.entry.id, "width": grid.width, "height": grid.height, "tile_px": grid.tile_px,
                "levels": grid.level_count, "mpp": self.mpp, "layers": layers,
                "regions": self.overlays.region_legend,
                "row": self.entry.row}


class SlideShelf:
    """Opens catalogue slides on demand and keeps the ``keep_open`` most recently used."""

    def __init__(self, catalog: Catalog, keep_open: int = 4):
        self.catalog = catalog
        self.keep_open = keep_open
        self._open: OrderedDict[str, OpenedSlide] = OrderedDict()
        self._opening: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, slide_id: str) -> OpenedSlide:
        """KeyError for an id not in the catalogue; WsiHccError (one line) for a slide that cannot open.

        A slide opens once (its first request waits for it, requests for other slides do not)."""
        entry = self.catalog.entries[slide_id]
        with self._lock:
            opening = self._opening.setdefault(slide_id, threading.Lock())
        with opening:
            with self._lock:
                if slide_id in self._open:
                    self._open.move_to_end(slide_id)
                    return self._open[slide_id]
            if entry.slide_path is None:
                raise WsiHccError(entry.problem or f"{slide_id}: no slide to show")
            opened = _open(entry, self.catalog)
            with self._lock:
                self._open[slide_id] = opened
                while len(self._open) > self.keep_open:
                    self._open.popitem(last=False)[1].pyramid.close()
            return opened

    def close(self) -> None:
        with self._lock:
            for opened in self._open.values():
                opened.pyramid.close()
            self._open.clear()


def _open(entry: SlideEntry, catalog: Catalog) -> OpenedSlide:
    from wsi_hcc.slide.readers import open_slide

    meta = _store_meta(entry)
    reader = open_slide(entry.slide_path)
    try:
        mpp = _mpp(reader, meta)
        overlays = _overlays(entry, catalog, meta, reader, mpp)
    except BaseException:
        reader.close()
        raise
    return OpenedSlide(entry, DeepZoomPyramid(reader), mpp, overlays)


def _store_meta(entry: SlideEntry) -> dict | None:
    if entry.store is None:
        return None
    from wsi_hcc.store.feature_array import read_store_meta

    return read_store_meta(entry.store)


def _mpp(reader, meta: dict | None) -> float | None:
    if meta is not None:
        return float(meta["slide"]["slide_mpp"])
    from wsi_hcc.slide.mpp import resolve_mpp

    try:
        return resolve_mpp(reader)[0]
    except WsiHccError:
        return None  # no scale bar and no tissue mask, the pixels still show


def _overlays(entry: SlideEntry, catalog: Catalog, meta: dict | None, reader, mpp: float | None) -> SlideOverlays:
    from wsi_hcc.records import TileSpec, as_boxes
    from wsi_hcc.viz.tile_table import read_tile_table

    tissue = (lambda: _tissue(reader, mpp, meta)) if mpp is not None else None
    if entry.tile_table is None:
        return SlideOverlays(TileIndex(np.zeros((0, 4))), tissue=tissue)
    table = read_tile_table(entry.tile_table)
    boxes = (TileSpec.from_dict(meta["tile_spec"]).tile_boxes(table.coords) if meta is not None
             else as_boxes(table.coords, table.tile_size_level0))
    legend, regions = _regions(boxes, table.scores, catalog)
    return SlideOverlays(TileIndex(boxes), layers=_layers(table.scores, catalog), tissue=tissue, regions=regions,
                         region_legend=legend)


def _layers(scores: dict[str, np.ndarray], catalog: Catalog) -> dict[str, Layer]:
    from wsi_hcc.viz.slide_exports import class_colours, measurement_name

    magma, viridis = colour_table("magma"), colour_table("viridis")
    grade_columns = [measurement_name(g) for g in catalog.grade_names]
    class_columns, names = [measurement_name(c) for c in catalog.class_names], list(catalog.class_names)
    if not class_columns or not all(c in scores for c in class_columns):  # no manifest: every p_ but grades
        class_columns = [c for c in scores if c.startswith("p_") and c not in grade_columns]
        names = [c[2:] for c in class_columns]
    layers = {c: Layer(c, f"P({name}) per tile", scores[c], magma) for c, name in zip(class_columns, names)}
    if len(class_columns) >= 2:
        top = np.stack([scores[c] for c in class_columns], axis=1).argmax(axis=1).astype(np.float64)
        layers["top_class"] = Layer("top_class", "top class per tile", top,
                                    np.asarray(class_colours(names), dtype=np.uint8), classes=names)
    if "attention" in scores:
        # as the heatmap PNG draws it: a share of the slide's highest attention, 0-1
        attention = scores["attention"]
        finite = attention[np.isfinite(attention)]
        top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        layers["attention"] = Layer("attention", "MIL attention / the slide's highest", attention / top, viridis)
    for c, name in zip(grade_columns, catalog.grade_names):
        if c in scores:
            layers[c] = Layer(c, f"P({name}) per tile", scores[c], magma)
    return layers


def _regions(boxes: np.ndarray, scores: dict[str, np.ndarray],
             catalog: Catalog) -> tuple[list[dict], Callable[[], list[dict]]]:
    """The tumour regions classify exported to QuPath: tiles of the positive (last) class at or
    above the run's region threshold, merged (MIL runs; a patch classifier's run records none).
    Their legend now, their polygons when first asked for."""
    from wsi_hcc.qupath.export import DEFAULT_CLASS_COLORS
    from wsi_hcc.viz.slide_exports import measurement_name

    threshold = catalog.region_threshold
    positive = measurement_name(catalog.class_names[-1]) if len(catalog.class_names) == 2 else None
    if threshold is None or positive not in scores or not np.any(scores[positive] >= threshold):
        return [], lambda: []
    r, g, b = DEFAULT_CLASS_COLORS[0]
    legend = {"class": f"{catalog.class_names[-1]} (p >= {threshold:g})", "colour": f"#{r:02x}{g:02x}{b:02x}"}

    def polygons() -> list[dict]:
        import shapely

        from wsi_hcc.qupath.export import probability_regions

        geometry = probability_regions(boxes, scores[positive], None, threshold)
        return [legend | {"polygons": [[np.asarray(ring.coords)[:, :2].round(2).tolist()
                                        for ring in (p.exterior, *p.interiors)]
                                       for p in shapely.get_parts(geometry) if not p.is_empty]}]

    return [legend], polygons


def _tissue(reader, mpp: float, meta: dict | None) -> tuple[np.ndarray, float]:
    """The tiler's tissue mask: same thumbnail resolution and settings as the store's run."""
    from wsi_hcc.slide.thumbnail import read_thumbnail
    from wsi_hcc.tiling.tissue import TissueParams, detect_tissue

    settings = ((meta or {}).get("config") or {}).get("tissue") or {}
    params = TissueParams(**settings)
    thumbnail, downsample = read_thumbnail(reader, mpp, params.thumbnail_mpp)
    return detect_tissue(thumbnail, mpp * downsample, params), downsample
