"""Training data from stores: labels from CSV and from QuPath annotations, splits, worker safety."""

import json
import multiprocessing

import albumentations as A
import numpy as np
import pytest

from wsi_hcc.errors import WsiHccError
from wsi_hcc.qupath.annotations import label_tiles, read_qupath_geojson
from wsi_hcc.store.patch_store import open_store
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.slide_tiler import tile_slide
from wsi_hcc.training.datasets import (
    PatchDataset,
    SlideLabel,
    class_balanced_weights,
    patient_splits,
    read_slide_labels,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from wsi_hcc.synth import write_synthetic_slide

    root = tmp_path_factory.mktemp("stores")
    paths = []
    for seed in (1, 2):
        slide = write_synthetic_slide(root / f"s{seed}.svs", size_px=(2048, 1536), mpp=0.25, seed=seed)
        result = tile_slide(slide.path, root / "out", TileConfig(target_mpp=0.5, tile_px=128, min_tissue=0.5,
                                                                 compression="none"))
        paths.append(result.store_path)
    return paths


def _item(args):
    dataset, i = args
    item = dataset[i]
    return item["image"], item["label"]


def test_slide_labels_and_items(stores, tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("slide,patient,label,grade\ns1,p1,HCC,2\ns2,p2,non-HCC,\n")
    rows = read_slide_labels(csv_path)
    assert rows[0] == SlideLabel("s1", "p1", "HCC", "2") and rows[1].grade is None
    classes = sorted({r.label for r in rows})
    counts = [open_store(s)["tiles"].shape[0] for s in stores]
    labels = [np.full(n, classes.index(r.label)) for n, r in zip(counts, rows)]
    dataset = PatchDataset(stores, labels)
    assert len(dataset) == sum(counts) > 0
    first, last = dataset[0], dataset[len(dataset) - 1]
    assert first["image"].shape == (128, 128, 3) and first["image"].dtype == np.uint8
    assert (first["slide"], first["label"]) == ("s1", classes.index("HCC"))
    assert (last["slide"], last["label"]) == ("s2", classes.index("non-HCC"))
    np.testing.assert_array_equal(first["image"], open_store(stores[0])["tiles"][0])
    assert first["coords"] == tuple(open_store(stores[0])["coords"][0])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_tiles_labelled_from_qupath_annotations(stores, tmp_path):
    group = open_store(stores[0])
    coords = group["coords"][:]
    size = group.attrs["wsi_hcc"]["tile_spec"]["tile_size_level0"]
    origins = np.unique(coords[:, 0])
    split_x = float(origins[len(origins) // 2])  # on a tile edge, so no tile is split half and half
    features = [{"type": "Feature", "properties": {"classification": {"name": name}},
                 "geometry": {"type": "Polygon", "coordinates": [[[x0, 0], [x1, 0], [x1, 1536], [x0, 1536], [x0, 0]]]}}
                for name, x0, x1 in (("Tumor", 0, split_x), ("Normal", split_x, 2048))]
    geojson = tmp_path / "a.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    labels = label_tiles(coords, size, read_qupath_geojson(geojson), class_names=("Tumor", "Normal"))
    dataset = PatchDataset(stores[:1], [labels.labels])
    assert len(dataset) == len(coords) - labels.n_unlabelled
    for i in range(len(dataset)):
        item = dataset[i]
        centre_x = item["coords"][0] + size / 2
        assert item["label"] == (0 if centre_x < split_x else 1)


def test_transform_is_applied_with_its_seed(stores):
    counts = [open_store(s)["tiles"].shape[0] for s in stores]
    labels = [np.zeros(n, dtype=int) for n in counts]
    make = lambda: PatchDataset(stores, labels, transform=A.Compose([A.RandomRotate90(p=1.0)], seed=3))  # noqa: E731
    a, b, plain = make(), make(), PatchDataset(stores, labels)
    augmented = a[0]["image"]
    np.testing.assert_array_equal(augmented, b[0]["image"])
    rotations = [np.rot90(plain[0]["image"], k) for k in range(4)]
    assert any(np.array_equal(augmented, r) for r in rotations)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_items_are_the_same_in_worker_processes(stores, method):
    counts = [open_store(s)["tiles"].shape[0] for s in stores]
    dataset = PatchDataset(stores, [np.arange(n) % 2 for n in counts])
    expected = [_item((dataset, i)) for i in range(0, len(dataset), 7)]  # opens handles in the parent
    with multiprocessing.get_context(method).Pool(2) as pool:
        got = pool.map(_item, [(dataset, i) for i in range(0, len(dataset), 7)])
    for (image_a, label_a), (image_b, label_b) in zip(expected, got):
        np.testing.assert_array_equal(image_a, image_b)
        assert label_a == label_b


def test_patient_splits_never_share_a_patient():
    slides = [SlideLabel(f"s{i}", f"p{i // 3}", "HCC" if i % 2 else "non-HCC") for i in range(60)]
    splits = patient_splits(slides, seed=4)
    patient_of = {s.slide: s.patient for s in slides}
    sides = [{patient_of[s] for s in members} for members in splits.values()]
    assert all(not (a & b) for i, a in enumerate(sides) for b in sides[i + 1:])
    assert sorted(sum(splits.values(), [])) == sorted(s.slide for s in slides)
    assert abs(len(splits["train"]) - 42) <= 3
    assert splits == patient_splits(slides, seed=4) and splits != patient_splits(slides, seed=5)
    with pytest.raises(WsiHccError):
        patient_splits(slides, fractions=(0.5, 0.6, 0.1))


def test_class_balanced_weights():
    labels = np.array([0, 0, 0, 1, -1, 2, 2])
    weights = class_balanced_weights(labels)
    assert weights[4] == 0
    totals = [weights[labels == c].sum() for c in (0, 1, 2)]
    np.testing.assert_allclose(totals, [1 / 3] * 3)


def test_bad_label_csv_is_one_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("slide,label\ns1,HCC\n")
    with pytest.raises(WsiHccError, match="missing: patient"):
        read_slide_labels(path)
    path.write_text("slide,patient,label\ns1,p1,HCC\ns1,p2,HCC\n")
    with pytest.raises(WsiHccError, match="listed twice"):
        read_slide_labels(path)


def test_a_missing_label_csv_says_where_a_relative_path_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WsiHccError, match=rf"^slides.csv: label CSV not found \(relative to {tmp_path}, where the "
                                          r"command runs\); pass --labels"):
        read_slide_labels("slides.csv")
    with pytest.raises(WsiHccError, match=rf"^{tmp_path / 'gone.csv'}: label CSV not found; pass --labels"):
        read_slide_labels(tmp_path / "gone.csv")
