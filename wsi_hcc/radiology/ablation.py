"""Local progression after thermal ablation (after Chen 2023): features of the tumour, its margin and the ablation zone.

Inputs: the pre-ablation phases (tumour mask on them), the post-ablation phases, and the ablation
zone, from a mask or from a threshold on one post-ablation phase (:func:`zone_from_threshold`:
coagulation necrosis is hyperintense on unenhanced T1 and does not enhance, so it stands out from
the liver; the connected part touching the tumour is kept). Post phases are resampled onto the
pre-ablation reference grid in physical space: register them first when the patient moved.

Features (:func:`ablation_features`), one flat row per case:

- margin geometry: ``min_margin_mm`` (the smallest distance from the tumour surface to the zone's
  surface, negative when tumour is left outside the zone), ``margin_coverage`` (share of the
  ``margin_mm`` ring around the tumour inside the zone: 1 = a complete ablative margin),
  ``tumour_uncovered`` (share of the tumour outside the zone), tumour and zone volumes (ml);
- region features (``region_features``: first order and GLCM texture) of the tumour on the pre
  phases, the margin ring on pre and post phases and the zone on the post phases, and tumour
  habitats (k-means across the pre phases: each habitat's volume share).

The rows go into the survival module's Cox or DeepSurv models and its nomogram
(``wsi-hcc survival train --table features.csv``). :func:`ablation_phantom` and
:func:`ablation_cohort` make cases with a known answer: the ablation zone is an ellipsoid around the
tumour, grown by a random margin and shifted off-centre, so some margins are incomplete, and the
time to local progression has log hazard ``beta * (0.5 - margin_coverage)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.cohort import simulate_mri
from wsi_hcc.radiology.phantom import make_phantom
from wsi_hcc.radiology.region_features import habitats, region_features
from wsi_hcc.radiology.resample import resample_like
from wsi_hcc.radiology.ring import mask_volume_ml, peritumoral_ring, signed_distance_mm
from wsi_hcc.radiology.volume import Volume
from wsi_hcc.utils.progress import Progress, silent_progress

__all__ = ["zone_from_threshold", "margin_geometry", "ablation_features", "ablation_phantom", "ablation_cohort",
           "GEOMETRY_FEATURES"]

GEOMETRY_FEATURES = ("min_margin_mm", "margin_coverage", "tumour_uncovered", "tumour_ml", "zone_ml")
_REGION_STATS = ("mean", "sd", "p10", "p90", "skewness", "entropy")
_GLCM_STATS = ("contrast", "homogeneity", "entropy")


def zone_from_threshold(post: Volume, tumour: np.ndarray, threshold: float | None = None,
                        search_mm: float = 25.0, within: np.ndarray | None = None) -> np.ndarray:
    """The ablation zone on ``post``'s grid: voxels above ``threshold`` connected to the tumour.

    ``tumour`` is a bool mask on ``post``'s grid. ``threshold`` None: the upper of the two
    three-class Otsu thresholds (scikit-image ``threshold_multiotsu``) of the voxels within
    ``search_mm`` of the tumour: liver, tumour left enhancing and the zone are three classes, and
    a two-class Otsu threshold put residual tumour into the zone (Dice 0.03 on a phantom with an
    incomplete ablation, 0.87 with three classes) (and inside ``within``, the
    liver, when given: soft tissue and fat outside the liver can be as bright as the zone). The connected components
    (26-connectivity) above the threshold that overlap the tumour are kept; when none does, the
    one nearest the tumour's centre. A one-line error when nothing lies above the threshold.
    """
    from scipy.ndimage import label
    from skimage.filters import threshold_multiotsu

    values = np.asarray(post.array, np.float32)
    near = signed_distance_mm(tumour, post.spacing_mm, max_mm=search_mm) <= search_mm
    if within is not None:
        near &= within | tumour
    if threshold is None:
        threshold = float(threshold_multiotsu(values[near], classes=3)[-1])
    bright = (values > threshold) & near
    if not bright.any():
        raise WsiHccError(f"no voxel of the post-ablation phase lies above {threshold:g} near the tumour; give the "
                          "ablation zone as a mask (--ablation) or a lower --ablation-threshold")
    components, _ = label(bright, structure=np.ones((3, 3, 3)))
    touching = np.unique(components[tumour & bright])
    touching = touching[touching > 0]
    if touching.size == 0:
        centre = np.round(np.argwhere(tumour).mean(axis=0)).astype(int)
        hits = np.argwhere(components > 0)
        touching = [components[tuple(hits[np.argmin(np.linalg.norm(hits - centre, axis=1))])]]
    return np.isin(components, touching)


def margin_geometry(tumour: np.ndarray, zone: np.ndarray, spacing_mm: Sequence[float], margin_mm: float = 5.0) -> dict:
    """``min_margin_mm``, ``margin_coverage``, ``tumour_uncovered`` and the volumes (ml) of bool masks on one grid."""
    ring = peritumoral_ring(tumour, spacing_mm, margin_mm)
    return {"min_margin_mm": float(-signed_distance_mm(zone, spacing_mm)[tumour].max()),
            "margin_coverage": float((ring & zone).sum() / max(int(ring.sum()), 1)),
            "tumour_uncovered": float((tumour & ~zone).sum() / tumour.sum()),
            "tumour_ml": mask_volume_ml(tumour, spacing_mm), "zone_ml": mask_volume_ml(zone, spacing_mm)}


def _flat(prefix: str, entry: Mapping, phases: Sequence[str]) -> dict:
    out = {}
    for phase in phases:
        first, glcm = entry[phase]["first_order"], entry[phase].get("glcm", {})
        out.update({f"{prefix}_{phase}_{k}": first[k] for k in _REGION_STATS})
        out.update({f"{prefix}_{phase}_glcm_{k}": glcm[k] for k in _GLCM_STATS if k in glcm})
    return out


def ablation_features(pre: Mapping[str, Volume], post: Mapping[str, Volume], tumour: Volume,
                      zone: Volume | None = None, zone_phase: str | None = None, threshold: float | None = None,
                      margin_mm: float = 5.0, n_habitats: int = 3, bin_width: float = 0.25,
                      liver: Volume | None = None) -> tuple[dict, np.ndarray]:
    """One case's features (see the module docstring) and the ablation zone used (bool, on the reference grid).

    Parameters
    ----------
    pre, post
        Phase name -> volume, before and after ablation; the first pre phase is the reference grid.
    tumour
        Tumour mask (non-zero) on any grid.
    zone
        The ablation zone mask (non-zero); None: :func:`zone_from_threshold` on ``post[zone_phase]``
        (default the first post phase) with ``threshold``.
    margin_mm
        Width of the margin ring (an ablative margin of 5 mm is the usual aim).
    liver
        Optional liver mask (non-zero): bounds the thresholded zone.
    bin_width
        Grey-level bin width of the texture features, in the z-scored units the phases are put in
        (each phase is z-scored inside the reference image, so MR and CT compare between patients).
    """
    if not pre or not post:
        raise WsiHccError("give at least one pre-ablation and one post-ablation phase (--pre PHASE=PATH, "
                          "--post PHASE=PATH)")
    reference = next(iter(pre.values()))

    def on_reference(volume: Volume, label: bool = False) -> np.ndarray:
        return np.asarray((volume if volume.same_grid(reference) else
                           resample_like(volume, reference, label=label)).array)

    tumour_mask = on_reference(tumour.with_array(np.asarray(tumour.array) != 0), label=True).astype(bool)
    if not tumour_mask.any():
        raise WsiHccError("the tumour mask is empty on the pre-ablation grid; check the mask and its label")
    post_arrays = {f"post_{k}": on_reference(v).astype(np.float32) for k, v in post.items()}
    pre_arrays = {f"pre_{k}": on_reference(v).astype(np.float32) for k, v in pre.items()}
    if zone is not None:
        zone_mask = on_reference(zone.with_array(np.asarray(zone.array) != 0), label=True).astype(bool)
    else:
        name = zone_phase or next(iter(post))
        if name not in post:
            raise WsiHccError(f"--zone-phase {name!r} is not one of the post-ablation phases {sorted(post)}")
        within = None if liver is None else on_reference(liver.with_array(np.asarray(liver.array) != 0),
                                                          label=True).astype(bool)
        zone_mask = zone_from_threshold(reference.with_array(post_arrays[f"post_{name}"]), tumour_mask, threshold,
                                        within=within)
    if not zone_mask.any():
        raise WsiHccError("the ablation zone is empty; check the zone mask or the threshold")
    spacing = reference.spacing_mm
    ring = peritumoral_ring(tumour_mask, spacing, margin_mm)
    row = margin_geometry(tumour_mask, zone_mask, spacing, margin_mm)
    arrays = {name: (a - a.mean()) / (a.std() or 1.0) for name, a in {**pre_arrays, **post_arrays}.items()}
    table = region_features(arrays, {"tumour": tumour_mask, "margin": ring, "zone": zone_mask}, spacing,
                            bin_width=bin_width)
    row.update(_flat("tumour", table["tumour"], list(pre_arrays)))
    row.update(_flat("margin", table["margin"], list(arrays)))
    row.update(_flat("zone", table["zone"], list(post_arrays)))
    if n_habitats and tumour_mask.sum() >= n_habitats:
        labels, summary = habitats({k: arrays[k] for k in pre_arrays}, tumour_mask, n_habitats=n_habitats)
        row.update({f"tumour_habitat{h['habitat']}_fraction": h["fraction"] for h in summary})
    return row, zone_mask


def ablation_phantom(margin_mm: float, offset_mm: float, seed: int = 0, shape: Sequence[int] = (32, 72, 72),
                     spacing_mm: Sequence[float] = (2.5, 2.0, 2.0), noise: float = 0.04):
    """A pre/post-ablation MR pair (simulated from a phantom CT) with a known zone.

    Returns ``(pre, post, tumour, zone, liver)``: pre ``{"arterial", "portal"}`` and post ``{"t1"}`` MR
    volumes on one grid, the tumour, zone and liver masks. The zone is the tumour's ellipsoid grown by
    ``margin_mm`` and shifted ``offset_mm`` in a random direction; inside it the post image shows
    non-enhancing coagulation (tumour included), outside it the tumour still enhances.
    """
    rng = np.random.default_rng(seed)
    phantom = make_phantom(shape=shape, spacing_mm=spacing_mm, phases=("arterial", "portal"),
                           lesion_radius_mm=(6.0, 10.0), heterogeneity=float(rng.uniform(0, 0.5)), noise_hu=4.0,
                           seed=seed)
    grid = phantom.phases["portal"]
    lesion = phantom.lesions[0]
    centre = np.asarray(lesion.centre_mm)[::-1]
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    points = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing_mm)], indexing="ij"), axis=-1)
    radii = np.asarray(lesion.radii_mm) + margin_mm
    zone = np.sqrt((((points - centre - offset_mm * direction) / radii) ** 2).sum(-1)) <= 1.0
    zone &= phantom.liver_mask
    post_ct = np.asarray(grid.array, np.float32).copy()
    post_ct[zone] = 25.0 + rng.normal(0.0, 4.0, size=int(zone.sum()))
    pre = {p: simulate_mri(phantom.phases[p], seed=seed * 7 + i, noise=noise)
           for i, p in enumerate(("arterial", "portal"))}
    post = {"t1": simulate_mri(grid.with_array(post_ct), seed=seed * 7 + 5, noise=noise)}
    return pre, post, grid.with_array(phantom.tumour_mask), grid.with_array(zone), grid.with_array(phantom.liver_mask)


def ablation_cohort(n_cases: int, seed: int = 0, beta: float = 4.0, use_zone_mask: bool = False,
                    progress: Progress | None = None) -> list[dict]:
    """``n_cases`` phantom cases: feature rows with ``case``, ``time``, ``event`` (local progression) and ``truth_*``.

    Margins are uniform in [-2, 8] mm and offsets in [0, 5] mm, so most margins are under 5 mm and
    many leave tumour outside; log hazard ``beta * (0.5 - true margin coverage)``, exponential times, uniform
    follow-up censoring (21 of 48 censored with seed 1). The zone comes from the threshold on the post
    phase unless ``use_zone_mask``.
    """
    rng = np.random.default_rng(seed)
    progress = progress or silent_progress()
    progress.steps_planned(n_cases, name="ablation phantoms")
    rows = []
    for i in range(n_cases):
        case_seed = int(rng.integers(0, 2**31 - 1))
        margin, offset = float(rng.uniform(-2.0, 8.0)), float(rng.uniform(0.0, 5.0))
        pre, post, tumour, zone, liver = ablation_phantom(margin, offset, seed=case_seed)
        row, _ = ablation_features(pre, post, tumour, zone if use_zone_mask else None, liver=liver)
        truth = margin_geometry(tumour.array, zone.array, tumour.spacing_mm)
        rows.append({"case": f"ablation_{i:03d}", **row, "truth_margin_coverage": truth["margin_coverage"],
                     "truth_margin_mm": margin, "truth_offset_mm": offset})
        progress.steps_done(1)
    coverage = np.asarray([r["truth_margin_coverage"] for r in rows])
    event_time = rng.exponential(1.0, n_cases) / np.exp(beta * (0.5 - coverage))
    follow_up = rng.uniform(0.5, 2.5, n_cases) * float(np.median(event_time))
    for row, t, f in zip(rows, event_time, follow_up):
        row["time"], row["event"] = float(min(t, f)), int(t <= f)
    return rows
