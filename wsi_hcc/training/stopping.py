"""Best-epoch tracking and early stopping on a validation metric (pure, on a ``TrainState``)."""

from __future__ import annotations

import math

from wsi_hcc.training.checkpoint import TrainState
from wsi_hcc.training.config import MONITOR_MODES

__all__ = ["is_improvement", "record_epoch", "should_stop"]


def is_improvement(value: float | None, best: float | None, metric: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (None/NaN never does)."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    if MONITOR_MODES[metric] == "min":
        return value < best - min_delta
    return value > best + min_delta


def record_epoch(state: TrainState, epoch: int, value: float | None, metric: str, min_delta: float = 0.0) -> bool:
    """Update the best epoch and the count of epochs without improvement; True when ``epoch`` is the new best."""
    if is_improvement(value, state.best_value, metric, min_delta):
        state.best_value, state.best_epoch, state.bad_epochs = float(value), epoch, 0
        return True
    state.bad_epochs += 1
    return False


def should_stop(state: TrainState, patience: int | None) -> bool:
    return patience is not None and state.bad_epochs >= patience
