"""Multi-phase liver CT phantoms with ground truth, for tests, demos and classifiers with a known answer.

A phantom is a body, a liver (a deformed ellipsoid), vessels (aorta, portal vein, hepatic veins)
and lesions, in four contrast phases. Lesions follow the HCC pattern: hyper-enhancing in the
arterial phase, washout (darker than liver) in the portal and delayed phases. Options:

- ``mvi=True`` adds small enhancing satellite nodules 1-5 mm outside the first lesion (inside
  the 0-6 mm peritumoral ring), a stand-in for microvascular invasion;
- ``heterogeneity`` in [0, 1] is a grade-like attribute: the amplitude of smooth texture inside
  lesions and, above 0.5, a non-enhancing necrotic core;
- ``motion_mm`` / ``rotation_deg`` move each non-reference phase rigidly (breathing between
  acquisitions), recorded so registration can be checked;
- ``noise_hu`` adds Gaussian noise per phase.

Geometry: identity direction, origin at 0, LPS; ``(z, y, x)`` arrays like every ``Volume``. The
ground-truth masks are on the reference phase's frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.volume import Volume

__all__ = ["Phantom", "PhantomLesion", "make_phantom", "write_phantom", "PHASE_HU", "LABELS"]

# Mean HU per tissue and phase (portal-venous liver ~110 HU; HCC arterial hyper-enhancement and
# portal/delayed washout, as LI-RADS describes).
PHASE_HU: dict[str, dict[str, float]] = {
    "native": {"liver": 55, "lesion": 40, "necrosis": 20, "portal_vein": 40, "hepatic_vein": 40, "aorta": 40},
    "arterial": {"liver": 70, "lesion": 135, "necrosis": 22, "portal_vein": 110, "hepatic_vein": 50, "aorta": 320},
    "portal": {"liver": 115, "lesion": 80, "necrosis": 25, "portal_vein": 180, "hepatic_vein": 160, "aorta": 170},
    "delayed": {"liver": 95, "lesion": 65, "necrosis": 28, "portal_vein": 125, "hepatic_vein": 120, "aorta": 120},
}
LABELS = {1: "liver", 2: "tumour", 3: "intrahepatic vessel", 4: "satellite"}
_BODY_HU, _FAT_HU, _AIR_HU = 45.0, -95.0, -1000.0


@dataclass(frozen=True)
class PhantomLesion:
    """One lesion: LPS centre (mm), radii (mm) along (z, y, x), and its satellites' (centre, radius)."""

    centre_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    satellites: tuple[tuple[tuple[float, float, float], float], ...] = ()


@dataclass(frozen=True, eq=False)
class Phantom:
    """A multi-phase phantom and its ground truth (masks on the reference phase's grid).

    ``motion[phase]`` is the 4x4 LPS matrix ``M`` with: anatomy at ``p`` in the reference phase sits
    at ``M @ p`` in that phase, so ``register_volume(reference, phase)`` should return ``M``.
    """

    phases: dict[str, Volume]
    reference_phase: str
    liver_mask: np.ndarray
    tumour_mask: np.ndarray
    vessel_mask: np.ndarray
    satellite_mask: np.ndarray
    lesions: tuple[PhantomLesion, ...]
    mvi: bool
    heterogeneity: float
    motion: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0

    @property
    def labels(self) -> Volume:
        """Label map on the reference grid: 1 liver, 2 tumour, 3 vessel inside the liver, 4 satellite.

        Every non-zero voxel is liver (the aorta, outside it, stays 0).
        """
        labels = np.zeros(self.liver_mask.shape, np.uint8)
        labels[self.liver_mask] = 1
        labels[self.vessel_mask & self.liver_mask] = 3
        labels[self.tumour_mask] = 2
        labels[self.satellite_mask] = 4
        return self.phases[self.reference_phase].with_array(labels, modality="SEG")

    def truth(self) -> dict:
        """The ground truth as JSON-ready values."""
        return {"reference_phase": self.reference_phase, "mvi": self.mvi, "heterogeneity": self.heterogeneity,
                "seed": self.seed, "labels": {str(k): v for k, v in LABELS.items()},
                "lesions": [{"centre_mm": list(les.centre_mm), "radii_mm": list(les.radii_mm),
                             "satellites": [{"centre_mm": list(c), "radius_mm": r} for c, r in les.satellites]}
                            for les in self.lesions],
                "motion": {name: np.round(m, 6).tolist() for name, m in self.motion.items()},
                "phase_hu": {name: PHASE_HU[name] for name in self.phases}}


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    axis = end - start
    t = np.clip(((points - start) @ axis) / float(axis @ axis), 0.0, 1.0)
    return np.linalg.norm(points - (start + t[..., None] * axis), axis=-1)


def _smooth_noise(rng: np.random.Generator, shape, spacing: np.ndarray, sigma_mm: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field_ = gaussian_filter(rng.standard_normal(shape), sigma=sigma_mm / spacing)
    return field_ / (field_.std() or 1.0)


def _rigid(rng: np.random.Generator, motion_mm: float, rotation_deg: float, centre: np.ndarray) -> np.ndarray:
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    angle = np.radians(rotation_deg) * rng.choice([-1.0, 1.0])
    # Breathing rotates mostly about the left-right axis; keep it to one axis for a readable truth.
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + motion_mm * direction
    return matrix


def make_phantom(shape: Sequence[int] = (40, 112, 112), spacing_mm: Sequence[float] = (2.5, 1.5, 1.5),
                 phases: Sequence[str] = ("native", "arterial", "portal", "delayed"), n_lesions: int = 1,
                 lesion_radius_mm: tuple[float, float] = (8.0, 14.0), mvi: bool = False, n_satellites: int = 4,
                 heterogeneity: float = 0.3, motion_mm: float = 0.0, rotation_deg: float = 0.0,
                 noise_hu: float = 8.0, reference_phase: str = "portal", seed: int = 0) -> Phantom:
    """Build a phantom (see the module docstring). Arrays are int16 HU, modality ``"CT"``.

    Parameters
    ----------
    shape, spacing_mm
        Grid ``(z, y, x)`` and voxel size in mm; the liver fills about 60 % of each extent.
    phases
        Any of ``PHASE_HU``'s names, in acquisition order.
    n_lesions, lesion_radius_mm
        Number of lesions and the range their mean radius is drawn from.
    mvi, n_satellites
        Add ``n_satellites`` satellite nodules (radius 1.5-2.5 mm, centre 2.5-4.5 mm beyond the
        first lesion's surface) when ``mvi``.
    heterogeneity
        0 (homogeneous) to 1 (very heterogeneous, necrotic core).
    motion_mm, rotation_deg
        Rigid motion of each non-reference phase: a translation of exactly ``motion_mm`` in a
        random direction and a rotation of ``rotation_deg`` about the left-right axis.
    """
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    unknown = [p for p in phases if p not in PHASE_HU]
    if unknown or reference_phase not in phases:
        raise WsiHccError(f"phases must come from {sorted(PHASE_HU)} and include reference_phase "
                         f"{reference_phase!r}; got {list(phases)}")
    if not 0.0 <= heterogeneity <= 1.0:
        raise ValueError(f"heterogeneity must be in [0, 1], got {heterogeneity}")
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing_mm, float)
    extent = np.asarray(shape) * spacing
    # Physical (z, y, x) coordinates of voxel centres; LPS (x, y, z) is the reverse.
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), axis=-1)
    centre = extent / 2

    yx = (grid[..., 1:] - centre[1:]) / (extent[1:] * np.array([0.44, 0.47]))
    body_r = np.sqrt((yx ** 2).sum(-1))
    body, fat = body_r <= 1.0, (body_r > 0.9) & (body_r <= 1.0)

    # Liver: an ellipsoid towards the patient's right (low x in LPS), wobbled by smooth noise.
    liver_centre = centre + extent * np.array([0.0, -0.02, -0.06])
    liver_axes = extent * np.array([0.36, 0.30, 0.30])
    radius = np.sqrt((((grid - liver_centre) / liver_axes) ** 2).sum(-1))
    liver = (radius + 0.06 * _smooth_noise(rng, shape, spacing, 12.0)) <= 1.0

    # Vessels: aorta outside the liver; portal vein entering at the hilum with two branches; three
    # hepatic veins converging to the top of the liver.
    aorta_at = np.array([centre[1] + 0.18 * extent[1], centre[2] + 0.05 * extent[2]])
    aorta = np.sqrt(((grid[..., 1:] - aorta_at) ** 2).sum(-1)) <= min(10.0, 0.06 * extent[2])
    hilum = liver_centre + liver_axes * np.array([-0.2, 0.35, 0.55])
    portal = np.zeros(shape, bool)
    for target in ([0.1, -0.2, -0.6], [0.3, 0.2, -0.3], [-0.4, -0.3, -0.2]):
        end = liver_centre + liver_axes * np.array(target)
        portal |= _segment_distance(grid, hilum, end) <= 3.5
    top = liver_centre + liver_axes * np.array([0.85, 0.3, 0.3])
    hepatic = np.zeros(shape, bool)
    for target in ([-0.1, -0.6, -0.5], [0.0, -0.7, 0.2], [-0.2, 0.2, -0.7]):
        hepatic |= _segment_distance(grid, top, liver_centre + liver_axes * np.array(target)) <= 2.5
    portal &= liver
    hepatic &= liver & ~portal
    vessels = portal | hepatic | aorta
    liver &= ~aorta

    # Lesions: centres deep enough in the liver for the whole lesion and its 6 mm ring.
    depth = distance_transform_edt(liver & ~portal & ~hepatic, sampling=spacing)
    tumour = np.zeros(shape, bool)
    necrosis = np.zeros(shape, bool)
    lesions = []
    for _ in range(n_lesions):
        mean_r = rng.uniform(*lesion_radius_mm)
        radii = mean_r * rng.uniform(0.85, 1.15, size=3)
        room = float(depth[~tumour].max()) - 6.0 if (~tumour).any() else 0.0
        if radii.max() > room:
            # A small grid: shrink the lesion to fit with its ring rather than fail.
            radii *= room / radii.max()
        if radii.min() < 2.0:
            raise WsiHccError(f"no room for a lesion and its 6 mm ring in a {shape} grid of {tuple(spacing)} mm; "
                              "enlarge --shape or --spacing-mm, or use fewer lesions")
        candidates = np.argwhere((depth >= radii.max() + 6.0) & ~tumour)
        if lesions:
            # Keep lesions apart so each one's ring is its own.
            taken = np.array([np.asarray(les.centre_mm)[::-1] for les in lesions])
            far = np.min(np.linalg.norm(candidates[:, None] * spacing - taken[None], axis=-1), axis=1) > 2 * mean_r + 12
            candidates = candidates[far] if far.any() else candidates
        at = candidates[rng.integers(len(candidates))] * spacing
        inside = np.sqrt((((grid - at) / radii) ** 2).sum(-1))
        tumour |= inside <= 1.0
        core = max(0.0, heterogeneity - 0.5) * 1.2
        necrosis |= inside <= core
        lesions.append(PhantomLesion(centre_mm=tuple(float(v) for v in at[::-1]),
                                     radii_mm=tuple(float(r) for r in radii)))

    satellites = np.zeros(shape, bool)
    if mvi and lesions:
        first = lesions[0]
        at, radii = np.asarray(first.centre_mm)[::-1], np.asarray(first.radii_mm)
        placed = []
        for _ in range(100 * n_satellites):
            if len(placed) == n_satellites:
                break
            direction = rng.standard_normal(3)
            direction /= np.linalg.norm(direction)
            r_sat = rng.uniform(1.5, 2.5)
            # Surface point of the ellipsoid along the direction, then out by the gap + radius.
            surface = 1.0 / np.sqrt(((direction / radii) ** 2).sum())
            sat_at = at + direction * (surface + rng.uniform(2.5, 4.5))
            index = np.round(sat_at / spacing).astype(int)
            if np.any(index < 0) or np.any(index >= shape) or not liver[tuple(index)] or vessels[tuple(index)]:
                continue
            if any(np.linalg.norm(sat_at - c) < r_sat + r + 2 for c, r in placed):
                continue
            placed.append((sat_at, r_sat))
            satellites |= (np.sqrt(((grid - sat_at) ** 2).sum(-1)) <= r_sat) & ~tumour
        lesions[0] = PhantomLesion(first.centre_mm, first.radii_mm,
                                   tuple((tuple(float(v) for v in c[::-1]), float(r)) for c, r in placed))

    texture = _smooth_noise(rng, shape, spacing, 2.5) * (45.0 * heterogeneity)
    parenchyma_texture = _smooth_noise(rng, shape, spacing, 4.0) * 6.0
    liver_mask = liver | tumour | satellites | portal | hepatic

    clean = {}
    for name in phases:
        hu = PHASE_HU[name]
        image = np.full(shape, _AIR_HU, np.float32)
        image[body] = _BODY_HU
        image[fat] = _FAT_HU
        image[liver] = hu["liver"] + parenchyma_texture[liver]
        image[portal] = hu["portal_vein"]
        image[hepatic] = hu["hepatic_vein"]
        image[aorta] = hu["aorta"]
        # Texture scales with enhancement over the native value, as contrast uptake varies.
        gain = max(abs(hu["lesion"] - PHASE_HU["native"]["lesion"]) / 95.0, 0.3)
        image[tumour] = hu["lesion"] + gain * texture[tumour]
        image[necrosis] = hu["necrosis"]
        image[satellites] = hu["lesion"]
        # Partial-volume blur of about half a millimetre.
        clean[name] = gaussian_filter(image, sigma=0.6 / spacing)

    reference = Volume(np.zeros(shape, np.int16), spacing_mm=tuple(spacing), modality="CT")
    motion, volumes = {}, {}
    lps_centre = (liver_centre[::-1]).copy()
    for name in phases:
        image = reference.with_array(clean[name], modality="CT")
        if name != reference_phase and (motion_mm > 0 or rotation_deg != 0):
            matrix = _rigid(rng, motion_mm, rotation_deg, lps_centre)
            motion[name] = matrix
            image = _move(image, matrix)
        noisy = image.array + rng.normal(0.0, noise_hu, size=shape) if noise_hu > 0 else image.array
        volumes[name] = image.with_array(np.clip(np.round(noisy), -1024, 3071).astype(np.int16), modality="CT")
    return Phantom(phases=volumes, reference_phase=reference_phase, liver_mask=liver_mask, tumour_mask=tumour,
                   vessel_mask=vessels, satellite_mask=satellites, lesions=tuple(lesions), mvi=bool(mvi),
                   heterogeneity=float(heterogeneity), motion=motion, seed=int(seed))


def _move(volume: Volume, matrix: np.ndarray) -> Volume:
    """Move the anatomy by ``matrix`` (LPS): the value at ``p`` goes to ``matrix @ p``."""
    import SimpleITK as sitk

    from wsi_hcc.radiology.resample import resample_like

    inverse = np.linalg.inv(matrix)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(inverse[:3, :3].ravel()))
    transform.SetTranslation(tuple(inverse[:3, 3]))
    # Resample pulls values: output point q takes the input at inverse(q).
    return resample_like(volume, volume, transform=transform, default_value=_AIR_HU)


def write_phantom(phantom: Phantom, out_dir: str | Path) -> Path:
    """Write ``<phase>.nii.gz`` per phase, ``labels.nii.gz`` and ``truth.json`` into ``out_dir`` (atomically)."""
    from wsi_hcc.radiology.volume import save_nifti
    from wsi_hcc.utils.atomic import atomic_write_json, fresh_partial_dir, publish_dir
    from wsi_hcc.utils.runs import provenance

    out_dir = Path(out_dir)
    tmp = fresh_partial_dir(out_dir)
    for name, volume in phantom.phases.items():
        save_nifti(volume, tmp / f"{name}.nii.gz")
    save_nifti(phantom.labels, tmp / "labels.nii.gz")
    atomic_write_json(tmp / "truth.json",
                      {"truth": phantom.truth(), **provenance()})
    publish_dir(tmp, out_dir)
    return out_dir
