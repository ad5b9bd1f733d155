"""``wsi-hcc view``: a classify output folder (or one slide) in the browser, zoomable to full
resolution, with the model's per-tile maps, the tissue mask and the tumour regions on top.

A small Starlette app (``server``) serves Deep Zoom tiles read on demand from our slide readers
(``pyramid``), overlay tiles drawn from the tile table (``overlays``, ``tile_index``) and our own
HTML/JS/CSS page (``static/``, package data).
"""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "load_catalog": "catalog", "Catalog": "catalog", "SlideEntry": "catalog",
    "create_app": "server",
    "DeepZoomGrid": "pyramid", "DeepZoomPyramid": "pyramid", "dzi_xml": "pyramid",
    "TileIndex": "tile_index",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
