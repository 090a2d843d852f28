"""DDIM sampling maths on top of MONAI's schedulers: v-prediction targets, the DDIM update with correct timestep
pairing. The bundle's training batches and sampler build on them (:mod:`common.refinement`).

MONAI 1.6.1 facts this module works around (each checked by a test in ``tests/test_diffusion.py``):

- ``DDIMScheduler.set_timesteps(N)`` spaces the timesteps with ``linspace(T - 1, 0, N).round()``, but ``step()``
  takes the previous timestep as ``t - T // N``; for ``T = 1000, N = 10`` the schedule is 999, 888, 777, ... while
  ``step`` jumps from 999 to 899, so every step uses an ``alpha_prev`` up to 11 steps away from the timestep the next
  call assumes, and the last step never reaches ``alpha_0``. :func:`ddim_step` takes the previous timestep explicitly
  and :func:`ddim_timestep_pairs` pairs each timestep with the NEXT one of the schedule (the last with ``-1``, i.e.
  ``alpha = 1``).
- ``DiffusionPrepareBatch`` never passes ``mode="concat"`` to the inferer: ``common.refinement.RefinementPrepareBatch``
  does, and ``DiffusionInferer`` then concatenates ``[x_t, condition]``, the channel order the sampler uses too.

Shapes: images ``(B, C, *spatial)``; timesteps ``(B,)`` long.
"""

from __future__ import annotations

import torch

__all__ = ["ddim_step", "ddim_timestep_pairs", "v_target"]


def v_target(
    x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """v-prediction target ``v = sqrt(a_t) eps - sqrt(1 - a_t) x0``, ``a_t = alphas_cumprod[t]`` (Salimans & Ho)."""
    a = alphas_cumprod.to(x0.device, x0.dtype)[timesteps].view(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def ddim_timestep_pairs(num_train_timesteps: int, num_steps: int, start: int | None = None) -> list[tuple[int, int]]:
    """``(t, t_prev)`` for each DDIM step: MONAI's timesteps ``linspace(T - 1, 0, N).round()`` (duplicates removed,
    descending), each paired with the next one; the last pairs with ``-1`` (``alpha_prev = 1``: the clean image).
    ``start`` (default ``T - 1``): the first timestep, for chains that start part-way (``linspace(start, 0, N)``)."""
    first = num_train_timesteps - 1 if start is None else int(start)
    if not 0 <= first < num_train_timesteps:
        raise ValueError(f"start must be in [0, {num_train_timesteps - 1}], got {start}")
    if not 1 <= num_steps <= first + 1:
        raise ValueError(f"num_steps must be in [1, {first + 1}], got {num_steps}")
    ts = torch.linspace(first, 0, num_steps).round().long().tolist()
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
