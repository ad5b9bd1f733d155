"""Batch runs, the only place stages are chained: tile, features, train-patches, train-mil, classify
(with a MIL bundle or a patch classifier) and demo, one outcome per slide.
"""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "ClassifyReport": "classify", "run_classify": "classify", "CSV_COLUMNS": "classify",
    "run_classify_patches": "classify_patches", "bundle_patch_classifier": "classify_patches",
    "is_patch_model": "classify_patches", "score_tiles": "classify_patches",
    "DemoReport": "demo", "run_demo": "demo", "DEMO_MIL_SETTINGS": "demo",
    "run_features": "features", "default_decoders": "features", "default_batch_size": "features",
    "run_tile": "tile", "make_executor": "tile", "fit_stain_reference": "tile",
    "MilReport": "train_mil", "run_mil_training": "train_mil", "MilCohort": "train_mil", "load_cohort": "train_mil",
    "TrainReport": "train_patches", "run_training": "train_patches", "ExplainReport": "train_patches",
    "run_explain": "train_patches", "OUTPUTS": "train_patches",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
