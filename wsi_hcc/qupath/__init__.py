"""QuPath GeoJSON: a pathologist's annotations read in, tile and region objects written out."""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "Annotation": "annotations", "TileLabels": "annotations", "read_qupath_geojson": "annotations",
    "label_tiles": "annotations",
    "QuPathExportError": "export", "slide_bounds_offset": "export", "tile_features": "export",
    "probability_regions": "export", "region_features": "export", "write_qupath_geojson": "export",
    "DEFAULT_CLASS_COLORS": "export",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
