"""Drop-in files for CLAM and TRIDENT (``--h5-layout clam|trident``): their folders, names, datasets,
dtypes and attributes, with values chosen so that each tool's own reader cuts the area of our tiles.

How the tools read and write these files (read in their sources: mahmoodlab/CLAM at 53e2409,
mahmoodlab/TRIDENT at a91fa84; nothing of theirs is copied here).

CLAM
  * ``create_patches_fp.py`` -> ``wsi_core/WholeSlideImage.py`` ``process_contour`` writes
    ``<save_dir>/patches/<slide_id>.h5`` through ``utils/file_utils.py`` ``save_hdf5``: ``coords``
    (N, 2) int64 level-0 (x, y), attributes ``patch_size`` (pixels *at* ``patch_level``),
    ``patch_level``, ``downsample`` (the level's (dx, dy)), ``downsampled_level_dim``, ``level_dim``,
    ``name``, ``save_path``.
  * ``dataset_modules/dataset_h5.py`` ``Whole_Slide_Bag_FP`` reads only ``patch_level`` and
    ``patch_size``; ``__getitem__`` is ``wsi.read_region(coord, patch_level, (patch_size,
    patch_size)).convert('RGB')``, so a patch spans ``patch_size * level_downsamples[patch_level]``
    level-0 pixels, then ``utils/transform_utils.py`` ``get_eval_transforms`` resizes it (torchvision
    ``Resize``, bilinear) to the encoder's size. ``wsi_core/wsi_utils.py`` ``StitchCoords`` reads
    ``name``, ``patch_size`` and ``patch_level`` the same way. ``patch_size`` is a whole number of
    pixels at an existing level: a resampled tile that spans a fractional number of them cannot be
    described exactly.
  * ``extract_features_fp.py`` ``compute_w_loader`` writes ``<feat_dir>/h5_files/<slide_id>.h5``
    (``features`` float32 (N, D), ``coords`` int32, no attributes), then
    ``torch.save(torch.from_numpy(features), <feat_dir>/pt_files/<slide_id>.pt)``: a plain tensor.
  * ``dataset_modules/dataset_generic.py`` ``Generic_MIL_Dataset.__getitem__`` trains from
    ``torch.load(<data_dir>/pt_files/<slide_id>.pt)`` by default, from ``h5_files`` (``features``,
    ``coords``) with ``use_h5``; the model's weights are float32, so float16 features fail there.

TRIDENT
  * ``trident/IO.py`` ``coords_to_h5`` (called by ``wsi_objects/WSI.py`` ``extract_tissue_coords``)
    writes ``<job>/<mag>x_<ps>px_<ov>px_overlap/patches/<name>_patches.h5`` (``save_h5``): ``coords``
    int64 with ``patch_size`` (pixels at the target magnification), ``patch_size_level0``,
    ``level0_magnification``, ``target_magnification``, ``overlap``, ``name``, ``savetodir``,
    ``level0_width``, ``level0_height``. The folder name is ``f"{float(mag):g}x_..."``
    (``Processor.run_patching_job``, ``run_batch_of_slides.py``).
  * ``WSI.extract_patch_features`` reads them with ``IO.read_coords``; without ``patch_size``,
    ``level0_magnification`` or ``target_magnification`` it falls back to CLAM's reading
    (``WSIPatcher.from_legacy_coords_file``: ``patch_size`` at ``patch_level``).
  * ``wsi_objects/WSIPatcher.py``: pixel sizes are ``10 / magnification``; ``downsample = dst / src``;
    a patch spans ``patch_size_src = round(patch_size * downsample)`` level-0 pixels; ``_prepare``
    takes the level from ``WSI.get_best_level_and_custom_downsample(downsample, tolerance=0.1)`` (a
    level within 0.1 of it, else the coarsest finer one) and reads ``round(patch_size_src /
    int(level_downsample))`` pixels there (``get_tile_xy``: ``read_region``, then PIL ``resize`` to
    ``patch_size``, bicubic).
  * ``Processor.run_patch_feature_extraction_job`` needs ``<coords_dir>/patches/<name>_patches.h5``
    (else "coords_not_found") and writes ``<coords_dir>/features_<encoder>/<name>.h5``: ``features``
    (float32 from the usual encoders) with ``name``, ``savetodir``, ``encoder``, and ``coords`` with
    the coords file's attributes. ``WSI.extract_slide_features`` reads those three and casts
    ``patch_size_level0`` to int.

What we write: CLAM's ``patch_level`` is the level our tiles were read from and ``patch_size`` the
tile's edge there (``tile_px * scale``, rounded); TRIDENT's ``level0_magnification`` is ``10 /
slide_mpp`` and ``target_magnification`` ``10 /`` the tiles' own pixel size (the target, or the
level's pixel size when read natively within 1%), so ``patch_size_src`` is our tile's level-0 edge.
Every file also carries our provenance as JSON in the file's (root) attribute ``wsi_hcc``, which
neither tool reads. :func:`layout_warnings` replays each reader's arithmetic on the attributes and
says in one line when its patch would differ from our tile by more than half an output pixel, or in
colour (stain-normalised tiles).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.records import SlideInfo, TileSpec
from wsi_hcc.store.h5export import write_coords_h5
from wsi_hcc.utils.atomic import atomic_write_bytes, partial_path
from wsi_hcc.utils.versions import stack_versions, utc_now

__all__ = ["H5_LAYOUTS", "ToolRead", "trident_job_dir", "coords_file_path", "feature_file_paths",
           "trident_coords_attrs", "clam_coords_attrs", "clam_reads", "trident_reads", "layout_warnings",
           "write_coords_files", "write_feature_files"]

H5_LAYOUTS = ("flat", "trident", "clam")
MISREAD_TOLERANCE_PX = 0.5  # output pixels: what whole-pixel coordinates cannot do better than anyway
_TRIDENT_LEVEL_TOLERANCE = 0.1  # WSIPatcher._prepare's tolerance on a level's downsample


@dataclass(frozen=True)
class ToolRead:
    """The region a tool reads for one tile: ``size_level`` pixels at ``level``, ``extent_level0`` level-0 px."""

    level: int
    size_level: int
    extent_level0: float


def trident_job_dir(out_dir: Path, spec: TileSpec) -> Path:
    """``<out>/<mag>x_<tile_px>px_<overlap_px>px_overlap``, named as TRIDENT names it for ``--mag 10/target_mpp``."""
    return Path(out_dir) / f"{10.0 / spec.target_mpp:g}x_{spec.tile_px}px_{spec.overlap_px}px_overlap"


def coords_file_path(layout: str, out_dir: Path, stem: str, spec: TileSpec) -> Path:
    out_dir = Path(out_dir)
    if layout == "trident":
        return trident_job_dir(out_dir, spec) / "patches" / f"{stem}_patches.h5"
    if layout == "clam":
        return out_dir / "patches" / f"{stem}.h5"
    return out_dir / f"{stem}.h5"


def feature_file_paths(layout: str, out_dir: Path, stem: str, spec: TileSpec, encoder: str) -> tuple[Path, ...]:
    """Every file :func:`write_feature_files` writes for one slide."""
    out_dir = Path(out_dir)
    if layout == "trident":
        folder = "features_" + re.sub(r"[^\w.-]", "_", encoder)  # a timm hub name holds '/' and ':'
        return coords_file_path(layout, out_dir, stem, spec), trident_job_dir(out_dir, spec) / folder / f"{stem}.h5"
    if layout == "clam":
        return (coords_file_path(layout, out_dir, stem, spec), out_dir / "h5_files" / f"{stem}.h5",
                out_dir / "pt_files" / f"{stem}.pt")
    return (coords_file_path(layout, out_dir, stem, spec),)


def _tile_mpp(spec: TileSpec, slide: SlideInfo) -> float:
    """The tiles' own pixel size: the target, or the read level's when read natively (within 1%)."""
    return slide.slide_mpp * spec.level_downsample if spec.native else spec.target_mpp


def trident_coords_attrs(spec: TileSpec, slide: SlideInfo, stem: str, job_dir: Path) -> dict[str, Any]:
    return {
        "patch_size": int(spec.tile_px),
        "patch_size_level0": int(round(spec.tile_size_level0)),
        "level0_magnification": float(10.0 / slide.slide_mpp),
        "target_magnification": float(10.0 / _tile_mpp(spec, slide)),
        "overlap": int(spec.overlap_px),
        "name": stem,
        "savetodir": str(job_dir),
        "level0_width": int(slide.dimensions[0]),
        "level0_height": int(slide.dimensions[1]),
    }


def clam_coords_attrs(spec: TileSpec, slide: SlideInfo, stem: str, patches_dir: Path) -> dict[str, Any]:
    level_dim = np.asarray(slide.level_dimensions[spec.level], dtype=np.int64)
    # CLAM's WholeSlideImage._assertLevelDownsamples: the level's (dx, dy) from its dimensions when
    # they disagree with the reported downsample
    estimated = np.asarray(slide.dimensions, dtype=np.float64) / level_dim
    downsample = estimated if tuple(estimated) != (spec.level_downsample,) * 2 else np.full(2, spec.level_downsample)
    return {
        "patch_size": int(round(spec.tile_px * spec.scale)),
        "patch_level": int(spec.level),
        "downsample": downsample,
        "downsampled_level_dim": level_dim,
        "level_dim": level_dim,
        "name": stem,
        "save_path": str(patches_dir),
    }


def clam_reads(attrs: dict[str, Any], level_downsamples: tuple[float, ...]) -> ToolRead:
    """What ``Whole_Slide_Bag_FP`` reads: ``patch_size`` pixels at ``patch_level``."""
    level, size = int(attrs["patch_level"]), int(attrs["patch_size"])
    return ToolRead(level, size, size * float(level_downsamples[level]))


def trident_reads(attrs: dict[str, Any], level_downsamples: tuple[float, ...]) -> ToolRead:
    """What ``WSI.extract_patch_features`` reads, through ``WSIPatcher`` (or its CLAM fallback)."""
    if all(attrs.get(key) is not None for key in ("patch_size", "level0_magnification", "target_magnification")):
        downsample = (10.0 / float(attrs["target_magnification"])) / (10.0 / float(attrs["level0_magnification"]))
    else:
        downsample = float(level_downsamples[int(attrs["patch_level"])]) * float(attrs.get("custom_downsample", 1))
    size_level0 = round(int(attrs["patch_size"]) * downsample)
    level = _trident_level(level_downsamples, downsample)
    size_level = round(size_level0 / int(level_downsamples[level]))
    return ToolRead(level, size_level, size_level * float(level_downsamples[level]))


def _trident_level(level_downsamples: tuple[float, ...], downsample: float) -> int:
    """The level ``WSI.get_best_level_and_custom_downsample`` picks for ``downsample``."""
    for level, level_downsample in enumerate(level_downsamples):
        if abs(level_downsample - downsample) <= _TRIDENT_LEVEL_TOLERANCE:
            return level
    if downsample >= level_downsamples[0]:
        return max(level for level, d in enumerate(level_downsamples) if d <= downsample)
    return next(level for level, d in enumerate(level_downsamples) if d >= downsample)


def layout_warnings(layout: str, stem: str, spec: TileSpec, slide: SlideInfo,
                    stain_reference: dict | None = None) -> tuple[str, ...]:
    """One line per way the tools' patches would differ from our tiles (none when they match)."""
    downsamples = tuple(slide.level_downsamples)
    tile_um = spec.tile_size_level0 * slide.slide_mpp
    warnings = []
    if layout == "flat":
        read = clam_reads({"patch_size": spec.tile_px, "patch_level": spec.level}, downsamples)
        if _misread_px(read, spec) > MISREAD_TOLERANCE_PX:
            warnings.append(f"{stem}.h5: CLAM and TRIDENT read {read.size_level} px at level {read.level} "
                            f"({read.extent_level0 * slide.slide_mpp:.4g} um) where tiles span {tile_um:.4g} um; "
                            f"use --h5-layout clam or trident for their files")
    else:
        tools = {"clam": ("CLAM", clam_reads, clam_coords_attrs(spec, slide, stem, Path())),
                 "trident": ("TRIDENT", trident_reads, trident_coords_attrs(spec, slide, stem, Path()))}
        tool, reads, attrs = tools[layout]
        read = reads(attrs, downsamples)
        if _misread_px(read, spec) > MISREAD_TOLERANCE_PX:
            warnings.append(f"{stem}: {tool} reads {read.size_level} px at level {read.level} "
                            f"({read.extent_level0:.2f} level-0 px) where tiles span {spec.tile_size_level0:.2f}; "
                            f"its patches are {read.extent_level0 / spec.tile_size_level0 - 1:+.1%} in size")
    if stain_reference is not None:
        tool = {"flat": "CLAM and TRIDENT", "clam": "CLAM", "trident": "TRIDENT"}[layout]
        warnings.append(f"{stem}: tiles are stain-normalised ({stain_reference.get('method', 'unknown')}); "
                        f"{tool} reads the slide's own colours")
    return tuple(warnings)


def _misread_px(read: ToolRead, spec: TileSpec) -> float:
    """How far the tool's patch edge is from ours, in output pixels."""
    return abs(read.extent_level0 - spec.tile_size_level0) * spec.tile_px / spec.tile_size_level0


def write_coords_files(layout: str, out_dir: Path, stem: str, coords: np.ndarray, spec: TileSpec,
                       slide: SlideInfo, stain_reference: dict | None = None) -> tuple[Path, tuple[str, ...]]:
    """Write the tool's coordinate file for one slide; return its path and :func:`layout_warnings`."""
    path = coords_file_path(layout, out_dir, stem, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if layout == "flat":
        _atomic(path, lambda tmp: write_coords_h5(tmp, coords, spec, slide))
    else:
        attrs = _coords_attrs(layout, spec, slide, stem, path.parent)
        _atomic(path, lambda tmp: _write_h5(tmp, {"coords": (coords, attrs)}, spec, slide, layout))
    return path, layout_warnings(layout, stem, spec, slide, stain_reference)


def write_feature_files(layout: str, out_dir: Path, stem: str, coords: np.ndarray, features: np.ndarray,
                        spec: TileSpec, slide: SlideInfo, encoder: str,
                        stain_reference: dict | None = None) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """Write the tool's coordinate and feature files for one slide (features as float32)."""
    paths = feature_file_paths(layout, out_dir, stem, spec, encoder)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    features = np.ascontiguousarray(features, dtype=np.float32)
    if layout == "flat":
        _atomic(paths[0], lambda tmp: write_coords_h5(tmp, coords, spec, slide, features=features))
        return paths, layout_warnings(layout, stem, spec, slide, stain_reference)
    _, warnings = write_coords_files(layout, out_dir, stem, coords, spec, slide, stain_reference)
    if layout == "trident":
        attrs = _coords_attrs(layout, spec, slide, stem, paths[0].parent)
        feature_attrs = {"name": stem, "savetodir": str(paths[1].parent), "encoder": encoder}
        _atomic(paths[1], lambda tmp: _write_h5(tmp, {"features": (features, feature_attrs),
                                                      "coords": (coords, attrs)}, spec, slide, layout))
    else:
        _atomic(paths[1], lambda tmp: _write_h5(tmp, {"features": (features, {}),
                                                      "coords": (coords.astype(np.int32), {})}, spec, slide, layout))
        atomic_write_bytes(paths[2], _plain_tensor_bytes(features))
    return paths, warnings


def _coords_attrs(layout: str, spec: TileSpec, slide: SlideInfo, stem: str, folder: Path) -> dict[str, Any]:
    if layout == "trident":
        return trident_coords_attrs(spec, slide, stem, folder.parent.resolve())
    return clam_coords_attrs(spec, slide, stem, folder.resolve())


def _write_h5(path: Path, datasets: dict[str, tuple[np.ndarray, dict[str, Any]]], spec: TileSpec,
              slide: SlideInfo, layout: str) -> None:
    import h5py

    with h5py.File(path, "w") as h5:
        h5.attrs["wsi_hcc"] = json.dumps({"layout": layout, "created": utc_now(), "slide": slide.to_dict(),
                                          "tile_spec": spec.to_dict(), "versions": stack_versions()})
        for name, (data, attrs) in datasets.items():
            dataset = h5.create_dataset(name, data=data)
            for key, value in attrs.items():
                dataset.attrs[key] = value


def _plain_tensor_bytes(features: np.ndarray) -> bytes:
    """``torch.save`` of a plain float32 tensor, as CLAM saves and loads ``pt_files``."""
    import torch

    buffer = io.BytesIO()
    torch.save(torch.from_numpy(features.copy()), buffer)
    return buffer.getvalue()


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = partial_path(path)
    write(tmp)
    os.replace(tmp, path)
