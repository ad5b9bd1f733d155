"""The feature stage for one patch store: tiles -> backbone embeddings, aligned with ``coords``.

Crash safety mirrors tiling: features are written into a hidden ``.<stem>.zarr.features.partial``
array beside the store, one done-marker per chunk of rows; a rerun keeps finished chunks, and the
array moves into the store as ``features`` only when every row is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_json
from .errors import WsiHccError
from .models import ModelCard, state_sha256, to_model_input
from .records import SlideInfo, TileSpec
from .store import TileReader
from .versions import stack_versions

__all__ = ["FeatureError", "FeatureResult", "FeatureExtractor", "TileBatches", "extract_store_features",
           "feature_digest", "partial_features_path", "read_store_meta", "resolve_device"]

_PROGRESS_DIR = "_progress"
MPP_TOLERANCE = 0.01


class FeatureError(WsiHccError):
    """A store cannot be turned into features with the chosen model."""


@dataclass(frozen=True)
class FeatureResult:
    store_path: Path
    n_tiles: int
    feature_dim: int
    skipped: bool = False
    resumed_rows: int = 0


def resolve_device(device: str):
    """``auto`` picks CUDA when present; asking for CUDA without one is a one-line error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FeatureError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise FeatureError(f"--device {device!r} is not a device; use auto, cpu or cuda") from None


def read_store_meta(store: Path) -> dict:
    """The store's ``wsi_hcc`` attributes, or a one-line error if ``store`` is not a finished store."""
    attrs_file = store / ".zattrs"
    if not store.is_dir() or not (store / "tiles" / ".zarray").is_file() or not attrs_file.is_file():
        raise FeatureError(f"{store}: not a patch store (no tiles array); make one with `wsi-hcc tile`")
    try:
        meta = json.loads(attrs_file.read_text()).get("wsi_hcc")
    except (OSError, json.JSONDecodeError) as exc:
        raise FeatureError(f"{store}: unreadable store attributes ({exc}); re-tile the slide") from None
    if not isinstance(meta, dict) or meta.get("kind") != "patch-store":
        raise FeatureError(f"{store}: not a wsi_hcc patch store; make one with `wsi-hcc tile`")
    return meta


def check_store_fits_card(store: Path, meta: dict, card: ModelCard) -> None:
    store_mpp = float(meta["tile_spec"]["target_mpp"])
    if abs(store_mpp - card.target_mpp) > MPP_TOLERANCE * card.target_mpp:
        raise FeatureError(f"{store}: tiles are at {store_mpp:g} um/px but {card.architecture} expects "
                           f"{card.target_mpp:g} um/px; re-tile with --mpp {card.target_mpp:g}")


def feature_digest(card: ModelCard, model_sha256: str, dtype: str, normalised: bool) -> str:
    """What identifies a set of features: the card, the model's tensors, dtype, normalisation."""
    payload = json.dumps([card.to_dict(), model_sha256, dtype, normalised], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def partial_features_path(store: Path) -> Path:
    return store.with_name(f".{store.name}.features.partial")


class TileBatches:
    """A map-style dataset whose item ``i`` is a whole batch of a store's tiles.

    Batches (not single tiles) cross the worker boundary, so each DataLoader worker decodes
    ``batch_size`` tiles per message. ``encoded=True`` yields the JPEG bytes for decoding on a GPU.
    Each worker opens its own reader.
    """

    def __init__(self, store: Path, starts: list[int], batch_size: int, n_tiles: int, encoded: bool = False):
        self.store, self.starts, self.batch_size, self.n_tiles = Path(store), starts, batch_size, n_tiles
        self.encoded = encoded
        self._reader: TileReader | None = None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int):
        import torch

        if self._reader is None:
            self._reader = TileReader(self.store)
        start = self.starts[i]
        stop = min(start + self.batch_size, self.n_tiles)
        if self.encoded:
            chunks = [self._reader.read_chunk(j) for j in range(start, stop)]
            return start, [torch.frombuffer(bytearray(c), dtype=torch.uint8) if c is not None else None
                           for c in chunks]
        return start, torch.from_numpy(np.stack([self._reader[j] for j in range(start, stop)]))

    def __getstate__(self):
        return {**self.__dict__, "_reader": None}


class FeatureExtractor:
    """Runs a feature model on uint8 tile batches on one device.

    CUDA runs use bf16 autocast and channels-last.
    """

    def __init__(self, model, device):
        import torch

        self.card: ModelCard = model.card
        self.device = torch.device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.model_sha256 = state_sha256(model)

    def __call__(self, tiles, normalizer=None) -> np.ndarray:
        """``tiles``: uint8 (N, H, W, 3) on any device -> float32 features (N, feature_dim) on the CPU.

        ``normalizer``, a fitted ``wsi_hcc.stain`` normaliser, recolours the tiles on the device first.
        """
        import torch

        with torch.inference_mode():
            tiles = tiles.to(self.device, non_blocking=True)
            if normalizer is not None:
                tiles = normalizer.transform(tiles)
            x = to_model_input(tiles, self.card)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                out = self.model(x)
            return out.float().cpu().numpy()


def decode_on_device(chunks: list, tile_shape: tuple[int, int, int], device):
    """Decode JPEG chunks with nvJPEG on ``device``; unwritten tiles become black."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    present = [c for c in chunks if c is not None]
    decoded = iter(decode_jpeg(present, mode=ImageReadMode.RGB, device=device)) if present else iter(())
    tiles = [next(decoded) if c is not None else torch.zeros(tile_shape[2], *tile_shape[:2], dtype=torch.uint8,
                                                               device=device) for c in chunks]
    return torch.stack(tiles).permute(0, 2, 3, 1)


def extract_store_features(store: str | Path, extractor: FeatureExtractor, *, normalizer=None,
                           batch_size: int = 64,
                           num_workers: int = 0, dtype: str = "float16", chunk_rows: int = 4096,
                           gpu_decode: bool = False, overwrite: bool = False,
                           on_start: Callable[[int], None] | None = None,
                           on_tiles: Callable[[int], None] | None = None) -> FeatureResult:
    """Write ``features`` (N, D) into ``store``, row i belonging to ``coords[i]``; resumes after a kill."""
    store = Path(store)
    meta = read_store_meta(store)
    card = extractor.card
    check_store_fits_card(store, meta, card)
    n_tiles = int(meta["n_tiles"])
    normalised = normalizer is not None
    digest = feature_digest(card, extractor.model_sha256, dtype, normalised)
    existing = meta.get("features")
    if existing and existing.get("digest") == digest and (store / "features" / ".zarray").is_file() and not overwrite:
        return FeatureResult(store, n_tiles, card.feature_dim, skipped=True)
    if existing and existing.get("digest") != digest and not overwrite:
        raise FeatureError(f"{store}: already has features from {existing.get('backbone')} "
                           f"(digest {existing.get('digest')}); pass --overwrite to replace them")
    chunk_rows = max(batch_size, chunk_rows // batch_size * batch_size)  # batches never straddle chunks
    array, done = _open_partial(store, n_tiles, card.feature_dim, chunk_rows, dtype, digest)
    if on_start:
        on_start(n_tiles)
    todo = [c for c in range((n_tiles + chunk_rows - 1) // chunk_rows) if c not in done]
    resumed = n_tiles - sum(min(chunk_rows, n_tiles - c * chunk_rows) for c in todo)
    if on_tiles and resumed:
        on_tiles(resumed)
    starts = [s for c in todo for s in range(c * chunk_rows, min((c + 1) * chunk_rows, n_tiles), batch_size)]
    _run_batches(store, extractor, normalizer, array, starts, batch_size, n_tiles, chunk_rows, num_workers,
                 gpu_decode, on_tiles)
    _publish(store, meta, card, extractor.model_sha256, dtype, digest, normalised, n_tiles)
    return FeatureResult(store, n_tiles, card.feature_dim, resumed_rows=resumed)


def _open_partial(store: Path, n_tiles: int, dim: int, chunk_rows: int, dtype: str, digest: str):
    """The partial features array and the chunk indices already done (kept only for the same digest)."""
    import zarr

    partial = partial_features_path(store)
    if partial.exists():
        try:
            array = zarr.open_array(str(partial), mode="r+", zarr_format=2)
            if (array.attrs.get("digest") == digest and array.shape == (n_tiles, dim)
                    and array.chunks[0] == chunk_rows):
                done = {int(p.name) for p in (partial / _PROGRESS_DIR).iterdir()}
                return array, done
        except (OSError, ValueError, KeyError, FileNotFoundError):
            pass
        shutil.rmtree(partial)
    array = zarr.create_array(str(partial), shape=(n_tiles, dim), chunks=(chunk_rows, dim), dtype=dtype,
                              compressors=None, fill_value=0, zarr_format=2)
    array.attrs["digest"] = digest
    (partial / _PROGRESS_DIR).mkdir()
    return array, set()


def _run_batches(store, extractor, normalizer, array, starts, batch_size, n_tiles, chunk_rows, num_workers,
                 gpu_decode, on_tiles) -> None:
    from torch.utils.data import DataLoader

    if not starts:
        return
    encoded = gpu_decode and extractor.device.type == "cuda" and TileReader(store).jpeg
    batches = TileBatches(store, starts, batch_size, n_tiles, encoded=encoded)
    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=num_workers,
                        pin_memory=extractor.device.type == "cuda" and not encoded,
                        prefetch_factor=4 if num_workers else None)
    tile_shape = TileReader(store).shape[1:]
    progress_dir = partial_features_path(store) / _PROGRESS_DIR
    rows = []
    for start, tiles in loader:
        if encoded:
            tiles = decode_on_device(tiles, tile_shape, extractor.device)
        rows.append(extractor(tiles, normalizer))
        if on_tiles:
            on_tiles(len(rows[-1]))
        chunk = start // chunk_rows
        chunk_end = min((chunk + 1) * chunk_rows, n_tiles)
        if start + len(rows[-1]) >= chunk_end:
            block = np.concatenate(rows)
            if block.shape[1] != array.shape[1]:
                raise FeatureError(f"{store}: the model gives {block.shape[1]} features per tile but its card "
                                   f"says {array.shape[1]}; fix feature_dim in the card")
            array[chunk * chunk_rows:chunk_end] = block.astype(array.dtype)
            (progress_dir / str(chunk)).touch()
            rows = []


def _publish(store: Path, meta: dict, card: ModelCard, model_sha256: str, dtype: str, digest: str,
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
