"""From a slide to tiles: inputs, the tiling config, tissue detection, the grid at an exact um/px, tile
jobs and the per-slide tiler.
"""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "TileConfig": "config", "load_config": "config",
    "TileJob": "extract", "run_tile_job": "extract", "can_pass_through": "extract", "open_cached": "extract",
    "warm_up": "extract",
    "NATIVE_TOLERANCE": "grid", "plan_tile_spec": "grid", "TileGrid": "grid", "make_grid": "grid",
    "tissue_fractions": "grid",
    "SlideTask": "inputs", "SLIDE_SUFFIXES": "inputs", "collect_slides": "inputs", "find_stem_collisions": "inputs",
    "TileResult": "slide_tiler", "tile_slide": "slide_tiler", "store_path_for": "slide_tiler",
    "TissueParams": "tissue", "detect_tissue": "tissue",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
