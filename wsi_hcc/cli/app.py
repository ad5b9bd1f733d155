"""The ``wsi-hcc`` command line: parse, call the library, report.

Heavy imports (numpy, zarr, openslide) happen inside commands so ``--help`` stays instant.
"""

from __future__ import annotations

import logging
import sys

import click

from wsi_hcc.cli.errors import OneLineCommand, OneLineErrors, terminate_as_interrupt
from wsi_hcc.cli.options import renamed_option

__all__ = ["main"]


def _print_versions(ctx, _param, value):
    if not value or ctx.resilient_parsing:
        return
    from wsi_hcc.utils.versions import stack_versions

    for name, version in stack_versions().items():
        click.echo(f"{name} {version}")
    ctx.exit()


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  wsi-hcc demo                                            # the whole chain on generated slides
  wsi-hcc tile slides/ --out stores/ --for-model resnet34
  wsi-hcc features stores/ --arch resnet34 --weights resnet34_hcc.safetensors
  wsi-hcc classify new_slides/ --model runs/mil/model --out results/""")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_versions,
              help="Print the versions of wsi-hcc and its stack, then exit.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """wsi-hcc: HCC whole-slide image toolkit."""
    from rich.console import Console
    from rich.logging import RichHandler

    package_log = logging.getLogger("wsi_hcc")
    # one handler however often main() runs in a process (tests, notebooks): each call would add another
    for old in [h for h in package_log.handlers if getattr(h, "_wsi_hcc_cli", False)]:
        package_log.removeHandler(old)
    handler = RichHandler(show_time=False, show_path=False, markup=False, console=Console(stderr=True))
    handler._wsi_hcc_cli = True
    package_log.addHandler(handler)
    package_log.setLevel(logging.WARNING - 10 * min(verbose, 2))
    # tifffile logs every damaged file it meets; our one-line error already says what is wrong.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL if verbose < 2 else logging.DEBUG)
    terminate_as_interrupt(ctx)


def _h5_layout_option(command: str):
    files = {"tile": ("<stem>.h5", "<mag>x_<px>px_<ov>px_overlap/patches/<stem>_patches.h5", "patches/<stem>.h5"),
             "features": ("<stem>.h5", "<mag>x_<px>px_<ov>px_overlap/{patches,features_<arch>}/",
                          "patches/, h5_files/ and pt_files/")}[command]
    return click.option(
        "--h5-layout", type=click.Choice(["flat", "trident", "clam"]), default=None,
        help=f"Layout of the .h5 files in --out (implies --h5). trident: {files[1]}; clam: {files[2]}; each as that "
             f"tool's own code reads it. flat: {files[0]}, as before; CLAM and TRIDENT read the right area from it "
             f"only where tiles are not resampled [flat].")


# Options that mean the same in every command that takes them.
def _tile_options(func):
    options = [
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
                     help="Output folder; one <stem>.zarr store per slide."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="YAML config, or a shipped one by name (tile); flags override it."),
        click.option("--mpp", "target_mpp", type=float, help="Target microns per pixel of tiles [0.5]."),
        click.option("--tile-px", type=int, help="Tile edge in pixels [256]."),
        click.option("--for-model", help="Take --mpp and --tile-px from a model's card: a backbone name "
                                         "(resnet34, livernet) or one of our .safetensors weight files."),
        click.option("--overlap-px", type=int, help="Overlap between neighbouring tiles in pixels [0]."),
        click.option("--min-tissue", type=float, help="Fraction of a tile that must be tissue; 0 keeps all [0.5]."),
        click.option("--backend", type=click.Choice(["auto", "openslide", "tiffslide"]), help="Slide reader [auto]."),
        click.option("--slide-mpp", type=float, help="Override every slide's own mpp (um/px at level 0)."),
        click.option("--compression", type=click.Choice(["jpeg", "zstd", "none"]), help="Tile codec [jpeg]."),
        click.option("--jpeg-quality", type=int, help="JPEG quality [90]."),
        click.option("--jpeg-subsampling", type=click.Choice(["444", "422", "420"]),
                     help="JPEG chroma subsampling; 444 keeps full colour [444]."),
        click.option("--direct-jpeg/--no-direct-jpeg", default=None,
                     help="Decode JPEG-tiled TIFF levels directly (same pixels, faster) [on]."),
        click.option("--resample", type=click.Choice(["exact", "scaled"]),
                     help="Tiles coarser than a JPEG level: 'scaled' decodes at 1/2, 1/4 or 1/8 scale in the JPEG "
                          "decoder where that leaves a whole factor (about half a grey level from exact; elsewhere "
                          "exact's pixels); 'exact' always decodes in full and averages [scaled]."),
        click.option("--chunk-tiles", type=click.IntRange(1, 4096),
                     help="Tiles per chunk file of the store (1: one file per tile, slow to create) [32]."),
        click.option("--pass-through/--no-pass-through", default=None,
                     help="Store the slide's own JPEG tiles unchanged where the grid matches them [on]."),
        click.option("--normalize", type=click.Choice(["none", "macenko", "reinhard"]),
                     help="Stain-normalise tiles as they are written [none]."),
        click.option("--reference", type=click.Path(dir_okay=False), help="RGB image to fit --normalize to."),
        click.option("--h5", is_flag=True, default=None, help="Also write tile coordinates for CLAM/TRIDENT, "
                     "in --h5-layout."),
        _h5_layout_option("tile"),
        click.option("--qc/--no-qc", default=None, help="Write the <stem>.qc.png picture [on]."),
        click.option("--recursive", is_flag=True, help="Look for slides in sub-folders too."),
        click.option("--overwrite", is_flag=True, help="Redo slides that are already done."),
        click.option("--workers", type=click.IntRange(min=1), default=1,
                     help="Processes to tile with, at most one per CPU: the command's own and N-1 more, all "
                          "taking jobs from one queue [1]."),
        click.option("--scheduler", help="dask.distributed scheduler address (tcp://host:8786) to run on."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command(cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc tile slides/ --out stores/
  wsi-hcc tile manifest.csv --out stores/ --mpp 0.5 --tile-px 224 --workers 2
  wsi-hcc tile a.svs --out stores/ --slide-mpp 0.25 --h5
  wsi-hcc tile slides/ --out job/ --h5-layout trident     # job/20x_256px_0px_overlap/patches/<stem>_patches.h5
  wsi-hcc tile slides/ --out stores/ --for-model livernet
  wsi-hcc tile slides/ --out stores/ --normalize macenko --reference ref.png
  wsi-hcc tile slides/ --out stores/ --scheduler tcp://10.0.0.5:8786""")
@click.argument("paths", nargs=-1, required=True)
@_tile_options
def tile(paths, out_dir, config_path, target_mpp, tile_px, for_model, overlap_px, min_tissue, backend, slide_mpp,
         compression, jpeg_quality, jpeg_subsampling, direct_jpeg, resample, chunk_tiles, pass_through, normalize,
         reference, h5, h5_layout, qc, recursive, overwrite, workers, scheduler):
    """Cut slides into tiles at an exact physical resolution and write Zarr patch stores.

    PATHS are slides, folders of slides, or CSV manifests with a 'path' column and an optional
    'mpp' column. A folder holding one DICOM WSI series is one slide; PNG and JPEG region images
    are one-level slides (named, not found in folders). A failed slide does not stop the batch;
    rerunning skips finished slides.
    """
    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.pipelines.tile import run_tile
    from wsi_hcc.tiling.config import load_config

    if scheduler and workers > 1:
        raise click.UsageError("--workers is for local processes and --scheduler for a dask cluster: give one")

    if for_model:
        from wsi_hcc.models import card_for, tiling_from_card

        target_mpp, tile_px = tiling_from_card(card_for(for_model), target_mpp, tile_px)
    config = load_config(config_path).with_overrides(
        target_mpp=target_mpp, tile_px=tile_px, overlap_px=overlap_px, min_tissue=min_tissue, backend=backend,
        compression=compression, jpeg_quality=jpeg_quality, jpeg_subsampling=jpeg_subsampling,
        direct_jpeg=direct_jpeg, resample=resample, chunk_tiles=chunk_tiles, pass_through=pass_through,
        normalize=normalize, reference=reference, h5=True if h5_layout else h5, h5_layout=h5_layout, qc=qc)
    with RichProgress() as progress:
        report = run_tile(list(paths), out_dir, config, recursive=recursive, slide_mpp=slide_mpp,
                          overwrite=overwrite, workers=workers, scheduler=scheduler, progress=progress)
    progress.print_summary(report)
    _note_skipped_images(paths, recursive)
    sys.exit(1 if report.failed or not report.outcomes else 0)


def _note_skipped_images(paths, recursive: bool) -> None:
    from wsi_hcc.tiling.inputs import skipped_images_line

    line = skipped_images_line(list(paths), recursive)
    if line:
        click.echo(line)


@main.command(epilog="""\b
Examples:
  wsi-hcc synth demo.svs
  wsi-hcc synth big.svs --width 40000 --height 30000 --mpp 0.25
  wsi-hcc synth nompp.svs --no-mpp""")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--width", type=int, default=8192, show_default=True, help="Level-0 width in pixels.")
@click.option("--height", type=int, default=6144, show_default=True, help="Level-0 height in pixels.")
@click.option("--mpp", type=float, default=0.25, show_default=True, help="Microns per pixel written to the slide.")
@click.option("--no-mpp", is_flag=True, help="Write no mpp at all (to test the override).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tile-px", type=int, default=256, show_default=True, help="JPEG tile size inside the TIFF.")
@click.option("--no-tumour", is_flag=True, help="Tissue without tumour regions.")
def synth(path, width, height, mpp, no_mpp, seed, tile_px, no_tumour):
    """Write a synthetic H&E slide (pyramidal JPEG TIFF, Aperio-style) and its tumour mask."""
    from wsi_hcc.synth import write_synthetic_slide

    slide = write_synthetic_slide(path, size_px=(width, height), mpp=None if no_mpp else mpp, seed=seed,
                                  tile_px=tile_px, tumour=not no_tumour)
    click.echo(f"wrote {slide.path} ({width}x{height} px, mpp {slide.mpp}) and {slide.mask_path}")


@main.command("augment-preview", epilog="""\b
Examples:
  wsi-hcc augment-preview patch.png --config configs/augment/stain.yaml --out preview.png
  wsi-hcc augment-preview patch.png --config my.yaml --out p.png --n 23 --tile-px 224 --seed 1""")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Augmentation YAML, or a shipped one by name (augment/chen2022, augment/stain).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--n", "n_samples", type=click.IntRange(1, 99), default=15, show_default=True, help="Augmented samples.")
@click.option("--tile-px", type=int, default=256, show_default=True, help="Centre crop of IMAGE to augment.")
@click.option("--seed", type=int, default=0, show_default=True)
def augment_preview(image, config_path, out_path, n_samples, tile_px, seed):
    """Write a grid of augmented samples of IMAGE, to choose augmentation strengths by eye."""
    from pathlib import Path

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.stain.augment import augment_samples, load_augmentation
    from wsi_hcc.utils.atomic import atomic_write_bytes
    from wsi_hcc.viz.figures import figure_png
    from wsi_hcc.viz.tiles import augmentation_figure

    try:
        with Image.open(image) as handle:
            rgb = np.asarray(handle.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise WsiHccError(f"{image}: cannot read the image ({exc}); use a PNG or JPEG") from None
    y0, x0 = max(0, (rgb.shape[0] - tile_px) // 2), max(0, (rgb.shape[1] - tile_px) // 2)
    crop = np.ascontiguousarray(rgb[y0:y0 + tile_px, x0:x0 + tile_px])
    samples = augment_samples(crop, load_augmentation(config_path, seed=seed), n=n_samples)
    title = f"{Path(image).name}: {n_samples} samples of {Path(config_path).name} (seed {seed})"
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(out_path), figure_png(augmentation_figure(crop, samples, title=title)))
    click.echo(f"wrote {out_path} ({n_samples} samples of a {crop.shape[1]}x{crop.shape[0]} crop)")


@main.command(cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc features stores/ --arch resnet34 --weights resnet34_hcc.safetensors
  wsi-hcc features stores/a.zarr stores/b.zarr --arch livernet --weights KMC/LiverNet_test_fold1_weights.h5
  wsi-hcc features stores/ --arch resnet34 --out h5_files/ --h5 --device cuda --workers 8
  wsi-hcc features job/ --arch resnet34 --h5-layout clam   # job/pt_files/<stem>.pt for CLAM's main.py""")
@click.argument("stores", nargs=-1, required=True)
@click.option("--arch", "backbone", help="Backbone to build: resnet34, livernet, or any timm model name.  [required]")
@renamed_option("--backbone", "--arch", "backbone")
@click.option("--weights", type=click.Path(), default=None,
              help="A model folder (train-patches OUT/model) or local weights (.safetensors, .pt/.pth, or LiverNet's "
                   "Keras .h5). Random weights without.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the run manifest and .h5 files [default: the first store's folder].")
@click.option("--h5", is_flag=True, help="Also write coords and float32 features for CLAM/TRIDENT, in --h5-layout.")
@_h5_layout_option("features")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None,
              help="Tiles per model batch [default: 256 on a GPU, 64 on the CPU].")
@click.option("--threads", "decode_threads", type=click.IntRange(0, 64), default=None,
              help="Decode tiles in this many threads [default: 0 on small CPU machines, up to 4 on larger ones].")
@click.option("--workers", "decode_processes", type=click.IntRange(0, 64), default=None,
              help="Decode tiles in this many worker processes [default with a GPU: CPU cores - 2, up to 16].")
@renamed_option("--decode-threads", "--threads", "decode_threads", type=click.IntRange(0, 64))
@renamed_option("--decode-processes", "--workers", "decode_processes", type=click.IntRange(0, 64))
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--gpu-decode", is_flag=True, help="Decode JPEG tiles with nvJPEG on the GPU (slower than CPU decoding "
              "on an H200; see benchmarks/RESULTS.md).")
@click.option("--cpu-decode", is_flag=True, hidden=True, help="Kept for old scripts: CPU decoding is the default.")
@click.option("--overwrite", is_flag=True, help="Recompute stores that already have features.")
@click.option("--allow-resize", is_flag=True, help="Let tiles of another size than the model's input be resized "
              "(the model then sees another resolution than it learnt).")
def features(stores, backbone, weights, out_dir, h5, h5_layout, device, batch_size, decode_threads, decode_processes,
             dtype, gpu_decode, cpu_decode, overwrite, allow_resize):
    """Embed every tile of patch STORES (or folders of them) with a backbone.

    Features go into each store as `features` (N, D), row i for coords[i]; finished stores are
    skipped and a killed run resumes. A failed store does not stop the batch.
    """
    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.pipelines.features import run_features

    if backbone is None:
        raise click.UsageError("Missing option '--arch'.")
    with RichProgress() as progress:
        report = run_features(list(stores), out_dir, backbone, weights=weights, device=device,
                              batch_size=batch_size, decode_threads=decode_threads,
                              decode_processes=decode_processes, dtype=dtype, h5=h5 or h5_layout is not None,
                              h5_layout=h5_layout or "flat",
                              overwrite=overwrite, gpu_decode=gpu_decode and not cpu_decode,
                              allow_resize=allow_resize, progress=progress)
    progress.print_summary(report, noun="store")
    sys.exit(1 if report.failed or not report.outcomes else 0)


def _add_other_commands() -> None:
    # One module per command group; this one keeps the group and the tile/feature commands.
    from wsi_hcc.cli import classify as cli_classify
    from wsi_hcc.cli import mil as cli_mil
    from wsi_hcc.cli import radiology as cli_radiology
    from wsi_hcc.cli import radiology_ablation as cli_radiology_ablation
    from wsi_hcc.cli import radiology_models as cli_radiology_models
    from wsi_hcc.cli import radiology_segment as cli_radiology_segment
    from wsi_hcc.cli import radiology_survival as cli_radiology_survival
    from wsi_hcc.cli import survival as cli_survival
    from wsi_hcc.cli import train as cli_train
    from wsi_hcc.cli import view as cli_view

    for command in ([cli_radiology_segment.segment] + cli_radiology_models.COMMANDS
                    + cli_radiology_survival.COMMANDS + cli_radiology_ablation.COMMANDS):
        cli_radiology.radiology.add_command(command)
    for command in (cli_train.COMMANDS + cli_mil.COMMANDS + cli_classify.COMMANDS + cli_radiology.COMMANDS
                    + cli_survival.COMMANDS + cli_view.COMMANDS):
        main.add_command(command)


_add_other_commands()
