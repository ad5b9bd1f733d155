"""Inference: sliding windows over the volume, mean of the fold models, connected-component clean-up.

The clean-up follows Luo 2024: keep the largest connected liver component (liver + tumour), keep
tumour only inside it, and drop tumour specks below ``min_tumour_mm3``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from wsi_hcc.radiology.segment_models import SegModel
from wsi_hcc.radiology.volume import Volume

__all__ = ["SegResult", "network_probabilities", "predict_probabilities", "clean_labels", "liver_roi",
           "segment_volume"]


@dataclass(frozen=True, eq=False)
class SegResult:
    """Labels (0 background, 1 liver, 2 tumour) on the input's reference grid, before and after clean-up."""

    labels: Volume
    raw_labels: Volume
    info: dict = field(default_factory=dict)


def network_probabilities(nets: Sequence, image: np.ndarray, patch_size: Sequence[int], overlap: float = 0.25,
                          sw_batch_size: int = 2) -> np.ndarray:
    """Softmax ``(classes, z, y, x)`` of ``image`` ``(phases, z, y, x)``, averaged over ``nets``.

    Each network sees Gaussian-weighted sliding windows of ``patch_size`` (MONAI); the volume is
    padded when smaller than a window.
    """
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import MeanEnsemble

    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)[None]
    outputs = []
    with torch.inference_mode():
        for net in nets:
            net.eval()
            logits = sliding_window_inference(x, tuple(patch_size), sw_batch_size, net, overlap=overlap,
                                              mode="gaussian")
            outputs.append(torch.softmax(torch.as_tensor(logits), dim=1)[0])
        mean = MeanEnsemble()(outputs) if len(outputs) > 1 else outputs[0]
    return np.asarray(torch.as_tensor(mean).numpy(), np.float32)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import label

    components, count = label(mask, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(sizes.argmax())


def liver_roi(liver: np.ndarray, spacing_mm: Sequence[float], margin_mm: float) -> tuple[slice, slice, slice]:
    """Bounding box of ``liver`` plus ``margin_mm`` on each side, clipped to the array (all of it if empty)."""
    shape = liver.shape
    if not liver.any():
        return tuple(slice(0, n) for n in shape)
    where = np.argwhere(liver)
    margin = np.ceil(margin_mm / np.asarray(spacing_mm)).astype(int)
    lo, hi = np.maximum(where.min(0) - margin, 0), np.minimum(where.max(0) + 1 + margin, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def predict_probabilities(model: SegModel, image: np.ndarray, spacing_mm: Sequence[float],
                          overlap: float = 0.25) -> np.ndarray:
    """Class probabilities ``(3, z, y, x)`` (background, liver, tumour) of the model's fold ensemble.

    Two-stage models: liver probability ``L`` from the liver networks on the whole volume; tumour
    probability ``T`` from the tumour networks inside the largest liver component's box; then
    ``(1 - L, L (1 - T), L T)``.
    """
    config = model.config
    if config.pipeline == "single":
        return network_probabilities([m["main"] for m in model.members], image, config.patch_size, overlap)
    liver_p = network_probabilities([m["liver"] for m in model.members], image, config.patch_size, overlap)[1]
    roi = liver_roi(_largest_component(liver_p > 0.5), spacing_mm, config.roi_margin_mm)
    tumour_p = np.zeros_like(liver_p)
    crop = image[(slice(None),) + roi]
    tumour_p[roi] = network_probabilities([m["tumour"] for m in model.members], crop, config.patch_size, overlap)[1]
    return np.stack([1.0 - liver_p, liver_p * (1.0 - tumour_p), liver_p * tumour_p]).astype(np.float32)


def clean_labels(labels: np.ndarray, spacing_mm: Sequence[float], min_tumour_mm3: float = 20.0) -> np.ndarray:
    """Largest liver component (liver + tumour, 26-connected); tumour only inside it; tumour
    components under ``min_tumour_mm3`` become liver."""
    from scipy.ndimage import label

    labels = np.asarray(labels)
    organ = _largest_component(labels > 0)
    out = np.where(organ, labels, 0).astype(np.uint8)
    if min_tumour_mm3 > 0 and (out == 2).any():
        components, count = label(out == 2, structure=np.ones((3, 3, 3), bool))
        sizes_mm3 = np.bincount(components.ravel()) * float(np.prod(spacing_mm))
        small = np.flatnonzero(sizes_mm3 < min_tumour_mm3)
        small = small[small > 0]
        out[np.isin(components, small)] = 1
    return out


def segment_volume(model: SegModel, phases: Mapping[str, Volume], reference: str | None = None,
                   overlap: float = 0.25, min_tumour_mm3: float = 20.0) -> SegResult:
    """Segment liver and tumour in ``phases`` (name -> Volume; the model's phases must be present).

    Phases are resampled onto the reference phase (default: the model's first phase) and that grid
    to the model's training spacing; labels come back on the reference phase's own grid.
    """
    from wsi_hcc.radiology.resample import resample_like
    from wsi_hcc.radiology.segment_data import prepare_phases, stack_phases

    config = model.config
    reference = reference or config.phases[0]
    grid = prepare_phases(phases, config.phases, config.spacing_mm, reference=reference)
    ref_in = phases[reference]
    work = grid[config.phases[0]]
    image = stack_phases(grid, config.phases, config.window)
    probs = predict_probabilities(model, image, work.spacing_mm, overlap)
    raw = probs.argmax(0).astype(np.uint8)
    cleaned = clean_labels(raw, work.spacing_mm, min_tumour_mm3)

    def back(array):
        volume = work.with_array(array, modality="SEG")
        return volume if volume.same_grid(ref_in) else resample_like(volume, ref_in, label=True)

    labels = back(cleaned)
    info = {"reference_phase": reference, "work_spacing_mm": list(work.spacing_mm), "work_shape": list(work.shape),
            "members": len(model.members), "overlap": overlap, "min_tumour_mm3": min_tumour_mm3,
            "tumour_ml": float((labels.array == 2).sum()) * labels.voxel_volume_ml,
            "liver_ml": float((labels.array > 0).sum()) * labels.voxel_volume_ml}
    return SegResult(labels=labels, raw_labels=back(raw), info=info)
