"""Semi-automatic lesion segmentation (Said 2023): a point or box prompts a mask; edits are re-measured.

A prompt is a voxel ``(z, y, x)`` inside the lesion and/or a box ``((z0, y0, x0), (z1, y1, x1))``
(end exclusive) on the reference phase's grid. A crop around it is segmented by the tumour model
when one is given (the connected component at the prompt is kept), otherwise by region growing
from the prompt (SimpleITK ``ConfidenceConnected`` on a lightly smoothed phase, arterial by default,
where HCC enhances). The mask comes back on the full grid; a user-edited mask goes through
:func:`remeasure` again. A grown region that reaches every face of its crop has leaked into the
tissue around the lesion: ``info["filled_crop"]`` says so.

Diameters are between voxel centres, so a lesion of true diameter ``d`` measures about
``d - spacing``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.volume import Volume

__all__ = ["Measurement", "PromptResult", "remeasure", "edit_mask", "prompt_segment", "crop_volume"]

Box = tuple[tuple[int, int, int], tuple[int, int, int]]


@dataclass(frozen=True)
class Measurement:
    """Size of a mask: voxels, volume (mL), largest 3D and axial (in-slice) diameters (mm)."""

    voxels: int
    volume_ml: float
    max_diameter_mm: float
    max_axial_diameter_mm: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class PromptResult:
    """The lesion mask on the full grid, how it was made, the crop used, and its measurement."""

    mask: Volume
    method: str
    crop: tuple[tuple[int, int], ...]
    measurement: Measurement
    info: dict = field(default_factory=dict)


def _max_distance(points: np.ndarray) -> float:
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    if len(points) < 2:
        return 0.0
    if len(points) > 64:
        try:
            # The farthest pair lies on the convex hull; flat or tiny sets have no 3D hull.
            points = points[ConvexHull(points).vertices]
        except QhullError:
            pass
    return float(pdist(points).max())


def remeasure(mask: np.ndarray, spacing_mm: Sequence[float]) -> Measurement:
    """Volume and diameters of ``mask`` (``(z, y, x)``, any non-zero is inside) with voxel ``spacing_mm``."""
    from scipy.ndimage import binary_erosion

    mask = np.asarray(mask) != 0
    spacing = np.asarray(spacing_mm, float)
    voxels = int(mask.sum())
    if voxels == 0:
        return Measurement(0, 0.0, 0.0, 0.0)
    surface = mask & ~binary_erosion(mask)
    points = np.argwhere(surface) * spacing
    axial = 0.0
    for z in np.unique(points[:, 0]):
        axial = max(axial, _max_distance(points[points[:, 0] == z][:, 1:]))
    return Measurement(voxels, voxels * float(np.prod(spacing)) / 1000.0, _max_distance(points), axial)


def edit_mask(mask: np.ndarray, add: np.ndarray | None = None, remove: np.ndarray | None = None) -> np.ndarray:
    """A corrected mask: ``mask | add`` then ``& ~remove`` (all bool, same shape)."""
    out = np.asarray(mask) != 0
    if add is not None:
        out = out | (np.asarray(add) != 0)
    if remove is not None:
        out = out & ~(np.asarray(remove) != 0)
    return out


def crop_volume(volume: Volume, box: Sequence[slice]) -> Volume:
    """The sub-volume ``volume.array[box]`` with its origin moved so it stays in place."""
    from dataclasses import replace

    start = np.array([s.start for s in box], float)
    origin = np.asarray(volume.origin_mm) + volume.direction @ (start * np.asarray(volume.spacing_mm))
    return replace(volume, array=volume.array[tuple(box)], origin_mm=tuple(origin))


def _check_prompt(shape, point, box) -> tuple[np.ndarray, Box | None]:
    if point is None and box is None:
        raise WsiHccError("give a point (z y x) inside the lesion or a box around it")
    if box is not None:
        lo, hi = np.asarray(box[0], int), np.asarray(box[1], int)
        if np.any(lo < 0) or np.any(hi > shape) or np.any(hi <= lo):
            raise WsiHccError(f"box {lo.tolist()}-{hi.tolist()} is empty or outside the volume {list(shape)}; "
                              f"give z0 y0 x0 z1 y1 x1 with 0 <= start < end <= shape")
        box = (tuple(int(v) for v in lo), tuple(int(v) for v in hi))
    if point is None:
        point = (np.asarray(box[0]) + np.asarray(box[1])) // 2
    point = np.asarray(point, int)
    if point.shape != (3,) or np.any(point < 0) or np.any(point >= shape):
        raise WsiHccError(f"point {point.tolist()} is outside the volume {list(shape)}; give z y x voxel indices")
    return point, box


def _crop_box(shape, spacing, point, box, crop_mm: float, margin_mm: float = 10.0) -> tuple[slice, slice, slice]:
    if box is not None:
        margin = np.ceil(margin_mm / spacing).astype(int)
        lo, hi = np.asarray(box[0]) - margin, np.asarray(box[1]) + margin
    else:
        half = np.ceil(crop_mm / 2 / spacing).astype(int)
        lo, hi = point - half, point + half + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _component_at(mask: np.ndarray, point: np.ndarray) -> np.ndarray:
    """The 26-connected component of ``mask`` containing ``point``, else the one nearest to it."""
    from scipy.ndimage import label

    components, count = label(mask, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return mask
    at = components[tuple(point)]
    if at == 0:
        where = np.argwhere(mask)
        at = components[tuple(where[np.argmin(((where - point) ** 2).sum(1))])]
    return components == at


def _spans_box(mask: np.ndarray) -> bool:
    """Whether ``mask`` touches all six faces of its array: grown from a lesion, it leaked into what surrounds it."""
    return all(np.take(mask, index, axis=axis).any() for axis in range(mask.ndim) for index in (0, -1))


def _region_grow(image: np.ndarray, spacing, point: np.ndarray, multiplier: float, iterations: int) -> np.ndarray:
    import SimpleITK as sitk
    from scipy.ndimage import binary_fill_holes, binary_opening, gaussian_filter

    smooth = gaussian_filter(np.asarray(image, np.float32), sigma=0.8)
    itk = sitk.GetImageFromArray(smooth)
    itk.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    seed = tuple(int(v) for v in reversed(point))
    grown = sitk.ConfidenceConnected(itk, seedList=[seed], numberOfIterations=iterations, multiplier=multiplier,
                                     initialNeighborhoodRadius=1, replaceValue=1)
    mask = sitk.GetArrayFromImage(grown).astype(bool)
    # An opening cuts thin bridges into neighbouring bright structures (vessels) before keeping the seed's part.
    opened = binary_opening(mask, structure=np.ones((3, 3, 3), bool))
    mask = opened if opened[tuple(point)] else mask
    return binary_fill_holes(_component_at(mask, point))


def prompt_segment(phases: Mapping[str, Volume], point: Sequence[int] | None = None, box: Box | None = None,
                   model=None, reference: str | None = None, phase: str | None = None, crop_mm: float = 80.0,
                   multiplier: float = 2.5, iterations: int = 3) -> PromptResult:
    """Segment the lesion at a prompt; see the module docstring.

    Parameters
    ----------
    phases
        Name -> Volume; the prompt is in voxels of ``reference`` (default: the model's first phase,
        else ``phase``, else the first given).
    point, box
        Voxel ``(z, y, x)`` inside the lesion; box ``((z0, y0, x0), (z1, y1, x1))``, end exclusive.
        The mask is kept inside the box when one is given.
    model
        A ``SegModel`` (tumour networks); ``None`` grows a region instead.
    phase
        The phase region growing works on (default ``arterial`` if given, else the reference).
    crop_mm
        Edge of the cube around a point-only prompt.
    """
    from wsi_hcc.radiology.resample import resample_like

    if not phases:
        raise WsiHccError("no phases given; pass at least one volume")
    if model is not None:
        reference = reference or model.config.phases[0]
    phase = phase or ("arterial" if "arterial" in phases else None)
    reference = reference or phase or next(iter(phases))
    if reference not in phases:
        raise WsiHccError(f"reference phase {reference!r} not among the given phases {sorted(phases)}")
    ref = phases[reference]
    point, box = _check_prompt(ref.shape, point, box)
    crop = _crop_box(np.asarray(ref.shape), np.asarray(ref.spacing_mm), point, box, crop_mm)
    ref_crop = crop_volume(ref, crop)
    local_point = point - np.array([s.start for s in crop])
    method, info = "region_growing", {}
    local = None
    if model is not None:
        local = _model_mask(model, phases, ref_crop, reference)
        local = _component_at(local, local_point) if local.any() else local
        if local.any():
            method = "model"
        else:
            info["fallback"] = "the model found no lesion at the prompt; grew a region instead"
    if method == "region_growing":
        phase = phase or reference
        if phase not in phases:
            raise WsiHccError(f"phase {phase!r} not among the given phases {sorted(phases)}")
        volume = phases[phase]
        volume_crop = (crop_volume(volume, crop) if volume.same_grid(ref)
                       else resample_like(volume, ref_crop))
        local = _region_grow(volume_crop.array, ref.spacing_mm, local_point, multiplier, iterations)
        info.update(phase=phase, multiplier=multiplier, iterations=iterations, filled_crop=_spans_box(local))
    if box is not None:
        inside = np.zeros(local.shape, bool)
        inside[tuple(slice(a - s.start, b - s.start) for a, b, s in zip(box[0], box[1], crop))] = True
        local &= inside
    mask = np.zeros(ref.shape, bool)
    mask[crop] = local
    return PromptResult(ref.with_array(mask, modality="SEG"), method, tuple((s.start, s.stop) for s in crop),
                        remeasure(mask, ref.spacing_mm), info)


def _model_mask(model, phases: Mapping[str, Volume], ref_crop: Volume, reference: str) -> np.ndarray:
    """Tumour mask of the crop from the model's tumour networks (probability > 0.5), on the crop grid."""
    from wsi_hcc.radiology.resample import resample_like
    from wsi_hcc.radiology.segment_data import prepare_phases, stack_phases
    from wsi_hcc.radiology.segment_infer import network_probabilities

    config = model.config
    cropped = {name: resample_like(phases[name], ref_crop) if name != reference else ref_crop
               for name in config.phases if name in phases}
    grid = prepare_phases(cropped, config.phases, config.spacing_mm, reference=reference)
    image = stack_phases(grid, config.phases, config.window)
    key = "main" if config.pipeline == "single" else "tumour"
    probs = network_probabilities([m[key] for m in model.members], image, config.patch_size)
    tumour = probs[-1] > 0.5
    work = grid[config.phases[0]]
    out = work.with_array(tumour.astype(np.uint8), modality="SEG")
    if not out.same_grid(ref_crop):
        out = resample_like(out, ref_crop, label=True)
    return out.array.astype(bool)
