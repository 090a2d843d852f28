"""Light timestep-conditioned 3D U-Net for residual diffusion over a regression estimate (bundle
``pet_lowdose_ddpm3d``), and the module that pairs it with the frozen estimator.

Why not MONAI's ``DiffusionModelUNet`` here: its GroupNorms normalise over the whole input, so statistics seen on
training patches differ from those of a whole volume that is mostly air, and the bundle samples whole volumes in one
pass (no per-step sliding windows). This network has no normalisation layer: every residual block starts as the
identity (zero-initialised last convolution) and the inputs are brought to about unit scale by the bundle's
residual scaling, so it trains stably without one and any crop of a volume sees the same computation.
It also works on a space-to-depth grid (``patch`` voxels per side folded into channels, MONAI's ``pixelunshuffle``):
the cost per voxel is about ``patch**3`` times lower than a full-resolution network of the same width, which is what
makes several samples of a whole-body volume affordable on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from monai.networks.utils import pixelshuffle, pixelunshuffle
from torch import nn

__all__ = ["RefinerUNet", "TimeResBlock", "EstimateRefiner"]


class TimeResBlock(nn.Module):
    """``h + conv(SiLU(conv(SiLU(h)) * (1 + scale(t)) + shift(t)))``, no normalisation; the second convolution is
    zero-initialised so the block starts as the identity. Shapes ``(B, C, *S) -> (B, C, *S)``; ``emb`` ``(B, E)``."""

    def __init__(self, spatial_dims: int, channels: int, emb_dim: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.conv1 = conv(channels, channels, 3, padding=1)
        self.conv2 = conv(channels, channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.emb(emb).view(emb.shape[0], -1, *([1] * (h.ndim - 2))).chunk(2, dim=1)
        u = self.conv1(F.silu(h)) * (1 + scale) + shift
        return h + self.conv2(F.silu(u))


class RefinerUNet(nn.Module):
    """Timestep-conditioned U-Net without normalisation layers, on a ``patch``-folded grid.

    ``x (B, in_channels, *S)`` -> ``pixelunshuffle(patch)`` -> ``(B, in_channels * patch^d, *S / patch)`` -> U-Net with
    ``len(channels)`` levels (``num_res_blocks`` :class:`TimeResBlock` per level and side, stride-2 convolution down,
    nearest upsampling + convolution up, skip concatenation) -> ``(B, out_channels * patch^d, ...)`` ->
    ``pixelshuffle`` -> ``(B, out_channels, *S)``. The output convolution is zero-initialised.

    ``S`` must be divisible by ``patch * 2 ** (len(channels) - 1)`` (:attr:`size_divisor`); pad before calling.
    ``timesteps`` ``(B,)`` (or a scalar) enter through a sinusoidal embedding and an MLP, as in MONAI's diffusion
    U-Net. ``forward(x, timesteps, context=None)`` matches the call of MONAI's ``DiffusionInferer`` in concat mode
    (``context`` must be None: this network has no cross-attention).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 4,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64),
        num_res_blocks: int = 1,
        patch: int = 2,
    ) -> None:
        super().__init__()
        if len(channels) < 1 or num_res_blocks < 1 or patch < 1:
            raise ValueError("RefinerUNet needs at least one level, one residual block and patch >= 1")
        self.spatial_dims, self.patch = int(spatial_dims), int(patch)
        conv = Conv[Conv.CONV, spatial_dims]
        fold = self.patch**spatial_dims
        chans = [int(c) for c in channels]
        self.emb_base = chans[0]
        emb_dim = 4 * chans[0]
        self.time_mlp = nn.Sequential(nn.Linear(chans[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = conv(in_channels * fold, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i, c in enumerate(chans):
            blocks = [TimeResBlock(spatial_dims, c, emb_dim) for _ in range(num_res_blocks)]
            self.down_blocks.append(nn.ModuleList(blocks))
            if i + 1 < len(chans):
                self.downsamples.append(conv(c, chans[i + 1], 3, stride=2, padding=1))
        self.mid = TimeResBlock(spatial_dims, chans[-1], emb_dim)
        self.up_convs = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(len(chans) - 2, -1, -1):
            self.up_convs.append(conv(chans[i + 1] + chans[i], chans[i], 3, padding=1))
            self.up_blocks.append(
                nn.ModuleList(TimeResBlock(spatial_dims, chans[i], emb_dim) for _ in range(num_res_blocks))
            )
        self.conv_out = conv(chans[0], out_channels * fold, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.size_divisor = self.patch * 2 ** (len(chans) - 1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, in_channels, *S)``, ``timesteps (B,)`` -> ``(B, out_channels, *S)``."""
        if context is not None:
            raise ValueError("RefinerUNet conditions by channel concatenation; it takes no cross-attention context")
        bad = [s for s in x.shape[2:] if s % self.size_divisor]
        if bad:
            raise ValueError(f"RefinerUNet: spatial size {tuple(x.shape[2:])} is not a multiple of {self.size_divisor}")
        t = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_mlp(get_timestep_embedding(t, self.emb_base).to(x.dtype))
        h = self.conv_in(pixelunshuffle(x, self.spatial_dims, self.patch) if self.patch > 1 else x)
        skips = []
        for i, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, emb)
            if i < len(self.downsamples):
                skips.append(h)
                h = self.downsamples[i](h)
        h = self.mid(h, emb)
        for up_conv, blocks in zip(self.up_convs, self.up_blocks, strict=True):
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = up_conv(torch.cat([h, skip], dim=1))
            for block in blocks:
                h = block(h, emb)
        out = self.conv_out(F.silu(h))
        return pixelshuffle(out, self.spatial_dims, self.patch) if self.patch > 1 else out


class EstimateRefiner(nn.Module):
    """A frozen regression estimator and the diffusion refiner of its residual, saved and loaded as one network.

    ``estimator`` (e.g. the FiLM U-Net of ``pet_lowdose_film_unet``) is never trained here: its parameters have
    ``requires_grad=False`` and it stays in eval mode whatever ``train()`` is called with (deep supervision heads,
    dropout and the like stay off). ``forward(x, timesteps, context=None)`` is the refiner's (the call MONAI's
    ``DiffusionInferer`` makes in training); the sampler calls :attr:`estimator` and :attr:`refiner` itself.

    Args:
        estimator: ``estimator(x, dose) -> (B, 1, *S)`` with ``x = SUV / input_scale`` and ``dose = ln(DRF) /
            dose_log_scale`` ``(B, 1)`` (the FiLM U-Net's units and dose encoding).
        refiner: ``refiner(x, timesteps, context=None)``, e.g. :class:`RefinerUNet`.
        input_scale / dose_log_scale: the estimator's intensity and dose units.
        estimator_weights: a ``model.pt`` of the estimator loaded at construction (training: the other bundle's
            weights, before the EMA copy is made); None when the weights come with this network's own state dict
            (inference).
    """

    def __init__(
        self,
        estimator: nn.Module,
        refiner: nn.Module,
        input_scale: float = 10.0,
        dose_log_scale: float = 10.0,
        estimator_weights: str | None = None,
    ) -> None:
        super().__init__()
        if estimator_weights:
            from ..bundle_utils import load_weights

            load_weights(estimator, estimator_weights, "estimator weights")
        self.estimator, self.refiner = estimator, refiner
        self.input_scale, self.dose_log_scale = float(input_scale), float(dose_log_scale)
        for p in self.estimator.parameters():
            p.requires_grad_(False)
        self.estimator.eval()

    def train(self, mode: bool = True) -> EstimateRefiner:
        super().train(mode)
        self.estimator.eval()
        return self

    def estimate(
        self, low: torch.Tensor, drf: torch.Tensor, inferer: Callable[..., torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The estimator's output in SUV (clamped at 0) for ``low`` ``(B, 1, *S)`` in SUV at DRFs ``drf`` ``(B,)``;
        ``inferer(x, network, dose)`` (e.g. a sliding window) runs it over a large volume, else one call."""
        x = low / self.input_scale
        dose = (torch.log(drf.to(low.dtype).reshape(-1, 1)) / self.dose_log_scale).to(low.device)
        with torch.no_grad():
            out = self.estimator(x, dose) if inferer is None else inferer(x, self.estimator, dose)
        return (torch.as_tensor(out) * self.input_scale).clamp_min(0.0)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The refiner's prediction for ``x = [x_t, condition...]`` ``(B, C, *S)`` -> ``(B, 1, *S)``."""
        return self.refiner(x, timesteps, context)
