"""``wsi-hcc radiology ...``: phantom, ring and features (segment/train/predict/explain join this group later).

Other modules add their commands with ``radiology.add_command(cmd)``. Heavy imports happen inside
the commands so ``--help`` stays instant; library errors are one line (``error: ...``, exit 2).
"""

from __future__ import annotations

from pathlib import Path

import click

from wsi_hcc.cli.errors import OneLineCommand, OneLineErrors

__all__ = ["COMMANDS", "radiology"]


@click.group("radiology", cls=OneLineErrors, epilog="""\b
Examples:
  wsi-hcc radiology phantom --out ph --mvi
  wsi-hcc radiology train --task mvi --arch multiphase --phantoms 56 --out runs/mvi
  wsi-hcc radiology segment train --out runs/seg""")
def radiology():
    """CT/MRI: phantoms, peritumoral rings in mm, region features, liver/tumour segmentation, and MVI
    and grade models with class-activation maps."""


def _mask(path: str, label: int | None):
    """A bool mask from a label file (``label`` selects one value; default: any non-zero)."""
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology import load_volume

    volume = load_volume(path)
    mask = volume.with_array(volume.array == label if label is not None else volume.array != 0)
    if not mask.array.any():
        raise WsiHccError(f"{path}: the mask is empty{f' for label {label}' if label is not None else ''}; "
                          "check --*-label")
    return mask


def provenance(**inputs) -> dict:
    from wsi_hcc.utils.runs import provenance

    return provenance(inputs=inputs)


def prepare_out(out_dir: str) -> Path:
    from wsi_hcc.utils.atomic import fresh_partial_dir

    return fresh_partial_dir(Path(out_dir))


@radiology.command("phantom", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology phantom --out demo/phantom
  wsi-hcc radiology phantom --out demo/mvi --mvi --heterogeneity 0.8 --motion-mm 3 --seed 2

\b
Writes <phase>.nii.gz (int16 HU), labels.nii.gz (1 liver, 2 tumour, 3 vessel, 4 satellite, on
the reference phase) and truth.json (lesions, MVI flag, heterogeneity, per-phase motion).""")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--shape", nargs=3, type=int, default=(40, 112, 112), show_default=True, help="Grid z y x.")
@click.option("--spacing-mm", nargs=3, type=float, default=(2.5, 1.5, 1.5), show_default=True, help="Voxel z y x.")
@click.option("--lesions", type=click.IntRange(0, 10), default=1, show_default=True, help="Number of lesions.")
@click.option("--mvi/--no-mvi", default=False, show_default=True, help="Satellite nodules in the 0-6 mm ring.")
@click.option("--heterogeneity", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Grade-like lesion texture (0 homogeneous, 1 necrotic and heterogeneous).")
@click.option("--motion-mm", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Rigid shift of each non-reference phase.")
@click.option("--noise-hu", type=click.FloatRange(min=0), default=8.0, show_default=True, help="Gaussian noise SD.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def phantom(out_dir, shape, spacing_mm, lesions, mvi, heterogeneity, motion_mm, noise_hu, seed):
    """Write a multi-phase liver CT phantom (arterial enhancement, portal/delayed washout) with ground truth."""
    from wsi_hcc.radiology import make_phantom, write_phantom

    ph = make_phantom(shape=shape, spacing_mm=spacing_mm, n_lesions=lesions, mvi=mvi, heterogeneity=heterogeneity,
                      motion_mm=motion_mm, noise_hu=noise_hu, seed=seed)
    write_phantom(ph, out_dir)
    click.echo(f"{len(ph.phases)} phases, {len(ph.lesions)} lesion(s), tumour {ph.tumour_mask.sum()} voxels, "
               f"MVI {'yes' if ph.mvi else 'no'} -> {out_dir}")


@radiology.command("ring", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology ring --tumour demo/phantom/labels.nii.gz --tumour-label 2 \\
      --liver demo/phantom/labels.nii.gz --liver-label 1 --liver-label 2 --out runs/ring
  wsi-hcc radiology ring --tumour lesion.nii.gz --sweep 2,4,6,8,10 --out runs/ring_sweep

\b
Distances are in mm from the voxel spacing (anisotropic-aware). Writes ring_<w>mm.nii.gz per
width and ring.json (volumes in ml, inputs, versions).""")
@click.option("--tumour", "tumour_path", required=True, help="Tumour mask or label map (NIfTI, DICOM SEG...).")
@click.option("--tumour-label", type=int, help="Label value of the tumour (default: any non-zero).")
@click.option("--liver", "liver_path", help="Liver mask to clip the ring to (resampled onto the tumour grid).")
@click.option("--liver-label", "liver_labels", type=int, multiple=True,
              help="Liver label value(s) (repeat; default any non-zero). Include the tumour's label if the map "
                   "labels tumour separately.")
@click.option("--outer-mm", type=click.FloatRange(min=0, min_open=True), default=6.0, show_default=True)
@click.option("--inner-mm", type=float, default=0.0, show_default=True, help="Negative: a margin inside the tumour.")
@click.option("--sweep", help="Comma-separated outer widths in mm (replaces --outer-mm), e.g. 2,4,6,8,10.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def ring(tumour_path, tumour_label, liver_path, liver_labels, outer_mm, inner_mm, sweep, out_dir):
    """Peritumoral ring(s) around a tumour mask, optionally clipped to the liver."""
    import numpy as np

    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology import load_volume, ring_sweep, save_nifti
    from wsi_hcc.utils.atomic import atomic_write_json, publish_dir

    tumour = _mask(tumour_path, tumour_label)
    liver = None
    if liver_path:
        volume = load_volume(liver_path)
        values = np.isin(volume.array, liver_labels) if liver_labels else volume.array != 0
        liver = _as_grid(volume.with_array(values), tumour).array
    try:
        widths = [float(w) for w in sweep.split(",")] if sweep else [outer_mm]
    except ValueError as exc:
        raise WsiHccError(f"--sweep {sweep!r}: give comma-separated numbers in mm, e.g. 2,4,6") from exc
    rings = ring_sweep(tumour.array, tumour.spacing_mm, widths, within=liver, inner_mm=inner_mm)
    tmp = prepare_out(out_dir)
    summary = {}
    for width, mask in rings.items():
        name = f"ring_{width:g}mm.nii.gz"
        save_nifti(tumour.with_array(mask.astype(np.uint8), modality="SEG"), tmp / name)
        summary[f"{width:g}"] = {"file": name, "volume_ml": round(float(mask.sum()) * tumour.voxel_volume_ml, 4),
                                 "voxels": int(mask.sum())}
    atomic_write_json(tmp / "ring.json", {"rings": summary, "inner_mm": inner_mm, "clipped_to_liver": liver is not None,
                                          "spacing_mm": list(tumour.spacing_mm),
                                          "tumour_volume_ml": round(float(tumour.array.sum())
                                                                    * tumour.voxel_volume_ml, 4),
                                          **provenance(tumour=str(tumour_path), liver=liver_path)})
    publish_dir(tmp, Path(out_dir))
    click.echo("; ".join(f"{w} mm ring {v['volume_ml']:.2f} ml" for w, v in summary.items()) + f" -> {out_dir}")


def _as_grid(volume, reference):
    from wsi_hcc.radiology import resample_like

    return volume if volume.same_grid(reference) else resample_like(volume, reference, label=True)


@radiology.command("features", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology features --image arterial=demo/phantom/arterial.nii.gz \\
      --image portal=demo/phantom/portal.nii.gz --tumour demo/phantom/labels.nii.gz --tumour-label 2 \\
      --liver demo/phantom/labels.nii.gz --out runs/features
  wsi-hcc radiology features --image ct=scan_dicom/ --tumour lesion.nii.gz --register-to ct --out runs/f

\b
Per region (tumour, ring, liver) and phase: first-order statistics and GLCM texture (scikit-image);
with two or more phases, tumour habitats by k-means across phases. Writes features.json,
features.csv (one row per region and phase) and habitats.nii.gz.""")
@click.option("--image", "images", multiple=True, required=True,
              help="PHASE=PATH (NIfTI file or DICOM folder); repeat per phase. The first is the reference grid.")
@click.option("--tumour", "tumour_path", required=True, help="Tumour mask or label map on any grid.")
@click.option("--tumour-label", type=int, help="Tumour label value (default: any non-zero).")
@click.option("--liver", "liver_path", help="Liver mask or label map, resampled onto the reference grid.")
@click.option("--liver-label", "liver_labels", type=int, multiple=True,
              help="Liver label value(s) (repeat; default any non-zero).")
@click.option("--ring-mm", type=click.FloatRange(min=0), default=6.0, show_default=True, help="0: no ring region.")
@click.option("--register-to", "register_to", help="Register the other phases rigidly to this phase first.")
@click.option("--habitats", "n_habitats", type=click.IntRange(0, 8), default=3, show_default=True,
              help="Tumour habitats (0: none; needs two or more phases).")
@click.option("--bin-width", type=click.FloatRange(min=0, min_open=True), default=25.0, show_default=True,
              help="Grey-level bin width for histograms and GLCM (HU for CT).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def features(images, tumour_path, tumour_label, liver_path, liver_labels, ring_mm, register_to, n_habitats, bin_width,
             out_dir):
    """First-order and texture features of tumour, peritumoral ring and liver, per phase; habitats."""

    import numpy as np

    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology import (
        habitats,
        load_volume,
        peritumoral_ring,
        region_features,
        register_phases,
        require_tumour_inside,
        resample_like,
        save_nifti,
    )
    from wsi_hcc.utils.atomic import atomic_write_csv, atomic_write_json, publish_dir

    phases = {}
    for item in images:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise WsiHccError(f"--image {item!r}: write PHASE=PATH, e.g. --image arterial=arterial.nii.gz")
        phases[name] = load_volume(path)
    tumour_mask = _mask(tumour_path, tumour_label)
    require_tumour_inside(phases, tumour_mask, tumour_path)
    reference_name = register_to or next(iter(phases))
    if reference_name not in phases:
        raise WsiHccError(f"--register-to {register_to!r}: not one of the phases {sorted(phases)}")
    reference = phases[reference_name]
    registration = {}
    if register_to and len(phases) > 1:
        for name, reg in register_phases(phases, reference_name).items():
            phases[name] = reg.resampled
            registration[name] = reg.summary()
    arrays = {name: (v.array if v.same_grid(reference) else resample_like(v, reference).array)
              for name, v in phases.items()}
    tumour = np.asarray(_as_grid(tumour_mask, reference).array, bool)
    regions = {"tumour": tumour}
    liver = None
    if liver_path:
        volume = load_volume(liver_path)
        values = np.isin(volume.array, liver_labels) if liver_labels else volume.array != 0
        liver = _as_grid(volume.with_array(values), reference).array
    if ring_mm > 0:
        regions[f"ring_{ring_mm:g}mm"] = peritumoral_ring(tumour, reference.spacing_mm, ring_mm, within=liver)
    if liver is not None:
        regions["liver"] = liver
    table = region_features(arrays, regions, reference.spacing_mm, bin_width=bin_width)
    for region in (r for r, mask in regions.items() if not mask.any()):
        # An empty region's statistics are NaN: say so rather than leave NaN columns to be found later.
        where = (f"no voxels of {liver_path} within {ring_mm:g} mm of the tumour" if region != "liver" and liver_path
                 else f"no voxels in {liver_path}" if region == "liver" else "no voxels around the tumour")
        click.echo(f"warning: {tumour_path}: the {region} region is 0 ml ({where}); its features are NaN; check "
                   "--liver and --liver-label", err=True)
    tmp = prepare_out(out_dir)
    habitat_summary = None
    if n_habitats and len(arrays) > 1:
        labels, habitat_summary = habitats(arrays, tumour, n_habitats=n_habitats)
        save_nifti(reference.with_array(labels, modality="SEG"), tmp / "habitats.nii.gz")
    rows = []
    for region, entry in table.items():
        for phase in arrays:
            row = {"region": region, "phase": phase, "volume_ml": entry["volume_ml"]}
            row.update({f"fo_{k}": v for k, v in entry[phase]["first_order"].items()})
            row.update({f"glcm_{k}": v for k, v in entry[phase]["glcm"].items()})
            rows.append(row)
    atomic_write_csv(tmp / "features.csv", list(rows[0]), rows, lineterminator="\r\n")
    atomic_write_json(tmp / "features.json", {
        "regions": table, "habitats": habitat_summary, "registration": registration, "reference_phase": reference_name,
        "spacing_mm": list(reference.spacing_mm), "bin_width": bin_width,
        **provenance(images=list(images), tumour=str(tumour_path), liver=liver_path)})
    publish_dir(tmp, Path(out_dir))
    ring_note = f", ring {table[f'ring_{ring_mm:g}mm']['volume_ml']:.2f} ml" if ring_mm > 0 else ""
    click.echo(f"{len(regions)} regions x {len(arrays)} phases, tumour {table['tumour']['volume_ml']:.2f} ml{ring_note}"
               f"{f', {n_habitats} habitats' if habitat_summary else ''} -> {out_dir}")


COMMANDS = [radiology]
