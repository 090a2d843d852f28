"""Inferers that accept any input shape.

MONAI's ``SlidingWindowInferer`` already blends overlapping windows with a Gaussian importance map; networks
with ``k`` pooling levels additionally need every spatial size to be a multiple of ``2**k``.
:class:`PaddedSlidingWindowInferer` pads the input to that multiple (replicate padding, so no artificial edge is
created), clamps the window to the padded volume (a small volume is not inflated to a large ROI), runs MONAI's
sliding window, and crops the result back to the input's exact shape. Extra positional/keyword arguments (e.g. the
dose metadata tensor of shape ``(1, M)``) are passed to the network for every window, as MONAI does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SlidingWindowInferer

__all__ = ["PaddedSlidingWindowInferer", "crop_to_shape", "pad_to_multiple"]


def pad_to_multiple(
    x: torch.Tensor, multiple: int | Sequence[int], mode: str = "replicate"
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial dims of ``x`` (B, C, *spatial) at the end up to a multiple of ``multiple``.

    Returns the padded tensor and the original spatial shape (for :func:`crop_to_shape`).
    """
    spatial = tuple(int(s) for s in x.shape[2:])
    mult = [int(multiple)] * len(spatial) if isinstance(multiple, int) else [int(m) for m in multiple]
    extra = [(-s) % m for s, m in zip(spatial, mult, strict=True)]
    if not any(extra):
        return x, spatial
    pad: list[int] = []
    for e in reversed(extra):  # F.pad wants the last dim first
        pad += [0, e]
    return F.pad(x, pad, mode=mode), spatial


def crop_to_shape(x: torch.Tensor, spatial: Sequence[int], scale: Sequence[int] | None = None) -> torch.Tensor:
    """Crop the spatial dims of ``x`` back to ``spatial`` (times ``scale`` per axis for up-sampling networks)."""
    scale = [1] * len(spatial) if scale is None else list(scale)
    slices = tuple(slice(0, int(s) * int(f)) for s, f in zip(spatial, scale, strict=True))
    return x[(slice(None), slice(None), *slices)]


class PaddedSlidingWindowInferer(Inferer):
    """Sliding-window inference with Gaussian blending on any input shape.

    Args:
        roi_size: window size (each a multiple of ``divisor``); clamped to the padded input size.
        sw_batch_size: windows per network call.
        overlap: fraction of window overlap (0.5 = half).
        mode: blending, ``"gaussian"`` (default) or ``"constant"``.
        divisor: the network's size multiple (``2**levels``).
        pad_mode: ``torch.nn.functional.pad`` mode for the divisor padding.
        sw_device / device: as MONAI's ``SlidingWindowInferer`` (e.g. windows on GPU, stitching on CPU).
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        overlap: float = 0.5,
        mode: str = "gaussian",
        divisor: int = 16,
        pad_mode: str = "replicate",
        sigma_scale: float = 0.125,
        sw_device: str | torch.device | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.roi_size = roi_size
        self.divisor = int(divisor)
        self.pad_mode = pad_mode
        self.kwargs = dict(
            sw_batch_size=sw_batch_size,
            overlap=overlap,
            mode=mode,
            sigma_scale=sigma_scale,
            sw_device=sw_device,
            device=device,
            progress=progress,
        )

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs`` (B, C, *spatial) -> output of the same spatial shape."""
        padded, spatial = pad_to_multiple(inputs, self.divisor, self.pad_mode)
        n = len(spatial)
        roi = [int(self.roi_size)] * n if isinstance(self.roi_size, int) else [int(r) for r in self.roi_size]
        roi = [min(r, s) for r, s in zip(roi, padded.shape[2:], strict=True)]
        inferer = SlidingWindowInferer(roi_size=roi, **self.kwargs)
        out = inferer(padded, network, *args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"network output must be a tensor in inference, got {type(out)}")
        return crop_to_shape(out, spatial)
