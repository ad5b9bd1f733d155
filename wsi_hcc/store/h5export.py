"""The ``flat`` coordinate file, ``<stem>.h5`` (``--h5``): CLAM-style, as written before the tools'
own layouts (``wsi_hcc.store.tool_layouts``). CLAM and TRIDENT read the right area from it only for
tiles read natively, since its ``patch_size`` is in output pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_hcc.records import SlideInfo, TileSpec

__all__ = ["write_coords_h5"]


def write_coords_h5(path: Path, coords: np.ndarray, spec: TileSpec, slide: SlideInfo,
                    features: np.ndarray | None = None) -> None:
    """Write ``coords`` (N, 2) level-0 (x, y) with CLAM's attributes on the dataset, and
    ``features`` (N, D) beside them when given (the layout CLAM and TRIDENT train MIL models from).

    CLAM reads ``patch_size`` and ``patch_level`` and TRIDENT ``patch_size_level0`` and
    ``target_magnification``; we add the exact resolution, which neither records.
    """
    import h5py

    with h5py.File(path, "w") as h5:
        dataset = h5.create_dataset("coords", data=np.asarray(coords, dtype=np.int64))
        attrs = dataset.attrs
        attrs["patch_size"] = spec.tile_px
        attrs["patch_level"] = spec.level
        attrs["patch_size_level0"] = int(round(spec.tile_size_level0))
        attrs["target_mpp"] = spec.target_mpp
        attrs["target_magnification"] = 10.0 / spec.target_mpp  # the usual 10 um / mpp convention
        attrs["level0_mpp"] = slide.slide_mpp
        attrs["overlap"] = spec.overlap_px
        attrs["level_dim"] = slide.level_dimensions[spec.level]
        attrs["downsample"] = (spec.level_downsample, spec.level_downsample)
        attrs["name"] = Path(slide.path).stem
        attrs["save_path"] = str(path.parent)
        if features is not None:
            h5.create_dataset("features", data=features)
