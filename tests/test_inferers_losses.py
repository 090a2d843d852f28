"""Sliding-window inference on any shape, and the shared losses."""

import pytest
import torch
from torch import nn

from common.inferers import PaddedSlidingWindowInferer, crop_to_shape, pad_to_multiple
from common.losses import GradientLoss, L1SSIMLoss, deep_supervision


class _NeedsMultiple(nn.Module):
    """Identity-like net that fails unless every spatial size is a multiple of 16; adds meta if given."""

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        assert all(s % 16 == 0 for s in x.shape[2:]), x.shape
        out = x * 2.0
        if meta is not None:
            out = out + meta.reshape(-1, 1, 1, 1, 1)
        return out


@pytest.mark.parametrize("shape", [(17, 33, 9), (64, 16, 40), (5, 5, 5)])
def test_padded_sliding_window_any_shape(shape):
    x = torch.rand(1, 1, *shape)
    inferer = PaddedSlidingWindowInferer(roi_size=32, sw_batch_size=3, overlap=0.5, divisor=16)
    out = inferer(x, _NeedsMultiple())
    assert out.shape == x.shape
    torch.testing.assert_close(out, 2 * x, atol=1e-5, rtol=1e-5)


def test_constant_input_has_no_seams_and_meta_is_broadcast():
    x = torch.full((1, 1, 70, 50, 45), 3.0)
    meta = torch.tensor([[0.5]])
    out = PaddedSlidingWindowInferer(roi_size=32, sw_batch_size=4, overlap=0.5)(x, _NeedsMultiple(), meta)
    torch.testing.assert_close(out, torch.full_like(x, 6.5), atol=1e-4, rtol=1e-5)


def test_pad_and_crop_roundtrip():
    x = torch.rand(2, 1, 7, 9, 16)
    padded, spatial = pad_to_multiple(x, 8)
    assert padded.shape[2:] == (8, 16, 16)
    torch.testing.assert_close(crop_to_shape(padded, spatial), x)


def test_l1_ssim_loss_weights():
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    l1_only = L1SSIMLoss(3, l1_weight=1.0, ssim_weight=0.0)(a, b)
    torch.testing.assert_close(l1_only, (a - b).abs().mean())
    assert float(L1SSIMLoss(3, l1_weight=0.0, ssim_weight=1.0, win_size=7)(a, a)) == pytest.approx(0.0, abs=1e-5)
    assert float(L1SSIMLoss(3, win_size=7)(a, b)) > 0.0
    small_a, small_b = a[..., :4, :4, :4], b[..., :4, :4, :4]  # smaller than the SSIM window: L1 only
    torch.testing.assert_close(L1SSIMLoss(3, win_size=7)(small_a, small_b), (small_a - small_b).abs().mean())


def test_gradient_loss_only_sees_chosen_axes():
    a = torch.zeros(1, 1, 8, 8, 8)
    b = a.clone()
    b[..., :, :, 4:] = 1.0  # a step along z only
    assert float(GradientLoss(axes=(0, 1))(a, b)) == pytest.approx(0.0)
    assert float(GradientLoss(axes=(2,))(a, b)) > 0.0
    assert float(GradientLoss()(a, a + 5.0)) == pytest.approx(0.0)  # offsets have no gradient


def test_deep_supervision_area_target_matches_average_pooling():
    target = torch.rand(1, 1, 8, 8, 8)
    pooled = torch.nn.functional.avg_pool3d(target, 2)
    assert float(deep_supervision(nn.L1Loss())([target, pooled], target)) == pytest.approx(0.0, abs=1e-6)
    nearest = deep_supervision(nn.L1Loss(), interp_mode="nearest-exact")
    assert float(nearest([target, pooled], target)) > 1e-3


def test_deep_supervision_wraps_monai():
    loss = deep_supervision(nn.L1Loss())
    target = torch.ones(1, 1, 8, 8, 8)
    preds = [torch.ones(1, 1, 8, 8, 8), torch.zeros(1, 1, 4, 4, 4)]
    value = float(loss(preds, target))
    assert value == pytest.approx(0.5, rel=1e-4)  # MONAI: sum of 1 * 0 (full res) + 0.5 * 1 (half res)


def test_flip_ensemble_averages_flipped_predictions():
    from monai.inferers import SimpleInferer

    from common.inferers import FlipEnsembleInferer

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 1, 3, padding=1)
    x = torch.rand(1, 1, 6, 5, 4)
    flips = [[], [0], [2], [0, 2]]
    with torch.no_grad():
        out = FlipEnsembleInferer(SimpleInferer(), flips)(x, net)
        expected = sum(torch.flip(net(torch.flip(x, [2 + a for a in f])), [2 + a for a in f]) for f in flips) / 4
        torch.testing.assert_close(out, expected)
        assert not torch.allclose(out, net(x))  # a random conv is not flip-equivariant: the ensemble differs
        ident = torch.nn.Identity()
        torch.testing.assert_close(FlipEnsembleInferer(SimpleInferer(), flips)(x, ident), x)
