"""Data flows one way: no module imports a module of a higher layer (checked on the source)."""

import ast
from pathlib import Path

import wsi_hcc

PACKAGE = Path(wsi_hcc.__file__).parent

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS = [
    {"errors", "records", "versions", "atomic", "figures", "nomogram_scale", "cielab", "cielab_kernels",
     "checked_weights"},
    {"readers", "mpp", "slideinfo", "grid", "tissue", "thumbnail", "qc", "store", "jpeg_tiles", "h5export",
     "config", "inputs", "synth", "stain", "stain_torch", "annotations", "augment", "datasets", "models",
     "feature_store", "qupath_export", "heatmap", "slide_exports", "radiology", "survival"},
    {"extract", "features", "tile_feed", "training", "mil"},
    {"tiling"},
    {"pipeline", "progress"},
    {"feature_pipeline", "train_pipeline", "mil_pipeline", "classify_pipeline", "demo_pipeline"},
    {"cli", "cli_errors", "cli_train", "cli_mil", "cli_classify", "cli_radiology", "cli_radiology_segment", "cli_radiology_models",
     "cli_survival", "__main__"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _top_module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    depth_of_file = len(path.relative_to(PACKAGE).parts) - 1
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            climbs = node.level - 1
            if climbs > depth_of_file:
                continue
            prefix = list(path.relative_to(PACKAGE).parts[:depth_of_file - climbs])
            target = prefix + (node.module.split(".") if node.module else [n.name for n in node.names][:1])
            if target:
                found.add(target[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wsi_hcc."):
            found.add(node.module.split(".")[1])
    return found


def test_every_module_has_a_layer():
    modules = {_top_module(p) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE}
    assert modules <= set(LAYER_OF), f"add to LAYERS: {sorted(modules - set(LAYER_OF))}"


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue
        own = LAYER_OF[_top_module(path)]
        for imported in _imported_top_modules(path):
            if imported in LAYER_OF and LAYER_OF[imported] > own:
                violations.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert not violations, violations
