"""``wsi-hcc classify`` on a dask cluster: a LocalCluster of two worker processes classifies
generated slides exactly as a local run does, each slide's whole chain on a worker (the scheduler
sees the features work), the model loaded once per worker; a worker that cannot see the files stops
the run in one line; a worker killed mid-run costs no slide and leaves nothing half-written.

Slow, but for the model cache's own test: the module trains the demo's bundle and starts two worker
processes (minutes on 2 busy cores).
"""

from __future__ import annotations

import csv
import gzip
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import RecordingProgress

from wsi_hcc.cli.app import main
from wsi_hcc.errors import WsiHccError

VARYING = ("seconds", "worker")  # what may differ between two runs of the same slides


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _same_but_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(VARYING)} for r in rows]


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as local, \
            Client(local) as client:
        yield local, client


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster") / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--train-slides", "6", "--heldout-slides", "4"])
    assert result.exit_code == 0, result.output
    bad = out / "bad.svs"
    bad.write_bytes(b"not a slide at all")
    return out, sorted((out / "heldout").glob("*.svs")) + [bad]


@pytest.fixture(scope="module")
def local_run(demo, tmp_path_factory):
    from wsi_hcc.pipelines.classify import run_classify

    out, slides = demo
    return run_classify(slides, out / "model", tmp_path_factory.mktemp("local") / "out", device="cpu")


@pytest.mark.slow
def test_a_two_worker_cluster_classifies_whole_slides_as_a_local_run_does(demo, local_run, cluster, tmp_path):
    from distributed import get_task_stream

    from wsi_hcc.pipelines import cluster as cluster_module
    from wsi_hcc.pipelines.classify import run_classify

    out, slides = demo
    local, client = cluster
    progress = RecordingProgress()
    with get_task_stream(client) as stream:
        report = run_classify(slides, out / "model", tmp_path / "out", device="cpu", scheduler=local.scheduler_address,
                              progress=progress)
    rows, here = _rows(report.predictions_csv), _rows(local_run.predictions_csv)
    assert [r["status"] for r in rows] == ["done"] * 4 + ["failed"]
    assert rows[-1]["reason"].startswith(f"{slides[-1]}: ") and "\n" not in rows[-1]["reason"]
    assert _same_but_timing(rows) == _same_but_timing(here)  # p_hcc, grades, tiles, reasons: all equal
    assert {r["worker"] for r in here} == {"local"}
    workers = set(local.scheduler_info["workers"])
    assert {r["worker"] for r in rows} <= workers and rows[0]["worker"] in workers
    for stem in (r["slide"] for r in rows[:4]):
        for name in (f"{stem}.heatmap.png", f"{stem}.geojson.gz"):
            assert (tmp_path / "out" / name).read_bytes() == (local_run.out_dir / name).read_bytes(), name
        from wsi_hcc.store.patch_store import open_store

        features = [np.asarray(open_store(d / "stores" / f"{stem}.zarr")["features"][:])
                    for d in (tmp_path / "out", local_run.out_dir)]
        np.testing.assert_array_equal(*features)

    # the scheduler ran every stage of every slide, the features included, and each worker loaded the bundle once
    prefixes = {item["key"].split("-")[2] for item in stream.data if str(item["key"]).startswith("wsi-hcc-")}
    assert prefixes == {"tile", "features", "classify"}
    loads = client.run(lambda: dict(cluster_module.LOADS))
    assert all(set(n.values()) <= {1} for n in loads.values()) and any(loads.values())

    import json

    manifest = json.loads((tmp_path / "out" / "classify-manifest.json").read_text())
    assert manifest["cluster"]["scheduler"] == local.scheduler_address
    assert {w["address"] for w in manifest["cluster"]["workers"]} == workers
    assert manifest["summary"] == {"done": 4, "skipped": 0, "failed": 1}

    # one bar over the slides, steps per stage
    assert progress.of("stage") == [("cluster",)] and len(progress.of("finished")) == 5
    statuses = [status for _, status in progress.of("steps")]
    assert statuses[-1] == "tile 5/5 · features 5/5 · classify 5/5"

    # a rerun (as after a killed client), here on a local cluster of its own, skips the slides the workers finished
    again = CliRunner().invoke(main, ["classify", *map(str, slides), "--model", str(out / "model"), "--out",
                                      str(tmp_path / "out"), "--device", "cpu", "--workers", "2"])
    assert again.exit_code == 1 and "5 slides: 0 classified, 4 already done, 1 failed" in again.output, again.output
    rerun = _rows(tmp_path / "out" / "predictions.csv")
    assert [r["status"] for r in rerun] == ["skipped"] * 4 + ["failed"] and rerun[0]["p_hcc"] == rows[0]["p_hcc"]
    assert all(r["worker"].startswith("tcp://") and r["worker"] not in workers for r in rerun)
    manifest = json.loads((tmp_path / "out" / "classify-manifest.json").read_text())
    assert manifest["cluster"]["kind"] == "LocalCluster" and len(manifest["cluster"]["workers"]) == 2


@pytest.mark.slow
def test_a_patch_classifier_on_the_cluster_scores_every_tile_as_a_local_run(demo, cluster, tmp_path):
    import torch

    from wsi_hcc.models import create_backbone, save_weights
    from wsi_hcc.pipelines.classify_patches import bundle_patch_classifier, run_classify_patches

    _, slides = demo
    local, client = cluster
    torch.manual_seed(0)
    model = create_backbone("livernet", num_classes=4)
    save_weights(model, model.card, tmp_path / "w.safetensors")
    bundle_patch_classifier("livernet", tmp_path / "w.safetensors", tmp_path / "m", classes=list("abcd"),
                            target_mpp=1.0)
    chosen = slides[:2]
    here = run_classify_patches(chosen, tmp_path / "m", tmp_path / "local", device="cpu")
    with __import__("distributed").get_task_stream(client) as stream:
        there = run_classify_patches(chosen, tmp_path / "m", tmp_path / "cluster", device="cpu",
                                     scheduler=local.scheduler_address)
    assert [r["status"] for r in there.rows] == ["done", "done"]
    assert _same_but_timing(_rows(there.predictions_csv)) == _same_but_timing(_rows(here.predictions_csv))
    assert {r["worker"] for r in there.rows} <= set(local.scheduler_info["workers"])
    for row in there.rows:
        tiles = [gzip.decompress((d / f"{row['slide']}.tiles.csv.gz").read_bytes())
                 for d in (tmp_path / "local", tmp_path / "cluster")]
        assert tiles[0] == tiles[1] and tiles[0].count(b"\n") == int(row["n_tiles"]) + 1
    assert {item["key"].split("-")[2] for item in stream.data} >= {"tile", "classify"}


@pytest.mark.slow
def test_a_worker_that_cannot_see_the_files_stops_the_run_in_one_line(demo, cluster, tmp_path):
    from wsi_hcc.pipelines.classify import run_classify
    from wsi_hcc.pipelines.cluster import check_workers_see

    out, slides = demo
    local, client = cluster
    with pytest.raises(WsiHccError, match=r"^dask worker tcp://[^ ]+: cannot see .*nowhere.svs; workers must see "
                                          r"the slides, the model and OUT"):
        check_workers_see(client, [slides[0], tmp_path / "nowhere.svs"], [tmp_path])
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(WsiHccError, match="cannot write into .*a-file"):
        check_workers_see(client, [slides[0]], [tmp_path / "a-file"])
    check_workers_see(client, slides, [tmp_path])  # all seen: no error
    with pytest.raises(WsiHccError, match="cannot reach the dask scheduler at tcp://127.0.0.1:9"):
        run_classify(slides, out / "model", tmp_path / "out", scheduler="tcp://127.0.0.1:9")


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_no_slide_and_leaves_nothing_half_written(demo, cluster, tmp_path):
    from wsi_hcc.pipelines.classify import run_classify

    out, slides = demo
    local, client = cluster
    pids = client.run(os.getpid)
    result = {}
    run = threading.Thread(target=lambda: result.update(report=run_classify(
        slides[:4], out / "model", tmp_path / "out", device="cpu", scheduler=local.scheduler_address)))
    run.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        for address, keys in client.processing().items():
            if any(str(k).startswith("wsi-hcc-") for k in keys) and address in pids:
                os.kill(pids[address], signal.SIGKILL)
                killed = address
                break
        time.sleep(0.05)
    run.join(timeout=600)
    assert killed is not None and not run.is_alive()
    rows = result["report"].rows
    assert len(rows) == 4 and all(r["status"] in ("done", "failed") for r in rows)
    for row in rows:
        if row["status"] == "failed":  # only when every retry's worker died too
            assert "dask workers that ran it died" in row["reason"]
        else:
            assert all((tmp_path / "out" / f"{row['slide']}{s}").is_file()
                       for s in (".heatmap.png", ".geojson.gz", ".classify.json"))
    assert killed not in {r["worker"] for r in rows}  # the dead worker delivered no row
    left = [p for p in (tmp_path / "out").rglob("*") if p.name.endswith((".partial", ".lock"))]
    assert left == []
    client.wait_for_workers(2, timeout=120)  # the nanny restarted it


def test_a_worker_loads_a_model_once_and_keeps_the_latest_two():
    from wsi_hcc.pipelines.cluster import LOADS, worker_cached

    made = []

    def load(name):
        return lambda: made.append(name) or name

    assert [worker_cached(f"test-{k}", load(k)) for k in "aab"] == ["a", "a", "b"] and made == ["a", "b"]
    worker_cached("test-c", load("c"))  # "a" was used least recently: dropped
    assert worker_cached("test-b", load("b")) == "b" and made == ["a", "b", "c"]
    assert worker_cached("test-a", load("a")) == "a" and made == ["a", "b", "c", "a"] and LOADS["test-a"] == 2
