"""Training losses shared by the bundles (MONAI losses where they exist).

All losses take ``pred`` and ``target`` as ``(B, C, *spatial)`` tensors in the network's normalised units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DeepSupervisionLoss, SSIMLoss
from torch import nn

__all__ = ["GradientLoss", "L1SSIMLoss", "deep_supervision"]


class L1SSIMLoss(nn.Module):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM)`` with MONAI's Gaussian-window ``SSIMLoss``.

    Args:
        spatial_dims: 2 or 3.
        l1_weight: weight of the L1 term (UDPET reference recipe: 0.95).
        ssim_weight: weight of the (1 - SSIM) term (0.05).
        data_range: intensity range used by SSIM's stability constants, in the normalised units.
        win_size: SSIM window. Inputs smaller than the window in any spatial dimension (e.g. the 1/4-resolution
            output of deep supervision on a small patch) get the L1 term only, rescaled to the full weight.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        l1_weight: float = 0.95,
        ssim_weight: float = 0.05,
        data_range: float = 1.0,
        win_size: int = 11,
    ) -> None:
        super().__init__()
        self.l1_weight, self.ssim_weight = float(l1_weight), float(ssim_weight)
        self.win_size = int(win_size)
        self.l1 = nn.L1Loss()
        self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=data_range, win_size=win_size)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.ssim_weight or min(pred.shape[2:]) < self.win_size:
            return (self.l1_weight + self.ssim_weight) * self.l1(pred, target)
        return self.l1_weight * self.l1(pred, target) + self.ssim_weight * self.ssim(pred, target)


class GradientLoss(nn.Module):
    """L1 distance between finite-difference gradients of ``pred`` and ``target`` along the chosen spatial axes.

    Args:
        axes: spatial axes (0 = X, 1 = Y, 2 = Z) whose forward differences are compared; e.g. ``(2,)`` for the
            z-gradient loss of through-plane super-resolution, ``None`` for all axes.
    """

    def __init__(self, axes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.axes = None if axes is None else tuple(int(a) for a in axes)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        axes = range(pred.ndim - 2) if self.axes is None else self.axes
        terms = [(torch.diff(pred, dim=a + 2) - torch.diff(target, dim=a + 2)).abs().mean() for a in axes]
        return torch.stack(terms).mean()


def deep_supervision(
    loss: nn.Module, weight_mode: str = "exp", weights: Sequence[float] | None = None, interp_mode: str = "area"
) -> nn.Module:
    """Wrap ``loss`` in MONAI's ``DeepSupervisionLoss``: ``pred`` may be a list [full-res, 1/2, 1/4, ...] whose
    weights halve per level (``exp``); the target is resized to each output's size with ``interp_mode``.

    MONAI resizes with ``nearest-exact``, which suits label maps; for images whose auxiliary outputs are
    average-pooled (as :class:`common.networks.FiLMUNet`'s), ``"area"`` (= average pooling for integer factors) makes
    the target the same down-sampling as the prediction, so the auxiliary losses carry no irreducible edge error.
    """
    ds = DeepSupervisionLoss(loss, weight_mode=weight_mode, weights=None if weights is None else list(weights))
    ds.interp_mode = interp_mode
    return ds
