"""A labelled cohort of phantom crops for training and testing the MVI and grade classifiers.

Each case is a ``make_phantom`` phantom cropped around its tumour (``make_crop``), with:

- ``mvi``: 1 for phantoms with enhancing satellite nodules in the 0-6 mm ring (every other case);
- ``grade``: 0/1/2 from the phantom's ``heterogeneity`` in thirds (a stand-in for
  well / moderately / poorly differentiated: texture and, above 0.5, a necrotic core);
- ``attributes``: what a radiologist would read, the targets of the TED model's first stage:
  tumour diameter (mm, equivalent sphere), heterogeneity, satellite count;
- ``covariates``: clinical-like numbers for the nomogram: the tumour diameter and a **synthetic**
  log10 AFP drawn as ``N(1.2 + 0.6 * mvi, 0.6)`` (serum AFP is higher with MVI in published
  cohorts; here it is only a weakly informative number, not a simulation of biology).

Cases from files (``case_table``) are built by the same ``volume_case`` as the phantoms: the crop,
the measured diameter, the labels and whatever attributes and covariates the table gives; a case
carries only the label of the task it was read for (the other is ``None``) and, optionally, its
patient, so splits keep a patient's cases together.

Simulated MRI (``simulate_mri``): a stand-in for a second modality in fusion tests, not MR
physics. The CT values are passed through a decreasing sigmoid (dense, enhancing tissue dark,
fat bright), blurred by 0.8 mm and given their own noise, so the CT and "MR" channels carry the
same anatomy with different, nonlinear contrast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.crops import Crop, CropSpec, channel_name, make_crop
from wsi_hcc.radiology.phantom import Phantom, make_phantom
from wsi_hcc.radiology.volume import Volume
from wsi_hcc.utils.progress import Progress, silent_progress

__all__ = ["CohortCase", "volume_case", "phantom_case", "phantom_cohort", "simulate_mri", "grade_of", "ATTRIBUTES",
           "GRADE_NAMES"]

ATTRIBUTES = ("diameter_mm", "heterogeneity", "satellites")
GRADE_NAMES = ("well", "moderate", "poor")


@dataclass(frozen=True, eq=False)
class CohortCase:
    """One case: its crop, labels (``None`` when unknown), radiological attributes, clinical(-like)
    covariates and, optionally, its patient."""

    case_id: str
    crop: Crop
    mvi: int | None
    grade: int | None
    attributes: dict[str, float] = field(default_factory=dict)
    covariates: dict[str, float] = field(default_factory=dict)
    patient: str | None = None

    def label(self, task: str) -> int:
        value = self.mvi if task == "mvi" else self.grade
        if value is None:
            raise WsiHccError(f"case {self.case_id} has no {task} label; train it for the task its labels were "
                              "read for")
        return value


def grade_of(heterogeneity: float) -> int:
    """Heterogeneity in [0, 1] -> grade class 0/1/2 (thirds)."""
    return int(min(2, np.floor(float(heterogeneity) * 3)))


def simulate_mri(volume: Volume, seed: int = 0, noise: float = 0.04) -> Volume:
    """A differently contrasted copy of a CT volume, modality ``"MR"`` (see the module docstring)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    hu = np.asarray(volume.array, np.float32)
    signal = 0.15 + 1.0 / (1.0 + np.exp((hu - 85.0) / 30.0))
    signal[hu < -500] = 0.0
    signal = gaussian_filter(signal, sigma=0.8 / np.asarray(volume.spacing_mm))
    signal = signal + rng.normal(0.0, noise, size=signal.shape)
    return volume.with_array((1000.0 * np.clip(signal, 0.0, None)).astype(np.float32), modality="MR")


def diameter_mm(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Equivalent-sphere diameter (mm) of a bool mask."""
    volume_mm3 = float(np.count_nonzero(mask)) * float(np.prod(spacing_mm))
    return float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0))


def volume_case(case_id: str, images: Mapping[str, Volume], tumour: Volume, liver: Volume | None = None,
                spec: CropSpec = CropSpec(), *, mvi: int | None = None, grade: int | None = None,
                attributes: Mapping[str, float] | None = None, covariates: Mapping[str, float] | None = None,
                patient: str | None = None) -> CohortCase:
    """Crop ``images`` around ``tumour`` (``make_crop``) into a case; the tumour's equivalent-sphere
    diameter (measured on the mask's own grid) is an attribute and a covariate unless given.

    Parameters
    ----------
    images, tumour, liver, spec
        As ``make_crop``: channel name -> volume, tumour (non-zero) and optional liver masks, any grids.
    mvi, grade
        Class indices; ``None`` when unknown.
    attributes, covariates
        Radiological attributes (TED targets) and clinical covariates (nomogram) of the case.
    patient
        Patient id (splits keep a patient's cases together); ``None``: the case is its own patient.
    """
    crop = make_crop(images, tumour, liver, spec)
    diameter = diameter_mm(np.asarray(tumour.array) != 0, tumour.spacing_mm)
    return CohortCase(case_id=case_id, crop=crop, mvi=mvi, grade=grade,
                      attributes={"diameter_mm": diameter, **(attributes or {})},
                      covariates={"diameter_mm": diameter, **(covariates or {})}, patient=patient)


def phantom_case(phantom: Phantom, case_id: str, spec: CropSpec = CropSpec(), mri: bool = False,
                 phases: Sequence[str] | None = None) -> CohortCase:
    """Crop a phantom (and optionally its simulated MR copy) into a labelled case."""
    names = list(phases or phantom.phases)
    images = {channel_name("CT", p): phantom.phases[p] for p in names}
    if mri:
        images.update({channel_name("MR", p): simulate_mri(phantom.phases[p], seed=phantom.seed * 31 + i)
                       for i, p in enumerate(names)})
    reference = phantom.phases[phantom.reference_phase]
    n_satellites = len(phantom.lesions[0].satellites) if phantom.lesions else 0
    rng = np.random.default_rng(10_000 + phantom.seed)
    afp = float(rng.normal(1.2 + 0.6 * phantom.mvi, 0.6))
    return volume_case(case_id, images, reference.with_array(phantom.tumour_mask),
                       reference.with_array(phantom.liver_mask), spec, mvi=int(phantom.mvi),
                       grade=grade_of(phantom.heterogeneity),
                       attributes={"heterogeneity": float(phantom.heterogeneity), "satellites": float(n_satellites)},
                       covariates={"afp_log10": afp})


def phantom_cohort(n_cases: int, seed: int = 0, spec: CropSpec = CropSpec(), mri: bool = False,
                   phases: Sequence[str] = ("arterial", "portal"), shape: Sequence[int] = (32, 96, 96),
                   spacing_mm: Sequence[float] = (2.5, 1.5, 1.5), lesion_radius_mm: tuple[float, float] = (7.0, 12.0),
                   n_satellites: int = 6, noise_hu: float = 8.0, progress: Progress | None = None) -> list[CohortCase]:
    """``n_cases`` phantoms: MVI (``n_satellites`` nodules) in every other case, heterogeneity uniform in [0, 1].

    The reference phase is ``"portal"`` when present, else the last phase. ``progress`` (optional)
    hears one step per case.
    """
    rng = np.random.default_rng(seed)
    phases = tuple(phases)
    reference = "portal" if "portal" in phases else phases[-1]
    progress = progress or silent_progress()
    progress.steps_planned(n_cases, name="making phantoms")
    cases = []
    for i in range(n_cases):
        case_seed = int(rng.integers(0, 2**31 - 1))
        heterogeneity = float(rng.uniform(0.0, 1.0))
        phantom = make_phantom(shape=shape, spacing_mm=spacing_mm, phases=phases, mvi=bool(i % 2),
                               heterogeneity=heterogeneity, lesion_radius_mm=lesion_radius_mm,
                               n_satellites=n_satellites, noise_hu=noise_hu,
                               reference_phase=reference, seed=case_seed)
        cases.append(phantom_case(phantom, f"phantom_{i:03d}", spec, mri=mri))
        progress.steps_done(1)
    return cases
