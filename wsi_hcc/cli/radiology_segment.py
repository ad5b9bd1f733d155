"""``wsi-hcc radiology segment ...``: train, predict, prompt (semi-automatic) and measure.

Attach with ``radiology.add_command(segment)``. Heavy imports happen inside the commands so
``--help`` stays instant; library errors are one line (``error: ...``, exit 2).
"""

from __future__ import annotations

from pathlib import Path

import click

from wsi_hcc.cli.errors import OneLineCommand, OneLineErrors
from wsi_hcc.cli.options import renamed_option
from wsi_hcc.cli.radiology import prepare_out, provenance

__all__ = ["COMMANDS", "segment"]

_ARCHS = ["unet", "dynunet", "segresnet", "cross_phase", "convlstm"]


@click.group("segment", cls=OneLineErrors, epilog="""\b
Examples:
  wsi-hcc radiology segment train --out runs/seg --phantoms 12 --folds 5 --iterations 150
  wsi-hcc radiology segment predict --model runs/seg/model --image arterial=a.nii.gz \\
      --image portal=p.nii.gz --image delayed=d.nii.gz --out runs/pred
  wsi-hcc radiology segment prompt --image arterial=a.nii.gz --point 16 30 40 --out runs/lesion
  wsi-hcc radiology segment measure --mask runs/lesion/lesion_edited.nii.gz""")
def segment():
    """Liver and tumour segmentation on multi-phase CT/MR: train, predict, prompt, measure."""


def _phase_paths(images) -> dict[str, str]:
    from wsi_hcc.errors import WsiHccError

    paths = {}
    for item in images:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise WsiHccError(f"--image {item!r}: write PHASE=PATH, e.g. --image arterial=arterial.nii.gz")
        if name in paths:
            raise WsiHccError(f"--image {item!r}: phase {name!r} given twice")
        paths[name] = path
    return paths


def _phases(images) -> dict:
    from wsi_hcc.radiology import load_volume

    return {name: load_volume(path) for name, path in _phase_paths(images).items()}


def _require_phases(weights, images, *named) -> None:
    """Every phase the model needs, and every phase an option names, is among the --image phases: checked
    from the card before any volume or weight is loaded (loading takes tens of seconds)."""
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology.segment_models import SegConfig
    from wsi_hcc.radiology.weights import seg_model_phases

    given = list(_phase_paths(images))
    needed = seg_model_phases(weights) if weights else SegConfig().phases
    missing = [name for name in needed if name not in given]
    if missing:
        raise WsiHccError(f"missing phase(s) {missing}: the model needs {list(needed)}; give --image NAME=PATH for "
                          f"each (given: {', '.join(given)})")
    for option, name in named:
        if name is not None and name not in given:
            raise WsiHccError(f"{option} {name!r}: not one of the phases {sorted(given)}")


def _threads(threads):
    if threads:
        import torch

        torch.set_num_threads(threads)


def _model(weights):
    from wsi_hcc.radiology.segment_models import SegConfig, new_model
    from wsi_hcc.radiology.weights import load_seg_model

    if weights:
        return load_seg_model(weights)
    click.echo("no --model: randomly initialised model (shape checks only, not a segmentation)", err=True)
    return new_model(SegConfig())


@segment.command("train", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology segment train --out runs/seg
  wsi-hcc radiology segment train --out runs/seg5 --phantoms 15 --folds 5 --iterations 200 --threads 1
  wsi-hcc radiology segment train --out runs/two --pipeline two_stage --arch cross_phase --folds 1
  wsi-hcc radiology segment train --out runs/real --data cases/001 --data cases/002 --data cases/003 --folds 3

\b
Trains on phantoms (--phantoms) and/or case folders (--data: <phase>.nii.gz per phase and
labels.nii.gz with 1 liver, 2 tumour; phantom vessel/satellite labels 3/4 count as liver/tumour).
Each fold's model is scored on its held-out cases; the ensemble of all folds is saved in OUT/model
(weights.safetensors + card.json, loads with --model). OUT/metrics.json has the per-fold metrics.""")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--phantoms", type=click.IntRange(min=0), default=12, show_default=True,
              help="Number of generated training phantoms.")
@click.option("--data", "data_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Case folder (repeat): <phase>.nii.gz per phase and labels.nii.gz.")
@click.option("--folds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Cross-validation folds = ensemble members (1: one model on all cases).")
@click.option("--iterations", type=click.IntRange(min=1), default=150, show_default=True,
              help="Training iterations per fold (and per stage).")
@click.option("--arch", "model", type=click.Choice(_ARCHS), default="unet", show_default=True,
              help="Network (the tumour stage's, for two_stage).")
@renamed_option("--model", "--arch", "model", type=click.Choice(_ARCHS))
@click.option("--pipeline", type=click.Choice(["single", "two_stage"]), default="single", show_default=True,
              help="single: one network for liver + tumour; two_stage: liver ROI, then tumour.")
@click.option("--phase", "phase_names", multiple=True, help="Phase names in channel order (repeat; default "
              "arterial, portal, delayed).")
@click.option("--spacing-mm", nargs=3, type=float, default=(3.0, 2.5, 2.5), show_default=True,
              help="Working voxel size z y x (cases are resampled to it).")
@click.option("--patch", nargs=3, type=int, default=(32, 48, 48), show_default=True, help="Patch z y x (voxels).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="Torch CPU threads (1 is fastest on a busy machine).")
def train(out_dir, phantoms, data_dirs, folds, iterations, model, pipeline, phase_names, spacing_mm, patch, lr, seed,
          threads):
    """Train a multi-phase liver/tumour segmentation ensemble (phases as channels, K folds)."""
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology.seg_metrics import summarise_cases
    from wsi_hcc.radiology.segment_data import folder_case, phantom_cases
    from wsi_hcc.radiology.segment_models import SegConfig
    from wsi_hcc.radiology.segment_train import train_model
    from wsi_hcc.radiology.weights import save_seg_model
    from wsi_hcc.utils.atomic import atomic_write_json, publish_dir

    _threads(threads)
    phases = tuple(phase_names) or ("arterial", "portal", "delayed")
    try:
        config = SegConfig(model=model, pipeline=pipeline, phases=phases, spacing_mm=spacing_mm, patch_size=patch,
                           iterations=iterations, lr=lr, folds=folds, seed=seed)
    except ValueError as exc:
        raise WsiHccError(f"{exc}; change --patch or --model") from None
    if len(data_dirs) + phantoms < max(2, folds):
        raise WsiHccError(f"{len(data_dirs) + phantoms} case(s) for {folds} fold(s); add --phantoms or --data, or "
                          f"lower --folds")
    cases = [folder_case(d, phases, spacing_mm, config.window) for d in data_dirs]
    if phantoms:
        click.echo(f"generating {phantoms} phantoms at {spacing_mm} mm")
        cases += phantom_cases(phantoms, seed=seed, phases=phases, spacing_mm=spacing_mm)
    from wsi_hcc.cli.progress import RichProgress

    with RichProgress() as progress:
        trained = train_model(cases, config, progress=progress)
    tmp = prepare_out(out_dir)
    save_seg_model(trained, tmp / "model")
    held = [{k: v for k, v in row.items() if k != "case"}
            for f in trained.info["folds"] for row in f.get("held_out", [])]
    summary = summarise_cases(held) if held else None
    atomic_write_json(tmp / "metrics.json", {"config": config.to_json(), "folds": trained.info["folds"],
                                             "held_out_summary": summary,
                                             "training_seconds": trained.info["training_seconds"],
                                             **provenance(phantoms=phantoms, data=list(data_dirs))})
    publish_dir(tmp, Path(out_dir))
    line = f"{len(trained.members)} model(s) trained in {trained.info['training_seconds']:.0f} s"
    if summary:
        tumour = summary["tumour"]
        line += (f"; held-out tumour Dice {tumour['dice_per_case_mean']:.3f} per case, {tumour['dice_global']:.3f} "
                 f"global, HD95 {tumour['hd95_mm_median']:.1f} mm (median); liver Dice "
                 f"{summary['liver']['dice_per_case_mean']:.3f}")
    click.echo(f"{line} -> {Path(out_dir) / 'model'}")


@segment.command("predict", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology segment predict --model runs/seg/model --image arterial=ph/arterial.nii.gz \\
      --image portal=ph/portal.nii.gz --image delayed=ph/delayed.nii.gz --out runs/pred
  wsi-hcc radiology segment predict --model runs/seg/model/weights.safetensors --image arterial=a/ \\
      --image portal=p/ --image delayed=d/ --truth labels.nii.gz --out runs/pred

\b
Writes labels.nii.gz (0 background, 1 liver, 2 tumour; after keeping the largest liver component
and tumour inside it), labels_raw.nii.gz (before clean-up), both on the first phase's grid, and
segment.json (volumes, provenance); with --truth also metrics.json (Dice, HD95 mm, volume
similarity for liver and tumour).""")
@click.option("--model", "weights", type=click.Path(exists=True), help="Model folder or its weights.safetensors "
              "(random initialisation without; shape checks only).")
@renamed_option("--weights", "--model", "weights", type=click.Path(exists=True))
@click.option("--image", "images", multiple=True, required=True,
              help="PHASE=PATH (NIfTI file or DICOM folder); repeat for every phase the model uses.")
@click.option("--reference", help="Phase whose grid the labels are written on (default: the model's first).")
@click.option("--register-to", "register_to", help="Register the other phases rigidly to this phase first "
              "(mutual information), as in Luo 2024's pipeline.")
@click.option("--truth", "truth_path", type=click.Path(exists=True, dir_okay=False),
              help="Label map (1 liver, 2 tumour; 3/4 count as liver/tumour) to score against.")
@click.option("--min-tumour-mm3", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Tumour components smaller than this become liver.")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.25, show_default=True,
              help="Sliding-window overlap.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--threads", type=click.IntRange(min=1), help="Torch CPU threads.")
def predict(weights, images, reference, register_to, truth_path, min_tumour_mm3, overlap, out_dir, threads):
    """Segment liver and tumour in a multi-phase study (sliding windows, fold ensemble, clean-up)."""
    import time

    from wsi_hcc.radiology import load_volume, register_phases, resample_like, save_nifti
    from wsi_hcc.radiology.seg_metrics import case_metrics
    from wsi_hcc.radiology.segment_data import three_classes
    from wsi_hcc.radiology.segment_infer import segment_volume
    from wsi_hcc.utils.atomic import atomic_write_json, publish_dir

    _threads(threads)
    _require_phases(weights, images, ("--reference", reference), ("--register-to", register_to))
    phases = _phases(images)
    model = _model(weights)
    start = time.perf_counter()
    registration = {}
    if register_to:
        for name, reg in register_phases(phases, register_to).items():
            phases[name] = reg.resampled
            registration[name] = reg.summary()
    result = segment_volume(model, phases, reference=reference, overlap=overlap, min_tumour_mm3=min_tumour_mm3)
    seconds = time.perf_counter() - start
    tmp = prepare_out(out_dir)
    save_nifti(result.labels, tmp / "labels.nii.gz")
    save_nifti(result.raw_labels, tmp / "labels_raw.nii.gz")
    line = f"liver {result.info['liver_ml']:.1f} ml, tumour {result.info['tumour_ml']:.2f} ml in {seconds:.1f} s"
    if truth_path:
        truth = load_volume(truth_path)
        if not truth.same_grid(result.labels):
            truth = resample_like(truth, result.labels, label=True)
        metrics = case_metrics(result.labels.array, three_classes(truth.array), result.labels.spacing_mm)
        atomic_write_json(tmp / "metrics.json", {"metrics": metrics, **provenance(truth=str(truth_path))})
        line += (f"; tumour Dice {metrics['tumour']['dice']:.3f}, HD95 {metrics['tumour']['hd95_mm']:.1f} mm, "
                 f"liver Dice {metrics['liver']['dice']:.3f}")
    atomic_write_json(tmp / "segment.json", {"result": result.info, "seconds": round(seconds, 3),
                                             "registration": registration,
                                             "config": model.config.to_json(), "random_weights": not weights,
                                             **provenance(images=list(images), weights=weights)})
    publish_dir(tmp, Path(out_dir))
    click.echo(f"{line} -> {out_dir}")


@segment.command("prompt", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology segment prompt --image arterial=ph/arterial.nii.gz --point 16 30 40 --out runs/lesion
  wsi-hcc radiology segment prompt --model runs/seg/model --image arterial=a.nii.gz --image portal=p.nii.gz \\
      --image delayed=d.nii.gz --box 10 20 30 22 40 50 --out runs/lesion

\b
Semi-automatic mode (Said 2023): a voxel (z y x, on the first phase's grid) inside the lesion or a
box around it. With --model the tumour model segments a crop around the prompt; without, a
region grows from the point on the arterial phase. Writes lesion.nii.gz and measurement.json
(volume ml, largest 3D and axial diameters mm). Edit lesion.nii.gz in any viewer and run
'segment measure' on the edited file.""")
@click.option("--image", "images", multiple=True, required=True, help="PHASE=PATH; repeat per phase.")
@click.option("--point", nargs=3, type=int, help="Voxel z y x inside the lesion.")
@click.option("--box", nargs=6, type=int, help="z0 y0 x0 z1 y1 x1 (end exclusive) around the lesion.")
@click.option("--model", "weights", type=click.Path(exists=True), help="Segmentation model folder (else region "
              "growing).")
@renamed_option("--weights", "--model", "weights", type=click.Path(exists=True))
@click.option("--phase", help="Phase for region growing (default arterial).")
@click.option("--crop-mm", type=click.FloatRange(min=10), default=80.0, show_default=True,
              help="Crop edge around a point prompt.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def prompt(images, point, box, weights, phase, crop_mm, out_dir):
    """Segment one lesion from a point or box prompt, and measure it."""
    from wsi_hcc.radiology import save_nifti
    from wsi_hcc.radiology.semi_auto import prompt_segment
    from wsi_hcc.radiology.weights import load_seg_model
    from wsi_hcc.utils.atomic import atomic_write_json, publish_dir

    phases = _phases(images)
    model = load_seg_model(weights) if weights else None
    reference = None if model else next(iter(phases))
    result = prompt_segment(phases, point=point or None, box=(box[:3], box[3:]) if box else None, model=model,
                            reference=reference, phase=phase, crop_mm=crop_mm)
    if result.info.get("filled_crop"):
        click.echo(f"warning: region growing from the {'box' if box else 'point'} filled the whole crop: it leaked "
                   f"past the lesion on the {result.info['phase']} phase; give a tighter --box, another --phase "
                   "or a --model, or edit lesion.nii.gz", err=True)
    tmp = prepare_out(out_dir)
    save_nifti(result.mask.with_array(result.mask.array.astype("uint8")), tmp / "lesion.nii.gz")
    m = result.measurement
    atomic_write_json(tmp / "measurement.json", {"measurement": m.to_json(), "method": result.method,
                                                 "crop": [list(c) for c in result.crop], "info": result.info,
                                                 **provenance(images=list(images), point=point, box=box,
                                                               weights=weights)})
    publish_dir(tmp, Path(out_dir))
    click.echo(f"{result.method}: {m.volume_ml:.2f} ml, max diameter {m.max_diameter_mm:.1f} mm "
               f"(axial {m.max_axial_diameter_mm:.1f} mm) -> {out_dir}")


@segment.command("measure", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology segment measure --mask runs/lesion/lesion.nii.gz
  wsi-hcc radiology segment measure --mask runs/pred/labels.nii.gz --label 2 --out runs/pred/tumour_size.json""")
@click.option("--mask", "mask_path", required=True, type=click.Path(exists=True), help="Mask or label map.")
@click.option("--label", type=int, help="Label value to measure (default: any non-zero).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write the measurement as JSON.")
def measure(mask_path, label, out_path):
    """Re-measure a (possibly hand-edited) lesion mask: volume and diameters."""
    from wsi_hcc.radiology import load_volume
    from wsi_hcc.radiology.semi_auto import remeasure
    from wsi_hcc.utils.atomic import atomic_write_json

    volume = load_volume(mask_path)
    mask = volume.array == label if label is not None else volume.array != 0
    m = remeasure(mask, volume.spacing_mm)
    if out_path:
        atomic_write_json(Path(out_path), {"measurement": m.to_json(), **provenance(mask=str(mask_path),
                                                                                     label=label)})
    click.echo(f"{m.voxels} voxels, {m.volume_ml:.3f} ml, max diameter {m.max_diameter_mm:.1f} mm "
               f"(axial {m.max_axial_diameter_mm:.1f} mm)")


COMMANDS = [segment]
