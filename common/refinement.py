"""Residual diffusion over a regression estimate: training batches and the whole-volume sampler of
``pet_lowdose_ddpm3d``.

A frozen regression network (the FiLM U-Net) gives the estimate ``e`` of the full-dose image from the low-dose one
``y`` (both SUV). The diffusion chain generates only what the estimate gets wrong, in units of the input's count
noise::

    m = sqrt(max(e, floor) * DRF)          # count-noise scale of the input at this activity and dose (SUV)
    r = k * (x - e) / m                    # the diffused variable; x = full dose
    condition = [sqrt(e), k * (y - e) / m, ln(DRF) / ln(100)]

so the variable has about unit scale at every activity and dose (count noise has variance ~ activity x DRF), the
network sees the noise the estimate removed in the same units, and the image is ``e + r * m / k``. Because that map
is affine in ``r``, the mean and standard deviation of samples of ``r`` map to the mean image and its voxel-wise
standard deviation (``std_r * m / k``).

The chain starts either from pure noise at the last timestep or, "come closer, diffuse faster", from the estimate
itself (``r = 0``) noised to an earlier timestep; DDIM steps with the correct timestep pairing
(:func:`common.diffusion.ddim_timestep_pairs`) bring it to ``t = 0``. Whole volumes are sampled in one network
pass per step when they fit (the refiner has no normalisation layer, so a whole volume and a crop see the same
computation), all samples of a volume batched together.

Shapes: images ``(B, 1, *S)`` in SUV, ``drf`` ``(B,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import DiffusionPrepareBatch
from monai.inferers import Inferer
from monai.networks.layers import GaussianFilter
from monai.networks.schedulers import DDPMScheduler
from monai.utils import convert_to_dst_type

from .diffusion import ddim_step, ddim_timestep_pairs, v_target
from .inferers import FlipEnsembleInferer, PaddedSlidingWindowInferer, crop_to_shape, pad_to_multiple

__all__ = [
    "RefinementPrepareBatch",
    "RefinementSamplingInferer",
    "from_residual",
    "noise_scale_map",
    "refinement_condition",
    "to_residual",
]

LOG_DRF_NORM = math.log(100.0)


def _per_item(drf: torch.Tensor | float | Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """DRFs as ``(B, 1, 1, ...)`` broadcastable over ``like`` ``(B, C, *S)``."""
    d = torch.as_tensor(drf, dtype=like.dtype, device=like.device).reshape(-1)
    if d.numel() == 1:
        d = d.expand(like.shape[0])
    if d.numel() != like.shape[0] or bool((d < 1).any()):
        raise ValueError(f"need one DRF >= 1 per batch item ({like.shape[0]}), got {d.tolist()}")
    return d.view(-1, *([1] * (like.ndim - 1)))


def noise_scale_map(estimate: torch.Tensor, drf: torch.Tensor | float, floor: float = 0.05) -> torch.Tensor:
    """``m = sqrt(max(estimate, floor) * DRF)`` (SUV^0.5 up to a constant), shape of ``estimate`` ``(B, 1, *S)``.
    ``floor`` (SUV) keeps air finite."""
    return (estimate.clamp_min(float(floor)) * _per_item(drf, estimate)).sqrt()


def to_residual(
    full: torch.Tensor, estimate: torch.Tensor, drf: torch.Tensor | float, scale: float, floor: float = 0.05
) -> torch.Tensor:
    """The diffused variable ``k (full - estimate) / m`` (:func:`noise_scale_map`)."""
    return float(scale) * (full - estimate) / noise_scale_map(estimate, drf, floor)


def from_residual(
    residual: torch.Tensor, estimate: torch.Tensor, drf: torch.Tensor | float, scale: float, floor: float = 0.05
) -> torch.Tensor:
    """Inverse of :func:`to_residual`: ``estimate + residual * m / k`` (SUV)."""
    return estimate + residual * noise_scale_map(estimate, drf, floor) / float(scale)


def refinement_condition(
    low: torch.Tensor, estimate: torch.Tensor, drf: torch.Tensor | float, scale: float, floor: float = 0.05
) -> torch.Tensor:
    """The refiner's condition channels ``(B, 3, *S)``: ``sqrt(e)``, ``k (low - e) / m`` and ``ln(DRF) / ln(100)``."""
    d = _per_item(drf, estimate)
    dose = (torch.log(d) / LOG_DRF_NORM).expand_as(estimate)
    return torch.cat([estimate.clamp_min(0).sqrt(), to_residual(low, estimate, drf, scale, floor), dose], dim=1)


def _check(prediction_type: str, scale: float, floor: float) -> None:
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    if not scale > 0 or not floor > 0:
        raise ValueError(f"residual_scale and floor must be > 0, got {scale}, {floor}")


class RefinementPrepareBatch(DiffusionPrepareBatch):
    """Training batches of the refinement chain for MONAI's ``DiffusionInferer`` in concat mode.

    From a batch with the low-dose patch (``condition_name``), the full-dose patch (``image_name``) and the DRF of
    each item (``drf_name``), all SUV: runs ``estimate_fn(low, drf)`` (the frozen estimator, no gradient) on the
    whole patch, trims ``margin`` voxels on every side (the estimator's border is less reliable than a sliding
    window's interior at inference), and returns the residual :func:`to_residual` as the clean variable, the
    epsilon or v target, and the condition :func:`refinement_condition`. ``DiffusionInferer`` then feeds
    ``[x_t, condition]`` to the network, the channel order the sampler uses.
    """

    def __init__(
        self,
        num_train_timesteps: int,
        estimate_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        residual_scale: float,
        floor: float = 0.05,
        prediction_type: str = "v_prediction",
        alphas_cumprod: torch.Tensor | None = None,
        margin: int = 0,
        condition_name: str = "image",
        image_name: str = "label",
        drf_name: str = "drf",
    ) -> None:
        super().__init__(num_train_timesteps, condition_name)
        _check(prediction_type, residual_scale, floor)
        if prediction_type == "v_prediction" and alphas_cumprod is None:
            raise ValueError("v_prediction needs the scheduler's alphas_cumprod")
        self.estimate_fn, self.scale, self.floor = estimate_fn, float(residual_scale), float(floor)
        self.prediction_type, self.alphas_cumprod, self.margin = prediction_type, alphas_cumprod, int(margin)
        self.image_name, self.drf_name = image_name, drf_name

    def _trim(self, x: torch.Tensor) -> torch.Tensor:
        m = self.margin
        if m <= 0:
            return x
        if any(s <= 2 * m for s in x.shape[2:]):
            raise ValueError(f"patch {tuple(x.shape[2:])} is too small for a margin of {m} voxels")
        return x[(slice(None), slice(None), *(slice(m, s - m) for s in x.shape[2:]))]

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        missing = [k for k in (self.image_name, self.condition_name, self.drf_name) if k not in batchdata]
        if not isinstance(batchdata, Mapping) or missing:
            raise KeyError(f"refinement batches need {missing} (full dose, low dose, DRF)")
        full = torch.as_tensor(batchdata[self.image_name]).to(device, non_blocking=non_blocking)
        low = torch.as_tensor(batchdata[self.condition_name]).to(device, non_blocking=non_blocking)
        drf = torch.as_tensor(batchdata[self.drf_name], dtype=low.dtype).reshape(-1).to(low.device)
        estimate = self._trim(self.estimate_fn(low, drf))
        full, low = self._trim(full), self._trim(low)
        images = to_residual(full, estimate, drf, self.scale, self.floor)
        noise = self.get_noise(images)
        timesteps = self.get_timesteps(images)
        target = noise if self.prediction_type == "epsilon" else v_target(images, noise, timesteps, self.alphas_cumprod)
        condition = refinement_condition(low, estimate, drf, self.scale, self.floor)
        return images, target, (), {"noise": noise, "timesteps": timesteps, "condition": condition, "mode": "concat"}


class RefinementSamplingInferer(Inferer):
    """``inferer(low, network, dose)``: estimate, then refine by N diffusion samples -> ``(B, 3, *S)`` =
    [mean image, calibrated voxel-wise std, estimate], SUV.

    ``network`` is a :class:`common.networks.EstimateRefiner` (``estimate(low, drf, inferer)`` and ``refiner``);
    ``dose`` ``(B, 1)`` is the ``ln(DRF) / 10`` encoding that ``common.inferers.ConditionedInferer`` reads from the
    image meta data (as for the FiLM U-Net).

    Args:
        num_train_timesteps / beta_start / beta_end / schedule: the training chain (linear betas by default).
        num_steps: DDIM steps (deterministic, ``eta`` 0 by default).
        start_timestep: None: start from pure noise at ``T - 1``; ``t0``: start from the estimate noised to ``t0``
            (``x_t0 = sqrt(1 - a_t0) z``, the residual guess being 0).
        prediction_type / residual_scale / floor: as trained (:class:`RefinementPrepareBatch`).
        num_samples: samples per volume; sample ``i`` draws its noise from ``torch.Generator().manual_seed(seed +
            i)``, so outputs are reproducible and a sample does not depend on how many are drawn.
        sample_batch: samples per network pass (all of them by default; lower it when memory is short).
        roi_size: None: each step runs the refiner over the whole (padded) volume at once; else overlapping windows
            of this size (Gaussian blending) for volumes too large for memory.
        estimate_roi / estimate_overlap / estimate_divisor: the sliding window of the estimator.
        estimate_flips: test-time flips of the estimator (``common.inferers.FlipEnsembleInferer``; ``[[]]``: one
            pass).
        std_smoothing: Gaussian sigma (voxels) applied to the samples' variance before the square root (0: none).
            A handful of samples gives a noisy per-voxel variance (4 samples: 3 degrees of freedom); the posterior
            variance changes slowly in space, so pooling neighbours estimates it with far less noise.
        std_calibration: factor ``c`` on the std, a number or ``[a, b]`` for ``c = a DRF^b``; fitted on validation
            data (``scripts/calibrate_uncertainty.py``) so that +-2 std covers the intended fraction of the errors
            (1 = the raw sample std).
        mean: ``"samples"`` (the mean of the samples) or ``"first_step"`` (the mean of the samples' first-step
            ``x_0`` predictions: the chain's own estimate of the posterior mean, without the sampling noise of a
            finite mean).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        num_steps: int = 4,
        start_timestep: int | None = None,
        prediction_type: str = "v_prediction",
        residual_scale: float = 4.0,
        floor: float = 0.05,
        num_samples: int = 4,
        sample_batch: int | None = None,
        seed: int = 0,
        eta: float = 0.0,
        roi_size: Sequence[int] | None = None,
        estimate_roi: Sequence[int] | int = 64,
        estimate_overlap: float = 0.25,
        estimate_divisor: int = 16,
        estimate_flips: Sequence[Sequence[int]] = ((),),
        std_smoothing: float = 0.0,
        std_calibration: float | Sequence[float] = 1.0,
        mean: str = "samples",
        schedule: str = "linear_beta",
        **schedule_args: Any,
    ) -> None:
        super().__init__()
        _check(prediction_type, residual_scale, floor)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if mean not in ("samples", "first_step"):
            raise ValueError(f"mean must be 'samples' or 'first_step', got {mean!r}")
        calib = [float(v) for v in (std_calibration if isinstance(std_calibration, Sequence) else [std_calibration])]
        if len(calib) not in (1, 2) or not calib[0] > 0:
            raise ValueError(f"std_calibration must be a factor > 0 or [a > 0, b] (a DRF^b), got {std_calibration}")
        if std_smoothing < 0:
            raise ValueError(f"std_smoothing must be >= 0, got {std_smoothing}")
        self.alphas_cumprod = DDPMScheduler(num_train_timesteps, schedule=schedule, **schedule_args).alphas_cumprod
        self.pairs = ddim_timestep_pairs(num_train_timesteps, num_steps, start=start_timestep)  # checks the start
        self.start = self.pairs[0][0]
        self.prediction_type, self.scale, self.floor = prediction_type, float(residual_scale), float(floor)
        self.num_samples, self.seed, self.eta = int(num_samples), int(seed), float(eta)
        self.sample_batch = self.num_samples if sample_batch is None else max(1, int(sample_batch))
        self.std_calibration, self.std_smoothing, self.mean = calib, float(std_smoothing), mean
        window = PaddedSlidingWindowInferer(
            roi_size=estimate_roi, overlap=estimate_overlap, divisor=estimate_divisor, mode="gaussian"
        )
        self.estimate_window = FlipEnsembleInferer(window, estimate_flips)
        self.roi_size = None if roi_size is None else [int(r) for r in roi_size]

    def _refine(self, refiner: Callable[..., torch.Tensor], x: torch.Tensor, t: int) -> torch.Tensor:
        """The refiner's output for ``x = [x_t, condition]`` of the whole volume at timestep ``t``."""
        divisor = int(getattr(refiner, "size_divisor", 1))

        def net(window: torch.Tensor) -> torch.Tensor:
            steps = torch.full((window.shape[0],), t, dtype=torch.long, device=window.device)
            return refiner(window, steps)

        if self.roi_size is not None:
            window = PaddedSlidingWindowInferer(self.roi_size, overlap=0.25, mode="gaussian", divisor=divisor)
            return window(x, net)
        padded, spatial = pad_to_multiple(x, divisor)
        return crop_to_shape(net(padded), spatial)

    def calibration(self, drf: float) -> float:
        """The std factor at this DRF: ``c`` or ``a DRF^b``."""
        a, *b = self.std_calibration
        return a * float(drf) ** b[0] if b else a

    def _std(self, samples: list[torch.Tensor]) -> torch.Tensor:
        """Voxel-wise std of the samples ``(1, 1, *S)``, from the variance smoothed by ``std_smoothing``."""
        if len(samples) < 2:
            return torch.zeros_like(samples[0])
        var = torch.stack(samples).var(0, unbiased=True)
        if self.std_smoothing > 0:
            var = GaussianFilter(var.ndim - 2, self.std_smoothing).to(var.device)(var)
        return var.clamp_min(0).sqrt()

    def _noise(self, shape: Sequence[int], index: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(self.seed + index), dtype=dtype)

    def sample_residuals(self, refiner: Callable[..., torch.Tensor], condition: torch.Tensor) -> tuple[list, list]:
        """Samples of ``r`` for ONE volume's condition ``(1, 3, *S)``: ``(samples, first_step_x0s)``, each a list of
        ``num_samples`` tensors ``(1, 1, *S)``."""
        a0 = float(self.alphas_cumprod[self.start])
        samples, firsts = [], []
        for lo in range(0, self.num_samples, self.sample_batch):
            idx = list(range(lo, min(lo + self.sample_batch, self.num_samples)))
            z = torch.cat([self._noise((1, 1, *condition.shape[2:]), i, condition.dtype) for i in idx])
            x = (math.sqrt(1 - a0) * z).to(condition.device)
            cond = condition.expand(len(idx), *condition.shape[1:])
            gen = torch.Generator().manual_seed(self.seed + 10_000 + lo)
            first = None
            with torch.no_grad():
                for t, t_prev in self.pairs:
                    out = self._refine(refiner, torch.cat([x, cond], dim=1), t)
                    x, x0 = ddim_step(out, t, t_prev, x, self.alphas_cumprod, self.prediction_type, self.eta, gen)
                    first = x0 if first is None else first
            samples += list(x.split(1))
            firsts += list(first.split(1))
        return samples, firsts

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs`` low dose ``(B, 1, *S)`` SUV, ``args[0]`` or ``dose=`` the ``(B, 1)`` dose encoding ->
        ``(B, 3, *S)`` [mean, std, estimate] SUV."""
        dose = kwargs.pop("dose", args[0] if args else None)
        if dose is None:
            raise ValueError("RefinementSamplingInferer needs the dose encoding ln(DRF) / 10 of each volume")
        model = network.module if hasattr(network, "module") else network
        drf = torch.exp(torch.as_tensor(dose, dtype=torch.float64).reshape(-1) * model.dose_log_scale).float()
        low = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        drf = drf.to(low.device).expand(low.shape[0]) if drf.numel() == 1 else drf.to(low.device)
        estimate = model.estimate(low, drf, self.estimate_window)
        outs = []
        for b in range(low.shape[0]):
            cond = refinement_condition(low[b : b + 1], estimate[b : b + 1], drf[b : b + 1], self.scale, self.floor)
            samples, firsts = self.sample_residuals(model.refiner, cond)
            r_mean = torch.stack(samples if self.mean == "samples" else firsts).mean(0)
            e, d = estimate[b : b + 1], drf[b : b + 1]
            unit = noise_scale_map(e, d, self.floor) / self.scale  # image = e + r unit (from_residual)
            image = e + r_mean * unit
            std = self._std([s * unit for s in samples]) * self.calibration(float(d))
            outs.append(torch.cat([image, std, e], dim=1))
        out = torch.cat(outs)
        return convert_to_dst_type(out, inputs)[0] if isinstance(inputs, MetaTensor) else out
