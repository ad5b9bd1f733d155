"""wsi_hcc: hepatocellular carcinoma toolkit for whole-slide images and radiology."""

from __future__ import annotations

import os as _os
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

# albumentations checks PyPI for updates on import; hospital networks are often offline, and a
# library must not phone home (the failed check also surfaces as a warning).
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

try:
    __version__ = _version("wsi-hcc")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"


def _register_codecs() -> None:
    # Stores keep tiles as JPEG through imagecodecs' numcodecs codec; registering it here means
    # `import wsi_hcc; zarr.open_group(...)` can read any store we wrote.
    try:
        from imagecodecs.numcodecs import register_codecs
    except ImportError:  # imagecodecs is a core dependency; tolerate partial installs at import
        return
    register_codecs(verbose=False)


_register_codecs()

__all__ = ["__version__"]
