"""Image-quality metrics with an explicit data range, built on MONAI's regression metrics.

Every function takes a prediction and a reference of the same spatial shape — numpy arrays or torch tensors,
either a bare spatial array ``(X, Y[, Z])`` or a MONAI batch ``(B, C, X, Y[, Z])`` — and returns a Python float
(the mean over the batch). The data range is never inferred silently: callers pass it (for HU windows, the window
width; for PET, usually the reference maximum via :func:`reference_max`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from monai.metrics import PSNRMetric, RMSEMetric, SSIMMetric
from monai.metrics.regression import compute_ssim_and_cs

ArrayLike = np.ndarray | torch.Tensor

__all__ = [
    "ssim_slices",
    "as_batch",
    "hu_mae",
    "nrmse",
    "psnr",
    "reference_max",
    "rmse",
    "ssim",
    "suv_bias_in_masks",
    "window",
]


def as_batch(x: ArrayLike, spatial_dims: int | None = None) -> torch.Tensor:
    """Return ``x`` as a float32 tensor shaped ``(B, C, *spatial)``.

    A bare array with ``spatial_dims`` dimensions (default: its own ndim, 2 or 3) gets batch and channel axes.
    """
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float().cpu()
    if spatial_dims is None:
        spatial_dims = t.ndim if t.ndim in (2, 3) else t.ndim - 2
    while t.ndim < spatial_dims + 2:
        t = t.unsqueeze(0)
    return t


def _pair(pred: ArrayLike, ref: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, int]:
    p, r = as_batch(pred), as_batch(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from reference shape {tuple(r.shape)}")
    return p, r, p.ndim - 2


def window(x: ArrayLike, low: float, high: float) -> torch.Tensor:
    """Clip ``x`` to the intensity window ``[low, high]`` (same units as ``x``, e.g. HU)."""
    return as_batch(x).clamp(low, high)


def reference_max(ref: ArrayLike) -> float:
    """The reference's maximum, the usual PET PSNR peak (SUV or Bq/mL, as the reference)."""
    return float(as_batch(ref).max())


def _mask_like(mask: ArrayLike, like: torch.Tensor) -> torch.Tensor:
    m = as_batch(mask, like.ndim - 2).bool()
    if m.shape != like.shape:
        raise ValueError(f"mask shape {tuple(m.shape)} differs from image shape {tuple(like.shape)}")
    if not m.any():
        raise ValueError("mask is empty")
    return m


def psnr(pred: ArrayLike, ref: ArrayLike, data_range: float, mask: ArrayLike | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``20 log10(data_range) - 10 log10(MSE)`` (MONAI ``PSNRMetric``).

    With a boolean ``mask`` (same shape), the MSE is the mean over the mask's voxels (e.g. inside the body)."""
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    p, r, _ = _pair(pred, ref)
    if mask is None:
        return float(PSNRMetric(max_val=float(data_range))(p, r).mean())
    mse = float(((p - r)[_mask_like(mask, p)] ** 2).mean())
    return float("inf") if mse == 0 else 20.0 * math.log10(float(data_range)) - 10.0 * math.log10(mse)


def ssim(
    pred: ArrayLike,
    ref: ArrayLike,
    data_range: float,
    win_size: int = 11,
    sigma: float = 1.5,
    mask: ArrayLike | None = None,
) -> float:
    """Structural similarity with a Gaussian window (MONAI ``SSIMMetric``; 2D or 3D from the input's dimensions).

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range)`` on the valid region. With a boolean ``mask``, the mean of
    the SSIM map over the mask's voxels (the map covers the valid region: the mask is cropped by ``win_size // 2``).
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    p, r, dims = _pair(pred, ref)
    if mask is None:
        metric = SSIMMetric(spatial_dims=dims, data_range=float(data_range), win_size=win_size, kernel_sigma=sigma)
        return float(metric(p, r).mean())
    m = _mask_like(mask, p)
    if min(p.shape[2:]) < win_size:
        raise ValueError(f"SSIM window {win_size} is larger than the image {tuple(p.shape[2:])}")
    ssim_map, _ = compute_ssim_and_cs(p, r, dims, [win_size] * dims, [sigma] * dims, float(data_range))
    h = win_size // 2
    m = m[(slice(None), slice(None), *[slice(h, s - h) for s in m.shape[2:]])]
    if not m.any():
        raise ValueError("mask is empty inside the SSIM valid region")
    return float(ssim_map[m].mean())


def ssim_slices(
    pred: ArrayLike, ref: ArrayLike, data_range: float, axis: int = -1, win_size: int = 11, sigma: float = 1.5
) -> float:
    """Mean 2D SSIM over the slices of a volume along spatial ``axis`` (-1 = the last, axial z for RAS volumes).

    The convention of 2D (slice-wise) CT denoising papers; also defined when the volume has fewer slices than the
    window. ``pred`` / ``ref``: ``(X, Y, Z)`` or ``(B, C, X, Y, Z)``.
    """
    p, r, dims = _pair(pred, ref)
    if dims != 3:
        raise ValueError(f"ssim_slices needs 3D volumes, got {dims} spatial dims")
    ax = 2 + (axis % 3)

    def to_slices(t: torch.Tensor) -> torch.Tensor:  # (B, C, X, Y, Z) -> (B * S, C, H, W)
        t = t.movedim(ax, 1)
        return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])

    return ssim(to_slices(p), to_slices(r), data_range, win_size=win_size, sigma=sigma)


def rmse(pred: ArrayLike, ref: ArrayLike) -> float:
    """Root-mean-square error in the units of the inputs (HU, SUV, ...) (MONAI ``RMSEMetric``)."""
    p, r, _ = _pair(pred, ref)
    return float(RMSEMetric()(p, r).mean())


def nrmse(pred: ArrayLike, ref: ArrayLike, normalization: str = "euclidean") -> float:
    """Normalised RMSE, with skimage's conventions: ``euclidean`` (||ref||/sqrt(N)), ``min-max`` or ``mean``."""
    p, r, _ = _pair(pred, ref)
    err = float(torch.sqrt(torch.mean((p - r) ** 2)))
    if normalization == "euclidean":
        denom = float(torch.sqrt(torch.mean(r**2)))
    elif normalization == "min-max":
        denom = float(r.max() - r.min())
    elif normalization == "mean":
        denom = float(r.mean())
    else:
        raise ValueError(f"unknown normalization {normalization!r}")
    if denom == 0:
        raise ValueError("reference is zero/constant: NRMSE is undefined")
    return err / denom


def hu_mae(pred: ArrayLike, ref: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean absolute error in HU, optionally inside a boolean ``mask`` of the same spatial shape."""
    p, r, _ = _pair(pred, ref)
    diff = (p - r).abs()
    if mask is None:
        return float(diff.mean())
    return float(diff[_mask_like(mask, diff)].mean())


def suv_bias_in_masks(pred: ArrayLike, ref: ArrayLike, masks: Mapping[str, ArrayLike]) -> dict[str, dict[str, float]]:
    """SUVmean and SUVmax relative bias (percent) of ``pred`` against ``ref`` inside each named boolean mask.

    Returns ``{name: {"suvmean_bias_pct": ..., "suvmax_bias_pct": ..., "suvmean_ref": ..., "suvmax_ref": ...}}``.
    Empty masks are skipped (they cannot be measured) rather than reported as zero.
    """
    p, r, _ = _pair(pred, ref)
    out: dict[str, dict[str, float]] = {}
    for name, mask in masks.items():
        m = as_batch(mask).bool()
        if m.shape != p.shape:
            raise ValueError(f"mask {name!r} shape {tuple(m.shape)} differs from image shape {tuple(p.shape)}")
        if not m.any():
            continue
        mean_ref, mean_pred = float(r[m].mean()), float(p[m].mean())
        max_ref, max_pred = float(r[m].max()), float(p[m].max())
        out[name] = {
            "suvmean_ref": mean_ref,
            "suvmax_ref": max_ref,
            "suvmean_bias_pct": 100.0 * (mean_pred - mean_ref) / mean_ref if mean_ref else float("nan"),
            "suvmax_bias_pct": 100.0 * (max_pred - max_ref) / max_ref if max_ref else float("nan"),
        }
    return out
