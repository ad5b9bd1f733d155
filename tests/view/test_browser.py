"""The viewer in a real browser: headless Chromium (the system's, e.g. Debian's ``chromium``)
driven by Playwright opens the page, goes to full resolution, toggles overlays and reads the
screen's pixels back: the slide's level-0 pixels, and the overlay colour of a known tile.

Skipped, with the reason, where Playwright or a Chromium executable is missing. Playwright's own
browser download is never used: ``executable_path`` points at the system browser.
"""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from classified_folder import classified_folder
from PIL import Image

from wsi_hcc.view import create_app, load_catalog
from wsi_hcc.view.overlays import colour_table
from wsi_hcc.viz.slide_exports import class_colours

pytestmark = pytest.mark.slow

VIEWPORT = (1000, 700)  # the canvas: viewport minus the 300 px panel and the 40 px header


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    return classified_folder(tmp_path_factory)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium executable on PATH (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = _chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--force-color-profile=srgb", "--no-sandbox"])
        yield browser
        browser.close()


def _serve(path):
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(load_catalog(path)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def classified_site(classified):
    server, thread, url = _serve(classified.out)
    yield url
    server.should_exit = True
    thread.join(10)


def _open(browser, url):
    page = browser.new_page(viewport={"width": VIEWPORT[0] + 300, "height": VIEWPORT[1] + 40})
    page.goto(url)
    page.wait_for_function("window.wsiView && window.wsiView.ready", timeout=30_000)
    return page


def _canvas(page) -> np.ndarray:
    box = page.locator("#canvas").bounding_box()
    assert (round(box["width"]), round(box["height"])) == VIEWPORT, box
    return np.asarray(Image.open(io.BytesIO(page.locator("#canvas").screenshot())).convert("RGB"))


def _full_resolution_at(page, cx: int, cy: int) -> np.ndarray:
    """Centre the view on level-0 ``(cx, cy)`` zoomed out, wheel in a little, then press ``1:1``."""
    page.evaluate(f"() => window.wsiView.setView({cx}, {cy}, 4)")
    page.mouse.move(VIEWPORT[0] // 2, 40 + VIEWPORT[1] // 2)
    page.mouse.wheel(0, -200)  # zooms about the cursor, the canvas centre: the centre stays put
    page.wait_for_function("window.wsiView.state().scale < 4")
    page.locator("#zoom-full").click()
    state = page.evaluate("() => window.wsiView.state()")
    assert (state["scale"], state["cx"], state["cy"]) == (1, cx, cy), state
    page.evaluate("() => window.wsiView.idle()")
    return _canvas(page)


def test_full_resolution_shows_the_slides_pixels_and_the_overlays_colours(browser, classified_site, classified):
    from wsi_hcc.slide.readers import open_slide

    page = _open(browser, f"{classified_site}/slide/case01")
    assert page.locator("#title").text_content() == "case01"
    assert "predicted_label tumour" in page.locator("#summary").text_content()
    i = int(np.argmax(classified.p_tumour))  # a tumour tile; centre the view on its centre
    cx, cy = (int(v) for v in classified.coords[i] + 64)
    shown = _full_resolution_at(page, cx, cy).astype(int)
    x0, y0 = cx - VIEWPORT[0] // 2, cy - VIEWPORT[1] // 2
    reader = open_slide(classified.slide)
    try:
        crop = (max(0, -x0), max(0, -y0), min(VIEWPORT[0], 3072 - x0), min(VIEWPORT[1], 2048 - y0))
        expected = reader.read_region((x0 + crop[0], y0 + crop[1]), 0, (crop[2] - crop[0], crop[3] - crop[1]))
    finally:
        reader.close()
    difference = np.abs(shown[crop[1]:crop[3], crop[0]:crop[2]] - expected.astype(int))
    assert difference.mean() < 2.5 and np.percentile(difference, 99) < 16, difference.mean()

    page.evaluate("() => window.wsiView.setLayer('p_tumour', true, 1)")
    page.evaluate("() => window.wsiView.idle()")
    overlay = _canvas(page)
    centre = overlay[VIEWPORT[1] // 2, VIEWPORT[0] // 2].astype(int)
    assert np.abs(centre - colour_table("magma")[round(classified.p_tumour[i] * 255)]).max() <= 2, centre

    page.evaluate("() => { wsiView.setLayer('p_tumour', false); wsiView.setLayer('top_class', true, 1); }")
    page.evaluate("() => window.wsiView.idle()")
    tumour_colour = class_colours(["non_tumour", "tumour"])[1]
    assert np.abs(_canvas(page)[VIEWPORT[1] // 2, VIEWPORT[0] // 2].astype(int) - tumour_colour).max() <= 2

    page.evaluate("() => { wsiView.setLayer('top_class', false); wsiView.setLayer('tissue', true, 0.5); }")
    page.evaluate("() => window.wsiView.idle()")
    half = _canvas(page)[VIEWPORT[1] // 2, VIEWPORT[0] // 2].astype(int)
    blended = 0.5 * shown[VIEWPORT[1] // 2, VIEWPORT[0] // 2] + 0.5 * np.array([0, 170, 0])
    assert np.abs(half - blended).max() <= 3, (half, blended)

    page.mouse.move(10, 40 + VIEWPORT[1] // 2)  # the side panel says where the cursor is, and its tile
    page.mouse.move(12, 40 + VIEWPORT[1] // 2)
    page.wait_for_function("document.getElementById('values').textContent.includes('tile #')", timeout=10_000)
    assert page.locator("#cursor").text_content() == f"x {x0 + 12}  y {cy}"
    assert page.locator("#scalebar span").text_content().endswith("\u00b5m")
    page.close()


def test_the_list_sorts_by_a_column(browser, classified_site):
    page = browser.new_page()
    page.goto(classified_site)
    page.wait_for_selector("#slides tbody tr")
    assert page.locator("#slides tbody tr").evaluate_all("rows => rows.map(r => r.dataset.slide)") == ["case01", "gone"]
    page.locator("#slides th", has_text="p_hcc").click()
    assert page.locator("#slides tbody tr").evaluate_all("rows => rows.map(r => r.dataset.slide)") == ["gone", "case01"]
    page.locator("#slides a", has_text="case01").click()
    page.wait_for_function("window.wsiView && window.wsiView.ready", timeout=30_000)
    page.close()


def test_the_real_svs_at_full_resolution_matches_openslide(browser, real_svs):
    import openslide

    server, thread, url = _serve(real_svs)
    try:
        page = _open(browser, f"{url}/slide/CMU-1-Small-Region")
        shown = _full_resolution_at(page, 1100, 1500).astype(int)
        page.evaluate("() => window.wsiView.setLayer('tissue', true, 1)")
        page.evaluate("() => window.wsiView.idle()")
        tissue = _canvas(page)
        page.close()
    finally:
        server.should_exit = True
        thread.join(10)
    with openslide.OpenSlide(real_svs) as slide:
        expected = np.asarray(slide.read_region((600, 1150), 0, VIEWPORT).convert("RGB")).astype(int)
    difference = np.abs(shown - expected)
    assert difference.mean() < 2.5 and np.percentile(difference, 99) < 16, difference.mean()
    green = np.all(tissue == (0, 170, 0), axis=-1).mean()
    assert 0.2 < green < 1.0, green
