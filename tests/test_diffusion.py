"""DDIM maths (common.diffusion): timestep pairing and update against a hand computation, MONAI's pairing bug shown,
v-prediction targets, chains that start part-way. The refinement chain built on them: tests/test_refinement.py."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from common.diffusion import ddim_step, ddim_timestep_pairs, v_target


def _alphas(T: int = 1000) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)  # linear schedule, as MONAI's "linear_beta"
    return torch.cumprod(1 - betas, 0)


def test_monai_ddim_pairs_timesteps_wrongly_at_small_step_counts():
    """The MONAI 1.6.1 pitfall this module exists for: set_timesteps and step() disagree on the previous timestep."""
    sched = DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(10)
    ts = sched.timesteps.tolist()
    assert ts[:3] == [999, 888, 777] and ts[-1] == 0
    implied_prev = [t - 1000 // 10 for t in ts]  # what step() uses
    assert implied_prev[0] == 899 != ts[1]
    assert max(abs(p - q) for p, q in zip(implied_prev[:-1], ts[1:], strict=True)) == 11


@pytest.mark.parametrize("n", [1, 10, 20, 50, 1000])
def test_ddim_pairs_follow_the_schedule_and_end_at_the_clean_image(n):
    pairs = ddim_timestep_pairs(1000, n)
    assert len(pairs) == n
    assert pairs[0][0] == 999 and pairs[-1][1] == -1 and (n == 1 or pairs[-1][0] == 0)
    for (t, t_prev), (t_next, _) in zip(pairs, pairs[1:], strict=False):
        assert t_prev == t_next < t
    sched = DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(n)
    assert [t for t, _ in pairs] == sched.timesteps.tolist()  # same timesteps as MONAI, only the pairing differs


def test_ddim_step_matches_a_hand_computation():
    ac = _alphas()
    torch.manual_seed(0)
    x_t, eps = torch.randn(1, 1, 4, 4, 4, dtype=torch.float64), torch.randn(1, 1, 4, 4, 4, dtype=torch.float64)
    t, t_prev = 888, 777
    a_t, a_p = float(ac[t]), float(ac[t_prev])
    x0_hand = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    prev_hand = math.sqrt(a_p) * x0_hand + math.sqrt(1 - a_p) * eps
    prev, x0 = ddim_step(eps, t, t_prev, x_t, ac)
    torch.testing.assert_close(x0, x0_hand)
    torch.testing.assert_close(prev, prev_hand)
    # MONAI's step() at this point uses alpha of t - 100 = 788 instead of 777: a different result
    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    sched.alphas_cumprod = ac
    sched.set_timesteps(10)
    monai_prev, _ = sched.step(eps, t, x_t)
    assert (monai_prev - prev_hand).abs().max() > 1e-3
    # the last step lands on x0 exactly
    last, x0_last = ddim_step(eps, 0, -1, x_t, ac)
    torch.testing.assert_close(last, x0_last)


def test_ddim_with_exact_noise_recovers_the_clean_image_in_any_number_of_steps():
    """With the true eps of a noised image, deterministic DDIM returns exactly that image: a check of the whole chain
    (a wrong pairing leaves a residual error)."""
    ac = _alphas()
    torch.manual_seed(1)
    x0 = torch.rand(1, 1, 6, 6, 6, dtype=torch.float64)
    eps = torch.randn_like(x0)
    for n in (5, 10, 20):
        x = math.sqrt(float(ac[999])) * x0 + math.sqrt(1 - float(ac[999])) * eps
        for t, t_prev in ddim_timestep_pairs(1000, n):
            x, _ = ddim_step(eps, t, t_prev, x, ac)
        torch.testing.assert_close(x, x0)


def test_v_prediction_step_equals_the_epsilon_step():
    ac = _alphas()
    torch.manual_seed(2)
    x0, eps = torch.rand(1, 1, 5, 5, 5, dtype=torch.float64), torch.randn(1, 1, 5, 5, 5, dtype=torch.float64)
    t = torch.tensor([500])
    a = float(ac[500])
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    v = v_target(x0, eps, t, ac)
    prev_v, x0_v = ddim_step(v, 500, 400, x_t, ac, prediction_type="v_prediction")
    prev_e, x0_e = ddim_step(eps, 500, 400, x_t, ac, prediction_type="epsilon")
    torch.testing.assert_close(x0_v, x0)
    torch.testing.assert_close(prev_v, prev_e)


def test_eta_adds_seeded_noise():
    ac = _alphas()
    x_t, eps = torch.zeros(1, 1, 3, 3, 3), torch.zeros(1, 1, 3, 3, 3)
    a = ddim_step(eps, 500, 400, x_t, ac, eta=1.0, generator=torch.Generator().manual_seed(3))[0]
    b = ddim_step(eps, 500, 400, x_t, ac, eta=1.0, generator=torch.Generator().manual_seed(3))[0]
    c = ddim_step(eps, 500, 400, x_t, ac, eta=0.0)[0]
    torch.testing.assert_close(a, b)
    assert a.abs().max() > 0 and c.abs().max() == 0


def test_chains_that_start_part_way_end_at_the_clean_image():
    """start=t0: linspace(t0, 0, N) paired as usual; exact noise brings x_t0 back to x0 exactly; bad starts refused."""
    pairs = ddim_timestep_pairs(1000, 4, start=300)
    assert pairs == [(300, 200), (200, 100), (100, 0), (0, -1)]
    ac = _alphas()
    torch.manual_seed(4)
    x0, eps = torch.rand(1, 1, 4, 4, 4, dtype=torch.float64), torch.randn(1, 1, 4, 4, 4, dtype=torch.float64)
    x = math.sqrt(float(ac[300])) * x0 + math.sqrt(1 - float(ac[300])) * eps
    for t, t_prev in pairs:
        x, _ = ddim_step(eps, t, t_prev, x, ac)
    torch.testing.assert_close(x, x0)
    for bad in ({"start": 1000}, {"start": -1}):
        with pytest.raises(ValueError, match="start"):
            ddim_timestep_pairs(1000, 4, **bad)
    with pytest.raises(ValueError, match="num_steps"):
        ddim_timestep_pairs(1000, 5, start=3)
