"""Per-pixel, per-channel k x k kernels applied to a feature map (kernel-prediction networks, e.g. Feat-KPN).

For features ``F`` of shape ``(B, C, H, W)`` and predicted kernels ``K`` of shape ``(B, C*k*k, H, W)`` (read as
``(B, C, k*k, H, W)``, the k*k taps in row-major order, exactly the channel layout of ``torch.nn.functional.unfold``):

    out[b, c, y, x] = sum_{i,j} K[b, c, i*k + j, y, x] * Fpad[b, c, y + i, x + j]

with ``Fpad`` the replicate-padded features (``k // 2`` on each side): a depth-wise, spatially varying filter.

Memory: the usual implementation unfolds the padded features to ``(B, C*k*k, H*W)`` and multiplies it with the
kernels, which materialises two more tensors as large as the kernels (and autograd keeps the unfolded one).
:func:`apply_pixel_kernels` instead accumulates the ``k*k`` shifted products into one ``(B, C, H, W)`` buffer; the
shifted operands are views of the padded features, so the extra memory is ``O(B*C*H*W)`` instead of
``O(B*C*k*k*H*W)`` (``benchmarks/featkpn_slice.py`` prints both). :func:`apply_pixel_kernels_unfold` is the plain
reference implementation (tests check equality).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["apply_pixel_kernels", "apply_pixel_kernels_unfold", "normalize_kernels"]


def _check(features: torch.Tensor, kernels: torch.Tensor, kernel_size: int) -> None:
    # plain string formatting of sizes: this runs inside TorchScript-exported networks
    if features.dim() != 4 or kernels.dim() != 4:
        raise ValueError(
            f"features and kernels must be 4D (B, C, H, W), got {features.dim()}D and {kernels.dim()}D tensors"
        )
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    expected = features.shape[1] * kernel_size * kernel_size
    same_grid = kernels.shape[0] == features.shape[0] and kernels.shape[2:] == features.shape[2:]
    if kernels.shape[1] != expected or not same_grid:
        raise ValueError(
            f"kernels must have shape (B, C*k*k, H, W) = ({features.shape[0]}, {expected}, {features.shape[2]}, "
            f"{features.shape[3]}), got ({kernels.shape[0]}, {kernels.shape[1]}, {kernels.shape[2]}, "
            f"{kernels.shape[3]})"
        )


def normalize_kernels(kernels: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Softmax over the k*k taps of every per-pixel, per-channel kernel: ``(B, C*k*k, H, W)`` -> same shape, each
    kernel non-negative and summing to 1 (a local weighted average)."""
    b, ck2, h, w = kernels.shape
    k2 = kernel_size * kernel_size
    return torch.softmax(kernels.reshape(b, ck2 // k2, k2, h, w), dim=2).reshape(b, ck2, h, w)


def _accumulate(padded: torch.Tensor, taps: torch.Tensor, k: int, h: int, w: int) -> torch.Tensor:
    """``sum_t taps[:, :, t] * shift_t(padded)`` for ``padded`` (B, C, H+k-1, W+k-1), ``taps`` (B, C, k*k, H, W)."""
    out = torch.zeros_like(taps[:, :, 0])
    for i in range(k):
        for j in range(k):
            out = out.addcmul(padded[:, :, i : i + h, j : j + w], taps[:, :, i * k + j])
    return out


class _PixelKernelFunction(torch.autograd.Function):
    """Shift-and-accumulate with a hand-written backward: autograd's own backward of the ``k*k`` tap views would
    allocate and zero-fill a kernel-sized gradient buffer per tap (``k*k`` times the kernel tensor's traffic);
    this one writes each tap's gradient into a single buffer."""

    @staticmethod
    def forward(ctx, padded: torch.Tensor, taps: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        h, w = taps.shape[-2:]
        ctx.save_for_backward(padded, taps)
        ctx.k = k
        return _accumulate(padded, taps, k, h, w)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        padded, taps = ctx.saved_tensors
        k = ctx.k
        h, w = taps.shape[-2:]
        grad_padded = torch.zeros_like(padded) if ctx.needs_input_grad[0] else None
        grad_taps = torch.empty_like(taps) if ctx.needs_input_grad[1] else None
        for i in range(k):
            for j in range(k):
                t = i * k + j
                if grad_taps is not None:
                    torch.mul(grad_out, padded[:, :, i : i + h, j : j + w], out=grad_taps[:, :, t])
                if grad_padded is not None:
                    grad_padded[:, :, i : i + h, j : j + w].addcmul_(grad_out, taps[:, :, t])
        return grad_padded, grad_taps, None


@torch.jit.unused
def _apply_with_autograd(padded: torch.Tensor, taps: torch.Tensor, k: int) -> torch.Tensor:
    return _PixelKernelFunction.apply(padded, taps, k)


def apply_pixel_kernels(features: torch.Tensor, kernels: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Apply per-pixel, per-channel kernels by shift-and-accumulate (memory-sane, any autograd mode).

    Args:
        features: ``(B, C, H, W)``.
        kernels: ``(B, C*k*k, H, W)``, already normalised if wanted (:func:`normalize_kernels`).
        kernel_size: ``k`` (odd).

    Returns:
        ``(B, C, H, W)``, same dtype as ``features``.
    """
    _check(features, kernels, kernel_size)
    b, c, h, w = features.shape
    k = kernel_size
    r = k // 2
    padded = F.pad(features, [r, r, r, r], mode="replicate") if r > 0 else features
    taps = kernels.reshape(b, c, k * k, h, w)
    if not torch.jit.is_scripting() and torch.is_grad_enabled() and (padded.requires_grad or taps.requires_grad):
        return _apply_with_autograd(padded, taps, k)
    return _accumulate(padded, taps, k, h, w)


def apply_pixel_kernels_unfold(features: torch.Tensor, kernels: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Reference implementation (replicate pad, ``unfold``, multiply, sum); same contract as
    :func:`apply_pixel_kernels` but ``k*k`` times the feature map's memory."""
    _check(features, kernels, kernel_size)
    b, c, h, w = features.shape
    k = kernel_size
    r = k // 2
    padded = F.pad(features, [r, r, r, r], mode="replicate") if r > 0 else features
    patches = F.unfold(padded, kernel_size=k).reshape(b, c, k * k, h, w)
    return (patches * kernels.reshape(b, c, k * k, h, w)).sum(dim=2)
