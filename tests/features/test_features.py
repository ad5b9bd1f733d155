"""`wsi-hcc features`: embeddings aligned with coords, skip, resume, errors, CLAM .h5."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wsi_hcc.cli.app import main
from wsi_hcc.errors import WsiHccError
from wsi_hcc.features.extract import FeatureExtractor, extract_features, extract_store_features
from wsi_hcc.models import create_backbone, to_model_input
from wsi_hcc.pipelines.features import run_features
from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.store.feature_array import FeatureError, partial_features_path, read_store_meta
from wsi_hcc.store.patch_store import TileReader, open_store
from wsi_hcc.tiling.config import TileConfig


@pytest.fixture(scope="module")
def stores_224(synth_slide, tmp_path_factory):
    """The synthetic slide tiled at 0.5 um/px, 224 px (what the registered models expect)."""
    out = tmp_path_factory.mktemp("stores224")
    # one tile per chunk file, so that a test can damage a single tile
    report = run_tile([synth_slide], out, TileConfig(target_mpp=0.5, tile_px=224, qc=False, chunk_tiles=1))
    assert report.count("done") == 1
    return out / "synthetic.zarr"


@pytest.fixture
def store(stores_224, tmp_path):
    copy = tmp_path / "synthetic.zarr"
    shutil.copytree(stores_224, copy)
    return copy


@pytest.fixture(scope="module")
def resnet_features():
    torch.manual_seed(1)  # not features' own seed for runs without --weights (0): these stand for trained weights
    return create_backbone("resnet34", num_classes=0)


@pytest.fixture(scope="module")
def small_features():
    """timm's tiny test network: same code paths, a fraction of the CPU time. Its card says 160 px;
    it takes the stores' 224 px as they are (its card says so), since resizing needs --allow-resize."""
    from dataclasses import replace

    torch.manual_seed(0)
    model = create_backbone("test_resnet", num_classes=0)
    model.card = replace(model.card, input_px=224, tile_px=224)
    return model


def _direct_features(model, store):
    reader = TileReader(store)
    tiles = torch.from_numpy(np.stack([reader[i] for i in range(len(reader))]))
    with torch.inference_mode():
        return model.eval()(to_model_input(tiles, model.card)).numpy()


def test_features_are_written_in_coords_order(store, resnet_features):
    extractor = FeatureExtractor(resnet_features, "cpu")
    result = extract_store_features(store, extractor, batch_size=16, dtype="float32")
    group = open_store(store)
    features = np.asarray(group["features"][:])
    assert features.shape == (result.n_tiles, 512) == (group["coords"].shape[0], 512)
    np.testing.assert_allclose(features, _direct_features(resnet_features, store), rtol=1e-4, atol=1e-4)
    provenance = read_store_meta(store)["features"]
    assert provenance["backbone"] == "resnet34" and provenance["dtype"] == "float32"
    assert provenance["card"]["target_mpp"] == 0.5 and "torch" in provenance["versions"]
    assert not partial_features_path(store).exists()


def test_an_extractor_embeds_a_batch_now_or_when_asked(store, small_features):
    extractor = FeatureExtractor(small_features, "cpu")
    reader = TileReader(store)
    tiles = torch.from_numpy(np.stack([reader[i] for i in range(8)]))
    expected = _direct_features(small_features, store)[:8]
    np.testing.assert_allclose(extractor(tiles), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(extractor.submit(tiles).result(), expected, rtol=1e-4, atol=1e-4)


def test_a_batch_of_tiny_stores_runs_with_decoders_ahead(small_features, tmp_path):
    """Biopsy-sized stores give units of a few tiles: a model batch then spans many units, and the
    decoders' buffers must not run out (each unit holds one until its batch is done)."""
    from wsi_hcc.synth import write_synthetic_slide

    write_synthetic_slide(tmp_path / "tiny.svs", size_px=(1024, 1024), mpp=0.25, seed=2)
    run_tile([tmp_path / "tiny.svs"], tmp_path, TileConfig(target_mpp=0.5, tile_px=224, qc=False))
    stores = [tmp_path / "tiny.zarr"]
    for k in range(15):
        stores.append(tmp_path / f"tiny{k}.zarr")
        shutil.copytree(stores[0], stores[-1])
    assert len(TileReader(stores[0])) < 8
    extractor = FeatureExtractor(small_features, "cpu")
    outcomes = extract_features(stores, extractor, batch_size=64, decode_threads=2, dtype="float32")
    assert all(o.n_tiles == len(TileReader(stores[0])) for o in outcomes)
    expected = _direct_features(small_features, stores[0])
    for store in stores:
        np.testing.assert_allclose(open_store(store)["features"][:], expected, rtol=1e-4, atol=1e-4)


def test_a_failed_write_fails_its_store_only_and_events_come_in_order(store, small_features, tmp_path, monkeypatch):
    """Rows are written by a writer thread behind the model: a full disk there fails that store,
    the others finish, and every store's events still arrive (started before finished)."""
    import wsi_hcc.features.extract as features
    from wsi_hcc.features.extract import FeatureEvents

    stores = [store]
    for name in ("b", "c"):
        stores.append(tmp_path / name / f"{name}.zarr")
        shutil.copytree(store, stores[-1])
    real_mark = features.mark_chunk_done

    def full_disk(path, chunk):
        if path == stores[1]:
            raise OSError(28, "No space left on device")
        real_mark(path, chunk)

    monkeypatch.setattr(features, "mark_chunk_done", full_disk)
    heard = []

    class Events(FeatureEvents):
        def store_started(self, index, n_tiles):
            heard.append(("started", index))

        def store_finished(self, index, outcome):
            heard.append(("finished", index, type(outcome).__name__))

    outcomes = extract_features(stores, FeatureExtractor(small_features, "cpu"), batch_size=16, decode_threads=2,
                                dtype="float32", chunk_rows=64, events=Events())
    assert isinstance(outcomes[1], OSError) and "No space left" in str(outcomes[1])
    assert [o.n_tiles for o in (outcomes[0], outcomes[2])] == [len(TileReader(store))] * 2
    assert not (stores[1] / "features").exists() and (stores[2] / "features").exists()
    assert sorted(e for e in heard if e[0] == "finished") == [("finished", 0, "FeatureResult"),
                                                              ("finished", 1, "OSError"),
                                                              ("finished", 2, "FeatureResult")]
    assert all(heard.index(("started", i)) < heard.index(next(e for e in heard if e[:2] == ("finished", i)))
               for i in range(3))


def test_stores_of_two_tile_sizes_share_a_run(store, small_features, synth_slide, tmp_path):
    """Both at the card's resolution, one at 256 px (resizing allowed): batches never mix sizes; each
    store's rows are its own. Without --allow-resize the 256 px store is refused with the fix."""
    run_tile([synth_slide], tmp_path / "256", TileConfig(target_mpp=0.5, tile_px=256, qc=False))
    other = tmp_path / "256" / "synthetic.zarr"
    extractor = FeatureExtractor(small_features, "cpu")
    refused = extract_features([other], extractor, dtype="float32")[0]
    assert isinstance(refused, FeatureError) and str(refused) == (
        f"{other}: tiles are 256 px but test_resnet takes 224 px, so they would reach it at 0.571 um/px; re-tile "
        "with --tile-px 224, or pass --allow-resize")
    outcomes = extract_features([store, other], extractor, batch_size=64, dtype="float32", allow_resize=True)
    assert [o.n_tiles for o in outcomes] == [len(TileReader(store)), len(TileReader(other))]
    for path in (store, other):
        np.testing.assert_allclose(open_store(path)["features"][:], _direct_features(small_features, path),
                                   rtol=1e-4, atol=1e-4)


def test_rerun_skips_and_another_model_needs_overwrite(store, resnet_features):
    extractor = FeatureExtractor(resnet_features, "cpu")
    extract_store_features(store, extractor, batch_size=32)
    assert extract_store_features(store, extractor, batch_size=32).skipped
    assert read_store_meta(store)["features"]["model_sha256"] == extractor.model_sha256
    other = FeatureExtractor(create_backbone("test_resnet", num_classes=0), "cpu")
    with pytest.raises(FeatureError, match="already has features from resnet34.*--overwrite"):
        extract_store_features(store, other, allow_resize=True)
    result = extract_store_features(store, other, overwrite=True, allow_resize=True)
    assert not result.skipped and open_store(store)["features"].shape[1] == other.card.feature_dim
    assert read_store_meta(store)["features"]["backbone"] == "test_resnet"
    # classify's mode: another model's features are replaced, this model's are kept
    result = extract_store_features(store, extractor, batch_size=32, replace_other=True)
    assert not result.skipped and read_store_meta(store)["features"]["backbone"] == "resnet34"
    assert extract_store_features(store, extractor, batch_size=32, replace_other=True).skipped


class _Killed(Exception):
    pass


class _DiesAfter:
    """An extractor that is killed after ``n`` batches, like a run stopped halfway."""

    def __init__(self, inner, n):
        self.inner, self.n, self.card, self.device = inner, n, inner.card, inner.device
        self.model_sha256 = inner.model_sha256

    def submit(self, tiles, normalizer=None):
        if self.n == 0:
            raise _Killed
        self.n -= 1
        return self.inner.submit(tiles, normalizer)


def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(store, small_features, tmp_path):
    extractor = FeatureExtractor(small_features, "cpu")
    with pytest.raises(_Killed):
        extract_store_features(store, _DiesAfter(extractor, 3), batch_size=8, chunk_rows=16, dtype="float32")
    assert partial_features_path(store).exists() and not (store / "features").exists()
    assert "features" not in read_store_meta(store)
    resumed = extract_store_features(store, extractor, batch_size=8, chunk_rows=16, dtype="float32")
    assert resumed.resumed_rows == 16  # one full chunk of 16 survived the kill
    fresh = tmp_path / "fresh" / "synthetic.zarr"
    shutil.copytree(store, fresh)
    extract_store_features(fresh, extractor, batch_size=8, dtype="float32", overwrite=True)
    np.testing.assert_array_equal(open_store(store)["features"][:], open_store(fresh)["features"][:])


@pytest.mark.parametrize("decoders", [{"decode_threads": 2}, {"decode_processes": 2}], ids=["threads", "processes"])
def test_decoders_give_the_same_features(store, small_features, decoders):
    extractor = FeatureExtractor(small_features, "cpu")
    extract_store_features(store, extractor, batch_size=16, dtype="float32", **decoders)
    decoded_ahead = np.asarray(open_store(store)["features"][:])
    np.testing.assert_allclose(decoded_ahead, _direct_features(small_features, store), rtol=1e-4, atol=1e-4)


def test_batch_writes_h5_reports_bad_stores_and_a_manifest(store, tmp_path):
    out = tmp_path / "h5_files"
    bad = tmp_path / "not_a_store.zarr"
    bad.mkdir()
    report = run_features([store, bad], out, "resnet34", device="cpu", h5=True, batch_size=32)
    assert report.count("done") == 1 and report.count("failed") == 1
    assert report.failed[0].reason.startswith(f"{bad}: not a patch store")
    with h5py.File(out / "synthetic.h5") as h5:
        assert h5["features"].shape == (report.outcomes[0].n_tiles, 512)
        assert h5["features"].dtype == np.float32  # the store's are float16: CLAM trains in float32
        np.testing.assert_array_equal(h5["coords"][:], open_store(store)["coords"][:])
        assert h5["coords"].attrs["patch_size"] == 224 and h5["coords"].attrs["target_mpp"] == 0.5
    manifest = json.loads((out / "features-manifest.json").read_text())
    assert manifest["summary"] == {"done": 1, "skipped": 0, "failed": 1} and manifest["card"]["feature_dim"] == 512


def test_defaults_follow_the_device(monkeypatch):
    """Measured on an H200 (benchmarks/RESULTS.md): decoding processes beat threads there, and batch
    256 beats 64; a small CPU machine decodes in the calling thread."""
    import wsi_hcc.pipelines.features as pipeline

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 16)
    assert pipeline.default_decoders(cuda) == {"decode_processes": 14}
    assert pipeline.default_decoders(cpu) == {"decode_threads": 4}
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    assert pipeline.default_decoders(cuda) == {"decode_processes": 1}
    assert pipeline.default_decoders(cpu) == {"decode_threads": 0}
    assert (pipeline.default_batch_size(cuda), pipeline.default_batch_size(cpu)) == (256, 64)


def test_a_cpu_run_records_its_defaults(store, small_features, tmp_path, monkeypatch):
    import wsi_hcc.pipelines.features as pipeline

    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    run_features([store], tmp_path / "out", "test_resnet", model=small_features, device="cpu")
    manifest = json.loads((tmp_path / "out" / "features-manifest.json").read_text())
    assert (manifest["batch_size"], manifest["decode_threads"], manifest["decode_processes"],
            manifest["gpu_decode"]) == (64, 0, 0, False)


def test_store_at_the_wrong_resolution_fails_with_the_fix(synth_slide, tmp_path):
    run_tile([synth_slide], tmp_path, TileConfig(target_mpp=1.0, tile_px=224, qc=False))
    report = run_features([tmp_path / "synthetic.zarr"], tmp_path, "resnet34", device="cpu")
    assert "tiles are at 1 um/px but resnet34 expects 0.5 um/px; re-tile with --mpp 0.5" in report.failed[0].reason


def test_cli_features(store, resnet_features, tmp_path):
    from wsi_hcc.models import save_weights

    weights = tmp_path / "resnet34.safetensors"
    save_weights(resnet_features, resnet_features.card, weights)
    command = ["features", str(store), "--arch", "resnet34", "--weights", str(weights), "--device", "cpu"]
    runner = CliRunner()
    result = runner.invoke(main, command + ["--h5", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 done" in result.output and (tmp_path / "out" / "synthetic.h5").exists()
    result = runner.invoke(main, command)
    assert result.exit_code == 0 and "1 skipped" in result.output
    result = runner.invoke(main, ["features", str(store), "--arch", "resnet34", "--device", "cpu"])
    assert result.exit_code == 1 and "already has features from resnet34" in result.output
    result = runner.invoke(main, ["features", str(store), "--arch", "resnet34", "--weights", "nope.pt"])
    assert result.exit_code == 2 and result.output.strip() == (
        "error: nope.pt: weights file not found; pass a model folder or a local .safetensors, .pt/.pth or .h5 file "
        "(nothing is downloaded)")
    result = runner.invoke(main, command + ["--threads", "2", "--workers", "2"])
    assert result.exit_code == 2 and result.output.strip() == (
        "error: --threads and --workers: decode in threads or in worker processes, not both")
    if not torch.cuda.is_available():
        result = runner.invoke(main, ["features", str(store), "--arch", "resnet34", "--device", "cuda"])
        assert result.exit_code == 2 and "no CUDA device" in result.output
    result = runner.invoke(main, ["features", str(store), "--weights", str(weights)])
    assert result.exit_code == 2 and "Missing option '--arch'" in result.output


def test_old_option_spellings_work_for_one_release_with_a_one_line_warning(store, resnet_features, tmp_path):
    from wsi_hcc.models import save_weights

    weights = tmp_path / "resnet34.safetensors"
    save_weights(resnet_features, resnet_features.card, weights)
    old = ["features", str(store), "--backbone", "resnet34", "--weights", str(weights), "--device", "cpu",
           "--decode-threads", "1", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, old)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: --backbone is deprecated and will be removed; use --arch",
                        "warning: --decode-threads is deprecated and will be removed; use --threads"]
    manifest = json.loads((tmp_path / "out" / "features-manifest.json").read_text())
    assert manifest["backbone"] == "resnet34" and manifest["decode_threads"] == 1
    both = CliRunner().invoke(main, old + ["--arch", "resnet34"])
    assert both.exit_code == 2 and both.output == (
        "error: --backbone and --arch are the same option; give --arch only\n")
    missing = CliRunner().invoke(main, ["features", str(tmp_path / "nostores"), "--arch", "resnet34", "--weights",
                                        str(weights), "--out", str(tmp_path / "o2")])
    assert missing.exit_code == 1 and "nostores: no such store or folder; check the path" in missing.output


def test_bag_dataset_reads_features_per_slide(store, small_features, tmp_path):
    from torch.utils.data import DataLoader

    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.training.datasets import BagDataset

    with pytest.raises(WsiHccError, match="has no features yet; run `wsi-hcc features"):
        BagDataset([store], [1])
    extract_store_features(store, FeatureExtractor(small_features, "cpu"), dtype="float32")
    bags = BagDataset([store], [1])
    item = bags[0]
    np.testing.assert_array_equal(item["features"], open_store(store)["features"][:])
    np.testing.assert_array_equal(item["coords"], open_store(store)["coords"][:])
    assert item["label"] == 1 and item["slide"] == "synthetic" and item["features"].dtype == np.float32

    limited = BagDataset([store, store], [0, 1], max_tiles=5, seed=3)
    first = limited[0]["coords"]
    assert len(first) == 5 and np.array_equal(first, limited[0]["coords"])
    limited.set_epoch(1)
    assert not np.array_equal(first, limited[0]["coords"])
    in_workers = [b["coords"][0].numpy() for b in DataLoader(limited, batch_size=1, num_workers=2)]
    assert all(np.array_equal(a, limited[i]["coords"]) for i, a in enumerate(in_workers))

    other = tmp_path / "other" / "synthetic.zarr"
    shutil.copytree(store, other)
    torch.manual_seed(1)  # the same architecture, other random weights: other features
    extract_store_features(other, FeatureExtractor(create_backbone("test_resnet", num_classes=0), "cpu"),
                           overwrite=True, allow_resize=True)
    with pytest.raises(WsiHccError, match="features come from another model"):
        BagDataset([store, other], [0, 1])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_cuda
@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_gpu_decoding_matches_cpu_decoding(store, subsampling):
    """Both chroma layouts go to nvJPEG (``TileReader.jpeg``): 4:4:4, the default, and 4:2:0."""
    from wsi_hcc.features.extract import decode_on_device
    from wsi_hcc.store.patch_store import make_codec

    reader = TileReader(store)
    codec = make_codec("jpeg", 90, jpeg_subsampling=subsampling)
    chunks = [codec.encode(reader[i]) for i in range(min(16, len(reader)))]
    on_gpu = decode_on_device(chunks, torch.device("cuda"))
    on_cpu = torch.from_numpy(np.stack([codec.decode(c) for c in chunks]))
    difference = (on_gpu.cpu().int() - on_cpu.int()).abs()
    # nvJPEG upsamples 4:2:0 chroma without libjpeg-turbo's smoothing, so single pixels at sharp
    # colour edges differ (21 grey levels at most on an H200, mean 0.65); a colour shift would move the mean
    assert on_gpu.shape == on_cpu.shape and difference.float().mean() < 1.0
    assert (difference > 8).float().mean() < 0.01 and difference.max() <= 32


@needs_cuda
@pytest.mark.parametrize("decoding", [{"gpu_decode": True, "decode_threads": 2}, {"decode_threads": 2},
                                      {"decode_processes": 2}], ids=["nvjpeg", "cpu-threads", "cpu-processes"])
def test_cuda_features_agree_with_cpu_features(store, resnet_features, decoding):
    cpu = FeatureExtractor(resnet_features, "cpu")
    extract_store_features(store, cpu, dtype="float32", batch_size=32)
    on_cpu = np.asarray(open_store(store)["features"][:])
    cuda = FeatureExtractor(resnet_features, "cuda")
    extract_store_features(store, cuda, dtype="float32", batch_size=32, overwrite=True, **decoding)
    on_cuda = np.asarray(open_store(store)["features"][:])
    resnet_features.to("cpu")
    cosine = (on_cpu * on_cuda).sum(1) / np.linalg.norm(on_cpu, axis=1) / np.linalg.norm(on_cuda, axis=1)
    assert cosine.min() > 0.99  # bf16 autocast on CUDA, float32 on the CPU


def test_a_corrupt_tile_fails_its_store_only(store, tmp_path):
    stores = [store]
    for name in ("b", "c"):  # stems are unique in a run: they name each slide's rows and files
        stores.append(tmp_path / name / f"{name}.zarr")
        shutil.copytree(store, stores[-1])
    (stores[1] / "tiles" / "3.0.0.0").write_bytes(b"not a jpeg")
    torch.manual_seed(0)
    report = run_features(stores, tmp_path / "out", "test_resnet", device="cpu", decode_threads=2, batch_size=8,
                          allow_resize=True)
    assert [o.status for o in report.outcomes] == ["done", "failed", "done"]
    assert report.outcomes[1].reason.startswith(f"{stores[1]}: tiles 0-7 unreadable")
    assert not (stores[1] / "features").exists() and (stores[2] / "features").exists()
    np.testing.assert_array_equal(open_store(stores[0])["features"][:], open_store(stores[2])["features"][:])


def test_a_missing_tile_fails_its_store_instead_of_embedding_a_black_tile(store, tmp_path):
    (store / "tiles" / "5.0.0.0").unlink()  # zarr would read this tile as zeros
    report = run_features([store], tmp_path / "out", "test_resnet", device="cpu", batch_size=8, allow_resize=True)
    assert [o.status for o in report.outcomes] == ["failed"]
    assert report.outcomes[0].reason == (f"{store}: tile 5 is missing (no chunk file tiles/5.0.0.0); the store is "
                                         "damaged: tile the slide again with --overwrite")
    assert not (store / "features").exists()
    with pytest.raises(WsiHccError, match="tile 5 is missing"):
        TileReader(store)[5]


@pytest.mark.parametrize("codec, on_gpu", [(("jpeg", None, "444"), True), (("jpeg", None, "420"), True),
                                           (("jpeg", "RGB", "444"), False), (("zstd", None, "444"), False)])
def test_only_plain_jpeg_stores_are_decoded_on_the_gpu(tmp_path, codec, on_gpu):
    """Pass-through stores hold a scanner's RGB-coded JPEG; a GPU decoder would take it for YCbCr.
    YCbCr JPEG goes to nvJPEG whatever its chroma subsampling."""
    from wsi_hcc.store.patch_store import create_store, make_codec

    compression, colorspace, subsampling = codec
    path = tmp_path / "s.zarr"
    create_store(path, 16, np.zeros((1, 2), np.int64), np.ones(1, np.float32),
                 make_codec(compression, jpeg_colorspace=colorspace, jpeg_subsampling=subsampling))
    assert TileReader(path).jpeg is on_gpu


def test_random_weights_are_kept_so_features_can_be_reproduced(store, tmp_path, recording_progress):
    from wsi_hcc.models import file_sha256

    out = tmp_path / "out"
    torch.manual_seed(5)
    result = CliRunner().invoke(main, ["features", str(store), "--arch", "test_resnet", "--out", str(out),
                                       "--device", "cpu", "--allow-resize"])
    assert result.exit_code == 0, result.output
    saved = list(out.glob("test_resnet-random-*.safetensors"))
    assert len(saved) == 1
    # one line says so, and the summary counts stores
    n_tiles = int(read_store_meta(store)["n_tiles"])
    assert result.output.splitlines() == [
        f"note: no --weights, so these features come from random test_resnet weights, not a trained model (saved as "
        f"{saved[0]}; pass --weights {saved[0]} to embed more stores alike)",
        f"1 store: 1 done ({n_tiles} tiles), 0 skipped, 0 failed -> {out}"]
    assert read_store_meta(store)["features"]["weights_sha256"] == file_sha256(saved[0])
    manifest = json.loads((out / "features-manifest.json").read_text())
    assert manifest["weights"] == str(saved[0])
    again = run_features([store], out, "test_resnet", weights=saved[0], device="cpu", allow_resize=True,
                         progress=recording_progress)
    assert again.count("skipped") == 1  # the same weights: nothing to redo
    assert recording_progress.of("message") == []  # and nothing said about random weights
    # another run without --weights starts from the same random weights: the same file, the store is current
    torch.manual_seed(6)
    third = run_features([store], out, "test_resnet", device="cpu", allow_resize=True)
    assert third.count("skipped") == 1 and list(out.glob("test_resnet-random-*.safetensors")) == saved


def test_a_model_folder_gives_the_features_of_its_weights(store, small_features, tmp_path):
    import json

    from wsi_hcc.models import save_model_folder
    from wsi_hcc.pipelines.features import run_features

    folder = save_model_folder(small_features, tmp_path / "model")
    assert json.loads((folder / "card.json").read_text())["kind"] == "feature-extractor"
    report = run_features([store], tmp_path / "out", "test_resnet", weights=folder, device="cpu", dtype="float32")
    assert report.count("done") == 1, report.outcomes
    np.testing.assert_allclose(open_store(store)["features"][:], _direct_features(small_features, store),
                               rtol=1e-4, atol=1e-4)
    recorded = read_store_meta(store)["features"]["weights_sha256"]
    assert recorded == json.loads((folder / "card.json").read_text())["weights_sha256"]
    with pytest.raises(WsiHccError, match="model: a test_resnet model folder; use --arch test_resnet"):
        create_backbone("resnet34", weights=folder)
