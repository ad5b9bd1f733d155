"""The multi-phase phantom (enhancement pattern, MVI satellites, heterogeneity, motion) and the radiology CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from wsi_hcc.cli.radiology import COMMANDS, radiology
from wsi_hcc.radiology import (
    first_order_features,
    load_volume,
    make_phantom,
    peritumoral_ring,
    register_volume,
    write_phantom,
)

SMALL = dict(shape=(32, 96, 96), spacing_mm=(2.5, 1.5, 1.5))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(**SMALL, mvi=True, heterogeneity=0.3, noise_hu=5.0, seed=3)


def _core(mask):
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask, iterations=1)


def test_lesions_enhance_arterially_and_wash_out(phantom):
    tumour, liver = _core(phantom.tumour_mask), _core(phantom.liver_mask & ~phantom.tumour_mask & ~phantom.vessel_mask)
    mean = {name: {"tumour": v.array[tumour].mean(), "liver": v.array[liver].mean()}
            for name, v in phantom.phases.items()}
    assert mean["arterial"]["tumour"] > mean["arterial"]["liver"] + 30
    assert mean["portal"]["tumour"] < mean["portal"]["liver"] - 15
    assert mean["delayed"]["tumour"] < mean["delayed"]["liver"] - 15
    assert all(v.array.dtype == np.int16 and v.modality == "CT" for v in phantom.phases.values())
    assert phantom.tumour_mask.any() and not (phantom.tumour_mask & ~phantom.liver_mask).any()


def test_mvi_satellites_lie_in_the_6_mm_ring(phantom):
    assert phantom.mvi and len(phantom.lesions[0].satellites) > 0
    ring = peritumoral_ring(phantom.tumour_mask, phantom.phases["portal"].spacing_mm, 6.0)
    assert phantom.satellite_mask.any()
    assert (phantom.satellite_mask & ring).sum() / phantom.satellite_mask.sum() > 0.9
    arterial = phantom.phases["arterial"].array
    liver = phantom.liver_mask & ~phantom.tumour_mask & ~phantom.satellite_mask & ~phantom.vessel_mask
    assert arterial[phantom.satellite_mask].mean() > arterial[liver].mean() + 20
    plain = make_phantom(**SMALL, mvi=False, seed=3)
    assert not plain.satellite_mask.any() and plain.lesions[0].satellites == ()


def test_heterogeneity_is_measurable():
    sds = []
    for heterogeneity in (0.0, 0.5, 1.0):
        ph = make_phantom(**SMALL, heterogeneity=heterogeneity, noise_hu=0.0, seed=4)
        sds.append(first_order_features(ph.phases["arterial"].array[_core(ph.tumour_mask)])["sd"])
    assert sds[0] < sds[1] < sds[2] and sds[2] > 2 * sds[0]


def test_motion_is_recorded_and_recoverable():
    ph = make_phantom(**SMALL, phases=("arterial", "portal"), motion_mm=4.0, noise_hu=5.0, seed=5)
    motion = ph.motion["arterial"]
    assert np.linalg.norm(motion[:3, 3]) == pytest.approx(4.0, abs=1e-6) and "portal" not in ph.motion
    registration = register_volume(ph.phases["portal"], ph.phases["arterial"], working_spacing_mm=3.0,
                                   metric_samples=5000)
    corners = np.array([[20.0, 30.0, 15.0], [120.0, 110.0, 60.0]])
    expected = corners @ motion[:3, :3].T + motion[:3, 3]
    assert np.abs(registration.map_points(corners) - expected).max() < 1.0


def test_write_phantom_round_trips(tmp_path, phantom):
    out = write_phantom(phantom, tmp_path / "ph")
    truth = json.loads((out / "truth.json").read_text())
    assert truth["truth"]["mvi"] is True and "versions" in truth
    labels = load_volume(out / "labels.nii.gz")
    assert set(np.unique(labels.array)) == {0, 1, 2, 3, 4}
    assert np.array_equal(labels.array == 2, phantom.tumour_mask)
    arterial = load_volume(out / "arterial.nii.gz")
    assert np.array_equal(arterial.array, phantom.phases["arterial"].array)


def test_cli_phantom_ring_features(tmp_path):
    assert COMMANDS == [radiology]
    runner = CliRunner()
    ph_dir = tmp_path / "ph"
    result = runner.invoke(radiology, ["phantom", "--out", str(ph_dir), "--shape", "28", "80", "80", "--mvi",
                                       "--seed", "1"])
    assert result.exit_code == 0, result.output
    labels = str(ph_dir / "labels.nii.gz")
    result = runner.invoke(radiology, ["ring", "--tumour", labels, "--tumour-label", "2", "--liver", labels,
                                       "--sweep", "2,6", "--out", str(tmp_path / "ring")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ring" / "ring.json").read_text())
    assert report["rings"]["2"]["volume_ml"] < report["rings"]["6"]["volume_ml"] and report["clipped_to_liver"]
    assert load_volume(tmp_path / "ring" / "ring_6mm.nii.gz").array.any()
    result = runner.invoke(radiology, ["features", "--image", f"arterial={ph_dir / 'arterial.nii.gz'}",
                                       "--image", f"portal={ph_dir / 'portal.nii.gz'}", "--tumour", labels,
                                       "--tumour-label", "2", "--liver", labels, "--habitats", "2",
                                       "--out", str(tmp_path / "feat")])
    assert result.exit_code == 0, result.output
    features = json.loads((tmp_path / "feat" / "features.json").read_text())
    tumour = features["regions"]["tumour"]
    assert tumour["arterial"]["first_order"]["mean"] > tumour["portal"]["first_order"]["mean"]
    assert set(features["regions"]) == {"tumour", "ring_6mm", "liver"} and len(features["habitats"]) == 2
    rows = (tmp_path / "feat" / "features.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2 and "glcm_contrast" in rows[0]


def test_cli_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(radiology, ["ring", "--tumour", str(tmp_path / "none.nii.gz"), "--out",
                                            str(tmp_path / "r")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "none.nii.gz" in result.output
    result = CliRunner().invoke(radiology, ["features", "--image", "nonsense", "--tumour", "x", "--out",
                                            str(tmp_path / "f")])
    assert result.exit_code == 2 and "PHASE=PATH" in result.output


def test_an_image_away_from_the_tumour_is_refused_by_features_and_predict(tmp_path):
    """A phase 5 km from the mask (another frame of reference) once gave a prediction and NaN features."""
    from dataclasses import replace

    from wsi_hcc.cli.radiology_models import predict
    from wsi_hcc.radiology import save_nifti

    phantom = write_phantom(make_phantom(shape=(28, 72, 72), spacing_mm=(2.5, 2.0, 2.0),
                                         phases=("arterial", "portal"), mvi=True, seed=4), tmp_path / "ph")
    portal = load_volume(phantom / "portal.nii.gz")
    save_nifti(replace(portal, origin_mm=(5e6, 0.0, 0.0)), tmp_path / "far.nii.gz")
    images = ["--image", f"arterial={phantom / 'arterial.nii.gz'}", "--image", f"portal={tmp_path / 'far.nii.gz'}"]
    mask = ["--tumour", str(phantom / "labels.nii.gz"), "--tumour-label", "2"]
    expected = (f"error: --image portal: the image does not contain the tumour's centre; the image and "
                f"{phantom / 'labels.nii.gz'} must share a frame of reference (register or re-export them)\n")
    result = CliRunner().invoke(radiology, ["features", *images, *mask, "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and result.output == expected and not (tmp_path / "f").exists()
    result = CliRunner().invoke(predict, ["--arch", "multiphase", *images, *mask, "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and result.output == expected and not (tmp_path / "p").exists()


def test_features_warn_naming_the_case_when_the_ring_holds_no_liver(tmp_path):
    """A liver mask with no liver around the tumour (here: the tumour label only) once gave NaN ring features
    silently."""
    ph_dir = write_phantom(make_phantom(shape=(24, 64, 64), spacing_mm=(2.5, 2.0, 2.0), phases=("arterial",),
                                        reference_phase="arterial", seed=2), tmp_path / "ph")
    labels = str(ph_dir / "labels.nii.gz")
    args = ["features", "--image", f"arterial={ph_dir / 'arterial.nii.gz'}", "--tumour", labels, "--tumour-label",
            "2", "--liver", labels, "--habitats", "0"]
    runner = CliRunner()
    result = runner.invoke(radiology, [*args, "--liver-label", "2", "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {labels}: the ring_6mm region is 0 ml (no voxels of {labels} within 6 mm of the "
                        "tumour); its features are NaN; check --liver and --liver-label"]
    ring = json.loads((tmp_path / "f" / "features.json").read_text())["regions"]["ring_6mm"]
    assert ring["volume_ml"] == 0 and np.isnan(ring["arterial"]["first_order"]["mean"])
    result = runner.invoke(radiology, [*args, "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0 and "warning" not in result.output
