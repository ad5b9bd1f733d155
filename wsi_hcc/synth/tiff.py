"""Writing the slide: pyramid sizes, box means, the pyramidal JPEG TIFF and the mask PNG."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from wsi_hcc.synth.scene import _Scene

logger = logging.getLogger(__name__)

_APERIO_HEADER = "Aperio Image Library v12.0.0"
_LEVEL_FACTOR = 4
_MIN_LEVEL_LONG_PX = 1024  # add pyramid levels while the last one is at least this long
_CHUNK_AREA_PX = 1 << 18  # pixels rendered per chunk: keeps float32 temporaries in cache
_BIGTIFF_BYTES = 1 << 31  # uncompressed level-0 size above which BigTIFF is written


def _level_sizes(size_px: tuple[int, int]) -> list[tuple[int, int]]:
    """Pyramid level sizes ``(width, height)``: /4 per level until the long side is < 1024."""
    sizes = [size_px]
    while max(sizes[-1]) >= _MIN_LEVEL_LONG_PX:
        w, h = sizes[-1]
        sizes.append((-(-w // _LEVEL_FACTOR), -(-h // _LEVEL_FACTOR)))
    return sizes


def _box_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """Area mean over ``factor x factor`` blocks, rounded; partial edge blocks average what exists.

    Parameters
    ----------
    img : np.ndarray
        uint8, shape ``(h, w, c)``.
    factor : int
        Block size in pixels, 1 to 16.

    Returns
    -------
    np.ndarray
        uint8, shape ``(ceil(h / factor), ceil(w / factor), c)``.
    """
    h, w, channels = img.shape
    ho, wo = -(-h // factor), -(-w // factor)
    if h % factor or w % factor:
        padded = np.zeros((ho * factor, wo * factor, channels), np.uint8)
        padded[:h, :w] = img
        img = padded
    rows = img[0::factor].astype(np.uint16)  # 16 * 16 * 255 fits in uint16
    for r in range(1, factor):
        rows += img[r::factor]
    blocks = rows.reshape(ho, wo, factor, channels)
    sums = blocks[:, :, 0].astype(np.uint32)
    for c in range(1, factor):
        sums += blocks[:, :, c]
    counts_y = np.minimum(factor, h - factor * np.arange(ho))
    counts_x = np.minimum(factor, w - factor * np.arange(wo))
    counts = (counts_y[:, None] * counts_x[None, :]).astype(np.uint32)[:, :, None]
    return ((2 * sums + counts) // (2 * counts)).astype(np.uint8)


def _write_tiff(
    path: Path,
    scene: _Scene,
    level_sizes: list[tuple[int, int]],
    *,
    tile_px: int,
    jpeg_quality: int,
    mpp: float | None,
    mpp_in_description: bool,
    resolution_tags: bool,
    filename: str,
) -> None:
    import tifffile

    width, height = scene.size_px
    n_tile_x, n_tile_y = -(-width // tile_px), -(-height // tile_px)
    chunk_w = max(tile_px, (_CHUNK_AREA_PX // tile_px) // tile_px * tile_px)
    level1 = np.empty((-(-height // _LEVEL_FACTOR), -(-width // _LEVEL_FACTOR), 3), np.uint8)

    def level0_tiles():
        band = np.empty((tile_px, n_tile_x * tile_px, 3), np.uint8)
        for ty in range(n_tile_y):
            y0 = ty * tile_px
            rows_valid = min(tile_px, height - y0)
            for x0 in range(0, band.shape[1], chunk_w):
                cw = min(chunk_w, band.shape[1] - x0)
                band[:, x0:x0 + cw] = scene.render(x0, y0, cw, tile_px)
                cols_valid = min(cw, width - x0)
                if cols_valid > 0:
                    small = _box_mean(band[:rows_valid, x0:x0 + cols_valid], _LEVEL_FACTOR)
                    r0, c0 = y0 // _LEVEL_FACTOR, x0 // _LEVEL_FACTOR
                    level1[r0:r0 + small.shape[0], c0:c0 + small.shape[1]] = small
            for tx in range(n_tile_x):
                yield band[:, tx * tile_px:(tx + 1) * tile_px]
            if ty % 16 == 15:
                logger.debug("synthetic slide: %d / %d tile rows", ty + 1, n_tile_y)

    def description(level: int, size: tuple[int, int]) -> str:
        head = f"{_APERIO_HEADER} \r\n{width}x{height} [0,0 {width}x{height}] ({tile_px}x{tile_px})"
        if level > 0:
            return f"{head} -> {size[0]}x{size[1]} JPEG/RGB Q={jpeg_quality}"
        fields = [f"{head} JPEG/RGB Q={jpeg_quality}"]
        if mpp is not None and mpp_in_description:
            fields += [f"AppMag = {10.0 / mpp:g}", f"MPP = {mpp!r}"]
        fields += [f"Filename = {filename}", "ScanScope ID = WSI-HCC-SYNTH"]
        return "|".join(fields)

    def resolution(size: tuple[int, int]) -> dict:
        if not resolution_tags or mpp is None:
            return {}
        return {
            "resolution": (1e4 / (mpp * width / size[0]), 1e4 / (mpp * height / size[1])),
            "resolutionunit": "CENTIMETER",
        }

    common = {
        "compression": "jpeg",
        "compressionargs": {"level": jpeg_quality},
        "photometric": "rgb",
        "metadata": None,
        "software": "wsi_hcc.synth",
        "maxworkers": 1,
    }
    bigtiff = width * height * 3 >= _BIGTIFF_BYTES
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tw:
        tw.write(
            level0_tiles(), shape=(height, width, 3), dtype=np.uint8, tile=(tile_px, tile_px),
            description=description(0, (width, height)), **resolution((width, height)), **common,
        )
        levels = [level1]
        for size in level_sizes[2:]:
            levels.append(_box_mean_rows(levels[-1], _LEVEL_FACTOR))
            assert levels[-1].shape[1::-1] == size
        # Page 1 is the thumbnail in Aperio files: stripped, not tiled (openslide and tifffile
        # both rely on its position). The smallest level is < 1024 px on its long side.
        thumbnail = levels[-1]
        thumb_h, thumb_w = thumbnail.shape[:2]
        tw.write(
            thumbnail,
            description=f"{_APERIO_HEADER} \r\n{width}x{height} -> {thumb_w}x{thumb_h} - ",
            **common,
        )
        for size, data in zip(level_sizes[1:], levels, strict=False):
            tw.write(
                data, tile=(tile_px, tile_px), description=description(1, size),
                **resolution(size), **common,
            )


def _box_mean_rows(img: np.ndarray, factor: int, rows_per_chunk: int = 1024) -> np.ndarray:
    """`_box_mean` in chunks of rows to bound the temporary memory; same result."""
    rows_per_chunk -= rows_per_chunk % factor
    parts = [
        _box_mean(img[r:r + rows_per_chunk], factor)
        for r in range(0, img.shape[0], rows_per_chunk)
    ]
    return np.concatenate(parts, axis=0)


def _write_png(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(mask).save(path, format="PNG")  # 2-D uint8 -> mode "L"
