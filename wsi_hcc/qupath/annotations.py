"""QuPath annotations in, tile labels out: read a QuPath GeoJSON export and label tiles by area.

Reading is the only I/O here; ``label_tiles`` is a pure function of tile boxes and geometries.
Coordinates are level-0 ``(x, y)`` pixels as QuPath shows them; for OpenSlide images with
``openslide.bounds-x/-y`` QuPath's origin is the bounds corner, so pass that corner as
``origin_xy`` to move annotations into level-0 slide pixels.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError

__all__ = ["Annotation", "TileLabels", "read_qupath_geojson", "label_tiles"]

_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class Annotation:
    """One annotated region: its QuPath class name (None when unclassified) and polygonal geometry."""

    name: str | None
    geometry: object  # shapely Polygon or MultiPolygon, level-0 pixels


@dataclass(frozen=True)
class TileLabels:
    """Labels for N tiles.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(N,)`` int64 index into ``class_names``, or -1 where no class covers enough of the tile.
    coverage : numpy.ndarray
        ``(N, C)`` float32 fraction of each tile covered by each class.
    class_names : tuple[str, ...]
    ignored_classes : tuple[str, ...]
        Classes found in the annotations but not in ``class_names`` (their regions were ignored).
    n_unclassified : int
        Annotations without a class (ignored).
    """

    labels: np.ndarray
    coverage: np.ndarray
    class_names: tuple[str, ...]
    ignored_classes: tuple[str, ...]
    n_unclassified: int

    @property
    def n_unlabelled(self) -> int:
        return int((self.labels < 0).sum())


def read_qupath_geojson(path: str | Path, origin_xy: tuple[float, float] = (0.0, 0.0)) -> list[Annotation]:
    """Polygonal annotations of a QuPath GeoJSON export (``.geojson``/``.json``, optionally ``.gz``).

    Accepts a FeatureCollection, a bare list of features or a single feature, as QuPath does.
    Tiles, detections and cells (predictions) are skipped, and so are points and lines; invalid polygons are
    repaired with ``shapely.make_valid`` and only their polygonal parts kept.

    Raises
    ------
    WsiHccError
        One line naming the file when it cannot be read or is not GeoJSON.
    """
    import shapely
    from shapely.geometry import shape

    path = Path(path)
    try:
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            document = json.load(fh)
    except FileNotFoundError:
        raise WsiHccError(f"{path}: annotation file not found") from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:  # a damaged .gz
        raise WsiHccError(f"{path}: not a readable GeoJSON file ({exc}); export it again from QuPath") from None
    features = _features(document)
    if features is None:
        raise WsiHccError(f"{path}: no GeoJSON features (expected a FeatureCollection); export from QuPath "
                          "with File > Export objects as GeoJSON")
    annotations = []
    for feature in features:
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geometry, dict) or geometry.get("type") not in _POLYGONAL or _is_detection(feature):
            continue
        try:
            polygon = shape(geometry)
        except (ValueError, TypeError, AttributeError) as exc:
            raise WsiHccError(f"{path}: a feature has broken coordinates ({exc}); fix or remove it") from None
        if not polygon.is_valid:
            polygon = _polygonal_part(shapely.make_valid(polygon))
        if polygon is None or polygon.is_empty or polygon.area <= 0:
            continue
        if origin_xy != (0.0, 0.0):
            polygon = shapely.transform(polygon, lambda xy: xy + np.asarray(origin_xy))
        annotations.append(Annotation(_class_name(feature.get("properties")), polygon))
    return annotations


def _features(document) -> list | None:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        if document.get("type") == "FeatureCollection" and isinstance(document.get("features"), list):
            return document["features"]
        if document.get("type") == "Feature":
            return [document]
    return None


def _is_detection(feature: dict) -> bool:
    """Tiles, detections and cells are predictions (a model's or QuPath's), never a pathologist's labels.

    QuPath's "Export objects" writes them beside the annotations; ``objectType`` tells them apart
    (QuPath also reads ``type``/``object_type`` when it is missing).
    """
    properties = feature.get("properties")
    if not isinstance(properties, dict):
        return False
    object_type = properties.get("objectType", properties.get("type", properties.get("object_type")))
    return object_type in ("detection", "tile", "cell")


def _class_name(properties) -> str | None:
    """QuPath writes ``classification`` as ``{"name": ..., "color": [...]}`` (0.4+; ``colorRGB`` before)."""
    if not isinstance(properties, dict):
        return None
    classification = properties.get("classification")
    if isinstance(classification, dict):
        name = classification.get("name")
        return str(name) if name else None
    if isinstance(classification, str) and classification:
        return classification
    return None


def _polygonal_part(geometry):
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geometry, (Polygon, MultiPolygon)):
        return geometry
    parts = [g for g in getattr(geometry, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    if not parts:
        return None
    import shapely

    return shapely.union_all(parts)


def label_tiles(coords: np.ndarray, tile_size_level0: float, annotations: Sequence[Annotation],
                class_names: Sequence[str] | None = None, min_coverage: float = 0.5) -> TileLabels:
    """Label each tile by the class that covers most of its area.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(N, 2)`` level-0 ``(x, y)`` of tile top-left corners.
    tile_size_level0 : float
        Tile edge in level-0 pixels.
    annotations
        From ``read_qupath_geojson``. Overlapping regions of one class count once.
    class_names
        Classes to label with, in label order; None takes every class found, sorted.
    min_coverage : float
        A tile is labelled only when its best class covers at least this fraction of it.
    """
    import shapely

    found = sorted({a.name for a in annotations if a.name is not None})
    names = tuple(class_names) if class_names is not None else tuple(found)
    ignored = tuple(n for n in found if n not in names)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    boxes = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + tile_size_level0, coords[:, 1] + tile_size_level0)
    coverage = np.zeros((len(coords), len(names)), dtype=np.float32)
    tile_area = float(tile_size_level0) ** 2
    for k, name in enumerate(names):
        regions = [a.geometry for a in annotations if a.name == name]
        if not regions or len(coords) == 0:
            continue
        region = shapely.union_all(regions)
        shapely.prepare(region)
        hit = shapely.intersects(region, boxes)
        if hit.any():
            coverage[hit, k] = shapely.area(shapely.intersection(boxes[hit], region)) / tile_area
    best = coverage.argmax(axis=1) if names else np.zeros(len(coords), dtype=np.int64)
    best_cover = coverage[np.arange(len(coords)), best] if names else np.zeros(len(coords))
    labels = np.where(best_cover >= min_coverage, best, -1).astype(np.int64)
    n_unclassified = sum(a.name is None for a in annotations)
    return TileLabels(labels, coverage, names, ignored, n_unclassified)
