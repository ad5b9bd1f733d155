"""Stain normalisation on torch tensors: the numpy path's numbers, batches, devices and errors.

The torch path repeats the numpy path step by step; what differs is float rounding (and on a GPU,
CUDA's exp/log/atan2), which moves a pixel by one grey level where a value sits on a rounding
edge. Measured on the real liver patches and the synthetic tiles below: mean absolute difference
3e-5 grey levels, at most 1 (for both methods, on CPU). The bounds below leave room for other
math libraries but would catch any real divergence, which shows as tenths of a level on average.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsi_hcc.stain.common import StainError
from wsi_hcc.stain.normalizers import MacenkoNormalizer, ReinhardNormalizer, normalizer_from_dict

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LIVER = sorted((SHARED_DATA / "he_liver").glob("*.jpg"))

MAX_MEAN_DIFFERENCE = 0.01  # grey levels, per image
MAX_DIFFERENCE = 1

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA device"))]
METHODS = [MacenkoNormalizer, ReinhardNormalizer]


def _synthetic_tiles(n: int = 6, size: int = 128, seed: int = 0) -> np.ndarray:
    """H&E-like tiles from Beer-Lambert mixing of two stains with smooth random concentrations,
    plus a tile of glass and one of uniform colour noise (every hue, the darkest values)."""
    rng = np.random.default_rng(seed)
    stains = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])  # hematoxylin, eosin (OD per channel)
    coarse = rng.gamma(2.0, 0.35, size=(n - 2, 2, 8, 8))
    smooth = coarse.repeat(size // 8, axis=2).repeat(size // 8, axis=3)
    concentrations = smooth * rng.uniform(0.6, 1.4, size=smooth.shape)
    od = np.einsum("nshw,sc->nhwc", concentrations, stains)
    tissue = np.clip(240 * np.exp(-od) + rng.normal(0, 3, od.shape), 0, 255).astype(np.uint8)
    glass = np.full((1, size, size, 3), 242, dtype=np.uint8)
    noise = rng.integers(0, 256, size=(1, size, size, 3), dtype=np.uint8)
    return np.concatenate([tissue, glass, noise])


def _real_images(size: int = 512) -> list[np.ndarray]:
    if not LIVER:
        pytest.skip(f"real H&E patches not found under {SHARED_DATA / 'he_liver'} "
                    "(../shared/data is beside CI and dev clones)")
    return [np.asarray(Image.open(path).convert("RGB"))[:size, :size].copy() for path in LIVER]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return _synthetic_tiles(n=3, size=256, seed=7)[0]


def _assert_close(ours: np.ndarray, expected: np.ndarray, what: str) -> None:
    difference = np.abs(ours.astype(int) - expected.astype(int))
    assert difference.mean() <= MAX_MEAN_DIFFERENCE, (what, difference.mean())
    assert difference.max() <= MAX_DIFFERENCE, (what, difference.max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", METHODS)
def test_torch_matches_numpy_on_real_patches(cls, device):
    images = _real_images()
    normalizer = cls().fit(images[0])
    for path, image in zip(LIVER, images):
        out = normalizer.transform(torch.from_numpy(image).to(device))
        _assert_close(out.cpu().numpy(), normalizer.transform(image), path.name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", METHODS)
def test_torch_matches_numpy_on_synthetic_tiles(cls, device, reference):
    normalizer = cls().fit(reference)
    tiles = _synthetic_tiles()
    out = normalizer.transform(torch.from_numpy(tiles).to(device)).cpu().numpy()
    for i, (ours, expected) in enumerate(zip(out, normalizer.transform(tiles))):
        _assert_close(ours, expected, f"tile {i}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", METHODS)
def test_torch_fit_gives_the_numpy_reference(cls, device, reference):
    from_numpy = cls().fit(reference).to_dict()
    from_torch = cls().fit(torch.from_numpy(reference).to(device)).to_dict()
    assert from_torch.keys() == from_numpy.keys()
    for key, value in from_numpy.items():
        if isinstance(value, list):
            np.testing.assert_allclose(from_torch[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            assert from_torch[key] == value, key


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", METHODS)
def test_batch_equals_one_by_one_and_glass_passes_unchanged(cls, device, reference):
    normalizer = cls().fit(reference)
    tiles = torch.from_numpy(_synthetic_tiles()).to(device)
    batch = normalizer.transform(tiles)
    assert batch.shape == tiles.shape
    for i in range(len(tiles)):
        assert torch.equal(batch[i], normalizer.transform(tiles[i])), i
    glass = len(tiles) - 2
    assert torch.equal(batch[glass], tiles[glass])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", METHODS)
def test_output_is_uint8_of_the_input_shape_on_the_input_device(cls, device, reference):
    normalizer = cls().fit(reference)
    tiles = torch.from_numpy(_synthetic_tiles(n=3)).to(device)
    for rgb in (tiles, tiles[0], tiles[:, 10:90, 5:75]):  # a batch, one image, a non-contiguous crop
        out = normalizer.transform(rgb)
        assert isinstance(out, torch.Tensor)
        assert out.dtype == torch.uint8 and out.shape == rgb.shape and out.device == rgb.device
    assert normalizer.transform(tiles[:0]).shape == tiles[:0].shape


@pytest.mark.parametrize("cls", METHODS)
def test_large_batches_go_through_in_chunks_with_the_same_result(cls, reference, monkeypatch):
    from wsi_hcc.stain import torch_normalizers as stain_torch

    normalizer = cls().fit(reference)
    tiles = torch.from_numpy(_synthetic_tiles())
    whole = normalizer.transform(tiles)
    monkeypatch.setattr(stain_torch, "_chunk_pixels", lambda device: 2 * 128 * 128)
    assert torch.equal(normalizer.transform(tiles), whole)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", METHODS)
def test_reference_without_tissue_is_a_clear_error(cls, device):
    glass = torch.full((64, 64, 3), 243, dtype=torch.uint8, device=device)
    with pytest.raises(StainError, match="no tissue"):
        cls().fit(glass)


@pytest.mark.parametrize("cls", METHODS)
def test_restored_reference_gives_the_same_pixels_on_torch(cls, reference):
    fitted = cls().fit(reference)
    restored = normalizer_from_dict(fitted.to_dict())
    tiles = torch.from_numpy(_synthetic_tiles())
    assert torch.equal(restored.transform(tiles), fitted.transform(tiles))


@pytest.mark.parametrize("rgb, match", [
    (torch.zeros(8, 8, 3), "uint8 RGB"),
    (torch.zeros(8, 8, dtype=torch.uint8), "uint8 RGB"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "channels last"),
    (torch.zeros(8, 8, 4, dtype=torch.uint8), "uint8 RGB"),
    (torch.zeros(8, 8, 3, dtype=torch.uint8, device="meta"), "CPU and CUDA"),
])
@pytest.mark.parametrize("cls", METHODS)
def test_bad_tensors_are_one_line_errors(cls, rgb, match, reference):
    for use in (cls().fit, cls().fit(reference).transform):
        with pytest.raises(StainError, match=match) as error:
            use(rgb)
        assert "\n" not in str(error.value)


def test_transform_before_fit_is_an_error_for_tensors_too():
    with pytest.raises(StainError, match="before fit"):
        ReinhardNormalizer().transform(torch.zeros(8, 8, 3, dtype=torch.uint8))


def test_importing_the_numpy_path_does_not_import_torch():
    code = "import sys, wsi_hcc.stain; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
