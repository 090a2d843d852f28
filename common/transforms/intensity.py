"""Intensity windows as MONAI transforms (so they are invertible by a second, swapped transform).

CT: a HU window ``[low, high]`` maps linearly to ``[b_min, b_max]`` (clipped). PET: SUV (or Bq/mL) divided by a fixed
``scale`` (no clipping, so hot lesions keep their contrast).
"""

from __future__ import annotations

from monai.config import KeysCollection
from monai.transforms import ScaleIntensityRanged

__all__ = ["hu_window", "suv_scale"]


def hu_window(
    keys: KeysCollection,
    low: float,
    high: float,
    b_min: float = 0.0,
    b_max: float = 1.0,
    clip: bool = True,
    inverse: bool = False,
) -> ScaleIntensityRanged:
    """HU ``[low, high]`` -> ``[b_min, b_max]`` (``inverse=True``: back to HU, no clipping)."""
    if inverse:
        return ScaleIntensityRanged(keys, a_min=b_min, a_max=b_max, b_min=low, b_max=high, clip=False)
    return ScaleIntensityRanged(keys, a_min=low, a_max=high, b_min=b_min, b_max=b_max, clip=clip)


def suv_scale(keys: KeysCollection, scale: float, inverse: bool = False) -> ScaleIntensityRanged:
    """Activity / ``scale`` (``inverse=True``: times ``scale``); never clips."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if inverse:
        return ScaleIntensityRanged(keys, a_min=0.0, a_max=1.0, b_min=0.0, b_max=float(scale), clip=False)
    return ScaleIntensityRanged(keys, a_min=0.0, a_max=float(scale), b_min=0.0, b_max=1.0, clip=False)
