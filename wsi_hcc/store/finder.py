"""Finding patch stores: named directly or as folders of ``*.zarr``, and checked to hold the
features of one model, so every command that reads stores finds and refuses them the same way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wsi_hcc.errors import WsiHccError
from wsi_hcc.store.feature_array import read_store_meta

__all__ = ["find_stores", "shared_features"]


def _is_store(path: Path) -> bool:
    return path.suffix == ".zarr" or (path / "tiles").is_dir()


def find_stores(paths: Sequence[str | Path], *, missing_ok: bool = False) -> list[Path]:
    """Stores named directly, or every ``*.zarr`` in a named folder, each once, in order.

    A path that does not exist is a one-line error, unless ``missing_ok`` (a batch that reports each
    bad store as its own row keeps it). A folder without stores and two stores of one slide stem are
    errors too: a slide's stem names its rows everywhere downstream.
    """
    stores: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            if not missing_ok:
                raise WsiHccError(f"{path}: store or folder not found; check the path (or 'stores' in the config)")
            stores.append(path)
        elif path.is_dir() and not _is_store(path):
            found = sorted(p for p in path.glob("*.zarr") if p.is_dir())
            if not found:
                raise WsiHccError(f"{path}: no *.zarr patch stores in this folder; make them with `wsi-hcc tile`")
            stores.extend(found)
        else:
            stores.append(path)
    stores = list(dict.fromkeys(stores))
    first: dict[str, Path] = {}
    for store in stores:
        stem = store.name.removesuffix(".zarr")
        if stem in first:
            raise WsiHccError(f"{store}: two stores are named {stem!r} ({first[stem]}); slide stems must be unique, "
                              "keep one")
        first[stem] = store
    return stores


def shared_features(stores: Sequence[str | Path]) -> dict:
    """The feature provenance the stores share (``wsi-hcc features``' record), or a one-line error
    naming a store without features or one whose features another model made."""
    shared, first = None, None
    for store in map(Path, stores):
        features = read_store_meta(store).get("features")
        if not features or not (store / "features" / ".zarray").is_file():
            raise WsiHccError(f"{store}: has no features yet; run `wsi-hcc features {store} --arch NAME`")
        if shared is not None and features.get("digest") != shared.get("digest"):
            raise WsiHccError(f"{store}: its features come from another model ({features.get('backbone')}, digest "
                              f"{features.get('digest')}) than {first}'s ({shared.get('backbone')}, "
                              f"{shared.get('digest')}); extract all stores with the same backbone and weights")
        shared, first = shared or features, first or store
    if shared is None:
        raise WsiHccError("no stores given; name patch stores or folders of them")
    return shared
