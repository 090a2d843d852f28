"""Feat-KPN: feature-space kernel prediction network for 2D low-dose CT denoising (bundle ``ct_lowdose_featkpn``).

Architecture (bundles/ct_lowdose_featkpn/docs/README.md; ~1.00 M parameters with ``nf = nk = 16``, ``k = 5``;
no normalisation layers):

- restoration encoder, three scales: full resolution ``conv3 1->nf`` + 2 ResBlocks; 1/2: stride-2 ``conv3 nf->2nf``
  + 2 ResBlocks; 1/4: stride-2 ``conv3 2nf->4nf`` + 2 ResBlocks. Each level is projected by ``conv3`` + LeakyReLU to
  ``F0, F1, F2`` with ``nk, 2nk, 4nk`` channels.
- kernel branch: a second encoder of the same structure (own weights) on the same input, and per level a head
  (``conv3`` + LeakyReLU, 2 ResBlocks, ``1x1 conv``) predicting ``K0, K1, K2`` with ``C*k*k`` channels, one
  ``k x k`` kernel per pixel AND per channel (``C = nk, 2nk, 4nk``).
- kernels applied in feature space (:func:`common.networks.pixel_kernels.apply_pixel_kernels`), raw as in the
  original or softmax-normalised (``normalize_kernels=True``).
- decoder: ``upconv(K2*F2) + K1*F1`` -> 2 ResBlocks -> ``upconv(.) + K0*F0`` -> 2 ResBlocks -> ``conv3 nk->1`` ->
  ``+ input`` (global residual). ``upconv`` = ``conv3`` to 4x channels -> PixelShuffle(2) -> LeakyReLU.

ResBlock: ``x + conv3(LReLU(conv3(x)))`` with Kaiming initialisation scaled by 0.1.

Input ``(B, 1, H, W)`` with ``H, W`` multiples of 4 (:class:`common.inferers.SliceWiseInferer` pads any slice and
crops back), intensities HU clipped to [-1024, 3072] / 4096 by default; output the same shape and units. With
``context_slices = c`` the input holds the ``2c + 1`` neighbouring slices ``(B, 2c + 1, H, W)`` and the output is the
centre slice's ``(B, 1, H, W)`` (an extension of the original 2D method).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .args import require_bool
from .noise_level import noise_level_map
from .pixel_kernels import apply_pixel_kernels, normalize_kernels

__all__ = ["FeatKPN", "KPNEncoder", "KernelHead", "ResBlock", "UpConv"]


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """``x + conv3(LReLU(conv3(x)))``, channels preserved; Kaiming init x 0.1 (starts close to the identity)."""

    def __init__(self, channels: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.conv1 = _conv3(channels, channels)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        self.conv2 = _conv3(channels, channels)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class UpConv(nn.Sequential):
    """``conv3 cin -> 4*cout`` -> PixelShuffle(2) -> LeakyReLU: ``(B, cin, H, W)`` -> ``(B, cout, 2H, 2W)``."""

    def __init__(self, cin: int, cout: int, negative_slope: float = 0.2) -> None:
        super().__init__(_conv3(cin, 4 * cout), nn.PixelShuffle(2), nn.LeakyReLU(negative_slope, inplace=True))


class KPNEncoder(nn.Module):
    """Three-scale encoder: returns features at 1, 1/2 and 1/4 resolution with ``nf, 2nf, 4nf`` channels."""

    def __init__(self, in_channels: int, nf: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.level0 = nn.Sequential(_conv3(in_channels, nf), ResBlock(nf, negative_slope), ResBlock(nf, negative_slope))
        self.level1 = nn.Sequential(
            _conv3(nf, 2 * nf, stride=2), ResBlock(2 * nf, negative_slope), ResBlock(2 * nf, negative_slope)
        )
        self.level2 = nn.Sequential(
            _conv3(2 * nf, 4 * nf, stride=2), ResBlock(4 * nf, negative_slope), ResBlock(4 * nf, negative_slope)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e0 = self.level0(x)
        e1 = self.level1(e0)
        e2 = self.level2(e1)
        return e0, e1, e2


class KernelHead(nn.Sequential):
    """``conv3`` + LeakyReLU, 2 ResBlocks, ``1x1 conv`` -> ``channels * k * k`` per-pixel kernel taps."""

    def __init__(self, cin: int, channels: int, kernel_size: int, negative_slope: float = 0.2) -> None:
        super().__init__(
            _conv3(cin, cin),
            nn.LeakyReLU(negative_slope, inplace=True),
            ResBlock(cin, negative_slope),
            ResBlock(cin, negative_slope),
            nn.Conv2d(cin, channels * kernel_size * kernel_size, 1),
        )


class FeatKPN(nn.Module):
    """Feature-space kernel prediction network (2D).

    Args:
        spatial_dims: 2 (a slice-wise network; the bundle runs it on every axial slice).
        in_channels / out_channels: image channels (1 for CT); the global residual needs them equal.
        features: encoder width at full resolution (doubles per scale).
        kernel_features: width of the projected features (and of the kernels) at full resolution (doubles per scale).
        kernel_size: ``k`` of the per-pixel kernels (odd).
        normalize_kernels: softmax over the ``k*k`` taps (each kernel a local weighted average); False applies the
            raw predicted kernels as the original code does.
        negative_slope: LeakyReLU slope.
        noise_level_input: both encoders also get a constant channel holding the slice's own noise level
            (:func:`common.networks.noise_level.noise_level_map`, computed inside the network from its input, so no
            pipeline change is needed); False (the shipped weights) is the original single-channel network.
        noise_level_scale: multiplies that level (intensity units: HU / 4096 in the bundle, where 100 brings the
            phantoms' noise to about 0.1-3).
        context_slices: ``c`` neighbouring slices on each side of the slice to restore are given as extra input
            channels (2.5D: CT noise is independent between slices while anatomy continues, which a 2D filter such as
            BM3D cannot use); 0 (the original) sees one slice. The residual and the noise level use the centre slice.

    Shapes: ``(B, in_channels * (2c + 1), H, W)`` -> ``(B, out_channels, H, W)``, ``H`` and ``W`` multiples of 4;
    channel ``i * (2c + 1) + j`` is image channel ``i`` at slice offset ``j - c``
    (:class:`common.inferers.SliceWiseInferer` with ``context=c`` builds it).

    Example::

        net = FeatKPN(spatial_dims=2, in_channels=1, out_channels=1, features=16, kernel_features=16)
        out = net(torch.rand(2, 1, 64, 64))  # (2, 1, 64, 64)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: int = 16,
        kernel_features: int = 16,
        kernel_size: int = 5,
        normalize_kernels: bool = False,
        negative_slope: float = 0.2,
        noise_level_input: bool = False,
        noise_level_scale: float = 100.0,
        context_slices: int = 0,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"FeatKPN is a 2D network: spatial_dims must be 2, got {spatial_dims}")
        if in_channels != out_channels:
            raise ValueError(f"the global residual needs in_channels == out_channels, got {in_channels}/{out_channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if int(context_slices) < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        self.kernel_size = int(kernel_size)
        self.context = int(context_slices)
        self.in_channels = int(in_channels)
        self.normalize = require_bool(normalize_kernels, "normalize_kernels")
        self.noise_level_input = require_bool(noise_level_input, "noise_level_input")
        self.noise_level_scale = float(noise_level_scale)
        s, nf, nk = negative_slope, int(features), int(kernel_features)
        enc_in = in_channels * (2 * self.context + 1) + int(self.noise_level_input)
        self.encoder = KPNEncoder(enc_in, nf, s)
        self.proj0 = nn.Sequential(_conv3(nf, nk), nn.LeakyReLU(s, inplace=True))
        self.proj1 = nn.Sequential(_conv3(2 * nf, 2 * nk), nn.LeakyReLU(s, inplace=True))
        self.proj2 = nn.Sequential(_conv3(4 * nf, 4 * nk), nn.LeakyReLU(s, inplace=True))
        self.kernel_encoder = KPNEncoder(enc_in, nf, s)
        self.head0 = KernelHead(nf, nk, kernel_size, s)
        self.head1 = KernelHead(2 * nf, 2 * nk, kernel_size, s)
        self.head2 = KernelHead(4 * nf, 4 * nk, kernel_size, s)
        self.up2 = UpConv(4 * nk, 2 * nk, s)
        self.dec1 = nn.Sequential(ResBlock(2 * nk, s), ResBlock(2 * nk, s))
        self.up1 = UpConv(2 * nk, nk, s)
        self.dec0 = nn.Sequential(ResBlock(nk, s), ResBlock(nk, s))
        self.out_conv = _conv3(nk, out_channels)

    def _filter(self, features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            kernels = normalize_kernels(kernels, self.kernel_size)
        return apply_pixel_kernels(features, kernels, self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 != 0 or x.shape[-2] % 4 != 0:
            raise ValueError(f"FeatKPN needs H and W to be multiples of 4, got {x.shape[-2]} x {x.shape[-1]}")
        span = 2 * self.context + 1
        if x.shape[1] != self.in_channels * span:
            raise ValueError(
                f"FeatKPN with context_slices={self.context} needs {self.in_channels * span} input channels, "
                f"got {x.shape[1]}"
            )
        # the slice to restore: offset 0 of every image channel
        centre = x[:, self.context :: span] if span > 1 else x
        inp = torch.cat([x, noise_level_map(centre, self.noise_level_scale)], dim=1) if self.noise_level_input else x
        e0, e1, e2 = self.encoder(inp)
        k0, k1, k2 = self.kernel_encoder(inp)
        y2 = self._filter(self.proj2(e2), self.head2(k2))
        y1 = self.up2(y2) + self._filter(self.proj1(e1), self.head1(k1))
        y0 = self.up1(self.dec1(y1)) + self._filter(self.proj0(e0), self.head0(k0))
        return self.out_conv(self.dec0(y0)) + centre
