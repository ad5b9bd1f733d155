"""Training: class-balanced random patches, Dice + cross-entropy, K-fold ensemble (Luo 2024).

Each fold's model trains on the cases outside that fold and is scored on the cases inside it
(after sliding-window inference and clean-up); the saved model is the ensemble of all folds. With
``folds=1`` one model trains on every case and no fold is held out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from wsi_hcc.radiology.segment_data import SegCase
from wsi_hcc.radiology.segment_models import SegConfig, SegModel, new_member
from wsi_hcc.utils.progress import Progress, silent_progress

__all__ = ["train_model", "train_network", "fold_split", "evaluate_model"]


def fold_split(n_cases: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Held-out case indices per fold (shuffled, as equal as possible)."""
    if folds < 1 or (folds > 1 and folds > n_cases):
        raise ValueError(f"folds must be 1..{n_cases} (the number of cases), got {folds}")
    order = np.random.default_rng(seed).permutation(n_cases)
    return [np.sort(part) for part in np.array_split(order, folds)] if folds > 1 else [np.array([], int)]


def _crop(image: np.ndarray, labels: np.ndarray, patch: Sequence[int], rng: np.random.Generator,
          ratios: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A patch centred on a voxel of a class drawn by ``ratios`` (classes absent from the case are skipped)."""
    present = [c for c in range(len(ratios)) if ratios[c] > 0 and (labels == c).any()]
    weights = np.array([ratios[c] for c in present], float)
    cls = present[rng.choice(len(present), p=weights / weights.sum())]
    where = np.flatnonzero(labels.ravel() == cls)
    centre = np.array(np.unravel_index(where[rng.integers(len(where))], labels.shape))
    shape = np.array(labels.shape)
    patch = np.asarray(patch)
    # Pad first when the case is smaller than the patch, so every patch has the full size.
    pad = np.maximum(patch - shape, 0)
    if pad.any():
        width = [(int(p) // 2, int(p) - int(p) // 2) for p in pad]
        image = np.pad(image, [(0, 0)] + width, mode="edge")
        labels = np.pad(labels, width)
        centre = centre + pad // 2
        shape = np.array(labels.shape)
    start = np.clip(centre - patch // 2, 0, shape - patch)
    box = tuple(slice(int(s), int(s + p)) for s, p in zip(start, patch))
    return image[(slice(None),) + box], labels[box]


def train_network(net, cases: Sequence[SegCase], targets: Sequence[np.ndarray], config: SegConfig,
                  ratios: Sequence[float], seed: int, progress: Progress | None = None,
                  tag: str = "") -> list[float]:
    """Train ``net`` in place on random patches of ``cases`` with labels ``targets``; returns the loss per iteration.

    Adam with polynomial learning-rate decay (nnU-Net's schedule), MONAI ``DiceCELoss`` (softmax,
    Dice over the batch so patches without tumour do not dominate).
    """
    import torch
    from monai.losses import DiceCELoss

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda it: (1 - it / config.iterations) ** 0.9)
    progress = progress or silent_progress()
    progress.steps_planned(config.iterations, name=f"{tag}training".strip())
    net.train()
    losses = []
    for it in range(config.iterations):
        picks = rng.integers(len(cases), size=config.batch_size)
        batch = [_crop(cases[i].image, targets[i], config.patch_size, rng, ratios) for i in picks]
        x = torch.as_tensor(np.stack([b[0] for b in batch]))
        y = torch.as_tensor(np.stack([b[1] for b in batch])[:, None].astype(np.int64))
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        progress.steps_done(1, f"loss {np.mean(losses[-20:]):.3f}")
        if (it + 1) % max(1, config.iterations // 5) == 0:
            progress.message(f"{tag}iteration {it + 1}/{config.iterations}: loss {np.mean(losses[-20:]):.3f}")
    net.eval()
    return losses


def _train_member(cases: Sequence[SegCase], config: SegConfig, seed: int, progress, tag: str) -> tuple[dict, dict]:
    import torch

    from wsi_hcc.radiology.segment_infer import liver_roi

    torch.manual_seed(seed)
    member = new_member(config)
    summary = {}
    if config.pipeline == "single":
        losses = train_network(member["main"], cases, [c.labels for c in cases], config, config.crop_ratios, seed,
                               progress, tag)
        summary["final_loss"] = float(np.mean(losses[-20:]))
        return member, summary
    liver_targets = [(c.labels > 0).astype(np.uint8) for c in cases]
    losses = train_network(member["liver"], cases, liver_targets, config, config.crop_ratios[:2], seed, progress,
                           tag + "liver ")
    summary["final_loss_liver"] = float(np.mean(losses[-20:]))
    # The tumour stage learns inside the true liver's box (plus margin), where inference runs it.
    crops, tumour_targets = [], []
    for case in cases:
        roi = liver_roi(case.labels > 0, case.spacing_mm, config.roi_margin_mm)
        crops.append(SegCase(case.name, case.image[(slice(None),) + roi], case.labels[roi], case.spacing_mm))
        tumour_targets.append((case.labels[roi] == 2).astype(np.uint8))
    losses = train_network(member["tumour"], crops, tumour_targets, config, (1.0, config.crop_ratios[2]), seed + 1,
                           progress, tag + "tumour ")
    summary["final_loss_tumour"] = float(np.mean(losses[-20:]))
    return member, summary


def evaluate_model(model: SegModel, cases: Sequence[SegCase], min_tumour_mm3: float = 20.0) -> list[dict]:
    """Per-case metrics (``seg_metrics.case_metrics``) of the cleaned prediction against each case's labels."""
    from wsi_hcc.radiology.seg_metrics import case_metrics
    from wsi_hcc.radiology.segment_infer import clean_labels, predict_probabilities

    rows = []
    for case in cases:
        probs = predict_probabilities(model, case.image, case.spacing_mm)
        labels = clean_labels(probs.argmax(0), case.spacing_mm, min_tumour_mm3)
        rows.append({"case": case.name, **case_metrics(labels, case.labels, case.spacing_mm)})
    return rows


def train_model(cases: Sequence[SegCase], config: SegConfig,
                progress: Progress | None = None) -> SegModel:
    """Train ``config.folds`` models (one per fold, each without its held-out cases) and return the ensemble.

    ``model.info`` records per fold the held-out cases, their metrics, the final loss and seconds.
    """
    if not cases:
        raise ValueError("no training cases")
    for case in cases:
        if case.labels is None or case.image.shape[0] != len(config.phases):
            raise ValueError(f"case {case.name}: needs labels and {len(config.phases)} phase channels")
    progress = progress or silent_progress()
    held_out = fold_split(len(cases), config.folds, config.seed)
    members, folds = [], []
    for k, test_idx in enumerate(held_out):
        start = time.perf_counter()
        train_cases = [c for i, c in enumerate(cases) if i not in set(test_idx.tolist())]
        tag = f"fold {k + 1}/{len(held_out)}: " if len(held_out) > 1 else ""
        progress.item_started(f"fold {k + 1}", k, len(held_out))
        member, summary = _train_member(train_cases, config, config.seed + 1000 * k, progress, tag)
        members.append(member)
        record = {"fold": k, "train_cases": [c.name for c in train_cases], **summary,
                  "seconds": round(time.perf_counter() - start, 2)}
        if len(test_idx):
            rows = evaluate_model(SegModel(config, [member]), [cases[i] for i in test_idx])
            record["held_out"] = rows
            record["held_out_tumour_dice_mean"] = float(np.mean([r["tumour"]["dice"] for r in rows]))
            progress.message(f"{tag}held-out tumour Dice {record['held_out_tumour_dice_mean']:.3f}")
        folds.append(record)
        progress.item_finished()
    info = {"folds": folds, "training_cases": [c.name for c in cases],
            "training_seconds": round(sum(f["seconds"] for f in folds), 2)}
    return SegModel(config, members, info).eval()
