"""Patch-classifier training: config, data, steps, checkpoints, metrics and Grad-CAM.

Each module has one job; ``wsi_hcc.pipelines.train_patches`` chains them into ``wsi-hcc train-patches`` and
``wsi-hcc explain``.
"""

from __future__ import annotations

from wsi_hcc.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from wsi_hcc.training.config import TrainConfig, load_train_config
from wsi_hcc.training.data import TrainingData, load_training_data
from wsi_hcc.training.errors import TrainError
from wsi_hcc.training.gradcam import GradCam, explain_tiles, find_cam_layer, heat_overlay
from wsi_hcc.training.loop import EvalResult, Trainer, lr_at
from wsi_hcc.training.metrics import classification_metrics, confusion_png, curves_png

__all__ = ["TrainConfig", "load_train_config", "TrainingData", "load_training_data", "TrainError", "TrainState",
           "save_checkpoint", "load_checkpoint", "Trainer", "EvalResult", "lr_at", "classification_metrics",
           "confusion_png", "curves_png", "GradCam", "explain_tiles", "find_cam_layer", "heat_overlay"]
