"""``DiffusionSamplingInferer``: conditional diffusion sampling (DDIM or full DDPM) of a whole volume of any shape,
wrapped as a MONAI ``Inferer`` (``inferer(inputs, network)``), with N samples -> mean and voxel-wise std.

Whole-volume strategy: at EVERY denoising step the network runs over the whole current volume ``x_t`` by overlapping
sliding windows with Gaussian blending (:class:`common.inferers.PaddedSlidingWindowInferer`), and the scheduler
update is applied to the blended whole-volume prediction. So every step sees one consistent volume: neighbouring
windows share ``x_t`` and their predictions are averaged before the next step, and no seam can drift apart over the
chain (the original ran each slab's whole chain separately and mixed the finished slabs with a fixed 0.1 / 0.9
weight). Cost: one whole-volume network pass per step and sample.

Conditioning: the network input is ``[x_t, condition]`` along channels (``common.diffusion.denoise_input``), as in
training. Seeds: sample ``i`` uses ``torch.Generator().manual_seed(seed + i)`` for its initial noise (and the DDPM or
``eta > 0`` noise), so outputs are reproducible for a given seed and do not depend on the number of samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.networks.schedulers import DDPMScheduler
from monai.utils import convert_to_dst_type

from .diffusion import (
    check_residual_options,
    condition_input,
    ddim_step,
    ddim_timestep_pairs,
    denoise_input,
    residual_to_image,
)
from .inferers import PaddedSlidingWindowInferer

__all__ = ["DiffusionSamplingInferer"]


class DiffusionSamplingInferer(Inferer):
    """Sample ``x_0`` given ``inputs`` (the condition, ``(B, 1, *spatial)``) and return ``(B, 2, *spatial)``:
    channel 0 = mean over ``num_samples`` samples, channel 1 = voxel-wise standard deviation (0 for one sample).

    Args:
        num_train_timesteps: T of training.
        schedule / schedule_args: MONAI scheduler schedule (``"linear_beta"``, ``beta_start``/``beta_end``) — must
            match training.
        sampler: ``"ddim"`` (deterministic with ``eta = 0``, ``num_steps`` steps, correct pairing) or ``"ddpm"``
            (ancestral sampling over all T steps with MONAI's ``DDPMScheduler``).
        num_steps: DDIM steps.
        prediction_type: ``"epsilon"`` or ``"v_prediction"`` (as trained).
        num_samples: samples per input (mean + std).
        eta: DDIM stochasticity (0 = deterministic given the initial noise).
        seed: base seed.
        clip: bounds of the predicted ``x_0`` in units of the diffused variable (None: no clipping; use None or wide
            bounds for a residual chain).
        roi_size / overlap / divisor / sw_batch_size: the per-step sliding window (``divisor``: the network's size
            multiple).
        residual_scale: as in training (``common.diffusion.ConcatDiffusionPrepareBatch``): None = the chain
            generates the image; ``k`` = it generates ``k * (image - condition)`` and the output is
            ``condition + sample / k`` (std likewise divided by ``k``).
        residual_norm / residual_floor: as in training: ``"sqrt"`` = the residual was divided by
            ``common.diffusion.residual_std_map(condition)``; the output is ``condition + sample * map / k``.
        condition_sqrt: as in training: the network sees ``common.diffusion.condition_input(condition)``.
        temperature: ``tau`` in ``(0, 1]`` (``< 1``: deterministic DDIM only, ``eta = 0``): the initial noise is
            ``tau z``. With an exact network and a Gaussian posterior the deterministic sampler is an affine map of
            the initial noise, so ``tau z`` gives about ``mean + tau (sample - mean)``: samples ``tau`` times closer to
            the posterior mean (lower error of their mean, less diversity; ``tau -> 0``: the posterior-mean
            estimate). The std channel is divided by ``tau``: under that reading it still estimates the posterior
            std (an approximation for a real network and posterior).
        progress: log each step.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        sampler: str = "ddim",
        num_steps: int = 10,
        prediction_type: str = "epsilon",
        num_samples: int = 1,
        eta: float = 0.0,
        seed: int = 0,
        clip: Sequence[float] | None = (-1.0, 1.0),
        roi_size: Sequence[int] | int = 64,
        overlap: float = 0.25,
        divisor: int | Sequence[int] = 8,
        sw_batch_size: int = 1,
        residual_scale: float | None = None,
        residual_norm: str | None = None,
        residual_floor: float = 0.003,
        condition_sqrt: bool = False,
        temperature: float = 1.0,
        progress: bool = False,
        **schedule_args: Any,
    ) -> None:
        super().__init__()
        if sampler not in ("ddim", "ddpm"):
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            schedule=schedule,
            prediction_type=prediction_type,
            clip_sample=clip is not None,
            **({"clip_sample_min": clip[0], "clip_sample_max": clip[1]} if clip is not None else {}),
            **schedule_args,
        )
        self.num_train_timesteps = int(num_train_timesteps)
        self.sampler, self.num_steps, self.prediction_type = sampler, int(num_steps), prediction_type
        self.num_samples, self.eta, self.seed = int(num_samples), float(eta), int(seed)
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))
        self.window = PaddedSlidingWindowInferer(
            roi_size=roi_size, overlap=overlap, divisor=divisor, sw_batch_size=sw_batch_size, mode="gaussian"
        )
        self.residual_scale = None if residual_scale is None else float(residual_scale)
        check_residual_options(residual_scale, residual_norm, residual_floor, condition_sqrt)
        self.residual_norm, self.residual_floor = residual_norm, float(residual_floor)
        self.condition_sqrt = bool(condition_sqrt)
        if not 0.0 < temperature <= 1.0:
            raise ValueError(f"temperature must be in (0, 1], got {temperature}")
        if temperature != 1.0 and (sampler != "ddim" or eta != 0):
            raise ValueError("temperature < 1 needs the deterministic DDIM sampler (sampler 'ddim', eta 0)")
        self.temperature = float(temperature)
        self.progress = bool(progress)

    def _predict(self, network: Callable[..., Any], x_t: torch.Tensor, cond: torch.Tensor, t: int) -> torch.Tensor:
        """Network output for the whole volume at timestep ``t`` (sliding windows, Gaussian blending); ``cond`` as
        the network sees it (``common.diffusion.condition_input``)."""

        def net(window: torch.Tensor) -> torch.Tensor:
            steps = torch.full((window.shape[0],), t, dtype=torch.long, device=window.device)
            return network(window, timesteps=steps)

        return self.window(denoise_input(x_t, cond), net)

    def sample(self, cond: torch.Tensor, network: Callable[..., Any], seed: int) -> torch.Tensor:
        """One sample ``x_0`` of the same shape as ``cond`` (``(B, 1, *spatial)``)."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x = self.temperature * torch.randn(cond.shape, generator=gen, dtype=cond.dtype).to(cond.device)
        ac = self.scheduler.alphas_cumprod
        net_cond = condition_input(cond, self.residual_scale, self.condition_sqrt, self.residual_floor)
        if self.sampler == "ddim":
            for t, t_prev in ddim_timestep_pairs(self.num_train_timesteps, self.num_steps):
                out = self._predict(network, x, net_cond, t)
                x, _ = ddim_step(out, t, t_prev, x, ac, self.prediction_type, self.eta, gen, self.clip)
            return x
        self.scheduler.set_timesteps(self.num_train_timesteps)
        for t in self.scheduler.timesteps.tolist():
            out = self._predict(network, x, net_cond, int(t))
            x, _ = self.scheduler.step(out, int(t), x, generator=gen)
        return x

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs`` = condition ``(B, 1, *spatial)`` -> ``(B, 2, *spatial)`` = [mean, std] of the samples."""
        if args or kwargs:
            raise TypeError("DiffusionSamplingInferer takes no extra network arguments")
        samples = [self.sample(inputs, network, self.seed + i) for i in range(self.num_samples)]
        if self.residual_scale is not None:
            samples = [
                residual_to_image(s, inputs, self.residual_scale, self.residual_norm, self.residual_floor)
                for s in samples
            ]
        stack = torch.stack(samples)
        std = stack.std(dim=0, unbiased=True) / self.temperature if len(samples) > 1 else torch.zeros_like(samples[0])
        out = torch.cat([stack.mean(dim=0), std], dim=1)
        if hasattr(inputs, "meta"):
            out = convert_to_dst_type(out, inputs)[0]
        return out
