"""Evaluation pictures: ROC titled by what was scored, reliability labels inside the frame, whole epochs."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from wsi_hcc.viz.evaluation import curves_figure, reliability_figure, roc_figure


def _drawn(figure):
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def test_roc_is_titled_by_what_was_scored_and_a_perfect_curve_is_not_hidden_by_the_frame():
    labels = np.array([0, 0, 1, 1])
    figure = roc_figure({"pooled": (labels, [0.1, 0.2, 0.8, 0.9])}, title="ROC, held-out test slides")
    ax = figure.axes[0]
    assert ax.get_title() == "ROC, held-out test slides"
    assert ax.get_xlim()[0] < 0 and ax.get_ylim()[1] > 1  # the curve along x=0 and y=1 lies inside the frame
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pooled (AUC 1.000)"]


def test_reliability_counts_and_dots_stay_inside_the_axes():
    accuracy = np.array([0, 0, 0, 0, 0, 0.5, 1.0, 1.0, 1.0, 1.0])
    confidence = np.array([0, 0, 0, 0, 0, 0.55, 0.65, 0.75, 0.85, 0.999])
    count = np.array([0, 0, 0, 0, 0, 2, 3, 4, 5, 24])
    figure = reliability_figure(accuracy, confidence, count, "reliability, pooled")
    renderer = _drawn(figure)
    ax = figure.axes[0]
    frame = ax.get_window_extent(renderer)
    counts = [t for t in ax.texts if t.get_text().startswith("n=")]
    assert [t.get_text() for t in counts] == ["n=2", "n=3", "n=4", "n=5", "n=24"]
    for text in counts:
        box = text.get_window_extent(renderer)
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1 and frame.x0 <= box.x0 and box.x1 <= frame.x1 + 1
    dots = ax.lines[-1]
    assert dots.get_clip_on() is False  # the dot at confidence 0.999 is drawn whole at the right edge


def test_training_curves_have_whole_number_epoch_ticks_and_mark_the_best_epoch():
    epochs = [1, 2, 3]
    figure = curves_figure(epochs, {"loss": {"train": [1.0, 0.5, 0.3], "validation": [1.2, 0.6, 0.4]},
                                    "learning rate": {"lr": [1e-3, 5e-4, 2.5e-4]}},
                           best_epoch=2, best_label="best (val_loss)", log_scale=["learning rate"])
    _drawn(figure)
    for ax in figure.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.lines)  # the best epoch
    assert figure.axes[1].get_yscale() == "log"
    assert "best (val_loss)" in [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
