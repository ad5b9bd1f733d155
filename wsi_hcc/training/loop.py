"""One training step and one evaluation pass; the optimiser and learning-rate schedule.

AMP (float16 autocast with a GradScaler) is used only on CUDA; CPU steps run in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi_hcc.models import ModelCard, to_model_input
from wsi_hcc.training.config import OptimizerConfig, ScheduleConfig

__all__ = ["Trainer", "EvalResult", "build_optimizer", "lr_at"]


def lr_at(optimizer: OptimizerConfig, schedule: ScheduleConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: constant, then times ``gamma`` per epoch (Keras' recipe)."""
    decays = max(0, epoch - schedule.constant_epochs + 1)
    return optimizer.lr * math.exp(decays * math.log(schedule.gamma))


def build_optimizer(model, config: OptimizerConfig):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


@dataclass(frozen=True)
class EvalResult:
    """Per tile: true label, class probabilities and dataset position; mean loss over the tiles."""

    labels: np.ndarray
    probs: np.ndarray
    positions: np.ndarray
    loss: float


class Trainer:
    """A model, its optimiser and loss on one device, stepping on uint8 tile batches."""

    def __init__(self, model, card: ModelCard, optimizer, device, *, amp: bool = True, class_weights=None):
        import torch

        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.card = card
        self.optimizer = optimizer
        self.amp = bool(amp) and self.device.type == "cuda"
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32,
                                                                        device=self.device)
        self.criterion = torch.nn.CrossEntropyLoss(weight=weight)
        self._summed = torch.nn.CrossEntropyLoss(weight=weight, reduction="sum")
        self._weight = weight
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _inputs(self, tiles):
        return to_model_input(tiles.to(self.device, non_blocking=True), self.card)

    def step(self, tiles, labels) -> float:
        """One optimisation step on a batch; returns the batch's mean loss."""
        import torch

        self.model.train()
        x = self._inputs(tiles)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = self.model(x)
        loss = self.criterion(logits.float(), labels)
        if not torch.isfinite(loss):
            from wsi_hcc.training.errors import TrainError

            raise TrainError(f"the loss became {loss.item()} (diverged); lower optimizer.lr or check the labels")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def evaluate(self, batches, on_batch=None) -> EvalResult:
        """Probabilities for every tile of ``batches`` (``(tiles, labels, positions)``), in eval mode."""
        import torch

        self.model.eval()
        labels, probs, positions, loss_sum, weight_sum = [], [], [], 0.0, 0.0
        with torch.inference_mode():
            for tiles, batch_labels, batch_positions in batches:
                with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
                    logits = self.model(self._inputs(tiles)).float()
                target = batch_labels.to(self.device)
                # the same (class-weighted) mean as training: sum of w[y] * loss / sum of w[y]
                loss_sum += float(self._summed(logits, target))
                weight_sum += float(self._weight[target].sum()) if self._weight is not None else len(target)
                probs.append(torch.softmax(logits, dim=1).cpu().numpy())
                labels.append(batch_labels.numpy())
                positions.append(batch_positions.numpy())
                if on_batch is not None:
                    on_batch(len(target))
        k = self.card.num_classes
        return EvalResult(np.concatenate(labels) if labels else np.zeros(0, np.int64),
                          np.concatenate(probs) if probs else np.zeros((0, k), np.float32),
                          np.concatenate(positions) if positions else np.zeros(0, np.int64),
                          loss_sum / weight_sum if weight_sum else float("nan"))
