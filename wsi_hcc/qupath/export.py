"""Tile predictions and high-probability regions as QuPath GeoJSON (rules: shared/specs/qupath_geojson.txt).

Builders are pure functions of arrays that return plain GeoJSON dicts; ``write_qupath_geojson`` is the
only I/O. Coordinates are level-0 ``(x, y)`` pixels *as QuPath opens the image*: for OpenSlide images
with ``openslide.bounds-x/-y`` (MRXS and others) QuPath's origin is the bounds corner, so every
builder takes that corner as ``offset_xy`` and subtracts it (``slide_bounds_offset`` reads it).
``wsi_hcc.qupath.annotations.read_qupath_geojson(..., origin_xy=offset_xy)`` undoes the shift.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.records import as_boxes
from wsi_hcc.utils.atomic import atomic_write_bytes

__all__ = ["QuPathExportError", "slide_bounds_offset", "tile_features", "probability_regions",
           "region_features", "write_qupath_geojson", "DEFAULT_CLASS_COLORS"]

# Tab10-like colours; names not built into QuPath keep them (spec D09).
DEFAULT_CLASS_COLORS = ((214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189),
                        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
_SIGNIFICANT_DIGITS = 7  # detections store float32 (spec D12)


class QuPathExportError(WsiHccError):
    """Inputs that would make QuPath reject or silently alter an export."""


def slide_bounds_offset(properties: Mapping[str, object]) -> tuple[int, int]:
    """``(bounds_x, bounds_y)`` from OpenSlide properties, ``(0, 0)`` when the slide has no bounds.

    QuPath's OpenSlide reader crops to these bounds, so its origin is this level-0 point (spec C10).
    """
    def read(key: str) -> int:
        value = properties.get(key)
        if value in (None, ""):
            return 0
        try:
            return int(float(value))
        except (TypeError, ValueError):
            raise QuPathExportError(f"slide property {key}={value!r} is not a number") from None

    return read("openslide.bounds-x"), read("openslide.bounds-y")


def tile_features(coords: np.ndarray, tile_size_level0: float | None, measurements: Mapping[str, np.ndarray],
                  class_names: Sequence[str] = (), class_index: np.ndarray | None = None,
                  class_colors: Mapping[str, Sequence[int]] | None = None,
                  offset_xy: tuple[float, float] = (0, 0)) -> list[dict]:
    """One QuPath ``tile`` feature per tile: its rectangle, its measurements and optionally its class.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(N, 2)`` level-0 ``(x, y)`` of tile top-left corners, in slide (OpenSlide) pixels; or
        ``(N, 4)`` boxes ``(x0, y0, x1, y1)``. Give a store's tiles as ``TileSpec.tile_boxes(coords)``:
        at a non-round mpp, squares at the rounded stored corners leave gaps between neighbours.
    tile_size_level0 : float or None
        Tile edge in level-0 pixels (for corners; None with boxes).
    measurements
        Name -> ``(N,)`` values, e.g. ``{"p_HCC": p, "attention": a}``. Every value must be finite:
        QuPath 0.4 aborts on NaN and Measurement Maps skip tiles without a key (spec D10, E02), so
        a non-finite value raises instead of being dropped silently. Values keep 7 significant digits.
    class_names, class_index
        ``class_index`` ``(N,)`` int indexes ``class_names`` (e.g. the argmax class); -1 leaves a tile
        unclassified. Omit both for unclassified tiles.
    class_colors
        Name -> ``(r, g, b)`` 0..255; classes not named get ``DEFAULT_CLASS_COLORS`` in order.
    offset_xy
        QuPath's origin in slide pixels (``slide_bounds_offset``), subtracted from every position.
    """
    boxes = as_boxes(coords, tile_size_level0)
    n = len(boxes)
    names = list(measurements)
    _check_measurement_names(names)
    columns = []
    for name in names:
        values = np.asarray(measurements[name], dtype=np.float64).reshape(-1)
        if values.shape != (n,):
            raise QuPathExportError(f"measurement {name!r} has {values.size} values for {n} tiles")
        bad = ~np.isfinite(values)
        if bad.any():
            raise QuPathExportError(f"measurement {name!r} has {int(bad.sum())} non-finite values (first at tile "
                                    f"{int(np.flatnonzero(bad)[0])}); QuPath rejects NaN/inf, fix the values first")
        columns.append(_round_significant(values))
    classifications = _classifications(class_names, class_index, class_colors, n)
    boxes = boxes - np.tile(np.asarray(offset_xy, dtype=np.float64), 2)
    x0, y0 = _positions(boxes[:, :2])
    x1, y1 = _positions(boxes[:, 2:])
    features = []
    for i, (row, classification) in enumerate(zip(zip(*columns) if columns else [()] * n, classifications)):
        properties = {"objectType": "tile", "measurements": dict(zip(names, row))}
        if classification is not None:
            properties["classification"] = classification
        start = [x0[i], y0[i]]  # one list for the first and closing position: fewer objects, same JSON
        ring = [start, [x1[i], y0[i]], [x1[i], y1[i]], [x0[i], y1[i]], start]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": properties})
    return features


def probability_regions(coords: np.ndarray, values: np.ndarray, tile_size_level0: float | None, threshold: float):
    """The union of the tiles whose value is ``>= threshold``, as one valid polygonal geometry.

    Tiles that share an edge merge; enclosed low-value tiles become holes; separate groups become
    parts of a MultiPolygon, so there is one polygon per edge-connected group of tiles. Returns an
    empty Polygon when no tile reaches the threshold. Level-0 pixels, corners rounded to 0.01 px
    (QuPath's grid, spec C11). Non-finite values never reach it.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(N, 2)`` level-0 ``(x, y)`` of tile top-left corners, or ``(N, 4)`` boxes
        ``(x0, y0, x1, y1)``: ``TileSpec.tile_boxes(coords)`` for a store's tiles, whose rounded
        corners leave gaps between neighbours at a non-round mpp (see ``tile_features``).
    values : numpy.ndarray
        ``(N,)`` per-tile value, e.g. the HCC probability.
    tile_size_level0 : float or None
        Tile edge in level-0 pixels (for corners; None with boxes).
    """
    import shapely

    boxes = as_boxes(coords, tile_size_level0)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape != (len(boxes),):
        raise QuPathExportError(f"{values.size} values for {len(boxes)} tiles")
    keep = boxes[np.isfinite(values) & (values >= threshold)]
    if len(keep) == 0:
        return shapely.Polygon()
    # Exact union of axis-aligned boxes on a 0.01 px grid: valid, adjacent tiles share edges exactly.
    region = shapely.union_all(_row_runs(np.round(keep, 2)), grid_size=0.01)
    return _valid_polygonal(region)


def region_features(geometry, class_name: str, color: Sequence[int] = DEFAULT_CLASS_COLORS[0],
                    offset_xy: tuple[float, float] = (0, 0)) -> list[dict]:
    """One QuPath ``annotation`` feature per polygon of ``geometry`` (a pathologist edits them one by one).

    ``geometry`` is a shapely Polygon/MultiPolygon in slide level-0 pixels (``probability_regions``);
    it is shifted by ``-offset_xy``, repaired if invalid, and zero-area parts are dropped (spec C07, C08).
    """
    import shapely

    classification = _classification(class_name, color)
    if geometry is None or geometry.is_empty:
        return []
    if offset_xy != (0, 0):
        geometry = shapely.transform(geometry, lambda xy: xy - np.asarray(offset_xy, dtype=np.float64))
    # Repair before snapping to QuPath's 0.01 px grid (GEOS cannot snap invalid input), and after.
    geometry = _valid_polygonal(shapely.set_precision(_valid_polygonal(geometry), 0.01))
    features = []
    for polygon in getattr(geometry, "geoms", [geometry]):
        if polygon.is_empty or polygon.area <= 0:
            continue
        features.append({"type": "Feature", "geometry": _polygon_json(polygon),
                         "properties": {"objectType": "annotation", "classification": classification}})
    return features


def write_qupath_geojson(path: str | Path, features: Sequence[dict]) -> Path:
    """Write ``features`` as one compact FeatureCollection, atomically (temporary name, then rename).

    ``path`` ends in ``.geojson`` or ``.geojson.gz`` (gzip, fixed mtime so reruns give equal bytes).
    Raises ``QuPathExportError`` for another extension or a NaN/inf anywhere.
    """
    path = Path(path)
    lower = path.name.lower()
    if not (lower.endswith(".geojson") or lower.endswith(".geojson.gz")):
        raise QuPathExportError(f"{path}: QuPath imports only .geojson or .geojson.gz here; rename the output")
    try:
        text = json.dumps({"type": "FeatureCollection", "features": list(features)}, separators=(",", ":"),
                          allow_nan=False, ensure_ascii=False)
    except ValueError as exc:
        raise QuPathExportError(f"{path}: {exc}; QuPath rejects NaN/inf, fix the values first") from None
    data = text.encode("utf-8")
    if lower.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
    return path


def _check_measurement_names(names: list[str]) -> None:
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise QuPathExportError(f"measurement name {name!r} is blank; QuPath needs a name")
        if name.strip().lower() == "class probability":
            raise QuPathExportError("a measurement called 'Class probability' is hidden by QuPath's Measurement "
                                    "Maps; name it after the class, e.g. 'p_HCC'")


def _classification(name: str, color: Sequence[int]) -> dict:
    if not isinstance(name, str) or not name.strip() or "\n" in name:
        raise QuPathExportError(f"class name {name!r} is blank or multi-line; QuPath rejects it")
    if ":" in name:
        raise QuPathExportError(f"class name {name!r} contains ':', which QuPath reads as a derived class")
    rgb = [int(c) for c in color]
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise QuPathExportError(f"colour {tuple(color)} for class {name!r} is not three integers in 0..255")
    return {"name": name, "color": rgb}


def _classifications(class_names, class_index, class_colors, n: int) -> list[dict | None]:
    if class_index is None:
        return [None] * n
    class_index = np.asarray(class_index).reshape(-1)
    if class_index.shape != (n,):
        raise QuPathExportError(f"class_index has {class_index.size} values for {n} tiles")
    if n and (class_index.min() < -1 or class_index.max() >= len(class_names)):
        raise QuPathExportError(f"class_index outside -1..{len(class_names) - 1} for classes {tuple(class_names)}")
    colors = dict(class_colors or {})
    by_index = [_classification(name, colors.get(name, DEFAULT_CLASS_COLORS[k % len(DEFAULT_CLASS_COLORS)]))
                for k, name in enumerate(class_names)]
    return [by_index[k] if k >= 0 else None for k in class_index.tolist()]


def _positions(xy: np.ndarray) -> tuple[list, list]:
    """Columns of positions rounded to 0.01 px; whole numbers as ints (compact, spec C11)."""
    rounded = np.round(xy, 2)
    out = []
    for column in (rounded[:, 0], rounded[:, 1]):
        if np.all(column == np.round(column)):
            out.append(column.astype(np.int64).tolist())
        else:
            out.append([int(v) if v.is_integer() else v for v in column.tolist()])
    return out[0], out[1]


def _round_significant(values: np.ndarray) -> list:
    """Values rounded to 7 significant digits, as Python numbers whose repr is that short decimal.

    An integer divided by a power of ten (both exact doubles) is correctly rounded, i.e. the double
    nearest the decimal, so ``json`` writes e.g. ``0.1234568`` and not ``0.12345680000000001``.
    """
    values = np.asarray(values, dtype=np.float64)
    out = values.copy()
    nonzero = values != 0
    exponent = np.zeros(values.shape, dtype=np.int64)
    exponent[nonzero] = np.floor(np.log10(np.abs(values[nonzero]))).astype(np.int64)
    decimals = _SIGNIFICANT_DIGITS - 1 - exponent
    for d in np.unique(decimals[nonzero]).tolist():
        at = nonzero & (decimals == d)
        if 0 <= d <= 22:
            out[at] = np.round(values[at] * 10.0**d) / 10.0**d
        elif -22 <= d < 0:
            out[at] = np.round(values[at] / 10.0**-d) * 10.0**-d
        else:  # beyond exact powers of ten: Python's correctly rounded round()
            out[at] = [round(v, d) for v in values[at].tolist()]
    return out.tolist()


def _row_runs(boxes: np.ndarray):
    """Boxes merging horizontal runs of touching or overlapping tiles of one row (same top and
    bottom edge): far fewer shapes to union."""
    import shapely

    boxes = boxes[np.lexsort((boxes[:, 0], boxes[:, 3], boxes[:, 1]))]
    runs = []
    start, right = 0, boxes[0, 2]
    for i in range(1, len(boxes) + 1):
        if (i == len(boxes) or boxes[i, 1] != boxes[start, 1] or boxes[i, 3] != boxes[start, 3]
                or boxes[i, 0] > right):
            runs.append((boxes[start, 0], boxes[start, 1], right, boxes[start, 3]))
            if i < len(boxes):
                start, right = i, boxes[i, 2]
        else:
            right = max(right, boxes[i, 2])
    runs = np.asarray(runs)
    return shapely.box(runs[:, 0], runs[:, 1], runs[:, 2], runs[:, 3])


def _valid_polygonal(geometry):
    """Only valid Polygon/MultiPolygon parts with area survive (QuPath 0.6+ rejects the file otherwise)."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    if isinstance(geometry, (Polygon, MultiPolygon)):
        return geometry
    parts = [g for g in shapely.get_parts(geometry) if isinstance(g, (Polygon, MultiPolygon)) and g.area > 0]
    return shapely.union_all(parts) if parts else Polygon()


def _polygon_json(polygon) -> dict:
    rings = [polygon.exterior, *polygon.interiors]
    coordinates = []
    for ring in rings:
        xy = np.round(np.asarray(ring.coords)[:, :2], 2)
        coordinates.append([[int(v) if float(v).is_integer() else float(v) for v in p] for p in xy.tolist()])
    return {"type": "Polygon", "coordinates": coordinates}
