"""Training data from patch stores: slide labels, patient-level splits, and a tile dataset.

``PatchDataset`` is a map-style dataset (``__len__`` and ``__getitem__``), so a
``torch.utils.data.DataLoader`` takes it as it is. Each process opens its own store handles on
first use, so it is safe with several DataLoader workers.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.store.finder import shared_features

__all__ = ["SlideLabel", "read_slide_labels", "patient_splits", "class_balanced_weights", "PatchDataset",
           "BagDataset"]


@dataclass(frozen=True)
class SlideLabel:
    """One row of a slide-label CSV: ``slide`` (the store stem), ``patient``, ``label``, optional ``grade``."""

    slide: str
    patient: str
    label: str
    grade: str | None = None


def read_slide_labels(path: str | Path) -> list[SlideLabel]:
    """Read a CSV with columns ``slide``, ``patient``, ``label`` and optionally ``grade``."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()}, where the command runs)"
        raise WsiHccError(f"{path}: label CSV not found{where}; pass --labels, or run from the folder the "
                          "config's paths are relative to") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise WsiHccError(f"{path}: cannot read the label CSV ({exc})") from None
    missing = {"slide", "patient", "label"} - set(rows[0] if rows else ())
    if missing:
        raise WsiHccError(f"{path}: the label CSV needs columns slide, patient, label (missing: "
                          f"{', '.join(sorted(missing))})")
    labels, seen = [], set()
    for line, row in enumerate(rows, start=2):
        row = {key: (value or "") for key, value in row.items()}  # a short row leaves cells None
        slide = row["slide"].strip()
        if not slide or not row["patient"].strip() or not row["label"].strip():
            raise WsiHccError(f"{path}:{line}: empty slide, patient or label; fill it in or remove the row")
        if slide in seen:
            raise WsiHccError(f"{path}:{line}: slide {slide!r} is listed twice")
        seen.add(slide)
        grade = (row.get("grade") or "").strip() or None
        labels.append(SlideLabel(slide, row["patient"].strip(), row["label"].strip(), grade))
    return labels


def patient_splits(slides: Sequence[SlideLabel], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   names: Sequence[str] = ("train", "validation", "test"), seed: int = 0) -> dict[str, list[str]]:
    """Split slides into groups by patient, so that no patient's slides are on two sides.

    Patients are shuffled with ``seed`` and dealt to the split furthest below its target share of
    slides. Returns ``{split name: [slide, ...]}``.
    """
    if len(fractions) != len(names) or not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise WsiHccError(f"split fractions {tuple(fractions)} must be non-negative, one per split, and sum to 1")
    by_patient: dict[str, list[str]] = {}
    for s in slides:
        by_patient.setdefault(s.patient, []).append(s.slide)
    patients = sorted(by_patient)
    np.random.default_rng(seed).shuffle(patients)
    total = sum(len(v) for v in by_patient.values())
    splits: dict[str, list[str]] = {name: [] for name in names}
    for patient in patients:
        deficits = [fractions[i] * total - len(splits[name]) for i, name in enumerate(names)]
        splits[names[int(np.argmax(deficits))]].extend(by_patient[patient])
    return splits


def class_balanced_weights(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-sample weights that give every class the same total weight (for a weighted sampler).

    Samples labelled -1 (unlabelled) get weight 0.
    """
    labels = np.asarray(labels)
    weights = np.zeros(len(labels), dtype=np.float64)
    classes = np.unique(labels[labels >= 0])
    for c in classes:
        members = labels == c
        weights[members] = 1.0 / members.sum() / len(classes)
    return weights


class PatchDataset:
    """Tiles of one or many patch stores, with a label per tile.

    Parameters
    ----------
    stores : sequence of paths
        ``<stem>.zarr`` patch stores written by ``wsi-hcc tile``.
    labels : sequence of numpy.ndarray
        One ``(N_i,)`` int array per store (a slide label repeated, or per-tile labels from
        ``wsi_hcc.qupath.annotations.label_tiles``); tiles labelled -1 are left out.
    transform : callable, optional
        An albumentations pipeline (called as ``transform(image=...)``) applied to each tile.

    Items are dicts: ``image`` ``(tile_px, tile_px, 3)`` uint8 (after ``transform``), ``label``
    int, ``slide`` stem, ``coords`` level-0 ``(x, y)``, ``index`` (tile index in its store).
    """

    def __init__(self, stores: Sequence[str | Path], labels: Sequence[np.ndarray],
                 transform: Callable[..., dict[str, Any]] | None = None):
        from wsi_hcc.store.patch_store import open_store

        if len(stores) != len(labels):
            raise WsiHccError(f"{len(stores)} stores but {len(labels)} label arrays; give one per store")
        self.stores = [Path(s) for s in stores]
        self.transform = transform
        store_ids, tile_ids, tile_labels, coords = [], [], [], []
        for k, (path, store_labels) in enumerate(zip(self.stores, labels)):
            group = open_store(path)
            n = group["tiles"].shape[0]
            store_labels = np.asarray(store_labels, dtype=np.int64)
            if store_labels.shape != (n,):
                raise WsiHccError(f"{path}: {n} tiles but {store_labels.shape[0]} labels")
            keep = np.flatnonzero(store_labels >= 0)
            store_ids.append(np.full(len(keep), k, dtype=np.int64))
            tile_ids.append(keep)
            tile_labels.append(store_labels[keep])
            coords.append(group["coords"][:][keep] if n else np.zeros((0, 2), np.int64))
        self._store_ids = np.concatenate(store_ids) if store_ids else np.zeros(0, np.int64)
        self._tile_ids = np.concatenate(tile_ids) if tile_ids else np.zeros(0, np.int64)
        self.labels = np.concatenate(tile_labels) if tile_labels else np.zeros(0, np.int64)
        self._coords = np.concatenate(coords) if coords else np.zeros((0, 2), np.int64)
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _tiles(self, store_id: int):
        # A handle opened in the parent must not be used by a forked DataLoader worker.
        if os.getpid() != self._pid:
            self._handles, self._pid = {}, os.getpid()
        if store_id not in self._handles:
            from wsi_hcc.store.patch_store import TileReader

            self._handles[store_id] = TileReader(self.stores[store_id])
        return self._handles[store_id]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} tiles")
        store_id, tile_id = int(self._store_ids[i]), int(self._tile_ids[i])
        image = self._tiles(store_id)[tile_id]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {"image": image, "label": int(self.labels[i]), "slide": self.stores[store_id].stem,
                "coords": tuple(int(v) for v in self._coords[i]), "index": tile_id}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # each process opens its own
        return state


class BagDataset:
    """One item per slide for attention-MIL: every tile feature of a store, with coordinates.

    Parameters
    ----------
    stores : sequence of paths
        Patch stores that hold ``features`` (``wsi-hcc features``); all made by the same model.
    labels : sequence of int
        One slide label per store.
    max_tiles : int, optional
        Keep at most this many tiles per bag: a random subset that depends only on ``seed``, the
        epoch (``set_epoch``) and the bag, so it is the same with any number of DataLoader workers.
        None keeps all.

    Items are dicts: ``features`` ``(N, D)`` float32, ``coords`` ``(N, 2)`` int64 level-0 (x, y),
    ``label`` int, ``slide`` stem. Bags differ in size, so load them with ``batch_size=1``.
    """

    def __init__(self, stores: Sequence[str | Path], labels: Sequence[int], max_tiles: int | None = None,
                 seed: int = 0):
        if len(stores) != len(labels):
            raise WsiHccError(f"{len(stores)} stores but {len(labels)} labels; give one label per store")
        self.stores = [Path(s) for s in stores]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.max_tiles = max_tiles
        self.seed = seed
        self.epoch = 0
        self.feature_digest = shared_features(self.stores)["digest"] if self.stores else None

    def __len__(self) -> int:
        return len(self.stores)

    def set_epoch(self, epoch: int) -> None:
        """Draw new tile subsets (with ``max_tiles``) for this epoch; call it before each epoch."""
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        from wsi_hcc.store.patch_store import open_store

        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} bags")
        group = open_store(self.stores[i])
        features = np.asarray(group["features"][:], dtype=np.float32)
        coords = np.asarray(group["coords"][:], dtype=np.int64)
        if self.max_tiles is not None and len(features) > self.max_tiles:
            rng = np.random.default_rng((self.seed, self.epoch, i % len(self)))
            keep = np.sort(rng.choice(len(features), self.max_tiles, replace=False))
            features, coords = features[keep], coords[keep]
        return {"features": features, "coords": coords, "label": int(self.labels[i]),
                "slide": self.stores[i].name.removesuffix(".zarr")}

