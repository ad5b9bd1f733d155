"""From tiles to embeddings: the tile feed (decoders into a ring of buffers) and the feature extractor
that writes each store's features.
"""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "BatchFeatures": "extract", "FeatureResult": "extract", "FeatureExtractor": "extract", "FeatureEvents": "extract",
    "extract_features": "extract", "extract_store_features": "extract", "decode_on_device": "extract",
    "DECODE_UNIT": "tile_feed", "Unit": "tile_feed", "Decoded": "tile_feed", "TileFeed": "tile_feed",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
