"""Conditional diffusion pieces on top of MONAI's generative modules: training batches in concat mode, v-prediction
targets, and a DDIM sampler with correct timestep pairing.

MONAI 1.6.1 facts this module works around (each checked by a test in ``tests/test_diffusion.py``):

- ``DDIMScheduler.set_timesteps(N)`` spaces the timesteps with ``linspace(T - 1, 0, N).round()``, but ``step()``
  takes the previous timestep as ``t - T // N``; for ``T = 1000, N = 10`` the schedule is 999, 888, 777, ... while
  ``step`` jumps from 999 to 899, so every step uses an ``alpha_prev`` up to 11 steps away from the timestep the next
  call assumes, and the last step never reaches ``alpha_0``. :func:`ddim_step` takes the previous timestep explicitly
  and :func:`ddim_timestep_pairs` pairs each timestep with the NEXT one of the schedule (the last with ``-1``, i.e.
  ``alpha = 1``).
- ``DiffusionPrepareBatch`` never passes ``mode="concat"`` to the inferer: :class:`ConcatDiffusionPrepareBatch`
  does, and ``DiffusionInferer`` then concatenates ``[x_t, condition]`` — the channel order :func:`denoise_input`
  uses at sampling time, too.

Shapes: images ``(B, C, *spatial)``; timesteps ``(B,)`` long.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.engines.utils import DiffusionPrepareBatch

__all__ = [
    "ConcatDiffusionPrepareBatch",
    "ddim_step",
    "ddim_timestep_pairs",
    "denoise_input",
    "check_residual_options",
    "condition_input",
    "image_to_residual",
    "residual_std_map",
    "residual_to_image",
    "suv_to_network",
    "v_target",
]

RESIDUAL_NORMS = (None, "sqrt")


def check_residual_options(
    residual_scale: float | None, residual_norm: str | None, residual_floor: float, condition_sqrt: bool
) -> None:
    """Raise ``ValueError`` for residual-diffusion settings that cannot work: an unknown ``residual_norm``, a
    ``residual_norm`` or ``condition_sqrt`` without residual diffusion (``residual_scale`` None), a floor <= 0.
    Training (:class:`ConcatDiffusionPrepareBatch`) and sampling (``DiffusionSamplingInferer``) share it."""
    if residual_norm not in RESIDUAL_NORMS:
        raise ValueError(f"residual_norm must be one of {RESIDUAL_NORMS}, got {residual_norm!r}")
    if residual_norm is not None and residual_scale is None:
        raise ValueError("residual_norm needs residual diffusion (a residual_scale)")
    if condition_sqrt and residual_scale is None:
        raise ValueError("condition_sqrt needs residual diffusion (a residual_scale)")
    if not residual_floor > 0:
        raise ValueError(f"residual_floor must be > 0, got {residual_floor}")


def suv_to_network(suv: np.ndarray, suv_max: float) -> torch.Tensor:
    """SUV volume (numpy, any shape) -> network units ``2 SUV / suv_max - 1`` (the bundles'
    ``ScaleIntensityRanged(a_min=0, a_max=suv_max, b_min=-1, b_max=1, clip=False)``), same shape and dtype.
    ``suv_max`` is a scale, not a cap: a lesion of SUV 40 maps to 4 with ``suv_max`` 16 and keeps its value."""
    return torch.from_numpy(2 * np.asarray(suv) / suv_max - 1)


def residual_std_map(condition: torch.Tensor, floor: float = 0.003) -> torch.Tensor:
    """Per-voxel noise-scale map of a count image, ``sqrt(max((c + 1) / 2, floor))``, same shape as ``condition``.

    ``condition`` is in network units ``c = 2 SUV / suv_max - 1``, so ``(c + 1) / 2 = SUV / suv_max`` (above 1 for
    SUVs above ``suv_max``: nothing is clipped).
    Count noise has variance proportional to the activity, so ``(full - low) / map`` has about the same amplitude
    in a lung (SUV 0.3) and a bladder (SUV 20) voxel at a given dose (a variance-stabilising scaling of the
    residual; the bundle README gives the measured residual std by activity band). ``floor`` (a fraction of
    ``suv_max``) keeps the background finite."""
    return ((condition + 1) * 0.5).clamp_min(float(floor)).sqrt()


def image_to_residual(
    image: torch.Tensor, condition: torch.Tensor, scale: float, norm: str | None = None, floor: float = 0.003
) -> torch.Tensor:
    """The diffused variable of residual diffusion: ``scale * (image - condition)``, divided by
    :func:`residual_std_map` of the condition when ``norm == "sqrt"``. Network units; shapes ``(B, 1, *S)``."""
    r = scale * (image - condition)
    return r / residual_std_map(condition, floor) if norm == "sqrt" else r


def residual_to_image(
    residual: torch.Tensor, condition: torch.Tensor, scale: float, norm: str | None = None, floor: float = 0.003
) -> torch.Tensor:
    """Inverse of :func:`image_to_residual`: ``condition + residual * map / scale``. Affine in ``residual`` for a
    given condition, so the mean of samples maps to the mean image and their std to ``std * map / scale``."""
    if norm == "sqrt":
        residual = residual * residual_std_map(condition, floor)
    return condition + residual / scale


def condition_input(
    condition: torch.Tensor, scale: float | None = None, sqrt: bool = False, floor: float = 0.003
) -> torch.Tensor:
    """The condition as the network sees it: unchanged, or (``sqrt``) ``2 scale residual_std_map(condition)``, i.e.
    ``2 k sqrt(SUV / suv_max)``: variance-stabilised, so its count noise has about the residual's amplitude (the
    residual is ``~ k (sqrt-domain full - sqrt-domain low)`` to first order) in every activity band, instead of
    1/40 of the ``x_t`` channel's unit noise in network units. Shape unchanged ``(B, 1, *S)``."""
    if not sqrt:
        return condition
    if scale is None:
        raise ValueError("condition_sqrt needs residual diffusion (a residual_scale)")
    return 2.0 * float(scale) * residual_std_map(condition, floor)


def v_target(
    x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """v-prediction target ``v = sqrt(a_t) eps - sqrt(1 - a_t) x0``, ``a_t = alphas_cumprod[t]`` (Salimans & Ho)."""
    a = alphas_cumprod.to(x0.device, x0.dtype)[timesteps].view(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * noise - (1 - a).sqrt() * x0


class ConcatDiffusionPrepareBatch(DiffusionPrepareBatch):
    """MONAI's ``DiffusionPrepareBatch`` with ``mode="concat"`` (the network input is ``[x_t, condition]``) and an
    epsilon or v target.

    Args:
        num_train_timesteps: T.
        condition_name: batch key of the condition (the low-dose image).
        image_name / target: the batch's clean image is read by MONAI's default batch preparation (``image``); set
            ``image_name`` to take the clean image from another key (e.g. ``label``).
        prediction_type: ``"epsilon"`` or ``"v_prediction"``.
        alphas_cumprod: the scheduler's ``alphas_cumprod`` (needed for v targets).
        residual_scale: None: the diffused variable is the clean image. A number ``k``: it is the residual
            ``k * (clean - condition)`` (residual diffusion: the chain only has to generate what the low-dose image
            lacks, a signal of small amplitude that ``k`` brings to about unit scale); the sampler adds it back.
        residual_norm: None, or ``"sqrt"``: the residual is divided by :func:`residual_std_map` of the condition
            (count noise grows with activity; the network's GroupNorms make its output amplitude blind to it).
        residual_floor: ``floor`` of :func:`residual_std_map`.
        condition_sqrt: feed the condition to the network as :func:`condition_input` (the residual is still
            computed from the condition in network units).
    """

    def __init__(
        self,
        num_train_timesteps: int,
        condition_name: str = "image",
        image_name: str = "label",
        prediction_type: str = "epsilon",
        alphas_cumprod: torch.Tensor | None = None,
        residual_scale: float | None = None,
        residual_norm: str | None = None,
        residual_floor: float = 0.003,
        condition_sqrt: bool = False,
    ) -> None:
        super().__init__(num_train_timesteps, condition_name)
        check_residual_options(residual_scale, residual_norm, residual_floor, condition_sqrt)
        self.residual_scale = None if residual_scale is None else float(residual_scale)
        self.residual_norm, self.residual_floor = residual_norm, float(residual_floor)
        self.condition_sqrt = bool(condition_sqrt)
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        if prediction_type == "v_prediction" and alphas_cumprod is None:
            raise ValueError("v_prediction needs the scheduler's alphas_cumprod")
        self.image_name = image_name
        self.prediction_type = prediction_type
        self.alphas_cumprod = alphas_cumprod

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        return v_target(images, noise, timesteps, self.alphas_cumprod)

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        if not isinstance(batchdata, Mapping) or self.image_name not in batchdata:
            raise KeyError(f"diffusion batches need the clean image under '{self.image_name}'")
        images = batchdata[self.image_name].to(device, non_blocking=non_blocking)
        condition = batchdata[self.condition_name].to(device, non_blocking=non_blocking)
        if self.residual_scale is not None:
            images = image_to_residual(images, condition, self.residual_scale, self.residual_norm, self.residual_floor)
        noise = self.get_noise(images)
        timesteps = self.get_timesteps(images)
        target = self.get_target(images, noise, timesteps)
        net_condition = condition_input(condition, self.residual_scale, self.condition_sqrt, self.residual_floor)
        return (
            images,
            target,
            (),
            {"noise": noise, "timesteps": timesteps, "condition": net_condition, "mode": "concat"},
        )


def denoise_input(x_t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """The network input at sampling time: ``[x_t, condition]`` along channels, as ``DiffusionInferer`` in concat mode
    builds it in training."""
    return torch.cat([x_t, condition], dim=1)


def ddim_timestep_pairs(num_train_timesteps: int, num_steps: int) -> list[tuple[int, int]]:
    """``(t, t_prev)`` for each DDIM step: MONAI's timesteps ``linspace(T - 1, 0, N).round()`` (duplicates removed,
    descending), each paired with the next one; the last pairs with ``-1`` (``alpha_prev = 1``: the clean image)."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    ts = torch.linspace(num_train_timesteps - 1, 0, num_steps).round().long().tolist()
    ts = list(dict.fromkeys(int(t) for t in ts))
    return list(zip(ts, ts[1:] + [-1], strict=True))


def ddim_step(
    model_output: torch.Tensor,
    t: int,
    t_prev: int,
    x_t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update from timestep ``t`` to ``t_prev`` (``-1``: to the clean image), Song et al. 2021 eq. 12/16.

    ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``;
    ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s z``, ``s = eta sqrt((1 - a_prev)/(1 - a_t))
    sqrt(1 - a_t / a_prev)``. ``model_output`` is eps or v (``prediction_type``); ``clip`` bounds ``x0``.
    Returns ``(x_prev, x0)``.
    """
    ac = alphas_cumprod.to(x_t.device, torch.float64)
    a_t = ac[t]
    a_prev = ac[t_prev] if t_prev >= 0 else torch.ones((), dtype=torch.float64, device=x_t.device)
    a_t_f, a_prev_f = float(a_t), float(a_prev)
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (x_t - (1 - a_t_f) ** 0.5 * eps) / a_t_f**0.5
    elif prediction_type == "v_prediction":
        x0 = a_t_f**0.5 * x_t - (1 - a_t_f) ** 0.5 * model_output
        eps = a_t_f**0.5 * model_output + (1 - a_t_f) ** 0.5 * x_t
    else:
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    if clip is not None:
        x0 = x0.clamp(float(clip[0]), float(clip[1]))
        eps = (x_t - a_t_f**0.5 * x0) / (1 - a_t_f) ** 0.5
    sigma = eta * ((1 - a_prev_f) / (1 - a_t_f)) ** 0.5 * (1 - a_t_f / a_prev_f) ** 0.5 if eta > 0 else 0.0
    x_prev = a_prev_f**0.5 * x0 + max(1 - a_prev_f - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
        x_prev = x_prev + sigma * noise
    return x_prev, x0
