"""Synthetic H&E whole-slide images with a known tumour mask, for tests and benchmarks.

`write_synthetic_slide` writes an Aperio-style pyramidal JPEG-tiled TIFF (``.svs``) that
openslide and tiffslide both open, a ground-truth label mask PNG and a JSON sidecar with the
parameters. The picture is built from optical densities (Beer-Lambert): eosin stroma with texture,
hematoxylin nuclei, and optional tumour regions whose nuclei are larger, darker and crowded into
trabecular cords separated by pale sinusoids.

Every pixel is a pure function of its level-0 ``(x, y)`` position and the seed: noise comes from
hashing lattice coordinates and nuclei are drawn per fixed block of rows with their own seed, so the
slide is generated in bands of tile rows with bounded memory, no nucleus is cut at a band or tile
seam, and the same arguments always give byte-identical files.

File layout written for ``path = out/slide.svs``::

    out/slide.svs          page 0: level 0, tiled JPEG (YCbCr 4:2:0), Aperio ImageDescription
                           page 1: thumbnail, stripped JPEG (openslide's associated "thumbnail")
                           page 2...: levels at downsample 4, 16, ... (tiled JPEG)
    out/slide.mask.png     uint8 labels, one pixel per ``mask_downsample`` level-0 pixels
    out/slide.synth.json   the parameters, level geometry and label names
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError

__all__ = ["MASK_LABELS", "SyntheticSlide", "write_synthetic_slide"]

logger = logging.getLogger(__name__)

MASK_LABELS: dict[int, str] = {0: "background", 1: "non_tumour", 2: "tumour"}
"""Values of the ground-truth mask PNG and what they mean."""

# Stain optical-density vectors (Ruifrok & Johnston style), normalised to unit length; RGB order.
_OD_HEMATOXYLIN = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
_OD_EOSIN = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])
_GLASS_RGB = 240.0  # grey level of empty glass
_GLASS_NOISE = 1.5  # +- grey levels of smooth noise on the glass
_SINUSOID_EOSIN_OD = 0.10
_BACKGROUND_HEMATOXYLIN_PER_EOSIN = 0.18  # faint hematoxylin of cytoplasm and stroma

_APERIO_HEADER = "Aperio Image Library v12.0.0"
_LEVEL_FACTOR = 4
_MIN_LEVEL_LONG_PX = 1024  # add pyramid levels while the last one is at least this long
_DEFAULT_MPP = 0.25  # physical scale of the content when the slide has no mpp
_GRID_CELLS = 256  # coarse grid (long side) on which tissue and tumour outlines are drawn
_CHUNK_AREA_PX = 1 << 18  # pixels rendered per chunk: keeps float32 temporaries in cache
_BIGTIFF_BYTES = 1 << 31  # uncompressed level-0 size above which BigTIFF is written

# Tissue outline.
_TISSUE_EDGE_UM = 6.0  # width of the soft tissue edge
_EDGE_ROUGHNESS_UM = 25.0  # peak-to-peak jitter of tissue / tumour outlines
_EDGE_ROUGHNESS_CELL_UM = 40.0
_TUMOUR_FRACTION_OF_TISSUE = 0.3

# Nuclei: one candidate per cell of a jittered square grid, thinned by region.
_CELL_UM = 9.0
_NUCLEI_BLOCK_ROWS = 16  # grid rows drawn together from one seed
_JITTER = 0.3  # fraction of a cell
_NORMAL_ACCEPT = 0.25
_TUMOUR_ACCEPT = 0.95
_NORMAL_DIAMETER_UM = (5.5, 7.5)
_TUMOUR_DIAMETER_UM = (7.5, 10.0)
_NORMAL_ASPECT = (1.0, 1.35)
_TUMOUR_ASPECT = (1.0, 1.5)
_NORMAL_DARKNESS_OD = (0.55, 0.8)
_TUMOUR_DARKNESS_OD = (0.95, 1.35)
_MIN_NUCLEUS_DIAMETER_PX = 3.0  # below this, nuclei are drawn as a hematoxylin texture

# Trabecular cords of the tumour: the cells of a Voronoi diagram whose seeds sit on a jittered
# grid that is sparser along the cords than across them, so the cells are elongated, branching
# cords; their borders, widened, are the sinusoids. The grid is slightly warped so cords curve.
_CORD_ACROSS_UM = 36.0  # seed spacing across the cords (cord plus sinusoid)
_CORD_STRETCH = 3.0  # cell length along the cords / across
_CORD_JITTER = 0.35  # fraction of a grid cell
_SINUSOID_HALF_WIDTH_UM = 4.0
_SINUSOID_EDGE_UM = 1.5
_CORD_NUCLEUS_INSET_UM = 4.5  # nucleus centres stay this far inside a cord
_CORD_NODE_UM = 2.0  # the Voronoi distance is computed on this lattice and interpolated
_CORD_WARPS = ((15.0, 400.0), (4.0, 150.0))  # (amplitude_um, wavelength_um)

# Noise lattices (node spacing; rounded to whole pixels, at least 2).
_TEXTURE_FINE_UM = 3.0
_TEXTURE_COARSE_UM = 10.0
_CHROMATIN_UM = 1.5
_GLASS_CELL_PX = 4

# Noise streams: index into the per-seed hash keys.
(_KEY_GLASS, _KEY_TEX_FINE, _KEY_TEX_COARSE, _KEY_CHROMATIN, _KEY_EDGE_TISSUE, _KEY_EDGE_TUMOUR,
 _KEY_CORD_U, _KEY_CORD_V) = range(8)


@dataclass(frozen=True)
class SyntheticSlide:
    """What `write_synthetic_slide` wrote.

    Attributes
    ----------
    path : Path
        The pyramidal TIFF (``.svs`` / ``.tif``).
    mask_path : Path
        Ground-truth labels beside the slide, ``<stem>.mask.png``, uint8 with values
        `MASK_LABELS`; shape ``(ceil(height / mask_downsample), ceil(width / mask_downsample))``.
    size_px : tuple[int, int]
        Level-0 ``(width, height)``.
    mpp : float or None
        The requested microns per pixel (the ground truth the content was drawn at), whether or
        not it was written to the file; None when the slide was made without one.
    mask_downsample : int
        Level-0 pixels per mask pixel along each axis.
    level_downsamples : tuple[int, ...]
        Nominal downsample of each pyramid level: ``(1, 4, 16, ...)``.
    """

    path: Path
    mask_path: Path
    size_px: tuple[int, int]
    mpp: float | None
    mask_downsample: int
    level_downsamples: tuple[int, ...]


def write_synthetic_slide(
    path: str | os.PathLike[str],
    *,
    size_px: tuple[int, int] = (8192, 6144),
    mpp: float | None = 0.25,
    tile_px: int = 256,
    jpeg_quality: int = 90,
    seed: int = 0,
    tissue_fraction: float = 0.6,
    tumour: bool = True,
    mpp_in_description: bool = True,
    resolution_tags: bool = False,
    mask_downsample: int = 32,
) -> SyntheticSlide:
    """Write a synthetic H&E slide as an Aperio-style pyramidal TIFF with a ground-truth mask.

    Parameters
    ----------
    path : str or PathLike
        Output slide, ending in ``.svs``, ``.tif`` or ``.tiff``; parent folders are created. The
        mask ``<stem>.mask.png`` and parameters ``<stem>.synth.json`` are written beside it.
    size_px : tuple[int, int]
        Level-0 ``(width, height)`` in pixels; any positive size (edge tiles are padded).
    mpp : float or None
        Microns per level-0 pixel, 0.05 to 20. None writes no mpp; the content is then drawn at
        0.25 µm/px.
    tile_px : int
        Tile width and height, a multiple of 16 (JPEG 4:2:0 blocks).
    jpeg_quality : int
        JPEG quality, 1 to 100.
    seed : int
        Non-negative seed; the same arguments give byte-identical files.
    tissue_fraction : float
        Approximate fraction of the slide area covered by tissue, in (0, 1].
    tumour : bool
        Draw 1-3 tumour regions (label 2) inside the tissue.
    mpp_in_description : bool
        Write ``MPP =`` (and ``AppMag =``) into the Aperio ImageDescription. False leaves openslide
        without an mpp, to test fallbacks such as ``resolution_tags``.
    resolution_tags : bool
        Also write TIFF XResolution / YResolution in pixels per centimetre (ResolutionUnit
        CENTIMETER) on every level. Needs an mpp.
    mask_downsample : int
        Level-0 pixels per mask pixel, at least 1.

    Returns
    -------
    SyntheticSlide
        Paths and geometry of what was written.

    Raises
    ------
    WsiHccError
        An argument is invalid.

    Notes
    -----
    The pyramid has levels at downsample 1, 4, 16, ... until a level is shorter than 1024 px on
    its long side; level ``k`` has size ``ceil(width / 4**k) x ceil(height / 4**k)`` and each of
    its pixels is the rounded mean of the level-0 pixels it covers (partial blocks at the right and
    bottom edges average the pixels that exist). Tiles are JPEG in YCbCr with 4:2:0 subsampling and
    PhotometricInterpretation YCbCr, which is what tifffile writes for RGB input.
    """
    out = Path(path)
    _validate(
        out, size_px, mpp, tile_px, jpeg_quality, seed, tissue_fraction, resolution_tags,
        mask_downsample,
    )
    width_px, height_px = int(size_px[0]), int(size_px[1])
    mpp = None if mpp is None else float(mpp)
    started = time.perf_counter()
    content_mpp = mpp if mpp is not None else _DEFAULT_MPP
    scene = _Scene(
        (width_px, height_px), content_mpp, int(seed), float(tissue_fraction), bool(tumour)
    )
    level_sizes = _level_sizes((width_px, height_px))
    level_downsamples = tuple(_LEVEL_FACTOR**k for k in range(len(level_sizes)))

    out.parent.mkdir(parents=True, exist_ok=True)
    mask_path = out.with_name(f"{out.stem}.mask.png")
    json_path = out.with_name(f"{out.stem}.synth.json")
    tmp = out.with_name(f".{out.name}.part")
    try:
        _write_tiff(
            tmp, scene, level_sizes, tile_px=int(tile_px), jpeg_quality=int(jpeg_quality),
            mpp=mpp, mpp_in_description=bool(mpp_in_description),
            resolution_tags=bool(resolution_tags), filename=out.stem,
        )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)

    mask = scene.label_mask(int(mask_downsample))
    _write_png(mask_path, mask)
    params = {
        "generator": "wsi_hcc.synth",
        "format_version": 1,
        "slide": out.name,
        "mask": mask_path.name,
        "size_px": [width_px, height_px],
        "mpp": mpp,
        "content_mpp": scene.mpp,
        "tile_px": int(tile_px),
        "jpeg_quality": int(jpeg_quality),
        "seed": int(seed),
        "tissue_fraction": float(tissue_fraction),
        "tumour": bool(tumour),
        "mpp_in_description": bool(mpp_in_description),
        "resolution_tags": bool(resolution_tags),
        "mask_downsample": int(mask_downsample),
        "mask_size_px": [int(mask.shape[1]), int(mask.shape[0])],
        "level_dimensions": [list(s) for s in level_sizes],
        "level_downsamples": list(level_downsamples),
        "labels": {str(k): v for k, v in MASK_LABELS.items()},
    }
    json_path.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    logger.info(
        "wrote synthetic slide %s (%dx%d px, %d levels) in %.1f s",
        out, width_px, height_px, len(level_sizes), time.perf_counter() - started,
    )
    return SyntheticSlide(
        path=out,
        mask_path=mask_path,
        size_px=(width_px, height_px),
        mpp=mpp,
        mask_downsample=int(mask_downsample),
        level_downsamples=level_downsamples,
    )


# --------------------------------------------------------------------------------------------
# validation and geometry


def _validate(
    out: Path,
    size_px: object,
    mpp: object,
    tile_px: object,
    jpeg_quality: object,
    seed: object,
    tissue_fraction: object,
    resolution_tags: object,
    mask_downsample: object,
) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_real(v: object) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    if out.suffix.lower() not in {".svs", ".tif", ".tiff"}:
        raise WsiHccError(f"synthetic slide {out}: name must end in .svs, .tif or .tiff")
    if (
        not isinstance(size_px, (tuple, list))
        or len(size_px) != 2
        or not all(is_int(v) and v > 0 for v in size_px)
    ):
        raise WsiHccError(
            f"size_px must be two positive integers (width, height), got {size_px!r}"
        )
    if mpp is not None and not (is_real(mpp) and math.isfinite(mpp) and 0.05 <= mpp <= 20):
        raise WsiHccError(f"mpp must be between 0.05 and 20 µm/px or None, got {mpp!r}")
    if not (is_int(tile_px) and 16 <= tile_px <= 4096 and tile_px % 16 == 0):
        raise WsiHccError(f"tile_px must be a multiple of 16 between 16 and 4096, got {tile_px!r}")
    if not (is_int(jpeg_quality) and 1 <= jpeg_quality <= 100):
        raise WsiHccError(f"jpeg_quality must be an integer from 1 to 100, got {jpeg_quality!r}")
    if not (is_int(seed) and seed >= 0):
        raise WsiHccError(f"seed must be a non-negative integer, got {seed!r}")
    if not (is_real(tissue_fraction) and 0 < tissue_fraction <= 1):
        raise WsiHccError(f"tissue_fraction must be in (0, 1], got {tissue_fraction!r}")
    if not (is_int(mask_downsample) and mask_downsample >= 1):
        raise WsiHccError(f"mask_downsample must be a positive integer, got {mask_downsample!r}")
    if resolution_tags and mpp is None:
        raise WsiHccError("resolution_tags=True needs an mpp; pass mpp= or resolution_tags=False")


def _level_sizes(size_px: tuple[int, int]) -> list[tuple[int, int]]:
    """Pyramid level sizes ``(width, height)``: /4 per level until the long side is < 1024."""
    sizes = [size_px]
    while max(sizes[-1]) >= _MIN_LEVEL_LONG_PX:
        w, h = sizes[-1]
        sizes.append((-(-w // _LEVEL_FACTOR), -(-h // _LEVEL_FACTOR)))
    return sizes


# --------------------------------------------------------------------------------------------
# lattices: hashed noise and coarse grids, interpolated to pixels
#
# A lattice has a node every `cell` level-0 pixels (an integer) and node (i, j) sits at level-0
# (x, y) = (j, i) * cell; pixel (x, y) has its centre at (x, y). Interpolating a whole region and
# interpolating single points give the same field, which keeps nuclei (drawn from points) and
# stroma (drawn per region) in agreement.


def _lowbias32(x: np.ndarray) -> np.ndarray:
    """Integer hash with good avalanche on uint32 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _hash01(key: np.uint32, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) value per lattice node; float32, shape ``broadcast(rows, cols)``.

    ``rows`` and ``cols`` are int64 node indices (may be negative), broadcastable together.
    """
    r = _lowbias32((rows & 0xFFFFFFFF).astype(np.uint32) ^ key)
    c = (cols & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0x9E3779B1)
    h = _lowbias32(r + c)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def _smooth01(t: np.ndarray) -> np.ndarray:
    """Smoothstep 3t^2 - 2t^3 of values already in [0, 1]."""
    return t * t * (3 - 2 * t)


def _cell_weights(cell: int, smooth: bool) -> np.ndarray:
    """Interpolation weight of the next node at offsets 0 .. cell-1; float32 (cell,)."""
    t = np.arange(cell, dtype=np.float64) / cell
    return (_smooth01(t) if smooth else t).astype(np.float32)


def _interpolate_region(
    nodes: Callable[[np.ndarray, np.ndarray], np.ndarray],
    cell: int,
    smooth: bool,
    x0: int,
    y0: int,
    w: int,
    h: int,
) -> np.ndarray:
    """Interpolate a lattice on the level-0 region at ``(x0, y0)`` of size ``(w, h)``.

    Parameters
    ----------
    nodes : callable
        ``nodes(rows (ny, 1), cols (1, nx))`` -> float32 ``(ny, nx)`` node values (int64 indices).
    cell : int
        Node spacing in level-0 pixels.
    smooth : bool
        Smoothstep weights (value noise) instead of linear ones (bilinear).
    x0, y0, w, h : int
        The region, level-0 pixels.

    Returns
    -------
    np.ndarray
        float32 ``(h, w)``; may be a non-contiguous view.
    """
    j0, i0 = x0 // cell, y0 // cell
    nx = (x0 + w - 1) // cell - j0 + 2
    ny = (y0 + h - 1) // cell - i0 + 2
    values = nodes(np.arange(i0, i0 + ny)[:, None], np.arange(j0, j0 + nx)[None, :])
    weights = _cell_weights(cell, smooth)
    pos = y0 - i0 * cell + np.arange(h)
    r = pos // cell
    rows = values[r]
    rows += (values[r + 1] - rows) * weights[pos % cell][:, None]  # (h, nx)
    off = x0 - j0 * cell
    if cell < 12:
        # Small cells: gather per column (a short trailing axis would make numpy slow).
        cols = off + np.arange(w)
        c = cols // cell
        left = rows[:, c]
        out = rows[:, c + 1] - left
        out *= weights[cols % cell]
        out += left
        return out
    left = rows[:, :-1, None]
    out = (rows[:, 1:, None] - left) * weights
    out += left  # (h, nx - 1, cell)
    return out.reshape(h, (nx - 1) * cell)[:, off:off + w]


def _interpolate_points(
    nodes: Callable[[np.ndarray, np.ndarray], np.ndarray],
    cell: int,
    smooth: bool,
    xs: np.ndarray,
    ys: np.ndarray,
) -> np.ndarray:
    """`_interpolate_region` at level-0 points ``(xs[k], ys[k])``; float64 (n,)."""
    fy, fx = ys / cell, xs / cell
    iy, ix = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    wy, wx = fy - iy, fx - ix
    if smooth:
        wy, wx = _smooth01(wy), _smooth01(wx)
    left = nodes(iy, ix) * (1 - wy) + nodes(iy + 1, ix) * wy
    right = nodes(iy, ix + 1) * (1 - wy) + nodes(iy + 1, ix + 1) * wy
    return left + (right - left) * wx


def _gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a small 2-D float64 array (weights renormalised at edges)."""
    out = a
    for axis in (0, 1):
        i = np.arange(a.shape[axis])
        k = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
        k /= k.sum(axis=1, keepdims=True)
        out = k @ out if axis == 0 else out @ k.T
    return out


def _signed_distance(field: np.ndarray, cell_px: int) -> np.ndarray:
    """Approximate signed distance in level-0 px to the zero level set of a coarse field."""
    gy, gx = np.gradient(field)
    grad = np.hypot(gx, gy)
    grad = np.maximum(grad, 0.1 * float(np.median(grad)) + 1e-12)
    return field / grad * cell_px


def _px(um: float, px_per_um: float) -> int:
    """A noise lattice spacing in whole pixels, at least 2."""
    return max(2, round(um * px_per_um))


class _Trabeculae:
    """Tumour cords and sinusoids: distance to the nearest border of an elongated Voronoi diagram.

    Parameters
    ----------
    rng : np.random.Generator
        Draws the orientation and warps.
    key_u, key_v : np.uint32
        Hash keys of the seed jitter.
    px_per_um : float
        Level-0 pixels per micrometre.
    """

    def __init__(
        self, rng: np.random.Generator, key_u: np.uint32, key_v: np.uint32, px_per_um: float
    ) -> None:
        angle = rng.uniform(0, np.pi)
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.keys = (key_u, key_v)
        self.across_px = _CORD_ACROSS_UM * px_per_um
        self.node_px = max(2, round(_CORD_NODE_UM * px_per_um))
        self.half_width_px = _SINUSOID_HALF_WIDTH_UM * px_per_um
        self.edge_px = _SINUSOID_EDGE_UM * px_per_um
        self.inset_px = _CORD_NUCLEUS_INSET_UM * px_per_um
        warps = []
        for amplitude_um, wavelength_um in _CORD_WARPS:
            direction = rng.uniform(0, 2 * np.pi)
            k = 2 * np.pi / (wavelength_um * px_per_um * rng.uniform(0.8, 1.25))
            warps.append((
                amplitude_um * px_per_um, k * math.cos(direction), k * math.sin(direction),
                rng.uniform(0, 2 * np.pi),
            ))
        self.warps = tuple(warps)

    def _border_distance(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Distance (px) to the nearest cord border at lattice nodes; float32, broadcast shape."""
        x = cols * float(self.node_px)
        y = rows * float(self.node_px)
        u = x * self.cos + y * self.sin  # across the cords
        v = y * self.cos - x * self.sin  # along the cords
        for amplitude, kx, ky, offset in self.warps:
            u = u + amplitude * np.sin(kx * x + ky * y + offset)
        # Voronoi cells of seeds on a jittered square grid in (u, v / stretch): elongated along v.
        v = v * (1 / _CORD_STRETCH)
        iu = np.floor(u / self.across_px).astype(np.int64)
        iv = np.floor(v / self.across_px).astype(np.int64)
        seeds = []
        for dv in range(-2, 3):
            for du in range(-2, 3):
                cu, cv = iu + du, iv + dv
                ju = _CORD_JITTER * (2 * _hash01(self.keys[0], cv, cu) - 1)
                jv = _CORD_JITTER * (2 * _hash01(self.keys[1], cv, cu) - 1)
                seeds.append(
                    ((cu + 0.5 + ju) * self.across_px, (cv + 0.5 + jv) * self.across_px)
                )
        d = [(su - u) ** 2 + (sv - v) ** 2 for su, sv in seeds]
        nearest = np.argmin(np.stack(d), axis=0)
        u1 = np.choose(nearest, [su for su, _ in seeds])
        v1 = np.choose(nearest, [sv for _, sv in seeds])
        d1 = np.choose(nearest, d)
        # Real-space distance to the border of the nearest seed's cell: the closest bisector with
        # another seed. A bisector n.q = c in scaled space q = (u, v / stretch) lies at distance
        # (|q - b|^2 - |q - a|^2) / (2 |(n_u, n_v / stretch)|) in real space, n = b - a.
        border = np.full(d1.shape, np.inf)
        for (su, sv), dj in zip(seeds, d, strict=True):
            gap = (dj - d1) / (2 * np.hypot(su - u1, (sv - v1) * (1 / _CORD_STRETCH)) + 1e-9)
            border = np.where(dj > d1, np.minimum(border, gap), border)
        return border.astype(np.float32)

    def cord_region(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """1 in a cord, 0 in a sinusoid, soft edges, on a level-0 region; float32 (h, w)."""
        d = _interpolate_region(self._border_distance, self.node_px, False, x0, y0, w, h)
        d = d - np.float32(self.half_width_px)
        d *= np.float32(1 / self.edge_px)
        d += np.float32(0.5)
        return np.clip(d, 0, 1, out=d)

    def nucleus_fits(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Whether nucleus centres at level-0 points lie well inside a cord; bool (n,)."""
        d = _interpolate_points(self._border_distance, self.node_px, False, xs, ys)
        return d > self.half_width_px + self.inset_px


class _Scene:
    """Everything that decides the picture; renders any level-0 region on demand.

    Parameters
    ----------
    size_px : tuple[int, int]
        Level-0 ``(width, height)``.
    mpp : float
        Microns per pixel the content is drawn at.
    seed : int
        Non-negative seed.
    tissue_fraction : float
        Target tissue area fraction.
    tumour : bool
        Whether tumour regions exist.
    """

    def __init__(
        self, size_px: tuple[int, int], mpp: float, seed: int, tissue_fraction: float, tumour: bool
    ) -> None:
        self.size_px = size_px
        self.mpp = mpp
        self.seed = seed
        width, height = size_px
        px_per_um = 1.0 / mpp

        # Coarse outlines: signed distance (level-0 px) to the tissue / tumour boundary, on a grid
        # whose node (i, j) sits at (x, y) = (j, i) * grid_px; nodes past the edge are clamped.
        self.grid_px = max(1, math.ceil(max(width, height) / _GRID_CELLS))
        shape = (height - 1) // self.grid_px + 2, (width - 1) // self.grid_px + 2
        self.tissue_dist = self._tissue_distance(shape, tissue_fraction)
        if tumour:
            self.tumour_dist = np.minimum(self._tumour_distance(shape), self.tissue_dist)
        else:
            self.tumour_dist = np.full(shape, -1e9)

        keys = np.random.SeedSequence([seed, 3]).generate_state(8, dtype=np.uint32)
        self.keys = [np.uint32(k) for k in keys]
        self.edge_px = _TISSUE_EDGE_UM * px_per_um
        self.roughness_px = _EDGE_ROUGHNESS_UM * px_per_um
        self.roughness_cell_px = _px(_EDGE_ROUGHNESS_CELL_UM, px_per_um)
        self.tex_fine_px = _px(_TEXTURE_FINE_UM, px_per_um)
        self.tex_coarse_px = _px(_TEXTURE_COARSE_UM, px_per_um)
        self.chromatin_px = _px(_CHROMATIN_UM, px_per_um)

        self.trabeculae = _Trabeculae(
            np.random.default_rng([seed, 2]), self.keys[_KEY_CORD_U], self.keys[_KEY_CORD_V],
            px_per_um,
        )

        # Nuclei.
        self.cell_px = _CELL_UM * px_per_um
        self.nuclei_as_texture = _NORMAL_DIAMETER_UM[0] * px_per_um < _MIN_NUCLEUS_DIAMETER_PX
        self.max_semi_axis_px = (
            0.5 * _TUMOUR_DIAMETER_UM[1] * px_per_um * math.sqrt(_TUMOUR_ASPECT[1])
        )
        self.nuclei_cols = math.ceil(width / self.cell_px) + 2
        # Beyond this distance outside the tissue no stroma and no nucleus can show (the signed
        # distance is only roughly 1-Lipschitz, hence the factor 2).
        self.background_margin_px = 2 * (
            self.edge_px + self.roughness_px + self.max_semi_axis_px + self.grid_px + 2
        )
        self._blocks: OrderedDict[int, tuple[np.ndarray, ...]] = OrderedDict()

    # -- coarse outlines ---------------------------------------------------------------------

    def _inside_nodes(self) -> tuple[slice, slice]:
        """Coarse-grid nodes that lie on the slide."""
        width, height = self.size_px
        return slice(0, (height - 1) // self.grid_px + 1), slice(0, (width - 1) // self.grid_px + 1)

    def _tissue_distance(self, shape: tuple[int, int], tissue_fraction: float) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0])
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
        w_cells, h_cells = self.size_px[0] / self.grid_px, self.size_px[1] / self.grid_px
        field = np.zeros(shape)
        for _ in range(int(rng.integers(2, 5))):
            cx, cy = rng.uniform(0.25, 0.75) * w_cells, rng.uniform(0.25, 0.75) * h_cells
            sx, sy = rng.uniform(0.15, 0.32) * w_cells, rng.uniform(0.15, 0.32) * h_cells
            angle, amplitude = rng.uniform(0, np.pi), rng.uniform(0.7, 1.0)
            u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
            v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
            field += amplitude * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
        noise = _gaussian_blur(rng.standard_normal(shape), max(shape) / 16)
        field += 0.35 * noise / (noise.std() + 1e-12)
        # A rounded window keeps tissue off the slide border.
        r = np.sqrt(((xx / w_cells - 0.5) / 0.5) ** 4 + ((yy / h_cells - 0.5) / 0.5) ** 4)
        field *= _smooth01(np.clip((1 - r) / 0.35, 0, 1))
        inside = field[self._inside_nodes()]
        if tissue_fraction >= 1:
            threshold = float(inside.min()) - 1e-6
        else:
            threshold = float(np.quantile(inside, 1 - tissue_fraction))
        return _signed_distance(field - threshold, self.grid_px)

    def _tumour_distance(self, shape: tuple[int, int]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1])
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
        depth = np.full(shape, -np.inf)
        inside = self._inside_nodes()
        depth[inside] = self.tissue_dist[inside]
        tissue_nodes = np.flatnonzero(depth >= 0)
        if tissue_nodes.size == 0:
            return np.full(shape, -1e9)
        deep = tissue_nodes[depth.flat[tissue_nodes] >= np.quantile(depth.flat[tissue_nodes], 0.6)]
        count = int(rng.integers(1, 4))
        centres = rng.choice(deep, size=count, replace=deep.size < count)
        radius = math.sqrt(_TUMOUR_FRACTION_OF_TISSUE * tissue_nodes.size / (count * math.pi))
        field = np.full(shape, -np.inf)
        for centre in centres:
            cy, cx = divmod(int(centre), shape[1])
            r = max(2.0, radius * rng.uniform(0.75, 1.25))
            aspect, angle = rng.uniform(1.0, 1.6), rng.uniform(0, np.pi)
            u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
            v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
            field = np.maximum(field, 1 - (u * u * aspect + v * v / aspect) / (r * r))
        noise = _gaussian_blur(rng.standard_normal(shape), max(2.0, radius / 3))
        field += 0.15 * noise / (noise.std() + 1e-12)
        return _signed_distance(field, self.grid_px)

    def _grid_nodes(self, grid: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        gh, gw = grid.shape

        def nodes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return grid[np.clip(rows, 0, gh - 1), np.clip(cols, 0, gw - 1)].astype(np.float32)

        return nodes

    def _noise_nodes(self, key: np.uint32) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        return lambda rows, cols: _hash01(key, rows, cols)

    def _soft_inside(
        self, grid: np.ndarray, key: np.uint32, x0: int, y0: int, w: int, h: int
    ) -> tuple[np.ndarray, float]:
        """Soft inside-ness in [0, 1] of a region, float32 (h, w), with a rough outline.

        Also returns the largest signed distance in the region (before roughness); when that is
        below ``-background_margin_px`` the region is outside and the first array is not computed.
        """
        distance = self._grid_nodes(grid)
        d = _interpolate_region(distance, self.grid_px, False, x0, y0, w, h).copy()
        d_max = float(d.max())
        if d_max < -self.background_margin_px:
            return d, d_max
        rough = self._noise_at(key, self.roughness_cell_px, x0, y0, w, h)
        d += rough * np.float32(self.roughness_px)
        d *= np.float32(1 / self.edge_px)
        d += np.float32(0.5 - 0.5 * self.roughness_px / self.edge_px)
        return np.clip(d, 0, 1, out=d), d_max

    def _soft_inside_points(
        self, grid: np.ndarray, key: np.uint32, xs: np.ndarray, ys: np.ndarray
    ) -> np.ndarray:
        """`_soft_inside` at level-0 points ``(xs[k], ys[k])``; float64 (n,)."""
        d = _interpolate_points(self._grid_nodes(grid), self.grid_px, False, xs, ys)
        rough = _interpolate_points(self._noise_nodes(key), self.roughness_cell_px, True, xs, ys)
        d = d + (rough - 0.5) * self.roughness_px
        return np.clip(0.5 + d / self.edge_px, 0, 1)

    def label_mask(self, downsample: int) -> np.ndarray:
        """Ground-truth labels at ``downsample``; uint8 ``(ceil(H/ds), ceil(W/ds))``.

        Each mask pixel takes the label at the centre of the level-0 block it covers.
        """
        width, height = self.size_px
        mw, mh = -(-width // downsample), -(-height // downsample)
        xs = np.clip((np.arange(mw) + 0.5) * downsample - 0.5, 0, width - 1)
        ys = np.clip((np.arange(mh) + 0.5) * downsample - 0.5, 0, height - 1)
        xx, yy = np.meshgrid(xs, ys)
        labels = np.zeros((mh, mw), np.uint8)
        for value, grid in ((1, self.tissue_dist), (2, self.tumour_dist)):
            nodes = self._grid_nodes(grid)
            d = _interpolate_points(nodes, self.grid_px, False, xx.ravel(), yy.ravel())
            labels[(d >= 0).reshape(mh, mw)] = value
        return labels

    # -- nuclei --------------------------------------------------------------------------------

    def _nuclei_block(self, block: int) -> tuple[np.ndarray, ...]:
        """Nuclei of one block of grid rows: x, y, semi-axes a, b (px), angle, darkness (OD)."""
        cached = self._blocks.get(block)
        if cached is not None:
            self._blocks.move_to_end(block)
            return cached
        rng = np.random.default_rng([self.seed, 4, block + 1])
        rows = block * _NUCLEI_BLOCK_ROWS + np.arange(_NUCLEI_BLOCK_ROWS)
        cols = np.arange(-1, self.nuclei_cols - 1)
        r, c = np.meshgrid(rows, cols, indexing="ij")
        draws = rng.random((8, r.size))
        x = (c.ravel() + 0.5 + _JITTER * (2 * draws[0] - 1)) * self.cell_px
        y = (r.ravel() + 0.5 + _JITTER * (2 * draws[1] - 1)) * self.cell_px
        t = self._soft_inside_points(self.tissue_dist, self.keys[_KEY_EDGE_TISSUE], x, y)
        u = self._soft_inside_points(self.tumour_dist, self.keys[_KEY_EDGE_TUMOUR], x, y)
        is_tumour = draws[2] < u
        in_cord = self.trabeculae.nucleus_fits(x, y)
        keep = draws[3] < t * np.where(is_tumour, _TUMOUR_ACCEPT * in_cord, _NORMAL_ACCEPT)
        is_tumour = is_tumour[keep]

        def pick(
            normal: tuple[float, float], tumour: tuple[float, float], d: np.ndarray
        ) -> np.ndarray:
            lo = np.where(is_tumour, tumour[0], normal[0])
            hi = np.where(is_tumour, tumour[1], normal[1])
            return lo + (hi - lo) * d[keep]

        diameter_px = pick(_NORMAL_DIAMETER_UM, _TUMOUR_DIAMETER_UM, draws[4]) / self.mpp
        aspect = pick(_NORMAL_ASPECT, _TUMOUR_ASPECT, draws[5])
        darkness = pick(_NORMAL_DARKNESS_OD, _TUMOUR_DARKNESS_OD, draws[6])
        result = (
            x[keep],
            y[keep],
            0.5 * diameter_px * np.sqrt(aspect),
            0.5 * diameter_px / np.sqrt(aspect),
            np.pi * draws[7][keep],
            darkness,
        )
        self._blocks[block] = result
        while len(self._blocks) > 8:
            self._blocks.popitem(last=False)
        return result

    def _nuclei_layer(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Nuclear hematoxylin OD (before chromatin texture) on a region; float32 (h, w)."""
        layer = np.zeros((h, w), np.float32)
        margin = self.max_semi_axis_px + 2
        block_px = _NUCLEI_BLOCK_ROWS * self.cell_px
        first = max(-1, math.floor((y0 - margin) / block_px) - 1)
        last = math.floor((y0 + h + margin) / block_px) + 1
        parts = [self._nuclei_block(b) for b in range(first, last + 1)]
        x, y, a, b, angle, dark = (np.concatenate(p) for p in zip(*parts, strict=True))
        sel = (x > x0 - margin) & (x < x0 + w + margin) & (y > y0 - margin) & (y < y0 + h + margin)
        if not sel.any():
            return layer
        x, y, a, b, angle, dark = x[sel], y[sel], a[sel], b[sel], angle[sel], dark[sel]
        size = 2 * math.ceil(self.max_semi_axis_px) + 3
        ox = np.floor(x).astype(np.int64) - size // 2
        oy = np.floor(y).astype(np.int64) - size // 2
        span = np.arange(size)
        batch = max(1, (1 << 21) // (size * size))  # nuclei per vectorised batch
        for start in range(0, x.size, batch):
            s = slice(start, start + batch)
            dx = (ox[s, None] + span - x[s, None]).astype(np.float32)[:, None, :]  # (n, 1, size)
            dy = (oy[s, None] + span - y[s, None]).astype(np.float32)[:, :, None]  # (n, size, 1)
            cos = np.cos(angle[s]).astype(np.float32)[:, None, None]
            sin = np.sin(angle[s]).astype(np.float32)[:, None, None]
            aa = a[s].astype(np.float32)[:, None, None]
            bb = b[s].astype(np.float32)[:, None, None]
            q = 1 - ((dx * cos + dy * sin) / aa) ** 2 - ((dy * cos - dx * sin) / bb) ** 2
            # q * b / 2 approximates the distance to the outline in px: a 1 px soft edge.
            q *= 0.5 * bb
            q += np.float32(0.5)
            np.clip(q, 0, 1, out=q)
            q *= dark[s].astype(np.float32)[:, None, None]
            for i in range(q.shape[0]):
                k = start + i
                c0, r0 = int(ox[k]) - x0, int(oy[k]) - y0
                ca, ra = max(c0, 0), max(r0, 0)
                cb, rb = min(c0 + size, w), min(r0 + size, h)
                if ca >= cb or ra >= rb:
                    continue
                view = layer[ra:rb, ca:cb]
                np.maximum(view, q[i, ra - r0:rb - r0, ca - c0:cb - c0], out=view)
        return layer

    # -- rendering ----------------------------------------------------------------------------

    def _noise_at(self, key: np.uint32, cell: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Value noise in [0, 1] on a level-0 region; float32 (h, w)."""
        return _interpolate_region(self._noise_nodes(key), cell, True, x0, y0, w, h)

    def _noise(self, key_index: int, cell: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        return self._noise_at(self.keys[key_index], cell, x0, y0, w, h)

    def render(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """RGB of the level-0 region at ``(x0, y0)`` of size ``(w, h)``; uint8 (h, w, 3).

        The region may extend past the slide (used for edge-tile padding).
        """
        glass = self._noise(_KEY_GLASS, _GLASS_CELL_PX, x0, y0, w, h)
        glass = glass * np.float32(2 * _GLASS_NOISE) + np.float32(_GLASS_RGB - _GLASS_NOISE + 0.5)
        t, d_max = self._soft_inside(self.tissue_dist, self.keys[_KEY_EDGE_TISSUE], x0, y0, w, h)
        if d_max < -self.background_margin_px:  # no tissue and no nucleus reaches here
            return _stain_to_rgb(glass, None, None)

        tex = self._noise(_KEY_TEX_FINE, self.tex_fine_px, x0, y0, w, h) * np.float32(0.6)
        tex += self._noise(_KEY_TEX_COARSE, self.tex_coarse_px, x0, y0, w, h) * np.float32(0.4)
        eosin = tex * np.float32(0.22)
        eosin += np.float32(0.30)
        u, u_max = self._soft_inside(self.tumour_dist, self.keys[_KEY_EDGE_TUMOUR], x0, y0, w, h)
        has_tumour = u_max >= -self.background_margin_px and bool(u.any())
        if has_tumour:
            cord = self.trabeculae.cord_region(x0, y0, w, h)
            cord_eosin = tex * np.float32(0.26)
            cord_eosin += np.float32(0.34 - _SINUSOID_EOSIN_OD)
            cord_eosin *= cord
            cord_eosin += np.float32(_SINUSOID_EOSIN_OD)
            cord_eosin -= eosin
            cord_eosin *= u
            eosin += cord_eosin
        eosin *= t
        hema = eosin * np.float32(_BACKGROUND_HEMATOXYLIN_PER_EOSIN)

        if self.nuclei_as_texture:
            nuclei = t * np.float32(_NORMAL_ACCEPT * 0.3 * np.mean(_NORMAL_DARKNESS_OD))
            if has_tumour:
                dense = t * cord
                dense *= np.float32(_TUMOUR_ACCEPT * 0.6 * np.mean(_TUMOUR_DARKNESS_OD))
                dense -= nuclei
                dense *= u
                nuclei += dense
        else:
            nuclei = self._nuclei_layer(x0, y0, w, h)
        chromatin = self._noise(_KEY_CHROMATIN, self.chromatin_px, x0, y0, w, h)
        chromatin = chromatin * np.float32(0.6)
        chromatin += np.float32(0.7)
        nuclei *= chromatin
        hema += nuclei
        return _stain_to_rgb(glass, hema, eosin)


def _stain_to_rgb(
    glass: np.ndarray, hema: np.ndarray | None, eosin: np.ndarray | None
) -> np.ndarray:
    """Beer-Lambert: RGB = glass * exp(-(H h + E e)), rounded.

    Parameters
    ----------
    glass : np.ndarray
        float32 ``(h, w)``: the empty-glass grey level plus 0.5 (for rounding).
    hema, eosin : np.ndarray or None
        float32 ``(h, w)`` hematoxylin and eosin optical densities; None for bare glass.

    Returns
    -------
    np.ndarray
        uint8 ``(h, w, 3)``.
    """
    out = np.empty((*glass.shape, 3), np.uint8)
    if hema is None:
        out[...] = glass[:, :, None]
        return out
    for c in range(3):
        od = hema * np.float32(-_OD_HEMATOXYLIN[c])
        od += eosin * np.float32(-_OD_EOSIN[c])
        np.exp(od, out=od)
        od *= glass
        out[:, :, c] = od  # glass holds +0.5, so truncation rounds
    return out


# --------------------------------------------------------------------------------------------
# pyramid and file writing


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
