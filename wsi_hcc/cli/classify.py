"""``wsi-hcc classify`` and ``wsi-hcc demo``: parse, call the library, report.

Heavy imports happen inside the commands so ``--help`` stays instant. Library errors are one line
(``error: ...``, exit 2); a batch with a failed slide exits 1 after listing each failure.
"""

from __future__ import annotations

import sys

import click

from wsi_hcc.cli.errors import OneLineCommand

__all__ = ["COMMANDS", "classify", "demo"]


@click.command(cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc classify slides/ --model runs/mil_gated/model --out results/
  wsi-hcc classify a.svs b.ndpi --model wsi-hcc-demo/model --out results/ --device cuda
  wsi-hcc bundle --arch livernet --weights KMC/LiverNet_test_fold1_weights.h5 --out livernet_kmc
  wsi-hcc classify slide.svs --model livernet_kmc --out grades/
  wsi-hcc classify manifest.csv --model model/ --out results/ --stores stores/ --labels truth.csv
  wsi-hcc classify slides/ --model model/ --out results/ --workers 4
  wsi-hcc classify /shared/slides/ --model /shared/model --out /shared/results --scheduler tcp://10.0.0.5:8786

\b
Outputs in OUT: predictions.csv (one row per slide: p_hcc, predicted label, grade probabilities,
tiles, mpp and its source, status, reason, seconds per stage), <stem>.heatmap.png, <stem>.geojson.gz
(drag onto the slide in QuPath), <stem>.classify.json (state) and classify-manifest.json. Slides
are tiled the way the bundle's training slides were; rerunning skips finished slides. With a
patch-classifier model folder (wsi-hcc bundle, or OUT/model of train-patches) every tile is scored:
predictions.csv has p_<class> (mean over tiles) and frac_<class> (share of tiles on top) per class,
<stem>.tiles.csv.gz the probabilities of each tile, and the heatmap a panel per class.

\b
On a dask cluster (--scheduler, or --workers N for a local one) each slide's whole chain (tile,
features, model, exports) runs on a worker, the model loaded once per worker, its model stage
tagged with the resource GPU=1 where workers declare it (dask worker ADDRESS --resources GPU=1);
the worker column of predictions.csv names the worker. Workers must see the slides, the model and
OUT (and --stores) at the same paths as this command (a shared file system): the command checks
from every worker first and stops in one line if one cannot.""")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "bundle_dir", required=True, type=click.Path(),
              help="Model folder: a MIL bundle (OUT/model of train-mil or demo) or a patch classifier "
                   "(wsi-hcc bundle, OUT/model of train-patches); its card.json names the folder too.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--stores", "stores_dir", type=click.Path(file_okay=False),
              help="Where patch stores are kept and reused [OUT/stores].")
@click.option("--labels", "labels_csv", type=click.Path(dir_okay=False),
              help="CSV with slide, patient, label: adds a true_label column to predictions.csv.")
@click.option("--region-threshold", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Tile probability at which tiles join the exported tumour regions.")
@click.option("--recursive", is_flag=True, help="Look for slides in sub-folders too.")
@click.option("--slide-mpp", type=float, help="Override every slide's own mpp (um/px at level 0).")
@click.option("--overwrite", is_flag=True, help="Redo slides that are already done.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Above 1: a local dask cluster of N worker processes, each classifying whole slides (one "
                   "worker per GPU where dask-cuda is installed).")
@click.option("--scheduler", help="dask.distributed scheduler address (tcp://host:8786): classify whole slides on its "
                                  "workers, which must see the slides, the model and OUT at the same paths.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None,
              help="Tiles per model batch [default: 256 on a GPU, 64 on the CPU].")
@click.option("--allow-resize", is_flag=True,
              help="Patch classifiers: let stores whose tiles differ from the model's input size be resized.")
def classify(inputs, bundle_dir, out_dir, stores_dir, labels_csv, region_threshold, recursive, slide_mpp,
             overwrite, workers, scheduler, device, batch_size, allow_resize):
    """Score slides with a model bundle: HCC probability and grade per slide, heatmaps, QuPath files.

    INPUTS are slides, folders of slides or a CSV manifest (path[, mpp]), as for wsi-hcc tile.
    """
    from pathlib import Path

    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.pipelines.classify import run_classify
    from wsi_hcc.pipelines.classify_patches import is_patch_model, run_classify_patches

    if Path(bundle_dir).is_file():
        if Path(bundle_dir).name not in ("card.json", "weights.safetensors"):
            from wsi_hcc.errors import WsiHccError

            raise WsiHccError(f"{bundle_dir}: a file, not a model folder; pass --model the folder that holds "
                              "card.json (OUT/model of wsi-hcc train-mil, train-patches or demo)")
        bundle_dir = str(Path(bundle_dir).parent)  # a file of the model folder names the folder
    if is_patch_model(bundle_dir):
        with RichProgress() as progress:
            report = run_classify_patches(list(inputs), bundle_dir, out_dir, stores_dir=stores_dir,
                                          recursive=recursive, slide_mpp=slide_mpp, overwrite=overwrite,
                                          workers=workers, scheduler=scheduler, device=device,
                                          batch_size=batch_size or 64, allow_resize=allow_resize,
                                          progress=progress)
        _summarise(report, inputs, recursive)
        assumed = {r["model_assumptions"] for r in report.rows if r.get("model_assumptions")}
        for note in sorted(assumed):
            click.echo(f"note: this model's {note}; see its card.json")
        sys.exit(1 if report.failed or not report.rows else 0)
    with RichProgress() as progress:
        report = run_classify(list(inputs), bundle_dir, out_dir, stores_dir=stores_dir, labels_csv=labels_csv,
                              region_threshold=region_threshold, recursive=recursive, slide_mpp=slide_mpp,
                              overwrite=overwrite, workers=workers, scheduler=scheduler, device=device,
                              batch_size=batch_size, progress=progress)
    _summarise(report, inputs, recursive)
    sys.exit(1 if report.failed or not report.rows else 0)


def _summarise(report, inputs, recursive: bool) -> None:
    from collections import Counter

    from wsi_hcc.utils.words import counted

    done, skipped, failed = (report.count(s) for s in ("done", "skipped", "failed"))
    predicted = Counter(r["predicted_label"] for r in report.rows if r["status"] != "failed")
    calls = ", ".join(f"{n} {label}" for label, n in sorted(predicted.items())) or "none"
    click.echo(f"{counted(len(report.rows), 'slide')}: {done} classified, {skipped} already done, {failed} failed; "
               f"predicted: {calls} -> {report.predictions_csv}")
    if not report.rows:
        click.echo("no slides found in the given paths")
    from wsi_hcc.tiling.inputs import skipped_images_line

    if line := skipped_images_line(list(inputs), recursive):
        click.echo(line)
    if any(r.get("model_training_data") == "synthetic" for r in report.rows):
        click.echo("warning: this model learnt from generated slides only (wsi-hcc demo); its calls on real slides "
                   "mean nothing", err=True)
    for row in report.failed:
        click.echo(f"FAILED {row['reason']}")


@click.command(cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc demo
  wsi-hcc demo --out /tmp/demo --train-slides 40 --heldout-slides 10

\b
Generates synthetic H&E slides, tiles them, embeds the tiles, trains attention-MIL with
cross-validation, classifies held-out slides with the trained bundle and writes OUT/report.md
(ROC, heatmaps next to the ground-truth masks, QuPath files). About 1.5 minutes on 2 CPU cores.
The bundle stays in OUT/model for wsi-hcc classify. A rerun reuses finished stages.""")
@click.option("--out", "out_dir", default="wsi-hcc-demo", show_default=True, type=click.Path(file_okay=False),
              help="Output folder.")
@click.option("--train-slides", type=click.IntRange(6, 400), default=24, show_default=True,
              help="Synthetic training slides (half with tumour).")
@click.option("--heldout-slides", type=click.IntRange(2, 200), default=8, show_default=True,
              help="Synthetic slides kept for classify.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def demo(out_dir, train_slides, heldout_slides, seed):
    """Run the whole pathology chain on generated slides and write a report."""
    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.pipelines.demo import run_demo
    from wsi_hcc.utils.words import counted

    with RichProgress() as progress:
        report = run_demo(out_dir, n_train=train_slides, n_heldout=heldout_slides, seed=seed,
                          progress=progress)

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    click.echo(f"done in {report.seconds['total']:.0f} s: cross-validated ROC AUC {fmt(report.cv_auc)}, "
               f"held-out accuracy {report.heldout_accuracy:.3f} on {counted(len(report.classify.rows), 'slide')}")
    click.echo(f"report:      {report.report_path}")
    click.echo(f"predictions: {report.classify.predictions_csv}")
    click.echo(f"model:       {report.bundle_dir}  (wsi-hcc classify SLIDES --model {report.bundle_dir} --out DIR)")


COMMANDS = [classify, demo]
