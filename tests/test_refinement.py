"""Residual diffusion over an estimate (common.refinement, common.networks.refiner, common.uncertainty) and the
pet_lowdose_ddpm3d configs that use them: count-noise units, the training batch (estimator run, trimmed, concat
order), the whole-volume sampler against an oracle on any shape, seeds, the uncertainty calibration maths and script,
SUV 40 kept through the bundle's own pre/post-processing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import ROOT, load_script
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDPMScheduler

from common.diffusion import v_target
from common.networks import EstimateRefiner, RefinerUNet
from common.refinement import (
    RefinementPrepareBatch,
    RefinementSamplingInferer,
    from_residual,
    noise_scale_map,
    refinement_condition,
    to_residual,
)
from common.uncertainty import calibration_stats, fit_std_calibration, spearman

BUNDLE = ROOT / "bundles" / "pet_lowdose_ddpm3d"


class Scale(torch.nn.Module):
    """A stand-in estimator: ``factor * x`` whatever the dose (records the doses it was given)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor, self.doses = factor, []
        self.w = torch.nn.Parameter(torch.ones(()))  # something to freeze

    def forward(self, x: torch.Tensor, dose: torch.Tensor) -> torch.Tensor:
        self.doses.append(dose.detach().clone())
        return self.factor * x * self.w


class Oracle(torch.nn.Module):
    """An exact refiner for volumes whose residual is ``alpha`` times the condition's noise channel (a full dose
    ``e + alpha (low - e)``): it predicts the v whose x0 is that residual, pointwise, so windows work too."""

    size_divisor = 1

    def __init__(self, alpha: float, alphas_cumprod: torch.Tensor, jitter: float = 0.0) -> None:
        super().__init__()
        self.alpha, self.ac, self.jitter = alpha, alphas_cumprod, jitter

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context=None) -> torch.Tensor:
        a = self.ac.to(x.dtype)[timesteps].view(-1, 1, 1, 1, 1)
        x_t = x[:, :1]
        target = self.alpha * x[:, 2:3] + self.jitter * x_t  # jitter: each sample depends on its own noise
        eps = (x_t - a.sqrt() * target) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * target


def _volume(shape=(13, 9, 11), seed=0):
    g = torch.Generator().manual_seed(seed)
    full = 1.0 + 3.0 * torch.rand((1, 1, *shape), generator=g)
    full[..., 3:6, 3:6, 3:6] = 40.0
    low = (full + 0.3 * full.sqrt() * torch.randn(full.shape, generator=g)).clamp_min(0)
    return full, low


def test_residual_units_invert_and_the_condition_has_three_channels():
    full, low = _volume()
    est = 0.8 * low
    drf = torch.tensor([20.0])
    m = noise_scale_map(est, drf, 0.05)
    torch.testing.assert_close(m, (est.clamp_min(0.05) * 20).sqrt())
    r = to_residual(full, est, drf, 50.0, 0.05)
    torch.testing.assert_close(r, 50 * (full - est) / m)
    torch.testing.assert_close(from_residual(r, est, drf, 50.0, 0.05), full, atol=1e-5, rtol=1e-6)
    cond = refinement_condition(low, est, drf, 50.0, 0.05)
    assert cond.shape == (1, 3, *full.shape[2:])
    torch.testing.assert_close(cond[:, 0:1], est.sqrt())
    torch.testing.assert_close(cond[:, 1:2], to_residual(low, est, drf, 50.0, 0.05))
    torch.testing.assert_close(cond[:, 2:3], torch.full_like(est, math.log(20) / math.log(100)))
    two = torch.cat([est, est])  # one DRF per item
    m2 = noise_scale_map(two, torch.tensor([4.0, 100.0]), 0.05)
    torch.testing.assert_close(m2[1] / m2[0], torch.full_like(m2[0], 5.0))
    with pytest.raises(ValueError, match="DRF"):
        noise_scale_map(est, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="DRF"):
        noise_scale_map(two, torch.tensor([4.0, 10.0, 20.0]))


def test_training_batch_runs_the_estimator_trims_the_margin_and_keeps_the_sampling_channel_order():
    full, low = _volume((12, 12, 12))
    full, low = torch.cat([full, full]), torch.cat([low, low])
    drf = torch.tensor([4.0, 100.0])
    seen_estimates = []

    def estimate(x, d):
        seen_estimates.append((x.shape, d.clone()))
        return 0.8 * x

    sched = DDPMScheduler(1000, prediction_type="v_prediction")
    prep = RefinementPrepareBatch(1000, estimate, 50.0, 0.05, "v_prediction", sched.alphas_cumprod, margin=2)
    images, target, args, kwargs = prep({"image": low, "label": full, "drf": drf})
    assert seen_estimates[0][0] == (2, 1, 12, 12, 12)  # the whole patch went through the estimator
    torch.testing.assert_close(seen_estimates[0][1], drf)
    inner = (slice(None), slice(None), slice(2, 10), slice(2, 10), slice(2, 10))
    est = 0.8 * low[inner]
    torch.testing.assert_close(images, to_residual(full[inner], est, drf, 50.0, 0.05))
    torch.testing.assert_close(target, v_target(images, kwargs["noise"], kwargs["timesteps"], sched.alphas_cumprod))
    assert kwargs["mode"] == "concat"
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, timesteps, context=None):
            seen.append(x.clone())
            return x[:, :1]

    DiffusionInferer(sched)(images, Probe(), *args, **kwargs)
    torch.testing.assert_close(seen[0][:, :1], sched.add_noise(images, kwargs["noise"], kwargs["timesteps"]))
    torch.testing.assert_close(seen[0][:, 1:], refinement_condition(low[inner], est, drf, 50.0, 0.05))
    with pytest.raises(KeyError, match="drf"):
        prep({"image": low, "label": full})
    with pytest.raises(ValueError, match="margin"):
        RefinementPrepareBatch(1000, estimate, 50.0, margin=6, alphas_cumprod=sched.alphas_cumprod)(
            {"image": low, "label": full, "drf": drf}
        )
    with pytest.raises(ValueError, match="alphas_cumprod"):
        RefinementPrepareBatch(1000, estimate, 50.0, prediction_type="v_prediction")


@pytest.mark.parametrize("roi_size", [None, [8, 8, 8]])
def test_sampler_reaches_the_oracle_target_on_any_shape(roi_size):
    """An exact refiner (it knows the residual of the full dose) gives the full dose as the mean of every sample, with
    no spread, on an odd-shaped volume, whole or by windows; the estimator runs in its units (SUV / 10, ln(DRF) /
    10) and the third channel is the estimate."""
    full, low = _volume()
    sampler = RefinementSamplingInferer(num_steps=4, residual_scale=50.0, num_samples=3, roi_size=roi_size,
                                        estimate_roi=16, estimate_divisor=1)  # fmt: skip
    estimator = Scale(0.8)
    full = 0.8 * low + 0.5 * (low - 0.8 * low)  # what the oracle refiner knows how to restore
    net = EstimateRefiner(estimator, Oracle(0.5, sampler.alphas_cumprod))
    dose = torch.tensor([[math.log(20.0) / 10]])
    out = sampler(low, net, dose)
    assert out.shape == (1, 3, *full.shape[2:])
    torch.testing.assert_close(out[:, 2:3], 0.8 * low, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, :1], full, atol=2e-3, rtol=1e-4)
    assert float(out[:, 1:2].max()) < 1e-3
    torch.testing.assert_close(estimator.doses[0], dose)
    with pytest.raises(ValueError, match="dose"):
        sampler(low, net)


def test_samples_are_seeded_independent_of_their_number_and_batching_and_the_std_is_calibrated():
    full, low = _volume((8, 8, 8))
    drf = torch.tensor([20.0])
    kw = dict(num_steps=3, residual_scale=50.0, estimate_roi=8, estimate_divisor=1)
    ac = RefinementSamplingInferer(**kw).alphas_cumprod
    net = EstimateRefiner(Scale(0.8), Oracle(0.5, ac, jitter=0.5))
    cond = refinement_condition(low, 0.8 * low, drf, 50.0, 0.05)
    three, firsts = RefinementSamplingInferer(num_samples=3, **kw).sample_residuals(net.refiner, cond)
    one, _ = RefinementSamplingInferer(num_samples=1, **kw).sample_residuals(net.refiner, cond)
    single, _ = RefinementSamplingInferer(num_samples=3, sample_batch=1, **kw).sample_residuals(net.refiner, cond)
    torch.testing.assert_close(three[0], one[0])
    for a, b in zip(three, single, strict=True):
        torch.testing.assert_close(a, b)
    assert float((three[0] - three[1]).abs().max()) > 1e-2  # the samples differ
    dose = torch.tensor([[math.log(20.0) / 10]])
    plain = RefinementSamplingInferer(num_samples=3, **kw)(low, net, dose)
    again = RefinementSamplingInferer(num_samples=3, **kw)(low, net, dose)
    calibrated = RefinementSamplingInferer(num_samples=3, std_calibration=1.7, **kw)(low, net, dose)
    other_seed = RefinementSamplingInferer(num_samples=3, seed=5, **kw)(low, net, dose)
    torch.testing.assert_close(plain, again)
    torch.testing.assert_close(calibrated[:, 1:2], 1.7 * plain[:, 1:2])
    assert float((other_seed[:, :1] - plain[:, :1]).abs().max()) > 1e-4
    stack = torch.stack([from_residual(s, 0.8 * low, drf, 50.0, 0.05) for s in three])
    torch.testing.assert_close(plain[:, :1], stack.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain[:, 1:2], stack.std(0), atol=1e-5, rtol=1e-4)
    first = RefinementSamplingInferer(num_samples=3, mean="first_step", **kw)(low, net, dose)
    torch.testing.assert_close(
        first[:, :1], from_residual(torch.stack(firsts).mean(0), 0.8 * low, drf, 50.0, 0.05), atol=1e-5, rtol=1e-5
    )
    power = RefinementSamplingInferer(num_samples=3, std_calibration=[2.0, -0.5], **kw)(low, net, dose)
    torch.testing.assert_close(power[:, 1:2], 2.0 * 20.0**-0.5 * plain[:, 1:2])  # c = a DRF^b at DRF 20
    smooth = RefinementSamplingInferer(num_samples=3, std_smoothing=1.0, **kw)(low, net, dose)
    from monai.networks.layers import GaussianFilter

    torch.testing.assert_close(smooth[:, 1:2], GaussianFilter(3, 1.0)(plain[:, 1:2] ** 2).sqrt(), atol=1e-5, rtol=1e-4)
    assert float(smooth[:, 1:2].std()) < float(plain[:, 1:2].std())  # pooled neighbours: a less noisy map
    for bad in (
        {"mean": "median"},
        {"std_calibration": 0.0},
        {"std_calibration": [1, 2, 3]},
        {"std_smoothing": -1},
        {"num_samples": 0},
        {"start_timestep": 1000},
    ):
        with pytest.raises(ValueError):
            RefinementSamplingInferer(**{**kw, **bad})


def test_a_chain_started_from_the_estimate_part_way_reaches_the_oracle_target():
    full, low = _volume((8, 8, 8))
    sampler = RefinementSamplingInferer(num_steps=2, start_timestep=200, residual_scale=50.0, estimate_roi=8,
                                        estimate_divisor=1, num_samples=2)  # fmt: skip
    assert sampler.pairs == [(200, 0), (0, -1)]
    full = 0.9 * low  # e + 0.5 (low - e) with e = 0.8 low
    out = sampler(low, EstimateRefiner(Scale(0.8), Oracle(0.5, sampler.alphas_cumprod)), torch.tensor([[0.3]]))
    torch.testing.assert_close(out[:, :1], full, atol=2e-3, rtol=1e-4)


def test_refiner_has_no_normalisation_so_a_crop_sees_the_same_computation():
    """Whole volume and an aligned crop give the same output away from the crop's border (receptive field of a
    one-level net: 6 convolutions on the 2x-folded grid, 12 voxels); the network starts at zero output; sizes off its
    multiple and a context are refused."""
    net = RefinerUNet(3, 2, 1, (8,), 1, 2)
    x = torch.randn(1, 2, 56, 56, 56)
    assert float(net(x, torch.tensor([10])).abs().max()) == 0.0  # zero-initialised output: starts at 'no residual'
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        whole = net(x, torch.tensor([10]))
        crop = net(x[..., 8:48, 8:48, 8:48], torch.tensor([10]))
    assert float(whole.abs().max()) > 1.0
    torch.testing.assert_close(crop[..., 14:26, 14:26, 14:26], whole[..., 22:34, 22:34, 22:34], atol=1e-5, rtol=1e-5)
    assert RefinerUNet(3, 4, 1, (32, 64, 96), 1, 2).size_divisor == 8
    with pytest.raises(ValueError, match="multiple"):
        net(torch.randn(1, 2, 9, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="context"):
        net(x, torch.tensor([1]), context=x)


def test_estimate_refiner_keeps_the_estimator_frozen_and_in_eval_mode(tmp_path):
    film_like = torch.nn.Sequential(torch.nn.Dropout(0.5))
    est = Scale(1.0)
    net = EstimateRefiner(torch.nn.ModuleList([est, film_like]), RefinerUNet(3, 4, 1, (8,), 1, 2))
    net.train()
    assert net.refiner.training and not net.estimator.training and not film_like.training
    assert not any(p.requires_grad for p in net.estimator.parameters())
    assert all(p.requires_grad for p in net.refiner.parameters())
    net2 = EstimateRefiner(Scale(0.5), RefinerUNet(3, 4, 1, (8,), 1, 2))
    low = torch.tensor([[[[[-1.0, 4.0]]]]])
    out = net2.estimate(low, torch.tensor([20.0]))
    torch.testing.assert_close(out, torch.tensor([[[[[0.0, 2.0]]]]]))  # SUV, clamped at 0
    torch.testing.assert_close(net2.estimator.doses[0], torch.tensor([[math.log(20.0) / 10]]))
    trained = Scale(1.0)
    trained.w.data.fill_(3.0)
    torch.save(trained.state_dict(), tmp_path / "estimator.pt")
    net3 = EstimateRefiner(
        Scale(1.0), RefinerUNet(3, 4, 1, (8,), 1, 2), estimator_weights=str(tmp_path / "estimator.pt")
    )
    assert float(net3.estimator.w) == 3.0  # loaded at construction (training: before the EMA copy)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        EstimateRefiner(Scale(1.0), RefinerUNet(3, 4, 1, (8,), 1, 2), estimator_weights=str(tmp_path / "missing.pt"))


def test_calibration_stats_and_the_fitted_factor():
    rng = np.random.default_rng(0)
    s = rng.uniform(0.1, 1.0, 200_000)
    ref = rng.normal(0, 1, s.size)
    pred = ref + s * rng.normal(0, 1, s.size)  # errors drawn with exactly the stated std
    good = calibration_stats(pred, s, ref)
    assert abs(good["coverage"] - 0.9545) < 0.005 and good["spearman"] > 0.3 and good["n"] == s.size
    shuffled = calibration_stats(pred, rng.permutation(s), ref)
    assert abs(shuffled["spearman"]) < 0.02  # a std map unrelated to the error ranks nothing
    c = fit_std_calibration(np.abs(pred - ref), s / 2, 0.95)
    assert 1.9 < c < 2.1
    assert abs(calibration_stats(pred, c * s / 2, ref)["coverage"] - 0.95) < 1e-3
    from scipy.stats import spearmanr

    a, b = rng.normal(size=500), rng.normal(size=500)
    b = a + b
    assert abs(spearman(a, b) - spearmanr(a, b).statistic) < 1e-9
    mask = np.zeros(s.size, bool)
    with pytest.raises(ValueError, match="mask"):
        calibration_stats(pred, s, ref, mask)
    with pytest.raises(ValueError, match="std"):
        fit_std_calibration(np.ones(3), np.zeros(3))


def test_calibrate_uncertainty_script_reports_per_drf_and_fits_the_factor(tmp_path, capsys, monkeypatch):
    """The script on a two-item split whose std maps are half the true error scale: coverage far below 95 %, the
    fitted calibration (factor ~2 at both DRFs) brings it to 95 %; items without outputs are skipped."""
    import json

    from common.io.nifti import save_nifti

    mod = load_script(BUNDLE / "scripts" / "calibrate_uncertainty.py")
    rng = np.random.default_rng(1)
    items = []
    for i, drf in enumerate((4, 20, 100)):
        ref = np.zeros((20, 20, 20), np.float32)
        ref[4:16, 4:16, 4:16] = 2.0
        err_std = np.full_like(ref, 0.1 * (i + 1))
        pred = ref + err_std * rng.normal(size=ref.shape).astype(np.float32)
        save_nifti(ref, np.eye(4), tmp_path / f"full_{i}.nii.gz")
        save_nifti(ref, np.eye(4), tmp_path / f"low_{i}.nii.gz")
        if drf != 100:  # no outputs for the third item
            save_nifti(pred, np.eye(4), tmp_path / "eval" / f"low_{i}_ddpm.nii.gz")
            save_nifti(err_std / 2, np.eye(4), tmp_path / "eval" / f"low_{i}_ddpm_std.nii.gz")
        items.append({"image": f"low_{i}.nii.gz", "label": f"full_{i}.nii.gz", "drf": drf})
    (tmp_path / "d.json").write_text(json.dumps({"validation": items}))
    args = ["x", "--datalist", str(tmp_path / "d.json"), "--eval_dir", str(tmp_path / "eval"), "--split",
            "validation", "--fit", "0.95"]  # fmt: skip
    monkeypatch.setattr("sys.argv", args)
    mod.main()
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| 4 ") or line.startswith("| 20 ")]
    assert len(rows) == 4 and not any(line.startswith("| 100 ") for line in text.splitlines())
    before = [float(r.split("|")[4].strip(" %")) for r in rows[:2]]
    after = [float(r.split("|")[4].strip(" %")) for r in rows[2:]]
    assert all(b < 75 for b in before) and all(abs(a - 95) < 2 for a in after)
    a, b = (float(v) for v in text.split("std_calibration: [")[1].split("]")[0].split(","))
    for drf in (4, 20):
        assert 1.8 < a * drf**b < 2.2  # the std maps were half the error scale at both doses


def test_bundle_configs_pin_the_estimator_to_the_film_unet_and_agree_with_each_other():
    from monai.bundle import ConfigParser

    def read(path):
        parser = ConfigParser()
        parser.read_config(str(path))
        return parser

    film = read(ROOT / "bundles" / "pet_lowdose_film_unet" / "configs" / "inference.yaml")
    train, infer = read(BUNDLE / "configs" / "train.yaml"), read(BUNDLE / "configs" / "inference.yaml")
    assert train["estimator_def"] == film["network_def"] == infer["estimator_def"]
    assert train["estimator_suv_scale"] == film["suv_scale"] == infer["estimator_suv_scale"]
    assert train["refiner_def"] == infer["refiner_def"]
    for key in ("residual_scale", "residual_floor", "prediction_type", "num_train_timesteps", "num_inference_steps"):
        assert train[key] == infer[key], key


def test_bundle_pipeline_keeps_a_suv_40_lesion(tmp_path):
    """inference.yaml's pre-processing -> sampler -> post-processing, with an identity estimator and a refiner that
    predicts a zero residual, returns the input: a SUV 40 lesion stays at SUV 40 (nothing clips it)."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.yaml"))
    parser.update({"bundle_root": str(BUNDLE), "output_dir": str(tmp_path), "drf": 20, "num_samples": 2})
    pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
    inferer = parser.get_parsed_content("inferer")
    suv = np.full((20, 18, 16), 1.0, np.float32)
    suv[8:12, 7:11, 6:10] = 40.0
    suv[2:4, 2:4, 2:4] = 12.0
    image = MetaTensor(torch.from_numpy(suv)[None], affine=torch.eye(4), meta={"filename_or_obj": "lesion.nii.gz"})
    item = {"image": image}
    for t in pre.transforms[1:]:  # after loading + checks
        item = t(item)
    ac = inferer.inferer.alphas_cumprod
    net = EstimateRefiner(Scale(1.0), Oracle(0.0, ac))  # zero residual
    net.refiner.size_divisor = 8
    out = inferer(item["image"][None], net)
    item["pred"] = out[0]
    pred = post(item)["pred"][0].numpy()
    assert abs(float(pred.max()) - 40.0) < 0.01 * 40.0
    np.testing.assert_allclose(pred, suv, rtol=1e-3, atol=1e-3)
    assert (tmp_path / "lesion" / "lesion_ddpm.nii.gz").is_file() or any(tmp_path.rglob("*_ddpm.nii.gz"))


def test_prerequisite_weights_trains_the_estimator_bundle_only_when_it_has_no_weights(tmp_path, monkeypatch):
    import common.bundle_utils as bu

    runs = []

    def fake_training(config_file, run_id, overrides):
        runs.append((config_file, run_id, overrides))
        (tmp_path / "film" / "models").mkdir(parents=True, exist_ok=True)
        (tmp_path / "film" / "models" / "model.pt").write_bytes(b"trained")

    monkeypatch.setattr(bu, "_run_workflow", fake_training)
    root = tmp_path / "film"
    (root / "pretrained").mkdir(parents=True)
    (root / "pretrained" / "model.pt").write_bytes(b"shipped")
    assert bu.prerequisite_weights(root / "models", root, "train.yaml") == str(root / "pretrained" / "model.pt")
    assert runs == []  # shipped weights: nothing to train
    (root / "pretrained" / "model.pt").unlink()
    assert bu.prerequisite_weights(root / "models", root, "train.yaml") == str(root / "models" / "model.pt")
    assert runs == [("train.yaml", "training", {"ckpt_dir": str(root / "models")})]
    assert bu.prerequisite_weights(root / "models", root, "train.yaml") == str(root / "models" / "model.pt")
    assert len(runs) == 1  # trained once: found the second time


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
