"""A small graph network over region nodes, and a logistic nomogram on its score (after Liu 2024, BJR).

The graph has one node per region of a crop, tumour - ring - far liver, joined as they touch
(tumour-ring, ring-liver) plus self loops, with the symmetric normalisation of Kipf and Welling.
Node features are the same first-order and GLCM statistics ``region_features`` computes, per
channel, plus the region's log volume. Tensors are laid out ``(B, features, nodes)``, so a graph
convolution's output is ``(B, channels, nodes)`` and MONAI's ``GradCAM`` treats nodes like a 1D
image: its map is one weight per region (plain torch message passing; no torch_geometric).

The nomogram is a scikit-learn logistic regression on the graph score (its logit) and simple
clinical-like covariates, re-expressed in raw units: each covariate's contribution
``coef * (x - x_ref)`` (``x_ref`` its least risky training value) is scaled so that the widest
spans 0-100 points; total points map to the log-odds and the probability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.crops import Crop
from wsi_hcc.radiology.region_features import region_features
from wsi_hcc.viz.nomogram_scale import PointsScale

__all__ = ["REGIONS", "NODE_STATISTICS", "node_features", "node_feature_names", "region_adjacency", "GraphConv",
           "GraphNet", "LogisticNomogram", "fit_nomogram", "nomogram_figure"]

REGIONS = ("tumour", "ring", "liver")
NODE_STATISTICS = (("first_order", "mean"), ("first_order", "sd"), ("first_order", "p10"), ("first_order", "p90"),
                   ("first_order", "max"), ("first_order", "skewness"), ("first_order", "kurtosis"),
                   ("first_order", "entropy"), ("glcm", "contrast"), ("glcm", "homogeneity"), ("glcm", "correlation"))
# Grey-level bins for the crop's normalised channels: 0.3 units (12 HU) for CT, 0.25 SD for MR.
_BIN_WIDTH = {"CT": 0.3, "MR": 0.25}


def node_feature_names(channels: Sequence[str]) -> list[str]:
    return [f"{channel}/{group}_{name}" for channel in channels for group, name in NODE_STATISTICS] + ["log_volume_ml"]


def node_features(crop: Crop, channels: Sequence[str]) -> np.ndarray:
    """``(features, nodes)`` float32 for the crop's regions (NaN where a statistic is undefined)."""
    regions = crop.regions()
    spacing = crop.grid.spacing_mm
    columns = []
    for region in REGIONS:
        values = []
        for channel in channels:
            if channel not in crop.channels:
                raise WsiHccError(f"the graph model needs channel {channel!r}; the inputs give {sorted(crop.channels)}")
            modality = channel.partition(":")[0]
            table = region_features({channel: crop.channels[channel]}, {region: regions[region]}, spacing,
                                    bin_width=_BIN_WIDTH.get(modality, 0.25))[region]
            values += [table[channel][group][name] for group, name in NODE_STATISTICS]
            volume_ml = table["volume_ml"]
        values.append(float(np.log1p(volume_ml)))
        columns.append(values)
    return np.asarray(columns, np.float32).T


def region_adjacency() -> np.ndarray:
    """Normalised adjacency ``D^-1/2 (A + I) D^-1/2`` of tumour - ring - liver."""
    adjacency = np.eye(3) + np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], float)
    degree = adjacency.sum(axis=1)
    return (adjacency / np.sqrt(np.outer(degree, degree))).astype(np.float32)


class GraphConv(nn.Module):
    """``(B, C_in, N)`` -> ``(B, C_out, N)``: a shared linear map per node, then neighbour averaging."""

    def __init__(self, in_features: int, out_features: int, adjacency: np.ndarray):
        super().__init__()
        self.linear = nn.Conv1d(in_features, out_features, kernel_size=1)
        self.register_buffer("adjacency", torch.as_tensor(adjacency, dtype=torch.float32), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bcn,mn->bcm", self.linear(h), self.adjacency)


class GraphNet(nn.Module):
    """Two graph convolutions, mean + max readout over nodes, a linear head."""

    def __init__(self, in_features: int, n_classes: int = 2, hidden: int = 16, dropout: float = 0.2):
        super().__init__()
        adjacency = region_adjacency()
        self.gc1 = GraphConv(in_features, hidden, adjacency)
        self.gc2 = GraphConv(hidden, hidden, adjacency)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, n_classes))

    @property
    def cam_layers(self) -> list[str]:
        return ["gc2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.gc2(self.act(self.gc1(x))))
        return self.head(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


@dataclass(frozen=True)
class LogisticNomogram(PointsScale):
    """Raw-unit logistic coefficients of ``covariates`` with their training ranges and the points scale."""

    covariates: tuple[str, ...]
    coef: np.ndarray
    intercept: float
    low: np.ndarray
    high: np.ndarray

    def log_odds_of_points(self, total_points: np.ndarray) -> np.ndarray:
        return self.linear_predictor(total_points) + self.intercept

    def probability(self, values: np.ndarray) -> np.ndarray:
        """(n,) predicted probability of the positive class."""
        return 1.0 / (1.0 + np.exp(-(np.asarray(values, np.float64) @ self.coef + self.intercept)))

    def to_json(self) -> dict:
        return {"covariates": list(self.covariates), "coef": self.coef.tolist(), "intercept": self.intercept,
                "low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_json(cls, data: Mapping) -> LogisticNomogram:
        return cls(tuple(data["covariates"]), np.asarray(data["coef"], float), float(data["intercept"]),
                   np.asarray(data["low"], float), np.asarray(data["high"], float))


def fit_nomogram(values: np.ndarray, labels: np.ndarray, covariates: Sequence[str], c: float = 1.0) -> LogisticNomogram:
    """Fit an L2 logistic regression (scikit-learn) on standardised ``values`` ``(n, k)``; coefficients back in raw
    units."""
    from sklearn.linear_model import LogisticRegression

    values = np.asarray(values, np.float64)
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise WsiHccError("the nomogram needs both classes among the training cases; add cases of the missing class")
    mean, sd = values.mean(axis=0), values.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    model = LogisticRegression(C=c, max_iter=1000).fit((values - mean) / sd, labels)
    coef = model.coef_[0] / sd
    intercept = float(model.intercept_[0] - coef @ mean)
    return LogisticNomogram(tuple(covariates), coef, intercept, values.min(axis=0), values.max(axis=0))


def nomogram_figure(nomogram: LogisticNomogram, title: str = "MVI nomogram"):
    """A points-table nomogram as a matplotlib ``Figure``: a points ruler, one axis per covariate,
    total points and the predicted probability."""
    from matplotlib.figure import Figure

    k = len(nomogram.covariates)
    rows = k + 3
    fig = Figure(figsize=(8, 0.7 * rows + 0.8))
    ax = fig.add_subplot()
    ax.set_xlim(-35, 110)
    ax.set_ylim(-rows + 0.4, 0.8)
    ax.axis("off")
    ax.set_title(title, fontsize=11)

    def ruler(y, positions, labels, name):
        positions = np.asarray(positions, float)
        ax.plot([positions.min(), positions.max()], [y, y], color="black", lw=1)
        for x, text in zip(positions, labels):
            ax.plot([x, x], [y, y + 0.12], color="black", lw=1)
            ax.text(x, y + 0.18, text, ha="center", va="bottom", fontsize=7)
        ax.text(-33, y, name, ha="left", va="center", fontsize=9)

    ruler(0, np.linspace(0, 100, 11), [f"{v:g}" for v in np.linspace(0, 100, 11)], "Points")
    for i, name in enumerate(nomogram.covariates):
        ticks = np.linspace(nomogram.low[i], nomogram.high[i], 5)
        single = np.zeros((len(ticks), k))
        single[:] = nomogram.reference
        single[:, i] = ticks
        ruler(-(i + 1), nomogram.points(single)[:, i], [f"{t:.3g}" for t in ticks], name)
    total_max = float(np.sum(np.abs(nomogram.coef) * (nomogram.high - nomogram.low)) / nomogram.units_per_point)
    totals = np.linspace(0, total_max, 6)
    scale = 100 / total_max if total_max > 0 else 1.0
    ruler(-(k + 1), totals * scale, [f"{t:.0f}" for t in totals], "Total points")
    probabilities = 1 / (1 + np.exp(-nomogram.log_odds_of_points(totals)))
    ruler(-(k + 2), totals * scale, [f"{p:.2f}" for p in probabilities], "Probability")
    fig.tight_layout()
    return fig
