"""Volumes: real DICOM (JPEG-2000) / NIfTI / DICOM SEG reading, NIfTI round trip, resampling, windows, registration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology import (
    Volume,
    ct_window,
    load_volume,
    mri_normalise,
    register_volume,
    reorient,
    resample_like,
    resample_to_spacing,
    save_nifti,
)

RADIOLOGY = Path(__file__).resolve().parents[3] / "shared" / "data" / "radiology"
CT_DICOM = RADIOLOGY / "ct_abdomen_totalseg_dicom"
CT_DICOM_SEG = RADIOLOGY / "ct_abdomen_totalseg_dicom_seg.nii.gz"
NIFTI_SEG = RADIOLOGY / "nifti_totalseg" / "example_seg.nii.gz"
NIFTI_MR = RADIOLOGY / "nifti_totalseg" / "example_mr_sm.nii.gz"
SEG_DCM = RADIOLOGY / "pydicom" / "liver_1frame.dcm"
CT_SMALL = RADIOLOGY / "pydicom" / "CT_small.dcm"
LIVER = 5


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real radiology data not found at {path} (../shared/data is only beside CI and dev clones)")
    return path


@pytest.fixture(scope="module")
def real_ct() -> Volume:
    return load_volume(_need(CT_DICOM))


def test_jpeg2000_dicom_series_reads_with_its_geometry(real_ct):
    assert real_ct.shape == (20, 512, 512)
    np.testing.assert_allclose(real_ct.spacing_mm, (2.0, 0.977, 0.977), atol=1e-3)
    assert real_ct.modality == "CT"
    np.testing.assert_allclose(real_ct.origin_mm[2], -804.5, atol=1e-3)
    # Columns follow the array axes (z, y, x): z runs superior (LPS S), y posterior, x left.
    np.testing.assert_allclose(real_ct.direction, np.eye(3)[:, ::-1], atol=1e-6)
    # Rescaled to HU: air near -1000, and soft tissue present.
    assert real_ct.array.min() <= -1000 and np.median(real_ct.array[real_ct.array > -200]) > 0


def test_totalsegmentator_seg_aligns_with_the_dicom_after_reorientation(real_ct):
    seg = load_volume(_need(CT_DICOM_SEG))
    # The NIfTI is stored LAS; the DICOM LPS: the same voxels once reoriented.
    assert not np.allclose(seg.direction, real_ct.direction)
    aligned = reorient(seg, "LPS")
    assert aligned.same_grid(real_ct, atol_mm=1e-2)
    assert int((aligned.array == LIVER).sum()) == 366_708
    # The liver lies at soft-tissue HU (a misaligned mask would catch fat, air or bone).
    assert 40 < float(np.median(real_ct.array[aligned.array == LIVER])) < 200
    back = reorient(aligned, "LAS")
    assert back.same_grid(seg) and np.array_equal(back.array, seg.array)


def test_nifti_round_trip_keeps_voxels_and_geometry(tmp_path):
    seg = load_volume(_need(NIFTI_SEG))
    mr = load_volume(_need(NIFTI_MR), modality="MR")
    for volume in (seg, mr):
        out = save_nifti(volume, tmp_path / "round.nii.gz")
        again = load_volume(out)
        assert again.array.dtype == volume.array.dtype and np.array_equal(again.array, volume.array)
        np.testing.assert_allclose(again.spacing_mm, volume.spacing_mm, atol=1e-5)
        np.testing.assert_allclose(again.origin_mm, volume.origin_mm, atol=1e-4)
        np.testing.assert_allclose(again.direction, volume.direction, atol=1e-6)
    # An oblique, anisotropic synthetic volume too (exercises the LPS -> RAS flip and axis order).
    angle = np.radians(20)
    direction = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    synthetic = Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), spacing_mm=(3.0, 0.8, 0.7),
                       origin_mm=(-10.5, 20.25, -300.0), direction=direction)
    again = load_volume(save_nifti(synthetic, tmp_path / "oblique.nii"))
    assert np.array_equal(again.array, synthetic.array)
    np.testing.assert_allclose(again.affine_lps, synthetic.affine_lps, atol=1e-4)
    assert not list(tmp_path.glob(".*partial"))


def test_dicom_seg_loads_as_a_mask():
    seg = load_volume(_need(SEG_DCM))
    assert seg.modality == "SEG" and seg.shape == (1, 512, 512)
    assert int((seg.array == 1).sum()) == 36_233
    assert seg.label_names == {1: "Liver"}
    np.testing.assert_allclose(seg.spacing_mm[1:], (0.810547, 0.810547), atol=1e-5)
    np.testing.assert_allclose(seg.origin_mm, (-235.2, -226.8, -128.69), atol=1e-3)


def test_single_dicom_slice_reads():
    ct = load_volume(_need(CT_SMALL))
    assert ct.shape == (1, 128, 128) and ct.modality == "CT"
    np.testing.assert_allclose(ct.spacing_mm[1:], (0.661468, 0.661468), atol=1e-5)


def test_liver_volume_survives_3_to_1_5_to_3_mm():
    seg = load_volume(_need(NIFTI_SEG))
    liver = seg.with_array((seg.array == LIVER).astype(np.uint8))
    fine = resample_to_spacing(liver, 1.5, label=True)
    assert fine.shape == tuple(2 * n for n in seg.shape) and fine.array.dtype == np.uint8
    back = resample_to_spacing(fine, 3.0, label=True)
    assert back.same_grid(seg)
    before = liver.array.sum() * liver.voxel_volume_ml
    for volume in (fine, back):
        assert abs(volume.array.sum() * volume.voxel_volume_ml - before) / before < 0.02


def test_liver_volume_survives_an_anisotropic_non_integer_resampling(real_ct):
    seg = reorient(load_volume(_need(CT_DICOM_SEG)), "LPS")
    liver = seg.with_array(seg.array == LIVER)
    # 4 mm divides the 40 mm slab: the field of view is kept up to rounding of the size.
    coarse = resample_to_spacing(liver, (4.0, 1.7, 1.7), label=True)
    assert coarse.array.dtype == bool
    back = resample_like(coarse, liver, label=True)
    for volume in (coarse, back):
        ratio = volume.array.sum() * volume.voxel_volume_ml / (liver.array.sum() * liver.voxel_volume_ml)
        assert abs(ratio - 1) < 0.02
    # Linear interpolation of the image keeps the field of view and the HU scale.
    image = resample_to_spacing(real_ct, 2.0)
    assert image.shape == (20, 250, 250) and image.array.dtype == np.float32
    np.testing.assert_allclose(image.array.mean(), real_ct.array.mean(), rtol=0.02)


def test_ct_windows_and_mri_normalisation():
    hu = np.array([-1000, -20, 60, 140, 2000], np.int16)
    np.testing.assert_allclose(ct_window(hu, "liver"), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(ct_window(hu, (40, 400)), [0, 0.35, 0.55, 0.75, 1])
    with pytest.raises(ValueError, match="unknown CT window"):
        ct_window(hu, "brain-ish")
    mr = load_volume(_need(NIFTI_MR)).array
    z = mri_normalise(mr, "zscore")
    body = mr > np.percentile(mr, 10)
    assert abs(z[body].mean()) < 1e-3 and abs(z[body].std() - 1) < 1e-3
    p = mri_normalise(mr, "percentile")
    assert p.min() == 0 and p.max() == 1 and 0.005 < (p[body] == 1).mean() < 0.02


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(WsiHccError, match="no such file"):
        load_volume(tmp_path / "missing.nii.gz")
    empty = tmp_path / "not_dicom"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(WsiHccError, match="no DICOM series") as info:
        load_volume(empty)
    assert "\n" not in str(info.value)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(WsiHccError, match="broken.nii.gz"):
        load_volume(broken)


def test_mixed_series_folder_is_refused(tmp_path):
    import pydicom

    files = sorted(_need(CT_DICOM).iterdir())[:3]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        if index == 2:
            ds.SeriesInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(mixed / path.name)
    with pytest.raises(WsiHccError, match="2 DICOM series"):
        load_volume(mixed)


def test_missing_slice_is_refused(tmp_path):
    import shutil

    files = sorted(_need(CT_DICOM).iterdir())
    gappy = tmp_path / "gappy"
    gappy.mkdir()
    for path in files[:5] + files[6:9]:
        shutil.copy(path, gappy / path.name)
    with pytest.raises(WsiHccError, match="uneven"):
        load_volume(gappy)


@pytest.mark.slow
def test_known_rigid_motion_of_the_real_ct_is_recovered_within_1_mm(real_ct):
    # A second acquisition after the patient moved by M (3 degrees about the scanner axis plus
    # 4.3 / -2.7 / 3.1 mm): the same sharp voxels, placed at M(p). Making the moved scan by
    # interpolating 2 mm slices at a 1.55-slice offset instead blurs it in z, and mutual
    # information then prefers whole-slice offsets (an artefact of the simulation, 1-2 mm here).
    import SimpleITK as sitk

    from wsi_hcc.radiology import to_sitk

    image = to_sitk(real_ct)
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    motion = sitk.Euler3DTransform()
    motion.SetCenter(centre)
    motion.SetRotation(0.0, 0.0, np.radians(3.0))
    motion.SetTranslation((4.3, -2.7, 3.1))
    rotation = np.asarray(motion.GetMatrix()).reshape(3, 3)
    moving = replace(real_ct, origin_mm=motion.TransformPoint(real_ct.origin_mm),
                     direction=rotation @ real_ct.direction)
    registration = register_volume(real_ct, moving, working_spacing_mm=3.0)
    index = np.stack(np.meshgrid([0, 10, 19], [50, 256, 460], [50, 256, 460], indexing="ij"), -1).reshape(-1, 3)
    points = index * np.asarray(real_ct.spacing_mm) @ real_ct.direction.T + np.asarray(real_ct.origin_mm)
    truth = np.array([motion.TransformPoint(tuple(p)) for p in points])
    error_mm = np.linalg.norm(registration.map_points(points) - truth, axis=1)
    assert error_mm.max() < 1.0, (registration.summary(), error_mm.max())
    assert abs(registration.summary()["rotation_deg"] - 3.0) < 0.2
    # The moving scan resampled onto the fixed grid matches the fixed voxels away from the edges.
    assert registration.resampled.same_grid(real_ct)
    inner = (slice(4, 16), slice(64, 448), slice(64, 448))
    residual = np.abs(registration.resampled.array[inner] - real_ct.array[inner].astype(np.float32))
    assert np.median(residual) < 10


def test_registration_refuses_an_unknown_transform(real_ct):
    with pytest.raises(ValueError, match="transform must be one of"):
        register_volume(real_ct, real_ct, transform="bspline")
