"""Feat-KPN pieces in `common` (per-pixel kernel application, network, slice-wise inference, anatomical loss,
HU-band pseudo-labels, dose selection) and the ct_lowdose_featkpn bundle specifics (any in-plane size, HU and affine
kept, bad input, anatomical weight 0 needs no anatomical network)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, run_workflow
from monai.bundle import ConfigParser

from common.datalist import reference_items, select_items
from common.errors import InputDataError
from common.inferers import SliceWiseInferer, pad_to_multiple
from common.losses import AnatomicalPerceptionLoss
from common.networks import (
    AnatomyUNet,
    FeatKPN,
    apply_pixel_kernels,
    apply_pixel_kernels_unfold,
    estimate_noise_std,
    normalize_kernels,
)
from common.transforms import HUBandLabeld, hu_band_labels

BUNDLE = ROOT / "bundles" / "ct_lowdose_featkpn"
CONFIGS = BUNDLE / "configs"


# ------------------------------------------------------------------------------------------ kernel application
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("normalized", [False, True], ids=["raw", "softmax"])
def test_pixel_kernels_match_unfold_reference_values_and_gradients(k, normalized):
    g = torch.Generator().manual_seed(k)
    feats = torch.randn(2, 3, 11, 9, generator=g, dtype=torch.float64, requires_grad=True)
    kern = torch.randn(2, 3 * k * k, 11, 9, generator=g, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for fn in (apply_pixel_kernels, apply_pixel_kernels_unfold):
        kk = normalize_kernels(kern, k) if normalized else kern
        out = fn(feats, kk, k)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
        gf, gk = torch.autograd.grad((out * weight).sum(), (feats, kern))
        outs.append(out.detach())
        grads.append((gf, gk))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # the no-autograd path is the same computation
        torch.testing.assert_close(apply_pixel_kernels(feats, kern, k), apply_pixel_kernels_unfold(feats, kern, k))


def test_pixel_kernels_semantics():
    feats = torch.randn(1, 2, 6, 7)
    k = 3
    identity = torch.zeros(1, 2 * 9, 6, 7)
    identity[:, 4::9] = 1.0  # centre tap of every channel's kernel
    torch.testing.assert_close(apply_pixel_kernels(feats, identity, k), feats)
    # softmax kernels are local weighted averages: a constant map stays constant, whatever the raw logits
    const = torch.full((1, 2, 6, 7), 3.5)
    logits = torch.randn(1, 18, 6, 7)
    torch.testing.assert_close(apply_pixel_kernels(const, normalize_kernels(logits, k), k), const)
    assert not torch.allclose(apply_pixel_kernels(const, logits, k), const)  # raw kernels are not normalised
    with pytest.raises(ValueError, match="C\\*k\\*k"):
        apply_pixel_kernels(feats, torch.zeros(1, 17, 6, 7), k)
    with pytest.raises(ValueError, match="odd"):
        apply_pixel_kernels(feats, torch.zeros(1, 8, 6, 7), 2)


# --------------------------------------------------------------------------------------------------- network
def test_featkpn_parameter_count_is_about_one_million():
    n = sum(p.numel() for p in FeatKPN().parameters())
    assert abs(n - 1_000_000) / 1_000_000 < 0.02, n


@pytest.mark.parametrize("normalized", [False, True], ids=["raw", "softmax"])
def test_featkpn_shapes_residual_and_kernel_option(normalized):
    torch.manual_seed(0)
    net = FeatKPN(normalize_kernels=normalized).eval()
    x = torch.rand(2, 1, 24, 36)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.manual_seed(0)
    other = FeatKPN(normalize_kernels=not normalized).eval()
    with torch.no_grad():
        assert not torch.allclose(other(x), y)  # the option changes the computation with the same weights
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 1, 30, 32))


def test_boolean_options_refuse_strings():
    with pytest.raises(TypeError, match="True or False"):
        FeatKPN(normalize_kernels="false")  # what `--network_def#normalize_kernels false` passes on the command line


def test_featkpn_output_is_input_when_the_last_conv_is_zero():
    net = FeatKPN().eval()
    torch.nn.init.zeros_(net.out_conv.weight)
    torch.nn.init.zeros_(net.out_conv.bias)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), x)  # global residual


# ---------------------------------------------------------------------------------------- noise-level input
def test_noise_level_estimate_tracks_white_noise_and_ignores_clipped_air():
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.2, 1.0, 96).view(1, 1, 1, 96).expand(3, 1, 96, 96)  # smooth structure: cancelled
    stds = torch.tensor([0.005, 0.02, 0.08]).view(3, 1, 1, 1)
    x = ramp + stds * torch.randn(3, 1, 96, 96, generator=g)
    est = estimate_noise_std(x)
    assert est.shape == (3, 1, 1, 1)
    torch.testing.assert_close(est, stds, rtol=0.1, atol=0.0)
    clipped = x.clone()
    clipped[..., :60] = 0.0  # most of the image flat at the window floor, as air in a windowed CT slice
    torch.testing.assert_close(estimate_noise_std(clipped), stds, rtol=0.15, atol=0.0)
    assert float(estimate_noise_std(torch.zeros(1, 1, 8, 8))) == 0.0
    with pytest.raises(ValueError, match="H, W >= 3"):
        estimate_noise_std(torch.zeros(1, 1, 2, 8))


def test_featkpn_noise_level_input_uses_the_level_and_keeps_the_residual():
    torch.manual_seed(0)
    net = FeatKPN(noise_level_input=True).eval()
    assert net.encoder.level0[0].in_channels == 2 and net.kernel_encoder.level0[0].in_channels == 2
    assert FeatKPN().encoder.level0[0].in_channels == 1  # the default keeps the shipped weights' layout
    blind = FeatKPN(noise_level_input=True, noise_level_scale=0.0).eval()  # same weights, level channel all zero
    blind.load_state_dict(net.state_dict())
    x = 0.5 + 0.03 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(net(x), blind(x))  # the level reaches the output
        torch.nn.init.zeros_(net.out_conv.weight)
        torch.nn.init.zeros_(net.out_conv.bias)
        torch.testing.assert_close(net(x), x)  # global residual on the image channel only
    with pytest.raises(TypeError, match="True or False"):
        FeatKPN(noise_level_input="true")


@pytest.mark.parametrize("noise_level", [False, True], ids=["blind", "noise_level"])
def test_featkpn_scripts_with_either_input(noise_level):
    """``restorezoo export`` writes a TorchScript model: torch.jit.script compiles both branches of the forward, so
    the noise-level code must script even when the option is off."""
    torch.manual_seed(0)
    net = FeatKPN(noise_level_input=noise_level).eval()
    x = 0.5 + 0.03 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_noise_level_overlay_sets_the_option_for_training_and_inference():
    from common.configs import load_config_files

    for name in ("train.yaml", "inference.yaml"):
        parser = ConfigParser()
        parser.read_config(load_config_files([CONFIGS / name, CONFIGS / "noise_level.yaml"]))
        assert parser.get_parsed_content("network_def").noise_level_input


# ---------------------------------------------------------------------------------------- neighbouring slices (2.5D)
@pytest.mark.parametrize("noise_level", [False, True], ids=["blind", "noise_level"])
def test_featkpn_context_slices_restore_the_centre_slice_and_script(noise_level):
    torch.manual_seed(0)
    net = FeatKPN(context_slices=1, noise_level_input=noise_level).eval()
    assert net.encoder.level0[0].in_channels == 3 + int(noise_level)
    x = 0.5 + 0.03 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 1, 32, 32)
        torch.testing.assert_close(torch.jit.script(net)(x), y)
        moved = x.clone()
        moved[:, 0] += 0.1  # a neighbour reaches the output
        assert not torch.allclose(net(moved), y)
        torch.nn.init.zeros_(net.out_conv.weight)
        torch.nn.init.zeros_(net.out_conv.bias)
        torch.testing.assert_close(net(x), x[:, 1:2])  # the residual is the centre slice
    with pytest.raises(ValueError, match="context_slices=1 needs 3 input channels, got 1"):
        net(x[:, :1])
    with pytest.raises(ValueError, match="context_slices must be >= 0"):
        FeatKPN(context_slices=-1)


def test_context_option_reaches_training_validation_and_inference():
    for name in ("train.yaml", "inference.yaml"):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / name))
        assert parser.get_parsed_content("network_def").context == 0  # the default: one slice
        parser["context_slices"] = 2
        assert parser.get_parsed_content("network_def").context == 2
        inferer = parser.get_parsed_content("inferer" if name == "inference.yaml" else "validate#inferer")
        assert inferer.context == 2


# ---------------------------------------------------------------------------------------- slice-wise inference
class _DoseNet(torch.nn.Module):
    """2D toy network that needs multiples of 4 and adds a per-sample dose."""

    def forward(self, x: torch.Tensor, dose: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
        return torch.nn.functional.avg_pool2d(x, 3, 1, 1) + dose.reshape(-1, 1, 1, 1)


def test_slicewise_inferer_any_shape_and_per_volume_arguments():
    x = torch.rand(2, 1, 13, 10, 5)
    dose = torch.tensor([[0.1], [0.5]])
    out = SliceWiseInferer(spatial_dim=2, slice_batch_size=3, divisor=4)(x, _DoseNet(), dose)
    assert out.shape == x.shape
    for b in range(2):
        for z in range(5):
            sl, spatial = pad_to_multiple(x[b : b + 1, :, :, :, z], 4)
            ref = _DoseNet()(sl, dose[b : b + 1])[..., : spatial[0], : spatial[1]]
            torch.testing.assert_close(out[b : b + 1, :, :, :, z], ref)


def test_slicewise_inferer_along_another_axis():
    x = torch.rand(1, 1, 8, 6, 12)
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    with torch.no_grad():
        out = SliceWiseInferer(spatial_dim=0, divisor=1)(x, net)
        assert out.shape == (1, 2, 8, 6, 12)
        torch.testing.assert_close(out[:, :, 3], net(x[:, :, 3]))


def test_slicewise_inferer_with_context_hands_each_slice_its_neighbours():
    x = torch.rand(2, 1, 6, 5, 4)

    def offset(j):  # a "network" returning channel j of its input: the slice at offset j - 1
        return lambda t: (t.shape[1] == 3 or pytest.fail(f"expected 3 channels, got {t.shape[1]}")) and t[:, j : j + 1]

    inferer = SliceWiseInferer(spatial_dim=2, slice_batch_size=3, divisor=1, context=1)  # batches cross volumes
    torch.testing.assert_close(inferer(x, offset(1)), x)
    torch.testing.assert_close(inferer(x, offset(0)), torch.cat([x[..., :1], x[..., :-1]], -1))  # first repeated
    torch.testing.assert_close(inferer(x, offset(2)), torch.cat([x[..., 1:], x[..., -1:]], -1))  # last repeated
    along_x = SliceWiseInferer(spatial_dim=0, divisor=1, context=1)(x, offset(2))
    torch.testing.assert_close(along_x, torch.cat([x[:, :, 1:], x[:, :, -1:]], 2))
    with pytest.raises(ValueError, match="needs \\(B, C, X, Y, Z\\) volumes"):
        inferer(x[..., 0], offset(1))
    with pytest.raises(ValueError, match="context must be >= 0"):
        SliceWiseInferer(context=-1)


# ---------------------------------------------------------------------------------------- anatomical loss
def test_anatomical_loss_weight_zero_is_plain_l1_without_a_network():
    pred, target = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    loss = AnatomicalPerceptionLoss(None, 0.0)
    torch.testing.assert_close(loss(pred, target), torch.nn.functional.l1_loss(pred, target))
    with pytest.raises(ValueError, match="anatomical network"):
        AnatomicalPerceptionLoss(None, 0.01)


def test_anatomical_loss_keeps_its_network_frozen_and_trains_the_denoiser():
    torch.manual_seed(0)
    anatomy = AnatomyUNet(features=(4, 4, 8, 8, 16, 4))
    before = {k: v.clone() for k, v in anatomy.state_dict().items()}
    loss = AnatomicalPerceptionLoss(anatomy, 0.5)
    loss.train()
    assert not anatomy.training and not any(p.requires_grad for p in anatomy.parameters())
    denoiser = torch.nn.Conv2d(1, 1, 3, padding=1)
    opt = torch.optim.SGD(denoiser.parameters(), lr=0.1)
    x, y = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    w0 = denoiser.weight.detach().clone()
    value = loss(denoiser(x), y)
    l1 = torch.nn.functional.l1_loss(denoiser(x), y)
    assert value.item() != pytest.approx(0.5 * l1.item())  # the anatomical term contributes
    value.backward()
    opt.step()
    assert not torch.equal(denoiser.weight, w0)
    for k, v in anatomy.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_anatomy_unet_features_end_with_the_logits():
    net = AnatomyUNet(features=(4, 4, 8, 8, 16, 4)).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        feats = net.features(x)
        assert len(feats) == 5
        assert [f.shape[-1] for f in feats] == [4, 8, 16, 32, 32]
        torch.testing.assert_close(feats[-1], net(x))


# ---------------------------------------------------------------------------------------- labels, datalists
def test_hu_band_labels():
    hu = torch.tensor([[[-1000.0, -850.0, -100.0, 8.0, 25.0, 40.0, 60.0, 200.0, 350.0, 1200.0]]])
    assert hu_band_labels(hu).tolist() == [[[0, 0, 1, 2, 3, 3, 3, 4, 5, 5]]]
    d = HUBandLabeld("image", output_key="seg", sigma_px=0)({"image": hu})
    assert d["seg"].dtype == torch.int64 and d["seg"].shape == hu.shape
    with pytest.raises(ValueError, match="increase"):
        hu_band_labels(hu, edges=(0.0, -10.0))


def test_select_and_reference_items():
    items = [
        {"image": f"low/{v}_{d}.nii", "label": f"full/{v}.nii", "volume_id": v, "dose": d}
        for v in ("a", "b")
        for d in (0.1, 0.25)
    ]
    assert [i["image"] for i in select_items(items, "dose", [0.25])] == ["low/a_0.25.nii", "low/b_0.25.nii"]
    assert select_items(items, "dose", None) == items
    with pytest.raises(InputDataError, match="available: \\[0.1, 0.25\\]"):
        select_items(items, "dose", [0.7], "dl.json")
    with pytest.raises(InputDataError, match="has no 'dose'"):
        select_items([{"image": "x.nii"}], "dose", [0.25], "dl.json")
    refs = reference_items(items)
    assert refs == [{"volume_id": "a", "image": "full/a.nii"}, {"volume_id": "b", "image": "full/b.nii"}]


# ---------------------------------------------------------------------------------------------- bundle
def test_config_anatomy_weight_zero_needs_no_anatomical_network(tmp_path, data_cache):
    def smoke_parser() -> ConfigParser:  # the tiny smoke data: building the trainer resolves the datalist
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "train.yaml"), str(CONFIGS / "smoke.yaml")])
        parser["data_cache_dir"] = str(data_cache / "ct_lowdose_featkpn")
        return parser

    parser = smoke_parser()
    parser["anatomy_weight"] = 0.0
    parser["ckpt_dir"] = str(tmp_path / "no_models_here")
    assert parser.get_parsed_content("anatomy_net") is None
    assert parser.get_parsed_content("loss").feature_net is None
    assert parser.get_parsed_content("load_anatomy") is None  # nothing to load
    # weight > 0: the workflow still builds (validation needs that), and the run's loading step names the missing
    # weights
    parser = smoke_parser()
    parser["ckpt_dir"] = str(tmp_path / "no_models_here")
    assert parser.get_parsed_content("loss").feature_net is not None
    assert parser.get_parsed_content("train#trainer") is not None
    with pytest.raises(RuntimeError) as err:  # MONAI wraps what a config expression raises
        parser.get_parsed_content("load_anatomy")
    assert isinstance(err.value.__cause__, FileNotFoundError)
    assert "anatomy/model.pt: missing anatomical network weights" in str(err.value.__cause__)


def test_config_kernel_option_and_inference_network_match():
    for name in ("train.yaml", "inference.yaml"):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / name))
        parser["network_def#normalize_kernels"] = True
        assert parser.get_parsed_content("network_def").normalize


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Weights of the bundle's network, saved like training does, with a zero last convolution: the network is then
    exactly the identity (global residual), so the output must reproduce the input in HU voxel by voxel."""
    folder = tmp_path_factory.mktemp("featkpn_models")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    torch.nn.init.zeros_(net.out_conv.weight)
    torch.nn.init.zeros_(net.out_conv.bias)
    torch.save(net.state_dict(), folder / "model.pt")
    return folder


def _ct_volume(path, data=None, shape=(45, 38, 3)):
    if data is None:
        rng = np.random.default_rng(0)
        data = np.full(shape, -1000.0, np.float32)
        data[5:-5, 5:-5] = 40.0 + rng.normal(0, 20, (shape[0] - 10, shape[1] - 10, shape[2]))
    affine = np.array([[-0.7, 0, 0, 12.0], [0, 0.7, 0, -30.0], [0, 0, 2.5, 80.0], [0, 0, 0, 1]])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return data, affine


@pytest.mark.slow
def test_inference_any_in_plane_size_keeps_hu_and_affine(tmp_path, weights):
    path = tmp_path / "in" / "ct.nii.gz"
    data, affine = _ct_volume(path)
    before = path.read_bytes()
    refusal = run_workflow(  # in-process (conftest.run_workflow); the smoke test runs the real command
        [CONFIGS / "inference.yaml"], input_file=str(path), ckpt_dir=str(weights), output_dir=str(tmp_path / "out")
    )
    assert refusal is None, refusal
    outputs = list((tmp_path / "out").glob("*denoised.nii.gz"))
    assert len(outputs) == 1
    img = nib.load(str(outputs[0]))
    assert img.shape == data.shape  # 45 x 38: padded to 48 x 40 inside, cropped back
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    # identity network: HU in, HU out, no slice reordered, no padding left, to float32 precision of the window
    np.testing.assert_allclose(img.get_fdata(), data, atol=0.05)
    assert path.read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, message",
    [
        ("2d", "expected a 3D image"),
        ("nan", "NaN"),
        ("unit_range", "not Hounsfield units"),
    ],
)
def test_inference_bad_input_is_a_clear_error(tmp_path, weights, case, message):
    path = tmp_path / "in" / f"bad_{case}.nii.gz"
    if case == "2d":
        _ct_volume(path, np.full((40, 40), 40.0))
    elif case == "nan":
        data = np.full((40, 40, 3), 40.0)
        data[3, 3, 1] = np.nan
        _ct_volume(path, data)
    else:
        _ct_volume(path, np.random.default_rng(0).random((40, 40, 3)))
    before = path.read_bytes()
    line = run_workflow(  # the refusal's text; tests/test_bad_input.py runs the real command for the terminal
        [CONFIGS / "inference.yaml"], input_file=str(path), ckpt_dir=str(weights), output_dir=str(tmp_path / "out")
    )
    assert line is not None and f"bad_{case}.nii.gz" in line and message in line, line
    assert path.read_bytes() == before
    assert not list((tmp_path / "out").glob("*.nii.gz"))
