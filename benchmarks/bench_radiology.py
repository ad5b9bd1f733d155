"""Radiology speed: peritumoral ring on a 512x512x200 CT grid, DICOM reading, phase registration.

    python benchmarks/bench_radiology.py [--repeats 5] [--results]

Ring: a 15 mm (radius) lesion in a 512x512x200 grid at 0.8 x 0.8 x 1.0 mm, 6 mm ring clipped to
a liver mask, and a 2-10 mm sweep. Registration: the real 20-slice CT (../shared/data) against
itself after a known rigid motion (3 degrees, 4.3/-2.7/3.1 mm), rigid and affine, with the
library defaults; the error is the largest over 27 points spread over the volume. Medians of
``--repeats`` runs on whatever threads SimpleITK and scipy use by default. ``--results`` writes
the table into benchmarks/RESULTS.md (section ``bench_radiology``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import median_seconds, publish

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CT_DICOM = SHARED / "radiology" / "ct_abdomen_totalseg_dicom"


def _ring_rows(repeats: int) -> list[dict]:
    from wsi_hcc.radiology import peritumoral_ring, ring_sweep

    spacing = (1.0, 0.8, 0.8)
    shape = (200, 512, 512)
    axes = [(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij", sparse=True)
    tumour = zz ** 2 + (yy - 20) ** 2 + (xx + 30) ** 2 <= 15.0 ** 2
    liver = (zz / 80) ** 2 + (yy / 120) ** 2 + ((xx + 40) / 110) ** 2 <= 1.0
    peritumoral_ring(tumour, spacing)  # warm-up (imports)
    rows = []
    seconds, ring = median_seconds(lambda: peritumoral_ring(tumour, spacing, 6.0, within=liver), repeats)
    rows.append({"task": "ring 6 mm, 512x512x200, clipped to liver", "median_s": seconds, "voxels": int(ring.sum())})
    seconds, _ = median_seconds(lambda: ring_sweep(tumour, spacing, (2, 4, 6, 8, 10), within=liver), repeats)
    rows.append({"task": "ring sweep 2-10 mm (5 widths), 512x512x200", "median_s": seconds})
    return rows


def _registration_rows(repeats: int) -> list[dict]:
    import SimpleITK as sitk

    from wsi_hcc.radiology import load_volume, register_volume, to_sitk

    if not CT_DICOM.exists():
        sys.exit(f"real CT not found at {CT_DICOM}")
    seconds, ct = median_seconds(lambda: load_volume(CT_DICOM), repeats)
    rows = [{"task": "read 20-slice JPEG-2000 DICOM series (512x512)", "median_s": seconds}]
    image = to_sitk(ct)
    motion = sitk.Euler3DTransform()
    motion.SetCenter(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    motion.SetRotation(0.0, 0.0, np.radians(3.0))
    motion.SetTranslation((4.3, -2.7, 3.1))
    moving = replace(ct, origin_mm=motion.TransformPoint(ct.origin_mm),
                     direction=np.asarray(motion.GetMatrix()).reshape(3, 3) @ ct.direction)
    index = np.stack(np.meshgrid([0, 10, 19], [50, 256, 460], [50, 256, 460], indexing="ij"), -1).reshape(-1, 3)
    points = index * np.asarray(ct.spacing_mm) @ ct.direction.T + np.asarray(ct.origin_mm)
    truth = np.array([motion.TransformPoint(tuple(p)) for p in points])
    for transform in ("rigid", "affine"):
        seconds, registration = median_seconds(lambda: register_volume(ct, moving, transform=transform), repeats)
        error = float(np.linalg.norm(registration.map_points(points) - truth, axis=1).max())
        rows.append({"task": f"register {transform}, real CT 512x512x20 (defaults)", "median_s": seconds,
                     "max_error_mm": round(error, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = _ring_rows(args.repeats) + _registration_rows(args.repeats)
    lines = ["| task | median s | note |", "|---|---|---|"]
    for row in rows:
        note = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("task", "median_s"))
        lines.append(f"| {row['task']} | {row['median_s']:.3f} | {note} |")
    lines.append("")
    lines.append(f"CPU: {sys.platform}, {__import__('os').cpu_count()} cores; repeats {args.repeats}.")
    publish("bench_radiology", "Radiology (rings, DICOM, registration)", lines, args.results)
    print("JSON " + json.dumps(rows))


if __name__ == "__main__":
    main()
