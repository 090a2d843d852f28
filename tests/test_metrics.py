"""Metrics agree with scikit-image on the same arrays and handle masks / ranges explicitly."""

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from common import metrics as M


@pytest.fixture(params=[2, 3])
def pair(request):
    rng = np.random.default_rng(request.param)
    shape = (48, 40) if request.param == 2 else (24, 22, 20)
    ref = rng.uniform(0, 1, shape).astype(np.float32)
    ref = np.cumsum(ref, axis=0) / shape[0]  # smooth-ish structure
    pred = (ref + rng.normal(0, 0.05, shape)).astype(np.float32)
    return pred, ref


def test_psnr_matches_skimage(pair):
    pred, ref = pair
    expected = peak_signal_noise_ratio(ref, pred, data_range=1.5)
    assert M.psnr(pred, ref, data_range=1.5) == pytest.approx(expected, abs=1e-3)


def test_ssim_matches_skimage(pair):
    pred, ref = pair
    expected = structural_similarity(
        ref, pred, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert M.ssim(pred, ref, data_range=1.0) == pytest.approx(expected, abs=1e-3)


def test_rmse_and_nrmse_match_skimage(pair):
    pred, ref = pair
    assert M.rmse(pred, ref) == pytest.approx(np.sqrt(mean_squared_error(ref, pred)), rel=1e-4)
    for norm in ("euclidean", "min-max", "mean"):
        assert M.nrmse(pred, ref, norm) == pytest.approx(normalized_root_mse(ref, pred, normalization=norm), rel=1e-4)


def test_batched_and_tensor_inputs_equal_bare_arrays(pair):
    pred, ref = pair
    tp, tr = torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None]
    assert M.psnr(tp, tr, 1.0) == pytest.approx(M.psnr(pred, ref, 1.0), abs=1e-6)


def test_hu_mae_with_mask():
    ref = np.zeros((10, 10, 4), np.float32)
    pred = ref.copy()
    pred[:5] = 10.0
    mask = np.zeros_like(ref, bool)
    mask[:5] = True
    assert M.hu_mae(pred, ref) == pytest.approx(5.0)
    assert M.hu_mae(pred, ref, mask) == pytest.approx(10.0)
    assert M.hu_mae(pred, ref, ~mask) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="empty"):
        M.hu_mae(pred, ref, np.zeros_like(mask))


def test_suv_bias_in_masks():
    ref = np.ones((8, 8, 8), np.float32)
    ref[2:4, 2:4, 2:4] = 5.0
    pred = ref * 0.9
    lesion = np.zeros_like(ref, bool)
    lesion[2:4, 2:4, 2:4] = True
    out = M.suv_bias_in_masks(pred, ref, {"lesion": lesion, "empty": np.zeros_like(lesion)})
    assert set(out) == {"lesion"}
    assert out["lesion"]["suvmean_bias_pct"] == pytest.approx(-10.0, abs=1e-4)
    assert out["lesion"]["suvmax_ref"] == pytest.approx(5.0)


def test_data_range_must_be_explicit_and_positive(pair):
    pred, ref = pair
    with pytest.raises(ValueError):
        M.psnr(pred, ref, 0)
    with pytest.raises(ValueError, match="shape"):
        M.psnr(pred[:-1], ref, 1.0)


def test_slicewise_ssim_is_the_mean_of_skimage_2d_ssim_over_axial_slices():
    rng = np.random.default_rng(3)
    ref = rng.normal(40.0, 30.0, (40, 36, 5)).astype(np.float32)  # fewer slices than the SSIM window
    pred = ref + rng.normal(0.0, 15.0, ref.shape).astype(np.float32)
    expected = np.mean(
        [
            structural_similarity(
                pred[..., z],
                ref[..., z],
                data_range=160.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )  # fmt: skip
            for z in range(ref.shape[-1])
        ]
    )
    assert M.ssim_slices(pred, ref, 160.0) == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="3D"):
        M.ssim_slices(pred[..., 0], ref[..., 0], 160.0)


def test_body_metrics_use_the_reference_body_inside_the_window():
    """body_rmse / body_bias: inside the reference's body (> -500 HU, holes filled), on HU clipped to the window like
    the other metrics, so a bundle that clips its input and reference to its own (wider or equal) window measures the
    same; errors in the air outside the body change neither."""
    from common.handlers import compute_item_metrics

    ref = torch.full((1, 40, 40, 6), -1000.0)
    ref[:, 8:32, 8:32] = 40.0  # soft-tissue "body"
    ref[:, 12:16, 12:16] = -900.0  # a lung inside it: holes are filled, so it counts as body
    ref[:, 20:24, 20:24] = 1500.0  # bone above the window's top: its error is clipped away
    body = torch.zeros_like(ref, dtype=torch.bool)
    body[:, 8:32, 8:32] = True
    pred = ref + 10.0 * body + 300.0 * ~body  # +10 HU inside, +300 HU in the air outside
    kw = dict(names=["rmse", "body_rmse", "body_bias"], data_range="window", window=[-1000.0, 1000.0],
              body_threshold=-500.0)  # fmt: skip
    out = compute_item_metrics(pred, ref, **kw)
    inside = 24 * 24 - 4 * 4  # body voxels per slice outside the bone
    assert out["body_bias"] == pytest.approx(10.0 * inside / (24 * 24))
    assert out["body_rmse"] == pytest.approx(10.0 * (inside / (24 * 24)) ** 0.5)
    assert out["rmse"] > 100.0  # the global RMSE sees the air error
    clipped = compute_item_metrics(pred.clamp(-1000, 1000), ref.clamp(-1000, 1000), **kw)  # a [-1000, 1000] bundle
    assert clipped == pytest.approx(out)
    minus = compute_item_metrics(ref - 4.0 * body, ref, names=["body_bias"], body_threshold=-500.0)
    assert minus["body_bias"] == pytest.approx(-4.0)  # signed, unclipped without a window
    with pytest.raises(ValueError, match="body_threshold"):
        compute_item_metrics(pred, ref, names=["body_rmse"])


def test_suv_bias_report_writes_per_item_rows_and_a_group_summary(tmp_path):
    """common.handlers.SUVBiasReport on an ignite engine: lesion and liver masks from the item's files (torso label
    table), one CSV row per item, candidate and region, and the mean per DRF in the Markdown summary."""
    from ignite.engine import Engine

    from common.handlers import SUVBiasReport
    from common.io import save_nifti
    from common.phantoms.pet import PET_TORSO_LABELS

    shape = (16, 16, 8)
    labels = np.zeros(shape, np.int16)
    labels[2:8, 2:8] = PET_TORSO_LABELS["liver"]
    lesions = np.zeros(shape, np.uint8)
    lesions[10:13, 10:13, 3:5] = 1
    save_nifti(labels, np.eye(4), tmp_path / "labels.nii.gz")
    save_nifti(lesions, np.eye(4), tmp_path / "lesions.nii.gz")
    ref = torch.ones((1, *shape))
    ref[0][lesions > 0] = 8.0
    pred = ref.clone()
    pred[0][lesions > 0] = 6.0  # lesion -25 %
    pred[0][labels > 0] = 1.02  # liver +2 %
    item = {"labels": str(tmp_path / "labels.nii.gz"), "lesions": str(tmp_path / "lesions.nii.gz"),
            "anatomy": "torso", "drf": 20.0, "image": "a.nii.gz"}  # fmt: skip
    engine = Engine(lambda e, batch: [{"image": ref, "pred": pred, "label": ref}])
    report = SUVBiasReport(str(tmp_path), group_key="drf")
    report.attach(engine)
    engine.run([[item]], max_epochs=1)
    summary = {(e["method"], e["region"]): e for e in report.summary()}
    assert summary[("output", "lesion")]["suvmax_bias_pct"] == pytest.approx(-25.0)
    assert summary[("output", "liver")]["suvmean_bias_pct"] == pytest.approx(2.0, abs=1e-4)
    assert summary[("input", "lesion")]["suvmean_bias_pct"] == pytest.approx(0.0)
    assert (tmp_path / "test_suv_bias_items.csv").read_text().count("\n") == 1 + 4  # 2 candidates x 2 regions
    assert "| 20 | output | lesion | 1 | -25.00 | -25.00 |" in (tmp_path / "test_suv_bias_summary.md").read_text()
