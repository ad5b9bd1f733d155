"""TotalSegmentator's example CT from ../shared/data, with a tumour drawn into its liver (it has none),
for the tests that run radiology models on a real scan (``from real_ct import real_ct_with_drawn_tumour``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "radiology" / "nifti_totalseg"
LIVER_LABEL = 5


def real_ct_with_drawn_tumour(out_dir: Path) -> tuple[Path, Path, Path]:
    """(CT, its segmentation, ``out_dir/tumour.nii.gz``): a sphere of at most 10 mm radius at the liver's
    deepest point. Skips with the reason when the real data is absent."""
    from scipy.ndimage import distance_transform_edt

    from wsi_hcc.radiology import load_volume, save_nifti

    ct_path, seg_path = DATA / "example_ct_sm.nii.gz", DATA / "example_seg.nii.gz"
    if not (ct_path.is_file() and seg_path.is_file()):
        pytest.skip(f"real data absent: {DATA} (see shared/data/SOURCES.md)")
    seg = load_volume(seg_path)
    liver = seg.array == LIVER_LABEL
    depth = distance_transform_edt(liver, sampling=seg.spacing_mm)
    centre = np.unravel_index(np.argmax(depth), liver.shape)
    grid = np.indices(liver.shape).transpose(1, 2, 3, 0)
    radius_mm = min(10.0, 0.6 * float(depth.max()))
    sphere = np.linalg.norm((grid - centre) * np.asarray(seg.spacing_mm), axis=-1) <= radius_mm
    assert sphere.any() and not (sphere & ~liver).any()
    tumour = out_dir / "tumour.nii.gz"
    save_nifti(seg.with_array(sphere.astype(np.uint8), modality="SEG"), tumour)
    return ct_path, seg_path, tumour
