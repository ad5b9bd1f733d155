"""``wsi-hcc train-patches`` and ``wsi-hcc explain``: parse, call ``train_pipeline``, report.

Heavy imports (torch, sklearn) happen inside the commands so ``--help`` stays instant. Library
errors are one line (``error: ...``, exit 2) through the ``wsi-hcc`` group, and also when a command
is invoked on its own.
"""

from __future__ import annotations

import click

from wsi_hcc.cli.errors import OneLineCommand
from wsi_hcc.cli.options import renamed_option, stores_argument

__all__ = ["COMMANDS", "train_patches", "explain", "bundle"]

# early_stopping.metric's choices (wsi_hcc.training.config.MONITOR_MODES, not imported: --help stays instant)
MONITOR_METRICS = ("val_loss", "val_auc", "val_balanced_accuracy", "val_accuracy")


def _parse_tiles(_ctx, _param, value):
    if value is None:
        return None
    try:
        tiles = [int(v) for v in value.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give tile indices separated by commas, e.g. 0,5,9") from None
    if not tiles or min(tiles) < 0:
        raise click.BadParameter(f"{value!r}: give non-negative tile indices, e.g. 0,5,9")
    return list(dict.fromkeys(tiles))


@click.command("train-patches", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc train-patches --config configs/train/resnet34_hcc.yaml --out runs/resnet34_hcc
  wsi-hcc train-patches --config configs/train/livernet_grading.yaml --out runs/livernet --device cuda
  wsi-hcc train-patches stores/ --config my.yaml --out runs/quick --epochs 2 --max-tiles-per-slide 50
  wsi-hcc train-patches --config my.yaml --out runs/r1 --restart     # discard runs/r1's checkpoint

\b
Rerunning the same command resumes from runs/.../last-checkpoint.pt; a finished run is not redone
(raise --epochs to train a finished run further).""")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Training YAML with a 'train:' section, or a shipped one by name (train/resnet34_hcc).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: best.safetensors, metrics.json, confusion.png, curves.png, checkpoints.")
@stores_argument
@click.option("--arch", "backbone", help="Backbone to train (resnet34, livernet, a timm model).")
@renamed_option("--backbone", "--arch", "backbone")
@click.option("--weights", type=click.Path(), help="Initial weights (a model folder or a local file).")
@click.option("--epochs", type=click.IntRange(min=1), help="Number of epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Tiles per training batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--patience", type=click.IntRange(min=1), help="Early-stopping patience in epochs.")
@click.option("--max-tiles-per-slide", type=click.IntRange(min=1), help="Use at most N tiles per slide (quick runs).")
@click.option("--seed", type=click.IntRange(min=0), help="Seed for initialisation, tile order and augmentation.")
@click.option("--split-seed", type=click.IntRange(min=0), help="Seed that deals patients to train, validation and "
              "test (split.seed).")
@click.option("--monitor", type=click.Choice(list(MONITOR_METRICS)), help="Validation metric for early stopping and "
              "the best epoch (early_stopping.metric); val_loss works when the validation split lacks a class.")
@click.option("--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", "num_workers", type=click.IntRange(0, 64),
              help="DataLoader worker processes [from the CPU count].")
@click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA [on].")
@click.option("--restart", is_flag=True, help="Discard a previous run in --out and start over.")
def train_patches(config_path, out_dir, stores, backbone, weights, epochs, batch_size, lr, patience,
                  max_tiles_per_slide, seed, split_seed, monitor, device, num_workers, amp, restart):
    """Train a patch classifier on patch STORES (or folders of them; default: the config's stores) with
    slide-level or QuPath-annotation labels.

    Patient-level splits, augmentation, class weighting, early stopping and resumable checkpoints
    come from the config; flags override it. Metrics are written as JSON and pictures.
    """
    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.pipelines.train_patches import run_training
    from wsi_hcc.training.config import load_train_config
    from wsi_hcc.utils.config import locate_config
    from wsi_hcc.utils.words import counted

    config_path = locate_config(config_path, "training", "train")  # a shipped name: the manifest names its file
    config = load_train_config(config_path).with_overrides(
        stores=list(stores) or None, backbone=backbone, weights=weights, epochs=epochs, batch_size=batch_size,
        **{"optimizer.lr": lr, "early_stopping.patience": patience, "early_stopping.metric": monitor,
           "split.seed": split_seed}, max_tiles_per_slide=max_tiles_per_slide,
        seed=seed, device=device, num_workers=num_workers, amp=amp)
    with RichProgress() as progress:
        report = run_training(config, out_dir, config_path=str(config_path), restart=restart, progress=progress)
    metrics = report.metrics
    where = "test" if "test" in metrics["splits"] else "validation"
    split = metrics["splits"].get(where, {})

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    prefix = "already trained: " if report.status == "already done" else ""
    click.echo(f"{prefix}{counted(report.epochs_run, 'epoch')} ({report.stop_reason}); best epoch "
               f"{(report.best_epoch or 0) + 1}; {where}: accuracy {fmt(split.get('accuracy'))}, balanced accuracy "
               f"{fmt(split.get('balanced_accuracy'))}, ROC AUC {fmt(split.get('roc_auc'))} -> {report.out_dir}")


@click.command("explain", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc explain stores/a.zarr --weights runs/r34/best.safetensors --tiles 0,5,9 --out cams/
  wsi-hcc explain stores/a.zarr --weights runs/r34/best.safetensors --top 12 --class HCC --out cams/
  wsi-hcc explain stores/a.zarr --weights resnet34.pt --arch resnet34 --tiles 3 --out cams/""")
@click.argument("store", type=click.Path())
@click.option("--weights", required=True, type=click.Path(),
              help="Classifier: a model folder (train-patches OUT/model) or weights (ours carry the model card; "
                   "others need --arch).")
@click.option("--arch", "backbone", help="Backbone name; default: the one named by the weights' card.")
@renamed_option("--backbone", "--arch", "backbone")
@click.option("--tiles", callback=_parse_tiles, help="Tile indices of the store, comma-separated (0,5,9).")
@click.option("--top", type=click.IntRange(min=1), help="Explain the K tiles that score highest for --class.")
@click.option("--class", "class_name", help="Class to explain [each tile's predicted class; with --top the last "
              "class, e.g. HCC].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the pictures.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.45, show_default=True, help="Heat-map opacity.")
def explain(store, weights, backbone, tiles, top, class_name, out_dir, device, batch_size, alpha):
    """Grad-CAM overlays for tiles of a patch STORE, from any patch classifier.

    Writes one PNG per tile (the tile, then the heat map over it) and <stem>.explain.json with
    every tile's class scores.
    """
    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.pipelines.train_patches import run_explain
    from wsi_hcc.utils.words import counted

    with RichProgress() as progress:
        report = run_explain(store, weights, out_dir, backbone=backbone, tiles=tiles, top=top, class_name=class_name,
                             device=device, batch_size=batch_size, alpha=alpha, progress=progress)
    click.echo(f"wrote {counted(len(report.pictures), 'overlay')} and {report.json_path}")


@click.command("bundle", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc bundle --arch livernet --weights KMC/LiverNet_test_fold1_weights.h5 --out livernet_kmc
  wsi-hcc bundle --arch resnet34 --weights my_resnet34.pt --classes non-HCC,HCC --mpp 0.5 --out r34
  wsi-hcc classify slide.svs --model livernet_kmc --out grades/

\b
The folder holds weights.safetensors and card.json: classes, input and preprocessing, tiling, where
the weights came from and their sha256, and what the card only assumes (the released LiverNet files
are recognised by sha256 and get their own cards).""")
@click.option("--arch", "backbone", required=True, help="Registered backbone (resnet34, livernet) or timm name.")
@click.option("--weights", required=True, type=click.Path(exists=True), help="A local weights file.")
@click.option("--classes", help="Comma-separated class names, in output order (needed for unnamed classes).")
@click.option("--mpp", "target_mpp", type=click.FloatRange(min=0, min_open=True),
              help="The um/px the model was trained at, if the card does not know it.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace a model folder that is already there.")
def bundle(backbone, weights, classes, target_mpp, out_dir, overwrite):
    """Make a patch-classifier model folder from a weights file, for wsi-hcc classify."""
    from wsi_hcc.pipelines.classify_patches import bundle_patch_classifier

    card = bundle_patch_classifier(backbone, weights, out_dir, classes=classes.split(",") if classes else None,
                                   target_mpp=target_mpp, overwrite=overwrite).card
    notes = f"; {', '.join(card.assumptions)}" if card.assumptions else ""
    click.echo(f"{card.architecture}: {card.num_classes} classes ({', '.join(card.class_names)}) at "
               f"{card.target_mpp:g} um/px{notes} -> {out_dir}")


COMMANDS = [train_patches, explain, bundle]
