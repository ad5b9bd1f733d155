"""The QC picture: tiles tinted and outlined on exact pixels, a header naming slide, mpp, tiling and
tile count, a legend, and a small palette PNG for a real slide."""

import io

import numpy as np
from PIL import Image

from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.viz.figures import figure_png
from wsi_hcc.viz.qc import _TILE_RGB, qc_figure, qc_title, render_qc


def test_kept_tiles_are_tinted_and_outlined_and_the_rest_is_untouched():
    thumbnail = np.full((40, 40, 3), 240, dtype=np.uint8)
    mask = np.zeros((40, 40), dtype=bool)
    picture = render_qc(thumbnail, mask, np.array([[80, 80]]), 80.0, 8.0)  # one 10 px tile at (10, 10)
    assert tuple(picture[10, 15]) == _TILE_RGB and tuple(picture[19, 19]) == _TILE_RGB  # its border
    inside = picture[15, 15].astype(int)
    assert inside[2] > inside[0] and (inside != 240).any() and tuple(inside) != _TILE_RGB  # tinted blue, not painted
    assert (picture[:10] == 240).all() and (picture[20:] == 240).all()


def test_tiles_too_small_for_borders_are_tinted_only():
    thumbnail = np.full((20, 20, 3), 240, dtype=np.uint8)
    picture = render_qc(thumbnail, np.zeros((20, 20), bool), np.array([[0, 0], [32, 0]]), 32.0, 8.0)  # 4 px tiles
    assert not (picture == np.asarray(_TILE_RGB, np.uint8)).all(axis=2).any()
    assert (picture[:4, :8] != 240).any(axis=2).all() and (picture[4:] == 240).all()


def test_a_real_slides_qc_picture_is_a_small_palette_png_with_the_slide_at_one_pixel_per_pixel(real_svs, tmp_path):
    report = run_tile([real_svs], tmp_path, TileConfig(target_mpp=0.5, tile_px=256))
    assert report.outcomes[0].n_tiles > 0
    png = tmp_path / "CMU-1-Small-Region.qc.png"
    assert png.stat().st_size < 500_000  # 1.7 MB before it became a 1024 px palette PNG
    image = Image.open(png)
    assert image.mode == "P"
    assert image.size == (max(2220 // 3, 640), 2967 // 3 + 58)  # 2220 x 2967 px read at downsample 3, plus the header


def test_qc_figure_text_and_pixel_scale():
    picture = np.full((300, 200, 3), 200, dtype=np.uint8)

    class Slide:
        slide_mpp, mpp_source = 0.2527, "properties"

    class Spec:
        tile_px, target_mpp = 224, 0.5

    title = qc_title("slide-7", Slide, Spec, 1)
    assert title == ("slide-7", "slide 0.253 µm/px (properties) · tiles 224 px at 0.5 µm/px · 1 tile kept")
    figure = qc_figure(picture, title, 1)
    texts = [t.get_text() for t in figure.texts]
    assert texts[:2] == list(title)
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["tissue outline", "kept tile (1)"]
    width, height = (figure.get_size_inches() * figure.dpi).round().astype(int)
    assert width == 640 and height == 300 + 58  # one figure pixel per picture pixel, a narrow slide centred
    assert Image.open(io.BytesIO(figure_png(figure))).size == (640, 358)
