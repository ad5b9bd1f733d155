"""The points scale every nomogram shares (Cox for survival, logistic for MVI).

Each covariate contributes ``coef * (x - x_ref)``, ``x_ref`` being its least risky training value;
contributions are scaled so the covariate with the widest training span covers 0-100 points, and
total points map back to the linear predictor.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PointsScale"]


class PointsScale:
    """Mixin for a nomogram record with ``coef``, ``low`` and ``high`` arrays (raw units, training ranges)."""

    coef: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @property
    def reference(self) -> np.ndarray:
        return np.where(self.coef >= 0, self.low, self.high)

    @property
    def units_per_point(self) -> float:
        widest = float(np.max(np.abs(self.coef) * (self.high - self.low)))
        return widest / 100 if widest > 0 else 1.0

    def points(self, values: np.ndarray) -> np.ndarray:
        """(n, k) covariate values -> (n, k) points per covariate."""
        return self.coef * (np.asarray(values, dtype=np.float64) - self.reference) / self.units_per_point

    def linear_predictor(self, total_points: np.ndarray) -> np.ndarray:
        """Total points -> the linear predictor without intercept (``coef @ x``)."""
        return np.asarray(total_points) * self.units_per_point + float(self.coef @ self.reference)
