"""Low-count PET simulation at a dose-reduction factor (DRF): a fast image-domain route and a sinogram route.

Fast image-domain route (training-time augmentation, tests)::

    x_ld = x + G_sigma * (Poisson(x * c / DRF) * DRF / c - x)

``x`` is the activity (any unit, >= 0), ``c`` the expected counts per voxel per unit of activity at DRF 1 and
``G_sigma`` a normalised discrete 3D Gaussian (the reconstruction's noise correlation). In a uniform region of
activity ``a`` the relative noise std is ``sqrt(DRF / (c * a) * sum(k**2))`` where ``sum(k**2)`` is the squared-norm
of the discrete kernel: it grows like ``sqrt(DRF)``, as the OSEM calibration targets of docs/physics.md do
(2.3 / 4.6 / 7.2 / 10.1 / 15.8 / 22.1 % at DRF 1 / 4 / 10 / 20 / 50 / 100). :func:`calibrate_count_scale` solves for
``c``. The mean is preserved exactly (``E[Poisson(x c / DRF) DRF / c] = x``). The output is NOT clipped: it can be
slightly negative in cold voxels next to hot ones (the smoothed zero-mean noise leaks into them); clipping would bias
the mean. Voxels with ``x == 0`` everywhere in the kernel's reach stay exactly 0. Negative input voxels are treated as
0 for the Poisson rate (and keep their value plus the noise leaking from their neighbours).
The route treats ``x`` as noise-free; to degrade a real full-dose image (already at the DRF-1 noise level) to DRF
``D`` pass ``drf = D - 1`` (variances add), for ``D >= 2``.

Sinogram route (data preparation; :func:`simulate_low_count_pet_sinogram`), per axial slice in 2D:
in-plane PSF blur, attenuation factors ``exp(-R mu)``, expected trues ``scale * atten * R(G x) / DRF``, a flat
randoms sinogram and a smooth scatter sinogram (given fractions of the trues), Poisson, then OSEM with the same
system model (PSF, attenuation, randoms + scatter as known additive terms). Because the OSEM system model contains
``scale / DRF``, the image comes out directly in the activity unit of the input: the mean over a large uniform
region is unbiased (up to the few-% convergence effects of early-stopped OSEM near edges).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import InputDataError
from .projector import square_canvas_size, system_matrix, uniform_angles_deg

__all__ = [
    "MEASURED_OSEM_REL_NOISE",
    "PETScanner",
    "calibrate_count_scale",
    "check_drf",
    "gaussian_kernel_1d",
    "noise_std_reduction",
    "simulate_low_count_pet_fast",
    "simulate_low_count_pet_fast_torch",
    "simulate_low_count_pet_sinogram",
]

# Relative noise std (fraction of the mean) measured in a brain phantom after OSEM, by DRF (docs/physics.md).
MEASURED_OSEM_REL_NOISE: dict[int, float] = {1: 0.023, 4: 0.046, 10: 0.072, 20: 0.101, 50: 0.158, 100: 0.221}

_SLAB_ELEMENTS = 1 << 23  # sinogram route: slices reconstructed together (N * N * z voxels), bounds memory
_TRUNCATE = 4.0  # Gaussian kernels are cut at 4 sigma (as scipy.ndimage.gaussian_filter)


def check_drf(drf: float) -> float:
    """Return ``drf`` as a float if it is a dose-reduction factor >= 1, else raise ValueError."""
    try:
        value = float(drf)
    except (TypeError, ValueError):
        raise ValueError(f"drf must be a number >= 1 (dose-reduction factor), got {drf!r}") from None
    if not (math.isfinite(value) and value >= 1.0):
        raise ValueError(f"drf must be a dose-reduction factor >= 1 (e.g. 20 for 5 % of the counts), got {drf!r}")
    return value


def _check_sigma(sigma_vox: float) -> float:
    if not (math.isfinite(sigma_vox) and sigma_vox >= 0):
        raise ValueError(f"sigma_vox must be >= 0 voxels, got {sigma_vox}")
    return float(sigma_vox)


def _check_count_scale(count_scale: float) -> float:
    if not (math.isfinite(count_scale) and count_scale > 0):
        raise ValueError(f"count_scale must be > 0 (counts per voxel per activity unit), got {count_scale}")
    return float(count_scale)


def gaussian_kernel_1d(sigma_vox: float, truncate: float = _TRUNCATE) -> np.ndarray:
    """Normalised sampled Gaussian, radius ``int(truncate * sigma + 0.5)`` (scipy's kernel); ``[1.]`` if sigma 0."""
    sigma_vox = _check_sigma(sigma_vox)
    if sigma_vox == 0:
        return np.ones(1)
    radius = int(truncate * sigma_vox + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma_vox) ** 2)
    return kernel / kernel.sum()


def noise_std_reduction(sigma_vox: float, ndim: int = 3) -> float:
    """Factor by which the separable discrete Gaussian divides the std of white noise: ``sqrt(sum(k**2))**ndim``.

    For sigma >~ 1 it approaches the continuous value ``1 / sqrt(8 * pi**1.5 * sigma**3)`` (3D).
    """
    k = gaussian_kernel_1d(sigma_vox)
    return float(np.sqrt(np.sum(k**2)) ** ndim)


def calibrate_count_scale(reference_activity: float, rel_noise_at_drf1: float = 0.023, sigma_vox: float = 1.0) -> float:
    """Counts per voxel per activity unit ``c`` of the fast route giving ``rel_noise_at_drf1`` at DRF 1.

    In a uniform region of activity ``reference_activity`` the fast route's relative noise std is
    ``noise_std_reduction(sigma) / sqrt(c * reference_activity)`` at DRF 1 (exact for the discrete kernel, away from
    the volume faces); solving gives ``c = reduction**2 / (reference_activity * rel_noise**2)``.
    Typical use: ``reference_activity`` = mean activity of the organ where the noise was measured (brain / liver).
    """
    if not (math.isfinite(reference_activity) and reference_activity > 0):
        raise ValueError(f"reference_activity must be > 0, got {reference_activity}")
    if not (math.isfinite(rel_noise_at_drf1) and rel_noise_at_drf1 > 0):
        raise ValueError(f"rel_noise_at_drf1 must be > 0 (fraction, e.g. 0.023), got {rel_noise_at_drf1}")
    reduction = noise_std_reduction(sigma_vox)
    return reduction**2 / (reference_activity * rel_noise_at_drf1**2)


# ------------------------------------------------------------------------------------------------ fast route
def _smooth_numpy(x: np.ndarray, sigma_vox: float) -> np.ndarray:
    kernel = gaussian_kernel_1d(sigma_vox)
    if kernel.size == 1:
        return x
    for axis in range(x.ndim):
        x = ndimage.correlate1d(x, kernel, axis=axis, mode="nearest")
    return x


def _smooth_torch_3d(x: torch.Tensor, sigma_vox: float) -> torch.Tensor:
    """Separable Gaussian over the last three dims of ``(..., X, Y, Z)``, 'nearest' (replicate) boundaries."""
    kernel = gaussian_kernel_1d(sigma_vox)
    if kernel.size == 1:
        return x
    lead, spatial = x.shape[:-3], x.shape[-3:]
    r = kernel.size // 2
    weights = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    y = x.reshape(-1, 1, *spatial)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.size
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r  # F.pad lists the last dim first
        y = F.conv3d(F.pad(y, pad, mode="replicate"), weights.reshape(shape))
    return y.reshape(*lead, *spatial)


def simulate_low_count_pet_fast(
    activity: np.ndarray, drf: float, seed: int, count_scale: float, sigma_vox: float = 1.0
) -> np.ndarray:
    """Fast image-domain low-count PET: ``x + G_sigma * (Poisson(x c / DRF) DRF / c - x)``.

    Args:
        activity: ``(X, Y, Z)`` activity (SUV, Bq/mL, ...), >= 0 (negative voxels count as 0 for the Poisson rate).
        drf: dose-reduction factor >= 1.
        seed: seed of the numpy ``Generator`` (deterministic output).
        count_scale: ``c``, expected counts per voxel per activity unit at DRF 1 (see :func:`calibrate_count_scale`).
        sigma_vox: std of the 3D Gaussian noise correlation, voxels (0 = white noise).

    Returns:
        ``(X, Y, Z)`` float32 array in the input unit (can be slightly negative, see the module docstring).
    """
    x = np.asarray(activity)
    if x.ndim != 3:
        raise InputDataError("activity", f"expected an (X, Y, Z) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise InputDataError("activity", "contains NaN/Inf or non-numeric values")
    drf, c = check_drf(drf), _check_count_scale(count_scale)
    _check_sigma(sigma_vox)
    x = x.astype(np.float64)
    rate = np.clip(x, 0.0, None)
    counts = np.random.default_rng(seed).poisson(rate * (c / drf))
    noise = counts * (drf / c) - rate
    return (x + _smooth_numpy(noise, sigma_vox)).astype(np.float32)


def simulate_low_count_pet_fast_torch(
    x: torch.Tensor,
    drf: float,
    generator: torch.Generator | None,
    count_scale: float,
    sigma_vox: float = 1.0,
) -> torch.Tensor:
    """Torch version of :func:`simulate_low_count_pet_fast` for MONAI transforms (same statistics).

    Args:
        x: ``(..., X, Y, Z)`` float tensor (e.g. MONAI ``(C, X, Y, Z)``), >= 0; smoothing acts on the last 3 dims.
        drf: dose-reduction factor >= 1.
        generator: ``torch.Generator`` on ``x``'s device for reproducible draws (None: global RNG).
        count_scale: ``c`` as in the numpy version.
        sigma_vox: Gaussian noise-correlation std, voxels.

    Returns:
        Tensor of ``x``'s shape, dtype (float32 if ``x`` is not floating) and device.
    """
    if x.ndim < 3:
        raise InputDataError("activity tensor", f"expected (..., X, Y, Z), got shape {tuple(x.shape)}")
    drf, c = check_drf(drf), _check_count_scale(count_scale)
    _check_sigma(sigma_vox)
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise InputDataError("activity tensor", "contains NaN/Inf")
    work = x.double() if x.dtype == torch.float64 else x.float()
    rate = work.clamp_min(0.0)
    counts = torch.poisson(rate * (c / drf), generator=generator)
    noise = counts * (drf / c) - rate
    return (work + _smooth_torch_3d(noise, sigma_vox)).to(x.dtype)


# --------------------------------------------------------------------------------------------- sinogram route
@dataclass(frozen=True)
class PETScanner:
    """2D (per axial slice) PET acquisition and OSEM reconstruction parameters.

    Attributes:
        n_views: projection angles over 180 degrees (detector bins = padded slice side). 96 views for 128 bins is in
            the range of clinical sinograms (about 0.4-0.7 views per radial bin) and keeps OSEM fast.
        psf_sigma_vox: in-plane Gaussian resolution (std, voxels) applied before projection and modelled in OSEM.
        randoms_fraction: expected randoms / expected trues per slice (flat over the field-of-view bins).
        scatter_fraction: expected scatter / expected trues per slice (trues blurred along the detector).
        scatter_sigma_mm: std of that detector-axis blur (smooth scatter tails).
        osem_iterations: OSEM iterations (full passes over the data).
        osem_subsets: OSEM subsets (interleaved views); ``n_views`` is cut into that many groups.
        trues_per_voxel: expected unattenuated true counts emitted at DRF 1 by a voxel at the mean activity of the
            active voxels (activity >= 10 % of the 99.5th percentile) — the count level, independent of the activity
            unit. The default (set on a 18 cm uniform water cylinder, 2 mm voxels, 128^2 slices, central 8 cm) gives
            2.3 % relative noise at DRF 1, the docs/physics.md brain-phantom target.
    """

    n_views: int = 96
    psf_sigma_vox: float = 1.0
    randoms_fraction: float = 0.2
    scatter_fraction: float = 0.3
    scatter_sigma_mm: float = 40.0
    osem_iterations: int = 4
    osem_subsets: int = 8
    trues_per_voxel: float = 1.0e4

    def __post_init__(self) -> None:
        if int(self.n_views) != self.n_views or self.n_views < 2:
            raise ValueError(f"PETScanner.n_views must be an integer >= 2, got {self.n_views}")
        if int(self.osem_subsets) != self.osem_subsets or not 1 <= self.osem_subsets <= self.n_views:
            raise ValueError(f"PETScanner.osem_subsets must be in [1, n_views], got {self.osem_subsets}")
        if int(self.osem_iterations) != self.osem_iterations or self.osem_iterations < 1:
            raise ValueError(f"PETScanner.osem_iterations must be >= 1, got {self.osem_iterations}")
        for name in ("psf_sigma_vox", "randoms_fraction", "scatter_fraction", "scatter_sigma_mm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PETScanner.{name} must be >= 0, got {value}")
        if not (math.isfinite(self.trues_per_voxel) and self.trues_per_voxel > 0):
            raise ValueError(f"PETScanner.trues_per_voxel must be > 0, got {self.trues_per_voxel}")


def _blur_detector(sino: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Gaussian along the detector axis (axis 1) of ``(A, N, B)`` sinograms, zero boundary."""
    kernel = gaussian_kernel_1d(sigma_bins)
    if kernel.size == 1:
        return sino
    return ndimage.correlate1d(sino, kernel.astype(sino.dtype), axis=1, mode="constant", cval=0.0)


def _reference_activity(activity: np.ndarray) -> float:
    """Mean activity of the active voxels (>= 10 % of the 99.5th percentile of the positive voxels)."""
    positive = activity[activity > 0]
    if positive.size == 0:
        return 0.0
    high = float(np.percentile(positive, 99.5))
    return float(activity[activity >= 0.1 * high].mean())


@functools.lru_cache(maxsize=2)
def _osem_operators(n: int, n_views: int, n_subsets: int) -> tuple[sp.csr_matrix, ...]:
    """Per subset (views ``k, k + S, ...``) the rows of the system matrix, CSR float32 (cached, read-only)."""
    matrix = system_matrix(n, uniform_angles_deg(n_views))
    operators = []
    for k in range(n_subsets):
        rows = (np.arange(k, n_views, n_subsets)[:, None] * n + np.arange(n)[None, :]).reshape(-1)
        operators.append(matrix[rows])
    return tuple(operators)


def simulate_low_count_pet_sinogram(
    activity: np.ndarray,
    mu_map_per_mm: np.ndarray,
    voxel_mm: float,
    drf: float,
    seed: int,
    scanner: PETScanner = PETScanner(),
) -> np.ndarray:
    """Physical low-count PET: per-slice projection, attenuation, randoms + scatter, Poisson, OSEM.

    Args:
        activity: ``(X, Y, Z)`` noise-free activity >= 0 (any unit: SUV, Bq/mL); slices along z.
        mu_map_per_mm: ``(X, Y, Z)`` linear attenuation at 511 keV in 1/mm (water ~0.0096), >= 0.
        voxel_mm: in-plane voxel size in mm (square voxels).
        drf: dose-reduction factor >= 1 (counts divided by it).
        seed: seed of the numpy ``Generator`` drawing the Poisson counts (deterministic output).
        scanner: acquisition / reconstruction parameters.

    Returns:
        ``(X, Y, Z)`` float32 OSEM image in the unit of ``activity`` (>= 0), with the reconstruction's resolution.

    Slices are zero-padded to a square canvas whose inscribed circle holds the object (cropped back). The in-plane
    PSF is applied as the equivalent 1D Gaussian along the detector axis of each view (``R(G x) = g * R(x)`` for a
    rotationally symmetric Gaussian), in the simulation and in the OSEM model alike.
    """
    act = np.asarray(activity)
    mu = np.asarray(mu_map_per_mm)
    for name, arr in (("activity", act), ("mu_map_per_mm", mu)):
        if arr.ndim != 3:
            raise InputDataError(name, f"expected an (X, Y, Z) array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise InputDataError(name, "contains NaN/Inf or non-numeric values")
    if act.shape != mu.shape:
        raise InputDataError("mu_map_per_mm", f"shape {mu.shape} differs from the activity shape {act.shape}")
    if min(act.shape[:2]) < 2:
        raise InputDataError("activity", f"slices must be at least 2x2 voxels, got shape {act.shape}")
    if not (math.isfinite(voxel_mm) and voxel_mm > 0):
        raise ValueError(f"voxel_mm must be a positive size in mm, got {voxel_mm}")
    drf = check_drf(drf)
    act = np.clip(act.astype(np.float32), 0.0, None)
    mu = np.clip(mu.astype(np.float32), 0.0, None)
    x_size, y_size, n_slices = act.shape
    ref_activity = _reference_activity(act)
    if ref_activity == 0.0:
        return np.zeros(act.shape, dtype=np.float32)

    # canvas (N, N) per slice; slabs of slices are flattened to columns: images (N * N, z), sinograms (A_k, N, z)
    n = square_canvas_size(((act > 0) | (mu > 0)).any(axis=-1))
    ox, oy = (n - x_size) // 2, (n - y_size) // 2
    operators = _osem_operators(n, scanner.n_views, scanner.osem_subsets)
    scale = scanner.trues_per_voxel / (scanner.n_views * ref_activity) / drf  # counts per (activity * pixel)
    rng = np.random.default_rng(seed)
    out = np.empty(act.shape, dtype=np.float32)
    step = max(1, _SLAB_ELEMENTS // (n * n))
    for z0 in range(0, n_slices, step):
        z1 = min(n_slices, z0 + step)
        canvas = np.zeros((2, n, n, z1 - z0), dtype=np.float32)
        canvas[0, ox : ox + x_size, oy : oy + y_size] = act[..., z0:z1]
        canvas[1, ox : ox + x_size, oy : oy + y_size] = mu[..., z0:z1]
        image = _simulate_slab(canvas.reshape(2, n * n, z1 - z0), n, operators, scale, voxel_mm, scanner, rng)
        out[..., z0:z1] = np.clip(image, 0.0, None).reshape(n, n, z1 - z0)[ox : ox + x_size, oy : oy + y_size]
    return out


def _simulate_slab(
    columns: np.ndarray,
    n: int,
    operators: tuple[sp.csr_matrix, ...],
    scale: float,
    voxel_mm: float,
    scanner: PETScanner,
    rng: np.random.Generator,
) -> np.ndarray:
    """Acquisition + OSEM of ``z`` slices, ``columns`` ``(2, N * N, z)`` = (activity, mu); returns ``(N * N, z)``."""
    n_slices = columns.shape[-1]
    n_sub_views = [m.shape[0] // n for m in operators]

    def project(k: int, images: np.ndarray) -> np.ndarray:
        return (operators[k] @ images).reshape(n_sub_views[k], n, n_slices)

    def backproject(k: int, sino: np.ndarray) -> np.ndarray:  # exact adjoint (ray-driven)
        return operators[k].T @ sino.reshape(-1, n_slices)

    psf = scanner.psf_sigma_vox
    # --- acquisition: expected trues, randoms, scatter; Poisson prompts (per subset of views)
    gains = [scale * np.exp(-voxel_mm * project(k, columns[1])) for k in range(len(operators))]  # scale * atten
    trues = [g * np.clip(_blur_detector(project(k, columns[0]), psf), 0.0, None) for k, g in enumerate(gains)]
    total_trues = sum(t.sum(axis=(0, 1)) for t in trues)  # (z,)
    c = n // 2
    fov = (np.abs(np.arange(n) - c) <= c - 2).astype(np.float32)[None, :, None]  # detector bins inside the FOV
    randoms_per_bin = scanner.randoms_fraction * total_trues / (scanner.n_views * fov.sum())
    scatter_shape = [_blur_detector(t, scanner.scatter_sigma_mm / voxel_mm) for t in trues]
    scatter_total = sum(s.sum(axis=(0, 1)) for s in scatter_shape)
    scatter_gain = scanner.scatter_fraction * total_trues / np.maximum(scatter_total, 1e-30)
    additive = [(randoms_per_bin * fov + scatter_gain * s).astype(np.float32) for s in scatter_shape]
    prompts = [rng.poisson(t + b).astype(np.float32) for t, b in zip(trues, additive, strict=True)]

    # --- OSEM with the same model: expected prompts = gain * g*(R x) + additive; sensitivity R^T g*(gain)
    sens = [backproject(k, _blur_detector(g, psf)) for k, g in enumerate(gains)]
    total_sens = sum(sens)
    net_counts = np.clip(sum((y - b).sum(axis=(0, 1)) for y, b in zip(prompts, additive, strict=True)), 0.0, None)
    valid = [s > 1e-6 * max(float(s.max()), 1e-30) for s in sens]
    image = np.where(total_sens > 0, net_counts / np.maximum(total_sens.sum(axis=0), 1e-30), 0.0).astype(np.float32)
    for _ in range(scanner.osem_iterations):
        for k, (gain, y, b) in enumerate(zip(gains, prompts, additive, strict=True)):
            expected = gain * _blur_detector(project(k, image), psf) + b
            ratio = np.divide(y, expected, out=np.zeros_like(expected), where=expected > 0)
            update = backproject(k, _blur_detector(gain * ratio, psf))
            image = np.where(valid[k], image * update / np.maximum(sens[k], 1e-30), 0.0).astype(np.float32)
    return image
