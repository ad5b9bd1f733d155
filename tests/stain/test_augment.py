"""Stain augmentation alone and inside A.Compose, seeds, YAML pipelines, and the preview command."""

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA
from PIL import Image

from wsi_hcc.cli.app import main
from wsi_hcc.errors import ConfigError
from wsi_hcc.mil.config import load_mil_config
from wsi_hcc.stain.augment import MacenkoStainAugment, build_augmentation, load_augmentation
from wsi_hcc.tiling.config import load_config
from wsi_hcc.training.config import load_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PATCH = SHARED_DATA / "he_patches" / "torchstain_source.png"


@pytest.fixture(scope="module")
def tile():
    if not PATCH.exists():
        pytest.skip(f"real H&E patch not found at {PATCH} (../shared/data is beside CI and dev clones)")
    return np.ascontiguousarray(np.asarray(Image.open(PATCH).convert("RGB"))[:192, :192])


def test_stain_augment_alone_is_seedable_and_changes_colour(tile):
    first, again, other = (MacenkoStainAugment(p=1.0) for _ in range(3))
    first.set_random_seed(7)
    again.set_random_seed(7)
    other.set_random_seed(8)
    a, b, c = (t(image=tile)["image"] for t in (first, again, other))
    assert a.shape == tile.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a.astype(int) - tile).mean() > 1


def test_stain_augment_inside_compose_is_reproducible(tile):
    def make():
        return A.Compose([A.HorizontalFlip(p=0.5), MacenkoStainAugment(p=1.0)], seed=11)

    first = [make()(image=tile)["image"] for _ in range(1)][0]
    np.testing.assert_array_equal(first, make()(image=tile)["image"])
    pipeline = make()
    draws = [pipeline(image=tile)["image"] for _ in range(3)]
    assert not np.array_equal(draws[0], draws[1])  # successive calls draw anew


def test_zero_strength_keeps_the_image_and_glass_passes(tile):
    identity = MacenkoStainAugment(sigma_scale=0.0, sigma_shift=0.0, p=1.0)
    # unmix + remix is exact up to float rounding, so zero strength changes (almost) nothing
    assert np.abs(identity(image=tile)["image"].astype(int) - tile).max() <= 1
    glass = np.full((64, 64, 3), 244, dtype=np.uint8)
    np.testing.assert_array_equal(MacenkoStainAugment(p=1.0)(image=glass)["image"], glass)


def test_every_config_file_loads():
    from wsi_hcc.survival.config import load_survival_config

    files = sorted(CONFIGS.rglob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        if path.parent.name == "augment":
            pipeline = load_augmentation(path, seed=0)
            assert isinstance(pipeline, A.Compose) and len(pipeline.transforms) > 0
        elif path.parent.name == "train":
            load_train_config(path)
        elif path.parent.name == "mil":
            load_mil_config(path)
        elif path.parent.name == "survival":
            load_survival_config(path)
        else:
            load_config(path)


def test_bad_pipeline_descriptions_are_one_line():
    with pytest.raises(ConfigError, match="unknown transform 'Sharpenify'"):
        build_augmentation([{"Sharpenify": {}}])
    with pytest.raises(ConfigError, match="HorizontalFlip"):
        build_augmentation([{"HorizontalFlip": {"probability": 2}}])
    with pytest.raises(ConfigError, match="one mapping"):
        build_augmentation([{"HorizontalFlip": {}, "VerticalFlip": {}}])


def test_augment_preview_marks_the_original_and_separates_the_samples(tile, tmp_path):
    from wsi_hcc.stain.augment import augment_samples, load_augmentation
    from wsi_hcc.viz.tiles import augmentation_layout

    image = tmp_path / "tile.png"
    Image.fromarray(tile).save(image)
    out = tmp_path / "preview.png"
    result = CliRunner().invoke(main, ["augment-preview", str(image),
                                       "--config", str(CONFIGS / "augment" / "stain.yaml"),
                                       "--out", str(out), "--n", "7", "--tile-px", "128"])
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(out).convert("RGB"))
    (width, height), corners = augmentation_layout(8, (128, 128), title=True)
    assert grid.shape == (height, width, 3) and len(set(corners)) == 8
    crop = tile[32:160, 32:160]
    samples = augment_samples(crop, load_augmentation(CONFIGS / "augment" / "stain.yaml", seed=0), 7)
    for picture, (x, y) in zip([crop, *samples], corners):  # the original first, each drawn whole and unresampled
        np.testing.assert_array_equal(grid[y:y + 128, x:x + 128], picture)
    for x, y in corners[1:]:
        assert (grid[y + 129:y + 132, x - 2:x + 130] == 255).all()  # white gaps between the samples
    x, y = corners[0]
    frame = grid[y + 128 + 4, x:x + 128].astype(int)  # a red frame in the gap around the original
    assert (frame[:, 0] > 150).all() and (frame[:, 1] < 100).all()
    missing = CliRunner().invoke(main, ["augment-preview", str(tmp_path / "nope.png"), "--config",
                                        str(CONFIGS / "augment" / "stain.yaml"), "--out", str(out)])
    assert missing.exit_code == 2 and missing.output.startswith("error: ")


def test_a_seeded_pipeline_draws_each_transform_independently():
    """albumentations' own Compose(seed=...) gives both flips one stream, so they always fire together."""
    from wsi_hcc.stain.augment import build_augmentation

    pipeline = build_augmentation([{"HorizontalFlip": {"p": 0.5}}, {"VerticalFlip": {"p": 0.5}}], seed=7)
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[0, 0] = 255  # the marked corner tells which flips ran
    corners = {tuple(np.argwhere(pipeline(image=image)["image"][..., 0] == 255)[0]) for _ in range(64)}
    assert corners == {(0, 0), (0, 3), (3, 0), (3, 3)}
