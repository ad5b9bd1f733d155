"""``wsi-hcc radiology train | predict | explain``: MVI and grade classifiers on tumour + ring crops.

The integrator attaches ``COMMANDS`` to the ``radiology`` group. Heavy imports happen inside the
commands so ``--help`` stays instant; library errors are one line (``error: ...``, exit 2).
"""

from __future__ import annotations

from pathlib import Path

import click

from wsi_hcc.cli.errors import OneLineCommand
from wsi_hcc.cli.options import deprecation, phantoms_or_cases, renamed_option
from wsi_hcc.cli.radiology import prepare_out, provenance
from wsi_hcc.errors import ConfigError

__all__ = ["COMMANDS", "train", "predict", "explain"]

_MODELS = ["single", "multiphase", "fusion", "ted", "mcf", "transformer", "graph"]


def _parse_pairs(items, option: str, example: str) -> dict[str, str]:
    from wsi_hcc.errors import WsiHccError

    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise WsiHccError(f"{option} {item!r}: write NAME=VALUE, e.g. {option} {example}")
        pairs[name] = value
    return pairs


def _model(weights, model_kind, task, phases, seed):
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology.classify_bundle import load_classifier
    from wsi_hcc.radiology.classify_train import TrainConfig, untrained_model

    if weights:
        if not Path(weights).exists():
            raise WsiHccError(f"{weights}: no such model folder; give --model the folder 'wsi-hcc radiology train' "
                              "wrote (OUT/model)")
        return load_classifier(weights), False
    if not model_kind:
        raise WsiHccError("give --model (a model folder from wsi-hcc radiology train) or --arch for random weights")
    return untrained_model(TrainConfig(task=task, model=model_kind, phases=tuple(phases), single_phase=phases[0],
                                       seed=seed)), True


def _crop(model, images, tumour_path, tumour_label, liver_path, liver_labels):
    import numpy as np

    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology import load_volume
    from wsi_hcc.radiology.crops import CropSpec, channel_name, make_crop, split_channel
    from wsi_hcc.radiology.volume import require_tumour_inside

    volumes, given = {}, {}
    for name, path in _parse_pairs(images, "--image", "arterial=arterial.nii.gz").items():
        modality, phase = split_channel(name)
        if modality not in ("CT", "MR"):
            raise WsiHccError(f"--image {name}=...: modality {modality!r} is not CT or MR; write PHASE=PATH "
                              "(CT) or MR:PHASE=PATH")
        volumes[channel_name(modality, phase)] = given[name] = load_volume(path, modality=modality)
    tumour = load_volume(tumour_path)
    values = tumour.array == tumour_label if tumour_label is not None else tumour.array != 0
    if not values.any():
        raise WsiHccError(f"{tumour_path}: the tumour mask is empty"
                          f"{f' for label {tumour_label}' if tumour_label is not None else ''}; check --tumour-label")
    require_tumour_inside(given, tumour.with_array(values), tumour_path)
    liver = None
    if liver_path:
        liver_volume = load_volume(liver_path)
        liver = liver_volume.with_array(np.isin(liver_volume.array, liver_labels) if liver_labels
                                        else liver_volume.array != 0)
    needed = [c for c in model.card["channels"] if c not in volumes]
    if model.kind == "fusion":
        if not any(c in volumes for c in model.card["channels"]):
            raise WsiHccError(f"the fusion model needs some of {model.card['channels']}; give e.g. "
                              f"--image {model.card['channels'][0]}=PATH")
    elif needed:
        raise WsiHccError(f"the {model.kind} model needs --image for {needed} (write PHASE=PATH for CT, "
                          "MR:PHASE=PATH for MR)")
    return make_crop(volumes, tumour.with_array(values), liver, CropSpec.from_json(model.card["crop"]))


def _old_model_spelling(weights: str | None, model_kind: str | None) -> tuple[str | None, str | None]:
    """``--model KIND`` meant the architecture before ``--model`` became the folder: ``(folder, arch)``."""
    if weights not in _MODELS or Path(weights).exists():
        return weights, model_kind
    if model_kind is not None:
        raise ConfigError(f"--model {weights} and --arch {model_kind}: --model is now a model folder; give --arch only")
    deprecation(f"--model {weights}", f"--arch {weights}")
    return None, weights


_INPUT_OPTIONS = [
    click.option("--model", "weights", help="Model folder (card.json + weights.safetensors) from 'radiology "
                 "train'. Without it: random weights (--arch)."),
    renamed_option("--weights", "--model", "weights"),
    click.option("--arch", "model_kind", type=click.Choice(_MODELS),
                 help="Random-weight architecture when no --model."),
    click.option("--task", type=click.Choice(["mvi", "grade"]), default="mvi", show_default=True,
                 help="Task of a random-weight model."),
    click.option("--image", "images", multiple=True, required=True,
                 help="PHASE=PATH (CT) or MR:PHASE=PATH (NIfTI file or DICOM folder); repeat per phase."),
    click.option("--tumour", "tumour_path", required=True, help="Tumour mask or label map (any grid)."),
    click.option("--tumour-label", type=int, help="Tumour label value (default: any non-zero)."),
    click.option("--liver", "liver_path", help="Liver mask or label map: clips the ring, defines the far liver."),
    click.option("--liver-label", "liver_labels", type=int, multiple=True,
                 help="Liver label value(s) (repeat; default any non-zero; include the tumour's label)."),
    click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder."),
]


def _inputs(function):
    for option in reversed(_INPUT_OPTIONS):
        function = option(function)
    return function


@click.command("train", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology train --task mvi --arch multiphase --phantoms 60 --out runs/mvi
  wsi-hcc radiology train --task mvi --arch fusion --phantoms 60 --out runs/mvi_fusion
  wsi-hcc radiology train --task mvi --arch transformer --phantoms 56 --crop-size 24 --out runs/mvi_vit
  wsi-hcc radiology train --task grade --arch mcf --phantoms 80 --epochs 40 --out runs/grade
  wsi-hcc radiology train --task mvi --arch graph --phantoms 60 --out runs/mvi_graph
  wsi-hcc radiology train --task mvi --arch multiphase --cases cases.csv --out runs/mvi_real
  wsi-hcc radiology train --task grade --arch mcf --cases cases.csv --classes G1,G2,G3 --out runs/grade_real
  wsi-hcc radiology train --task mvi --arch graph --cases cases.csv --covariates afp_log10 --out runs/graph_real

\b
--phantoms N: a phantom cohort (make_phantom: MVI = enhancing satellite nodules in the 0-6 mm ring
in every other case; grade = heterogeneity in thirds; fusion adds a simulated MR copy of each phase).
--cases CSV: one row per case, paths relative to the CSV; columns
  case, label (mvi: 0/1 or a class name; grade: a class name), patient (optional: splits keep
  a patient's cases together), image:PHASE (CT) / image:CT:PHASE / image:MR:PHASE (one column
  per phase, every cell filled; fusion pairs CT and MR of the same phases, the other models read
  the CT columns), tumour (mask),
  tumour_label (optional int), liver, liver_label (optional), heterogeneity and satellites
  (ted only), and the --covariates columns (graph: afp_log10).
  Phases come from the image columns (--phase picks some). Every row is checked and loaded
  before training; a bad one is an error naming its line.
Writes OUT/model (weights.safetensors + card.json), metrics.json (held-out AUC, accuracy, Grad-CAM
energy per region), predictions.csv, cam_example/ and, for graph on MVI, nomogram.png.""")
@click.option("--task", type=click.Choice(["mvi", "grade"]), default="mvi", show_default=True)
@click.option("--arch", "model_kind", type=click.Choice(_MODELS), default="multiphase", show_default=True)
@renamed_option("--model", "--arch", "model_kind", type=click.Choice(_MODELS))
@click.option("--phantoms", type=click.IntRange(8, 2000),
              help="Train on this many phantom cases (train + held-out). Either --phantoms or --cases.")
@click.option("--cases", "cases_csv", type=click.Path(dir_okay=False),
              help="Train on the cases of this CSV (columns: see below). Either --phantoms or --cases.")
@click.option("--classes", help="With --cases: the CSV's class names, comma-separated, in the model's order "
              "(mvi: no_mvi,mvi; grade: well,moderate,poor).")
@click.option("--covariates", multiple=True, help="With --cases: covariate column(s) for the graph model's "
              "nomogram (afp_log10; diameter_mm is measured from the mask unless listed). Repeat or comma-separate.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.3,
              show_default=True, help="Held-out share, stratified by label (by patient folds when patients repeat).")
@click.option("--phase", "phases", multiple=True, default=("arterial", "portal"), show_default=True,
              help="Phases used as channels (repeat). 'single' uses the first. With --cases: default all the CSV's.")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--crop-size", type=click.IntRange(8, 128), default=32, show_default=True, help="Crop voxels per side.")
@click.option("--crop-spacing-mm", type=click.FloatRange(min=0.3), default=2.0, show_default=True)
@click.option("--noise-hu", type=click.FloatRange(min=0), default=8.0, show_default=True, help="Phantom noise SD.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.pass_context
def train(ctx, task, model_kind, phantoms, cases_csv, classes, covariates, test_fraction, phases, epochs, crop_size,
          crop_spacing_mm, noise_hu, seed, out_dir):
    """Train an MVI or grade classifier on tumour + ring crops of phantoms or a CSV of cases; evaluate held-out ones."""
    from click.core import ParameterSource

    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology.classify_run import run_training
    from wsi_hcc.radiology.classify_train import TrainConfig
    from wsi_hcc.radiology.crops import CropSpec

    def given(name):
        return ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE

    phantoms_or_cases(phantoms, cases_csv, "cases.csv")
    spec = CropSpec(crop_size, crop_spacing_mm)
    progress = ctx.with_resource(RichProgress())
    if phantoms is not None:
        extra = [o for o, v in (("--classes", classes), ("--covariates", covariates)) if v]
        if extra:
            raise WsiHccError(f"{' and '.join(extra)} apply to --cases only; drop them or train on --cases")
        from wsi_hcc.radiology.cohort import phantom_cohort

        config = TrainConfig(task=task, model=model_kind, phases=tuple(phases), single_phase=phases[0], crop=spec,
                             epochs=epochs, seed=seed)
        cases = phantom_cohort(phantoms, seed=seed, spec=spec, mri=model_kind == "fusion", phases=phases,
                               noise_hu=noise_hu,
                               progress=progress)
        cohort = {"source": "phantom_cohort", "cases": phantoms, "phases": list(phases), "noise_hu": noise_hu,
                  "mri": model_kind == "fusion", "seed": seed}
    else:
        if given("noise_hu"):
            raise WsiHccError("--noise-hu applies to --phantoms only; drop it with --cases")
        from wsi_hcc.radiology.case_table import check_table_for_model, read_case_table, table_cohort

        names = [n.strip() for item in covariates for n in item.split(",") if n.strip()]
        table = read_case_table(cases_csv, task, classes.split(",") if classes else None, names)
        available = table.model_phases(model_kind)
        if given("phases"):
            unknown = [p for p in phases if p not in available]
            if unknown:
                raise WsiHccError(f"--phase {', '.join(unknown)}: {Path(cases_csv).name} has no image column for it "
                                  f"(the {model_kind} model's phases there: {', '.join(available)}); pick from those")
            phases = tuple(dict.fromkeys(phases))
        else:
            phases = available
        config = TrainConfig(task=task, model=model_kind, phases=tuple(phases), single_phase=phases[0], crop=spec,
                             epochs=epochs, seed=seed)
        check_table_for_model(table, model_kind, config.channels())
        cases = table_cohort(table, config.channels(), spec,
                             progress=progress)
        cohort = table.describe() | {"phases": list(phases), "channels_used": config.channels()}
    report = run_training(config, cases, out_dir, test_fraction, cohort=cohort, progress=progress)
    held = report["held_out"]
    auc = "-" if held["roc_auc"] is None else f"{held['roc_auc']:.3f}"
    cam = report["cam"]
    cam_note = ""
    if cam.get("cases"):
        per_voxel = cam["mean_per_voxel"]
        cam_note = (f"; CAM per voxel ring {per_voxel['ring']:.4f} vs far liver {per_voxel['liver']:.4f}, ring higher "
                    f"in {cam['cases_ring_above_liver']} of {cam['cases']} held-out cases")
    click.echo(f"{model_kind} {task}: held-out ROC AUC {auc}, accuracy {held['accuracy']:.3f} on {held['cases']} "
               f"cases, trained in {report['training']['seconds']:.1f} s{cam_note} -> {out_dir}")


@click.command("predict", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology predict --model runs/mvi/model --image arterial=case/arterial.nii.gz \\
      --image portal=case/portal.nii.gz --tumour case/labels.nii.gz --tumour-label 2 \\
      --liver case/labels.nii.gz --out runs/case_mvi
  wsi-hcc radiology predict --model runs/mvi_fusion/model --image arterial=ct_art.nii.gz \\
      --image portal=ct_pv.nii.gz --tumour lesion.nii.gz --out runs/ct_only
  wsi-hcc radiology predict --model runs/mvi_graph/model --image arterial=a.nii.gz --image portal=p.nii.gz \\
      --tumour t.nii.gz --covariate afp_log10=2.3 --out runs/graph

\b
Crops the images around the tumour as the model was trained (card.json), writes
predictions.json (class probabilities, predicted class, nomogram probability for graph models).
A fusion model accepts CT only, MR only (MR:PHASE=PATH) or both.""")
@_inputs
@click.option("--covariate", "covariates", multiple=True,
              help="NAME=VALUE for the graph model's nomogram (afp_log10); diameter_mm comes from the mask.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of random weights.")
def predict(weights, model_kind, task, images, tumour_path, tumour_label, liver_path, liver_labels, out_dir, covariates,
            seed):
    """Predict MVI or grade for one case from its phases and tumour mask."""
    weights, model_kind = _old_model_spelling(weights, model_kind)
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology.classify_train import nomogram_inputs, predict_proba
    from wsi_hcc.radiology.cohort import diameter_mm
    from wsi_hcc.radiology.graph_nomogram import LogisticNomogram
    from wsi_hcc.utils.atomic import atomic_write_json, publish_dir

    phases = list(dict.fromkeys(name.partition("=")[0].split(":")[-1] for name in images))
    model, random_weights = _model(weights, model_kind, task, phases, seed)
    crop = _crop(model, images, tumour_path, tumour_label, liver_path, liver_labels)
    probabilities = predict_proba(model, [crop])[0]
    result = {"classes": model.classes, "probabilities": {c: float(p) for c, p in zip(model.classes, probabilities)},
              "predicted": model.classes[int(probabilities.argmax())], "model": model.kind,
              "task": model.card["task"], "random_weights": random_weights,
              "modalities": sorted({c.split(":")[0] for c in crop.channels}),
              "weights_sha256": model.card.get("weights_sha256")}
    if "nomogram" in model.card:
        values = {"diameter_mm": diameter_mm(crop.tumour, crop.grid.spacing_mm)}
        try:
            values.update({k: float(v) for k, v in _parse_pairs(covariates, "--covariate", "afp_log10=1.8").items()})
        except ValueError as exc:
            raise WsiHccError(f"--covariate: values must be numbers ({exc})") from None
        nomogram = LogisticNomogram.from_json(model.card["nomogram"])
        result["nomogram"] = {"covariates": values,
                              "probability": float(nomogram.probability(nomogram_inputs(model, [crop], [values]))[0])}
    tmp = prepare_out(out_dir)
    atomic_write_json(tmp / "predictions.json", result | provenance(
        weights=weights, images=list(images), tumour=str(tumour_path), liver=liver_path))
    publish_dir(tmp, Path(out_dir))
    shown = ", ".join(f"{c} {p:.3f}" for c, p in result["probabilities"].items())
    click.echo(f"{model.kind} {model.card['task']}: {shown}"
               f"{' (random weights)' if random_weights else ''} -> {out_dir}")


@click.command("explain", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology explain --model runs/mvi/model --image arterial=case/arterial.nii.gz \\
      --image portal=case/portal.nii.gz --tumour case/labels.nii.gz --tumour-label 2 \\
      --liver case/labels.nii.gz --liver-label 1 --liver-label 2 --liver-label 3 --liver-label 4 --out runs/cam
  wsi-hcc radiology explain --model runs/grade/model --class poor --image arterial=a.nii.gz \\
      --image portal=p.nii.gz --tumour t.nii.gz --out runs/cam_grade

\b
Grad-CAM (MONAI) on the crop: cam.nii.gz (crop geometry, values 0-1), crop_<channel>.nii.gz,
crop_regions.nii.gz (1 tumour, 2 ring, 3 far liver), cam_z<slice>.png overlays and energy.json
(fraction of CAM energy and mean CAM per voxel in tumour, ring, far liver and outside).""")
@_inputs
@click.option("--class", "class_name", help="Class to explain (default: the positive class, or the predicted grade).")
@click.option("--slices", "n_slices", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Axial slices drawn as PNG.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of random weights.")
def explain(weights, model_kind, task, images, tumour_path, tumour_label, liver_path, liver_labels, out_dir,
            class_name, n_slices, seed):
    """Grad-CAM of a classifier on one case, as NIfTI, PNG overlays and CAM energy per region."""
    weights, model_kind = _old_model_spelling(weights, model_kind)
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology.cam import cam_energy, grad_cam, write_cam
    from wsi_hcc.radiology.classify_train import predict_proba
    from wsi_hcc.utils.atomic import atomic_write_json, publish_dir

    phases = list(dict.fromkeys(name.partition("=")[0].split(":")[-1] for name in images))
    model, random_weights = _model(weights, model_kind, task, phases, seed)
    if class_name is not None and class_name not in model.classes:
        raise WsiHccError(f"--class {class_name!r} is not one of the model's classes {model.classes}")
    crop = _crop(model, images, tumour_path, tumour_label, liver_path, liver_labels)
    class_index = None if class_name is None else model.classes.index(class_name)
    cam, class_index = grad_cam(model, crop, class_index)
    tmp = prepare_out(out_dir)
    files = write_cam(cam, crop, tmp, n_slices=n_slices,
                      cam_label=f"Grad-CAM: evidence for {model.classes[class_index]}")
    energy = cam_energy(cam, crop.regions(outside=True))
    probabilities = predict_proba(model, [crop])[0]
    atomic_write_json(tmp / "energy.json", {
        "class": model.classes[class_index], "energy": energy, "files": files, "model": model.kind,
        "probabilities": {c: float(p) for c, p in zip(model.classes, probabilities)},
        "random_weights": random_weights, "crop": model.card["crop"],
        "weights_sha256": model.card.get("weights_sha256"),
        **provenance(weights=weights, images=list(images), tumour=str(tumour_path), liver=liver_path)})
    publish_dir(tmp, Path(out_dir))
    click.echo(f"Grad-CAM for {model.classes[class_index]}: energy tumour {energy['tumour']['fraction']:.2f}, "
               f"ring {energy['ring']['fraction']:.2f}, liver {energy['liver']['fraction']:.2f}; "
               f"{len(files['png'])} PNGs -> {out_dir}")


COMMANDS = [train, predict, explain]
