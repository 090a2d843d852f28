"""Feature-wise linear modulation (FiLM) by dose metadata.

A metadata vector ``dose`` of shape ``(B, dose_dim)`` (for PET the dose-reduction factor encoded as
``ln(DRF) / 10``, see :func:`common.transforms.encode_dose`) is mapped by a small MLP
``dose_dim -> hidden (SiLU) -> 2C`` to per-channel ``(gamma, beta)``, each ``(B, C)``, and a feature map ``h``
``(B, C, *spatial)`` is modulated as ``(1 + gamma) * h + beta``.

The modulation must be applied AFTER the normalisation layer: an instance norm placed after it would remove the
per-channel scale and shift again (the original implementation did that, so its conditioning had no effect). The last
layer of the MLP is zero-initialised, so at initialisation ``gamma = beta = 0`` and the modulation is the identity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DRF_LOG_SCALE", "FiLM", "FiLMGenerator", "NoFiLM", "film_modulate"]

DRF_LOG_SCALE = 10.0
"""The dose-reduction factor is encoded as ``ln(DRF) / DRF_LOG_SCALE`` (UDPET FiLM reference)."""


def film_modulate(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``(1 + gamma) * h + beta`` with ``gamma``, ``beta`` ``(B, C)`` broadcast over the spatial axes of ``h``.

    Args:
        h: feature map ``(B, C, *spatial)`` (already normalised).
        gamma: scale offsets ``(B, C)``.
        beta: shifts ``(B, C)``.
    """
    while gamma.dim() < h.dim():
        gamma = gamma.unsqueeze(-1)
        beta = beta.unsqueeze(-1)
    return (1.0 + gamma) * h + beta


class FiLMGenerator(nn.Module):
    """MLP ``dose_dim -> hidden (SiLU) -> 2 * channels`` producing ``(gamma, beta)``; last layer zero-initialised.

    Args:
        dose_dim: length of the metadata vector (``>= 1``).
        channels: number of feature channels ``C`` to modulate.
        hidden: width of the hidden layer.
    """

    def __init__(self, dose_dim: int, channels: int, hidden: int = 128) -> None:
        super().__init__()
        if dose_dim < 1 or channels < 1 or hidden < 1:
            raise ValueError(f"dose_dim, channels, hidden must be >= 1, got {dose_dim}, {channels}, {hidden}")
        self.channels = channels
        self.hidden = nn.Linear(dose_dim, hidden)
        self.act = nn.SiLU()
        self.out = nn.Linear(hidden, 2 * channels)
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the last layer: ``gamma = beta = 0`` for every input (identity modulation)."""
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def randomize(self, std: float = 0.1) -> None:
        """Give the last layer random weights (tests, ablations): the modulation then depends on the metadata."""
        nn.init.normal_(self.out.weight, std=std / math.sqrt(self.out.in_features))
        nn.init.normal_(self.out.bias, std=std)

    def forward(self, dose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``dose`` ``(B, dose_dim)`` -> ``(gamma, beta)``, each ``(B, channels)``."""
        gb = self.out(self.act(self.hidden(dose)))
        return gb[:, : self.channels], gb[:, self.channels :]


class FiLM(nn.Module):
    """FiLM layer: owns a :class:`FiLMGenerator` and applies ``(1 + gamma) * h + beta`` to a normalised feature map.

    Args:
        dose_dim: length of the metadata vector (``>= 1``).
        channels: number of channels of the modulated feature map.
        hidden: hidden width of the generator MLP.
    """

    def __init__(self, dose_dim: int, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.generator = FiLMGenerator(dose_dim, channels, hidden)

    def forward(self, h: torch.Tensor, dose: torch.Tensor | None) -> torch.Tensor:
        """``h`` ``(B, C, *spatial)``, ``dose`` ``(B, dose_dim)`` -> modulated ``h`` (same shape)."""
        if dose is None:
            raise ValueError("dose metadata missing: this FiLM layer needs a dose tensor (B, dose_dim)")
        gamma, beta = self.generator(dose)
        return film_modulate(h, gamma, beta)


class NoFiLM(nn.Module):
    """Identity stand-in for :class:`FiLM` in unconditioned networks (``dose_dim = 0``); ignores ``dose``."""

    def forward(self, h: torch.Tensor, dose: torch.Tensor | None) -> torch.Tensor:
        """Return ``h`` unchanged ``(B, C, *spatial)``."""
        return h
