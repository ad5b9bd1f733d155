"""Patch stores on disk: the Zarr tile store, the features array inside it, and .h5 files for CLAM and
TRIDENT (their own layouts, or our flat ``<stem>.h5``).
"""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "FeatureError": "feature_array", "read_store_meta": "feature_array", "check_store_fits_card": "feature_array",
    "feature_digest": "feature_array", "partial_features_path": "feature_array", "open_partial": "feature_array",
    "done_chunks": "feature_array", "mark_chunk_done": "feature_array", "publish_features": "feature_array",
    "store_records": "feature_array", "stain_normalizer_for": "feature_array",
    "find_stores": "finder", "shared_features": "finder",
    "write_coords_h5": "h5export",
    "H5_LAYOUTS": "tool_layouts", "write_coords_files": "tool_layouts", "write_feature_files": "tool_layouts",
    "SCHEMA_VERSION": "patch_store", "COMPRESSIONS": "patch_store", "make_codec": "patch_store",
    "codec_from_config": "patch_store", "create_store": "patch_store", "chunk_bytes": "patch_store",
    "chunk_path": "patch_store",
    "write_attrs": "patch_store", "open_store": "patch_store", "TileReader": "patch_store",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
