"""What the numpy and torch normalisers share, so neither imports the other at import time."""

from __future__ import annotations

from wsi_hcc.errors import WsiHccError

__all__ = ["StainError", "MIN_TISSUE_PIXELS"]

# Fewer tissue pixels than this cannot define stain vectors or colour statistics.
MIN_TISSUE_PIXELS = 64


class StainError(WsiHccError):
    """A reference or image cannot be used for stain normalisation."""
