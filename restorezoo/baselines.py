"""Classical denoising baselines for the benchmark: Gaussian smoothing, total variation (Chambolle) and non-local means
(scikit-image); BM3D / BM4D when the optional ``baselines`` extra is installed (non-commercial licence: never
required). Each has ONE parameter, tuned on the validation split by ``restorezoo.benchmark`` (never on the test split).

Volumes are ``(X, Y, Z)`` arrays in physical units (HU, SUV). ``slice_wise=True`` filters every axial slice
(``[..., z]``) on its own, as the slice-wise 2D CT bundles see the data; otherwise the filter is 3D. Parameters
are relative, so one grid serves CT and PET:

- ``gaussian``: sigma in voxels (in-plane only when slice-wise);
- ``tv``: Chambolle weight on the volume divided by its robust range (0.5-99.5 percentiles);
- ``nlm``: ``h`` as a multiple of the noise sigma estimated from the volume (``noise_sigma``);
- ``bm3d`` / ``bm4d``: the noise sigma passed to them as a multiple of that estimate.

``tune`` searches a parameter's grid from a central start value towards the better neighbour until the score drops
(assuming the validation PSNR is unimodal in the parameter; every tried value is reported), so the expensive
filters run on a few grid values only.
``available_baselines`` gives BM3D (2D) to slice-wise bundles and BM4D (3D) to volumetric ones. ``denoise(...,
cache_dir=)`` keeps each output on disk, keyed by the input's bytes, so bundles sharing the embedded data (the two
CT bundles, the two PET bundles) filter each volume once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = [
    "GRIDS",
    "BaselineDenoised",
    "available_baselines",
    "bm4d_seconds",
    "denoise",
    "noise_sigma",
    "parameter_grid",
    "tune",
]

GRIDS: dict[str, tuple[float, ...]] = {
    "gaussian": (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "tv": (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
    "nlm": (0.2, 0.3, 0.5, 0.8, 1.2, 1.8, 2.5, 3.5, 5.0, 7.0, 10.0),
    "bm3d": (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0),
    "bm4d": (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0),
}
# cache versions: bump a baseline's number when its code changes (``noise`` for the noise estimate it scales by)
_VERSIONS: dict[str, int] = {"gaussian": 1, "tv": 1, "nlm": 2, "bm3d": 1, "bm4d": 1, "noise": 1}
_START: dict[str, float] = {"gaussian": 0.75, "tv": 0.02, "nlm": 1.2, "bm3d": 1.0, "bm4d": 1.0}


def available_baselines(slice_wise: bool = False) -> list[str]:
    """The baselines usable here: always gaussian, tv, nlm; when the optional extra is installed, bm3d for a
    slice-wise (2D) bundle, bm4d for a volumetric one."""
    names = ["gaussian", "tv", "nlm"]
    extra = "bm3d" if slice_wise else "bm4d"
    return names + ([extra] if importlib.util.find_spec(extra) is not None else [])


def parameter_grid(name: str, quick: bool = False) -> tuple[float, ...]:
    """The values tried for baseline ``name`` (``quick``: the start value and its upper neighbour, for tests)."""
    grid = GRIDS[name]
    if not quick:
        return grid
    i = grid.index(_START[name])
    return grid[i : i + 2]


def tune(
    name: str, score: Callable[[float], float], quick: bool = False, start: float | None = None
) -> dict[float, float]:
    """Search ``name``'s grid for the best ``score`` (higher is better): start at ``start`` (default: the
    baseline's central start value; e.g. the value tuned at the neighbouring dose), walk towards the better
    neighbour while the score improves. Returns ``{param: score}`` of every value tried; its argmax is the tuned
    value (it lies at a grid end only when the score still improved there)."""
    grid = parameter_grid(name, quick)
    first = _START[name] if start is None or start not in grid else start
    start_index = grid.index(first) if first in grid else 0
    tried: dict[float, float] = {}

    def at(i: int) -> float:
        if grid[i] not in tried:
            tried[grid[i]] = float(score(grid[i]))
        return tried[grid[i]]

    at(start_index)
    for step in (1, -1):
        i = start_index
        while 0 <= i + step < len(grid) and at(i + step) > at(i):
            i += step
        if i != start_index:
            break
    return tried


def _robust_range(x: np.ndarray) -> float:
    lo, hi = np.percentile(x, [0.5, 99.5])
    return float(hi - lo) or 1.0


def noise_sigma(x: np.ndarray, slice_wise: bool = False) -> float:
    """Noise standard deviation of ``x`` ``(X, Y, Z)`` in its units: the 25th percentile, inside the body, of the
    local standard deviation in 5-voxel windows (5 x 5 in-plane when ``slice_wise``, else 5 x 5 x 5), i.e. the
    level of the flat regions. The body is where the window's minimum exceeds 5 % of the robust range above its
    floor (air in CT, background in PET).

    Reconstructed CT and PET noise is spatially correlated and PET noise grows with the signal: Immerkaer's
    white-noise estimator (a 3 x 3 difference of Laplacians) read 0.009 SUV on a DRF-20 phantom whose noise inside
    the body is 0.13 SUV; this one reads 0.12 there and 20.2 HU on a 25 %-dose CT phantom (true 21.3 HU)."""
    from scipy import ndimage

    x = np.asarray(x, dtype=np.float64)
    size = (5, 5, 1) if slice_wise else (5, 5, 5)
    mean = ndimage.uniform_filter(x, size, mode="reflect")
    local = np.sqrt(np.clip(ndimage.uniform_filter(x * x, size, mode="reflect") - mean * mean, 0.0, None))
    lo, hi = np.percentile(x, [0.5, 99.5])
    body = ndimage.minimum_filter(x, size=size, mode="reflect") > lo + 0.05 * (hi - lo)
    values = local[body] if body.sum() >= 100 else local.reshape(-1)
    return float(np.percentile(values, 25)) or 1e-6


def _cache_key(name: str, x: np.ndarray, param: float, slice_wise: bool) -> str:
    import skimage

    version = f"{_VERSIONS.get(name, 0)}.{_VERSIONS['noise'] if name in ('nlm', 'bm3d', 'bm4d') else 0}"
    h = hashlib.sha1(f"{name}|v{version}|{param!r}|{slice_wise}|{x.shape}|{skimage.__version__}".encode())
    for pkg in ("bm3d", "bm4d") if name in ("bm3d", "bm4d") else ():
        h.update(importlib.metadata.version(pkg).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def _per_slice(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.stack([fn(x[..., k]) for k in range(x.shape[-1])], axis=-1)


def denoise(
    name: str, x: np.ndarray, param: float, slice_wise: bool = False, cache_dir: str | Path | None = None
) -> np.ndarray:
    """Baseline ``name`` with parameter ``param`` on ``x`` ``(X, Y, Z)``; float32, same shape and units.
    ``cache_dir``: keep the output there (``<sha1>.npy`` of the input bytes, the name, the parameter, the library
    versions and the baseline's cache version in ``_VERSIONS``) and reuse it."""
    x = np.asarray(x, dtype=np.float32)
    if cache_dir is None:
        return _denoise(name, x, param, slice_wise)
    path = Path(cache_dir) / f"{_cache_key(name, x, param, slice_wise)}.npy"
    if path.is_file():
        return np.load(path)
    out = _denoise(name, x, param, slice_wise)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
    np.save(tmp, out)
    os.replace(tmp, path)  # atomic: a concurrent or interrupted run never reads half a file
    return out


def _denoise(name: str, x: np.ndarray, param: float, slice_wise: bool) -> np.ndarray:
    from scipy import ndimage
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

    if name == "gaussian":
        sigma = (param, param, 0.0) if slice_wise else param
        return ndimage.gaussian_filter(x, sigma=sigma, mode="nearest").astype(np.float32)
    if name == "tv":
        scale = _robust_range(x)
        fn = lambda a: denoise_tv_chambolle(a / scale, weight=param) * scale  # noqa: E731
        return (_per_slice(fn, x) if slice_wise else fn(x)).astype(np.float32)
    sigma = noise_sigma(x, slice_wise)
    if name == "nlm":
        # no ``sigma=``: scikit-image would subtract 2 sigma^2 from every patch distance, which smooths heavily
        # whatever ``h`` is once the estimate exceeds the true noise; ``h`` alone then sets the strength
        kw = dict(h=param * sigma, patch_size=3, patch_distance=4 if slice_wise else 3, fast_mode=True)
        fn = lambda a: denoise_nl_means(a, **kw)  # noqa: E731
        return (_per_slice(fn, x) if slice_wise else fn(x)).astype(np.float32)
    if name == "bm3d":
        import bm3d

        fn = lambda a: bm3d.bm3d(a, sigma_psd=param * sigma)  # noqa: E731
        return _per_slice(fn, x).astype(np.float32)  # BM3D is 2D: slice by slice
    if name == "bm4d":
        import bm4d

        return np.asarray(bm4d.bm4d(x, sigma_psd=param * sigma), dtype=np.float32)
    raise ValueError(f"unknown baseline {name!r}; known: {sorted(GRIDS)}")


class BaselineDenoised(MapTransform):
    """Add one output per baseline, ``d[<name>] = denoise(name, d[key], param(dose))``, as a MetaTensor like ``key``
    (channel-first ``(1, X, Y, Z)``, same meta data).

    Args:
        keys: the input key (``image``).
        params: ``{name: {dose: param}}`` (the tuned values); a dose missing from the mapping takes the value of
            the nearest listed dose on a log scale.
        dose_key: item key of the dose (``drf`` / ``dose``).
        slice_wise: filter axial slices in 2D.
        cache_dir: reuse outputs kept there (``denoise``).
        from_file: filter the NIfTI file ``key`` was loaded from (physical units as stored) instead of ``d[key]``,
            which a bundle may have clipped to its own intensity window: every bundle of a task then measures the
            same baseline output, and the one its tuning measured (the tuning reads the files too).
    """

    def __init__(
        self,
        keys: Any,
        params: Mapping[str, Mapping[Any, float]],
        dose_key: str,
        slice_wise: bool = False,
        cache_dir: str | None = None,
        from_file: bool = False,
    ) -> None:
        super().__init__(keys)
        self.params = {name: {float(k): float(v) for k, v in table.items()} for name, table in params.items()}
        self.dose_key, self.slice_wise, self.cache_dir = dose_key, slice_wise, cache_dir
        self.from_file = bool(from_file)

    def _source(self, img: Any) -> np.ndarray:
        """``img`` as a ``(C, X, Y, Z)`` array: its own values, or (``from_file``) those of its NIfTI file."""
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if not self.from_file:
            return arr
        from common.io import load_nifti
        from common.transforms.validation import source_of

        path = source_of(img)
        raw = load_nifti(path)[0].astype(np.float32)[None]
        if raw.shape != arr.shape:
            raise ValueError(f"{path}: file shape {raw.shape[1:]} differs from the loaded image {arr.shape[1:]}")
        return raw

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
            arr = self._source(img)
            for name in self.params:
                out = np.stack([denoise(name, c, self.param(name, dose), self.slice_wise, self.cache_dir) for c in arr])
                t = torch.as_tensor(out)
                d[name] = MetaTensor(t, meta=dict(img.meta)) if isinstance(img, MetaTensor) else t
        return d


def bm4d_seconds(shape: Sequence[int] = (128, 128, 96), sigma: float = 0.1) -> float | None:
    """Seconds BM4D (optional extra, default profile) takes on a ``shape`` volume of structure plus noise: MONAI's
    ``create_test_image_3d`` (40 spheres, seed 0, values in [0, 1]) plus Gaussian noise of std ``sigma``, denoised
    with that ``sigma``. Block matching costs more on structure than on pure noise (a real 96 x 64 x 96 PET phantom:
    25.3 s; uniform noise of that shape: 19.9 s). None when bm4d is not installed."""
    import time

    if importlib.util.find_spec("bm4d") is None:
        return None
    import bm4d
    from monai.data import create_test_image_3d

    image, _ = create_test_image_3d(
        *shape, num_objs=40, rad_max=20, noise_max=0.0, random_state=np.random.RandomState(0)
    )
    rng = np.random.default_rng(0)
    x = (image / max(float(image.max()), 1e-6) + rng.normal(0.0, sigma, image.shape)).astype(np.float32)
    t0 = time.perf_counter()
    bm4d.bm4d(x, sigma_psd=sigma)
    return time.perf_counter() - t0
