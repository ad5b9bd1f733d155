"""The ``wsi-hcc view`` web app through Starlette's TestClient: the list, the Deep Zoom tiles (the
slide's own pixels at full resolution), the overlays and the values under a point (the tile
table's), the refusals (paths outside the folder, writes), and the command's safe defaults."""

from __future__ import annotations

import io

import numpy as np
import pytest
from classified_folder import classified_folder
from click.testing import CliRunner
from PIL import Image

from wsi_hcc.slide.readers import open_slide
from wsi_hcc.view import create_app, load_catalog
from wsi_hcc.view.overlays import colour_table


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    return classified_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def client(classified):
    from starlette.testclient import TestClient

    with TestClient(create_app(load_catalog(classified.out)), base_url="http://127.0.0.1") as client:
        yield client


def _image(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_slide_list_is_predictions_csv(client):
    data = client.get("/api/slides").json()
    assert data["columns"] == ["slide", "p_hcc", "predicted_label", "n_tiles", "status"]
    assert [r["slide"] for r in data["rows"]] == ["case01", "gone"] and data["rows"][0]["p_hcc"] == "0.9"
    assert "gone.zarr" in data["problems"]["gone"] and "case01" not in data["problems"]
    assert client.get("/api/slides/gone").status_code == 409
    assert client.get("/api/slides/nobody").status_code == 404


def test_dzi_descriptor_and_pyramid(client):
    xml = client.get("/slides/case01.dzi").text
    assert 'TileSize="256"' in xml and 'Overlap="0"' in xml and '<Size Width="3072" Height="2048"/>' in xml
    info = client.get("/api/slides/case01").json()
    assert (info["width"], info["height"], info["levels"], info["mpp"]) == (3072, 2048, 13, 0.5)
    assert [layer["name"] for layer in info["layers"]] == ["p_non_tumour", "p_tumour", "top_class", "attention",
                                                             "tissue"]
    assert info["regions"][0]["class"] == "tumour (p >= 0.5)"
    assert client.get("/slides/case01_files/13/0_0.jpeg").status_code == 404
    assert client.get("/slides/case01_files/12/12_0.jpeg").status_code == 404  # 3072 / 256 = 12 columns
    assert client.get("/slides/case01_files/12/0_0.gif").status_code == 404


def test_full_resolution_tile_is_the_slides_level0_pixels(client, classified):
    reader = open_slide(classified.slide)
    try:
        for col, row in [(0, 0), (5, 3), (11, 7)]:
            tile = _image(client.get(f"/slides/case01_files/12/{col}_{row}.png"))
            expected = reader.read_region((col * 256, row * 256), 0, (256, 256))
            assert np.array_equal(tile, expected), (col, row)
        jpeg = _image(client.get("/slides/case01_files/12/5_3.jpeg")).astype(int)
        assert np.abs(jpeg - reader.read_region((1280, 768), 0, (256, 256))).mean() < 3
        # level 11: half resolution, the 2x2 mean of level 0 (the slide's own pyramid has level 2x)
        half = _image(client.get("/slides/case01_files/11/2_1.png")).astype(int)
        region = reader.read_region((1024, 512), 0, (512, 512)).astype(int)
        assert np.abs(half - region.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))).mean() < 4
    finally:
        reader.close()
    edge = _image(client.get("/slides/case01_files/0/0_0.png"))
    assert edge.shape == (1, 1, 3)


def test_overlay_tiles_carry_the_tile_tables_values(client, classified):
    magma = colour_table("magma")
    level = 12  # full resolution, tiles of 128 level-0 px
    for i in [int(np.argmax(classified.p_tumour)), int(np.argmin(classified.p_tumour)), len(classified.coords) // 2]:
        x, y = (classified.coords[i] + classified.tile_size_level0 / 2).astype(int)
        overlay = _image(client.get(f"/overlays/case01/p_tumour/{level}/{x // 256}_{y // 256}.png"))
        pixel = overlay[y % 256, x % 256]
        assert pixel[3] == 255 and np.array_equal(pixel[:3], magma[round(classified.p_tumour[i] * 255)]), i
        values = client.get(f"/api/slides/case01/values?x={x}&y={y}").json()
        assert values["tile"]["index"] == i and values["tile"]["x0"] == classified.coords[i][0]
        assert values["values"]["p_tumour"] == pytest.approx(classified.p_tumour[i], abs=1e-6)
        assert values["values"]["top_class"] == ("tumour" if classified.p_tumour[i] > 0.5 else "non_tumour")
    covered = np.zeros((2048, 3072), bool)
    for x, y in classified.coords.tolist():
        covered[y:y + 128, x:x + 128] = True
    empty = np.argwhere(~covered)[0]  # glass: no model tile, a transparent overlay
    overlay = _image(client.get(f"/overlays/case01/attention/12/{empty[1] // 256}_{empty[0] // 256}.png"))
    assert overlay[empty[0] % 256, empty[1] % 256, 3] == 0
    # attention on the heatmap PNG's scale: a share of the slide's highest
    top = int(np.argmax(classified.attention))
    x, y = (classified.coords[top] + classified.tile_size_level0 / 2).astype(int)
    assert client.get(f"/api/slides/case01/values?x={x}&y={y}").json()["values"]["attention"] == pytest.approx(1.0)
    assert client.get(f"/api/slides/case01/values?x={empty[1]}&y={empty[0]}").json()["tile"] is None
    assert client.get("/overlays/case01/nothing/12/0_0.png").status_code == 404
    assert client.get("/api/slides/case01/values?x=a&y=1").status_code == 400
    far = client.get("/api/slides/case01/values?x=-5&y=1e99")  # pytest turns a RuntimeWarning into a failure
    assert far.status_code == 200 and far.json()["tile"] is None and far.json()["tissue"] is False


def test_tissue_layer_and_tumour_regions(client, classified):
    tissue = _image(client.get("/overlays/case01/tissue/0/0_0.png"))
    assert tissue.shape == (1, 1, 4)
    whole = _image(client.get("/overlays/case01/tissue/8/0_0.png"))  # 3072 / 16: the whole slide in one tile
    assert whole.shape == (128, 192, 4) and 0.2 < (whole[..., 3] == 255).mean() < 0.95
    assert np.array_equal(whole[whole[..., 3] == 255][0, :3], [0, 170, 0])
    regions = client.get("/api/slides/case01/regions").json()
    assert regions and regions[0]["colour"] == "#d62728"
    import shapely

    area = shapely.MultiPolygon([shapely.Polygon(p[0], p[1:]) for p in regions[0]["polygons"]]).area
    assert area == pytest.approx((classified.p_tumour >= 0.5).sum() * 128 * 128)


@pytest.mark.parametrize("path", ["/files/../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd", "/files//etc/passwd",
                                  "/files/..%2F..%2Fetc%2Fpasswd", "/files/stores/../../slides/case01.svs",
                                  "/static/../server.py", "/files/outside"])
def test_paths_outside_the_folder_are_refused(client, classified, path):
    outside = classified.out / "outside"
    if not outside.exists():
        outside.symlink_to(classified.slide)  # a link inside that leads out is refused too
    assert client.get(path).status_code == 404


def test_a_request_for_another_host_name_is_refused(client):
    # A page on another site that rebinds its name to 127.0.0.1 sends its own name as Host.
    assert client.get("/api/slides", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/api/slides", headers={"Host": "localhost:8000"}).status_code == 200


def test_files_inside_the_folder_are_served_and_nothing_is_written(client, classified):
    assert client.get("/files/predictions.csv").content == (classified.out / "predictions.csv").read_bytes()
    table = client.get("/files/case01.tiles.csv.gz")  # a gzip file to save as it is
    assert table.headers["content-type"] == "application/gzip" and "content-encoding" not in table.headers
    assert table.content == (classified.out / "case01.tiles.csv.gz").read_bytes()
    for method in ("post", "put", "delete"):
        assert getattr(client, method)("/files/predictions.csv").status_code == 405
    assert client.post("/api/slides").status_code == 405
    page = client.get("/slide/case01")
    assert page.status_code == 200 and "viewer.js" in page.text and client.get("/static/viewer.js").status_code == 200


def test_a_bare_slide_shows_with_its_tissue_mask_only(real_svs):
    from starlette.testclient import TestClient

    with TestClient(create_app(load_catalog(real_svs)), base_url="http://127.0.0.1") as client:
        info = client.get("/api/slides/CMU-1-Small-Region").json()
        assert (info["width"], info["height"], info["mpp"]) == (2220, 2967, 0.499)
        assert [layer["name"] for layer in info["layers"]] == ["tissue"] and info["regions"] == []
        assert client.get("/files/CMU-1-Small-Region.svs").status_code == 404
        tile = _image(client.get("/slides/CMU-1-Small-Region_files/12/3_5.png"))
    import openslide

    with openslide.OpenSlide(real_svs) as slide:
        expected = np.asarray(slide.read_region((768, 1280), 0, (256, 256)).convert("RGB"))
    assert np.array_equal(tile, expected)


def test_a_folder_without_predictions_is_one_line(tmp_path):
    from wsi_hcc.errors import WsiHccError

    with pytest.raises(WsiHccError, match="no predictions.csv in this folder; pass the --out folder"):
        load_catalog(tmp_path)


def test_a_demo_folder_shows_its_classify_results(classified, tmp_path):
    demo = tmp_path / "wsi-hcc-demo"
    demo.mkdir()
    (demo / "classify").symlink_to(classified.out)
    assert list(load_catalog(demo).entries) == ["case01", "gone"]


def test_the_command_listens_on_localhost_unless_told(monkeypatch, classified, tmp_path):
    import socket

    import uvicorn

    import wsi_hcc.cli.view as view_cli
    from wsi_hcc.cli import main

    asked, bound = [], []
    real_listen = view_cli.listen
    # any free port stands in for the one asked for, so the test never depends on port 8000 being free
    monkeypatch.setattr(view_cli, "listen", lambda host, port: asked.append((host, port)) or real_listen(host, 0))
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda self, sockets=None: bound.append(sockets[0].getsockname()[:2]) or sockets[0].close())
    result = CliRunner().invoke(main, ["view", str(classified.out)])
    assert result.exit_code == 0, result.output
    assert asked[-1] == ("127.0.0.1", 8000) and bound[-1][0] == "127.0.0.1"
    assert f"2 slides from {classified.out}: open http://127.0.0.1:{bound[-1][1]}/" in result.output
    result = CliRunner().invoke(main, ["view", str(classified.out), "--host", "0.0.0.0", "--port", "8123"])
    assert asked[-1] == ("0.0.0.0", 8123) and bound[-1][0] == "0.0.0.0"
    assert "warning: listening on 0.0.0.0" in result.output
    result = CliRunner().invoke(main, ["view", str(classified.out / "stores")])
    assert result.exit_code == 2 and "no predictions.csv" in result.output
    not_a_slide = tmp_path / "notes.svs"
    not_a_slide.write_text("not a slide")
    result = CliRunner().invoke(main, ["view", str(not_a_slide)])
    assert result.exit_code != 0 and str(not_a_slide) in result.output and len(result.output.strip().splitlines()) == 1
    monkeypatch.setattr(view_cli, "listen", real_listen)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["view", str(classified.out), "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port} (Address already in use); "
                                                  f"another program listens there: pass another --port (e.g. --port "
                                                  f"{port + 1})"]


def test_a_patch_classifiers_folder_has_a_layer_per_class_and_the_top_class(classified, tmp_path):
    import json

    from starlette.testclient import TestClient

    from wsi_hcc.utils.atomic import atomic_write_csv
    from wsi_hcc.viz.tile_table import write_tile_table

    names = ["normal liver", "HCC G1", "HCC G2"]
    probs = np.random.default_rng(3).dirichlet(np.ones(3), size=len(classified.coords))
    write_tile_table(tmp_path / "case01.tiles.csv.gz", classified.coords, classified.tile_size_level0,
                     {f"p_{n.replace(' ', '_')}": probs[:, k] for k, n in enumerate(names)})
    atomic_write_csv(tmp_path / "predictions.csv", ["slide", "status"], [{"slide": "case01", "status": "done"}])
    (tmp_path / "classify-manifest.json").write_text(json.dumps({
        "stores_dir": str(classified.out / "stores"), "model": {"kind": "patch-classifier", "card": {
            "class_names": names}}}))
    with TestClient(create_app(load_catalog(tmp_path)), base_url="http://127.0.0.1") as client:
        info = client.get("/api/slides/case01").json()
        assert [layer["name"] for layer in info["layers"]] == ["p_normal_liver", "p_HCC_G1", "p_HCC_G2", "top_class",
                                                                 "tissue"]
        assert [i["name"] for i in info["layers"][3]["legend"]["items"]] == names and info["regions"] == []
        x, y = (classified.coords[7] + 5).tolist()
        values = client.get(f"/api/slides/case01/values?x={x}&y={y}").json()["values"]
        assert values["top_class"] == names[int(probs[7].argmax())]
        assert values["p_HCC_G2"] == pytest.approx(probs[7, 2], abs=1e-6)


def test_a_slide_classify_failed_on_shows_classifys_reason(tmp_path):
    from wsi_hcc.utils.atomic import atomic_write_csv

    atomic_write_csv(tmp_path / "predictions.csv", ["slide", "status", "reason"],
                     [{"slide": "bad", "status": "failed", "reason": "bad.svs: not a readable slide; copy it again"}])
    entry = load_catalog(tmp_path).entries["bad"]
    assert entry.problem == "classify failed on this slide: bad.svs: not a readable slide; copy it again"
