"""Stain normalisation in torch: the Macenko and Reinhard maps of :mod:`wsi_hcc.stain` for uint8 RGB
tensors on the CPU or a CUDA GPU, a whole batch in one vectorised pass.

Reached through the normalisers of ``wsi_hcc.stain``: their ``fit`` and ``transform`` hand a
``torch.Tensor`` here, so both paths share one fitted reference and one ``to_dict()``. Tensors are
channels last, ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8, like the numpy arrays (tiles come out of
the readers that way; a model's NCHW view is one ``permute`` away), and results come back as
uint8 tensors of the same shape on the same device. Other devices are refused: the stain
estimate needs float64 linear algebra, which MPS lacks.

Each step follows the numpy path: the same optical-density and sRGB tables, tissue tests, numpy's
percentile interpolation, OpenCV's CIELAB constants. What remains is float rounding, so outputs
agree with the numpy path to a grey level (tests/test_stain_torch.py).

Inside, pixels are held as channel planes ``(3, N, P)``: every per-channel step then reads and
writes contiguous memory, and piecewise curves are written with clamps rather than masks
(``torch.where`` on CPU costs several times a clamp).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from wsi_hcc.stain import cielab
from wsi_hcc.stain.common import MIN_TISSUE_PIXELS, StainError

__all__ = ["check_rgb", "macenko_fit", "macenko_transform", "reinhard_fit", "reinhard_transform"]


def check_rgb(rgb: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(N, H, W, 3)`` view of uint8 RGB, and whether the input was a single image."""
    if rgb.dtype != torch.uint8 or rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
        hint = ""
        if rgb.ndim in (3, 4) and rgb.shape[-3] == 3:
            hint = " (tensors are channels last: permute NCHW with x.permute(0, 2, 3, 1))"
        raise StainError(f"expected uint8 RGB of shape (H, W, 3) or (N, H, W, 3), got {rgb.dtype} "
                         f"{tuple(rgb.shape)}{hint}")
    if rgb.device.type not in ("cpu", "cuda"):  # the stain estimate needs float64 linear algebra
        raise StainError(f"stain normalisation runs on CPU and CUDA tensors, got one on {rgb.device}; "
                         "move it with .cpu()")
    return (rgb[None], True) if rgb.ndim == 3 else (rgb, False)


def _chunk_pixels(device: torch.device) -> int:
    # On a GPU, 256 tiles of 256 px at a time: float work tensors of about 200 MB, so a large
    # batch cannot exhaust its memory. On a CPU, 4 tiles: the work tensors then stay in cache
    # (Reinhard ran twice as fast as with 64-tile chunks).
    return 1 << 24 if device.type != "cpu" else 1 << 18


def _by_chunks(batch: torch.Tensor, normalize) -> torch.Tensor:
    """``normalize`` applied to ``(n, P, 3)`` pixel chunks of ``batch`` (N, H, W, 3)."""
    n_images, height, width, _ = batch.shape
    per_chunk = max(1, _chunk_pixels(batch.device) // max(1, height * width))
    pixels = batch.reshape(n_images, height * width, 3)
    out = torch.empty_like(pixels)
    for start in range(0, n_images, per_chunk):
        out[start:start + per_chunk] = normalize(pixels[start:start + per_chunk])
    return out.reshape(batch.shape)


def _planes(pixels: torch.Tensor) -> torch.Tensor:
    """``(n, P, 3)`` to contiguous channel planes ``(3, n, P)``."""
    return pixels.permute(2, 0, 1).contiguous()


def _lookup(table: np.ndarray, planes: torch.Tensor) -> torch.Tensor:
    """``table[planes]`` for a 256-entry float32 table and uint8 planes (index_select on the flat
    values is several times faster than advanced indexing on CPU)."""
    values = torch.as_tensor(table, device=planes.device)
    return values.index_select(0, planes.reshape(-1).int()).reshape(planes.shape)


def _keep_glass(normalized: torch.Tensor, pixels: torch.Tensor, has_tissue: torch.Tensor) -> torch.Tensor:
    """Images without tissue have nothing to map: they come back as they were."""
    glass = ~has_tissue
    if bool(glass.any()):  # one wait on the GPU; rare, and cheaper than a full torch.where
        normalized[glass] = pixels[glass]
    return normalized


def _mix_constant(planes: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """``matrix`` (K, 3) times channel planes (3, ...): planes (K, ...).

    Multiply-adds rather than a matmul: a 3-long inner dimension gains nothing from one, and on
    CUDA a float32 matmul may run in TF32 (``allow_tf32``), which would cost grey levels.
    """
    out = planes.new_empty((len(matrix), *planes.shape[1:]))
    for row, weights in zip(out, np.asarray(matrix, dtype=np.float64)):
        torch.mul(planes[0], float(weights[0]), out=row)
        row.add_(planes[1], alpha=float(weights[1])).add_(planes[2], alpha=float(weights[2]))
    return out


def _mix_per_image(planes: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """One matrix per image, ``matrices`` (n, K, 3), times planes (3, n, S): planes (K, n, S)."""
    out = planes.new_empty((matrices.shape[1], *planes.shape[1:]))
    for k, row in enumerate(out):
        torch.mul(planes[0], matrices[:, k, 0, None], out=row)
        row.addcmul_(planes[1], matrices[:, k, 1, None]).addcmul_(planes[2], matrices[:, k, 2, None])
    return out


def _percentile(values: torch.Tensor, valid: torch.Tensor, q: float, weak: bool) -> torch.Tensor:
    """Per-row ``q``-th percentile of ``values`` (B, S) over the entries where ``valid`` holds.

    Numpy's "linear" method, interpolated as numpy does: in float64 for ``weak=False`` (numpy
    given a list of percentiles), in the values' float32 for ``weak=True`` (given one scalar).
    Only the few order statistics needed are ranked (topk from the nearer end, with invalid
    entries pushed beyond the far end), and ``k`` depends on the row length alone, so nothing
    waits on the GPU.
    """
    counts = valid.sum(1).clamp_min(1)
    position = (counts - 1).double() * (q / 100)
    below = position.floor()
    gamma = position - below
    below = below.long()
    above = torch.minimum(below + 1, counts - 1)
    length = values.shape[1]
    if q <= 50:
        k = min(length, math.floor(q / 100 * (length - 1)) + 2)
        ranked = values.masked_fill(~valid, math.inf).topk(k, dim=1, largest=False).values
        first, second = below, above
    else:
        k = min(length, math.ceil((1 - q / 100) * (length - 1)) + 2)
        ranked = values.masked_fill(~valid, -math.inf).topk(k, dim=1, largest=True).values
        first, second = counts - 1 - below, counts - 1 - above
    a = ranked.gather(1, first.clamp(0, k - 1)[:, None])[:, 0]
    b = ranked.gather(1, second.clamp(0, k - 1)[:, None])[:, 0]
    step = b - a
    if weak:
        gamma_low, gamma_high = gamma.to(values.dtype), (1 - gamma).to(values.dtype)
    else:
        a, b, step, gamma_low, gamma_high = a.double(), b.double(), step.double(), gamma, 1 - gamma
    return torch.where(gamma >= 0.5, b - step * gamma_high, a + step * gamma_low)


# --- Macenko -------------------------------------------------------------------------------------


def _macenko_estimate(normalizer, od: torch.Tensor, subsample: bool):
    """Per-image stain matrices (n, 3, 2) float64, 99th-percentile concentrations (n, 2)
    float32, and tissue pixel counts (n,), from optical-density planes ``od`` (3, n, P).

    Images with too little tissue get numbers from all their pixels (so every step stays finite
    and no linear algebra fails); their counts tell the caller to discard them.
    """
    length = od.shape[2]
    if subsample and normalizer.estimate_pixels and length > normalizer.estimate_pixels:
        od = od[:, :, ::-(-length // normalizer.estimate_pixels)].contiguous()
    # OD falls as the value rises: a pixel is tissue in every channel iff its brightest channel is.
    is_tissue = od.amin(0) >= normalizer.beta
    counts = is_tissue.sum(1)
    used = is_tissue | (counts < MIN_TISSUE_PIXELS)[:, None]
    plane = _stain_plane(od, used)
    projected = _mix_per_image(od, plane.transpose(1, 2).float())
    angles = torch.atan2(projected[1], projected[0])
    low = _percentile(angles, used, normalizer.alpha, weak=False)
    high = _percentile(angles, used, 100 - normalizer.alpha, weak=False)
    v_low = (plane * torch.stack([low.cos(), low.sin()], -1)[:, None]).sum(-1)
    v_high = (plane * torch.stack([high.cos(), high.sin()], -1)[:, None]).sum(-1)
    # Hematoxylin absorbs red most: the vector with the larger red component comes first.
    hematoxylin_low = (v_low[:, 0] > v_high[:, 0])[:, None]
    stains = torch.stack([torch.where(hematoxylin_low, v_low, v_high),
                          torch.where(hematoxylin_low, v_high, v_low)], -1)
    concentrations = _mix_per_image(od, torch.linalg.pinv(stains).float())
    over = used if normalizer.mask_background else torch.ones_like(used)
    n_images, sampled = over.shape
    max_c = _percentile(concentrations.reshape(2 * n_images, sampled),
                        over[None].expand(2, n_images, sampled).reshape(2 * n_images, sampled), 99, weak=True)
    return stains, max_c.reshape(2, n_images).T, counts


def _stain_plane(od: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """The two leading eigenvectors (n, 3, 2), float64, of the covariance of the used OD pixels."""
    weights = used.double()
    n = weights.sum(1)
    od64 = od.double()
    mean = (od64 * weights).sum(-1) / n
    centered = (od64 - mean[..., None]) * weights
    by_image = centered.permute(1, 0, 2)
    covariance = by_image @ by_image.transpose(1, 2) / (n - 1).clamp_min(1)[:, None, None]
    plane = torch.linalg.eigh(covariance).eigenvectors[..., 1:3]
    # Either sign is an eigenvector: point both axes towards the mean OD, as the numpy path
    # does, so that LAPACK and cuSOLVER give the same stains on any image.
    towards_mean = (mean.T[..., None] * plane).sum(1)
    return plane * torch.where(towards_mean < 0, -1.0, 1.0)[:, None]


def macenko_fit(normalizer, reference: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Reference stain matrix (3, 2) and concentrations (2,) from every pixel of ``reference``."""
    batch, _ = check_rgb(reference)
    od = _lookup(normalizer._od_table, _planes(batch.reshape(1, -1, 3)))
    stains, max_c, counts = _macenko_estimate(normalizer, od, subsample=False)
    if int(counts[0]) < MIN_TISSUE_PIXELS:
        raise StainError(f"the reference has no tissue ({int(counts[0])} pixels above optical density "
                         f"{normalizer.beta}); use an image with stained tissue")
    return stains[0].cpu().numpy(), max_c[0].double().cpu().numpy()


def macenko_transform(normalizer, rgb: torch.Tensor) -> torch.Tensor:
    batch, single = check_rgb(rgb)
    out = _by_chunks(batch, lambda pixels: _macenko_chunk(normalizer, pixels))
    return out[0] if single else out


def _macenko_chunk(normalizer, pixels: torch.Tensor) -> torch.Tensor:
    od = _lookup(normalizer._od_table, _planes(pixels))
    stains, max_c, counts = _macenko_estimate(normalizer, od, subsample=True)
    reference_stains = torch.as_tensor(normalizer.stain_matrix, dtype=torch.float64, device=pixels.device)
    reference_max = torch.as_tensor(normalizer.max_concentrations, dtype=torch.float64, device=pixels.device)
    # Unmix with the image's stains, rescale, remix with the reference's: one 3x3 map of OD, and
    # the output's log is that map plus log(io).
    unmix = torch.linalg.pinv(stains) * (reference_max / max_c.double())[..., None]
    remix = -(reference_stains @ unmix)
    rebuilt = _mix_per_image(od, remix.float()).add_(float(np.float32(math.log(normalizer.io))))
    rebuilt = rebuilt.exp_().clamp_max_(255).to(torch.uint8)  # truncates, as the numpy path does
    return _keep_glass(rebuilt.permute(1, 2, 0), pixels, counts >= MIN_TISSUE_PIXELS)


# --- Reinhard ------------------------------------------------------------------------------------


def _lab_stats(normalizer, planes: torch.Tensor, lab: torch.Tensor):
    """Per-image L*a*b* means and population standard deviations (3, n), float64, over tissue
    (or every pixel without ``mask_background``), and whether each image had enough tissue."""
    n_images, length = planes.shape[1:]
    if normalizer.mask_background:
        is_tissue = planes.amin(0) < normalizer.white_threshold
        counts = is_tissue.sum(1)
        has_tissue = counts >= MIN_TISSUE_PIXELS
        # All pixels where there is no tissue, so that every number stays finite.
        weights = (is_tissue | ~has_tissue[:, None]).float()
        n = torch.where(has_tissue, counts, length).double()
    else:
        weights = None
        has_tissue = torch.ones(n_images, dtype=torch.bool, device=planes.device)
        n = torch.full((n_images,), float(length), dtype=torch.float64, device=planes.device)
    # Sums in float64, as OpenCV's meanStdDev accumulates; they also keep the statistics the same
    # however a GPU splits the reduction, so a batch gives the pixels of its images one by one.
    # Two passes (mean, then the spread about it) lose nothing to cancellation.
    masked = lab if weights is None else lab * weights
    means = masked.sum(-1, dtype=torch.float64) / n
    deviations = (lab - means.float()[..., None]).square_()
    if weights is not None:
        deviations.mul_(weights)
    stds = (deviations.sum(-1, dtype=torch.float64) / n).sqrt()
    return means, stds, has_tissue


def reinhard_fit(normalizer, reference: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Reference L*a*b* means and standard deviations (3,), float64, from ``reference``'s tissue."""
    batch, _ = check_rgb(reference)
    planes = _planes(batch.reshape(1, -1, 3))
    means, stds, has_tissue = _lab_stats(normalizer, planes, rgb_to_lab(planes))
    if not bool(has_tissue[0]):
        raise StainError(f"the reference has no tissue (every pixel is brighter than "
                         f"{normalizer.white_threshold}); use an image with stained tissue")
    return means[:, 0].cpu().numpy(), stds[:, 0].cpu().numpy()


def reinhard_transform(normalizer, rgb: torch.Tensor) -> torch.Tensor:
    batch, single = check_rgb(rgb)
    out = _by_chunks(batch, lambda pixels: _reinhard_chunk(normalizer, pixels))
    return out[0] if single else out


def _reinhard_chunk(normalizer, pixels: torch.Tensor) -> torch.Tensor:
    planes = _planes(pixels)
    lab = rgb_to_lab(planes)
    means, stds, has_tissue = _lab_stats(normalizer, planes, lab)
    reference_means = torch.as_tensor(normalizer.means, dtype=torch.float64, device=pixels.device)
    reference_stds = torch.as_tensor(normalizer.stds, dtype=torch.float64, device=pixels.device)
    # lab' = (lab - mean) * scale + reference mean, per image and channel.
    scale = reference_stds[:, None] / stds.clamp_min(1e-6)
    offset = reference_means[:, None] - means * scale
    lab.mul_(scale.float()[..., None]).add_(offset.float()[..., None])
    return _keep_glass(lab_to_rgb(lab).permute(1, 2, 0), pixels, has_tissue)


# --- CIELAB (sRGB, D65), with OpenCV's constants (from wsi_hcc.stain.cielab) ---------------------------
# The piecewise curves of CIELAB and sRGB are continuous, so each is written as the curve at
# max(x, knee) plus the linear piece's slope times min(x - knee, 0): two clamps instead of a
# mask. With OpenCV's rounded constants the pieces meet to within 4e-7.


def rgb_to_lab(planes: torch.Tensor) -> torch.Tensor:
    """uint8 sRGB planes (3, ...) to float32 L* [0, 100], a*, b* planes (3, ...)."""
    # XYZ relative to the white point, as OpenCV folds it into the matrix.
    xyz = _mix_constant(_lookup(cielab.SRGB_TO_LINEAR, planes), cielab.XYZ_FROM_RGB / cielab.WHITE[:, None])
    linear_piece = (xyz - cielab.T_KNEE).clamp_max_(0).mul_(cielab.SLOPE)
    f = xyz.clamp_min_(cielab.T_KNEE).log_().div_(3).exp_().add_(linear_piece)  # cube root, in place
    lab = torch.empty_like(f)
    # L* = 116 f(Y) - 16 holds on the linear piece too (116 * 7.787 = 903.3, OpenCV's slope).
    torch.mul(f[1], 116, out=lab[0]).sub_(16)
    torch.sub(f[0], f[1], out=lab[1]).mul_(500)
    torch.sub(f[1], f[2], out=lab[2]).mul_(200)
    return lab


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """float32 L*, a*, b* planes (3, ...) to uint8 sRGB planes (3, ...), clipped and rounded as
    the numpy path does."""
    f = torch.empty_like(lab)
    torch.add(lab[0], 16, out=f[1]).div_(116)
    torch.add(f[1], lab[1], alpha=1 / 500, out=f[0])
    torch.sub(f[1], lab[2], alpha=1 / 200, out=f[2])
    linear_piece = (f.clamp_max(cielab.F_KNEE) - cielab.F_KNEE).div_(cielab.SLOPE)
    xyz = f.clamp_min_(cielab.F_KNEE).pow_(3).add_(linear_piece)
    linear = _mix_constant(xyz, cielab.RGB_FROM_XYZ * cielab.WHITE[None, :]).clamp_(0, 1)
    linear_piece = (linear.clamp_max(cielab.GAMMA_KNEE) - cielab.GAMMA_KNEE).mul_(12.92)
    encoded = linear.clamp_min_(cielab.GAMMA_KNEE).log_().div_(2.4).exp_().mul_(1.055).sub_(0.055).add_(linear_piece)
    return encoded.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)  # truncates: rounds half up
