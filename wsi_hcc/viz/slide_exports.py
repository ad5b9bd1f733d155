"""What ``classify`` draws and exports for one slide: pure builders on a slide's tile predictions.

``TilePredictions`` is the record the MIL stage hands to the export stage; the builders return the
heatmap PNG bytes and the QuPath GeoJSON features, and the pipeline writes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wsi_hcc.qupath.export import DEFAULT_CLASS_COLORS, probability_regions, region_features, tile_features
from wsi_hcc.viz.heatmap import HeatmapPanel, render_heatmaps_png, resize_labels, value_grid

__all__ = ["TilePredictions", "slide_panels", "slide_heatmap_png", "truth_heatmap_png",
           "slide_geojson_features", "P_HCC", "class_maps_png",
           "class_geojson_features", "measurement_name"]

P_HCC = "p_HCC"  # the QuPath measurement of the positive class, whatever the bundle calls that class


@dataclass(frozen=True)
class TilePredictions:
    """One slide's tiles with what the model says of each.

    Attributes
    ----------
    boxes : numpy.ndarray
        ``(N, 4)`` level-0 ``(x0, y0, x1, y1)`` each tile covers: ``TileSpec.tile_boxes(coords)`` of
        the store, so the tiles of a grid at any mpp share edges (heatmaps without seams, one
        region per connected group of tiles).
    p_positive : numpy.ndarray
        ``(N,)`` calibrated probability of the positive class (HCC), each tile scored alone.
    attention : numpy.ndarray
        ``(N,)`` the MIL attention (sums to 1 over the slide).
    grade_probs : numpy.ndarray or None
        ``(N, G)`` grade probabilities per tile, when the model has a grade head.
    """

    boxes: np.ndarray
    p_positive: np.ndarray
    attention: np.ndarray
    grade_probs: np.ndarray | None = None


TILE_ALONE_CAPTION = "the MIL model applied to each tile alone"
ATTENTION_CAPTION = "where the slide's call looked (1 = its top tile)"


def slide_panels(shape_hw: tuple[int, int], downsample: float, tiles: TilePredictions,
                 positive_class: str) -> list[HeatmapPanel]:
    """The two maps of one slide, each on a 0-1 scale with its own colour bar: the tile probability
    of ``positive_class`` (each tile scored alone, as a bag of one) and the MIL attention as a share
    of the slide's highest (raw attention sums to 1, so its values shrink with the tile count)."""
    attention = np.asarray(tiles.attention, dtype=np.float64)
    top = float(np.nanmax(attention)) if attention.size else 0.0
    relative = attention / top if top > 0 else attention
    return [
        HeatmapPanel(value_grid(tiles.boxes, tiles.p_positive, None, downsample, shape_hw),
                     f"P({positive_class}) per tile", "magma", 0.0, 1.0, caption=TILE_ALONE_CAPTION),
        HeatmapPanel(value_grid(tiles.boxes, relative, None, downsample, shape_hw),
                     "MIL attention", "viridis", 0.0, 1.0, caption=ATTENTION_CAPTION,
                     bar_label="attention / the slide's highest"),
    ]


def slide_heatmap_png(thumbnail: np.ndarray, downsample: float, tiles: TilePredictions, positive_class: str,
                      title: str | None = None) -> bytes:
    """The thumbnail twice, at one size: tile probability of ``positive_class`` and relative attention."""
    return render_heatmaps_png(thumbnail, slide_panels(thumbnail.shape[:2], downsample, tiles, positive_class),
                               title=title)


def truth_heatmap_png(thumbnail: np.ndarray, downsample: float, tiles: TilePredictions, positive_class: str,
                      truth: np.ndarray, truth_names: dict[int, str], title: str | None = None) -> bytes:
    """Ground truth beside the slide's two maps, all at the thumbnail's size, the truth's
    ``positive_class`` region outlined on each.

    ``truth`` is a label image on any grid (it is resampled to the thumbnail's); ``truth_names`` maps
    the labels to draw (e.g. ``{1: "tissue", 2: "tumour"}``) to their names; other labels are left clear.
    """
    from matplotlib.colors import ListedColormap

    shape = thumbnail.shape[:2]
    labels = resize_labels(truth, shape)
    codes = sorted(truth_names)
    grid = np.full(shape, np.nan, dtype=np.float32)
    for k, code in enumerate(codes):
        grid[labels == code] = k
    colours = ListedColormap(["#f2b8d2", "#c81e28", "#1f77b4", "#ff7f0e"][:len(codes)])
    truth_panel = HeatmapPanel(grid, "ground truth", colours, -0.5, len(codes) - 0.5,
                               ticks={float(k): truth_names[c] for k, c in enumerate(codes)},
                               caption="the slide's true regions")
    positive = [c for c in codes if truth_names[c] == positive_class]
    outline = np.isin(labels, positive)
    outline = outline if outline.any() else None  # a slide without the class: no outline, no legend for one
    return render_heatmaps_png(thumbnail, [truth_panel, *slide_panels(shape, downsample, tiles, positive_class)],
                               title=title, outline=outline, outline_label=f"true {positive_class} region")


def slide_geojson_features(tiles: TilePredictions, class_names: Sequence[str], grade_names: Sequence[str] | None,
                           region_threshold: float, offset_xy: tuple[float, float] = (0, 0)) -> list[dict]:
    """QuPath objects for one slide: a ``tile`` per tile with ``p_HCC``, ``attention`` and one
    ``p_<grade>`` per grade as measurements, classified at ``region_threshold``; then the regions
    where the tile probability reaches ``region_threshold`` as editable annotations of the positive class."""
    measurements = {P_HCC: tiles.p_positive, "attention": tiles.attention}
    if grade_names and tiles.grade_probs is not None:
        for g, name in enumerate(grade_names):
            measurements[f"p_{name}"] = tiles.grade_probs[:, g]
    colours = {name: DEFAULT_CLASS_COLORS[(i + 1) % len(DEFAULT_CLASS_COLORS)] for i, name in enumerate(class_names)}
    colours[class_names[-1]] = DEFAULT_CLASS_COLORS[0]
    class_index = (np.asarray(tiles.p_positive) >= region_threshold).astype(np.int64)
    features = tile_features(tiles.boxes, None, measurements, class_names=list(class_names),
                             class_index=class_index, class_colors=colours, offset_xy=offset_xy)
    regions = probability_regions(tiles.boxes, tiles.p_positive, None, region_threshold)
    return features + region_features(regions, class_names[-1], colours[class_names[-1]], offset_xy=offset_xy)


def measurement_name(class_name: str) -> str:
    """``p_<class>`` with spaces as underscores: a CSV column and a QuPath measurement."""
    return "p_" + class_name.replace(" ", "_")


# Colours a pathologist reads without a legend: benign classes green, tumour classes warm and darker
# with grade (ColorBrewer RdYlGn / Dark2 hues); any other class takes the next of the rest.
_BENIGN = re.compile(r"^(non|normal|benign|healthy|background)|\b(normal|benign|non[-_ ]?(cancer|tumou?r|hcc))",
                     re.IGNORECASE)
_GRADE_RANK = ((re.compile(r"\b(low|well|g1)\b", re.IGNORECASE), 0),
               (re.compile(r"\b(medium|moderate(ly)?|intermediate|g2)\b", re.IGNORECASE), 1),
               (re.compile(r"\b(high|poor(ly)?|g3|g4)\b", re.IGNORECASE), 2))
_TUMOUR = re.compile(r"tumou?r|cancer|carcinoma|hcc|malignan", re.IGNORECASE)
_BENIGN_RGB = [(26, 152, 80), (102, 189, 99), (150, 150, 150)]
_TUMOUR_RGB = [(253, 174, 97), (244, 109, 67), (215, 48, 39)]  # low, medium, high grade
_OTHER_RGB = [(117, 112, 179), (231, 41, 138), (166, 118, 29), (102, 102, 102), (31, 120, 180), (230, 171, 2)]


def class_colours(class_names: Sequence[str]) -> list[tuple[int, int, int]]:
    """One RGB colour per class, the same in the heatmap, the viewer and QuPath: benign-named classes
    green, graded tumour classes orange to red by grade, other classes distinct hues; never a repeat
    within the first dozen classes."""
    colours: list[tuple[int, int, int] | None] = [None] * len(class_names)
    benign = iter(_BENIGN_RGB)
    for k, name in enumerate(class_names):
        if _BENIGN.search(name):
            colours[k] = next(benign, None)
        else:
            rank = next((r for pattern, r in _GRADE_RANK if pattern.search(name)),
                        2 if _TUMOUR.search(name) else None)  # an ungraded tumour class: red
            if rank is not None and _TUMOUR_RGB[rank] not in colours:
                colours[k] = _TUMOUR_RGB[rank]
    spare = iter([c for c in _OTHER_RGB + _TUMOUR_RGB + _BENIGN_RGB if c not in colours])
    return [c if c is not None else next(spare, (0, 0, 0)) for c in colours]


def class_maps_png(thumbnail: np.ndarray, downsample: float, boxes: np.ndarray, probs: np.ndarray,
                   class_names: Sequence[str], title: str | None = None) -> bytes:
    """One panel per class (its tile probability, 0-1) and one of the top class of each tile."""
    shape = thumbnail.shape[:2]
    panels = [HeatmapPanel(value_grid(boxes, probs[:, k], None, downsample, shape), f"P({name}) per tile",
                           "magma", 0.0, 1.0, caption="the patch classifier on each tile")
              for k, name in enumerate(class_names)]
    import matplotlib

    one_colour_per_class = matplotlib.colors.ListedColormap(np.asarray(class_colours(class_names)) / 255.0)
    panels.append(HeatmapPanel(value_grid(boxes, probs.argmax(axis=1).astype(np.float64), None, downsample, shape),
                               "top class per tile", one_colour_per_class, -0.5, len(class_names) - 0.5,
                               ticks={float(k): name for k, name in enumerate(class_names)}))
    return render_heatmaps_png(thumbnail, panels, title=title)


def class_geojson_features(boxes: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                           offset_xy: tuple[float, float] = (0, 0)) -> list[dict]:
    """QuPath objects for a patch classifier: a ``tile`` per tile carrying every class probability
    as a measurement and classified by its top class; then, per class, the regions where it is on top."""
    colours = dict(zip(class_names, class_colours(class_names)))
    top = probs.argmax(axis=1)
    features = tile_features(boxes, None, {measurement_name(n): probs[:, k] for k, n in enumerate(class_names)},
                             class_names=list(class_names), class_index=top, class_colors=colours,
                             offset_xy=offset_xy)
    for k, name in enumerate(class_names):
        regions = probability_regions(boxes, (top == k).astype(np.float64), None, 0.5)
        features += region_features(regions, name, colours[name], offset_xy=offset_xy)
    return features
