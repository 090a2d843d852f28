"""On-the-fly PET count-reduction augmentation: a fresh low-count realisation of the full-dose image at a random
dose-reduction factor for every sample, so the network never sees the same noise twice."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

from ..physics import simulate_low_count_pet_fast_torch

__all__ = ["RandPETCountReductiond"]


class RandPETCountReductiond(RandomizableTransform, MapTransform):
    """With probability ``prob``, replace ``image_key`` by a simulated low-count version of ``label_key``.

    The simulation is the calibrated image-domain route of :mod:`common.physics.pet` and must run on activity in the
    units ``count_scale`` was calibrated for (SUV for the embedded data), i.e. BEFORE intensity scaling.

    Args:
        label_key: full-dose activity ``(C, X, Y, Z)``.
        image_key: output key of the low-count image (same shape).
        drf_key: key updated with the sampled dose-reduction factor (float).
        drfs: the DRFs to sample from uniformly (ignored when ``log_uniform_range`` is given).
        log_uniform_range: ``(low, high)`` to sample DRF log-uniformly instead, e.g. ``(2, 100)``.
        count_scale: counts per unit activity per voxel at full dose (``calibrate_count_scale``).
        sigma_vox: Gaussian smoothing of the count noise, in voxels (mimics the reconstruction's correlation).
    """

    def __init__(
        self,
        label_key: str = "label",
        image_key: str = "image",
        drf_key: str = "drf",
        drfs: Sequence[float] = (4, 10, 20, 50, 100),
        log_uniform_range: Sequence[float] | None = None,
        count_scale: float = 1.0,
        sigma_vox: float = 1.0,
        prob: float = 0.5,
    ) -> None:
        MapTransform.__init__(self, keys=[label_key])
        RandomizableTransform.__init__(self, prob)
        self.label_key, self.image_key, self.drf_key = label_key, image_key, drf_key
        self.drfs = [float(v) for v in drfs]
        if any(v < 1 for v in self.drfs):
            raise ValueError(f"DRFs must be >= 1, got {self.drfs}")
        self.log_uniform_range = None if log_uniform_range is None else tuple(float(v) for v in log_uniform_range)
        self.count_scale, self.sigma_vox = float(count_scale), float(sigma_vox)
        self._drf = self.drfs[0]
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self.log_uniform_range is not None:
            lo, hi = np.log(self.log_uniform_range[0]), np.log(self.log_uniform_range[1])
            self._drf = float(np.exp(self.R.uniform(lo, hi)))
        else:
            self._drf = float(self.drfs[self.R.randint(len(self.drfs))])
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        label = d[self.label_key]
        gen = torch.Generator(device="cpu").manual_seed(self._seed)
        noisy = simulate_low_count_pet_fast_torch(
            torch.as_tensor(label).float(), self._drf, gen, self.count_scale, self.sigma_vox
        )
        out = label.clone() if isinstance(label, torch.Tensor) else torch.as_tensor(label).clone()
        out[...] = noisy.to(out.dtype)
        d[self.image_key] = out
        d[self.drf_key] = self._drf
        return d
