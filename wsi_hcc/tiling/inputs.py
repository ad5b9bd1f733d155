"""Turn command-line inputs (slides, folders, CSV manifests) into a list of slide tasks."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from wsi_hcc.errors import WsiHccError
from wsi_hcc.slide.readers.dicom_folder import is_dicom_folder

__all__ = ["SlideTask", "SLIDE_SUFFIXES", "IMAGE_SUFFIXES", "collect_slides", "images_in_folders",
           "find_stem_collisions", "skipped_images_line"]

# PNG/JPEG region images are slides too, but only when named (or listed in a manifest): in a folder
# they are more often thumbnails, labels or QC pictures.
# Region images (PNG/JPEG) are tiled when named as files; a folder of them is usually exports or
# thumbnails, so folders are scanned for slide files only and the images are reported, not taken.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".qptiff")


@dataclass(frozen=True)
class SlideTask:
    """One slide to process: where it is, its output key, and an mpp override if one was given."""

    path: Path
    stem: str
    mpp: float | None = None
    mpp_source: str = "override"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read_manifest(path: Path) -> list[SlideTask]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise WsiHccError(f"{path}: cannot read the CSV manifest ({exc})") from None
    if not rows or "path" not in rows[0]:
        raise WsiHccError(f"{path}: a manifest needs a 'path' column (and optionally 'mpp')")
    tasks = []
    for line, row in enumerate(rows, start=2):
        if not (row.get("path") or "").strip():
            raise WsiHccError(f"{path}:{line}: empty path; fill in the slide's path or remove the row")
        slide = Path(row["path"].strip())
        if not slide.is_absolute():
            slide = path.parent / slide
        mpp = (row.get("mpp") or "").strip()
        try:
            value = float(mpp) if mpp else None
        except ValueError:
            raise WsiHccError(f"{path}:{line}: mpp {mpp!r} is not a number; fix the manifest") from None
        tasks.append(SlideTask(slide, _stem(slide), value, "manifest"))
    return tasks


def collect_slides(inputs: list[str | Path], recursive: bool = False,
                   slide_mpp: float | None = None) -> list[SlideTask]:
    """Expand slides, folders (``recursive`` walks sub-folders) and ``.csv`` manifests.

    A folder that directly holds DICOM files is one DICOM WSI slide named after the folder.

    A missing path is kept as a task so that the batch reports it with the other failures.
    ``slide_mpp`` overrides every slide's mpp, manifest values included.
    """
    tasks: list[SlideTask] = []
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() == ".csv" and path.is_file():
            tasks.extend(_read_manifest(path))
        elif is_dicom_folder(path):
            tasks.append(SlideTask(path, path.name))
        elif path.is_dir() and path.suffix.lower() not in SLIDE_SUFFIXES:
            tasks.extend(_slides_in(path, recursive))
        else:
            tasks.append(SlideTask(path, _stem(path)))
    if slide_mpp is not None:
        tasks = [SlideTask(t.path, t.stem, slide_mpp, "override") for t in tasks]
    return tasks


def _slides_in(folder: Path, recursive: bool) -> list[SlideTask]:
    """Slide files in ``folder`` and its DICOM WSI sub-folders (one slide each, named after the
    folder), in path order; ``recursive`` also looks inside the other sub-folders. Hidden names are skipped."""
    tasks = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES:
            tasks.append(SlideTask(path, _stem(path)))
        elif path.is_dir() and is_dicom_folder(path):
            tasks.append(SlideTask(path, path.name))
        elif path.is_dir() and recursive:
            tasks.extend(_slides_in(path, recursive))
    return tasks


def images_in_folders(inputs: list[str | Path], recursive: bool = False) -> list[Path]:
    """The PNG/JPEG files in the given folders (sub-folders too with ``recursive``), which
    :func:`collect_slides` leaves out."""
    found: list[Path] = []
    for item in inputs:
        folder = Path(item)
        if not folder.is_dir() or is_dicom_folder(folder) or folder.suffix.lower() in SLIDE_SUFFIXES:
            continue
        pattern = folder.rglob("*") if recursive else folder.iterdir()
        found.extend(p for p in pattern if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                     and not p.name.startswith("."))
    return sorted(found)


def skipped_images_line(inputs: list[str | Path], recursive: bool = False) -> str | None:
    """A note naming the images a folder scan skipped, with how to include them; None if there are none."""
    images = images_in_folders(inputs, recursive)
    if not images:
        return None
    from wsi_hcc.utils.words import counted

    shown = ", ".join(str(p) for p in images[:3]) + (", ..." if len(images) > 3 else "")
    return (f"note: {counted(len(images), 'PNG/JPEG image')} in the given folders skipped ({shown}): folders are "
            f"scanned for slide files only; name images as files to include them (e.g. {images[0].parent}/*.jpg)")


def find_stem_collisions(tasks: list[SlideTask]) -> dict[str, list[Path]]:
    """Stems that more than one distinct slide maps to (their outputs would overwrite each other)."""
    by_stem: dict[str, set[Path]] = defaultdict(set)
    for task in tasks:
        by_stem[task.stem].add(Path(os.path.realpath(task.path)))  # realpath: a symlink loop is not an error here
    return {stem: sorted(paths) for stem, paths in by_stem.items() if len(paths) > 1}
