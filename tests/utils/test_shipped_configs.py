"""Shipped configs: in the wheel as wsi_hcc/configs, named without a path from any folder; a real path wins."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from wsi_hcc.errors import ConfigError
from wsi_hcc.utils import config as config_module
from wsi_hcc.utils.config import config_reference, locate_config, shipped_config_names, shipped_configs_root

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SHIPPED = sorted(p.relative_to(CONFIGS).with_suffix("").as_posix() for p in CONFIGS.rglob("*.yaml"))


def test_the_package_list_names_every_sub_package_and_maps_configs_into_the_wheel():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "wsi_hcc").rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"wsi_hcc.configs"}, "update [tool.setuptools] packages"
    assert setuptools["package-dir"] == {"wsi_hcc.configs": "configs"}
    assert setuptools["package-data"]["wsi_hcc.configs"] == ["**/*.yaml"]


def test_every_shipped_config_is_found_by_name_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped_configs_root() == CONFIGS  # this checkout, where the package runs from it
    assert shipped_config_names() == SHIPPED and "train/resnet34_hcc" in SHIPPED
    assert shipped_config_names("mil") == [n for n in SHIPPED if n.startswith("mil/")]
    assert shipped_config_names("") == ["tile"]
    for name in SHIPPED:
        expected = CONFIGS / f"{name}.yaml"
        for spelling in (name, f"{name}.yaml", f"configs/{name}.yaml", f"./configs/{name}.yaml"):
            assert locate_config(spelling, "any", "") == expected, spelling


def test_a_real_path_wins_over_the_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "configs" / "train" / "resnet34_hcc.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("train: {}\n")
    mine = "configs/train/resnet34_hcc.yaml"
    assert locate_config(mine, "training", "train") == Path(mine)
    assert locate_config("train/resnet34_hcc", "training", "train") == CONFIGS / "train" / "resnet34_hcc.yaml"


@pytest.mark.parametrize("name", ["train/nope", "../configs/train/resnet34_hcc", "/abs/train/resnet34_hcc.yaml"])
def test_an_unknown_name_is_one_line_listing_the_shipped_configs(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        locate_config(name, "training", "train")
    assert str(err.value) == (f"{name}: training config not found; give a YAML file's path or a shipped name; "
                              "shipped training configs: train/livernet_grading, train/resnet34_hcc")
    with pytest.raises(ConfigError, match=r"shipped tile configs: tile$"):
        locate_config(name, "tile", "")


def test_an_installed_wheel_finds_its_configs_inside_the_package(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "wsi_hcc"
    (package / "configs" / "augment").mkdir(parents=True)
    (package / "configs" / "augment" / "mine.yaml").write_text("augmentation: []\n")
    monkeypatch.setattr(config_module.resources, "files", lambda name: package)
    assert shipped_configs_root() == package / "configs"
    assert shipped_config_names() == ["augment/mine"]
    assert locate_config("augment/mine", "augmentation", "augment") == package / "configs" / "augment" / "mine.yaml"


def test_a_config_named_inside_a_config_is_relative_to_that_config(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "cfg"
    folder.mkdir(parents=True)
    (folder / "aug.yaml").write_text("augmentation: []\n")
    monkeypatch.chdir(tmp_path)
    config = folder / "train.yaml"
    assert config_reference("aug.yaml", "project/cfg/train.yaml", "augmentation", "augment") == folder / "aug.yaml"
    # not next to it: a shipped name, however it is spelled
    shipped = (CONFIGS / "augment" / "chen2022.yaml").resolve()
    for spelling in ("augment/chen2022", "configs/augment/chen2022.yaml"):
        assert config_reference(spelling, config, "augmentation", "augment") == shipped
    with pytest.raises(ConfigError) as err:
        config_reference("other.yaml", config, "augmentation", "augment")
    assert str(err.value) == (f"{config}: augmentation config other.yaml not found next to it "
                              f"({folder / 'other.yaml'}); give a path relative to train.yaml or a shipped name "
                              "(augment/chen2022, augment/stain)")


def test_a_built_wheel_ships_every_config(tmp_path):
    """The wheel pip builds from this checkout holds configs/ as wsi_hcc/configs (built from a copy, so the
    checkout gets no build/ folder)."""
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("wsi_hcc", "configs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("wsi_hcc-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"wsi_hcc/configs/{n}.yaml" for n in SHIPPED} <= names
    assert not any(n.startswith(("configs/", "tests/", "benchmarks/")) for n in names)
    assert "wsi_hcc/utils/config.py" in names
    static = REPO / "wsi_hcc" / "view" / "static"
    assert {f"wsi_hcc/view/static/{p.name}" for p in static.iterdir()} <= names, "the viewer's page is package data"
