"""``window_psnr``: the model-selection PSNR of a training's validation, scored on an intensity window.

A CT denoiser must be selected with the metric it is reported with (the CT convention: HU clipped to one window,
data range = the window's width), whatever intensity range the network itself works in. MONAI's
``PeakSignalToNoiseRatio`` handler takes a fixed peak and compares the engine output as it is; this wraps it with
an output transform that clips both compared images to the window first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.handlers import PeakSignalToNoiseRatio, from_engine

__all__ = ["window_psnr", "windowed_output"]


def windowed_output(keys: Sequence[str], low: float, high: float) -> Callable[[Any], tuple[list[torch.Tensor], ...]]:
    """An ignite output transform: ``from_engine(keys)`` with every tensor clipped to ``[low, high]``.

    Each returned list holds one ``(C, *spatial)`` tensor per decollated item, in the engine's units (HU)."""
    if not low < high:
        raise ValueError(f"the window must be (low, high) with low < high, got ({low}, {high})")
    select = from_engine(list(keys))

    def transform(output: Any) -> tuple[list[torch.Tensor], ...]:
        return tuple([torch.as_tensor(t).clamp(low, high) for t in values] for values in select(output))

    return transform


def window_psnr(window: Sequence[float], keys: Sequence[str] = ("pred", "label")) -> PeakSignalToNoiseRatio:
    """PSNR of ``keys[0]`` against ``keys[1]`` after clipping both to ``window = (low, high)``, with the window's
    width as the peak (e.g. ``(-1000, 1000)`` HU: peak 2000 HU)."""
    if len(window) != 2:
        raise ValueError(f"window must be (low, high), got {window!r}")
    low, high = float(window[0]), float(window[1])
    return PeakSignalToNoiseRatio(max_val=high - low, output_transform=windowed_output(keys, low, high))
