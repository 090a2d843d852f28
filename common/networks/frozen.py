"""Freezing modules that are used but never trained (a teacher, a frozen decoder, a loss's feature network)."""

from __future__ import annotations

from torch import nn

__all__ = ["freeze"]


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with ``requires_grad=False`` on every parameter; returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
