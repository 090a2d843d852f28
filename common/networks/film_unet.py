"""Residual U-Net with FiLM conditioning on dose metadata (bundle ``pet_lowdose_film_unet``).

See :class:`FiLMUNet`. Building blocks: :class:`NConvBlock` (convolutions + instance norm + FiLM + PReLU),
:class:`EncoderLevel`, :class:`DecoderLevel`, :class:`DeepSupervisionHead`; convolution variants and pooling layers
live in :mod:`common.networks.conv_blocks`, the FiLM layers in :mod:`common.networks.film`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from .conv_blocks import CONV_KINDS, POOL_KINDS, make_conv, make_pool
from .film import FiLM, NoFiLM

__all__ = [
    "ConvUnit",
    "InstanceNormAnySize",
    "DecoderLevel",
    "DeepSupervisionHead",
    "EncoderLevel",
    "FiLMUNet",
    "NConvBlock",
]


class InstanceNormAnySize(nn.Module):
    """Instance norm without affine parameters that also accepts a single spatial element.

    PyTorch's ``InstanceNorm`` refuses maps with one voxel (the bottleneck of a ``<= 2**L``-sized input); the limit of
    ``(h - mean) / sqrt(var + eps)`` there is 0, which is returned. Shapes: ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.norm = Norm[Norm.INSTANCE, spatial_dims](channels, affine=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Normalise each channel of each sample over its spatial axes."""
        n = 1
        for s in h.shape[2:]:
            n *= s
        if n == 1:
            return torch.zeros_like(h)
        return self.norm(h)


class ConvUnit(nn.Module):
    """``conv k^d -> InstanceNorm (affine=False) -> FiLM -> Dropout -> PReLU(0.25)``.

    Shapes: ``(B, C_in, *S) -> (B, C_out, *S)``.

    The FiLM layer comes after the norm (a norm after it would undo the modulation); it is :class:`NoFiLM`
    (identity) when ``film`` is False or ``dose_dim = 0``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        conv: str,
        dose_dim: int,
        film: bool,
        film_hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.conv = make_conv(conv, spatial_dims, in_channels, out_channels, kernel_size, dose_dim=dose_dim)
        self.norm = InstanceNormAnySize(spatial_dims, out_channels)
        self.film: nn.Module = FiLM(dose_dim, out_channels, film_hidden) if (film and dose_dim > 0) else NoFiLM()
        self.drop: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.act = nn.PReLU(num_parameters=1, init=0.25)

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None) -> torch.Tensor:
        """``x`` ``(B, C_in, *S)``, ``dose`` ``(B, dose_dim)`` or ``None`` -> ``(B, C_out, *S)``."""
        return self.act(self.drop(self.film(self.norm(self.conv(x, dose)), dose)))


class NConvBlock(nn.Module):
    """The "NConv" block: ``num_convs`` :class:`ConvUnit` in a row, the last one FiLM-modulated.

    Each convolution is followed by its own norm and PReLU (as in V-Net's ``_make_nConv``; two convolutions with
    nothing in between would compose to a single linear map). The block owns one FiLM generator
    (``dose_dim -> film_hidden -> 2 * out_channels``), applied after the norm of its last unit.
    Shapes: ``(B, C_in, *S) -> (B, C_out, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        conv: str = "standard",
        dose_dim: int = 1,
        film_hidden: int = 128,
        dropout: float = 0.0,
        num_convs: int = 2,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.units = nn.ModuleList(
            [
                ConvUnit(
                    spatial_dims,
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    kernel_size,
                    conv,
                    dose_dim,
                    film=i == num_convs - 1,
                    film_hidden=film_hidden,
                    dropout=dropout,
                )
                for i in range(num_convs)
            ]
        )

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None) -> torch.Tensor:
        """``x`` ``(B, C_in, *S)``, ``dose`` ``(B, dose_dim)`` or ``None`` -> ``(B, C_out, *S)``."""
        for unit in self.units:
            x = unit(x, dose)
        return x


class EncoderLevel(nn.Module):
    """:class:`NConvBlock` then 2x pooling; returns ``(skip (B, C_out, *S), down (B, C_out, *S // 2))``."""

    def __init__(self, block: NConvBlock, pool: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.pool = pool

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Skip connection taken before the pooling."""
        skip = self.block(x, dose)
        return skip, self.pool(skip)


class DecoderLevel(nn.Module):
    """Transposed convolution x2 (``C_in -> C_in // 2``), concatenation ``[skip, up]``, :class:`NConvBlock`.

    Shapes: ``x`` ``(B, C_in, *S)``, ``skip`` ``(B, C_skip, *2S)`` -> ``(B, C_out, *2S)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, block: NConvBlock) -> None:
        super().__init__()
        self.up = Conv[Conv.CONVTRANS, spatial_dims](in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.block = block

    def forward(self, x: torch.Tensor, skip: torch.Tensor, dose: torch.Tensor | None) -> torch.Tensor:
        """Up-sample ``x``, concatenate with ``skip`` on channels, convolve."""
        return self.block(torch.cat([skip, self.up(x)], dim=1), dose)


class DeepSupervisionHead(nn.Module):
    """1x1 head on a decoder level at scale ``1 / 2**level``, producing an image at that resolution.

    With ``residual`` the output is ``avgpool_{2**level}(input) - head(features)``, a denoised image consistent with
    the main output ``input - net(input)``. Shapes: ``features`` ``(B, C, *S / 2**level)``, ``image``
    ``(B, out_channels, *S)`` -> ``(B, out_channels, *S / 2**level)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, level: int, residual: bool) -> None:
        super().__init__()
        self.level = level
        self.residual = residual
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, 1)
        self.pool = Pool[Pool.AVG, spatial_dims](kernel_size=2**level, stride=2**level)

    def forward(self, features: torch.Tensor, image: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``features`` from the decoder, ``image`` = the (padded) residual base at full resolution, ``scale`` the
        residual scale ``(B, out_channels, 1, ...)`` (ones when the network is not scale-equivariant)."""
        out = self.conv(features) * scale
        if self.residual:
            out = self.pool(image) - out
        return out


class FiLMUNet(nn.Module):
    """3D (or 2D) residual U-Net with FiLM conditioning on metadata, for low-dose PET denoising.

    Architecture (``L = len(channels)`` levels; defaults give the published layout):

    - encoder level ``l``: :class:`NConvBlock` ``C_{l-1} -> C_l`` (2 x [conv ``k_l^d`` -> InstanceNorm -> Dropout
      -> PReLU], FiLM after the last norm), skip taken, then 2x pooling (``pooling``);
    - bottleneck :class:`NConvBlock` ``C_L -> bottleneck_channels`` at ``1 / 2**L`` resolution;
    - decoder level ``l`` (from ``L`` to 1): transposed conv x2 halving the channels, concat(skip, up),
      :class:`NConvBlock` ``-> C_l``;
    - final 1x1 convolution ``C_1 -> out_channels``; with ``residual``: ``output = x - net(x)`` (the network predicts
      the noise), using the first ``out_channels`` input channels when ``in_channels > out_channels``.

    Every block owns a FiLM generator (MLP ``dose_dim -> film_hidden (SiLU) -> 2C``, last layer zero-initialised:
    identity modulation at initialisation) applied as ``(1 + gamma) * norm(h) + beta``. ``dose_dim = 0`` builds the
    unconditioned ablation (no FiLM; ``dose`` is ignored and may be ``None``).

    Any input size works: the input is padded at the high end of each spatial axis to a multiple of ``2**L``
    (replicate padding) and the output is cropped back to the input size.

    Parameter count (standard convs, kernel 3, biases, excluding FiLM MLPs):
    ``sum_conv (27 * C_in * C_out + C_out) + sum_up (8 * C_in * C_in / 2 + C_in / 2) + (C_1 + 1) * out + #PReLU``;
    for ``channels=(32, 64, 128, 256)``, bottleneck 256, 1 -> 1 channel this is 13,825,651 (+ 316,032 FiLM).

    Args:
        spatial_dims: 3 (volumes ``(B, C, X, Y, Z)``) or 2 (slices ``(B, C, X, Y)``).
        in_channels: input channels (the low-dose image, optionally followed by guidance channels).
        out_channels: output channels (``<= in_channels`` when ``residual``).
        channels: widths ``C_1 .. C_L`` of the encoder levels.
        bottleneck_channels: width of the bottleneck block (even: the up-sampling halves it).
        dose_dim: length of the metadata vector (for the DRF alone: 1, value ``ln(DRF) / 10``); 0 = unconditioned.
        film_hidden: hidden width of the FiLM MLPs.
        conv: convolution variant, ``"standard"``, ``"depthwise"``, ``"interleaved"`` or ``"mixture"``
            (see :mod:`common.networks.conv_blocks`).
        pooling: ``"avg"``, ``"max"`` or ``"mixed"`` (learnable ``sigmoid(a) * max + (1 - sigmoid(a)) * avg``).
        kernel_sizes: odd kernel size per level, ``L + 1`` values (encoder levels, then bottleneck; decoder level
            ``l`` uses ``kernel_sizes[l]``); default all 3.
        dropout: dropout probability after each FiLM / norm (0 = none).
        deep_supervision: add 1x1 heads on the decoder levels at ``1/2 .. 1/2**num_ds_heads`` resolution. In training
            mode ``forward`` then returns ``[final, aux_1, ..., aux_n]`` (for ``monai.losses.DeepSupervisionLoss``);
            in eval mode (inference, TorchScript) only the final tensor.
        num_ds_heads: number of auxiliary heads, ``1 .. L - 1``.
        residual: predict the noise and subtract it from the input.
        residual_scale: ``"std"`` (default) multiplies the predicted residual by the input's per-sample standard
            deviation over the (padded) spatial axes; ``"none"`` is the original layout. Every block ends in an
            InstanceNorm, so the features are invariant to the input's scale and offset and an unscaled residual
            has the same amplitude in a bladder patch (SUV 20) as in a lung patch (SUV 0.3), while the count noise
            grows with activity; scaling by the std makes the network scale-equivariant
            (``net(a x) = a net(x)``), which is what a denoiser of Poisson-like noise needs.

    Shapes: ``forward(x, dose)``: ``x`` ``(B, in_channels, *S)``, ``dose`` ``(B, dose_dim)``,
    ``(1, dose_dim)`` or None -> ``(B, out_channels, *S)``. A ``dose`` with one row is broadcast to the ``B``
    samples (MONAI's ``sliding_window_inference`` passes the volume's ``(1, dose_dim)`` with a window batch of
    ``sw_batch_size``); for ``dose_dim = 1`` a ``(B,)`` vector is accepted too. All convolution variants and
    pooling modes are TorchScript-scriptable.

    Example::

        net = FiLMUNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(16, 32, 64, 128), dose_dim=1)
        out = net.eval()(torch.rand(1, 1, 48, 48, 48), torch.tensor([[math.log(20) / 10]]))  # (1, 1, 48, 48, 48)
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256),
        bottleneck_channels: int = 256,
        dose_dim: int = 1,
        film_hidden: int = 128,
        conv: str = "standard",
        pooling: str = "avg",
        kernel_sizes: Sequence[int] | None = None,
        dropout: float = 0.0,
        deep_supervision: bool = False,
        num_ds_heads: int = 2,
        residual: bool = True,
        residual_scale: str = "std",
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if residual_scale not in ("std", "none"):
            raise ValueError(f"residual_scale must be 'std' or 'none', got {residual_scale!r}")
        num_levels = len(channels)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if num_levels < 1 or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty sequence of positive widths, got {channels}")
        if bottleneck_channels < 2:
            raise ValueError(f"bottleneck_channels must be >= 2, got {bottleneck_channels}")
        if dose_dim < 0 or film_hidden < 1:
            raise ValueError(f"dose_dim must be >= 0 and film_hidden >= 1, got {dose_dim}, {film_hidden}")
        if conv not in CONV_KINDS:
            raise ValueError(f"conv must be one of {CONV_KINDS}, got {conv!r}")
        if pooling not in POOL_KINDS:
            raise ValueError(f"pooling must be one of {POOL_KINDS}, got {pooling!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        ks = [3] * (num_levels + 1) if kernel_sizes is None else [int(k) for k in kernel_sizes]
        if len(ks) != num_levels + 1 or any(k < 1 or k % 2 == 0 for k in ks):
            raise ValueError(
                f"kernel_sizes must hold {num_levels + 1} odd sizes (one per encoder level, then the bottleneck), "
                f"got {kernel_sizes}"
            )
        if residual and out_channels > in_channels:
            raise ValueError(f"residual needs out_channels <= in_channels, got {out_channels} > {in_channels}")
        if deep_supervision and not 1 <= num_ds_heads <= num_levels - 1:
            raise ValueError(
                f"num_ds_heads must be in [1, {num_levels - 1}] for {num_levels} levels, got {num_ds_heads}"
            )

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dose_dim = dose_dim
        self.residual = residual
        self.scale_by_std = residual_scale == "std"
        self.deep_supervision = deep_supervision
        self.num_ds_heads = num_ds_heads if deep_supervision else 0
        self.pad_multiple = 2**num_levels

        def block(c_in: int, c_out: int, k: int) -> NConvBlock:
            return NConvBlock(spatial_dims, c_in, c_out, k, conv, dose_dim, film_hidden, dropout)

        enc: list[nn.Module] = []
        c_prev = in_channels
        for c, k in zip(channels, ks[:-1], strict=True):
            enc.append(EncoderLevel(block(c_prev, c, k), make_pool(pooling, spatial_dims)))
            c_prev = c
        self.encoder = nn.ModuleList(enc)
        self.bottleneck = block(c_prev, bottleneck_channels, ks[-1])

        dec: list[nn.Module] = []
        c_cur = bottleneck_channels
        for level in range(num_levels - 1, -1, -1):
            c_skip = channels[level]
            dec.append(DecoderLevel(spatial_dims, c_cur, block(c_skip + c_cur // 2, c_skip, ks[level])))
            c_cur = c_skip
        self.decoder = nn.ModuleList(dec)
        self.final = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, 1)
        self.ds_heads = nn.ModuleList(
            [
                DeepSupervisionHead(spatial_dims, channels[k], out_channels, k, residual)
                for k in range(1, self.num_ds_heads + 1)
            ]
        )

    # ----------------------------------------------------------------------------------------------------------
    def _prepare_meta(self, dose: torch.Tensor | None, batch: int, x: torch.Tensor) -> torch.Tensor | None:
        """Validate ``dose``; return it as ``(batch, dose_dim)`` in ``x``'s dtype / device (None:
        unconditioned)."""
        if self.dose_dim == 0:
            return None
        if dose is None:
            raise ValueError(
                "dose metadata missing: this FiLMUNet is conditioned (dose_dim="
                + str(self.dose_dim)
                + ") and needs dose of shape (B, dose_dim), e.g. ln(DRF)/10 "
                + "(common.transforms.encode_dose(drf, 'log_drf')); "
                + "build it with dose_dim=0 for an unconditioned network"
            )
        m = dose.to(device=x.device, dtype=x.dtype)
        if m.dim() == 1:
            if self.dose_dim == 1:
                m = m.unsqueeze(1)
            elif m.shape[0] == self.dose_dim:
                m = m.unsqueeze(0)
        if m.dim() != 2 or m.shape[1] != self.dose_dim:
            raise ValueError(
                "dose metadata must have shape (B, "
                + str(self.dose_dim)
                + ") or (1, "
                + str(self.dose_dim)
                + "), got "
                + str(list(dose.shape))
            )
        if m.shape[0] != batch:
            if m.shape[0] != 1:
                raise ValueError(
                    "dose metadata batch "
                    + str(m.shape[0])
                    + " does not match the image batch "
                    + str(batch)
                    + ": give one row per image or a single row to broadcast"
                )
            m = m.expand(batch, self.dose_dim)
        if not bool(torch.isfinite(m).all()):
            raise ValueError("dose metadata contains NaN or Inf")
        return m

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Replicate-pad the spatial axes at their high end to a multiple of ``2**L``."""
        sizes = x.shape[2:]
        pads: list[int] = []
        need = False
        for d in range(len(sizes) - 1, -1, -1):  # F.pad lists the last axis first
            p = (self.pad_multiple - sizes[d] % self.pad_multiple) % self.pad_multiple
            pads.append(0)
            pads.append(p)
            need = need or p > 0
        if need:
            x = F.pad(x, pads, mode="replicate")
        return x

    @staticmethod
    def _crop(t: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Keep the first ``sizes[d]`` voxels of spatial axis ``d``."""
        for d in range(len(sizes)):
            t = t.narrow(d + 2, 0, sizes[d])
        return t

    def _forward_impl(self, x: torch.Tensor, dose: torch.Tensor | None, with_aux: bool) -> list[torch.Tensor]:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                "FiLMUNet expects input (B, C, "
                + str(self.spatial_dims)
                + " spatial axes), got shape "
                + str(list(x.shape))
            )
        if x.shape[1] != self.in_channels:
            raise ValueError("FiLMUNet expects " + str(self.in_channels) + " input channels, got " + str(x.shape[1]))
        m = self._prepare_meta(dose, x.shape[0], x)
        sizes: list[int] = list(x.shape[2:])
        xp = self._pad(x)

        skips: list[torch.Tensor] = []
        h = xp
        for level in self.encoder:
            skip, h = level(h, m)
            skips.append(skip)
        h = self.bottleneck(h, m)
        dec_feats: list[torch.Tensor] = []
        for i, level in enumerate(self.decoder):
            h = level(h, skips[len(skips) - 1 - i], m)
            dec_feats.append(h)

        base = xp.narrow(1, 0, self.out_channels)
        if self.scale_by_std:
            scale = base.flatten(2).std(dim=2, unbiased=False).clamp_min(1e-6)
            for _ in range(self.spatial_dims):
                scale = scale.unsqueeze(-1)
        else:
            scale = torch.ones_like(base.narrow(1, 0, 1).flatten(2).narrow(2, 0, 1))
            for _ in range(self.spatial_dims - 1):
                scale = scale.unsqueeze(-1)
        out = self.final(h) * scale
        if self.residual:
            out = base - out
        outs = [self._crop(out, sizes)]
        if with_aux:
            for j, head in enumerate(self.ds_heads):
                k = j + 1
                f = 1 << k
                aux = head(dec_feats[len(dec_feats) - 1 - k], base, scale)
                outs.append(self._crop(aux, [(s + f - 1) // f for s in sizes]))
        return outs

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Denoise ``x``.

        Args:
            x: ``(B, in_channels, *S)`` low-dose image, any spatial size.
            dose: ``(B, dose_dim)`` or ``(1, dose_dim)`` encoded metadata (``ln(DRF) / 10`` for the
                DRF); required when
                ``dose_dim > 0``, ignored when ``dose_dim = 0``.

        Returns:
            ``(B, out_channels, *S)``; with deep supervision in training mode a list
            ``[final (B, out, *S), aux_1 (B, out, *ceil(S / 2)), ..., aux_n (B, out, *ceil(S / 2**n))]``.

        Raises:
            ValueError: dose missing on a conditioned network, dose of the wrong shape / batch / non-finite
                values, or
                input of the wrong rank / channel count.
        """
        outs = self._forward_impl(x, dose, self.deep_supervision and self.training)
        if self.deep_supervision and self.training:
            return outs
        return outs[0]

    def forward_deep_supervision(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``[final, aux_1, ..., aux_n]`` whatever the train / eval mode (needs ``deep_supervision=True``)."""
        if not self.deep_supervision:
            raise ValueError("this FiLMUNet was built with deep_supervision=False: it has no auxiliary heads")
        return self._forward_impl(x, dose, True)

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters: ``{"total", "film" (FiLM MLPs), "backbone" (total - film)}``."""
        total = sum(p.numel() for p in self.parameters())
        film = sum(p.numel() for n, p in self.named_parameters() if ".film.generator." in n)
        return {"total": total, "film": film, "backbone": total - film}
