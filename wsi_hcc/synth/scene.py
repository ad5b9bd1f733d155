"""Content model of the synthetic slide: tissue, tumour and nuclei as stain densities, to RGB."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from wsi_hcc.synth.noise import (
    _gaussian_blur,
    _hash01,
    _interpolate_points,
    _interpolate_region,
    _px,
    _signed_distance,
    _smooth01,
)
from wsi_hcc.synth.trabeculae import _Trabeculae

# Stain optical-density vectors (Ruifrok & Johnston style), normalised to unit length; RGB order.
_OD_HEMATOXYLIN = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
_OD_EOSIN = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])
_GLASS_RGB = 240.0  # grey level of empty glass
_GLASS_NOISE = 1.5  # +- grey levels of smooth noise on the glass
_SINUSOID_EOSIN_OD = 0.10
_BACKGROUND_HEMATOXYLIN_PER_EOSIN = 0.18  # faint hematoxylin of cytoplasm and stroma

# Tissue and tumour outlines.
_GRID_CELLS = 256  # coarse grid (long side) on which tissue and tumour outlines are drawn
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
# Tumour grade (1 well, 2 moderately, 3 poorly differentiated): larger, darker, more crowded nuclei
# as the grade rises; grade None draws the ungraded defaults above.
_GRADED_TUMOUR = {
    1: {"diameter": (6.5, 8.5), "darkness": (0.8, 1.1), "accept": 0.7},
    2: {"diameter": (8.0, 10.5), "darkness": (1.0, 1.35), "accept": 0.9},
    3: {"diameter": (10.0, 13.0), "darkness": (1.25, 1.65), "accept": 1.0},
}
_MIN_NUCLEUS_DIAMETER_PX = 3.0  # below this, nuclei are drawn as a hematoxylin texture

# Noise lattices (node spacing; rounded to whole pixels, at least 2).
_TEXTURE_FINE_UM = 3.0
_TEXTURE_COARSE_UM = 10.0
_CHROMATIN_UM = 1.5
_GLASS_CELL_PX = 4

# Noise streams: index into the per-seed hash keys.
(_KEY_GLASS, _KEY_TEX_FINE, _KEY_TEX_COARSE, _KEY_CHROMATIN, _KEY_EDGE_TISSUE, _KEY_EDGE_TUMOUR,
 _KEY_CORD_U, _KEY_CORD_V) = range(8)


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
    grade : int or None
        Tumour grade 1-3 (nuclear size, darkness and crowding), or None for the ungraded defaults.
    """

    def __init__(
        self, size_px: tuple[int, int], mpp: float, seed: int, tissue_fraction: float, tumour: bool,
        grade: int | None = None,
    ) -> None:
        graded = _GRADED_TUMOUR[grade] if grade is not None else {}
        self.tumour_diameter_um = graded.get("diameter", _TUMOUR_DIAMETER_UM)
        self.tumour_darkness_od = graded.get("darkness", _TUMOUR_DARKNESS_OD)
        self.tumour_accept = graded.get("accept", _TUMOUR_ACCEPT)
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
            0.5 * self.tumour_diameter_um[1] * px_per_um * math.sqrt(_TUMOUR_ASPECT[1])
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
        keep = draws[3] < t * np.where(is_tumour, self.tumour_accept * in_cord, _NORMAL_ACCEPT)
        is_tumour = is_tumour[keep]

        def pick(
            normal: tuple[float, float], tumour: tuple[float, float], d: np.ndarray
        ) -> np.ndarray:
            lo = np.where(is_tumour, tumour[0], normal[0])
            hi = np.where(is_tumour, tumour[1], normal[1])
            return lo + (hi - lo) * d[keep]

        diameter_px = pick(_NORMAL_DIAMETER_UM, self.tumour_diameter_um, draws[4]) / self.mpp
        aspect = pick(_NORMAL_ASPECT, _TUMOUR_ASPECT, draws[5])
        darkness = pick(_NORMAL_DARKNESS_OD, self.tumour_darkness_od, draws[6])
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
                dense *= np.float32(self.tumour_accept * 0.6 * np.mean(self.tumour_darkness_od))
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
