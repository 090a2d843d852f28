"""Classical denoising baselines for the benchmark: Gaussian smoothing, total variation (Chambolle) and non-local means
(scikit-image); BM3D / BM4D when the optional ``baselines`` extra is installed (non-commercial licence: never
required). Each has ONE parameter, tuned on the validation split by ``common.benchmark`` (never on the test split).

Volumes are ``(X, Y, Z)`` arrays in physical units (HU, SUV). ``slice_wise=True`` filters every axial slice
(``[..., z]``) on its own, as the slice-wise 2D CT bundles see the data; otherwise the filter is 3D. Parameters
are relative, so one grid serves CT and PET:

- ``gaussian``: sigma in voxels (in-plane only when slice-wise);
- ``tv``: Chambolle weight on the volume divided by its robust range (0.5-99.5 percentiles);
- ``nlm``: ``h`` as a multiple of the noise sigma estimated from the volume (Immerkaer's estimator, per slice);
- ``bm3d`` / ``bm4d``: the noise sigma passed to them as a multiple of that estimate.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["BaselineDenoised", "available_baselines", "bm4d_seconds", "denoise", "parameter_grid"]

_GRIDS: dict[str, tuple[float, ...]] = {
    "gaussian": (0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
    "tv": (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
    "nlm": (0.5, 0.8, 1.2, 1.8, 2.5, 3.5, 5.0),
    "bm3d": (0.5, 0.75, 1.0, 1.5, 2.0),
    "bm4d": (0.5, 0.75, 1.0, 1.5, 2.0),
}


def available_baselines() -> list[str]:
    """The baselines usable here: always gaussian, tv, nlm; bm3d / bm4d when installed."""
    names = ["gaussian", "tv", "nlm"]
    names += [n for n in ("bm3d", "bm4d") if importlib.util.find_spec(n) is not None]
    return names


def parameter_grid(name: str, quick: bool = False) -> tuple[float, ...]:
    """The values tried for baseline ``name`` (``quick``: the middle value and one neighbour, for tests)."""
    grid = _GRIDS[name]
    return grid[len(grid) // 2 - 1 : len(grid) // 2 + 1] if quick else grid


def _robust_range(x: np.ndarray) -> float:
    lo, hi = np.percentile(x, [0.5, 99.5])
    return float(hi - lo) or 1.0


def _noise_sigma(x: np.ndarray, slice_wise: bool) -> float:
    """Noise standard deviation, median over axial slices of Immerkaer's estimate (1996: the mean absolute response
    to the 3x3 difference-of-Laplacians mask, which cancels smooth structure)."""
    from scipy import ndimage

    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    per_slice = []
    for k in range(x.shape[-1]):
        r = ndimage.convolve(x[..., k].astype(np.float64), mask, mode="reflect")[1:-1, 1:-1]
        per_slice.append(np.sqrt(np.pi / 2) * np.abs(r).mean() / 6.0)
    return float(np.median(per_slice)) or 1e-6


def _per_slice(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.stack([fn(x[..., k]) for k in range(x.shape[-1])], axis=-1)


def denoise(name: str, x: np.ndarray, param: float, slice_wise: bool = False) -> np.ndarray:
    """Baseline ``name`` with parameter ``param`` on ``x`` ``(X, Y, Z)``; float32, same shape and units."""
    from scipy import ndimage
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

    x = np.asarray(x, dtype=np.float32)
    if name == "gaussian":
        sigma = (param, param, 0.0) if slice_wise else param
        return ndimage.gaussian_filter(x, sigma=sigma, mode="nearest").astype(np.float32)
    if name == "tv":
        scale = _robust_range(x)
        fn = lambda a: denoise_tv_chambolle(a / scale, weight=param) * scale  # noqa: E731
        return (_per_slice(fn, x) if slice_wise else fn(x)).astype(np.float32)
    sigma = _noise_sigma(x, slice_wise)
    if name == "nlm":
        kw = dict(h=param * sigma, sigma=sigma, patch_size=3, patch_distance=4 if slice_wise else 3, fast_mode=True)
        fn = lambda a: denoise_nl_means(a, **kw)  # noqa: E731
        return (_per_slice(fn, x) if slice_wise else fn(x)).astype(np.float32)
    if name == "bm3d":
        import bm3d

        fn = lambda a: bm3d.bm3d(a, sigma_psd=param * sigma)  # noqa: E731
        return _per_slice(fn, x).astype(np.float32)  # BM3D is 2D: slice by slice
    if name == "bm4d":
        import bm4d

        return np.asarray(bm4d.bm4d(x, sigma_psd=param * sigma), dtype=np.float32)
    raise ValueError(f"unknown baseline {name!r}; available: {available_baselines()}")


class BaselineDenoised(MapTransform):
    """Add one output per baseline, ``d[<name>] = denoise(name, d[key], param(dose))``, as a MetaTensor like ``key``
    (channel-first ``(1, X, Y, Z)``, same meta data).

    Args:
        keys: the input key (``image``).
        params: ``{name: {dose: param}}`` (the tuned values); a dose missing from the mapping takes the value of
            the nearest listed dose on a log scale.
        dose_key: item key of the dose (``drf`` / ``dose``).
        slice_wise: filter axial slices in 2D.
    """

    def __init__(
        self, keys: Any, params: Mapping[str, Mapping[Any, float]], dose_key: str, slice_wise: bool = False
    ) -> None:
        super().__init__(keys)
        self.params = {name: {float(k): float(v) for k, v in table.items()} for name, table in params.items()}
        self.dose_key, self.slice_wise = dose_key, slice_wise

    def param(self, name: str, dose: float) -> float:
        """The parameter of ``name`` at ``dose`` (nearest tuned dose on a log scale)."""
        table = self.params[name]
        best = min(table, key=lambda k: abs(np.log(k) - np.log(dose)))
        return table[best]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        dose = float(torch.as_tensor(d[self.dose_key]).reshape(-1)[0])
        for key in self.key_iterator(d):
            img = d[key]
            arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
            for name in self.params:
                out = np.stack([denoise(name, c, self.param(name, dose), self.slice_wise) for c in arr])
                t = torch.as_tensor(out)
                d[name] = MetaTensor(t, meta=dict(img.meta)) if isinstance(img, MetaTensor) else t
        return d


def bm4d_seconds(shape: Sequence[int] = (128, 128, 96), sigma: float = 0.1) -> float | None:
    """Seconds BM4D (optional extra) takes on a random volume of ``shape`` (values in [0, 1], noise ``sigma``);
    None when bm4d is not installed."""
    import time

    if importlib.util.find_spec("bm4d") is None:
        return None
    import bm4d

    x = np.random.default_rng(0).random(tuple(shape)).astype(np.float32)
    t0 = time.perf_counter()
    bm4d.bm4d(x, sigma_psd=sigma)
    return time.perf_counter() - t0
