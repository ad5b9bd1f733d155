"""Stain normalisation speed on 256 px tiles of real H&E, ours against torchstain, in one run.

    python benchmarks/bench_stain.py [--repeats 5] [--results]
    python benchmarks/bench_stain.py --device cuda [--batch 256] [--results] [--json-out FILE]
    python benchmarks/bench_stain.py --publish-json FILE

The default (CPU) run is pinned to one core (OpenCV and torch limited to one thread) and times
the numpy path and the torch path on the CPU, each against torchstain's backend of the same kind.
``--device cuda`` times the torch path on a batch of tiles already on the GPU (one vectorised
call), against torchstain's torch normalisers looping over the same tiles on the same GPU.

Every run prints its table and one line ``JSON {...}`` with the numbers; ``--results`` writes the
table into benchmarks/RESULTS.md (section ``bench_stain`` for the CPU, ``bench_stain_cuda`` for a
GPU), and ``--publish-json`` writes a GPU run's saved JSON there from any machine. Needs
../shared/data/he_liver, ../shared/data/he_patches and torchstain.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# One BLAS thread, set before numpy loads its BLAS: pinned to one core, a second BLAS thread only
# spins against the first (torchstain's numpy Macenko ran 3x slower that way). The GPU run does
# no timed BLAS work on the host.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
from _common import median_rate, publish  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# Targets of the issue, for the CPU path meant for tiling workers (numpy, one core).
TARGETS = {"Reinhard transform": 1000, "Macenko transform": 300}


def _tiles() -> np.ndarray:
    from PIL import Image

    tiles = []
    for path in sorted((SHARED / "he_liver").glob("liverquant_tile0[234]_HE.jpg")):
        image = np.asarray(Image.open(path).convert("RGB"))
        tiles += [image[y:y + 256, x:x + 256] for y in range(0, 2048, 256) for x in range(0, 2048, 256)]
    if not tiles:
        sys.exit(f"no liver patches under {SHARED / 'he_liver'}")
    # Tissue tiles only: torchstain's Macenko fails on tiles of glass (eigenvalues do not converge).
    return np.stack([t for t in tiles if (t.min(axis=2) < 200).mean() > 0.5])


def _reference() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(SHARED / "he_patches" / "torchstain_target.png").convert("RGB"))


def _cpu_rows(tiles: np.ndarray, reference: np.ndarray, repeats: int) -> list[dict]:
    """Numpy and torch-on-CPU rows, each against torchstain's backend of the same kind."""
    import torch
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer
    from torchstain.torch.normalizers import TorchMacenkoNormalizer, TorchReinhardNormalizer

    from wsi_hcc.stain.normalizers import MacenkoNormalizer, ReinhardNormalizer

    n = len(tiles)
    ours_m, ours_r = MacenkoNormalizer().fit(reference), ReinhardNormalizer().fit(reference)
    theirs_m, theirs_r = NumpyMacenkoNormalizer(), NumpyReinhardNormalizer()
    theirs_m.fit(reference)
    theirs_r.fit(reference)
    batch = torch.from_numpy(tiles.copy())
    # torchstain's torch normalisers take one (3, H, W) image at a time.
    chw = [tile.permute(2, 0, 1).contiguous() for tile in batch]
    reference_chw = torch.from_numpy(reference.copy()).permute(2, 0, 1).contiguous()
    torch_m, torch_r = TorchMacenkoNormalizer(), TorchReinhardNormalizer()
    torch_m.fit(reference_chw)
    torch_r.fit(reference_chw)

    def rate(run):
        return median_rate(run, n, repeats)

    return [
        {"operation": "Reinhard transform", "backend": "numpy",
         "ours": rate(lambda: ours_r.transform(tiles)),
         "torchstain": rate(lambda: [theirs_r.normalize(t) for t in tiles])},
        {"operation": "Macenko transform", "backend": "numpy",
         "ours": rate(lambda: ours_m.transform(tiles)),
         "torchstain": rate(lambda: [theirs_m.normalize(t, stains=False) for t in tiles])},
        {"operation": "Macenko fit", "backend": "numpy",
         "ours": rate(lambda: [MacenkoNormalizer().fit(t) for t in tiles]),
         "torchstain": rate(lambda: [NumpyMacenkoNormalizer().fit(t) for t in tiles])},
        {"operation": "Reinhard transform", "backend": "torch CPU",
         "ours": rate(lambda: ours_r.transform(batch)),
         "torchstain": rate(lambda: [torch_r.normalize(t) for t in chw])},
        {"operation": "Macenko transform", "backend": "torch CPU",
         "ours": rate(lambda: ours_m.transform(batch)),
         "torchstain": rate(lambda: [torch_m.normalize(t, stains=False) for t in chw])},
        {"operation": "Macenko fit", "backend": "torch CPU",
         "ours": rate(lambda: [MacenkoNormalizer().fit(t) for t in batch]),
         "torchstain": rate(lambda: [TorchMacenkoNormalizer().fit(t) for t in chw])},
    ]


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "the CPU"
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0]} ({len(names)} CPUs in the machine)" if names else "the CPU"


def _gpu_rate(run, items: int, repeats: int) -> float:
    """Median items/s of ``run()`` on the GPU, waiting for the device before and after each call."""
    import torch

    run()  # warm up: kernels, cuSOLVER handles, the caching allocator
    rates = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        rates.append(items / (time.perf_counter() - start))
    return float(np.median(rates))


def _gpu_rows(tiles: np.ndarray, reference: np.ndarray, repeats: int, batch_size: int) -> list[dict]:
    """Torch-on-GPU rows: one call for the whole batch, against torchstain looping on the GPU."""
    import torch
    from torchstain.torch.normalizers import TorchMacenkoNormalizer, TorchReinhardNormalizer

    from wsi_hcc.stain.normalizers import MacenkoNormalizer, ReinhardNormalizer

    device = torch.device("cuda")
    # The tissue tiles, repeated to fill the batch.
    batch = torch.from_numpy(tiles[np.arange(batch_size) % len(tiles)].copy()).to(device)
    reference_gpu = torch.from_numpy(reference.copy()).to(device)
    ours_m, ours_r = MacenkoNormalizer().fit(reference_gpu), ReinhardNormalizer().fit(reference_gpu)
    # Tiles arrive from and go back to page-locked host buffers, as a loader's pinned batches do.
    host, back = batch.cpu().pin_memory(), torch.empty(batch.shape, dtype=torch.uint8).pin_memory()
    chw = [tile.permute(2, 0, 1).contiguous() for tile in batch]
    rows = [
        {"operation": "Reinhard transform", "backend": "torch CUDA, batch on device",
         "ours": _gpu_rate(lambda: ours_r.transform(batch), batch_size, repeats),
         "torchstain": _torchstain_gpu(TorchReinhardNormalizer, reference_gpu, chw, repeats, {})},
        {"operation": "Macenko transform", "backend": "torch CUDA, batch on device",
         "ours": _gpu_rate(lambda: ours_m.transform(batch), batch_size, repeats),
         "torchstain": _torchstain_gpu(TorchMacenkoNormalizer, reference_gpu, chw, repeats, {"stains": False})},
        {"operation": "Reinhard transform", "backend": "torch CUDA, from pinned host memory and back",
         "ours": _gpu_rate(lambda: back.copy_(ours_r.transform(host.to(device, non_blocking=True)), non_blocking=True),
                           batch_size, repeats),
         "torchstain": None},
        {"operation": "Macenko transform", "backend": "torch CUDA, from pinned host memory and back",
         "ours": _gpu_rate(lambda: back.copy_(ours_m.transform(host.to(device, non_blocking=True)), non_blocking=True),
                           batch_size, repeats),
         "torchstain": None},
        {"operation": "Macenko fit", "backend": "torch CUDA, one tile at a time",
         "ours": _gpu_rate(lambda: [MacenkoNormalizer().fit(t) for t in batch], batch_size, repeats),
         "torchstain": _gpu_rate(lambda: [TorchMacenkoNormalizer().fit(t) for t in chw], batch_size, repeats)},
    ]
    return rows


def _torchstain_gpu(cls, reference_gpu, chw, repeats: int, options: dict) -> float | str:
    """torchstain's rate looping over the tiles on the GPU, or why it could not run there."""
    normalizer = cls()
    try:
        normalizer.fit(reference_gpu.permute(2, 0, 1).contiguous())
        return _gpu_rate(lambda: [normalizer.normalize(t, **options) for t in chw], len(chw), repeats)
    except (RuntimeError, TypeError) as error:  # e.g. constants kept on the CPU
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"


def _table(result: dict) -> list[str]:
    gpu = result["device"] != "cpu"
    if gpu:
        lines = [f"Batch of {result['batch']} tissue tiles of 256 px from the real GTEx liver patches on "
                 f"{result['device_name']} (torch {result['torch']}); median of {result['repeats']} after a "
                 "warm-up call; torchstain loops over the same tiles on the same GPU.", ""]
    else:
        lines = [f"{result['tiles']} tissue tiles of 256 px from the real GTEx liver patches; one core of "
                 f"{result.get('cpu', 'the CPU')} (pinned; OpenCV, torch and BLAS at one thread); median of "
                 f"{result['repeats']}. torchstain runs the backend of the same kind: its numpy normalisers for numpy "
                 "rows, its torch ones (one CHW tile at a time) for torch rows.", ""]
    lines += ["| operation | backend | wsi_hcc tiles/s | torchstain tiles/s | ratio | target |",
              "|---|---|---:|---:|---:|---|"]
    failures = []
    for row in result["rows"]:
        ours, theirs = row["ours"], row["torchstain"]
        goal = TARGETS.get(row["operation"]) if row["backend"] == "numpy" else None
        verdict = "" if goal is None else f">= {goal}: {'met' if ours >= goal else 'NOT met'}"
        if isinstance(theirs, (int, float)):
            cells = f"{theirs:.0f} | {ours / theirs:.1f}x"
        elif theirs:  # torchstain could not run: say why under the table
            failures.append(f"torchstain's {row['operation']} failed there: `{theirs}`")
            cells = f"fails ({len(failures)}) | "
        else:
            cells = " | "
        lines.append(f"| {row['operation']} | {row['backend']} | {ours:.0f} | {cells} | {verdict} |")
    return lines + ([""] + [f"({i}) {text}" for i, text in enumerate(failures, 1)] if failures else [])


def _publish(result: dict, write: bool) -> None:
    if result["device"] == "cpu":
        publish("bench_stain", "Stain normalisation: `benchmarks/bench_stain.py`", _table(result), write)
    else:
        publish("bench_stain_cuda", "Stain normalisation on a GPU: `benchmarks/bench_stain.py --device cuda`",
                _table(result), write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=256, help="tiles per call on the GPU (default 256)")
    parser.add_argument("--results", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--json-out", type=Path, help="also write the JSON line to this file")
    parser.add_argument("--publish-json", type=Path, help="write a saved run's JSON into RESULTS.md and exit")
    opts = parser.parse_args()
    if opts.publish_json:
        _publish(json.loads(opts.publish_json.read_text()), write=True)
        return

    import cv2
    import torch

    tiles, reference = _tiles(), _reference()
    result = {"device": opts.device, "tiles": len(tiles), "repeats": opts.repeats, "torch": torch.__version__}
    if opts.device == "cpu":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, whatever BLAS would do
        result["cpu"] = _cpu_name()
        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        result["rows"] = _cpu_rows(tiles, reference, opts.repeats)
    else:
        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device")
        result.update(batch=opts.batch, device_name=torch.cuda.get_device_name())
        result["rows"] = _gpu_rows(tiles, reference, opts.repeats, opts.batch)
    _publish(result, opts.results)
    line = json.dumps(result)
    print("JSON", line)
    if opts.json_out:
        opts.json_out.write_text(line + "\n")


if __name__ == "__main__":
    main()
