"""The web application of ``wsi-hcc view``: a Starlette app, read-only (GET only).

Routes::

    /                                       slide list (static page)
    /slide/{id}                             viewer (static page)
    /static/...                             the page's own HTML/JS/CSS (package data)
    /api/slides                             predictions.csv's columns and rows, and which can be viewed
    /api/slides/{id}                        size, mpp, pyramid, overlay layers and their legends
    /api/slides/{id}/values?x=&y=           the tile under a level-0 point and its values
    /api/slides/{id}/regions                tumour regions as polygons (level-0 px)
    /slides/{id}.dzi                        Deep Zoom descriptor
    /slides/{id}_files/{level}/{col}_{row}.{jpeg|png}
    /overlays/{id}/{layer}/{level}/{col}_{row}.png
    /files/{path}                           a file under the classify output folder, nothing else

Slides are found by id in the catalogue; the only path taken from a request is ``/files/``, resolved
(symbolic links included) and refused unless it lies inside the output folder.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Sequence
from pathlib import Path

from wsi_hcc.errors import WsiHccError
from wsi_hcc.view.catalog import Catalog
from wsi_hcc.view.pyramid import dzi_xml
from wsi_hcc.view.slides import ByteCache, SlideShelf, encode_tile

__all__ = ["create_app", "STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_TILE_NAME = re.compile(r"^(\d+)_(\d+)\.(jpeg|jpg|png)$")
_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}  # tiles, files
_PAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}  # a new release shows at once
LOCAL_NAMES = ("127.0.0.1", "localhost")


def create_app(catalog: Catalog, cache_bytes: int = 256 * 2**20, allowed_hosts: Sequence[str] = LOCAL_NAMES):
    """The app for one catalogue; its ``state.shelf`` holds the opened slides, ``state.cache`` the tiles.

    Requests naming another host than ``allowed_hosts`` in their ``Host`` header are refused (400),
    so a web page elsewhere cannot read the slides through DNS rebinding; ``("*",)`` allows all
    (``wsi-hcc view --host``)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    shelf = SlideShelf(catalog)
    cache = ByteCache(cache_bytes)

    def opened(request):
        slide_id = request.path_params["id"]
        if slide_id not in catalog.entries:
            raise HTTPException(404, f"no slide {slide_id!r} here")
        try:
            return shelf.get(slide_id)
        except WsiHccError as exc:
            raise HTTPException(409, str(exc).splitlines()[0]) from None

    def tile_address(request, opened_slide):
        match = _TILE_NAME.match(request.path_params["tile"])
        if match is None:
            raise HTTPException(404, "tile names are <col>_<row>.jpeg or .png")
        level, col, row = int(request.path_params["level"]), int(match[1]), int(match[2])
        try:
            opened_slide.pyramid.grid.tile_box(level, col, row)
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None
        return level, col, row, "png" if match[3] == "png" else "jpeg"

    async def page(request):
        return FileResponse(STATIC_DIR / ("index.html" if request.url.path == "/" else "viewer.html"),
                            headers=_PAGE_HEADERS)

    async def slide_list(request):
        return JSONResponse({"title": catalog.title, "columns": catalog.columns,
                             "rows": [e.row for e in catalog.entries.values()],
                             "problems": {e.id: e.problem for e in catalog.entries.values() if e.problem},
                             "files": catalog.root is not None})

    def slide_info(request):
        return JSONResponse(opened(request).info())

    def dzi(request):
        return Response(dzi_xml(opened(request).pyramid.grid), media_type="application/xml", headers=_HEADERS)

    def slide_tile(request):
        slide = opened(request)
        level, col, row, image_format = tile_address(request, slide)
        try:
            data = cache.get_or_make((slide.entry.id, "slide", level, col, row, image_format),
                                     lambda: encode_tile(slide.pyramid.tile(level, col, row), image_format))
        except WsiHccError as exc:  # the slide was closed for others while this request ran
            raise HTTPException(503, str(exc).splitlines()[0]) from None
        return Response(data, media_type=f"image/{image_format}", headers=_HEADERS)

    def overlay_tile(request):
        from wsi_hcc.view.overlays import rgba_png

        slide = opened(request)
        layer = request.path_params["layer"]
        if layer not in slide.overlays.names():
            raise HTTPException(404, f"no overlay {layer!r} for this slide")
        level, col, row, _ = tile_address(request, slide)
        grid = slide.pyramid.grid
        x, y, w, h = grid.tile_box(level, col, row)
        scale = grid.scale(level)

        def make():
            return rgba_png(slide.overlays.render(layer, x * scale, y * scale, scale, w, h))

        data = cache.get_or_make((slide.entry.id, layer, level, col, row), make)
        return Response(data, media_type="image/png", headers=_HEADERS)

    def values(request):
        slide = opened(request)
        try:
            x, y = float(request.query_params["x"]), float(request.query_params["y"])
        except (KeyError, ValueError):
            raise HTTPException(400, "give level-0 x and y as numbers: ?x=1200&y=800") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise HTTPException(400, "x and y must be finite")
        return JSONResponse({"x": x, "y": y} | slide.overlays.values_at(x, y))

    def regions(request):
        return JSONResponse(opened(request).overlays.regions())

    def served_file(request):
        if catalog.root is None:
            raise HTTPException(404, "no output folder is served for a single slide")
        wanted = (catalog.root / request.path_params["path"]).resolve()
        if not wanted.is_relative_to(catalog.root) or not wanted.is_file():
            raise HTTPException(404, "only files inside the output folder are served")
        # a .gz is a gzip file to save (QuPath opens .geojson.gz), not JSON the browser should show undecoded
        return FileResponse(wanted, headers=_HEADERS,
                            media_type="application/gzip" if wanted.suffix == ".gz" else None)

    routes = [
        Route("/", page), Route("/slide/{id}", page),
        Route("/api/slides", slide_list), Route("/api/slides/{id}", slide_info),
        Route("/api/slides/{id}/values", values), Route("/api/slides/{id}/regions", regions),
        Route("/slides/{id}.dzi", dzi), Route("/slides/{id}_files/{level:int}/{tile}", slide_tile),
        Route("/overlays/{id}/{layer}/{level:int}/{tile}", overlay_tile),
        Route("/files/{path:path}", served_file),
        Mount("/static", StaticFiles(directory=STATIC_DIR)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        shelf.close()

    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))])
    app.state.shelf, app.state.cache = shelf, cache
    return app
