"""What the benchmark scripts share: timing medians, and their sections of benchmarks/RESULTS.md.

Each benchmark owns one section of RESULTS.md, between markers, and rewrites only it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_HEADER = "# Benchmark results\n\nEach section is written by the script it names; rerun that script to update it.\n"


def update_section(name: str, body: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else _HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def median_rate(run: Callable[[], object], items: int, repeats: int) -> float:
    """Median items/s of ``run()`` (which processes ``items`` items) over ``repeats`` timed calls."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


def median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median seconds of ``run()`` over ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def publish(section: str, title: str, lines: list[str], write: bool) -> None:
    """Print a result table and, with ``write``, replace its section of RESULTS.md."""
    table = "\n".join(lines)
    print(table)
    if write:
        update_section(section, f"## {title}\n\n{table}")


def bench_slide(width: int, height: int) -> Path:
    """A generated slide at 0.25 um/px for benchmarks, cached in benchmarks/_data/."""
    import sys

    from wsi_hcc.synth import write_synthetic_slide

    path = Path(__file__).resolve().parent / "_data" / f"bench_{width}x{height}.svs"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        start = time.perf_counter()
        write_synthetic_slide(path, size_px=(width, height), mpp=0.25, seed=7)
        print(f"generated {path.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return path
