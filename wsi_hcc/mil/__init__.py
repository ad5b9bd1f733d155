"""Attention-MIL slide classifiers on tile features: models, patient-level CV, evaluation, bundles.

``wsi_hcc.pipelines.train_mil`` chains these into ``wsi-hcc train-mil``.
"""

from __future__ import annotations

from wsi_hcc.mil.bundle import MilBundle, MilCard, SlidePrediction, load_mil_bundle
from wsi_hcc.mil.config import MilConfig, MilModelConfig, load_mil_config
from wsi_hcc.mil.cv import patient_folds, split_validation
from wsi_hcc.mil.models import CLAM, MODEL_NAMES, GatedAttentionMIL, MILOutput, PoolingMIL, build_mil_model

__all__ = ["MILOutput", "GatedAttentionMIL", "CLAM", "PoolingMIL", "build_mil_model", "MODEL_NAMES", "MilConfig",
           "MilModelConfig", "load_mil_config", "patient_folds", "split_validation", "MilBundle", "MilCard",
           "SlidePrediction",
           "load_mil_bundle"]
