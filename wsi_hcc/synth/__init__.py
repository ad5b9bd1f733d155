"""Synthetic H&E whole-slide images with a known tumour mask, for tests and benchmarks.

`write_synthetic_slide` writes an Aperio-style pyramidal JPEG-tiled TIFF (``.svs``) that
openslide and tiffslide both open, a ground-truth label mask PNG and a JSON sidecar with the
parameters. The picture is built from optical densities (Beer-Lambert): eosin stroma with texture,
hematoxylin nuclei, and optional tumour regions whose nuclei are larger, darker and crowded into
trabecular cords separated by pale sinusoids.

Every pixel is a pure function of its level-0 ``(x, y)`` position and the seed: noise comes from
hashing lattice coordinates and nuclei are drawn per fixed block of rows with their own seed, so the
slide is generated in bands of tile rows with bounded memory, no nucleus is cut at a band or tile
seam, and the same arguments always give byte-identical files.

File layout written for ``path = out/slide.svs``::

    out/slide.svs          page 0: level 0, tiled JPEG (YCbCr 4:2:0), Aperio ImageDescription
                           page 1: thumbnail, stripped JPEG (openslide's associated "thumbnail")
                           page 2...: levels at downsample 4, 16, ... (tiled JPEG)
    out/slide.mask.png     uint8 labels, one pixel per ``mask_downsample`` level-0 pixels
    out/slide.synth.json   the parameters, level geometry and label names
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.synth.scene import _Scene
from wsi_hcc.synth.tiff import _LEVEL_FACTOR, _level_sizes, _write_png, _write_tiff

__all__ = ["MASK_LABELS", "SyntheticSlide", "write_synthetic_slide"]

logger = logging.getLogger(__name__)

MASK_LABELS: dict[int, str] = {0: "background", 1: "non_tumour", 2: "tumour"}
"""Values of the ground-truth mask PNG and what they mean."""

_DEFAULT_MPP = 0.25  # physical scale of the content when the slide has no mpp


@dataclass(frozen=True)
class SyntheticSlide:
    """What `write_synthetic_slide` wrote.

    Attributes
    ----------
    path : Path
        The pyramidal TIFF (``.svs`` / ``.tif``).
    mask_path : Path
        Ground-truth labels beside the slide, ``<stem>.mask.png``, uint8 with values
        `MASK_LABELS`; shape ``(ceil(height / mask_downsample), ceil(width / mask_downsample))``.
    size_px : tuple[int, int]
        Level-0 ``(width, height)``.
    mpp : float or None
        The requested microns per pixel (the ground truth the content was drawn at), whether or
        not it was written to the file; None when the slide was made without one.
    mask_downsample : int
        Level-0 pixels per mask pixel along each axis.
    level_downsamples : tuple[int, ...]
        Nominal downsample of each pyramid level: ``(1, 4, 16, ...)``.
    """

    path: Path
    mask_path: Path
    size_px: tuple[int, int]
    mpp: float | None
    mask_downsample: int
    level_downsamples: tuple[int, ...]


def write_synthetic_slide(
    path: str | os.PathLike[str],
    *,
    size_px: tuple[int, int] = (8192, 6144),
    mpp: float | None = 0.25,
    tile_px: int = 256,
    jpeg_quality: int = 90,
    seed: int = 0,
    tissue_fraction: float = 0.6,
    tumour: bool = True,
    grade: int | None = None,
    mpp_in_description: bool = True,
    resolution_tags: bool = False,
    mask_downsample: int = 32,
) -> SyntheticSlide:
    """Write a synthetic H&E slide as an Aperio-style pyramidal TIFF with a ground-truth mask.

    Parameters
    ----------
    path : str or PathLike
        Output slide, ending in ``.svs``, ``.tif`` or ``.tiff``; parent folders are created. The
        mask ``<stem>.mask.png`` and parameters ``<stem>.synth.json`` are written beside it.
    size_px : tuple[int, int]
        Level-0 ``(width, height)`` in pixels; any positive size (edge tiles are padded).
    mpp : float or None
        Microns per level-0 pixel, 0.05 to 20. None writes no mpp; the content is then drawn at
        0.25 µm/px.
    tile_px : int
        Tile width and height, a multiple of 16 (JPEG 4:2:0 blocks).
    jpeg_quality : int
        JPEG quality, 1 to 100.
    seed : int
        Non-negative seed; the same arguments give byte-identical files.
    tissue_fraction : float
        Approximate fraction of the slide area covered by tissue, in (0, 1].
    tumour : bool
        Draw 1-3 tumour regions (label 2) inside the tissue.
    grade : int or None
        Tumour grade 1, 2 or 3 (well, moderately, poorly differentiated): nuclei grow larger,
        darker and more crowded with the grade. None draws ungraded tumour (between 1 and 2).
    mpp_in_description : bool
        Write ``MPP =`` (and ``AppMag =``) into the Aperio ImageDescription. False leaves openslide
        without an mpp, to test fallbacks such as ``resolution_tags``.
    resolution_tags : bool
        Also write TIFF XResolution / YResolution in pixels per centimetre (ResolutionUnit
        CENTIMETER) on every level. Needs an mpp.
    mask_downsample : int
        Level-0 pixels per mask pixel, at least 1.

    Returns
    -------
    SyntheticSlide
        Paths and geometry of what was written.

    Raises
    ------
    WsiHccError
        An argument is invalid.

    Notes
    -----
    The pyramid has levels at downsample 1, 4, 16, ... until a level is shorter than 1024 px on
    its long side; level ``k`` has size ``ceil(width / 4**k) x ceil(height / 4**k)`` and each of
    its pixels is the rounded mean of the level-0 pixels it covers (partial blocks at the right and
    bottom edges average the pixels that exist). Tiles are JPEG in YCbCr with 4:2:0 subsampling and
    PhotometricInterpretation YCbCr, which is what tifffile writes for RGB input.
    """
    out = Path(path)
    _validate(
        out, size_px, mpp, tile_px, jpeg_quality, seed, tissue_fraction, resolution_tags,
        mask_downsample,
    )
    width_px, height_px = int(size_px[0]), int(size_px[1])
    mpp = None if mpp is None else float(mpp)
    started = time.perf_counter()
    content_mpp = mpp if mpp is not None else _DEFAULT_MPP
    if grade is not None and grade not in (1, 2, 3):
        raise WsiHccError(f"{out}: grade must be 1, 2 or 3 (or None), not {grade!r}")
    scene = _Scene(
        (width_px, height_px), content_mpp, int(seed), float(tissue_fraction), bool(tumour),
        grade if tumour else None,
    )
    level_sizes = _level_sizes((width_px, height_px))
    level_downsamples = tuple(_LEVEL_FACTOR**k for k in range(len(level_sizes)))

    out.parent.mkdir(parents=True, exist_ok=True)
    mask_path = out.with_name(f"{out.stem}.mask.png")
    json_path = out.with_name(f"{out.stem}.synth.json")
    tmp = out.with_name(f".{out.name}.part")
    try:
        _write_tiff(
            tmp, scene, level_sizes, tile_px=int(tile_px), jpeg_quality=int(jpeg_quality),
            mpp=mpp, mpp_in_description=bool(mpp_in_description),
            resolution_tags=bool(resolution_tags), filename=out.stem,
        )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)

    mask = scene.label_mask(int(mask_downsample))
    _write_png(mask_path, mask)
    params = {
        "generator": "wsi_hcc.synth",
        "format_version": 1,
        "slide": out.name,
        "mask": mask_path.name,
        "size_px": [width_px, height_px],
        "mpp": mpp,
        "content_mpp": scene.mpp,
        "tile_px": int(tile_px),
        "jpeg_quality": int(jpeg_quality),
        "seed": int(seed),
        "tissue_fraction": float(tissue_fraction),
        "tumour": bool(tumour),
        "grade": grade if tumour else None,
        "mpp_in_description": bool(mpp_in_description),
        "resolution_tags": bool(resolution_tags),
        "mask_downsample": int(mask_downsample),
        "mask_size_px": [int(mask.shape[1]), int(mask.shape[0])],
        "level_dimensions": [list(s) for s in level_sizes],
        "level_downsamples": list(level_downsamples),
        "labels": {str(k): v for k, v in MASK_LABELS.items()},
    }
    json_path.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    logger.info(
        "wrote synthetic slide %s (%dx%d px, %d levels) in %.1f s",
        out, width_px, height_px, len(level_sizes), time.perf_counter() - started,
    )
    return SyntheticSlide(
        path=out,
        mask_path=mask_path,
        size_px=(width_px, height_px),
        mpp=mpp,
        mask_downsample=int(mask_downsample),
        level_downsamples=level_downsamples,
    )


def _validate(
    out: Path,
    size_px: object,
    mpp: object,
    tile_px: object,
    jpeg_quality: object,
    seed: object,
    tissue_fraction: object,
    resolution_tags: object,
    mask_downsample: object,
) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_real(v: object) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    if out.suffix.lower() not in {".svs", ".tif", ".tiff"}:
        raise WsiHccError(f"synthetic slide {out}: name must end in .svs, .tif or .tiff")
    if (
        not isinstance(size_px, (tuple, list))
        or len(size_px) != 2
        or not all(is_int(v) and v > 0 for v in size_px)
    ):
        raise WsiHccError(
            f"size_px must be two positive integers (width, height), got {size_px!r}"
        )
    if mpp is not None and not (is_real(mpp) and math.isfinite(mpp) and 0.05 <= mpp <= 20):
        raise WsiHccError(f"mpp must be between 0.05 and 20 µm/px or None, got {mpp!r}")
    if not (is_int(tile_px) and 16 <= tile_px <= 4096 and tile_px % 16 == 0):
        raise WsiHccError(f"tile_px must be a multiple of 16 between 16 and 4096, got {tile_px!r}")
    if not (is_int(jpeg_quality) and 1 <= jpeg_quality <= 100):
        raise WsiHccError(f"jpeg_quality must be an integer from 1 to 100, got {jpeg_quality!r}")
    if not (is_int(seed) and seed >= 0):
        raise WsiHccError(f"seed must be a non-negative integer, got {seed!r}")
    if not (is_real(tissue_fraction) and 0 < tissue_fraction <= 1):
        raise WsiHccError(f"tissue_fraction must be in (0, 1], got {tissue_fraction!r}")
    if not (is_int(mask_downsample) and mask_downsample >= 1):
        raise WsiHccError(f"mask_downsample must be a positive integer, got {mask_downsample!r}")
    if resolution_tags and mpp is None:
        raise WsiHccError("resolution_tags=True needs an mpp; pass mpp= or resolution_tags=False")
