"""Training data: stores + labels -> labelled slides, patient-level splits, and epoch datasets.

Tiles stay uint8 until they reach the device; the model card turns them into model input there
(``wsi_hcc.models.to_model_input``). Every random choice (tile subsets, epoch order, balanced
sampling, augmentation) is a pure function of the seed, the epoch and the position in the epoch,
so a resumed run sees exactly the tiles and augmentations an uninterrupted one would, whatever
the number of DataLoader workers.
"""

from __future__ import annotations

import csv
import hashlib
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.qupath.annotations import Annotation, label_tiles, read_qupath_geojson
from wsi_hcc.stain.augment import reseed_augmentation
from wsi_hcc.store.feature_array import read_store_meta
from wsi_hcc.store.finder import find_stores
from wsi_hcc.training.config import TrainConfig
from wsi_hcc.training.datasets import (
    PatchDataset,
    SlideLabel,
    class_balanced_weights,
    patient_splits,
    read_slide_labels,
)
from wsi_hcc.training.errors import TrainError

__all__ = ["SPLITS", "LabelledSlide", "SplitIndex", "TrainingData", "load_training_data", "EpochItems",
           "epoch_order", "collate_tiles", "class_loss_weights"]

SPLITS = ("train", "validation", "test")
_GEOJSON_SUFFIXES = (".geojson", ".geojson.gz", ".json")


@dataclass(frozen=True)
class LabelledSlide:
    """One store with its patient and a label per tile (-1: not used)."""

    stem: str
    store: Path
    patient: str
    labels: np.ndarray
    meta: dict = field(repr=False)
    fixed_split: str | None = None


@dataclass(frozen=True)
class SplitIndex:
    """Per dataset position: which store (index into ``stores``), which tile, where, which label."""

    stores: list[str]
    stems: list[str]
    store_of: np.ndarray
    tile_of: np.ndarray
    coords: np.ndarray
    labels: np.ndarray

    def describe(self, position: int) -> str:
        return f"{self.stores[int(self.store_of[position])]}: tile {int(self.tile_of[position])}"


@dataclass(frozen=True)
class TrainingData:
    """Labelled slides dealt into splits, with what the trained model's card must record."""

    class_names: tuple[str, ...]
    slides: tuple[LabelledSlide, ...]
    splits: dict[str, list[str]]
    target_mpp: float
    tile_px: int
    stain_reference: dict | None
    left_out: tuple[dict[str, str], ...]

    def split_slides(self, split: str) -> list[LabelledSlide]:
        members = set(self.splits[split])
        return [s for s in self.slides if s.stem in members]

    def dataset(self, split: str) -> PatchDataset:
        slides = self.split_slides(split)
        return PatchDataset([s.store for s in slides], [s.labels for s in slides])

    def split_index(self, split: str) -> SplitIndex:
        """Slide, tile index and coordinates of each position of ``dataset(split)``."""
        from wsi_hcc.store.patch_store import open_store

        slides = self.split_slides(split)
        keep = [np.flatnonzero(s.labels >= 0) for s in slides]
        coords = [open_store(s.store)["coords"][:][k] if len(k) else np.zeros((0, 2), np.int64)
                  for s, k in zip(slides, keep)]
        return SplitIndex(
            stores=[str(s.store) for s in slides], stems=[s.stem for s in slides],
            store_of=np.concatenate([np.full(len(k), i, np.int64) for i, k in enumerate(keep)]
                                    or [np.zeros(0, np.int64)]),
            tile_of=np.concatenate(keep or [np.zeros(0, np.int64)]).astype(np.int64),
            coords=np.concatenate(coords or [np.zeros((0, 2), np.int64)]).astype(np.int64),
            labels=np.concatenate([s.labels[k] for s, k in zip(slides, keep)] or [np.zeros(0, np.int64)]))

    def record(self) -> dict[str, Any]:
        """``splits.json``: which slides and patients are in which split, and their tiles per class."""
        out: dict[str, Any] = {"class_names": list(self.class_names), "splits": {}, "left_out": list(self.left_out)}
        for split in SPLITS:
            slides = self.split_slides(split)
            counts = Counter(int(v) for s in slides for v in s.labels if v >= 0)
            out["splits"][split] = {
                "slides": [s.stem for s in slides],
                "patients": sorted({s.patient for s in slides}),
                "n_tiles": int(sum(counts.values())),
                "tiles_per_class": {name: int(counts.get(i, 0)) for i, name in enumerate(self.class_names)},
            }
        return out


def load_training_data(config: TrainConfig) -> TrainingData:
    """Read stores and labels, keep the labelled slides, and deal them into patient-level splits."""
    stores = find_stores(config.stores)
    metas = {s: read_store_meta(s) for s in stores}
    target_mpp, tile_px, stain = _common_tiling(metas)
    table = _read_slide_table(config)
    left_out: list[dict[str, str]] = []
    if config.labels.annotations:
        class_names, labelled = _annotation_labels(config, metas, table, left_out)
    else:
        class_names, labelled = _csv_labels(config, metas, table, left_out)
    labelled = [_limit_tiles(s, config.max_tiles_per_slide, config.seed) for s in labelled]
    kept = []
    for s in labelled:
        if (s.labels >= 0).any():
            kept.append(s)
        else:
            left_out.append({"slide": s.stem, "reason": "no labelled tiles"})
    if not kept:
        raise TrainError(f"{config.labels.slide_csv or config.labels.annotations}: no store has labelled tiles; "
                         "check that slide names match the store stems")
    splits = _splits(kept, config)
    data = TrainingData(tuple(class_names), tuple(kept), splits, target_mpp, tile_px, stain, tuple(left_out))
    _check_splits(data, config)
    return data


def _common_tiling(metas: dict[Path, dict]) -> tuple[float, int, dict | None]:
    first_path, first = next(iter(metas.items()))
    spec = first["tile_spec"]
    for path, meta in metas.items():
        other = meta["tile_spec"]
        if abs(float(other["target_mpp"]) - float(spec["target_mpp"])) > 0.01 * float(spec["target_mpp"]):
            raise TrainError(f"{path}: tiles are at {other['target_mpp']:g} um/px but {first_path} at "
                             f"{spec['target_mpp']:g}; re-tile so every training store has one mpp")
        if int(other["tile_px"]) != int(spec["tile_px"]):
            raise TrainError(f"{path}: {other['tile_px']} px tiles but {first_path} has {spec['tile_px']} px; "
                             "re-tile so every training store has one tile size")
        if meta.get("stain_reference") != first.get("stain_reference"):
            raise TrainError(f"{path}: stain-normalised differently from {first_path}; tile every training slide "
                             "with the same --normalize and --reference")
    return float(spec["target_mpp"]), int(spec["tile_px"]), first.get("stain_reference")


def _read_slide_table(config: TrainConfig) -> dict[str, dict[str, Any]] | None:
    """Rows of the slide CSV by slide: patient, label (when labels come from it), fixed split."""
    csv_path = config.labels.slide_csv
    if not csv_path:
        return None
    path = Path(csv_path)
    if not path.is_file():
        raise TrainError(f"{path}: slide CSV not found; fix labels.slide_csv in the config")
    try:
        with open(path, newline="") as fh:
            raw = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainError(f"{path}: cannot read the slide CSV ({exc})") from None
    if config.labels.annotations:  # patients (and splits) only
        missing = {"slide", "patient"} - set(raw[0] if raw else ())
        if missing:
            raise TrainError(f"{path}: the slide CSV needs columns slide, patient "
                             f"(missing: {', '.join(sorted(missing))})")
        rows = [SlideLabel(r["slide"].strip(), r["patient"].strip(), "") for r in raw]
    else:
        rows = read_slide_labels(path)
    table: dict[str, dict[str, Any]] = {}
    for line, (row, raw_row) in enumerate(zip(rows, raw), start=2):
        split = (raw_row.get("split") or "").strip().lower() or None
        if split is not None and split not in SPLITS:
            raise TrainError(f"{path}:{line}: split {split!r} must be train, validation or test (or empty)")
        if not row.patient:
            raise TrainError(f"{path}:{line}: empty patient; fill it in or remove the row")
        label = row.grade if config.labels.column == "grade" else row.label
        table[row.slide] = {"patient": row.patient, "label": label, "split": split, "line": line, "path": path}
    return table


def _csv_labels(config, metas, table, left_out):
    csv_path = Path(config.labels.slide_csv)
    for stem, row in table.items():
        if not row["label"]:
            raise TrainError(f"{csv_path}:{row['line']}: slide {stem!r} has no {config.labels.column}; "
                             "fill it in or remove the row")
    class_map = config.labels.class_map
    names_of = {stem: class_map.get(row["label"], row["label"]) for stem, row in table.items()}
    class_names = list(config.class_names or sorted(set(names_of.values())))
    for stem, row in table.items():
        if names_of[stem] not in class_names:
            raise TrainError(f"{csv_path}:{row['line']}: {config.labels.column} {row['label']!r} is not one of "
                             f"class_names {class_names}; fix the CSV, class_names or labels.class_map")
    labelled = []
    for store, meta in metas.items():
        stem = store.name.removesuffix(".zarr")
        row = table.get(stem)
        if row is None:
            left_out.append({"slide": stem, "reason": f"not in {csv_path}"})
            continue
        labels = np.full(int(meta["n_tiles"]), class_names.index(names_of[stem]), dtype=np.int64)
        labelled.append(LabelledSlide(stem, store, row["patient"], labels, meta, row["split"]))
    stems = {s.stem for s in labelled}
    left_out.extend({"slide": stem, "reason": "in the slide CSV but no store"} for stem in table if stem not in stems)
    return class_names, labelled


def _annotation_file(folder: Path, stem: str) -> Path | None:
    for suffix in _GEOJSON_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _annotation_labels(config, metas, table, left_out):
    from wsi_hcc.store.patch_store import open_store

    folder = Path(config.labels.annotations)
    if not folder.is_dir():
        raise TrainError(f"{folder}: annotation folder not found; fix labels.annotations in the config")
    class_map = config.labels.class_map
    read: dict[Path, list[Annotation]] = {}
    for store in metas:
        stem = store.name.removesuffix(".zarr")
        if table is not None and stem not in table:
            left_out.append({"slide": stem, "reason": f"not in {config.labels.slide_csv}"})
            continue
        path = _annotation_file(folder, stem)
        if path is None:
            left_out.append({"slide": stem, "reason": f"no {stem}.geojson in {folder}"})
            continue
        read[store] = [Annotation(class_map.get(a.name, a.name), a.geometry) for a in read_qupath_geojson(path)]
    if not read:
        raise TrainError(f"{folder}: no <slide stem>.geojson file matches a store; export annotations from QuPath "
                         "named after the slides")
    class_names = list(config.class_names or sorted({a.name for anns in read.values() for a in anns if a.name}))
    if len(class_names) < 2:
        raise TrainError(f"{folder}: the annotations name fewer than two classes ({class_names}); set class_names "
                         "and labels.class_map")
    labelled = []
    for store, drawn in read.items():
        stem = store.name.removesuffix(".zarr")
        meta = metas[store]
        coords = open_store(store)["coords"][:] if int(meta["n_tiles"]) else np.zeros((0, 2), np.int64)
        result = label_tiles(coords, float(meta["tile_spec"]["tile_size_level0"]), drawn, class_names,
                             min_coverage=config.labels.min_coverage)
        row = table.get(stem) if table is not None else None
        patient = row["patient"] if row else stem
        labelled.append(LabelledSlide(stem, store, patient, result.labels, meta, row["split"] if row else None))
    return class_names, labelled


def _limit_tiles(slide: LabelledSlide, limit: int | None, seed: int) -> LabelledSlide:
    labelled = np.flatnonzero(slide.labels >= 0)
    if limit is None or len(labelled) <= limit:
        return slide
    rng = np.random.default_rng([seed, zlib.crc32(slide.stem.encode())])
    keep = np.sort(rng.choice(labelled, size=limit, replace=False))
    labels = np.full_like(slide.labels, -1)
    labels[keep] = slide.labels[keep]
    return LabelledSlide(slide.stem, slide.store, slide.patient, labels, slide.meta, slide.fixed_split)


def _splits(slides: list[LabelledSlide], config: TrainConfig) -> dict[str, list[str]]:
    fixed = {s.stem: s.fixed_split for s in slides if s.fixed_split}
    if fixed:
        unassigned = [s.stem for s in slides if not s.fixed_split]
        if unassigned:
            raise TrainError(f"{config.labels.slide_csv}: the split column is filled for some slides but not for "
                             f"{unassigned[0]!r}; fill it for every slide or leave it empty for all")
        side: dict[str, str] = {}
        for s in slides:
            if side.setdefault(s.patient, s.fixed_split) != s.fixed_split:
                raise TrainError(f"{config.labels.slide_csv}: patient {s.patient!r} is in both {side[s.patient]} and "
                                 f"{s.fixed_split}; keep each patient's slides in one split")
        return {name: [s.stem for s in slides if s.fixed_split == name] for name in SPLITS}
    rows = [SlideLabel(s.stem, s.patient, "") for s in slides]
    return patient_splits(rows, fractions=config.split.fractions, names=SPLITS, seed=config.split.seed)


def _check_splits(data: TrainingData, config: TrainConfig) -> None:
    where = config.labels.slide_csv or config.labels.annotations
    for split in ("train", "validation"):
        if not data.splits[split]:
            n_patients = len({s.patient for s in data.slides})
            raise TrainError(f"{where}: the {split} split is empty ({n_patients} patients for split fractions "
                             f"{list(config.split.fractions)}); add slides or change split.fractions")
    train_classes = {int(v) for s in data.split_slides("train") for v in np.unique(s.labels) if v >= 0}
    if len(train_classes) < 2:
        raise TrainError(f"{where}: the train split has tiles of only {len(train_classes)} class; add slides of the "
                         "other classes or pass --split-seed N for another split")


# -- epochs ---------------------------------------------------------------------------------------


def epoch_order(labels: np.ndarray, seed: int, epoch: int, balanced: bool) -> np.ndarray:
    """Dataset positions in the order epoch ``epoch`` visits them.

    A shuffled permutation, or with ``balanced`` as many draws (with replacement) from a
    ``WeightedRandomSampler`` that gives every class the same chance.
    """
    import torch
    from torch.utils.data import WeightedRandomSampler

    generator = torch.Generator().manual_seed(_mix(seed, epoch, 0x5EED))
    n = len(labels)
    if not balanced:
        return torch.randperm(n, generator=generator).numpy()
    weights = torch.as_tensor(class_balanced_weights(labels), dtype=torch.double)
    sampler = WeightedRandomSampler(weights, num_samples=n, replacement=True, generator=generator)
    return np.fromiter(iter(sampler), dtype=np.int64, count=n)


def class_loss_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency loss weights (mean 1 over the classes present); absent classes get 0."""
    counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    digest = hashlib.sha256(np.asarray(values, dtype=np.int64).tobytes()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class EpochItems:
    """Item ``k`` of an epoch: tile ``order[start + k]`` of ``dataset``, augmented with a seed of its own
    (a function of ``seed``, ``epoch`` and ``start + k``, so a resumed epoch continues identically).

    With ``copies=3`` the order runs over three copies of every tile (``order`` values up to
    ``3 * len(dataset)``): as it is, flipped vertically, flipped horizontally.
    Items are ``(uint8 tile (H, W, 3), label, position in dataset)``.
    """

    def __init__(self, dataset: PatchDataset, order: np.ndarray, transform=None, seed: int = 0, epoch: int = 0,
                 start: int = 0, index: SplitIndex | None = None, copies: int = 1):
        if copies not in (1, 3):
            raise ValueError("copies must be 1 or 3")
        self.dataset, self.order, self.transform = dataset, np.asarray(order, dtype=np.int64), transform
        self.seed, self.epoch, self.start, self.index, self.copies = seed, epoch, start, index, copies

    def __len__(self) -> int:
        return max(0, len(self.order) - self.start)

    def __getitem__(self, k: int):
        k += self.start
        position, variant = divmod(int(self.order[k]), self.copies)
        try:
            item = self.dataset[position]
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            where = self.index.describe(position) if self.index is not None else f"tile {position}"
            raise TrainError(f"{where} cannot be read ({' '.join(str(exc).split())[:200]}); "
                             "re-tile the slide") from None
        image = item["image"]
        if variant == 1:
            image = image[::-1]  # cv2.flip(img, 0)
        elif variant == 2:
            image = image[:, ::-1]  # cv2.flip(img, 1)
        if self.transform is not None:
            reseed_augmentation(self.transform, _mix(self.seed, self.epoch, k))
            image = self.transform(image=image)["image"]
        return np.ascontiguousarray(image), item["label"], position


def collate_tiles(batch):
    """``[(tile, label, position), ...]`` -> uint8 (N, H, W, 3), int64 labels, int64 positions."""
    import torch

    tiles = torch.from_numpy(np.stack([b[0] for b in batch]))
    labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    positions = torch.tensor([b[2] for b in batch], dtype=torch.int64)
    return tiles, labels, positions
