"""Checks a GeoJSON file against every ERROR and LOSS rule (and the cheap WARN rules) of
shared/specs/qupath_geojson.txt, in the order its section F suggests.

    report = validate_qupath_file(path, image_size=(width, height))
    assert report.ok, report.summary()

``report.ok`` means no ERROR and no LOSS finding. Each finding names the rule and a JSON pointer.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import shape

__all__ = ["Finding", "Report", "validate_qupath_file", "validate_document"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_GEOMETRY_TYPES = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2,
                   "MultiPolygon": 3}  # nesting depth of positions below "coordinates"
_OBJECT_TYPES = {"annotation", "detection", "tile", "cell"}
_NULL_TOLERATED = {"classification", "color", "isLocked", "measurements", "metadata", "childObjects", "children"}
_UNCOMPRESSED_LIMIT = 300 * 2**20
_QUPATH_BUILT_IN_CLASSES = {"Tumor", "Stroma", "Immune cells", "Necrosis", "Other", "Region*", "Ignore*",
                            "Positive", "Negative", "1+", "2+", "3+"}


@dataclass(frozen=True)
class Finding:
    rule: str       # e.g. "C07"
    severity: str   # "ERROR", "LOSS" or "WARN"
    pointer: str    # JSON pointer, e.g. "/features/3/geometry"
    message: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, rule: str, severity: str, pointer: str, message: str) -> None:
        self.findings.append(Finding(rule, severity, pointer, message))

    def of(self, *severities: str) -> list[Finding]:
        return [f for f in self.findings if f.severity in severities]

    @property
    def ok(self) -> bool:
        return not self.of("ERROR", "LOSS")

    def rules(self) -> set[str]:
        return {f.rule for f in self.findings}

    def summary(self, limit: int = 20) -> str:
        lines = [f"{f.severity} {f.rule} {f.pointer}: {f.message}" for f in self.findings[:limit]]
        return "\n".join(lines) + (f"\n... {len(self.findings) - limit} more" if len(self.findings) > limit else "")


def validate_qupath_file(path: str | Path, image_size: tuple[float, float] | None = None,
                         check_overlap: bool = True) -> Report:
    """All findings for one file; ``image_size`` is QuPath's ``(width, height)`` for the C10 bounds check."""
    report = Report()
    path = Path(path)
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if not (stem.endswith(".geojson") or stem.endswith(".json")):
        report.add("A01", "ERROR", "", f"extension of {path.name} is not .geojson/.json[.gz]")
    raw = path.read_bytes()
    if name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            report.add("A01", "ERROR", "", f"not gzip: {exc}")
            return report
    if len(raw) > _UNCOMPRESSED_LIMIT:
        report.add("A06", "WARN", "", f"{len(raw)} bytes uncompressed")
    if raw.startswith(b"\xef\xbb\xbf"):
        report.add("A02", "WARN", "", "UTF-8 BOM")
    if b"\n  " in raw[:4096] or b'": ' in raw[:4096]:
        report.add("A07", "WARN", "", "not compact JSON (indentation or spaced separators)")
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        report.add("A02", "ERROR", "", f"not strict JSON: {exc}")
        return report
    validate_document(document, report, image_size, check_overlap)
    return report


def validate_document(document, report: Report | None = None, image_size=None, check_overlap: bool = True) -> Report:
    report = report if report is not None else Report()
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        report.add("A03", "ERROR", "", "root is not a FeatureCollection object")
        return report
    features = document.get("features")
    if not isinstance(features, list):
        report.add("A03", "ERROR", "/features", "features is not an array")
        return report
    state = _FileState()
    for i, feature in enumerate(features):
        _feature(feature, f"/features/{i}", report, state, image_size)
    _file_level(report, state, check_overlap)
    return report


class _FileState:
    def __init__(self):
        self.ids: dict[str, str] = {}
        self.tile_keys: dict[frozenset, str] = {}
        self.tiles: list = []
        self.n_tiles = 0


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _feature(feature, ptr: str, report: Report, state: _FileState, image_size) -> None:
    if feature is None or not isinstance(feature, dict):
        report.add("A04", "ERROR", ptr, "feature is null or not an object")
        return
    if feature.get("type") != "Feature":
        report.add("A05", "LOSS", ptr + "/type", f"type is {feature.get('type')!r}, not 'Feature'")
    if "id" in feature:
        fid = feature["id"]
        if fid is None:
            report.add("B01", "ERROR", ptr + "/id", "id is null")
        elif not isinstance(fid, str) or not _UUID.match(fid):
            report.add("B02", "LOSS", ptr + "/id", f"id {fid!r} is not a UUID")
        elif fid.lower() in state.ids:
            report.add("B03", "LOSS", ptr + "/id", f"id repeats {state.ids[fid.lower()]}")
        else:
            state.ids[fid.lower()] = ptr
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict):
        report.add("B04", "ERROR", ptr + "/geometry", "geometry missing, null or not an object")
    properties = feature.get("properties")
    if not isinstance(properties, dict):
        report.add("B05", "ERROR", ptr + "/properties", "properties missing, null or not an object")
        properties = {}
    for key in ("objectType", "name", "classification", "measurements"):
        if key in feature:
            report.add("B06", "WARN", f"{ptr}/{key}", "QuPath reads this only inside properties")
    if "nucleusGeometry" in feature:
        if properties.get("objectType") != "cell":
            report.add("B07", "ERROR", ptr + "/nucleusGeometry", "nucleusGeometry on a non-cell object")
        _geometry(feature["nucleusGeometry"], ptr + "/nucleusGeometry", report, image_size)
    g = _geometry(geometry, ptr + "/geometry", report, image_size) if isinstance(geometry, dict) else None
    _properties(properties, ptr + "/properties", report, state, image_size)
    if properties.get("objectType") == "tile":
        state.n_tiles += 1
        keys = properties.get("measurements")
        state.tile_keys.setdefault(frozenset(keys) if isinstance(keys, dict) else frozenset(), ptr)
        if g is not None:
            state.tiles.append((g, ptr))


def _geometry(geometry, ptr: str, report: Report, image_size):
    """Section C on one geometry; returns the shapely geometry when it could be built."""
    if not isinstance(geometry, dict):
        report.add("C03", "ERROR", ptr, "geometry is not an object")
        return None
    gtype = geometry.get("type")
    if gtype == "GeometryCollection":
        report.add("C02", "ERROR", ptr + "/type", "GeometryCollection")
        return None
    if gtype not in _GEOMETRY_TYPES:
        report.add("C01", "ERROR", ptr + "/type", f"geometry type {gtype!r}")
        return None
    if "plane" in geometry:
        plane = geometry["plane"]
        if (not isinstance(plane, dict) or not set(plane) <= {"c", "z", "t"}
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in plane.values())):
            report.add("C13", "ERROR", ptr + "/plane", f"plane {plane!r}")
    if geometry.get("isEllipse") is True:
        report.add("C14", "WARN", ptr + "/isEllipse", "geometry becomes an ellipse")
    coordinates = geometry.get("coordinates")
    depth = _GEOMETRY_TYPES[gtype]
    positions = _positions(coordinates, depth)
    if positions is None:
        report.add("C03", "ERROR", ptr + "/coordinates", f"coordinates do not nest {depth} deep for {gtype}")
        return None
    for p in positions:
        if not (isinstance(p, list) and len(p) in (2, 3)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)):
            report.add("C04", "ERROR", ptr + "/coordinates", f"position {p!r} is not 2-3 finite numbers")
            return None
    if any(isinstance(v, float) and round(v, 2) != v for p in positions for v in p[:2]):
        report.add("C11", "WARN", ptr + "/coordinates", "more than 2 decimal places")
    if image_size is not None:
        width, height = image_size
        if any(not (0 <= p[0] <= width and 0 <= p[1] <= height) for p in positions):
            report.add("C10", "WARN", ptr + "/coordinates", f"outside the image 0..{width} x 0..{height}")
    if gtype in ("MultiPoint", "MultiLineString") and not coordinates:
        report.add("C09", "ERROR", ptr + "/coordinates", f"empty {gtype}")
        return None
    lines = [coordinates] if gtype == "LineString" else coordinates if gtype == "MultiLineString" else []
    if any(len(line) < 2 for line in lines):
        report.add("C09", "ERROR", ptr + "/coordinates", "line with fewer than 2 positions")
        return None
    polygons = [coordinates] if gtype == "Polygon" else coordinates if gtype == "MultiPolygon" else []
    for rings in polygons:
        for ring in rings:
            if len(ring) < 4:
                report.add("C06", "ERROR", ptr + "/coordinates", f"ring with {len(ring)} positions (< 4)")
                return None
            if ring[0] != ring[-1]:
                report.add("C05", "ERROR", ptr + "/coordinates", "ring not closed")
                return None
    try:
        g = shape(geometry)
    except (ValueError, TypeError, AttributeError) as exc:
        report.add("C03", "ERROR", ptr, f"shapely cannot build it: {exc}")
        return None
    if polygons:
        if not g.is_valid:
            report.add("C07", "ERROR", ptr, f"invalid polygon: {shapely.is_valid_reason(g)}")
        if g.area <= 0:
            report.add("C08", "LOSS", ptr, "zero-area polygon")
    return g


def _positions(coordinates, depth: int):
    """Flat list of positions when ``coordinates`` nests ``depth`` arrays deep, else None."""
    if not isinstance(coordinates, list):
        return None
    if depth == 0:
        return [coordinates]
    out = []
    for item in coordinates:
        if depth == 1:
            if not isinstance(item, list):
                return None
            out.append(item)
        else:
            inner = _positions(item, depth - 1)
            if inner is None:
                return None
            out.extend(inner)
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _properties(p: dict, ptr: str, report: Report, state: _FileState, image_size) -> None:
    for key, value in p.items():
        if value is None and key not in _NULL_TOLERATED:
            report.add("D17", "ERROR" if key in ("name", "objectType") else "WARN", f"{ptr}/{key}", "null value")
    otype = p.get("objectType")
    if not isinstance(otype, str):
        report.add("D01", "ERROR", ptr + "/objectType", f"objectType missing or not a string: {otype!r}")
    elif otype not in _OBJECT_TYPES:
        severity = "ERROR" if otype == "root" else "LOSS"
        report.add("D02" if severity == "LOSS" else "D01", severity, ptr + "/objectType", f"objectType {otype!r}")
    if "type" in p or "object_type" in p:
        report.add("D03", "LOSS", ptr, "property 'type' or 'object_type' (read as objectType)")
    if "name" in p and not isinstance(p["name"], str):
        report.add("D04", "ERROR", ptr + "/name", "name is not a string")
    if p.get("color") is not None:
        color = p["color"]
        if not (_is_int(color) or (isinstance(color, list) and len(color) == 3
                                   and all(_is_int(c) and 0 <= c <= 255 for c in color))):
            report.add("D05", "ERROR", ptr + "/color", f"color {color!r}")
    if p.get("classification") is not None:
        _classification(p["classification"], ptr + "/classification", report)
    if p.get("measurements") is not None:
        _measurements(p["measurements"], ptr + "/measurements", report)
    if "isLocked" in p and p["isLocked"] is not None and not isinstance(p["isLocked"], bool):
        report.add("D13", "WARN", ptr + "/isLocked", "isLocked is not a boolean")
    if p.get("metadata") is not None:
        # 0.4 drops metadata on everything but TMA cores; 0.5 still drops it on detections/tiles/cells.
        report.add("D14", "LOSS", ptr + "/metadata", "metadata is dropped by QuPath 0.4 (and 0.5 for non-annotations)")
    for key in ("childObjects", "children"):
        children = p.get(key)
        if children is not None and not isinstance(children, list):
            report.add("D15", "LOSS", f"{ptr}/{key}", f"{key} is not an array: QuPath ignores the children")
        if isinstance(children, list):
            for j, child in enumerate(children):
                _feature(child, f"{ptr}/{key}/{j}", report, state, image_size)


def _classification(c, ptr: str, report: Report) -> None:
    if isinstance(c, str):
        if not c.strip() or "\n" in c:
            report.add("D06", "ERROR", ptr, f"classification string {c!r}")
        elif c.lstrip().startswith("{"):
            report.add("D08", "LOSS", ptr, "JSON-encoded classification string")
        elif ":" in c:
            report.add("D08", "LOSS", ptr, f"':' makes {c!r} a derived class")
        return
    if not isinstance(c, dict):
        report.add("D06", "ERROR", ptr, f"classification {c!r} is neither a string nor an object")
        return
    names = [c["name"]] if "name" in c else c.get("names")
    if (not isinstance(names, list) or not names
            or not all(isinstance(n, str) and n.strip() for n in names)):
        report.add("D06", "ERROR", ptr, "classification has no non-blank name/names")
    elif any(":" in n for n in names):
        report.add("D08", "LOSS", ptr, "':' in a class name makes a derived class")
    elif any(n in _QUPATH_BUILT_IN_CLASSES for n in names):
        report.add("D09", "WARN", ptr, f"built-in QuPath class {names}: the file's colour is ignored")
    color = c.get("color")
    if not isinstance(color, list) or len(color) not in (3, 4):
        report.add("D06", "ERROR", ptr + "/color", f"classification color {color!r} is not an array of 3 or 4")
    elif not all(_is_int(v) for v in color):
        report.add("D07", "LOSS", ptr + "/color", f"non-integer colour {color!r}")
    elif not all(0 <= v <= 255 for v in color):
        report.add("D07", "LOSS", ptr + "/color", f"colour out of 0..255 {color!r}")


def _measurements(m, ptr: str, report: Report) -> None:
    if isinstance(m, list):
        report.add("D10", "WARN", ptr, "list form of measurements")
        items = [(e.get("name"), e.get("value")) if isinstance(e, dict) else (None, None) for e in m]
    elif isinstance(m, dict):
        items = list(m.items())
    else:
        report.add("D10", "ERROR", ptr, "measurements is not an object")
        return
    for name, value in items:
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            report.add("D10", "ERROR", f"{ptr}/{name}", f"measurement value {value!r} is not a finite number")
        elif isinstance(value, float) and float(f"{value:.7g}") != value:
            report.add("D12", "WARN", f"{ptr}/{name}", "more than 7 significant digits")
        if not isinstance(name, str) or not name.strip():
            report.add("D11", "WARN", ptr, f"measurement name {name!r}")
        elif name.strip().lower() == "class probability":
            report.add("D11", "WARN", f"{ptr}/{name}", "'Class probability' is shadowed in Measurement Maps")


def _file_level(report: Report, state: _FileState, check_overlap: bool) -> None:
    if len(state.tile_keys) > 1:
        report.add("E02", "WARN", next(iter(state.tile_keys.values())), "tiles carry different measurement keys")
    if state.n_tiles > 1_000_000:
        report.add("E06", "WARN", "", f"{state.n_tiles} tiles in one file")
    if check_overlap and len(state.tiles) > 1:
        geoms = [g for g, _ in state.tiles]
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        pairs = left < right
        if pairs.any():
            array = np.asarray(geoms, dtype=object)
            areas = shapely.area(shapely.intersection(array[left[pairs]], array[right[pairs]]))
            overlapping = int((areas > 0).sum())
            if overlapping:
                report.add("E04", "WARN", state.tiles[int(left[pairs][areas > 0][0])][1],
                           f"{overlapping} pairs of tiles overlap")
