"""``wsi-hcc radiology survival train | predict``: survival from the whole liver (or the tumour) in CT/MR.

Attach with ``radiology.add_command(survival)``. Heavy imports happen inside the commands so
``--help`` stays instant; library errors are one line (``error: ...``, exit 2).
"""

from __future__ import annotations

from pathlib import Path

import click

from wsi_hcc.cli.errors import OneLineCommand, OneLineErrors
from wsi_hcc.cli.options import phantoms_or_cases
from wsi_hcc.cli.radiology import prepare_out, provenance

__all__ = ["COMMANDS", "survival"]


@click.group("survival", cls=OneLineErrors, epilog="""\b
Examples:
  wsi-hcc radiology survival train --phantoms 45 --out runs/liver_os
  wsi-hcc radiology survival train --phantoms 45 --region tumour --out runs/tumour_os
  wsi-hcc radiology survival train --cases scans.csv --out runs/liver_os_real
  wsi-hcc radiology survival predict --model runs/liver_os/model --image portal=ct.nii.gz \\
      --liver seg.nii.gz --liver-label 5 --out runs/patient_risk""")
def survival():
    """Overall survival from the whole liver (after Huang 2024): a 3D encoder over the liver's bounding box,
    trained on the Cox partial likelihood and cross-validated by patient."""


@survival.command("train", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology survival train --phantoms 45 --out runs/liver_os
  wsi-hcc radiology survival train --cases scans.csv --folds 5 --epochs 200 --out runs/liver_os_real

\b
--phantoms N: phantom patients whose hazard depends only on a liver-wide parenchymal texture
(radiology.survival_phantoms); --region tumour trains the same encoder on the tumour alone.
--cases CSV: one row per scan, paths relative to the CSV; columns patient, time, event (1/0),
  image:PHASE (CT) or image:MR:PHASE (one per phase), liver (mask; tumour with --region tumour),
  liver_label (optional, ';'-separated values).
Writes OUT/metrics.json (per-fold and pooled held-out Harrell's C), OUT/risks.csv (held-out log
hazards) and OUT/model/ (weights.safetensors + card.json).""")
@click.option("--phantoms", type=click.IntRange(8, 2000), help="Phantom patients. Either --phantoms or --cases.")
@click.option("--cases", "cases_csv", type=click.Path(dir_okay=False), help="CSV of scans with outcomes.")
@click.option("--region", type=click.Choice(["liver", "tumour"]), default="liver", show_default=True,
              help="What the encoder reads: the whole liver, or the tumour alone (for comparison).")
@click.option("--folds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Cross-validation folds, grouped by patient (1: none).")
@click.option("--epochs", type=click.IntRange(min=1), default=120, show_default=True)
@click.option("--box-size", type=click.IntRange(8, 128), default=32, show_default=True,
              help="Voxels per side of the region's box.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
def train(phantoms, cases_csv, region, folds, epochs, box_size, seed, out_dir):
    """Train and cross-validate a region-survival model on phantoms or a CSV of scans."""
    import numpy as np

    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.pipelines.image_survival import ImageSurvivalConfig, run_image_survival

    phantoms_or_cases(phantoms, cases_csv, "scans.csv")
    with RichProgress() as progress:
        if phantoms is not None:
            from wsi_hcc.radiology.survival_phantoms import liver_survival_cohort

            patients = liver_survival_cohort(phantoms, seed=seed, size_vox=box_size, progress=progress)
            boxes = [getattr(p, region) for p in patients]
            time = np.asarray([p.time for p in patients])
            event = np.asarray([p.event for p in patients])
            ids, channels = [p.patient for p in patients], list(boxes[0].channels)
            cohort = {"source": "liver_survival_cohort", "patients": phantoms, "seed": seed}
        else:
            from wsi_hcc.radiology.survival_table import read_survival_table

            boxes, time, event, ids, channels = read_survival_table(cases_csv, region, box_size)
            cohort = {"source": str(cases_csv), "scans": len(boxes), "patients": len(set(ids))}
        config = ImageSurvivalConfig(region=region, channels=tuple(channels), size_vox=box_size, epochs=epochs,
                                     folds=folds, seed=seed)
        report = run_image_survival(boxes, time, event, ids, config, out_dir, cohort, progress)
    if "cross_validation" in report:
        cv = report["cross_validation"]
        line = (f"{folds}-fold CV by patient: C-index {cv['fold_mean_c_index']:.3f} per fold (Harrell), pooled "
                f"held-out {cv['pooled_c_index']:.3f}")
    else:
        line = f"apparent C-index {report['final_model_apparent_c_index']:.3f} (training patients)"
    click.echo(f"{region} survival, {report['patients']} patients, {report['events']} events: {line} -> {out_dir}")


@survival.command("predict", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology survival predict --model runs/liver_os/model --image portal=ct.nii.gz \\
      --liver seg.nii.gz --liver-label 5 --out runs/patient_risk
  wsi-hcc radiology survival predict --model runs/liver_os/model --image portal=ct.nii.gz \\
      --segment-model runs/seg/model --out runs/patient_risk

\b
Writes OUT/prediction.json: the log hazard (higher = earlier event; compare patients scored by the
same model) and the box the encoder read. The region comes from a mask (--liver) or from a
segmentation model (--segment-model: liver = liver + tumour labels; tumour for tumour models).""")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="model/ folder of 'radiology survival train'.")
@click.option("--image", "images", multiple=True, required=True, help="PHASE=PATH (CT) or MR:PHASE=PATH; repeat.")
@click.option("--liver", "mask_path", help="Mask of the model's region (liver; the tumour for a --region tumour "
              "model). Either --liver or --segment-model.")
@click.option("--liver-label", "labels", type=int, multiple=True, help="Label value(s) (default: any non-zero).")
@click.option("--segment-model", "segment_dir", type=click.Path(file_okay=False),
              help="Instead of --liver: segment the region with this model folder ('radiology segment train').")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def predict(model_dir, images, mask_path, labels, segment_dir, out_dir):
    """The log hazard of one scan with a trained region-survival model."""
    import numpy as np

    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.pipelines.image_survival import image_log_hazard, load_image_survival
    from wsi_hcc.radiology import load_volume
    from wsi_hcc.radiology.crops import channel_name, split_channel
    from wsi_hcc.radiology.organ_box import region_box
    from wsi_hcc.utils.atomic import atomic_write_json, publish_dir

    if not Path(model_dir).exists():
        raise WsiHccError(f"{model_dir}: no such model folder; give --model the folder 'wsi-hcc radiology survival "
                          "train' wrote (OUT/model)")
    model = load_image_survival(model_dir)
    volumes = {}
    for item in images:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise WsiHccError(f"--image {item!r}: write PHASE=PATH, e.g. --image portal=ct.nii.gz")
        modality, phase = split_channel(name)
        volumes[channel_name(modality, phase)] = load_volume(path, modality=modality)
    if (mask_path is None) == (segment_dir is None):
        raise WsiHccError("give either --liver MASK or --segment-model FOLDER, not "
                          f"{'both' if mask_path else 'neither'}")
    if segment_dir is not None:
        from wsi_hcc.radiology.segment_infer import segment_volume
        from wsi_hcc.radiology.weights import load_seg_model

        segmenter = load_seg_model(segment_dir)
        bare = {split_channel(name)[1]: volume for name, volume in volumes.items()}
        missing = [p for p in segmenter.config.phases if p not in bare]
        if missing:
            raise WsiHccError(f"the segmentation model reads phases {list(segmenter.config.phases)}; give --image for "
                              f"{', '.join(missing)}")
        mask = segment_volume(segmenter, bare).labels
        values = mask.array == 2 if model.card["region"] == "tumour" else mask.array > 0
        mask_path = f"segmented by {segment_dir}"
    else:
        mask = load_volume(mask_path)
        values = np.isin(mask.array, labels) if labels else mask.array != 0
    if not values.any():
        raise WsiHccError(f"{mask_path}: the {model.card['region']} mask is empty"
                          f"{' for those labels' if labels else ''}; check --liver-label or the segmentation")
    box = region_box(volumes, mask.with_array(values), model.card["size_vox"])
    risk = float(image_log_hazard(model, [box])[0])
    tmp = prepare_out(out_dir)
    atomic_write_json(tmp / "prediction.json", {
        "log_hazard": risk, "region": model.card["region"], "channels": model.card["channels"],
        "box_spacing_mm": list(box.grid.spacing_mm), "region_voxels": int(box.mask.sum()),
        "weights_sha256": model.card.get("weights_sha256"),
        **provenance(model=str(model_dir), images=list(images), mask=str(mask_path))})
    publish_dir(tmp, Path(out_dir))
    click.echo(f"{model.card['region']} log hazard {risk:.3f} -> {out_dir}")


COMMANDS = [survival]
