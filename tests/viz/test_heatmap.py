"""Heatmaps: tile values land on the right thumbnail pixels, empty areas stay the thumbnail, colour bars."""

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from wsi_hcc.viz.figures import figure_png
from wsi_hcc.viz.heatmap import HeatmapPanel, blend_heatmap, heatmap_figure, render_heatmaps_png, value_grid

# 512 px tiles on a slide seen at downsample 32: each tile is a 16 x 16 block of the thumbnail.
TILE, DS = 512, 32.0


def test_a_value_lands_on_its_tiles_pixels_and_nowhere_else():
    grid = value_grid(np.array([[1024, 512]]), np.array([0.7]), TILE, DS, (40, 60))
    assert np.all(grid[16:32, 32:48] == np.float32(0.7))
    outside = np.ones(grid.shape, dtype=bool)
    outside[16:32, 32:48] = False
    assert np.isnan(grid[outside]).all()


def test_neighbours_share_no_pixel_and_leave_no_gap_at_fractional_scale():
    coords = np.array([[0, 0], [TILE, 0], [2 * TILE, 0]])
    grid = value_grid(coords, np.array([1.0, 2.0, 3.0]), TILE, 30.0, (20, 60))  # 17.07 px per tile
    row = grid[0]
    covered = np.isfinite(row)
    assert covered[:51].all() and not covered[52:].any()  # 3 * 512 / 30 = 51.2 px
    assert set(np.unique(row[covered]).tolist()) == {1.0, 2.0, 3.0}
    assert np.count_nonzero(row == 2.0) in (17, 18)


def test_overlapping_tiles_average_and_non_finite_values_are_no_tile():
    coords = np.array([[0, 0], [256, 0], [1024, 0]])
    grid = value_grid(coords, np.array([0.2, 0.6, np.nan]), TILE, DS, (16, 48))
    assert grid[0, 0] == pytest.approx(0.2) and grid[0, 10] == pytest.approx(0.4) and grid[0, 20] == pytest.approx(0.6)
    assert np.isnan(grid[:, 32:]).all()


def test_tiny_tiles_and_tiles_off_the_thumbnail():
    grid = value_grid(np.array([[100, 100], [10_000, 10_000]]), np.array([0.5, 0.9]), 8, DS, (8, 8))
    assert grid[3, 3] == 0.5 and np.isfinite(grid).sum() == 1


def test_blend_keeps_the_thumbnail_where_there_is_no_tile():
    thumbnail = np.full((4, 4, 3), 200, dtype=np.uint8)
    grid = np.full((4, 4), np.nan, dtype=np.float32)
    grid[1, 2] = 1.0
    out = blend_heatmap(thumbnail, grid, cmap="gray", alpha=0.5)
    assert np.all(out[1, 2] == 228)  # halfway between 200 and white
    mask = np.ones((4, 4), dtype=bool)
    mask[1, 2] = False
    assert np.all(out[mask] == 200)
    with pytest.raises(ValueError):
        blend_heatmap(thumbnail, grid[:3])


def test_two_panels_side_by_side_each_with_a_labelled_colour_bar():
    thumbnail = np.full((40, 60, 3), 230, dtype=np.uint8)
    coords = np.array([[0, 0], [512, 0], [0, 512]])
    p = value_grid(coords, np.array([0.1, 0.9, 0.5]), TILE, DS, (40, 60))
    attention = value_grid(coords, np.array([1e-4, 3e-4, 2e-4]), TILE, DS, (40, 60))
    panels = [HeatmapPanel(p, "p(HCC)", "magma"), HeatmapPanel(attention, "attention", "viridis", None, None)]
    figure = heatmap_figure(thumbnail, panels, title="slide-1")
    labels = sorted(ax.get_ylabel() for ax in figure.axes if ax.get_ylabel())
    assert labels == ["attention", "p(HCC)"] and len(figure.axes) == 4  # 2 maps + 2 colour bars
    image = Image.open(io.BytesIO(figure_png(figure)))
    assert image.format == "PNG" and image.width > image.height


def test_png_bytes_in_one_call():
    thumbnail = np.zeros((10, 10, 3), dtype=np.uint8)
    data = render_heatmaps_png(thumbnail, [HeatmapPanel(np.full((10, 10), np.nan, np.float32), "p(HCC)")])
    assert data.startswith(b"\x89PNG")


def _slide_tiles():
    from wsi_hcc.viz.slide_exports import TilePredictions

    boxes = np.array([[0, 0, 512, 512], [512, 0, 1024, 512], [0, 512, 512, 1024]], dtype=float)
    return TilePredictions(boxes, np.array([0.1, 0.9, 0.5]), np.array([0.2, 0.5, 0.3]))


def test_slide_maps_say_what_a_tile_probability_means_and_share_size_and_a_0_1_scale():
    from wsi_hcc.viz.slide_exports import TILE_ALONE_CAPTION, slide_panels

    panels = slide_panels((40, 60), DS, _slide_tiles(), "HCC")
    assert TILE_ALONE_CAPTION == "the MIL model applied to each tile alone" and panels[0].caption == TILE_ALONE_CAPTION
    assert np.nanmax(panels[1].grid) == 1.0 and np.nanmin(panels[1].grid) == pytest.approx(0.4)  # attention / top
    assert [(p.vmin, p.vmax) for p in panels] == [(0.0, 1.0), (0.0, 1.0)]
    figure = heatmap_figure(np.full((40, 60, 3), 230, np.uint8), panels)
    FigureCanvasAgg(figure).draw()  # constrained layout places the axes when drawn
    maps = [ax for ax in figure.axes if ax.get_title()]
    assert maps[0].get_title() == "P(HCC) per tile\n" + TILE_ALONE_CAPTION
    sizes = {tuple(np.round(ax.get_position().size, 3)) for ax in maps}
    assert len(sizes) == 1  # probability and attention drawn at one size
    assert sorted(ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()) == [
        "P(HCC) per tile", "attention / the slide's highest"]


def test_ground_truth_is_resampled_to_the_heatmap_and_outlined_on_every_map():
    from wsi_hcc.viz.heatmap import resize_labels

    truth = np.zeros((4, 6), np.uint8)
    truth[1:3, 3:6] = 2
    labels = resize_labels(truth, (40, 60))
    assert labels.shape == (40, 60) and labels.dtype == np.uint8
    assert (labels[10:30, 30:60] == 2).all() and (labels[:10] == 0).all()
    panels = [HeatmapPanel(np.where(labels > 0, 1.0, np.nan), "ground truth"),
              HeatmapPanel(np.full((40, 60), 0.5), "p")]
    figure = heatmap_figure(np.full((40, 60, 3), 230, np.uint8), panels, outline=labels == 2,
                            outline_label="true tumour region")
    maps = [ax for ax in figure.axes if ax.get_title()]
    assert all(ax.collections for ax in maps)  # a contour on each map
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["true tumour region"]
    with pytest.raises(ValueError):
        heatmap_figure(np.zeros((40, 60, 3), np.uint8), panels, outline=truth == 2)


def test_truth_heatmap_png_has_three_panels_at_the_thumbnails_size():
    from wsi_hcc.viz.slide_exports import truth_heatmap_png

    truth = np.ones((4, 6), np.uint8)
    truth[0, 0] = 2
    data = truth_heatmap_png(np.full((40, 60, 3), 230, np.uint8), DS, _slide_tiles(), "tumour", truth,
                             {1: "tissue", 2: "tumour"}, title="s")
    image = Image.open(io.BytesIO(data))
    assert image.width > 3 * image.height  # three panels side by side


def test_a_slide_without_the_positive_class_gets_no_outline_and_no_legend_for_one(monkeypatch):
    import wsi_hcc.viz.slide_exports as exports

    seen = {}
    monkeypatch.setattr(exports, "render_heatmaps_png", lambda *a, **k: seen.update(k) or b"")
    exports.truth_heatmap_png(np.full((40, 60, 3), 230, np.uint8), DS, _slide_tiles(), "tumour",
                              np.ones((4, 6), np.uint8), {1: "tissue", 2: "tumour"})
    assert seen["outline"] is None
