"""Shared fixtures: the real files in ../shared/data and small generated slides."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_SVS = SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def real_svs() -> Path:
    if not REAL_SVS.exists():
        pytest.skip(f"real slide not found at {REAL_SVS} (../shared/data is only beside CI and dev clones)")
    return REAL_SVS


@pytest.fixture(scope="session")
def synth_slide(tmp_path_factory) -> Path:
    """A 4096 x 3072 synthetic slide at 0.25 um/px with 256 px JPEG tiles and a pyramid."""
    from wsi_hcc.synth import write_synthetic_slide

    path = tmp_path_factory.mktemp("synth") / "synthetic.svs"
    write_synthetic_slide(path, size_px=(4096, 3072), mpp=0.25, seed=1)
    return path


@pytest.fixture(scope="session")
def synth_slide_no_mpp(tmp_path_factory) -> Path:
    from wsi_hcc.synth import write_synthetic_slide

    path = tmp_path_factory.mktemp("synth_nompp") / "nompp.svs"
    write_synthetic_slide(path, size_px=(1024, 1024), mpp=None, seed=2)
    return path


@pytest.fixture(scope="session")
def blank_tiff(tmp_path_factory) -> Path:
    """A plain tiled JPEG TIFF of white glass whose only resolution is in its TIFF tags (0.5 um/px)."""
    import tifffile

    path = tmp_path_factory.mktemp("blank") / "glass.tif"
    image = np.full((1024, 1536, 3), 242, dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), compression="jpeg", photometric="rgb",
                     resolution=(20000.0, 20000.0), resolutionunit="CENTIMETER")
    return path


class RecordingProgress:
    """The progress protocol (``wsi_hcc.utils.progress.Progress``) as a list of events, for assertions."""

    def __init__(self):
        self.events = []

    def stage(self, name):
        self.events.append(("stage", name))

    def item_started(self, name, position, total):
        self.events.append(("item", name, position, total))

    def steps_planned(self, total, done=0, name=""):
        self.events.append(("planned", total, done, name))

    def steps_done(self, n=1, status=""):
        self.events.append(("steps", n, status))

    def item_finished(self, warnings=()):
        self.events.append(("finished", tuple(warnings)))

    def message(self, text):
        self.events.append(("message", text))

    def of(self, kind):
        return [e[1:] for e in self.events if e[0] == kind]


@pytest.fixture
def recording_progress():
    return RecordingProgress()


@pytest.fixture(scope="session")
def region_rgb() -> np.ndarray:
    """Noise RGB pixels (600 x 800): a tile that is not an exact crop of them cannot pass for one."""
    return np.random.default_rng(17).integers(0, 256, (600, 800, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def dicomize():
    """``dicomize(tiff, folder)``: write the TIFF as a DICOM WSI series with wsidicomizer (the test
    extra), uncompressed so the pixels stay exact, with the pyramid levels it adds."""

    def convert(tiff: Path, folder: Path) -> list[Path]:
        with warnings.catch_warnings():  # wsidicom imports a pydicom function deprecated for pydicom 4
            warnings.simplefilter("ignore", DeprecationWarning)
            from pydicom.uid import ExplicitVRLittleEndian
            from wsidicom.codec import Settings
            from wsidicomizer import WsiDicomizer
            from wsidicomizer.wsidicomizer import SourceIdentifier

            # tiffslide source: wsidicomizer's default (opentile) needs the system libturbojpeg
            folder.parent.mkdir(parents=True, exist_ok=True)  # it makes the folder, not its parents
            files = WsiDicomizer.convert(tiff, folder, preferred_source=SourceIdentifier.TIFFSLIDE, tile_size=256,
                                         encoding=Settings.create(ExplicitVRLittleEndian, 8, "RGB"),
                                         add_missing_levels=True)
        return [Path(f) for f in files]

    return convert
