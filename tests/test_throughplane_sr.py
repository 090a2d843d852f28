"""Through-plane SR (bundle ct_throughplane_sr): grid alignment of every path (simulation, baselines, network,
sliding window, output affine), masks and masked metrics, the loss, self-supervised pairs, DICOM input, and the
bundle's inference end to end on a thick phantom (an untrained network is exact linear interpolation)."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, run_workflow
from monai.data import MetaTensor
from monai.transforms import LoadImage

from common.datalist import source_items
from common.errors import InputDataError
from common.inferers import PaddedSlidingWindowInferer
from common.io import CTDicomSeriesReader, read_ct_hu
from common.losses import ThroughPlaneSRLoss
from common.metrics import psnr, ssim
from common.networks import ThroughPlaneSRNet, linear_upsample_z, shuffle_z
from common.physics import interpolate_z, simulate_thick_slices, thick_slice_affine, thin_slice_affine
from common.transforms import (
    BodyMaskd,
    CheckFactord,
    InPlaneAsZd,
    InterpolateZd,
    ThickFromThind,
    ThinGridd,
    body_mask,
    thick_margin,
)

sys.path.insert(0, str(Path(__file__).parent))
from dicom_factory import write_series  # noqa: E402

BUNDLE = ROOT / "bundles" / "ct_throughplane_sr"


def _ramp(shape=(6, 5, 40), a=-300.0, b=7.0) -> np.ndarray:
    return np.broadcast_to(a + b * np.arange(shape[2], dtype=np.float64), shape).astype(np.float64).copy()


@pytest.mark.parametrize("factor", [2, 3, 4, 5])
def test_linear_ramp_passes_the_untrained_network_with_no_half_slice_shift(factor):
    thin = _ramp()
    thick = simulate_thick_slices(thin, 1.0, factor)  # thick k = blurred thin k * factor (a ramp stays a ramp inside)
    net = ThroughPlaneSRNet(factor=factor, channels=(8, 16), num_res_units=1, hr_channels=4).eval()
    with torch.no_grad():
        out = net(torch.from_numpy(thick).float()[None, None])[0, 0].numpy()
    assert out.shape == (6, 5, thick.shape[2] * factor)
    zt = thick.shape[2]
    inner = slice(factor * 2, factor * (zt - 3) + 1)  # away from the edge-padded ends of the simulation
    np.testing.assert_allclose(out[..., inner], thin[..., inner], atol=1e-3)
    # a half-slice shift would be off by b / 2 = 3.5 HU
    assert np.abs(out[..., inner] - (thin[..., inner] + 3.5)).min() > 1.0


@pytest.mark.parametrize("order", [1, 3])
def test_interpolation_baselines_put_thin_slice_k_r_on_thick_slice_k(order):
    rng = np.random.default_rng(0)
    thick = rng.normal(size=(4, 3, 9))
    out = interpolate_z(thick, 3, order=order)
    assert out.shape == (4, 3, 27)
    np.testing.assert_allclose(out[..., ::3], thick, atol=1e-4)
    ramp = _ramp((2, 2, 9), 5.0, 2.0)
    inner = slice(0, 25) if order == 1 else slice(9, 16)  # the cubic spline's edge condition bends the ends
    expected = np.broadcast_to(5.0 + 2.0 * np.arange(27) / 3, (2, 2, 27))
    np.testing.assert_allclose(interpolate_z(ramp, 3, order)[..., inner], expected[..., inner], atol=1e-2)


def test_torch_linear_upsampling_matches_the_numpy_baseline():
    x = torch.randn(2, 1, 5, 4, 7, dtype=torch.float64)
    ours = linear_upsample_z(x, 4)
    ref = np.stack([interpolate_z(v[0].numpy(), 4, order=1) for v in x])[:, None]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)


def test_shuffle_z_places_sub_slice_m_of_thick_slice_k_on_k_r_plus_m():
    r, c, zt = 3, 2, 4
    x = torch.zeros(1, c * r, 1, 1, zt)
    for ch in range(c):
        for m in range(r):
            for k in range(zt):
                x[0, ch * r + m, 0, 0, k] = 100 * ch + k * r + m
    out = shuffle_z(x, r)
    assert out.shape == (1, c, 1, 1, zt * r)
    for ch in range(c):
        assert out[0, ch, 0, 0].tolist() == [100 * ch + j for j in range(zt * r)]


def test_network_handles_any_in_plane_size_and_refuses_other_ranks():
    net = ThroughPlaneSRNet(factor=2, channels=(8, 16, 32), num_res_units=1, hr_channels=4).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 13, 10, 3)).shape == (1, 1, 13, 10, 6)
    with pytest.raises(ValueError, match="dimensions"):
        net(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="factor"):
        ThroughPlaneSRNet(factor=1)


def test_sliding_window_keeps_the_global_grid_and_has_no_seam():
    torch.manual_seed(0)
    net = ThroughPlaneSRNet(factor=4, channels=(8, 16, 32), num_res_units=1, hr_channels=4).eval()
    inferer = PaddedSlidingWindowInferer(roi_size=(16, 16, -1), overlap=0.5, divisor=(4, 4, 1), output_scale=(1, 1, 4))
    x = torch.rand(1, 1, 37, 29, 9)
    with torch.no_grad():
        out = inferer(x, net)
        assert out.shape == (1, 1, 37, 29, 36)
        torch.testing.assert_close(out, linear_upsample_z(x, 4), atol=1e-5, rtol=0)  # identity start: exact
        const = inferer(torch.full((1, 1, 37, 29, 9), 0.3), net)
    torch.testing.assert_close(const, torch.full_like(const, 0.3), atol=1e-5, rtol=0)


def test_thick_from_thin_with_margin_matches_the_whole_volume_simulation():
    rng = np.random.default_rng(1)
    thin = rng.normal(size=(1, 6, 5, 60)).astype(np.float32)
    factor, margin = 4, thick_margin(4)
    full_blur = simulate_thick_slices(thin[0], 1.0, 1, thickness_mm=4.0)  # blurred thin volume, factor 1
    d = ThickFromThind(["label"], factor, margin=margin)({"label": torch.from_numpy(thin)})
    n = (60 - 2 * margin) // factor
    assert d["image"].shape == (1, 6, 5, n) and d["label"].shape == (1, 6, 5, n * factor)
    np.testing.assert_allclose(d["image"][0].numpy(), full_blur[..., margin : margin + n * factor : factor], atol=1e-5)
    np.testing.assert_array_equal(d["label"][0].numpy(), thin[0][..., margin : margin + n * factor])


def test_thick_from_thin_refuses_too_short_volumes():
    with pytest.raises(InputDataError, match="too few"):
        ThickFromThind(["label"], 4, margin=7)({"label": torch.zeros(1, 4, 4, 16)})


def test_thin_grid_affine_puts_output_slices_at_the_thin_world_positions(tmp_path):
    thin_affine = np.array([[-0.7, 0, 0, 100.0], [0, 0.7, 0.1, -50.0], [0, 0, 1.25, 30.0], [0, 0, 0, 1]])
    factor = 4
    image = MetaTensor(torch.zeros(1, 3, 3, 5), affine=torch.as_tensor(thick_slice_affine(thin_affine, factor)))
    pred = MetaTensor(torch.zeros(1, 3, 3, 20), affine=image.affine.clone())  # inferer output: input's meta
    label = torch.zeros(1, 3, 3, 18)
    d = ThinGridd("pred", factor)({"image": image, "pred": pred, "label": label})
    out = d["pred"]
    assert out.shape[-1] == 18  # cropped to the reference
    np.testing.assert_allclose(out.affine.numpy(), thin_affine, atol=1e-9)
    for k in range(5):  # thick slice k and thin slice k * factor: same world point
        np.testing.assert_allclose(
            out.affine.numpy() @ [1, 2, k * factor, 1], image.affine.numpy() @ [1, 2, k, 1], atol=1e-9
        )
    np.testing.assert_allclose(thin_slice_affine(image.affine.numpy(), factor), thin_affine, atol=1e-9)
    with pytest.raises(ValueError, match="slices"):
        ThinGridd("pred", 2)({"image": image, "pred": pred})


def test_body_mask_fills_the_lungs_and_drops_the_table():
    hu = np.full((40, 40, 6), -1000.0)
    hu[8:32, 8:32] = 40.0  # body
    hu[12:20, 12:28] = -850.0  # lung inside the body
    hu[:, 36:38] = 200.0  # table, detached
    mask = body_mask(hu)
    assert mask[15, 15, 3] and mask[10, 10, 0] and not mask[5, 37, 2] and not mask[2, 2, 2]
    d = BodyMaskd("label")({"label": MetaTensor(torch.from_numpy(hu[None]).float())})
    assert d["mask"].shape == (1, 40, 40, 6) and float(d["mask"].sum()) == float(mask.sum())


def test_masked_metrics_ignore_errors_outside_the_mask():
    rng = np.random.default_rng(2)
    ref = rng.random((24, 24, 24)).astype(np.float32)
    pred = ref + 0.05 * rng.standard_normal(ref.shape).astype(np.float32)
    mask = np.zeros(ref.shape, bool)
    mask[4:20, 4:20, 4:20] = True
    worse = pred.copy()
    worse[~mask] += 0.5
    assert psnr(worse, ref, 1.0, mask=mask) == pytest.approx(psnr(pred, ref, 1.0, mask=mask))
    assert psnr(worse, ref, 1.0) < psnr(pred, ref, 1.0) - 3
    mse = float(np.mean((pred[mask] - ref[mask]) ** 2))
    assert psnr(pred, ref, 1.0, mask=mask) == pytest.approx(-10 * np.log10(mse), abs=1e-4)
    assert ssim(pred, ref, 1.0, win_size=7, mask=np.ones_like(mask)) == pytest.approx(ssim(pred, ref, 1.0, win_size=7))


def test_sr_loss_masks_only_the_l1_term_and_penalises_z_gradients():
    torch.manual_seed(0)
    ref = torch.rand(1, 1, 12, 12, 12)
    mask = torch.zeros_like(ref)
    mask[..., 2:10, 2:10, :] = 1
    loss = ThroughPlaneSRLoss(ssim_weight=0.0, zgrad_weight=0.0)
    pred = ref.clone()
    pred[..., 0, 0, :] += 1.0  # outside the mask
    assert float(loss(pred, torch.cat([ref, mask], 1))) == 0.0
    assert float(loss(pred, ref)) > 0.0  # no mask channel: everywhere
    zloss = ThroughPlaneSRLoss(ssim_weight=0.0, zgrad_weight=1.0)
    flat = ref + 0.1  # same z-gradients
    ripple = ref + 0.1 * (torch.arange(12) % 2)  # every z-difference off by 0.1
    assert float(zloss(flat, ref)) == pytest.approx(float(loss(flat, ref)), abs=1e-6)  # no z-gradient term
    assert float(zloss(ripple, ref)) == pytest.approx(float(loss(ripple, ref)) + 0.1, abs=1e-5)


def test_self_supervised_pairs_move_an_in_plane_axis_to_z():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    t = InPlaneAsZd("image", "label", axes=(0,))
    out = t({"image": x})["label"]
    assert out.shape == (1, 3, 4, 2) and torch.equal(out[0, 1, 2], x[0, :, 1, 2])
    t1 = InPlaneAsZd("image", "label", axes=(1,))({"image": x})["label"]
    assert t1.shape == (1, 2, 4, 3) and torch.equal(t1[0, 1, 2], x[0, 1, :, 2])


def test_factor_mismatch_and_baselines_transforms():
    with pytest.raises(InputDataError, match="factor = 2"):
        CheckFactord(4)({"image": "a.nii.gz", "factor": 2})
    assert CheckFactord(4)({"image": "a.nii.gz"})["image"] == "a.nii.gz"
    thick = MetaTensor(torch.rand(1, 4, 4, 6), affine=torch.diag(torch.tensor([1.0, 1.0, 4.0, 1.0])))
    d = InterpolateZd("image", 4, 3, "cubic")({"image": thick})
    assert d["cubic"].shape == (1, 4, 4, 24) and float(d["cubic"].affine[2, 2]) == pytest.approx(1.0)


def test_source_items_one_per_volume():
    items = [
        {"image": "a_x2", "label": "a", "factor": 2},
        {"image": "a_x4", "label": "a", "factor": 4},
        {"image": "b_x4", "label": "b", "factor": 4},
        {"image": "c"},
    ]
    assert [i["image"] for i in source_items(items, "label")] == ["a_x2", "b_x4"]
    assert [i["image"] for i in source_items(items, "image", 4)] == ["a_x4", "b_x4", "c"]


def test_dicom_series_reader_loads_hu_and_the_affine_like_read_ct_hu(tmp_path):
    stored = (np.arange(5 * 6 * 7).reshape(5, 6, 7) % 300).astype(np.int16)
    write_series(tmp_path / "ser", stored, slope=1.0, intercept=-1024.0)
    loader = LoadImage(reader=CTDicomSeriesReader(), image_only=True)
    img = loader(str(tmp_path / "ser"))
    ref = read_ct_hu(tmp_path / "ser")
    np.testing.assert_allclose(img.numpy(), ref.array)
    np.testing.assert_allclose(img.affine.numpy(), ref.affine)
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), str(tmp_path / "a.nii.gz"))
    assert loader(str(tmp_path / "a.nii.gz")).shape == (4, 5, 6)  # files still go to MONAI's NIfTI reader


@pytest.fixture(scope="module")
def untrained_ckpt(tmp_path_factory) -> Path:
    """Weights of the bundle's network as initialised: an exact linear interpolator (identity start)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.yaml"))
    net = parser.get_parsed_content("network_def", instantiate=True)
    path = tmp_path_factory.mktemp("sr_ckpt") / "model.pt"
    torch.save(net.state_dict(), path)
    return path


def _thick_case(tmp_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    thin = np.full((24, 20, 32), -1000.0)
    thin[4:20, 3:17] = 40.0 + 30 * rng.standard_normal((16, 14, 32))
    thin_affine = np.array([[-0.8, 0, 0, 50.0], [0, 0.8, 0, -40.0], [0, 0, 1.5, -100.0], [0, 0, 0, 1]])
    thick = simulate_thick_slices(thin, 1.5, 4)
    return thin_affine, thick, thick_slice_affine(thin_affine, 4)


def _infer(input_path: Path, ckpt: Path, out_dir: Path) -> str | None:
    """The bundle's inference on one NIfTI file or DICOM series folder, in-process (conftest.run_workflow, the
    workflow ``python -m monai.bundle run`` builds); the one-line refusal, or None on success."""
    config = [BUNDLE / "configs" / "inference.yaml"]
    return run_workflow(config, input_file=str(input_path), ckpt_path=str(ckpt), output_dir=str(out_dir), roi_xy=16)


@pytest.mark.slow
def test_bundle_inference_nifti_output_grid_and_values(tmp_path, untrained_ckpt):
    thin_affine, thick, thick_affine = _thick_case(tmp_path)
    nib.save(nib.Nifti1Image(thick.astype(np.float32), thick_affine), str(tmp_path / "thick.nii.gz"))
    assert _infer(tmp_path / "thick.nii.gz", untrained_ckpt, tmp_path / "out") is None
    out = nib.load(str(tmp_path / "out" / "thick_sr.nii.gz"))
    assert out.shape == (24, 20, 32)
    np.testing.assert_allclose(out.affine, thin_affine, atol=1e-5)
    np.testing.assert_allclose(out.get_fdata(), interpolate_z(thick, 4, order=1), atol=0.05)  # HU
    assert (tmp_path / "thick.nii.gz").is_file()


@pytest.mark.slow
def test_bundle_inference_reads_a_dicom_series(tmp_path, untrained_ckpt):
    _, thick, _ = _thick_case(tmp_path)
    stored = np.round(thick + 1024).astype(np.int16).transpose(2, 1, 0)  # (Z, rows = Y, cols = X)
    write_series(tmp_path / "series", stored, slope=1.0, intercept=-1024.0, slice_step=6.0, pixel_spacing=(0.8, 0.8))
    ref = read_ct_hu(tmp_path / "series")
    assert _infer(tmp_path / "series", untrained_ckpt, tmp_path / "out") is None
    outs = list((tmp_path / "out").glob("*_sr.nii.gz"))
    assert len(outs) == 1
    out = nib.load(str(outs[0]))
    assert out.shape == (*ref.shape[:2], ref.shape[2] * 4)
    np.testing.assert_allclose(out.affine, thin_slice_affine(ref.affine, 4), atol=1e-4)
    np.testing.assert_allclose(out.get_fdata()[..., ::4], ref.array, atol=0.05)


@pytest.mark.slow
def test_bundle_inference_refuses_a_corrupt_input(tmp_path, untrained_ckpt):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    line = _infer(bad, untrained_ckpt, tmp_path / "out")
    assert line is not None and "bad.nii.gz" in line, line
    assert not list((tmp_path / "out").glob("*_sr.nii.gz"))  # nothing written (glob of a missing folder: empty)


@pytest.mark.parametrize("dims,win", [(2, 11), (3, 7)])
def test_separable_ssim_equals_monai_ssim(dims, win):
    from monai.metrics import SSIMMetric

    from common.losses import ssim_separable

    torch.manual_seed(0)
    a = torch.rand(2, 1, *[20] * dims)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    ref = float(SSIMMetric(dims, 1.0, win_size=win)(a, b).mean())
    assert float(ssim_separable(a, b, 1.0, win)) == pytest.approx(ref, abs=1e-5)
    assert float(ssim_separable(a, a, 1.0, win)) == pytest.approx(1.0, abs=1e-6)


def test_z_edge_weights_favour_structures_that_cross_slices():
    from common.transforms import ZEdgeWeightd

    vol = np.zeros((1, 16, 16, 20), np.float32)
    vol[..., 10:] = 1000.0  # an edge between slices 9 and 10
    vol[:, :, :8, :] = 0.0  # no edge in half of the volume
    w = ZEdgeWeightd("label", floor=0.2)({"label": torch.from_numpy(vol)})["weight"]
    assert w.shape == (1, 16, 16, 20)
    assert float(w[0, 4, 12, 9]) > 20 * float(w[0, 4, 12, 2])  # at the edge vs flat, same column
    assert float(w[0, 4, 2, 9]) > 0  # flat regions keep a floor


def test_network_output_shape_follows_the_metadata_contract():
    """MONAI's verify_net_in_out checks channels and dtype only; here the spatial contract of metadata.json:
    input (4n, 4n, any z) -> output (4n, 4n, z * factor), factor from inference.yaml."""
    import json

    from monai.bundle import ConfigParser

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["network_data_format"]
    assert meta["inputs"]["image"]["spatial_shape"] == ["4*n", "4*n", "*"]
    assert meta["outputs"]["pred"]["spatial_shape"] == ["4*n", "4*n", "factor*z"]
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.yaml"))
    net = parser.get_parsed_content("network_def", instantiate=True).eval()
    factor = parser.get_parsed_content("factor")
    with torch.no_grad():
        for shape in [(8, 12, 3), (16, 8, 7)]:
            assert net(torch.rand(1, 1, *shape)).shape == (1, 1, shape[0], shape[1], shape[2] * factor)
