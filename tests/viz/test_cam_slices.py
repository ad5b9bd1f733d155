"""A radiology CAM slice: a colour bar naming what the colours mean, and a legend naming each outline."""

import numpy as np

from wsi_hcc.viz.cam_slices import cam_slice_figure


def test_cam_slice_has_a_labelled_colour_bar_and_a_legend_of_the_outlines_drawn():
    image = np.random.default_rng(0).normal(size=(32, 32))
    cam = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    tumour = np.zeros((32, 32), bool)
    tumour[10:20, 10:20] = True
    ring = np.zeros((32, 32), bool)
    ring[6:24, 6:24] = True
    contours = {"liver": np.ones((32, 32), bool), "peritumoural ring": ring, "tumour": tumour}
    colours = {"liver": "#76ff03", "peritumoural ring": "#ffea00", "tumour": "#00e5ff"}
    figure = cam_slice_figure(image, cam, contours, colours, "CT:arterial, slice 16", "Grad-CAM: evidence for MVI")
    image_ax, bar_ax = figure.axes
    assert image_ax.get_title() == "CT:arterial, slice 16" and bar_ax.get_ylabel() == "Grad-CAM: evidence for MVI"
    assert bar_ax.get_ylim() == (0.0, 1.0)
    # a mask filling the slice has no edge to draw, so no legend entry either
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["peritumoural ring", "tumour"]
    assert len(image_ax.collections) == 2
