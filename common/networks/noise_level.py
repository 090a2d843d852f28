"""A per-image noise level computed from the image itself, for networks told how noisy their input is.

A convolutional denoiser sees a window of a few dozen pixels and must guess the noise level from it; across a wide
range of doses and pixel sizes (CT noise per pixel varies 30x between a 70 % dose on 2 mm pixels and a 2 % dose on
0.5 mm pixels) it guesses wrong at both ends. A global statistic of the whole slice, passed as an extra constant
input channel (as FFDNet passes its noise map), removes the guess.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["estimate_noise_std", "noise_level_map"]

# Immerkaer's operator (the difference of two Laplacians) cancels linear ramps and most smooth structure; its
# response to white noise of std s has std 6 s (the L2 norm of the taps), and a Gaussian's median absolute value is
# 0.6745 std. Plain literals inside the function: FeatKPN is exported with torch.jit.script, which compiles this too.


def estimate_noise_std(x: torch.Tensor) -> torch.Tensor:
    """Robust noise standard deviation of each image, in the units of ``x``.

    The median absolute response of Immerkaer's 3 x 3 operator (rescaled so that white Gaussian noise of std ``s``
    gives ``s``), over the pixels whose 3 x 3 neighbourhood lies above the image's minimum: a windowed CT slice is
    clipped flat in air, and those pixels would pull the median towards zero. For correlated noise (CT after
    filtered back-projection) the value is a monotone proxy of the noise level, not its exact per-pixel std.

    Args:
        x: ``(B, C, H, W)``, ``H, W >= 3``; the channels are averaged first.

    Returns:
        ``(B, 1, 1, 1)``, >= 0 (0 for an image with no unclipped neighbourhood).
    """
    if x.dim() != 4 or x.shape[-1] < 3 or x.shape[-2] < 3:
        raise ValueError("estimate_noise_std needs (B, C, H, W) with H, W >= 3, got " + str(list(x.shape)))
    img = x.detach().float().mean(dim=1, keepdim=True)
    taps = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], dtype=img.dtype, device=img.device)
    taps = taps.view(1, 1, 3, 3)
    response = F.conv2d(img, taps).abs().flatten(1)  # (B, (H-2)(W-2)), valid positions only
    floor = img.flatten(1).amin(dim=1, keepdim=True)
    local_min = -F.max_pool2d(-img, 3, stride=1).flatten(1)
    response = torch.where(local_min > floor, response, torch.full_like(response, float("nan")))
    med = torch.nanmedian(response, dim=1)[0]
    sigma = torch.nan_to_num(med, nan=0.0) / (0.6744897501960817 * 6.0)
    return sigma.view(-1, 1, 1, 1).to(x.dtype)


def noise_level_map(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, 1, H, W)``: :func:`estimate_noise_std` times ``scale``, constant over each image
    (``scale`` brings the level to order 1 in the network's intensity units)."""
    return (estimate_noise_std(x) * scale).expand(x.shape[0], 1, x.shape[-2], x.shape[-1])
