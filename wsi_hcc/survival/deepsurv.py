"""DeepSurv-style Cox networks (Katzman et al. 2018) and an image-to-risk head for CNNs.

Both map inputs to one log hazard per patient and are trained with the Cox partial likelihood
(:func:`wsi_hcc.survival.losses.cox_partial_nll`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from wsi_hcc.survival.config import DeepSurvConfig
from wsi_hcc.survival.data import Standardizer, SurvivalData
from wsi_hcc.survival.losses import cox_partial_nll

__all__ = ["DeepSurvNet", "CoxHead", "DeepSurvModel", "fit_deepsurv", "validation_split"]


class DeepSurvNet(nn.Module):
    """An MLP from standardised features (B, d) to log hazards (B,).

    Hidden layers are Linear -> ReLU -> Dropout; the output layer has no bias, which the partial
    likelihood could not identify anyway.
    """

    def __init__(self, in_features: int, hidden: list[int] | tuple[int, ...] = (16,), dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU(), nn.Dropout(dropout)]
            width = out
        layers.append(nn.Linear(width, 1, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class CoxHead(nn.Module):
    """Image-to-risk head for a CNN: pooled features (B, D) or feature maps (B, D, H, W) -> log hazards (B,).

    Put it on any backbone's features (e.g. a timm model's ``forward_features``) and train with
    the Cox partial likelihood; maps are global-average pooled first.
    """

    def __init__(self, in_features: int, hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.hidden = None if hidden is None else nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                                                nn.Dropout(dropout))
        self.risk = nn.Linear(in_features if hidden is None else hidden, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 4:
            features = features.mean(dim=(2, 3))
        x = self.drop(features)
        if self.hidden is not None:
            x = self.hidden(x)
        return self.risk(x).squeeze(-1)


@dataclass
class DeepSurvModel:
    """A trained DeepSurv network with the standardiser fitted on its training rows."""

    standardizer: Standardizer
    net: DeepSurvNet
    feature_names: tuple[str, ...]
    hidden: list[int]
    dropout: float
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)

    def log_hazard(self, features: np.ndarray) -> np.ndarray:
        self.net.eval()
        with torch.no_grad():
            x = torch.as_tensor(self.standardizer.transform(features), dtype=torch.float32)
            return self.net(x).double().numpy()


def validation_split(event: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), stratified by event so both keep events."""
    train, valid = [], []
    for flag in (True, False):
        rows = rng.permutation(np.flatnonzero(event == flag))
        take = int(round(fraction * rows.size))
        if flag:
            take = min(max(take, 1), rows.size - 1)
        valid.append(rows[:take])
        train.append(rows[take:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(valid))


def fit_deepsurv(data: SurvivalData, config: DeepSurvConfig = DeepSurvConfig(), seed: int = 0) -> DeepSurvModel:
    """Train on ``data``: standardiser and early stopping both use ``data``'s rows only.

    Full-batch Adam with weight decay on the Cox partial likelihood (``config.ties``); the epoch with
    the lowest validation loss is kept. Deterministic for a seed on the CPU.
    """
    threads = torch.get_num_threads()
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _fit(data, config, seed)
    finally:
        torch.set_num_threads(threads)


def _fit(data: SurvivalData, config: DeepSurvConfig, seed: int) -> DeepSurvModel:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    fit_rows, valid_rows = validation_split(data.event, config.validation_fraction, rng)
    standardizer = Standardizer.fit(data.features[fit_rows])

    def tensors(rows):
        return (torch.as_tensor(standardizer.transform(data.features[rows]), dtype=torch.float32),
                torch.as_tensor(data.event[rows], dtype=torch.bool),
                torch.as_tensor(data.time[rows], dtype=torch.float32))

    x_fit, e_fit, t_fit = tensors(fit_rows)
    x_val, e_val, t_val = tensors(valid_rows)
    net = DeepSurvNet(x_fit.shape[1], config.hidden, config.dropout)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_loss, best_epoch, best_state, history = float("inf"), 0, copy.deepcopy(net.state_dict()), []
    for epoch in range(1, config.epochs + 1):
        net.train()
        optimizer.zero_grad()
        loss = cox_partial_nll(net(x_fit), e_fit, t_fit, config.ties)
        loss.backward()
        optimizer.step()
        net.eval()
        with torch.no_grad():
            val_loss = float(cox_partial_nll(net(x_val), e_val, t_val, config.ties))
        history.append({"epoch": epoch, "train_loss": float(loss.detach()), "val_loss": val_loss})
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(net.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    net.load_state_dict(best_state)
    net.eval()
    return DeepSurvModel(standardizer, net, data.feature_names, list(config.hidden), config.dropout, best_epoch,
                         history)
