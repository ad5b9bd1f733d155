"""Feature extraction: model-only throughput against `wsi-hcc features` end to end, in one run.

    python benchmarks/bench_features.py [--device cpu|cuda] [--repeats 3] [--results]
    python benchmarks/bench_features.py --device cuda --save-section gpu.md   # on a lent GPU
    python benchmarks/bench_features.py --publish gpu.md                       # back here

Model-only: random float tensors already on the device, batch 64 at 224 px, inference mode,
channels-last (bf16 autocast on CUDA). End to end: `extract_features` on stores of JPEG tiles
(one run over all of them, as `wsi-hcc features` does): reading, decoding, preprocessing, the model
and writing the features (the model is built once beforehand, as in a batch run). Stores: the real Aperio slide tiled at 0.5 um/px (about 100
tiles, so only a CPU-sized sample) and a generated slide, cached in benchmarks/_data/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import publish, update_section

HERE = Path(__file__).resolve().parent
REAL_SVS = HERE.parents[1] / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"
CACHE = HERE / "_data" / "features"
SECTION = {"cpu": "bench_features", "cuda": "bench_features_gpu"}


def _store(slide: Path, out: Path) -> Path:
    from wsi_hcc.config import TileConfig
    from wsi_hcc.pipeline import run_tile

    store = out / f"{slide.stem}.zarr"
    if not store.exists():
        report = run_tile([slide], out, TileConfig(target_mpp=0.5, tile_px=224, qc=False))
        if report.failed:
            raise SystemExit(f"tiling failed: {report.failed[0].reason}")
    return store


def _synthetic_store(width_px: int) -> Path:
    from wsi_hcc.synth import write_synthetic_slide

    CACHE.mkdir(parents=True, exist_ok=True)
    slide = CACHE / f"features_{width_px}.svs"
    if not slide.exists():
        write_synthetic_slide(slide, size_px=(width_px, width_px * 3 // 4), mpp=0.25, seed=5)
    return _store(slide, CACHE)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(model, device, batch: int, batches: int, repeats: int) -> float:
    import torch

    x = torch.rand(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    model = model.eval().to(device, memory_format=torch.channels_last)
    rates = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        model(x)
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(batches):
                model(x)
            _sync(device)
            rates.append(batch * batches / (time.perf_counter() - start))
    return statistics.median(rates)


def _copies(store: Path, copies: int) -> list[Path]:
    """``copies`` stores with the same tiles: a batch large enough to time a GPU on."""
    import shutil

    paths = [store]
    for k in range(1, copies):
        copy = store.with_name(f"{store.stem}-copy{k}.zarr")
        if not copy.exists():
            shutil.copytree(store, copy)
        paths.append(copy)
    return paths


def loader_only_model(card):
    """A stand-in backbone with ``card``'s preprocessing and feature size whose features are the
    channel means, repeated: an end-to-end run with it times reading, decoding, preprocessing and
    writing alone, the rate the loader could feed any model at."""
    import torch

    class ChannelMeans(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)).repeat(1, -(-card.feature_dim // 3))[:, :card.feature_dim]

    model = ChannelMeans()
    model.card = card
    return model


def _units(stores: list[Path]):
    from wsi_hcc.store import TileReader
    from wsi_hcc.tile_feed import DECODE_UNIT, Unit

    return [Unit(k, s, min(s + DECODE_UNIT, len(TileReader(p)))) for k, p in enumerate(stores)
            for s in range(0, len(TileReader(p)), DECODE_UNIT)]


def _time_feed(units, batches, repeats: int) -> tuple[float, float]:
    """Median tiles/s and CPU us per tile of the consuming thread, which a GPU run has to share
    with launching the model: ``batches()`` yields lists of uint8 tensors, about 256 tiles each."""
    import torch

    rates, costs = [], []
    staging = None  # reused, as a GPU run's copy to the device reads every byte once into set memory
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.thread_time()
        for parts in batches():
            n = sum(map(len, parts))
            if staging is None or len(staging) < n or staging.shape[1:] != parts[0].shape[1:]:
                staging = torch.empty((max(n, 256), *parts[0].shape[1:]), dtype=torch.uint8)
            torch.cat(parts, out=staging[:n])
        n = sum(map(len, units))
        rates.append(n / (time.perf_counter() - start))
        costs.append((time.thread_time() - cpu) / n * 1e6)
    return statistics.median(rates), statistics.median(costs)


def feed_only(stores: list[Path], decoders: dict, repeats: int, batch: int = 256) -> tuple[float, float]:
    """What ``TileFeed(**decoders)`` delivers as model-sized CPU batches: no preprocessing, no model,
    no writing. On a GPU host, the most the readers can feed the card."""
    from wsi_hcc.tile_feed import DECODE_UNIT, TileFeed

    units = _units(stores)

    def batches():
        feed = TileFeed(stores, [False] * len(stores), units, max_held=-(-batch // DECODE_UNIT) + 1, **decoders)
        pending = []
        for decoded in feed:
            pending.append(decoded)
            if len(pending) * DECODE_UNIT >= batch or decoded.unit == units[-1]:
                yield [d.tiles for d in pending]
                for d in pending:
                    feed.recycle(d)
                pending = []

    return _time_feed(units, batches, repeats)


def dataloader_feed_only(stores: list[Path], workers: int, repeats: int, batch: int = 256) -> tuple[float, float]:
    """The same units from plain DataLoader worker processes (the design before the ring): each unit
    arrives through fresh shared memory that the receiving process maps, reads and frees."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from wsi_hcc.store import TileReader
    from wsi_hcc.tile_feed import DECODE_UNIT

    units = _units(stores)

    class Units(Dataset):
        def __len__(self):
            return len(units)

        def __getitem__(self, i):
            reader = TileReader(stores[units[i].store])
            return torch.from_numpy(np.stack([reader[j] for j in range(units[i].start, units[i].stop)]))

    def batches():
        pending = []
        for tiles in DataLoader(Units(), batch_size=None, num_workers=workers, prefetch_factor=4):
            pending.append(tiles)
            if len(pending) * DECODE_UNIT >= batch:
                yield pending
                pending = []
        if pending:
            yield pending

    return _time_feed(units, batches, repeats)


def end_to_end(extractor, stores: list[Path], repeats: int, **kwargs) -> tuple[float, int]:
    from wsi_hcc.features import extract_features

    rates, n = [], 0
    for _ in range(repeats):
        _sync(extractor.device)
        start = time.perf_counter()
        n = sum(outcome.n_tiles for outcome in extract_features(stores, extractor, overwrite=True, **kwargs))
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), n


class _Shown(list):
    """Rows printed as they are measured: a run cut short still leaves them in its log."""

    def append(self, line: str) -> None:
        print(line, flush=True)
        super().append(line)

    def __iadd__(self, more):
        for line in more:
            self.append(line)
        return self


def main() -> None:
    import torch

    from wsi_hcc.feature_pipeline import default_decode_threads
    from wsi_hcc.features import FeatureExtractor, resolve_device
    from wsi_hcc.models import create_backbone

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", default="resnet34,livernet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic-px", type=int, default=16384, help="width of the generated slide")
    parser.add_argument("--copies", type=int, default=1, help="time the synthetic store as a batch of this many")
    parser.add_argument("--results", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--save-section", type=Path, help="write the section to this file (for a remote run)")
    parser.add_argument("--publish", type=Path, help="put a section saved by --save-section into RESULTS.md")
    opts = parser.parse_args()
    if opts.publish:
        saved = json.loads(opts.publish.read_text())
        update_section(saved["section"], saved["body"])
        return
    device = resolve_device(opts.device)
    gpu = device.type == "cuda"
    card_name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    synthetic = _copies(_synthetic_store(opts.synthetic_px), opts.copies)
    stores = {"synthetic" if opts.copies == 1 else f"synthetic x{opts.copies} stores": synthetic}
    if REAL_SVS.exists():
        stores["real CMU-1-Small-Region"] = [_store(REAL_SVS, CACHE)]
    batches = 40 if gpu else 2
    threads = default_decode_threads(device)
    lines = _Shown()
    lines += [f"Device: {card_name}. Model-only: batch 64, 224 px, median of {opts.repeats}. End to end: "
              f"`extract_features`, {threads} decoders (threads unless a row says processes), median of "
              f"{opts.repeats}; each end-to-end run is paired with a model-only run and the ratio is the median "
              f"of the pairs' ratios.", "",
              "| backbone | measure | tiles/s | x model-only |", "|---|---|---:|---:|"]
    runs = [(label, store, {"batch_size": 64, "decode_threads": threads}) for label, store in stores.items()]
    if gpu:
        how_to_decode = {"GPU decode": {"gpu_decode": True, "decode_threads": threads},
                         "CPU decode, threads": {"decode_threads": threads},
                         "CPU decode, processes": {"decode_processes": threads}}
        runs = [(f"{label}, batch 256, {how}", store, {"batch_size": 256, **decoders})
                for label, store in stores.items() for how, decoders in how_to_decode.items()]
    verdicts = []
    for name in opts.backbones.split(","):
        model = create_backbone(name, num_classes=0)
        base = model_only(model, device, 64, batches, opts.repeats)
        lines.append(f"| {name} | model only, batch 64 | {base:.0f} | 1.00 |")
        if gpu:
            lines.append(f"| {name} | model only, batch 256 | {model_only(model, device, 256, 10, opts.repeats):.0f} "
                         f"| |")
        extractor = FeatureExtractor(model, device)
        for label, store, kwargs in runs:
            # alternate with model-only runs so machine noise hits both sides of the ratio alike
            pairs = [(end_to_end(extractor, store, 1, **kwargs), model_only(model, device, 64, batches, 1))
                     for _ in range(opts.repeats)]
            rate, n = statistics.median(p[0][0] for p in pairs), pairs[0][0][1]
            ratio = statistics.median(p[0][0] / p[1] for p in pairs)
            lines.append(f"| {name} | end to end, {label} ({n} tiles) | {rate:.0f} | {ratio:.2f} |")
            if label.startswith("synthetic"):
                verdicts.append((name, label, rate, ratio))
    # The ceiling any backbone could reach end to end with these decoders: no model at all.
    loader = FeatureExtractor(loader_only_model(create_backbone("resnet34", num_classes=0).card), device)
    for label, store, kwargs in runs:
        rate, n = end_to_end(loader, store, opts.repeats, **kwargs)
        lines.append(f"| none (loader only) | end to end, {label} ({n} tiles) | {rate:.0f} | |")
    lines += ["", "Tile feed alone (decoded tiles as batches of 256 on the CPU: no preprocessing, no model, no "
              "writing), and the CPU time per tile of the thread that receives them, which a GPU run shares "
              "with launching the model:", "",
              "| stores | decoding | tiles/s | receiving thread, us/tile |", "|---|---|---:|---:|"]
    # a batch of stores, so that starting decoders and their ring (once a run) weighs as in a lab's batch
    feed_copies = max(4, opts.copies)
    feed_sets = {f"synthetic x{feed_copies} stores": _copies(synthetic[0], feed_copies),
                 **{label: store for label, store in stores.items() if label.startswith("real")}}
    for label, store in feed_sets.items():
        for count in sorted({4, 8, threads} if gpu else {0, 1, 2}):
            for kind in ("threads", "processes") if count else ("threads",):
                rate, cost = feed_only(store, {kind: count}, opts.repeats)
                lines.append(f"| {label} | {count} {kind} | {rate:.0f} | {cost:.0f} |")
        for count in sorted({threads} if gpu else {1, 2}):
            rate, cost = dataloader_feed_only(store, count, opts.repeats)
            lines.append(f"| {label} | {count} plain DataLoader processes (before) | {rate:.0f} | {cost:.0f} |")
    lines.append("")
    for name, label, rate, ratio in verdicts:
        target = 0.80 if gpu else 0.85
        text = f"- {name}, {label}: end to end {ratio:.2f}x model-only (target >= {target:.2f}x): " \
               f"{'met' if ratio >= target else 'NOT met'}"
        if gpu and name == "resnet34":
            text += f"; {rate:.0f} tiles/s (target >= 8000): {'met' if rate >= 8000 else 'NOT met'}"
        lines.append(text)
    title = f"Feature extraction ({'GPU' if gpu else 'CPU'}): `benchmarks/bench_features.py`"
    publish(SECTION[device.type], title, lines, opts.results)
    if opts.save_section:
        opts.save_section.write_text(json.dumps({"section": SECTION[device.type],
                                                 "body": f"## {title}\n\n" + "\n".join(lines)}))


if __name__ == "__main__":
    main()
