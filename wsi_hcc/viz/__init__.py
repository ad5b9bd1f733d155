"""Pictures: tile heatmaps, QC thumbnails, evaluation figures (ROC, reliability, training curves),
single-tile pictures (Grad-CAM, augmentation previews), radiology CAM slices, figures as PNG bytes,
nomogram scales, and the per-slide exports drawn from tile predictions.
"""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "figure_png": "figures", "roc_figure": "evaluation", "reliability_figure": "evaluation",
    "curves_figure": "evaluation", "explanation_figure": "tiles", "augmentation_figure": "tiles",
    "cam_slice_figure": "cam_slices", "palette_png": "figures",
    "HeatmapPanel": "heatmap", "value_grid": "heatmap", "blend_heatmap": "heatmap", "heatmap_figure": "heatmap",
    "render_heatmaps_png": "heatmap", "resize_labels": "heatmap",
    "PointsScale": "nomogram_scale",
    "render_qc": "qc", "qc_png": "qc",
    "TilePredictions": "slide_exports", "slide_heatmap_png": "slide_exports", "truth_heatmap_png": "slide_exports",
    "slide_geojson_features": "slide_exports", "P_HCC": "slide_exports",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
