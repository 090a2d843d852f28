"""Through-plane (thick-slice) CT simulation and the thin <-> thick slice grid correspondence.

Simulation: a Gaussian slice-sensitivity profile along z with FWHM = slice thickness
(``sigma = FWHM / (2 sqrt(2 ln 2)) ~ FWHM / 2.355``, in thin-slice units), then decimation by the integer ``factor``.
The thin volume's own slice profile is ignored (the thick profile is applied on top of it; docs/physics.md).
Boundary: ``'nearest'`` (edge slices repeated), so a constant volume stays constant up to the edges.

Exact grid correspondence (integer thin-slice indices, no half-slice shift):

- thick slice ``k`` is centred on thin slice ``offset + k * factor`` (``thick_slice_indices``);
  ``Zt = ceil((Z - offset) / factor)``;
- ``affine_thick = thick_slice_affine(affine_thin, factor, offset)`` multiplies the z column by ``factor`` and moves the
  origin by ``offset`` thin slices along the z axis direction, so that for every ``i, j, k``::

      affine_thick @ [i, j, k, 1] == affine_thin @ [i, j, offset + k * factor, 1]

- ``thin_slice_affine(affine_thick, factor, offset)`` is the exact inverse (grid of a super-resolved output whose
  thin slice ``offset + k * factor`` coincides with thick slice ``k``).

Affines are 4x4 voxel-to-world matrices (nibabel convention, mm); voxel index order ``(i, j, k) = (x, y, z)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..errors import InputDataError

__all__ = [
    "FWHM_PER_SIGMA",
    "fwhm_to_sigma",
    "interpolate_z",
    "thin_positions",
    "simulate_thick_slices",
    "slice_profile_sigma_vox",
    "thick_slice_affine",
    "thick_slice_indices",
    "thin_slice_affine",
]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # ~2.3548
_TRUNCATE = 4.0


def fwhm_to_sigma(fwhm: float) -> float:
    """Standard deviation of the Gaussian whose full width at half maximum is ``fwhm`` (same unit)."""
    if not (math.isfinite(fwhm) and fwhm >= 0):
        raise ValueError(f"FWHM must be >= 0, got {fwhm}")
    return float(fwhm) / FWHM_PER_SIGMA


def slice_profile_sigma_vox(thickness_mm: float, spacing_z_mm: float) -> float:
    """Gaussian sigma (thin-slice voxels) of a slice profile with FWHM ``thickness_mm`` on a ``spacing_z_mm`` grid."""
    if not (math.isfinite(spacing_z_mm) and spacing_z_mm > 0):
        raise ValueError(f"spacing_z_mm must be > 0 mm, got {spacing_z_mm}")
    if not (math.isfinite(thickness_mm) and thickness_mm >= 0):
        raise ValueError(f"thickness_mm must be >= 0 mm, got {thickness_mm}")
    return fwhm_to_sigma(thickness_mm / spacing_z_mm)


def _check_factor_offset(factor: int, offset: int) -> None:
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
    if isinstance(offset, bool) or int(offset) != offset or offset < 0:
        raise ValueError(f"offset must be an integer >= 0 (thin slices), got {offset!r}")


def thick_slice_indices(n_thin: int, factor: int, offset: int = 0) -> np.ndarray:
    """Thin-slice indices on which the thick slices are centred: ``offset, offset + factor, ... < n_thin``."""
    _check_factor_offset(factor, offset)
    if offset >= n_thin:
        raise ValueError(f"offset {offset} must be smaller than the number of thin slices {n_thin}")
    return np.arange(int(offset), int(n_thin), int(factor))


def simulate_thick_slices(
    volume: np.ndarray,
    spacing_z_mm: float,
    factor: int,
    thickness_mm: float | None = None,
    offset: int = 0,
) -> np.ndarray:
    """Thick-slice volume from a thin-slice one: Gaussian slice profile along z, then every ``factor``-th slice.

    Args:
        volume: ``(X, Y, Z)`` thin-slice volume (HU or any intensity).
        spacing_z_mm: thin-slice spacing in mm.
        factor: integer decimation factor (thick spacing = ``factor * spacing_z_mm``).
        thickness_mm: slice thickness = FWHM of the profile, mm; default ``factor * spacing_z_mm``.
        offset: thin-slice index of the first thick slice's centre (``0 <= offset < Z``).

    Returns:
        ``(X, Y, ceil((Z - offset) / factor))`` array, float32 (float64 if the input is float64); thick slice ``k``
        is the blurred thin slice ``offset + k * factor``.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise InputDataError("volume", f"expected an (X, Y, Z) array, got shape {vol.shape}")
    if not np.issubdtype(vol.dtype, np.number) or not np.isfinite(vol).all():
        raise InputDataError("volume", "contains NaN/Inf or non-numeric values")
    indices = thick_slice_indices(vol.shape[2], factor, offset)
    thickness = factor * spacing_z_mm if thickness_mm is None else thickness_mm
    sigma = slice_profile_sigma_vox(thickness, spacing_z_mm)
    dtype = np.float64 if vol.dtype == np.float64 else np.float32
    vol = vol.astype(dtype, copy=False)
    if sigma > 0:
        vol = ndimage.gaussian_filter1d(vol, sigma, axis=2, mode="nearest", truncate=_TRUNCATE)
    return np.ascontiguousarray(vol[:, :, indices])


def thin_positions(n_thick: int, factor: int) -> np.ndarray:
    """Thick-grid coordinate of every thin output slice: ``j / factor`` for ``j = 0 .. n_thick * factor - 1``.

    Thin slice ``k * factor`` lies exactly on thick slice ``k`` (the correspondence of :func:`simulate_thick_slices`
    with ``offset = 0`` relative to the thick grid); the last ``factor - 1`` thin slices lie past the last thick one.
    """
    _check_factor_offset(factor, 0)
    if n_thick < 1:
        raise ValueError(f"n_thick must be >= 1, got {n_thick}")
    return np.arange(int(n_thick) * int(factor), dtype=np.float64) / float(factor)


def interpolate_z(volume: np.ndarray, factor: int, order: int = 3) -> np.ndarray:
    """Interpolate a thick-slice volume onto the thin grid along z (the classical baselines of through-plane SR).

    Args:
        volume: ``(X, Y, Zt)`` thick-slice volume (HU).
        factor: integer up-sampling factor along z.
        order: 1 = linear (trilinear on a grid that only changes along z), 3 = cubic B-spline (scipy's spline
            interpolation with its prefilter, boundary ``'nearest'``).

    Returns:
        ``(X, Y, Zt * factor)`` float32 array; output slice ``j`` is sampled at thick coordinate ``j / factor``
        (:func:`thin_positions`): slice ``k * factor`` equals thick slice ``k``, no half-slice shift; positions past
        the last thick slice take the edge value.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3:
        raise InputDataError("volume", f"expected an (X, Y, Z) array, got shape {vol.shape}")
    if order not in (0, 1, 3):
        raise ValueError(f"order must be 0, 1 or 3, got {order}")
    x, y, zt = vol.shape
    pos = np.minimum(thin_positions(zt, factor), zt - 1)
    if zt == 1:
        return np.repeat(vol, int(factor), axis=2).astype(np.float32)
    flat = vol.reshape(x * y, zt)
    rows = np.broadcast_to(np.arange(x * y, dtype=np.float64)[:, None], (x * y, pos.size))
    cols = np.broadcast_to(pos[None, :], (x * y, pos.size))
    # the prefilter runs along both axes of the (voxel, z) array: the spline is also evaluated across rows, at
    # integer positions, where a filtered spline reproduces the data exactly
    out = ndimage.map_coordinates(flat, [rows, cols], order=order, mode="nearest", prefilter=order > 1)
    return out.reshape(x, y, pos.size).astype(np.float32)


def _as_affine(affine: np.ndarray) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {a.shape}")
    return a


def thick_slice_affine(affine: np.ndarray, factor: int, offset: int = 0) -> np.ndarray:
    """Affine of the thick grid: z column * ``factor``, origin moved by ``offset`` thin slices along z (4x4 float64)."""
    _check_factor_offset(factor, offset)
    thin = _as_affine(affine)
    thick = thin.copy()
    thick[:3, 3] = thin[:3, 3] + offset * thin[:3, 2]
    thick[:3, 2] = thin[:3, 2] * factor
    return thick


def thin_slice_affine(thick_affine: np.ndarray, factor: int, offset: int = 0) -> np.ndarray:
    """Inverse of :func:`thick_slice_affine`: the thin grid whose slice ``offset + k * factor`` is thick slice ``k``."""
    _check_factor_offset(factor, offset)
    thick = _as_affine(thick_affine)
    thin = thick.copy()
    thin[:3, 2] = thick[:3, 2] / factor
    thin[:3, 3] = thick[:3, 3] - offset * thin[:3, 2]
    return thin
