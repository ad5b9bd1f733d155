"""Features inside a patch store: its metadata, the hidden partial array, and the final publish.

Crash safety mirrors tiling: features are written into a hidden ``.<stem>.zarr.features.partial``
array beside the store, one done-marker per chunk of rows; a rerun keeps finished chunks, and the
array moves into the store as ``features`` only when every row is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsi_hcc.errors import WsiHccError
from wsi_hcc.models import ModelCard
from wsi_hcc.records import SlideInfo, TileSpec
from wsi_hcc.utils.atomic import atomic_write_json
from wsi_hcc.utils.versions import stack_versions

__all__ = ["FeatureError", "read_store_meta", "check_store_fits_card", "feature_digest", "partial_features_path",
           "open_partial", "done_chunks", "mark_chunk_done", "publish_features", "store_records",
           "stain_normalizer_for", "training_data"]

_PROGRESS_DIR = "_progress"
MPP_TOLERANCE = 0.01



class FeatureError(WsiHccError):
    """A store cannot be turned into features with the chosen model."""


def read_store_meta(store: Path) -> dict:
    """The store's ``wsi_hcc`` attributes, or a one-line error if ``store`` is not a finished store."""
    attrs_file = store / ".zattrs"
    if not store.exists():
        raise FeatureError(f"{store}: no such store or folder; check the path")
    if not store.is_dir() or not (store / "tiles" / ".zarray").is_file() or not attrs_file.is_file():
        raise FeatureError(f"{store}: not a patch store (no tiles array); make one with `wsi-hcc tile`")
    try:
        meta = json.loads(attrs_file.read_text()).get("wsi_hcc")
    except (OSError, json.JSONDecodeError) as exc:
        raise FeatureError(f"{store}: unreadable store attributes ({exc}); re-tile the slide") from None
    if not isinstance(meta, dict) or meta.get("kind") != "patch-store":
        raise FeatureError(f"{store}: not a wsi_hcc patch store; make one with `wsi-hcc tile`")
    return meta


def check_store_fits_card(store: Path, meta: dict, card: ModelCard, *, allow_resize: bool = False) -> None:
    """Refuse a store whose tiles the model would see at another resolution than it learnt: another
    mpp, or (unless ``allow_resize``) another size, which the model's input resizing would turn into
    another mpp (512 px at 0.5 um/px shrunk to 224 px is 1.14 um/px)."""
    store_mpp = float(meta["tile_spec"]["target_mpp"])
    if abs(store_mpp - card.target_mpp) > MPP_TOLERANCE * card.target_mpp:
        raise FeatureError(f"{store}: tiles are at {store_mpp:g} um/px but {card.architecture} expects "
                           f"{card.target_mpp:g} um/px; re-tile with --mpp {card.target_mpp:g}")
    tile_px = int(meta["tile_spec"]["tile_px"])
    if tile_px != card.input_px and not allow_resize:
        raise FeatureError(f"{store}: tiles are {tile_px} px but {card.architecture} takes {card.input_px} px, "
                           f"so they would reach it at {store_mpp * tile_px / card.input_px:.3g} um/px; re-tile with "
                           f"--tile-px {card.input_px}, or pass --allow-resize")


def feature_digest(card: ModelCard, model_sha256: str, dtype: str, normalised: bool) -> str:
    """What identifies a set of features: the card, the model's tensors, dtype, normalisation."""
    payload = json.dumps([card.to_dict(), model_sha256, dtype, normalised], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def partial_features_path(store: Path) -> Path:
    return store.with_name(f".{store.name}.features.partial")


def stain_normalizer_for(meta: dict, card: ModelCard):
    """The normaliser a store's tiles need for ``card``: only when the model was trained on
    normalised tiles and the store's tiles were not written with that same reference."""
    if card.stain_reference is None or meta.get("stain_reference") == card.stain_reference:
        return None
    from wsi_hcc.stain.normalizers import normalizer_from_dict

    return normalizer_from_dict(card.stain_reference)


def done_chunks(store: Path) -> set[int]:
    """Chunks of the partial array that a previous run finished."""
    return {int(p.name) for p in (partial_features_path(store) / _PROGRESS_DIR).iterdir()}


def mark_chunk_done(store: Path, chunk: int) -> None:
    (partial_features_path(store) / _PROGRESS_DIR / str(chunk)).touch()


def open_partial(store: Path, n_tiles: int, dim: int, chunk_rows: int, dtype: str, digest: str):
    """The partial features array and the chunk indices already done (kept only for the same digest)."""
    import zarr

    partial = partial_features_path(store)
    if partial.exists():
        try:
            array = zarr.open_array(str(partial), mode="r+", zarr_format=2)
            if (array.attrs.get("digest") == digest and array.shape == (n_tiles, dim)
                    and array.chunks[0] == chunk_rows):
                return array, done_chunks(store)
        except (OSError, ValueError, KeyError, FileNotFoundError):
            pass
        shutil.rmtree(partial)
    array = zarr.create_array(str(partial), shape=(n_tiles, dim), chunks=(chunk_rows, dim), dtype=dtype,
                              compressors=None, fill_value=0, zarr_format=2)
    array.attrs["digest"] = digest
    (partial / _PROGRESS_DIR).mkdir()
    return array, set()


def publish_features(store: Path, meta: dict, card: ModelCard, model_sha256: str, dtype: str, digest: str,
             normalised: bool, n_tiles: int) -> None:
    """Move the finished array into the store, then record its provenance in the store attributes."""
    partial = partial_features_path(store)
    shutil.rmtree(partial / _PROGRESS_DIR)
    final = store / "features"
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    attrs_file = store / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    attrs["wsi_hcc"] = meta | {"features": {
        "digest": digest, "backbone": card.architecture, "feature_dim": card.feature_dim, "dtype": dtype,
        "model_sha256": model_sha256,
        "n_tiles": n_tiles, "weights_sha256": card.weights_sha256, "stain_normalised_on_the_fly": normalised,
        "card": card.to_dict(), "versions": stack_versions(),
    }}
    atomic_write_json(attrs_file, attrs)


def store_records(meta: dict) -> tuple[SlideInfo, TileSpec]:
    return SlideInfo.from_dict(meta["slide"]), TileSpec.from_dict(meta["tile_spec"])


def training_data(stores: Sequence[Path], patients: Sequence[str], labels_csv: str | Path | None) -> dict[str, Any]:
    """What a model learnt from, for its card: real or generated slides (``kind``: ``real``,
    ``synthetic`` or ``mixed``), how many slides and patients, and the labels file's sha256."""
    synthetic = [bool(read_store_meta(store)["slide"].get("synthetic")) for store in stores]
    kind = "synthetic" if synthetic and all(synthetic) else "mixed" if any(synthetic) else "real"
    labels = Path(labels_csv) if labels_csv else None
    return {"kind": kind, "slides": len(synthetic), "synthetic_slides": sum(synthetic),
            "patients": len(set(patients)),
            "labels_sha256": hashlib.sha256(labels.read_bytes()).hexdigest() if labels and labels.is_file() else None}
