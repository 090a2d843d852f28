"""Training losses shared by the bundles (MONAI losses where they exist).

All losses take ``pred`` and ``target`` as ``(B, C, *spatial)`` tensors in the network's normalised units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, SSIMLoss
from torch import nn

from .networks.frozen import freeze
from .physics.pet import gaussian_kernel_1d

__all__ = [
    "AnatomicalPerceptionLoss",
    "DistillationLoss",
    "GradientLoss",
    "L1SSIMLoss",
    "SobelGradientLoss",
    "ThroughPlaneSRLoss",
    "deep_supervision",
    "ssim_separable",
    "freeze",
]


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


class SobelGradientLoss(nn.Module):
    """L1 distance between the 3x3 Sobel gradients (both in-plane axes) of ``pred`` and ``target`` ``(B, C, H, W)``
    (replicate padding, so the image border adds no artificial edge)."""

    def __init__(self) -> None:
        super().__init__()
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernels", torch.stack([gx, gx.t()])[:, None], persistent=False)  # (2, 1, 3, 3)

    def _grad(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = torch.nn.functional.pad(x.reshape(b * c, 1, *x.shape[2:]), (1, 1, 1, 1), mode="replicate")
        return torch.nn.functional.conv2d(x, self.kernels.to(x.dtype))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.ndim != 4:
            raise ValueError(f"SobelGradientLoss expects (B, C, H, W) tensors, got {tuple(pred.shape)}")
        return (self._grad(pred) - self._grad(target)).abs().mean()


def ssim_separable(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 7,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Mean SSIM over the valid region of ``(B, C, *spatial)`` 2D/3D tensors, Gaussian window applied as separable
    1D convolutions (``d * win`` taps per voxel instead of ``win**d``; 3D with window 7: 21 instead of 343).

    Same definition as MONAI's ``compute_ssim_and_cs`` (valid convolution, population statistics, ``C1 = (k1 L)^2``,
    ``C2 = (k2 L)^2``); a test checks equality with MONAI ``SSIMMetric``. Differentiable.
    """
    dims = pred.ndim - 2
    b, c = pred.shape[:2]
    # radius win_size // 2: truncate = radius / sigma (scipy's rule int(truncate * sigma + 0.5) gives back the radius)
    g = torch.as_tensor(
        gaussian_kernel_1d(sigma, truncate=(win_size // 2) / sigma), dtype=pred.dtype, device=pred.device
    )
    stats = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)  # (B, 5C, *S)
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = win_size
        stats = conv(stats, g.view(1, 1, *shape).expand(5 * c, 1, *shape), groups=5 * c)
    mx, my, xx, yy, xy = stats.split(c, dim=1)
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim_map.reshape(b, -1).mean(dim=1).mean()


class ThroughPlaneSRLoss(nn.Module):
    """Through-plane SR loss: ``L1 inside the body mask + ssim_weight (1 - SSIM 3D) + zgrad_weight L1(d/dz)``.

    SSIM: :func:`ssim_separable` (MONAI's definition; MONAI's ``SSIMLoss`` convolves with the full 7x7x7 window and
    cost as much as the network's forward and backward pass on this loss's patches).

    ``pred``: ``(B, 1, X, Y, Z)``. ``target``: ``(B, 2, X, Y, Z)`` = [reference, body mask (0/1, computed on HU)], or
    ``(B, 1, X, Y, Z)`` for the reference alone (mask = everywhere). The L1 is the mean over mask voxels (0 for a
    patch without body); SSIM (MONAI ``SSIMLoss``, Gaussian window) and the z-gradient term (:class:`GradientLoss`
    along axis 2) cover the whole patch, as the original recipe.
    """

    def __init__(
        self, ssim_weight: float = 0.1, zgrad_weight: float = 0.1, data_range: float = 1.0, win_size: int = 7
    ) -> None:
        super().__init__()
        self.ssim_weight, self.zgrad_weight, self.win_size = float(ssim_weight), float(zgrad_weight), int(win_size)
        self.data_range = float(data_range)
        self.zgrad = GradientLoss(axes=(2,))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ref = target[:, :1]
        mask = target[:, 1:2] if target.shape[1] > 1 else torch.ones_like(ref)
        loss = ((pred - ref).abs() * mask).sum() / mask.sum().clamp(min=1.0)
        if self.ssim_weight and min(pred.shape[2:]) >= self.win_size:
            loss = loss + self.ssim_weight * (1.0 - ssim_separable(pred, ref, self.data_range, self.win_size))
        if self.zgrad_weight and pred.shape[-1] > 1:
            loss = loss + self.zgrad_weight * self.zgrad(pred, ref)
        return loss


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


class _LossWithFrozenParts(nn.Module):
    """Base of losses that hold frozen networks: the submodules named in ``frozen_parts`` (``None`` allowed) stay in
    eval mode when the loss is put in train mode."""

    frozen_parts: tuple[str, ...] = ()

    def train(self, mode: bool = True) -> _LossWithFrozenParts:
        super().train(mode)
        for name in self.frozen_parts:
            part = getattr(self, name)
            if part is not None:
                part.eval()
        return self


class AnatomicalPerceptionLoss(_LossWithFrozenParts):
    """``(1 - w) * L1(pred, target) + w * mean_l L1(phi_l(pred), phi_l(target))`` (Feat-KPN, w = 0.01).

    ``phi_l`` are the features of a FROZEN anatomical network (``feature_net.features(x)`` -> list of tensors, e.g.
    :class:`common.networks.AnatomyUNet`: four decoder levels and the logits), evaluated on the prediction and on the
    normal-dose target; the target's features carry no gradient. The frozen network stays in eval mode even when
    the loss module is put in train mode, and its weights never change (they are not the trainer's parameters and
    have ``requires_grad=False``).

    Args:
        feature_net: the anatomical network, or ``None`` when ``anatomical_weight`` is 0 (plain L1: no anatomical
            network is needed, unlike the original code).
        anatomical_weight: ``w`` in [0, 1).

    ``pred`` / ``target``: ``(B, C, H, W)`` in the network's normalised units (the feature net was trained on them).
    """

    frozen_parts = ("feature_net",)

    def __init__(self, feature_net: nn.Module | None = None, anatomical_weight: float = 0.01) -> None:
        super().__init__()
        w = float(anatomical_weight)
        if not 0.0 <= w < 1.0:
            raise ValueError(f"anatomical_weight must be in [0, 1), got {anatomical_weight}")
        if w > 0 and feature_net is None:
            raise ValueError("anatomical_weight > 0 needs the frozen anatomical network (feature_net)")
        if feature_net is not None and not callable(getattr(feature_net, "features", None)):
            raise TypeError("feature_net must define features(x) -> list of feature tensors")
        self.weight = w
        self.feature_net = freeze(feature_net) if (feature_net is not None and w > 0) else None

    def anatomical_term(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over feature levels of the L1 distance between the frozen network's features."""
        if self.feature_net is None:
            raise RuntimeError("no anatomical network (anatomical_weight is 0)")
        with torch.no_grad():
            ref = self.feature_net.features(target)
        out = self.feature_net.features(pred)
        terms = [torch.nn.functional.l1_loss(o, r) for o, r in zip(out, ref, strict=True)]
        return torch.stack(terms).mean()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        l1 = torch.nn.functional.l1_loss(pred, target)
        if self.feature_net is None:
            return l1
        return (1.0 - self.weight) * l1 + self.weight * self.anatomical_term(pred, target)


class DistillationLoss(_LossWithFrozenParts):
    """Teacher-student latent distillation (``ct_lowdose_anatomy_distill``; recipe in its docs/README.md).

    ``loss = latent_weight * MSE(z_s, z_t) + image_weight * [L1 + ssim_weight * (1 - SSIM)](y_s, y)
    + gradient_weight * SobelL1(y_s, y) + feature_weight * sum_l MSE(f_s_l, f_t_l)``

    where ``z_t, f_t`` are the FROZEN teacher encoder's latent and feature maps of the normal-dose target ``y`` and
    ``z_s, f_s, y_s`` the student's latent, feature maps and output (``pred`` = the dict returned by
    :class:`common.networks.nafnet.StudentWithIntermediates`). Images in [-1, 1] (SSIM data range 2).

    Args:
        teacher_encoder: module with ``forward(x) -> (latent, [features])``; frozen here (eval, no grad).
    """

    frozen_parts = ("teacher",)

    def __init__(
        self,
        teacher_encoder: nn.Module,
        latent_weight: float = 1.0,
        image_weight: float = 1.0,
        ssim_weight: float = 0.5,
        gradient_weight: float = 0.1,
        feature_weight: float = 1.0,
        data_range: float = 2.0,
    ) -> None:
        super().__init__()
        self.teacher = freeze(teacher_encoder)
        self.weights = {
            "latent": float(latent_weight),
            "image": float(image_weight),
            "gradient": float(gradient_weight),
            "feature": float(feature_weight),
        }
        self.image_loss = L1SSIMLoss(2, l1_weight=1.0, ssim_weight=ssim_weight, data_range=data_range, win_size=11)
        self.gradient_loss = SobelGradientLoss()
        self.last_terms: dict[str, float] = {}

    def forward(self, pred: dict[str, torch.Tensor | list[torch.Tensor]], target: torch.Tensor) -> torch.Tensor:
        if not isinstance(pred, dict) or not {"pred", "latent", "features"} <= set(pred):
            raise TypeError("DistillationLoss needs the student's {'pred', 'latent', 'features'} dict")
        with torch.no_grad():
            z_t, f_t = self.teacher(target)
        out, z_s, f_s = pred["pred"], pred["latent"], pred["features"]
        mse = torch.nn.functional.mse_loss
        terms = {
            "latent": mse(z_s, z_t),
            "image": self.image_loss(out, target),
            "gradient": self.gradient_loss(out, target),
            "feature": torch.stack([mse(a, b) for a, b in zip(f_s, f_t, strict=True)]).sum(),
        }
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        return sum(self.weights[k] * v for k, v in terms.items() if self.weights[k])
