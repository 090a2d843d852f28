"""Diffusion pieces (common.diffusion): DDIM timestep pairing and update against a hand computation, MONAI's
pairing bug shown, v-prediction targets, concat-mode training batches and the channel order at sampling time."""

from __future__ import annotations

import math

import pytest
import torch
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from common.diffusion import (
    ConcatDiffusionPrepareBatch,
    ddim_step,
    ddim_timestep_pairs,
    denoise_input,
    image_to_residual,
    residual_std_map,
    residual_to_image,
    suv_to_network,
    v_target,
)


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


def test_concat_batches_keep_the_channel_order_of_sampling():
    """Training (DiffusionInferer, concat mode) and sampling (denoise_input) feed the network [x_t, condition]."""
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, timesteps, context=None):
            seen.append(x.clone())
            return x[:, :1]

    sched = DDPMScheduler(num_train_timesteps=1000)
    prep = ConcatDiffusionPrepareBatch(1000, condition_name="image", image_name="label")
    clean, cond = torch.zeros(2, 1, 4, 4, 4), torch.full((2, 1, 4, 4, 4), 7.0)
    images, target, args, kwargs = prep({"image": cond, "label": clean})
    assert kwargs["mode"] == "concat" and torch.equal(images, clean) and torch.equal(target, kwargs["noise"])
    DiffusionInferer(sched)(images, Probe(), *args, **kwargs)
    assert torch.equal(seen[0][:, 1:], cond)  # channel 1 = condition
    noisy = sched.add_noise(clean, kwargs["noise"], kwargs["timesteps"])
    torch.testing.assert_close(seen[0][:, :1], noisy)
    torch.testing.assert_close(denoise_input(noisy, cond), seen[0])
    vprep = ConcatDiffusionPrepareBatch(1000, prediction_type="v_prediction", alphas_cumprod=sched.alphas_cumprod)
    _, vt, _, vk = vprep({"image": cond, "label": clean})
    torch.testing.assert_close(vt, v_target(clean, vk["noise"], vk["timesteps"], sched.alphas_cumprod))
    with pytest.raises(ValueError, match="alphas_cumprod"):
        ConcatDiffusionPrepareBatch(1000, prediction_type="v_prediction")


class _Oracle(torch.nn.Module):
    """Predicts the eps (or v) that makes x0 equal to the condition channel: a pointwise, exact 'denoiser'."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon") -> None:
        super().__init__()
        self.ac, self.prediction_type = alphas_cumprod, prediction_type

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = self.ac.to(x.dtype)[timesteps].view(-1, 1, 1, 1, 1)
        x_t, cond = x[:, :1], x[:, 1:]
        eps = (x_t - a.sqrt() * cond) / (1 - a).sqrt()
        return eps if self.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * cond


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_sampling_inferer_reaches_the_oracle_target_on_any_shape(prediction_type):
    from common.diffusion_inferer import DiffusionSamplingInferer

    inferer = DiffusionSamplingInferer(
        num_steps=10, prediction_type=prediction_type, num_samples=2, roi_size=8, overlap=0.5, divisor=4, clip=None
    )
    oracle = _Oracle(inferer.scheduler.alphas_cumprod, prediction_type)
    cond = torch.rand(1, 1, 13, 9, 11) * 0.5
    with torch.no_grad():
        out = inferer(cond, oracle)
    assert out.shape == (1, 2, 13, 9, 11)
    torch.testing.assert_close(out[:, :1], cond, atol=1e-4, rtol=0)
    assert float(out[:, 1:].abs().max()) < 1e-4  # the oracle leaves no sample-to-sample spread


def test_sampling_windows_blend_without_seams_on_a_constant_volume():
    from common.diffusion_inferer import DiffusionSamplingInferer

    inferer = DiffusionSamplingInferer(num_steps=5, roi_size=8, overlap=0.5, divisor=4)
    oracle = _Oracle(inferer.scheduler.alphas_cumprod)
    with torch.no_grad():

        def pass_condition(x, timesteps):  # a new tensor: MONAI weights window outputs in place, a view would
            return x[:, 1:].clone()  # corrupt the input of the overlapping windows

        const = inferer._predict(pass_condition, torch.zeros(1, 1, 20, 12, 9), torch.full((1, 1, 20, 12, 9), 0.3), 500)
        out = inferer(torch.full((1, 1, 20, 12, 9), 0.3), oracle)
    torch.testing.assert_close(const, torch.full_like(const, 0.3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :1], torch.full_like(out[:, :1], 0.3), atol=1e-4, rtol=0)


def test_sampling_is_reproducible_with_a_seed_and_full_ddpm_works():
    from common.diffusion_inferer import DiffusionSamplingInferer

    class Zero(torch.nn.Module):
        def forward(self, x, timesteps):
            return torch.zeros_like(x[:, :1])

    cond = torch.zeros(1, 1, 8, 8, 8)
    kw = dict(num_steps=4, roi_size=8, divisor=4, eta=1.0)
    a = DiffusionSamplingInferer(seed=5, **kw)(cond, Zero())
    b = DiffusionSamplingInferer(seed=5, **kw)(cond, Zero())
    c = DiffusionSamplingInferer(seed=6, **kw)(cond, Zero())
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-3
    ddpm = DiffusionSamplingInferer(sampler="ddpm", roi_size=8, divisor=4, clip=None)
    with torch.no_grad():
        out = ddpm(torch.full((1, 1, 8, 8, 8), 0.2), _Oracle(ddpm.scheduler.alphas_cumprod))
    torch.testing.assert_close(out[:, :1], torch.full_like(out[:, :1], 0.2), atol=2e-3, rtol=0)


def test_residual_chain_generates_the_difference_and_the_sampler_adds_the_condition_back():
    from common.diffusion_inferer import DiffusionSamplingInferer

    prep = ConcatDiffusionPrepareBatch(1000, residual_scale=10.0)
    clean, cond = torch.full((1, 1, 4, 4, 4), 0.5), torch.full((1, 1, 4, 4, 4), 0.3)
    images, _, _, kwargs = prep({"image": cond, "label": clean})
    torch.testing.assert_close(images, torch.full_like(clean, 2.0))  # 10 * (0.5 - 0.3)
    inferer = DiffusionSamplingInferer(
        num_steps=5, roi_size=8, divisor=4, residual_scale=10.0, clip=None, num_samples=2
    )

    class ResidualOracle(torch.nn.Module):  # eps that makes the residual x0 equal to 2.0 everywhere
        def forward(self, x, timesteps):
            a = inferer.scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1, 1)
            return (x[:, :1] - a.sqrt() * 2.0) / (1 - a).sqrt()

    with torch.no_grad():
        out = inferer(torch.full((1, 1, 8, 8, 8), 0.3), ResidualOracle())
    torch.testing.assert_close(out[:, :1], torch.full_like(out[:, :1], 0.5), atol=1e-4, rtol=0)
    assert float(out[:, 1:].abs().max()) < 1e-4


def test_sample_count_study_script_measures_the_samples_and_the_one_step_estimate():
    """scripts/sample_count_study.py with the bundle's inference.yaml: a residual oracle (it predicts the v whose x0 is
    the true residual k (full - low)) gives the full dose from one step and from every sample mean, far above the
    noisy input; a network whose prediction depends on the initial noise gives samples that spread."""
    import numpy as np
    from conftest import ROOT, load_script
    from monai.bundle import ConfigParser

    mod = load_script(ROOT / "bundles" / "pet_lowdose_ddpm3d" / "scripts" / "sample_count_study.py")
    parser = ConfigParser()
    parser.read_config(str(mod.CONFIG))
    parser["roi_size"] = [16, 16, 16]
    rng = np.random.default_rng(0)
    full = np.full((16, 12, 8), 2.0)
    full[4:10, 3:9, 2:6] = 6.0
    low = np.clip(full + rng.normal(0, 0.5, full.shape), 0, None)
    k, suv_max = parser["residual_scale"], parser["suv_max"]
    to_net = lambda v: suv_to_network(v, suv_max).float()[None, None]  # noqa: E731
    x0 = image_to_residual(to_net(full), to_net(low), k, parser["residual_norm"], parser["residual_floor"])
    ac = mod.sampler(parser, 1).scheduler.alphas_cumprod

    class ResidualOracle(torch.nn.Module):
        def __init__(self, jitter: float = 0.0) -> None:
            super().__init__()
            self.jitter = jitter

        def forward(self, x, timesteps):
            a = ac[timesteps].view(-1, 1, 1, 1, 1)
            target = x0 + self.jitter * x[:, :1]  # jitter: depends on the sample's own noise
            eps = (x[:, :1] - a.sqrt() * target) / (1 - a).sqrt()
            return a.sqrt() * eps - (1 - a).sqrt() * target

    exact = mod.study(ResidualOracle(), parser, low, full, samples=2, steps=5)
    assert set(exact) == {"input", "one_step", "mean_1", "mean_2", "spread"}
    assert exact["input"] < 30 and min(exact["one_step"], exact["mean_1"], exact["mean_2"]) > 60
    noisy = mod.study(ResidualOracle(jitter=0.05), parser, low, full, samples=2, steps=5)
    assert noisy["spread"] > 0 and noisy["mean_2"] < exact["mean_2"] - 10


def test_sqrt_residual_norm_evens_out_count_noise_across_activity_levels():
    """Count noise (variance ~ activity): the plain residual's std grows ~ sqrt(activity), 5.7x from SUV 0.25 to 8;
    divided by residual_std_map it is about the same at every level. The map is exact on a known value and the
    scaling inverts exactly."""
    gen = torch.Generator().manual_seed(0)
    suv_max, levels = 16.0, (0.25, 1.0, 4.0, 8.0)
    full = torch.cat([torch.full((1, 1, 16, 16, 16), v) for v in levels], dim=2)
    low = full + 0.1 * full.sqrt() * torch.randn(full.shape, generator=gen)
    to_net = lambda v: 2 * v / suv_max - 1  # noqa: E731
    plain = image_to_residual(to_net(full), to_net(low), 10.0)
    normed = image_to_residual(to_net(full), to_net(low), 10.0, "sqrt", 0.003)

    def band_std(r):
        return torch.stack([b.std() for b in r.split(16, dim=2)])

    assert float(band_std(plain).max() / band_std(plain).min()) > 4.0
    assert float(band_std(normed).max() / band_std(normed).min()) < 1.15
    torch.testing.assert_close(residual_std_map(torch.tensor([to_net(4.0), -1.0])), torch.tensor([0.5, 0.003**0.5]))
    back = residual_to_image(normed, to_net(low), 10.0, "sqrt", 0.003)
    torch.testing.assert_close(back, to_net(full), atol=1e-6, rtol=0)


def test_sqrt_residual_norm_is_applied_in_training_and_undone_in_sampling():
    """The training batch divides by the low dose's map; the sampler multiplies the samples (mean AND std) back."""
    from common.diffusion_inferer import DiffusionSamplingInferer

    cond = torch.full((1, 1, 8, 8, 8), 0.0)  # (c + 1) / 2 = 0.5: map sqrt(0.5)
    prep = ConcatDiffusionPrepareBatch(1000, residual_scale=10.0, residual_norm="sqrt")
    images, _, _, _ = prep({"image": cond, "label": cond + 0.1})
    torch.testing.assert_close(images, torch.full_like(cond, 1.0 / 0.5**0.5))
    inferer = DiffusionSamplingInferer(
        num_steps=4, roi_size=8, divisor=4, residual_scale=10.0, residual_norm="sqrt", clip=None, num_samples=3
    )

    class NoiseCopy(torch.nn.Module):  # eps = x_t: each sample is a fixed multiple of its own initial noise
        def forward(self, x, timesteps):
            return x[:, :1].clone()

    with torch.no_grad():
        plain_std = DiffusionSamplingInferer(
            num_steps=4, roi_size=8, divisor=4, residual_scale=10.0, clip=None, num_samples=3
        )(cond, NoiseCopy())[:, 1:]
        out = inferer(cond, NoiseCopy())
    assert float(plain_std.mean()) > 1e-3  # the samples do differ
    torch.testing.assert_close(out[:, 1:], plain_std * 0.5**0.5, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="residual_norm"):
        ConcatDiffusionPrepareBatch(1000, residual_norm="log", residual_scale=10.0)
    with pytest.raises(ValueError, match="residual_scale"):
        DiffusionSamplingInferer(residual_norm="sqrt")


def test_sqrt_condition_input_reaches_the_network_in_training_and_sampling():
    """condition_sqrt: the network sees 2 k sqrt((c + 1) / 2) as its second channel, in the training batch (through
    MONAI's DiffusionInferer in concat mode) and in every sampling step; the residual still uses the raw condition."""
    from common.diffusion import condition_input
    from common.diffusion_inferer import DiffusionSamplingInferer

    cond = torch.full((1, 1, 8, 8, 8), -0.5)  # SUV / suv_max = 0.25: network input 2 * 10 * 0.5 = 10
    torch.testing.assert_close(condition_input(cond, 10.0, True), torch.full_like(cond, 10.0))
    assert condition_input(cond, 10.0, False) is cond
    prep = ConcatDiffusionPrepareBatch(1000, residual_scale=10.0, condition_sqrt=True)
    images, _, _, kwargs = prep({"image": cond, "label": cond + 0.1})
    torch.testing.assert_close(images, torch.full_like(cond, 1.0))  # 10 * 0.1, raw condition
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, timesteps, context=None):
            seen.append(x[:, 1:].detach().clone())
            return torch.zeros_like(x[:, :1])

    DiffusionInferer(DDPMScheduler(1000))(images, Spy(), **kwargs)
    inferer = DiffusionSamplingInferer(
        num_steps=2, roi_size=8, divisor=4, residual_scale=10.0, condition_sqrt=True, clip=None
    )
    with torch.no_grad():
        inferer(cond, Spy())
    assert len(seen) == 3
    for s in seen:
        torch.testing.assert_close(s, torch.full_like(cond, 10.0))
    with pytest.raises(ValueError, match="residual_scale"):
        ConcatDiffusionPrepareBatch(1000, condition_sqrt=True)


def test_temperature_scales_each_sample_towards_the_mean_and_the_std_channel_undoes_it():
    """A network that is linear in x_t (eps = x_t) makes each DDIM sample a fixed multiple of its initial noise:
    at temperature 0.5 the residual of every sample (hence of their mean) halves, and the std channel, divided by
    the temperature, equals the temperature-1 std."""
    from common.diffusion_inferer import DiffusionSamplingInferer

    class NoiseCopy(torch.nn.Module):
        def forward(self, x, timesteps):
            return x[:, :1].clone()

    cond = torch.full((1, 1, 8, 8, 8), -0.5)
    kw = dict(num_steps=4, roi_size=8, divisor=4, residual_scale=10.0, residual_norm="sqrt", clip=None, num_samples=3)
    with torch.no_grad():
        hot = DiffusionSamplingInferer(**kw)(cond, NoiseCopy())
        cool = DiffusionSamplingInferer(temperature=0.5, **kw)(cond, NoiseCopy())
    assert float((hot[:, :1] - cond).abs().max()) > 1e-3
    torch.testing.assert_close(cool[:, :1] - cond, 0.5 * (hot[:, :1] - cond), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cool[:, 1:], hot[:, 1:], atol=1e-6, rtol=1e-5)
    for bad in ({"temperature": 0.0}, {"temperature": 0.5, "sampler": "ddpm"}, {"temperature": 0.5, "eta": 1.0}):
        with pytest.raises(ValueError, match="temperature"):
            DiffusionSamplingInferer(**{**kw, **bad})


def test_residual_by_activity_script_reports_the_plain_residual_growing_and_the_normalised_one_flat():
    """scripts/residual_by_activity.py on a count-noise phantom (variance ~ SUV): per band, the plain residual's std
    grows with the activity, the sqrt-normalised one does not; an empty band is nan."""
    import numpy as np
    from conftest import ROOT, load_script

    mod = load_script(ROOT / "bundles" / "pet_lowdose_ddpm3d" / "scripts" / "residual_by_activity.py")
    rng = np.random.default_rng(0)
    full = np.concatenate([np.full((8, 8, 8), v) for v in (0.5, 2.0, 6.0)], axis=0)  # bands 0.05-1, 1-3, 3-8
    low = full + 0.1 * np.sqrt(full) * rng.standard_normal(full.shape)
    res = mod.band_stds(low, full, 10.0, 16.0, 0.003)
    plain, normed = np.array(res["plain"]), np.array(res["sqrt"])
    assert np.isnan(plain[0]) and np.isnan(plain[4])  # no background, nothing >= SUV 8
    assert plain[3] / plain[1] > 3.0 and normed[3] / normed[1] < 1.2


def test_bundle_pipeline_keeps_a_suv_40_lesion():
    """inference.yaml's preprocessing -> sampler -> postprocessing with a network that knows the answer (zero
    residual: the output is the input) returns a SUV 40 lesion at SUV 40 (the former clip at SUV 16 flattened it)."""
    import tempfile

    import numpy as np
    from conftest import ROOT
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    bundle = ROOT / "bundles" / "pet_lowdose_ddpm3d"
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        parser.update({"bundle_root": str(bundle), "output_dir": tmp, "roi_size": [16, 16, 16], "num_samples": 2})
        pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
        inferer = parser.get_parsed_content("inferer")
        ac = inferer.scheduler.alphas_cumprod

        def zero_residual_v(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            a = ac[timesteps].view(-1, 1, 1, 1, 1).to(x.dtype)
            return (a / (1 - a)).sqrt() * x[:, :1]  # v of x_t when x_0 = 0 (x_t is pure noise)

        suv = np.full((20, 18, 16), 1.0, np.float32)
        suv[8:12, 7:11, 6:10] = 40.0
        suv[2:4, 2:4, 2:4] = 12.0
        image = MetaTensor(torch.from_numpy(suv)[None], affine=torch.eye(4), meta={"filename_or_obj": "lesion.nii.gz"})
        item = pre.transforms[-1]({"image": image})  # the SUV -> network-unit scaling (after loading + checks)
        assert float(item["image"].max()) > 1.0  # not clipped at the scale
        out = inferer(item["image"][None], zero_residual_v)
        item["pred"] = out[0]
        result = post(item)
        pred = result["pred"][0].numpy()
    assert abs(float(pred.max()) - 40.0) < 0.01 * 40.0
    np.testing.assert_allclose(pred, suv, rtol=1e-3, atol=1e-3)


def test_suv_fidelity_script_measures_lesion_liver_and_hot_voxel_bias():
    import numpy as np
    from conftest import ROOT, load_script

    mod = load_script(ROOT / "bundles" / "pet_lowdose_ddpm3d" / "scripts" / "suv_fidelity.py")
    ref = np.ones((8, 8, 8), np.float32)
    ref[1:3, 1:3, 1:3], ref[5:7, 5:7, 5:7] = 40.0, 4.0
    lesions = np.zeros_like(ref, dtype=np.int16)
    lesions[1:3, 1:3, 1:3], lesions[5:7, 5:7, 5:7] = 1, 2
    liver = np.zeros_like(ref, dtype=bool)
    liver[0, 5:, :] = True
    clipped = np.minimum(ref, 16.0)  # the former normalisation
    f = mod.item_figures(low=ref * 1.1, out=clipped, ref=ref, lesions=lesions, liver=liver, hot=16.0)
    np.testing.assert_allclose(f["lesion_suvmax_input"], [10.0, 10.0], rtol=1e-5)
    np.testing.assert_allclose(f["lesion_suvmax_output"], [-60.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(f["liver_suvmean_output"], [0.0], atol=1e-6)
    np.testing.assert_allclose(f["hot_mean_output"], [-60.0], atol=1e-4)
    assert f["hot_max_output"] == [16.0] and f["hot_max_reference"] == [40.0]
