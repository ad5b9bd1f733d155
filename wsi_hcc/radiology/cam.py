"""Grad-CAM for every classifier (``monai.visualize.GradCAM``), CAM energy per region, NIfTI and PNG outputs.

The score explained is the class logit minus the mean logit (for two classes, half the log-odds),
so the map shows evidence *for* the class rather than for any class. MONAI's GradCAM hooks the
layers named in the network's ``cam_layers`` (convolutions, before their activation) and
upsamples the map to the crop; its default post-processing rescales each map so that its maximum
becomes 0 (it flips magnitudes), so it is replaced by the identity and the map divided by its
maximum here. For the late-fusion model the maps of the available branches are averaged; for
the graph model the map is one value per node (MONAI treats the node axis as a 1D image), painted
into its region.

Energy per region: ``fraction`` = sum of the CAM in the region / sum over the crop, and
``mean_per_voxel`` (the map is in [0, 1]), for the disjoint regions tumour, ring, far liver (liver
minus tumour minus ring; the rest of the crop when no liver mask was given) and outside (the rest
of the crop). Expect energy outside the liver: Grad-CAM weights each feature map by its mean
gradient and then sums the maps *everywhere*, including where the region-pooled networks never
look (fat, air), so their maps there are not evidence.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsi_hcc.radiology.crops import Crop

__all__ = ["grad_cam", "cam_energy", "cam_figure", "write_cam", "REGION_COLOURS"]

REGION_COLOURS = {"tumour": "#00e5ff", "ring": "#ffea00", "liver": "#76ff03"}


class _Contrast(nn.Module):
    """The wrapped network's logits minus their mean (the score Grad-CAM differentiates)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        logits = self.net(x, **kwargs)
        return logits - logits.mean(dim=1, keepdim=True)


def _identity(x):
    return x


def grad_cam(model, crop: Crop, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM of ``model`` (a ``ClassifierModel``) on one crop.

    Parameters
    ----------
    class_index
        The class explained; default the positive class for two classes, else the predicted one.

    Returns
    -------
    cam : np.ndarray
        float32 ``(z, y, x)`` on the crop grid, in [0, 1] (all zeros when no evidence was found).
    class_index : int
    """
    from monai.visualize import GradCAM

    from wsi_hcc.radiology.classify_train import model_inputs, predict_proba

    if class_index is None:
        class_index = 1 if len(model.classes) == 2 else int(predict_proba(model, [crop])[0].argmax())
    if not 0 <= class_index < len(model.classes):
        raise ValueError(f"class_index {class_index} is not one of 0..{len(model.classes) - 1}")
    x, available = model_inputs(model.card, [crop])
    # A copy: MONAI registers hooks on the module for good, and the caller's network stays clean.
    wrapped = _Contrast(copy.deepcopy(model.network)).eval()
    layers = list(model.network.cam_layers)
    kwargs = {}
    if model.kind == "fusion":
        kwargs["available"] = available
        modalities = model.network.modalities
        layers = [layer for layer, m in zip(layers, modalities) if bool(available[0, modalities.index(m)])]
    # The input needs a gradient too: when the hooked convolution is the first layer, PyTorch's
    # full backward hook otherwise fires on outputs only (and warns).
    x = x.clone().requires_grad_(True)
    maps = []
    for layer in layers:
        cam = GradCAM(nn_module=wrapped, target_layers=f"net.{layer}", postprocessing=_identity)
        maps.append(cam(x, class_idx=class_index, **kwargs).detach()[0, 0].numpy())
    if model.kind == "graph":
        node_map = np.mean(maps, axis=0)
        volume = np.zeros(crop.shape, np.float32)
        for value, mask in zip(node_map, crop.regions().values()):
            volume[mask] = value
        maps = [volume]
    cam_map = np.mean([m / m.max() if m.max() > 0 else m for m in maps], axis=0).astype(np.float32)
    return cam_map, int(class_index)


def cam_energy(cam: np.ndarray, regions: dict[str, np.ndarray]) -> dict:
    """Per region: CAM ``fraction`` of the crop's total, ``mean_per_voxel`` and ``voxels``."""
    total = float(cam.sum())
    out = {}
    for name, mask in regions.items():
        inside = cam[np.asarray(mask, bool)]
        out[name] = {"fraction": float(inside.sum() / total) if total > 0 else 0.0,
                     "mean_per_voxel": float(inside.mean()) if inside.size else 0.0, "voxels": int(inside.size)}
    return out


def _slices(crop: Crop, n_slices: int) -> list[int]:
    rows = np.flatnonzero((crop.tumour | crop.ring).any(axis=(1, 2)))
    if rows.size == 0:
        rows = np.arange(crop.shape[0])
    return sorted({int(round(v)) for v in np.linspace(rows[0], rows[-1], n_slices + 2)[1:-1]})


def cam_figure(cam: np.ndarray, crop: Crop, z: int, background: str, title: str = "", cam_label: str = "Grad-CAM"):
    """One axial slice: the ``background`` channel in grey, the CAM in colour with a colour bar
    labelled ``cam_label``, and the outer edges of the tumour, the ring around it and the liver named
    in a legend (the regions are disjoint, so each is outlined with what lies inside it, and no edge
    hides another)."""
    from wsi_hcc.viz.cam_slices import cam_slice_figure

    regions = crop.regions()
    tumour = regions["tumour"][z]
    with_ring = tumour | regions["ring"][z]
    contours = {"liver": with_ring | regions["liver"][z], "peritumoural ring": with_ring, "tumour": tumour}
    colours = {"liver": REGION_COLOURS["liver"], "peritumoural ring": REGION_COLOURS["ring"],
               "tumour": REGION_COLOURS["tumour"]}
    return cam_slice_figure(crop.channels[background][z], cam[z], contours, colours,
                            title or f"{background}, slice {z}", cam_label)


def write_cam(cam: np.ndarray, crop: Crop, out_dir: str | Path, prefix: str = "cam", n_slices: int = 3,
              background: str | None = None, cam_label: str = "Grad-CAM") -> dict:
    """Write ``<prefix>.nii.gz`` (CAM on the crop grid), ``crop_<channel>.nii.gz`` and per-slice PNG overlays
    (``cam_label`` names the colour bar, e.g. "Grad-CAM: evidence for MVI").

    Returns the written file names and the slices drawn.
    """
    from wsi_hcc.radiology.volume import save_nifti
    from wsi_hcc.utils.atomic import atomic_write_bytes
    from wsi_hcc.viz.figures import figure_png

    out_dir = Path(out_dir)
    files = {"cam": f"{prefix}.nii.gz", "channels": {}, "png": []}
    save_nifti(crop.grid.with_array(cam.astype(np.float32), modality=""), out_dir / files["cam"])
    for name, array in crop.channels.items():
        file = f"crop_{name.replace(':', '_')}.nii.gz"
        save_nifti(crop.grid.with_array(array.astype(np.float32), modality=""), out_dir / file)
        files["channels"][name] = file
    labels = np.zeros(crop.shape, np.uint8)
    for value, mask in enumerate(crop.regions().values(), start=1):
        labels[mask] = value
    save_nifti(crop.grid.with_array(labels, modality="SEG"), out_dir / "crop_regions.nii.gz")
    files["regions"] = {"file": "crop_regions.nii.gz", "labels": {"1": "tumour", "2": "ring", "3": "liver"}}
    background = background or next(iter(crop.channels))
    slices = _slices(crop, n_slices)
    for z in slices:
        png = f"{prefix}_z{z:03d}.png"
        figure = cam_figure(cam, crop, z, background, cam_label=cam_label)
        atomic_write_bytes(out_dir / png, figure_png(figure, dpi=100))
        files["png"].append(png)
    files["slices"] = slices
    return files
