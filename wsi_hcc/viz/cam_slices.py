"""One axial slice of a radiology Grad-CAM: the image in grey, the CAM in colour with its colour bar,
and the region contours with a legend. A pure builder on 2-D arrays returning a matplotlib ``Figure``."""

from __future__ import annotations

import numpy as np

__all__ = ["cam_slice_figure"]


def cam_slice_figure(image: np.ndarray, cam: np.ndarray, contours: dict[str, np.ndarray], colours: dict[str, str],
                     title: str, cam_label: str = "Grad-CAM", floor: float = 0.05, dpi: int = 100):
    """``image`` (y, x) in grey, ``cam`` (y, x) in [0, 1] over it in jet (values under ``floor`` left clear),
    a colour bar labelled ``cam_label``, and each ``contours`` mask (y, x) outlined in ``colours[name]``,
    named in a legend below the image. Masks that are empty or fill the slice have no contour and no
    legend entry."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(4.6, 4.3), dpi=dpi, layout="constrained")
    ax = figure.add_subplot()
    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.imshow(np.ma.masked_less(cam, floor), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
    handles = []
    for name, mask in contours.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.any() and not mask.all():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colours[name]], linewidths=1.0)
            handles.append(Line2D([], [], color=colours[name], lw=1.5, label=name))
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=ax, shrink=0.8)
    bar.set_label(cam_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=7, frameon=False)
    return figure
