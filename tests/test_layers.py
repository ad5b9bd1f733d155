"""Data flows one way: the import-linter contracts in pyproject.toml hold, and they catch a wrong import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import wsi_hcc

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                "sys.exit(lint_imports_command())", "--no-cache"]

pytest.importorskip("importlinter", reason="import-linter is a test dependency: pip install '.[test]'")


def _lint(package_parent: Path, workdir: Path) -> subprocess.CompletedProcess:
    """Run the contracts on the ``wsi_hcc`` found in ``package_parent``, with pyproject.toml's settings."""
    shutil.copy(PYPROJECT, workdir / "pyproject.toml")
    env = {"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run(LINT_IMPORTS, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def _copy_package(tmp_path: Path) -> Path:
    parent = tmp_path / "src"
    shutil.copytree(Path(wsi_hcc.__file__).parent, parent / "wsi_hcc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return parent


def test_the_layer_and_cycle_contracts_hold(tmp_path):
    result = _lint(_copy_package(tmp_path), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    # a low layer reaching up, even inside a function
    ("utils/atomic.py", "def _up():\n    from wsi_hcc.cli import main\n", "wsi_hcc.utils.atomic -> wsi_hcc.cli"),
    # two siblings of one layer
    ("tiling/grid.py", "from wsi_hcc.features import tile_feed\n", "wsi_hcc.tiling.grid -> wsi_hcc.features"),
    # a cycle inside a package
    ("stain/common.py", "from wsi_hcc.stain import normalizers\n", "No import cycles"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
    parent = _copy_package(tmp_path)
    target = parent / "wsi_hcc" / module
    target.write_text(target.read_text() + "\n" + line)
    result = _lint(parent, tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout, result.stdout


def test_the_top_level_keeps_only_a_handful_of_modules():
    top = sorted(p.name for p in Path(wsi_hcc.__file__).parent.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "errors.py", "records.py"]


def test_every_package_states_its_job_and_exports_its_api():
    import importlib

    package_root = Path(wsi_hcc.__file__).parent
    for init in sorted(package_root.glob("*/__init__.py")):
        package = importlib.import_module(f"wsi_hcc.{init.parent.name}")
        assert package.__doc__ and package.__doc__.strip(), f"{init}: say the package's job in its docstring"
        assert package.__all__, f"{init}: export the package's API in __all__"
        for name in package.__all__:
            assert getattr(package, name) is not None, f"wsi_hcc.{init.parent.name}.{name}"
