"""End to end on synthetic slides: a short CPU run separates tumour from normal tiles on held-out slides,
and a training process killed mid-run resumes to the result of an uninterrupted one.

Slow (about a minute on 2 cores). The model is timm's ``test_resnet``: a real ResNet (stem, four
stages of BasicBlocks with BatchNorm, global pooling, linear head; 0.37 M parameters) that goes
through exactly the code paths of ResNet-34, at a fraction of the CPU time. Tiles are 64 px at
0.5 um/px (32 um of tissue, a few nuclei), which is enough to tell the synthetic tumour's larger,
darker, crowded nuclei from normal parenchyma.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from wsi_hcc.cli.app import main
from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.training.synth_labels import write_mask_geojson

pytestmark = pytest.mark.slow

# slide -> split; s3 and s6 have no tumour at all, the others hold tumour and normal tissue
SPLIT = {"s0": "train", "s1": "train", "s2": "train", "s3": "train", "s4": "validation", "s5": "test", "s6": "test"}
NO_TUMOUR = {"s3", "s6"}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from wsi_hcc.synth import write_synthetic_slide

    root = tmp_path_factory.mktemp("synthetic_training")
    slides = []
    for i, stem in enumerate(SPLIT):
        slide = write_synthetic_slide(root / "slides" / f"{stem}.svs", size_px=(2048, 1536), mpp=0.25, seed=20 + i,
                                      tumour=stem not in NO_TUMOUR)
        write_mask_geojson(slide.mask_path, root / "annotations" / f"{stem}.geojson")  # the ground truth, as QuPath
        slides.append(slide.path)
    report = run_tile(slides, root / "stores", TileConfig(target_mpp=0.5, tile_px=64, qc=False))
    assert report.count("done") == len(SPLIT)
    (root / "slides.csv").write_text("slide,patient,split\n" + "".join(
        f"{stem},patient_{stem},{split}\n" for stem, split in SPLIT.items()))
    train = {
        "backbone": "test_resnet", "class_names": ["non_tumour", "tumour"], "input_px": 64,
        "stores": [str(root / "stores")],
        "labels": {"annotations": str(root / "annotations"), "slide_csv": str(root / "slides.csv")},
        "augmentation": [{"HorizontalFlip": {"p": 0.5}}, {"VerticalFlip": {"p": 0.5}}, {"RandomRotate90": {"p": 0.5}}],
        "batch_size": 32, "epochs": 5, "optimizer": {"name": "adam", "lr": 1e-3},
        "class_weighting": {"loss": "balanced"}, "early_stopping": {"metric": "val_auc", "patience": 3},
        "device": "cpu", "seed": 0,
    }
    config_path = root / "synthetic.yaml"
    config_path.write_text(yaml.safe_dump({"train": train}))
    return root, config_path


def test_short_cpu_run_separates_tumour_on_held_out_slides(synthetic):
    root, config_path = synthetic
    out = root / "run"
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["train-patches", "--config", str(config_path), "--out", str(out)])
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    splits = json.loads((out / "splits.json").read_text())["splits"]
    assert splits["test"]["slides"] == ["s5", "s6"] and not set(splits["train"]["slides"]) & {"s5", "s6"}
    test = metrics["splits"]["test"]
    assert test["per_class"]["tumour"]["support"] > 10 and test["per_class"]["non_tumour"]["support"] > 50
    # the same AUC from the per-tile predictions, independently of our metrics code
    rows = [line.split(",") for line in (out / "predictions.csv").read_text().splitlines()[1:]]
    held_out = [(r[5] == "tumour", float(r[8])) for r in rows if r[0] == "test"]
    auc = roc_auc_score([t for t, _ in held_out], [p for _, p in held_out])
    assert auc == pytest.approx(test["roc_auc"], abs=1e-6)
    print(f"\nsynthetic held-out tile AUC {auc:.4f}, balanced accuracy {test['balanced_accuracy']:.3f}, "
          f"{metrics['epochs_run']} epochs, {seconds:.1f} s")
    assert auc >= 0.95
    # the tiles the model is surest are tumour, explained, are tumour in the ground truth
    explain = CliRunner().invoke(main, ["explain", str(root / "stores" / "s5.zarr"), "--weights",
                                        str(out / "best.safetensors"), "--top", "5", "--out", str(root / "cams")])
    assert explain.exit_code == 0, explain.output
    chosen = {t["tile"] for t in json.loads((root / "cams" / "s5.explain.json").read_text())["tiles"]}
    truth = {int(r[2]): r[5] for r in rows if r[1] == "s5"}
    assert all(truth.get(tile) == "tumour" for tile in chosen), (chosen, truth)
    # the run's model folder classifies the held-out slide: tiles as the model does, the slide summary
    # as the truth mask says
    classified = CliRunner().invoke(main, ["classify", str(root / "slides" / "s5.svs"), "--model", str(out / "model"),
                                           "--out", str(root / "classify"), "--device", "cpu"])
    assert classified.exit_code == 0, classified.output
    assert "warning: this model learnt from generated slides only" in classified.output
    import csv
    import gzip
    import io

    tiles = list(csv.DictReader(io.StringIO(gzip.decompress((root / "classify" / "s5.tiles.csv.gz").read_bytes())
                                            .decode())))
    label_at = {(int(r[3]), int(r[4])): r[5] == "tumour" for r in rows if r[1] == "s5"}
    scored = [(label_at[(int(t["x"]), int(t["y"]))], float(t["p_tumour"])) for t in tiles
              if (int(t["x"]), int(t["y"])) in label_at]
    assert len(scored) > 0.9 * len(tiles)
    assert roc_auc_score([t for t, _ in scored], [p for _, p in scored]) >= 0.95
    with open(root / "classify" / "predictions.csv", newline="") as fh:
        (summary,) = list(csv.DictReader(fh))
    tumour_share = float(np.mean([t for t, _ in scored]))
    assert abs(float(summary["frac_tumour"]) - tumour_share) < 0.15, (summary["frac_tumour"], tumour_share)


def test_a_killed_training_process_resumes_to_the_uninterrupted_result(synthetic, tmp_path):
    root, config_path = synthetic
    data = yaml.safe_load(config_path.read_text())["train"]
    data.update(epochs=2, checkpoint_minutes=0, early_stopping={"metric": "val_loss"})
    config_path = tmp_path / "kill.yaml"
    config_path.write_text(yaml.safe_dump({"train": data}))
    # Both runs in fresh processes with the same thread settings: an in-process run would inherit
    # whatever earlier tests did to torch's global state, and bit-identity needs identical setups.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "2",
           "MKL_NUM_THREADS": "2"}
    straight_dir = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "wsi_hcc", "train-patches", "--config", str(config_path), "--out",
                    str(straight_dir)], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    straight = json.loads((straight_dir / "metrics.json").read_text())

    out = tmp_path / "killed"
    checkpoint = out / "last-checkpoint.pt"
    process = subprocess.Popen([sys.executable, "-m", "wsi_hcc", "train-patches", "--config", str(config_path),
                                "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoint.exists():
                state = torch.load(checkpoint, weights_only=True)["state"]
                if state["epoch"] == 1 and state["batch"] >= 2:  # in the middle of the second epoch
                    break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stderr.close()
    assert not (out / "metrics.json").exists()
    killed_at = torch.load(checkpoint, weights_only=True)["state"]
    assert killed_at["epoch"] == 1 and killed_at["batch"] >= 2
    subprocess.run([sys.executable, "-m", "wsi_hcc", "train-patches", "--config", str(config_path), "--out",
                    str(out)], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = json.loads((out / "metrics.json").read_text())
    resumed_from = json.loads((out / "run-manifest.json").read_text())["resumed_from"]
    assert resumed_from == {"epoch": 1, "batch": killed_at["batch"]}  # it continued; it did not start over
    a = torch.load(straight_dir / "last-checkpoint.pt", weights_only=True)["model"]
    b = torch.load(checkpoint, weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    assert resumed["splits"]["test"]["roc_auc"] == straight["splits"]["test"]["roc_auc"]
    np.testing.assert_equal([h["val_loss"] for h in resumed["history"]], [h["val_loss"] for h in straight["history"]])
