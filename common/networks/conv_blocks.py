"""Convolution variants and pooling layers of :class:`~common.networks.film_unet.FiLMUNet`.

Every convolution variant maps ``(B, C_in, *spatial)`` to ``(B, C_out, *spatial)`` ("same" padding, odd kernel sizes)
and has the same call signature ``conv(x, dose)`` so the U-Net can swap them
(``dose`` ``(B, dose_dim)`` or ``None``
is only used by the mixture of kernels):

- ``"standard"``: :class:`StandardConv`, a dense ``k^d`` convolution;
- ``"depthwise"``: :class:`DepthwiseSeparableConv`, depth-wise ``k^d`` (groups = C_in) then point-wise ``1^d``;
- ``"interleaved"``: :class:`InterleavedDepthwiseConv`, depth-wise ``k^d`` then two interleaved grouped point-wise
  convolutions whose groups overlap by half a group (IGCV-style), so information flows between channel groups;
- ``"mixture"``: :class:`MixtureOfKernelsConv`, parallel dense ``k^d``, separable ``5^d`` and dilated ``3^d`` branches
  mixed per sample by a softmax gate computed from the metadata (a learned constant gate when ``dose_dim = 0``).

Pooling (``make_pool``): ``"avg"``, ``"max"`` or ``"mixed"`` (:class:`MixedPool`,
``sigmoid(a) * max + (1 - sigmoid(a)) * avg`` with a learnable scalar ``a``), all with window and stride 2.
"""

from __future__ import annotations

import math

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

__all__ = [
    "CONV_KINDS",
    "POOL_KINDS",
    "ConstantGate",
    "DepthwiseSeparableConv",
    "InterleavedDepthwiseConv",
    "MetaGate",
    "MixedPool",
    "MixtureOfKernelsConv",
    "StandardConv",
    "interleave_groups",
    "make_conv",
    "make_pool",
]

CONV_KINDS = ("standard", "depthwise", "interleaved", "mixture")
POOL_KINDS = ("avg", "max", "mixed")


def _check_kernel(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 1 (same padding), got {kernel_size}")


class StandardConv(nn.Module):
    """Dense convolution ``k^d``, same padding, with bias: ``(B, C_in, *S) -> (B, C_out, *S)``.

    Parameters: ``k^d * C_in * C_out + C_out``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check_kernel(kernel_size)
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C_in, *S)`` -> ``(B, C_out, *S)``; ``dose`` is ignored."""
        return self.conv(x)


class DepthwiseSeparableConv(nn.Module):
    """Depth-wise ``k^d`` convolution (groups = C_in, no bias) followed by a point-wise ``1^d`` convolution (bias).

    Parameters: ``k^d * C_in + C_in * C_out + C_out``. Shapes: ``(B, C_in, *S) -> (B, C_out, *S)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check_kernel(kernel_size)
        conv = Conv[Conv.CONV, spatial_dims]
        self.depthwise = conv(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False
        )
        self.pointwise = conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C_in, *S)`` -> ``(B, C_out, *S)``; ``dose`` is ignored."""
        return self.pointwise(self.depthwise(x))


def interleave_groups(in_channels: int, out_channels: int, groups: int) -> int:
    """Largest number of groups ``g <= groups`` dividing both channel counts with at least 2 output channels per group.

    Returns 1 (dense point-wise convolutions, nothing to interleave) when no such ``g > 1`` exists, e.g. for a
    1-channel input.
    """
    for g in range(max(1, groups), 1, -1):
        if in_channels % g == 0 and out_channels % g == 0 and out_channels // g >= 2:
            return g
    return 1


class InterleavedDepthwiseConv(nn.Module):
    """Depth-wise convolution with interleaved (overlapping) grouped point-wise channel mixing.

    Design (after the interleaved group convolutions IGCV1/IGCV2, Zhang et al. 2017, Xie et al. 2018), with ``G``
    groups of ``s = C_out / G`` output channels:

    1. depth-wise ``k^d`` convolution on the ``C_in`` channels (spatial filtering, no channel mixing);
    2. primary grouped point-wise convolution ``C_in -> C_out`` with ``G`` groups: output group ``g`` only sees
       input group ``g``;
    3. channel roll by ``-s // 2`` (half a group), so that each group of the next convolution holds the second half
       of primary group ``g`` and the first half of primary group ``g + 1`` (cyclically);
    4. secondary grouped point-wise convolution ``C_out -> C_out`` with ``G`` groups: the groups of steps 2 and 4
       overlap by half a group, so information flows between neighbouring groups (a stack of such layers mixes all
       groups after ``~G / 2`` layers, at a fraction ``1 / G`` of the point-wise cost);
    5. roll back by ``+s // 2`` so output channels stay aligned with the primary groups: output group ``g`` depends
       on input groups ``g - 1``, ``g`` and ``g + 1``.

    With ``interleave=False`` steps 3 and 5 are skipped: a plain grouped design where groups never exchange
    information (kept for tests and ablations). ``G`` is reduced by :func:`interleave_groups` to fit the channel
    counts (1 = dense point-wise convolutions).

    Parameters: ``k^d * C_in + C_in * C_out / G + C_out + C_out^2 / G + C_out``.
    Shapes: ``(B, C_in, *S) -> (B, C_out, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        groups: int = 4,
        interleave: bool = True,
    ) -> None:
        super().__init__()
        _check_kernel(kernel_size)
        conv = Conv[Conv.CONV, spatial_dims]
        self.groups = interleave_groups(in_channels, out_channels, groups)
        self.shift = (out_channels // self.groups) // 2 if (interleave and self.groups > 1) else 0
        self.depthwise = conv(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False
        )
        self.primary = conv(in_channels, out_channels, 1, groups=self.groups)
        self.secondary = conv(out_channels, out_channels, 1, groups=self.groups)

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C_in, *S)`` -> ``(B, C_out, *S)``; ``dose`` is ignored."""
        h = self.primary(self.depthwise(x))
        if self.shift > 0:
            h = torch.roll(h, shifts=-self.shift, dims=1)
        h = self.secondary(h)
        if self.shift > 0:
            h = torch.roll(h, shifts=self.shift, dims=1)
        return h


class MetaGate(nn.Module):
    """Gate logits from the dose: MLP ``dose_dim -> hidden (SiLU) -> num_branches``;
    ``(B, dose_dim) -> (B, K)``."""

    def __init__(self, dose_dim: int, num_branches: int, hidden: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dose_dim, hidden), nn.SiLU(), nn.Linear(hidden, num_branches))

    def forward(self, dose: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Return logits ``(batch, K)``; ``dose`` ``(batch, dose_dim)`` is required."""
        if dose is None:
            raise ValueError("dose metadata missing: the mixture-of-kernels gate needs dose (B, dose_dim)")
        return self.mlp(dose)


class ConstantGate(nn.Module):
    """Learned constant gate logits (unconditioned networks): returns ``(batch, K)``, ignoring ``dose``."""

    def __init__(self, num_branches: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_branches))

    def forward(self, dose: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Return the logits repeated to ``(batch, K)``."""
        return self.logits.unsqueeze(0).expand(batch, self.logits.shape[0])


class MixtureOfKernelsConv(nn.Module):
    """Parallel convolutions of different receptive fields mixed by a metadata-driven softmax gate.

    Branches (all ``(B, C_in, *S) -> (B, C_out, *S)``):

    - dense ``k^d`` convolution (``k`` = the level's kernel size);
    - separable ``5^d``: depth-wise ``5^d`` + point-wise ``1^d`` (a large receptive field at low cost);
    - dense ``3^d`` convolution with dilation 2 (receptive field ``5^d``, sparse sampling).

    The output is ``sum_i w_i(dose) * branch_i(x)`` with ``w = softmax(gate(dose))`` ``(B, 3)`` per sample;
    the gate is :class:`MetaGate` (MLP ``dose_dim -> gate_hidden -> 3``) or :class:`ConstantGate` when
    ``dose_dim = 0``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dose_dim: int = 1,
        gate_hidden: int = 16,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.branches = nn.ModuleList(
            [
                StandardConv(spatial_dims, in_channels, out_channels, kernel_size),
                DepthwiseSeparableConv(spatial_dims, in_channels, out_channels, 5),
                conv(in_channels, out_channels, 3, padding=2, dilation=2),
            ]
        )
        num = len(self.branches)
        self.gate: nn.Module = MetaGate(dose_dim, num, gate_hidden) if dose_dim > 0 else ConstantGate(num)

    def gate_weights(self, dose: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Softmax mixing weights ``(batch, 3)`` (rows sum to 1) for ``dose`` ``(batch, dose_dim)``."""
        return torch.softmax(self.gate(dose, batch), dim=1)

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C_in, *S)``, ``dose`` ``(B, dose_dim)`` (None: unconditioned) -> ``(B, C_out, *S)``."""
        w = self.gate_weights(dose, x.shape[0])
        out = torch.zeros(0)
        for i, branch in enumerate(self.branches):
            y = branch(x)
            wi = w[:, i]
            while wi.dim() < y.dim():
                wi = wi.unsqueeze(-1)
            out = wi * y if i == 0 else out + wi * y
        return out


def make_conv(
    kind: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dose_dim: int = 0,
    groups: int = 4,
) -> nn.Module:
    """Build the convolution variant ``kind`` (one of :data:`CONV_KINDS`); see the module docstring.

    Args:
        kind: ``"standard"``, ``"depthwise"``, ``"interleaved"`` or ``"mixture"``.
        spatial_dims: 2 or 3.
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel size ``k`` (same padding).
        dose_dim: metadata length (the mixture gate's input; 0 = learned constant gate).
        groups: number of channel groups of the interleaved variant.
    """
    if kind == "standard":
        return StandardConv(spatial_dims, in_channels, out_channels, kernel_size)
    if kind == "depthwise":
        return DepthwiseSeparableConv(spatial_dims, in_channels, out_channels, kernel_size)
    if kind == "interleaved":
        return InterleavedDepthwiseConv(spatial_dims, in_channels, out_channels, kernel_size, groups=groups)
    if kind == "mixture":
        return MixtureOfKernelsConv(spatial_dims, in_channels, out_channels, kernel_size, dose_dim=dose_dim)
    raise ValueError(f"conv must be one of {CONV_KINDS}, got {kind!r}")


class MixedPool(nn.Module):
    """Learnable mix of max and average pooling (window and stride 2).

    ``y = sigmoid(a) * maxpool(x) + (1 - sigmoid(a)) * avgpool(x)`` with one learnable scalar ``a`` (initialised
    to ``init``; 0 = equal mix). Shapes: ``(B, C, *S) -> (B, C, *S // 2)``.
    """

    def __init__(self, spatial_dims: int, init: float = 0.0) -> None:
        super().__init__()
        if not math.isfinite(init):
            raise ValueError(f"init must be finite, got {init}")
        self.max_pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.avg_pool = Pool[Pool.AVG, spatial_dims](kernel_size=2, stride=2)
        self.a = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, *S)`` -> ``(B, C, *S // 2)``."""
        s = torch.sigmoid(self.a)
        return s * self.max_pool(x) + (1.0 - s) * self.avg_pool(x)


def make_pool(kind: str, spatial_dims: int) -> nn.Module:
    """Build a 2x down-sampling layer: ``"avg"``, ``"max"`` or ``"mixed"`` (:class:`MixedPool`)."""
    if kind == "avg":
        return Pool[Pool.AVG, spatial_dims](kernel_size=2, stride=2)
    if kind == "max":
        return Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
    if kind == "mixed":
        return MixedPool(spatial_dims)
    raise ValueError(f"pooling must be one of {POOL_KINDS}, got {kind!r}")
