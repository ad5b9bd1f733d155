"""Whole-slide images: readers (openslide, tiffslide), the resolution (mpp) and where it came from,
fingerprints, thumbnails and the slide's own JPEG tiles.
"""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "slide_fingerprint": "info", "describe_slide": "info",
    "JpegTileLevel": "jpeg_tiles", "ReducedJpegLevel": "jpeg_tiles", "open_jpeg_levels": "jpeg_tiles",
    "misaligned_empty": "jpeg_tiles",
    "resolve_mpp": "mpp", "check_mpp": "mpp", "MIN_PLAUSIBLE_MPP": "mpp", "MAX_PLAUSIBLE_MPP": "mpp",
    "read_thumbnail": "thumbnail", "block_mean": "thumbnail", "reduce_by": "thumbnail",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
