"""3D U-Net with learned through-plane (z) up-sampling (bundle ``ct_throughplane_sr``).

Grid convention (the one of :func:`common.physics.simulate_thick_slices` with ``offset = 0``): input thick slice
``k`` lies on output thin slice ``k * r``; an input of ``Zt`` slices gives ``Zt * r`` output slices, the last ``r - 1``
beyond the last thick slice. :func:`linear_upsample_z` interpolates on exactly that grid (no half-slice shift, unlike
``F.interpolate(..., align_corners=False)``), and :func:`shuffle_z` puts learned sub-slice ``m`` of thick slice ``k``
on output slice ``k * r + m``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

from .args import require_bool

__all__ = ["ThroughPlaneSRNet", "linear_upsample_z", "shuffle_z"]


def linear_upsample_z(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Linear interpolation along the last axis onto the thin grid.

    ``(B, C, X, Y, Zt) -> (B, C, X, Y, Zt * factor)``; output slice ``j`` sits at thick coordinate ``j / factor``
    (slice ``k * factor`` equals thick slice ``k``); positions past the last thick slice take its value.
    """
    zt = x.shape[-1]
    pos = torch.arange(zt * factor, device=x.device, dtype=x.dtype) / factor
    pos = pos.clamp(max=float(zt - 1))
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=zt - 1)
    w = pos - i0.to(x.dtype)  # (Z,), broadcast over the leading axes
    return x.index_select(-1, i0) * (1 - w) + x.index_select(-1, i1) * w


def shuffle_z(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Sub-pixel shuffle along z: ``(B, C * r, X, Y, Zt) -> (B, C, X, Y, Zt * r)``; channel ``c * r + m`` of thick
    slice ``k`` becomes channel ``c`` of output slice ``k * r + m``."""
    b, cr, nx, ny, zt = x.shape
    c = cr // factor
    x = x.reshape(b, c, factor, nx, ny, zt).permute(0, 1, 3, 4, 5, 2)
    return x.reshape(b, c, nx, ny, zt * factor)


class ThroughPlaneSRNet(nn.Module):
    """Through-plane super-resolution: ``(B, C, X, Y, Zt)`` thick slices -> ``(B, C, X, Y, Zt * factor)`` thin slices.

    ``out = linear_upsample_z(x) + refine([shuffle_z(expand(body(x))), linear_upsample_z(x)])``:

    - ``body``: MONAI ``UNet`` on the thick grid, pooling in-plane only (strides ``(2, 2, 1)``; z holds few slices);
      any X, Y (padded internally to a multiple of ``2**levels`` with replicate padding and cropped back), any Zt.
    - learned up-sampling: a 3x3x3 convolution to ``hr_channels * factor`` channels and a sub-pixel shuffle along z.
    - ``refine``: two 3x3x3 convolutions on the thin grid, seeing the interpolated input too; the last one starts at
      zero, so an untrained network is exactly linear interpolation (the global residual path).

    Args:
        spatial_dims: 3 (z, the last axis, is the through-plane axis).
        in_channels / out_channels: image channels (1 for CT); the global residual needs them equal.
        factor: integer through-plane factor ``r`` (2..5 in the bundle; any integer >= 2 works).
        channels: body U-Net widths per level (``len(channels) - 1`` in-plane poolings).
        num_res_units: residual units per U-Net level (MONAI ``UNet``).
        hr_channels: feature channels on the thin grid.
        norm: MONAI norm of the body (default none: a window's output does not depend on the window's statistics).
        identity_start: zero the last refinement convolution, so the untrained network is exactly linear
            interpolation along z (training starts from a sensible output); False: MONAI's default initialisation.

    Units: whatever the input uses (the bundle feeds HU clipped to [-1024, 3071] mapped to [0, 1]).

    Example::

        net = ThroughPlaneSRNet(spatial_dims=3, in_channels=1, out_channels=1, factor=4, channels=(32, 64, 128))
        thin = net(torch.rand(1, 1, 64, 64, 12))  # (1, 1, 64, 64, 48)
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        factor: int = 4,
        channels: Sequence[int] = (32, 64, 128),
        num_res_units: int = 2,
        hr_channels: int = 16,
        norm: str | tuple | None = None,
        identity_start: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"ThroughPlaneSRNet is a 3D network: spatial_dims must be 3, got {spatial_dims}")
        if in_channels != out_channels:
            raise ValueError(f"the global residual needs in_channels == out_channels, got {in_channels}/{out_channels}")
        if isinstance(factor, bool) or int(factor) != factor or factor < 2:
            raise ValueError(f"factor must be an integer >= 2, got {factor!r}")
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {channels!r}")
        self.factor = int(factor)
        self.divisor = 2 ** (len(channels) - 1)
        feat = int(channels[0])
        self.body = UNet(
            spatial_dims=3,
            in_channels=int(in_channels),
            out_channels=feat,
            channels=tuple(int(c) for c in channels),
            strides=tuple((2, 2, 1) for _ in channels[1:]),
            num_res_units=int(num_res_units),
            act="PRELU",
            norm=norm,
        )
        self.expand = nn.Conv3d(feat, hr_channels * self.factor, 3, padding=1)
        self.act = nn.PReLU(hr_channels)
        self.refine1 = nn.Conv3d(hr_channels + int(in_channels), hr_channels, 3, padding=1)
        self.act2 = nn.PReLU(hr_channels)
        self.refine2 = nn.Conv3d(hr_channels, int(out_channels), 3, padding=1)
        if require_bool(identity_start, "identity_start"):
            nn.init.zeros_(self.refine2.weight)
            nn.init.zeros_(self.refine2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Zt) -> (B, C, X, Y, Zt * factor)``."""
        if x.ndim != 5:
            raise ValueError("expected a (B, C, X, Y, Zt) input, got " + str(x.ndim) + " dimensions")
        nx, ny = x.shape[2], x.shape[3]
        px, py = (-nx) % self.divisor, (-ny) % self.divisor
        xp = F.pad(x, [0, 0, 0, py, 0, px], mode="replicate") if px or py else x
        feats = self.body(xp)[:, :, :nx, :ny]
        hr = self.act(shuffle_z(self.expand(feats), self.factor))
        base = linear_upsample_z(x, self.factor)
        hr = self.act2(self.refine1(torch.cat([hr, base], dim=1)))
        return base + self.refine2(hr)
