"""Anatomical segmentation network whose decoder features drive the anatomical perception loss (Feat-KPN).

The original Feat-KPN loss uses a privately distributed 17-class head-CT segmentation U-Net. We cannot download
weights, so the bundle trains this small 2D U-Net (MONAI's ``BasicUNet``) on normal-dose CT with HU-band
pseudo-labels (:class:`common.transforms.HUBandLabeld`) and freezes it
(:class:`common.losses.AnatomicalPerceptionLoss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNet

__all__ = ["AnatomyUNet"]


class AnatomyUNet(BasicUNet):
    """MONAI ``BasicUNet`` that also exposes its decoder features.

    ``forward(x)``: ``(B, in_channels, H, W)`` -> logits ``(B, out_channels, H, W)`` (H, W multiples of 16 avoid
    internal padding). :meth:`features` returns the four decoder levels (1/8, 1/4, 1/2, 1 resolution) and the logits.

    Example::

        net = AnatomyUNet(spatial_dims=2, in_channels=1, out_channels=6)
        logits = net(torch.rand(2, 1, 64, 64))  # (2, 6, 64, 64)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 6,
        features: Sequence[int] = (16, 16, 32, 64, 128, 16),
        **kwargs,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, features=features, **kwargs
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[u4 (1/8), u3 (1/4), u2 (1/2), u1 (1/1), logits]`` for ``x`` of shape ``(B, C, H, W)``."""
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        return [u4, u3, u2, u1, self.final_conv(u1)]
