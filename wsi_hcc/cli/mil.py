"""``wsi-hcc train-mil``: parse, call ``mil_pipeline``, report.

Heavy imports (torch, sklearn) happen inside the command so ``--help`` stays instant. Library
errors are one line (``error: ...``, exit 2).
"""

from __future__ import annotations

import click

from wsi_hcc.cli.errors import OneLineCommand
from wsi_hcc.cli.options import renamed_option, stores_argument

__all__ = ["COMMANDS", "train_mil"]


@click.command("train-mil", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc train-mil --config configs/mil/gated_hcc.yaml --out runs/mil_gated
  wsi-hcc train-mil --config configs/mil/clam_sb_hcc_grade.yaml --out runs/clam --folds 5 --seed 1
  wsi-hcc train-mil stores/ --config my.yaml --out runs/quick --arch mean --epochs 5 --bootstrap 0

\b
Inputs: feature stores (wsi-hcc tile, then wsi-hcc features) and a CSV with slide, patient,
label and optionally grade. Rerunning the same command skips the folds already finished (same
config) and redoes only the rest. The bundle in OUT/model loads with
wsi_hcc.mil.load_mil_bundle (JSON + safetensors, nothing unpickled).""")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="MIL YAML with a 'mil:' section, or a shipped one by name (mil/gated_hcc).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: metrics.json, predictions.csv, roc/reliability/confusion PNGs, folds/, model/.")
@stores_argument
@click.option("--labels", "labels_csv", type=click.Path(dir_okay=False), help="Label CSV (slide, patient, label"
              "[, grade]); replaces the config's.")
@click.option("--arch", "model", type=click.Choice(["gated", "clam_sb", "clam_mb", "mean", "max"]),
              help="MIL architecture.")
@renamed_option("--model", "--arch", "model", type=click.Choice(["gated", "clam_sb", "clam_mb", "mean", "max"]))
@click.option("--folds", type=click.IntRange(2, 50), help="Patient-level cross-validation folds.")
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum epochs per fold.")
@click.option("--patience", type=click.IntRange(min=1), help="Early-stopping patience (validation loss).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed for folds, initialisation and sampling.")
@click.option("--bootstrap", type=click.IntRange(min=0), help="Bootstrap resamples for the AUC CI (0: none).")
@click.option("--backbone-weights", type=click.Path(), help="The weights wsi-hcc features used "
              "(copied into the bundle); found beside the stores when omitted.")
@click.option("--device", help="cpu, auto, cuda or cuda:N.")
def train_mil(config_path, out_dir, stores, labels_csv, model, folds, epochs, patience, lr, seed, bootstrap,
              backbone_weights, device):
    """Cross-validate an attention-MIL slide classifier (HCC vs non-HCC, and grade) on the tile
    features of STORES (or folders of them; default: the config's stores).

    Patient-level folds, class-balanced sampling, early stopping on validation loss, threshold and
    temperature fitted on validation patients only; per-fold and pooled metrics with a bootstrap
    CI; a model bundle for the best fold (or the ensemble).
    """
    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.mil.config import load_mil_config
    from wsi_hcc.pipelines.train_mil import run_mil_training
    from wsi_hcc.utils.config import locate_config
    from wsi_hcc.utils.words import counted

    config_path = locate_config(config_path, "MIL", "mil")  # a shipped name: the manifest names its file
    config = load_mil_config(config_path).with_overrides(
        stores=list(stores) or None, labels_csv=labels_csv, **{"model.name": model}, folds=folds, epochs=epochs,
        patience=patience, lr=lr, seed=seed, bootstrap=bootstrap, device=device,
        backbone_weights=backbone_weights)
    with RichProgress() as progress:
        report = run_mil_training(config, out_dir, config_path=str(config_path), progress=progress)
    pooled = report.metrics["pooled"]["label"]
    low, high = pooled["roc_auc_ci95"]

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    line = (f"{counted(len(report.folds_run), 'fold')} trained, {len(report.folds_skipped)} already done; "
            f"pooled held-out ROC AUC {fmt(pooled['roc_auc'])} (95% CI {fmt(low)}-{fmt(high)}), balanced accuracy "
            f"{fmt(pooled['balanced_accuracy'])}, sensitivity {fmt(pooled['sensitivity'])}, specificity "
            f"{fmt(pooled['specificity'])}")
    grade = report.metrics["pooled"].get("grade")
    if grade:
        line += f"; grade kappa {fmt(grade['quadratic_weighted_kappa'])}"
    click.echo(f"{line} -> {report.bundle_dir}")


COMMANDS = [train_mil]
