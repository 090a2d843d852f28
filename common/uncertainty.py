"""Is a voxel-wise uncertainty map trustworthy? Coverage of the error by +-k std, rank correlation of std with the
error, and the std scale factor that gives a chosen coverage (fitted on validation data, applied unchanged to test
data).

Inputs are arrays of one shape (any): the restored image ``pred``, its std map ``std`` and the reference ``ref``,
in the same units (SUV), and an optional boolean ``mask`` (e.g. the body).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["calibration_stats", "fit_std_calibration", "spearman"]


def _flat(x: np.ndarray | torch.Tensor, mask: np.ndarray | None) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    return a[np.asarray(mask, dtype=bool)] if mask is not None else a.ravel()


def _ranks(a: np.ndarray) -> np.ndarray:
    r = np.empty(len(a))
    r[np.argsort(a, kind="stable")] = np.arange(len(a))
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1D arrays (ties get distinct ranks in order of appearance; with millions of
    continuous values that changes nothing measurable). 0 when either array is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    x, y = _ranks(a), _ranks(b)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def calibration_stats(
    pred: np.ndarray | torch.Tensor,
    std: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    mask: np.ndarray | None = None,
    k: float = 2.0,
) -> dict[str, float]:
    """``{"coverage": fraction of voxels with |pred - ref| <= k std, "spearman": rank correlation of std and
    |pred - ref|, "mean_std", "rmse", "n"}`` over ``mask`` (all voxels when None)."""
    err = np.abs(_flat(pred, mask) - _flat(ref, mask))
    s = _flat(std, mask)
    if err.size == 0:
        raise ValueError("calibration_stats: the mask selects no voxel")
    return {
        "coverage": float((err <= k * s).mean()),
        "spearman": spearman(s, err),
        "mean_std": float(s.mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "n": int(err.size),
    }


def fit_std_calibration(abs_errors: np.ndarray, stds: np.ndarray, target: float = 0.95, k: float = 2.0) -> float:
    """The factor ``c`` with ``mean(|e| <= k c std) = target``: the ``target`` quantile of ``|e| / (k std)`` (voxels
    with std 0 are left out). 1D arrays of the pooled validation voxels."""
    if not 0 < target < 1:
        raise ValueError(f"target coverage must be in (0, 1), got {target}")
    e, s = np.asarray(abs_errors, dtype=np.float64), np.asarray(stds, dtype=np.float64)
    ok = s > 0
    if not ok.any():
        raise ValueError("fit_std_calibration: every std is 0 (one sample?)")
    return float(np.quantile(e[ok] / (k * s[ok]), target))
