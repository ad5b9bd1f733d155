"""Describe an opened slide: fingerprint, resolution and pyramid, as one SlideInfo record."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from wsi_hcc.records import SlideInfo
from wsi_hcc.slide.mpp import resolve_mpp
from wsi_hcc.slide.readers.base import SlideReader
from wsi_hcc.slide.readers.dicom_folder import folder_files

__all__ = ["slide_fingerprint", "describe_slide", "is_synthetic"]

_SAMPLE_BYTES = 1 << 20


def slide_fingerprint(path: str | Path) -> str:
    """``sha256:<hex>`` of the file size and its first, middle and last MiB; for a DICOM WSI folder,
    of every file in it (name, size and samples).

    Hashing whole slides (GBs) would cost more than tiling them; size plus three samples catches
    a re-scan, a re-export or a truncated copy.
    """
    path = Path(path)
    if not path.is_dir():
        return f"sha256:{_add_samples(hashlib.sha256(), path).hexdigest()}"
    digest = hashlib.sha256(b"folder")
    for file in folder_files(path):
        digest.update(file.name.encode() + b"\0")
        _add_samples(digest, file)
    return f"sha256:{digest.hexdigest()}"


def _add_samples(digest, path: Path):
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as fh:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES)}):
            digest.update(os.pread(fh.fileno(), _SAMPLE_BYTES, offset))
    return digest


def describe_slide(reader: SlideReader, mpp_override: float | None = None,
                   override_source: str = "override") -> SlideInfo:
    """Everything later stages and the provenance need about a slide."""
    slide_mpp, mpp_source = resolve_mpp(reader, mpp_override, override_source)
    return SlideInfo(
        path=str(Path(reader.path).resolve()),
        fingerprint=slide_fingerprint(reader.path),
        dimensions=tuple(reader.dimensions),
        level_dimensions=tuple(reader.level_dimensions),
        level_downsamples=tuple(reader.level_downsamples),
        slide_mpp=slide_mpp,
        mpp_source=mpp_source,
        vendor=reader.vendor,
        backend=reader.backend,
        synthetic=is_synthetic(reader.properties),
    )


def is_synthetic(properties) -> bool:
    """Whether the slide was made by ``wsi_hcc.synth`` (its TIFF software tag or scanner ID says so):
    a model trained only on such slides must say so when it meets a real one."""
    return (properties.get("tiff.Software") == "wsi_hcc.synth"
            or properties.get("aperio.ScanScope ID") == "WSI-HCC-SYNTH")
