"""Feature extraction: model-only throughput against `wsi-hcc features` end to end, in one run.

    python benchmarks/bench_features.py [--device cpu|cuda] [--repeats 3] [--results]
    python benchmarks/bench_features.py --device cuda --save-section gpu.md   # on a lent GPU
    python benchmarks/bench_features.py --publish gpu.md                       # back here

Model-only: random float tensors already on the device, batch 64 at 224 px, inference mode,
channels-last (bf16 autocast on CUDA). End to end: `extract_features` with the defaults of
`wsi-hcc features` on the device, on stores of JPEG tiles (one run over all of them, as `wsi-hcc
features` does): reading, decoding, preprocessing, the model and writing the features (the model is
built once beforehand, as in a batch run). On CUDA also the other decoder kind, the loader with no
model, the tile feed alone and nvJPEG (last, since it is slow). Stores: a generated slide (cached in
benchmarks/_data/, `--copies` of it for a batch large enough for a GPU) and the real Aperio slide
tiled at 0.5 um/px (44 tiles: the fixed cost of a run). `--profile FILE` keeps a cProfile of the
launching thread in one default ResNet-34 run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from _common import publish, update_section

HERE = Path(__file__).resolve().parent
REAL_SVS = HERE.parents[1] / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"
CACHE = HERE / "_data" / "features"
SECTION = {"cpu": "bench_features", "cuda": "bench_features_gpu"}


def _store(slide: Path, out: Path) -> Path:
    from wsi_hcc.pipelines.tile import run_tile
    from wsi_hcc.tiling.config import TileConfig

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
    from wsi_hcc.features.tile_feed import DECODE_UNIT, Unit
    from wsi_hcc.store.patch_store import TileReader

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
    from wsi_hcc.features.tile_feed import DECODE_UNIT, TileFeed

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

    from wsi_hcc.features.tile_feed import DECODE_UNIT
    from wsi_hcc.store.patch_store import TileReader

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


def end_to_end(extractor, stores: list[Path], repeats: int, **kwargs) -> tuple[float, int, float]:
    """Median tiles/s, tiles, and median CPU us per tile of the calling thread: on a GPU that
    thread launches the model, takes decoded units and writes rows, so it can be the bound."""
    from wsi_hcc.features.extract import extract_features

    rates, costs, n = [], [], 0
    for _ in range(repeats):
        _sync(extractor.device)
        start, cpu = time.perf_counter(), time.thread_time()
        n = sum(outcome.n_tiles for outcome in extract_features(stores, extractor, overwrite=True, **kwargs))
        rates.append(n / (time.perf_counter() - start))
        costs.append((time.thread_time() - cpu) / n * 1e6)
    return statistics.median(rates), n, statistics.median(costs)


def profile_end_to_end(extractor, stores: list[Path], out: Path, **kwargs) -> None:
    """One end-to-end run under cProfile (the calling thread only): where that thread's time goes."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    end_to_end(extractor, stores, 1, **kwargs)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumtime").print_stats(25)
    out.write_text(text.getvalue())


def decode_only(store: Path, device, per_call: int, repeats: int) -> float:
    """nvJPEG alone: tiles/s of ``decode_on_device`` on ``per_call`` JPEG tiles at a time, bytes in host memory."""
    from wsi_hcc.features.extract import decode_on_device
    from wsi_hcc.store.patch_store import TileReader

    reader = TileReader(store)
    chunks = [reader.read_chunk(j) for j in range(len(reader))]
    calls = [chunks[s:s + per_call] for s in range(0, len(chunks) - per_call + 1, per_call)] or [chunks]
    decode_on_device(calls[0], device)
    rates = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for call in calls:
            decode_on_device(call, device)
        _sync(device)
        rates.append(sum(map(len, calls)) / (time.perf_counter() - start))
    return statistics.median(rates)


class _Shown(list):
    """Rows printed as they are measured: a run cut short still leaves them in its log."""

    def append(self, line: str) -> None:
        print(line, flush=True)
        super().append(line)

    def __iadd__(self, more):
        for line in more:
            self.append(line)
        return self


def nvjpeg_agreement(store: Path, device) -> str:
    """nvJPEG against the CPU decoder on every tile of ``store``: mean, 99.9th percentile and worst
    absolute difference in grey levels, and how many tiles differ by more than 32 anywhere."""
    import numpy as np
    import torch

    from wsi_hcc.features.extract import decode_on_device
    from wsi_hcc.store.patch_store import TileReader

    reader = TileReader(store)
    worst, means, p999, broken = 0, [], [], 0
    for s in range(0, len(reader), 64):
        indices = range(s, min(s + 64, len(reader)))
        on_gpu = decode_on_device([reader.read_chunk(j) for j in indices], device).cpu()
        on_cpu = torch.from_numpy(np.stack([reader[j] for j in indices]))
        difference = (on_gpu.int() - on_cpu.int()).abs()
        worst = max(worst, int(difference.max()))
        means.append(float(difference.float().mean()))
        p999.append(float(torch.quantile(difference.float().flatten()[::7], 0.999)))
        broken += int((difference.flatten(1).amax(1) > 32).sum())
    return (f"mean {statistics.mean(means):.2f}, 99.9th percentile {max(p999):.0f}, worst {worst} grey levels; "
            f"{broken} of {len(reader)} tiles off by more than 32")


def main() -> None:
    import torch

    from wsi_hcc.features.extract import FeatureExtractor
    from wsi_hcc.models import create_backbone
    from wsi_hcc.pipelines.features import default_batch_size, default_decoders
    from wsi_hcc.utils.devices import resolve_device

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", default="resnet34,livernet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic-px", type=int, default=16384, help="width of the generated slide")
    parser.add_argument("--copies", type=int, default=1, help="time the synthetic store as a batch of this many")
    parser.add_argument("--profile", type=Path, help="write a cProfile of one default end-to-end run to this file")
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
    synthetic_label = "synthetic" if opts.copies == 1 else f"synthetic x{opts.copies} stores"
    real = [_store(REAL_SVS, CACHE)] if REAL_SVS.exists() else None
    batches = 40 if gpu else 2
    batch = default_batch_size(device)
    default = default_decoders(device)
    count = max(default.values())
    # the default first; on a GPU also the other kind of decoder, same count
    ways = {"": default}
    if gpu:
        ways = {"CPU decode, processes": {"decode_processes": count}, "CPU decode, threads": {"decode_threads": count}}
    lines = _Shown()
    lines += [f"Device: {card_name}, {os.cpu_count()} CPUs. Model-only: batch 64, 224 px, median of {opts.repeats}. "
              f"End to end: `extract_features` with the defaults of `wsi-hcc features` on this device "
              f"({count} decoding {'processes' if 'decode_processes' in default else 'threads'}, batch {batch}) unless "
              f"a row says otherwise, median of {opts.repeats}; each end-to-end run is paired with a model-only run "
              f"and the ratio is the median of the pairs' ratios. The last column is the CPU time per tile of the "
              f"thread that launches the model and takes decoded units (on CUDA it includes spinning while it "
              f"waits for the device).", "",
              "| backbone | measure | tiles/s | x model-only | launching thread, us/tile |", "|---|---|---:|---:|---:|"]
    verdicts = []

    def timed(name, model, extractor, label, stores, kwargs, repeats=opts.repeats):
        # alternate with model-only runs so machine noise hits both sides of the ratio alike
        pairs = [(end_to_end(extractor, stores, 1, **kwargs), model_only(model, device, 64, batches, 1))
                 for _ in range(repeats)]
        rate = statistics.median(p[0][0] for p in pairs)
        ratio = statistics.median(p[0][0] / p[1] for p in pairs)
        cost = statistics.median(p[0][2] for p in pairs)
        lines.append(f"| {name} | end to end, {label} ({pairs[0][0][1]} tiles) "
                     f"| {rate:.0f} | {ratio:.2f} | {cost:.0f} |")
        return rate, ratio

    for name in opts.backbones.split(","):
        model = create_backbone(name, num_classes=0)
        lines.append(f"| {name} | model only, batch 64 | {model_only(model, device, 64, batches, opts.repeats):.0f} "
                     f"| 1.00 | |")
        if gpu:
            lines.append(f"| {name} | model only, batch 256 | {model_only(model, device, 256, 10, opts.repeats):.0f} "
                         f"| | |")
        extractor = FeatureExtractor(model, device)
        for how, decoders in ways.items():
            label = ", ".join(filter(None, [synthetic_label, how]))
            rate, ratio = timed(name, model, extractor, label, synthetic, {"batch_size": batch, **decoders})
            verdicts.append((name, label, rate, ratio))
        if gpu and name == "resnet34":  # the CPU default batch
            timed(name, model, extractor, f"{synthetic_label}, batch 64, CPU decode, processes", synthetic,
                  {"batch_size": 64, **default})
        if opts.profile and name == "resnet34":
            profile_end_to_end(extractor, synthetic, opts.profile, batch_size=batch, **default)
        del extractor
    # The ceiling any backbone could reach end to end with these decoders: no model at all.
    loader = FeatureExtractor(loader_only_model(create_backbone("resnet34", num_classes=0).card), device)
    for how, decoders in ways.items():
        rate, n, cost = end_to_end(loader, synthetic, opts.repeats, batch_size=batch, **decoders)
        label = ", ".join(filter(None, [synthetic_label, how]))
        lines.append(f"| none (loader only) | end to end, {label} ({n} tiles) | {rate:.0f} | | {cost:.0f} |")
    lines += ["", "Tile feed alone (decoded tiles as batches of 256 on the CPU: no preprocessing, no model, no "
              "writing), and the CPU time per tile of the thread that receives them, which a GPU run shares "
              "with launching the model:", "",
              "| stores | decoding | tiles/s | receiving thread, us/tile |", "|---|---|---:|---:|"]
    feed_copies = max(4, opts.copies)
    feed_label = f"synthetic x{feed_copies} stores"
    feed_stores = _copies(synthetic[0], feed_copies)
    for n in sorted({8, count} if gpu else {0, 1, 2}):
        for kind in ("threads", "processes") if n else ("threads",):
            rate, cost = feed_only(feed_stores, {kind: n}, opts.repeats)
            lines.append(f"| {feed_label} | {n} {kind} | {rate:.0f} | {cost:.0f} |")
    for n in sorted({count} if gpu else {1, 2}):
        rate, cost = dataloader_feed_only(feed_stores, n, opts.repeats)
        lines.append(f"| {feed_label} | {n} plain DataLoader processes (before) | {rate:.0f} | {cost:.0f} |")
    if gpu:  # last: slow, so a run cut short loses only these
        lines += ["", "nvJPEG (`--gpu-decode`, torchvision's `decode_jpeg` on the device):", "",
                  "| measure | result |", "|---|---|"]
        lines.append(f"| agreement with CPU decoding, {synthetic_label.split(' x')[0]} store | "
                     f"{nvjpeg_agreement(synthetic[0], device)} |")
        for per_call in (32, 256):
            lines.append(f"| decode only, {per_call} tiles a call, bytes in host memory | "
                         f"{decode_only(synthetic[0], device, per_call, 1):.0f} tiles/s |")
        model = create_backbone("resnet34", num_classes=0)
        rate, n, cost = end_to_end(FeatureExtractor(model, device), synthetic[:4], 1, batch_size=batch,
                                   gpu_decode=True, decode_threads=count)
        lines.append(f"| resnet34 end to end, synthetic x{len(synthetic[:4])} stores, GPU decode ({n} tiles), one run "
                     f"| {rate:.0f} tiles/s |")
    if real:
        lines += ["", "The real slide's store (a few dozen tiles: the fixed cost of a run):", "",
                  "| backbone | measure | tiles/s | launching thread, us/tile |", "|---|---|---:|---:|"]
        extractor = FeatureExtractor(create_backbone("resnet34", num_classes=0), device)
        for how, decoders in ways.items():
            rate, n, cost = end_to_end(extractor, real, opts.repeats, batch_size=batch, **decoders)
            label = ", ".join(filter(None, ["real CMU-1-Small-Region", how]))
            lines.append(f"| resnet34 | end to end, {label} ({n} tiles) | {rate:.0f} | {cost:.0f} |")
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
