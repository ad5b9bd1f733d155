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
    # An installed wsi-hcc registers imagecodecs' JPEG codec through the "numcodecs.codecs" entry
    # point (pyproject.toml), so any process finds it; a source tree that was not installed has none.
    from imagecodecs.numcodecs import Jpeg as _Jpeg
    from numcodecs import register_codec as _register_codec

    _register_codec(_Jpeg)

__all__ = ["__version__"]
