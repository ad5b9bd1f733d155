"""Training/inference cases for segmentation: phases stacked as channels, normalised, on one grid.

Labels are reduced to three classes (``seg_metrics.SEGMENT_CLASSES``): 0 background, 1 liver,
2 tumour. From phantom/label maps: intrahepatic vessels (3) count as liver, satellites (4) as
tumour; the aorta is outside the liver and stays background. LiTS-style maps (1 liver, 2 tumour)
pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.intensity import normalise_volume
from wsi_hcc.radiology.volume import Volume

__all__ = ["SegCase", "three_classes", "stack_phases", "phantom_cases", "folder_case", "prepare_phases"]


@dataclass(frozen=True, eq=False)
class SegCase:
    """One case: ``image`` ``(phases, z, y, x)`` float32 normalised, ``labels`` ``(z, y, x)`` uint8 (0/1/2)."""

    name: str
    image: np.ndarray
    labels: np.ndarray | None
    spacing_mm: tuple[float, float, float]


def three_classes(labels: np.ndarray) -> np.ndarray:
    """Map phantom labels (1 liver, 2 tumour, 3 vessel, 4 satellite) to 0/1/2."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.uint8)
    out[(labels == 1) | (labels == 3)] = 1
    out[(labels == 2) | (labels == 4)] = 2
    return out


def prepare_phases(phases: Mapping[str, Volume], order: Sequence[str], spacing_mm: Sequence[float] | None = None,
                   reference: str | None = None) -> dict[str, Volume]:
    """The phases named in ``order``, on the grid of ``reference`` (default: the first of ``order``),
    resampled to ``spacing_mm`` when given and different by more than 1 %."""
    from wsi_hcc.radiology.resample import resample_like, resample_to_spacing

    missing = [name for name in order if name not in phases]
    if missing:
        raise WsiHccError(f"missing phase(s) {missing}: the model needs {list(order)}; give --image NAME=PATH for each")
    reference = reference or order[0]
    ref = phases[reference]
    if spacing_mm is not None and not np.allclose(ref.spacing_mm, spacing_mm, rtol=0.01):
        ref = resample_to_spacing(ref, tuple(spacing_mm))
    return {name: (phases[name] if phases[name].same_grid(ref) else resample_like(phases[name], ref))
            for name in order}


def stack_phases(phases: Mapping[str, Volume], order: Sequence[str], window: str = "liver") -> np.ndarray:
    """``(phases, z, y, x)`` float32: each phase windowed (CT, preset ``window``) or z-scored (MR).

    All phases must already share one grid (see :func:`prepare_phases`).
    """
    first = phases[order[0]]
    arrays = []
    for name in order:
        volume = phases[name]
        if not volume.same_grid(first):
            raise ValueError(f"phase {name!r} is not on the grid of {order[0]!r}; call prepare_phases first")
        modality = volume.modality or "CT"
        preset = window if modality == "CT" else None
        arrays.append(normalise_volume(volume.with_array(volume.array, modality=modality), preset).array)
    return np.stack(arrays).astype(np.float32)


def phantom_cases(n: int, seed: int = 0, phases: Sequence[str] = ("arterial", "portal", "delayed"),
                  shape: Sequence[int] = (32, 64, 64), spacing_mm: Sequence[float] = (3.0, 2.5, 2.5),
                  window: str = "liver", lesions: tuple[int, int] = (1, 2), noise_hu: float = 8.0) -> list[SegCase]:
    """``n`` phantoms (seeds ``seed .. seed+n-1``) with 1-2 lesions of random size and heterogeneity."""
    from wsi_hcc.radiology.phantom import make_phantom

    cases = []
    for k in range(n):
        rng = np.random.default_rng(10_000 + seed + k)
        phantom = make_phantom(shape=shape, spacing_mm=spacing_mm, phases=tuple(phases),
                               n_lesions=int(rng.integers(lesions[0], lesions[1] + 1)),
                               heterogeneity=float(rng.uniform(0.0, 0.6)), noise_hu=noise_hu,
                               reference_phase="portal" if "portal" in phases else phases[0], seed=seed + k)
        cases.append(SegCase(f"phantom{seed + k}", stack_phases(phantom.phases, phases, window),
                             three_classes(phantom.labels.array), tuple(float(s) for s in spacing_mm)))
    return cases


def folder_case(folder: str | Path, phases: Sequence[str], spacing_mm: Sequence[float] | None = None,
                window: str = "liver", labels_name: str = "labels.nii.gz") -> SegCase:
    """A case from a folder holding ``<phase>.nii.gz`` per phase and ``labels.nii.gz`` (the phantom layout)."""
    from wsi_hcc.radiology.load import load_volume
    from wsi_hcc.radiology.resample import resample_like

    folder = Path(folder)
    volumes = {}
    for name in phases:
        path = folder / f"{name}.nii.gz"
        if not path.is_file():
            raise WsiHccError(f"{path}: missing; a training folder needs {', '.join(f'{p}.nii.gz' for p in phases)} "
                              f"and {labels_name}")
        volumes[name] = load_volume(path, modality=None)
    labels_path = folder / labels_name
    if not labels_path.is_file():
        raise WsiHccError(f"{labels_path}: missing; a training folder needs a label map (1 liver, 2 tumour)")
    grid = prepare_phases(volumes, phases, spacing_mm)
    labels = load_volume(labels_path)
    ref = grid[phases[0]]
    if not labels.same_grid(ref):
        labels = resample_like(labels, ref, label=True)
    return SegCase(folder.name, stack_phases(grid, phases, window), three_classes(labels.array), ref.spacing_mm)
