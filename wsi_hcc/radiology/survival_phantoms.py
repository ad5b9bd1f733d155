"""Phantom patients with survival times whose hazard lives in the whole liver, not in the tumour.

Each patient is a ``make_phantom`` CT (random tumour size and heterogeneity) whose liver parenchyma,
outside the tumour, gets a fine mottled texture of amplitude ``fibrosis * texture_hu`` (a stand-in
for the diffuse parenchymal change, fibrosis or steatosis, that whole-liver models are meant to
read; not a simulation of its biology). Survival is exponential with log hazard
``beta * (fibrosis - 0.5)`` and nothing else, so a model that reads only the tumour has nothing to
learn. Censoring: uniform follow-up in ``[0.5, 2] x`` the median event time, so about half of
the patients are censored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from wsi_hcc.radiology.crops import channel_name
from wsi_hcc.radiology.organ_box import RegionBox, region_box
from wsi_hcc.radiology.phantom import _smooth_noise, make_phantom
from wsi_hcc.utils.progress import Progress, silent_progress

__all__ = ["ImagingPatient", "liver_survival_cohort"]


@dataclass(frozen=True, eq=False)
class ImagingPatient:
    """One patient: the whole-liver and tumour boxes, follow-up ``time``, ``event`` (1 = died) and the truth."""

    patient: str
    liver: RegionBox
    tumour: RegionBox
    time: float
    event: int
    truth: dict = field(default_factory=dict)


def liver_survival_cohort(n_patients: int, seed: int = 0, size_vox: int = 32, phases: Sequence[str] = ("portal",),
                          shape: Sequence[int] = (32, 80, 80), spacing_mm: Sequence[float] = (2.5, 1.8, 1.8),
                          texture_hu: float = 30.0, texture_mm: float = 2.5, beta: float = 4.0,
                          lesion_radius_mm: tuple[float, float] = (6.0, 12.0), noise_hu: float = 8.0,
                          progress: Progress | None = None) -> list[ImagingPatient]:
    """``n_patients`` phantom patients (see the module docstring); fibrosis uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    progress = progress or silent_progress()
    progress.steps_planned(n_patients, name="making phantoms")
    fibrosis = rng.uniform(0.0, 1.0, n_patients)
    event_time = rng.exponential(1.0, n_patients) / np.exp(beta * (fibrosis - 0.5))
    follow_up = rng.uniform(0.5, 2.0, n_patients) * float(np.median(event_time))
    patients = []
    reference = "portal" if "portal" in phases else phases[-1]
    for i in range(n_patients):
        case_seed = int(rng.integers(0, 2**31 - 1))
        phantom = make_phantom(shape=shape, spacing_mm=spacing_mm, phases=tuple(phases), reference_phase=reference,
                               heterogeneity=float(rng.uniform(0, 1)), lesion_radius_mm=lesion_radius_mm,
                               noise_hu=noise_hu, seed=case_seed)
        grid = phantom.phases[reference]
        parenchyma = phantom.liver_mask & ~phantom.tumour_mask & ~phantom.vessel_mask
        texture = _smooth_noise(np.random.default_rng(case_seed + 1), grid.shape, np.asarray(grid.spacing_mm),
                                texture_mm) * (texture_hu * fibrosis[i])
        images = {}
        for name, volume in phantom.phases.items():
            array = np.asarray(volume.array, np.float32) + np.where(parenchyma, texture, 0.0)
            images[channel_name("CT", name)] = volume.with_array(np.round(array).astype(np.int16))
        liver, tumour = grid.with_array(phantom.liver_mask), grid.with_array(phantom.tumour_mask)
        event = int(event_time[i] <= follow_up[i])
        patients.append(ImagingPatient(
            f"phantom_{i:03d}", region_box(images, liver, size_vox), region_box(images, tumour, size_vox),
            float(min(event_time[i], follow_up[i])), event,
            {"fibrosis": float(fibrosis[i]), "heterogeneity": phantom.heterogeneity, "seed": case_seed}))
        progress.steps_done(1)
    return patients
