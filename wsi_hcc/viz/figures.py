"""Matplotlib figures as PNG bytes, for every picture the library writes (callers write atomically)."""

from __future__ import annotations

import io

__all__ = ["figure_png", "palette_png"]


def figure_png(figure, dpi: float | None = None) -> bytes:
    """PNG bytes of a ``matplotlib.figure.Figure`` drawn on an Agg canvas (no pyplot, no GUI backend).

    The "Software" tag is left out so the bytes depend only on the picture.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi or figure.dpi, metadata={"Software": None})
    return buffer.getvalue()


def palette_png(png: bytes, colours: int = 256) -> bytes:
    """``png`` re-encoded with a palette of at most ``colours`` (median cut, no dithering): an H&E picture
    with a few flat overlay colours keeps its look at a third to half of the RGB size. Not for pictures
    with colour maps: their gradients turn into bands."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        paletted = image.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    paletted.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
