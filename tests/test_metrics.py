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
