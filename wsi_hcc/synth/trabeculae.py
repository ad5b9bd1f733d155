"""Tumour trabeculae: cords and pale sinusoids from an elongated Voronoi diagram."""

from __future__ import annotations

import math

import numpy as np

from wsi_hcc.synth.noise import _hash01, _interpolate_points, _interpolate_region

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
